//! The one list of Q's quantizer sites: each architecture's topology registers its sites
//! (`model::vit::quant_sites`, `model::swin::quant_sites`) and the graph builder checks that it
//! emits exactly these, in this order. Calibration, LSQ initialisation, export and reports read
//! this list.

use crate::model::{Arch, ModelConfig};

/// An LSQ activation quantizer.
#[derive(Clone, Debug, PartialEq)]
pub struct ActSite {
    /// Named after the op whose input it quantizes, e.g. `blocks.0.attn.qkv.act`.
    pub name: String,
    /// The `lsq_g_scale` numerator of its step-size gradient scale (docs/method.md §3).
    pub lsq_g: f32,
    /// Elements it sees per image (the LSQ gradient scale counts the whole batch).
    pub numel_per_image: usize,
}

impl ActSite {
    pub fn new(name: String, numel_per_image: usize) -> ActSite {
        ActSite { name, lsq_g: 1.0, numel_per_image }
    }
}

/// Activation quantizers and fake-quantized weights, in the order the forward uses them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SiteList {
    pub act: Vec<ActSite>,
    pub weights: Vec<String>,
}

/// The sites of `cfg`'s architecture.
pub fn sites(cfg: &ModelConfig) -> SiteList {
    match &cfg.arch {
        Arch::Vit(v) => crate::model::vit::quant_sites(cfg, v),
        Arch::Swin(s) => crate::model::swin::quant_sites(cfg, s),
    }
}

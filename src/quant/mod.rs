//! The quantized model Q: bit widths, the quantizer sites (`sites.rs`), and their state on the
//! GPU (docs/method.md §3).
//!
//! Q is P's graph with fake quantization where the MaskAQ code puts it: an LSQ activation
//! quantizer on the input of every Linear and on both operands of q·kᵀ and of softmax·v;
//! per-channel min-max weight quantization of every Linear and of the patch convolution. The
//! image, LayerNorm, softmax, GELU and residual adds stay FP.

pub mod calibrate;
pub mod export;
pub mod sites;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};

use crate::gpu::{Gpu, Tensor};
use crate::model::ModelConfig;
use crate::ops::quant::ActQuantState;

/// Weight and activation bit widths, written `W4A4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bits {
    pub w: u32,
    pub a: u32,
}

impl FromStr for Bits {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Bits> {
        let err = || {
            anyhow::anyhow!(
                "unknown bit string `{s}`: expected W<bits>A<bits> with 2 to 8 bits each, e.g. W4A4 or W4A8"
            )
        };
        let up = s.trim().to_ascii_uppercase();
        let rest = up.strip_prefix('W').ok_or_else(err)?;
        let (w, a) = rest.split_once('A').ok_or_else(err)?;
        let w: u32 = w.parse().map_err(|_| err())?;
        let a: u32 = a.parse().map_err(|_| err())?;
        if !(2..=8).contains(&w) || !(2..=8).contains(&a) {
            return Err(err());
        }
        Ok(Bits { w, a })
    }
}

impl fmt::Display for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "W{}A{}", self.w, self.a)
    }
}

/// Weights that are fake-quantized (every Linear and the patch convolution).
pub fn quantized_weights(cfg: &ModelConfig) -> Vec<String> {
    sites::sites(cfg).weights
}

/// Activation quantizer sites in forward order, named after the op whose input they quantize.
pub fn act_sites(cfg: &ModelConfig) -> Vec<String> {
    sites::sites(cfg).act.into_iter().map(|s| s.name).collect()
}

/// The quantization state of a model: bit widths and every activation quantizer's parameters.
pub struct Quant {
    pub bits: Bits,
    /// The activation quantizers' names, in site order.
    pub sites: Vec<String>,
    /// The registered sites (see `sites.rs`).
    pub list: sites::SiteList,
    index: HashMap<String, usize>,
    pub state: ActQuantState,
    /// Running (min, max) per quantizer during min-max calibration.
    pub calib: Tensor,
    /// The weights already hold their quantized values (a loaded export): the graph uses them
    /// as they are instead of re-quantizing.
    pub frozen_weights: bool,
    /// Whether the activation quantizers hold a state (LSQ-initialised, calibrated or loaded).
    pub initialized: std::cell::Cell<bool>,
    /// Factor on the zero points' gradients, read when a backward graph is built (see
    /// `ops::quant::act_backward`): 1 as in the authors' code.
    pub z_grad: std::cell::Cell<f32>,
}

impl Quant {
    pub fn new(gpu: &Gpu, cfg: &ModelConfig, bits: Bits) -> Quant {
        let list = sites::sites(cfg);
        let sites: Vec<String> = list.act.iter().map(|s| s.name.clone()).collect();
        let index = sites.iter().enumerate().map(|(i, s)| (s.clone(), i)).collect();
        let state = ActQuantState::new(gpu, sites.len());
        let calib = Tensor::zeros(gpu, &[sites.len(), 2]);
        Quant {
            bits,
            sites,
            list,
            index,
            state,
            calib,
            frozen_weights: false,
            initialized: Default::default(),
            z_grad: std::cell::Cell::new(1.0),
        }
    }

    pub fn site(&self, name: &str) -> usize {
        *self.index.get(name).unwrap_or_else(|| panic!("no quantizer site {name}"))
    }

    /// (alpha, z, QN, QP, g, signed) of every site, read back from the GPU.
    pub fn read(&self, gpu: &Gpu) -> Result<Vec<SiteState>> {
        let p = self.state.qparams.read(gpu)?;
        let m = self.state.qmeta.read(gpu)?;
        Ok(self
            .sites
            .iter()
            .enumerate()
            .map(|(i, name)| SiteState {
                name: name.clone(),
                alpha: p[2 * i],
                zero_point: p[2 * i + 1],
                qn: m[4 * i],
                qp: m[4 * i + 1],
                g: m[4 * i + 2],
                signed: m[4 * i + 3] != 0.0,
            })
            .collect())
    }

    /// Overwrites every site's state (e.g. from an exported model).
    pub fn write(&self, gpu: &Gpu, sites: &[SiteState]) -> Result<()> {
        if sites.len() != self.sites.len() {
            bail!("expected {} activation quantizers, found {}", self.sites.len(), sites.len());
        }
        let mut p = Vec::new();
        let mut m = Vec::new();
        for (s, name) in sites.iter().zip(&self.sites) {
            if &s.name != name {
                bail!("activation quantizer `{}` where `{name}` was expected", s.name);
            }
            p.extend([s.alpha, s.zero_point]);
            m.extend([s.qn, s.qp, s.g, if s.signed { 1.0 } else { 0.0 }]);
        }
        self.state.qparams.write(gpu, &p);
        self.state.qmeta.write(gpu, &m);
        self.initialized.set(true);
        Ok(())
    }
}

/// One activation quantizer's state.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteState {
    pub name: String,
    pub alpha: f32,
    pub zero_point: f32,
    pub qn: f32,
    pub qp: f32,
    pub g: f32,
    pub signed: bool,
}

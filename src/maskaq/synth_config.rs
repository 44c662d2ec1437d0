//! Synthesis settings: the method, its objective weights, every schedule and strength
//! (defaults: the authors' code, docs/method.md §1.2), where images start, and what masked
//! alignment means on a Swin.

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};
use serde::Serialize;

/// Which data-free method synthesises the images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// All five MaskAQ objectives.
    Maskaq,
    /// MimiQ: inter-head SSIM, cross-entropy, total variation.
    Mimiq,
    /// PSAQ-ViT's objective: KDE entropy of the attention outputs' patch similarities,
    /// cross-entropy, total variation (in this synthesis loop, for a like-for-like comparison).
    Psaq,
    /// Gaussian noise, no optimisation.
    Noise,
}

impl FromStr for Method {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Method> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "maskaq" => Method::Maskaq,
            "mimiq" => Method::Mimiq,
            "noise" => Method::Noise,
            "psaq" => Method::Psaq,
            other => bail!("unknown method `{other}`: expected maskaq, mimiq, psaq or noise"),
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Maskaq => "maskaq",
            Method::Mimiq => "mimiq",
            Method::Psaq => "psaq",
            Method::Noise => "noise",
        })
    }
}

/// Weights of the synthesis objectives (0 switches a term off).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Weights {
    pub ssim: f32,
    pub entropy: f32,
    pub alignment: f32,
    pub ce: f32,
    pub tv: f32,
    /// PSAQ-ViT's KDE entropy of the attention outputs' patch similarities.
    pub kde: f32,
}

impl Weights {
    /// The defaults of `method` (spec 2.6).
    pub fn of(method: Method) -> Weights {
        match method {
            Method::Maskaq => {
                Weights { ssim: 1.0, entropy: 1.0, alignment: 0.1, ce: 1.0, tv: 2.5e-5, kde: 0.0 }
            }
            Method::Mimiq => {
                Weights { ssim: 1.0, entropy: 0.0, alignment: 0.0, ce: 1.0, tv: 2.5e-5, kde: 0.0 }
            }
            Method::Psaq => {
                Weights { ssim: 0.0, entropy: 0.0, alignment: 0.0, ce: 1.0, tv: 2.5e-5, kde: 1.0 }
            }
            Method::Noise => Weights { ssim: 0.0, entropy: 0.0, alignment: 0.0, ce: 0.0, tv: 0.0, kde: 0.0 },
        }
    }
}

/// Synthesis settings (defaults: the authors' code).
#[derive(Clone, Debug, Serialize)]
pub struct SynthConfig {
    pub method: Method,
    pub weights: Weights,
    pub iters: usize,
    pub batch: usize,
    pub lr: f32,
    pub lr_min: f32,
    pub weight_decay: f32,
    /// Informative-region ratio, linear from the first to the second over the iterations.
    pub mask_ratio: (f32, f32),
    /// Fraction of the selected patches dropped at random each iteration.
    pub mask_drop: f32,
    /// Patch rows sampled for the entropy (all of them if the grid has fewer).
    pub entropy_rows: usize,
    /// Jitter in pixels at 224 px for the first and second half (scaled to the image size).
    pub jitter: (usize, usize),
    /// Colour jitter strength A: m ~ U[-A, A], s = exp(U[-A, A]) (the authors: 1).
    pub color_jitter: f64,
    /// The noise augmentation's standard deviation at the first iteration (the authors: 0.5).
    pub noise_std: f64,
    /// Where each batch's images start.
    pub init: SynthInit,
    /// Log the loss terms every this many iterations (and at the last).
    pub log_every: usize,
    /// Swin only: the informative-region mask and masked alignment (docs/swin.md).
    pub swin_alignment: SwinAlignment,
}

/// What masked alignment means on a Swin, whose authors' code leaves it at zero (docs/swin.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SwinAlignment {
    /// The authors' code: no mask, L_att = 0.
    AsCoded,
    /// maskaq's proposal: the mask from P's last-stage attention (mean over heads and queries),
    /// L_att on the same column means of P and Q.
    LastStage,
}

impl SynthConfig {
    pub fn new(method: Method) -> SynthConfig {
        SynthConfig {
            method,
            weights: Weights::of(method),
            iters: 2000,
            batch: 16,
            lr: 0.1,
            lr_min: 1e-3,
            weight_decay: 1e-6,
            mask_ratio: (0.5, 0.1),
            mask_drop: 0.3,
            entropy_rows: 64,
            jitter: (8, 16),
            color_jitter: 1.0,
            noise_std: 0.5,
            init: SynthInit::Randn,
            log_every: 50,
            swin_alignment: SwinAlignment::LastStage,
        }
    }
}

/// The starting images of a synthesis batch (docs/method.md §1.2, docs/results.md §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SynthInit {
    /// N(0, 1) in normalised space (the authors').
    Randn,
    /// Black: pixel value 0 (the lower clamp bound) plus |N(0, 0.01)|. On Fashion-MNIST models
    /// the authors' noise start leaves dark-background classes (Sneaker) unreached in 100-200
    /// iterations once the images are rolled.
    Black,
}

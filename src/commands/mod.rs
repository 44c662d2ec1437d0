//! The work behind each `maskaq` subcommand (`main.rs` only parses arguments and calls these).

pub mod bench;
pub mod devices;
pub mod eval;
pub mod predict;
pub mod ptq;
pub mod quantize;
pub mod synth;

use std::path::Path;

use anyhow::Result;

use crate::gpu::Gpu;
use crate::model::checkpoint::{self, Weights};
use crate::model::{Vit, VitConfig};

/// Loads `--model` (with optional `--arch`), or builds random weights from `--arch` alone.
pub fn load_or_random(gpu: &Gpu, model: Option<&Path>, arch: Option<&str>) -> Result<Vit> {
    match model {
        Some(m) => Vit::load(gpu, m, arch),
        None => {
            let arch = arch.ok_or_else(|| anyhow::anyhow!("give --model PATH or --arch NAME"))?;
            let cfg = if arch.ends_with(".json") {
                VitConfig::from_json_file(Path::new(arch))?
            } else {
                VitConfig::from_arch(arch)?
            };
            let w = Weights::random(&cfg, 0);
            Ok(Vit::new(gpu, cfg, &w))
        }
    }
}

pub use checkpoint::resolve;

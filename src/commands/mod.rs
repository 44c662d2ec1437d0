//! The work behind each `maskaq` subcommand (`main.rs` only parses arguments and calls these).

pub mod bench;
pub mod compare;
pub mod devices;
pub mod eval;
pub mod predict;
pub mod ptq;
pub mod quantize;
pub mod synth;
pub mod synth_merge;
pub mod train;
pub mod tune;

use std::path::Path;

use anyhow::Result;

use crate::gpu::Gpu;
use crate::model::checkpoint::{self, Weights};
use crate::model::{Model, ModelConfig};

/// Loads `--model` (with optional `--arch`), or builds random weights from `--arch` alone.
pub fn load_or_random(gpu: &Gpu, model: Option<&Path>, arch: Option<&str>) -> Result<Model> {
    match model {
        Some(m) => Model::load(gpu, m, arch),
        None => {
            let arch = arch.ok_or_else(|| anyhow::anyhow!("give --model PATH or --arch NAME"))?;
            let cfg = if arch.ends_with(".json") {
                ModelConfig::from_json_file(Path::new(arch))?
            } else {
                ModelConfig::from_arch(arch)?
            };
            let w = Weights::random(&cfg, 0);
            Ok(Model::new(gpu, cfg, &w))
        }
    }
}

pub use checkpoint::resolve;

/// `--model`'s path and what it is, for logs.
pub fn describe_model(path: &Path, cfg: &ModelConfig) -> String {
    format!("{} ({})", path.display(), cfg.describe())
}

/// This machine's memory in bytes, where the OS tells (Linux).
fn host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
}

/// Fails, naming `flag`, when `count` images of the model's input size would not fit in half
/// of this machine's memory (synthetic sets are held on the host): refused before the work
/// starts instead of aborting when the allocation fails hours later.
pub fn check_images_fit_host(cfg: &ModelConfig, count: usize, flag: &str) -> Result<()> {
    let per = (cfg.in_chans * cfg.img_size * cfg.img_size) as u64 * 4;
    let bytes = per.saturating_mul(count as u64);
    if let Some(mem) = host_memory()
        && bytes > mem / 2
    {
        anyhow::bail!(
            "{flag} {count}: {count} images of {}x{}x{} need {} MiB of memory; this machine has {} MiB",
            cfg.in_chans,
            cfg.img_size,
            cfg.img_size,
            bytes >> 20,
            mem >> 20
        );
    }
    Ok(())
}

/// The architecture of `--model` (its config), or of `--arch` alone.
pub fn config_of(model: Option<&Path>, arch: Option<&str>) -> Result<ModelConfig> {
    match model {
        Some(m) => Ok(resolve(m, arch)?.0),
        None => {
            let arch = arch.ok_or_else(|| anyhow::anyhow!("give --model PATH or --arch NAME"))?;
            if arch.ends_with(".json") {
                ModelConfig::from_json_file(Path::new(arch))
            } else {
                ModelConfig::from_arch(arch)
            }
        }
    }
}

/// Fails, naming `flag`, when a model of `cfg` at `batch` images needs a buffer larger than
/// the adapter allows: checked before anything is allocated (an absurd size would otherwise
/// abort the process on the host or surface as a GPU error mid-run). The largest buffers of
/// a graph are the attention maps (B·H·N·N), the MLP activations (B·N·hidden), the fused qkv
/// (B·N·3D) and the largest weight.
pub fn check_fits(gpu: &Gpu, cfg: &ModelConfig, batch: usize, flag: &str) -> Result<()> {
    let weight =
        cfg.tensor_shapes().iter().map(|(_, s)| s.iter().product::<usize>() as u64).max().unwrap_or(0);
    gpu.check_buffer_size(weight * 4, &format!("the model's largest weight ({})", cfg.describe()))?;
    let largest = (batch as u64).saturating_mul(cfg.largest_activation_per_image() as u64);
    let bytes = largest.saturating_mul(4);
    gpu.check_buffer_size(bytes, &format!("{flag} {batch}"))
        .map_err(|e| anyhow::anyhow!("{e:#}; use a smaller {flag}"))
}

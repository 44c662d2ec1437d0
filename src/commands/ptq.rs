//! `maskaq ptq`: the min-max PTQ baseline — calibrate the activation ranges on Gaussian noise
//! (data-free) or on real images (the real-data upper reference), no training — and export.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::data::dataset;
use crate::gpu::Gpu;
use crate::model::Vit;
use crate::model::checkpoint::{load_weights, resolve};
use crate::quant::Bits;
use crate::quant::calibrate::minmax_calibrate;
use crate::quant::export::export;
use crate::rng::Rng;

pub struct PtqArgs {
    pub model: PathBuf,
    pub arch: Option<String>,
    pub bits: Bits,
    /// `noise` or a dataset path (image folder or IDX file).
    pub calib: String,
    pub num: usize,
    pub batch: usize,
    pub seed: u64,
    pub out: PathBuf,
}

/// Fails early when `out`'s folder does not exist or cannot be written.
pub fn check_output(out: &Path) -> Result<()> {
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        bail!("--out {}: the folder {} does not exist", out.display(), dir.display());
    }
    let probe = dir.join(format!(".maskaq-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("--out {}: cannot write in {}", out.display(), dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// `num` calibration images, flattened [N, C, H, W], and a description of where they came from.
pub fn calibration_images(vit: &Vit, calib: &str, num: usize, seed: u64) -> Result<(Vec<f32>, String)> {
    let cfg = &vit.cfg;
    let per = cfg.in_chans * cfg.img_size * cfg.img_size;
    let mut rng = Rng::new(seed);
    if calib == "noise" {
        let images = (0..num * per).map(|_| rng.normal() as f32).collect();
        return Ok((images, format!("{num} Gaussian-noise images (seed {seed})")));
    }
    let data = dataset::open(Path::new(calib)).with_context(|| format!("--calib {calib}"))?;
    if data.is_empty() {
        bail!("--calib {calib}: the dataset is empty");
    }
    // A seeded random subset, so an image folder does not give one class only.
    let mut order: Vec<usize> = (0..data.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut images = Vec::with_capacity(num * per);
    let mut skipped = 0;
    for &i in &order {
        if images.len() == num * per {
            break;
        }
        match data.load(i, &cfg.preprocess) {
            Ok(s) => images.extend(s.input),
            Err(_) => skipped += 1,
        }
    }
    let got = images.len() / per;
    if got == 0 {
        bail!("--calib {calib}: no readable image");
    }
    let mut what = format!("{got} images from {} (seed {seed})", data.source());
    if skipped > 0 {
        what += &format!(", {skipped} unreadable skipped");
    }
    Ok((images, what))
}

pub fn run(gpu: &Gpu, args: &PtqArgs) -> Result<()> {
    if args.num == 0 {
        bail!("--num must be at least 1");
    }
    check_output(&args.out)?;
    let (cfg, file) = resolve(&args.model, args.arch.as_deref())?;
    let weights = load_weights(&cfg, &file)?;
    let mut q = Vit::new(gpu, cfg, &weights);
    q.quantize(gpu, args.bits);
    let (images, what) = calibration_images(&q, &args.calib, args.num, args.seed)?;
    eprintln!("ptq: {} {} min-max calibration on {what}", q.cfg.architecture, args.bits);
    minmax_calibrate(gpu, &q, &images, args.batch)?;
    let method = if args.calib == "noise" { "minmax-ptq-noise" } else { "minmax-ptq-real" };
    export(gpu, &q, method, &args.out)?;
    eprintln!("ptq: wrote {}", args.out.display());
    Ok(())
}

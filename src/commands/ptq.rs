//! `maskaq ptq`: the min-max PTQ baseline — calibrate the activation ranges on Gaussian noise
//! (data-free) or on real images (the real-data upper reference), no training — and export.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::data::dataset;
use crate::gpu::{Gpu, GpuOptions};
use crate::io::OutFile;
use crate::model::Model;
use crate::model::checkpoint::{load_weights, resolve};
use crate::progress::Progress;
use crate::quant::Bits;
use crate::quant::calibrate::minmax_calibrate_with;
use crate::quant::export::export;
use crate::rng::Rng;

/// Where `ptq` takes its calibration images from.
#[derive(Clone, Debug)]
pub enum Calib {
    /// Gaussian noise in the model's input space (data-free).
    Noise,
    /// Real images: an image folder or an IDX images file (labels are not needed).
    Data(PathBuf),
}

impl std::str::FromStr for Calib {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Calib, Self::Err> {
        Ok(if s == "noise" { Calib::Noise } else { Calib::Data(PathBuf::from(s)) })
    }
}

#[derive(clap::Args, Debug)]
pub struct PtqArgs {
    #[command(flatten)]
    pub model: crate::cli::ModelArgs,
    /// Bit widths, W<w>A<a> with 2 to 8 bits each, e.g. W4A4, W3A3, W4A8.
    #[arg(long)]
    pub bits: Bits,
    /// `noise` (data-free) or real images: an image folder or an IDX images file (no labels needed).
    #[arg(long, default_value = "noise", value_name = "noise|PATH")]
    pub calib: Calib,
    /// Number of calibration images.
    #[arg(long, visible_alias = "num", default_value_t = 64, value_name = "N")]
    pub num_images: usize,
    /// Images per GPU batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Seed of the noise or of the subset of real images.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file (.safetensors, the format of docs/quantized-format.md).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace an existing --out file.
    #[arg(long)]
    pub overwrite: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `num` calibration images, flattened [N, C, H, W], and a description of where they came from.
pub fn calibration_images(vit: &Model, calib: &Calib, num: usize, seed: u64) -> Result<(Vec<f32>, String)> {
    let cfg = &vit.cfg;
    let per = cfg.in_chans * cfg.img_size * cfg.img_size;
    let mut rng = Rng::new(seed);
    let path = match calib {
        Calib::Noise => {
            let images = (0..num * per).map(|_| rng.normal() as f32).collect();
            return Ok((images, format!("{num} Gaussian-noise images (seed {seed})")));
        }
        Calib::Data(p) => p,
    };
    let calib = path.display();
    let data = dataset::open_unlabelled(path).with_context(|| format!("--calib {calib}"))?;
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

pub fn run(gpu_opts: &GpuOptions, args: &PtqArgs) -> Result<()> {
    if args.num_images == 0 {
        bail!("--num-images must be at least 1");
    }
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let mut inputs: Vec<(&str, &Path)> = vec![("--model", args.model.model.as_path())];
    if let Calib::Data(p) = &args.calib {
        inputs.push(("--calib", p.as_path()));
    }
    let out = OutFile::prepare(&args.out, &inputs, args.overwrite)?;
    let (cfg, file) = resolve(&args.model.model, args.model.arch.as_deref())?;
    crate::commands::check_images_fit_host(&cfg, args.num_images, "--num-images")?;
    let weights = load_weights(&cfg, &file)?;
    let gpu = Gpu::new(gpu_opts)?;
    crate::commands::check_fits(&gpu, &cfg, args.batch, "--batch")?;
    let mut q = Model::new(&gpu, cfg, &weights);
    q.quantize(&gpu, args.bits);
    let (images, what) = calibration_images(&q, &args.calib, args.num_images, args.seed)?;
    eprintln!(
        "ptq: {} {} min-max calibration on {what}",
        crate::commands::describe_model(&args.model.model, &q.cfg),
        args.bits
    );
    let progress = if args.json { Progress::hidden() } else { Progress::new("ptq", "batches") };
    minmax_calibrate_with(&gpu, &q, &images, args.batch, &progress)?;
    let method = if matches!(args.calib, Calib::Noise) { "minmax-ptq-noise" } else { "minmax-ptq-real" };
    export(&gpu, &q, method, &out.path)?;
    eprintln!("ptq: wrote {}", out.path.display());
    if args.json {
        let summary = serde_json::json!({
            "out": out.path.display().to_string(),
            "bits": args.bits.to_string(),
            "method": method,
            "calibration": what,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(())
}

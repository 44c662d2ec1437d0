//! `maskaq synth`: synthesise a labelled image set from noise with MaskAQ (or a baseline) and
//! write it as a dataset, PNG previews, a contact sheet and a JSON log of every loss term.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::data::synthetic::{SyntheticDataset, write_previews};
use crate::gpu::{Gpu, GpuOptions};
use crate::maskaq::synth::{Method, SynthConfig, Synthesizer, TermLog};
use crate::model::Vit;
use crate::model::checkpoint::{load_weights, resolve};
use crate::quant::Bits;
use crate::rng::Rng;

/// The synthesis loss weights as flags (shared by `synth` and `quantize`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LossWeightArgs {
    /// Weight of the inter-head attention SSIM term (default 1; 0 switches it off).
    #[arg(long, allow_negative_numbers = true)]
    pub w_ssim: Option<f32>,
    /// Weight of the patch-similarity entropy term (default 1 for maskaq).
    #[arg(long, allow_negative_numbers = true)]
    pub w_entropy: Option<f32>,
    /// Weight of the masked P-Q attention alignment (default 0.1 for maskaq).
    #[arg(long, allow_negative_numbers = true)]
    pub w_alignment: Option<f32>,
    /// Weight of the cross-entropy to the target labels (default 1).
    #[arg(long, allow_negative_numbers = true)]
    pub w_ce: Option<f32>,
    /// Weight of the total variation (default 2.5e-5).
    #[arg(long, allow_negative_numbers = true)]
    pub w_tv: Option<f32>,
}

impl LossWeightArgs {
    /// Sets the given weights in `w`; each must be finite and non-negative.
    pub fn apply(&self, w: &mut crate::maskaq::synth::Weights) -> Result<()> {
        for (flag, slot, v) in [
            ("--w-ssim", &mut w.ssim, self.w_ssim),
            ("--w-entropy", &mut w.entropy, self.w_entropy),
            ("--w-alignment", &mut w.alignment, self.w_alignment),
            ("--w-ce", &mut w.ce, self.w_ce),
            ("--w-tv", &mut w.tv, self.w_tv),
        ] {
            if let Some(v) = v {
                if !(v >= 0.0 && v.is_finite()) {
                    bail!("{flag} {v}: a loss weight must be finite and non-negative");
                }
                *slot = v;
            }
        }
        Ok(())
    }
}

pub struct SynthArgs {
    pub model: PathBuf,
    pub arch: Option<String>,
    pub quantized: Option<PathBuf>,
    pub bits: String,
    pub method: String,
    pub num: usize,
    pub iters: usize,
    pub batch: usize,
    pub seed: u64,
    pub out: PathBuf,
    /// Weight overrides (0 switches a term off).
    pub weights: LossWeightArgs,
    pub log_every: usize,
}

#[derive(Serialize)]
struct BatchLog {
    batch: usize,
    finite: bool,
    terms: Vec<TermLog>,
}

#[derive(Serialize)]
struct Report<'a> {
    adapter: String,
    model: String,
    method: String,
    bits: String,
    config: &'a SynthConfig,
    seed: u64,
    images: usize,
    dropped_batches: usize,
    seconds: f64,
    image_iterations_per_second: f64,
    batches: Vec<BatchLog>,
}

/// Creates `out` and checks it is writable.
pub fn prepare_out_dir(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("--out {}: cannot create the folder", out.display()))?;
    let probe = out.join(format!(".maskaq-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("--out {}: cannot write in the folder", out.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

fn fmt_terms(t: &TermLog) -> String {
    let mut s = format!("loss {:.4}", t.total);
    for (name, v) in [
        ("ssim", t.ssim),
        ("ent", t.entropy),
        ("att", t.alignment),
        ("kde", t.kde),
        ("ce", t.ce),
        ("tv", t.tv),
    ] {
        if let Some(v) = v {
            s += &format!("  {name} {v:.4}");
        }
    }
    s
}

pub fn run(gpu_opts: &GpuOptions, args: &SynthArgs) -> Result<()> {
    // Every argument is checked before any work starts.
    let method: Method = args.method.parse().map_err(|e| anyhow::anyhow!("--method: {e}"))?;
    let bits: Bits = args.bits.parse().map_err(|e| anyhow::anyhow!("--bits: {e}"))?;
    if args.num == 0 {
        bail!("--num must be at least 1");
    }
    if args.iters == 0 || args.batch == 0 {
        bail!("--iters and --batch must be at least 1");
    }
    let mut cfg = SynthConfig::new(method);
    args.weights.apply(&mut cfg.weights)?;
    let (cfg_p, file) = resolve(&args.model, args.arch.as_deref())?;
    let weights = load_weights(&cfg_p, &file)?;
    prepare_out_dir(&args.out)?;
    cfg.iters = args.iters;
    cfg.batch = args.batch.min(args.num);
    cfg.log_every = args.log_every.max(1);

    let gpu = Gpu::new(gpu_opts)?;
    let p = Vit::new(&gpu, cfg_p.clone(), &weights);
    let q = if cfg.weights.alignment > 0.0 && method == Method::Maskaq {
        Some(match &args.quantized {
            Some(path) => {
                crate::quant::export::load(&gpu, path, Some(&cfg_p)).with_context(|| "--quantized")?
            }
            None => {
                let mut q = Vit::new(&gpu, cfg_p.clone(), &weights);
                q.quantize(&gpu, bits);
                q
            }
        })
    } else {
        None
    };
    let mut synth = Synthesizer::new(&gpu, &p, q.as_ref(), cfg.clone())?;
    let batches = args.num.div_ceil(cfg.batch);
    let total_iters = if method == Method::Noise { batches } else { batches * cfg.iters };
    let pb = if std::io::stderr().is_terminal() {
        let pb = ProgressBar::with_draw_target(Some(total_iters as u64), ProgressDrawTarget::stderr());
        if let Ok(s) = ProgressStyle::with_template("{bar:30} {pos}/{len} iterations  {msg}  eta {eta}") {
            pb.set_style(s);
        }
        pb
    } else {
        ProgressBar::hidden()
    };
    eprintln!(
        "synth: {} images by {method} on {} ({} batches of {} x {} iterations) on {}",
        args.num,
        cfg_p.architecture,
        batches,
        cfg.batch,
        cfg.iters,
        gpu.describe()
    );
    let start = Instant::now();
    let mut rng = Rng::new(args.seed);
    let (mut images, mut labels, mut logs) = (Vec::new(), Vec::new(), Vec::new());
    let per = cfg_p.in_chans * cfg_p.img_size * cfg_p.img_size;
    let mut dropped = 0;
    for bi in 0..batches {
        let mut last_pos = 0;
        let batch = synth.run_batch(&mut rng, |t| {
            pb.set_message(format!("batch {}/{batches}  {}", bi + 1, fmt_terms(t)));
            pb.inc((t.iter + 1 - last_pos) as u64);
            last_pos = t.iter + 1;
        })?;
        if method == Method::Noise {
            pb.inc(1);
        }
        if !batch.finite {
            dropped += 1;
            pb.suspend(|| eprintln!("synth: batch {} went non-finite and was dropped", bi + 1));
        } else {
            let keep = (args.num - labels.len()).min(batch.labels.len());
            images.extend_from_slice(&batch.images[..keep * per]);
            labels.extend_from_slice(&batch.labels[..keep]);
        }
        logs.push(BatchLog { batch: bi, finite: batch.finite, terms: batch.log });
    }
    pb.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    if labels.is_empty() {
        bail!("every batch went non-finite; nothing was written");
    }
    let shape = [cfg_p.in_chans, cfg_p.img_size, cfg_p.img_size];
    let mut meta = HashMap::new();
    meta.insert("method".to_string(), method.to_string());
    meta.insert("num_classes".to_string(), cfg_p.num_classes.to_string());
    meta.insert("model".to_string(), args.model.display().to_string());
    meta.insert("seed".to_string(), args.seed.to_string());
    SyntheticDataset::write(&args.out, shape, &images, &labels, meta)?;
    write_previews(&args.out, &images, shape, &cfg_p.preprocess)?;
    let report = Report {
        adapter: gpu.describe(),
        model: args.model.display().to_string(),
        method: method.to_string(),
        bits: bits.to_string(),
        config: &cfg,
        seed: args.seed,
        images: labels.len(),
        dropped_batches: dropped,
        seconds,
        image_iterations_per_second: (batches * cfg.batch * cfg.iters) as f64 / seconds,
        batches: logs,
    };
    crate::io::write_atomic(&args.out.join("log.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    eprintln!(
        "synth: wrote {} images to {} in {seconds:.1} s ({} dropped batches); contact sheet {}",
        labels.len(),
        args.out.display(),
        dropped,
        args.out.join("contact_sheet.png").display()
    );
    if let (Some(first), Some(last)) = (
        report.batches.first().and_then(|b| b.terms.first()),
        report.batches.last().and_then(|b| b.terms.last()),
    ) {
        eprintln!("synth: first iteration {}\nsynth: last iteration  {}", fmt_terms(first), fmt_terms(last));
    }
    Ok(())
}

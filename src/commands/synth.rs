//! `maskaq synth`: synthesise a labelled image set from noise with MaskAQ (or a baseline) and
//! write it as a dataset, PNG previews, a contact sheet and a JSON log of every loss term.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::data::synthetic::{SyntheticDataset, write_previews};
use crate::gpu::{Gpu, GpuOptions};
use crate::io::{Existing, OutDir};
use crate::maskaq::agreement::{Agreement, agreement};
use crate::maskaq::shard::Shard;
use crate::maskaq::synth::{Method, SynthConfig, Synthesizer, TermLog};
use crate::maskaq::synth_pool::{self, Plan, WorkerStats};
use crate::model::Model;
use crate::model::checkpoint::{Weights, load_weights, resolve};
use crate::progress::Progress;
use crate::quant::Bits;

/// The synthesis loss weights as flags (shared by `synth` and `quantize`).
#[derive(clap::Args, Clone, Debug, Default)]
#[command(next_help_heading = "Synthesis loss weights")]
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

/// Every synthesis setting as flags (shared by `synth` and `quantize`); each default is the
/// authors' value (docs/method.md §1.2) unless its help says otherwise.
#[derive(clap::Args, Clone, Debug, Default)]
#[command(next_help_heading = "Synthesis")]
pub struct SynthSettingArgs {
    #[command(flatten)]
    pub weights: LossWeightArgs,
    /// AdamW learning rate on the pixels (0.1), cosine to --synth-lr-min.
    #[arg(long, allow_negative_numbers = true)]
    pub synth_lr: Option<f32>,
    /// The learning rate at the last iteration (1e-3).
    #[arg(long, allow_negative_numbers = true)]
    pub synth_lr_min: Option<f32>,
    /// AdamW weight decay on the pixels (1e-6).
    #[arg(long, allow_negative_numbers = true)]
    pub synth_weight_decay: Option<f32>,
    /// Informative-region ratio at the first and the last iteration, linear in between (0.5,0.1).
    #[arg(long, value_delimiter = ',', value_name = "START,END", allow_negative_numbers = true)]
    pub mask_ratio: Option<Vec<f32>>,
    /// Fraction of the informative patches dropped at random each iteration (0.3).
    #[arg(long, allow_negative_numbers = true)]
    pub mask_drop: Option<f32>,
    /// Patch rows sampled for the entropy term (64; all if the grid has fewer).
    #[arg(long)]
    pub entropy_rows: Option<usize>,
    /// Random shift in pixels at 224 px (scaled to the image size) in the first and the second
    /// half of the iterations (8,16).
    #[arg(long, value_delimiter = ',', value_name = "FIRST,SECOND")]
    pub jitter: Option<Vec<usize>>,
    /// Strength A of the colour jitter (x - m) / s, m ~ U[-A, A], s = exp(U[-A, A]) in
    /// normalised space (1, the authors'; 0 = off).
    #[arg(long, value_name = "A", allow_negative_numbers = true)]
    pub synth_color_jitter: Option<f64>,
    /// Where each batch's images start: randn (the authors') or black.
    #[arg(long, value_enum)]
    pub synth_init: Option<crate::maskaq::synth::SynthInit>,
    /// Standard deviation of the noise augmentation's per-image constant at the first iteration,
    /// falling linearly to 0 at the last (0.5, the authors'; 0 = off).
    #[arg(long, value_name = "STD", allow_negative_numbers = true)]
    pub synth_noise: Option<f64>,
    /// Swin only: masked alignment as the authors' code has it (as-coded: none) or maskaq's
    /// proposal from the last stage's attention (last-stage, the default); docs/swin.md.
    #[arg(long, value_enum)]
    pub swin_alignment: Option<crate::maskaq::synth::SwinAlignment>,
}

impl SynthSettingArgs {
    /// Sets the given settings in `cfg`; every value is checked for its range first.
    pub fn apply(&self, cfg: &mut SynthConfig) -> Result<()> {
        let check = |flag: &str, v: f64, ok: bool, want: &str| -> Result<()> {
            if !(ok && v.is_finite()) {
                bail!("{flag} {v}: expected {want}");
            }
            Ok(())
        };
        self.weights.apply(&mut cfg.weights)?;
        if let Some(v) = self.swin_alignment {
            cfg.swin_alignment = v;
        }
        if let Some(v) = self.synth_lr {
            check("--synth-lr", v as f64, v > 0.0, "a positive learning rate")?;
            cfg.lr = v;
        }
        if let Some(v) = self.synth_lr_min {
            check("--synth-lr-min", v as f64, v >= 0.0, "a learning rate >= 0")?;
            cfg.lr_min = v;
        }
        if let Some(v) = self.synth_weight_decay {
            check("--synth-weight-decay", v as f64, v >= 0.0, "a weight decay >= 0")?;
            cfg.weight_decay = v;
        }
        if let Some(v) = &self.mask_ratio {
            if v.len() != 2 {
                bail!("--mask-ratio: expected two ratios START,END (e.g. 0.5,0.1), got {} values", v.len());
            }
            for &r in v {
                check("--mask-ratio", r as f64, r > 0.0 && r <= 1.0, "two ratios in (0, 1], e.g. 0.5,0.1")?;
            }
            cfg.mask_ratio = (v[0], v[1]);
        }
        if let Some(v) = self.mask_drop {
            check("--mask-drop", v as f64, (0.0..1.0).contains(&v), "a fraction in [0, 1)")?;
            cfg.mask_drop = v;
        }
        if let Some(v) = self.entropy_rows {
            if v == 0 {
                bail!("--entropy-rows must be at least 1");
            }
            cfg.entropy_rows = v;
        }
        if let Some(v) = &self.jitter {
            if v.len() != 2 {
                bail!(
                    "--jitter: expected two shifts FIRST,SECOND in pixels (e.g. 8,16), got {} values",
                    v.len()
                );
            }
            cfg.jitter = (v[0], v[1]);
        }
        if let Some(v) = self.synth_color_jitter {
            // exp(3) = 20: beyond that the jitter only scales images to nothing or to the clamp.
            check(
                "--synth-color-jitter",
                v,
                (0.0..=3.0).contains(&v),
                "a strength in [0, 3] (1: the authors')",
            )?;
            cfg.color_jitter = v;
        }
        if let Some(v) = self.synth_init {
            cfg.init = v;
        }
        if let Some(v) = self.synth_noise {
            check("--synth-noise", v, v >= 0.0, "a standard deviation >= 0 (0.5: the authors')")?;
            cfg.noise_std = v;
        }
        Ok(())
    }
}

#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// The full-precision model P.
    #[command(flatten)]
    pub model: crate::cli::ModelArgs,
    /// The quantized model Q (a file from `maskaq ptq`/`quantize`); default: P quantized at --bits.
    #[arg(long, value_name = "FILE")]
    pub quantized: Option<PathBuf>,
    /// Bit widths of Q, W<w>A<a> with 2 to 8 bits each (default W4A4; with --quantized, the file's).
    #[arg(long)]
    pub bits: Option<Bits>,
    /// How the images are synthesized.
    #[arg(long, value_enum, default_value_t = Method::Maskaq)]
    pub method: Method,
    /// Number of images.
    #[arg(long, visible_alias = "num", value_name = "N")]
    pub num_images: usize,
    /// Optimisation steps per batch (the authors use 2000).
    #[arg(long, visible_alias = "iters", default_value_t = 2000)]
    pub synth_iters: usize,
    /// Images per synthesis batch (the authors: 16).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Seed of the noise, the labels and every random draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder (synthetic.safetensors, previews/, contact_sheet.png, log.json).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace what an earlier run wrote in --out.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub settings: SynthSettingArgs,
    /// Log the loss terms every N iterations.
    #[arg(long, default_value_t = 50)]
    pub log_every: usize,
    /// Print the report (log.json) on stdout at the end.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub adapters: crate::cli::AdaptersArgs,
    /// Make only shard K of N of this run's batches (K from 0; `maskaq synth-merge` joins the
    /// shards into the unsharded set), or `auto`: K and N from a Slurm job array
    /// (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT) or a Kubernetes Indexed Job
    /// (JOB_COMPLETION_INDEX, with --shard-count).
    #[arg(long, value_name = "K/N|auto")]
    pub shard: Option<String>,
    /// The number of shards, for `--shard auto` where the environment does not give it.
    #[arg(long, value_name = "N")]
    pub shard_count: Option<usize>,
}

/// What `synth` writes in its folder (removed first with --overwrite).
const SYNTH_OUTPUTS: &[&str] = &["synthetic.safetensors", "previews", "contact_sheet.png", "log.json"];

#[derive(Serialize)]
struct BatchLog {
    batch: usize,
    finite: bool,
    terms: Vec<TermLog>,
}

#[derive(Serialize)]
struct Report<'a> {
    adapter: String,
    /// Every adapter that synthesized, with its share.
    workers: Vec<WorkerStats>,
    /// `K/N` for one shard of a run (`--shard`).
    shard: Option<String>,
    /// The settings every shard of one run shares (`synth-merge` compares them).
    run: String,
    model: String,
    method: String,
    bits: String,
    config: &'a SynthConfig,
    seed: u64,
    images: usize,
    /// P's top-1 agreement with the target labels on the written images.
    agreement: Agreement,
    dropped_batches: usize,
    seconds: f64,
    image_iterations_per_second: f64,
    batches: Vec<BatchLog>,
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
    let method = args.method;
    if args.num_images == 0 {
        bail!("--num-images must be at least 1");
    }
    if args.synth_iters == 0 || args.batch == 0 {
        bail!("--synth-iters and --batch must be at least 1");
    }
    let mut cfg = SynthConfig::new(method);
    args.settings.apply(&mut cfg)?;
    let (cfg_p, file) = resolve(&args.model.model, args.model.arch.as_deref())?;
    crate::commands::check_images_fit_host(&cfg_p, args.num_images, "--num-images")?;
    let weights = load_weights(&cfg_p, &file)?;
    let mut inputs: Vec<(&str, &Path)> = vec![("--model", args.model.model.as_path())];
    if let Some(q) = &args.quantized {
        inputs.push(("--quantized", q.as_path()));
    }
    cfg.iters = args.synth_iters;
    cfg.batch = args.batch.min(args.num_images);
    cfg.log_every = args.log_every.max(1);
    let batches = args.num_images.div_ceil(cfg.batch);
    let shard = args.shard.as_deref().map(|s| Shard::parse(s, args.shard_count)).transpose()?;
    if shard.is_none() && args.shard_count.is_some() {
        bail!("--shard-count is only read with --shard auto");
    }
    let slots = match shard {
        Some(s) => s.slots(batches)?,
        None => 0..batches,
    };
    let out = OutDir::prepare(&args.out, &inputs, args.overwrite, Existing::Refuse, SYNTH_OUTPUTS)?;

    let gpus = args.adapters.open(gpu_opts)?;
    let gpu = &gpus[0];
    for g in &gpus {
        crate::commands::check_fits(g, &cfg_p, cfg.batch, "--batch")?;
    }
    let p = Model::new(gpu, cfg_p.clone(), &weights);
    let (q, bits) = quantized_model(gpu, args, &cfg_p, &weights, &cfg)?;
    let q = q.filter(|_| cfg.weights.alignment > 0.0 && method == Method::Maskaq);
    let run_key = run_key(args, &cfg, &weights, bits)?;
    let mut synth = Synthesizer::new(gpu, &p, q.as_ref(), cfg.clone())?;
    let total_iters = if method == Method::Noise { slots.len() } else { slots.len() * cfg.iters };
    let pb = if args.json { Progress::hidden() } else { Progress::new("synth", "iterations") };
    pb.start(total_iters as u64, "synthesizing, iterations");
    let share = match shard {
        Some(s) => format!("shard {s}: batches {}..{} of {batches}", slots.start, slots.end),
        None => format!("{batches} batches"),
    };
    let on = gpus.iter().map(|g| g.describe()).collect::<Vec<_>>().join(" + ");
    eprintln!(
        "synth: {} images by {method} on {} ({share} of {} x {} iterations) on {on}",
        args.num_images,
        crate::commands::describe_model(&args.model.model, &cfg_p),
        cfg.batch,
        cfg.iters,
    );
    let start = Instant::now();
    let per = cfg_p.in_chans * cfg_p.img_size * cfg_p.img_size;
    let set = synthesize(&mut synth, &gpus[1..], &weights, args, slots, per, &pb)?;
    let (images, labels, logs, dropped, workers) =
        (set.images, set.labels, set.logs, set.dropped, set.workers);
    pb.finish();
    let seconds = start.elapsed().as_secs_f64();
    if labels.is_empty() {
        bail!("every batch went non-finite; nothing was written");
    }
    if gpus.len() > 1 {
        for w in &workers {
            eprintln!(
                "synth: {}: {} batches ({:.0} %) in {:.1} s",
                w.adapter,
                w.batches,
                100.0 * w.batches as f64 / logs.len().max(1) as f64,
                w.seconds
            );
        }
    }
    let shape = [cfg_p.in_chans, cfg_p.img_size, cfg_p.img_size];
    let mut meta = HashMap::new();
    meta.insert("method".to_string(), method.to_string());
    meta.insert("num_classes".to_string(), cfg_p.num_classes.to_string());
    meta.insert("model".to_string(), args.model.model.display().to_string());
    meta.insert("seed".to_string(), args.seed.to_string());
    meta.insert("run".to_string(), run_key.clone());
    if let Some(s) = shard {
        meta.insert("shard".to_string(), s.to_string());
    }
    let agree = agreement(gpu, &p, &images, &labels)?;
    SyntheticDataset::write(&out.path, shape, &images, &labels, meta)?;
    write_previews(&out.path, &images, &labels, &cfg_p)?;
    let report = Report {
        adapter: gpu.describe(),
        workers,
        shard: shard.map(|s| s.to_string()),
        run: run_key,
        model: args.model.model.display().to_string(),
        method: method.to_string(),
        bits: bits.to_string(),
        config: &cfg,
        seed: args.seed,
        images: labels.len(),
        agreement: agree,
        dropped_batches: dropped,
        seconds,
        image_iterations_per_second: (batches * cfg.batch * cfg.iters) as f64 / seconds,
        batches: logs,
    };
    let report_json = serde_json::to_string_pretty(&report)?;
    crate::io::write_atomic(&out.join("log.json"), report_json.as_bytes())?;
    if args.json {
        println!("{report_json}");
    }
    eprintln!(
        "synth: wrote {} images to {} in {seconds:.1} s ({} dropped batches); contact sheet {}",
        labels.len(),
        args.out.display(),
        dropped,
        args.out.join("contact_sheet.png").display()
    );
    eprintln!("synth: P classifies {}", report.agreement.summary(cfg_p.label_names.as_deref()));
    if let (Some(first), Some(last)) = (
        report.batches.first().and_then(|b| b.terms.first()),
        report.batches.last().and_then(|b| b.terms.last()),
    ) {
        eprintln!("synth: first iteration {}\nsynth: last iteration  {}", fmt_terms(first), fmt_terms(last));
    }
    Ok(())
}

/// Q for the alignment term: the --quantized file (whose bits --bits must not contradict), or P
/// quantized at --bits; none when the method does not read Q. Returns Q and its bit widths.
fn quantized_model(
    gpu: &Gpu,
    args: &SynthArgs,
    cfg_p: &crate::model::ModelConfig,
    weights: &crate::model::checkpoint::Weights,
    cfg: &SynthConfig,
) -> Result<(Option<Model>, Bits)> {
    let mut bits = args.bits.unwrap_or(Bits { w: 4, a: 4 });
    // Only MaskAQ's alignment term reads Q.
    let reads_q = cfg.weights.alignment > 0.0 && args.method == Method::Maskaq;
    let q = match &args.quantized {
        Some(path) => {
            let q = crate::quant::export::load(gpu, path, Some(cfg_p))
                .with_context(|| format!("--quantized {}", path.display()))?;
            let file_bits =
                q.quant.as_ref().map(|qq| qq.bits).context("--quantized: not a quantized model")?;
            if args.bits.is_some_and(|b| b != file_bits) {
                bail!(
                    "--bits {bits}: --quantized {} is {file_bits}; leave --bits out or give {file_bits}",
                    path.display()
                );
            }
            bits = file_bits;
            Some(q)
        }
        None if reads_q => {
            let mut q = Model::new(gpu, cfg_p.clone(), weights);
            q.quantize(gpu, bits);
            Some(q)
        }
        None => None,
    };
    Ok((q.filter(|_| reads_q), bits))
}

/// The settings that decide a run's images, as one string: every shard of a run must have the
/// same (`synth-merge` checks it). P and a --quantized Q enter by their fingerprints.
fn run_key(args: &SynthArgs, cfg: &SynthConfig, weights: &Weights, bits: Bits) -> Result<String> {
    let q = match &args.quantized {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("--quantized {}", path.display()))?;
            Some(crate::io::fingerprint_bytes(&bytes))
        }
        None => None,
    };
    let key = serde_json::json!({
        "model": crate::maskaq::fingerprint(weights),
        "quantized": q,
        "bits": bits.to_string(),
        "method": args.method.to_string(),
        "num_images": args.num_images,
        "seed": args.seed,
        "config": cfg,
    });
    Ok(key.to_string())
}

/// The images of every batch that stayed finite, each batch's loss log, and each adapter's share.
struct SynthesizedSet {
    images: Vec<f32>,
    labels: Vec<usize>,
    logs: Vec<BatchLog>,
    dropped: usize,
    workers: Vec<WorkerStats>,
}

/// Runs the batches `slots` on the synthesizer's adapter and on `extra`, each from its own
/// random stream, showing the loss terms as they come; a non-finite batch is dropped.
fn synthesize(
    synth: &mut Synthesizer,
    extra: &[Gpu],
    weights: &Weights,
    args: &SynthArgs,
    slots: std::ops::Range<usize>,
    per: usize,
    pb: &Progress,
) -> Result<SynthesizedSet> {
    let iters = synth.config().iters;
    let noise = args.method == Method::Noise;
    // The last logged iteration of each worker's current batch, to advance the bar by the rest.
    let last = std::sync::Mutex::new(vec![0usize; extra.len() + 1]);
    let on_log = |w: usize, t: &TermLog| {
        pb.set_message(fmt_terms(t));
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        let done = t.iter + 1;
        pb.inc(done.saturating_sub(last[w]) as u64);
        last[w] = if done == iters { 0 } else { done };
    };
    let plan = Plan { seed: args.seed, stream: 0, slots, attempts: 1, on_log: &on_log };
    let (made, workers) = synth_pool::run(synth, extra, Some(weights), &plan)?;
    let mut set =
        SynthesizedSet { images: Vec::new(), labels: Vec::new(), logs: Vec::new(), dropped: 0, workers };
    for m in made {
        let batch = m.batch;
        if noise {
            pb.inc(1);
        }
        if !batch.finite {
            set.dropped += 1;
            pb.suspend(|| eprintln!("synth: batch {} went non-finite and was dropped", m.slot + 1));
        } else {
            // By position in the whole run, so a shard keeps what the unsharded run keeps.
            let keep = (args.num_images - m.slot * batch.labels.len()).min(batch.labels.len());
            set.images.extend_from_slice(&batch.images[..keep * per]);
            set.labels.extend_from_slice(&batch.labels[..keep]);
        }
        set.logs.push(BatchLog { batch: m.slot, finite: batch.finite, terms: batch.log });
    }
    Ok(set)
}

//! `maskaq quantize`: the MaskAQ pipeline — sample synthesis with P and Q, Q training with
//! periodic refresh — then export, a JSON report and loss/accuracy curves.

use std::path::{Path, PathBuf};

use std::io::IsTerminal;

use anyhow::{Context, Result, bail};

use crate::commands::synth::prepare_out_dir;
use crate::data::dataset;
use crate::data::synthetic::SyntheticDataset;
use crate::gpu::{Gpu, GpuOptions};
use crate::maskaq::pipeline::{self, QuantizeConfig};
use crate::maskaq::synth::Method;
use crate::model::Vit;
use crate::model::checkpoint::{load_weights, resolve};
use crate::quant::Bits;

/// The arguments of `maskaq quantize`.
#[derive(clap::Args, Debug)]
pub struct QuantizeArgs {
    /// The full-precision model (default: the bundled assets/fashion_vit).
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long)]
    pub arch: Option<String>,
    #[arg(long, default_value = "W4A4")]
    pub bits: String,
    /// maskaq, mimiq, psaq or noise (how the images are synthesized).
    #[arg(long, default_value = "maskaq")]
    pub method: String,
    /// demo (bundled model, minutes on a CPU), fast (DeiT-T-sized models on a GPU) or paper (the authors' settings).
    #[arg(long, default_value = "demo")]
    pub preset: String,
    /// Evaluation after every epoch (default with the bundled model: its test slice).
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    /// Evaluate on this many samples of --eval-data, evenly spread over it (every class of an
    /// image folder), instead of all of them.
    #[arg(long)]
    pub eval_limit: Option<usize>,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub num_images: Option<usize>,
    #[arg(long)]
    pub synth_iters: Option<usize>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub refresh_every: Option<usize>,
    #[arg(long)]
    pub frozen_epochs: Option<usize>,
    /// Images per synthesis batch (the authors: 16). The objectives are per-image means and
    /// AdamW normalises the step, so larger batches mainly use a GPU better.
    #[arg(long)]
    pub synth_batch: Option<usize>,
    /// Images per Q-training step (the authors: 16).
    #[arg(long)]
    pub train_batch: Option<usize>,
    /// Q training: SGD learning rate (cosine to 1 % of it over the epochs; the authors: 1e-3).
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// Q training: weight of the mask-weighted head distillation (the authors: 10; 0 = KD only).
    #[arg(long, allow_negative_numbers = true)]
    pub hd_coef: Option<f32>,
    /// Q training: SGD momentum, Nesterov (0.9).
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f32>,
    /// Q training: weight decay (0: the authors' code never applies its configured 1e-4).
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f32>,
    /// Q training: temperature of the knowledge distillation (5).
    #[arg(long, allow_negative_numbers = true)]
    pub kd_temperature: Option<f32>,
    /// Q training: fraction of patch tokens (top by P's mean |O|) weighted --mask-weight in the
    /// head distillation (0.1).
    #[arg(long, allow_negative_numbers = true)]
    pub mask_proportion: Option<f64>,
    /// Q training: weight of those tokens, the rest weigh 1 (2; 1 = uniform).
    #[arg(long, allow_negative_numbers = true)]
    pub mask_weight: Option<f32>,
    #[command(flatten)]
    pub weights: crate::commands::synth::LossWeightArgs,
    /// Synthesis: AdamW learning rate on the pixels (0.1), cosine to --synth-lr-min.
    #[arg(long, allow_negative_numbers = true)]
    pub synth_lr: Option<f32>,
    /// Synthesis: the learning rate at the last iteration (1e-3).
    #[arg(long, allow_negative_numbers = true)]
    pub synth_lr_min: Option<f32>,
    /// Synthesis: AdamW weight decay on the pixels (1e-6).
    #[arg(long, allow_negative_numbers = true)]
    pub synth_weight_decay: Option<f32>,
    /// Synthesis: informative-region ratio at the first and the last iteration, linear in
    /// between (0.5,0.1).
    #[arg(long, value_delimiter = ',', value_name = "START,END", allow_negative_numbers = true)]
    pub mask_ratio: Option<Vec<f32>>,
    /// Synthesis: fraction of the informative patches dropped at random each iteration (0.3).
    #[arg(long, allow_negative_numbers = true)]
    pub mask_drop: Option<f32>,
    /// Synthesis: patch rows sampled for the entropy term (64; all if the grid has fewer).
    #[arg(long)]
    pub entropy_rows: Option<usize>,
    /// Synthesis: random shift in pixels at 224 px (scaled to the image size) in the first and
    /// the second half of the iterations (8,16).
    #[arg(long, value_delimiter = ',', value_name = "FIRST,SECOND")]
    pub jitter: Option<Vec<usize>>,
    /// The LSQ zero points' gradient: `plain` (the authors' code, unscaled), `lsq` (scaled by
    /// LSQ's g like the steps) or `frozen`.
    #[arg(long)]
    pub z_grad: Option<String>,
    /// Start from this synthetic set (a `maskaq synth` folder) instead of synthesizing the
    /// first one; refreshes still regenerate it (add --no-refresh to keep it).
    #[arg(long)]
    pub synthetic: Option<PathBuf>,
    /// Q's activation quantizers start from `minmax` (the min-max PTQ ranges on noise, then
    /// trained as LSQ; default) or `lsq` (the authors' lazy LSQ init on augmented noise; the
    /// `paper` preset's default).
    #[arg(long)]
    pub init: Option<String>,
    /// Ablation: no patch-similarity entropy term in synthesis.
    #[arg(long, conflicts_with = "w_entropy")]
    pub no_entropy: bool,
    /// Ablation: no masked P-Q attention alignment in synthesis.
    #[arg(long, conflicts_with = "w_alignment")]
    pub no_alignment: bool,
    /// Ablation: uniform token weights in the head distillation.
    #[arg(long, conflicts_with = "mask_weight")]
    pub no_mask_weights: bool,
    /// Ablation: synthesize once, never refresh.
    #[arg(long)]
    pub no_refresh: bool,
    /// Train Q without the batch augmentation (random resized crop, flip, colour jitter, blur).
    #[arg(long)]
    pub no_augment: bool,
    /// Continue an interrupted run from --out's checkpoint.safetensors (same flags).
    #[arg(long)]
    pub resume: bool,
    /// Start afresh in an --out that already holds a run (its checkpoint is replaced after the
    /// first epoch). Without it, such an --out is refused.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Stop after finishing this epoch, as an interruption would (to test --resume).
    #[arg(long, hide = true)]
    pub stop_after_epoch: Option<usize>,
}

/// The bundled model and test slice, found beside the sources or in the working directory.
fn bundled(rel: &str) -> PathBuf {
    let here = Path::new(rel);
    if here.exists() { here.to_path_buf() } else { Path::new(env!("CARGO_MANIFEST_DIR")).join(rel) }
}

pub fn run(gpu_opts: &GpuOptions, args: &QuantizeArgs) -> Result<()> {
    let method: Method = args.method.parse().map_err(|e| anyhow::anyhow!("--method: {e}"))?;
    let bits: Bits = args.bits.parse().map_err(|e| anyhow::anyhow!("--bits: {e}"))?;
    let mut cfg = QuantizeConfig::preset(&args.preset, method, &bits.to_string())?;
    cfg.seed = args.seed;
    if let Some(v) = args.num_images {
        cfg.num_images = v;
    }
    if let Some(v) = args.synth_iters {
        cfg.synth.iters = v;
        cfg.synth.log_every = v;
    }
    if let Some(v) = args.epochs {
        cfg.epochs = v;
    }
    if let Some(v) = args.refresh_every {
        cfg.refresh_every = v;
    }
    if let Some(v) = args.frozen_epochs {
        cfg.frozen_epochs = v;
    }
    if let Some(v) = args.synth_batch {
        cfg.synth.batch = v;
    }
    if let Some(v) = args.train_batch {
        cfg.train.batch = v;
    }
    if let Some(v) = args.lr {
        cfg.train.lr = v;
    }
    if let Some(v) = args.hd_coef {
        cfg.train.hd_coef = v;
    }
    // Every other hyperparameter of the spec; each flag is checked for its range.
    let check = |flag: &str, v: f64, ok: bool, want: &str| -> Result<()> {
        if !(ok && v.is_finite()) {
            bail!("{flag} {v}: expected {want}");
        }
        Ok(())
    };
    check("--lr", cfg.train.lr as f64, cfg.train.lr > 0.0, "a positive learning rate")?;
    check("--hd-coef", cfg.train.hd_coef as f64, cfg.train.hd_coef >= 0.0, "a weight >= 0")?;
    if let Some(v) = args.momentum {
        check("--momentum", v as f64, (0.0..1.0).contains(&v), "a momentum in [0, 1)")?;
        cfg.train.momentum = v;
    }
    if let Some(v) = args.weight_decay {
        check("--weight-decay", v as f64, v >= 0.0, "a weight decay >= 0")?;
        cfg.train.weight_decay = v;
    }
    if let Some(v) = args.kd_temperature {
        check("--kd-temperature", v as f64, v > 0.0, "a positive temperature")?;
        cfg.train.kd_temperature = v;
    }
    if let Some(v) = args.mask_proportion {
        check("--mask-proportion", v, v > 0.0 && v <= 1.0, "a fraction in (0, 1]")?;
        cfg.train.mask_proportion = v;
    }
    if let Some(v) = args.mask_weight {
        check("--mask-weight", v as f64, v > 0.0, "a positive weight (1: uniform)")?;
        cfg.train.mask_weight = v;
    }
    args.weights.apply(&mut cfg.synth.weights)?;
    if let Some(v) = args.synth_lr {
        check("--synth-lr", v as f64, v > 0.0, "a positive learning rate")?;
        cfg.synth.lr = v;
    }
    if let Some(v) = args.synth_lr_min {
        check("--synth-lr-min", v as f64, v >= 0.0, "a learning rate >= 0")?;
        cfg.synth.lr_min = v;
    }
    if let Some(v) = args.synth_weight_decay {
        check("--synth-weight-decay", v as f64, v >= 0.0, "a weight decay >= 0")?;
        cfg.synth.weight_decay = v;
    }
    if let Some(v) = &args.mask_ratio {
        if v.len() != 2 {
            bail!("--mask-ratio: expected two ratios START,END (e.g. 0.5,0.1), got {} values", v.len());
        }
        for &r in v {
            check("--mask-ratio", r as f64, r > 0.0 && r <= 1.0, "two ratios in (0, 1], e.g. 0.5,0.1")?;
        }
        cfg.synth.mask_ratio = (v[0], v[1]);
    }
    if let Some(v) = args.mask_drop {
        check("--mask-drop", v as f64, (0.0..1.0).contains(&v), "a fraction in [0, 1)")?;
        cfg.synth.mask_drop = v;
    }
    if let Some(v) = args.entropy_rows {
        if v == 0 {
            bail!("--entropy-rows must be at least 1");
        }
        cfg.synth.entropy_rows = v;
    }
    if let Some(v) = &args.jitter {
        if v.len() != 2 {
            bail!("--jitter: expected two shifts FIRST,SECOND in pixels (e.g. 8,16), got {} values", v.len());
        }
        cfg.synth.jitter = (v[0], v[1]);
    }
    if let Some(v) = &args.z_grad {
        cfg.train.z_grad = match v.as_str() {
            "plain" => 1.0,
            "lsq" => -1.0,
            "frozen" => 0.0,
            other => bail!("--z-grad: unknown mode `{other}` (expected plain, lsq or frozen)"),
        };
    }
    if let Some(v) = &args.init {
        cfg.init = v.clone();
    }
    if args.no_entropy {
        cfg.synth.weights.entropy = 0.0;
    }
    if args.no_alignment {
        cfg.synth.weights.alignment = 0.0;
    }
    if args.no_mask_weights {
        cfg.train.mask_weight = 1.0;
    }
    if args.no_refresh {
        cfg.refresh_every = 0;
    }
    if args.no_augment {
        cfg.train.augment = false;
    }
    if cfg.num_images == 0 || cfg.epochs == 0 || cfg.synth.iters == 0 {
        bail!("--num-images, --epochs and --synth-iters must be at least 1");
    }
    if cfg.synth.batch == 0 || cfg.train.batch == 0 {
        bail!("--synth-batch and --train-batch must be at least 1");
    }
    if !["lsq", "minmax"].contains(&cfg.init.as_str()) {
        bail!("--init: unknown initialisation `{}` (expected lsq or minmax)", cfg.init);
    }
    let (model, eval_path) = match &args.model {
        Some(m) => (m.clone(), args.eval_data.clone()),
        None => (
            bundled("assets/fashion_vit"),
            Some(
                args.eval_data
                    .clone()
                    .unwrap_or_else(|| bundled("assets/fashion-mnist-test-slice/t10k-images-idx3-ubyte.gz")),
            ),
        ),
    };
    let (pcfg, file) = resolve(&model, args.arch.as_deref())?;
    let weights = load_weights(&pcfg, &file)?;
    let initial = match &args.synthetic {
        Some(dir) => {
            let set =
                SyntheticDataset::open(dir).with_context(|| format!("--synthetic {}", dir.display()))?;
            let want = [pcfg.in_chans, pcfg.img_size, pcfg.img_size];
            if set.shape != want {
                bail!("--synthetic {}: images are {:?}, the model takes {want:?}", dir.display(), set.shape);
            }
            if let Some(bad) = set.labels.iter().find(|&&l| l >= pcfg.num_classes) {
                bail!(
                    "--synthetic {}: label {bad} but the model has {} classes",
                    dir.display(),
                    pcfg.num_classes
                );
            }
            match args.num_images {
                None => cfg.num_images = set.labels.len(),
                Some(n) if n > set.labels.len() => bail!(
                    "--num-images {n}: --synthetic {} holds only {} images",
                    dir.display(),
                    set.labels.len()
                ),
                Some(_) => {}
            }
            cfg.synthetic_from = Some(dir.display().to_string());
            Some(set)
        }
        None => None,
    };
    if args.eval_limit == Some(0) {
        bail!("--eval-limit must be at least 1");
    }
    let eval = match &eval_path {
        Some(p) => {
            let d = dataset::open(p).with_context(|| format!("--eval-data {}", p.display()))?;
            Some(match args.eval_limit {
                Some(n) => Box::new(dataset::Spread::new(d, n)) as Box<dyn dataset::Dataset>,
                None => d,
            })
        }
        None => None,
    };
    let ckpt = args.out.join(pipeline::CHECKPOINT);
    if args.resume {
        if !ckpt.is_file() {
            bail!("--resume: no {} in {}", pipeline::CHECKPOINT, args.out.display());
        }
        pipeline::check_resume(&args.out, &cfg, &weights)?;
    } else if ckpt.exists() && !args.overwrite {
        bail!(
            "--out {} already holds a run ({}: {}); continue it with --resume (same flags), start \
             afresh with --overwrite, or choose another --out",
            args.out.display(),
            pipeline::CHECKPOINT,
            pipeline::describe_checkpoint(&ckpt)
        );
    }
    prepare_out_dir(&args.out)?;

    let gpu = Gpu::new(gpu_opts)?;
    // Ctrl-C stops at the next batch; the checkpoint of the last finished epoch stays.
    if let Err(e) =
        ctrlc::set_handler(|| pipeline::INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed))
    {
        eprintln!(
            "quantize: no Ctrl-C handler ({e}); an interruption keeps the last epoch's checkpoint all the same"
        );
    }
    eprintln!(
        "quantize: {} to {bits} with {method} ({} preset) on {}",
        pcfg.architecture,
        args.preset,
        gpu.describe()
    );
    let p = Vit::new(&gpu, pcfg.clone(), &weights);
    let mut q = Vit::new(&gpu, pcfg.clone(), &weights);
    q.quantize(&gpu, bits);
    let progress = if std::io::stderr().is_terminal() {
        let pb = indicatif::ProgressBar::with_draw_target(Some(1), indicatif::ProgressDrawTarget::stderr());
        if let Ok(st) = indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len}  eta {eta}") {
            pb.set_style(st);
        }
        pb.set_message("preparing P, Q and the baselines");
        pb
    } else {
        indicatif::ProgressBar::hidden()
    };
    let opts = pipeline::RunOptions {
        progress: progress.clone(),
        eval: eval.as_deref(),
        out: &args.out,
        resume: args.resume,
        stop_after_epoch: args.stop_after_epoch,
        initial: initial.as_ref(),
    };
    let report = pipeline::run(&gpu, &p, &weights, &q, &cfg, &opts, |line| {
        progress.suspend(|| eprintln!("quantize: {line}"))
    });
    progress.finish_and_clear();
    let mut report = report?;
    report.model = model.display().to_string();
    report.eval_data = eval.as_ref().map(|d| d.source());
    report.eval_samples = eval.as_ref().map(|d| d.len());
    crate::quant::export::export(
        &gpu,
        &q,
        &format!("{method}-{}", args.preset),
        &args.out.join("quantized.safetensors"),
    )?;
    let kd: Vec<f64> = report.epochs.iter().map(|e| e.kd as f64).collect();
    let hd: Vec<f64> = report.epochs.iter().map(|e| e.hd as f64).collect();
    crate::plot::line_chart(&args.out.join("curves_loss.png"), &[kd, hd])?;
    if let Some(fp_top1) = report.fp_top1 {
        let n = report.epochs.len();
        let top1: Vec<f64> = report.epochs.iter().map(|e| e.top1.unwrap_or(f64::NAN)).collect();
        let fp = vec![fp_top1; n];
        let ptq = vec![report.ptq_noise_top1.unwrap_or(f64::NAN); n];
        crate::plot::line_chart(&args.out.join("curves_accuracy.png"), &[top1, fp, ptq])?;
    }
    crate::io::write_atomic(
        &args.out.join("report.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    println!("model              {}", report.model);
    println!("bits               {bits}");
    let pct = |v: Option<f64>| v.map_or("- (no --eval-data)".to_string(), |t| format!("{t:.2} %"));
    if let Some(e) = &report.eval_data {
        println!("evaluation data    {e}");
    }
    println!("full precision     {}", pct(report.fp_top1));
    println!("min-max PTQ noise  {}", pct(report.ptq_noise_top1));
    println!("{:<18} {} (final epoch)", method.to_string(), pct(report.final_top1));
    println!(
        "time               {:.1} s (synthesis {:.1} s, training {:.1} s)",
        report.total_seconds, report.synthesis_seconds, report.training_seconds
    );
    let accuracy_png = if report.fp_top1.is_some() {
        format!(", curves_accuracy.png [{method} blue, FP red, PTQ green]")
    } else {
        String::new() // no evaluation data: no accuracy curve
    };
    println!(
        "wrote              {} (quantized.safetensors, report.json, curves_loss.png [kd blue, hd red]{accuracy_png}, synthetic/contact_sheet.png)",
        args.out.display()
    );
    Ok(())
}

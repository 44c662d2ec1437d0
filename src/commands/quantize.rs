//! `maskaq quantize`: the MaskAQ pipeline — sample synthesis with P and Q, Q training with
//! periodic refresh — then export, a JSON report and loss/accuracy curves.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::data::dataset;
use crate::data::synthetic::SyntheticDataset;
use crate::gpu::{Gpu, GpuOptions};
use crate::io::{Existing, OutDir};
use crate::maskaq::pipeline::{self, QuantizeConfig};
use crate::maskaq::synth::Method;
use crate::model::Model;
use crate::model::checkpoint::{load_weights, resolve};
use crate::progress::Progress;
use crate::quant::Bits;

/// The arguments of `maskaq quantize`.
#[derive(clap::Args, Debug)]
pub struct QuantizeArgs {
    /// The full-precision model (default: the bundled assets/fashion_vit).
    #[arg(long, value_name = "PATH", help_heading = "Model and output")]
    pub model: Option<PathBuf>,
    /// Architecture of a bare .safetensors --model: a timm name or a config.json path.
    #[arg(long, value_name = "NAME|CONFIG", help_heading = "Model and output")]
    pub arch: Option<String>,
    /// Bit widths of Q, W<w>A<a> with 2 to 8 bits each.
    #[arg(long, default_value = "W4A4", help_heading = "Model and output")]
    pub bits: Bits,
    /// How the images are synthesized.
    #[arg(long, value_enum, default_value_t = Method::Maskaq, help_heading = "Model and output")]
    pub method: Method,
    /// Settings for the run's size; every one can be changed by its own flag.
    #[arg(long, value_enum, default_value_t = Preset::Demo, help_heading = "Model and output")]
    pub preset: Preset,
    /// Output folder (quantized.safetensors, report.json, curves, synthetic/, checkpoint).
    #[arg(long, value_name = "DIR", help_heading = "Model and output")]
    pub out: PathBuf,
    /// Seed of every random draw (noise, labels, augmentation, order).
    #[arg(long, default_value_t = 0, help_heading = "Model and output")]
    pub seed: u64,
    /// Print report.json on stdout at the end.
    #[arg(long, help_heading = "Model and output")]
    pub json: bool,
    /// Synthesize on several adapters at once (Q trains on the first); see `maskaq synth --help`.
    #[command(flatten)]
    pub adapters: crate::cli::AdaptersArgs,
    /// Evaluation after every epoch (default with the bundled model: its test slice).
    #[arg(long, value_name = "PATH", help_heading = "Evaluation")]
    pub eval_data: Option<PathBuf>,
    /// Evaluate on this many samples of --eval-data, evenly spread over it (every class of an
    /// image folder), instead of all of them.
    #[arg(long, value_name = "N", help_heading = "Evaluation")]
    pub eval_limit: Option<usize>,
    /// Synthetic images per refresh (preset).
    #[arg(long, visible_alias = "num", value_name = "N", help_heading = "Schedule")]
    pub num_images: Option<usize>,
    /// Optimisation steps per synthesis batch (preset).
    #[arg(long, value_name = "N", help_heading = "Schedule")]
    pub synth_iters: Option<usize>,
    /// Epochs of Q training (preset).
    #[arg(long, value_name = "N", help_heading = "Schedule")]
    pub epochs: Option<usize>,
    /// Regenerate the images with the current Q every N epochs (preset; 0 = never).
    #[arg(long, value_name = "N", help_heading = "Schedule")]
    pub refresh_every: Option<usize>,
    /// The first N epochs compute losses but do not update Q, as in the authors' code (preset).
    #[arg(long, value_name = "N", help_heading = "Schedule")]
    pub frozen_epochs: Option<usize>,
    /// Images per synthesis batch (the authors: 16). The objectives are per-image means and
    /// AdamW normalises the step, so larger batches mainly use a GPU better.
    #[arg(long, value_name = "N", help_heading = "Schedule")]
    pub synth_batch: Option<usize>,
    /// Images per Q-training step (the authors: 16).
    #[arg(long, value_name = "N", help_heading = "Schedule")]
    pub train_batch: Option<usize>,
    /// Q training: SGD learning rate (cosine to 1 % of it over the epochs; the authors: 1e-3;
    /// the demo preset at 4 or more weight bits: 1e-2, on the quantizers only).
    #[arg(long, help_heading = "Q training", allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// Q training: weight of the mask-weighted head distillation (the authors: 10; 0 = KD only).
    #[arg(long, help_heading = "Q training", allow_negative_numbers = true)]
    pub hd_coef: Option<f32>,
    /// Q training: SGD momentum, Nesterov (0.9).
    #[arg(long, help_heading = "Q training", allow_negative_numbers = true)]
    pub momentum: Option<f32>,
    /// Q training: weight decay (0: the authors' code never applies its configured 1e-4).
    #[arg(long, help_heading = "Q training", allow_negative_numbers = true)]
    pub weight_decay: Option<f32>,
    /// Q training: temperature of the knowledge distillation (5).
    #[arg(long, help_heading = "Q training", allow_negative_numbers = true)]
    pub kd_temperature: Option<f32>,
    /// Q training: fraction of patch tokens (top by P's mean |O|) weighted --mask-weight in the
    /// head distillation (0.1).
    #[arg(long, help_heading = "Q training", allow_negative_numbers = true)]
    pub mask_proportion: Option<f64>,
    /// Q training: weight of those tokens, the rest weigh 1 (2; 1 = uniform).
    #[arg(long, help_heading = "Q training", allow_negative_numbers = true)]
    pub mask_weight: Option<f32>,
    #[command(flatten)]
    pub synth: crate::commands::synth::SynthSettingArgs,
    /// The LSQ zero points' gradient: `plain` (the authors' code, unscaled), `lsq` (scaled by
    /// LSQ's g like the steps) or `frozen`.
    #[arg(long, value_enum, help_heading = "Q training")]
    pub z_grad: Option<ZGrad>,
    /// Q training: what the updates change: `all` (weights and activation quantizers, the
    /// authors' code; fast, paper), `quantizers` (only the activation quantizers' steps and zero
    /// points; demo at 4 or more weight bits) or `weights`.
    #[arg(long, value_enum, help_heading = "Q training")]
    pub train_params: Option<crate::maskaq::qtrain::TrainParams>,
    /// Real-data QAT, the upper reference for the data-free methods: train Q on --num-images
    /// real labelled images drawn from this dataset (redrawn at every refresh) instead of
    /// synthetic ones; everything else is the same Q training.
    #[arg(long, value_name = "PATH", help_heading = "Q training", conflicts_with = "synthetic")]
    pub real_data: Option<PathBuf>,
    /// Start from this synthetic set (a `maskaq synth` folder) instead of synthesizing the
    /// first one; refreshes still regenerate it (add --no-refresh to keep it).
    #[arg(long, help_heading = "Q training")]
    pub synthetic: Option<PathBuf>,
    /// Q's activation quantizers start from `minmax` (the min-max PTQ ranges on noise, then
    /// trained as LSQ; default) or `lsq` (the authors' lazy LSQ init on augmented noise; the
    /// `paper` preset's default).
    #[arg(long, value_enum, help_heading = "Q training")]
    pub init: Option<Init>,
    /// Ablation: no patch-similarity entropy term in synthesis.
    #[arg(long, help_heading = "Ablations", conflicts_with = "w_entropy")]
    pub no_entropy: bool,
    /// Ablation: no masked P-Q attention alignment in synthesis.
    #[arg(long, help_heading = "Ablations", conflicts_with = "w_alignment")]
    pub no_alignment: bool,
    /// Ablation: uniform token weights in the head distillation.
    #[arg(long, help_heading = "Ablations", conflicts_with = "mask_weight")]
    pub no_mask_weights: bool,
    /// Ablation: synthesize once, never refresh.
    #[arg(long, help_heading = "Ablations")]
    pub no_refresh: bool,
    /// Train Q without the batch augmentation (random resized crop, flip, colour jitter, blur).
    #[arg(long, help_heading = "Ablations")]
    pub no_augment: bool,
    /// Continue an interrupted run from --out's checkpoint.safetensors (same flags).
    #[arg(long, help_heading = "Model and output")]
    pub resume: bool,
    /// Start afresh in an --out that already holds a run (what that run wrote there is removed
    /// first). Without it, such an --out is refused.
    #[arg(long, help_heading = "Model and output", conflicts_with = "resume")]
    pub overwrite: bool,
    /// Stop after finishing this epoch, as an interruption would (to test --resume).
    #[arg(long, hide = true)]
    pub stop_after_epoch: Option<usize>,
}

/// The run-size presets of `quantize`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// The bundled model in minutes on a CPU: 64 images x 100 iterations from a black start with
    /// half-strength colour jitter (on a Swin: no colour jitter and no noise augmentation), 8
    /// epochs, refresh every 4; with weights of 4 bits or more it trains only the activation
    /// quantizers, at lr 1e-2.
    Demo,
    /// DeiT-T-sized models on a GPU: 128 images x 100 iterations from a black start with
    /// half-strength colour jitter (as demo, and as demo on a Swin), 10 epochs, refresh every 5.
    Fast,
    /// The authors' settings: 10,000 images x 2000 iterations, 200 epochs, refresh every 30 (many GPU-hours).
    Paper,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Demo => "demo",
            Preset::Fast => "fast",
            Preset::Paper => "paper",
        }
    }
}

/// How Q's activation quantizers start.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// The min-max PTQ ranges on noise, then trained as LSQ (default except `paper`).
    Minmax,
    /// The authors' lazy LSQ init on the first augmented noise batch (`paper`'s default).
    Lsq,
}

/// The gradient of the LSQ zero points.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZGrad {
    /// Unscaled, as the authors' code.
    Plain,
    /// Scaled by LSQ's g like the steps.
    Lsq,
    /// Not trained.
    Frozen,
}

/// What `quantize` writes in its folder (removed first with --overwrite).
const QUANTIZE_OUTPUTS: &[&str] = &[
    pipeline::CHECKPOINT,
    pipeline::PTQ_BASELINE,
    "quantized.safetensors",
    "report.json",
    "curves_loss.png",
    "curves_accuracy.png",
    "synthetic",
];

/// On a CPU adapter, a preset sized for GPUs takes hours: say so before starting, with an
/// estimate from the model's MACs and lavapipe's measured rate (docs/results.md: the bundled
/// model's synthesis iteration at batch 16 takes about 0.4 s for 16 x 7.9 MMAC).
fn warn_if_long_on_cpu(gpu: &Gpu, pcfg: &crate::model::ModelConfig, cfg: &QuantizeConfig) {
    let hours = cpu_hours_estimate(pcfg.macs_per_image(), cfg);
    if hours > 0.5 {
        eprintln!(
            "quantize: warning: {} is a CPU adapter; this run needs about {hours:.1} hours here \
             (estimate). A GPU, a smaller preset or fewer --num-images/--synth-iters/--epochs is faster",
            gpu.info.name
        );
    }
}

/// Hours a run takes on lavapipe, from the MACs per image. Real-data QAT synthesizes nothing,
/// and a run started from `--synthetic` synthesizes only at its refreshes after the first set.
fn cpu_hours_estimate(macs_per_image: f64, cfg: &QuantizeConfig) -> f64 {
    // One synthesis iteration runs P and Q forward and backward: about 6 forward costs.
    const CPU_MACS_PER_S: f64 = 16.0 * 7.9e6 * 6.0 / 0.4;
    let sets = if cfg.refresh_every == 0 { 1 } else { cfg.epochs.div_ceil(cfg.refresh_every) };
    let synthesized_sets = match (&cfg.real_data, &cfg.synthetic_from) {
        (Some(_), _) => 0,
        (None, Some(_)) => sets - 1,
        (None, None) => sets,
    };
    let synth = (cfg.num_images * cfg.synth.iters * synthesized_sets) as f64 * macs_per_image * 6.0;
    let train = (cfg.num_images * cfg.epochs) as f64 * macs_per_image * 4.0;
    (synth + train) / CPU_MACS_PER_S / 3600.0
}

/// The bundled model and test slice, found beside the sources or in the working directory.
fn bundled(rel: &str) -> PathBuf {
    let here = Path::new(rel);
    if here.exists() { here.to_path_buf() } else { Path::new(env!("CARGO_MANIFEST_DIR")).join(rel) }
}

pub fn run(gpu_opts: &GpuOptions, args: &QuantizeArgs) -> Result<()> {
    let (model, eval_path) = model_and_eval_paths(args);
    let (pcfg, file) = resolve(&model, args.arch.as_deref())?;
    let mut cfg = config_from_flags(args, &pcfg)?;
    let weights = load_weights(&pcfg, &file)?;
    let initial = open_synthetic(args, &pcfg, &mut cfg)?;
    let real = match &args.real_data {
        Some(path) => {
            let d = dataset::open(path).with_context(|| format!("--real-data {}", path.display()))?;
            crate::eval::check_labels(d.as_ref(), d.len(), pcfg.num_classes)
                .with_context(|| format!("--real-data {}", path.display()))?;
            cfg.real_data = Some(d.source());
            Some(d)
        }
        None => None,
    };
    let eval = open_eval(args, eval_path.as_deref())?;
    let out = prepare_out(args, &cfg, &weights, &model, eval_path.as_deref())?;

    let gpus = args.adapters.open(gpu_opts)?;
    let gpu = &gpus[0];
    crate::commands::check_fits(
        gpu,
        &pcfg,
        cfg.synth.batch.max(cfg.train.batch),
        "--synth-batch/--train-batch",
    )?;
    for g in &gpus[1..] {
        crate::commands::check_fits(g, &pcfg, cfg.synth.batch, "--synth-batch")?;
    }
    eprintln!(
        "quantize: {} to {} with {} ({} preset) on {}",
        crate::commands::describe_model(&model, &pcfg),
        args.bits,
        args.method,
        args.preset.name(),
        gpu.describe()
    );
    for g in &gpus[1..] {
        eprintln!("quantize: synthesis also on {}", g.describe());
    }
    if gpu.cpu_like {
        warn_if_long_on_cpu(gpu, &pcfg, &cfg);
    }
    let p = Model::new(gpu, pcfg.clone(), &weights);
    let mut q = Model::new(gpu, pcfg.clone(), &weights);
    q.quantize(gpu, args.bits);
    let progress = if args.json { Progress::hidden() } else { Progress::new("quantize", "") };
    progress.set_message("preparing P, Q and the baselines");
    let opts = pipeline::RunOptions {
        progress: progress.clone(),
        eval: eval.as_deref(),
        out: &out.path,
        resume: args.resume,
        stop_after_epoch: args.stop_after_epoch,
        initial: initial.as_ref(),
        real: real.as_deref(),
        extra_gpus: &gpus[1..],
    };
    let report = pipeline::run(gpu, &p, &weights, &q, &cfg, &opts, |line| {
        progress.suspend(|| eprintln!("quantize: {line}"))
    });
    progress.finish();
    let mut report = report?;
    report.model = model.display().to_string();
    report.eval_data = eval.as_ref().map(|d| d.source());
    report.eval_samples = eval.as_ref().map(|d| d.len());
    crate::quant::export::export(
        gpu,
        &q,
        &format!("{}-{}", args.method, args.preset.name()),
        &args.out.join("quantized.safetensors"),
    )?;
    write_results(args, &report)
}

/// The model and the per-epoch evaluation data: without --model, the bundled model and its
/// test slice (unless --eval-data names other data).
fn model_and_eval_paths(args: &QuantizeArgs) -> (PathBuf, Option<PathBuf>) {
    match &args.model {
        Some(m) => (m.clone(), args.eval_data.clone()),
        None => (
            bundled("assets/fashion_vit"),
            Some(
                args.eval_data
                    .clone()
                    .unwrap_or_else(|| bundled("assets/fashion-mnist-test-slice/t10k-images-idx3-ubyte.gz")),
            ),
        ),
    }
}

/// The preset for this model, then every flag that changes it, each checked for its range.
fn config_from_flags(args: &QuantizeArgs, model: &crate::model::ModelConfig) -> Result<QuantizeConfig> {
    let mut cfg = QuantizeConfig::preset(args.preset.name(), args.method, &args.bits.to_string(), model)?;
    cfg.seed = args.seed;
    apply_size_flags(args, &mut cfg);
    apply_training_flags(args, &mut cfg)?;
    args.synth.apply(&mut cfg.synth)?;
    if let Some(v) = args.init {
        cfg.init = match v {
            Init::Minmax => "minmax".into(),
            Init::Lsq => "lsq".into(),
        };
    }
    if args.no_entropy {
        cfg.synth.weights.entropy = 0.0;
    }
    if args.no_alignment {
        cfg.synth.weights.alignment = 0.0;
    }
    if args.no_refresh {
        cfg.refresh_every = 0;
    }
    if cfg.num_images == 0 || cfg.epochs == 0 || cfg.synth.iters == 0 {
        bail!("--num-images, --epochs and --synth-iters must be at least 1");
    }
    if cfg.synth.batch == 0 || cfg.train.batch == 0 {
        bail!("--synth-batch and --train-batch must be at least 1");
    }
    if cfg.frozen_epochs >= cfg.epochs {
        bail!(
            "--frozen-epochs {} with --epochs {}: no epoch would train Q (the result would be the \
             PTQ starting point reported as {}); use fewer frozen epochs or more epochs",
            cfg.frozen_epochs,
            cfg.epochs,
            args.method
        );
    }
    if args.eval_limit == Some(0) {
        bail!("--eval-limit must be at least 1");
    }
    Ok(cfg)
}

/// The flags that size the run: images, iterations, epochs, refresh, batches.
fn apply_size_flags(args: &QuantizeArgs, cfg: &mut QuantizeConfig) {
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
}

/// Q training's hyperparameters of the spec, each flag checked for its range.
fn apply_training_flags(args: &QuantizeArgs, cfg: &mut QuantizeConfig) -> Result<()> {
    let check = |flag: &str, v: f64, ok: bool, want: &str| -> Result<()> {
        if !(ok && v.is_finite()) {
            bail!("{flag} {v}: expected {want}");
        }
        Ok(())
    };
    let t = &mut cfg.train;
    if let Some(v) = args.lr {
        t.lr = v;
    }
    if let Some(v) = args.hd_coef {
        t.hd_coef = v;
    }
    check("--lr", t.lr as f64, t.lr > 0.0, "a positive learning rate")?;
    check("--hd-coef", t.hd_coef as f64, t.hd_coef >= 0.0, "a weight >= 0")?;
    if let Some(v) = args.momentum {
        check("--momentum", v as f64, (0.0..1.0).contains(&v), "a momentum in [0, 1)")?;
        t.momentum = v;
    }
    if let Some(v) = args.weight_decay {
        check("--weight-decay", v as f64, v >= 0.0, "a weight decay >= 0")?;
        t.weight_decay = v;
    }
    if let Some(v) = args.kd_temperature {
        check("--kd-temperature", v as f64, v > 0.0, "a positive temperature")?;
        t.kd_temperature = v;
    }
    if let Some(v) = args.mask_proportion {
        check("--mask-proportion", v, v > 0.0 && v <= 1.0, "a fraction in (0, 1]")?;
        t.mask_proportion = v;
    }
    if let Some(v) = args.mask_weight {
        check("--mask-weight", v as f64, v > 0.0, "a positive weight (1: uniform)")?;
        t.mask_weight = v;
    }
    if let Some(v) = args.train_params {
        t.train_params = v;
    }
    if let Some(v) = args.z_grad {
        t.z_grad = match v {
            ZGrad::Plain => 1.0,
            ZGrad::Lsq => -1.0,
            ZGrad::Frozen => 0.0,
        };
    }
    if args.no_mask_weights {
        t.mask_weight = 1.0;
    }
    if args.no_augment {
        t.augment = false;
    }
    Ok(())
}

/// `--synthetic`: the first set, checked against the model; it sets --num-images unless given.
fn open_synthetic(
    args: &QuantizeArgs,
    pcfg: &crate::model::ModelConfig,
    cfg: &mut QuantizeConfig,
) -> Result<Option<SyntheticDataset>> {
    let Some(dir) = &args.synthetic else { return Ok(None) };
    let set = SyntheticDataset::open(dir).with_context(|| format!("--synthetic {}", dir.display()))?;
    let want = [pcfg.in_chans, pcfg.img_size, pcfg.img_size];
    if set.shape != want {
        bail!("--synthetic {}: images are {:?}, the model takes {want:?}", dir.display(), set.shape);
    }
    if let Some(bad) = set.labels.iter().find(|&&l| l >= pcfg.num_classes) {
        bail!("--synthetic {}: label {bad} but the model has {} classes", dir.display(), pcfg.num_classes);
    }
    match args.num_images {
        None => cfg.num_images = set.labels.len(),
        Some(n) if n > set.labels.len() => {
            bail!("--num-images {n}: --synthetic {} holds only {} images", dir.display(), set.labels.len())
        }
        Some(_) => {}
    }
    cfg.synthetic_from = Some(dir.display().to_string());
    Ok(Some(set))
}

/// The per-epoch evaluation data, or all of it spread to --eval-limit samples.
fn open_eval(args: &QuantizeArgs, path: Option<&Path>) -> Result<Option<Box<dyn dataset::Dataset>>> {
    let Some(p) = path else { return Ok(None) };
    let d = dataset::open(p).with_context(|| format!("--eval-data {}", p.display()))?;
    Ok(Some(match args.eval_limit {
        Some(n) => Box::new(dataset::Spread::new(d, n)) as Box<dyn dataset::Dataset>,
        None => d,
    }))
}

/// --out, checked against --resume/--overwrite and against the inputs it must not overwrite.
fn prepare_out(
    args: &QuantizeArgs,
    cfg: &QuantizeConfig,
    weights: &crate::model::checkpoint::Weights,
    model: &Path,
    eval_path: Option<&Path>,
) -> Result<OutDir> {
    let ckpt = args.out.join(pipeline::CHECKPOINT);
    if args.resume {
        if !ckpt.is_file() {
            bail!("--resume: no {} in {}", pipeline::CHECKPOINT, args.out.display());
        }
        pipeline::check_resume(&args.out, cfg, weights)?;
    } else if ckpt.exists() && !args.overwrite {
        bail!(
            "--out {} already holds a run ({}: {}); continue it with --resume (same flags), start \
             afresh with --overwrite, or choose another --out",
            args.out.display(),
            pipeline::CHECKPOINT,
            pipeline::describe_checkpoint(&ckpt)
        );
    }
    let mut inputs: Vec<(&str, &Path)> = vec![("--model", model)];
    if let Some(e) = eval_path {
        inputs.push(("--eval-data", e));
    }
    if let Some(s) = &args.synthetic {
        inputs.push(("--synthetic", s.as_path()));
    }
    if let Some(r) = &args.real_data {
        inputs.push(("--real-data", r.as_path()));
    }
    let existing = if args.resume { Existing::Accept } else { Existing::Refuse };
    OutDir::prepare(&args.out, &inputs, args.overwrite, existing, QUANTIZE_OUTPUTS)
}

/// The curves, report.json, and the summary on stdout (or the report, with --json).
fn write_results(args: &QuantizeArgs, report: &pipeline::QuantizeReport) -> Result<()> {
    let bits = args.bits;
    // What trained Q, as the summary and the curves name it.
    let trained_by =
        if args.real_data.is_some() { "real-data QAT".to_string() } else { args.method.to_string() };
    let accuracy_chart = crate::plot::run_curves(
        &args.out,
        &report.epochs,
        report.fp_top1,
        report.ptq_noise_top1,
        &trained_by,
        &bits.to_string(),
    )?;
    let report_json = serde_json::to_string_pretty(report)?;
    crate::io::write_atomic(&args.out.join("report.json"), report_json.as_bytes())?;
    if args.json {
        println!("{report_json}");
        return Ok(());
    }
    println!("model              {}", report.model);
    println!("bits               {bits}");
    let pct = |v: Option<f64>| v.map_or("- (no --eval-data)".to_string(), |t| format!("{t:.2} %"));
    if let Some(e) = &report.eval_data {
        println!("evaluation data    {e}");
    }
    println!("full precision     {}", pct(report.fp_top1));
    println!("min-max PTQ noise  {}", pct(report.ptq_noise_top1));
    println!("{trained_by:<18} {} (final epoch)", pct(report.final_top1));
    println!(
        "time               {:.1} s (synthesis {:.1} s, training {:.1} s)",
        report.total_seconds, report.synthesis_seconds, report.training_seconds
    );
    // Without evaluation data there is no accuracy curve.
    let accuracy_png = if accuracy_chart { ", curves_accuracy.png" } else { "" };
    let ptq = if report.ptq_noise_top1.is_some() { ", ptq_noise.safetensors" } else { "" };
    println!(
        "wrote              {} (quantized.safetensors, report.json, curves_loss.png{accuracy_png}, synthetic/contact_sheet.png{ptq})",
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maskaq::synth::Method;

    #[test]
    fn cpu_estimate_counts_only_the_sets_that_are_synthesized() {
        let vit = crate::model::ModelConfig::from_arch("deit_tiny_patch16_224").unwrap();
        let mut cfg = QuantizeConfig::preset("demo", Method::Maskaq, "W4A4", &vit).unwrap();
        cfg.num_images = 1024;
        let macs = 7.9e6;
        let synthesized = cpu_hours_estimate(macs, &cfg);
        cfg.real_data = Some("train.gz".into());
        let real = cpu_hours_estimate(macs, &cfg);
        // 2 sets x 100 iterations x 6 against 8 epochs x 4: synthesis is most of the run.
        assert!(real > 0.0 && real * 10.0 < synthesized, "real {real} h, synthesized {synthesized} h");
        cfg.real_data = None;
        cfg.synthetic_from = Some("set".into());
        let from_set = cpu_hours_estimate(macs, &cfg);
        assert!(from_set > real && from_set < synthesized, "{from_set} h");
    }

    #[test]
    fn short_presets_turn_off_the_intensity_augmentations_on_a_swin() {
        use crate::model::ModelConfig;
        let vit = ModelConfig::from_arch("deit_tiny_patch16_224").unwrap();
        let swin = ModelConfig::from_arch("swin_tiny_patch4_window7_224").unwrap();
        for preset in ["demo", "fast"] {
            let v = QuantizeConfig::preset(preset, Method::Maskaq, "W4A4", &vit).unwrap().synth;
            let s = QuantizeConfig::preset(preset, Method::Maskaq, "W4A4", &swin).unwrap().synth;
            assert_eq!((v.color_jitter, v.noise_std), (0.5, 0.5), "{preset} on a ViT");
            assert_eq!((s.color_jitter, s.noise_std), (0.0, 0.0), "{preset} on a Swin");
        }
        // `paper` keeps the authors' values everywhere.
        let s = QuantizeConfig::preset("paper", Method::Maskaq, "W4A4", &swin).unwrap().synth;
        assert_eq!((s.color_jitter, s.noise_std), (1.0, 0.5));
    }
}

//! The command line: every subcommand, flag and value type (clap derive). Each subcommand's
//! flags are a struct in its module under `commands/`; the pieces several commands share (the
//! model, the output, the adapter) are here, so a flag means the same thing everywhere.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::gpu::tune::TuneMode;
use crate::gpu::{Backend, GpuOptions};

/// Exit codes, also listed in `--help` and the README.
pub const EXIT_CODES: &str = "Exit codes: 0 success; 1 error (one line `maskaq: error: ...` on stderr); \
2 bad command line; 130 interrupted (Ctrl-C; a `quantize` run keeps its last finished epoch for --resume).";

#[derive(Parser)]
#[command(
    name = "maskaq",
    version,
    about = "Data-free quantization of Vision Transformers (MaskAQ) on any GPU",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    pub gpu: GpuArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone, Debug)]
pub struct GpuArgs {
    /// Graphics API (default: the fastest available; WGPU_BACKEND also works).
    #[arg(long, global = true, value_enum)]
    pub backend: Option<Backend>,
    /// Use the adapter whose name contains this text (see `maskaq devices`; WGPU_ADAPTER_NAME also works).
    #[arg(long, global = true, value_name = "NAME")]
    pub adapter: Option<String>,
    /// Kernel variants: `cache` uses the picks `maskaq tune` stored for this adapter, `build`
    /// also measures picks for shapes the cache lacks, `off` uses the built-in defaults.
    #[arg(long, global = true, value_enum, default_value_t = TuneMode::Cache)]
    pub tune: TuneMode,
    /// The tuning cache file (default: one per adapter and driver in the user's cache directory).
    #[arg(long, global = true, value_name = "FILE")]
    pub tune_cache: Option<PathBuf>,
    /// Every op its own kernel launch: the fused kernels (which compute the same bits in fewer
    /// launches) off, to measure what they gain or to rule them out.
    #[arg(long, global = true)]
    pub unfused: bool,
}

impl GpuArgs {
    pub fn options(&self) -> GpuOptions {
        GpuOptions {
            backend: self.backend,
            adapter: self.adapter.clone(),
            tune: self.tune,
            tune_cache: self.tune_cache.clone(),
            unfused: self.unfused,
        }
    }
}

/// `--adapters`: the commands that can use several adapters at once.
#[derive(Args, Clone, Debug, Default)]
pub struct AdaptersArgs {
    /// Several adapters at once: a comma list of backends (vulkan, metal, dx12, gl), adapter-name
    /// substrings or BACKEND:SUBSTRING, or `all` (see `maskaq devices`). An item given twice opens
    /// its adapter twice; the first item is the main one.
    #[arg(long, value_name = "LIST")]
    pub adapters: Option<String>,
}

impl AdaptersArgs {
    /// One device per item of `--adapters`, or the one `--backend`/`--adapter` choose.
    pub fn open(&self, opts: &GpuOptions) -> anyhow::Result<Vec<crate::gpu::Gpu>> {
        match &self.adapters {
            Some(list) => crate::gpu::Gpu::open_list(opts, list),
            None => Ok(vec![crate::gpu::Gpu::new(opts)?]),
        }
    }
}

/// The full-precision model a command reads.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// A timm Hugging Face folder (config.json + model.safetensors) or a .safetensors file (with --arch).
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// Architecture of a bare .safetensors file: a timm name (e.g. deit_tiny_patch16_224) or a config.json path.
    #[arg(long, value_name = "NAME|CONFIG")]
    pub arch: Option<String>,
}

#[derive(Subcommand)]
pub enum Command {
    /// List the GPU adapters wgpu can use.
    Devices(commands::devices::DevicesArgs),
    /// Classify images with a ViT, DeiT or Swin checkpoint.
    Predict(commands::predict::PredictArgs),
    /// Top-1/top-5 accuracy on a labelled dataset: an image folder (one subfolder per class) or
    /// an IDX images file (MNIST naming, its labels file beside it; gzip or plain).
    Eval(commands::eval::EvalArgs),
    /// Supervised training of a full-precision ViT (AdamW, cross-entropy, light augmentation);
    /// writes a timm folder (config.json + model.safetensors) after every epoch.
    Train(commands::train::TrainCmd),
    /// Min-max post-training quantization (the baseline): calibrate activation ranges on
    /// Gaussian noise or real images, no training; writes a quantized-model file.
    Ptq(commands::ptq::PtqArgs),
    /// Synthesise labelled images from noise (MaskAQ, or a baseline) for data-free quantization.
    Synth(commands::synth::SynthArgs),
    /// Join the shard folders of one `synth --shard K/N` run into one synthetic set.
    SynthMerge(commands::synth_merge::SynthMergeArgs),
    /// The MaskAQ pipeline: synthesize images with P and Q, train Q on them with periodic
    /// refresh; without --model it quantizes the bundled Fashion-MNIST model.
    Quantize(Box<commands::quantize::QuantizeArgs>),
    /// The same job on several adapters (e.g. vulkan,gl): accuracy, logits, quantization codes and
    /// a synthesis run compared pair by pair.
    Compare(commands::compare::CompareArgs),
    /// Measure forward, forward+backward, synthesis-iteration and Q-training-step times.
    Bench(commands::bench::BenchArgs),
    /// Time every kernel variant at the shapes a model launches and store the fastest that
    /// passes its check in this adapter's tuning cache (used by later runs; see --tune).
    Tune(commands::tune::TuneArgs),
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let gpu = cli.gpu.options();
    match cli.command {
        Command::Devices(a) => commands::devices::run(&gpu, &a),
        Command::Predict(a) => commands::predict::run(&gpu, &a),
        Command::Eval(a) => commands::eval::run(&gpu, &a),
        Command::Train(a) => commands::train::run(&gpu, &a),
        Command::Ptq(a) => commands::ptq::run(&gpu, &a),
        Command::Synth(a) => commands::synth::run(&gpu, &a),
        Command::SynthMerge(a) => commands::synth_merge::run(&a),
        Command::Quantize(a) => commands::quantize::run(&gpu, &a),
        Command::Compare(a) => commands::compare::run(&gpu, &a),
        Command::Bench(a) => commands::bench::run(&gpu, &a),
        Command::Tune(a) => commands::tune::run(&gpu, &a),
    }
}

/// A clap error as one line (`maskaq: error: ...` like every other error), with clap's hints
/// (possible values, similar flags) kept and its usage block dropped.
pub fn one_line_usage_error(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .collect();
    let joined = parts.join("; ");
    let msg = joined.strip_prefix("error: ").unwrap_or(&joined);
    format!("maskaq: error: {msg} (see --help)")
}

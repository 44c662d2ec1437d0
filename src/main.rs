//! The `maskaq` command line: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use maskaq::commands;
use maskaq::gpu::{Gpu, GpuOptions};

#[derive(Parser)]
#[command(
    name = "maskaq",
    version,
    about = "Data-free quantization of Vision Transformers (MaskAQ) on any GPU"
)]
struct Cli {
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct GpuArgs {
    /// Graphics API: vulkan, metal, dx12 or gl (default: the fastest available; WGPU_BACKEND also works).
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Use the adapter whose name contains this text (see `maskaq devices`; WGPU_ADAPTER_NAME also works).
    #[arg(long, global = true)]
    adapter: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// List the GPU adapters wgpu can use.
    Devices {
        #[arg(long)]
        json: bool,
    },
    /// Classify images with a ViT/DeiT checkpoint.
    Predict {
        /// A timm Hugging Face folder (config.json + model.safetensors) or a .safetensors file.
        #[arg(long)]
        model: PathBuf,
        /// Architecture of a bare .safetensors file: a timm name or a config.json path.
        #[arg(long)]
        arch: Option<String>,
        /// How many classes to show per image.
        #[arg(long, default_value_t = 5)]
        top: usize,
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Measure forward and forward+backward throughput on the adapter.
    Bench {
        /// A checkpoint; without it, random weights for --arch.
        #[arg(long)]
        model: Option<PathBuf>,
        /// A timm architecture name or a config.json path.
        #[arg(long)]
        arch: Option<String>,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Timed repetitions (the median is reported).
        #[arg(long, default_value_t = 5)]
        iters: usize,
        /// Also time every kernel launch of one forward+backward and sum by kernel.
        #[arg(long)]
        profile: bool,
        #[arg(long)]
        json: bool,
    },
    /// Top-1/top-5 accuracy on a labelled dataset: an image folder (one subfolder per class) or
    /// an IDX images file (MNIST naming, its labels file beside it; gzip or plain).
    Eval {
        /// A timm Hugging Face folder (config.json + model.safetensors) or a .safetensors file.
        #[arg(long)]
        model: PathBuf,
        /// Architecture of a bare .safetensors file: a timm name or a config.json path.
        #[arg(long)]
        arch: Option<String>,
        /// A folder of class subfolders, or an IDX images file such as t10k-images-idx3-ubyte.gz.
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Evaluate only the first N samples (an image folder is ordered class by class).
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
        /// Evaluate this quantized model (made from --model by `maskaq ptq` or `quantize`).
        #[arg(long)]
        quantized: Option<PathBuf>,
    },
    /// Supervised training of a full-precision ViT (AdamW, cross-entropy, light augmentation);
    /// writes a timm folder (config.json + model.safetensors) after every epoch.
    Train {
        /// Architecture to initialise randomly: a timm name or a config.json path.
        #[arg(long)]
        arch: Option<String>,
        /// Or continue from this checkpoint.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Training data: an image folder or an IDX images file.
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 10)]
        epochs: usize,
        #[arg(long, default_value_t = 128)]
        batch: usize,
        #[arg(long, default_value_t = 1e-3)]
        lr: f32,
        #[arg(long, default_value_t = 0.05)]
        weight_decay: f32,
        #[arg(long, default_value_t = 1)]
        warmup_epochs: usize,
        /// Largest random shift in pixels (padding with black), 0 for none.
        #[arg(long, default_value_t = 2)]
        shift: usize,
        /// No random horizontal flips.
        #[arg(long)]
        no_flip: bool,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Evaluate after every epoch on this dataset.
        #[arg(long)]
        eval_data: Option<PathBuf>,
        /// Train on the first N samples only.
        #[arg(long)]
        limit: Option<usize>,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Synthesise labelled images from noise (MaskAQ, or a baseline) for data-free quantization.
    Synth {
        /// The full-precision model P.
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        arch: Option<String>,
        /// The quantized model Q (a file from `maskaq ptq`/`quantize`); default: P quantized at --bits.
        #[arg(long)]
        quantized: Option<PathBuf>,
        #[arg(long, default_value = "W4A4")]
        bits: String,
        /// maskaq (all terms), mimiq (SSIM + CE + TV), psaq (KDE entropy + CE + TV) or noise.
        #[arg(long, default_value = "maskaq")]
        method: String,
        /// Number of images.
        #[arg(long)]
        num: usize,
        /// Optimisation steps per batch (the authors use 2000).
        #[arg(long, default_value_t = 2000)]
        iters: usize,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        weights: commands::synth::LossWeightArgs,
        /// Log the loss terms every N iterations.
        #[arg(long, default_value_t = 50)]
        log_every: usize,
    },
    /// The MaskAQ pipeline: synthesize images with P and Q, train Q on them with periodic
    /// refresh; without --model it quantizes the bundled Fashion-MNIST model.
    Quantize(Box<commands::quantize::QuantizeArgs>),
    /// Min-max post-training quantization (the baseline): calibrate activation ranges on
    /// Gaussian noise or real images, no training; writes a quantized-model file.
    Ptq {
        /// A timm Hugging Face folder or a .safetensors file (with --arch).
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        arch: Option<String>,
        /// Bit widths, e.g. W4A4, W3A3, W4A8 (2 to 8 bits each).
        #[arg(long)]
        bits: String,
        /// `noise` (data-free) or a dataset: an image folder or an IDX images file.
        #[arg(long, default_value = "noise")]
        calib: String,
        /// Number of calibration images.
        #[arg(long, default_value_t = 64)]
        num: usize,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output file (.safetensors).
        #[arg(long)]
        out: PathBuf,
    },
}

fn gpu(args: &GpuArgs) -> Result<Gpu> {
    Gpu::new(&gpu_options(args))
}

fn gpu_options(args: &GpuArgs) -> GpuOptions {
    GpuOptions { backend: args.backend.clone(), adapter: args.adapter.clone() }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Devices { json } => commands::devices::run(&gpu_options(&cli.gpu), json),
        Command::Predict { model, arch, top, json, images } => {
            if top == 0 {
                anyhow::bail!("--top must be at least 1");
            }
            let (cfg, file) = commands::resolve(&model, arch.as_deref())?;
            let weights = maskaq::model::checkpoint::load_weights(&cfg, &file)?;
            let gpu = gpu(&cli.gpu)?;
            let vit = maskaq::model::Vit::new(&gpu, cfg, &weights);
            let preds = commands::predict::predict(&gpu, &vit, &images, top)?;
            commands::predict::print(&preds, json)
        }
        Command::Bench { model, arch, batch, iters, profile, json } => {
            if batch == 0 {
                anyhow::bail!("--batch must be at least 1");
            }
            let gpu = gpu(&cli.gpu)?;
            let vit = commands::load_or_random(&gpu, model.as_deref(), arch.as_deref())?;
            let report = commands::bench::run(&gpu, &vit, batch, iters, profile, !json)?;
            commands::bench::print(&report, json)
        }
        Command::Eval { model, arch, data, batch, limit, json, quantized } => commands::eval::run(
            &gpu_options(&cli.gpu),
            &commands::eval::EvalArgs { model, arch, data, batch, limit, json, quantized },
        ),
        Command::Train {
            arch,
            model,
            data,
            epochs,
            batch,
            lr,
            weight_decay,
            warmup_epochs,
            shift,
            no_flip,
            seed,
            eval_data,
            limit,
            out,
        } => {
            let gpu = gpu(&cli.gpu)?;
            let args = maskaq::train::TrainArgs {
                arch,
                model,
                data,
                epochs,
                batch,
                lr,
                weight_decay,
                warmup_epochs,
                seed,
                out,
                eval_data,
                limit,
                shift,
                flip: !no_flip,
                progress: true,
            };
            maskaq::train::train(&gpu, &args).map(|_| ())
        }
        Command::Synth {
            model,
            arch,
            quantized,
            bits,
            method,
            num,
            iters,
            batch,
            seed,
            out,
            weights,
            log_every,
        } => {
            let args = commands::synth::SynthArgs {
                model,
                arch,
                quantized,
                bits,
                method,
                num,
                iters,
                batch,
                seed,
                out,
                weights,
                log_every,
            };
            commands::synth::run(&gpu_options(&cli.gpu), &args)
        }
        Command::Quantize(args) => commands::quantize::run(&gpu_options(&cli.gpu), &args),
        Command::Ptq { model, arch, bits, calib, num, batch, seed, out } => {
            let bits = bits.parse().map_err(|e| anyhow::anyhow!("--bits: {e}"))?;
            if batch == 0 {
                anyhow::bail!("--batch must be at least 1");
            }
            let gpu = gpu(&cli.gpu)?;
            let args = commands::ptq::PtqArgs { model, arch, bits, calib, num, batch, seed, out };
            commands::ptq::run(&gpu, &args)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maskaq: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

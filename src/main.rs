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
}

fn gpu(args: &GpuArgs) -> Result<Gpu> {
    Gpu::new(&gpu_options(args))
}

fn gpu_options(args: &GpuArgs) -> GpuOptions {
    GpuOptions {
        backend: args.backend.clone(),
        adapter: args.adapter.clone(),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Devices { json } => commands::devices::run(&gpu_options(&cli.gpu), json),
        Command::Predict {
            model,
            arch,
            top,
            json,
            images,
        } => {
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
        Command::Bench {
            model,
            arch,
            batch,
            iters,
            profile,
            json,
        } => {
            if batch == 0 {
                anyhow::bail!("--batch must be at least 1");
            }
            let gpu = gpu(&cli.gpu)?;
            let vit = commands::load_or_random(&gpu, model.as_deref(), arch.as_deref())?;
            let report = commands::bench::run(&gpu, &vit, batch, iters, profile, !json)?;
            commands::bench::print(&report, json)
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

//! `maskaq tune`: measure every kernel variant at the shapes a model's synthesis and
//! Q-training steps launch, and store the fastest that passes its check in this adapter's
//! tuning cache (src/tune.rs); later runs on the adapter use those picks (`--tune cache`).

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::gpu::Gpu;
use crate::progress::Progress;
use crate::tune::{ShapeReport, model_launches, tune_launches};

#[derive(clap::Args, Debug)]
pub struct TuneArgs {
    /// A checkpoint; without it, random weights for --arch.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// A timm architecture name or a config.json path.
    #[arg(long, value_name = "NAME|CONFIG")]
    pub arch: Option<String>,
    /// Images per step (shapes depend on it: tune at the batch sizes you run).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Timed launches of each variant (interleaved; the median counts).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Print every variant's result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(gpu_opts: &crate::gpu::GpuOptions, args: &TuneArgs) -> Result<()> {
    if args.batch == 0 || args.rounds == 0 {
        bail!("--batch and --rounds must be at least 1");
    }
    let model = args.model.clone();
    let cfg = crate::commands::config_of(model.as_deref(), args.arch.as_deref())?;
    let gpu = Gpu::new(gpu_opts)?;
    crate::commands::check_fits(&gpu, &cfg, args.batch, "--batch")?;
    let p = crate::commands::load_or_random(&gpu, model.as_deref(), args.arch.as_deref())?;
    eprintln!("tune: {} batch {} on {}", cfg.describe(), args.batch, gpu.describe());
    let (launches, _) = model_launches(&gpu, &p, args.batch)?;
    let bar = if args.json { Progress::hidden() } else { Progress::new("tune", "shapes") };
    bar.start(launches.len() as u64, "measuring kernel variants");
    let reports = tune_launches(&gpu, &launches, args.rounds, true, |_, _| bar.inc(1))?;
    bar.finish();
    let saved = gpu.tuning.save()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print_picks(&reports);
    }
    match saved {
        Some(path) => eprintln!("tune: {} picks in {}", gpu.tuning.len(), path.display()),
        None => {
            eprintln!("tune: no cache directory on this system; give --tune-cache FILE to keep the picks")
        }
    }
    Ok(())
}

/// One line per shape: the pick, its time, and its gain over the variant used before.
pub fn print_picks(reports: &[ShapeReport]) {
    println!("{:<8} {:<44} {:>4} {:<26} {:>9} {:>7}", "op", "shape", "n", "pick", "ms", "gain");
    for r in reports {
        let pick = r.pick.as_deref().unwrap_or("(none passed)");
        println!(
            "{:<8} {:<44} {:>4} {:<26} {:>9.3} {:>6.2}x",
            r.op,
            r.key,
            r.launches,
            pick,
            r.pick_ms(),
            r.current_ms() / r.pick_ms()
        );
    }
}

//! `maskaq eval`: the accuracy of a model (or a quantized model made from it) on a labelled
//! dataset, printed or as JSON (`crate::eval` does the work).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::data::dataset::{self, Dataset};
use crate::eval::{EvalReport, ModelRunner, check_labels, evaluate, json_line, skipped_lines};
use crate::gpu::{Gpu, GpuOptions};
use crate::model::Model;
use crate::model::checkpoint::{load_weights, resolve};
use crate::progress::Progress;

/// The arguments of `maskaq eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: crate::cli::ModelArgs,
    /// A folder of class subfolders, or an IDX images file such as t10k-images-idx3-ubyte.gz
    /// (its labels file beside it).
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// Images per GPU batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Evaluate on N samples spread evenly over --data (every class of a class-ordered folder)
    /// instead of all of them.
    #[arg(long, visible_alias = "limit", value_name = "N")]
    pub eval_limit: Option<usize>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Evaluate this quantized model (made from --model by `maskaq ptq` or `quantize`).
    #[arg(long, value_name = "FILE")]
    pub quantized: Option<PathBuf>,
}

/// `maskaq eval`: loads the model and the dataset (both checked before the GPU is opened),
/// evaluates the full-precision model (or the quantized one made from it) and prints the report.
pub fn run(gpu_opts: &GpuOptions, args: &EvalArgs) -> Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if args.eval_limit == Some(0) {
        bail!("--eval-limit must be at least 1");
    }
    let (cfg, file) = resolve(&args.model.model, args.model.arch.as_deref())?;
    let weights = load_weights(&cfg, &file)?;
    let data = dataset::open(&args.data).context("--data")?;
    let data = match args.eval_limit {
        Some(n) => Box::new(dataset::Spread::new(data, n)) as Box<dyn Dataset>,
        None => data,
    };
    let n = data.len();
    check_labels(data.as_ref(), n, cfg.num_classes)?;
    let gpu = Gpu::new(gpu_opts)?;
    crate::commands::check_fits(&gpu, &cfg, args.batch.min(n.max(1)), "--batch")?;
    let pp = cfg.preprocess.clone();
    let vit = match &args.quantized {
        Some(q) => crate::quant::export::load(&gpu, q, Some(&cfg))?,
        None => Model::new(&gpu, cfg, &weights),
    };
    let mut runner = ModelRunner::new(&gpu, &vit, args.batch.min(n.max(1)));
    let pb = if args.json { Progress::hidden() } else { Progress::new("eval", "images") };
    pb.start(n as u64, "evaluating");
    let result = evaluate(data.as_ref(), &pp, &mut runner, None, &pb);
    pb.finish();
    let report = result?;
    for line in skipped_lines(&report) {
        eprintln!("{line}");
    }
    print(&report, &args.data, args.json)
}

fn print(report: &EvalReport, data: &Path, json: bool) -> Result<()> {
    if json {
        println!("{}", json_line(report).context("cannot write the report")?);
        return Ok(());
    }
    println!("{}: {} images evaluated, {} skipped", data.display(), report.images, report.skipped);
    println!("top-1 accuracy: {:6.2} %", report.top1);
    println!("top-{} accuracy: {:6.2} %", report.top_k, report.top5);
    println!("{:.1} s, {:.1} images/s", report.seconds, report.images as f64 / report.seconds.max(1e-9));
    Ok(())
}

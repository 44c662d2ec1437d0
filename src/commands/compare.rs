//! `maskaq compare`: the same job on several adapters (`crate::compare` does the work), as a
//! table, a JSON report and pictures of where they differ.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::compare::kernels::{KernelReport, compare_kernels};
use crate::compare::{AdapterResult, Job, PairReport, compare_pair, run_on};
use crate::data::dataset::{self, Dataset};
use crate::eval::check_labels;
use crate::gpu::GpuOptions;
use crate::io::{Existing, OutDir};
use crate::model::checkpoint::{load_weights, resolve};
use crate::plot::{Chart, Series, line_chart};
use crate::progress::Progress;
use crate::quant::Bits;

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// The adapters to compare (at least two): a comma list as for `synth --adapters`, e.g.
    /// vulkan,gl.
    #[arg(long, value_name = "LIST")]
    pub adapters: String,
    #[command(flatten)]
    pub model: crate::cli::ModelArgs,
    /// Compare this quantized model (made from --model).
    #[arg(long, value_name = "FILE", conflicts_with = "bits")]
    pub quantized: Option<PathBuf>,
    /// Compare --model quantized at these bits, its LSQ quantizers initialised on the probe batch.
    #[arg(long)]
    pub bits: Option<Bits>,
    /// Labelled data to evaluate on (a class-folder tree or an IDX images file).
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// Evaluate on N samples spread evenly over --data instead of all of them.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Images of the probe batch (the first of --data) whose quantization codes are compared.
    #[arg(long, default_value_t = 16)]
    pub probe: usize,
    /// Synthesis iterations from one seed on every adapter (0: no synthesis).
    #[arg(long, default_value_t = 200)]
    pub synth_iters: usize,
    /// Images of that synthesis batch.
    #[arg(long, default_value_t = 16)]
    pub synth_batch: usize,
    /// Seed of the synthesis batch (the same on every adapter).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also run the model's forward and backward on the probe batch launch by launch on the
    /// first adapter and each other one, every launch from the first's inputs, and report the
    /// kernels whose results differ (which op diverges first, and by how many ULP).
    #[arg(long)]
    pub kernels: bool,
    /// Print the whole report as JSON on stdout (instead of the table).
    #[arg(long)]
    pub json: bool,
    /// Also write report.json, codes.png and synthesis.png to this folder.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace what an earlier run wrote in --out.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    model: String,
    compared: String,
    data: String,
    adapters: &'a [AdapterResult],
    pairs: Vec<PairReport>,
    /// Per adapter, the logged loss of every synthesis iteration.
    synth_losses: Vec<Vec<f32>>,
    /// With --kernels: adapter 0 against each other one, launch by launch.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kernels: Vec<KernelReport>,
}

pub fn run(gpu_opts: &GpuOptions, args: &CompareArgs) -> Result<()> {
    for (flag, v) in [("--probe", args.probe), ("--synth-batch", args.synth_batch)] {
        if v == 0 {
            bail!("{flag} must be at least 1");
        }
    }
    let (cfg, file) = resolve(&args.model.model, args.model.arch.as_deref())?;
    let weights = load_weights(&cfg, &file)?;
    let data = dataset::open(&args.data).context("--data")?;
    let data = match args.limit {
        Some(0) => bail!("--limit must be at least 1"),
        Some(n) => Box::new(dataset::Spread::new(data, n)) as Box<dyn Dataset>,
        None => data,
    };
    check_labels(data.as_ref(), data.len(), cfg.num_classes)?;
    let out = match &args.out {
        Some(dir) => {
            let inputs: Vec<(&str, &Path)> =
                vec![("--model", args.model.model.as_path()), ("--data", args.data.as_path())];
            Some(OutDir::prepare(
                dir,
                &inputs,
                args.overwrite,
                Existing::Refuse,
                &["report.json", "codes.png", "synthesis.png"],
            )?)
        }
        None => None,
    };
    let mut gpus = crate::gpu::Gpu::open_list(gpu_opts, &args.adapters)?;
    if gpus.len() < 2 {
        bail!(
            "--adapters {}: compare needs at least two adapters (an item may repeat: vulkan,vulkan)",
            args.adapters
        );
    }
    for g in &gpus {
        crate::commands::check_fits(g, &cfg, args.synth_batch.max(32), "--synth-batch")?;
    }
    let compared = match (&args.quantized, args.bits) {
        (Some(q), _) => format!("quantized model {}", q.display()),
        (None, Some(b)) => format!("{b} (LSQ initialised on the probe batch)"),
        (None, None) => "full precision".to_string(),
    };
    let job = Job {
        cfg: &cfg,
        weights: &weights,
        quantized: args.quantized.as_deref(),
        bits: args.bits,
        data: data.as_ref(),
        limit: None,
        probe: args.probe,
        synth_iters: args.synth_iters,
        synth_batch: args.synth_batch,
        seed: args.seed,
    };
    let pb = if args.json { Progress::hidden() } else { Progress::new("compare", "") };
    let mut results = Vec::new();
    for g in gpus.iter_mut() {
        results.push(run_on(g, &job, &pb).with_context(|| format!("on {}", g.describe()))?);
    }
    let mut kernels = Vec::new();
    if args.kernels {
        for b in 1..gpus.len() {
            let k = compare_kernels(&gpus[0], &gpus[b], [0, b], &job, &pb)
                .with_context(|| format!("--kernels on {} and {}", gpus[0].describe(), gpus[b].describe()))?;
            kernels.push(k);
        }
    }
    pb.finish();
    let mut pairs = Vec::new();
    for a in 0..results.len() {
        for b in a + 1..results.len() {
            pairs.push(compare_pair(&results, a, b, cfg.num_classes)?);
        }
    }
    let report = Report {
        model: args.model.model.display().to_string(),
        compared,
        data: args.data.display().to_string(),
        adapters: &results,
        synth_losses: results.iter().map(|r| r.synth_terms.iter().map(|t| t.total).collect()).collect(),
        pairs,
        kernels,
    };
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(out) = &out {
        crate::io::write_atomic(&out.join("report.json"), json.as_bytes())?;
        pictures(&out.path, &report)?;
    }
    if args.json {
        println!("{json}");
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &Report) {
    print_adapters_and_pairs(r);
    for k in &r.kernels {
        print_kernels(k);
    }
}

fn print_adapters_and_pairs(r: &Report) {
    println!("compare: {} of {} on {}", r.compared, r.model, r.data);
    println!("{:<3} {:>8} {:>8} {:>8} {:>9}  adapter", "#", "top-1 %", "top-5 %", "eval s", "synth s");
    for (k, a) in r.adapters.iter().enumerate() {
        let synth = a.synth_seconds.map_or("-".to_string(), |s| format!("{s:.1}"));
        println!("{k:<3} {:>8.2} {:>8.2} {:>8.1} {synth:>9}  {}", a.top1, a.top5, a.eval_seconds, a.adapter);
    }
    for p in &r.pairs {
        println!(
            "{} vs {}: top-1 agreement {:.2} %, |logit difference| max {:.3e} mean {:.3e}",
            p.a, p.b, p.top1_agreement, p.max_logit_diff, p.mean_logit_diff
        );
        if !p.weights.is_empty() {
            let (n, d) = p.weights.iter().fold((0, 0), |(n, d), w| (n + w.codes, d + w.differing));
            let tensors = p.weights.iter().filter(|w| w.differing > 0).count();
            println!("  weight codes differing: {d} of {n} (in {tensors} of {} tensors)", p.weights.len());
        }
        if !p.sites.is_empty() {
            let (n, d) = p.sites.iter().fold((0, 0), |(n, d), s| (n + s.codes, d + s.differing));
            let at = p.sites.iter().filter(|s| s.differing > 0).count();
            let worst = p.sites.iter().max_by_key(|s| s.differing).filter(|s| s.differing > 0);
            let worst = worst.map_or(String::new(), |s| format!("; most at {} ({})", s.site, s.differing));
            println!(
                "  activation codes differing on the probe batch: {d} of {n} at {at} of {} sites{worst}",
                p.sites.len()
            );
            let init = p
                .sites
                .iter()
                .filter(|s| {
                    s.alpha[0].to_bits() != s.alpha[1].to_bits()
                        || s.zero_point[0].to_bits() != s.zero_point[1].to_bits()
                })
                .count();
            let rel = p
                .sites
                .iter()
                .map(|s| ((s.alpha[0] - s.alpha[1]).abs() / s.alpha[0].abs().max(1e-30)) as f64)
                .fold(0.0, f64::max);
            println!(
                "  quantizer states (alpha, z) differing: {init} of {} sites (alpha max relative difference {rel:.3e})",
                p.sites.len()
            );
        }
        if let Some(s) = &p.synth {
            let first = s.first_differing_iteration.map_or("none".to_string(), |i| format!("{}", i + 1));
            println!(
                "  synthesis, {} iterations: first differing loss at iteration {first}, max relative loss difference {:.3e}, final loss {:.5} / {:.5}, pixels max |difference| {:.3e} mean {:.3e}",
                s.iterations,
                s.max_relative_loss_diff,
                s.final_loss[0],
                s.final_loss[1],
                s.max_pixel_diff,
                s.mean_pixel_diff
            );
        }
    }
}

/// The --kernels part of the table: the launches that differ from the same inputs, per kernel.
fn print_kernels(k: &KernelReport) {
    let (launches, wrong) = (k.forward_launches + k.backward_launches, k.differing.len());
    println!(
        "kernels {} vs {}, each launch from the same inputs: {wrong} of {launches} launches differ ({} forward, {} backward)",
        k.a, k.b, k.forward_launches, k.backward_launches
    );
    if let Some(first) = k.differing.first() {
        println!(
            "  first: {} launch {} ({}): {} of {} words, max |difference| {:.3e}, max {} ULP",
            first.pass,
            first.index,
            first.kernel[0],
            first.differing,
            first.words,
            first.max_abs,
            first.max_ulp
        );
    }
    for kd in k.kernels.iter().filter(|kd| kd.launches_differing > 0) {
        println!(
            "  {:<28} {:>4} of {:>4} launches, {:>9} of {:>10} words, max |difference| {:.3e}, max {} ULP",
            kd.kernel, kd.launches_differing, kd.launches, kd.differing, kd.words, kd.max_abs, kd.max_ulp
        );
    }
}

/// codes.png: per pair, the share of differing activation codes at each site; synthesis.png:
/// every adapter's loss per iteration.
fn pictures(dir: &Path, r: &Report) -> Result<()> {
    let names: Vec<String> = r.pairs.iter().map(|p| format!("{} vs {}", p.a, p.b)).collect();
    if r.pairs.iter().any(|p| !p.sites.is_empty()) {
        let series = r
            .pairs
            .iter()
            .zip(&names)
            .map(|(p, name)| Series {
                name,
                points: p
                    .sites
                    .iter()
                    .enumerate()
                    .map(|(k, s)| (k as f64, 100.0 * s.differing as f64 / s.codes.max(1) as f64))
                    .collect(),
            })
            .collect();
        let chart = Chart {
            title: "Activation codes that differ between adapters (probe batch)",
            x_label: "quantizer site (forward order)",
            y_label: "% of codes differing",
            series,
            references: vec![],
        };
        line_chart(&dir.join("codes.png"), &chart)?;
    }
    let labels: Vec<String> =
        r.adapters.iter().enumerate().map(|(k, a)| format!("{k}: {}", a.adapter)).collect();
    if r.synth_losses.iter().any(|l| !l.is_empty()) {
        let series = r
            .synth_losses
            .iter()
            .zip(&labels)
            .map(|(l, name)| Series {
                name,
                points: l.iter().enumerate().map(|(i, v)| ((i + 1) as f64, *v as f64)).collect(),
            })
            .collect();
        let chart = Chart {
            title: "Synthesis loss per iteration, same seed on every adapter",
            x_label: "iteration",
            y_label: "loss",
            series,
            references: vec![],
        };
        line_chart(&dir.join("synthesis.png"), &chart)?;
    }
    Ok(())
}

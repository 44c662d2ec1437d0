//! `maskaq bench`: forward and forward+backward throughput of a model on the adapter, and the
//! matmul rate reached, timed with GPU timestamp queries where the adapter has them.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::model::{Arch, Graph, GraphOptions, Model};
use crate::ops::matmul::{Matmul, View};

#[derive(Serialize, Debug)]
pub struct BenchReport {
    pub adapter: String,
    pub architecture: String,
    pub batch: usize,
    pub params: usize,
    /// "gpu timestamps" or "wall clock".
    pub timing: String,
    pub forward_ms: f64,
    pub forward_images_per_s: f64,
    pub train_step_ms: f64,
    pub train_images_per_s: f64,
    /// Model FLOPs (2 x MACs) per second over the forward pass.
    pub forward_gflops: f64,
    /// Standalone matmul at the model's MLP shape (B*N x 4D x D).
    pub gemm: GemmReport,
    /// Sample synthesis (MaskAQ, Q at W4A4): milliseconds per iteration of P and Q forward and
    /// backward with every objective, and image-iterations per second.
    /// Wall clock: the median over `--repeats` runs of six iterations.
    pub synth_iteration_ms: f64,
    pub synth_image_iterations_per_s: f64,
    /// The iteration's launches alone, timed like the forward (GPU timestamps where the adapter
    /// has them): no host work, no waiting for readbacks.
    pub synth_iteration_gpu_ms: f64,
    /// Wall milliseconds per Q-training step (augmentation, P and Q forward, KD + head
    /// distillation, Q backward, SGD), Q at W4A4: the median over `--repeats` runs of six steps.
    pub qtrain_step_ms: f64,
    /// The step's launches alone, timed like the forward.
    pub qtrain_step_gpu_ms: f64,
    /// Kernel launches per forward+backward, per synthesis iteration and per Q-training step.
    pub dispatches_forward_backward: usize,
    pub dispatches_synth_iteration: usize,
    pub dispatches_qtrain_step: usize,
    /// Where kernel variants come from: the tuning mode, and how many picks the cache holds.
    pub tuning: String,
    /// With `--profile`: GPU time per kernel over one forward+backward, largest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profile: Vec<KernelTime>,
    /// With `--profile`: the same for one synthesis iteration (P and Q, all MaskAQ terms).
    pub synth_profile: Vec<KernelTime>,
    /// With `--profile`: the same for one Q-training step.
    pub qtrain_profile: Vec<KernelTime>,
}

#[derive(Serialize, Debug)]
pub struct KernelTime {
    pub kernel: String,
    pub launches: usize,
    pub ms: f64,
}

#[derive(Serialize, Debug)]
pub struct GemmReport {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub kernel: String,
    pub ms: f64,
    pub gflops: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Times `list` `iters` times after one warm-up; returns (median seconds, used timestamps).
fn time(gpu: &Gpu, list: &[&Dispatch], iters: usize) -> Result<(f64, bool)> {
    gpu.timed_run(list)?;
    let mut samples = Vec::new();
    let mut stamped = true;
    for _ in 0..iters.max(1) {
        let (wall, g) = gpu.timed_run(list)?;
        stamped &= g.is_some();
        samples.push(g.unwrap_or(wall));
    }
    Ok((median(samples), stamped))
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A checkpoint; without it, random weights for --arch.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// A timm architecture name or a config.json path.
    #[arg(long, value_name = "NAME|CONFIG")]
    pub arch: Option<String>,
    /// Images per timed step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Timed repetitions of each measurement (the median is reported).
    #[arg(long, visible_alias = "iters", default_value_t = 5)]
    pub repeats: usize,
    /// Also time every kernel launch of one forward+backward and sum by kernel.
    #[arg(long)]
    pub profile: bool,
    /// Instead: time every kernel variant at every (op, shape) a synthesis iteration and a
    /// Q-training step launch, each checked against the reference variant (`maskaq tune`
    /// stores the fastest).
    #[arg(long)]
    pub kernels: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(gpu_opts: &crate::gpu::GpuOptions, args: &BenchArgs) -> Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if args.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let cfg = crate::commands::config_of(args.model.as_deref(), args.arch.as_deref())?;
    let gpu = Gpu::new(gpu_opts)?;
    crate::commands::check_fits(&gpu, &cfg, args.batch, "--batch")?;
    let vit = crate::commands::load_or_random(&gpu, args.model.as_deref(), args.arch.as_deref())?;
    if args.kernels {
        return bench_kernels(&gpu, &vit, args);
    }
    let report = measure(&gpu, &vit, args.batch, args.repeats, args.profile, !args.json)?;
    print(&report, args.json)
}

/// Times every measurement of the report.
pub fn measure(
    gpu: &Gpu,
    vit: &Model,
    batch: usize,
    iters: usize,
    profile: bool,
    progress: bool,
) -> Result<BenchReport> {
    let cfg = &vit.cfg;
    let g = Graph::build(gpu, vit, batch, GraphOptions { backward: true, ..Default::default() });
    let mut rng = crate::rng::Rng::new(1);
    let imgs: Vec<f32> = (0..g.images.numel()).map(|_| rng.normal() as f32).collect();
    g.images.write(gpu, &imgs);
    let dl: Vec<f32> = (0..g.d_logits.numel()).map(|_| rng.normal() as f32 * 1e-3).collect();
    g.d_logits.write(gpu, &dl);
    if progress {
        eprintln!("bench: {} batch {batch} on {}", cfg.describe(), gpu.describe());
    }
    let fwd_list: Vec<&Dispatch> = g.forward_dispatches().iter().collect();
    let train_list: Vec<&Dispatch> = g.forward_dispatches().iter().chain(g.backward_dispatches()).collect();
    let (fwd, s1) = time(gpu, &fwd_list, iters)?;
    let (train, s2) = time(gpu, &train_list, iters)?;

    // The first block's fc1.
    let (m, n, k) = match &cfg.arch {
        Arch::Vit(v) => (batch * v.tokens(cfg.grid()), v.mlp_hidden, v.embed_dim),
        Arch::Swin(s) => {
            let st = s.stage(cfg.grid(), 0);
            (batch * st.grid * st.grid, st.hidden, st.dim)
        }
    };
    let a = Tensor::zeros(gpu, &[m, k]);
    let w = Tensor::zeros(gpu, &[n, k]);
    let c = Tensor::zeros(gpu, &[m, n]);
    let mm =
        Matmul::new(m, n, k, View::rows(k), View::rows(k).t(), View::rows(n)).dispatch(gpu, &a, &w, None, &c);
    const REPS: usize = 10;
    let (gemm_s, s3) = time(gpu, &[&mm; REPS], iters)?;
    let gemm_s = gemm_s / REPS as f64;
    let train_profile = if profile { profile_kernels(gpu, &train_list)? } else { Vec::new() };
    let synth = synth_iteration(gpu, vit, batch, iters, profile)?;
    let qtrain = qtrain_step(gpu, vit, batch, iters, profile)?;
    let macs = cfg.macs_per_image() * batch as f64;
    Ok(BenchReport {
        adapter: gpu.describe(),
        architecture: cfg.describe(),
        batch,
        params: vit.num_params(),
        timing: if s1 && s2 && s3 { "gpu timestamps".into() } else { "wall clock".into() },
        forward_ms: fwd * 1e3,
        forward_images_per_s: batch as f64 / fwd,
        train_step_ms: train * 1e3,
        train_images_per_s: batch as f64 / train,
        forward_gflops: 2.0 * macs / fwd * 1e-9,
        gemm: GemmReport {
            m,
            n,
            k,
            kernel: Matmul::new(m, n, k, View::rows(k), View::rows(k).t(), View::rows(n))
                .variant(gpu)
                .kernel
                .id
                .into(),
            ms: gemm_s * 1e3,
            gflops: 2.0 * (m * n * k) as f64 / gemm_s * 1e-9,
        },
        synth_iteration_ms: synth.wall_s * 1e3,
        synth_image_iterations_per_s: batch as f64 / synth.wall_s,
        synth_iteration_gpu_ms: synth.gpu_s * 1e3,
        qtrain_step_ms: qtrain.wall_s * 1e3,
        qtrain_step_gpu_ms: qtrain.gpu_s * 1e3,
        dispatches_forward_backward: train_list.len(),
        dispatches_synth_iteration: synth.launches,
        dispatches_qtrain_step: qtrain.launches,
        tuning: tuning_line(gpu),
        profile: train_profile,
        synth_profile: synth.profile,
        qtrain_profile: qtrain.profile,
    })
}

/// One synthesis iteration's or Q-training step's times and launches.
struct StepTimes {
    /// Wall seconds per iteration, the median over the repeats.
    wall_s: f64,
    /// Seconds of its launches alone (GPU timestamps where the adapter has them).
    gpu_s: f64,
    launches: usize,
    profile: Vec<KernelTime>,
}

/// Iterations (steps) per timed run: the wall time of a run over them is one sample.
const RUN: usize = 6;

/// A synthesis iteration (MaskAQ objectives, Q = P at W4A4), after warm-up, and with
/// `profile` the GPU time of one iteration by kernel.
fn synth_iteration(gpu: &Gpu, p: &Model, batch: usize, repeats: usize, profile: bool) -> Result<StepTimes> {
    use crate::maskaq::synth::{Method, SynthConfig, Synthesizer};
    let weights = crate::model::checkpoint::Weights { tensors: p.read_params(gpu)? };
    let mut q = Model::new(gpu, p.cfg.clone(), &weights);
    q.quantize(gpu, crate::quant::Bits { w: 4, a: 4 });
    let mut cfg = SynthConfig::new(Method::Maskaq);
    cfg.batch = batch;
    cfg.iters = 2;
    cfg.log_every = usize::MAX;
    let mut rng = crate::rng::Rng::new(2);
    Synthesizer::new(gpu, p, Some(&q), cfg.clone())?.run_batch(&mut rng, |_| {})?;
    cfg.iters = RUN;
    let mut s = Synthesizer::new(gpu, p, Some(&q), cfg.clone())?;
    let mut samples = Vec::new();
    for _ in 0..repeats.max(1) {
        let start = std::time::Instant::now();
        s.run_batch(&mut rng, |_| {})?;
        samples.push(start.elapsed().as_secs_f64() / RUN as f64);
    }
    let list: Vec<&Dispatch> = s.step_dispatches().iter().collect();
    let (gpu_s, _) = time(gpu, &list, repeats)?;
    let profile = if profile { profile_kernels(gpu, &list)? } else { Vec::new() };
    Ok(StepTimes { wall_s: median(samples), gpu_s, launches: list.len(), profile })
}

/// A Q-training step (Q = P at W4A4, random images), after warm-up.
fn qtrain_step(gpu: &Gpu, p: &Model, batch: usize, repeats: usize, profile: bool) -> Result<StepTimes> {
    use crate::maskaq::qtrain::{QTrainConfig, QTrainer};
    let weights = crate::model::checkpoint::Weights { tensors: p.read_params(gpu)? };
    let mut q = Model::new(gpu, p.cfg.clone(), &weights);
    q.quantize(gpu, crate::quant::Bits { w: 4, a: 4 });
    let mut t = QTrainer::new(gpu, p, &q, QTrainConfig { batch, ..Default::default() })?;
    let mut rng = crate::rng::Rng::new(3);
    let per = p.cfg.in_chans * p.cfg.img_size * p.cfg.img_size;
    let images: Vec<f32> = (0..batch * per).map(|_| rng.normal() as f32).collect();
    t.step(&images, 1e-3, true);
    t.read_losses()?;
    let mut samples = Vec::new();
    for _ in 0..repeats.max(1) {
        let start = std::time::Instant::now();
        for _ in 0..RUN {
            t.step(&images, 1e-3, true);
        }
        t.read_losses()?;
        samples.push(start.elapsed().as_secs_f64() / RUN as f64);
    }
    let list = t.step_dispatches();
    let (gpu_s, _) = time(gpu, &list, repeats)?;
    let profile = if profile { profile_kernels(gpu, &list)? } else { Vec::new() };
    Ok(StepTimes { wall_s: median(samples), gpu_s, launches: list.len(), profile })
}

/// The tuning mode and cache, for reports.
fn tuning_line(gpu: &Gpu) -> String {
    let t = &gpu.tuning;
    let file = t.path.as_ref().map_or("no cache file".to_string(), |p| p.display().to_string());
    format!("--tune {}: {} picks ({file})", t.mode.name(), t.len())
}

/// `bench --kernels`: every variant at every (op, shape) of the hot loops, with each shape's
/// share of one synthesis iteration plus one Q-training step.
fn bench_kernels(gpu: &Gpu, p: &Model, args: &BenchArgs) -> Result<()> {
    let (launches, step_s) = crate::tune::model_launches(gpu, p, args.batch)?;
    if !args.json {
        eprintln!(
            "bench: {} kernel shapes of {} batch {} on {}",
            launches.len(),
            p.cfg.describe(),
            args.batch,
            gpu.describe()
        );
    }
    let reports = crate::tune::tune_launches(gpu, &launches, args.repeats, false, |_, _| {})?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(());
    }
    println!("adapter      {}", gpu.describe());
    println!("tuning       {}", tuning_line(gpu));
    println!(
        "step         {:.2} ms: one synthesis iteration + one Q-training step, one pass each (GPU time)",
        step_s * 1e3
    );
    let mut order: Vec<&crate::tune::ShapeReport> = reports.iter().collect();
    order.sort_by(|a, b| {
        (b.current_ms() * b.launches as f64).total_cmp(&(a.current_ms() * a.launches as f64))
    });
    for r in order {
        let share = 100.0 * r.current_ms() * 1e-3 * r.launches as f64 / step_s;
        println!("{} {}  x{}  now {} ({share:.1}% of the step)", r.op, r.key, r.launches, r.current);
        for v in &r.variants {
            let mark = if Some(&v.variant) == r.pick.as_ref() { "*" } else { " " };
            let check = if v.passed { "ok".to_string() } else { format!("FAILED (error {:.1e})", v.error) };
            println!(
                "  {mark} {:<26} {:9.3} ms {:8.2} GFLOP/s {:8.2} GB/s  {check}",
                v.variant, v.ms, v.gflops, v.gbps
            );
        }
    }
    println!("(* the fastest variant that passed; `maskaq tune` stores these picks)");
    Ok(())
}

/// Times every launch on its own (one pass each) and sums by kernel.
fn profile_kernels(gpu: &Gpu, list: &[&Dispatch]) -> Result<Vec<KernelTime>> {
    let mut by_kernel: Vec<KernelTime> = Vec::new();
    for d in list {
        let (wall, g) = gpu.timed_run(&[d])?;
        let ms = g.unwrap_or(wall) * 1e3;
        match by_kernel.iter_mut().find(|k| k.kernel == d.kernel) {
            Some(k) => {
                k.launches += 1;
                k.ms += ms;
            }
            None => by_kernel.push(KernelTime { kernel: d.kernel.to_string(), launches: 1, ms }),
        }
    }
    by_kernel.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    Ok(by_kernel)
}

pub fn print(r: &BenchReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!("adapter      {}", r.adapter);
    println!("model        {} ({:.2} M params), batch {}", r.architecture, r.params as f64 / 1e6, r.batch);
    println!(
        "forward      {:9.2} ms  {:10.1} images/s  {:8.1} GFLOP/s",
        r.forward_ms, r.forward_images_per_s, r.forward_gflops
    );
    println!("fwd+bwd      {:9.2} ms  {:10.1} images/s", r.train_step_ms, r.train_images_per_s);
    println!(
        "matmul       {}x{}x{} ({}): {:.3} ms, {:.1} GFLOP/s",
        r.gemm.m, r.gemm.n, r.gemm.k, r.gemm.kernel, r.gemm.ms, r.gemm.gflops
    );
    println!(
        "synthesis    {:9.2} ms per iteration (P+Q fwd+bwd, all MaskAQ terms)  {:10.1} image-iterations/s",
        r.synth_iteration_ms, r.synth_image_iterations_per_s
    );
    println!("Q training   {:9.2} ms per step (KD + head distillation, W4A4, SGD)", r.qtrain_step_ms);
    println!(
        "launches     {:9.2} ms per synthesis iteration, {:.2} ms per Q-training step (the launches alone)",
        r.synth_iteration_gpu_ms, r.qtrain_step_gpu_ms
    );
    println!("timing       {} (median; synthesis and Q training: wall clock)", r.timing);
    println!(
        "dispatches   {} per forward+backward, {} per synthesis iteration, {} per Q-training step",
        r.dispatches_forward_backward, r.dispatches_synth_iteration, r.dispatches_qtrain_step
    );
    println!("kernels      {}", r.tuning);
    let profiles = [
        ("one forward+backward", &r.profile),
        ("one synthesis iteration", &r.synth_profile),
        ("one Q-training step", &r.qtrain_profile),
    ];
    for (what, prof) in profiles {
        if prof.is_empty() {
            continue;
        }
        let total: f64 = prof.iter().map(|k| k.ms).sum();
        println!("profile      {what}, each launch timed alone ({total:.2} ms in all):");
        for k in prof.iter().take(60) {
            println!(
                "  {:<28} {:5} launches {:10.3} ms {:5.1}%",
                k.kernel,
                k.launches,
                k.ms,
                100.0 * k.ms / total
            );
        }
    }
    Ok(())
}

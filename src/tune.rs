//! Measuring kernel variants against each other (`maskaq bench --kernels`, `maskaq tune`, and
//! `--tune build` at graph build): every launch a model's hot loops make is collected by
//! (op, shape key); each applicable variant runs the same launch on the same random inputs, is
//! checked against the reference variant and timed with GPU timestamps, rounds interleaved so
//! a noisy machine slows every variant alike. The fastest variant that passes is the pick.

use std::sync::Arc;

use anyhow::Result;
use serde::Serialize;

use crate::gpu::{Dispatch, Gpu, Kernel, Tunable};
use crate::model::Model;

/// Largest difference from the reference variant a variant may show, relative to the largest
/// reference value (or 1): far above f32 reordering error (~1e-6 at k = 3152), far below a
/// wrong element.
pub const CHECK_TOL: f64 = 1e-4;
/// Inputs of every variant's test launch (the same for all, so outputs compare).
const SEED: u64 = 0x7475_6e65;

/// One variant measured on one launch.
#[derive(Serialize, Debug, Clone)]
pub struct VariantTime {
    pub variant: String,
    /// Median milliseconds per launch.
    pub ms: f64,
    pub gflops: f64,
    pub gbps: f64,
    /// Max |variant - reference| / max(1, max |reference|).
    pub error: f64,
    pub passed: bool,
}

/// Every variant of one (op, shape).
#[derive(Serialize, Debug)]
pub struct ShapeReport {
    pub op: String,
    pub key: String,
    /// Launches of this shape in the measured steps.
    pub launches: usize,
    /// The variant the graphs launch now.
    pub current: String,
    /// The fastest variant that passed.
    pub pick: Option<String>,
    pub variants: Vec<VariantTime>,
}

impl ShapeReport {
    fn ms_of(&self, id: &str) -> Option<f64> {
        self.variants.iter().find(|v| v.variant == id).map(|v| v.ms)
    }
    /// Milliseconds per launch of the current variant.
    pub fn current_ms(&self) -> f64 {
        self.ms_of(&self.current).unwrap_or(f64::NAN)
    }
    /// Milliseconds per launch of the pick.
    pub fn pick_ms(&self) -> f64 {
        self.pick.as_deref().and_then(|p| self.ms_of(p)).unwrap_or(f64::NAN)
    }
}

/// One distinct tunable launch of a step.
pub struct Launch {
    pub what: Arc<dyn Tunable>,
    /// How many times the step launches it.
    pub count: usize,
    /// The kernel those launches use now.
    pub kernel: String,
}

/// The distinct tunable launches of `lists`, in first-launch order.
pub fn collect<'a>(lists: impl IntoIterator<Item = &'a Dispatch>) -> Vec<Launch> {
    let mut out: Vec<Launch> = Vec::new();
    for d in lists {
        let Some(t) = &d.tunable else { continue };
        let (op, key) = (t.op(), t.key());
        match out.iter_mut().find(|l| l.what.op() == op && l.what.key() == key) {
            Some(l) => l.count += 1,
            None => out.push(Launch { what: t.clone(), count: 1, kernel: d.kernel.to_string() }),
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs every variant of `t` on the same inputs, checks each against the first (the
/// reference) and times `rounds` interleaved launches of each.
pub fn measure(gpu: &Gpu, t: &dyn Tunable, rounds: usize) -> Result<Vec<VariantTime>> {
    let kernels: Vec<&'static Kernel> = t.variants(gpu);
    let mut built = Vec::new();
    for &k in &kernels {
        let (dispatches, out) = t.standalone(gpu, k, SEED);
        gpu.run(&dispatches.iter().collect::<Vec<_>>());
        let values = out.read(gpu)?;
        built.push((k, dispatches, values));
    }
    let reference = &built[0].2;
    let scale = reference.iter().fold(1f64, |m, &v| m.max((v as f64).abs()));
    let mut samples = vec![Vec::new(); built.len()];
    for _ in 0..rounds.max(1) {
        for (i, (_, d, _)) in built.iter().enumerate() {
            let (wall, stamped) = gpu.timed_run(&d.iter().collect::<Vec<_>>())?;
            samples[i].push(stamped.unwrap_or(wall));
        }
    }
    Ok(built
        .iter()
        .zip(samples)
        .map(|((k, _, values), s)| {
            let err = values.iter().zip(reference).fold(0f64, |m, (&a, &b)| {
                if a.is_finite() { m.max((a as f64 - b as f64).abs()) } else { f64::INFINITY }
            }) / scale;
            let sec = median(s);
            VariantTime {
                variant: k.id.to_string(),
                ms: sec * 1e3,
                gflops: t.flops() / sec * 1e-9,
                gbps: t.bytes() / sec * 1e-9,
                error: err,
                passed: err <= CHECK_TOL,
            }
        })
        .collect())
}

/// The fastest variant that passed its check.
pub fn fastest(times: &[VariantTime]) -> Option<&VariantTime> {
    times.iter().filter(|v| v.passed).min_by(|a, b| a.ms.total_cmp(&b.ms))
}

/// Measures each collected launch; with `store`, records each pick in the adapter's tuning
/// state (`Tuning::save` writes it). `on_shape` sees each report as it is done (progress).
pub fn tune_launches(
    gpu: &Gpu,
    launches: &[Launch],
    rounds: usize,
    store: bool,
    mut on_shape: impl FnMut(usize, &ShapeReport),
) -> Result<Vec<ShapeReport>> {
    let mut out = Vec::new();
    for (i, l) in launches.iter().enumerate() {
        let t = &l.what;
        let variants = measure(gpu, t.as_ref(), rounds)?;
        let pick = fastest(&variants).map(|v| v.variant.clone());
        if store && let Some(p) = &pick {
            gpu.tuning.insert(t.op(), &t.key(), p);
        }
        let r = ShapeReport {
            op: t.op().into(),
            key: t.key(),
            launches: l.count,
            current: l.kernel.clone(),
            pick,
            variants,
        };
        on_shape(i, &r);
        out.push(r);
    }
    Ok(out)
}

/// The pipeline's hot loops for a model at `batch`: one MaskAQ synthesis iteration (P and Q at
/// W4A4) and one Q-training step. Returns their tunable launches and the GPU seconds of the
/// two, each run as one pass (the denominator of each shape's share).
pub fn model_launches(gpu: &Gpu, p: &Model, batch: usize) -> Result<(Vec<Launch>, f64)> {
    use crate::maskaq::qtrain::{QTrainConfig, QTrainer};
    use crate::maskaq::synth::{Method, SynthConfig, Synthesizer};
    let weights = crate::model::checkpoint::Weights { tensors: p.read_params(gpu)? };
    let mut q = Model::new(gpu, p.cfg.clone(), &weights);
    q.quantize(gpu, crate::quant::Bits { w: 4, a: 4 });
    let mut cfg = SynthConfig::new(Method::Maskaq);
    cfg.batch = batch;
    cfg.iters = 1;
    cfg.log_every = usize::MAX;
    let mut synth = Synthesizer::new(gpu, p, Some(&q), cfg)?;
    // One real batch first: LSQ initialises on Q's first forward.
    synth.run_batch(&mut crate::rng::Rng::new(2), |_| {})?;
    let trainer = QTrainer::new(gpu, p, &q, QTrainConfig { batch, ..Default::default() })?;
    let synth_list: Vec<&Dispatch> = synth.step_dispatches().iter().collect();
    let train_list = trainer.step_dispatches();
    let mut step = 0.0;
    for list in [&synth_list, &train_list] {
        gpu.timed_run(list)?;
        let (wall, stamped) = gpu.timed_run(list)?;
        step += stamped.unwrap_or(wall);
    }
    Ok((collect(synth_list.into_iter().chain(train_list)), step))
}

/// Rounds `--tune build` times each variant of a shape the cache lacks.
const BUILD_ROUNDS: usize = 3;

/// `--tune build`: measures `t` now, stores and saves the pick, and returns it. A failure to
/// measure or save is a warning (the launch then uses its default variant), never an error.
pub fn tune_now(gpu: &Gpu, t: &dyn Tunable) -> Option<String> {
    let pick = match measure(gpu, t, BUILD_ROUNDS) {
        Ok(times) => {
            let best = fastest(&times)?;
            eprintln!("maskaq: tuned {} {}: {} ({:.3} ms)", t.op(), t.key(), best.variant, best.ms);
            best.variant.clone()
        }
        Err(e) => {
            eprintln!("maskaq: warning: could not tune {} {}: {e:#}", t.op(), t.key());
            return None;
        }
    };
    gpu.tuning.insert(t.op(), &t.key(), &pick);
    if let Err(e) = gpu.tuning.save() {
        eprintln!("maskaq: warning: could not save the tuning cache: {e:#}");
    }
    Some(pick)
}

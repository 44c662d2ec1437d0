//! `maskaq compare`: one job on several adapters, and how far apart their results are.
//!
//! On each adapter in turn: the model under test (P, a quantized file, or P quantized with LSQ
//! initialised on a probe batch) is evaluated on the data with every logit kept; for Q, its
//! weight codes and every activation quantizer's codes on the probe batch are read; and one
//! synthesis batch runs from the same seed for N iterations with every iteration's loss
//! logged. Each pair of adapters is then compared on all of it ([`compare_pair`]).

pub mod kernels;

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::data::dataset::Dataset;
use crate::eval::{EvalReport, ModelRunner, Runner, evaluate};
use crate::gpu::Gpu;
use crate::maskaq::synth::{Method, SynthConfig, Synthesizer, TermLog};
use crate::maskaq::synth_pool::batch_rng;
use crate::model::checkpoint::Weights;
use crate::model::{Graph, GraphOptions, Model, ModelConfig};
use crate::progress::Progress;
use crate::quant::{Bits, SiteState};

/// What to run on every adapter.
pub struct Job<'a> {
    pub cfg: &'a ModelConfig,
    pub weights: &'a Weights,
    /// The model under test: a quantized file, or P quantized at these bits (LSQ initialised on
    /// the probe batch); neither: P itself.
    pub quantized: Option<&'a Path>,
    pub bits: Option<Bits>,
    pub data: &'a dyn Dataset,
    pub limit: Option<usize>,
    /// Images of the probe batch (the first of `data`).
    pub probe: usize,
    /// Synthesis iterations (0: none) on a batch of `synth_batch`.
    pub synth_iters: usize,
    pub synth_batch: usize,
    pub seed: u64,
}

/// One adapter's results; the large parts are kept for the pairs, not serialized.
#[derive(Serialize)]
pub struct AdapterResult {
    pub adapter: String,
    pub top1: f64,
    pub top5: f64,
    pub images: usize,
    pub eval_seconds: f64,
    pub synth_seconds: Option<f64>,
    #[serde(skip)]
    pub logits: Vec<f32>,
    /// Per quantized weight, in `quant::quantized_weights` order.
    #[serde(skip)]
    pub weight_codes: Vec<(String, Vec<i8>)>,
    /// Per activation site (probe batch), in site order.
    #[serde(skip)]
    pub act_codes: Vec<Vec<i32>>,
    /// Q's activation quantizers after the probe batch (LSQ's initialisation with --bits).
    #[serde(skip)]
    pub sites: Vec<SiteState>,
    #[serde(skip)]
    pub synth_terms: Vec<TermLog>,
    #[serde(skip)]
    pub synth_images: Vec<f32>,
}

/// The model under test on `gpu`.
fn model_under_test(gpu: &Gpu, job: &Job) -> Result<Model> {
    Ok(match (job.quantized, job.bits) {
        (Some(path), _) => crate::quant::export::load(gpu, path, Some(job.cfg))
            .with_context(|| format!("--quantized {}", path.display()))?,
        (None, Some(bits)) => {
            let mut q = Model::new(gpu, job.cfg.clone(), job.weights);
            q.quantize(gpu, bits);
            q
        }
        (None, None) => Model::new(gpu, job.cfg.clone(), job.weights),
    })
}

/// The first `n` images of the data, preprocessed.
fn probe_images(job: &Job, n: usize) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for i in 0..n {
        out.extend(job.data.load(i, &job.cfg.preprocess)?.input);
    }
    Ok(out)
}

/// A runner that keeps every logit it returns.
struct Recording<'r, 'g> {
    inner: &'r mut ModelRunner<'g>,
    logits: Vec<f32>,
}

impl Runner for Recording<'_, '_> {
    fn batch(&self) -> usize {
        self.inner.batch()
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn logits(&mut self, images: &[f32], count: usize) -> Result<Vec<f32>> {
        let l = self.inner.logits(images, count)?;
        self.logits.extend_from_slice(&l);
        Ok(l)
    }
}

/// Q's weight codes, and its activation codes on the probe batch (initialising LSQ on it when
/// Q holds no state). The probe graph is built unfused, so every site has its own output.
fn quant_codes(gpu: &mut Gpu, q: &Model, probe: &[f32], n: usize) -> Result<QuantCodes> {
    let quant = q.quant.as_ref().expect("Q");
    let mut weight_codes = Vec::new();
    for name in crate::quant::quantized_weights(&q.cfg) {
        let (codes, _) = crate::quant::export::weight_codes(gpu, quant.bits.w, q.param(&name))?;
        weight_codes.push((name, codes));
    }
    let fused = gpu.unfused;
    gpu.unfused = true;
    let graph = Graph::build(gpu, q, n, GraphOptions { probe_sites: true, ..Default::default() });
    gpu.unfused = fused;
    graph.images.write(gpu, probe);
    if quant.initialized.get() {
        graph.forward(gpu);
    } else {
        graph.forward_init(gpu, q);
    }
    let sites = quant.read(gpu)?;
    let mut act_codes = vec![Vec::new(); sites.len()];
    for pr in &graph.site_probes {
        let v = pr.xq.read(gpu)?;
        let s = &sites[pr.site];
        let r = pr.region;
        for row in 0..r.rows {
            let at = r.off + row * r.rs;
            act_codes[pr.site].extend(
                v[at..at + r.cols].iter().map(|x| (x / s.alpha).round() as i32 + s.zero_point.round() as i32),
            );
        }
    }
    Ok(QuantCodes { weight_codes, act_codes, sites })
}

struct QuantCodes {
    weight_codes: Vec<(String, Vec<i8>)>,
    act_codes: Vec<Vec<i32>>,
    sites: Vec<SiteState>,
}

/// The whole job on one adapter.
pub fn run_on(gpu: &mut Gpu, job: &Job, progress: &Progress) -> Result<AdapterResult> {
    let model = model_under_test(gpu, job)?;
    let n_probe = job.probe.min(job.data.len()).max(1);
    let probe = probe_images(job, n_probe)?;
    let codes = match model.quant {
        Some(_) => Some(quant_codes(gpu, &model, &probe, n_probe)?),
        None => None,
    };
    let mut runner = ModelRunner::new(gpu, &model, 32);
    let mut rec = Recording { inner: &mut runner, logits: Vec::new() };
    let n = job.limit.map_or(job.data.len(), |l| l.min(job.data.len()));
    progress.start(n as u64, format!("{}: evaluating", gpu.info.name));
    let report: EvalReport = evaluate(job.data, &job.cfg.preprocess, &mut rec, job.limit, progress)?;
    let logits = rec.logits;
    let (mut synth_terms, mut synth_images, mut synth_seconds) = (Vec::new(), Vec::new(), None);
    if job.synth_iters > 0 {
        progress.start(job.synth_iters as u64, format!("{}: synthesizing", gpu.info.name));
        let t0 = Instant::now();
        let p = Model::new(gpu, job.cfg.clone(), job.weights);
        // MaskAQ's objective reads a Q: the one under test, or P at W4A4 for a full-precision run.
        let w4a4;
        let q = match model.quant {
            Some(_) => &model,
            None => {
                let mut q = Model::new(gpu, job.cfg.clone(), job.weights);
                q.quantize(gpu, Bits { w: 4, a: 4 });
                w4a4 = q;
                &w4a4
            }
        };
        let mut cfg = SynthConfig::new(Method::Maskaq);
        cfg.iters = job.synth_iters;
        cfg.batch = job.synth_batch;
        cfg.log_every = 1;
        let mut synth = Synthesizer::new(gpu, &p, Some(q), cfg)?;
        let batch = synth.run_batch(&mut batch_rng(job.seed, 0, 0, 0), |_| progress.inc(1))?;
        synth_terms = batch.log;
        synth_images = batch.images;
        synth_seconds = Some(t0.elapsed().as_secs_f64());
    }
    let (weight_codes, act_codes, sites) = match codes {
        Some(c) => (c.weight_codes, c.act_codes, c.sites),
        None => Default::default(),
    };
    Ok(AdapterResult {
        adapter: gpu.describe(),
        top1: report.top1,
        top5: report.top5,
        images: report.images,
        eval_seconds: report.seconds,
        synth_seconds,
        logits,
        weight_codes,
        act_codes,
        sites,
        synth_terms,
        synth_images,
    })
}

/// One activation site's differences between two adapters.
#[derive(Serialize, Clone, Debug)]
pub struct SiteDiff {
    pub site: String,
    pub codes: usize,
    pub differing: usize,
    pub alpha: [f32; 2],
    pub zero_point: [f32; 2],
}

/// One quantized weight's differing codes.
#[derive(Serialize, Clone, Debug)]
pub struct WeightDiff {
    pub name: String,
    pub codes: usize,
    pub differing: usize,
}

/// How two adapters' synthesis runs drift apart.
#[derive(Serialize, Clone, Debug)]
pub struct SynthDiff {
    pub iterations: usize,
    /// The first iteration whose logged loss differs (None: all equal).
    pub first_differing_iteration: Option<usize>,
    /// max over iterations of |loss_a - loss_b| / max(|loss_a|, 1e-12).
    pub max_relative_loss_diff: f64,
    pub final_loss: [f32; 2],
    /// max |pixel_a - pixel_b| of the final images (normalised space).
    pub max_pixel_diff: f32,
    pub mean_pixel_diff: f64,
}

/// Two adapters compared.
#[derive(Serialize, Clone, Debug)]
pub struct PairReport {
    pub a: usize,
    pub b: usize,
    /// Images on which both predict the same class, in percent.
    pub top1_agreement: f64,
    pub max_logit_diff: f32,
    pub mean_logit_diff: f64,
    pub weights: Vec<WeightDiff>,
    pub sites: Vec<SiteDiff>,
    pub synth: Option<SynthDiff>,
}

/// How many positions of two code lists differ.
fn differing<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).filter(|(p, q)| p != q).count()
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (j, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = j;
        }
    }
    best
}

/// Adapters `a` and `b` of `results` (with `classes` logits per image) compared.
pub fn compare_pair(results: &[AdapterResult], a: usize, b: usize, classes: usize) -> Result<PairReport> {
    let (ra, rb) = (&results[a], &results[b]);
    if ra.logits.len() != rb.logits.len() {
        bail!("{} and {} evaluated different numbers of images", ra.adapter, rb.adapter);
    }
    let rows = ra.logits.len() / classes.max(1);
    let same = ra
        .logits
        .chunks_exact(classes)
        .zip(rb.logits.chunks_exact(classes))
        .filter(|(x, y)| argmax(x) == argmax(y))
        .count();
    let diffs = ra.logits.iter().zip(&rb.logits).map(|(x, y)| (x - y).abs());
    let max_logit_diff = diffs.clone().fold(0f32, f32::max);
    let mean_logit_diff = diffs.map(|d| d as f64).sum::<f64>() / ra.logits.len().max(1) as f64;
    let weights = ra
        .weight_codes
        .iter()
        .zip(&rb.weight_codes)
        .map(|((name, x), (_, y))| WeightDiff {
            name: name.clone(),
            codes: x.len(),
            differing: differing(x, y),
        })
        .collect();
    let sites = ra
        .sites
        .iter()
        .zip(&rb.sites)
        .enumerate()
        .map(|(k, (sa, sb))| SiteDiff {
            site: sa.name.clone(),
            codes: ra.act_codes[k].len(),
            differing: differing(&ra.act_codes[k], &rb.act_codes[k]),
            alpha: [sa.alpha, sb.alpha],
            zero_point: [sa.zero_point, sb.zero_point],
        })
        .collect();
    let synth = (!ra.synth_terms.is_empty() && ra.synth_terms.len() == rb.synth_terms.len()).then(|| {
        let pairs = ra.synth_terms.iter().zip(&rb.synth_terms);
        let first = pairs.clone().find(|(x, y)| x.total.to_bits() != y.total.to_bits()).map(|(x, _)| x.iter);
        let rel = pairs
            .map(|(x, y)| ((x.total - y.total).abs() as f64) / (x.total.abs() as f64).max(1e-12))
            .fold(0f64, f64::max);
        let px = ra.synth_images.iter().zip(&rb.synth_images).map(|(x, y)| (x - y).abs());
        SynthDiff {
            iterations: ra.synth_terms.len(),
            first_differing_iteration: first,
            max_relative_loss_diff: rel,
            final_loss: [
                ra.synth_terms.last().map_or(0.0, |t| t.total),
                rb.synth_terms.last().map_or(0.0, |t| t.total),
            ],
            max_pixel_diff: px.clone().fold(0f32, f32::max),
            mean_pixel_diff: px.map(|d| d as f64).sum::<f64>() / ra.synth_images.len().max(1) as f64,
        }
    });
    Ok(PairReport {
        a,
        b,
        top1_agreement: 100.0 * same as f64 / rows.max(1) as f64,
        max_logit_diff,
        mean_logit_diff,
        weights,
        sites,
        synth,
    })
}

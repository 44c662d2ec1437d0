//! The MaskAQ pipeline (docs/method.md §1.3): synthesize images with P and the current
//! Q, train Q on them for a few epochs, regenerate the whole set with the current Q every
//! `refresh_every` epochs (periodic refresh), evaluate after every epoch.
//!
//! After every epoch the whole state (Q, the quantizers, the optimiser, the synthetic set, the
//! scheduler position and the random-number state) is written atomically to
//! `out/checkpoint.safetensors`; a resumed run continues from it and ends with the same Q as an
//! uninterrupted one on the same adapter.
//!
//! Q training augments every batch as the spec's `T_aug` (see `QTrainer`).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

pub use super::checkpoint::{check_resume, describe_checkpoint, fingerprint};
use super::checkpoint::{read_checkpoint, restore, save};
use super::qtrain::{QTrainConfig, QTrainer, StepLosses, epoch_lr};
use super::synth::{Method, SynthConfig, Synthesizer};
use super::synth_pool::{self, Plan};
use crate::data::dataset::Dataset;
use crate::data::synthetic::{SyntheticDataset, write_previews};
use crate::eval::{ModelRunner, evaluate};
use crate::gpu::Gpu;
use crate::maskaq::agreement::agreement;
use crate::model::checkpoint::Weights;
use crate::model::{Arch, Model, ModelConfig};
use crate::quant::Bits;
use crate::quant::calibrate::minmax_calibrate;
use crate::rng::Rng;

/// Everything `maskaq quantize` needs besides the models and data.
#[derive(Clone, Debug, Serialize)]
pub struct QuantizeConfig {
    pub bits: String,
    pub synth: SynthConfig,
    pub train: QTrainConfig,
    pub num_images: usize,
    pub epochs: usize,
    /// Regenerate the synthetic set every this many epochs (0: only at the start).
    pub refresh_every: usize,
    /// Epochs that compute the losses but do not update Q (the authors' code: 2).
    pub frozen_epochs: usize,
    /// How Q's activation quantizers start: `lsq` (the authors' code: LSQ's lazy init on the
    /// first batch of augmented noise) or `minmax` (min-max calibration on 64 noise images, the
    /// PTQ baseline's ranges, then trained as LSQ).
    pub init: String,
    /// The first synthetic set was read from this folder instead of synthesized.
    pub synthetic_from: Option<String>,
    /// Real-data QAT (the upper reference): every "synthesis" draws `num_images` real training
    /// images from this dataset instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_data: Option<String>,
    pub seed: u64,
}

impl QuantizeConfig {
    /// `demo`: the bundled model in a few minutes on a CPU; `fast`: a DeiT-T-sized model on a
    /// GPU (128 images, 100 iterations, 2 syntheses, 10 epochs: about 6.5 minutes on an H200 by
    /// the per-step times measured there, docs/results.md); `paper`: the authors' settings.
    pub fn preset(name: &str, method: Method, bits: &str, model: &ModelConfig) -> Result<QuantizeConfig> {
        let mut synth = SynthConfig::new(method);
        let mut train = QTrainConfig::default();
        let (num, iters, epochs, refresh, frozen) = match name {
            "demo" => (64, 100, 8, 4, 1),
            "fast" => (128, 100, 10, 5, 1),
            "paper" => (10_000, 2000, 200, 30, 2),
            other => bail!("--preset: unknown preset `{other}` (expected demo, fast or paper)"),
        };
        synth.iters = iters;
        synth.log_every = iters;
        if name != "paper" {
            // The short presets (100 iterations): from the authors' N(0, 1) start and under their
            // full-strength colour jitter, the roll-robust steps do not reach the classes far
            // from noise (small objects on black) in 100 iterations; a black start and half the
            // jitter reach them on every model measured (docs/results.md §6). Measured on
            // Fashion-MNIST models only, not on ImageNet ones; `paper` (2000 iterations) keeps
            // the authors' values.
            synth.init = super::synth::SynthInit::Black;
            synth.color_jitter = 0.5;
            if matches!(model.arch, Arch::Swin(_)) {
                // The bundled Swin tolerates intensity changes far less than the ViTs (real test
                // images under half-strength colour jitter: 54.3 % top-1 against the bundled
                // ViT's 70.8 %; under the noise constant: 52.6 % against 68.7 %), and with either
                // its synthesis reaches only about half the classes in 100 iterations; without
                // both, 96.9 % of 32 images (docs/results.md §9). Measured on that one Swin only.
                synth.color_jitter = 0.0;
                synth.noise_std = 0.0;
            }
        }
        let w_bits = bits.parse::<Bits>().map(|b| b.w)?;
        if name == "demo" && w_bits >= 4 {
            // 64 images and 28 updates. With weights of 4 bits or more, which cost little
            // (bundled model: W4A8 PTQ within 0.3 points of FP), training every weight on them
            // (the authors' recipe) gains nothing over the PTQ start on average, while training
            // only the activation quantizers, at 10x the learning rate, gains on every seed
            // measured. At 3 bits the weights' training gains far more (docs/results.md §7), so
            // there, and in `fast` and `paper`, the authors' recipe stays.
            train.train_params = super::qtrain::TrainParams::Quantizers;
            train.lr = 1e-2;
        }

        Ok(QuantizeConfig {
            bits: bits.to_string(),
            synth,
            train,
            num_images: num,
            epochs,
            refresh_every: refresh,
            frozen_epochs: frozen,
            // The authors' LSQ init on noise starts Q below the min-max PTQ baseline it is meant
            // to beat (docs/results.md); `paper` keeps it, the other presets start from min-max.
            init: if name == "paper" { "lsq".into() } else { "minmax".into() },
            synthetic_from: None,
            real_data: None,
            seed: 0,
        })
    }
}

#[derive(Serialize, serde::Deserialize, Clone, Debug)]
pub struct EpochReport {
    pub epoch: usize,
    pub lr: f32,
    pub updated: bool,
    pub refreshed: bool,
    pub kd: f32,
    pub hd: f32,
    pub top1: Option<f64>,
    pub top5: Option<f64>,
    /// After a refresh: P's top-1 agreement with the new images' target labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic_agreement: Option<f64>,
    pub seconds: f64,
}

#[derive(Serialize, Debug)]
pub struct QuantizeReport {
    pub adapter: String,
    pub model: String,
    pub config: QuantizeConfig,
    /// The evaluation data (with `--eval-limit`: which part) and its number of samples.
    pub eval_data: Option<String>,
    pub eval_samples: Option<usize>,
    /// Accuracy of the full-precision model on the evaluation data.
    pub fp_top1: Option<f64>,
    /// Min-max PTQ calibrated on 64 Gaussian-noise images, the data-free baseline.
    pub ptq_noise_top1: Option<f64>,
    /// Q after the last epoch (the number to report).
    pub final_top1: Option<f64>,
    pub final_top5: Option<f64>,
    /// The best epoch, chosen on the evaluation data (not a fair test number).
    pub best_epoch_top1_chosen_on_eval_data: Option<(usize, f64)>,
    pub epochs: Vec<EpochReport>,
    /// Seconds over every session of a resumed run (the work lost to an interruption, from the
    /// last checkpoint to the stop, is not counted).
    pub synthesis_seconds: f64,
    pub training_seconds: f64,
    pub total_seconds: f64,
    pub dropped_synthesis_batches: usize,
}

fn eval_runner<'g>(gpu: &'g Gpu, vit: &Model, data: &dyn Dataset) -> ModelRunner<'g> {
    ModelRunner::new(gpu, vit, 64.min(data.len().max(1)))
}

fn accuracy_with(runner: &mut ModelRunner, vit: &Model, data: &dyn Dataset) -> Result<(f64, f64)> {
    let r = evaluate(data, &vit.cfg.preprocess, runner, None, &crate::progress::Progress::hidden())?;
    Ok((r.top1, r.top5))
}

fn accuracy(gpu: &Gpu, vit: &Model, data: &dyn Dataset) -> Result<(f64, f64)> {
    accuracy_with(&mut eval_runner(gpu, vit, data), vit, data)
}

/// The 64 Gaussian-noise images of the min-max PTQ baseline (and of `--init minmax`).
fn calibration_noise(p: &Model, seed: u64) -> Vec<f32> {
    let per = p.cfg.in_chans * p.cfg.img_size * p.cfg.img_size;
    let mut rng = Rng::new(seed ^ 0x9e37);
    (0..64 * per).map(|_| rng.normal() as f32).collect()
}

/// `n` distinct samples of `data` drawn with `rng` (all of them if it has fewer), preprocessed.
fn draw_real(
    data: &dyn Dataset,
    pp: &crate::model::config::Preprocess,
    n: usize,
    rng: &mut Rng,
) -> Result<(Vec<f32>, Vec<usize>)> {
    let mut idx: Vec<usize> = (0..data.len()).collect();
    let (n, len) = (n.min(idx.len()), idx.len());
    for k in 0..n {
        idx.swap(k, k + rng.below(len - k));
    }
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for &i in &idx[..n] {
        let s = data.load(i, pp).with_context(|| format!("--real-data: {}", data.name(i)))?;
        images.extend_from_slice(&s.input);
        labels.push(s.label);
    }
    Ok((images, labels))
}

/// How to run the pipeline besides its configuration.
pub struct RunOptions<'a> {
    pub eval: Option<&'a dyn Dataset>,
    pub out: &'a Path,
    /// Continue from `out/checkpoint.safetensors`.
    pub resume: bool,
    /// Stop after finishing this epoch (1-based), as an interruption would (for tests).
    pub stop_after_epoch: Option<usize>,
    /// The first synthetic set, instead of synthesizing it (its first `num_images` images).
    pub initial: Option<&'a SyntheticDataset>,
    /// Real-data QAT: draw the training images from this labelled dataset at every refresh.
    pub real: Option<&'a dyn Dataset>,
    /// Progress of the current phase (synthesis batches, training steps); hidden when not shown.
    pub progress: crate::progress::Progress,
    /// More adapters for the synthesis (`--adapters`); Q trains on the main one.
    pub extra_gpus: &'a [Gpu],
}

/// Tries per synthesis batch before a run gives up on it (a batch may go non-finite).
const SYNTH_ATTEMPTS: usize = 4;

pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// The min-max PTQ baseline of a run with evaluation data, exported like Q.
pub const PTQ_BASELINE: &str = "ptq_noise.safetensors";

/// After Ctrl-C (`crate::interrupt`): stop, and say truthfully what is kept. The checkpoint is
/// written after every epoch, so epochs before `epoch` are finished and kept.
fn check_interrupt(epoch: usize, epochs: usize) -> Result<()> {
    if crate::interrupt::requested() {
        if epoch == 0 {
            bail!("during epoch 1 of {epochs}, before any epoch had finished: nothing was kept to resume");
        }
        bail!(
            "during epoch {} of {epochs}; the checkpoint of epoch {epoch} is kept: continue with --resume",
            epoch + 1
        );
    }
    Ok(())
}
/// Runs the pipeline; `log` receives one line per event. Writes a checkpoint after every epoch
/// and, at the end, the last synthetic set (with previews) to `out/synthetic/`; the caller
/// writes the model and the report.
#[allow(clippy::too_many_arguments)]
pub fn run(
    gpu: &Gpu,
    p: &Model,
    weights: &Weights,
    q: &Model,
    cfg: &QuantizeConfig,
    opts: &RunOptions,
    log: impl FnMut(&str),
) -> Result<QuantizeReport> {
    // A Ctrl-C anywhere (the baselines, a synthesis iteration, a training step) ends here with
    // what is kept: `check_interrupt` knows the epoch; before the first one nothing is.
    run_epochs(gpu, p, weights, q, cfg, opts, log).map_err(|e| {
        if crate::interrupt::requested() && e.to_string() == "interrupted" {
            anyhow::anyhow!("before epoch 1 of {} had finished: nothing was kept to resume", cfg.epochs)
        } else {
            e
        }
    })
}

/// Where a run stands: the current synthetic set, the random state, the finished epochs and the
/// time spent. Fresh, or restored from the checkpoint.
pub(super) struct RunState {
    pub(super) images: Vec<f32>,
    pub(super) labels: Vec<usize>,
    pub(super) rng: Rng,
    pub(super) epochs: Vec<EpochReport>,
    pub(super) next_epoch: usize,
    pub(super) fp_top1: Option<f64>,
    pub(super) ptq_top1: Option<f64>,
    pub(super) synth_s: f64,
    pub(super) train_s: f64,
    /// Seconds spent by the runs this one resumed.
    pub(super) earlier_s: f64,
    pub(super) dropped: usize,
}

/// The models and settings every phase of a run reads.
pub(super) struct Run<'a> {
    pub(super) gpu: &'a Gpu,
    pub(super) p: &'a Model,
    pub(super) q: &'a Model,
    pub(super) cfg: &'a QuantizeConfig,
    pub(super) opts: &'a RunOptions<'a>,
    /// P's weights (the extra adapters build their P from them).
    pub(super) weights: &'a Weights,
    /// Values per image.
    pub(super) per: usize,
}

#[allow(clippy::too_many_arguments)]
fn run_epochs(
    gpu: &Gpu,
    p: &Model,
    weights: &Weights,
    q: &Model,
    cfg: &QuantizeConfig,
    opts: &RunOptions,
    mut log: impl FnMut(&str),
) -> Result<QuantizeReport> {
    let start = Instant::now();
    let run = Run { gpu, p, q, cfg, opts, weights, per: p.cfg.in_chans * p.cfg.img_size * p.cfg.img_size };
    let config_json = serde_json::to_string(cfg)?;
    let model_fp = fingerprint(weights);
    let ckpt_path = opts.out.join(CHECKPOINT);
    let resumed =
        if opts.resume { Some(read_checkpoint(&ckpt_path, &config_json, &model_fp)?) } else { None };
    // Before the graphs below exist, so the baseline's model is not held beside them.
    let measured = if resumed.is_none() { Some(baselines(&run, weights, &mut log)?) } else { None };
    let mut synth = Synthesizer::new(
        gpu,
        p,
        Some(q),
        SynthConfig { batch: cfg.synth.batch.min(cfg.num_images), ..cfg.synth.clone() },
    )?;
    let mut trainer = QTrainer::new(
        gpu,
        p,
        q,
        QTrainConfig { batch: cfg.train.batch.min(cfg.num_images), seed: cfg.seed, ..cfg.train.clone() },
    )?;
    let mut state = match resumed {
        Some((st, tensors)) => {
            let state = restore(&run, &mut trainer, &mut synth, st, &tensors)?;
            log(&format!("resumed from {} at epoch {}", ckpt_path.display(), state.next_epoch + 1));
            state
        }
        None => {
            let (fp_top1, ptq_top1) = measured.unwrap_or_default();
            match cfg.init.as_str() {
                "lsq" => {}
                // The batch of Q training, so LSQ's gradient scale g is the one a lazy init would set.
                "minmax" => {
                    minmax_calibrate(gpu, q, &calibration_noise(p, cfg.seed), trainer.config().batch)?
                }
                other => bail!("--init: unknown initialisation `{other}` (expected lsq or minmax)"),
            }
            RunState {
                images: Vec::new(),
                labels: Vec::new(),
                rng: Rng::new(cfg.seed),
                epochs: Vec::new(),
                next_epoch: 0,
                fp_top1,
                ptq_top1,
                synth_s: 0.0,
                train_s: 0.0,
                earlier_s: 0.0,
                dropped: 0,
            }
        }
    };
    // Q's evaluation graph is built once; it reads Q's parameters as they are trained.
    let mut q_runner = opts.eval.map(|d| eval_runner(gpu, q, d));
    for epoch in state.next_epoch..cfg.epochs {
        let t0 = Instant::now();
        let refresh = epoch == 0 || (cfg.refresh_every > 0 && epoch % cfg.refresh_every == 0);
        let synthetic_agreement =
            if refresh { new_set(&run, &mut synth, &mut state, epoch, &mut log)? } else { None };
        let s1 = Instant::now();
        let (lr, update) = train_epoch(&run, &mut trainer, &mut state, epoch)?;
        let StepLosses { kd, hd, .. } = trainer.read_losses()?;
        state.train_s += s1.elapsed().as_secs_f64();
        let (top1, top5) = match (opts.eval, q_runner.as_mut()) {
            (Some(d), Some(runner)) => {
                opts.progress.set_message(format!("epoch {}/{}: evaluating Q", epoch + 1, cfg.epochs));
                let (a, b) = accuracy_with(runner, q, d)
                    .or_else(|e| check_interrupt(epoch, cfg.epochs).and(Err(e)))?;
                (Some(a), Some(b))
            }
            _ => (None, None),
        };
        log(&format!(
            "epoch {}/{}: kd {kd:.4}  hd {hd:.4}  lr {lr:.2e}{}{}",
            epoch + 1,
            cfg.epochs,
            if update { "" } else { "  (frozen)" },
            top1.map_or(String::new(), |t| format!("  top-1 {t:.2} %"))
        ));
        state.epochs.push(EpochReport {
            epoch: epoch + 1,
            lr,
            updated: update,
            refreshed: refresh,
            kd,
            hd,
            top1,
            top5,
            synthetic_agreement,
            seconds: t0.elapsed().as_secs_f64(),
        });
        state.next_epoch = epoch + 1;
        let total_s = state.earlier_s + start.elapsed().as_secs_f64();
        save(&run, &trainer, &synth, &state, &config_json, &model_fp, total_s)?;
        if opts.stop_after_epoch == Some(epoch + 1) && epoch + 1 < cfg.epochs {
            bail!("stopped after epoch {} as asked (--stop-after-epoch); continue with --resume", epoch + 1);
        }
    }
    finish(&run, state, start)
}

/// P's top-1 on the evaluation data and the min-max PTQ baseline's (exported beside the run).
fn baselines(run: &Run, weights: &Weights, log: &mut impl FnMut(&str)) -> Result<(Option<f64>, Option<f64>)> {
    let Some(data) = run.opts.eval else { return Ok((None, None)) };
    let (gpu, p, cfg) = (run.gpu, run.p, run.cfg);
    let bits: Bits = cfg.bits.parse()?;
    let (fp, _) = accuracy(gpu, p, data)?;
    log(&format!("full precision: top-1 {fp:.2} %"));
    let mut q0 = Model::new(gpu, p.cfg.clone(), weights);
    q0.quantize(gpu, bits);
    minmax_calibrate(gpu, &q0, &calibration_noise(p, cfg.seed), 32)?;
    let (ptq, _) = accuracy(gpu, &q0, data)?;
    log(&format!("min-max PTQ on noise at {bits}: top-1 {ptq:.2} %"));
    // The baseline itself, so it can be evaluated on other data (`maskaq eval --quantized`).
    crate::quant::export::export(gpu, &q0, "minmax-ptq-noise", &run.opts.out.join(PTQ_BASELINE))?;
    Ok((Some(fp), Some(ptq)))
}

/// The training set of a refresh epoch: the given first set, real images, or a new synthesis
/// with the current Q. Returns P's agreement with a synthesized set's targets.
fn new_set(
    run: &Run,
    synth: &mut Synthesizer,
    state: &mut RunState,
    epoch: usize,
    log: &mut impl FnMut(&str),
) -> Result<Option<f64>> {
    let (cfg, opts, per) = (run.cfg, run.opts, run.per);
    if let Some(set) = opts.initial.filter(|_| epoch == 0) {
        let n = cfg.num_images.min(set.labels.len());
        state.images = set.images[..n * per].to_vec();
        state.labels = set.labels[..n].to_vec();
        log(&format!("epoch 1: {n} synthetic images from {}", set.path.display()));
        return Ok(None);
    }
    if let Some(d) = opts.real {
        (state.images, state.labels) = draw_real(d, &run.p.cfg.preprocess, cfg.num_images, &mut state.rng)?;
        log(&format!("epoch {}: {} real training images from {}", epoch + 1, state.labels.len(), d.source()));
        return Ok(None);
    }
    let s0 = Instant::now();
    let (batch, iters) = (synth.config().batch, synth.config().iters);
    let batches = cfg.num_images.div_ceil(batch);
    opts.progress.start(batches as u64, format!("epoch {}/{}: synthesizing, batches", epoch + 1, cfg.epochs));
    check_interrupt(epoch, cfg.epochs)?;
    // Each batch from its own stream of this refresh (synth_pool): the set does not depend on
    // how many adapters make it.
    let on_log = |_: usize, t: &super::synth::TermLog| {
        if t.iter + 1 == iters {
            opts.progress.inc(1);
        }
    };
    let plan = Plan {
        seed: cfg.seed,
        stream: epoch as u64,
        slots: 0..batches,
        attempts: SYNTH_ATTEMPTS,
        on_log: &on_log,
    };
    let (made, workers) = synth_pool::run(synth, opts.extra_gpus, Some(run.weights), &plan)
        .or_else(|e| check_interrupt(epoch, cfg.epochs).and(Err(e)))?;
    state.images.clear();
    state.labels.clear();
    for m in made {
        if !m.batch.finite {
            bail!(
                "synthesis: batch {} went non-finite {SYNTH_ATTEMPTS} times; nothing to train on",
                m.slot + 1
            );
        }
        if m.attempts > 1 {
            log(&format!(
                "synthesis: batch {} went non-finite {} times and was redone",
                m.slot + 1,
                m.attempts - 1
            ));
        }
        state.dropped += m.attempts - 1;
        let keep = (cfg.num_images - m.slot * batch).min(m.batch.labels.len());
        state.images.extend_from_slice(&m.batch.images[..keep * per]);
        state.labels.extend_from_slice(&m.batch.labels[..keep]);
    }
    if workers.len() > 1 {
        for w in &workers {
            log(&format!(
                "synthesis: {}: {} of {batches} batches in {:.1} s",
                w.adapter, w.batches, w.seconds
            ));
        }
    }
    state.synth_s += s0.elapsed().as_secs_f64();
    let agree = agreement(run.gpu, run.p, &state.images, &state.labels)?;
    log(&format!(
        "epoch {}: synthesized {} images with the current Q ({:.1} s); P classifies {}",
        epoch + 1,
        state.labels.len(),
        s0.elapsed().as_secs_f64(),
        agree.summary(run.p.cfg.label_names.as_deref())
    ));
    Ok(Some(agree.top1))
}

/// One epoch of Q training over the current set in a new random order; returns its learning
/// rate and whether Q was updated (not in the frozen epochs).
fn train_epoch(run: &Run, trainer: &mut QTrainer, state: &mut RunState, epoch: usize) -> Result<(f32, bool)> {
    let (cfg, per, tb) = (run.cfg, run.per, trainer.config().batch);
    let lr = epoch_lr(cfg.train.lr, epoch, cfg.epochs);
    let update = epoch >= cfg.frozen_epochs;
    let mut order: Vec<usize> = (0..state.labels.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, state.rng.below(i + 1));
    }
    let pb = &run.opts.progress;
    pb.start((order.len() / tb) as u64, format!("epoch {}/{}: training Q, steps", epoch + 1, cfg.epochs));
    let mut batch = vec![0f32; tb * per];
    for chunk in order.chunks_exact(tb) {
        pb.inc(1);
        check_interrupt(epoch, cfg.epochs)?;
        for (k, &i) in chunk.iter().enumerate() {
            batch[k * per..(k + 1) * per].copy_from_slice(&state.images[i * per..(i + 1) * per]);
        }
        trainer.step(&batch, lr, update);
    }
    Ok((lr, update))
}

/// The last synthetic set (with previews) under out/synthetic/, and the report.
fn finish(run: &Run, state: RunState, start: Instant) -> Result<QuantizeReport> {
    let (p, cfg) = (run.p, run.cfg);
    let synth_dir = run.opts.out.join("synthetic");
    std::fs::create_dir_all(&synth_dir)?;
    let shape = [p.cfg.in_chans, p.cfg.img_size, p.cfg.img_size];
    let mut meta = std::collections::HashMap::new();
    meta.insert("num_classes".to_string(), p.cfg.num_classes.to_string());
    SyntheticDataset::write(&synth_dir, shape, &state.images, &state.labels, meta)?;
    write_previews(&synth_dir, &state.images, &state.labels, &p.cfg)?;
    let last = state.epochs.last();
    let (final_top1, final_top5) = (last.and_then(|e| e.top1), last.and_then(|e| e.top5));
    let best =
        state.epochs.iter().filter_map(|e| e.top1.map(|t| (e.epoch, t))).max_by(|a, b| a.1.total_cmp(&b.1));
    Ok(QuantizeReport {
        adapter: run.gpu.describe(),
        model: String::new(),
        config: cfg.clone(),
        eval_data: None,
        eval_samples: None,
        fp_top1: state.fp_top1,
        ptq_noise_top1: state.ptq_top1,
        final_top1,
        final_top5,
        best_epoch_top1_chosen_on_eval_data: best,
        epochs: state.epochs,
        synthesis_seconds: state.synth_s,
        training_seconds: state.train_s,
        total_seconds: state.earlier_s + start.elapsed().as_secs_f64(),
        dropped_synthesis_batches: state.dropped,
    })
}

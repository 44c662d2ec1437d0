//! Q training on synthetic images (docs/method.md §1.3): knowledge distillation from P
//! (KL at temperature T, times T^2) plus `hd_coef` times the mask-weighted SSIM distillation of
//! the attention outputs (section 2.5), SGD with Nesterov momentum on every parameter of Q,
//! including the activation quantizers' alpha and z.
//!
//! One step is one submission (P forward, Q forward, both losses, Q backward, SGD). The host
//! writes the batch and the learning rate; it reads the summed losses only when logging.
//! Every batch first goes through the spec's augmentation (`ops::augment::batch_augment`, one
//! random draw per batch) unless `augment` is off.

use anyhow::{Result, bail};
use serde::Serialize;

use super::synth_objectives::head_dims;
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::model::{Graph, GraphOptions, Model};
use crate::ops::augment::{self, AugParams, DRAWS};
use crate::ops::copy;
use crate::ops::distill::{self, HeadDims};
use crate::ops::optim::{Slice, sgd};
use crate::ops::reduce::SumRows;
use crate::rng::Rng;

/// Q-training settings (defaults: the authors' code, spec 1.3 and section 5).
#[derive(Clone, Debug, Serialize)]
pub struct QTrainConfig {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub batch: usize,
    pub kd_temperature: f32,
    /// Weight of the head distillation (argparse default 10; 0 switches it off).
    pub hd_coef: f32,
    /// Fraction of patch tokens weighted 2 in the head distillation.
    pub mask_proportion: f64,
    /// Weight of the top tokens (the spec's masked weighting; 1 switches the masking off).
    pub mask_weight: f32,
    /// Apply the spec's batch augmentation (`T_aug`) to every training batch.
    pub augment: bool,
    /// Factor on the LSQ zero points' gradients: 1 (the authors' code: unscaled), 0 (zero points
    /// frozen), or negative for LSQ's g (scaled like the steps alpha).
    pub z_grad: f32,
    /// What the updates change: Q's weights (every parameter), its activation quantizers'
    /// (alpha, z), or both (the authors' code).
    pub train_params: TrainParams,
    /// Seed of the augmentation draws.
    pub seed: u64,
}

/// Which of Q's values Q training updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TrainParams {
    /// Every weight and every activation quantizer (the authors' code).
    All,
    /// Only the activation quantizers' steps and zero points; the weights stay P's.
    Quantizers,
    /// Only the weights; the activation quantizers keep their calibrated ranges.
    Weights,
}

impl TrainParams {
    fn weights(self) -> bool {
        self != TrainParams::Quantizers
    }

    fn quantizers(self) -> bool {
        self != TrainParams::Weights
    }
}

impl Default for QTrainConfig {
    fn default() -> Self {
        QTrainConfig {
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 0.0,
            batch: 16,
            kd_temperature: 5.0,
            hd_coef: 10.0,
            mask_proportion: 0.1,
            mask_weight: 2.0,
            augment: true,
            z_grad: 1.0,
            train_params: TrainParams::All,
            seed: 0,
        }
    }
}

/// Mean losses over the steps since the last read.
#[derive(Clone, Debug, Serialize)]
pub struct StepLosses {
    pub kd: f32,
    pub hd: f32,
    pub steps: usize,
}

/// P and Q unrolled for one batch size with every launch of a training step.
pub struct QTrainer<'a> {
    gpu: &'a Gpu,
    cfg: QTrainConfig,
    q: &'a Model,
    gp: Graph,
    gq: Graph,
    hyper: Tensor,
    sums: Tensor,
    forward_losses: Vec<Dispatch>,
    update: Vec<Dispatch>,
    updates_done: usize,
    steps_since_read: usize,
    /// Momentum buffers: one per parameter of Q, then one for the quantizers' (alpha, z).
    momentum: Vec<Tensor>,
    /// The batch as written by the host, before augmentation (when augmenting).
    raw: Option<Tensor>,
    aug_draws: Tensor,
    aug_rng: Rng,
    pre: Vec<Dispatch>,
    _keep: Vec<Tensor>,
}

impl<'a> QTrainer<'a> {
    pub fn new(gpu: &'a Gpu, p: &'a Model, q: &'a Model, cfg: QTrainConfig) -> Result<QTrainer<'a>> {
        let quant = q.quant.as_ref().ok_or_else(|| anyhow::anyhow!("Q training needs a quantized model"))?;
        if quant.frozen_weights {
            bail!(
                "this quantized model holds already-quantized weights (a loaded export); train from the FP weights"
            );
        }
        let c = &p.cfg;
        let b = cfg.batch;
        let gp = Graph::build(gpu, p, b, GraphOptions::default());
        if let Some(quant) = &q.quant {
            quant.z_grad.set(cfg.z_grad);
        }
        let gq = Graph::build(
            gpu,
            q,
            b,
            GraphOptions { backward: true, attention_grads: true, ..Default::default() },
        );
        let t = |s: &[usize]| Tensor::zeros(gpu, s);
        let hyper = t(&[4]);
        let sums = t(&[2]);
        let (fl, mut keep) = distill_losses(gpu, &cfg, c.num_classes, &gp, &gq, &sums);
        let shape = [b, c.in_chans, c.img_size, c.img_size];
        let aug_draws = t(&[DRAWS]);
        let (raw, mut pre) = if cfg.augment {
            let (raw, tmp, stats) = (t(&shape), t(&shape), t(&[b]));
            let ds = augment::batch_augment(gpu, shape, &raw, &tmp, &gp.images, &stats, &aug_draws);
            keep.extend([tmp, stats]);
            (Some(raw), ds)
        } else {
            (None, Vec::new())
        };
        if cfg.augment {
            pre.push(copy::Copy4::flat(gp.images.numel()).dispatch(gpu, &gp.images, &gq.images));
        }
        let aug_rng = Rng::new(cfg.seed ^ 0x0061_7567);
        let (update, momentum) = sgd_updates(gpu, q, &cfg, &hyper);
        Ok(QTrainer {
            gpu,
            cfg,
            q,
            gp,
            gq,
            hyper,
            sums,
            forward_losses: fl,
            update,
            updates_done: 0,
            steps_since_read: 0,
            momentum,
            raw,
            aug_draws,
            aug_rng,
            pre,
            _keep: keep,
        })
    }

    /// One step on `images` ([B, C, H, W], normalised). With `update` false the losses and
    /// gradients are computed but Q is not changed (the spec's first two epochs).
    /// Every launch of one step with an update, in order (for profiles and the kernel tuner).
    pub fn step_dispatches(&self) -> Vec<&Dispatch> {
        let lists: [&[Dispatch]; 6] = [
            &self.pre,
            self.gp.forward_dispatches(),
            self.gq.forward_dispatches(),
            &self.forward_losses,
            self.gq.backward_dispatches(),
            &self.update,
        ];
        lists.into_iter().flatten().collect()
    }

    pub fn step(&mut self, images: &[f32], lr: f32, update: bool) {
        let c = &self.q.cfg;
        let aug = self.raw.is_some().then(|| AugParams::draw(&mut self.aug_rng, c.img_size, c.img_size));
        self.step_with(images, aug.as_ref(), lr, update);
    }

    /// [`QTrainer::step`] with given augmentation parameters instead of a draw from the trainer's
    /// own random numbers; `aug` is required when the trainer augments and ignored when not.
    pub fn step_with(&mut self, images: &[f32], aug: Option<&AugParams>, lr: f32, update: bool) {
        match &self.raw {
            Some(raw) => {
                let aug = aug.expect("this trainer augments its batches: give the augmentation parameters");
                raw.write(self.gpu, images);
                let c = &self.q.cfg;
                self.aug_draws.write(self.gpu, &aug.encode(&c.preprocess.mean, &c.preprocess.std));
            }
            None => {
                self.gp.images.write(self.gpu, images);
                self.gq.images.write(self.gpu, images);
            }
        }
        let first = self.updates_done == 0;
        self.hyper.write(self.gpu, &[lr, if first { 1.0 } else { 0.0 }, 0.0, 0.0]);
        // LSQ initialises on the first forward Q ever sees (in synthesis, or here).
        let init = self.q.quant.as_ref().is_some_and(|q| !q.initialized.get());
        let q_fw = if init { self.gq.forward_init_dispatches() } else { self.gq.forward_dispatches() };
        let none: &[Dispatch] = &[];
        let upd: &[Dispatch] = if update { &self.update } else { none };
        self.gpu.run_all(&[
            &self.pre,
            self.gp.forward_dispatches(),
            q_fw,
            &self.forward_losses,
            self.gq.backward_dispatches(),
            upd,
        ]);
        if init && let Some(q) = &self.q.quant {
            q.initialized.set(true);
        }
        if update {
            self.updates_done += 1;
        }
        self.steps_since_read += 1;
    }

    /// Mean KD and head-distillation losses since the last call (waits for the GPU).
    pub fn read_losses(&mut self) -> Result<StepLosses> {
        let v = self.sums.read(self.gpu)?;
        let n = self.steps_since_read.max(1) as f32;
        let out = StepLosses { kd: v[0] / n, hd: v[1] / n, steps: self.steps_since_read };
        self.sums.write(self.gpu, &[0.0, 0.0]);
        self.steps_since_read = 0;
        Ok(out)
    }

    pub fn config(&self) -> &QTrainConfig {
        &self.cfg
    }

    /// The optimiser state: momentum buffers (per parameter of Q, then the quantizers') and the
    /// number of updates made.
    pub fn optimizer_state(&self) -> Result<(Vec<Vec<f32>>, usize)> {
        let m = self.momentum.iter().map(|t| t.read(self.gpu)).collect::<Result<Vec<_>>>()?;
        Ok((m, self.updates_done))
    }

    /// The augmentation's random-number state (for checkpoints).
    pub fn aug_rng_state(&self) -> u64 {
        self.aug_rng.state()
    }

    pub fn set_aug_rng_state(&mut self, state: u64) {
        self.aug_rng = Rng::from_state(state);
    }

    /// Restores [`QTrainer::optimizer_state`].
    pub fn set_optimizer_state(&mut self, momentum: &[Vec<f32>], updates_done: usize) -> Result<()> {
        if momentum.len() != self.momentum.len() {
            bail!(
                "checkpoint holds {} momentum buffers, the model needs {}",
                momentum.len(),
                self.momentum.len()
            );
        }
        for (t, v) in self.momentum.iter().zip(momentum) {
            if t.numel() != v.len() {
                bail!("checkpoint momentum buffer of {} values where {} are needed", v.len(), t.numel());
            }
            t.write(self.gpu, v);
        }
        self.updates_done = updates_done;
        Ok(())
    }
}

/// Learning rate of epoch `epoch` (from 0) of `epochs`: cosine annealing to 1% of `lr`, stepped
/// at the start of every epoch as the authors' code does (epoch 0 already uses step 1).
pub fn epoch_lr(lr: f32, epoch: usize, epochs: usize) -> f32 {
    let eta_min = 0.01 * lr as f64;
    let t = (epoch + 1) as f64 / epochs.max(1) as f64;
    (eta_min + (lr as f64 - eta_min) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
}

/// KD on the logits and the mask-weighted head distillation per block, on each block's attention
/// groups (ViT: images; Swin: windows, with the authors' per-window top-k weights): a mean per
/// block, then over blocks. Their gradients go into Q's `d_logits` and `d_attn_out`; the two
/// unweighted losses are summed into `sums`. Returns the launches and the buffers they use.
fn distill_losses(
    gpu: &Gpu,
    cfg: &QTrainConfig,
    num_classes: usize,
    gp: &Graph,
    gq: &Graph,
    sums: &Tensor,
) -> (Vec<Dispatch>, Vec<Tensor>) {
    let t = |s: &[usize]| Tensor::zeros(gpu, s);
    let b = cfg.batch;
    let dims: Vec<HeadDims> = gq.taps.iter().map(|tap| head_dims(&tap.geometry)).collect();
    let l = dims.len();
    let hd_len: usize = dims.iter().map(|d| d.b * d.h * d.d).sum();
    let kd_partial = t(&[b]);
    let hd_partial = t(&[hd_len]);
    let weights = t(&[dims.iter().map(|d| d.b * d.np()).max().unwrap_or(1)]);
    let mut fl: Vec<Dispatch> = vec![copy::fill(gpu, &gq.d_logits, 0.0)];
    fl.push(distill::kd(
        gpu,
        b,
        num_classes,
        cfg.kd_temperature,
        1.0 / b as f32,
        &gp.logits,
        &gq.logits,
        &gq.d_logits,
        &kd_partial,
        0,
    ));
    let mut off = 0;
    for (li, d) in dims.iter().enumerate() {
        let k = if cfg.mask_weight == 1.0 { 0 } else { d.top_k(cfg.mask_proportion) };
        let count = (l * d.b * d.h * d.d) as f32;
        let d_o = gq.taps[li].d_attn_out.as_ref().unwrap();
        fl.push(copy::fill(gpu, d_o, 0.0));
        if cfg.hd_coef > 0.0 {
            let (p_o, q_o) = (&gp.taps[li].attn_out, &gq.taps[li].attn_out);
            fl.extend(distill::head_distill(
                gpu,
                d,
                k,
                cfg.hd_coef / count,
                p_o,
                q_o,
                d_o,
                &weights,
                &hd_partial,
                off,
            ));
        }
        off += d.b * d.h * d.d;
    }
    let sum = |n: usize, o_off: usize, alpha: f32| SumRows {
        n: 1,
        rows: n,
        s_off: 0,
        rs: 1,
        o_off,
        alpha,
        beta: 1.0,
    };
    fl.extend(sum(b, 0, 1.0).dispatches(gpu, &kd_partial, sums));
    let hd_scale = if cfg.hd_coef > 0.0 { 1.0 / cfg.hd_coef } else { 0.0 };
    fl.extend(sum(hd_partial.numel(), 1, hd_scale).dispatches(gpu, &hd_partial, sums));
    (fl, vec![kd_partial, hd_partial, weights])
}

/// One Nesterov step per trained tensor (Q's parameters, then the quantizers' (alpha, z)), and
/// every momentum buffer whatever is trained, so checkpoints have one layout.
fn sgd_updates(gpu: &Gpu, q: &Model, cfg: &QTrainConfig, hyper: &Tensor) -> (Vec<Dispatch>, Vec<Tensor>) {
    let quant = q.quant.as_ref().expect("Q is quantized");
    let tensors = q.params.iter().map(|p| (&p.value, &p.grad, cfg.train_params.weights()));
    let tensors = tensors.chain([(&quant.state.qparams, &quant.state.qgrad, cfg.train_params.quantizers())]);
    let (mut update, mut momentum) = (Vec::new(), Vec::new());
    for (value, grad, train) in tensors {
        let buf = Tensor::zeros(gpu, &value.shape);
        if train {
            let all = Slice::all(value.numel());
            update.push(sgd(gpu, all, cfg.momentum, cfg.weight_decay, value, grad, &buf, hyper));
        }
        momentum.push(buf);
    }
    (update, momentum)
}

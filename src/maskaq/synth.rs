//! Sample synthesis (docs/method.md §1.2): a batch of images optimised from N(0, 1) noise
//! so that P sees natural attention structure and P and Q agree on the informative patches.
//!
//! One iteration is one GPU submission the host does not wait for: jitter and augment the
//! images, P and Q forward, the objectives on their attention taps (gradients into the taps),
//! cross-entropy on P's logits, P and Q backward into the augmented images, back through the
//! augmentation, total variation, AdamW on the pixels, clamp. The host draws the random numbers
//! (shift, noise, colour jitter, entropy rows, mask keys, learning rate) and writes them to small
//! buffers; it reads back only the logged loss terms.

use anyhow::{Result, bail};
use serde::Serialize;

pub use super::synth_config::{Method, SwinAlignment, SynthConfig, SynthInit, Weights};
use super::synth_objectives;
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::model::{Graph, GraphOptions, Model};
use crate::ops::loss::cross_entropy;
use crate::ops::optim::{Slice, adamw};
use crate::ops::reduce::{Segment, sum_segments};
use crate::ops::synth::{self as sy, TvScratch};
use crate::rng::Rng;

/// The unweighted objective values at one iteration (batch means).
#[derive(Clone, Debug, Serialize)]
pub struct TermLog {
    pub iter: usize,
    pub ssim: Option<f32>,
    pub entropy: Option<f32>,
    pub alignment: Option<f32>,
    pub ce: Option<f32>,
    pub tv: Option<f32>,
    pub kde: Option<f32>,
    /// Weighted sum (the optimised objective).
    pub total: f32,
}

/// One synthesised batch.
pub struct SynthBatch {
    /// [B, C, H, W] in normalised space.
    pub images: Vec<f32>,
    pub labels: Vec<usize>,
    /// False if the batch went non-finite (the spec drops such a batch).
    pub finite: bool,
    pub log: Vec<TermLog>,
}

/// The host inputs of one synthesis iteration: its random draws and its step of the schedules.
#[derive(Clone, Debug, PartialEq)]
pub struct IterDraws {
    /// torch.roll shift of the whole batch (rows, columns).
    pub shift: (i32, i32),
    /// Per (image, channel): GaussianNoise's constant, ColorJitter's m and s (x -> (x - m) / s).
    pub noise: Vec<f64>,
    pub color_m: Vec<f64>,
    pub color_s: Vec<f64>,
    /// The pixels' learning rate and AdamW's step number (from 1) of this iteration.
    pub lr: f64,
    pub adam_step: i32,
    /// Per block: the entropy's patch rows of every image ([B * rows], 0-based patch indices).
    pub entropy_rows: Vec<Vec<usize>>,
    /// Informative-region mask: top-`mask_k` patches, of which the `mask_keep` with the smallest
    /// `mask_keys` ([B, np], uniform) stay. Empty without the alignment term.
    pub mask_k: usize,
    pub mask_keep: usize,
    pub mask_keys: Vec<f32>,
}

/// What [`Synthesizer::iterate_with`] reads back.
pub struct Iteration {
    pub terms: TermLog,
    /// d objective / d pixels (un-jittered), before the optimiser step.
    pub grad: Vec<f32>,
    /// The pixels after AdamW and the clamp.
    pub images: Vec<f32>,
}

/// Indices of the terms in the loss buffer.
const SSIM: usize = 0;
const ENTROPY: usize = 1;
const ALIGN: usize = 2;
const CE: usize = 3;
const TV: usize = 4;
const KDE: usize = 5;
const TERMS: usize = 6;

/// P, Q and every buffer and launch of one synthesis batch, built once and reused.
pub struct Synthesizer<'a> {
    gpu: &'a Gpu,
    cfg: SynthConfig,
    p: &'a Model,
    q: Option<&'a Model>,
    gp: Graph,
    gq: Option<Graph>,
    shape: [usize; 4],
    objs: synth_objectives::Objectives,
    img: Tensor,
    d_img: Tensor,
    draws: Tensor,
    hyper_opt: Tensor,
    targets: Tensor,
    terms: Tensor,
    m_adam: Tensor,
    v_adam: Tensor,
    step: Vec<Dispatch>,
    /// The augmentation and Q's initialising forward alone ([`Synthesizer::init_q`]).
    q_init: Vec<Dispatch>,
    /// Q's weight quantizers, run before a batch's first iteration.
    weights: Vec<Dispatch>,
    noise_calls: usize,
    _keep: Vec<Tensor>,
}

impl<'a> Synthesizer<'a> {
    /// `q` is required for the alignment term (MaskAQ); P's graph drives the others.
    pub fn new(
        gpu: &'a Gpu,
        p: &'a Model,
        q: Option<&'a Model>,
        mut cfg: SynthConfig,
    ) -> Result<Synthesizer<'a>> {
        let c = &p.cfg;
        check_setup(p, q, &mut cfg)?;
        let w = cfg.weights;
        let use_q = w.alignment > 0.0 && q.is_some();
        let b = cfg.batch;
        let shape = [b, c.in_chans, c.img_size, c.img_size];
        let n_img: usize = shape.iter().product();
        // Only the images are optimised: no parameter gradients in either model.
        let opts = GraphOptions {
            backward: true,
            attention_grads: true,
            image_grads_only: true,
            ..Default::default()
        };
        let gp = Graph::build(gpu, p, b, opts);
        // Q serves only the alignment's taps (its logits are never read); it reads P's images and
        // adds its image gradient to P's (its backward runs after P's).
        let q_opts = GraphOptions { taps_only: true, accumulate_image_grad: true, ..opts };
        let inputs = Some((&gp.images, &gp.d_images));
        let gq = use_q.then(|| Graph::build_on(gpu, q.unwrap(), b, q_opts, inputs));
        let objs = synth_objectives::build(
            gpu,
            &w,
            cfg.entropy_rows,
            &gp.taps,
            gq.as_ref().map(|g| g.taps.as_slice()),
        )?;
        let t = |shape: &[usize]| Tensor::zeros(gpu, shape);
        let img = t(&shape);
        let d_img = t(&shape);
        let draws = t(&[2 + 2 * b * c.in_chans]);
        let hyper_opt = t(&[4]);
        let targets = t(&[b]);
        let terms = t(&[TERMS]);
        let (m_adam, v_adam) = (t(&shape), t(&shape));
        let ce_loss = t(&[b]);
        let tv_loss = t(&[1]);
        let tvs = TvScratch::new(gpu, n_img);
        let bounds = clamp_bounds(gpu, c);

        // The forward passes see the jittered, augmented images (one buffer for P and Q).
        let ds = [sy::jitter_forward(gpu, shape, &img, &gp.images, &draws)];
        let fw_p: Vec<Dispatch> = gp.forward_dispatches().to_vec();
        let (weights, fw_q, fw_q_init) = q_forwards(gq.as_ref());
        let mut objectives = objs.launches.clone();
        let partial = objs.partial.clone();
        // Cross-entropy on P's logits against the targets (zero gradient when switched off).
        objectives.push(cross_entropy(
            gpu,
            b,
            c.num_classes,
            w.ce / b as f32,
            &gp.logits,
            &targets,
            &ce_loss,
            &gp.d_logits,
        ));
        // Backward: P, then Q (adding to P's image gradient), into the augmented images; back
        // through the augmentation.
        let bw_p: Vec<Dispatch> = gp.backward_dispatches().to_vec();
        let mut tail: Vec<Dispatch> = Vec::new();
        if let Some(gq) = &gq {
            tail.extend(gq.backward_dispatches().iter().cloned());
        }
        tail.push(sy::jitter_backward(gpu, shape, &gp.d_images, &d_img, &draws));
        tail.extend(sy::tv(gpu, shape, w.tv.max(0.0), &img, &d_img, &tv_loss, &tvs));
        tail.push(term_sums(gpu, &objs, &w, b, [&partial, &ce_loss, &tv_loss], &terms));
        tail.push(adamw(
            gpu,
            Slice::all(n_img),
            (0.9, 0.999),
            1e-8,
            cfg.weight_decay,
            &img,
            &d_img,
            &m_adam,
            &v_adam,
            &hyper_opt,
        ));
        tail.push(sy::clamp_channels(gpu, shape, &img, &bounds));

        let step = [&ds[..], &fw_p, &fw_q, &objectives, &bw_p, &tail].concat();
        let q_init = [&ds[..], &fw_q_init].concat();
        let mut keep = vec![partial, ce_loss, tv_loss, bounds];
        keep.extend(objs.keep.iter().cloned());
        Ok(Synthesizer {
            gpu,
            cfg,
            p,
            q: if use_q { q } else { None },
            gp,
            gq,
            shape,
            objs,
            img,
            d_img,
            draws,
            hyper_opt,
            targets,
            terms,
            m_adam,
            v_adam,
            step,
            q_init,
            weights,
            noise_calls: 0,
            _keep: keep,
        })
    }

    pub fn config(&self) -> &SynthConfig {
        &self.cfg
    }

    /// The device and the models this synthesizer runs (Q only when the objective reads it).
    pub fn models(&self) -> (&'a Gpu, &'a Model, Option<&'a Model>) {
        (self.gpu, self.p, self.q)
    }

    /// Calls of the noise augmentation so far (its schedule persists across batches).
    pub fn noise_calls(&self) -> usize {
        self.noise_calls
    }

    /// Restores [`Synthesizer::noise_calls`] (resuming a run).
    pub fn set_noise_calls(&mut self, n: usize) {
        self.noise_calls = n;
    }

    /// Writes the per-iteration random draws for iteration `i` of `iters`.
    fn draw(&mut self, rng: &mut Rng, i: usize) {
        let d = self.draw_iteration(rng, i);
        self.upload_draws(&d);
    }

    /// Draws the host inputs of iteration `i` of `iters` from `rng` (and counts one call of the
    /// noise augmentation, whose schedule persists across batches) without writing them.
    pub fn draw_iteration(&mut self, rng: &mut Rng, i: usize) -> IterDraws {
        let c = &self.p.cfg;
        let (b, ch) = (self.shape[0], self.shape[1]);
        let iters = self.cfg.iters;
        // Jitter: 8 px then 16 px at 224, scaled to the image size (at least 1 px).
        let j224 = if i < iters / 2 { self.cfg.jitter.0 } else { self.cfg.jitter.1 };
        let j =
            ((j224 as f64 * c.img_size as f64 / 224.0).round() as usize).max(if j224 > 0 { 1 } else { 0 });
        let shift = |r: &mut Rng| if j > 0 { r.below(2 * j + 1) as i32 - j as i32 } else { 0 };
        let shift = (shift(rng), shift(rng));
        // GaussianNoise: a per-image, per-channel constant randn * rem * 0.5 / iters, rem counting
        // down from iters - 1 per call (the object persists across batches); then ColorJitter
        // (x - m) / s with m ~ U[-1, 1], s = exp(U[-1, 1]). 0.5 and 1 are the authors' values,
        // `noise_std` and `color_jitter` here; the draws are the same whatever the strengths.
        let (sd, a) = (self.cfg.noise_std, self.cfg.color_jitter);
        let rem = (iters - 1 - self.noise_calls % iters) as f64;
        self.noise_calls += 1;
        let (mut noise, mut color_m, mut color_s) = (vec![], vec![], vec![]);
        for _ in 0..b * ch {
            noise.push(rng.normal() * rem * sd / iters as f64);
            color_m.push(a * (rng.unit() * 2.0 - 1.0));
            color_s.push((a * (rng.unit() * 2.0 - 1.0)).exp());
        }
        // Learning rate: cosine from lr to lr_min over the iterations (stepped after each one).
        let t = i as f64 / iters as f64;
        let lr = self.cfg.lr_min as f64
            + 0.5 * (self.cfg.lr - self.cfg.lr_min) as f64 * (1.0 + (std::f64::consts::PI * t).cos());
        // Entropy rows: a fresh random subset per block and attention group (image or window).
        let entropy_rows = self
            .objs
            .blocks
            .iter()
            .map(|bt| {
                let np = bt.dims.np();
                let mut idx = Vec::with_capacity(bt.dims.b * bt.sub);
                for _ in 0..bt.dims.b {
                    let mut perm: Vec<usize> = (0..np).collect();
                    for k in (1..np).rev() {
                        perm.swap(k, rng.below(k + 1));
                    }
                    idx.extend_from_slice(&perm[..bt.sub]);
                }
                idx
            })
            .collect();
        // Mask: ratio linear over the iterations, then keep round(0.7 k) at random.
        let (mut mask_k, mut mask_keep, mut mask_keys) = (0, 0, Vec::new());
        if let (Some(_), Some(md)) = (self.q, self.objs.mask_dims) {
            let np = md.np();
            let (r0, r1) = self.cfg.mask_ratio;
            let ratio = r0 * (1.0 - t as f32) + r1 * t as f32;
            mask_k = ((np as f32 * ratio) as usize).max(1);
            mask_keep = (((1.0 - self.cfg.mask_drop) * mask_k as f32).round() as usize).clamp(1, mask_k);
            mask_keys = (0..b * np).map(|_| rng.unit() as f32).collect();
        }
        IterDraws {
            shift,
            noise,
            color_m,
            color_s,
            lr,
            adam_step: (i + 1) as i32,
            entropy_rows,
            mask_k,
            mask_keep,
            mask_keys,
        }
    }

    /// Writes one iteration's host inputs (from [`Synthesizer::draw_iteration`], or given) to the
    /// buffers the next iteration reads.
    pub fn upload_draws(&self, d: &IterDraws) {
        let (b, ch) = (self.shape[0], self.shape[1]);
        assert!(
            d.noise.len() == b * ch && d.color_m.len() == b * ch && d.color_s.len() == b * ch,
            "one noise constant and colour jitter per image and channel"
        );
        let blocks = &self.objs.blocks;
        assert!(
            d.entropy_rows.len() == blocks.len()
                && d.entropy_rows.iter().zip(blocks).all(|(r, bt)| r.len() == bt.dims.b * bt.sub),
            "entropy rows per attention group and block"
        );
        // The jitter kernel folds noise and colour jitter into one affine map per image and channel.
        let mut j = vec![d.shift.0 as f32, d.shift.1 as f32];
        for k in 0..b * ch {
            j.push((d.noise[k] - d.color_m[k]) as f32);
            j.push(d.color_s[k] as f32);
        }
        self.draws.write(self.gpu, &j);
        let step = d.adam_step;
        self.hyper_opt
            .write(self.gpu, &[d.lr as f32, 1.0 - 0.9f32.powi(step), 1.0 - 0.999f32.powi(step), 0.0]);
        for (bt, rows) in blocks.iter().zip(&d.entropy_rows) {
            bt.subset.write(self.gpu, &rows.iter().map(|&v| v as f32).collect::<Vec<_>>());
        }
        if let (Some(_), Some(md)) = (self.q, self.objs.mask_dims) {
            let np = md.b * md.np();
            assert!(d.mask_keys.len() == np && (1..=d.mask_k).contains(&d.mask_keep), "mask draws");
            self.objs.hyper_mask.write(self.gpu, &[d.mask_k as f32, d.mask_keep as f32, 0.0, 0.0]);
            self.objs.keys.write(self.gpu, &d.mask_keys);
        }
    }

    /// Sets AdamW's moments of the pixels (zero at the start of every batch).
    pub fn set_adam_moments(&self, m: &[f32], v: &[f32]) {
        self.m_adam.write(self.gpu, m);
        self.v_adam.write(self.gpu, v);
    }

    /// One iteration on `images` with the given host inputs, as [`Synthesizer::run_batch`] takes it
    /// once Q's quantizers hold a state: the logged terms, the image gradient (with respect to the
    /// un-jittered pixels, TV included) and the pixels after AdamW and the clamp.
    pub fn iterate_with(&mut self, d: &IterDraws, images: &[f32], labels: &[usize]) -> Result<Iteration> {
        self.img.write(self.gpu, images);
        self.targets.write(self.gpu, &labels.iter().map(|&l| l as f32).collect::<Vec<_>>());
        self.upload_draws(d);
        self.gpu.run_all(&[&self.weights, &self.step]);
        Ok(Iteration {
            terms: self.read_terms(d.adam_step as usize - 1)?,
            grad: self.d_img.read(self.gpu)?,
            images: self.img.read(self.gpu)?,
        })
    }

    fn read_terms(&self, iter: usize) -> Result<TermLog> {
        let v = self.terms.read(self.gpu)?;
        let w = self.cfg.weights;
        let on = |weight: f32, x: f32| (weight > 0.0).then_some(x);
        let align_on = if self.q.is_some() { w.alignment } else { 0.0 };
        Ok(TermLog {
            iter,
            ssim: on(w.ssim, v[SSIM]),
            entropy: on(w.entropy, v[ENTROPY]),
            alignment: on(align_on, v[ALIGN]),
            ce: on(w.ce, v[CE]),
            tv: on(w.tv, v[TV]),
            kde: on(w.kde, v[KDE]),
            total: w.ssim * v[SSIM]
                + w.entropy * v[ENTROPY]
                + align_on * v[ALIGN]
                + w.kde * v[KDE]
                + w.ce * v[CE]
                + w.tv * v[TV],
        })
    }

    /// A batch's starting pixels and target labels, the first draws of its stream.
    fn start_batch(&self, rng: &mut Rng) -> (Vec<f32>, Vec<usize>) {
        let c = &self.p.cfg;
        let n_img: usize = self.shape.iter().product();
        let mut img: Vec<f32> = (0..n_img).map(|_| rng.normal() as f32).collect();
        if self.cfg.init == SynthInit::Black {
            // The same draws as Randn, so the labels and every later draw are unchanged.
            let plane = c.img_size * c.img_size;
            for (k, v) in img.iter_mut().enumerate() {
                let ch = (k / plane) % c.in_chans;
                *v = -c.preprocess.mean[ch] / c.preprocess.std[ch] + 0.01 * v.abs();
            }
        }
        let labels: Vec<usize> = (0..self.shape[0]).map(|_| rng.below(c.num_classes)).collect();
        (img, labels)
    }

    /// Writes a batch's pixels and targets, zeroes the pixels' optimiser and quantizes Q's
    /// weights.
    fn load_batch(&self, img: &[f32], labels: &[usize]) {
        self.img.write(self.gpu, img);
        self.targets.write(self.gpu, &labels.iter().map(|&l| l as f32).collect::<Vec<_>>());
        self.m_adam.write(self.gpu, &vec![0.0; img.len()]);
        self.v_adam.write(self.gpu, &vec![0.0; img.len()]);
        self.gpu.run_all(&[&self.weights]);
    }

    /// Whether Q is in the objective and its activation quantizers hold no state yet.
    pub fn q_needs_init(&self) -> bool {
        self.cfg.method != Method::Noise
            && self.q.is_some_and(|q| q.quant.as_ref().is_some_and(|qq| !qq.initialized.get()))
    }

    /// Initialises Q's activation quantizers (LSQ's initialisation on the first forward Q sees)
    /// on the first iteration's input of the batch whose stream `rng` is, leaving nothing else
    /// changed. [`Synthesizer::run_batch`] calls it on its own batch when Q needs it; a run split
    /// over several adapters or shards calls it with batch 0's stream everywhere, so every
    /// worker holds the Q a one-adapter run would.
    pub fn init_q(&mut self, mut rng: Rng) -> Result<()> {
        if !self.q_needs_init() {
            return Ok(());
        }
        let (img, labels) = self.start_batch(&mut rng);
        self.load_batch(&img, &labels);
        let calls = self.noise_calls;
        self.draw(&mut rng, 0);
        self.noise_calls = calls;
        self.gpu.run_all(&[&self.q_init]);
        if let Some(qq) = self.q.and_then(|q| q.quant.as_ref()) {
            qq.initialized.set(true);
        }
        Ok(())
    }

    /// Synthesises one batch from fresh noise with random target labels, every draw from `rng`.
    pub fn run_batch(&mut self, rng: &mut Rng, mut on_log: impl FnMut(&TermLog)) -> Result<SynthBatch> {
        self.init_q(rng.clone())?;
        let (img, labels) = self.start_batch(rng);
        let mut log = Vec::new();
        if self.cfg.method == Method::Noise {
            return Ok(SynthBatch { images: img, labels, finite: true, log });
        }
        // A fresh image optimiser per batch.
        self.load_batch(&img, &labels);
        for i in 0..self.cfg.iters {
            crate::interrupt::check()?;
            self.draw(rng, i);
            self.gpu.run_all(&[&self.step]);
            if (i + 1) % self.cfg.log_every.max(1) == 0 || i + 1 == self.cfg.iters || i == 0 {
                let entry = self.read_terms(i)?;
                on_log(&entry);
                log.push(entry);
            }
        }
        let images = self.img.read(self.gpu)?;
        let finite = images.iter().all(|v| v.is_finite());
        Ok(SynthBatch { images, labels, finite, log })
    }

    /// For gradient checks: the total objective and its gradient with respect to `images`,
    /// with the random draws of iteration `iter` from `rng` (no optimiser step is applied to
    /// the result: the images are restored).
    pub fn objective_and_grad(
        &mut self,
        rng: &mut Rng,
        iter: usize,
        images: &[f32],
        labels: &[usize],
    ) -> Result<(f32, Vec<f32>)> {
        self.img.write(self.gpu, images);
        self.targets.write(self.gpu, &labels.iter().map(|&l| l as f32).collect::<Vec<_>>());
        self.draw(rng, iter);
        self.gpu.run_all(&[&self.weights, &self.step]);
        let total = self.read_terms(iter)?.total;
        let grad = self.d_img.read(self.gpu)?;
        Ok((total, grad))
    }

    /// Re-runs the objective with the draws already written (for finite differences).
    pub fn objective_again(&mut self, images: &[f32]) -> Result<f32> {
        self.img.write(self.gpu, images);
        self.gpu.run_all(&[&self.weights, &self.step]);
        Ok(self.read_terms(0)?.total)
    }

    /// The launches of one iteration (after Q's quantizers are initialised), for profiling.
    pub fn step_dispatches(&self) -> &[Dispatch] {
        &self.step
    }

    pub fn graphs(&self) -> (&Graph, Option<&Graph>) {
        (&self.gp, self.gq.as_ref())
    }
}

/// Refuses a zero batch or iteration count and a Q of another architecture; switches the
/// alignment off where the authors' Swin code leaves it at zero (docs/swin.md).
fn check_setup(p: &Model, q: Option<&Model>, cfg: &mut SynthConfig) -> Result<()> {
    let c = &p.cfg;
    if c.swin().is_some() && cfg.swin_alignment == SwinAlignment::AsCoded {
        cfg.weights.alignment = 0.0;
    }
    if cfg.batch == 0 || cfg.iters == 0 {
        bail!("synthesis needs a batch and an iteration count of at least 1");
    }
    if let Some(q) = q
        && (&q.cfg.arch, q.cfg.img_size, q.cfg.patch_size, q.cfg.in_chans, q.cfg.num_classes)
            != (&c.arch, c.img_size, c.patch_size, c.in_chans, c.num_classes)
    {
        bail!("the quantized model's architecture differs from the full-precision model's");
    }
    Ok(())
}

/// Q's weight quantizers, its forward and its initialising forward without them. Q's weights do
/// not change while images are synthesised, so the quantizers run once per batch, not every
/// iteration.
fn q_forwards(gq: Option<&Graph>) -> (Vec<Dispatch>, Vec<Dispatch>, Vec<Dispatch>) {
    let Some(g) = gq else { return Default::default() };
    (
        g.weight_dispatches().to_vec(),
        g.forward_fixed_weights().to_vec(),
        g.forward_init_fixed_weights().to_vec(),
    )
}

/// 1 / x, or 0 for a switched-off term (its logged value is then 0, not infinite).
fn inv(x: f32) -> f32 {
    if x > 0.0 { 1.0 / x } else { 0.0 }
}

/// Per channel, the normalised values of pixel 0 and 1: the clamp after every step.
fn clamp_bounds(gpu: &Gpu, c: &crate::model::ModelConfig) -> Tensor {
    let bounds: Vec<f32> = (0..c.in_chans)
        .flat_map(|ch| {
            let (m, s) = (c.preprocess.mean[ch], c.preprocess.std[ch]);
            [-m / s, (1.0 - m) / s]
        })
        .collect();
    Tensor::from_slice(gpu, &bounds, &[2 * c.in_chans])
}

/// The logged terms in one launch: each objective's partial sums, the CE and the TV, as
/// unweighted batch means (`sources`: the partial sums, the CE per image, the TV).
fn term_sums(
    gpu: &Gpu,
    objs: &synth_objectives::Objectives,
    w: &Weights,
    b: usize,
    sources: [&Tensor; 3],
    terms: &Tensor,
) -> Dispatch {
    let [ssim, ent, align, kde] = objs.segments;
    let mut segs = vec![
        Segment { src: 1, off: 0, len: b, o: CE, alpha: 1.0 / b as f32 },
        Segment { src: 2, off: 0, len: 1, o: TV, alpha: inv(w.tv) },
    ];
    for (o, (off, len), weight) in
        [(SSIM, ssim, w.ssim), (ENTROPY, ent, w.entropy), (ALIGN, align, w.alignment), (KDE, kde, w.kde)]
    {
        if len > 0 {
            segs.push(Segment { src: 0, off, len, o, alpha: inv(weight) });
        }
    }
    sum_segments(gpu, &sources, &segs, terms)
}

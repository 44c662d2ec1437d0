//! The synthesis objectives on every block's attention taps, for any architecture: each term
//! reads a tap's geometry (docs/method.md §2; Swin: docs/swin.md). A ViT block is one attention
//! group per image with a class token; a Swin block is one group per window, and the terms the
//! authors define per window (inter-head SSIM, patch-similarity entropy) run on every window as
//! the ViT terms run on every image. The informative-region mask and the masked alignment read
//! the blocks of the last stage (every ViT block), through the class-token row or, without a
//! class token, the mean over query rows.

use anyhow::{Result, bail};

use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::model::{TapGeometry, Taps};
use crate::ops::copy;
use crate::ops::distill::HeadDims;
use crate::ops::objectives::{self as obj, AttnDims, EntropyScratch};
use crate::ops::psaq::{self as pq, PsaqScratch};

use super::synth::Weights;

/// The objectives' view of a tap.
pub fn attn_dims(g: &TapGeometry) -> AttnDims {
    AttnDims { b: g.groups(), h: g.heads, n: g.tokens, prefix: g.prefix, g: g.side }
}

/// The head-output view of a tap (PSAQ's KDE entropy, Q training's head distillation).
pub fn head_dims(g: &TapGeometry) -> HeadDims {
    HeadDims { b: g.groups(), h: g.heads, n: g.tokens, prefix: g.prefix, d: g.head_dim }
}

/// One block's share of the objectives.
pub struct BlockTerms {
    pub dims: AttnDims,
    /// Rows sampled for the entropy per group, and the host-written subset [groups, sub].
    pub sub: usize,
    pub subset: Tensor,
    ent: EntropyScratch,
    kde: Option<PsaqScratch>,
}

/// Segment offsets of every term's partial sums, and the buffers the host writes.
pub struct Objectives {
    pub blocks: Vec<BlockTerms>,
    /// The mask's dims (images × tokens of the last stage), when Q is aligned.
    pub mask_dims: Option<AttnDims>,
    pub partial: Tensor,
    /// (first index, length) of each term's partials: ssim, entropy, alignment, kde.
    pub segments: [(usize, usize); 4],
    pub keys: Tensor,
    pub hyper_mask: Tensor,
    /// The launches, in order, and the buffers they need kept.
    pub launches: Vec<Dispatch>,
    pub(crate) keep: Vec<Tensor>,
}

/// Checks what the objectives need of the adapter and the model.
fn check(gpu: &Gpu, w: &Weights, taps_p: &[Taps]) -> Result<()> {
    if w.kde > 0.0
        && let Some(n) = taps_p
            .iter()
            .map(|t| pq::loop_iterations(&head_dims(&t.geometry)))
            .find(|&n| !gpu.fits_one_invocation(n))
    {
        bail!(
            "PSAQ's density estimate on this model runs {n} loop iterations per shader invocation, more \
             than this adapter's driver allows (llvmpipe: 65,535); use a GPU for --method psaq"
        );
    }
    if let Some(h) = taps_p.iter().map(|t| t.geometry.heads).find(|&h| h > obj::MAX_HEADS) {
        bail!("inter-head SSIM supports at most {} heads, this model has {h}", obj::MAX_HEADS);
    }
    Ok(())
}

/// The mask's geometry: one attention group per image in the last stage (always so for a ViT).
fn mask_dims(taps_p: &[Taps], mask_blocks: &[usize]) -> Result<AttnDims> {
    let g = taps_p[mask_blocks[0]].geometry;
    if g.windows != 1 {
        bail!(
            "masked alignment reads the last stage's attention, which needs one window per image \
             (this model's last stage has {} windows)",
            g.windows
        );
    }
    Ok(attn_dims(&g))
}

/// Builds the objective launches on P's taps and, with masked alignment, Q's (taps of graphs
/// built with attention gradients).
pub fn build(
    gpu: &Gpu,
    w: &Weights,
    entropy_rows: usize,
    taps_p: &[Taps],
    taps_q: Option<&[Taps]>,
) -> Result<Objectives> {
    check(gpu, w, taps_p)?;
    let t = |shape: &[usize]| Tensor::zeros(gpu, shape);
    let blocks: Vec<BlockTerms> =
        taps_p.iter().map(|tap| BlockTerms::new(gpu, w, entropy_rows, tap)).collect();
    let mask_blocks: Vec<usize> = (0..blocks.len()).filter(|&l| taps_p[l].geometry.last_stage).collect();
    let mask_dims = taps_q.map(|_| mask_dims(taps_p, &mask_blocks)).transpose()?;
    let np_mask = mask_dims.map_or(0, |d| d.b * d.np());
    let ssim_len: usize = blocks.iter().map(|b| b.dims.b * b.dims.np()).sum();
    let groups: usize = blocks.iter().map(|b| b.dims.b).sum();
    let align_len = np_mask * mask_blocks.len();
    let segments = [
        (0, ssim_len),
        (ssim_len, groups),
        (ssim_len + groups, align_len),
        (ssim_len + groups + align_len, groups),
    ];
    let mut o = Objectives {
        blocks,
        mask_dims,
        partial: t(&[(segments[3].0 + groups).max(1)]),
        segments,
        keys: t(&[np_mask.max(1)]),
        hyper_mask: t(&[4]),
        launches: Vec::new(),
        keep: (0..3).map(|_| t(&[np_mask.max(1)])).chain([t(&[1])]).collect(),
    };
    // The terms add into the taps' gradients, which start every iteration at zero. The partial
    // sums need no fill: each term that is on overwrites its whole segment every iteration, and
    // an off term's segment keeps the zeros the buffer is made with.
    let mut grads: Vec<&Tensor> = taps_p
        .iter()
        .chain(taps_q.into_iter().flatten())
        .map(|t| t.d_attn_logits.as_ref().unwrap())
        .collect();
    if w.kde > 0.0 {
        grads.extend(taps_p.iter().map(|t| t.d_attn_out.as_ref().unwrap()));
    }
    o.launches.extend(copy::fill_all(gpu, &grads, 0.0));
    o.block_launches(gpu, w, taps_p, &mask_blocks);
    if let Some(taps_q) = taps_q {
        o.alignment_launches(gpu, w, taps_p, taps_q, &mask_blocks);
    }
    Ok(o)
}

impl BlockTerms {
    fn new(gpu: &Gpu, w: &Weights, entropy_rows: usize, tap: &Taps) -> BlockTerms {
        let dims = attn_dims(&tap.geometry);
        let sub = entropy_rows.min(dims.np()).max(1);
        BlockTerms {
            dims,
            sub,
            subset: Tensor::zeros(gpu, &[dims.b * sub]),
            ent: EntropyScratch::new(gpu, &dims, sub),
            kde: (w.kde > 0.0).then(|| PsaqScratch::new(gpu, &head_dims(&tap.geometry))),
        }
    }
}

impl Objectives {
    /// The mask's buffers: query means, top-k, mask, count.
    fn mask_buffers(&self) -> (&Tensor, &Tensor, &Tensor, &Tensor) {
        (&self.keep[0], &self.keep[1], &self.keep[2], &self.keep[3])
    }

    /// Per block: inter-head SSIM, entropy, the mask's query means (last stage) and PSAQ's KDE.
    fn block_launches(&mut self, gpu: &Gpu, w: &Weights, taps_p: &[Taps], mask_blocks: &[usize]) {
        let lf = self.blocks.len() as f32;
        let groups: usize = self.blocks.iter().map(|b| b.dims.b).sum();
        let (mut off_ssim, mut off_ent, mut off_kde) =
            (self.segments[0].0, self.segments[1].0, self.segments[3].0);
        let mut ds = Vec::new();
        let (cls, _, _, _) = self.mask_buffers();
        for (li, (tap, bt)) in taps_p.iter().zip(&self.blocks).enumerate() {
            let (d, da, partial) = (&bt.dims, tap.d_attn_logits.as_ref().unwrap(), &self.partial);
            if w.ssim > 0.0 {
                let coef = w.ssim / (lf * (d.b * d.np() * d.h * d.h) as f32);
                ds.push(obj::ssim_heads(gpu, d, coef, &tap.attn_logits, da, partial, off_ssim));
            }
            if w.entropy > 0.0 {
                // A mean over every group of every block (ViT: L B images; Swin: all windows).
                let coef = w.entropy / groups as f32;
                let a = &tap.attn_logits;
                ds.extend(obj::entropy(gpu, d, coef, a, &bt.subset, da, partial, off_ent, &bt.ent));
            }
            if self.mask_dims.is_some() && mask_blocks.contains(&li) {
                let first = li == mask_blocks[0];
                ds.push(obj::cls_mean(gpu, d, 1.0 / mask_blocks.len() as f32, first, &tap.attn_logits, cls));
            }
            if let Some(kde) = &bt.kde {
                let (d_o, hd) = (tap.d_attn_out.as_ref().unwrap(), head_dims(&tap.geometry));
                ds.extend(pq::entropy(
                    gpu,
                    &hd,
                    w.kde / d.b as f32,
                    &tap.attn_out,
                    d_o,
                    partial,
                    off_kde,
                    kde,
                ));
            }
            off_ssim += d.b * d.np();
            off_ent += d.b;
            off_kde += d.b;
        }
        self.launches.extend(ds);
    }

    /// The mask from P's last-stage query means, then the masked P-Q alignment per block.
    fn alignment_launches(
        &mut self,
        gpu: &Gpu,
        w: &Weights,
        taps_p: &[Taps],
        taps_q: &[Taps],
        mask_blocks: &[usize],
    ) {
        let md = self.mask_dims.expect("alignment needs the mask's geometry");
        let (cls, topk, mask, count) = self.mask_buffers();
        let mut ds =
            obj::mask_select(gpu, &md, cls, &self.hyper_mask, &self.keys, topk, mask, count).to_vec();
        for (k, &li) in mask_blocks.iter().enumerate() {
            let (tp, tq) = (&taps_p[li], &taps_q[li]);
            ds.push(obj::masked_alignment(
                gpu,
                &md,
                w.alignment / mask_blocks.len() as f32,
                &tp.attn_logits,
                &tq.attn_logits,
                tp.d_attn_logits.as_ref().unwrap(),
                tq.d_attn_logits.as_ref().unwrap(),
                mask,
                count,
                &self.partial,
                self.segments[2].0 + k * md.b * md.np(),
            ));
        }
        self.launches.extend(ds);
    }
}

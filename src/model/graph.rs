//! A model's forward and backward passes as a fixed list of kernel launches.
//!
//! [`Graph`] is a model unrolled for one batch size: every activation buffer is allocated and
//! every launch is bound once, so `forward()`/`backward()` only record and submit. The backward
//! pass is written out by hand, op by op in reverse (llm.c style), by each architecture's
//! topology (`vit.rs`, `swin.rs`) from the shared layers (`layers.rs`, `builder.rs`). The
//! attention taps MaskAQ's losses read (logits A and per-head outputs O) are kept per block with
//! their geometry, and gradients on them from a loss can be injected before `backward()`.
//!
//! Built from a model with [`crate::quant::Quant`] state, the same graph is Q: weights pass
//! through the per-channel weight quantizer and the inputs of every Linear and both operands of
//! both attention matmuls through LSQ activation quantizers (straight-through gradients; the
//! quantizers' alpha and z get gradients too).

use super::config::Arch;
use super::params::Model;
use crate::gpu::{Dispatch, Gpu, Tensor};

/// What a [`Graph`] is built for.
#[derive(Clone, Copy, Debug, Default)]
pub struct GraphOptions {
    /// Build the backward pass too.
    pub backward: bool,
    /// Allocate per-block gradient inputs on A and O (`Taps::d_attn_*`), added during backward.
    pub attention_grads: bool,
    /// Add the image gradient to `d_images` instead of overwriting it (two models, one image).
    pub accumulate_image_grad: bool,
    /// Q only: run the full-precision model and fold every activation quantizer's input range
    /// into `Quant::calib` (min-max calibration); no backward.
    pub calibrate: bool,
    /// The backward computes only what flows to the images (and the attention taps): no
    /// parameter, LayerNorm or quantizer-step gradients (image synthesis needs none of them).
    pub image_grads_only: bool,
    /// Q in image synthesis, where nothing reads the logits: only the attention taps'
    /// gradients flow back. The forward after initialisation stops after the last block's
    /// attention (`logits` is then not computed) and the backward starts there; the
    /// initialising forward stays whole, so every quantizer is still initialised. ViT only
    /// (Swin builds the whole graph). With `backward`, `attention_grads` and `image_grads_only`.
    pub taps_only: bool,
    /// Q only: keep every activation quantizer's output ([`Graph::site_probes`]), to compare
    /// quantization codes across adapters (`maskaq compare`). Build it on a device with
    /// `unfused` set, so that every site has an output of its own.
    pub probe_sites: bool,
}

/// An activation quantizer's output in a graph built with `probe_sites`: `region` of `xq`.
#[derive(Clone)]
pub struct SiteProbe {
    /// The site's index in `Quant::sites`.
    pub site: usize,
    pub region: crate::ops::quant::Region,
    pub xq: Tensor,
}

/// Where a block's attention tensors come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapGeometry {
    pub images: usize,
    /// Attention groups per image: 1 (ViT), or windows (Swin).
    pub windows: usize,
    pub heads: usize,
    /// Tokens per group.
    pub tokens: usize,
    pub head_dim: usize,
    /// Tokens before the patch tokens (ViT: class and distillation token; Swin: none).
    pub prefix: usize,
    /// Patch tokens per side of a group (ViT: the patch grid; Swin: the window).
    pub side: usize,
    /// Swin: the block's stage and cyclic shift; ViT: 0 and 0.
    pub stage: usize,
    pub shift: usize,
    /// Whether the block is in the last stage (always for ViT).
    pub last_stage: bool,
}

impl TapGeometry {
    /// Attention groups in the batch (images × windows).
    pub fn groups(&self) -> usize {
        self.images * self.windows
    }
}

/// Per-block attention tensors, in the groups' order (Swin: windows, batch-major, after the
/// cyclic shift).
pub struct Taps {
    /// A, [G, H, N, N]: ViT q kᵀ before the scale and softmax; Swin (q·scale) kᵀ before the
    /// relative-position bias and the mask (in Q: the quantized operands' product).
    pub attn_logits: Tensor,
    /// O = P v per head, [G, H, N, hd] (in Q: quant(P) quant(v)).
    pub attn_out: Tensor,
    /// Extra gradient on A, added in backward (only with `attention_grads`).
    pub d_attn_logits: Option<Tensor>,
    /// Extra gradient on O, added in backward (only with `attention_grads`).
    pub d_attn_out: Option<Tensor>,
    pub geometry: TapGeometry,
}

/// A model unrolled for one batch size.
pub struct Graph {
    pub batch: usize,
    /// Input images [B, C, H, W] in normalised space.
    pub images: Tensor,
    /// Gradient of the objective with respect to the images (after `backward`).
    pub d_images: Tensor,
    /// [B, classes]; distilled DeiT: the average of both heads.
    pub logits: Tensor,
    /// Gradient on the logits, set by a loss before `backward`.
    pub d_logits: Tensor,
    pub taps: Vec<Taps>,
    /// Every activation quantizer's output, in forward order (with `probe_sites`; else empty).
    pub site_probes: Vec<SiteProbe>,
    /// Launches of the forward; the first `weight_launches` are Q's weight quantizers.
    pub(crate) forward: Vec<Dispatch>,
    pub(crate) forward_init: Vec<Dispatch>,
    pub(crate) weight_launches: usize,
    pub(crate) backward: Vec<Dispatch>,
    /// Every buffer the launches use: held so the buffer pool does not hand them out again.
    pub(crate) _buffers: Vec<Tensor>,
}

impl Graph {
    /// Builds the graph for `batch` images.
    pub fn build(gpu: &Gpu, model: &Model, batch: usize, opts: GraphOptions) -> Graph {
        Self::build_on(gpu, model, batch, opts, None)
    }

    /// As [`Graph::build`], with `inputs` = (images, d_images) of another graph of the same
    /// image shape: this graph reads those images and adds its image gradient to that one's
    /// (with `accumulate_image_grad`; its backward must run after the other's). Synthesis runs
    /// P and Q on one image buffer so.
    pub fn build_on(
        gpu: &Gpu,
        model: &Model,
        batch: usize,
        opts: GraphOptions,
        inputs: Option<(&Tensor, &Tensor)>,
    ) -> Graph {
        assert!(
            !opts.calibrate || (model.quant.is_some() && !opts.backward),
            "calibration is a forward pass of Q"
        );
        let mut bl = super::builder::Builder::new(gpu, model, batch, opts);
        if let Some((images, d_images)) = inputs {
            bl.share_inputs(images, d_images);
        }
        match &model.cfg.arch {
            Arch::Vit(_) => super::vit::build(bl),
            Arch::Swin(_) => super::swin::build(bl),
        }
    }

    /// Records and submits the forward pass (does not wait).
    pub fn forward(&self, gpu: &Gpu) {
        gpu.run_all(&[&self.forward]);
    }

    /// Q only: the forward pass that first initialises every activation quantizer from the
    /// tensor it sees (LSQ's lazy initialisation on the first batch, spec section 1.4).
    pub fn forward_init(&self, gpu: &Gpu, q: &Model) {
        assert!(!self.forward_init.is_empty(), "forward_init needs a quantized model");
        gpu.run_all(&[&self.forward_init]);
        if let Some(quant) = &q.quant {
            quant.initialized.set(true);
        }
    }

    /// Records and submits the backward pass; parameter gradients are overwritten.
    pub fn backward(&self, gpu: &Gpu) {
        assert!(!self.backward.is_empty(), "graph was built without backward");
        gpu.run_all(&[&self.backward]);
    }

    pub fn forward_dispatches(&self) -> &[Dispatch] {
        &self.forward
    }
    /// The initialising forward of Q (see [`Graph::forward_init`]); empty for an FP model.
    pub fn forward_init_dispatches(&self) -> &[Dispatch] {
        &self.forward_init
    }
    /// Q's weight quantizers, the head of both forwards (empty for an FP model).
    pub fn weight_dispatches(&self) -> &[Dispatch] {
        &self.forward[..self.weight_launches]
    }
    /// The forward without its weight quantizers, for callers that run those once while the
    /// weights stay fixed (synthesis: Q's weights do not change within a batch).
    pub fn forward_fixed_weights(&self) -> &[Dispatch] {
        &self.forward[self.weight_launches..]
    }
    /// The initialising forward without its weight quantizers (see above).
    pub fn forward_init_fixed_weights(&self) -> &[Dispatch] {
        self.forward_init.get(self.weight_launches..).unwrap_or(&[])
    }
    pub fn backward_dispatches(&self) -> &[Dispatch] {
        &self.backward
    }
}

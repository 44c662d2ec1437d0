//! The timm ViT/DeiT forward and backward passes as a fixed list of kernel launches.
//!
//! [`Graph`] is a model unrolled for one batch size: every activation buffer is allocated and
//! every launch is bound once, so `forward()`/`backward()` only record and submit. The backward
//! pass is written out by hand, op by op in reverse (llm.c style). The attention taps MaskAQ's
//! losses read (raw logits A = q kᵀ and per-head outputs O = softmax(scale A) v) are kept per
//! block, and gradients on them from a loss can be injected before `backward()`.
//!
//! Built from a model with [`Quant`] state, the same graph is Q: weights pass through the
//! per-channel weight quantizer and the inputs of every Linear and both operands of both
//! attention matmuls through LSQ activation quantizers (straight-through gradients; the
//! quantizers' alpha and z get gradients too).

use std::cell::RefCell;
use std::collections::HashMap;

use super::vit::{Param, Vit};
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::model::VitConfig;
use crate::ops::copy::{self, Copy4};
use crate::ops::embed::Geometry;
use crate::ops::matmul::{Matmul, View};
use crate::ops::quant::{self, MAX_PARTIALS, Region};
use crate::ops::reduce::SumRows;
use crate::ops::{gelu, layernorm, softmax};
use crate::quant::{Quant, lsq_scale};

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
}

/// Per-block attention tensors.
pub struct Taps {
    /// A = q kᵀ before the scale and softmax, [B, H, N, N] (in Q: quant(q) quant(k)ᵀ).
    pub attn_logits: Tensor,
    /// O = softmax(scale A) v per head, [B, H, N, hd] (in Q: quant(P) quant(v)).
    pub attn_out: Tensor,
    /// Extra gradient on A, added in backward (only with `attention_grads`).
    pub d_attn_logits: Option<Tensor>,
    /// Extra gradient on O, added in backward (only with `attention_grads`).
    pub d_attn_out: Option<Tensor>,
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
    forward: Vec<Dispatch>,
    forward_init: Vec<Dispatch>,
    backward: Vec<Dispatch>,
    /// Every buffer the launches use: held so the buffer pool does not hand them out again.
    _buffers: Vec<Tensor>,
}

impl Graph {
    /// Builds the graph for `batch` images.
    pub fn build(gpu: &Gpu, vit: &Vit, batch: usize, opts: GraphOptions) -> Graph {
        assert!(
            !opts.calibrate || (vit.quant.is_some() && !opts.backward),
            "calibration is a forward pass of Q"
        );
        Builder::new(gpu, vit, batch, opts.calibrate).build(opts)
    }

    /// Records and submits the forward pass (does not wait).
    pub fn forward(&self, gpu: &Gpu) {
        gpu.run_all(&[&self.forward]);
    }

    /// Q only: the forward pass that first initialises every activation quantizer from the
    /// tensor it sees (LSQ's lazy initialisation on the first batch, spec section 1.4).
    pub fn forward_init(&self, gpu: &Gpu, q: &Vit) {
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
    pub fn backward_dispatches(&self) -> &[Dispatch] {
        &self.backward
    }
}

/// Activations one block keeps for its backward pass (`*_q`: after the activation quantizer,
/// the same tensor as its source in the FP model; `w_*`: the weights the forward used).
struct BlockActs {
    x: Tensor,
    ln1: Tensor,
    ln1_q: Tensor,
    st1: Tensor,
    qkv: Tensor,
    qkv_q: Tensor,
    prob: Tensor,
    prob_q: Tensor,
    merged: Tensor,
    merged_q: Tensor,
    xm: Tensor,
    ln2: Tensor,
    ln2_q: Tensor,
    st2: Tensor,
    h: Tensor,
    g: Tensor,
    g_q: Tensor,
    w_qkv: Tensor,
    w_proj: Tensor,
    w_fc1: Tensor,
    w_fc2: Tensor,
}

struct Builder<'a> {
    gpu: &'a Gpu,
    vit: &'a Vit,
    cfg: &'a VitConfig,
    quant: Option<&'a Quant>,
    b: usize,
    n: usize,
    d: usize,
    heads: usize,
    hd: usize,
    rows: usize,
    geo: Geometry,
    buffers: RefCell<Vec<Tensor>>,
    calibrate: bool,
    /// Partial sums of the quantizers' reductions (Q only).
    partials: Option<Tensor>,
    /// Scratch gradients of quantized inputs, by shape (each is consumed right after it is made).
    scratch: HashMap<Vec<usize>, Tensor>,
    fw: Vec<Dispatch>,
    /// Whether the backward computes parameter gradients (see `GraphOptions::image_grads_only`).
    param_grads: bool,
    /// Quantizer initialisations and the forward position they go before.
    init: Vec<(usize, Dispatch)>,
    bw: Vec<Dispatch>,
}

impl<'a> Builder<'a> {
    fn new(gpu: &'a Gpu, vit: &'a Vit, batch: usize, calibrate: bool) -> Self {
        let cfg = &vit.cfg;
        let geo = Geometry {
            batch,
            chans: cfg.in_chans,
            h: cfg.img_size,
            w: cfg.img_size,
            patch: cfg.patch_size,
            prefix: cfg.prefix_tokens(),
            d: cfg.embed_dim,
        };
        let mut b = Builder {
            gpu,
            vit,
            cfg,
            quant: vit.quant.as_ref(),
            b: batch,
            n: cfg.tokens(),
            d: cfg.embed_dim,
            heads: cfg.num_heads,
            hd: cfg.head_dim(),
            rows: batch * cfg.tokens(),
            geo,
            buffers: Default::default(),
            calibrate,
            partials: None,
            scratch: HashMap::new(),
            fw: Vec::new(),
            param_grads: true,
            init: Vec::new(),
            bw: Vec::new(),
        };
        if b.quant.is_some() {
            b.partials = Some(b.t(&[2 * MAX_PARTIALS]));
        }
        b
    }

    /// A new zeroed buffer, held by the graph for its lifetime.
    fn t(&self, shape: &[usize]) -> Tensor {
        let t = Tensor::zeros(self.gpu, shape);
        self.buffers.borrow_mut().push(t.clone());
        t
    }

    fn p(&self, name: &str) -> &'a Param {
        self.vit.param(name)
    }

    // ---- quantization hooks (identity for the FP model) ------------------------------------

    /// The weight the forward multiplies by: its fake-quantized copy in Q, itself otherwise.
    fn weight(&mut self, name: &str) -> Tensor {
        let w = self.p(name);
        let Some(q) = self.quant.filter(|q| !self.calibrate && !q.frozen_weights) else {
            return w.value.clone();
        };
        let rows = w.shape[0];
        let cols = w.value.numel() / rows;
        let w_hat = self.t(&w.shape);
        let scales = self.t(&[rows]);
        self.fw.push(quant::weight_quant(self.gpu, rows, cols, q.bits.w, &w.value, &w_hat, &scales));
        w_hat
    }

    /// Whether activations pass through quantizers (Q, not calibrating).
    fn quantizing(&self) -> bool {
        self.quant.is_some() && !self.calibrate
    }

    /// Calibration: folds the range of `region` of `x` into quantizer `site`'s running min/max.
    fn observe(&mut self, site: &str, region: Region, x: &Tensor) {
        let q = self.quant.expect("calibration needs a quantized model");
        let partials = self.partials.as_ref().unwrap();
        self.fw.extend(quant::act_minmax(self.gpu, &q.calib, q.site(site), region, x, partials));
    }

    /// Quantizes `region` of `x` into the same region of `xq` with quantizer `site` (Q only).
    fn act_region(&mut self, site: &str, region: Region, x: &Tensor, xq: &Tensor) {
        let q = self.quant.expect("act_region on an FP model");
        let s = q.site(site);
        let partials = self.partials.as_ref().unwrap();
        for d in quant::act_init(self.gpu, &q.state, s, q.bits.a, lsq_scale(site), region, x, partials) {
            self.init.push((self.fw.len(), d));
        }
        self.fw.push(quant::act_forward(self.gpu, &q.state, s, region, x, xq));
    }

    /// `x` through quantizer `site` (a new buffer in Q; `x` itself in the FP model).
    fn act(&mut self, site: &str, x: &Tensor) -> Tensor {
        if self.calibrate {
            self.observe(site, Region::whole(x.numel()), x);
        }
        if !self.quantizing() {
            return x.clone();
        }
        let xq = self.t(&x.shape);
        self.act_region(site, Region::whole(x.numel()), x, &xq);
        xq
    }

    /// Where to put the gradient of a quantized input whose source gradient goes to `dx`.
    fn grad_target(&mut self, dx: &Tensor) -> Tensor {
        if !self.quantizing() {
            return dx.clone();
        }
        if let Some(t) = self.scratch.get(&dx.shape) {
            return t.clone();
        }
        let t = self.t(&dx.shape);
        self.scratch.insert(dx.shape.clone(), t.clone());
        t
    }

    /// Backward of quantizer `site` on `region`: dx = dxq [in range], and alpha/z gradients.
    fn act_back(&mut self, site: &str, region: Region, x: &Tensor, dxq: &Tensor, dx: &Tensor) {
        let Some(q) = self.quant else { return };
        let partials = self.partials.as_ref().unwrap();
        let [dx_dispatch, step_grads] = quant::act_backward(
            self.gpu,
            &q.state,
            q.site(site),
            region,
            x,
            dxq,
            dx,
            partials,
            q.z_grad.get(),
        );
        self.bw.push(dx_dispatch);
        if self.param_grads {
            self.bw.push(step_grads);
        }
    }

    // ---- layers ------------------------------------------------------------------------------

    /// `y = alpha (x Wᵀ + b) + beta y` for `rows` rows; `w` is [out, in].
    #[allow(clippy::too_many_arguments)]
    fn linear(&mut self, rows: usize, x: &Tensor, w: &Tensor, b: &Param, y: &Tensor, alpha: f32, beta: f32) {
        let (out, inp) = (w.shape[0], w.shape[1]);
        let mm = Matmul::new(rows, out, inp, View::rows(inp), View::rows(inp).t(), View::rows(out));
        self.fw.extend(mm.bias(0).scale(alpha, beta).dispatches(self.gpu, x, w, Some(&b.value), y));
    }

    /// Backward of [`Self::linear`] with input `x` and weight `w_used`; the weight gradient goes
    /// to `w.grad` (straight through the weight quantizer). dx = alpha dy W, dW = alpha dyᵀ x,
    /// db = alpha sum dy.
    #[allow(clippy::too_many_arguments)]
    fn linear_back(
        &mut self,
        rows: usize,
        x: &Tensor,
        w_used: &Tensor,
        w: &Param,
        b: &Param,
        dy: &Tensor,
        dx: Option<&Tensor>,
        alpha: f32,
    ) {
        let (out, inp) = (w.shape[0], w.shape[1]);
        let gpu = self.gpu;
        if let Some(dx) = dx {
            let mm = Matmul::new(rows, inp, out, View::rows(out), View::rows(inp), View::rows(inp));
            self.bw.extend(mm.scale(alpha, 0.0).dispatches(gpu, dy, w_used, None, dx));
        }
        if self.param_grads {
            let mm = Matmul::new(out, inp, rows, View::rows(out).t(), View::rows(inp), View::rows(inp));
            self.bw.extend(mm.scale(alpha, 0.0).dispatches(gpu, dy, x, None, &w.grad));
            self.bw.extend(SumRows { alpha, ..SumRows::matrix(rows, out) }.dispatches(gpu, dy, &b.grad));
        }
    }

    // ---- views -------------------------------------------------------------------------------

    /// View of q, k or v (`which` = 0, 1, 2) of every (image, head) inside the fused qkv matrix.
    fn qkv_view(&self, which: usize) -> View {
        let d3 = 3 * self.d;
        View { off: which * self.d, rs: d3, cs: 1, b1: self.n * d3, b2: self.hd }
    }
    /// q, k or v of all tokens as a region of the fused qkv matrix (for their quantizers).
    fn qkv_region(&self, which: usize) -> Region {
        Region { rows: self.rows, cols: self.d, off: which * self.d, rs: 3 * self.d }
    }
    /// View of an [B, H, N, N] attention matrix per (image, head).
    fn attn_view(&self) -> View {
        let nn = self.n * self.n;
        View { off: 0, rs: self.n, cs: 1, b1: self.heads * nn, b2: nn }
    }
    /// View of an [B, H, N, hd] per-head output per (image, head).
    fn head_view(&self) -> View {
        let nh = self.n * self.hd;
        View { off: 0, rs: self.hd, cs: 1, b1: self.heads * nh, b2: nh }
    }
    /// [B, H, N, hd] -> [B*N, D] (head merge), or the reverse with `split`.
    fn merge_copy(&self, split: bool) -> Copy4 {
        let (h, n, hd, d) = (self.heads, self.n, self.hd, self.d);
        let heads_major = [h * n * hd, n * hd, hd, 1];
        let tokens_major = [n * d, hd, d, 1];
        let (s, t) = if split { (tokens_major, heads_major) } else { (heads_major, tokens_major) };
        Copy4 { dims: [self.b, h, n, hd], s_off: 0, s, t_off: 0, t, alpha: 1.0, beta: 0.0 }
    }
    /// Rows of token `tok` of every image: [B*N, D] -> [B, D] (`gather`) or back.
    fn token_rows(&self, tok: usize, gather: bool) -> Copy4 {
        let (n, d) = (self.n, self.d);
        let (s_off, s, t_off, t) = if gather {
            (tok * d, [0, 0, n * d, 1], 0, [0, 0, d, 1])
        } else {
            (0, [0, 0, d, 1], tok * d, [0, 0, n * d, 1])
        };
        Copy4 { dims: [1, 1, self.b, d], s_off, s, t_off, t, alpha: 1.0, beta: 0.0 }
    }

    // ---- the model -----------------------------------------------------------------------------

    /// One transformer block's forward from `x`; returns its activations, taps and output.
    fn block_forward(&mut self, l: usize, x: Tensor, opts: GraphOptions) -> (BlockActs, Taps, Tensor) {
        let gpu = self.gpu;
        let (b, n, d, rows, heads, hd) = (self.b, self.n, self.d, self.rows, self.heads, self.hd);
        let hidden = self.cfg.mlp_hidden;
        let scale = (hd as f32).powf(-0.5);
        let name = |s: &str| format!("blocks.{l}.{s}");
        let vit = self.vit;
        let pn = |s: &str| vit.param(&name(s));

        let ln1 = self.t(&[rows, d]);
        let st1 = self.t(&[rows, 2]);
        let (n1w, n1b) = (pn("norm1.weight"), pn("norm1.bias"));
        self.fw.push(layernorm::forward(gpu, rows, d, self.cfg.eps, &x, &n1w.value, &n1b.value, &ln1, &st1));
        let ln1_q = self.act(&name("attn.qkv.act"), &ln1);
        let w_qkv = self.weight(&name("attn.qkv.weight"));
        let qkv = self.t(&[rows, 3 * d]);
        self.linear(rows, &ln1_q, &w_qkv, pn("attn.qkv.bias"), &qkv, 1.0, 0.0);
        let qkv_sites = ["attn.matmul1.act_a", "attn.matmul1.act_b", "attn.matmul2.act_b"];
        let qkv_q = if self.quantizing() {
            let t = self.t(&[rows, 3 * d]);
            for (which, site) in qkv_sites.iter().enumerate() {
                self.act_region(&name(site), self.qkv_region(which), &qkv, &t);
            }
            t
        } else {
            if self.calibrate {
                for (which, site) in qkv_sites.iter().enumerate() {
                    self.observe(&name(site), self.qkv_region(which), &qkv);
                }
            }
            qkv.clone()
        };

        let tap = Taps {
            attn_logits: self.t(&[b, heads, n, n]),
            attn_out: self.t(&[b, heads, n, hd]),
            d_attn_logits: opts.attention_grads.then(|| self.t(&[b, heads, n, n])),
            d_attn_out: opts.attention_grads.then(|| self.t(&[b, heads, n, hd])),
        };
        // A = q kᵀ: B(k = j, n = key) = k[key, j].
        let mm = Matmul::new(n, n, hd, self.qkv_view(0), self.qkv_view(1).t(), self.attn_view());
        self.fw.extend(mm.batched(b, heads).dispatches(gpu, &qkv_q, &qkv_q, None, &tap.attn_logits));
        let prob = self.t(&[b, heads, n, n]);
        self.fw.push(softmax::forward(gpu, b * heads * n, n, scale, &tap.attn_logits, &prob));
        let prob_q = self.act(&name("attn.matmul2.act_a"), &prob);
        let mm = Matmul::new(n, hd, n, self.attn_view(), self.qkv_view(2), self.head_view());
        self.fw.extend(mm.batched(b, heads).dispatches(gpu, &prob_q, &qkv_q, None, &tap.attn_out));
        let merged = self.t(&[rows, d]);
        self.fw.push(self.merge_copy(false).dispatch(gpu, &tap.attn_out, &merged));
        let merged_q = self.act(&name("attn.proj.act"), &merged);
        let w_proj = self.weight(&name("attn.proj.weight"));
        let xm = self.t(&[rows, d]);
        self.fw.push(Copy4::flat(rows * d).dispatch(gpu, &x, &xm));
        self.linear(rows, &merged_q, &w_proj, pn("attn.proj.bias"), &xm, 1.0, 1.0);

        let ln2 = self.t(&[rows, d]);
        let st2 = self.t(&[rows, 2]);
        let (n2w, n2b) = (pn("norm2.weight"), pn("norm2.bias"));
        self.fw.push(layernorm::forward(gpu, rows, d, self.cfg.eps, &xm, &n2w.value, &n2b.value, &ln2, &st2));
        let ln2_q = self.act(&name("mlp.fc1.act"), &ln2);
        let w_fc1 = self.weight(&name("mlp.fc1.weight"));
        let h = self.t(&[rows, hidden]);
        self.linear(rows, &ln2_q, &w_fc1, pn("mlp.fc1.bias"), &h, 1.0, 0.0);
        let g = self.t(&[rows, hidden]);
        self.fw.push(gelu::forward(gpu, &h, &g));
        let g_q = self.act(&name("mlp.fc2.act"), &g);
        let w_fc2 = self.weight(&name("mlp.fc2.weight"));
        let out = self.t(&[rows, d]);
        self.fw.push(Copy4::flat(rows * d).dispatch(gpu, &xm, &out));
        self.linear(rows, &g_q, &w_fc2, pn("mlp.fc2.bias"), &out, 1.0, 1.0);

        let acts = BlockActs {
            x,
            ln1,
            ln1_q,
            st1,
            qkv,
            qkv_q,
            prob,
            prob_q,
            merged,
            merged_q,
            xm,
            ln2,
            ln2_q,
            st2,
            h,
            g,
            g_q,
            w_qkv,
            w_proj,
            w_fc1,
            w_fc2,
        };
        (acts, tap, out)
    }

    /// Backward of block `l`: `dxa` holds the gradient of its output on entry and of its input
    /// on exit; the other tensors are scratch shared by all blocks.
    #[allow(clippy::too_many_arguments)]
    fn block_backward(&mut self, l: usize, a: &BlockActs, tap: &Taps, dxa: &Tensor, s: &BackScratch) {
        let gpu = self.gpu;
        let (b, n, d, rows, heads, hd) = (self.b, self.n, self.d, self.rows, self.heads, self.hd);
        let scale = (hd as f32).powf(-0.5);
        let name = |s: &str| format!("blocks.{l}.{s}");
        let vit = self.vit;
        let pn = |s: &str| vit.param(&name(s));

        // MLP.
        let dg_q = self.grad_target(&s.dg);
        self.linear_back(
            rows,
            &a.g_q,
            &a.w_fc2,
            pn("mlp.fc2.weight"),
            pn("mlp.fc2.bias"),
            dxa,
            Some(&dg_q),
            1.0,
        );
        self.act_back(&name("mlp.fc2.act"), Region::whole(a.g.numel()), &a.g, &dg_q, &s.dg);
        self.bw.push(gelu::backward(gpu, &a.h, &s.dg, &s.dh));
        let dln_q = self.grad_target(&s.dln);
        self.linear_back(
            rows,
            &a.ln2_q,
            &a.w_fc1,
            pn("mlp.fc1.weight"),
            pn("mlp.fc1.bias"),
            &s.dh,
            Some(&dln_q),
            1.0,
        );
        self.act_back(&name("mlp.fc1.act"), Region::whole(a.ln2.numel()), &a.ln2, &dln_q, &s.dln);
        let (n2w, n2b) = (pn("norm2.weight"), pn("norm2.bias"));
        self.bw.push(layernorm::backward_input(
            gpu,
            rows,
            d,
            &a.xm,
            &n2w.value,
            &a.st2,
            &s.dln,
            Some(dxa),
            &s.dxm,
        ));
        if self.param_grads {
            self.bw.extend(layernorm::backward_params(
                gpu, rows, d, &a.xm, &a.st2, &s.dln, &n2w.grad, &n2b.grad,
            ));
        }

        // Attention output projection and head merge.
        let dmerged_q = self.grad_target(&s.dmerged);
        self.linear_back(
            rows,
            &a.merged_q,
            &a.w_proj,
            pn("attn.proj.weight"),
            pn("attn.proj.bias"),
            &s.dxm,
            Some(&dmerged_q),
            1.0,
        );
        self.act_back(
            &name("attn.proj.act"),
            Region::whole(a.merged.numel()),
            &a.merged,
            &dmerged_q,
            &s.dmerged,
        );
        self.bw.push(self.merge_copy(true).dispatch(gpu, &s.dmerged, &s.d_o));
        if let Some(extra) = &tap.d_attn_out {
            self.bw.push(Copy4 { beta: 1.0, ..Copy4::flat(s.d_o.numel()) }.dispatch(gpu, extra, &s.d_o));
        }

        // dP = dO vᵀ, through P's quantizer, then the softmax (plus any gradient on A).
        let dprob_q = self.grad_target(&s.dprob);
        let mm = Matmul::new(n, n, hd, self.head_view(), self.qkv_view(2).t(), self.attn_view());
        self.bw.extend(mm.batched(b, heads).dispatches(gpu, &s.d_o, &a.qkv_q, None, &dprob_q));
        self.act_back(
            &name("attn.matmul2.act_a"),
            Region::whole(a.prob.numel()),
            &a.prob,
            &dprob_q,
            &s.dprob,
        );
        self.bw.push(softmax::backward(
            gpu,
            b * heads * n,
            n,
            scale,
            &a.prob,
            &s.dprob,
            tap.d_attn_logits.as_ref(),
            &s.da,
        ));

        // dv = Pᵀ dO, dq = dA k, dk = dAᵀ q, each into its slice of dqkv (through q/k/v quantizers).
        let dqkv_q = self.grad_target(&s.dqkv);
        let mm = Matmul::new(n, hd, n, self.attn_view().t(), self.head_view(), self.qkv_view(2));
        self.bw.extend(mm.batched(b, heads).dispatches(gpu, &a.prob_q, &s.d_o, None, &dqkv_q));
        let mm = Matmul::new(n, hd, n, self.attn_view(), self.qkv_view(1), self.qkv_view(0));
        self.bw.extend(mm.batched(b, heads).dispatches(gpu, &s.da, &a.qkv_q, None, &dqkv_q));
        let mm = Matmul::new(n, hd, n, self.attn_view().t(), self.qkv_view(0), self.qkv_view(1));
        self.bw.extend(mm.batched(b, heads).dispatches(gpu, &s.da, &a.qkv_q, None, &dqkv_q));
        self.act_back(&name("attn.matmul1.act_a"), self.qkv_region(0), &a.qkv, &dqkv_q, &s.dqkv);
        self.act_back(&name("attn.matmul1.act_b"), self.qkv_region(1), &a.qkv, &dqkv_q, &s.dqkv);
        self.act_back(&name("attn.matmul2.act_b"), self.qkv_region(2), &a.qkv, &dqkv_q, &s.dqkv);

        let dln_q = self.grad_target(&s.dln);
        self.linear_back(
            rows,
            &a.ln1_q,
            &a.w_qkv,
            pn("attn.qkv.weight"),
            pn("attn.qkv.bias"),
            &s.dqkv,
            Some(&dln_q),
            1.0,
        );
        self.act_back(&name("attn.qkv.act"), Region::whole(a.ln1.numel()), &a.ln1, &dln_q, &s.dln);
        let (n1w, n1b) = (pn("norm1.weight"), pn("norm1.bias"));
        self.bw.push(layernorm::backward_input(
            gpu,
            rows,
            d,
            &a.x,
            &n1w.value,
            &a.st1,
            &s.dln,
            Some(&s.dxm),
            dxa,
        ));
        if self.param_grads {
            self.bw
                .extend(layernorm::backward_params(gpu, rows, d, &a.x, &a.st1, &s.dln, &n1w.grad, &n1b.grad));
        }
    }

    fn build(mut self, opts: GraphOptions) -> Graph {
        self.param_grads = !opts.image_grads_only;
        let gpu = self.gpu;
        let cfg = self.cfg;
        let (b, n, d, rows) = (self.b, self.n, self.d, self.rows);
        let (np, kk, classes) = (self.geo.patches(), self.geo.kk(), cfg.num_classes);

        // Patch embedding and tokens (the image itself is never quantized).
        let images = self.t(&[b, cfg.in_chans, cfg.img_size, cfg.img_size]);
        let cols = self.t(&[b * np, kk]);
        let pe = self.t(&[b * np, d]);
        self.fw.push(self.geo.patchify(gpu, &images, &cols));
        let w_pe = self.weight("patch_embed.proj.weight");
        let pe_bias = self.p("patch_embed.proj.bias");
        let mm = Matmul::new(b * np, d, kk, View::rows(kk), View::rows(kk).t(), View::rows(d));
        self.fw.extend(mm.bias(0).dispatches(gpu, &cols, &w_pe, Some(&pe_bias.value), &pe));
        let cls = self.p("cls_token");
        let dist = if cfg.distilled { self.p("dist_token") } else { cls };
        let pos = self.p("pos_embed");
        let x0 = self.t(&[rows, d]);
        self.fw.push(self.geo.tokens_forward(gpu, &pe, &cls.value, &dist.value, &pos.value, &x0));

        // Transformer blocks.
        let mut acts = Vec::new();
        let mut taps = Vec::new();
        let mut x = x0;
        for l in 0..cfg.depth {
            let (a, tap, out) = self.block_forward(l, x, opts);
            acts.push(a);
            taps.push(tap);
            x = out;
        }

        // Final norm, class-token pooling, head(s).
        let xf = self.t(&[rows, d]);
        let stf = self.t(&[rows, 2]);
        let (nw, nb) = (self.p("norm.weight"), self.p("norm.bias"));
        self.fw.push(layernorm::forward(gpu, rows, d, cfg.eps, &x, &nw.value, &nb.value, &xf, &stf));
        let head_alpha = if cfg.distilled { 0.5 } else { 1.0 };
        let logits = self.t(&[b, classes]);
        let mut heads = Vec::new();
        for (tok, head) in ["head", "head_dist"].into_iter().enumerate().take(cfg.prefix_tokens()) {
            let pooled = self.t(&[b, d]);
            self.fw.push(self.token_rows(tok, true).dispatch(gpu, &xf, &pooled));
            let pooled_q = self.act(&format!("{head}.act"), &pooled);
            let w = self.weight(&format!("{head}.weight"));
            let beta = if tok == 0 { 0.0 } else { 1.0 };
            self.linear(b, &pooled_q, &w, self.p(&format!("{head}.bias")), &logits, head_alpha, beta);
            heads.push((tok, head, pooled, pooled_q, w));
        }

        let d_logits = self.t(&[b, classes]);
        let d_images = self.t(&[b, cfg.in_chans, cfg.img_size, cfg.img_size]);
        if opts.backward {
            // Heads and pooling.
            let dxf = self.t(&[rows, d]);
            self.bw.push(copy::fill(gpu, &dxf, 0.0));
            let d_pooled = self.t(&[b, d]);
            for (tok, head, pooled, pooled_q, w) in &heads {
                let target = self.grad_target(&d_pooled);
                let (hw, hb) = (self.p(&format!("{head}.weight")), self.p(&format!("{head}.bias")));
                self.linear_back(b, pooled_q, w, hw, hb, &d_logits, Some(&target), head_alpha);
                self.act_back(&format!("{head}.act"), Region::whole(b * d), pooled, &target, &d_pooled);
                self.bw.push(self.token_rows(*tok, false).dispatch(gpu, &d_pooled, &dxf));
            }
            let dxa = self.t(&[rows, d]);
            self.bw.push(layernorm::backward_input(gpu, rows, d, &x, &nw.value, &stf, &dxf, None, &dxa));
            if self.param_grads {
                self.bw.extend(layernorm::backward_params(gpu, rows, d, &x, &stf, &dxf, &nw.grad, &nb.grad));
            }

            let scratch = BackScratch::new(&self);
            for l in (0..cfg.depth).rev() {
                self.block_backward(l, &acts[l], &taps[l], &dxa, &scratch);
            }

            // Tokens and patch embedding.
            let prefix = cfg.prefix_tokens();
            let sum_batch = |n_el: usize, s_off: usize| SumRows {
                n: n_el,
                rows: b,
                s_off,
                rs: n * d,
                o_off: 0,
                alpha: 1.0,
                beta: 0.0,
            };
            if self.param_grads {
                self.bw.extend(sum_batch(d, 0).dispatches(gpu, &dxa, &cls.grad));
                if cfg.distilled {
                    self.bw.extend(sum_batch(d, d).dispatches(gpu, &dxa, &dist.grad));
                }
                self.bw.extend(sum_batch(n * d, 0).dispatches(gpu, &dxa, &pos.grad));
            }
            let dpe = self.t(&[b * np, d]);
            let gather = Copy4 {
                dims: [1, b, np, d],
                s_off: prefix * d,
                s: [0, n * d, d, 1],
                t_off: 0,
                t: [0, np * d, d, 1],
                alpha: 1.0,
                beta: 0.0,
            };
            self.bw.push(gather.dispatch(gpu, &dxa, &dpe));
            let dcols = self.t(&[b * np, kk]);
            // The conv weight [D, C, P, P] is a [D, KK] matrix.
            let mm = Matmul::new(b * np, kk, d, View::rows(d), View::rows(kk), View::rows(kk));
            self.bw.extend(mm.dispatches(gpu, &dpe, &w_pe, None, &dcols));
            if self.param_grads {
                let pw = self.p("patch_embed.proj.weight");
                let mm = Matmul::new(d, kk, b * np, View::rows(d).t(), View::rows(kk), View::rows(kk));
                self.bw.extend(mm.dispatches(gpu, &dpe, &cols, None, &pw.grad));
                self.bw.extend(SumRows::matrix(b * np, d).dispatches(gpu, &dpe, &pe_bias.grad));
            }
            let beta = if opts.accumulate_image_grad { 1.0 } else { 0.0 };
            self.bw.push(self.geo.unpatchify(gpu, &dcols, &d_images, beta));
        }

        // The initialising forward: the forward with each quantizer's LSQ init before its use.
        let mut forward_init = Vec::new();
        if self.quantizing() {
            let mut inits = self.init.drain(..).peekable();
            for (i, d) in self.fw.iter().enumerate() {
                while let Some((_, init)) = inits.next_if(|(pos, _)| *pos == i) {
                    forward_init.push(init);
                }
                forward_init.push(d.clone());
            }
        }

        Graph {
            batch: b,
            images,
            d_images,
            logits,
            d_logits,
            taps,
            forward: self.fw,
            forward_init,
            backward: self.bw,
            _buffers: self.buffers.take(),
        }
    }
}

/// Gradient buffers shared by every block's backward pass.
struct BackScratch {
    dg: Tensor,
    dh: Tensor,
    dln: Tensor,
    dxm: Tensor,
    dmerged: Tensor,
    d_o: Tensor,
    dprob: Tensor,
    da: Tensor,
    dqkv: Tensor,
}

impl BackScratch {
    fn new(bl: &Builder) -> BackScratch {
        let (b, n, d, rows, h, hd) = (bl.b, bl.n, bl.d, bl.rows, bl.heads, bl.hd);
        let hidden = bl.cfg.mlp_hidden;
        BackScratch {
            dg: bl.t(&[rows, hidden]),
            dh: bl.t(&[rows, hidden]),
            dln: bl.t(&[rows, d]),
            dxm: bl.t(&[rows, d]),
            dmerged: bl.t(&[rows, d]),
            d_o: bl.t(&[b, h, n, hd]),
            dprob: bl.t(&[b, h, n, n]),
            da: bl.t(&[b, h, n, n]),
            dqkv: bl.t(&[rows, 3 * d]),
        }
    }
}

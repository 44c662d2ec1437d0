//! The transformer block both architectures share, as forward/backward layer pairs: multi-head
//! self-attention over groups of tokens (a ViT's whole image, or a Swin's windows) with an
//! optional relative-position bias and shift mask, and the MLP. Each `*_forward` returns the
//! activations its `*_backward` needs; the backward is written out op by op in reverse.
//!
//! Quantizers sit where the MaskAQ code puts them (docs/method.md §3): the input of qkv and of
//! proj, q and k before q·kᵀ (on Swin q·scale, as timm's Swin scales q before the product), the
//! probabilities and v before P·v, the inputs of fc1 and fc2.

use super::builder::Builder;
use super::graph::{TapGeometry, Taps};
use crate::gpu::Tensor;
use crate::ops::attention::{Attention, BackwardIo, ForwardOut, QuantSites};
use crate::ops::copy::Copy4;
use crate::ops::embed::Geometry;
use crate::ops::heads::Heads;
use crate::ops::matmul::{Matmul, View};
use crate::ops::quant::{self, Region};
use crate::ops::reduce::SumRows;
use crate::ops::window::{self, TokenMap};
use crate::ops::{gelu, softmax};

/// Swin's window attention: the relative-position bias table, the window grid and its shift.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Windows {
    /// Tokens per side of the image grid.
    pub grid: usize,
    /// Tokens per side of a window.
    pub window: usize,
    pub shift: usize,
}

/// One attention layer's shape.
#[derive(Clone, Debug)]
pub(crate) struct AttnSpec {
    /// Parameter and quantizer prefix, e.g. `blocks.3` or `layers.1.blocks.0`.
    pub prefix: String,
    pub images: usize,
    /// Tokens per attention group (ViT: every token of an image; Swin: a window).
    pub n: usize,
    pub d: usize,
    pub heads: usize,
    /// Window attention (Swin) or global attention over the image (ViT).
    pub windows: Option<Windows>,
    /// What the tap geometry says about the objectives' query (class-token row or mean).
    pub geometry: TapGeometry,
}

impl AttnSpec {
    fn hd(&self) -> usize {
        self.d / self.heads
    }
    fn groups(&self) -> usize {
        self.geometry.groups()
    }
    fn rows(&self) -> usize {
        self.groups() * self.n
    }
    fn scale(&self) -> f32 {
        (self.hd() as f32).powf(-0.5)
    }
    fn name(&self, s: &str) -> String {
        format!("{}.{s}", self.prefix)
    }
    /// View of q, k or v (`which` = 0, 1, 2) of every (group, head) inside the fused qkv matrix.
    fn qkv_view(&self, which: usize) -> View {
        let d3 = 3 * self.d;
        View { off: which * self.d, rs: d3, cs: 1, b1: self.n * d3, b2: self.hd() }
    }
    /// View of a [rows, d] matrix per (group, head).
    fn split_view(&self) -> View {
        View { off: 0, rs: self.d, cs: 1, b1: self.n * self.d, b2: self.hd() }
    }
    /// q, k or v of all tokens as a region of the fused qkv matrix (for their quantizers).
    fn qkv_region(&self, which: usize) -> Region {
        Region { rows: self.rows(), cols: self.d, off: which * self.d, rs: 3 * self.d }
    }
    /// View of an [G, H, N, N] attention matrix per (group, head).
    fn attn_view(&self) -> View {
        let nn = self.n * self.n;
        View { off: 0, rs: self.n, cs: 1, b1: self.heads * nn, b2: nn }
    }
    /// View of an [G, H, N, hd] per-head output per (group, head).
    fn head_view(&self) -> View {
        let nh = self.n * self.hd();
        View { off: 0, rs: self.hd(), cs: 1, b1: self.heads * nh, b2: nh }
    }
    /// The per-head output's shape [G, H, N, hd].
    fn heads_shape(&self) -> Heads {
        Heads { groups: self.groups(), heads: self.heads, tokens: self.n, head_dim: self.hd() }
    }
    /// [G, H, N, hd] -> [G*N, D] (head merge), or the reverse with `split`.
    fn merge_copy(&self, split: bool) -> Copy4 {
        let (h, n, hd, d) = (self.heads, self.n, self.hd(), self.d);
        let heads_major = [h * n * hd, n * hd, hd, 1];
        let tokens_major = [n * d, hd, d, 1];
        let (s, t) = if split { (tokens_major, heads_major) } else { (heads_major, tokens_major) };
        Copy4 { dims: [self.groups(), h, n, hd], s_off: 0, s, t_off: 0, t, alpha: 1.0, beta: 0.0 }
    }
    /// The permutation between image order and window order (Swin).
    fn token_map(&self, to_windows: bool) -> Option<TokenMap> {
        let w = self.windows?;
        let map = TokenMap::windows(self.images, w.grid, w.window, w.shift, self.d);
        Some(if to_windows { map } else { map.inverse() })
    }
    /// The fused attention of this layer, where the graph fuses it: ViT (global attention),
    /// fusion on, and a shape the kernels take (`Attention::fits`).
    fn fused(&self, bl: &Builder) -> Option<Attention> {
        let att = Attention {
            groups: self.groups(),
            heads: self.heads,
            n: self.n,
            hd: self.hd(),
            scale: self.scale(),
        };
        let on = !bl.gpu.unfused && !bl.gpu.unfused_attention;
        (self.windows.is_none() && on && att.fits(bl.gpu)).then_some(att)
    }
    /// The 1-D view of q (`which` = 0) of all tokens, as a Copy4 box over [rows, d].
    fn q_box(&self, alpha: f32, from_qkv: bool) -> Copy4 {
        let (rows, d) = (self.rows(), self.d);
        let (s, t) =
            if from_qkv { ([0, 0, 3 * d, 1], [0, 0, d, 1]) } else { ([0, 0, d, 1], [0, 0, 3 * d, 1]) };
        Copy4 { dims: [1, 1, rows, d], s_off: 0, s, t_off: 0, t, alpha, beta: 0.0 }
    }
}

/// Activations an attention layer keeps for its backward pass (`*_q`: after the activation
/// quantizer, the same tensor as its source in the FP model).
pub(crate) struct AttnActs {
    ln: Tensor,
    /// The quantized input in window order (Swin), or `ln_q` itself.
    xw: Tensor,
    qkv: Tensor,
    qkv_q: Tensor,
    /// Swin: q·scale and its quantized copy.
    qs: Option<(Tensor, Tensor)>,
    prob: Tensor,
    prob_q: Tensor,
    merged: Tensor,
    merged_q: Tensor,
    w_qkv: Tensor,
    w_proj: Tensor,
    /// The forward's length once the taps are made (before proj): where a taps-only forward ends.
    taps_end: usize,
}

/// Gradient buffers shared by every block of one width.
pub(crate) struct BackScratch {
    dg: Tensor,
    dh: Tensor,
    pub dln: Tensor,
    pub dxm: Tensor,
    /// Window attention only: gradients in window order, and of q·scale.
    dwin: Option<Tensor>,
    dqs: Option<Tensor>,
    dmerged: Tensor,
    d_o: Tensor,
    dprob: Tensor,
    da: Tensor,
    dqkv: Tensor,
}

impl BackScratch {
    pub fn new(bl: &Builder, spec: &AttnSpec, hidden: usize) -> BackScratch {
        let (g, n, d, rows, h, hd) = (spec.groups(), spec.n, spec.d, spec.rows(), spec.heads, spec.hd());
        BackScratch {
            dg: bl.t(&[rows, hidden]),
            dh: bl.t(&[rows, hidden]),
            dln: bl.t(&[rows, d]),
            dxm: bl.t(&[rows, d]),
            dwin: spec.windows.map(|_| bl.t(&[rows, d])),
            dqs: spec.windows.map(|_| bl.t(&[rows, d])),
            dmerged: bl.t(&[rows, d]),
            d_o: bl.t(&[g, h, n, hd]),
            dprob: bl.t(&[g, h, n, n]),
            da: bl.t(&[g, h, n, n]),
            dqkv: bl.t(&[rows, 3 * d]),
        }
    }
}

/// The attention branch: `ln` (the block's normalised input, image order; `ln_q` after the qkv
/// input quantizer) through qkv, attention and proj, added to `xm` (which holds the residual).
/// Returns the activations and the taps.
pub(crate) fn attention_forward(
    bl: &mut Builder,
    sp: &AttnSpec,
    [ln, ln_q]: [&Tensor; 2],
    xm: &Tensor,
) -> (AttnActs, Taps) {
    let gpu = bl.gpu;
    let (g, n, d, rows, heads, hd) = (sp.groups(), sp.n, sp.d, sp.rows(), sp.heads, sp.hd());
    let xw = match sp.token_map(true) {
        Some(map) => {
            let t = bl.t(&[rows, d]);
            bl.fw.push(map.dispatch(gpu, ln_q, &t, 1.0, 0.0));
            t
        }
        None => ln_q.clone(),
    };
    let w_qkv = bl.weight(&sp.name("attn.qkv.weight"));
    let qkv = bl.t(&[rows, 3 * d]);
    bl.linear(rows, &xw, &w_qkv, Some(bl.p(&sp.name("attn.qkv.bias"))), &qkv, 1.0, 0.0);
    let qkv_q = if bl.quantizing() { bl.t(&[rows, 3 * d]) } else { qkv.clone() };

    let opts = bl.opts;
    let tap = Taps {
        attn_logits: bl.t(&[g, heads, n, n]),
        attn_out: bl.t(&[g, heads, n, hd]),
        d_attn_logits: opts.attention_grads.then(|| bl.t(&[g, heads, n, n])),
        d_attn_out: opts.attention_grads.then(|| bl.t(&[g, heads, n, hd])),
        geometry: sp.geometry,
    };
    let prob = bl.t(&[g, heads, n, n]);
    // ViT: q's, k's and v's quantizers in one launch where fused (before the softmax).
    let sites = ["attn.matmul1.act_a", "attn.matmul1.act_b", "attn.matmul2.act_b"].map(|x| sp.name(x));
    let qkv_fused = match (sp.windows, sites.each_ref().map(|x| bl.fused_site(x))) {
        (None, [Some(q), Some(k), Some(v)]) => Some((q.state, [q.index, k.index, v.index])),
        _ => None,
    };
    // The softmax's input and scale.
    // Where the attention is fused, its launch replaces those from A = q kᵀ to proj's input.
    let mut attn_start = bl.fw.len();
    let (qs, logits, scale) = match sp.windows {
        // ViT: A = q kᵀ, P = softmax(scale A).
        None => {
            let start = bl.fw.len();
            bl.act_region(&sites[0], sp.qkv_region(0), &qkv, &qkv_q);
            bl.act_region(&sites[1], sp.qkv_region(1), &qkv, &qkv_q);
            if let Some((state, idx)) = qkv_fused {
                bl.fuse_since(start, quant::act_forward_qkv(gpu, state, idx, rows, d, &qkv, &qkv_q));
            }
            attn_start = bl.fw.len();
            let mm = Matmul::new(n, n, hd, sp.qkv_view(0), sp.qkv_view(1).t(), sp.attn_view());
            bl.fw.extend(mm.batched(g, heads).dispatches(gpu, &qkv_q, &qkv_q, None, &tap.attn_logits));
            (None, tap.attn_logits.clone(), sp.scale())
        }
        // Swin: A = (scale q) kᵀ, P = softmax(A + bias (+ mask)).
        Some(w) => {
            let qs = bl.t(&[rows, d]);
            bl.fw.push(sp.q_box(sp.scale(), true).dispatch(gpu, &qkv, &qs));
            let qs_q = bl.act(&sites[0], &qs);
            bl.act_region(&sites[1], sp.qkv_region(1), &qkv, &qkv_q);
            let mm = Matmul::new(n, n, hd, sp.split_view(), sp.qkv_view(1).t(), sp.attn_view());
            bl.fw.extend(mm.batched(g, heads).dispatches(gpu, &qs_q, &qkv_q, None, &tap.attn_logits));
            let biased = bl.t(&[g, heads, n, n]);
            let table = bl.p(&sp.name("attn.relative_position_bias_table"));
            let rb = window::RelBias { groups: g, heads, window: w.window, grid: w.grid, shift: w.shift };
            bl.fw.push(rb.forward(gpu, &tap.attn_logits, &table.value, &biased));
            (Some((qs, qs_q)), biased, 1.0)
        }
    };
    let start = bl.fw.len();
    bl.fw.push(softmax::forward(gpu, g * heads * n, n, scale, &logits, &prob));
    let prob_q = bl.act_fused(start, &sp.name("attn.matmul2.act_a"), &prob, |site, prob_q| {
        softmax::forward_q(gpu, g * heads * n, n, scale, &logits, &prob, site, prob_q)
    });
    let start = bl.fw.len();
    bl.act_region(&sites[2], sp.qkv_region(2), &qkv, &qkv_q);
    if qkv_fused.is_some() {
        bl.fused_earlier(start);
    }
    let mm = Matmul::new(n, hd, n, sp.attn_view(), sp.qkv_view(2), sp.head_view());
    bl.fw.extend(mm.batched(g, heads).dispatches(gpu, &prob_q, &qkv_q, None, &tap.attn_out));
    let merged = bl.t(&[rows, d]);
    let start = bl.fw.len();
    bl.fw.push(sp.merge_copy(false).dispatch(gpu, &tap.attn_out, &merged));
    let merged_q = bl.act_fused(start, &sp.name("attn.proj.act"), &merged, |site, merged_q| {
        sp.heads_shape().merge_q(gpu, &tap.attn_out, &merged, site, merged_q)
    });
    // The FP model, or Q after its quantizers' initialisation (not calibration, which observes
    // every quantizer's input on its own).
    if let Some(att) = sp.fused(bl).filter(|_| bl.quant.is_none() || bl.quantizing()) {
        let quantized = quant_sites(bl, sp).map(|s| (s, [&prob_q, &merged_q]));
        let out = ForwardOut {
            logits: &tap.attn_logits,
            prob: &prob,
            attn_out: &tap.attn_out,
            merged: &merged,
            quantized,
        };
        let fused = att.forward(gpu, Attention::loader(gpu, qkv_q.numel()), &qkv_q, out);
        bl.fuse_all_since(attn_start, fused);
    }
    let taps_end = bl.fw.len();
    let w_proj = bl.weight(&sp.name("attn.proj.weight"));
    let proj_bias = bl.p(&sp.name("attn.proj.bias"));
    match sp.token_map(false) {
        None => bl.linear(rows, &merged_q, &w_proj, Some(proj_bias), xm, 1.0, 1.0),
        Some(map) => {
            let po = bl.t(&[rows, d]);
            bl.linear(rows, &merged_q, &w_proj, Some(proj_bias), &po, 1.0, 0.0);
            bl.fw.push(map.dispatch(gpu, &po, xm, 1.0, 1.0));
        }
    }
    let acts = AttnActs {
        ln: ln.clone(),
        xw,
        qkv,
        qkv_q,
        qs,
        prob,
        prob_q,
        merged,
        merged_q,
        w_qkv,
        w_proj,
        taps_end,
    };
    (acts, tap)
}

/// Backward of [`attention_forward`]: `dxm` is the gradient on its output (image order).
/// Returns the buffer holding the gradient on `ln_q` (after the qkv input quantizer; the
/// block's backward takes it through that quantizer and the LayerNorm).
pub(crate) fn attention_backward(
    bl: &mut Builder,
    sp: &AttnSpec,
    a: &AttnActs,
    tap: &Taps,
    dxm: &Tensor,
    s: &BackScratch,
) -> Tensor {
    let gpu = bl.gpu;
    let rows = sp.rows();
    let model = bl.model;
    let pn = |x: &str| model.param(&sp.name(x));

    // proj (in window order for Swin) and the head merge.
    let dy = match sp.token_map(true) {
        Some(map) => {
            let dwin = s.dwin.as_ref().expect("window scratch");
            bl.bw.push(map.dispatch(gpu, dxm, dwin, 1.0, 0.0));
            dwin
        }
        None => dxm,
    };
    let dmerged_q = bl.grad_target(&s.dmerged);
    bl.linear_back(
        rows,
        &a.merged_q,
        &a.w_proj,
        pn("attn.proj.weight"),
        Some(pn("attn.proj.bias")),
        dy,
        Some(&dmerged_q),
        1.0,
    );
    // The FP model, or Q in image synthesis (masks only): everything down to dqkv in two launches
    // (`Gpu::fused_attention_backward`, on by default).
    let masks_only = bl.quant.is_none() || !bl.param_grads;
    if let Some(att) =
        sp.fused(bl).filter(|att| masks_only && bl.gpu.fused_attention_backward && att.backward_fits(gpu))
    {
        let io = BackwardIo {
            qkv_raw: &a.qkv,
            prob: &a.prob,
            prob_q: &a.prob_q,
            merged: &a.merged,
            dmerged: &dmerged_q,
            extra_o: tap.d_attn_out.as_ref(),
            extra_a: tap.d_attn_logits.as_ref(),
            d_o: &s.d_o,
            da: &s.da,
            dqkv: &s.dqkv,
            sites: quant_sites(bl, sp),
        };
        bl.bw.extend(att.backward(gpu, Attention::loader(gpu, a.qkv_q.numel()), &a.qkv_q, io));
    } else {
        attention_backward_ops(bl, sp, a, tap, &dmerged_q, s);
    }

    // qkv, back to image order, through the input quantizer.
    let dln_q = bl.grad_target(&s.dln);
    let dxw = s.dwin.clone().unwrap_or_else(|| dln_q.clone());
    bl.linear_back(
        rows,
        &a.xw,
        &a.w_qkv,
        pn("attn.qkv.weight"),
        Some(pn("attn.qkv.bias")),
        &s.dqkv,
        Some(&dxw),
        1.0,
    );
    if let Some(map) = sp.token_map(false) {
        bl.bw.push(map.dispatch(gpu, &dxw, &dln_q, 1.0, 0.0));
    }
    dln_q
}

/// The attention's backward op by op, from the gradient `dmerged_q` on proj's input to the
/// gradient on qkv in `s.dqkv`.
fn attention_backward_ops(
    bl: &mut Builder,
    sp: &AttnSpec,
    a: &AttnActs,
    tap: &Taps,
    dmerged_q: &Tensor,
    s: &BackScratch,
) {
    let gpu = bl.gpu;
    // proj's input quantizer, the head split and the tap's gradient: one launch where fused.
    let site = sp.name("attn.proj.act");
    let whole = Region::whole(a.merged.numel());
    match (&tap.d_attn_out, bl.gpu.unfused) {
        (Some(extra), false) => {
            let masked = bl.masked_grad_site(&site);
            if masked.is_none() {
                bl.act_back(&site, whole, &a.merged, dmerged_q, &s.dmerged);
            }
            let dm = if masked.is_some() { dmerged_q } else { &s.dmerged };
            let masked = masked.map(|m| (m, &a.merged));
            bl.bw.push(sp.heads_shape().split_add(gpu, dm, masked, extra, &s.d_o));
        }
        (extra, _) => {
            bl.act_back(&site, whole, &a.merged, dmerged_q, &s.dmerged);
            bl.bw.push(sp.merge_copy(true).dispatch(gpu, &s.dmerged, &s.d_o));
            if let Some(extra) = extra {
                bl.bw.push(Copy4 { beta: 1.0, ..Copy4::flat(s.d_o.numel()) }.dispatch(gpu, extra, &s.d_o));
            }
        }
    }

    probs_backward(bl, sp, a, tap, s);
    qkv_grads(bl, sp, a, s);
}

/// Q's quantizers of the fused attention (P, proj's input, q, k, v), where the graph fuses them.
fn quant_sites<'a>(bl: &Builder<'a>, sp: &AttnSpec) -> Option<QuantSites<'a>> {
    let names = [
        "attn.matmul2.act_a",
        "attn.proj.act",
        "attn.matmul1.act_a",
        "attn.matmul1.act_b",
        "attn.matmul2.act_b",
    ];
    let sites = names.map(|x| bl.fused_site(&sp.name(x)));
    if sites.iter().any(Option::is_none) {
        return None;
    }
    Some(QuantSites::new(sites.map(Option::unwrap)))
}

/// dP = dO vᵀ through P's quantizer, then the softmax (ViT: with the scale; Swin: the bias
/// table's gradient from dS), plus any loss gradient on A: dA in `s.da`.
fn probs_backward(bl: &mut Builder, sp: &AttnSpec, a: &AttnActs, tap: &Taps, s: &BackScratch) {
    let gpu = bl.gpu;
    let (g, n, heads, hd) = (sp.groups(), sp.n, sp.heads, sp.hd());
    let model = bl.model;
    let pn = |x: &str| model.param(&sp.name(x));
    let dprob_q = bl.grad_target(&s.dprob);
    let mm = Matmul::new(n, n, hd, sp.head_view(), sp.qkv_view(2).t(), sp.attn_view());
    bl.bw.extend(mm.batched(g, heads).dispatches(gpu, &s.d_o, &a.qkv_q, None, &dprob_q));
    // P's quantizer, on its own or inside the softmax's backward (image synthesis).
    let site = sp.name("attn.matmul2.act_a");
    let masked = bl.masked_grad_site(&site);
    if masked.is_none() {
        bl.act_back(&site, Region::whole(a.prob.numel()), &a.prob, &dprob_q, &s.dprob);
    }
    let softmax_back = |scale: f32, extra: Option<&Tensor>| match masked {
        Some(q) => softmax::backward_masked(gpu, g * heads * n, n, scale, &a.prob, &dprob_q, q, extra, &s.da),
        None => softmax::backward(gpu, g * heads * n, n, scale, &a.prob, &s.dprob, extra, &s.da),
    };
    match sp.windows {
        None => bl.bw.push(softmax_back(sp.scale(), tap.d_attn_logits.as_ref())),
        Some(w) => {
            // The bias table's gradient is dL/dS; a loss's gradient on A is added after it.
            bl.bw.push(softmax_back(1.0, None));
            if bl.param_grads {
                let table = pn("attn.relative_position_bias_table");
                let rb = window::RelBias { groups: g, heads, window: w.window, grid: w.grid, shift: w.shift };
                bl.bw.extend(rb.table_grad(gpu, &s.da, &table.grad));
            }
            if let Some(extra) = &tap.d_attn_logits {
                bl.bw.push(Copy4 { beta: 1.0, ..Copy4::flat(s.da.numel()) }.dispatch(gpu, extra, &s.da));
            }
        }
    }
}

/// dv = Pᵀ dO, dq = dA k, dk = dAᵀ q, each into its slice of dqkv through the q/k/v quantizers
/// (Swin: dq from d(q·scale)).
fn qkv_grads(bl: &mut Builder, sp: &AttnSpec, a: &AttnActs, s: &BackScratch) {
    let gpu = bl.gpu;
    let (g, n, heads, hd) = (sp.groups(), sp.n, sp.heads, sp.hd());
    let sites = ["attn.matmul1.act_a", "attn.matmul1.act_b", "attn.matmul2.act_b"].map(|x| sp.name(x));
    // ViT in image synthesis: the three quantizers' masks in one launch.
    let masks = match a.qs {
        None => sites.each_ref().map(|x| bl.masked_grad_site(x)),
        Some(_) => [None; 3],
    };
    let dqkv_q = bl.grad_target(&s.dqkv);
    let mm = Matmul::new(n, hd, n, sp.attn_view().t(), sp.head_view(), sp.qkv_view(2));
    bl.bw.extend(mm.batched(g, heads).dispatches(gpu, &a.prob_q, &s.d_o, None, &dqkv_q));
    match &a.qs {
        None => {
            let mm = Matmul::new(n, hd, n, sp.attn_view(), sp.qkv_view(1), sp.qkv_view(0));
            bl.bw.extend(mm.batched(g, heads).dispatches(gpu, &s.da, &a.qkv_q, None, &dqkv_q));
            let mm = Matmul::new(n, hd, n, sp.attn_view().t(), sp.qkv_view(0), sp.qkv_view(1));
            bl.bw.extend(mm.batched(g, heads).dispatches(gpu, &s.da, &a.qkv_q, None, &dqkv_q));
            if masks[0].is_none() {
                bl.act_back(&sites[0], sp.qkv_region(0), &a.qkv, &dqkv_q, &s.dqkv);
            }
        }
        Some((qs, qs_q)) => {
            let dqs = s.dqs.as_ref().expect("window scratch");
            let dqs_q = bl.grad_target(dqs);
            let mm = Matmul::new(n, hd, n, sp.attn_view(), sp.qkv_view(1), sp.split_view());
            bl.bw.extend(mm.batched(g, heads).dispatches(gpu, &s.da, &a.qkv_q, None, &dqs_q));
            bl.act_back(&sites[0], Region::whole(qs.numel()), qs, &dqs_q, dqs);
            bl.bw.push(sp.q_box(sp.scale(), false).dispatch(gpu, dqs, &s.dqkv));
            let mm = Matmul::new(n, hd, n, sp.attn_view().t(), sp.split_view(), sp.qkv_view(1));
            bl.bw.extend(mm.batched(g, heads).dispatches(gpu, &s.da, qs_q, None, &dqkv_q));
        }
    }
    if let [Some(q), Some(k), Some(v)] = masks {
        let idx = [q.index, k.index, v.index];
        bl.bw.push(quant::act_mask_qkv(gpu, q.state, idx, sp.rows(), sp.d, &a.qkv, &dqkv_q, &s.dqkv));
    } else {
        bl.act_back(&sites[1], sp.qkv_region(1), &a.qkv, &dqkv_q, &s.dqkv);
        bl.act_back(&sites[2], sp.qkv_region(2), &a.qkv, &dqkv_q, &s.dqkv);
    }
}

/// Activations of the MLP branch.
pub(crate) struct MlpActs {
    xm: Tensor,
    ln2: Tensor,
    st2: Tensor,
    ln2_q: Tensor,
    h: Tensor,
    g: Tensor,
    g_q: Tensor,
    w_fc1: Tensor,
    w_fc2: Tensor,
}

/// `out = xm + fc2(GELU(fc1(LN2(xm))))`.
pub(crate) fn mlp_forward(bl: &mut Builder, prefix: &str, xm: &Tensor, hidden: usize) -> (MlpActs, Tensor) {
    let gpu = bl.gpu;
    let (rows, d) = (xm.shape[0], xm.shape[1]);
    let name = |s: &str| format!("{prefix}.{s}");
    // out = xm, to which fc2 adds its product.
    let out = bl.t(&[rows, d]);
    let (ln2, st2, ln2_q) = bl.layernorm_copy_act(&name("norm2"), xm, &out, &name("mlp.fc1.act"));
    let w_fc1 = bl.weight(&name("mlp.fc1.weight"));
    let h = bl.t(&[rows, hidden]);
    bl.linear(rows, &ln2_q, &w_fc1, Some(bl.p(&name("mlp.fc1.bias"))), &h, 1.0, 0.0);
    let g = bl.t(&[rows, hidden]);
    let start = bl.fw.len();
    bl.fw.push(gelu::forward(gpu, &h, &g));
    let g_q =
        bl.act_fused(start, &name("mlp.fc2.act"), &g, |site, g_q| gelu::forward_q(gpu, &h, &g, site, g_q));
    let w_fc2 = bl.weight(&name("mlp.fc2.weight"));
    bl.linear(rows, &g_q, &w_fc2, Some(bl.p(&name("mlp.fc2.bias"))), &out, 1.0, 1.0);
    (MlpActs { xm: xm.clone(), ln2, st2, ln2_q, h, g, g_q, w_fc1, w_fc2 }, out)
}

/// Backward of [`mlp_forward`]: `dout` is the gradient on its output; the gradient on `xm`
/// (both paths) ends in `s.dxm`.
pub(crate) fn mlp_backward(bl: &mut Builder, prefix: &str, a: &MlpActs, dout: &Tensor, s: &BackScratch) {
    let gpu = bl.gpu;
    let rows = a.xm.shape[0];
    let model = bl.model;
    let name = |s: &str| format!("{prefix}.{s}");
    let pn = |s: &str| model.param(&name(s));
    let dg_q = bl.grad_target(&s.dg);
    bl.linear_back(
        rows,
        &a.g_q,
        &a.w_fc2,
        pn("mlp.fc2.weight"),
        Some(pn("mlp.fc2.bias")),
        dout,
        Some(&dg_q),
        1.0,
    );
    let g_site = name("mlp.fc2.act");
    if let Some(site) = bl.masked_grad_site(&g_site) {
        bl.bw.push(gelu::backward_masked(gpu, &a.h, &a.g, &dg_q, site, &s.dh));
    } else {
        bl.act_back(&g_site, Region::whole(a.g.numel()), &a.g, &dg_q, &s.dg);
        bl.bw.push(gelu::backward(gpu, &a.h, &s.dg, &s.dh));
    }
    let dln_q = bl.grad_target(&s.dln);
    bl.linear_back(
        rows,
        &a.ln2_q,
        &a.w_fc1,
        pn("mlp.fc1.weight"),
        Some(pn("mlp.fc1.bias")),
        &s.dh,
        Some(&dln_q),
        1.0,
    );
    let acts = [&a.xm, &a.st2, &a.ln2];
    bl.act_layernorm_back(&name("norm2"), &name("mlp.fc1.act"), acts, &dln_q, &s.dln, Some(dout), &s.dxm);
}

/// One pre-norm transformer block's activations.
pub(crate) struct BlockActs {
    x: Tensor,
    st1: Tensor,
    attn: AttnActs,
    mlp: MlpActs,
}

impl BlockActs {
    /// The forward's length once this block's taps are made.
    pub fn taps_end(&self) -> usize {
        self.attn.taps_end
    }
}

/// `xm = x + attn(LN1(x))`, `out = xm + mlp(LN2(xm))`.
pub(crate) fn block_forward(
    bl: &mut Builder,
    sp: &AttnSpec,
    x: Tensor,
    hidden: usize,
) -> (BlockActs, Taps, Tensor) {
    // xm = x, to which the attention branch adds its output.
    let xm = bl.t(&x.shape);
    let (ln1, st1, ln1_q) = bl.layernorm_copy_act(&sp.name("norm1"), &x, &xm, &sp.name("attn.qkv.act"));
    let (attn, tap) = attention_forward(bl, sp, [&ln1, &ln1_q], &xm);
    let (mlp, out) = mlp_forward(bl, &sp.prefix, &xm, hidden);
    (BlockActs { x, st1, attn, mlp }, tap, out)
}

/// Backward of [`block_forward`]: `dxa` holds the gradient of its output on entry and of its
/// input on exit.
pub(crate) fn block_backward(
    bl: &mut Builder,
    sp: &AttnSpec,
    a: &BlockActs,
    tap: &Taps,
    dxa: &Tensor,
    s: &BackScratch,
) {
    mlp_backward(bl, &sp.prefix, &a.mlp, dxa, s);
    let dln_q = attention_backward(bl, sp, &a.attn, tap, &s.dxm, s);
    let acts = [&a.x, &a.st1, &a.attn.ln];
    bl.act_layernorm_back(
        &sp.name("norm1"),
        &sp.name("attn.qkv.act"),
        acts,
        &dln_q,
        &s.dln,
        Some(&s.dxm),
        dxa,
    );
}

/// Backward of [`block_forward`] from its taps' gradients alone (`GraphOptions::taps_only`):
/// nothing flows into its output, so its MLP is skipped and its attention starts from a zero
/// gradient (`zero`, [rows, d], never written). `dxa` holds the gradient of its input on exit.
pub(crate) fn block_backward_taps_only(
    bl: &mut Builder,
    sp: &AttnSpec,
    a: &BlockActs,
    tap: &Taps,
    dxa: &Tensor,
    zero: &Tensor,
    s: &BackScratch,
) {
    let dln_q = attention_backward(bl, sp, &a.attn, tap, zero, s);
    let acts = [&a.x, &a.st1, &a.attn.ln];
    bl.act_layernorm_back(&sp.name("norm1"), &sp.name("attn.qkv.act"), acts, &dln_q, &s.dln, None, dxa);
}

/// The patch grid of `cfg` for `batch` images with `prefix` tokens before the patches and `d`
/// channels.
pub(crate) fn patch_geometry(
    cfg: &crate::model::ModelConfig,
    batch: usize,
    prefix: usize,
    d: usize,
) -> Geometry {
    Geometry {
        batch,
        chans: cfg.in_chans,
        h: cfg.img_size,
        w: cfg.img_size,
        patch: cfg.patch_size,
        prefix,
        d,
    }
}

/// The patch convolution (stride = kernel) as im2col and a matmul with the [D, C·P·P] weight:
/// returns (images [B, C, H, W], cols, the weight used, patch rows [B·patches, D]). The image
/// itself is never quantized.
pub(crate) fn patch_embed_forward(bl: &mut Builder, geo: &Geometry) -> (Tensor, Tensor, Tensor, Tensor) {
    let gpu = bl.gpu;
    let (rows, kk, d) = (geo.batch * geo.patches(), geo.kk(), geo.d);
    let images = bl.image_buffer(&[geo.batch, geo.chans, geo.h, geo.w]);
    let cols = bl.t(&[rows, kk]);
    let pe = bl.t(&[rows, d]);
    bl.fw.push(geo.patchify(gpu, &images, &cols));
    let w_pe = bl.weight("patch_embed.proj.weight");
    let bias = bl.p("patch_embed.proj.bias");
    let mm = Matmul::new(rows, d, kk, View::rows(kk), View::rows(kk).t(), View::rows(d));
    bl.fw.extend(mm.bias(0).dispatches(gpu, &cols, &w_pe, Some(&bias.value), &pe));
    (images, cols, w_pe, pe)
}

/// Backward of the patch convolution (im2col `cols` times the [D, C·P·P] weight `w_pe`) from
/// `dpe` [B·patches, D]: the weight and bias gradients and the image gradient.
pub(crate) fn patch_embed_backward(
    bl: &mut Builder,
    geo: &Geometry,
    cols: &Tensor,
    w_pe: &Tensor,
    dpe: &Tensor,
    d_images: &Tensor,
) {
    let gpu = bl.gpu;
    let (rows, kk, d) = (geo.batch * geo.patches(), geo.kk(), w_pe.shape[0]);
    let dcols = bl.t(&[rows, kk]);
    let mm = Matmul::new(rows, kk, d, View::rows(d), View::rows(kk), View::rows(kk));
    bl.bw.extend(mm.dispatches(gpu, dpe, w_pe, None, &dcols));
    if bl.param_grads {
        let (pw, pb) = (bl.p("patch_embed.proj.weight"), bl.p("patch_embed.proj.bias"));
        let mm = Matmul::new(d, kk, rows, View::rows(d).t(), View::rows(kk), View::rows(kk));
        bl.bw.extend(mm.dispatches(gpu, dpe, cols, None, &pw.grad));
        bl.bw.extend(SumRows::matrix(rows, d).dispatches(gpu, dpe, &pb.grad));
    }
    let beta = if bl.opts.accumulate_image_grad { 1.0 } else { 0.0 };
    bl.bw.push(geo.unpatchify(gpu, &dcols, d_images, beta));
}

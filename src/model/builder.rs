//! What every architecture's graph is built with: buffers, the quantization hooks (weight
//! quantizer, activation quantizers with their lazy LSQ initialisation, calibration), and the
//! linear and LayerNorm layer pairs. The topologies (`vit.rs`, `swin.rs`) and the shared blocks
//! (`layers.rs`) push launches through a [`Builder`]; `finish` turns them into a [`Graph`].
//!
//! Every quantizer a topology emits must be the next one of its registered list
//! ([`crate::quant::sites`]): the build panics on a mismatch, so the list that calibration,
//! initialisation, export and reports read is the one the graph runs.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use super::graph::{Graph, GraphOptions, Taps};
use super::params::{Model, Param};
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::ops::copy::Copy4;
use crate::ops::layernorm;
use crate::ops::matmul::{Matmul, View};
use crate::ops::quant::{self, MAX_PARTIALS, Region, Site};
use crate::ops::reduce::SumRows;
use crate::quant::Quant;
use crate::quant::sites::SiteList;

pub(crate) struct Builder<'a> {
    pub gpu: &'a Gpu,
    pub model: &'a Model,
    pub quant: Option<&'a Quant>,
    /// Images per batch.
    pub b: usize,
    pub opts: GraphOptions,
    buffers: RefCell<Vec<Tensor>>,
    calibrate: bool,
    /// The registered quantizer sites the forward must emit, in order (Q only).
    sites: Option<SiteList>,
    next_act: Cell<usize>,
    next_weight: Cell<usize>,
    /// Partial sums of the quantizers' reductions (Q only).
    partials: Option<Tensor>,
    /// Scratch gradients of quantized inputs, by shape (each is consumed right after it is made).
    scratch: HashMap<Vec<usize>, Tensor>,
    /// The forward, one launch per op (what `forward_init` runs, with the quantizers'
    /// initialisations between a producer and its quantizer).
    pub fw: Vec<Dispatch>,
    /// Fused launches that replace `fw[start..end]` in the forward after initialisation:
    /// (start, end, launch), in order; no launch where an earlier fused one did their work.
    fused: Vec<(usize, usize, Option<Dispatch>)>,
    /// Q's weight quantizers: the head of the forward, which a caller whose weights stay fixed
    /// (synthesis) runs once instead of every pass (`Graph::forward_fixed_weights`).
    wq: Vec<Dispatch>,
    /// Whether the backward computes parameter gradients (see `GraphOptions::image_grads_only`).
    pub param_grads: bool,
    /// Quantizer initialisations and the forward position they go before.
    init: Vec<(usize, Dispatch)>,
    pub bw: Vec<Dispatch>,
    /// Another graph's images and image gradient, where this one shares them (`Graph::build_on`).
    inputs: Option<(Tensor, Tensor)>,
    /// Where the forward after initialisation ends (`GraphOptions::taps_only`), if before the end.
    forward_end: Option<usize>,
    /// The quantizers' outputs, with `GraphOptions::probe_sites`.
    probes: Vec<super::graph::SiteProbe>,
}

/// What a topology hands back for [`Builder::finish`].
pub(crate) struct Outputs {
    pub images: Tensor,
    pub d_images: Tensor,
    pub logits: Tensor,
    pub d_logits: Tensor,
    pub taps: Vec<Taps>,
}

impl<'a> Builder<'a> {
    pub fn new(gpu: &'a Gpu, model: &'a Model, batch: usize, opts: GraphOptions) -> Self {
        let mut b = Builder {
            gpu,
            model,
            quant: model.quant.as_ref(),
            b: batch,
            opts,
            buffers: Default::default(),
            calibrate: opts.calibrate,
            sites: model.quant.as_ref().map(|q| q.list.clone()),
            next_act: Cell::new(0),
            next_weight: Cell::new(0),
            partials: None,
            scratch: HashMap::new(),
            fw: Vec::new(),
            fused: Vec::new(),
            wq: Vec::new(),
            param_grads: !opts.image_grads_only,
            init: Vec::new(),
            bw: Vec::new(),
            forward_end: None,
            inputs: None,
            probes: Vec::new(),
        };
        if b.quant.is_some() {
            b.partials = Some(b.t(&[2 * MAX_PARTIALS]));
        }
        b
    }

    /// A new zeroed buffer, held by the graph for its lifetime.
    pub fn t(&self, shape: &[usize]) -> Tensor {
        let t = Tensor::zeros(self.gpu, shape);
        self.buffers.borrow_mut().push(t.clone());
        t
    }

    pub fn p(&self, name: &str) -> &'a Param {
        self.model.param(name)
    }

    // ---- quantization hooks (identity for the FP model) ------------------------------------

    /// Checks that `site` is the next registered activation quantizer; returns its index.
    fn claim_act(&self, site: &str) -> usize {
        let list = self.sites.as_ref().expect("activation quantizer on an FP model");
        let i = self.next_act.get();
        assert!(
            list.act.get(i).is_some_and(|s| s.name == site),
            "the graph emits quantizer `{site}` where the site list has `{}`",
            list.act.get(i).map_or("nothing", |s| &s.name)
        );
        self.next_act.set(i + 1);
        i
    }

    /// Reads its images from, and adds its image gradient to, another graph's buffers.
    pub fn share_inputs(&mut self, images: &Tensor, d_images: &Tensor) {
        assert!(
            self.opts.accumulate_image_grad || !self.opts.backward,
            "a shared image gradient accumulates"
        );
        self.inputs = Some((images.clone(), d_images.clone()));
    }

    /// The input images: the shared ones, or a new buffer.
    pub fn image_buffer(&self, shape: &[usize]) -> Tensor {
        self.shared_input(0, shape).unwrap_or_else(|| self.t(shape))
    }

    /// The image gradient: the shared one, or a new buffer.
    pub fn image_grad_buffer(&self, shape: &[usize]) -> Tensor {
        self.shared_input(1, shape).unwrap_or_else(|| self.t(shape))
    }

    fn shared_input(&self, which: usize, shape: &[usize]) -> Option<Tensor> {
        let (images, d_images) = self.inputs.as_ref()?;
        let t = if which == 0 { images } else { d_images };
        assert_eq!(t.shape, shape, "shared image buffers of another shape");
        Some(t.clone())
    }

    /// The weight the forward multiplies by: its fake-quantized copy in Q, itself otherwise.
    pub fn weight(&mut self, name: &str) -> Tensor {
        let w = self.p(name);
        if let Some(list) = &self.sites {
            let i = self.next_weight.get();
            assert!(
                list.weights.get(i).is_some_and(|s| s == name),
                "the graph quantizes weight `{name}` where the site list has `{}`",
                list.weights.get(i).map_or("nothing", |s| s.as_str())
            );
            self.next_weight.set(i + 1);
        }
        let Some(q) = self.quant.filter(|q| !self.calibrate && !q.frozen_weights) else {
            return w.value.clone();
        };
        let rows = w.shape[0];
        let cols = w.value.numel() / rows;
        let w_hat = self.t(&w.shape);
        let scales = self.t(&[rows]);
        self.wq.push(quant::weight_quant(self.gpu, rows, cols, q.bits.w, &w.value, &w_hat, &scales));
        w_hat
    }

    /// Whether activations pass through quantizers (Q, not calibrating).
    pub fn quantizing(&self) -> bool {
        self.quant.is_some() && !self.calibrate
    }

    /// Quantizer `site` on `region` of `x`, written to the same region of `xq` (Q), or observed
    /// for min-max calibration; nothing for the FP model.
    pub fn act_region(&mut self, site: &str, region: Region, x: &Tensor, xq: &Tensor) {
        let Some(q) = self.quant else { return };
        let s = self.claim_act(site);
        let lsq_g = self.sites.as_ref().unwrap().act[s].lsq_g;
        let partials = self.partials.as_ref().unwrap();
        if self.calibrate {
            self.fw.extend(quant::act_minmax(self.gpu, &q.calib, s, region, x, partials));
            return;
        }
        for d in quant::act_init(self.gpu, &q.state, s, q.bits.a, lsq_g, region, x, partials) {
            self.init.push((self.fw.len(), d));
        }
        self.fw.push(quant::act_forward(self.gpu, &q.state, s, region, x, xq));
        if self.opts.probe_sites {
            self.probes.push(super::graph::SiteProbe { site: s, region, xq: xq.clone() });
        }
    }

    /// `x` through quantizer `site` (a new buffer in Q; `x` itself in the FP model).
    pub fn act(&mut self, site: &str, x: &Tensor) -> Tensor {
        if !self.quantizing() {
            self.act_region(site, Region::whole(x.numel()), x, x);
            return x.clone();
        }
        let xq = self.t(&x.shape);
        self.act_region(site, Region::whole(x.numel()), x, &xq);
        xq
    }

    /// Quantizer `site` for a kernel that applies it inside another op, when the graph fuses
    /// (Q, not calibrating, fusion not switched off).
    pub fn fused_site(&self, site: &str) -> Option<Site<'a>> {
        let q = self.quant.filter(|_| self.quantizing() && !self.gpu.unfused)?;
        Some(Site { state: &q.state, index: q.site(site) })
    }

    /// [`Self::fused_site`] for a backward kernel that applies the quantizer's straight-through
    /// mask itself: only where no quantizer-step gradients are made (image synthesis).
    pub fn masked_grad_site(&self, site: &str) -> Option<Site<'a>> {
        self.fused_site(site).filter(|_| !self.param_grads)
    }

    /// In the forward after initialisation, `fused` runs instead of the launches pushed since
    /// `start` (which compute the same bits one op at a time).
    pub fn fuse_since(&mut self, start: usize, fused: Dispatch) {
        self.replace_since(start, Some(fused));
    }

    /// In the forward after initialisation, the launches pushed since `start` do not run: an
    /// earlier fused launch did their work.
    pub fn fused_earlier(&mut self, start: usize) {
        self.replace_since(start, None);
    }

    /// In the forward after initialisation, `fused` runs instead of everything pushed since
    /// `start`, fused launches recorded inside that range included (an outer fusion, such as
    /// the fused attention over its softmax's and head merge's fused quantizers).
    pub fn fuse_all_since(&mut self, start: usize, fused: Dispatch) {
        while self.fused.last().is_some_and(|(s, _, _)| *s >= start) {
            self.fused.pop();
        }
        self.replace_since(start, Some(fused));
    }

    /// The forward after initialisation ends with the first `end` launches of the forward (the
    /// initialising forward still runs every one): `GraphOptions::taps_only`.
    pub fn end_forward_at(&mut self, end: usize) {
        assert!(end <= self.fw.len());
        self.forward_end = Some(end);
    }

    fn replace_since(&mut self, start: usize, fused: Option<Dispatch>) {
        assert!(self.fused.last().is_none_or(|(_, end, _)| *end <= start) && start < self.fw.len());
        self.fused.push((start, self.fw.len(), fused));
    }

    /// `y` (made by the launches pushed since `start`) through quantizer `site`, as [`Self::act`];
    /// where the graph fuses, `fused(site, y_q)` (a launch that makes `y` and `y_q` together)
    /// replaces those launches and the quantizer's in the forward after initialisation.
    pub fn act_fused(
        &mut self,
        start: usize,
        site: &str,
        y: &Tensor,
        fused: impl FnOnce(Site<'a>, &Tensor) -> Dispatch,
    ) -> Tensor {
        let y_q = self.act(site, y);
        if let Some(s) = self.fused_site(site) {
            self.fuse_since(start, fused(s, &y_q));
        }
        y_q
    }

    /// Where to put the gradient of a quantized input whose source gradient goes to `dx`.
    pub fn grad_target(&mut self, dx: &Tensor) -> Tensor {
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
    pub fn act_back(&mut self, site: &str, region: Region, x: &Tensor, dxq: &Tensor, dx: &Tensor) {
        let Some(q) = self.quant else { return };
        if let Some(s) = self.masked_grad_site(site) {
            self.bw.push(quant::act_mask(self.gpu, s, region, x, dxq, dx));
            return;
        }
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

    // ---- layer pairs ---------------------------------------------------------------------------

    /// `y = alpha (x Wᵀ + b) + beta y` for `rows` rows; `w` is [out, in].
    #[allow(clippy::too_many_arguments)]
    pub fn linear(
        &mut self,
        rows: usize,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Param>,
        y: &Tensor,
        alpha: f32,
        beta: f32,
    ) {
        let (out, inp) = (w.shape[0], w.shape[1]);
        let mm = Matmul::new(rows, out, inp, View::rows(inp), View::rows(inp).t(), View::rows(out));
        let mm = if b.is_some() { mm.bias(0) } else { mm };
        self.fw.extend(mm.scale(alpha, beta).dispatches(self.gpu, x, w, b.map(|b| &b.value), y));
    }

    /// Backward of [`Self::linear`] with input `x` and weight `w_used`; the weight gradient goes
    /// to `w.grad` (straight through the weight quantizer). dx = alpha dy W, dW = alpha dyᵀ x,
    /// db = alpha sum dy.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_back(
        &mut self,
        rows: usize,
        x: &Tensor,
        w_used: &Tensor,
        w: &Param,
        b: Option<&Param>,
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
            if let Some(b) = b {
                self.bw.extend(SumRows { alpha, ..SumRows::matrix(rows, out) }.dispatches(gpu, dy, &b.grad));
            }
        }
    }

    /// LayerNorm `prefix.{weight,bias}` over rows of `x` [rows, d]; returns (y, stats).
    pub fn layernorm(&mut self, prefix: &str, x: &Tensor) -> (Tensor, Tensor) {
        let (rows, d) = (x.shape[0], x.shape[1]);
        let (w, b) = (self.p(&format!("{prefix}.weight")), self.p(&format!("{prefix}.bias")));
        let y = self.t(&[rows, d]);
        let st = self.t(&[rows, 2]);
        let eps = self.model.cfg.eps;
        self.fw.push(layernorm::forward(self.gpu, rows, d, eps, x, &w.value, &b.value, &y, &st));
        (y, st)
    }

    /// A pre-norm block's LayerNorm: `y = LN(x)`, `x` copied to `copy` (the residual stream's
    /// next buffer) and `y` through quantizer `site` (the next Linear's input). Returns (y,
    /// stats, y_q). One launch in the fused forward.
    pub fn layernorm_copy_act(
        &mut self,
        prefix: &str,
        x: &Tensor,
        copy: &Tensor,
        site: &str,
    ) -> (Tensor, Tensor, Tensor) {
        let start = self.fw.len();
        let (y, st) = self.layernorm(prefix, x);
        self.fw.push(Copy4::flat(x.numel()).dispatch(self.gpu, x, copy));
        let (rows, d) = (x.shape[0], x.shape[1]);
        let (w, b) = (self.p(&format!("{prefix}.weight")), self.p(&format!("{prefix}.bias")));
        let (gpu, eps, buffers) = (self.gpu, self.model.cfg.eps, [x, &w.value, &b.value, &y, &st, copy]);
        // Without a quantizer to fuse (the FP model, calibration) the LayerNorm and the copy are
        // one launch, and the quantizer's launches (calibration's min-max) follow it.
        if !gpu.unfused && !self.quantizing() {
            self.fuse_since(start, layernorm::forward_copy(gpu, rows, d, eps, buffers, None));
        }
        let y_q = self.act_fused(start, site, &y, |s, y_q| {
            layernorm::forward_copy(gpu, rows, d, eps, buffers, Some((s, y_q)))
        });
        (y, st, y_q)
    }

    /// Backward of [`Self::layernorm_copy_act`]'s quantizer and LayerNorm: `dy_q` is the
    /// gradient on `y_q`; `dy` takes the gradient on `y` where the mask is not fused into the
    /// LayerNorm's launch. `dx = dLN(dy) (+ residual)`.
    #[allow(clippy::too_many_arguments)]
    pub fn act_layernorm_back(
        &mut self,
        prefix: &str,
        site: &str,
        [x, st, y]: [&Tensor; 3],
        dy_q: &Tensor,
        dy: &Tensor,
        residual: Option<&Tensor>,
        dx: &Tensor,
    ) {
        let Some(s) = self.masked_grad_site(site) else {
            self.act_back(site, Region::whole(y.numel()), y, dy_q, dy);
            self.layernorm_back(prefix, x, st, dy, residual, dx);
            return;
        };
        let (rows, d) = (x.shape[0], x.shape[1]);
        let w = self.p(&format!("{prefix}.weight"));
        let buffers = [x, &w.value, st, y, dy_q];
        self.bw.push(layernorm::backward_input_masked(self.gpu, rows, d, buffers, s, residual, dx));
    }

    /// Backward of [`Self::layernorm`]: `dx = dLN(dy) (+ residual)`, and the parameter gradients.
    pub fn layernorm_back(
        &mut self,
        prefix: &str,
        x: &Tensor,
        st: &Tensor,
        dy: &Tensor,
        residual: Option<&Tensor>,
        dx: &Tensor,
    ) {
        let (rows, d) = (x.shape[0], x.shape[1]);
        let (w, b) = (self.p(&format!("{prefix}.weight")), self.p(&format!("{prefix}.bias")));
        self.bw.push(layernorm::backward_input(self.gpu, rows, d, x, &w.value, st, dy, residual, dx));
        if self.param_grads {
            self.bw.extend(layernorm::backward_params(self.gpu, rows, d, x, st, dy, &w.grad, &b.grad));
        }
    }

    /// The graph: the forward, the initialising forward (each quantizer's LSQ init before its
    /// first use) and the backward.
    pub fn finish(mut self, out: Outputs) -> Graph {
        if let Some(list) = &self.sites {
            assert_eq!(
                self.next_act.get(),
                list.act.len(),
                "the graph emitted fewer quantizers than registered"
            );
            assert_eq!(
                self.next_weight.get(),
                list.weights.len(),
                "the graph quantized fewer weights than registered"
            );
        }
        let mut forward_init = self.wq.clone();
        if self.quantizing() {
            let mut inits = self.init.drain(..).peekable();
            for (i, d) in self.fw.iter().enumerate() {
                while let Some((_, init)) = inits.next_if(|(pos, _)| *pos == i) {
                    forward_init.push(init);
                }
                forward_init.push(d.clone());
            }
        }
        let end = self.forward_end.unwrap_or(self.fw.len());
        assert!(
            self.fused.iter().all(|(s, e, _)| *e <= end || *s >= end),
            "a fusion spans the forward's end"
        );
        let fused: Vec<_> = self.fused.iter().filter(|(_, e, _)| *e <= end).cloned().collect();
        Graph {
            batch: self.b,
            images: out.images,
            d_images: out.d_images,
            logits: out.logits,
            d_logits: out.d_logits,
            taps: out.taps,
            site_probes: self.probes,
            weight_launches: self.wq.len(),
            forward: [self.wq, fuse(&self.fw[..end], &fused)].concat(),
            forward_init,
            backward: self.bw,
            _buffers: self.buffers.take(),
        }
    }
}

/// `fw` with each fused launch in place of the launches it replaces.
fn fuse(fw: &[Dispatch], fused: &[(usize, usize, Option<Dispatch>)]) -> Vec<Dispatch> {
    let mut out = Vec::with_capacity(fw.len());
    let mut next = 0;
    for (start, end, d) in fused {
        out.extend_from_slice(&fw[next..*start]);
        out.extend(d.clone());
        next = *end;
    }
    out.extend_from_slice(&fw[next..]);
    out
}

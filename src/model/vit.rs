//! The timm ViT/DeiT forward and backward passes as a fixed list of kernel launches.
//!
//! [`Vit`] holds the parameters (and their gradients) on the GPU. [`Graph`] is the model unrolled
//! for one batch size: every activation buffer is allocated and every launch is bound once, so
//! `forward()`/`backward()` only record and submit. The backward pass is written out by hand, op
//! by op in reverse (llm.c style); the attention taps that MaskAQ's losses read (raw logits
//! A = q kᵀ and per-head outputs O = softmax(scale A) v) are kept per block, and gradients on
//! them from a loss can be injected before `backward()`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;

use super::checkpoint::{self, Weights};
use super::config::VitConfig;
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::ops::copy::{self, Copy4};
use crate::ops::embed::Geometry;
use crate::ops::matmul::{Matmul, View};
use crate::ops::reduce::SumRows;
use crate::ops::{gelu, layernorm, softmax};

/// A parameter with its gradient, named as in timm's `state_dict`.
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub value: Tensor,
    pub grad: Tensor,
}

/// A ViT/DeiT on the GPU.
pub struct Vit {
    pub cfg: VitConfig,
    pub params: Vec<Param>,
    index: HashMap<String, usize>,
}

impl Vit {
    /// Uploads checked weights.
    pub fn new(gpu: &Gpu, cfg: VitConfig, weights: &Weights) -> Vit {
        let mut params = Vec::new();
        let mut index = HashMap::new();
        for (name, shape, data) in &weights.tensors {
            index.insert(name.clone(), params.len());
            params.push(Param {
                name: name.clone(),
                shape: shape.clone(),
                value: Tensor::from_slice(gpu, data, shape),
                grad: Tensor::zeros(gpu, shape),
            });
        }
        Vit { cfg, params, index }
    }

    /// Loads `--model` (folder or .safetensors with `--arch`).
    pub fn load(gpu: &Gpu, model: &Path, arch: Option<&str>) -> Result<Vit> {
        let (cfg, file) = checkpoint::resolve(model, arch)?;
        let w = checkpoint::load_weights(&cfg, &file)?;
        Ok(Vit::new(gpu, cfg, &w))
    }

    pub fn param(&self, name: &str) -> &Param {
        &self.params[*self
            .index
            .get(name)
            .unwrap_or_else(|| panic!("no parameter {name}"))]
    }

    pub fn num_params(&self) -> usize {
        self.params.iter().map(|p| p.value.numel()).sum()
    }
}

/// What a [`Graph`] is built for.
#[derive(Clone, Copy, Debug, Default)]
pub struct GraphOptions {
    /// Build the backward pass too.
    pub backward: bool,
    /// Allocate per-block gradient inputs on A and O (`Taps::d_attn_*`), added during backward.
    pub attention_grads: bool,
    /// Add the image gradient to `d_images` instead of overwriting it (two models, one image).
    pub accumulate_image_grad: bool,
}

/// Per-block attention tensors.
pub struct Taps {
    /// A = q kᵀ before the scale and softmax, [B, H, N, N].
    pub attn_logits: Tensor,
    /// O = softmax(scale A) v per head, [B, H, N, hd].
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
    backward: Vec<Dispatch>,
}

impl Graph {
    /// Records and submits the forward pass (does not wait).
    pub fn forward(&self, gpu: &Gpu) {
        gpu.run_all(&[&self.forward]);
    }

    /// Records and submits the backward pass; parameter gradients are overwritten.
    pub fn backward(&self, gpu: &Gpu) {
        assert!(
            !self.backward.is_empty(),
            "graph was built without backward"
        );
        gpu.run_all(&[&self.backward]);
    }

    pub fn forward_dispatches(&self) -> &[Dispatch] {
        &self.forward
    }
    pub fn backward_dispatches(&self) -> &[Dispatch] {
        &self.backward
    }

    /// Builds the graph for `batch` images.
    pub fn build(gpu: &Gpu, vit: &Vit, batch: usize, opts: GraphOptions) -> Graph {
        Builder::new(gpu, vit, batch).build(opts)
    }
}

/// `y = x Wᵀ + b` for `rows` rows; `W` is [out, in]; `beta` = 1 adds to y (residual).
fn linear(
    gpu: &Gpu,
    rows: usize,
    x: &Tensor,
    w: &Param,
    b: &Param,
    y: &Tensor,
    alpha: f32,
    beta: f32,
) -> Dispatch {
    let (out, inp) = (w.shape[0], w.shape[1]);
    Matmul::new(
        rows,
        out,
        inp,
        View::rows(inp),
        View::rows(inp).t(),
        View::rows(out),
    )
    .bias(0)
    .scale(alpha, beta)
    .dispatch(gpu, x, &w.value, Some(&b.value), y)
}

/// Backward of [`linear`]: dx = alpha dy W (if `dx` given), dW = alpha dyᵀ x, db = alpha sum dy.
#[allow(clippy::too_many_arguments)]
fn linear_backward(
    gpu: &Gpu,
    ds: &mut Vec<Dispatch>,
    rows: usize,
    x: &Tensor,
    w: &Param,
    b: &Param,
    dy: &Tensor,
    dx: Option<&Tensor>,
    alpha: f32,
) {
    let (out, inp) = (w.shape[0], w.shape[1]);
    if let Some(dx) = dx {
        ds.push(
            Matmul::new(
                rows,
                inp,
                out,
                View::rows(out),
                View::rows(inp),
                View::rows(inp),
            )
            .scale(alpha, 0.0)
            .dispatch(gpu, dy, &w.value, None, dx),
        );
    }
    ds.push(
        Matmul::new(
            out,
            inp,
            rows,
            View::rows(out).t(),
            View::rows(inp),
            View::rows(inp),
        )
        .scale(alpha, 0.0)
        .dispatch(gpu, dy, x, None, &w.grad),
    );
    ds.push(
        SumRows {
            alpha,
            ..SumRows::matrix(rows, out)
        }
        .dispatch(gpu, dy, &b.grad),
    );
}

/// Activations one block keeps for its backward pass.
struct BlockActs {
    x: Tensor,
    ln1: Tensor,
    st1: Tensor,
    qkv: Tensor,
    prob: Tensor,
    merged: Tensor,
    xm: Tensor,
    ln2: Tensor,
    st2: Tensor,
    h: Tensor,
    g: Tensor,
}

struct Builder<'a> {
    gpu: &'a Gpu,
    vit: &'a Vit,
    cfg: &'a VitConfig,
    b: usize,
    n: usize,
    d: usize,
    heads: usize,
    hd: usize,
    rows: usize,
    geo: Geometry,
}

impl<'a> Builder<'a> {
    fn new(gpu: &'a Gpu, vit: &'a Vit, batch: usize) -> Self {
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
        Builder {
            gpu,
            vit,
            cfg,
            b: batch,
            n: cfg.tokens(),
            d: cfg.embed_dim,
            heads: cfg.num_heads,
            hd: cfg.head_dim(),
            rows: batch * cfg.tokens(),
            geo,
        }
    }

    fn t(&self, shape: &[usize]) -> Tensor {
        Tensor::zeros(self.gpu, shape)
    }

    fn p(&self, name: &str) -> &'a Param {
        self.vit.param(name)
    }

    /// View of q, k or v (`which` = 0, 1, 2) of every (image, head) inside the fused qkv matrix.
    fn qkv_view(&self, which: usize) -> View {
        let d3 = 3 * self.d;
        View {
            off: which * self.d,
            rs: d3,
            cs: 1,
            b1: self.n * d3,
            b2: self.hd,
        }
    }
    /// View of an [B, H, N, N] attention matrix per (image, head).
    fn attn_view(&self) -> View {
        let nn = self.n * self.n;
        View {
            off: 0,
            rs: self.n,
            cs: 1,
            b1: self.heads * nn,
            b2: nn,
        }
    }
    /// View of an [B, H, N, hd] per-head output per (image, head).
    fn head_view(&self) -> View {
        let nh = self.n * self.hd;
        View {
            off: 0,
            rs: self.hd,
            cs: 1,
            b1: self.heads * nh,
            b2: nh,
        }
    }
    /// [B, H, N, hd] -> [B*N, D] (head merge), or the reverse with `split`.
    fn merge_copy(&self, split: bool) -> Copy4 {
        let (h, n, hd, d) = (self.heads, self.n, self.hd, self.d);
        let heads_major = [h * n * hd, n * hd, hd, 1];
        let tokens_major = [n * d, hd, d, 1];
        let (s, t) = if split {
            (tokens_major, heads_major)
        } else {
            (heads_major, tokens_major)
        };
        Copy4 {
            dims: [self.b, h, n, hd],
            s_off: 0,
            s,
            t_off: 0,
            t,
            alpha: 1.0,
            beta: 0.0,
        }
    }
    /// Rows of token `tok` of every image: [B*N, D] <-> [B, D].
    fn token_rows(&self, tok: usize, gather: bool) -> Copy4 {
        let (n, d) = (self.n, self.d);
        let (s_off, s, t_off, t) = if gather {
            (tok * d, [0, 0, n * d, 1], 0, [0, 0, d, 1])
        } else {
            (0, [0, 0, d, 1], tok * d, [0, 0, n * d, 1])
        };
        Copy4 {
            dims: [1, 1, self.b, d],
            s_off,
            s,
            t_off,
            t,
            alpha: 1.0,
            beta: 0.0,
        }
    }

    fn build(self, opts: GraphOptions) -> Graph {
        let gpu = self.gpu;
        let cfg = self.cfg;
        let (b, n, d, rows, heads, hd) = (self.b, self.n, self.d, self.rows, self.heads, self.hd);
        let (np, kk, classes, hidden) = (
            self.geo.patches(),
            self.geo.kk(),
            cfg.num_classes,
            cfg.mlp_hidden,
        );
        let scale = (hd as f32).powf(-0.5);
        let mut fw: Vec<Dispatch> = Vec::new();

        // Patch embedding and tokens.
        let images = self.t(&[b, cfg.in_chans, cfg.img_size, cfg.img_size]);
        let cols = self.t(&[b * np, kk]);
        let pe = self.t(&[b * np, d]);
        fw.push(self.geo.patchify(gpu, &images, &cols));
        let pw = self.p("patch_embed.proj.weight");
        fw.push(
            Matmul::new(
                b * np,
                d,
                kk,
                View::rows(kk),
                View::rows(kk).t(),
                View::rows(d),
            )
            .bias(0)
            .dispatch(
                gpu,
                &cols,
                &pw.value,
                Some(&self.p("patch_embed.proj.bias").value),
                &pe,
            ),
        );
        let cls = self.p("cls_token");
        let dist = if cfg.distilled {
            self.p("dist_token")
        } else {
            cls
        };
        let x0 = self.t(&[rows, d]);
        fw.push(self.geo.tokens_forward(
            gpu,
            &pe,
            &cls.value,
            &dist.value,
            &self.p("pos_embed").value,
            &x0,
        ));

        // Transformer blocks.
        let mut acts: Vec<BlockActs> = Vec::new();
        let mut taps: Vec<Taps> = Vec::new();
        let mut x = x0;
        for l in 0..cfg.depth {
            let pn = |s: &str| self.p(&format!("blocks.{l}.{s}"));
            let a = BlockActs {
                x: x.clone(),
                ln1: self.t(&[rows, d]),
                st1: self.t(&[rows, 2]),
                qkv: self.t(&[rows, 3 * d]),
                prob: self.t(&[b, heads, n, n]),
                merged: self.t(&[rows, d]),
                xm: self.t(&[rows, d]),
                ln2: self.t(&[rows, d]),
                st2: self.t(&[rows, 2]),
                h: self.t(&[rows, hidden]),
                g: self.t(&[rows, hidden]),
            };
            let tap = Taps {
                attn_logits: self.t(&[b, heads, n, n]),
                attn_out: self.t(&[b, heads, n, hd]),
                d_attn_logits: opts.attention_grads.then(|| self.t(&[b, heads, n, n])),
                d_attn_out: opts.attention_grads.then(|| self.t(&[b, heads, n, hd])),
            };
            let (n1w, n1b) = (pn("norm1.weight"), pn("norm1.bias"));
            fw.push(layernorm::forward(
                gpu, rows, d, cfg.eps, &a.x, &n1w.value, &n1b.value, &a.ln1, &a.st1,
            ));
            fw.push(linear(
                gpu,
                rows,
                &a.ln1,
                pn("attn.qkv.weight"),
                pn("attn.qkv.bias"),
                &a.qkv,
                1.0,
                0.0,
            ));
            // A = q kᵀ: B(k = j, n = key) = k[key, j].
            fw.push(
                Matmul::new(
                    n,
                    n,
                    hd,
                    self.qkv_view(0),
                    self.qkv_view(1).t(),
                    self.attn_view(),
                )
                .batched(b, heads)
                .dispatch(gpu, &a.qkv, &a.qkv, None, &tap.attn_logits),
            );
            fw.push(softmax::forward(
                gpu,
                b * heads * n,
                n,
                scale,
                &tap.attn_logits,
                &a.prob,
            ));
            fw.push(
                Matmul::new(
                    n,
                    hd,
                    n,
                    self.attn_view(),
                    self.qkv_view(2),
                    self.head_view(),
                )
                .batched(b, heads)
                .dispatch(gpu, &a.prob, &a.qkv, None, &tap.attn_out),
            );
            fw.push(
                self.merge_copy(false)
                    .dispatch(gpu, &tap.attn_out, &a.merged),
            );
            fw.push(Copy4::flat(rows * d).dispatch(gpu, &a.x, &a.xm));
            fw.push(linear(
                gpu,
                rows,
                &a.merged,
                pn("attn.proj.weight"),
                pn("attn.proj.bias"),
                &a.xm,
                1.0,
                1.0,
            ));
            let (n2w, n2b) = (pn("norm2.weight"), pn("norm2.bias"));
            fw.push(layernorm::forward(
                gpu, rows, d, cfg.eps, &a.xm, &n2w.value, &n2b.value, &a.ln2, &a.st2,
            ));
            fw.push(linear(
                gpu,
                rows,
                &a.ln2,
                pn("mlp.fc1.weight"),
                pn("mlp.fc1.bias"),
                &a.h,
                1.0,
                0.0,
            ));
            fw.push(gelu::forward(gpu, &a.h, &a.g));
            let next = self.t(&[rows, d]);
            fw.push(Copy4::flat(rows * d).dispatch(gpu, &a.xm, &next));
            fw.push(linear(
                gpu,
                rows,
                &a.g,
                pn("mlp.fc2.weight"),
                pn("mlp.fc2.bias"),
                &next,
                1.0,
                1.0,
            ));
            acts.push(a);
            taps.push(tap);
            x = next;
        }

        // Final norm, class-token pooling, head(s).
        let xf = self.t(&[rows, d]);
        let stf = self.t(&[rows, 2]);
        let (nw, nb) = (self.p("norm.weight"), self.p("norm.bias"));
        fw.push(layernorm::forward(
            gpu, rows, d, cfg.eps, &x, &nw.value, &nb.value, &xf, &stf,
        ));
        let head_alpha = if cfg.distilled { 0.5 } else { 1.0 };
        let pooled = self.t(&[b, d]);
        let logits = self.t(&[b, classes]);
        fw.push(self.token_rows(0, true).dispatch(gpu, &xf, &pooled));
        fw.push(linear(
            gpu,
            b,
            &pooled,
            self.p("head.weight"),
            self.p("head.bias"),
            &logits,
            head_alpha,
            0.0,
        ));
        let pooled_dist = self.t(&[b, d]);
        if cfg.distilled {
            fw.push(self.token_rows(1, true).dispatch(gpu, &xf, &pooled_dist));
            fw.push(linear(
                gpu,
                b,
                &pooled_dist,
                self.p("head_dist.weight"),
                self.p("head_dist.bias"),
                &logits,
                0.5,
                1.0,
            ));
        }

        let d_logits = self.t(&[b, classes]);
        let d_images = self.t(&[b, cfg.in_chans, cfg.img_size, cfg.img_size]);
        let mut bw: Vec<Dispatch> = Vec::new();
        if opts.backward {
            // Heads and pooling.
            let dxf = self.t(&[rows, d]);
            bw.push(copy::fill(gpu, &dxf, 0.0));
            let d_pooled = self.t(&[b, d]);
            linear_backward(
                gpu,
                &mut bw,
                b,
                &pooled,
                self.p("head.weight"),
                self.p("head.bias"),
                &d_logits,
                Some(&d_pooled),
                head_alpha,
            );
            bw.push(self.token_rows(0, false).dispatch(gpu, &d_pooled, &dxf));
            if cfg.distilled {
                let (hw, hb) = (self.p("head_dist.weight"), self.p("head_dist.bias"));
                linear_backward(
                    gpu,
                    &mut bw,
                    b,
                    &pooled_dist,
                    hw,
                    hb,
                    &d_logits,
                    Some(&d_pooled),
                    0.5,
                );
                bw.push(self.token_rows(1, false).dispatch(gpu, &d_pooled, &dxf));
            }
            // dxa: gradient of the current block's output; dxm: of its mid-point.
            let dxa = self.t(&[rows, d]);
            let dxm = self.t(&[rows, d]);
            bw.push(layernorm::backward_input(
                gpu, rows, d, &x, &nw.value, &stf, &dxf, None, &dxa,
            ));
            bw.push(layernorm::backward_params(
                gpu, rows, d, &x, &stf, &dxf, &nw.grad, &nb.grad,
            ));

            let dg = self.t(&[rows, hidden]);
            let dh = self.t(&[rows, hidden]);
            let dln = self.t(&[rows, d]);
            let dmerged = self.t(&[rows, d]);
            let d_o = self.t(&[b, heads, n, hd]);
            let dprob = self.t(&[b, heads, n, n]);
            let da = self.t(&[b, heads, n, n]);
            let dqkv = self.t(&[rows, 3 * d]);
            for l in (0..cfg.depth).rev() {
                let pn = |s: &str| self.p(&format!("blocks.{l}.{s}"));
                let (a, tap) = (&acts[l], &taps[l]);
                // MLP.
                linear_backward(
                    gpu,
                    &mut bw,
                    rows,
                    &a.g,
                    pn("mlp.fc2.weight"),
                    pn("mlp.fc2.bias"),
                    &dxa,
                    Some(&dg),
                    1.0,
                );
                bw.push(gelu::backward(gpu, &a.h, &dg, &dh));
                linear_backward(
                    gpu,
                    &mut bw,
                    rows,
                    &a.ln2,
                    pn("mlp.fc1.weight"),
                    pn("mlp.fc1.bias"),
                    &dh,
                    Some(&dln),
                    1.0,
                );
                let (n2w, n2b) = (pn("norm2.weight"), pn("norm2.bias"));
                bw.push(layernorm::backward_input(
                    gpu,
                    rows,
                    d,
                    &a.xm,
                    &n2w.value,
                    &a.st2,
                    &dln,
                    Some(&dxa),
                    &dxm,
                ));
                bw.push(layernorm::backward_params(
                    gpu, rows, d, &a.xm, &a.st2, &dln, &n2w.grad, &n2b.grad,
                ));
                // Attention.
                linear_backward(
                    gpu,
                    &mut bw,
                    rows,
                    &a.merged,
                    pn("attn.proj.weight"),
                    pn("attn.proj.bias"),
                    &dxm,
                    Some(&dmerged),
                    1.0,
                );
                bw.push(self.merge_copy(true).dispatch(gpu, &dmerged, &d_o));
                if let Some(extra) = &tap.d_attn_out {
                    bw.push(
                        Copy4 {
                            beta: 1.0,
                            ..Copy4::flat(d_o.numel())
                        }
                        .dispatch(gpu, extra, &d_o),
                    );
                }
                // dP = dO vᵀ.
                bw.push(
                    Matmul::new(
                        n,
                        n,
                        hd,
                        self.head_view(),
                        self.qkv_view(2).t(),
                        self.attn_view(),
                    )
                    .batched(b, heads)
                    .dispatch(gpu, &d_o, &a.qkv, None, &dprob),
                );
                bw.push(softmax::backward(
                    gpu,
                    b * heads * n,
                    n,
                    scale,
                    &a.prob,
                    &dprob,
                    tap.d_attn_logits.as_ref(),
                    &da,
                ));
                // dv = Pᵀ dO, dq = dA k, dk = dAᵀ q, each written into its slice of dqkv.
                bw.push(
                    Matmul::new(
                        n,
                        hd,
                        n,
                        self.attn_view().t(),
                        self.head_view(),
                        self.qkv_view(2),
                    )
                    .batched(b, heads)
                    .dispatch(gpu, &a.prob, &d_o, None, &dqkv),
                );
                bw.push(
                    Matmul::new(
                        n,
                        hd,
                        n,
                        self.attn_view(),
                        self.qkv_view(1),
                        self.qkv_view(0),
                    )
                    .batched(b, heads)
                    .dispatch(gpu, &da, &a.qkv, None, &dqkv),
                );
                bw.push(
                    Matmul::new(
                        n,
                        hd,
                        n,
                        self.attn_view().t(),
                        self.qkv_view(0),
                        self.qkv_view(1),
                    )
                    .batched(b, heads)
                    .dispatch(gpu, &da, &a.qkv, None, &dqkv),
                );
                linear_backward(
                    gpu,
                    &mut bw,
                    rows,
                    &a.ln1,
                    pn("attn.qkv.weight"),
                    pn("attn.qkv.bias"),
                    &dqkv,
                    Some(&dln),
                    1.0,
                );
                let (n1w, n1b) = (pn("norm1.weight"), pn("norm1.bias"));
                bw.push(layernorm::backward_input(
                    gpu,
                    rows,
                    d,
                    &a.x,
                    &n1w.value,
                    &a.st1,
                    &dln,
                    Some(&dxm),
                    &dxa,
                ));
                bw.push(layernorm::backward_params(
                    gpu, rows, d, &a.x, &a.st1, &dln, &n1w.grad, &n1b.grad,
                ));
            }

            // Tokens and patch embedding.
            let prefix = cfg.prefix_tokens();
            bw.push(
                SumRows {
                    n: d,
                    rows: b,
                    s_off: 0,
                    rs: n * d,
                    o_off: 0,
                    alpha: 1.0,
                    beta: 0.0,
                }
                .dispatch(gpu, &dxa, &cls.grad),
            );
            if cfg.distilled {
                bw.push(
                    SumRows {
                        n: d,
                        rows: b,
                        s_off: d,
                        rs: n * d,
                        o_off: 0,
                        alpha: 1.0,
                        beta: 0.0,
                    }
                    .dispatch(gpu, &dxa, &dist.grad),
                );
            }
            let pos = self.p("pos_embed");
            bw.push(
                SumRows {
                    n: n * d,
                    rows: b,
                    s_off: 0,
                    rs: n * d,
                    o_off: 0,
                    alpha: 1.0,
                    beta: 0.0,
                }
                .dispatch(gpu, &dxa, &pos.grad),
            );
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
            bw.push(gather.dispatch(gpu, &dxa, &dpe));
            let dcols = self.t(&[b * np, kk]);
            // The conv weight is [D, C, P, P] = a [D, KK] matrix.
            bw.push(
                Matmul::new(b * np, kk, d, View::rows(d), View::rows(kk), View::rows(kk))
                    .dispatch(gpu, &dpe, &pw.value, None, &dcols),
            );
            bw.push(
                Matmul::new(
                    d,
                    kk,
                    b * np,
                    View::rows(d).t(),
                    View::rows(kk),
                    View::rows(kk),
                )
                .dispatch(gpu, &dpe, &cols, None, &pw.grad),
            );
            bw.push(SumRows::matrix(b * np, d).dispatch(
                gpu,
                &dpe,
                &self.p("patch_embed.proj.bias").grad,
            ));
            let beta = if opts.accumulate_image_grad { 1.0 } else { 0.0 };
            bw.push(self.geo.unpatchify(gpu, &dcols, &d_images, beta));
        }

        Graph {
            batch: b,
            images,
            d_images,
            logits,
            d_logits,
            taps,
            forward: fw,
            backward: bw,
        }
    }
}

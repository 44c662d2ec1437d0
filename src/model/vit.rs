//! The timm ViT/DeiT topology: patch embedding, class (and distillation) token plus position
//! embedding, `depth` global-attention blocks, final LayerNorm, class-token head(s).

use super::builder::{Builder, Outputs};
use super::config::{ModelConfig, VitDims};
use super::graph::{Graph, TapGeometry};
use super::layers::{self, AttnSpec, BackScratch};
use crate::gpu::Tensor;
use crate::ops::copy::Copy4;
use crate::ops::quant::Region;
use crate::ops::reduce::SumRows;
use crate::quant::sites::{ActSite, SiteList};

/// The attention of block `l`.
fn spec(cfg: &ModelConfig, v: &VitDims, images: usize, l: usize) -> AttnSpec {
    let n = v.tokens(cfg.grid());
    AttnSpec {
        prefix: format!("blocks.{l}"),
        images,
        n,
        d: v.embed_dim,
        heads: v.num_heads,
        windows: None,
        geometry: TapGeometry {
            images,
            windows: 1,
            heads: v.num_heads,
            tokens: n,
            head_dim: v.head_dim(),
            prefix: v.prefix_tokens(),
            side: cfg.grid(),
            stage: 0,
            shift: 0,
            last_stage: true,
        },
    }
}

/// The heads: `head` on the class token, and `head_dist` on the distillation token.
fn heads(v: &VitDims) -> &'static [&'static str] {
    &["head", "head_dist"][..v.prefix_tokens()]
}

/// Q's quantizer sites in the order the graph emits them (docs/method.md §3): per block the
/// inputs of qkv, q and k, P and v, proj, fc1, fc2; then the heads. The top-level heads get
/// `lsq_g_scale` 0.01, every nested quantizer 1.0, as the authors' code passes it.
pub(crate) fn quant_sites(cfg: &ModelConfig, v: &VitDims) -> SiteList {
    let (n, d, h) = (v.tokens(cfg.grid()), v.embed_dim, v.mlp_hidden);
    let mut s = SiteList::default();
    s.weights.push("patch_embed.proj.weight".into());
    for l in 0..v.depth {
        let p = |x: &str| format!("blocks.{l}.{x}");
        s.act.push(ActSite::new(p("attn.qkv.act"), n * d));
        s.weights.push(p("attn.qkv.weight"));
        s.act.push(ActSite::new(p("attn.matmul1.act_a"), n * d));
        s.act.push(ActSite::new(p("attn.matmul1.act_b"), n * d));
        s.act.push(ActSite::new(p("attn.matmul2.act_a"), v.num_heads * n * n));
        s.act.push(ActSite::new(p("attn.matmul2.act_b"), n * d));
        s.act.push(ActSite::new(p("attn.proj.act"), n * d));
        s.weights.push(p("attn.proj.weight"));
        s.act.push(ActSite::new(p("mlp.fc1.act"), n * d));
        s.weights.push(p("mlp.fc1.weight"));
        s.act.push(ActSite::new(p("mlp.fc2.act"), n * h));
        s.weights.push(p("mlp.fc2.weight"));
    }
    for head in heads(v) {
        s.act.push(ActSite { lsq_g: 0.01, ..ActSite::new(format!("{head}.act"), d) });
        s.weights.push(format!("{head}.weight"));
    }
    s
}

pub(crate) fn build(mut bl: Builder) -> Graph {
    let model = bl.model;
    let cfg = &model.cfg;
    let v = cfg.vit().expect("a ViT config");
    let gpu = bl.gpu;
    let (b, n, d) = (bl.b, v.tokens(cfg.grid()), v.embed_dim);
    let rows = b * n;
    let geo = layers::patch_geometry(cfg, b, v.prefix_tokens(), d);
    let classes = cfg.num_classes;

    // Patch embedding and tokens (the image itself is never quantized).
    let (images, cols, w_pe, pe) = layers::patch_embed_forward(&mut bl, &geo);
    let (cls, pos) = (bl.p("cls_token"), bl.p("pos_embed"));
    let dist = if v.distilled { bl.p("dist_token") } else { cls };
    let x0 = bl.t(&[rows, d]);
    bl.fw.push(geo.tokens_forward(gpu, &pe, &cls.value, &dist.value, &pos.value, &x0));

    // Transformer blocks.
    let specs: Vec<AttnSpec> = (0..v.depth).map(|l| spec(cfg, v, b, l)).collect();
    let mut acts = Vec::new();
    let mut taps = Vec::new();
    let mut x = x0;
    for sp in &specs {
        let (a, tap, out) = layers::block_forward(&mut bl, sp, x, v.mlp_hidden);
        acts.push(a);
        taps.push(tap);
        x = out;
    }

    let taps_only = bl.opts.taps_only;
    if taps_only {
        assert!(bl.opts.backward && bl.opts.attention_grads && bl.opts.image_grads_only, "taps_only options");
        bl.end_forward_at(acts.last().expect("a block").taps_end());
    }

    // Final norm, class-token pooling, head(s).
    let (xf, stf) = bl.layernorm("norm", &x);
    let head_alpha = if v.distilled { 0.5 } else { 1.0 };
    let logits = bl.t(&[b, classes]);
    let mut head_acts = Vec::new();
    for (tok, head) in heads(v).iter().enumerate() {
        let pooled = bl.t(&[b, d]);
        bl.fw.push(token_rows(b, n, d, tok, true).dispatch(gpu, &xf, &pooled));
        let pooled_q = bl.act(&format!("{head}.act"), &pooled);
        let w = bl.weight(&format!("{head}.weight"));
        let beta = if tok == 0 { 0.0 } else { 1.0 };
        bl.linear(b, &pooled_q, &w, Some(bl.p(&format!("{head}.bias"))), &logits, head_alpha, beta);
        head_acts.push((tok, head, pooled, pooled_q, w));
    }

    let d_logits = bl.t(&[b, classes]);
    let d_images = bl.image_grad_buffer(&[b, cfg.in_chans, cfg.img_size, cfg.img_size]);
    if bl.opts.backward {
        let scratch = BackScratch::new(&bl, &specs[0], v.mlp_hidden);
        let dxa = bl.t(&[rows, d]);
        let mut below = v.depth;
        if taps_only {
            // Only the taps' gradients flow: the last block starts from its attention.
            below -= 1;
            let zero = bl.t(&[rows, d]);
            let (sp, a, tap) = (&specs[below], &acts[below], &taps[below]);
            layers::block_backward_taps_only(&mut bl, sp, a, tap, &dxa, &zero, &scratch);
        } else {
            // Heads and pooling. Only the class (and distillation) token rows of dxf are ever
            // written: the others stay the zeros the buffer is made with (no fill needed).
            let dxf = bl.t(&[rows, d]);
            let d_pooled = bl.t(&[b, d]);
            for (tok, head, pooled, pooled_q, w) in &head_acts {
                let target = bl.grad_target(&d_pooled);
                let (hw, hb) = (bl.p(&format!("{head}.weight")), bl.p(&format!("{head}.bias")));
                bl.linear_back(b, pooled_q, w, hw, Some(hb), &d_logits, Some(&target), head_alpha);
                bl.act_back(&format!("{head}.act"), Region::whole(b * d), pooled, &target, &d_pooled);
                bl.bw.push(token_rows(b, n, d, *tok, false).dispatch(gpu, &d_pooled, &dxf));
            }
            bl.layernorm_back("norm", &x, &stf, &dxf, None, &dxa);
        }
        for l in (0..below).rev() {
            layers::block_backward(&mut bl, &specs[l], &acts[l], &taps[l], &dxa, &scratch);
        }

        let dpe = tokens_backward(&mut bl, v, &dxa);
        layers::patch_embed_backward(&mut bl, &geo, &cols, &w_pe, &dpe, &d_images);
    }
    bl.finish(Outputs { images, d_images, logits, d_logits, taps })
}

/// Backward of the class/distillation tokens and the position embedding from `dxa` [B·N, D]:
/// their gradients, and the patch rows' gradient [B·patches, D] it returns.
fn tokens_backward(bl: &mut Builder, v: &VitDims, dxa: &Tensor) -> Tensor {
    let gpu = bl.gpu;
    let cfg = &bl.model.cfg;
    let (b, n, d, np) = (bl.b, v.tokens(cfg.grid()), v.embed_dim, cfg.grid() * cfg.grid());
    let (cls, pos) = (bl.p("cls_token"), bl.p("pos_embed"));
    let sum_batch = |n_el: usize, s_off: usize| SumRows {
        n: n_el,
        rows: b,
        s_off,
        rs: n * d,
        o_off: 0,
        alpha: 1.0,
        beta: 0.0,
    };
    if bl.param_grads {
        bl.bw.extend(sum_batch(d, 0).dispatches(gpu, dxa, &cls.grad));
        if v.distilled {
            bl.bw.extend(sum_batch(d, d).dispatches(gpu, dxa, &bl.p("dist_token").grad));
        }
        bl.bw.extend(sum_batch(n * d, 0).dispatches(gpu, dxa, &pos.grad));
    }
    let dpe = bl.t(&[b * np, d]);
    let gather = Copy4 {
        dims: [1, b, np, d],
        s_off: v.prefix_tokens() * d,
        s: [0, n * d, d, 1],
        t_off: 0,
        t: [0, np * d, d, 1],
        alpha: 1.0,
        beta: 0.0,
    };
    bl.bw.push(gather.dispatch(gpu, dxa, &dpe));
    dpe
}

/// Rows of token `tok` of every image: [B*N, D] -> [B, D] (`gather`) or back.
fn token_rows(b: usize, n: usize, d: usize, tok: usize, gather: bool) -> Copy4 {
    let (s_off, s, t_off, t) = if gather {
        (tok * d, [0, 0, n * d, 1], 0, [0, 0, d, 1])
    } else {
        (0, [0, 0, d, 1], tok * d, [0, 0, n * d, 1])
    };
    Copy4 { dims: [1, 1, b, d], s_off, s, t_off, t, alpha: 1.0, beta: 0.0 }
}

//! The timm Swin Transformer topology (timm ≥ 0.9 layout; docs/swin.md): patch embedding with
//! its LayerNorm, stages of window-attention blocks (odd blocks cyclically shifted, with the
//! -100 mask between regions), a PatchMerging (2×2 concatenation, LayerNorm, bias-free
//! reduction) before every stage but the first, final LayerNorm, mean pooling, `head.fc`.
//! Tokens stay in image (NHWC) order between blocks; each attention gathers its windows and
//! scatters them back (`ops::window::TokenMap`).

use super::builder::{Builder, Outputs};
use super::config::{ModelConfig, SwinDims, SwinStage};
use super::graph::{Graph, TapGeometry};
use super::layers::{self, AttnSpec, BackScratch, Windows};
use crate::gpu::Tensor;
use crate::ops::copy::Copy4;
use crate::ops::quant::Region;
use crate::ops::window::{self, TokenMap};
use crate::quant::sites::{ActSite, SiteList};

/// The attention of block `blk` of stage `s`.
fn spec(st: &SwinStage, s: usize, last: bool, images: usize, blk: usize) -> AttnSpec {
    let shift = st.block_shift(blk);
    AttnSpec {
        prefix: format!("layers.{s}.blocks.{blk}"),
        images,
        n: st.window_tokens(),
        d: st.dim,
        heads: st.heads,
        windows: Some(Windows { grid: st.grid, window: st.window, shift }),
        geometry: TapGeometry {
            images,
            windows: st.windows(),
            heads: st.heads,
            tokens: st.window_tokens(),
            head_dim: st.head_dim(),
            prefix: 0,
            side: st.window,
            stage: s,
            shift,
            last_stage: last,
        },
    }
}

fn stages(cfg: &ModelConfig, sw: &SwinDims) -> Vec<SwinStage> {
    (0..sw.stages()).map(|s| sw.stage(cfg.grid(), s)).collect()
}

/// Q's quantizer sites as the authors' code places them on Swin (docs/swin.md): the
/// patch convolution's weight only; per block the inputs of qkv, q·scale and k, P and v, proj,
/// fc1, fc2; each PatchMerging's reduction; `head.fc`. Every `lsq_g_scale` is 1.0 (the head is
/// nested in timm's `ClassifierHead`, so the authors' 0.01 never reaches it).
pub(crate) fn quant_sites(cfg: &ModelConfig, sw: &SwinDims) -> SiteList {
    let mut s = SiteList::default();
    s.weights.push("patch_embed.proj.weight".into());
    for (i, st) in stages(cfg, sw).iter().enumerate() {
        let t = st.grid * st.grid;
        if i > 0 {
            s.act.push(ActSite::new(format!("layers.{i}.downsample.reduction.act"), t * 2 * st.dim));
            s.weights.push(format!("layers.{i}.downsample.reduction.weight"));
        }
        for blk in 0..st.depth {
            let p = |x: &str| format!("layers.{i}.blocks.{blk}.{x}");
            let td = t * st.dim;
            s.act.push(ActSite::new(p("attn.qkv.act"), td));
            s.weights.push(p("attn.qkv.weight"));
            s.act.push(ActSite::new(p("attn.matmul1.act_a"), td));
            s.act.push(ActSite::new(p("attn.matmul1.act_b"), td));
            s.act.push(ActSite::new(p("attn.matmul2.act_a"), t * st.heads * st.window_tokens()));
            s.act.push(ActSite::new(p("attn.matmul2.act_b"), td));
            s.act.push(ActSite::new(p("attn.proj.act"), td));
            s.weights.push(p("attn.proj.weight"));
            s.act.push(ActSite::new(p("mlp.fc1.act"), td));
            s.weights.push(p("mlp.fc1.weight"));
            s.act.push(ActSite::new(p("mlp.fc2.act"), t * st.hidden));
            s.weights.push(p("mlp.fc2.weight"));
        }
    }
    s.act.push(ActSite::new("head.fc.act".into(), sw.num_features()));
    s.weights.push("head.fc.weight".into());
    s
}

/// What PatchMerging keeps for its backward.
struct MergeActs {
    merged: Tensor,
    st: Tensor,
    ln: Tensor,
    ln_q: Tensor,
    w: Tensor,
}

/// PatchMerging before stage `s`: `x` [B·R², C] -> [B·(R/2)², 2C].
fn merge_forward(bl: &mut Builder, s: usize, prev: &SwinStage, x: &Tensor) -> (MergeActs, Tensor) {
    let (b, r, c) = (bl.b, prev.grid, prev.dim);
    let rows = b * (r / 2) * (r / 2);
    let merged = bl.t(&[rows, 4 * c]);
    bl.fw.push(TokenMap::merge(b, r, c).dispatch(bl.gpu, x, &merged, 1.0, 0.0));
    let p = |x: &str| format!("layers.{s}.downsample.{x}");
    let (ln, st) = bl.layernorm(&p("norm"), &merged);
    let ln_q = bl.act(&p("reduction.act"), &ln);
    let w = bl.weight(&p("reduction.weight"));
    let out = bl.t(&[rows, 2 * c]);
    bl.linear(rows, &ln_q, &w, None, &out, 1.0, 0.0);
    (MergeActs { merged, st, ln, ln_q, w }, out)
}

/// Backward of [`merge_forward`] from `dout` into `dx` (image order of the previous stage).
fn merge_backward(bl: &mut Builder, s: usize, prev: &SwinStage, a: &MergeActs, dout: &Tensor, dx: &Tensor) {
    let (b, r, c) = (bl.b, prev.grid, prev.dim);
    let rows = a.merged.shape[0];
    let p = |x: &str| format!("layers.{s}.downsample.{x}");
    let dln = bl.t(&[rows, 4 * c]);
    let dln_q = bl.grad_target(&dln);
    let w = bl.p(&p("reduction.weight"));
    bl.linear_back(rows, &a.ln_q, &a.w, w, None, dout, Some(&dln_q), 1.0);
    bl.act_back(&p("reduction.act"), Region::whole(a.ln.numel()), &a.ln, &dln_q, &dln);
    let dmerged = bl.t(&[rows, 4 * c]);
    bl.layernorm_back(&p("norm"), &a.merged, &a.st, &dln, None, &dmerged);
    bl.bw.push(TokenMap::merge(b, r, c).inverse().dispatch(bl.gpu, &dmerged, dx, 1.0, 0.0));
}

pub(crate) fn build(mut bl: Builder) -> Graph {
    let model = bl.model;
    let cfg = &model.cfg;
    let sw = cfg.swin().expect("a Swin config");
    let gpu = bl.gpu;
    let b = bl.b;
    let c0 = sw.embed_dim;
    let geo = layers::patch_geometry(cfg, b, 0, c0);
    let (np, classes) = (geo.patches(), cfg.num_classes);
    let stages = stages(cfg, sw);
    let last = stages.len() - 1;

    // Patch embedding (the image itself is never quantized) and its LayerNorm.
    let (images, cols, w_pe, pe) = layers::patch_embed_forward(&mut bl, &geo);
    let (x0, st0) = bl.layernorm("patch_embed.norm", &pe);

    // Stages.
    let mut x = x0;
    let mut merges = Vec::new();
    let mut blocks = Vec::new();
    let mut taps = Vec::new();
    for (s, st) in stages.iter().enumerate() {
        if s > 0 {
            let (m, out) = merge_forward(&mut bl, s, &stages[s - 1], &x);
            merges.push(m);
            x = out;
        }
        let mut acts = Vec::new();
        for blk in 0..st.depth {
            let sp = spec(st, s, s == last, b, blk);
            let (a, tap, out) = layers::block_forward(&mut bl, &sp, x, st.hidden);
            acts.push((sp, a));
            taps.push(tap);
            x = out;
        }
        blocks.push(acts);
    }

    // Final norm, mean over tokens, head.fc.
    let (t_last, f) = (stages[last].grid.pow(2), sw.num_features());
    let (xf, stf) = bl.layernorm("norm", &x);
    let pooled = bl.t(&[b, f]);
    bl.fw.push(window::mean_tokens(gpu, b, t_last, f, &xf, &pooled));
    let pooled_q = bl.act("head.fc.act", &pooled);
    let w_head = bl.weight("head.fc.weight");
    let logits = bl.t(&[b, classes]);
    bl.linear(b, &pooled_q, &w_head, Some(bl.p("head.fc.bias")), &logits, 1.0, 0.0);

    let d_logits = bl.t(&[b, classes]);
    let d_images = bl.image_grad_buffer(&[b, cfg.in_chans, cfg.img_size, cfg.img_size]);
    if bl.opts.backward {
        let d_pooled = bl.t(&[b, f]);
        let target = bl.grad_target(&d_pooled);
        let (hw, hb) = (bl.p("head.fc.weight"), bl.p("head.fc.bias"));
        bl.linear_back(b, &pooled_q, &w_head, hw, Some(hb), &d_logits, Some(&target), 1.0);
        bl.act_back("head.fc.act", Region::whole(b * f), &pooled, &target, &d_pooled);
        let dxf = bl.t(&[b * t_last, f]);
        let spread = Copy4 {
            dims: [1, b, t_last, f],
            s_off: 0,
            s: [0, f, 0, 1],
            t_off: 0,
            t: [0, t_last * f, f, 1],
            alpha: 1.0 / t_last as f32,
            beta: 0.0,
        };
        bl.bw.push(spread.dispatch(gpu, &d_pooled, &dxf));
        let mut dxa = bl.t(&[b * t_last, f]);
        bl.layernorm_back("norm", &x, &stf, &dxf, None, &dxa);

        for s in (0..stages.len()).rev() {
            let st = &stages[s];
            let scratch = BackScratch::new(&bl, &blocks[s][0].0, st.hidden);
            for (blk, (sp, a)) in blocks[s].iter().enumerate().rev() {
                let tap = &taps[taps_before(&stages, s) + blk];
                layers::block_backward(&mut bl, sp, a, tap, &dxa, &scratch);
            }
            if s > 0 {
                let prev = &stages[s - 1];
                let dprev = bl.t(&[b * prev.grid * prev.grid, prev.dim]);
                merge_backward(&mut bl, s, prev, &merges[s - 1], &dxa, &dprev);
                dxa = dprev;
            }
        }

        // Patch embedding.
        let dpe = bl.t(&[b * np, c0]);
        bl.layernorm_back("patch_embed.norm", &pe, &st0, &dxa, None, &dpe);
        layers::patch_embed_backward(&mut bl, &geo, &cols, &w_pe, &dpe, &d_images);
    }
    bl.finish(Outputs { images, d_images, logits, d_logits, taps })
}

/// Blocks in the stages before `s`.
fn taps_before(stages: &[SwinStage], s: usize) -> usize {
    stages[..s].iter().map(|st| st.depth).sum()
}

//! Attention softmax with a logit scale (shaders/softmax.wgsl).

use super::quant::Site;
use super::u;
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, grid_for};

pub const SOURCE: &str = with_fake_quant!("../../shaders/softmax.wgsl");

/// Mirrors the shader's `Params` block (softmax.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    scale: f32,
    has_extra: u32,
    site: u32,
    pad: [u32; 3],
}

fn params(rows: usize, n: usize, scale: f32, has_extra: bool, site: u32) -> Params {
    Params { rows: u(rows), n: u(n), scale, has_extra: has_extra as u32, site, pad: [0; 3] }
}

pub const FORWARD: Kernel = Kernel {
    id: "softmax_forward",
    source: SOURCE,
    entry: "softmax_forward",
    storage: &[(1, false), (2, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const FORWARD_Q: Kernel = Kernel {
    id: "softmax_forward_q",
    source: SOURCE,
    entry: "softmax_forward_q",
    storage: &[(1, false), (2, true), (7, true), (8, false), (9, false)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const BACKWARD_MASKED: Kernel = Kernel {
    id: "softmax_backward_masked",
    source: SOURCE,
    entry: "softmax_backward_masked",
    storage: &[(3, false), (4, false), (5, false), (6, true), (8, false), (9, false)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const BACKWARD: Kernel = Kernel {
    id: "softmax_backward",
    source: SOURCE,
    entry: "softmax_backward",
    storage: &[(3, false), (4, false), (5, false), (6, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};

/// `prob = softmax(scale * a)` over rows of length `n`.
pub fn forward(gpu: &Gpu, rows: usize, n: usize, scale: f32, a: &Tensor, prob: &Tensor) -> Dispatch {
    assert!(a.numel() >= rows * n && prob.numel() >= rows * n);
    gpu.dispatch(&FORWARD, &params(rows, n, scale, false, 0), &[a, prob], grid_for(&FORWARD, rows))
}

/// [`forward`] that also writes `prob` through quantizer `site` to `prob_q` (one launch).
#[allow(clippy::too_many_arguments)]
pub fn forward_q(
    gpu: &Gpu,
    rows: usize,
    n: usize,
    scale: f32,
    a: &Tensor,
    prob: &Tensor,
    site: Site,
    prob_q: &Tensor,
) -> Dispatch {
    assert!(a.numel() >= rows * n && prob.numel() >= rows * n && prob_q.numel() >= rows * n);
    let (qp, qm) = (&site.state.qparams, &site.state.qmeta);
    let p = params(rows, n, scale, false, site.index());
    gpu.dispatch(&FORWARD_Q, &p, &[a, prob, prob_q, qp, qm], grid_for(&FORWARD, rows))
}

/// [`backward`] of the gradient `dprob_q` on `prob`'s quantized copy, through that quantizer's
/// straight-through mask (one launch).
#[allow(clippy::too_many_arguments)]
pub fn backward_masked(
    gpu: &Gpu,
    rows: usize,
    n: usize,
    scale: f32,
    prob: &Tensor,
    dprob_q: &Tensor,
    site: Site,
    extra: Option<&Tensor>,
    da: &Tensor,
) -> Dispatch {
    let p = params(rows, n, scale, extra.is_some(), site.index());
    let extra = extra.unwrap_or(dprob_q);
    let (qp, qm) = (&site.state.qparams, &site.state.qmeta);
    gpu.dispatch(&BACKWARD_MASKED, &p, &[prob, dprob_q, extra, da, qp, qm], grid_for(&BACKWARD, rows))
}

/// `da = scale * prob * (dprob - <dprob, prob>) + extra`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Gpu,
    rows: usize,
    n: usize,
    scale: f32,
    prob: &Tensor,
    dprob: &Tensor,
    extra: Option<&Tensor>,
    da: &Tensor,
) -> Dispatch {
    let params = params(rows, n, scale, extra.is_some(), 0);
    let extra = extra.unwrap_or(dprob);
    gpu.dispatch(&BACKWARD, &params, &[prob, dprob, extra, da], grid_for(&BACKWARD, rows))
}

pub fn cpu_forward(rows: usize, n: usize, scale: f32, a: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; rows * n];
    for r in 0..rows {
        let row = &a[r * n..(r + 1) * n];
        let m = row.iter().map(|&v| scale as f64 * v as f64).fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|&v| (scale as f64 * v as f64 - m).exp()).sum();
        for j in 0..n {
            out[r * n + j] = ((scale as f64 * row[j] as f64 - m).exp() / s) as f32;
        }
    }
    out
}

pub fn cpu_backward(rows: usize, n: usize, scale: f32, prob: &[f32], dprob: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; rows * n];
    for r in 0..rows {
        let o = r * n;
        let dot: f64 = (0..n).map(|j| dprob[o + j] as f64 * prob[o + j] as f64).sum();
        for j in 0..n {
            out[o + j] = (scale as f64 * prob[o + j] as f64 * (dprob[o + j] as f64 - dot)) as f32;
        }
    }
    out
}

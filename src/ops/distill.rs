//! Q-training losses (shaders/distill.wgsl, spec 1.3 and 2.5): knowledge distillation at
//! temperature T and the mask-weighted SSIM distillation of the attention outputs.

use super::u;
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, grid1d};
use bytemuck::Zeroable;

pub const SOURCE: &str = include_str!("../../shaders/distill.wgsl");

/// Mirrors the shader's `Params` block (distill.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    h: u32,
    n: u32,
    prefix: u32,
    np: u32,
    d: u32,
    k: u32,
    off: u32,
    coef: f32,
    temp: f32,
    c2: f32,
    pad: u32,
}

pub const KD: Kernel = Kernel {
    id: "kd",
    source: SOURCE,
    entry: "kd",
    storage: &[(1, false), (2, false), (3, true), (4, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const HD_WEIGHTS: Kernel = Kernel {
    id: "hd_weights",
    source: SOURCE,
    entry: "hd_weights",
    storage: &[(1, false), (5, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const HD_SSIM: Kernel = Kernel {
    id: "hd_ssim",
    source: SOURCE,
    entry: "hd_ssim",
    storage: &[(1, false), (2, false), (3, true), (4, true), (6, false)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};

pub const C2: f32 = 0.03 * 0.03;

/// KD loss `coef * KL * T^2` per row into `partial[off..off + rows]`, its gradient added to `dzq`.
#[allow(clippy::too_many_arguments)]
pub fn kd(
    gpu: &Gpu,
    rows: usize,
    classes: usize,
    temp: f32,
    coef: f32,
    zp: &Tensor,
    zq: &Tensor,
    dzq: &Tensor,
    partial: &Tensor,
    off: usize,
) -> Dispatch {
    assert!(zp.numel() == rows * classes && zq.numel() == rows * classes && dzq.numel() == rows * classes);
    assert!(partial.numel() >= off + rows);
    // kd reads its rows as `b` and its classes as `n`.
    let params = Params { b: u(rows), n: u(classes), off: u(off), coef, temp, ..Params::zeroed() };
    gpu.dispatch(&KD, &params, &[zp, zq, dzq, partial], grid1d(rows, 64))
}

/// Shape of one block's per-head attention output [B, H, N, d] and its patch tokens.
#[derive(Clone, Copy, Debug)]
pub struct HeadDims {
    pub b: usize,
    pub h: usize,
    pub n: usize,
    pub prefix: usize,
    pub d: usize,
}

impl HeadDims {
    pub fn np(&self) -> usize {
        self.n - self.prefix
    }
    /// Tokens weighted 2: round(np * proportion) with round-half-to-even (Python's round), at least 1.
    pub fn top_k(&self, proportion: f64) -> usize {
        ((self.np() as f64 * proportion).round_ties_even() as usize).max(1)
    }
    fn params(&self, k: usize, off: usize, coef: f32) -> Params {
        Params {
            b: u(self.b),
            h: u(self.h),
            n: u(self.n),
            prefix: u(self.prefix),
            np: u(self.np()),
            d: u(self.d),
            k: u(k),
            off: u(off),
            coef,
            temp: 0.0,
            c2: C2,
            pad: 0,
        }
    }
}

/// The mask-weighted SSIM head distillation of one block: token weights from the teacher's
/// `o_p` (top `k` by importance get 2), then `coef * (1 - ssim)` partials per (b, h, channel) at
/// `partial[off..]` and the gradient added to `do_q`. coef = weight / (L B H d).
#[allow(clippy::too_many_arguments)]
pub fn head_distill(
    gpu: &Gpu,
    dims: &HeadDims,
    k: usize,
    coef: f32,
    o_p: &Tensor,
    o_q: &Tensor,
    do_q: &Tensor,
    weights: &Tensor,
    partial: &Tensor,
    off: usize,
) -> [Dispatch; 2] {
    let len = dims.b * dims.h * dims.n * dims.d;
    assert!(o_p.numel() == len && o_q.numel() == len && do_q.numel() == len);
    assert!(weights.numel() >= dims.b * dims.np() && partial.numel() >= off + dims.b * dims.h * dims.d);
    let params = dims.params(k, off, coef);
    [
        gpu.dispatch(&HD_WEIGHTS, &params, &[o_p, weights], grid1d(dims.b * dims.np(), 64)),
        gpu.dispatch(
            &HD_SSIM,
            &params,
            &[o_p, o_q, do_q, partial, weights],
            grid1d(dims.b * dims.h * dims.d, 64),
        ),
    ]
}

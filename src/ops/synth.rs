//! Image-space kernels of sample synthesis (shaders/synth.wgsl): total variation, the jitter
//! and augmentation with its backward, and the per-channel clamp.

use super::u;
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, grid1d};

pub const SOURCE: &str = include_str!("../../shaders/synth.wgsl");

const fn k(id: &'static str, storage: &'static [(u32, bool)]) -> Kernel {
    Kernel { id, source: SOURCE, entry: id, storage, workgroup: 64, constants: &[], textures: &[] }
}

pub const TV_PARTIAL: Kernel = k("tv_partial", &[(1, false), (3, true)]);
pub const TV_REDUCE: Kernel = Kernel {
    id: "tv_reduce",
    source: SOURCE,
    entry: "tv_reduce",
    storage: &[(4, false), (5, true), (8, true)],
    workgroup: 1,
    constants: &[],
    textures: &[],
};
pub const TV_GRAD: Kernel = k("tv_grad", &[(1, false), (2, true), (6, false)]);
pub const JITTER_FORWARD: Kernel = k("jitter_forward", &[(1, false), (2, true), (7, false)]);
pub const JITTER_BACKWARD: Kernel = k("jitter_backward", &[(1, false), (2, true), (7, false)]);
pub const CLAMP_CHANNELS: Kernel = k("clamp_channels", &[(9, true), (10, false)]);

/// Mirrors the shader's `Params` block (synth.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    c: u32,
    h: u32,
    w: u32,
    threads: u32,
    coef: f32,
    pad: [u32; 2],
}

fn params([b, c, h, w]: [usize; 4], threads: usize, coef: f32) -> Params {
    Params { b: u(b), c: u(c), h: u(h), w: u(w), threads: u(threads), coef, pad: [0; 2] }
}

/// Scratch of the total-variation reduction.
pub struct TvScratch {
    partial: Tensor,
    stats: Tensor,
    threads: usize,
}

impl TvScratch {
    pub fn new(gpu: &Gpu, numel: usize) -> TvScratch {
        let threads = (numel / 64).clamp(64, 4096).div_ceil(64) * 64;
        TvScratch { partial: Tensor::zeros(gpu, &[4 * threads]), stats: Tensor::zeros(gpu, &[4]), threads }
    }
}

/// `loss[0] = coef * TV(img)` and `grad += coef * dTV/dimg` (three launches).
pub fn tv(
    gpu: &Gpu,
    shape: [usize; 4],
    coef: f32,
    img: &Tensor,
    grad: &Tensor,
    loss: &Tensor,
    s: &TvScratch,
) -> [Dispatch; 3] {
    let n: usize = shape.iter().product();
    assert!(img.numel() == n && grad.numel() == n && loss.numel() >= 1);
    let p = params(shape, s.threads, coef);
    [
        gpu.dispatch(&TV_PARTIAL, &p, &[img, &s.partial], grid1d(s.threads, 64)),
        gpu.dispatch(&TV_REDUCE, &p, &[&s.partial, &s.stats, loss], [1, 1, 1]),
        gpu.dispatch(&TV_GRAD, &p, &[img, grad, &s.stats], grid1d(n, 64)),
    ]
}

/// `x = (roll(img, (dy, dx)) + offset[b,c]) / scale[b,c]` with draws = [dy, dx, (offset, scale) per (b, c)].
pub fn jitter_forward(gpu: &Gpu, shape: [usize; 4], img: &Tensor, x: &Tensor, draws: &Tensor) -> Dispatch {
    let n: usize = shape.iter().product();
    assert!(img.numel() == n && x.numel() == n && draws.numel() >= 2 + 2 * shape[0] * shape[1]);
    gpu.dispatch(&JITTER_FORWARD, &params(shape, 0, 0.0), &[img, x, draws], grid1d(n, 64))
}

/// The image gradient of [`jitter_forward`] from `dx` (overwrites `dimg`).
pub fn jitter_backward(gpu: &Gpu, shape: [usize; 4], dx: &Tensor, dimg: &Tensor, draws: &Tensor) -> Dispatch {
    let n: usize = shape.iter().product();
    assert!(dx.numel() == n && dimg.numel() == n);
    gpu.dispatch(&JITTER_BACKWARD, &params(shape, 0, 0.0), &[dx, dimg, draws], grid1d(n, 64))
}

/// Clamps every channel c of `img` to [bounds[2c], bounds[2c+1]].
pub fn clamp_channels(gpu: &Gpu, shape: [usize; 4], img: &Tensor, bounds: &Tensor) -> Dispatch {
    let n: usize = shape.iter().product();
    assert!(img.numel() == n && bounds.numel() >= 2 * shape[1]);
    gpu.dispatch(&CLAMP_CHANNELS, &params(shape, 0, 0.0), &[img, bounds], grid1d(n, 64))
}

/// CPU reference: total variation of [B, C, H, W] images (f64).
pub fn cpu_tv(shape: [usize; 4], img: &[f64]) -> f64 {
    let [b, c, h, w] = shape;
    let mut s = [0f64; 4];
    for plane in 0..b * c {
        let at = |y: usize, x: usize| img[(plane * h + y) * w + x];
        for y in 0..h {
            for x in 0..w {
                if x + 1 < w {
                    s[0] += (at(y, x + 1) - at(y, x)).powi(2);
                }
                if y + 1 < h {
                    s[1] += (at(y + 1, x) - at(y, x)).powi(2);
                }
                if x + 1 < w && y + 1 < h {
                    s[2] += (at(y + 1, x + 1) - at(y, x)).powi(2);
                    s[3] += (at(y + 1, x) - at(y, x + 1)).powi(2);
                }
            }
        }
    }
    s[0].sqrt() + s[1].sqrt() + (s[2].sqrt() + s[3].sqrt()) / 2f64.sqrt()
}

/// CPU reference of [`jitter_forward`].
pub fn cpu_jitter(shape: [usize; 4], img: &[f32], draws: &[f32]) -> Vec<f32> {
    let [b, c, h, w] = shape;
    let (dy, dx) = (draws[0] as i64, draws[1] as i64);
    let mut out = vec![0f32; img.len()];
    for bc in 0..b * c {
        for y in 0..h {
            for x in 0..w {
                let sy = (y as i64 - dy).rem_euclid(h as i64) as usize;
                let sx = (x as i64 - dx).rem_euclid(w as i64) as usize;
                out[(bc * h + y) * w + x] =
                    (img[(bc * h + sy) * w + sx] + draws[2 + 2 * bc]) / draws[3 + 2 * bc];
            }
        }
    }
    out
}

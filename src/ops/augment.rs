//! Batch augmentations (shaders/augment.wgsl).

use super::{f, u};
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, grid_for};

pub const SOURCE: &str = include_str!("../../shaders/augment.wgsl");
pub const SHIFT_FLIP: Kernel = Kernel {
    id: "shift_flip",
    source: SOURCE,
    entry: "shift_flip",
    storage: &[(1, false), (2, true), (3, false)],
    workgroup: 256,
};

/// Random translation with fill and horizontal flip of `src` [B, C, H, W] into `dst`;
/// `draws` [B, 3] holds (dy, dx, flip) per image; `fill` the value per channel (up to 3).
pub fn shift_flip(
    gpu: &Gpu,
    shape: [usize; 4],
    fill: &[f32],
    src: &Tensor,
    dst: &Tensor,
    draws: &Tensor,
) -> Dispatch {
    let [b, c, h, w] = shape;
    assert!(c <= 3 && fill.len() == c, "shift_flip: 1 to 3 channels with one fill value each");
    assert!(src.numel() == b * c * h * w && dst.numel() == src.numel() && draws.numel() >= 3 * b);
    let fl = |i: usize| f(fill.get(i).copied().unwrap_or(0.0));
    let params = [u(b), u(c), u(h), u(w), fl(0), fl(1), fl(2), 0];
    gpu.dispatch(&SHIFT_FLIP, &params, &[src, dst, draws], grid_for(&SHIFT_FLIP, dst.numel()))
}

/// CPU reference of [`shift_flip`].
pub fn cpu_shift_flip(shape: [usize; 4], fill: &[f32], src: &[f32], draws: &[f32]) -> Vec<f32> {
    let [b, c, h, w] = shape;
    let mut out = vec![0f32; src.len()];
    for bi in 0..b {
        let (dy, dx, flip) = (draws[3 * bi] as i64, draws[3 * bi + 1] as i64, draws[3 * bi + 2] != 0.0);
        for ci in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let xs = if flip { w as i64 - 1 - x as i64 } else { x as i64 };
                    let (sy, sx) = (y as i64 + dy, xs + dx);
                    let inside = sy >= 0 && sx >= 0 && sy < h as i64 && sx < w as i64;
                    out[((bi * c + ci) * h + y) * w + x] = if inside {
                        src[((bi * c + ci) * h + sy as usize) * w + sx as usize]
                    } else {
                        fill[ci]
                    };
                }
            }
        }
    }
    out
}

//! Batch augmentations (shaders/augment.wgsl).

use super::u;
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, grid_for};

pub const SOURCE: &str = include_str!("../../shaders/augment.wgsl");

/// Mirrors the shader's `Params` block (augment.wgsl): `fill` is fill0..fill2.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    chans: u32,
    h: u32,
    w: u32,
    fill: [f32; 3],
    step: u32,
}

fn params([b, c, h, w]: [usize; 4], fill: [f32; 3], step: u32) -> Params {
    Params { batch: u(b), chans: u(c), h: u(h), w: u(w), fill, step }
}

pub const SHIFT_FLIP: Kernel = Kernel {
    id: "shift_flip",
    source: SOURCE,
    entry: "shift_flip",
    storage: &[(1, false), (2, true), (3, false)],
    workgroup: 256,
    constants: &[],
    textures: &[],
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
    let fill = std::array::from_fn(|i| fill.get(i).copied().unwrap_or(0.0));
    gpu.dispatch(&SHIFT_FLIP, &params(shape, fill, 0), &[src, dst, draws], grid_for(&SHIFT_FLIP, dst.numel()))
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

// ---- Q-training batch augmentation ------------------------------------------------------------

pub const RRC_FLIP: Kernel = Kernel {
    id: "rrc_flip",
    source: SOURCE,
    entry: "rrc_flip",
    storage: &[(1, false), (2, true), (3, false)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};
pub const GRAY_MEAN: Kernel = Kernel {
    id: "gray_mean",
    source: SOURCE,
    entry: "gray_mean",
    // The image is only read here: bound read-only (binding 1), so no barrier precedes it.
    storage: &[(1, false), (3, false), (4, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const COLOR_STEP: Kernel = Kernel {
    id: "color_step",
    source: SOURCE,
    entry: "color_step",
    storage: &[(2, true), (3, false), (5, false)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};
pub const BLUR_PASS: Kernel = Kernel {
    id: "blur_pass",
    source: SOURCE,
    entry: "blur_pass",
    storage: &[(1, false), (2, true), (3, false)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};

/// Floats in the per-batch draw of [`batch_augment`].
pub const DRAWS: usize = 24;

/// The spec's Q-training augmentation with one random draw per batch (torchvision applies its
/// transforms to the whole batch tensor): RandomResizedCrop + flip, ColorJitter(0.8, 0.8, 0.8,
/// 0.2) with probability 0.8 in a random order, RandomGrayscale(0.2), GaussianBlur. `src` ->
/// `dst` via `tmp`; `stats` [B] scratch; `draws` [DRAWS] from [`draw_batch_augment`].
#[allow(clippy::too_many_arguments)]
pub fn batch_augment(
    gpu: &Gpu,
    shape: [usize; 4],
    src: &Tensor,
    tmp: &Tensor,
    dst: &Tensor,
    stats: &Tensor,
    draws: &Tensor,
) -> Vec<Dispatch> {
    let [b, c, h, w] = shape;
    let n = b * c * h * w;
    assert!(c == 1 || c == 3, "batch augmentation takes 1- or 3-channel images");
    assert!(
        src.numel() == n
            && tmp.numel() == n
            && dst.numel() == n
            && stats.numel() >= b
            && draws.numel() >= DRAWS
    );
    let params = |step: u32| params(shape, [0.0; 3], step);
    let mut ds = vec![gpu.dispatch(&RRC_FLIP, &params(0), &[src, tmp, draws], grid_for(&RRC_FLIP, n))];
    for step in 0..5 {
        ds.push(gpu.dispatch(&GRAY_MEAN, &params(step), &[tmp, draws, stats], grid_for(&GRAY_MEAN, b)));
        ds.push(gpu.dispatch(
            &COLOR_STEP,
            &params(step),
            &[tmp, draws, stats],
            grid_for(&COLOR_STEP, b * h * w),
        ));
    }
    ds.push(gpu.dispatch(&BLUR_PASS, &params(0), &[tmp, dst, draws], grid_for(&BLUR_PASS, n)));
    ds.push(gpu.dispatch(&BLUR_PASS, &params(1), &[dst, tmp, draws], grid_for(&BLUR_PASS, n)));
    ds.push(gpu.dispatch(
        &crate::ops::copy::COPY,
        &crate::ops::copy::Copy4::flat(n).params(),
        &[tmp, dst],
        grid_for(&crate::ops::copy::COPY, n),
    ));
    ds
}

/// One batch's parameters of [`batch_augment`] (torchvision's transforms applied to the whole
/// batch share one draw).
#[derive(Clone, Debug, PartialEq)]
pub struct AugParams {
    /// RandomResizedCrop's box: top, left, height, width in pixels.
    pub crop: [usize; 4],
    pub flip: bool,
    /// ColorJitter, when RandomApply applies it.
    pub color: Option<ColorJitter>,
    pub grayscale: bool,
    /// GaussianBlur: 2 radius + 1 taps (no blur at radius 0) with this sigma.
    pub blur_radius: usize,
    pub blur_sigma: f32,
}

/// ColorJitter's factors and the order of its four operations.
#[derive(Clone, Debug, PartialEq)]
pub struct ColorJitter {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
    /// A permutation of 1 brightness, 2 contrast, 3 saturation, 4 hue.
    pub order: [u8; 4],
}

impl AugParams {
    /// One draw of the spec's recipe for [`batch_augment`] at `h` x `w`: torchvision's
    /// RandomResizedCrop, scale (0.08, 1), ratio (3/4, 4/3); flip 0.5; colour jitter with
    /// probability 0.8, factors brightness/contrast/saturation U(0.2, 1.8), hue U(-0.2, 0.2), random
    /// order; grayscale 0.2; blur with kernel int(0.1 size), sigma U(0.1, 2).
    pub fn draw(rng: &mut crate::rng::Rng, h: usize, w: usize) -> AugParams {
        let area = (h * w) as f64;
        let (lr0, lr1) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
        let mut crop = None;
        for _ in 0..10 {
            let ta = area * (0.08 + 0.92 * rng.unit());
            let ar = (lr0 + (lr1 - lr0) * rng.unit()).exp();
            let cw = (ta * ar).sqrt().round() as usize;
            let ch = (ta / ar).sqrt().round() as usize;
            if cw > 0 && cw <= w && ch > 0 && ch <= h {
                let top = rng.below(h - ch + 1);
                let left = rng.below(w - cw + 1);
                crop = Some([top, left, ch, cw]);
                break;
            }
        }
        let crop = crop.unwrap_or_else(|| {
            let ratio = w as f64 / h as f64;
            let (cw, ch) = if ratio < 0.75 {
                (w, (w as f64 / 0.75).round() as usize)
            } else if ratio > 4.0 / 3.0 {
                ((h as f64 * 4.0 / 3.0).round() as usize, h)
            } else {
                (w, h)
            };
            [(h - ch.min(h)) / 2, (w - cw.min(w)) / 2, ch.min(h), cw.min(w)]
        });
        let flip = rng.unit() < 0.5;
        let color = (rng.unit() < 0.8).then(|| {
            let brightness = (0.2 + 1.6 * rng.unit()) as f32;
            let contrast = (0.2 + 1.6 * rng.unit()) as f32;
            let saturation = (0.2 + 1.6 * rng.unit()) as f32;
            let hue = (-0.2 + 0.4 * rng.unit()) as f32;
            let mut order = [1u8, 2, 3, 4];
            for i in (1..4).rev() {
                order.swap(i, rng.below(i + 1));
            }
            ColorJitter { brightness, contrast, saturation, hue, order }
        });
        let grayscale = rng.unit() < 0.2;
        let blur_radius = (h.min(w) as f64 * 0.1) as usize / 2;
        let blur_sigma = (0.1 + 1.9 * rng.unit()) as f32;
        AugParams { crop, flip, color, grayscale, blur_radius, blur_sigma }
    }

    /// The [`DRAWS`] floats the kernels of [`batch_augment`] read, for images normalised with
    /// `mean` / `std` (one per channel).
    pub fn encode(&self, mean: &[f32], std: &[f32]) -> Vec<f32> {
        let mut d = vec![0f32; DRAWS];
        for (k, &v) in self.crop.iter().enumerate() {
            d[k] = v as f32;
        }
        d[4] = if self.flip { 1.0 } else { 0.0 };
        if let Some(c) = &self.color {
            (d[5], d[6], d[7], d[13]) = (c.brightness, c.contrast, c.saturation, c.hue);
            for (k, &op) in c.order.iter().enumerate() {
                d[8 + k] = op as f32;
            }
        }
        if self.grayscale {
            d[12] = 5.0;
        }
        d[14] = self.blur_radius as f32;
        d[15] = self.blur_sigma;
        d[16] = if self.blur_radius > 0 { 1.0 } else { 0.0 };
        let c = mean.len().min(3);
        d[17..17 + c].copy_from_slice(&mean[..c]);
        d[20..20 + c].copy_from_slice(&std[..c]);
        d
    }
}

/// One batch's random draw of [`batch_augment`], encoded ([`AugParams::draw`], then
/// [`AugParams::encode`]).
pub fn draw_batch_augment(
    rng: &mut crate::rng::Rng,
    h: usize,
    w: usize,
    mean: &[f32],
    std: &[f32],
) -> Vec<f32> {
    AugParams::draw(rng, h, w).encode(mean, std)
}

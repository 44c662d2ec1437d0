//! Softmax cross-entropy (shaders/loss.wgsl).

use super::u;
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, grid_for};

pub const SOURCE: &str = include_str!("../../shaders/loss.wgsl");

/// Mirrors the shader's `Params` block (loss.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    classes: u32,
    scale: f32,
    pad: u32,
}

pub const CROSS_ENTROPY: Kernel = Kernel {
    id: "cross_entropy",
    source: SOURCE,
    entry: "cross_entropy",
    storage: &[(1, false), (2, false), (3, true), (4, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};

/// Per-row loss into `loss` and `scale * dloss/dlogits` into `dlogits` (targets as f32 indices).
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy(
    gpu: &Gpu,
    rows: usize,
    classes: usize,
    scale: f32,
    logits: &Tensor,
    targets: &Tensor,
    loss: &Tensor,
    dlogits: &Tensor,
) -> Dispatch {
    assert!(logits.numel() == rows * classes && dlogits.numel() == rows * classes);
    assert!(targets.numel() == rows && loss.numel() == rows);
    gpu.dispatch(
        &CROSS_ENTROPY,
        &Params { rows: u(rows), classes: u(classes), scale, pad: 0 },
        &[logits, targets, loss, dlogits],
        grid_for(&CROSS_ENTROPY, rows),
    )
}

/// CPU reference: (per-row loss, scale * gradient).
pub fn cpu(rows: usize, classes: usize, scale: f32, logits: &[f32], targets: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut loss = vec![0f32; rows];
    let mut grad = vec![0f32; rows * classes];
    for r in 0..rows {
        let row = &logits[r * classes..(r + 1) * classes];
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
        let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        let y = targets[r] as usize;
        loss[r] = (lse - row[y] as f64) as f32;
        for j in 0..classes {
            let g = (row[j] as f64 - lse).exp() - if j == y { 1.0 } else { 0.0 };
            grad[r * classes + j] = (scale as f64 * g) as f32;
        }
    }
    (loss, grad)
}

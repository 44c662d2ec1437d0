//! PSAQ-ViT's kernel-density patch-similarity entropy (shaders/psaq.wgsl), for the `psaq`
//! synthesis baseline.

use super::u;
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, grid1d};
use crate::ops::distill::HeadDims;

pub const SOURCE: &str = include_str!("../../shaders/psaq.wgsl");

/// Mirrors the shader's `Params` block (psaq.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    h: u32,
    n: u32,
    prefix: u32,
    np: u32,
    d: u32,
    off: u32,
    pad0: u32,
    coef: f32,
    bw: f32,
    pad1: [u32; 2],
}

fn params(d: &HeadDims, coef: f32, off: usize) -> Params {
    Params {
        b: u(d.b),
        h: u(d.h),
        n: u(d.n),
        prefix: u(d.prefix),
        np: u(d.np()),
        d: u(d.d),
        off: u(off),
        pad0: 0,
        coef,
        bw: BANDWIDTH,
        pad1: [0; 2],
    }
}

const fn k(id: &'static str, storage: &'static [(u32, bool)], workgroup: u32) -> Kernel {
    Kernel { id, source: SOURCE, entry: id, storage, workgroup, constants: &[], textures: &[] }
}

pub const ROWS: Kernel = k("psaq_rows", &[(1, false), (4, true), (8, true)], 64);
pub const SIMS: Kernel = k("psaq_sims", &[(5, false), (6, true)], 64);
pub const RANGE_IMAGE: Kernel = k("psaq_range_image", &[(7, false), (10, true)], 64);
pub const RANGE: Kernel = k("psaq_range", &[(11, false), (8, true)], 1);
pub const ENTROPY: Kernel = k("psaq_entropy", &[(3, true), (7, false), (9, false), (10, true)], 64);
pub const BACKWARD: Kernel =
    k("psaq_backward", &[(2, true), (5, false), (7, false), (9, false), (11, false)], 64);

/// Grid points of the density.
pub const GRID: usize = 10;
/// PSAQ-ViT's kernel bandwidth.
pub const BANDWIDTH: f32 = 0.01;

/// Scratch of the objective for one batch shape.
pub struct PsaqScratch {
    rows: Tensor,
    sims: Tensor,
    stats: Tensor,
    wts: Tensor,
}

impl PsaqScratch {
    pub fn new(gpu: &Gpu, d: &HeadDims) -> PsaqScratch {
        let np = d.np();
        PsaqScratch {
            rows: Tensor::zeros(gpu, &[d.b * np * d.d]),
            sims: Tensor::zeros(gpu, &[d.b * np * np]),
            stats: Tensor::zeros(gpu, &[2 + d.b * np]),
            wts: Tensor::zeros(gpu, &[d.b * GRID]),
        }
    }
}

/// Loop iterations the heaviest PSAQ invocation runs (the density of one image: 10 grid points
/// x np² similarities); see `Gpu::fits_one_invocation`.
pub fn loop_iterations(d: &HeadDims) -> usize {
    let np = d.np();
    (GRID * np * np).max(2 * d.d * np * (GRID + 1))
}

/// The entropy objective of one block's attention outputs `o` [B, H, N, d]: partials
/// `-coef H_b` at `partial[off..off + B]`, gradient added to `d_o`.
#[allow(clippy::too_many_arguments)]
pub fn entropy(
    gpu: &Gpu,
    d: &HeadDims,
    coef: f32,
    o: &Tensor,
    d_o: &Tensor,
    partial: &Tensor,
    off: usize,
    s: &PsaqScratch,
) -> [Dispatch; 6] {
    let np = d.np();
    assert!(o.numel() == d.b * d.h * d.n * d.d && d_o.numel() == o.numel() && partial.numel() >= off + d.b);
    let params = params(d, coef, off);
    [
        gpu.dispatch(&ROWS, &params, &[o, &s.rows, &s.stats], grid1d(d.b * np, 64)),
        gpu.dispatch(&SIMS, &params, &[&s.rows, &s.sims], grid1d(d.b * np * np, 64)),
        gpu.dispatch(&RANGE_IMAGE, &params, &[&s.sims, &s.wts], grid1d(d.b, 64)),
        gpu.dispatch(&RANGE, &params, &[&s.wts, &s.stats], [1, 1, 1]),
        gpu.dispatch(&ENTROPY, &params, &[partial, &s.sims, &s.stats, &s.wts], grid1d(d.b, 64)),
        gpu.dispatch(&BACKWARD, &params, &[d_o, &s.rows, &s.sims, &s.stats, &s.wts], grid1d(d.b * np, 64)),
    ]
}

fn cpu_sims(d: &HeadDims, o: &[f64]) -> Vec<Vec<f64>> {
    let np = d.np();
    (0..d.b)
        .map(|b| {
            let rows: Vec<Vec<f64>> = (0..np)
                .map(|t| {
                    let v: Vec<f64> = (0..d.d)
                        .map(|c| {
                            (0..d.h).map(|h| o[((b * d.h + h) * d.n + d.prefix + t) * d.d + c]).sum::<f64>()
                                / d.h as f64
                        })
                        .collect();
                    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-8);
                    v.iter().map(|x| x / norm).collect()
                })
                .collect();
            (0..np)
                .flat_map(|i| {
                    (0..np)
                        .map(|j| rows[i].iter().zip(&rows[j]).map(|(a, b)| a * b).sum::<f64>())
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .collect()
}

/// The (min, max) similarity over the batch: the density grid's span.
pub fn cpu_range(d: &HeadDims, o: &[f64]) -> (f64, f64) {
    let all = cpu_sims(d, o);
    (
        all.iter().flatten().cloned().fold(f64::INFINITY, f64::min),
        all.iter().flatten().cloned().fold(f64::NEG_INFINITY, f64::max),
    )
}

/// CPU reference (f64): -mean_b H_b for one block, with the grid from the batch's similarities
/// (or the fixed `grid` = (min, max), as the gradient treats it).
pub fn cpu_entropy(d: &HeadDims, o: &[f64], grid: Option<(f64, f64)>) -> f64 {
    let all = cpu_sims(d, o);
    let (lo, hi) = grid.unwrap_or_else(|| cpu_range(d, o));
    let dx = (hi - lo) / (GRID - 1) as f64;
    let bw = BANDWIDTH as f64;
    let mut total = 0.0;
    for sims in &all {
        let f: Vec<f64> = (0..GRID)
            .map(|g| {
                let x = lo + dx * g as f64;
                let pdf = sims.iter().map(|s| (-0.5 * ((x - s) / bw).powi(2)).exp()).sum::<f64>()
                    / ((2.0 * std::f64::consts::PI).sqrt() * bw * sims.len() as f64)
                    + 1e-4;
                -pdf * pdf.ln()
            })
            .collect();
        let h: f64 = (0..GRID - 1).map(|g| 0.5 * dx * (f[g] + f[g + 1])).sum();
        total += h;
    }
    -total / d.b as f64
}

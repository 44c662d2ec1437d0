//! LayerNorm over the last axis (shaders/layernorm.wgsl).

use super::quant::Site;
use super::reduce::{SumRows, row_chunks};
use super::u;
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, grid_for};

pub const SOURCE: &str = with_fake_quant!("../../shaders/layernorm.wgsl");

/// Mirrors the shader's `Params` block (layernorm.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    d: u32,
    eps: f32,
    extra: u32,
    site: u32,
    pad: [u32; 3],
}

fn params(rows: usize, d: usize, eps: f32, extra: u32) -> Params {
    Params { rows: u(rows), d: u(d), eps, extra, site: 0, pad: [0; 3] }
}

pub const FORWARD: Kernel = Kernel {
    id: "layernorm_forward",
    source: SOURCE,
    entry: "layernorm_forward",
    storage: &[(1, false), (2, false), (3, false), (4, true), (5, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const FORWARD_COPY: Kernel = Kernel {
    id: "layernorm_forward_copy",
    source: SOURCE,
    entry: "layernorm_forward_copy",
    storage: &[(1, false), (2, false), (3, false), (4, true), (5, true), (12, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const FORWARD_COPY_Q: Kernel = Kernel {
    id: "layernorm_forward_copy_q",
    source: SOURCE,
    entry: "layernorm_forward_copy_q",
    storage: &[
        (1, false),
        (2, false),
        (3, false),
        (4, true),
        (5, true),
        (12, true),
        (13, true),
        (14, false),
        (15, false),
    ],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const BACKWARD_INPUT_MASKED: Kernel = Kernel {
    id: "layernorm_backward_input_masked",
    source: SOURCE,
    entry: "layernorm_backward_input_masked",
    storage: &[
        (1, false),
        (2, false),
        (6, false),
        (7, false),
        (8, false),
        (9, true),
        (14, false),
        (15, false),
        (16, false),
    ],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const BACKWARD_INPUT: Kernel = Kernel {
    id: "layernorm_backward_input",
    source: SOURCE,
    entry: "layernorm_backward_input",
    storage: &[(1, false), (2, false), (6, false), (7, false), (8, false), (9, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const BACKWARD_PARAMS: Kernel = Kernel {
    id: "layernorm_backward_params",
    source: SOURCE,
    entry: "layernorm_backward_params",
    storage: &[(1, false), (6, false), (7, false), (10, true), (11, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};

/// `y = LN(x) * gamma + beta` on `rows` rows of `d`; `stats` gets (mean, rstd) per row.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    gpu: &Gpu,
    rows: usize,
    d: usize,
    eps: f32,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    y: &Tensor,
    stats: &Tensor,
) -> Dispatch {
    assert!(x.numel() >= rows * d && y.numel() >= rows * d && stats.numel() >= 2 * rows);
    assert!(gamma.numel() == d && beta.numel() == d);
    gpu.dispatch(&FORWARD, &params(rows, d, eps, 0), &[x, gamma, beta, y, stats], grid_for(&FORWARD, rows))
}

/// [`forward`] that also copies `x` to `xc` and, given a quantizer, writes `y` through it to
/// `yq`, in the same launch (the bits of the separate launches).
#[allow(clippy::too_many_arguments)]
pub fn forward_copy(
    gpu: &Gpu,
    rows: usize,
    d: usize,
    eps: f32,
    [x, gamma, beta, y, stats, xc]: [&Tensor; 6],
    quant: Option<(Site, &Tensor)>,
) -> Dispatch {
    assert!(x.numel() >= rows * d && y.numel() >= rows * d && stats.numel() >= 2 * rows);
    assert!(gamma.numel() == d && beta.numel() == d && xc.numel() >= rows * d);
    let grid = grid_for(&FORWARD, rows);
    match quant {
        None => gpu.dispatch(&FORWARD_COPY, &params(rows, d, eps, 0), &[x, gamma, beta, y, stats, xc], grid),
        Some((site, yq)) => {
            assert!(yq.numel() >= rows * d);
            let p = Params { site: site.index(), ..params(rows, d, eps, 0) };
            let (qp, qm) = (&site.state.qparams, &site.state.qmeta);
            gpu.dispatch(&FORWARD_COPY_Q, &p, &[x, gamma, beta, y, stats, xc, yq, qp, qm], grid)
        }
    }
}

/// [`backward_input`] of the gradient `dy` on `y`'s quantized copy, through that quantizer's
/// straight-through mask (from its input `y`) in the same launch.
#[allow(clippy::too_many_arguments)]
pub fn backward_input_masked(
    gpu: &Gpu,
    rows: usize,
    d: usize,
    [x, gamma, stats, y, dy]: [&Tensor; 5],
    site: Site,
    dres: Option<&Tensor>,
    dx: &Tensor,
) -> Dispatch {
    assert!(y.numel() >= rows * d && dy.numel() >= rows * d);
    let p = Params { site: site.index(), ..params(rows, d, 0.0, dres.is_some() as u32) };
    let dres = dres.unwrap_or(dy);
    let (qp, qm) = (&site.state.qparams, &site.state.qmeta);
    gpu.dispatch(
        &BACKWARD_INPUT_MASKED,
        &p,
        &[x, gamma, stats, dy, dres, dx, qp, qm, y],
        grid_for(&BACKWARD_INPUT, rows),
    )
}

/// `dx = dres + dLN/dx^T dy` (`dres` optional: the residual branch's gradient).
#[allow(clippy::too_many_arguments)]
pub fn backward_input(
    gpu: &Gpu,
    rows: usize,
    d: usize,
    x: &Tensor,
    gamma: &Tensor,
    stats: &Tensor,
    dy: &Tensor,
    dres: Option<&Tensor>,
    dx: &Tensor,
) -> Dispatch {
    let p = params(rows, d, 0.0, dres.is_some() as u32);
    let dres = dres.unwrap_or(dy);
    gpu.dispatch(&BACKWARD_INPUT, &p, &[x, gamma, stats, dy, dres, dx], grid_for(&BACKWARD_INPUT, rows))
}

/// `dgamma = sum_r dy * xhat`, `dbeta = sum_r dy` (overwrites). On GPUs a long sum over rows
/// runs in chunks of rows in parallel, then the chunk sums are summed (see `SumRows`).
#[allow(clippy::too_many_arguments)]
pub fn backward_params(
    gpu: &Gpu,
    rows: usize,
    d: usize,
    x: &Tensor,
    stats: &Tensor,
    dy: &Tensor,
    dgamma: &Tensor,
    dbeta: &Tensor,
) -> Vec<Dispatch> {
    let grid = grid_for(&BACKWARD_PARAMS, d);
    let Some((chunk, chunks)) = row_chunks(gpu, rows).filter(|_| d > 0) else {
        return vec![gpu.dispatch(
            &BACKWARD_PARAMS,
            &params(rows, d, 0.0, 0),
            &[x, stats, dy, dgamma, dbeta],
            grid,
        )];
    };
    let (pg, pb) = (Tensor::zeros(gpu, &[chunks * d]), Tensor::zeros(gpu, &[chunks * d]));
    let p = params(rows, d, 0.0, u(chunk));
    let partial =
        gpu.dispatch(&BACKWARD_PARAMS, &p, &[x, stats, dy, &pg, &pb], [grid[0], grid[1], u(chunks)]);
    let mut out = vec![partial];
    out.extend(SumRows::matrix(chunks, d).dispatches(gpu, &pg, dgamma));
    out.extend(SumRows::matrix(chunks, d).dispatches(gpu, &pb, dbeta));
    out
}

/// CPU reference forward: returns (y, stats).
pub fn cpu_forward(
    rows: usize,
    d: usize,
    eps: f32,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let mut y = vec![0f32; rows * d];
    let mut stats = vec![0f32; rows * 2];
    for r in 0..rows {
        let xr = &x[r * d..(r + 1) * d];
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for j in 0..d {
            y[r * d + j] = ((xr[j] as f64 - mean) * rstd * gamma[j] as f64 + beta[j] as f64) as f32;
        }
        stats[2 * r] = mean as f32;
        stats[2 * r + 1] = rstd as f32;
    }
    (y, stats)
}

/// CPU reference backward: returns (dx, dgamma, dbeta).
pub fn cpu_backward(
    rows: usize,
    d: usize,
    eps: f32,
    x: &[f32],
    gamma: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (_, stats) = cpu_forward(rows, d, eps, x, gamma, &vec![0.0; d]);
    let mut dx = vec![0f32; rows * d];
    let mut dg = vec![0f64; d];
    let mut db = vec![0f64; d];
    for r in 0..rows {
        let (mean, rstd) = (stats[2 * r] as f64, stats[2 * r + 1] as f64);
        let xhat: Vec<f64> = (0..d).map(|j| (x[r * d + j] as f64 - mean) * rstd).collect();
        let g: Vec<f64> = (0..d).map(|j| dy[r * d + j] as f64 * gamma[j] as f64).collect();
        let mg = g.iter().sum::<f64>() / d as f64;
        let mgx = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / d as f64;
        for j in 0..d {
            dx[r * d + j] = (rstd * (g[j] - mg - xhat[j] * mgx)) as f32;
            dg[j] += dy[r * d + j] as f64 * xhat[j];
            db[j] += dy[r * d + j] as f64;
        }
    }
    (dx, dg.iter().map(|&v| v as f32).collect(), db.iter().map(|&v| v as f32).collect())
}

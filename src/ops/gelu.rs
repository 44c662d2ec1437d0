//! Exact-erf GELU (shaders/gelu.wgsl).

use super::quant::Site;
use super::u;
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, grid_for};

pub const SOURCE: &str = with_fake_quant!("../../shaders/gelu.wgsl");

/// Mirrors the shader's `Params` block (gelu.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    site: u32,
    pad: [u32; 2],
}

fn params(x: &Tensor) -> Params {
    Params { n: u(x.numel()), site: 0, pad: [0; 2] }
}

pub const FORWARD: Kernel = Kernel {
    id: "gelu_forward",
    source: SOURCE,
    entry: "gelu_forward",
    storage: &[(1, false), (2, true)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};
pub const FORWARD_Q: Kernel = Kernel {
    id: "gelu_forward_q",
    source: SOURCE,
    entry: "gelu_forward_q",
    storage: &[(1, false), (2, true), (5, true), (6, false), (7, false)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};
pub const BACKWARD_MASKED: Kernel = Kernel {
    id: "gelu_backward_masked",
    source: SOURCE,
    entry: "gelu_backward_masked",
    storage: &[(1, false), (3, false), (4, true), (6, false), (7, false), (8, false)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};
pub const BACKWARD: Kernel = Kernel {
    id: "gelu_backward",
    source: SOURCE,
    entry: "gelu_backward",
    storage: &[(1, false), (3, false), (4, true)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};

pub fn forward(gpu: &Gpu, x: &Tensor, y: &Tensor) -> Dispatch {
    assert_eq!(x.numel(), y.numel());
    gpu.dispatch(&FORWARD, &params(x), &[x, y], grid_for(&FORWARD, x.numel()))
}

/// [`forward`] that also writes `y` through quantizer `site` to `yq` (one launch).
pub fn forward_q(gpu: &Gpu, x: &Tensor, y: &Tensor, site: Site, yq: &Tensor) -> Dispatch {
    assert!(x.numel() == y.numel() && x.numel() == yq.numel());
    let p = Params { site: site.index(), ..params(x) };
    let (qp, qm) = (&site.state.qparams, &site.state.qmeta);
    gpu.dispatch(&FORWARD_Q, &p, &[x, y, yq, qp, qm], grid_for(&FORWARD, x.numel()))
}

/// [`backward`] of the gradient `dyq` on `y`'s quantized copy, through that quantizer's
/// straight-through mask (from its input `y`), in one launch.
pub fn backward_masked(gpu: &Gpu, x: &Tensor, y: &Tensor, dyq: &Tensor, site: Site, dx: &Tensor) -> Dispatch {
    assert!(x.numel() == y.numel() && x.numel() == dyq.numel() && x.numel() == dx.numel());
    let p = Params { site: site.index(), ..params(x) };
    let (qp, qm) = (&site.state.qparams, &site.state.qmeta);
    gpu.dispatch(&BACKWARD_MASKED, &p, &[x, dyq, dx, qp, qm, y], grid_for(&BACKWARD, x.numel()))
}

pub fn backward(gpu: &Gpu, x: &Tensor, dy: &Tensor, dx: &Tensor) -> Dispatch {
    assert!(x.numel() == dy.numel() && x.numel() == dx.numel());
    gpu.dispatch(&BACKWARD, &params(x), &[x, dy, dx], grid_for(&BACKWARD, x.numel()))
}

fn erf(x: f64) -> f64 {
    // erf by its Taylor series / continued fraction is overkill here: libm-quality via erfc.
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let y = t
        * (-x * x - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398
                                    + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 { 1.0 - y } else { y - 1.0 }
}

/// CPU reference: `y = 0.5 x (1 + erf(x / sqrt 2))` (erf to ~1e-7, Numerical Recipes erfc).
pub fn cpu_forward(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| (0.5 * v as f64 * (1.0 + erf(v as f64 / 2f64.sqrt()))) as f32).collect()
}

/// CPU reference: `dx = dy (Phi(x) + x phi(x))`.
pub fn cpu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    x.iter()
        .zip(dy)
        .map(|(&v, &g)| {
            let v = v as f64;
            let cdf = 0.5 * (1.0 + erf(v / 2f64.sqrt()));
            let pdf = (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
            (g as f64 * (cdf + v * pdf)) as f32
        })
        .collect()
}

//! AdamW and SGD with Nesterov momentum (shaders/optim.wgsl).

use super::u;
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, grid_for};

pub const SOURCE: &str = include_str!("../../shaders/optim.wgsl");

/// Mirrors the shader's `Params` block (optim.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    off: u32,
    stride: u32,
    pad: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    wd: f32,
}

pub const ADAMW: Kernel = Kernel {
    id: "adamw",
    source: SOURCE,
    entry: "adamw",
    storage: &[(1, true), (2, false), (3, true), (4, true), (5, false)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};
pub const SGD: Kernel = Kernel {
    id: "sgd",
    source: SOURCE,
    entry: "sgd",
    storage: &[(1, true), (2, false), (3, true), (5, false)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};

/// Which elements of a parameter buffer a launch updates: `n` of them, from `off`, every `stride`.
#[derive(Clone, Copy, Debug)]
pub struct Slice {
    pub n: usize,
    pub off: usize,
    pub stride: usize,
}

impl Slice {
    pub fn all(n: usize) -> Slice {
        Slice { n, off: 0, stride: 1 }
    }
    fn check(&self, len: usize) {
        if self.n > 0 {
            assert!(self.off + (self.n - 1) * self.stride < len, "optimizer slice out of range");
        }
    }
    fn params(&self, (beta1, beta2): (f32, f32), eps: f32, wd: f32) -> Params {
        Params { n: u(self.n), off: u(self.off), stride: u(self.stride), pad: 0, beta1, beta2, eps, wd }
    }
}

/// One AdamW update of `param` (with moment buffers `m`, `v`); `hyper` = [lr, bc1, bc2].
#[allow(clippy::too_many_arguments)]
pub fn adamw(
    gpu: &Gpu,
    s: Slice,
    betas: (f32, f32),
    eps: f32,
    wd: f32,
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    hyper: &Tensor,
) -> Dispatch {
    s.check(param.numel());
    let params = s.params(betas, eps, wd);
    gpu.dispatch(&ADAMW, &params, &[param, grad, m, v, hyper], grid_for(&ADAMW, s.n))
}

/// One SGD step with Nesterov momentum `mu` (momentum buffer `buf`); `hyper` = [lr, first].
#[allow(clippy::too_many_arguments)]
pub fn sgd(
    gpu: &Gpu,
    s: Slice,
    mu: f32,
    wd: f32,
    param: &Tensor,
    grad: &Tensor,
    buf: &Tensor,
    hyper: &Tensor,
) -> Dispatch {
    s.check(param.numel());
    // SGD's momentum travels as `beta1`.
    let params = s.params((mu, 0.0), 0.0, wd);
    gpu.dispatch(&SGD, &params, &[param, grad, buf, hyper], grid_for(&SGD, s.n))
}

/// CPU reference of one AdamW step (t = step number from 1).
#[allow(clippy::too_many_arguments)]
pub fn cpu_adamw(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    lr: f32,
    betas: (f32, f32),
    eps: f32,
    wd: f32,
    t: i32,
) {
    let (bc1, bc2) = (1.0 - betas.0.powi(t), 1.0 - betas.1.powi(t));
    for i in 0..p.len() {
        p[i] *= 1.0 - lr * wd;
        m[i] = betas.0 * m[i] + (1.0 - betas.0) * g[i];
        v[i] = betas.1 * v[i] + (1.0 - betas.1) * g[i] * g[i];
        p[i] -= lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
    }
}

/// CPU reference of one Nesterov SGD step.
#[allow(clippy::too_many_arguments)]
pub fn cpu_sgd(p: &mut [f32], g: &[f32], buf: &mut [f32], lr: f32, mu: f32, wd: f32, first: bool) {
    for i in 0..p.len() {
        let d = g[i] + wd * p[i];
        buf[i] = if first { d } else { mu * buf[i] + d };
        p[i] -= lr * (d + mu * buf[i]);
    }
}

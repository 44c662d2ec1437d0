//! Strided 4-d copy and fill (shaders/copy.wgsl).

use super::u;
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, grid_for};
use bytemuck::Zeroable;

pub const SOURCE: &str = include_str!("../../shaders/copy.wgsl");

/// Mirrors the shader's `Params` block (copy.wgsl): `d`, `s`, `t` are d0..d3, s0..s3, t0..t3.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    d: [u32; 4],
    s_off: u32,
    s: [u32; 4],
    t_off: u32,
    t: [u32; 4],
    alpha: f32,
    beta: f32,
}

pub const COPY: Kernel = Kernel {
    id: "copy4d",
    source: SOURCE,
    entry: "copy4d",
    storage: &[(1, false), (2, true)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};
/// [`COPY`] with i0, i1 from the workgroup grid (boxes whose d0, d1 and d2 d3 / 256 fit it).
pub const COPY_GRID: Kernel = Kernel {
    id: "copy_grid",
    source: SOURCE,
    entry: "copy_grid",
    storage: &[(1, false), (2, true)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};
pub const FILL: Kernel = Kernel {
    id: "fill",
    source: SOURCE,
    entry: "fill",
    storage: &[(2, true)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};

/// Four buffers filled in one launch (see [`fill_all`]).
pub const FILL4: Kernel = Kernel {
    id: "fill4",
    source: SOURCE,
    entry: "fill4",
    storage: &[(2, true), (3, true), (4, true), (5, true)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};

/// `dst[t_off + i.t] = alpha * src[s_off + i.s] + beta * dst[..]` over the index box `dims`.
#[derive(Clone, Copy, Debug)]
pub struct Copy4 {
    pub dims: [usize; 4],
    pub s_off: usize,
    pub s: [usize; 4],
    pub t_off: usize,
    pub t: [usize; 4],
    pub alpha: f32,
    pub beta: f32,
}

impl Copy4 {
    /// Contiguous copy of `n` elements.
    pub fn flat(n: usize) -> Copy4 {
        Copy4 {
            dims: [1, 1, 1, n],
            s_off: 0,
            s: [0, 0, 0, 1],
            t_off: 0,
            t: [0, 0, 0, 1],
            alpha: 1.0,
            beta: 0.0,
        }
    }

    fn max_index(off: usize, st: &[usize; 4], dims: &[usize; 4]) -> usize {
        off + (0..4).map(|i| (dims[i] - 1) * st[i]).sum::<usize>()
    }

    fn check(&self, src: usize, dst: usize) {
        if self.dims.contains(&0) {
            return;
        }
        assert!(
            Self::max_index(self.s_off, &self.s, &self.dims) < src,
            "copy4d: source out of range {self:?}"
        );
        assert!(
            Self::max_index(self.t_off, &self.t, &self.dims) < dst,
            "copy4d: destination out of range {self:?}"
        );
    }

    /// The uniform parameters of this copy.
    pub(crate) fn params(&self) -> Params {
        Params {
            d: self.dims.map(u),
            s_off: u(self.s_off),
            s: self.s.map(u),
            t_off: u(self.t_off),
            t: self.t.map(u),
            alpha: self.alpha,
            beta: self.beta,
        }
    }

    pub fn dispatch(&self, gpu: &Gpu, src: &Tensor, dst: &Tensor) -> Dispatch {
        self.check(src.numel(), dst.numel());
        let [d0, d1, d2, d3] = self.dims;
        let inner = (d2 * d3).div_ceil(256);
        if inner <= 65535 && d0 <= 65535 && d1 <= 65535 {
            let grid = [inner.max(1) as u32, d1.max(1) as u32, d0.max(1) as u32];
            return gpu.dispatch(&COPY_GRID, &self.params(), &[src, dst], grid);
        }
        gpu.dispatch(&COPY, &self.params(), &[src, dst], grid_for(&COPY, self.dims.iter().product()))
    }

    pub fn cpu(&self, src: &[f32], dst: &mut [f32]) {
        self.check(src.len(), dst.len());
        let d = &self.dims;
        for i0 in 0..d[0] {
            for i1 in 0..d[1] {
                for i2 in 0..d[2] {
                    for i3 in 0..d[3] {
                        let s =
                            self.s_off + i0 * self.s[0] + i1 * self.s[1] + i2 * self.s[2] + i3 * self.s[3];
                        let t =
                            self.t_off + i0 * self.t[0] + i1 * self.t[1] + i2 * self.t[2] + i3 * self.t[3];
                        let mut v = self.alpha * src[s];
                        if self.beta != 0.0 {
                            v += self.beta * dst[t];
                        }
                        dst[t] = v;
                    }
                }
            }
        }
    }
}

/// Sets every element of every buffer in `dsts` to `value`, four buffers per launch.
pub fn fill_all(gpu: &Gpu, dsts: &[&Tensor], value: f32) -> Vec<Dispatch> {
    dsts.chunks(4)
        .map(|group| {
            // Unused slots get small stand-ins of length 0 to the kernel.
            let stand_ins: Vec<Tensor> = (group.len()..4).map(|_| Tensor::zeros(gpu, &[1])).collect();
            let all: Vec<&Tensor> = group.iter().copied().chain(&stand_ins).collect();
            let mut d = [0u32; 4];
            for (k, t) in group.iter().enumerate() {
                d[k] = u(t.numel());
            }
            let n = group.iter().map(|t| t.numel()).max().unwrap_or(0);
            let params = Params { d, alpha: value, ..Params::zeroed() };
            gpu.dispatch(&FILL4, &params, &all, grid_for(&FILL4, n))
        })
        .collect()
}

/// Sets every element of `dst` to `value`.
pub fn fill(gpu: &Gpu, dst: &Tensor, value: f32) -> Dispatch {
    let n = dst.numel();
    let params = Params { d: [1, 1, 1, u(n)], alpha: value, ..Params::zeroed() };
    gpu.dispatch(&FILL, &params, &[dst], grid_for(&FILL, n))
}

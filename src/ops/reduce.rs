//! Sum over rows (shaders/reduce.wgsl).

use super::{f, u};
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, grid_for};

pub const SOURCE: &str = include_str!("../../shaders/reduce.wgsl");
pub const SUM_ROWS: Kernel = Kernel {
    id: "sum_rows",
    source: SOURCE,
    entry: "sum_rows",
    storage: &[(1, false), (2, true)],
    workgroup: 64,
};

/// `out[o_off + i] = alpha * sum_{r<rows} src[s_off + r*rs + i] + beta * out[..]`, i < n.
#[derive(Clone, Copy, Debug)]
pub struct SumRows {
    pub n: usize,
    pub rows: usize,
    pub s_off: usize,
    pub rs: usize,
    pub o_off: usize,
    pub alpha: f32,
    pub beta: f32,
}

impl SumRows {
    /// Column sums of a contiguous `rows x n` matrix.
    pub fn matrix(rows: usize, n: usize) -> SumRows {
        SumRows { n, rows, s_off: 0, rs: n, o_off: 0, alpha: 1.0, beta: 0.0 }
    }

    fn check(&self, src: usize, out: usize) {
        if self.n == 0 {
            return;
        }
        if self.rows > 0 {
            assert!(self.s_off + (self.rows - 1) * self.rs + self.n <= src, "sum_rows: source out of range");
        }
        assert!(self.o_off + self.n <= out, "sum_rows: output out of range");
    }

    pub fn dispatch(&self, gpu: &Gpu, src: &Tensor, out: &Tensor) -> Dispatch {
        self.check(src.numel(), out.numel());
        let params = [
            u(self.n),
            u(self.rows),
            u(self.s_off),
            u(self.rs),
            u(self.o_off),
            f(self.alpha),
            f(self.beta),
            0,
        ];
        gpu.dispatch(&SUM_ROWS, &params, &[src, out], grid_for(&SUM_ROWS, self.n))
    }

    pub fn cpu(&self, src: &[f32], out: &mut [f32]) {
        self.check(src.len(), out.len());
        for i in 0..self.n {
            let s: f64 = (0..self.rows).map(|r| src[self.s_off + r * self.rs + i] as f64).sum();
            let mut v = self.alpha as f64 * s;
            if self.beta != 0.0 {
                v += self.beta as f64 * out[self.o_off + i] as f64;
            }
            out[self.o_off + i] = v as f32;
        }
    }
}

//! Sum over rows (shaders/reduce.wgsl).

use super::u;
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, grid_for};

pub const SOURCE: &str = include_str!("../../shaders/reduce.wgsl");

/// Mirrors the shader's `Params` block (reduce.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    rows: u32,
    s_off: u32,
    rs: u32,
    o_off: u32,
    alpha: f32,
    beta: f32,
    chunk: u32,
}

pub const SUM_ROWS: Kernel = Kernel {
    id: "sum_rows",
    source: SOURCE,
    entry: "sum_rows",
    storage: &[(1, false), (2, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};

/// Rows one GPU invocation sums before a chunked sum splits the work.
const SUM_CHUNK: usize = 64;
/// Most chunks of a chunked sum (its second pass walks this many rows).
const SUM_MAX_CHUNKS: usize = 256;

/// How a sum over `rows` rows runs: `None` in one pass (CPU adapters, short sums), else
/// `(chunk, chunks)`: chunks of `chunk` rows summed in parallel, then the chunk sums summed.
/// Shared by `SumRows` and the kernels with their own row sums (LayerNorm's parameters). On CPU
/// adapters a sum longer than the driver lets one invocation loop is chunked too.
pub fn row_chunks(gpu: &Gpu, rows: usize) -> Option<(usize, usize)> {
    if rows < 2 * SUM_CHUNK || (gpu.cpu_like && gpu.fits_one_invocation(rows)) {
        return None;
    }
    let chunk = SUM_CHUNK.max(rows.div_ceil(SUM_MAX_CHUNKS));
    Some((chunk, rows.div_ceil(chunk)))
}

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

    /// One launch: each output element sums its whole column (what CPU adapters want).
    pub fn dispatch(&self, gpu: &Gpu, src: &Tensor, out: &Tensor) -> Dispatch {
        self.check(src.numel(), out.numel());
        gpu.dispatch(&SUM_ROWS, &self.params(0), &[src, out], grid_for(&SUM_ROWS, self.n))
    }

    fn params(&self, chunk: usize) -> Params {
        Params {
            n: u(self.n),
            rows: u(self.rows),
            s_off: u(self.s_off),
            rs: u(self.rs),
            o_off: u(self.o_off),
            alpha: self.alpha,
            beta: self.beta,
            chunk: u(chunk),
        }
    }

    /// The launches of this sum. On GPUs a long sum (many rows) is cut into chunks of rows
    /// summed in parallel into a scratch buffer, then the chunk sums are summed: one thread
    /// walking thousands of rows leaves a GPU idle.
    pub fn dispatches(&self, gpu: &Gpu, src: &Tensor, out: &Tensor) -> Vec<Dispatch> {
        let Some((chunk, chunks)) = row_chunks(gpu, self.rows).filter(|_| self.n > 0) else {
            return vec![self.dispatch(gpu, src, out)];
        };
        self.check(src.numel(), out.numel());
        let scratch = Tensor::zeros(gpu, &[chunks * self.n]);
        let first = SumRows { o_off: 0, alpha: 1.0, beta: 0.0, ..*self };
        let mut grid = grid_for(&SUM_ROWS, self.n);
        grid[2] = u(chunks);
        let partial = gpu.dispatch(&SUM_ROWS, &first.params(chunk), &[src, &scratch], grid);
        let second = SumRows { rows: chunks, s_off: 0, rs: self.n, ..*self };
        vec![partial, second.dispatch(gpu, &scratch, out)]
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

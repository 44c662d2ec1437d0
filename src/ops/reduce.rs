//! Sum over rows (shaders/reduce.wgsl), and several segment sums in one launch
//! (shaders/sum_segments.wgsl).

use super::u;
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, grid_for};

pub const SOURCE: &str = include_str!("../../shaders/reduce.wgsl");
pub const SEGMENTS_SOURCE: &str = include_str!("../../shaders/sum_segments.wgsl");

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

pub const SUM_SEGMENTS: Kernel = Kernel {
    id: "sum_segments",
    source: SEGMENTS_SOURCE,
    entry: "sum_segments",
    storage: &[(1, false), (2, false), (3, false), (4, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};

/// Mirrors sum_segments.wgsl's `Params`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct SegmentParams {
    segs: [[u32; 4]; 8],
    alpha: [f32; 8],
    count: u32,
    pad: [u32; 3],
}

/// One sum of [`sum_segments`]: `out[o] = alpha * sum(sources[src][off .. off + len])`.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub src: usize,
    pub off: usize,
    pub len: usize,
    pub o: usize,
    pub alpha: f32,
}

/// Up to 8 segment sums over up to 3 sources, in one launch (one workgroup per segment).
pub fn sum_segments(gpu: &Gpu, sources: &[&Tensor], segs: &[Segment], out: &Tensor) -> Dispatch {
    assert!(!sources.is_empty() && sources.len() <= 3, "sum_segments: 1 to 3 sources");
    assert!(!segs.is_empty() && segs.len() <= 8, "sum_segments: 1 to 8 segments");
    let mut params = SegmentParams { segs: [[0; 4]; 8], alpha: [0.0; 8], count: u(segs.len()), pad: [0; 3] };
    for (k, s) in segs.iter().enumerate() {
        assert!(
            s.src < sources.len() && s.off + s.len <= sources[s.src].numel() && s.o < out.numel(),
            "sum_segments: segment {k} out of range"
        );
        params.segs[k] = [u(s.src), u(s.off), u(s.len), u(s.o)];
        params.alpha[k] = s.alpha;
    }
    let bound: Vec<&Tensor> = (0..3).map(|i| sources[i.min(sources.len() - 1)]).chain([out]).collect();
    gpu.dispatch(&SUM_SEGMENTS, &params, &bound, [u(segs.len()), 1, 1])
}

//! Batched strided matmul (shaders/matmul.wgsl).

use super::matmul_variants::Variant;
use super::reduce::SumRows;
use super::u;
use crate::gpu::{Dispatch, Gpu, Tensor};

/// Split-K on GPUs: a product with fewer 64x64 output tiles than this cannot fill a GPU, so its
/// k range is cut into slices computed by separate workgroups and summed afterwards.
const SPLIT_TILES: usize = 128;
/// Shortest k slice worth its own workgroup.
const SPLIT_MIN_K: usize = 128;
/// Most scratch values one split product may use (4 MiB).
const SPLIT_SCRATCH: usize = 1 << 20;

pub const SOURCE: &str =
    concat!(include_str!("../../shaders/matmul.wgsl"), include_str!("../../shaders/dot.wgsl"));
/// matmul.wgsl with the subgroup kernels appended (only adapters with subgroups compile it).
pub const SUBGROUP_SOURCE: &str = concat!(
    include_str!("../../shaders/matmul.wgsl"),
    include_str!("../../shaders/dot.wgsl"),
    include_str!("../../shaders/matmul_subgroup.wgsl")
);

/// matmul.wgsl with the texture-operand kernels appended (src/gpu/mirror.rs).
pub const TEX_SOURCE: &str = concat!(
    include_str!("../../shaders/matmul.wgsl"),
    include_str!("../../shaders/dot.wgsl"),
    include_str!("../../shaders/matmul_tex.wgsl")
);

/// The shader's `Params` block (matmul.wgsl), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch2: u32,
    a: [u32; 5],
    b: [u32; 5],
    c_off: u32,
    c_rs: u32,
    c_b1: u32,
    c_b2: u32,
    bias_off: u32,
    has_bias: u32,
    alpha: f32,
    beta: f32,
    /// The texture variants: log2 of the texels per row of A's and B's mirrors.
    pub(crate) a_tw: u32,
    pub(crate) b_tw: u32,
}

/// How an operand is laid out: element (z1, z2, r, c) is at `off + z1*b1 + z2*b2 + r*rs + c*cs`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct View {
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
    pub b1: usize,
    pub b2: usize,
}

impl View {
    /// Row-major matrix with `ld` elements per row.
    pub fn rows(ld: usize) -> View {
        View { off: 0, rs: ld, cs: 1, b1: 0, b2: 0 }
    }
    /// The transpose of this view.
    pub fn t(self) -> View {
        View { rs: self.cs, cs: self.rs, ..self }
    }
    pub fn at(self, off: usize) -> View {
        View { off, ..self }
    }
    pub fn batch(self, b1: usize, b2: usize) -> View {
        View { b1, b2, ..self }
    }
}

/// `C[z] = alpha * (A[z] B[z] + bias) + beta * C[z]` for z in 0..batch1*batch2; C is M x N
/// (its column stride must be 1), A is M x K, B is K x N.
#[derive(Clone, Copy, Debug)]
pub struct Matmul {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch1: usize,
    pub batch2: usize,
    pub a: View,
    pub b: View,
    pub c: View,
    pub bias_off: Option<usize>,
    pub alpha: f32,
    pub beta: f32,
}

impl Matmul {
    pub fn new(m: usize, n: usize, k: usize, a: View, b: View, c: View) -> Matmul {
        Matmul { m, n, k, batch1: 1, batch2: 1, a, b, c, bias_off: None, alpha: 1.0, beta: 0.0 }
    }
    pub fn batched(self, batch1: usize, batch2: usize) -> Matmul {
        Matmul { batch1, batch2, ..self }
    }
    pub fn bias(self, off: usize) -> Matmul {
        Matmul { bias_off: Some(off), ..self }
    }
    pub fn scale(self, alpha: f32, beta: f32) -> Matmul {
        Matmul { alpha, beta, ..self }
    }

    fn max_index(v: &View, rows: usize, cols: usize, b1: usize, b2: usize) -> usize {
        v.off + (b1 - 1) * v.b1 + (b2 - 1) * v.b2 + (rows - 1) * v.rs + (cols - 1) * v.cs
    }

    fn check(&self, a: usize, b: usize, c: usize, bias: Option<usize>) {
        assert_eq!(self.c.cs, 1, "matmul: C must have unit column stride");
        if self.m == 0 || self.n == 0 {
            return;
        }
        let (b1, b2) = (self.batch1, self.batch2);
        if self.k > 0 {
            assert!(Self::max_index(&self.a, self.m, self.k, b1, b2) < a, "matmul: A out of range {self:?}");
            assert!(Self::max_index(&self.b, self.k, self.n, b1, b2) < b, "matmul: B out of range {self:?}");
        }
        assert!(Self::max_index(&self.c, self.m, self.n, b1, b2) < c, "matmul: C out of range {self:?}");
        if let (Some(off), Some(len)) = (self.bias_off, bias) {
            assert!(off + self.n <= len, "matmul: bias out of range");
        }
    }

    /// The variant this product uses on `gpu` (forced, tuned or default: matmul_variants.rs).
    pub fn variant(&self, gpu: &Gpu) -> &'static Variant {
        super::matmul_variants::choose(self, gpu)
    }

    /// Whether the vec4-along-k kernel applies: both operands contiguous along k, and every
    /// offset and stride a multiple of 4 (16-byte aligned vec4 loads).
    pub fn nt4_ok(&self) -> bool {
        let (a, b) = (&self.a, &self.b);
        a.cs == 1
            && b.rs == 1
            && self.k.is_multiple_of(4)
            && self.k > 0
            && [a.off, a.rs, a.b1, a.b2, b.off, b.cs, b.b1, b.b2].iter().all(|v| v % 4 == 0)
    }

    /// Split-K plan `(chunk, slices)` for this product on a GPU, or `None` to run it whole:
    /// unbatched, no bias, C contiguous, few output tiles and a long k (weight gradients
    /// `dyᵀ x`, whose k is every token of the batch).
    pub fn split_k(&self, cpu_like: bool) -> Option<(usize, usize)> {
        if cpu_like || self.batch1 * self.batch2 != 1 || self.bias_off.is_some() || self.c.rs != self.n {
            return None;
        }
        self.split_plan()
    }

    /// On a CPU adapter whose driver caps an invocation's loops ([`Gpu::loop_limit`]): slices
    /// of k short enough for one invocation, summed afterwards; `None` when k fits.
    fn cpu_split(&self, gpu: &Gpu) -> Option<(usize, usize)> {
        if gpu.fits_one_invocation(self.k) {
            return None;
        }
        assert!(
            self.batch1 * self.batch2 == 1 && self.bias_off.is_none() && self.c.rs == self.n,
            "matmul: k = {} is too long for one invocation on this adapter and the product cannot be split",
            self.k
        );
        let chunk = (gpu.loop_limit.unwrap_or(usize::MAX) / 4).next_multiple_of(16).min(self.k);
        Some((chunk, self.k.div_ceil(chunk)))
    }

    fn split_plan(&self) -> Option<(usize, usize)> {
        let tiles = self.m.div_ceil(64) * self.n.div_ceil(64);
        if tiles >= SPLIT_TILES || self.k < 2 * SPLIT_MIN_K || self.m * self.n == 0 {
            return None;
        }
        let want = SPLIT_TILES
            .div_ceil(tiles)
            .min(self.k / SPLIT_MIN_K)
            .min((SPLIT_SCRATCH / (self.m * self.n)).max(1));
        // Slices start at multiples of 16 so vec4 loads stay aligned.
        let chunk = self.k.div_ceil(want.max(1)).next_multiple_of(16);
        let slices = self.k.div_ceil(chunk);
        (slices >= 2).then_some((chunk, slices))
    }

    /// The launches of this product: one, or on GPUs with [`Self::split_k`] the slices into a
    /// scratch buffer followed by their sum into C (with alpha and beta).
    pub fn dispatches(
        &self,
        gpu: &Gpu,
        a: &Tensor,
        b: &Tensor,
        bias: Option<&Tensor>,
        c: &Tensor,
    ) -> Vec<Dispatch> {
        let plan = if gpu.cpu_like { self.cpu_split(gpu) } else { self.split_k(false) };
        let Some((chunk, slices)) = plan else {
            return vec![self.dispatch(gpu, a, b, bias, c)];
        };
        self.check(a.numel(), b.numel(), c.numel(), None);
        let mn = self.m * self.n;
        let scratch = Tensor::zeros(gpu, &[slices * mn]);
        let (full, rem) = (self.k / chunk, self.k % chunk);
        let part = Matmul {
            k: chunk,
            batch1: full,
            batch2: 1,
            a: View { b1: chunk * self.a.cs, b2: 0, ..self.a },
            b: View { b1: chunk * self.b.rs, b2: 0, ..self.b },
            c: View { off: 0, rs: self.n, cs: 1, b1: mn, b2: 0 },
            alpha: 1.0,
            beta: 0.0,
            ..*self
        };
        let mut out = Vec::new();
        if full > 0 {
            out.push(part.dispatch(gpu, a, b, None, &scratch));
        }
        if rem > 0 {
            let tail = Matmul {
                k: rem,
                batch1: 1,
                a: part.a.at(self.a.off + full * chunk * self.a.cs),
                b: part.b.at(self.b.off + full * chunk * self.b.rs),
                c: part.c.at(full * mn),
                ..part
            };
            out.push(tail.dispatch(gpu, a, b, None, &scratch));
        }
        let sum = SumRows {
            n: mn,
            rows: slices,
            s_off: 0,
            rs: mn,
            o_off: self.c.off,
            alpha: self.alpha,
            beta: self.beta,
        };
        out.extend(sum.dispatches(gpu, &scratch, c));
        out
    }

    /// Builds one launch (no split-K). `bias` must be given iff `bias_off` is set.
    pub fn dispatch(&self, gpu: &Gpu, a: &Tensor, b: &Tensor, bias: Option<&Tensor>, c: &Tensor) -> Dispatch {
        assert_eq!(bias.is_some(), self.bias_off.is_some(), "matmul: bias tensor and offset disagree");
        self.check(a.numel(), b.numel(), c.numel(), bias.map(|t| t.numel()));
        self.dispatch_variant(gpu, self.variant(gpu), a, b, bias, c)
    }

    pub(crate) fn params(&self) -> Params {
        let view = |v: &View| [u(v.off), u(v.rs), u(v.cs), u(v.b1), u(v.b2)];
        Params {
            m: u(self.m),
            n: u(self.n),
            k: u(self.k),
            batch2: u(self.batch2),
            a: view(&self.a),
            b: view(&self.b),
            c_off: u(self.c.off),
            c_rs: u(self.c.rs),
            c_b1: u(self.c.b1),
            c_b2: u(self.c.b2),
            bias_off: u(self.bias_off.unwrap_or(0)),
            has_bias: self.bias_off.is_some() as u32,
            alpha: self.alpha,
            beta: self.beta,
            a_tw: 0,
            b_tw: 0,
        }
    }

    /// CPU reference (f64 accumulation).
    pub fn cpu(&self, a: &[f32], b: &[f32], bias: Option<&[f32]>, c: &mut [f32]) {
        self.check(a.len(), b.len(), c.len(), bias.map(|t| t.len()));
        for z1 in 0..self.batch1 {
            for z2 in 0..self.batch2 {
                let ab = self.a.off + z1 * self.a.b1 + z2 * self.a.b2;
                let bb = self.b.off + z1 * self.b.b1 + z2 * self.b.b2;
                let cb = self.c.off + z1 * self.c.b1 + z2 * self.c.b2;
                for i in 0..self.m {
                    for j in 0..self.n {
                        let mut s = 0f64;
                        for kk in 0..self.k {
                            s += a[ab + i * self.a.rs + kk * self.a.cs] as f64
                                * b[bb + kk * self.b.rs + j * self.b.cs] as f64;
                        }
                        if let (Some(off), Some(bias)) = (self.bias_off, bias) {
                            s += bias[off + j] as f64;
                        }
                        let idx = cb + i * self.c.rs + j;
                        let mut v = self.alpha as f64 * s;
                        if self.beta != 0.0 {
                            v += self.beta as f64 * c[idx] as f64;
                        }
                        c[idx] = v as f32;
                    }
                }
            }
        }
    }
}

//! Weight and activation fake quantizers (shaders/quant.wgsl, docs/method.md §3).

use super::u;
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, grid1d};

pub const SOURCE: &str = with_fake_quant!("../../shaders/quant.wgsl");

/// Mirrors the shader's `Params` block (quant.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    off: u32,
    rs: u32,
    site: u32,
    bits: u32,
    threads: u32,
    lsq_scale: f32,
    site_k: u32,
    site_v: u32,
    pad: [u32; 2],
}

/// The division helpers with a test entry point (`div_check`): see `tests/quant_kernels.rs`.
pub const DIV_CHECK_SOURCE: &str =
    concat!(include_str!("../../shaders/exact_div.wgsl"), include_str!("../../shaders/exact_div_check.wgsl"));
/// For tests: `div_exact` and `lsq_quotient` with a simulated inexact division (see the shader).
pub const DIV_CHECK: Kernel = Kernel {
    id: "div_check",
    source: DIV_CHECK_SOURCE,
    entry: "div_check",
    storage: &[(1, false), (2, false), (3, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const WEIGHT: Kernel = Kernel {
    id: "weight_quant",
    source: SOURCE,
    entry: "weight_quant",
    storage: &[(1, false), (2, true), (13, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const FORWARD: Kernel = Kernel {
    id: "act_quant_forward",
    source: SOURCE,
    entry: "act_quant_forward",
    storage: &[(1, false), (2, true), (3, false), (4, false)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const FORWARD_QKV: Kernel = Kernel {
    id: "act_quant_forward_qkv",
    source: SOURCE,
    entry: "act_quant_forward_qkv",
    storage: &[(1, false), (2, true), (3, false), (4, false)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const STATS: Kernel = Kernel {
    id: "act_quant_stats",
    source: SOURCE,
    entry: "act_quant_stats",
    storage: &[(1, false), (7, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const INIT: Kernel = Kernel {
    id: "act_quant_init",
    source: SOURCE,
    entry: "act_quant_init",
    storage: &[(5, true), (6, true), (8, false)],
    workgroup: 1,
    constants: &[],
    textures: &[],
};
pub const BACKWARD: Kernel = Kernel {
    id: "act_quant_backward",
    source: SOURCE,
    entry: "act_quant_backward",
    storage: &[(1, false), (3, false), (4, false), (7, true), (9, false), (10, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const MASK: Kernel = Kernel {
    id: "act_quant_mask",
    source: SOURCE,
    entry: "act_quant_mask",
    storage: &[(1, false), (3, false), (4, false), (9, false), (10, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const MASK_QKV: Kernel = Kernel {
    id: "act_quant_mask_qkv",
    source: SOURCE,
    entry: "act_quant_mask_qkv",
    storage: &[(1, false), (3, false), (4, false), (9, false), (10, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const GRAD: Kernel = Kernel {
    id: "act_quant_grad",
    source: SOURCE,
    entry: "act_quant_grad",
    storage: &[(4, false), (8, false), (11, true)],
    workgroup: 1,
    constants: &[],
    textures: &[],
};
/// [`GRAD`] for GPUs: a 256-invocation tree reduction in workgroup memory.
pub const GRAD_WG: Kernel = Kernel {
    id: "act_quant_grad_wg",
    source: SOURCE,
    entry: "act_quant_grad_wg",
    storage: &[(4, false), (8, false), (11, true)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};

pub const MINMAX_PARTIAL: Kernel = Kernel {
    id: "act_minmax_partial",
    source: SOURCE,
    entry: "act_minmax_partial",
    storage: &[(1, false), (7, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const MINMAX_MERGE: Kernel = Kernel {
    id: "act_minmax_merge",
    source: SOURCE,
    entry: "act_minmax_merge",
    storage: &[(8, false), (12, true)],
    workgroup: 1,
    constants: &[],
    textures: &[],
};

/// Floats per quantizer in the `qparams` (alpha, z) and `qmeta` (QN, QP, g, signed) buffers.
pub const PARAMS_PER_SITE: usize = 2;
pub const META_PER_SITE: usize = 4;

/// Largest number of partial sums a reduction uses (size of the shared partials buffer / 2).
pub const MAX_PARTIALS: usize = 16384;

/// Invocations of a grid-stride reduction over `n` elements.
fn reduction_threads(n: usize) -> usize {
    (n / 16).clamp(64, MAX_PARTIALS).div_ceil(64) * 64
}

/// A strided 2-d region `rows x cols` at `off` with row stride `rs` of a buffer.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    pub rows: usize,
    pub cols: usize,
    pub off: usize,
    pub rs: usize,
}

impl Region {
    pub fn whole(n: usize) -> Region {
        Region { rows: 1, cols: n, off: 0, rs: n }
    }
    pub fn numel(&self) -> usize {
        self.rows * self.cols
    }
    fn check(&self, len: usize) {
        if self.numel() > 0 {
            assert!(
                self.off + (self.rows - 1) * self.rs + self.cols <= len,
                "quant region out of range {self:?}"
            );
        }
    }
    fn params(&self, site: usize, bits: u32, threads: usize, lsq_scale: f32) -> Params {
        let (rows, cols, off, rs) = (u(self.rows), u(self.cols), u(self.off), u(self.rs));
        let (site_k, site_v, pad) = (0, 0, [0; 2]);
        Params {
            rows,
            cols,
            off,
            rs,
            site: u(site),
            bits,
            threads: u(threads),
            lsq_scale,
            site_k,
            site_v,
            pad,
        }
    }
    /// Element index of the i-th region element.
    pub fn element(&self, i: usize) -> usize {
        self.off + (i / self.cols) * self.rs + i % self.cols
    }
}

/// Fake-quantized weight `w_hat` from `w` [rows, cols] (per-row symmetric min-max); the
/// per-row multipliers s (w_hat = q / s with integer q) go to `scales` [rows].
pub fn weight_quant(
    gpu: &Gpu,
    rows: usize,
    cols: usize,
    bits: u32,
    w: &Tensor,
    w_hat: &Tensor,
    scales: &Tensor,
) -> Dispatch {
    assert!(w.numel() == rows * cols && w_hat.numel() == rows * cols && scales.numel() >= rows);
    let params = Region { rows, cols, off: 0, rs: cols }.params(0, bits, 0, 0.0);
    gpu.dispatch(&WEIGHT, &params, &[w, w_hat, scales], grid1d(rows, 64))
}

/// The GPU state of every activation quantizer of a model.
pub struct ActQuantState {
    /// (alpha, z) per quantizer: trained.
    pub qparams: Tensor,
    /// Gradients of `qparams`.
    pub qgrad: Tensor,
    /// (QN, QP, g, signed) per quantizer: set at initialisation.
    pub qmeta: Tensor,
}

impl ActQuantState {
    pub fn new(gpu: &Gpu, sites: usize) -> ActQuantState {
        ActQuantState {
            qparams: Tensor::zeros(gpu, &[sites, PARAMS_PER_SITE]),
            qgrad: Tensor::zeros(gpu, &[sites, PARAMS_PER_SITE]),
            qmeta: Tensor::zeros(gpu, &[sites, META_PER_SITE]),
        }
    }
}

/// One activation quantizer, as the kernels that apply it inside another op (fused LayerNorm,
/// softmax and GELU launches) bind it: `state.qparams`, `state.qmeta` and the site index.
#[derive(Clone, Copy)]
pub struct Site<'a> {
    pub state: &'a ActQuantState,
    pub index: usize,
}

impl Site<'_> {
    pub fn index(&self) -> u32 {
        u(self.index)
    }
}

/// Elements each invocation of the activation quantizer's forward handles.
const FORWARD_ELEMENTS: usize = 8;

/// `xq = fake_quant(x)` on `region` (the same region of both buffers).
pub fn act_forward(
    gpu: &Gpu,
    st: &ActQuantState,
    site: usize,
    region: Region,
    x: &Tensor,
    xq: &Tensor,
) -> Dispatch {
    region.check(x.numel());
    region.check(xq.numel());
    let threads = region.numel().div_ceil(FORWARD_ELEMENTS).max(1);
    gpu.dispatch(
        &FORWARD,
        &region.params(site, 0, threads, 0.0),
        &[x, xq, &st.qparams, &st.qmeta],
        grid1d(threads, 64),
    )
}

/// LSQ initialisation of quantizer `site` from `x` (two launches: partial stats, finalize).
#[allow(clippy::too_many_arguments)]
pub fn act_init(
    gpu: &Gpu,
    st: &ActQuantState,
    site: usize,
    bits: u32,
    lsq_scale: f32,
    region: Region,
    x: &Tensor,
    partials: &Tensor,
) -> [Dispatch; 2] {
    region.check(x.numel());
    let threads = reduction_threads(region.numel());
    assert!(partials.numel() >= 2 * threads);
    let params = region.params(site, bits, threads, lsq_scale);
    [
        gpu.dispatch(&STATS, &params, &[x, partials], grid1d(threads, 64)),
        gpu.dispatch(&INIT, &params, &[&st.qparams, &st.qmeta, partials], [1, 1, 1]),
    ]
}

/// Backward: `dx = dxq * [in range]` on `region`, and `qgrad[site]` (overwritten). The zero
/// point's gradient is multiplied by `z_grad` (1: the authors' code; 0: z frozen; negative:
/// LSQ's g, like alpha's).
#[allow(clippy::too_many_arguments)]
pub fn act_backward(
    gpu: &Gpu,
    st: &ActQuantState,
    site: usize,
    region: Region,
    x: &Tensor,
    dxq: &Tensor,
    dx: &Tensor,
    partials: &Tensor,
    z_grad: f32,
) -> [Dispatch; 2] {
    region.check(x.numel());
    region.check(dx.numel());
    let threads = reduction_threads(region.numel());
    assert!(partials.numel() >= 2 * threads);
    let params = region.params(site, 0, threads, z_grad);
    [
        gpu.dispatch(
            &BACKWARD,
            &params,
            &[x, &st.qparams, &st.qmeta, partials, dxq, dx],
            grid1d(threads, 64),
        ),
        gpu.dispatch(
            if gpu.cpu_like { &GRAD } else { &GRAD_WG },
            &params,
            &[&st.qmeta, partials, &st.qgrad],
            [1, 1, 1],
        ),
    ]
}

/// Image synthesis: `dx = dxq [in range]` on `region`, the input gradient of [`act_backward`]
/// without the step gradients (which image synthesis does not use).
pub fn act_mask(gpu: &Gpu, site: Site, region: Region, x: &Tensor, dxq: &Tensor, dx: &Tensor) -> Dispatch {
    region.check(x.numel());
    region.check(dx.numel());
    region.check(dxq.numel());
    let threads = region.numel().div_ceil(FORWARD_ELEMENTS).max(1);
    let (qp, qm) = (&site.state.qparams, &site.state.qmeta);
    let params = region.params(site.index, 0, threads, 0.0);
    gpu.dispatch(&MASK, &params, &[x, qp, qm, dxq, dx], grid1d(threads, 64))
}

/// q's, k's and v's quantizers (`sites`) on the fused qkv matrix [rows, 3 cols] in one launch.
pub fn act_forward_qkv(
    gpu: &Gpu,
    st: &ActQuantState,
    sites: [usize; 3],
    rows: usize,
    cols: usize,
    x: &Tensor,
    xq: &Tensor,
) -> Dispatch {
    let (params, grid) = qkv_params(sites, rows, cols, &[x, xq]);
    gpu.dispatch(&FORWARD_QKV, &params, &[x, xq, &st.qparams, &st.qmeta], grid)
}

/// The parameters and grid of the launches over a whole fused qkv matrix.
fn qkv_params([q, k, v]: [usize; 3], rows: usize, cols: usize, ts: &[&Tensor]) -> (Params, [u32; 3]) {
    let n = 3 * rows * cols;
    assert!(ts.iter().all(|t| t.numel() == n), "qkv quantizers: buffers are not [rows, 3 cols]");
    let threads = n.div_ceil(FORWARD_ELEMENTS).max(1);
    let region = Region { rows, cols, off: 0, rs: 3 * cols };
    let params = Params { site_k: u(k), site_v: u(v), ..region.params(q, 0, threads, 0.0) };
    (params, grid1d(threads, 64))
}

/// Image synthesis: `dx = dxq [in range]` on the fused qkv gradient [rows, 3 cols], q's columns
/// through quantizer `q`, k's through `k`, v's through `v` (the masks of three `act_backward`s
/// in one launch, without their step gradients); `x` is qkv.
#[allow(clippy::too_many_arguments)]
pub fn act_mask_qkv(
    gpu: &Gpu,
    st: &ActQuantState,
    sites: [usize; 3],
    rows: usize,
    cols: usize,
    x: &Tensor,
    dxq: &Tensor,
    dx: &Tensor,
) -> Dispatch {
    let (params, grid) = qkv_params(sites, rows, cols, &[x, dxq, dx]);
    gpu.dispatch(&MASK_QKV, &params, &[x, &st.qparams, &st.qmeta, dxq, dx], grid)
}

/// Folds the (min, max) of `region` of `x` into the running `qcalib[site]` (calibration).
pub fn act_minmax(
    gpu: &Gpu,
    qcalib: &Tensor,
    site: usize,
    region: Region,
    x: &Tensor,
    partials: &Tensor,
) -> [Dispatch; 2] {
    region.check(x.numel());
    let threads = reduction_threads(region.numel());
    assert!(partials.numel() >= 2 * threads && qcalib.numel() > 2 * site + 1);
    let params = region.params(site, 0, threads, 0.0);
    [
        gpu.dispatch(&MINMAX_PARTIAL, &params, &[x, partials], grid1d(threads, 64)),
        gpu.dispatch(&MINMAX_MERGE, &params, &[partials, qcalib], [1, 1, 1]),
    ]
}

/// Min-max quantizer state for an observed range: the signedness rule of LSQ's initialisation,
/// alpha spreading [min, max] over the integer range and z mapping min to QN:
/// (alpha, z, QN, QP). A degenerate range gets a tiny step.
pub fn minmax_state(min: f32, max: f32, bits: u32) -> (f32, f32, f32, f32) {
    let (qn, qp) = range(bits, min < 1e-5);
    let alpha = ((max - min) / (qp - qn)).max(1e-8);
    (alpha, qn - min / alpha, qn, qp)
}

/// The integer range of a signed or unsigned `bits`-bit quantizer.
pub fn range(bits: u32, signed: bool) -> (f32, f32) {
    if signed {
        (-((1u32 << (bits - 1)) as f32), ((1u32 << (bits - 1)) - 1) as f32)
    } else {
        (0.0, ((1u32 << bits) - 1) as f32)
    }
}

/// CPU reference of `weight_quant`.
pub fn cpu_weight_quant(rows: usize, cols: usize, bits: u32, w: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    let (lo, hi) = range(bits, true);
    for r in 0..rows {
        let row = &w[r * cols..(r + 1) * cols];
        let m = row.iter().fold(0f32, |a, &v| a.max(v.abs()));
        let s = ((1u32 << bits) - 1) as f32 / (2.0 * m).max(1e-8);
        for j in 0..cols {
            out[r * cols + j] = (s * row[j]).round_ties_even().clamp(lo, hi) / s;
        }
    }
    out
}

/// LSQ initial state from the first tensor: (alpha, z, QN, QP, g, signed).
pub fn cpu_init(x0: &[f32], bits: u32, lsq_scale: f32) -> (f32, f32, f32, f32, f32, bool) {
    let mn = x0.iter().cloned().fold(f32::INFINITY, f32::min);
    let mean = x0.iter().map(|v| v.abs() as f64).sum::<f64>() / x0.len() as f64;
    let signed = mn < 1e-5;
    let (qn, qp) = range(bits, signed);
    let alpha = (2.0 * mean / (qp as f64).sqrt()) as f32;
    let z = 0.1 * (mn - alpha * qp);
    let g = (lsq_scale as f64 / ((x0.len() as f64) * qp as f64).sqrt()) as f32;
    (alpha, z, qn, qp, g, signed)
}

/// CPU reference of the LSQ forward.
pub fn cpu_act_forward(x: &[f32], alpha: f32, z: f32, qn: f32, qp: f32) -> Vec<f32> {
    let zr = z.round_ties_even();
    x.iter().map(|&v| ((v / alpha + zr).clamp(qn, qp).round_ties_even() - zr) * alpha).collect()
}

/// CPU reference of the LSQ backward: (dx, dalpha, dz).
pub fn cpu_act_backward(
    x: &[f32],
    dy: &[f32],
    alpha: f32,
    z: f32,
    qn: f32,
    qp: f32,
    g: f32,
) -> (Vec<f32>, f32, f32) {
    let zr = z.round_ties_even();
    let mut dx = vec![0f32; x.len()];
    let (mut ga, mut gz) = (0f64, 0f64);
    for i in 0..x.len() {
        let xa = x[i] / alpha;
        let v = xa + zr;
        if v >= qn && v <= qp {
            dx[i] = dy[i];
            ga += dy[i] as f64 * ((v.round_ties_even() - zr) - xa) as f64;
        } else {
            ga += dy[i] as f64 * (v.clamp(qn, qp) - zr) as f64;
            gz -= dy[i] as f64 * alpha as f64;
        }
    }
    (dx, (ga * g as f64) as f32, gz as f32)
}

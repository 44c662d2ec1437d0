//! MaskAQ's attention objectives for image synthesis (shaders/objectives.wgsl, spec 2.1-2.4):
//! inter-head attention SSIM, patch-similarity entropy, the informative-region mask, and the
//! masked P-Q attention alignment. Each launch works on one block's tap; gradients are added
//! into the tap's gradient buffer. The CPU references compute the values in f64; the tests
//! check the GPU gradients against finite differences of them and against PyTorch autograd.

use super::u;
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, grid1d};

pub const SOURCE: &str = include_str!("../../shaders/objectives.wgsl");

/// Mirrors the shader's `Params` block (objectives.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    h: u32,
    n: u32,
    prefix: u32,
    g: u32,
    np: u32,
    sub: u32,
    off: u32,
    coef: f32,
    c1: f32,
    c2: f32,
    first: u32,
}

const fn k(id: &'static str, storage: &'static [(u32, bool)]) -> Kernel {
    Kernel { id, source: SOURCE, entry: id, storage, workgroup: 64, constants: &[], textures: &[] }
}

pub const SSIM_HEADS: Kernel = k("ssim_heads", &[(1, false), (3, true), (5, true)]);
/// [`SSIM_HEADS`] for GPUs: one 256-wide workgroup per (image, query patch).
pub const SSIM_HEADS_WG: Kernel = Kernel {
    id: "ssim_heads_wg",
    source: SOURCE,
    entry: "ssim_heads_wg",
    storage: &[(1, false), (3, true), (5, true)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};
pub const ENTROPY_ROWS: Kernel = k("entropy_rows", &[(1, false), (6, true), (8, true), (10, false)]);
pub const ENTROPY_GRAM: Kernel = k("entropy_gram", &[(7, false), (11, true)]);
pub const ENTROPY_VAR: Kernel = k("entropy_var", &[(12, false), (8, true), (5, true)]);
/// [`ENTROPY_VAR`] for GPUs: one 256-wide workgroup per image.
pub const ENTROPY_VAR_WG: Kernel = Kernel {
    id: "entropy_var_wg",
    source: SOURCE,
    entry: "entropy_var_wg",
    storage: &[(12, false), (8, true), (5, true)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};
pub const ENTROPY_BACKWARD: Kernel =
    k("entropy_backward", &[(3, true), (7, false), (9, false), (10, false), (12, false)]);
/// [`ENTROPY_BACKWARD`] for GPUs: one 256-wide workgroup per sampled row.
pub const ENTROPY_BACKWARD_WG: Kernel = Kernel {
    id: "entropy_backward_wg",
    source: SOURCE,
    entry: "entropy_backward_wg",
    storage: &[(3, true), (7, false), (9, false), (10, false), (12, false)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};
pub const CLS_MEAN: Kernel = k("cls_mean", &[(1, false), (6, true)]);
pub const MASK_TOPK: Kernel = k("mask_topk", &[(7, false), (11, true), (14, false)]);
pub const MASK_DROP: Kernel = k("mask_drop", &[(11, true), (12, false), (13, false), (14, false)]);
pub const MASK_COUNT: Kernel = Kernel {
    id: "mask_count",
    source: SOURCE,
    entry: "mask_count",
    storage: &[(12, false), (15, true)],
    workgroup: 1,
    constants: &[],
    textures: &[],
};
pub const MASKED_ALIGNMENT: Kernel = k(
    "masked_alignment",
    &[(1, false), (2, false), (3, true), (4, true), (5, true), (12, false), (16, false)],
);

/// Largest head count the SSIM kernel handles (its per-invocation arrays).
pub const MAX_HEADS: usize = 32;
/// SSIM constants of MimiQ's attention-map SSIM.
pub const C1: f32 = 0.01 * 0.01;
pub const C2: f32 = 0.03 * 0.03;

/// The shape of one block's attention tap [B, H, N, N] and where its patches are.
#[derive(Clone, Copy, Debug)]
pub struct AttnDims {
    pub b: usize,
    pub h: usize,
    pub n: usize,
    pub prefix: usize,
    /// Side of the square patch grid (np = g * g = n - prefix).
    pub g: usize,
}

impl AttnDims {
    pub fn np(&self) -> usize {
        self.g * self.g
    }
    fn params(&self, sub: usize, off: usize, coef: f32, first: bool) -> Params {
        assert_eq!(self.np() + self.prefix, self.n, "tap tokens must be prefix + G*G patches");
        Params {
            b: u(self.b),
            h: u(self.h),
            n: u(self.n),
            prefix: u(self.prefix),
            g: u(self.g),
            np: u(self.np()),
            sub: u(sub),
            off: u(off),
            coef,
            c1: C1,
            c2: C2,
            first: first as u32,
        }
    }
    fn tap_len(&self) -> usize {
        self.b * self.h * self.n * self.n
    }
}

/// Inter-head SSIM loss of one block (spec 2.1): adds `coef * sum (1 - ssim^2)` partials at
/// `partial[off..off + B*np]` and its gradient into `da`. For the spec's mean over
/// (L, B*np, H, H), coef = weight / (L * B * np * H * H).
pub fn ssim_heads(
    gpu: &Gpu,
    d: &AttnDims,
    coef: f32,
    a: &Tensor,
    da: &Tensor,
    partial: &Tensor,
    off: usize,
) -> Dispatch {
    assert!(d.h <= MAX_HEADS, "inter-head SSIM supports at most {MAX_HEADS} heads");
    assert!(a.numel() == d.tap_len() && da.numel() == d.tap_len() && partial.numel() >= off + d.b * d.np());
    let params = d.params(0, off, coef, false);
    // The serial kernel's loops per (image, query): statistics, pairs, then per head its pairs
    // again and two sweeps over keys and heads.
    let serial = d.np() * d.h * (2 + 4 * d.h);
    if gpu.cpu_like && gpu.fits_one_invocation(serial) {
        gpu.dispatch(&SSIM_HEADS, &params, &[a, da, partial], grid1d(d.b * d.np(), 64))
    } else {
        // One workgroup per (b, q), folded into y past 65535 (`grid1d` with groups of 1).
        gpu.dispatch(&SSIM_HEADS_WG, &params, &[a, da, partial], grid1d(d.b * d.np(), 1))
    }
}

/// Scratch buffers of the entropy objective.
pub struct EntropyScratch {
    rows: Tensor,
    stats: Tensor,
    gram: Tensor,
    pub sub: usize,
}

impl EntropyScratch {
    /// For `sub` sampled rows per image (the spec samples 64, or all patches if fewer).
    pub fn new(gpu: &Gpu, d: &AttnDims, sub: usize) -> EntropyScratch {
        EntropyScratch {
            rows: Tensor::zeros(gpu, &[d.b * sub * d.np()]),
            stats: Tensor::zeros(gpu, &[d.b * sub + 2 * d.b]),
            gram: Tensor::zeros(gpu, &[d.b * sub * sub]),
            sub,
        }
    }
}

/// Patch-similarity entropy of one block (spec 2.2) for the rows `subset` [B, sub] (patch
/// indices as f32): partials `-coef h_b` at `partial[off..off + B]` (coef = weight / (L B)),
/// gradient into `da`.
#[allow(clippy::too_many_arguments)]
pub fn entropy(
    gpu: &Gpu,
    d: &AttnDims,
    coef: f32,
    a: &Tensor,
    subset: &Tensor,
    da: &Tensor,
    partial: &Tensor,
    off: usize,
    s: &EntropyScratch,
) -> [Dispatch; 4] {
    let sub = s.sub;
    assert!(sub >= 1 && sub <= d.np() && subset.numel() >= d.b * sub);
    assert!(a.numel() == d.tap_len() && da.numel() == d.tap_len() && partial.numel() >= off + d.b);
    let params = d.params(sub, off, coef, false);
    [
        gpu.dispatch(&ENTROPY_ROWS, &params, &[a, &s.rows, &s.stats, subset], grid1d(d.b * sub, 64)),
        gpu.dispatch(&ENTROPY_GRAM, &params, &[&s.rows, &s.gram], grid1d(d.b * sub * sub, 64)),
        if gpu.cpu_like {
            gpu.dispatch(&ENTROPY_VAR, &params, &[&s.gram, &s.stats, partial], grid1d(d.b, 64))
        } else {
            gpu.dispatch(
                &ENTROPY_VAR_WG,
                &params,
                &[&s.gram, &s.stats, partial],
                [u32::try_from(d.b).unwrap(), 1, 1],
            )
        },
        if gpu.cpu_like {
            gpu.dispatch(
                &ENTROPY_BACKWARD,
                &params,
                &[da, &s.rows, &s.stats, subset, &s.gram],
                grid1d(d.b * sub, 64),
            )
        } else {
            // One workgroup per row, folded into y past 65535 rows (`grid1d` with groups of 1).
            gpu.dispatch(
                &ENTROPY_BACKWARD_WG,
                &params,
                &[da, &s.rows, &s.stats, subset, &s.gram],
                grid1d(d.b * sub, 1),
            )
        },
    ]
}

/// `cls[b, j] (+)= coef * mean_h A[b, h, 0, prefix + j]` (`first` overwrites).
pub fn cls_mean(gpu: &Gpu, d: &AttnDims, coef: f32, first: bool, a: &Tensor, cls: &Tensor) -> Dispatch {
    assert!(a.numel() == d.tap_len() && cls.numel() >= d.b * d.np());
    gpu.dispatch(&CLS_MEAN, &d.params(0, 0, coef, first), &[a, cls], grid1d(d.b * d.np(), 64))
}

/// The informative-region mask (spec 2.3) from the layer/head-averaged CLS logits `cls`:
/// top-`hyper[0]` patches per image into `topk`, then `hyper[1]` of them kept by smallest
/// random key (`keys` [B, np], uniform) into `mask`; `count[0]` = patches kept over the batch.
#[allow(clippy::too_many_arguments)]
pub fn mask_select(
    gpu: &Gpu,
    d: &AttnDims,
    cls: &Tensor,
    hyper: &Tensor,
    keys: &Tensor,
    topk: &Tensor,
    mask: &Tensor,
    count: &Tensor,
) -> [Dispatch; 3] {
    let params = d.params(0, 0, 0.0, false);
    let n = d.b * d.np();
    assert!(
        cls.numel() >= n && keys.numel() >= n && topk.numel() >= n && mask.numel() >= n && hyper.numel() >= 2
    );
    [
        gpu.dispatch(&MASK_TOPK, &params, &[cls, topk, hyper], grid1d(n, 64)),
        gpu.dispatch(&MASK_DROP, &params, &[mask, topk, keys, hyper], grid1d(n, 64)),
        gpu.dispatch(&MASK_COUNT, &params, &[mask, count], [1, 1, 1]),
    ]
}

/// Masked attention alignment of one block (spec 2.4): partials at `partial[off..off+B*np]`
/// (coef = weight / L), gradients into both taps' buffers.
#[allow(clippy::too_many_arguments)]
pub fn masked_alignment(
    gpu: &Gpu,
    d: &AttnDims,
    coef: f32,
    a_p: &Tensor,
    a_q: &Tensor,
    da_p: &Tensor,
    da_q: &Tensor,
    mask: &Tensor,
    count: &Tensor,
    partial: &Tensor,
    off: usize,
) -> Dispatch {
    assert!(
        a_p.numel() == d.tap_len() && a_q.numel() == d.tap_len() && partial.numel() >= off + d.b * d.np()
    );
    gpu.dispatch(
        &MASKED_ALIGNMENT,
        &d.params(0, off, coef, false),
        &[a_p, a_q, da_p, da_q, partial, mask, count],
        grid1d(d.b * d.np(), 64),
    )
}

// ---- CPU references (f64 values) ------------------------------------------------------------

fn tap(d: &AttnDims, a: &[f64], b: usize, h: usize, r: usize, c: usize) -> f64 {
    a[((b * d.h + h) * d.n + r) * d.n + c]
}

/// The logit the mask and the alignment read for key patch j: the class token's row, or with no
/// class token (Swin) the mean over every query row; averaged over heads.
fn query_value(d: &AttnDims, a: &[f64], b: usize, j: usize) -> f64 {
    let rows: Vec<usize> = if d.prefix > 0 { vec![0] } else { (0..d.n).collect() };
    let s: f64 = (0..d.h)
        .flat_map(|h| rows.iter().map(move |&r| (h, r)))
        .map(|(h, r)| tap(d, a, b, h, r, d.prefix + j))
        .sum();
    s / (d.h * rows.len()) as f64
}

/// Inter-head SSIM loss: mean over (B*np, H, H) of 1 - ssim^2 for one block.
pub fn cpu_ssim_heads(d: &AttnDims, a: &[f64]) -> f64 {
    let (np, c1, c2) = (d.np(), C1 as f64, C2 as f64);
    let mut total = 0.0;
    for b in 0..d.b {
        for q in 0..np {
            let rows: Vec<Vec<f64>> = (0..d.h)
                .map(|h| {
                    let r: Vec<f64> = (0..np).map(|j| tap(d, a, b, h, d.prefix + q, d.prefix + j)).collect();
                    let lo = r.iter().cloned().fold(f64::INFINITY, f64::min);
                    let hi = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    r.iter().map(|v| (v - lo) / (hi - lo + 1e-8)).collect()
                })
                .collect();
            let n = np as f64;
            for x in 0..d.h {
                for y in 0..d.h {
                    let (sx, sy) = (&rows[x], &rows[y]);
                    let mx = sx.iter().sum::<f64>() / n;
                    let my = sy.iter().sum::<f64>() / n;
                    let vx = sx.iter().map(|v| v * v).sum::<f64>() / n - mx * mx;
                    let vy = sy.iter().map(|v| v * v).sum::<f64>() / n - my * my;
                    let cov = sx.iter().zip(sy).map(|(p, q)| p * q).sum::<f64>() / n - mx * my;
                    let s =
                        (2.0 * mx * my + c1) * (2.0 * cov + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2));
                    total += 1.0 - s * s;
                }
            }
        }
    }
    total / (d.b * np * d.h * d.h) as f64
}

/// Patch-similarity entropy loss (-mean_b h_b) for one block and row subset [B, sub].
pub fn cpu_entropy(d: &AttnDims, a: &[f64], subset: &[usize], sub: usize) -> f64 {
    let np = d.np();
    let mut total = 0.0;
    for b in 0..d.b {
        let rows: Vec<Vec<f64>> = (0..sub)
            .map(|r| {
                let pr = subset[b * sub + r];
                let u: Vec<f64> = (0..np)
                    .map(|k| {
                        (0..d.h).map(|h| tap(d, a, b, h, d.prefix + pr, d.prefix + k)).sum::<f64>()
                            / d.h as f64
                    })
                    .collect();
                let norm = u.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-6);
                u.iter().map(|v| v / norm).collect()
            })
            .collect();
        let mut g = Vec::with_capacity(sub * sub);
        for i in 0..sub {
            for j in 0..sub {
                g.push(rows[i].iter().zip(&rows[j]).map(|(p, q)| p * q).sum::<f64>());
            }
        }
        let m = g.len() as f64;
        let mean = g.iter().sum::<f64>() / m;
        let var = g.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / m + 1e-8;
        total += 0.5 * ((2.0 * std::f64::consts::PI * std::f64::consts::E).ln() + var.ln());
    }
    -total / d.b as f64
}

/// Masked alignment loss of one block (mask [B, np]).
pub fn cpu_masked_alignment(d: &AttnDims, a_p: &[f64], a_q: &[f64], mask: &[f64]) -> f64 {
    let count: f64 = mask.iter().sum();
    let mut s = 0.0;
    for b in 0..d.b {
        for j in 0..d.np() {
            let (mp, mq) = (query_value(d, a_p, b, j), query_value(d, a_q, b, j));
            s += (mp - mq).abs() * mask[b * d.np() + j];
        }
    }
    s / (count + 1e-8)
}

/// Head-averaged CLS logits [B, np] of one block (no class token: query means, see `query_value`).
pub fn cpu_cls_mean(d: &AttnDims, a: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; d.b * d.np()];
    for b in 0..d.b {
        for j in 0..d.np() {
            out[b * d.np() + j] = query_value(d, a, b, j);
        }
    }
    out
}

/// Top-k indicator per image (ties: lower index first).
pub fn cpu_topk(values: &[f64], b: usize, np: usize, k: usize) -> Vec<f64> {
    let mut out = vec![0.0; b * np];
    for bi in 0..b {
        let row = &values[bi * np..(bi + 1) * np];
        let mut idx: Vec<usize> = (0..np).collect();
        idx.sort_by(|&x, &y| row[y].total_cmp(&row[x]).then(x.cmp(&y)));
        for &i in idx.iter().take(k) {
            out[bi * np + i] = 1.0;
        }
    }
    out
}

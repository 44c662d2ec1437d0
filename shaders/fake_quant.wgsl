
// ---- the LSQ activation fake quantizer as functions (appended, with exact_div.wgsl) -----------
// One definition for every kernel that applies an activation quantizer: the quantizer kernels
// of quant.wgsl, and the fused ones that write a quantized copy of what they produce (LayerNorm,
// softmax, GELU) or apply the quantizer's straight-through mask to the gradient they read.
// A kernel using it declares `qparams` and `qmeta` (per-quantizer state, see quant.wgsl).

// Tests only: simulates an adapter whose division is off by this many ULP (Gpu::div_error_ulp).
override div_error_ulp: i32 = 0;

// The adapter's a / b, where no rounding decision depends on it.
fn adapter_div(a: f32, b: f32) -> f32 {
    let q = a / b;
    if (div_error_ulp == 0 || q == 0.0) { return q; }
    return bitcast<f32>(bitcast<i32>(q) + div_error_ulp);
}

// Quantizer `site`'s step alpha, rounded zero point z' and integer range [QN, QP].
struct QSite { alpha: f32, zr: f32, qn: f32, qp: f32 }

fn qsite(site: u32) -> QSite {
    return QSite(qparams[2u * site], round(qparams[2u * site + 1u]), qmeta[4u * site], qmeta[4u * site + 1u]);
}

// x / alpha, exact where a rounding decision depends on it (lsq_quotient).
fn q_quotient(x: f32, s: QSite) -> f32 {
    return lsq_quotient(adapter_div(x, s.alpha), x, s.alpha, s.zr, s.qn, s.qp);
}

// x_hat = (round(clamp(x / alpha + z', QN, QP)) - z') alpha.
fn fake_quant(x: f32, s: QSite) -> f32 {
    let v = clamp(q_quotient(x, s) + s.zr, s.qn, s.qp);
    return (round(v) - s.zr) * s.alpha;
}

// The straight-through mask: whether x / alpha + z' lies in [QN, QP].
fn in_range(x: f32, s: QSite) -> bool {
    let v = q_quotient(x, s) + s.zr;
    return v >= s.qn && v <= s.qp;
}

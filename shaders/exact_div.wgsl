
// ---- correctly rounded division (appended to the quantizer shaders) ---------------------------
// Vulkan allows OpFDiv an error of 2.5 ULP (NVIDIA's is a reciprocal times the numerator), while
// PyTorch divides with IEEE rounding. A quantizer rounds its quotient to an integer, and where
// the quotient sits at a rounding tie one ULP decides the code: the row extreme of every weight
// row lands at exactly (2^b - 1) / 2, so an inexact divide flips about half of those codes. These
// helpers make every rounding decision of the quantizers the one IEEE division gives, using only
// integer arithmetic (exact on every adapter) where it matters.

// a / b rounded to nearest even, by integer long division of the significands. Zero, subnormal,
// infinite or NaN operands and quotients outside the normal range use the adapter's division
// (no rounding tie of a quantizer lies there).
fn div_exact(a: f32, b: f32) -> f32 {
    let ua = bitcast<u32>(a);
    let ub = bitcast<u32>(b);
    let ea = i32((ua >> 23u) & 0xffu);
    let eb = i32((ub >> 23u) & 0xffu);
    if (ea == 0 || ea == 255 || eb == 0 || eb == 255) { return a / b; }
    let mb = (ub & 0x7fffffu) | 0x800000u;
    var r = (ua & 0x7fffffu) | 0x800000u;
    var e = ea - eb + 127;
    if (r < mb) {
        r = r << 1u;
        e -= 1;
    }
    // Now 1 <= r / mb < 2: 24 quotient bits and a guard bit; r stays below 2 mb < 2^25.
    var q = 0u;
    for (var i = 0u; i < 25u; i++) {
        q = q << 1u;
        if (r >= mb) {
            r -= mb;
            q |= 1u;
        }
        r = r << 1u;
    }
    var m = q >> 1u;
    if ((q & 1u) == 1u && (r != 0u || (m & 1u) == 1u)) {
        m += 1u;
        if (m == 0x1000000u) {
            m = 0x800000u;
            e += 1;
        }
    }
    if (e <= 0 || e >= 255) { return a / b; }
    let sign = (ua ^ ub) & 0x80000000u;
    return bitcast<f32>(sign | (u32(e) << 23u) | (m & 0x7fffffu));
}

// The quotient x / alpha an LSQ activation quantizer uses, given the adapter's q0 = x / alpha:
// q0 unless v = q0 + z' lies within 2^-19 (|q0| + |z'|) (over 8 ULP of q0 plus one of v) of a
// rounding tie (a half-integer) or of a clamp bound QN, QP, where the exact quotient decides the
// integer code or the in-range test. Rare: the common case costs a few operations, no division.
fn lsq_quotient(q0: f32, x: f32, alpha: f32, zr: f32, qn: f32, qp: f32) -> f32 {
    let v = q0 + zr;
    let t = (abs(q0) + abs(zr)) * 1.9073486328125e-6;
    if (abs(v - floor(v) - 0.5) <= t || min(abs(v - qn), abs(v - qp)) <= t) {
        return div_exact(x, alpha);
    }
    return q0;
}

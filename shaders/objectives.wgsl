// MaskAQ's image-synthesis objectives on the attention taps (docs/method.md §2.1-2.4),
// forward and backward, for one block at a time. Taps are [B, H, N, N] raw logits A = q kᵀ;
// tokens 0..prefix are the class (and distillation) tokens, the np = G x G patches follow.
// Gradients are ADDED to the gradient buffers (several terms feed the same tap); each kernel
// writes its loss contribution, already multiplied by `coef`, to `partial[off + thread]`.
// No workgroup barriers: one invocation per independent unit of work.

struct Params {
    b: u32, h: u32, n: u32, prefix: u32,
    g: u32, np: u32, sub: u32, off: u32,
    coef: f32, c1: f32, c2: f32, first: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> a2: array<f32>;
@group(0) @binding(3) var<storage, read_write> da: array<f32>;
@group(0) @binding(4) var<storage, read_write> da2: array<f32>;
@group(0) @binding(5) var<storage, read_write> partial: array<f32>;
@group(0) @binding(6) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(7) var<storage, read> scratch_in: array<f32>;
@group(0) @binding(8) var<storage, read_write> scratch2: array<f32>;
@group(0) @binding(9) var<storage, read> scratch2_in: array<f32>;
@group(0) @binding(10) var<storage, read> subset: array<f32>;
@group(0) @binding(11) var<storage, read_write> mask: array<f32>;
@group(0) @binding(12) var<storage, read> mask_in: array<f32>;
@group(0) @binding(13) var<storage, read> keys: array<f32>;
@group(0) @binding(14) var<storage, read> hyper: array<f32>;
@group(0) @binding(15) var<storage, read_write> count: array<f32>;
@group(0) @binding(16) var<storage, read> count_in: array<f32>;

const MAXH: u32 = 32u;
// Unordered head pairs (x < y) of up to MAXH heads, and the index of one.
const MAXPAIRS: u32 = MAXH * (MAXH - 1u) / 2u;
fn pair_index(x: u32, y: u32) -> u32 { return x * (2u * p.h - x - 1u) / 2u + (y - x - 1u); }

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * 64u + lid; }

// Element (b, head, row token, col token) of a tap.
fn at(b: u32, head: u32, r: u32, c: u32) -> u32 { return ((b * p.h + head) * p.n + r) * p.n + c; }

// The query the informative-region mask and the alignment read: the class token's row, or
// without a class token (Swin, prefix 0: docs/swin.md) the mean over all n query rows.
fn query_rows() -> f32 { return select(f32(p.n), 1.0, p.prefix > 0u); }

// ---- 2.1 inter-head attention similarity (MimiQ) --------------------------------------------
// For query patch q of image b, each head's key-patch logit row is min-max normalised to S_h and
// read as a G x G map; every ordered head pair contributes (1 - SSIM(S_h, S_h')^2) with global
// (single-window) SSIM. coef = weight / (L * B * np * H * H). One invocation per (b, q).
// Global SSIM of two normalised maps from their means, variances and covariance.
fn ssim_value(mux: f32, muy: f32, s2x: f32, s2y: f32, cov: f32) -> f32 {
    return (2.0 * mux * muy + p.c1) * (2.0 * cov + p.c2) / ((mux * mux + muy * muy + p.c1) * (s2x + s2y + p.c2));
}

// The pair (x, y)'s share of d loss / d S_x(j): 2 coef (-2 ssim) d ssim / d S_x(j), where
// d ssim / d S_x(j) = [dA1 A2 B + A1 dA2 B - A1 A2 (dB1 B2 + B1 dB2)] / B^2 with
// A1 = 2 mu_x mu_y + C1, A2 = 2 cov + C2, B1 = mu_x^2 + mu_y^2 + C1, B2 = s2_x + s2_y + C2,
// dA1 = 2 mu_y / n, dA2 = 2 (S_y(j) - mu_y) / n, dB1 = 2 mu_x / n, dB2 = 2 (S_x(j) - mu_x) / n.
fn ssim_pair_grad(sx: f32, sy: f32, mux: f32, muy: f32, s2x: f32, s2y: f32, cov: f32, s: f32, n: f32) -> f32 {
    let a1 = 2.0 * mux * muy + p.c1;
    let b1 = mux * mux + muy * muy + p.c1;
    let b2 = s2x + s2y + p.c2;
    let a2v = 2.0 * cov + p.c2;
    let bb = b1 * b2;
    let ds = ((2.0 * muy / n) * a2v * bb + a1 * (2.0 * (sy - muy) / n) * bb
        - a1 * a2v * ((2.0 * mux / n) * b2 + b1 * (2.0 * (sx - mux) / n))) / (bb * bb);
    return -4.0 * p.coef * s * ds;
}

// Adds d loss / d A for key j of head x, through S = (A - min) / (max - min + 1e-8): g / range,
// plus the min and max keys' share of the normalisation (sums of g and g S over all keys).
fn ssim_scatter(bi: u32, x: u32, row: u32, j: u32, g: f32, rg: f32, imin: u32, imax: u32,
                sum_g: f32, sum_gs: f32) {
    var d = g / rg;
    if (j == imin) { d += (sum_gs - sum_g) / rg; }
    if (j == imax) { d -= sum_gs / rg; }
    let e = at(bi, x, row, p.prefix + j);
    da[e] = da[e] + d;
}

// Covariance of heads x and y's normalised rows.
fn ssim_cov(bi: u32, row: u32, x: u32, y: u32, mnx: f32, rgx: f32, mny: f32, rgy: f32, mux: f32, muy: f32,
            n: f32) -> f32 {
    var sxy = 0.0;
    for (var j = 0u; j < p.np; j++) {
        let vx = (a[at(bi, x, row, p.prefix + j)] - mnx) / rgx;
        let vy = (a[at(bi, y, row, p.prefix + j)] - mny) / rgy;
        sxy += vx * vy;
    }
    return sxy / n - mux * muy;
}

@compute @workgroup_size(64)
fn ssim_heads(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.b * p.np) { return; }
    let bi = t / p.np;
    let row = p.prefix + t % p.np;
    let n = f32(p.np);
    var mn: array<f32, MAXH>;
    var rg: array<f32, MAXH>;
    var imin: array<u32, MAXH>;
    var imax: array<u32, MAXH>;
    var mu: array<f32, MAXH>;
    var s2: array<f32, MAXH>;
    for (var h = 0u; h < p.h; h++) {
        var lo = 3.4028235e38; var hi = -3.4028235e38; var il = 0u; var ih = 0u;
        for (var j = 0u; j < p.np; j++) {
            let v = a[at(bi, h, row, p.prefix + j)];
            if (v < lo) { lo = v; il = j; }
            if (v > hi) { hi = v; ih = j; }
        }
        mn[h] = lo; rg[h] = hi - lo + 1e-8; imin[h] = il; imax[h] = ih;
        var s = 0.0; var sq = 0.0;
        for (var j = 0u; j < p.np; j++) {
            let v = (a[at(bi, h, row, p.prefix + j)] - lo) / rg[h];
            s += v; sq += v * v;
        }
        mu[h] = s / n;
        s2[h] = sq / n - mu[h] * mu[h];
    }
    // SSIM of each unordered pair (x < y, in pair_index order), kept for the gradient; ordered
    // pairs (x, y) and (y, x) are equal terms.
    var cvp: array<f32, MAXPAIRS>;
    var ssp: array<f32, MAXPAIRS>;
    var loss = 0.0;
    for (var x = 0u; x < p.h; x++) {
        for (var y = x + 1u; y < p.h; y++) {
            let k = pair_index(x, y);
            cvp[k] = ssim_cov(bi, row, x, y, mn[x], rg[x], mn[y], rg[y], mu[x], mu[y], n);
            ssp[k] = ssim_value(mu[x], mu[y], s2[x], s2[y], cvp[k]);
            loss += 2.0 * (1.0 - ssp[k] * ssp[k]);
        }
    }
    partial[p.off + t] = p.coef * loss;
    // d loss / d S_x(j) = sum over y != x of ssim_pair_grad, for every head x at each key j: the
    // key's normalised values are loaded once per key for all heads (on a CPU adapter the loads
    // bound this kernel). Two sweeps: the sums of g and g S_x, then the scatter.
    var sum_g: array<f32, MAXH>;
    var sum_gs: array<f32, MAXH>;
    var sv: array<f32, MAXH>;
    for (var h = 0u; h < p.h; h++) { sum_g[h] = 0.0; sum_gs[h] = 0.0; }
    for (var sweep = 0u; sweep < 2u; sweep++) {
        for (var j = 0u; j < p.np; j++) {
            for (var h = 0u; h < p.h; h++) { sv[h] = (a[at(bi, h, row, p.prefix + j)] - mn[h]) / rg[h]; }
            for (var x = 0u; x < p.h; x++) {
                var g = 0.0;
                for (var y = 0u; y < p.h; y++) {
                    if (y == x) { continue; }
                    let k = pair_index(min(x, y), max(x, y));
                    g += ssim_pair_grad(sv[x], sv[y], mu[x], mu[y], s2[x], s2[y], cvp[k], ssp[k], n);
                }
                if (sweep == 0u) {
                    sum_g[x] += g;
                    sum_gs[x] += g * sv[x];
                } else {
                    ssim_scatter(bi, x, row, j, g, rg[x], imin[x], imax[x], sum_g[x], sum_gs[x]);
                }
            }
        }
    }
}

// The same for GPUs: one 256-wide workgroup per (b, q), the invocations striding over the np
// keys; every statistic is a tree reduction and the per-head and per-pair values live in
// workgroup memory (the per-invocation arrays of the kernel above spill on a GPU). Minimum and
// maximum keep the first index on ties, as the serial loop does.
var<workgroup> redi: array<u32, 256>;
var<workgroup> sh_mn: array<f32, MAXH>;
var<workgroup> sh_rg: array<f32, MAXH>;
var<workgroup> sh_mu: array<f32, MAXH>;
var<workgroup> sh_s2: array<f32, MAXH>;
var<workgroup> sh_imin: array<u32, MAXH>;
var<workgroup> sh_imax: array<u32, MAXH>;
var<workgroup> sh_ss: array<f32, MAXH>;
var<workgroup> sh_cv: array<f32, MAXH>;

// (value, index) of the smallest (sign = 1) or largest (sign = -1) candidate; ties: lower index.
fn wg_arg_extreme(lid: u32, v: f32, i: u32, sign: f32) -> vec2<u32> {
    red[lid] = sign * v;
    redi[lid] = i;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w = w >> 1u) {
        if (lid < w) {
            let o = red[lid + w];
            let oi = redi[lid + w];
            if (o < red[lid] || (o == red[lid] && oi < redi[lid])) {
                red[lid] = o;
                redi[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    let r = vec2<u32>(bitcast<u32>(sign * red[0]), redi[0]);
    workgroupBarrier();
    return r;
}

fn ssim_norm(bi: u32, h: u32, row: u32, j: u32) -> f32 {
    return (a[at(bi, h, row, p.prefix + j)] - sh_mn[h]) / sh_rg[h];
}

// [`ssim_cov`] with the sum over j as a tree reduction (every invocation returns it).
fn wg_cov(lid: u32, bi: u32, row: u32, x: u32, y: u32, n: f32) -> f32 {
    var sxy = 0.0;
    for (var j = lid; j < p.np; j += 256u) {
        let vx = ssim_norm(bi, x, row, j);
        let vy = ssim_norm(bi, y, row, j);
        sxy += vx * vy;
    }
    return wg_sum(lid, sxy) / n - sh_mu[x] * sh_mu[y];
}

@compute @workgroup_size(256)
fn ssim_heads_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let t = wid.y * nwg.x + wid.x;
    if (t >= p.b * p.np) { return; } // uniform across the workgroup
    let bi = t / p.np;
    let row = p.prefix + t % p.np;
    let n = f32(p.np);
    for (var h = 0u; h < p.h; h++) {
        var lo = 3.4028235e38; var hi = -3.4028235e38; var il = 0xffffffffu; var ih = 0xffffffffu;
        for (var j = lid; j < p.np; j += 256u) {
            let v = a[at(bi, h, row, p.prefix + j)];
            if (v < lo) { lo = v; il = j; }
            if (v > hi) { hi = v; ih = j; }
        }
        let mn = wg_arg_extreme(lid, lo, il, 1.0);
        let mx = wg_arg_extreme(lid, hi, ih, -1.0);
        if (lid == 0u) {
            sh_mn[h] = bitcast<f32>(mn.x);
            sh_rg[h] = bitcast<f32>(mx.x) - bitcast<f32>(mn.x) + 1e-8;
            sh_imin[h] = mn.y;
            sh_imax[h] = mx.y;
        }
        workgroupBarrier();
        var s = 0.0; var sq = 0.0;
        for (var j = lid; j < p.np; j += 256u) {
            let v = ssim_norm(bi, h, row, j);
            s += v; sq += v * v;
        }
        let mu = wg_sum(lid, s) / n;
        let s2 = wg_sum(lid, sq) / n - mu * mu;
        if (lid == 0u) { sh_mu[h] = mu; sh_s2[h] = s2; }
    }
    workgroupBarrier();
    var loss = 0.0;
    for (var x = 0u; x < p.h; x++) {
        for (var y = x + 1u; y < p.h; y++) {
            var sxy = 0.0;
            let cov = wg_cov(lid, bi, row, x, y, n);
            let s = ssim_value(sh_mu[x], sh_mu[y], sh_s2[x], sh_s2[y], cov);
            loss += 2.0 * (1.0 - s * s);
        }
    }
    if (lid == 0u) { partial[p.off + t] = p.coef * loss; }
    workgroupBarrier();
    // The gradient as in ssim_heads, with the two sums over j as tree reductions.
    for (var x = 0u; x < p.h; x++) {
        for (var y = 0u; y < p.h; y++) {
            if (y == x) { continue; }
            let lo = min(x, y); let hi = max(x, y);
            let cov = wg_cov(lid, bi, row, lo, hi, n);
            if (lid == 0u) {
                sh_cv[y] = cov;
                sh_ss[y] = ssim_value(sh_mu[lo], sh_mu[hi], sh_s2[lo], sh_s2[hi], cov);
            }
        }
        workgroupBarrier();
        var sum_g = 0.0;
        var sum_gs = 0.0;
        for (var sweep = 0u; sweep < 2u; sweep++) {
            if (sweep == 1u) {
                sum_g = wg_sum(lid, sum_g);
                sum_gs = wg_sum(lid, sum_gs);
            }
            for (var j = lid; j < p.np; j += 256u) {
                let sx = ssim_norm(bi, x, row, j);
                var g = 0.0;
                for (var y = 0u; y < p.h; y++) {
                    if (y == x) { continue; }
                    let sy = ssim_norm(bi, y, row, j);
                    g += ssim_pair_grad(sx, sy, sh_mu[x], sh_mu[y], sh_s2[x], sh_s2[y], sh_cv[y], sh_ss[y], n);
                }
                if (sweep == 0u) {
                    sum_g += g;
                    sum_gs += g * sx;
                } else {
                    ssim_scatter(bi, x, row, j, g, sh_rg[x], sh_imin[x], sh_imax[x], sum_g, sum_gs);
                }
            }
        }
    }
}

// ---- 2.2 patch-similarity differential entropy ------------------------------------------------
// Per image: the head-averaged patch-to-patch logit rows of `sub` sampled patches (`subset`,
// [B, sub] patch indices) are L2-normalised (norm clamped at 1e-6); their Gram matrix of cosine
// similarities has population variance var; h = 0.5 (log(2 pi e) + log(var + 1e-8)) and the
// loss is -coef h (coef = weight / (L B)). Four launches: rows, gram, variance, backward.

// scratch[(b sub + r) np + k] = normalised row; scratch2[b sub + r] = its norm before the clamp.
@compute @workgroup_size(64)
fn entropy_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.b * p.sub) { return; }
    let bi = t / p.sub;
    let row = p.prefix + u32(subset[t]);
    var sq = 0.0;
    for (var k = 0u; k < p.np; k++) {
        var u = 0.0;
        for (var h = 0u; h < p.h; h++) { u += a[at(bi, h, row, p.prefix + k)]; }
        u = u / f32(p.h);
        scratch[t * p.np + k] = u;
        sq += u * u;
    }
    let norm = sqrt(sq);
    let inv = 1.0 / max(norm, 1e-6);
    for (var k = 0u; k < p.np; k++) { scratch[t * p.np + k] = scratch[t * p.np + k] * inv; }
    scratch2[t] = norm;
}

// mask (used as scratch here) [B, sub, sub] = Gram matrices of the normalised rows.
@compute @workgroup_size(64)
fn entropy_gram(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.b * p.sub * p.sub) { return; }
    let bi = t / (p.sub * p.sub);
    let i = (t / p.sub) % p.sub;
    let j = t % p.sub;
    var s = 0.0;
    for (var k = 0u; k < p.np; k++) {
        s += scratch_in[(bi * p.sub + i) * p.np + k] * scratch_in[(bi * p.sub + j) * p.np + k];
    }
    mask[t] = s;
}

// Per image: mean and variance of its Gram entries into scratch2[B sub + 2 b ..], loss partial.
@compute @workgroup_size(64)
fn entropy_var(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let bi = index(wid, nwg, lid);
    if (bi >= p.b) { return; }
    let m = p.sub * p.sub;
    var s = 0.0;
    for (var i = 0u; i < m; i++) { s += mask_in[bi * m + i]; }
    let mean = s / f32(m);
    var v = 0.0;
    for (var i = 0u; i < m; i++) { let d = mask_in[bi * m + i] - mean; v += d * d; }
    let var_ = v / f32(m) + 1e-8;
    scratch2[p.b * p.sub + 2u * bi] = mean;
    scratch2[p.b * p.sub + 2u * bi + 1u] = var_;
    partial[p.off + bi] = -p.coef * 0.5 * (log(2.0 * 3.14159265358979 * 2.718281828459045) + log(var_));
}

// The same for GPUs: one 256-wide workgroup per image, tree sums in workgroup memory (one
// invocation per image walking sub^2 entries was a fifth of a synthesis iteration on an H200).
var<workgroup> red: array<f32, 256>;

fn wg_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w = w >> 1u) {
        if (lid < w) { red[lid] += red[lid + w]; }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn entropy_var_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bi = wid.x;
    let m = p.sub * p.sub;
    var s = 0.0;
    for (var i = lid; i < m; i += 256u) { s += mask_in[bi * m + i]; }
    let mean = wg_sum(lid, s) / f32(m);
    var v = 0.0;
    for (var i = lid; i < m; i += 256u) { let d = mask_in[bi * m + i] - mean; v += d * d; }
    let var_ = wg_sum(lid, v) / f32(m) + 1e-8;
    if (lid == 0u) {
        scratch2[p.b * p.sub + 2u * bi] = mean;
        scratch2[p.b * p.sub + 2u * bi + 1u] = var_;
        partial[p.off + bi] = -p.coef * 0.5 * (log(2.0 * 3.14159265358979 * 2.718281828459045) + log(var_));
    }
}

// Per sampled row: dG -> d(normalised row) -> d(row) -> dA (spread over heads).
// dL/dG_ij = -coef (G_ij - mean) / (var m); dV_r = sum_i (dG_ri + dG_ir) V_i = 2 sum_i dG_ri V_i.
// du = (dv - v (v . dv)) / norm (or dv / 1e-6 where the clamp is active).

// dV of row t (image bi, sampled row r) at column k.
fn entropy_dv(t: u32, k: u32) -> f32 {
    let bi = t / p.sub;
    let r = t % p.sub;
    let m = p.sub * p.sub;
    let mean = scratch2_in[p.b * p.sub + 2u * bi];
    let scale = -p.coef / (scratch2_in[p.b * p.sub + 2u * bi + 1u] * f32(m));
    var dv = 0.0;
    for (var i = 0u; i < p.sub; i++) {
        let dg = scale * (mask_in[bi * m + r * p.sub + i] - mean);
        dv += 2.0 * dg * scratch_in[(bi * p.sub + i) * p.np + k];
    }
    return dv;
}

// Term i of v . dv for row t (image bi, sampled row r): v . dv = sum_k v_k 2 sum_i dG_ri V_ik
// = 2 sum_i dG_ri G_ri, as G is the Gram matrix of the normalised rows V (v = V_r). One pass
// over the row's sub entries of G instead of the np x sub products of dv.
fn entropy_dot_term(t: u32, i: u32) -> f32 {
    let bi = t / p.sub;
    let r = t % p.sub;
    let m = p.sub * p.sub;
    let mean = scratch2_in[p.b * p.sub + 2u * bi];
    let scale = -p.coef / (scratch2_in[p.b * p.sub + 2u * bi + 1u] * f32(m));
    let g = mask_in[bi * m + r * p.sub + i];
    return 2.0 * scale * (g - mean) * g;
}

// Adds du of row t at column k (given v . dv of the row) to dA of every head.
fn entropy_scatter(t: u32, k: u32, dv: f32, dot: f32) {
    let bi = t / p.sub;
    let norm = scratch2_in[t];
    let v = scratch_in[t * p.np + k];
    var du: f32;
    if (norm > 1e-6) { du = (dv - v * dot) / norm; } else { du = dv / 1e-6; }
    let row = p.prefix + u32(subset[t]);
    for (var h = 0u; h < p.h; h++) {
        let e = at(bi, h, row, p.prefix + k);
        da[e] = da[e] + du / f32(p.h);
    }
}

// Sampled rows whose dG row entropy_backward keeps in a private array (more: recomputed per k).
const MAXSUB: u32 = 256u;

@compute @workgroup_size(64)
fn entropy_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.b * p.sub) { return; }
    var dot = 0.0;
    for (var i = 0u; i < p.sub; i++) { dot += entropy_dot_term(t, i); }
    if (p.sub > MAXSUB) {
        for (var k = 0u; k < p.np; k++) { entropy_scatter(t, k, entropy_dv(t, k), dot); }
        return;
    }
    // entropy_dv with the row's dG computed once instead of once per column (the same bits).
    let bi = t / p.sub;
    let r = t % p.sub;
    let m = p.sub * p.sub;
    let mean = scratch2_in[p.b * p.sub + 2u * bi];
    let scale = -p.coef / (scratch2_in[p.b * p.sub + 2u * bi + 1u] * f32(m));
    var dg: array<f32, MAXSUB>;
    for (var i = 0u; i < p.sub; i++) { dg[i] = scale * (mask_in[bi * m + r * p.sub + i] - mean); }
    for (var k = 0u; k < p.np; k++) {
        var dv = 0.0;
        for (var i = 0u; i < p.sub; i++) { dv += 2.0 * dg[i] * scratch_in[(bi * p.sub + i) * p.np + k]; }
        entropy_scatter(t, k, dv, dot);
    }
}

// The same for GPUs: one 256-wide workgroup per sampled row, one invocation per column k (dv_k is
// a 64-long sum, recomputed in the second sweep), the row's v . dv as a tree sum. One invocation
// walking a row's np x sub products was 13 % of a DeiT-T synthesis iteration on an H200.
@compute @workgroup_size(256)
fn entropy_backward_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let t = wid.y * nwg.x + wid.x;
    if (t >= p.b * p.sub) { return; } // uniform across the workgroup
    var part = 0.0;
    for (var i = lid; i < p.sub; i += 256u) { part += entropy_dot_term(t, i); }
    let dot = wg_sum(lid, part);
    for (var k = lid; k < p.np; k += 256u) { entropy_scatter(t, k, entropy_dv(t, k), dot); }
}

// ---- 2.3 informative-region mask ------------------------------------------------------------
// scratch[b np + j] (+)= coef * mean_h A[b, h, 0, prefix + j]: the CLS-query logits averaged
// over heads, and over layers when launched once per block with coef = 1 / L (`first` resets).
@compute @workgroup_size(64)
fn cls_mean(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.b * p.np) { return; }
    let bi = t / p.np;
    let j = t % p.np;
    var s = 0.0;
    for (var h = 0u; h < p.h; h++) {
        if (p.prefix > 0u) {
            s += a[at(bi, h, 0u, p.prefix + j)];
        } else {
            for (var i = 0u; i < p.n; i++) { s += a[at(bi, h, i, j)]; }
        }
    }
    var v = p.coef * s / (f32(p.h) * query_rows());
    if (p.first == 0u) { v += scratch[t]; }
    scratch[t] = v;
}

// mask[b np + j] = 1 on the top-k of scratch_in[b, :] (ties: lower index first), k = hyper[0].
@compute @workgroup_size(64)
fn mask_topk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.b * p.np) { return; }
    let bi = t / p.np;
    let j = t % p.np;
    let c = scratch_in[t];
    var rank = 0u;
    for (var i = 0u; i < p.np; i++) {
        let o = scratch_in[bi * p.np + i];
        if (o > c || (o == c && i < j)) { rank++; }
    }
    mask[t] = select(0.0, 1.0, rank < u32(hyper[0]));
}

// Stochastic drop: of the selected patches keep the hyper[1] with the smallest random keys
// (uniform keys per patch from the host: a uniformly random subset).
@compute @workgroup_size(64)
fn mask_drop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.b * p.np) { return; }
    let bi = t / p.np;
    let j = t % p.np;
    var keep = 0.0;
    if (mask_in[t] != 0.0) {
        let k = keys[t];
        var rank = 0u;
        for (var i = 0u; i < p.np; i++) {
            let o = keys[bi * p.np + i];
            if (mask_in[bi * p.np + i] != 0.0 && (o < k || (o == k && i < j))) { rank++; }
        }
        keep = select(0.0, 1.0, rank < u32(hyper[1]));
    }
    mask[t] = keep;
}

// count[0] = number of selected patches over the batch (one invocation).
@compute @workgroup_size(1)
fn mask_count() {
    var c = 0.0;
    for (var i = 0u; i < p.b * p.np; i++) { c += mask_in[i]; }
    count[0] = c;
}

// ---- 2.4 masked attention alignment -----------------------------------------------------------
// |mean_h A_P[b,:,0,prefix+j] - mean_h A_Q[b,:,0,prefix+j]| M[b,j] / (sum M + 1e-8), times coef
// (= weight / L); the gradient reaches both taps. One invocation per (b, j).
@compute @workgroup_size(64)
fn masked_alignment(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.b * p.np) { return; }
    let bi = t / p.np;
    let j = t % p.np;
    let w = p.coef * mask_in[t] / (count_in[0] + 1e-8);
    let rows = select(p.n, 1u, p.prefix > 0u);
    let col = p.prefix + j;
    var sp = 0.0; var sq = 0.0;
    for (var h = 0u; h < p.h; h++) {
        for (var i = 0u; i < rows; i++) {
            sp += a[at(bi, h, i, col)];
            sq += a2[at(bi, h, i, col)];
        }
    }
    let d = (sp - sq) / (f32(p.h) * query_rows());
    partial[p.off + t] = w * abs(d);
    let g = w * sign(d) / (f32(p.h) * query_rows());
    for (var h = 0u; h < p.h; h++) {
        for (var i = 0u; i < rows; i++) {
            let e = at(bi, h, i, col);
            da[e] = da[e] + g;
            da2[e] = da2[e] - g;
        }
    }
}

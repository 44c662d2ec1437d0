// MaskAQ's quantizers (docs/method.md §3).
//
// Weights: symmetric per-output-channel min-max, recomputed every forward, straight-through
// gradient:  m_c = max|W_c|, s_c = (2^b - 1) / max(2 m_c, 1e-8),
//            W_hat = clamp(round(s_c W), -2^(b-1), 2^(b-1) - 1) / s_c.
//
// Activations: per-tensor LSQ with a learnable step alpha and a learnable (rounded) zero point z
// ("QuantAct_lsq"), initialised lazily from the first tensor x0 the quantizer sees:
//   signed = min x0 < 1e-5 -> [QN, QP] = [-2^(b-1), 2^(b-1) - 1], else [0, 2^b - 1]
//   alpha = 2 mean|x0| / sqrt(QP);  z = 0.1 (min x0 - alpha QP);  g = lsq_scale / sqrt(numel QP)
//   forward:  z' = round(z), x_int = round(clamp(x / alpha + z', QN, QP)), x_hat = (x_int - z') alpha
//   backward: dx = dy [QN <= x/alpha + z' <= QP]
//             dalpha = g sum dy ((x_int - z') - [in range] x / alpha)      (grad_scale on alpha)
//             dz = sum dy (-alpha) [out of range]                           (round_pass: identity)
// A quantizer works on a strided 2-d region of a buffer (rows x cols at off, row stride rs), so
// q, k and v inside the fused qkv matrix each get their own quantizer. Per-quantizer state:
// qparams[2 site] = (alpha, z) (trained), qmeta[4 site] = (QN, QP, g, signed).
// The fake-quant arithmetic itself is fake_quant.wgsl (appended, shared with the fused kernels);
// every rounding decision uses the IEEE quotient (div_exact, lsq_quotient: exact_div.wgsl, appended).
// Reductions are grid-stride partial sums (one per invocation) followed by a single-invocation
// finalize: deterministic, and free of workgroup barriers.

struct Params {
    rows: u32, cols: u32, off: u32, rs: u32,
    site: u32, bits: u32, threads: u32, lsq_scale: f32,
    // act_quant_mask_qkv only: the quantizers of k and v (`site` is q's).
    site_k: u32, site_v: u32, p0: u32, p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> xq: array<f32>;
@group(0) @binding(3) var<storage, read> qparams: array<f32>;
@group(0) @binding(4) var<storage, read> qmeta: array<f32>;
@group(0) @binding(5) var<storage, read_write> qparams_rw: array<f32>;
@group(0) @binding(6) var<storage, read_write> qmeta_rw: array<f32>;
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;
@group(0) @binding(8) var<storage, read> partials_in: array<f32>;
@group(0) @binding(9) var<storage, read> dxq: array<f32>;
@group(0) @binding(10) var<storage, read_write> dx: array<f32>;
@group(0) @binding(11) var<storage, read_write> qgrad: array<f32>;
@group(0) @binding(12) var<storage, read_write> qcalib: array<f32>;
@group(0) @binding(13) var<storage, read_write> wscale: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * 64u + lid; }

// Buffer index of the region's i-th element. A contiguous region (the whole tensor, most sites)
// takes no integer division, which CPU adapters run one lane at a time.
fn element(i: u32) -> u32 {
    if (p.rs == p.cols) { return p.off + i; }
    return p.off + (i / p.cols) * p.rs + i % p.cols;
}

// ---- weights: one invocation per output channel (row of W) ----------------------------------
@compute @workgroup_size(64)
fn weight_quant(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let r = index(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let o = r * p.cols;
    var m = 0.0;
    for (var j = 0u; j < p.cols; j++) { m = max(m, abs(x[o + j])); }
    let levels = f32((1u << p.bits) - 1u);
    let s = div_exact(levels, max(2.0 * m, 1e-8)); // s m sits at a rounding tie: see exact_div.wgsl
    let lo = -f32(1u << (p.bits - 1u));
    let hi = f32((1u << (p.bits - 1u)) - 1u);
    for (var j = 0u; j < p.cols; j++) {
        xq[o + j] = adapter_div(clamp(round(s * x[o + j]), lo, hi), s);
    }
    wscale[r] = s;
}

// ---- activations -------------------------------------------------------------------------------
@compute @workgroup_size(64)
fn act_quant_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    // Grid-stride over p.threads invocations, several elements each: the quantizer's four
    // parameters are read once per invocation, not once per element (on a CPU adapter every
    // load costs about as much as the element's own).
    let t = index(wid, nwg, lid);
    if (t >= p.threads) { return; }
    let s = qsite(p.site);
    for (var i = t; i < p.rows * p.cols; i += p.threads) {
        let e = element(i);
        xq[e] = fake_quant(x[e], s);
    }
}

// q, k and v through their quantizers in one launch: the whole fused qkv matrix [rows, 3 cols]
// (column block 0, 1, 2: quantizer site, site_k, site_v).
@compute @workgroup_size(64)
fn act_quant_forward_qkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.threads) { return; }
    var sites = array<QSite, 3>(qsite(p.site), qsite(p.site_k), qsite(p.site_v));
    for (var i = t; i < 3u * p.rows * p.cols; i += p.threads) {
        xq[i] = fake_quant(x[i], sites[(i % (3u * p.cols)) / p.cols]);
    }
}

// Partial (min, sum |x|) of the region, grid-stride over `threads` invocations.
@compute @workgroup_size(64)
fn act_quant_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.threads) { return; }
    var mn = 3.4028235e38;
    var sa = 0.0;
    for (var i = t; i < p.rows * p.cols; i += p.threads) {
        let v = x[element(i)];
        mn = min(mn, v);
        sa += abs(v);
    }
    partials[2u * t] = mn;
    partials[2u * t + 1u] = sa;
}

// LSQ initialisation from the partials of act_quant_stats (one invocation).
@compute @workgroup_size(1)
fn act_quant_init() {
    var mn = 3.4028235e38;
    var sa = 0.0;
    for (var t = 0u; t < p.threads; t++) {
        mn = min(mn, partials_in[2u * t]);
        sa += partials_in[2u * t + 1u];
    }
    let n = f32(p.rows * p.cols);
    var qn = 0.0;
    var qp = f32((1u << p.bits) - 1u);
    var signed = 0.0;
    if (mn < 1e-5) {
        qn = -f32(1u << (p.bits - 1u));
        qp = f32((1u << (p.bits - 1u)) - 1u);
        signed = 1.0;
    }
    let alpha = 2.0 * (sa / n) / sqrt(qp);
    qparams_rw[2u * p.site] = alpha;
    qparams_rw[2u * p.site + 1u] = 0.1 * (mn - alpha * qp);
    qmeta_rw[4u * p.site] = qn;
    qmeta_rw[4u * p.site + 1u] = qp;
    qmeta_rw[4u * p.site + 2u] = p.lsq_scale / sqrt(n * qp);
    qmeta_rw[4u * p.site + 3u] = signed;
}

// dx = dxq [in range]; partial sums of the alpha and z gradients (grid-stride).
@compute @workgroup_size(64)
fn act_quant_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.threads) { return; }
    let s = qsite(p.site);
    var ga = 0.0;
    var gz = 0.0;
    for (var i = t; i < p.rows * p.cols; i += p.threads) {
        let e = element(i);
        let g = dxq[e];
        let xa = q_quotient(x[e], s);
        let v = xa + s.zr;
        // Selects, not branches: one store per element whichever side each lane takes (a CPU
        // adapter runs stores under a divergent branch one lane at a time). gz - 0 is gz.
        let inside = v >= s.qn && v <= s.qp;
        dx[e] = select(0.0, g, inside);
        ga += g * select(clamp(v, s.qn, s.qp) - s.zr, (round(v) - s.zr) - xa, inside);
        gz -= select(g * s.alpha, 0.0, inside);
    }
    partials[2u * t] = ga;
    partials[2u * t + 1u] = gz;
}

// Image synthesis (no quantizer-step gradients): only the straight-through mask of the
// backward, dx = dxq [in range] on the region.
@compute @workgroup_size(64)
fn act_quant_mask(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.threads) { return; }
    let s = qsite(p.site);
    for (var i = t; i < p.rows * p.cols; i += p.threads) {
        let e = element(i);
        dx[e] = select(0.0, dxq[e], in_range(x[e], s));
    }
}

// The same for q's, k's and v's quantizers in one launch, on the whole fused qkv gradient
// [rows, 3 cols] (column block 0, 1, 2: quantizer site, site_k, site_v).
@compute @workgroup_size(64)
fn act_quant_mask_qkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.threads) { return; }
    var sites = array<QSite, 3>(qsite(p.site), qsite(p.site_k), qsite(p.site_v));
    for (var i = t; i < 3u * p.rows * p.cols; i += p.threads) {
        let s = sites[(i % (3u * p.cols)) / p.cols];
        dx[i] = select(0.0, dxq[i], in_range(x[i], s));
    }
}

// The zero point's gradient factor, in the lsq_scale slot of the gradient kernels: >= 0 is a
// plain multiplier (1: the authors' code, 0: z frozen), < 0 means LSQ's g, as alpha gets.
fn z_grad_factor() -> f32 {
    if (p.lsq_scale < 0.0) { return qmeta[4u * p.site + 2u]; }
    return p.lsq_scale;
}

// qgrad[site] = (g * sum of alpha partials, z factor * sum of z partials) (one invocation).
@compute @workgroup_size(1)
fn act_quant_grad() {
    var ga = 0.0;
    var gz = 0.0;
    for (var t = 0u; t < p.threads; t++) {
        ga += partials_in[2u * t];
        gz += partials_in[2u * t + 1u];
    }
    qgrad[2u * p.site] = ga * qmeta[4u * p.site + 2u];
    qgrad[2u * p.site + 1u] = gz * z_grad_factor();
}

// The same sum for GPUs: 256 invocations, each a strided share of the partials, then a tree
// in workgroup memory (one invocation walking thousands of partials leaves a GPU idle).
var<workgroup> red: array<vec2<f32>, 256>;

@compute @workgroup_size(256)
fn act_quant_grad_wg(@builtin(local_invocation_index) lid: u32) {
    var s = vec2<f32>(0.0);
    for (var t = lid; t < p.threads; t += 256u) {
        s += vec2<f32>(partials_in[2u * t], partials_in[2u * t + 1u]);
    }
    red[lid] = s;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w = w >> 1u) {
        if (lid < w) { red[lid] += red[lid + w]; }
        workgroupBarrier();
    }
    if (lid == 0u) {
        qgrad[2u * p.site] = red[0].x * qmeta[4u * p.site + 2u];
        qgrad[2u * p.site + 1u] = red[0].y * z_grad_factor();
    }
}

// ---- min-max calibration (the PTQ baseline) -----------------------------------------------------
// Partial (min, max) of the region, grid-stride.
@compute @workgroup_size(64)
fn act_minmax_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.threads) { return; }
    var mn = 3.4028235e38;
    var mx = -3.4028235e38;
    for (var i = t; i < p.rows * p.cols; i += p.threads) {
        let v = x[element(i)];
        mn = min(mn, v);
        mx = max(mx, v);
    }
    partials[2u * t] = mn;
    partials[2u * t + 1u] = mx;
}

// qcalib[site] = (min, max) running over every calibration batch (one invocation).
@compute @workgroup_size(1)
fn act_minmax_merge() {
    var mn = qcalib[2u * p.site];
    var mx = qcalib[2u * p.site + 1u];
    for (var t = 0u; t < p.threads; t++) {
        mn = min(mn, partials_in[2u * t]);
        mx = max(mx, partials_in[2u * t + 1u]);
    }
    qcalib[2u * p.site] = mn;
    qcalib[2u * p.site + 1u] = mx;
}

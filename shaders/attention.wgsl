// Fused ViT self-attention (global attention over an image's tokens, docs/ARCHITECTURE.md
// "Fused attention"): what the unfused graph does in four launches forward and seven backward,
// in one forward and two backward. Prepended to one of two loaders of q, k, v and dO
// (attention_load_buf.wgsl: storage buffers; attention_load_tex.wgsl: texture mirrors, for CPU
// adapters where a texel fetch is much cheaper than a storage load), and followed by
// fake_quant.wgsl.
//
// Shapes: qkv [G N, 3 D] (q, k, v of head h at columns h hd, D + h hd, 2 D + h hd; in Q the
// quantized copy qkv_q), A and P [G, H, N, N], O [G, H, N, hd], merged [G N, D], D = H hd.
//   forward:  A = q kᵀ (the tap), P = softmax(scale A), P' = quant_p(P) (Q) or P,
//             O = P' v (the tap), merged = O token-major, merged' = quant_o(merged) (Q).
//   backward (from dmerged, the gradient on merged'):
//             dO = mask_o(dmerged) + extra_o          (mask_o: proj's input quantizer, Q only)
//             dP = dO vᵀ, G = mask_p(dP), dA = scale P (G - rowsum(G P)) + extra_a
//             dq = dA k, dk = dAᵀ q, dv = P'ᵀ dO, each through its quantizer's mask (Q only)
//   The masks are the quantizers' straight-through masks: the backward is the one for image
//   synthesis (no quantizer-step gradients) or for the FP model.
// Sums run in the unfused kernels' orders where that costs nothing (the softmax exactly), but
// the matmuls' blockings differ: results agree with the unfused graph to rounding, not bit for
// bit (tests/parity.rs checks both ways).
//
// Limits the host checks (src/ops/attention.rs): hd a multiple of 4 and at most 64.

// hd / 4, a pipeline constant so that the vec4 loops over a head's columns unroll and their
// accumulators stay in registers (llvmpipe keeps dynamically indexed arrays in memory: this
// alone made the forward 2.7x faster there).
override HD4: u32 = 1u;

struct Params {
    g: u32, h: u32, n: u32, hd: u32,
    scale: f32, quant: u32, site_p: u32, site_o: u32,
    site_q: u32, site_k: u32, site_v: u32, has_extra_o: u32,
    has_extra_a: u32, tw: u32, tw_o: u32, p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> prob: array<f32>;
@group(0) @binding(3) var<storage, read_write> prob_q: array<f32>;
@group(0) @binding(4) var<storage, read_write> attn_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> merged: array<f32>;
@group(0) @binding(6) var<storage, read_write> merged_q: array<f32>;
@group(0) @binding(7) var<storage, read> qparams: array<f32>;
@group(0) @binding(8) var<storage, read> qmeta: array<f32>;
// binding 9: q, k and v as vec4s (the loader's `qkv4`).
@group(0) @binding(10) var<storage, read> qkv_raw: array<f32>;
@group(0) @binding(11) var<storage, read> prob_in: array<f32>;
@group(0) @binding(12) var<storage, read> probq_in: array<f32>;
@group(0) @binding(13) var<storage, read> merged_in: array<f32>;
@group(0) @binding(14) var<storage, read> dmerged: array<f32>;
@group(0) @binding(15) var<storage, read> extra_o: array<f32>;
@group(0) @binding(16) var<storage, read> extra_a: array<f32>;
@group(0) @binding(17) var<storage, read_write> d_o: array<vec4<f32>>;
@group(0) @binding(18) var<storage, read_write> da: array<f32>;
@group(0) @binding(19) var<storage, read_write> dqkv: array<f32>;
// The keys' phase reads the rows' dO (through the loader's `do4`, binding 20) and dA through
// read-only bindings (no needless barriers).
@group(0) @binding(21) var<storage, read> da_in: array<f32>;

// The first float of q (which = 0), k (1) or v (2) of token i of image g, head h, in qkv.
fn qkv_at(g: u32, i: u32, h: u32, which: u32) -> u32 {
    let d = p.h * p.hd;
    return (g * p.n + i) * 3u * d + which * d + h * p.hd;
}

// One thread per query row i of (image wid.z, head wid.y); rows in tiles of 64 along x.
@compute @workgroup_size(64)
fn attention_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = wid.x * 64u + lid;
    let h = wid.y;
    let g = wid.z;
    if (i >= p.n) { return; }
    let hd4 = HD4;
    var q: array<vec4<f32>, 16>;
    let qt = qkv_at(g, i, h, 0u) / 4u;
    for (var c = 0u; c < hd4; c++) { q[c] = qkv4(qt + c); }
    // A's row, and its maximum for the softmax (softmax.wgsl's arithmetic).
    let o = ((g * p.h + h) * p.n + i) * p.n;
    var m = -3.4028235e38;
    for (var j = 0u; j < p.n; j++) {
        let kt = qkv_at(g, j, h, 1u) / 4u;
        var acc = 0.0;
        for (var c = 0u; c < hd4; c++) { acc = dot_acc(acc, q[c], qkv4(kt + c)); }
        logits[o + j] = acc;
        m = max(m, p.scale * acc);
    }
    var s = 0.0;
    for (var j = 0u; j < p.n; j++) { let e = exp(p.scale * logits[o + j] - m); prob[o + j] = e; s += e; }
    let inv = 1.0 / s;
    let sp = qsite(p.site_p);
    var acc: array<vec4<f32>, 16>;
    for (var c = 0u; c < hd4; c++) { acc[c] = vec4<f32>(0.0); }
    for (var j = 0u; j < p.n; j++) {
        let pr = prob[o + j] * inv;
        prob[o + j] = pr;
        var pq = pr;
        if (p.quant != 0u) { pq = fake_quant(pr, sp); prob_q[o + j] = pq; }
        let vt = qkv_at(g, j, h, 2u) / 4u;
        for (var c = 0u; c < hd4; c++) { acc[c] = fma(vec4<f32>(pq), qkv4(vt + c), acc[c]); }
    }
    // O (heads-major tap) and merged (token-major, proj's input) with its quantized copy.
    let ob = ((g * p.h + h) * p.n + i) * p.hd;
    let mb = (g * p.n + i) * p.h * p.hd + h * p.hd;
    let so = qsite(p.site_o);
    for (var c = 0u; c < hd4; c++) {
        for (var e = 0u; e < 4u; e++) {
            let v = acc[c][e];
            attn_out[ob + 4u * c + e] = v;
            merged[mb + 4u * c + e] = v;
            if (p.quant != 0u) { merged_q[mb + 4u * c + e] = fake_quant(v, so); }
        }
    }
}

// Gradient x through quantizer `site`'s straight-through mask at input `xin` (Q), or as is.
fn masked(x: f32, xin: f32, site: u32) -> f32 {
    if (p.quant == 0u) { return x; }
    return select(0.0, x, in_range(xin, qsite(site)));
}

// Phase 1 of the backward for query row i: dO (kept in d_o), dA (in da) and dq.
fn backward_row(g: u32, h: u32, i: u32) {
    let hd4 = HD4;
    let gh = g * p.h + h;
    let ob = (gh * p.n + i) * p.hd;
    let mb = (g * p.n + i) * p.h * p.hd + h * p.hd;
    var dov: array<vec4<f32>, 16>;
    for (var c = 0u; c < hd4; c++) {
        var v: vec4<f32>;
        for (var e = 0u; e < 4u; e++) {
            let t = mb + 4u * c + e;
            var x = masked(dmerged[t], merged_in[t], p.site_o);
            if (p.has_extra_o != 0u) { x += extra_o[ob + 4u * c + e]; }
            v[e] = x;
        }
        d_o[ob / 4u + c] = v;
        dov[c] = v;
    }
    // dP through P's mask, into da; then the softmax's backward in place.
    let o = (gh * p.n + i) * p.n;
    var dot_gp = 0.0;
    for (var j = 0u; j < p.n; j++) {
        let vt = qkv_at(g, j, h, 2u) / 4u;
        var acc = 0.0;
        for (var c = 0u; c < hd4; c++) { acc = dot_acc(acc, dov[c], qkv4(vt + c)); }
        let pr = prob_in[o + j];
        let gr = masked(acc, pr, p.site_p);
        da[o + j] = gr;
        dot_gp += gr * pr;
    }
    var dq: array<vec4<f32>, 16>;
    for (var c = 0u; c < hd4; c++) { dq[c] = vec4<f32>(0.0); }
    for (var j = 0u; j < p.n; j++) {
        var v = p.scale * prob_in[o + j] * (da[o + j] - dot_gp);
        if (p.has_extra_a != 0u) { v += extra_a[o + j]; }
        da[o + j] = v;
        let kt = qkv_at(g, j, h, 1u) / 4u;
        for (var c = 0u; c < hd4; c++) { dq[c] = fma(vec4<f32>(v), qkv4(kt + c), dq[c]); }
    }
    let qb = qkv_at(g, i, h, 0u);
    for (var c = 0u; c < hd4; c++) {
        for (var e = 0u; e < 4u; e++) {
            let t = qb + 4u * c + e;
            dqkv[t] = masked(dq[c][e], qkv_raw[t], p.site_q);
        }
    }
}

// Phase 2 for key j: dk = dAᵀ q and dv = P'ᵀ dO over every query row (phase 1's d_o and da).
fn backward_key(g: u32, h: u32, j: u32) {
    let hd4 = HD4;
    let gh = g * p.h + h;
    var dk: array<vec4<f32>, 16>;
    var dv: array<vec4<f32>, 16>;
    for (var c = 0u; c < hd4; c++) { dk[c] = vec4<f32>(0.0); dv[c] = vec4<f32>(0.0); }
    for (var i = 0u; i < p.n; i++) {
        let a = da_in[(gh * p.n + i) * p.n + j];
        let pq = probq_in[(gh * p.n + i) * p.n + j];
        let qt = qkv_at(g, i, h, 0u) / 4u;
        let ob = (gh * p.n + i) * p.hd;
        for (var c = 0u; c < hd4; c++) {
            dk[c] = fma(vec4<f32>(a), qkv4(qt + c), dk[c]);
            dv[c] = fma(vec4<f32>(pq), do4(ob / 4u + c), dv[c]);
        }
    }
    let kb = qkv_at(g, j, h, 1u);
    let vb = qkv_at(g, j, h, 2u);
    for (var c = 0u; c < hd4; c++) {
        for (var e = 0u; e < 4u; e++) {
            let x = 4u * c + e;
            dqkv[kb + x] = masked(dk[c][e], qkv_raw[kb + x], p.site_k);
            dqkv[vb + x] = masked(dv[c][e], qkv_raw[vb + x], p.site_v);
        }
    }
}

// The backward in two launches, the rows' and then the keys' (the launch boundary is the
// barrier between them): one thread per query row (key) of (image wid.z, head wid.y), in
// tiles of 64 along x, as the forward. One launch per image and head with a workgroup barrier
// between the phases measured slower on lavapipe than the op-by-op backward.
@compute @workgroup_size(64)
fn attention_backward_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = wid.x * 64u + lid;
    if (i < p.n) { backward_row(wid.z, wid.y, i); }
}

@compute @workgroup_size(64)
fn attention_backward_keys(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = wid.x * 64u + lid;
    if (j < p.n) { backward_key(wid.z, wid.y, j); }
}

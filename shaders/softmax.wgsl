// Row softmax of the scaled attention logits, and its backward.
//   forward:  prob = softmax(scale * a) over each row of length n
//   backward: da = scale * prob * (dprob - sum_j dprob_j prob_j) + extra   (extra: a gradient on
//             the raw logits from a loss that reads them, e.g. MaskAQ's attention losses)

// Fused forms (the same arithmetic, fewer launches): softmax_forward_q also writes prob through
// activation quantizer p.site (prob_q: P's operand of P v); softmax_backward_masked reads dprob
// through that quantizer's straight-through mask (image synthesis, where nothing else of the
// quantizer's backward is needed).
struct Params { rows: u32, n: u32, scale: f32, has_extra: u32, site: u32, p0: u32, p1: u32, p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> prob: array<f32>;
@group(0) @binding(3) var<storage, read> prob_in: array<f32>;
@group(0) @binding(4) var<storage, read> dprob: array<f32>;
@group(0) @binding(5) var<storage, read> extra: array<f32>;
@group(0) @binding(6) var<storage, read_write> da: array<f32>;
@group(0) @binding(7) var<storage, read_write> prob_q: array<f32>;
@group(0) @binding(8) var<storage, read> qparams: array<f32>;
@group(0) @binding(9) var<storage, read> qmeta: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * 64u + lid; }

// Writes exp(scale a - max) of the row at offset o to prob; returns 1 / their sum.
fn exp_row(o: u32) -> f32 {
    var m = -3.4028235e38;
    for (var j = 0u; j < p.n; j++) { m = max(m, p.scale * a[o + j]); }
    var s = 0.0;
    for (var j = 0u; j < p.n; j++) { let e = exp(p.scale * a[o + j] - m); prob[o + j] = e; s += e; }
    return 1.0 / s;
}

@compute @workgroup_size(64)
fn softmax_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let r = index(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let o = r * p.n;
    let inv = exp_row(o);
    for (var j = 0u; j < p.n; j++) { prob[o + j] = prob[o + j] * inv; }
}

@compute @workgroup_size(64)
fn softmax_forward_q(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let r = index(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let o = r * p.n;
    let inv = exp_row(o);
    let s = qsite(p.site);
    for (var j = 0u; j < p.n; j++) {
        let v = prob[o + j] * inv;
        prob[o + j] = v;
        prob_q[o + j] = fake_quant(v, s);
    }
}

@compute @workgroup_size(64)
fn softmax_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let r = index(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let o = r * p.n;
    var dot = 0.0;
    for (var j = 0u; j < p.n; j++) { dot += dprob[o + j] * prob_in[o + j]; }
    for (var j = 0u; j < p.n; j++) {
        var v = p.scale * prob_in[o + j] * (dprob[o + j] - dot);
        if (p.has_extra != 0u) { v += extra[o + j]; }
        da[o + j] = v;
    }
}

@compute @workgroup_size(64)
fn softmax_backward_masked(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let r = index(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let o = r * p.n;
    let s = qsite(p.site);
    var dot = 0.0;
    for (var j = 0u; j < p.n; j++) {
        dot += select(0.0, dprob[o + j], in_range(prob_in[o + j], s)) * prob_in[o + j];
    }
    for (var j = 0u; j < p.n; j++) {
        let g = select(0.0, dprob[o + j], in_range(prob_in[o + j], s));
        var v = p.scale * prob_in[o + j] * (g - dot);
        if (p.has_extra != 0u) { v += extra[o + j]; }
        da[o + j] = v;
    }
}

// LayerNorm over the last axis (length d) of a [rows, d] matrix, biased variance, eps from the
// model config (timm ViT: 1e-6). One invocation per row (or per column for the parameter
// gradients): no barriers, so the same kernel serves CPU adapters and GPUs.
//   forward:  y = (x - mean) * rstd * gamma + beta;      stats[r] = (mean, rstd)
//   backward: xhat = (x - mean) * rstd, g = dy * gamma
//             dx = dres + rstd * (g - mean(g) - xhat * mean(g * xhat))
//             dgamma = sum_r dy * xhat,  dbeta = sum_r dy

// `extra`: forward and backward_input: whether a residual gradient dres is added;
// backward_params: rows per chunk (0: all rows; else workgroup row z sums rows
// [z*extra, (z+1)*extra) into dgamma/dbeta[z*d + j], partials summed by a second launch).
// `site`: the fused entry points' activation quantizer (see below).
struct Params { rows: u32, d: u32, eps: f32, extra: u32, site: u32, p0: u32, p1: u32, p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
@group(0) @binding(6) var<storage, read> stats_in: array<f32>;
@group(0) @binding(7) var<storage, read> dy: array<f32>;
@group(0) @binding(8) var<storage, read> dres: array<f32>;
@group(0) @binding(9) var<storage, read_write> dx: array<f32>;
@group(0) @binding(10) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(11) var<storage, read_write> dbeta: array<f32>;

// Fused forms for the transformer block: the same arithmetic, fewer launches and passes.
// layernorm_forward_copy also copies x to xc (the residual stream's next buffer, which the
// branch then adds into); layernorm_forward_copy_q also writes yq, y through activation
// quantizer p.site (the input quantizer of the Linear that reads y);
// layernorm_backward_input_masked reads dy through that quantizer's straight-through mask
// (taken from its input y_in), which in image synthesis leaves nothing else to compute.
@group(0) @binding(12) var<storage, read_write> xc: array<f32>;
@group(0) @binding(13) var<storage, read_write> yq: array<f32>;
@group(0) @binding(14) var<storage, read> qparams: array<f32>;
@group(0) @binding(15) var<storage, read> qmeta: array<f32>;
@group(0) @binding(16) var<storage, read> y_in: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * 64u + lid; }

// (mean, rstd) of the row at offset o; stored in stats[r].
fn row_stats(r: u32, o: u32) -> vec2<f32> {
    var s = 0.0;
    for (var j = 0u; j < p.d; j++) { s += x[o + j]; }
    let mean = s / f32(p.d);
    var v = 0.0;
    for (var j = 0u; j < p.d; j++) { let t = x[o + j] - mean; v += t * t; }
    let rstd = 1.0 / sqrt(v / f32(p.d) + p.eps);
    stats[2u * r] = mean;
    stats[2u * r + 1u] = rstd;
    return vec2<f32>(mean, rstd);
}

@compute @workgroup_size(64)
fn layernorm_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let r = index(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let o = r * p.d;
    let ms = row_stats(r, o);
    for (var j = 0u; j < p.d; j++) {
        y[o + j] = (x[o + j] - ms.x) * ms.y * gamma[j] + beta[j];
    }
}

@compute @workgroup_size(64)
fn layernorm_forward_copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let r = index(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let o = r * p.d;
    let ms = row_stats(r, o);
    for (var j = 0u; j < p.d; j++) {
        let xv = x[o + j];
        y[o + j] = (xv - ms.x) * ms.y * gamma[j] + beta[j];
        xc[o + j] = xv;
    }
}

@compute @workgroup_size(64)
fn layernorm_forward_copy_q(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let r = index(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let o = r * p.d;
    let ms = row_stats(r, o);
    let s = qsite(p.site);
    for (var j = 0u; j < p.d; j++) {
        let xv = x[o + j];
        let v = (xv - ms.x) * ms.y * gamma[j] + beta[j];
        y[o + j] = v;
        yq[o + j] = fake_quant(v, s);
        xc[o + j] = xv;
    }
}

@compute @workgroup_size(64)
fn layernorm_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let r = index(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let o = r * p.d;
    let mean = stats_in[2u * r];
    let rstd = stats_in[2u * r + 1u];
    var sg = 0.0;
    var sgx = 0.0;
    for (var j = 0u; j < p.d; j++) {
        let g = dy[o + j] * gamma[j];
        sg += g;
        sgx += g * (x[o + j] - mean) * rstd;
    }
    sg = sg / f32(p.d);
    sgx = sgx / f32(p.d);
    for (var j = 0u; j < p.d; j++) {
        let xhat = (x[o + j] - mean) * rstd;
        var v = rstd * (dy[o + j] * gamma[j] - sg - xhat * sgx);
        if (p.extra != 0u) { v += dres[o + j]; }
        dx[o + j] = v;
    }
}

// layernorm_backward_input on the gradient dy [QN <= y_in / alpha + z' <= QP] (see above).
@compute @workgroup_size(64)
fn layernorm_backward_input_masked(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                   @builtin(local_invocation_index) lid: u32) {
    let r = index(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let o = r * p.d;
    let mean = stats_in[2u * r];
    let rstd = stats_in[2u * r + 1u];
    let s = qsite(p.site);
    var sg = 0.0;
    var sgx = 0.0;
    for (var j = 0u; j < p.d; j++) {
        let g = select(0.0, dy[o + j], in_range(y_in[o + j], s)) * gamma[j];
        sg += g;
        sgx += g * (x[o + j] - mean) * rstd;
    }
    sg = sg / f32(p.d);
    sgx = sgx / f32(p.d);
    for (var j = 0u; j < p.d; j++) {
        let xhat = (x[o + j] - mean) * rstd;
        var v = rstd * (select(0.0, dy[o + j], in_range(y_in[o + j], s)) * gamma[j] - sg - xhat * sgx);
        if (p.extra != 0u) { v += dres[o + j]; }
        dx[o + j] = v;
    }
}

@compute @workgroup_size(64)
fn layernorm_backward_params(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let j = index(wid, nwg, lid);
    if (j >= p.d) { return; }
    var r0 = 0u;
    var r1 = p.rows;
    var o = j;
    if (p.extra > 0u) {
        r0 = wid.z * p.extra;
        r1 = min(r0 + p.extra, p.rows);
        o = wid.z * p.d + j;
    }
    var sgm = 0.0;
    var sb = 0.0;
    for (var r = r0; r < r1; r++) {
        let g = dy[r * p.d + j];
        sgm += g * (x[r * p.d + j] - stats_in[2u * r]) * stats_in[2u * r + 1u];
        sb += g;
    }
    dgamma[o] = sgm;
    dbeta[o] = sb;
}

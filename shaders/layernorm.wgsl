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
struct Params { rows: u32, d: u32, eps: f32, extra: u32 }

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

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * 64u + lid; }

@compute @workgroup_size(64)
fn layernorm_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let r = index(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let o = r * p.d;
    var s = 0.0;
    for (var j = 0u; j < p.d; j++) { s += x[o + j]; }
    let mean = s / f32(p.d);
    var v = 0.0;
    for (var j = 0u; j < p.d; j++) { let t = x[o + j] - mean; v += t * t; }
    let rstd = 1.0 / sqrt(v / f32(p.d) + p.eps);
    for (var j = 0u; j < p.d; j++) {
        y[o + j] = (x[o + j] - mean) * rstd * gamma[j] + beta[j];
    }
    stats[2u * r] = mean;
    stats[2u * r + 1u] = rstd;
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

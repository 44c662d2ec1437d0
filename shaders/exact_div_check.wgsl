
// ---- test entry point for exact_div.wgsl (tests/quant_kernels.rs) -----------------------------
// For every pair (a, b): out[4i] = div_exact(a, b), out[4i + 1] = lsq_quotient with the adapter's
// a / b, and out[4i + 2], out[4i + 3] = lsq_quotient given a quotient k ULP above and below it
// (a simulated inexact division).
struct CheckParams { n: u32, k: u32, zr: f32, qn: f32, qp: f32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> cp: CheckParams;
@group(0) @binding(1) var<storage, read> ca: array<f32>;
@group(0) @binding(2) var<storage, read> cb: array<f32>;
@group(0) @binding(3) var<storage, read_write> cout: array<f32>;

@compute @workgroup_size(64)
fn div_check(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * 64u + lid;
    if (i >= cp.n) { return; }
    let a = ca[i];
    let b = cb[i];
    let q0 = a / b;
    // Moving the bit pattern moves the magnitude; stay on the same side of zero.
    let bits = bitcast<u32>(q0);
    let up = bitcast<f32>(bits + cp.k);
    var down = q0;
    if ((bits & 0x7fffffffu) >= cp.k) { down = bitcast<f32>(bits - cp.k); }
    cout[4u * i] = div_exact(a, b);
    cout[4u * i + 1u] = lsq_quotient(q0, a, b, cp.zr, cp.qn, cp.qp);
    cout[4u * i + 2u] = lsq_quotient(up, a, b, cp.zr, cp.qn, cp.qp);
    cout[4u * i + 3u] = lsq_quotient(down, a, b, cp.zr, cp.qn, cp.qp);
}

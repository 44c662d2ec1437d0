// Strided 4-d copy: dst[t_off + i.t] = alpha * src[s_off + i.s] + beta * dst[...] for every
// index i in [0,d0) x [0,d1) x [0,d2) x [0,d3). Head split/merge, gathering class-token rows,
// scattering their gradients, residual copies and gradient accumulation are all this kernel.
// fill: dst[i] = alpha for i < d0*d1*d2*d3.

struct Params {
    d0: u32, d1: u32, d2: u32, d3: u32,
    s_off: u32, s0: u32, s1: u32, s2: u32,
    s3: u32, t_off: u32, t0: u32, t1: u32,
    t2: u32, t3: u32, alpha: f32, beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
// fill4's other three buffers.
@group(0) @binding(3) var<storage, read_write> dst1: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst2: array<f32>;
@group(0) @binding(5) var<storage, read_write> dst3: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * 256u + lid; }

@compute @workgroup_size(256)
fn copy4d(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.d0 * p.d1 * p.d2 * p.d3) { return; }
    let i3 = i % p.d3;
    let i2 = (i / p.d3) % p.d2;
    let i1 = (i / (p.d3 * p.d2)) % p.d1;
    let i0 = i / (p.d3 * p.d2 * p.d1);
    let s = p.s_off + i0 * p.s0 + i1 * p.s1 + i2 * p.s2 + i3 * p.s3;
    let t = p.t_off + i0 * p.t0 + i1 * p.t1 + i2 * p.t2 + i3 * p.t3;
    var v = p.alpha * src[s];
    if (p.beta != 0.0) { v += p.beta * dst[t]; }
    dst[t] = v;
}

// The same copy with i1 and i0 taken from the workgroup grid (y, z) when they fit it: one
// division per invocation instead of three (none when d2 = 1), which matters where integer
// division is slow (lavapipe scalarises it).
@compute @workgroup_size(256)
fn copy_grid(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = wid.x * 256u + lid;
    if (i >= p.d2 * p.d3 || wid.y >= p.d1 || wid.z >= p.d0) { return; }
    var i2 = 0u;
    var i3 = i;
    if (p.d2 != 1u) {
        i2 = i / p.d3;
        i3 = i - i2 * p.d3;
    }
    let s = p.s_off + wid.z * p.s0 + wid.y * p.s1 + i2 * p.s2 + i3 * p.s3;
    let t = p.t_off + wid.z * p.t0 + wid.y * p.t1 + i2 * p.t2 + i3 * p.t3;
    var v = p.alpha * src[s];
    if (p.beta != 0.0) { v += p.beta * dst[t]; }
    dst[t] = v;
}

@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.d0 * p.d1 * p.d2 * p.d3) { return; }
    dst[p.t_off + i] = p.alpha;
}

// Four fills in one launch: dst, dst1, dst2 and dst3 (lengths d0..d3) set to alpha.
@compute @workgroup_size(256)
fn fill4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i < p.d0) { dst[i] = p.alpha; }
    if (i < p.d1) { dst1[i] = p.alpha; }
    if (i < p.d2) { dst2[i] = p.alpha; }
    if (i < p.d3) { dst3[i] = p.alpha; }
}

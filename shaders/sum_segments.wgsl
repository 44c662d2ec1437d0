// Several sums in one launch (the logged loss terms of a synthesis iteration): segment k adds
// up src_s[off .. off + len] of one of three sources s, scales it by alpha_k and writes it to
// out[o]. One 64-wide workgroup per segment: strided partial sums, then a tree.

struct Params {
    // Per segment: source (0, 1, 2), first index, length, output index.
    segs: array<vec4<u32>, 8>,
    alpha: array<vec4<f32>, 2>,
    count: u32, p0: u32, p1: u32, p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src0: array<f32>;
@group(0) @binding(2) var<storage, read> src1: array<f32>;
@group(0) @binding(3) var<storage, read> src2: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> acc: array<f32, 64>;

fn load(s: u32, j: u32) -> f32 {
    if (s == 0u) { return src0[j]; }
    if (s == 1u) { return src1[j]; }
    return src2[j];
}

@compute @workgroup_size(64)
fn sum_segments(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = wid.x;
    let seg = p.segs[k];
    var s = 0.0;
    for (var i = lid; i < seg.z; i += 64u) { s += load(seg.x, seg.y + i); }
    acc[lid] = s;
    workgroupBarrier();
    for (var w = 32u; w > 0u; w >>= 1u) {
        if (lid < w) { acc[lid] += acc[lid + w]; }
        workgroupBarrier();
    }
    if (lid == 0u) { out[seg.w] = p.alpha[k / 4u][k % 4u] * acc[0]; }
}

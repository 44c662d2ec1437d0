// The attention heads' outputs between their two layouts, fused with what comes next:
//   heads-major O [G, H, N, hd] (what P v writes, and the tap MaskAQ's losses read) and
//   token-major [G N, D] with D = H hd (the input of proj).
// heads_merge_q: merged = O in token-major order, and merged_q = merged through activation
//   quantizer p.site (proj's input quantizer) in the same launch.
// heads_split_add: dO = split(dmerged) + extra (extra: a loss's gradient on the tap O).
// heads_split_masked_add: the same with dmerged through the quantizer's straight-through mask
//   (image synthesis, where nothing else of the quantizer's backward is needed).
// One invocation per element, in heads-major order.

struct Params { g: u32, h: u32, n: u32, hd: u32, site: u32, p0: u32, p1: u32, p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> o: array<f32>;
@group(0) @binding(2) var<storage, read_write> merged: array<f32>;
@group(0) @binding(3) var<storage, read_write> merged_q: array<f32>;
@group(0) @binding(4) var<storage, read> qparams: array<f32>;
@group(0) @binding(5) var<storage, read> qmeta: array<f32>;
@group(0) @binding(6) var<storage, read> dmerged: array<f32>;
@group(0) @binding(7) var<storage, read> extra: array<f32>;
@group(0) @binding(8) var<storage, read_write> d_o: array<f32>;
@group(0) @binding(9) var<storage, read> merged_in: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * 256u + lid; }

// The token-major position of heads-major element i.
fn token_major(i: u32) -> u32 {
    let j = i % p.hd;
    let tok = (i / p.hd) % p.n;
    let head = (i / (p.hd * p.n)) % p.h;
    let grp = i / (p.hd * p.n * p.h);
    return (grp * p.n + tok) * (p.h * p.hd) + head * p.hd + j;
}

@compute @workgroup_size(256)
fn heads_merge_q(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.g * p.h * p.n * p.hd) { return; }
    let t = token_major(i);
    let v = o[i];
    merged[t] = v;
    merged_q[t] = fake_quant(v, qsite(p.site));
}

@compute @workgroup_size(256)
fn heads_split_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.g * p.h * p.n * p.hd) { return; }
    d_o[i] = dmerged[token_major(i)] + extra[i];
}

@compute @workgroup_size(256)
fn heads_split_masked_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.g * p.h * p.n * p.hd) { return; }
    let t = token_major(i);
    d_o[i] = select(0.0, dmerged[t], in_range(merged_in[t], qsite(p.site))) + extra[i];
}

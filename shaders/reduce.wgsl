// Sum over rows: out[o_off + i] = alpha * sum_{r < rows} src[s_off + r * rs + i] + beta * out[...]
// for i < n. Bias gradients (sum of dy over tokens), class-token and position-embedding
// gradients (sum over the batch). One invocation per output element, no barriers.
// With chunk > 0 (GPUs, long sums), workgroup row z sums only rows [z*chunk, (z+1)*chunk) and
// writes out[o_off + z*n + i]; a second launch sums those partials.

struct Params { n: u32, rows: u32, s_off: u32, rs: u32, o_off: u32, alpha: f32, beta: f32, chunk: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn sum_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * 64u + lid;
    if (i >= p.n) { return; }
    var r0 = 0u;
    var r1 = p.rows;
    var o = p.o_off + i;
    if (p.chunk > 0u) {
        r0 = wid.z * p.chunk;
        r1 = min(r0 + p.chunk, p.rows);
        o = p.o_off + wid.z * p.n + i;
    }
    var s = 0.0;
    for (var r = r0; r < r1; r++) { s += src[p.s_off + r * p.rs + i]; }
    var v = p.alpha * s;
    if (p.beta != 0.0) { v += p.beta * out[o]; }
    out[o] = v;
}

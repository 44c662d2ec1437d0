// Softmax cross-entropy against integer targets (stored as f32), one invocation per row:
//   loss[b] = logsumexp(logits[b]) - logits[b, y_b]
//   dlogits[b, j] = scale * (softmax(logits[b])_j - [j == y_b])      (scale = 1/B for a mean)

struct Params { rows: u32, classes: u32, scale: f32, p0: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;

@compute @workgroup_size(64)
fn cross_entropy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let r = (wid.y * nwg.x + wid.x) * 64u + lid;
    if (r >= p.rows) { return; }
    let o = r * p.classes;
    let y = u32(targets[r]);
    var m = -3.4028235e38;
    for (var j = 0u; j < p.classes; j++) { m = max(m, logits[o + j]); }
    var s = 0.0;
    for (var j = 0u; j < p.classes; j++) { s += exp(logits[o + j] - m); }
    let lse = m + log(s);
    loss[r] = lse - logits[o + min(y, p.classes - 1u)];
    for (var j = 0u; j < p.classes; j++) {
        var g = exp(logits[o + j] - lse);
        if (j == y) { g -= 1.0; }
        dlogits[o + j] = p.scale * g;
    }
}

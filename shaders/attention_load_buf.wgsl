
// ---- attention.wgsl's loader of q, k and v: a storage buffer -------------------------------
@group(0) @binding(9) var<storage, read> qkv_buf: array<vec4<f32>>;

// Floats 4t..4t+3 of qkv.
fn qkv4(t: u32) -> vec4<f32> { return qkv_buf[t]; }
@group(0) @binding(20) var<storage, read> d_o_buf: array<vec4<f32>>;

// Floats 4t..4t+3 of dO (the backward's keys phase).
fn do4(t: u32) -> vec4<f32> { return d_o_buf[t]; }

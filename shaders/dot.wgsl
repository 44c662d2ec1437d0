
// acc + a·b with every rounding spelled out: four fused multiply-adds, in x, y, z, w order.
// WGSL leaves the order and fusion of `dot` and of `acc + dot(..)` to the shader compiler, and
// two compilers on one CPU round them differently (naga's SPIR-V into lavapipe against its GLSL
// into Mesa's GL: docs/results.md §18), so every product over k is written with this instead.
fn dot_acc(acc: f32, a: vec4<f32>, b: vec4<f32>) -> f32 {
    return fma(a.w, b.w, fma(a.z, b.z, fma(a.y, b.y, fma(a.x, b.x, acc))));
}

// acc + (a·b0, a·b1, a·b2, a·b3), each element with dot_acc's roundings, as four vector fmas on
// bt = transpose(mat4x4(b0, b1, b2, b3)): one transpose serves every row of a block, and CPU
// adapters run the fmas four lanes wide.
fn dot4t_acc(acc: vec4<f32>, a: vec4<f32>, bt: mat4x4<f32>) -> vec4<f32> {
    let x = fma(vec4<f32>(a.x), bt[0], acc);
    let y = fma(vec4<f32>(a.y), bt[1], x);
    let z = fma(vec4<f32>(a.z), bt[2], y);
    return fma(vec4<f32>(a.w), bt[3], z);
}

// dot4t_acc with B's four vectors as they are loaded.
fn dot4_acc(acc: vec4<f32>, a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
    return dot4t_acc(acc, a, transpose(mat4x4<f32>(b0, b1, b2, b3)));
}

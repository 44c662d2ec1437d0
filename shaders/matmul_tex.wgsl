// Appended to matmul.wgsl (src/ops/matmul.rs: TEX_SOURCE): matmul_nt4, _nn4 and _tn4 with
// their A and B read through texture mirrors of the buffers (src/gpu/mirror.rs) instead of
// storage loads. On Mesa's llvmpipe a storage load runs once per SIMD lane with a branch per
// lane and component, a texel fetch is one gather, so these are several times faster there.
// Each keeps its base kernel's blocks and accumulation order: results are bit-identical.
//
// A mirror holds floats lo.. of its buffer as rgba32float texels, 2^w per texture row; the host
// passes the views' offsets relative to lo and w in `a_tw`, `b_tw` (the Params padding of the
// other variants).

@group(0) @binding(7) var ta: texture_2d<f32>;
@group(0) @binding(8) var tb: texture_2d<f32>;

fn texel_at(t: u32, w: u32) -> vec2<i32> {
    return vec2<i32>(i32(t & ((1u << w) - 1u)), i32(t >> w));
}
// Texel t (floats 4t..4t+3) of A's and B's mirrors.
fn ta4(t: u32) -> vec4<f32> { return textureLoad(ta, texel_at(t, p.a_tw), 0); }
fn tb4(t: u32) -> vec4<f32> { return textureLoad(tb, texel_at(t, p.b_tw), 0); }
// Float i of A's mirror.
fn ta1(i: u32) -> f32 { return ta4(i / 4u)[i % 4u]; }

@compute @workgroup_size(64)
fn matmul_nt4_tex(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let z = wid.z;
    let col0 = (wid.x * TX + (lid % TX)) * 4u;
    let row0 = (wid.y * (64u / TX) + (lid / TX)) * 4u;
    if (row0 >= p.m || col0 >= p.n) { return; }
    let ab = base_a(z);
    let bb = base_b(z);
    var ar: array<u32, 4>;
    var bc: array<u32, 4>;
    for (var i = 0u; i < 4u; i++) {
        ar[i] = (ab + min(row0 + i, p.m - 1u) * p.a_rs) / 4u;
        bc[i] = (bb + min(col0 + i, p.n - 1u) * p.b_cs) / 4u;
    }
    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var k4 = 0u; k4 < p.k / 4u; k4++) {
        let bt = transpose(mat4x4<f32>(tb4(bc[0] + k4), tb4(bc[1] + k4), tb4(bc[2] + k4), tb4(bc[3] + k4)));
        acc[0] = dot4t_acc(acc[0], ta4(ar[0] + k4), bt); acc[1] = dot4t_acc(acc[1], ta4(ar[1] + k4), bt);
        acc[2] = dot4t_acc(acc[2], ta4(ar[2] + k4), bt); acc[3] = dot4t_acc(acc[3], ta4(ar[3] + k4), bt);
    }
    let cb = base_c(z);
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            store(cb, row0 + i, col0 + j, acc[i][j]);
        }
    }
}

// Floats i..i+3 of A's mirror, for any i: two texels and a shift by i % 4.
fn ta_run4(i: u32) -> vec4<f32> {
    let lo = ta4(i / 4u);
    let hi = ta4(i / 4u + 1u);
    let s = i % 4u;
    let v1 = vec4<f32>(lo.yzw, hi.x);
    let v2 = vec4<f32>(lo.zw, hi.xy);
    let v3 = vec4<f32>(lo.w, hi.xyz);
    return select(select(select(lo, v1, s == 1u), v2, s == 2u), v3, s == 3u);
}

// One step of k: C's four rows += A[row][k] * B[k][col0..col0 + 4], in matmul_nn4's order.
fn nn_tex_step(acc: ptr<function, array<vec4<f32>, 4>>, a: vec4<f32>, bv: vec4<f32>) {
    (*acc)[0] = fma(vec4<f32>(a.x), bv, (*acc)[0]);
    (*acc)[1] = fma(vec4<f32>(a.y), bv, (*acc)[1]);
    (*acc)[2] = fma(vec4<f32>(a.z), bv, (*acc)[2]);
    (*acc)[3] = fma(vec4<f32>(a.w), bv, (*acc)[3]);
}

// Four steps of k from row values r[i] = A[row0 + i][k0..k0 + 4], B's rows from texel bt on.
fn nn_tex_k4(acc: ptr<function, array<vec4<f32>, 4>>, r: array<vec4<f32>, 4>, bt: u32, brs: u32) {
    nn_tex_step(acc, vec4<f32>(r[0].x, r[1].x, r[2].x, r[3].x), tb4(bt));
    nn_tex_step(acc, vec4<f32>(r[0].y, r[1].y, r[2].y, r[3].y), tb4(bt + brs));
    nn_tex_step(acc, vec4<f32>(r[0].z, r[1].z, r[2].z, r[3].z), tb4(bt + 2u * brs));
    nn_tex_step(acc, vec4<f32>(r[0].w, r[1].w, r[2].w, r[3].w), tb4(bt + 3u * brs));
}

// Where A is contiguous along k (a_cs = 1: dy W, P v), four steps of k read each row's four
// values with one texel (two where the row is not 16-byte aligned) instead of four.
@compute @workgroup_size(64)
fn matmul_nn4_tex(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let z = wid.z;
    let col0 = (wid.x * TX + (lid % TX)) * 4u;
    let row0 = (wid.y * (64u / TX) + (lid / TX)) * 4u;
    if (row0 >= p.m || col0 >= p.n) { return; }
    let ab = base_a(z);
    let b0 = (base_b(z) + col0) / 4u;
    var ar: array<u32, 4>;
    for (var i = 0u; i < 4u; i++) { ar[i] = ab + min(row0 + i, p.m - 1u) * p.a_rs; }
    let brs = p.b_rs / 4u;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) { acc[i] = vec4<f32>(0.0); }
    // Four steps of k at a time where A is contiguous along k; the rest one at a time.
    let k4 = select(0u, p.k / 4u * 4u, p.a_cs == 1u);
    if ((p.a_off | p.a_rs | p.a_b1 | p.a_b2) % 4u == 0u) {
        for (var k0 = 0u; k0 < k4; k0 += 4u) {
            let r = array<vec4<f32>, 4>(ta4((ar[0] + k0) / 4u), ta4((ar[1] + k0) / 4u),
                                        ta4((ar[2] + k0) / 4u), ta4((ar[3] + k0) / 4u));
            nn_tex_k4(&acc, r, b0 + k0 * brs, brs);
        }
    } else {
        for (var k0 = 0u; k0 < k4; k0 += 4u) {
            let r = array<vec4<f32>, 4>(ta_run4(ar[0] + k0), ta_run4(ar[1] + k0),
                                        ta_run4(ar[2] + k0), ta_run4(ar[3] + k0));
            nn_tex_k4(&acc, r, b0 + k0 * brs, brs);
        }
    }
    for (var kk = k4; kk < p.k; kk++) {
        let ak = kk * p.a_cs;
        let a = vec4<f32>(ta1(ar[0] + ak), ta1(ar[1] + ak), ta1(ar[2] + ak), ta1(ar[3] + ak));
        nn_tex_step(&acc, a, tb4(b0 + kk * brs));
    }
    let cb = base_c(z);
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            store(cb, row0 + i, col0 + j, acc[i][j]);
        }
    }
}

@compute @workgroup_size(64)
fn matmul_tn4_tex(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let z = wid.z;
    let col0 = (wid.x * TX + (lid % TX)) * 4u;
    let row0 = (wid.y * (64u / TX) + (lid / TX)) * 4u;
    if (row0 >= p.m || col0 >= p.n) { return; }
    let a0 = (base_a(z) + row0) / 4u;
    let b0 = (base_b(z) + col0) / 4u;
    let acs = p.a_cs / 4u;
    let brs = p.b_rs / 4u;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) { acc[i] = vec4<f32>(0.0); }
    for (var kk = 0u; kk < p.k; kk++) {
        let av = ta4(a0 + kk * acs);
        let bv = tb4(b0 + kk * brs);
        acc[0] = fma(vec4<f32>(av.x), bv, acc[0]);
        acc[1] = fma(vec4<f32>(av.y), bv, acc[1]);
        acc[2] = fma(vec4<f32>(av.z), bv, acc[2]);
        acc[3] = fma(vec4<f32>(av.w), bv, acc[3]);
    }
    let cb = base_c(z);
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            store(cb, row0 + i, col0 + j, acc[i][j]);
        }
    }
}

// matmul_nt4_tex with 4 x 8 outputs per invocation (TX invocations along n: 32 x 64 tiles):
// twelve texels per 4 steps of k for 128 multiply-adds where the 4 x 4 block reads eight for
// 64. Same accumulation order per element as matmul_nt4 (bit-identical).
fn dot8(a: vec4<f32>, b: array<vec4<f32>, 8>, lo: ptr<function, vec4<f32>>, hi: ptr<function, vec4<f32>>) {
    *lo = dot4_acc(*lo, a, b[0], b[1], b[2], b[3]);
    *hi = dot4_acc(*hi, a, b[4], b[5], b[6], b[7]);
}

@compute @workgroup_size(64)
fn matmul_nt4x8_tex(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let z = wid.z;
    let col0 = (wid.x * TX + (lid % TX)) * 8u;
    let row0 = (wid.y * (64u / TX) + (lid / TX)) * 4u;
    if (row0 >= p.m || col0 >= p.n) { return; }
    let ab = base_a(z);
    let bb = base_b(z);
    var ar: array<u32, 4>;
    var bc: array<u32, 8>;
    for (var i = 0u; i < 4u; i++) { ar[i] = (ab + min(row0 + i, p.m - 1u) * p.a_rs) / 4u; }
    for (var j = 0u; j < 8u; j++) { bc[j] = (bb + min(col0 + j, p.n - 1u) * p.b_cs) / 4u; }
    var lo0 = vec4<f32>(0.0); var lo1 = vec4<f32>(0.0); var lo2 = vec4<f32>(0.0); var lo3 = vec4<f32>(0.0);
    var hi0 = vec4<f32>(0.0); var hi1 = vec4<f32>(0.0); var hi2 = vec4<f32>(0.0); var hi3 = vec4<f32>(0.0);
    for (var k4 = 0u; k4 < p.k / 4u; k4++) {
        let b = array<vec4<f32>, 8>(tb4(bc[0] + k4), tb4(bc[1] + k4), tb4(bc[2] + k4), tb4(bc[3] + k4),
                                    tb4(bc[4] + k4), tb4(bc[5] + k4), tb4(bc[6] + k4), tb4(bc[7] + k4));
        dot8(ta4(ar[0] + k4), b, &lo0, &hi0);
        dot8(ta4(ar[1] + k4), b, &lo1, &hi1);
        dot8(ta4(ar[2] + k4), b, &lo2, &hi2);
        dot8(ta4(ar[3] + k4), b, &lo3, &hi3);
    }
    let cb = base_c(z);
    let lo = array<vec4<f32>, 4>(lo0, lo1, lo2, lo3);
    let hi = array<vec4<f32>, 4>(hi0, hi1, hi2, hi3);
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            store(cb, row0 + i, col0 + j, lo[i][j]);
            store(cb, row0 + i, col0 + 4u + j, hi[i][j]);
        }
    }
}

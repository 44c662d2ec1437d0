// Batched strided matrix multiply:
//   C[z](m, n) = alpha * (sum_k A[z](m, k) * B[z](k, n) + bias[n]) + beta * C[z](m, n)
// Every operand is addressed through (offset, row stride, column stride, two batch strides), so
// transposed operands, heads inside a fused qkv matrix and weight-gradient products
// (A transposed) all use this one kernel. The batch index z splits into z1 = z / batch2 and
// z2 = z % batch2 (e.g. image and head).
//
// Every entry point has the same semantics; they differ in how they block and load (the table
// of variants, the layouts each reads and the grid each needs is src/ops/matmul_variants.rs):
// - matmul_regs and the vec4 variants: no workgroup memory and no barriers, a block of C in
//   registers per invocation. For CPU adapters (lavapipe), where barriers are emulated and slow.
// - matmul_tiled*: 64x64 C tile per 256-invocation workgroup, 4x4 per invocation, K-tiles of 16
//   staged in workgroup memory. For real GPUs.

struct Params {
    m: u32, n: u32, k: u32, batch2: u32,
    a_off: u32, a_rs: u32, a_cs: u32, a_b1: u32,
    a_b2: u32, b_off: u32, b_rs: u32, b_cs: u32,
    b_b1: u32, b_b2: u32, c_off: u32, c_rs: u32,
    c_b1: u32, c_b2: u32, bias_off: u32, has_bias: u32,
    alpha: f32, beta: f32, a_tw: u32, b_tw: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

fn base_a(z: u32) -> u32 { return p.a_off + (z / p.batch2) * p.a_b1 + (z % p.batch2) * p.a_b2; }
fn base_b(z: u32) -> u32 { return p.b_off + (z / p.batch2) * p.b_b1 + (z % p.batch2) * p.b_b2; }
fn base_c(z: u32) -> u32 { return p.c_off + (z / p.batch2) * p.c_b1 + (z % p.batch2) * p.c_b2; }

fn store(cb: u32, row: u32, col: u32, acc: f32) {
    if (row >= p.m || col >= p.n) { return; }
    var v = acc;
    if (p.has_bias != 0u) { v = v + bias[p.bias_off + col]; }
    v = p.alpha * v;
    let idx = cb + row * p.c_rs + col;
    if (p.beta != 0.0) { v = v + p.beta * c[idx]; }
    c[idx] = v;
}

// ---- CPU adapters: registers only -------------------------------------------------------
// Workgroup of 64 = 8 x 8 invocations covers a 32 x 32 block of C. `repeats` > 1 only for the
// test-only slowed variant, which computes the same block that many times over.
fn regs_block(wid: vec3<u32>, lid: u32, repeats: u32) {
    let z = wid.z;
    let col0 = (wid.x * 8u + (lid % 8u)) * 4u;
    let row0 = (wid.y * 8u + (lid / 8u)) * 4u;
    if (row0 >= p.m || col0 >= p.n) { return; }
    let ab = base_a(z);
    let bb = base_b(z);
    // Clamp out-of-range rows/columns to the last valid one so the inner loop has no branches;
    // their results are discarded by store().
    var ar: array<u32, 4>;
    var bc: array<u32, 4>;
    for (var i = 0u; i < 4u; i++) {
        ar[i] = ab + min(row0 + i, p.m - 1u) * p.a_rs;
        bc[i] = bb + min(col0 + i, p.n - 1u) * p.b_cs;
    }
    var acc: array<f32, 16>;
    for (var r = 0u; r < repeats; r++) {
    for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }
    for (var kk = 0u; kk < p.k; kk++) {
        let ak = kk * p.a_cs;
        let bk = kk * p.b_rs;
        let a0 = a[ar[0] + ak]; let a1 = a[ar[1] + ak]; let a2 = a[ar[2] + ak]; let a3 = a[ar[3] + ak];
        let b0 = b[bc[0] + bk]; let b1 = b[bc[1] + bk]; let b2 = b[bc[2] + bk]; let b3 = b[bc[3] + bk];
        acc[0] = fma(a0, b0, acc[0]); acc[1] = fma(a0, b1, acc[1]); acc[2] = fma(a0, b2, acc[2]); acc[3] = fma(a0, b3, acc[3]);
        acc[4] = fma(a1, b0, acc[4]); acc[5] = fma(a1, b1, acc[5]); acc[6] = fma(a1, b2, acc[6]); acc[7] = fma(a1, b3, acc[7]);
        acc[8] = fma(a2, b0, acc[8]); acc[9] = fma(a2, b1, acc[9]); acc[10] = fma(a2, b2, acc[10]); acc[11] = fma(a2, b3, acc[11]);
        acc[12] = fma(a3, b0, acc[12]); acc[13] = fma(a3, b1, acc[13]); acc[14] = fma(a3, b2, acc[14]); acc[15] = fma(a3, b3, acc[15]);
    }
    }
    let cb = base_c(z);
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            store(cb, row0 + i, col0 + j, acc[i * 4u + j]);
        }
    }
}

@compute @workgroup_size(64)
fn matmul_regs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    regs_block(wid, lid, 1u);
}

// Tests only (`Variant::test_only`): matmul_regs slowed eightfold, to show the tuner never
// picks a slower variant.
@compute @workgroup_size(64)
fn matmul_slow_test(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    regs_block(wid, lid, 8u);
}

// The vec4 kernels below lay a workgroup's 64 invocations out as TX along n by 64 / TX along m
// (an override constant: 8 gives 32 x 32 tiles; 2 or 4 fit products with few columns, such as
// attention's head dimension, without idle lanes).
override TX: u32 = 8u;

// CPU adapters, both operands contiguous along k (A row-major, B = a transposed row-major
// matrix, as in x Wᵀ and q kᵀ) with offsets and strides multiples of 4: vec4 loads along k,
// 4 x 4 outputs per invocation from 8 vec4 loads per 4 steps of k.
@group(0) @binding(5) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> b4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn matmul_nt4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
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
        let bt = transpose(mat4x4<f32>(b4[bc[0] + k4], b4[bc[1] + k4], b4[bc[2] + k4], b4[bc[3] + k4]));
        acc[0] = dot4t_acc(acc[0], a4[ar[0] + k4], bt); acc[1] = dot4t_acc(acc[1], a4[ar[1] + k4], bt);
        acc[2] = dot4t_acc(acc[2], a4[ar[2] + k4], bt); acc[3] = dot4t_acc(acc[3], a4[ar[3] + k4], bt);
    }
    let cb = base_c(z);
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            store(cb, row0 + i, col0 + j, acc[i][j]);
        }
    }
}

// CPU adapters, B contiguous along n (row-major B: dy W, P v): one vec4 load of B and four
// scalar loads of A per step of k for a 4 x 4 block.
@compute @workgroup_size(64)
fn matmul_nn4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
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
    for (var kk = 0u; kk < p.k; kk++) {
        let bv = b4[b0 + kk * brs];
        let ak = kk * p.a_cs;
        acc[0] = fma(vec4<f32>(a[ar[0] + ak]), bv, acc[0]);
        acc[1] = fma(vec4<f32>(a[ar[1] + ak]), bv, acc[1]);
        acc[2] = fma(vec4<f32>(a[ar[2] + ak]), bv, acc[2]);
        acc[3] = fma(vec4<f32>(a[ar[3] + ak]), bv, acc[3]);
    }
    let cb = base_c(z);
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            store(cb, row0 + i, col0 + j, acc[i][j]);
        }
    }
}

// CPU adapters, A contiguous along m and B along n (dyᵀ x, Pᵀ dO): an outer product of two
// vec4 loads per step of k.
@compute @workgroup_size(64)
fn matmul_tn4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
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
        let av = a4[a0 + kk * acs];
        let bv = b4[b0 + kk * brs];
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

// ---- real GPUs: 64 x 64 tiles through workgroup memory -----------------------------------
// Tiles are [TK][TILE / 4] vec4s, so an invocation reads its 4 rows of A and 4 columns of B for
// one k with two 16-byte loads; the 4 x 4 block accumulates in four vec4 registers (named, not
// an indexed array: drivers may place a dynamically indexed array in local memory).
const TILE: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> a_tile: array<vec4<f32>, 256>; // [TK][TILE / 4], A stored transposed (k-major)
var<workgroup> b_tile: array<vec4<f32>, 256>; // [TK][TILE / 4]

// Element `i` (0..TILE) of row `k` of a tile.
fn tile_index(k: u32, i: u32) -> u32 { return k * (TILE / 4u) + i / 4u; }

// One K-tile's contribution to the 4 x 4 block (rows ty*4.., columns tx*4..) of C.
fn tile_product(ty: u32, tx: u32, acc: ptr<function, array<vec4<f32>, 4>>) {
    var c0 = (*acc)[0]; var c1 = (*acc)[1]; var c2 = (*acc)[2]; var c3 = (*acc)[3];
    for (var kk = 0u; kk < TK; kk++) {
        let av = a_tile[kk * (TILE / 4u) + ty];
        let bv = b_tile[kk * (TILE / 4u) + tx];
        c0 = fma(vec4<f32>(av.x), bv, c0);
        c1 = fma(vec4<f32>(av.y), bv, c1);
        c2 = fma(vec4<f32>(av.z), bv, c2);
        c3 = fma(vec4<f32>(av.w), bv, c3);
    }
    (*acc)[0] = c0; (*acc)[1] = c1; (*acc)[2] = c2; (*acc)[3] = c3;
}

fn store_block(cb: u32, row0: u32, col0: u32, acc: array<vec4<f32>, 4>) {
    let c0 = acc[0]; let c1 = acc[1]; let c2 = acc[2]; let c3 = acc[3];
    store(cb, row0, col0, c0.x); store(cb, row0, col0 + 1u, c0.y); store(cb, row0, col0 + 2u, c0.z); store(cb, row0, col0 + 3u, c0.w);
    store(cb, row0 + 1u, col0, c1.x); store(cb, row0 + 1u, col0 + 1u, c1.y); store(cb, row0 + 1u, col0 + 2u, c1.z); store(cb, row0 + 1u, col0 + 3u, c1.w);
    store(cb, row0 + 2u, col0, c2.x); store(cb, row0 + 2u, col0 + 1u, c2.y); store(cb, row0 + 2u, col0 + 2u, c2.z); store(cb, row0 + 2u, col0 + 3u, c2.w);
    store(cb, row0 + 3u, col0, c3.x); store(cb, row0 + 3u, col0 + 1u, c3.y); store(cb, row0 + 3u, col0 + 2u, c3.z); store(cb, row0 + 3u, col0 + 3u, c3.w);
}

@compute @workgroup_size(256)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let z = wid.z;
    let tm = wid.y * TILE;
    let tn = wid.x * TILE;
    let tx = lid % 16u;
    let ty = lid / 16u;
    let ab = base_a(z);
    let bb = base_b(z);
    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        for (var r = 0u; r < 4u; r++) {
            let e = lid + r * 256u;
            // Walk memory along whichever axis is contiguous so global loads coalesce.
            var mi: u32; var ka: u32;
            if (p.a_cs == 1u) { mi = e / TK; ka = e % TK; } else { ka = e / TILE; mi = e % TILE; }
            let gm = tm + mi; let gka = k0 + ka;
            var av = 0.0;
            if (gm < p.m && gka < p.k) { av = a[ab + gm * p.a_rs + gka * p.a_cs]; }
            a_tile[tile_index(ka, mi)][mi % 4u] = av;
            var ni: u32; var kb: u32;
            if (p.b_cs == 1u) { kb = e / TILE; ni = e % TILE; } else { ni = e / TK; kb = e % TK; }
            let gn = tn + ni; let gkb = k0 + kb;
            var bv = 0.0;
            if (gn < p.n && gkb < p.k) { bv = b[bb + gkb * p.b_rs + gn * p.b_cs]; }
            b_tile[tile_index(kb, ni)][ni % 4u] = bv;
        }
        workgroupBarrier();
        tile_product(ty, tx, &acc);
        workgroupBarrier();
    }
    store_block(base_c(z), tm + ty * 4u, tn + tx * 4u, acc);
}

// The tiled kernel for both operands contiguous along k (x Wᵀ, q kᵀ; the layout `nt4_ok`
// checks): each invocation fetches one vec4 of A and one of B per K-tile.
@compute @workgroup_size(256)
fn matmul_tiled_nt4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let z = wid.z;
    let tm = wid.y * TILE;
    let tn = wid.x * TILE;
    let tx = lid % 16u;
    let ty = lid / 16u;
    let ab = base_a(z);
    let bb = base_b(z);
    // Loader role: row (or column) lid / 4 of the tile, k quad lid % 4.
    let li = lid / 4u;
    let lq = lid % 4u;
    let arow = (ab + min(tm + li, p.m - 1u) * p.a_rs) / 4u;
    let bcol = (bb + min(tn + li, p.n - 1u) * p.b_cs) / 4u;
    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        let kq = k0 / 4u + lq;
        var av = vec4<f32>(0.0);
        var bv = vec4<f32>(0.0);
        if (kq * 4u < p.k) {
            av = a4[arow + kq];
            bv = b4[bcol + kq];
        }
        a_tile[tile_index(lq * 4u, li)][li % 4u] = av.x;
        a_tile[tile_index(lq * 4u + 1u, li)][li % 4u] = av.y;
        a_tile[tile_index(lq * 4u + 2u, li)][li % 4u] = av.z;
        a_tile[tile_index(lq * 4u + 3u, li)][li % 4u] = av.w;
        b_tile[tile_index(lq * 4u, li)][li % 4u] = bv.x;
        b_tile[tile_index(lq * 4u + 1u, li)][li % 4u] = bv.y;
        b_tile[tile_index(lq * 4u + 2u, li)][li % 4u] = bv.z;
        b_tile[tile_index(lq * 4u + 3u, li)][li % 4u] = bv.w;
        workgroupBarrier();
        tile_product(ty, tx, &acc);
        workgroupBarrier();
    }
    store_block(base_c(z), tm + ty * 4u, tn + tx * 4u, acc);
}

// ---- CPU adapters: an 8 x 8 block, unrolled by hand --------------------------------------
// Each invocation owns an 8 x 8 block of C: 16 vec4 loads per 4 steps of k for 256
// multiply-adds, twice matmul_nt4's ratio (lavapipe loads storage buffers one lane at a time,
// so loads, not arithmetic, bound its kernels). Unrolled by hand so that no accumulator index
// depends on a loop variable. The accumulation order per element is matmul_nt4's, so results
// are bit-identical to it. Workgroups of 8 x 8 invocations: 64 x 64 tiles. (8 x 8 versions
// of nn4 and tn4 measured 1.4-1.6x slower than those on lavapipe and were dropped.)

fn store_row8(cb: u32, row: u32, col0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    store(cb, row, col0, lo.x); store(cb, row, col0 + 1u, lo.y);
    store(cb, row, col0 + 2u, lo.z); store(cb, row, col0 + 3u, lo.w);
    store(cb, row, col0 + 4u, hi.x); store(cb, row, col0 + 5u, hi.y);
    store(cb, row, col0 + 6u, hi.z); store(cb, row, col0 + 7u, hi.w);
}

// Both operands contiguous along k (x Wᵀ, q kᵀ), as matmul_nt4.
@compute @workgroup_size(64)
fn matmul_nt8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let z = wid.z;
    let col0 = (wid.x * 8u + (lid % 8u)) * 8u;
    let row0 = (wid.y * 8u + (lid / 8u)) * 8u;
    if (row0 >= p.m || col0 >= p.n) { return; }
    let ab = base_a(z);
    let bb = base_b(z);
    var ar: array<u32, 8>;
    var bc: array<u32, 8>;
    for (var i = 0u; i < 8u; i++) {
        ar[i] = (ab + min(row0 + i, p.m - 1u) * p.a_rs) / 4u;
        bc[i] = (bb + min(col0 + i, p.n - 1u) * p.b_cs) / 4u;
    }
    var acc: array<vec4<f32>, 16>;
    for (var i = 0u; i < 16u; i++) { acc[i] = vec4<f32>(0.0); }
    for (var k4 = 0u; k4 < p.k / 4u; k4++) {
        let b0 = b4[bc[0] + k4]; let b1 = b4[bc[1] + k4]; let b2 = b4[bc[2] + k4]; let b3 = b4[bc[3] + k4];
        let b5 = b4[bc[5] + k4]; let b6 = b4[bc[6] + k4]; let b7 = b4[bc[7] + k4]; let b4v = b4[bc[4] + k4];
        var a = a4[ar[0] + k4];
        acc[0] = dot4_acc(acc[0], a, b0, b1, b2, b3); acc[1] = dot4_acc(acc[1], a, b4v, b5, b6, b7);
        a = a4[ar[1] + k4];
        acc[2] = dot4_acc(acc[2], a, b0, b1, b2, b3); acc[3] = dot4_acc(acc[3], a, b4v, b5, b6, b7);
        a = a4[ar[2] + k4];
        acc[4] = dot4_acc(acc[4], a, b0, b1, b2, b3); acc[5] = dot4_acc(acc[5], a, b4v, b5, b6, b7);
        a = a4[ar[3] + k4];
        acc[6] = dot4_acc(acc[6], a, b0, b1, b2, b3); acc[7] = dot4_acc(acc[7], a, b4v, b5, b6, b7);
        a = a4[ar[4] + k4];
        acc[8] = dot4_acc(acc[8], a, b0, b1, b2, b3); acc[9] = dot4_acc(acc[9], a, b4v, b5, b6, b7);
        a = a4[ar[5] + k4];
        acc[10] = dot4_acc(acc[10], a, b0, b1, b2, b3); acc[11] = dot4_acc(acc[11], a, b4v, b5, b6, b7);
        a = a4[ar[6] + k4];
        acc[12] = dot4_acc(acc[12], a, b0, b1, b2, b3); acc[13] = dot4_acc(acc[13], a, b4v, b5, b6, b7);
        a = a4[ar[7] + k4];
        acc[14] = dot4_acc(acc[14], a, b0, b1, b2, b3); acc[15] = dot4_acc(acc[15], a, b4v, b5, b6, b7);
    }
    let cb = base_c(z);
    for (var i = 0u; i < 8u; i++) { store_row8(cb, row0 + i, col0, acc[2u * i], acc[2u * i + 1u]); }
}

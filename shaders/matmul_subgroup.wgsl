// Appended to matmul.wgsl (src/ops/matmul.rs: SUBGROUP_SOURCE), compiled only on adapters
// with subgroups of exactly 8 invocations (lavapipe on 256-bit SIMD): a module that uses
// subgroup operations does not validate on a device without them.
//
// matmul_nt4_sg: both operands contiguous along k, the 4 x 4 block per invocation of
// matmul_nt4, with the loads shared inside each subgroup. On lavapipe a subgroup is one SIMD
// vector of 8 lanes and every storage load runs once per lane, so loads bound the CPU kernels.
// A subgroup covers 8 rows x 16 columns of C (2 x 4 blocks of 4 x 4): per 4 steps of k each
// lane loads one vec4 of A (its subgroup's row s) and two of B (columns s and 8 + s), and takes
// the rows and columns of its own block from the other lanes with subgroupShuffle. That is 3
// loads per lane instead of matmul_nt4's 8. Eight subgroups (4 down, 2 across) make the same
// 32 x 32 tile as matmul_nt4 (with the override SGC = 2 subgroups across; SGC = 1 stacks all
// eight for a 64 x 16 tile, for products with 16 columns such as attention's head dimension),
// and the accumulation order is matmul_nt4's (bit-identical results). Nothing returns early: every lane takes part in every shuffle; rows and columns
// past the edge are clamped for the loads and skipped by store().
override SGC: u32 = 2u;

// Where lane s of subgroup g of a workgroup works: its subgroup's 8 x 16 block of C starts at
// (sub_row, sub_col), its own 4 x 4 block at (row0, col0).
struct SgBlock { s: u32, sub_row: u32, sub_col: u32, row0: u32, col0: u32 }

fn sg_block(wid: vec3<u32>, lid: u32) -> SgBlock {
    let s = lid % 8u;
    let g = lid / 8u;
    let sub_row = wid.y * (64u / SGC) + (g / SGC) * 8u;
    let sub_col = wid.x * (16u * SGC) + (g % SGC) * 16u;
    return SgBlock(s, sub_row, sub_col, sub_row + (s / 4u) * 4u, sub_col + (s % 4u) * 4u);
}

@compute @workgroup_size(64)
fn matmul_nt4_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let z = wid.z;
    let blk = sg_block(wid, lid);
    let s = blk.s;
    let sub_row = blk.sub_row;
    let sub_col = blk.sub_col;
    let row0 = blk.row0;
    let col0 = blk.col0;
    let a_row = (base_a(z) + min(sub_row + s, p.m - 1u) * p.a_rs) / 4u;
    let b_lo = (base_b(z) + min(sub_col + s, p.n - 1u) * p.b_cs) / 4u;
    let b_hi = (base_b(z) + min(sub_col + 8u + s, p.n - 1u) * p.b_cs) / 4u;
    // The lanes holding this lane's rows, and its columns (in b_lo for blocks 0-1, b_hi for 2-3).
    let ra = (s / 4u) * 4u;
    let cb = (s % 4u) * 4u;
    let hi = cb >= 8u;
    let cl = cb % 8u;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }
    for (var k4 = 0u; k4 < p.k / 4u; k4++) {
        let va = a4[a_row + k4];
        let vlo = b4[b_lo + k4];
        let vhi = b4[b_hi + k4];
        let a0 = subgroupShuffle(va, ra); let a1 = subgroupShuffle(va, ra + 1u);
        let a2 = subgroupShuffle(va, ra + 2u); let a3 = subgroupShuffle(va, ra + 3u);
        let b0 = select(subgroupShuffle(vlo, cl), subgroupShuffle(vhi, cl), hi);
        let b1 = select(subgroupShuffle(vlo, cl + 1u), subgroupShuffle(vhi, cl + 1u), hi);
        let b2 = select(subgroupShuffle(vlo, cl + 2u), subgroupShuffle(vhi, cl + 2u), hi);
        let b3 = select(subgroupShuffle(vlo, cl + 3u), subgroupShuffle(vhi, cl + 3u), hi);
        acc[0] = dot_acc(acc[0], a0, b0); acc[1] = dot_acc(acc[1], a0, b1); acc[2] = dot_acc(acc[2], a0, b2); acc[3] = dot_acc(acc[3], a0, b3);
        acc[4] = dot_acc(acc[4], a1, b0); acc[5] = dot_acc(acc[5], a1, b1); acc[6] = dot_acc(acc[6], a1, b2); acc[7] = dot_acc(acc[7], a1, b3);
        acc[8] = dot_acc(acc[8], a2, b0); acc[9] = dot_acc(acc[9], a2, b1); acc[10] = dot_acc(acc[10], a2, b2); acc[11] = dot_acc(acc[11], a2, b3);
        acc[12] = dot_acc(acc[12], a3, b0); acc[13] = dot_acc(acc[13], a3, b1); acc[14] = dot_acc(acc[14], a3, b2); acc[15] = dot_acc(acc[15], a3, b3);
    }
    let cb_ = base_c(z);
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            store(cb_, row0 + i, col0 + j, acc[i * 4u + j]);
        }
    }
}

// matmul_nn4_sg: B contiguous along n (dy W, P v), A any layout; matmul_nn4's 4 x 4 block and
// accumulation order, with the loads shared as in matmul_nt4_sg. Two steps of k at a time: each
// lane loads A[sub_row + s][k], A[sub_row + s][k + 1] and one vec4 of B (lanes 0-3 row k,
// lanes 4-7 row k + 1, four columns each), 2 scalars and a vec4 per lane where matmul_nn4 loads
// 8 scalars and 2 vec4. An odd k ends with one single step (k is the same for every lane).
fn nn_step(acc: ptr<function, array<vec4<f32>, 4>>, av: f32, ra: u32, b: vec4<f32>) {
    (*acc)[0] = fma(vec4<f32>(subgroupShuffle(av, ra)), b, (*acc)[0]);
    (*acc)[1] = fma(vec4<f32>(subgroupShuffle(av, ra + 1u)), b, (*acc)[1]);
    (*acc)[2] = fma(vec4<f32>(subgroupShuffle(av, ra + 2u)), b, (*acc)[2]);
    (*acc)[3] = fma(vec4<f32>(subgroupShuffle(av, ra + 3u)), b, (*acc)[3]);
}

@compute @workgroup_size(64)
fn matmul_nn4_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let z = wid.z;
    let blk = sg_block(wid, lid);
    let s = blk.s;
    let sub_row = blk.sub_row;
    let sub_col = blk.sub_col;
    let row0 = blk.row0;
    let col0 = blk.col0;
    let a_row = base_a(z) + min(sub_row + s, p.m - 1u) * p.a_rs;
    // Lane s's vec4 of B: columns sub_col + 4 (s % 4) .., row k + s / 4 (clamped to n for the load).
    let b_off = (base_b(z) + min(sub_col + (s % 4u) * 4u, (p.n - 1u) & ~3u)) / 4u;
    let brs = p.b_rs / 4u;
    let ra = (s / 4u) * 4u;
    let cb = s % 4u;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) { acc[i] = vec4<f32>(0.0); }
    var kk = 0u;
    for (; kk + 1u < p.k; kk += 2u) {
        let a0 = a[a_row + kk * p.a_cs];
        let a1 = a[a_row + (kk + 1u) * p.a_cs];
        let vb = b4[b_off + (kk + s / 4u) * brs];
        nn_step(&acc, a0, ra, subgroupShuffle(vb, cb));
        nn_step(&acc, a1, ra, subgroupShuffle(vb, 4u + cb));
    }
    if (kk < p.k) {
        let a0 = a[a_row + kk * p.a_cs];
        let vb = b4[b_off + kk * brs];
        nn_step(&acc, a0, ra, subgroupShuffle(vb, cb));
    }
    let cb_ = base_c(z);
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            store(cb_, row0 + i, col0 + j, acc[i][j]);
        }
    }
}

// matmul_tn4_sg: A contiguous along m and B along n (dyᵀ x, Pᵀ dO); matmul_tn4's block and
// order. Two steps of k at a time: lane s loads the vec4 of A holding rows sub_row + 4 (s % 2)
// .. at k + (s / 2) % 2, and the vec4 of B holding columns sub_col + 4 (s % 4) .. at k + s / 4:
// 2 vec4 per lane where matmul_tn4 loads 4.
fn tn_step(acc: ptr<function, array<vec4<f32>, 4>>, a: vec4<f32>, b: vec4<f32>) {
    (*acc)[0] = fma(vec4<f32>(a.x), b, (*acc)[0]);
    (*acc)[1] = fma(vec4<f32>(a.y), b, (*acc)[1]);
    (*acc)[2] = fma(vec4<f32>(a.z), b, (*acc)[2]);
    (*acc)[3] = fma(vec4<f32>(a.w), b, (*acc)[3]);
}

@compute @workgroup_size(64)
fn matmul_tn4_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let z = wid.z;
    let blk = sg_block(wid, lid);
    let s = blk.s;
    let sub_row = blk.sub_row;
    let sub_col = blk.sub_col;
    let row0 = blk.row0;
    let col0 = blk.col0;
    let a_off = (base_a(z) + min(sub_row + (s % 2u) * 4u, (p.m - 1u) & ~3u)) / 4u;
    let b_off = (base_b(z) + min(sub_col + (s % 4u) * 4u, (p.n - 1u) & ~3u)) / 4u;
    let acs = p.a_cs / 4u;
    let brs = p.b_rs / 4u;
    let rb = s / 4u;
    let cb = s % 4u;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) { acc[i] = vec4<f32>(0.0); }
    var kk = 0u;
    for (; kk + 1u < p.k; kk += 2u) {
        let va = a4[a_off + (kk + (s / 2u) % 2u) * acs];
        let vb = b4[b_off + (kk + s / 4u) * brs];
        tn_step(&acc, subgroupShuffle(va, rb), subgroupShuffle(vb, cb));
        tn_step(&acc, subgroupShuffle(va, 2u + rb), subgroupShuffle(vb, 4u + cb));
    }
    if (kk < p.k) {
        let va = a4[a_off + kk * acs];
        let vb = b4[b_off + kk * brs];
        tn_step(&acc, subgroupShuffle(va, rb), subgroupShuffle(vb, cb));
    }
    let cb_ = base_c(z);
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            store(cb_, row0 + i, col0 + j, acc[i][j]);
        }
    }
}

// PSAQ-ViT's synthesis objective (Li et al., ECCV 2022; peers.md 3.1) for the `psaq` baseline:
// per block and image, the head-averaged attention outputs O (attn @ v) of the patch tokens,
// their pairwise cosine similarities s (all np x np pairs), a Gaussian kernel density of those
// similarities (bandwidth 0.01) evaluated on a 10-point grid spanning the batch's min..max
// similarity (the grid is not differentiated), and the differential entropy
// H = trapz(-(pdf + 1e-4) log(pdf + 1e-4)) over the grid. The loss is -coef H_b per image
// (coef = weight / B for the batch mean, summed over blocks). Gradients are ADDED to dO.

struct Params { b: u32, h: u32, n: u32, prefix: u32, np: u32, d: u32, off: u32, p0: u32,
                coef: f32, bw: f32, p1: u32, p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> o: array<f32>;
@group(0) @binding(2) var<storage, read_write> d_o: array<f32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;
@group(0) @binding(4) var<storage, read_write> rows: array<f32>;
@group(0) @binding(5) var<storage, read> rows_in: array<f32>;
@group(0) @binding(6) var<storage, read_write> sims: array<f32>;
@group(0) @binding(7) var<storage, read> sims_in: array<f32>;
@group(0) @binding(8) var<storage, read_write> stats: array<f32>;
@group(0) @binding(9) var<storage, read> stats_in: array<f32>;
@group(0) @binding(10) var<storage, read_write> wts: array<f32>;
@group(0) @binding(11) var<storage, read> wts_in: array<f32>;

const GRID: u32 = 10u;
const INV_SQRT_2PI: f32 = 0.3989422804014327;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * 64u + lid; }

// rows[(b np + t) d + c] = normalised head mean of O; stats[2 + b np + t] = its norm.
@compute @workgroup_size(64)
fn psaq_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.b * p.np) { return; }
    let bi = t / p.np;
    let tok = p.prefix + t % p.np;
    var sq = 0.0;
    for (var c = 0u; c < p.d; c++) {
        var v = 0.0;
        for (var hh = 0u; hh < p.h; hh++) { v += o[((bi * p.h + hh) * p.n + tok) * p.d + c]; }
        v = v / f32(p.h);
        rows[t * p.d + c] = v;
        sq += v * v;
    }
    let norm = max(sqrt(sq), 1e-8);
    for (var c = 0u; c < p.d; c++) { rows[t * p.d + c] = rows[t * p.d + c] / norm; }
    stats[2u + t] = norm;
}

// sims[b, i, j] = cosine similarity of rows i and j of image b.
@compute @workgroup_size(64)
fn psaq_sims(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.b * p.np * p.np) { return; }
    let bi = t / (p.np * p.np);
    let i = (t / p.np) % p.np;
    let j = t % p.np;
    var s = 0.0;
    for (var c = 0u; c < p.d; c++) {
        s += rows_in[(bi * p.np + i) * p.d + c] * rows_in[(bi * p.np + j) * p.d + c];
    }
    sims[t] = s;
}

// wts[2 b], wts[2 b + 1] = min and max similarity of image (or window) b; the density's
// weights overwrite them later.
@compute @workgroup_size(64)
fn psaq_range_image(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let bi = index(wid, nwg, lid);
    if (bi >= p.b) { return; }
    let m = p.np * p.np;
    var lo = 3.4028235e38;
    var hi = -3.4028235e38;
    for (var i = 0u; i < m; i++) {
        lo = min(lo, sims_in[bi * m + i]);
        hi = max(hi, sims_in[bi * m + i]);
    }
    wts[2u * bi] = lo;
    wts[2u * bi + 1u] = hi;
}

// stats[0], stats[1] = min and max similarity over the whole batch, from the per-image ranges
// (one invocation).
@compute @workgroup_size(1)
fn psaq_range() {
    var lo = 3.4028235e38;
    var hi = -3.4028235e38;
    for (var b = 0u; b < p.b; b++) {
        lo = min(lo, wts_in[2u * b]);
        hi = max(hi, wts_in[2u * b + 1u]);
    }
    stats[0] = lo;
    stats[1] = hi;
}

fn grid_x(g: u32) -> f32 {
    return stats_in[0] + (stats_in[1] - stats_in[0]) * f32(g) / f32(GRID - 1u);
}

// Per image: the density on the grid, the entropy (loss partial), and the per-grid-point
// weights of the gradient w_g = coef * trapz weight * f'(pdf_g) into wts[b GRID + g].
@compute @workgroup_size(64)
fn psaq_entropy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let bi = index(wid, nwg, lid);
    if (bi >= p.b) { return; }
    let m = p.np * p.np;
    let dx = (stats_in[1] - stats_in[0]) / f32(GRID - 1u);
    var h = 0.0;
    for (var g = 0u; g < GRID; g++) {
        let x = grid_x(g);
        var s = 0.0;
        for (var i = 0u; i < m; i++) {
            let u = (x - sims_in[bi * m + i]) / p.bw;
            s += exp(-0.5 * u * u);
        }
        let pdf = s * INV_SQRT_2PI / (p.bw * f32(m)) + 1e-4;
        var tw = dx;
        if (g == 0u || g == GRID - 1u) { tw = 0.5 * dx; }
        h += tw * (-pdf * log(pdf));
        // loss = -coef H, so d loss / d pdf_g = -coef * tw * f'(pdf_g) = coef * tw * (log pdf + 1).
        wts[bi * GRID + g] = p.coef * tw * (log(pdf) + 1.0);
    }
    partial[p.off + bi] = -p.coef * h;
}

// d loss / d s_ij = sum_g w_g phi(u) u / (M bw^2), u = (x_g - s_ij) / bw; then through the
// cosine similarities to the normalised rows, the normalisation and the head mean, into dO.
// One invocation per (b, row i).
@compute @workgroup_size(64)
fn psaq_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.b * p.np) { return; }
    let bi = t / p.np;
    let i = t % p.np;
    let m = p.np * p.np;
    let scale = INV_SQRT_2PI / (f32(m) * p.bw * p.bw);
    // dn_i = sum_j (dS_ij + dS_ji) n_j, accumulated per channel in two sweeps (dot, then write).
    var dot = 0.0;
    for (var sweep = 0u; sweep < 2u; sweep++) {
        for (var c = 0u; c < p.d; c++) {
            var dn = 0.0;
            for (var j = 0u; j < p.np; j++) {
                var ds = 0.0;
                for (var g = 0u; g < GRID; g++) {
                    let x = grid_x(g);
                    let w = wts_in[bi * GRID + g];
                    let u1 = (x - sims_in[(bi * p.np + i) * p.np + j]) / p.bw;
                    let u2 = (x - sims_in[(bi * p.np + j) * p.np + i]) / p.bw;
                    ds += w * scale * (exp(-0.5 * u1 * u1) * u1 + exp(-0.5 * u2 * u2) * u2);
                }
                dn += ds * rows_in[(bi * p.np + j) * p.d + c];
            }
            let ni = rows_in[t * p.d + c];
            if (sweep == 0u) {
                dot += ni * dn;
            } else {
                let norm = stats_in[2u + t];
                let dv = (dn - ni * dot) / norm / f32(p.h);
                for (var hh = 0u; hh < p.h; hh++) {
                    let e = ((bi * p.h + hh) * p.n + p.prefix + i) * p.d + c;
                    d_o[e] = d_o[e] + dv;
                }
            }
        }
    }
}

// Swin's token permutations and window-attention bias (docs/swin.md).
//
// token_map: dst[i] = alpha * src[map(i)] + beta * dst[i] for one of four index maps between
//   image order [B, R, R, C] and
//   kind 0: window order [B, nW, w*w, C] after the cyclic shift (torch.roll by -shift), window
//           index wy * (R / w) + wx, token ty * w + tx; kind 1: its inverse;
//   kind 2: PatchMerging's 2x2 concatenation [B, R/2, R/2, 4C], channel q*C + c reading
//           (2i + dh, 2j + dw) with q = 2 dw + dh; kind 3: its inverse.
//   Every map is a permutation, so each backward is the inverse map.
// rel_bias: s = a + table[rel(i, j), h] (+ -100 between shifted-window regions), per
//   [group, head, query i, key j]; rel(i, j) = (ri - rj + w - 1) (2w - 1) + (ci - cj + w - 1).
// rel_bias_table_grad: dtable[t, h] = sum over groups and the (i, j) with rel(i, j) = t of ds.
// mean_tokens: y[b, c] = mean over t of x[b, t, c].

// One parameter block for all four kernels. token_map: every field as named. rel_bias and
// rel_bias_table_grad: total = attention groups (images x windows), d = heads. mean_tokens:
// total = images, grid = tokens per image.
struct Params {
    kind: u32, total: u32, grid: u32, window: u32,
    shift: u32, d: u32, alpha: f32, beta: f32,
}

@group(0) @binding(0) var<uniform> mp: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> logits: array<f32>;
@group(0) @binding(4) var<storage, read> table: array<f32>;
@group(0) @binding(5) var<storage, read_write> biased: array<f32>;
@group(0) @binding(6) var<storage, read> ds: array<f32>;
@group(0) @binding(7) var<storage, read_write> dtable: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * 64u + lid; }

fn map_source(i: u32) -> u32 {
    let g = mp.grid;
    let d = mp.d;
    let w = mp.window;
    let t_img = g * g;
    if (mp.kind == 0u) {
        let r = i / d; let c = i % d;
        let b = r / t_img; let local = r % t_img;
        let n = w * w; let nw = g / w;
        let win = local / n; let t = local % n;
        let y = ((win / nw) * w + t / w + mp.shift) % g;
        let x = ((win % nw) * w + t % w + mp.shift) % g;
        return (b * t_img + y * g + x) * d + c;
    }
    if (mp.kind == 1u) {
        let r = i / d; let c = i % d;
        let b = r / t_img; let local = r % t_img;
        let ys = (local / g + g - mp.shift) % g;
        let xs = (local % g + g - mp.shift) % g;
        let nw = g / w;
        let win = (ys / w) * nw + xs / w;
        return (b * t_img + win * w * w + (ys % w) * w + xs % w) * d + c;
    }
    let h = g / 2u;
    if (mp.kind == 2u) {
        let r = i / (4u * d); let k = i % (4u * d);
        let q = k / d; let c = k % d;
        let b = r / (h * h); let local = r % (h * h);
        let y = 2u * (local / h) + q % 2u;
        let x = 2u * (local % h) + q / 2u;
        return (b * t_img + y * g + x) * d + c;
    }
    let r = i / d; let c = i % d;
    let b = r / t_img; let local = r % t_img;
    let y = local / g; let x = local % g;
    let q = 2u * (x % 2u) + y % 2u;
    return (b * h * h + (y / 2u) * h + x / 2u) * 4u * d + q * d + c;
}

@compute @workgroup_size(64)
fn token_map(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= mp.total) { return; }
    var v = mp.alpha * src[map_source(i)];
    if (mp.beta != 0.0) { v += mp.beta * dst[i]; }
    dst[i] = v;
}

// Shifted-window region band of a coordinate s on the shifted grid: 0, 1 or 2.
fn band(s: u32) -> u32 {
    return select(0u, 1u, s >= mp.grid - mp.window) + select(0u, 1u, s >= mp.grid - mp.shift);
}

@compute @workgroup_size(64)
fn rel_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let idx = index(wid, nwg, lid);
    let w = mp.window;
    let n = w * w;
    if (idx >= mp.total * mp.d * n * n) { return; }
    let j = idx % n;
    let i = (idx / n) % n;
    let h = (idx / (n * n)) % mp.d;
    let u = idx / (n * n * mp.d);
    let ri = i / w; let ci = i % w; let rj = j / w; let cj = j % w;
    let rel = (ri + w - 1u - rj) * (2u * w - 1u) + (ci + w - 1u - cj);
    var v = logits[idx] + table[rel * mp.d + h];
    if (mp.shift > 0u) {
        let nw = mp.grid / w;
        let win = u % (nw * nw);
        let y0 = (win / nw) * w; let x0 = (win % nw) * w;
        let region_i = 3u * band(y0 + ri) + band(x0 + ci);
        let region_j = 3u * band(y0 + rj) + band(x0 + cj);
        if (region_i != region_j) { v -= 100.0; }
    }
    biased[idx] = v;
}

// One invocation per (chunk of kind groups, table entry): dtable[chunk table_len + t h] (several
// chunks are summed afterwards, so no invocation loops over every window of a large batch).
@compute @workgroup_size(64)
fn rel_bias_table_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let gid = index(wid, nwg, lid);
    let w = i32(mp.window);
    let side = 2 * w - 1;
    let len = u32(side * side) * mp.d;
    let chunks = (mp.total + mp.kind - 1u) / mp.kind;
    if (gid >= len * chunks) { return; }
    let tid = gid % len;
    let g0 = (gid / len) * mp.kind;
    let g1 = min(g0 + mp.kind, mp.total);
    let t = i32(tid / mp.d);
    let h = tid % mp.d;
    let dy = t / side - (w - 1);
    let dx = t % side - (w - 1);
    let n = u32(w * w);
    var acc = 0.0;
    for (var u = g0; u < g1; u++) {
        let base = (u * mp.d + h) * n * n;
        for (var ri = max(0, dy); ri < min(w, w + dy); ri++) {
            for (var ci = max(0, dx); ci < min(w, w + dx); ci++) {
                let i = u32(ri * w + ci);
                let j = u32((ri - dy) * w + ci - dx);
                acc += ds[base + i * n + j];
            }
        }
    }
    dtable[gid] = acc;
}

@compute @workgroup_size(64)
fn mean_tokens(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let o = index(wid, nwg, lid);
    if (o >= mp.total * mp.d) { return; }
    let b = o / mp.d; let c = o % mp.d;
    var s = 0.0;
    for (var t = 0u; t < mp.grid; t++) { s += src[(b * mp.grid + t) * mp.d + c]; }
    dst[o] = s / f32(mp.grid);
}

// Image-space parts of sample synthesis (docs/method.md §1.2) on images [B, C, H, W]:
// total variation (value and gradient), the per-iteration jitter and augmentation with its
// backward, and the per-channel clamp to the valid pixel range.

struct Params { b: u32, c: u32, h: u32, w: u32, threads: u32, coef: f32, p0: u32, p1: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> img: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;
@group(0) @binding(4) var<storage, read> partial_in: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
@group(0) @binding(6) var<storage, read> stats_in: array<f32>;
@group(0) @binding(7) var<storage, read> draws: array<f32>;
@group(0) @binding(8) var<storage, read_write> loss: array<f32>;
@group(0) @binding(9) var<storage, read_write> image_rw: array<f32>;
@group(0) @binding(10) var<storage, read> bounds: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * 64u + lid; }
fn px(b: u32, c: u32, y: u32, x: u32) -> u32 { return ((b * p.c + c) * p.h + y) * p.w + x; }

// ---- total variation: ||dx|| + ||dy|| + (||d1|| + ||d2||) / sqrt 2, Frobenius norms over the
// batch; dx = x[:, 1:] - x[:, :-1], dy = x[1:, :] - x[:-1, :], d1 = x[1:, 1:] - x[:-1, :-1],
// d2 = x[1:, :-1] - x[:-1, 1:] (last two axes). Partial sums of squares, grid-stride.
@compute @workgroup_size(64)
fn tv_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.threads) { return; }
    var s = vec4<f32>(0.0);
    for (var i = t; i < p.b * p.c * p.h * p.w; i += p.threads) {
        let x = i % p.w;
        let y = (i / p.w) % p.h;
        let v = img[i];
        if (x + 1u < p.w) { let d = img[i + 1u] - v; s.x += d * d; }
        if (y + 1u < p.h) { let d = img[i + p.w] - v; s.y += d * d; }
        if (x + 1u < p.w && y + 1u < p.h) {
            let d1 = img[i + p.w + 1u] - v;
            s.z += d1 * d1;
            let d2 = img[i + p.w] - img[i + 1u];
            s.w += d2 * d2;
        }
    }
    partial[4u * t] = s.x; partial[4u * t + 1u] = s.y; partial[4u * t + 2u] = s.z; partial[4u * t + 3u] = s.w;
}

// Norms into stats[0..4]; loss[0] = coef * TV (one invocation).
@compute @workgroup_size(1)
fn tv_reduce() {
    var s = vec4<f32>(0.0);
    for (var t = 0u; t < p.threads; t++) {
        s += vec4<f32>(partial_in[4u * t], partial_in[4u * t + 1u], partial_in[4u * t + 2u], partial_in[4u * t + 3u]);
    }
    let n = sqrt(s);
    stats[0] = n.x; stats[1] = n.y; stats[2] = n.z; stats[3] = n.w;
    loss[0] = p.coef * (n.x + n.y + (n.z + n.w) * 0.70710678118654752);
}

fn inv(v: f32) -> f32 { return select(0.0, 1.0 / v, v > 0.0); }

// out[i] += coef * dTV/dimg[i], one invocation per pixel.
@compute @workgroup_size(64)
fn tv_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.b * p.c * p.h * p.w) { return; }
    let x = i % p.w;
    let y = (i / p.w) % p.h;
    let v = img[i];
    let ix = inv(stats_in[0]);
    let iy = inv(stats_in[1]);
    let i1 = inv(stats_in[2]) * 0.70710678118654752;
    let i2 = inv(stats_in[3]) * 0.70710678118654752;
    var g = 0.0;
    if (x + 1u < p.w) { g -= (img[i + 1u] - v) * ix; }
    if (x >= 1u) { g += (v - img[i - 1u]) * ix; }
    if (y + 1u < p.h) { g -= (img[i + p.w] - v) * iy; }
    if (y >= 1u) { g += (v - img[i - p.w]) * iy; }
    if (x + 1u < p.w && y + 1u < p.h) { g -= (img[i + p.w + 1u] - v) * i1; }
    if (x >= 1u && y >= 1u) { g += (v - img[i - p.w - 1u]) * i1; }
    // d2(y, x) = img(y + 1, x) - img(y, x + 1): this pixel is img(y + 1, x) of d2(y - 1, x) ...
    if (y >= 1u && x + 1u < p.w) { g += (v - img[i - p.w + 1u]) * i2; }
    // ... and img(y, x + 1) of d2(y, x - 1).
    if (y + 1u < p.h && x >= 1u) { g -= (img[i + p.w - 1u] - v) * i2; }
    out[i] = out[i] + p.coef * g;
}

// ---- jitter and augmentation -------------------------------------------------------------------
// x = (roll(img, (dy, dx)) + offset[b, c]) / scale[b, c]: torch.roll of the whole batch by the
// same random shift, then the Gaussian-noise constant and colour jitter of the spec folded into
// one affine map per image and channel. draws = [dy, dx, then (offset, scale) per (b, c)].
@compute @workgroup_size(64)
fn jitter_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.b * p.c * p.h * p.w) { return; }
    let x = i % p.w;
    let y = (i / p.w) % p.h;
    let bc = i / (p.w * p.h);
    let dy = i32(draws[0]);
    let dx = i32(draws[1]);
    let sy = u32((i32(y) - dy + 4 * i32(p.h)) % i32(p.h));
    let sx = u32((i32(x) - dx + 4 * i32(p.w)) % i32(p.w));
    out[i] = (img[(bc * p.h + sy) * p.w + sx] + draws[2u + 2u * bc]) / draws[3u + 2u * bc];
}

// out[roll position] = dx / scale (overwrites): the gradient of jitter_forward.
@compute @workgroup_size(64)
fn jitter_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.b * p.c * p.h * p.w) { return; }
    let x = i % p.w;
    let y = (i / p.w) % p.h;
    let bc = i / (p.w * p.h);
    let dy = i32(draws[0]);
    let dx = i32(draws[1]);
    let ty = u32((i32(y) + dy + 4 * i32(p.h)) % i32(p.h));
    let tx = u32((i32(x) + dx + 4 * i32(p.w)) % i32(p.w));
    out[i] = img[(bc * p.h + ty) * p.w + tx] / draws[3u + 2u * bc];
}

// image_rw = clamp(image_rw, bounds[2 c], bounds[2 c + 1]) per channel.
@compute @workgroup_size(64)
fn clamp_channels(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.b * p.c * p.h * p.w) { return; }
    let c = (i / (p.w * p.h)) % p.c;
    image_rw[i] = clamp(image_rw[i], bounds[2u * c], bounds[2u * c + 1u]);
}

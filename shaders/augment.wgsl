// Batch augmentations on normalised images [B, C, H, W], with per-image random draws that the
// host writes to `draws` each step (so the launch is built once).
//
// shift_flip (the light augmentation of supervised training): out[b, c, y, x] =
//   in[b, c, y + dy_b, x' + dx_b] with x' = W - 1 - x when flipped, else x; pixels shifted in from
//   outside get the channel's fill value (the normalised value of a black pixel, like
//   torchvision's RandomCrop padding). draws[3 b .. 3 b + 3] = (dy, dx, flip).

struct Params { batch: u32, chans: u32, h: u32, w: u32, fill0: f32, fill1: f32, fill2: f32, step: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> draws: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * 256u + lid; }

@compute @workgroup_size(256)
fn shift_flip(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.batch * p.chans * p.h * p.w) { return; }
    let x = i % p.w;
    let y = (i / p.w) % p.h;
    let c = (i / (p.w * p.h)) % p.chans;
    let b = i / (p.w * p.h * p.chans);
    let dy = i32(draws[3u * b]);
    let dx = i32(draws[3u * b + 1u]);
    var xs = i32(x);
    if (draws[3u * b + 2u] != 0.0) { xs = i32(p.w) - 1 - xs; }
    let sy = i32(y) + dy;
    let sx = xs + dx;
    var fill = p.fill0;
    if (c == 1u) { fill = p.fill1; }
    if (c == 2u) { fill = p.fill2; }
    var v = fill;
    if (sy >= 0 && sx >= 0 && sy < i32(p.h) && sx < i32(p.w)) {
        v = src[((b * p.chans + c) * p.h + u32(sy)) * p.w + u32(sx)];
    }
    dst[i] = v;
}

// ---- Q-training batch augmentation (docs/method.md §1.3), one random draw per batch --
// rrc_flip: RandomResizedCrop + RandomHorizontalFlip: out(y, x) = bilinear sample (half-pixel
// centres) of the crop box (top, left, height, width) = draws[0..4] of the source, mirrored when
// draws[4] != 0. torchvision crops first and then resizes, so the sample positions clamp to the
// box's edge pixels, not the image's. Works in normalised space (the map is linear).
@compute @workgroup_size(256)
fn rrc_flip(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.batch * p.chans * p.h * p.w) { return; }
    var x = i % p.w;
    let y = (i / p.w) % p.h;
    let plane = i / (p.w * p.h);
    if (draws[4] != 0.0) { x = p.w - 1u - x; }
    let top = draws[0]; let left = draws[1]; let ch = draws[2]; let cw = draws[3];
    let sy = clamp(top + (f32(y) + 0.5) * ch / f32(p.h) - 0.5, top, top + ch - 1.0);
    let sx = clamp(left + (f32(x) + 0.5) * cw / f32(p.w) - 0.5, left, left + cw - 1.0);
    let y0 = u32(floor(sy)); let x0 = u32(floor(sx));
    let y1 = min(y0 + 1u, p.h - 1u); let x1 = min(x0 + 1u, p.w - 1u);
    let fy = sy - f32(y0); let fx = sx - f32(x0);
    let o = plane * p.h * p.w;
    let v = (1.0 - fy) * ((1.0 - fx) * src[o + y0 * p.w + x0] + fx * src[o + y0 * p.w + x1])
          + fy * ((1.0 - fx) * src[o + y1 * p.w + x0] + fx * src[o + y1 * p.w + x1]);
    dst[i] = v;
}

// One colour operation of ColorJitter / RandomGrayscale, in [0, 1] pixel space (x * std + mean,
// clamped), in place on `dst`, one invocation per pixel position (all channels). The operation
// at step k is draws[8 + k] (k < 5): 0 none, 1 brightness, 2 contrast, 3 saturation, 4 hue,
// 5 grayscale; factors: draws[5] brightness, draws[6] contrast, draws[7] saturation,
// draws[13] hue. Contrast blends with the image's mean gray level, computed by `gray_mean`
// into stats[b] just before. Means/stds come in draws[17..20] / draws[20..23].
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read> stats_in: array<f32>;

fn to01(v: f32, c: u32) -> f32 { return clamp(v * draws[20u + c] + draws[17u + c], 0.0, 1.0); }
fn from01(v: f32, c: u32) -> f32 { return (v - draws[17u + c]) / draws[20u + c]; }
// torchvision's rgb_to_grayscale weights (0.2989, not Rec. 601's 0.299).
fn gray(r: f32, g: f32, b: f32) -> f32 { return 0.2989 * r + 0.587 * g + 0.114 * b; }

@compute @workgroup_size(64)
fn gray_mean(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let b = (wid.y * nwg.x + wid.x) * 64u + lid;
    if (b >= p.batch) { return; }
    let hw = p.h * p.w;
    var s = 0.0;
    for (var k = 0u; k < hw; k++) {
        if (p.chans == 3u) {
            s += gray(to01(src[(b * 3u) * hw + k], 0u), to01(src[(b * 3u + 1u) * hw + k], 1u), to01(src[(b * 3u + 2u) * hw + k], 2u));
        } else {
            s += to01(src[b * p.chans * hw + k], 0u);
        }
    }
    stats[b] = s / f32(hw);
}

fn hue_shift(rgb: vec3<f32>, shift: f32) -> vec3<f32> {
    let mx = max(rgb.x, max(rgb.y, rgb.z));
    let mn = min(rgb.x, min(rgb.y, rgb.z));
    let d = mx - mn;
    var hh = 0.0;
    if (d > 0.0) {
        if (mx == rgb.x) { hh = (rgb.y - rgb.z) / d; }
        else if (mx == rgb.y) { hh = 2.0 + (rgb.z - rgb.x) / d; }
        else { hh = 4.0 + (rgb.x - rgb.y) / d; }
        hh = fract(hh / 6.0 + 1.0);
    }
    var s = 0.0;
    if (mx > 0.0) { s = d / mx; }
    hh = fract(hh + shift + 1.0) * 6.0;
    let c = mx * s;
    let xx = c * (1.0 - abs(hh % 2.0 - 1.0));
    var o = vec3<f32>(0.0);
    if (hh < 1.0) { o = vec3<f32>(c, xx, 0.0); }
    else if (hh < 2.0) { o = vec3<f32>(xx, c, 0.0); }
    else if (hh < 3.0) { o = vec3<f32>(0.0, c, xx); }
    else if (hh < 4.0) { o = vec3<f32>(0.0, xx, c); }
    else if (hh < 5.0) { o = vec3<f32>(xx, 0.0, c); }
    else { o = vec3<f32>(c, 0.0, xx); }
    return o + vec3<f32>(mx - c);
}

@compute @workgroup_size(256)
fn color_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    let hw = p.h * p.w;
    if (i >= p.batch * hw) { return; }
    let op = u32(draws[8u + p.step]);
    if (op == 0u) { return; }
    let b = i / hw;
    let k = i % hw;
    if (p.chans == 3u) {
        let e0 = (b * 3u) * hw + k; let e1 = e0 + hw; let e2 = e1 + hw;
        var c = vec3<f32>(to01(dst[e0], 0u), to01(dst[e1], 1u), to01(dst[e2], 2u));
        let g = gray(c.x, c.y, c.z);
        if (op == 1u) { c = c * draws[5]; }
        else if (op == 2u) { c = (c - vec3<f32>(stats_in[b])) * draws[6] + vec3<f32>(stats_in[b]); }
        else if (op == 3u) { c = vec3<f32>(g) + (c - vec3<f32>(g)) * draws[7]; }
        else if (op == 4u) { c = hue_shift(c, draws[13]); }
        else if (op == 5u) { c = vec3<f32>(g); }
        c = clamp(c, vec3<f32>(0.0), vec3<f32>(1.0));
        dst[e0] = from01(c.x, 0u); dst[e1] = from01(c.y, 1u); dst[e2] = from01(c.z, 2u);
    } else {
        // One channel: brightness and contrast apply; saturation, hue and grayscale do not.
        let e = b * p.chans * hw + k;
        var v = to01(dst[e], 0u);
        if (op == 1u) { v = v * draws[5]; }
        else if (op == 2u) { v = (v - stats_in[b]) * draws[6] + stats_in[b]; }
        dst[e] = from01(clamp(v, 0.0, 1.0), 0u);
    }
}

// Separable Gaussian blur, reflect padding: `horizontal` = p.step == 0. Radius draws[14],
// sigma draws[15]; draws[16] != 0 switches it on.
@compute @workgroup_size(256)
fn blur_pass(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.batch * p.chans * p.h * p.w) { return; }
    let x = i % p.w;
    let y = (i / p.w) % p.h;
    let o = (i / (p.w * p.h)) * p.h * p.w;
    if (draws[16] == 0.0) { dst[i] = src[i]; return; }
    let r = i32(draws[14]);
    let sigma = draws[15];
    var s = 0.0;
    var wsum = 0.0;
    for (var t = -r; t <= r; t++) {
        let w = exp(-0.5 * f32(t * t) / (sigma * sigma));
        var q: i32;
        var v: f32;
        if (p.step == 0u) {
            q = i32(x) + t;
            if (q < 0) { q = -q; }
            if (q >= i32(p.w)) { q = 2 * i32(p.w) - 2 - q; }
            v = src[o + y * p.w + u32(clamp(q, 0, i32(p.w) - 1))];
        } else {
            q = i32(y) + t;
            if (q < 0) { q = -q; }
            if (q >= i32(p.h)) { q = 2 * i32(p.h) - 2 - q; }
            v = src[o + u32(clamp(q, 0, i32(p.h) - 1)) * p.w + x];
        }
        s += w * v;
        wsum += w;
    }
    dst[i] = s / wsum;
}

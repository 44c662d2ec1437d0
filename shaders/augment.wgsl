// Batch augmentations on normalised images [B, C, H, W], with per-image random draws that the
// host writes to `draws` each step (so the launch is built once).
//
// shift_flip (the light augmentation of supervised training): out[b, c, y, x] =
//   in[b, c, y + dy_b, x' + dx_b] with x' = W - 1 - x when flipped, else x; pixels shifted in from
//   outside get the channel's fill value (the normalised value of a black pixel, like
//   torchvision's RandomCrop padding). draws[3 b .. 3 b + 3] = (dy, dx, flip).

struct Params { batch: u32, chans: u32, h: u32, w: u32, fill0: f32, fill1: f32, fill2: f32, p0: u32 }

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

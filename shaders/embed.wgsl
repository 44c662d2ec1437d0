// Patch embedding and token assembly (timm VisionTransformer._pos_embed, class token first).
// The patch convolution has stride = kernel size, so it is im2col (`patchify`) followed by a
// matmul; its input gradient is the inverse permutation (`unpatchify`). Pixels beyond the last
// full patch (image size not a multiple of the patch) are dropped, as in Conv2d.
//   cols[b*np + py*gw + px, c*P*P + ky*P + kx] = img[b, c, py*P + ky, px*P + kx]
//   x[b, t, :] = (t < prefix ? prefix_token[t] : patches[b*np + t - prefix]) + pos[t]

struct Params { batch: u32, chans: u32, h: u32, w: u32, psize: u32, gh: u32, gw: u32, tokens: u32,
                d: u32, prefix: u32, beta: f32, p0: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> img: array<f32>;
@group(0) @binding(2) var<storage, read_write> cols: array<f32>;
@group(0) @binding(3) var<storage, read> dcols: array<f32>;
@group(0) @binding(4) var<storage, read_write> dimg: array<f32>;
@group(0) @binding(5) var<storage, read> patches: array<f32>;
@group(0) @binding(6) var<storage, read> cls: array<f32>;
@group(0) @binding(7) var<storage, read> dist: array<f32>;
@group(0) @binding(8) var<storage, read> pos: array<f32>;
@group(0) @binding(9) var<storage, read_write> x: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * 256u + lid; }

@compute @workgroup_size(256)
fn patchify(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    let kk = p.chans * p.psize * p.psize;
    let np = p.gh * p.gw;
    if (i >= p.batch * np * kk) { return; }
    let col = i % kk;
    let row = i / kk;
    let b = row / np;
    let pi = row % np;
    let py = pi / p.gw;
    let px = pi % p.gw;
    let c = col / (p.psize * p.psize);
    let ky = (col / p.psize) % p.psize;
    let kx = col % p.psize;
    cols[i] = img[((b * p.chans + c) * p.h + py * p.psize + ky) * p.w + px * p.psize + kx];
}

@compute @workgroup_size(256)
fn unpatchify(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.batch * p.chans * p.h * p.w) { return; }
    let xx = i % p.w;
    let yy = (i / p.w) % p.h;
    let c = (i / (p.w * p.h)) % p.chans;
    let b = i / (p.w * p.h * p.chans);
    var v = 0.0;
    if (yy < p.gh * p.psize && xx < p.gw * p.psize) {
        let row = b * p.gh * p.gw + (yy / p.psize) * p.gw + xx / p.psize;
        let col = (c * p.psize + yy % p.psize) * p.psize + xx % p.psize;
        v = dcols[row * p.chans * p.psize * p.psize + col];
    }
    if (p.beta != 0.0) { v += p.beta * dimg[i]; }
    dimg[i] = v;
}

@compute @workgroup_size(256)
fn tokens_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.batch * p.tokens * p.d) { return; }
    let j = i % p.d;
    let t = (i / p.d) % p.tokens;
    let b = i / (p.d * p.tokens);
    var v: f32;
    if (t == 0u) {
        v = cls[j];
    } else if (t < p.prefix) {
        v = dist[j];
    } else {
        v = patches[(b * (p.tokens - p.prefix) + t - p.prefix) * p.d + j];
    }
    x[i] = v + pos[t * p.d + j];
}

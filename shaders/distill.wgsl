// Q-training losses (docs/method.md §1.3 and 2.5): knowledge distillation on the logits
// and the mask-weighted SSIM distillation of the per-head attention outputs O. Gradients go to
// Q only (P is the fixed teacher) and are ADDED to Q's gradient buffers; loss contributions,
// multiplied by `coef`, go to `partial[off + thread]`.

struct Params { b: u32, h: u32, n: u32, prefix: u32, np: u32, d: u32, k: u32, off: u32,
                coef: f32, temp: f32, c2: f32, p0: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> zp: array<f32>;
@group(0) @binding(2) var<storage, read> zq: array<f32>;
@group(0) @binding(3) var<storage, read_write> dzq: array<f32>;
@group(0) @binding(4) var<storage, read_write> partial: array<f32>;
@group(0) @binding(5) var<storage, read_write> weights: array<f32>;
@group(0) @binding(6) var<storage, read> weights_in: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * 64u + lid; }

// KL(softmax(zp/T) || softmax(zq/T)) * T^2 per row (rows = p.b, classes = p.n); coef = 1 / B for
// the batch mean. d/dzq = coef * T * (softmax(zq/T) - softmax(zp/T)).
@compute @workgroup_size(64)
fn kd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
      @builtin(local_invocation_index) lid: u32) {
    let r = index(wid, nwg, lid);
    if (r >= p.b) { return; }
    let o = r * p.n;
    var mp = -3.4028235e38; var mq = -3.4028235e38;
    for (var j = 0u; j < p.n; j++) { mp = max(mp, zp[o + j] / p.temp); mq = max(mq, zq[o + j] / p.temp); }
    var sp = 0.0; var sq = 0.0;
    for (var j = 0u; j < p.n; j++) { sp += exp(zp[o + j] / p.temp - mp); sq += exp(zq[o + j] / p.temp - mq); }
    let lp = mp + log(sp);
    let lq = mq + log(sq);
    var kl = 0.0;
    for (var j = 0u; j < p.n; j++) {
        let logp = zp[o + j] / p.temp - lp;
        let logq = zq[o + j] / p.temp - lq;
        let pj = exp(logp);
        kl += pj * (logp - logq);
        dzq[o + j] = dzq[o + j] + p.coef * p.temp * (exp(logq) - pj);
    }
    partial[p.off + r] = p.coef * kl * p.temp * p.temp;
}

// Token weights of the head distillation for image b (one invocation per (b, token)): the
// teacher's importance mean_h mean_d |O_P| over the patch tokens; weight 2 on the top-k, 1 on
// the rest (ties: lower index first). Here zp = O_P of one block, [B, H, N, d].
fn importance(bi: u32, tok: u32) -> f32 {
    var s = 0.0;
    for (var hh = 0u; hh < p.h; hh++) {
        for (var c = 0u; c < p.d; c++) {
            s += abs(zp[((bi * p.h + hh) * p.n + p.prefix + tok) * p.d + c]);
        }
    }
    return s;
}

@compute @workgroup_size(64)
fn hd_weights(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.b * p.np) { return; }
    let bi = t / p.np;
    let j = t % p.np;
    let mine = importance(bi, j);
    var rank = 0u;
    for (var i = 0u; i < p.np; i++) {
        let s = importance(bi, i);
        if (s > mine || (s == mine && i < j)) { rank++; }
    }
    weights[t] = select(1.0, 2.0, rank < p.k);
}

// Mask-weighted contrast-structure SSIM over the patch tokens between O_P (zp) and O_Q (zq) of
// one block, one invocation per (b, head, channel): w' = w + 1e-6,
//   mu = sum w' x / sum w', s = sum w' x^2 / sum w' - mu^2 (teacher and student),
//   s_tq = sum w t q / (sum w + 1e-6) - mu_t mu_q,
//   ssim = (2 s_tq + C2) / ((s_t + s_q + C2) + 1e-6);
// partial = coef * (1 - ssim) with coef = weight / (L B H d); gradient into dzq (O_Q's tap).
@compute @workgroup_size(64)
fn hd_ssim(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.b * p.h * p.d) { return; }
    let c = t % p.d;
    let bh = t / p.d;
    let bi = bh / p.h;
    var sw = 0.0; var swp = 0.0;
    var st = 0.0; var sq = 0.0; var stt = 0.0; var sqq = 0.0; var stq = 0.0;
    for (var j = 0u; j < p.np; j++) {
        let w = weights_in[bi * p.np + j];
        let wp = w + 1e-6;
        let e = (bh * p.n + p.prefix + j) * p.d + c;
        let x = zp[e];
        let y = zq[e];
        sw += w; swp += wp;
        st += wp * x; sq += wp * y;
        stt += wp * x * x; sqq += wp * y * y;
        stq += w * x * y;
    }
    let mt = st / swp;
    let mq = sq / swp;
    let vt = stt / swp - mt * mt;
    let vq = sqq / swp - mq * mq;
    let denw = sw + 1e-6;
    let ctq = stq / denw - mt * mq;
    let num = 2.0 * ctq + p.c2;
    let den = (vt + vq + p.c2) + 1e-6;
    let ssim = num / den;
    partial[p.off + t] = p.coef * (1.0 - ssim);
    for (var j = 0u; j < p.np; j++) {
        let w = weights_in[bi * p.np + j];
        let wp = w + 1e-6;
        let e = (bh * p.n + p.prefix + j) * p.d + c;
        let x = zp[e];
        let y = zq[e];
        let dvq = 2.0 * wp * (y - mq) / swp;
        let dctq = w * x / denw - mt * wp / swp;
        let dssim = (2.0 * dctq * den - num * dvq) / (den * den);
        dzq[e] = dzq[e] - p.coef * dssim;
    }
}

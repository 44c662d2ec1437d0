// Optimizers, one invocation per parameter element. Step-dependent scalars (learning rate, bias
// corrections) live in a small storage buffer `hyper` the host rewrites each step, so the
// launches themselves are built once.
//
// adamw (PyTorch AdamW):  p *= 1 - lr wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//                         p -= lr (m / bc1) / (sqrt(v / bc2) + eps)
//   hyper = [lr, bc1 = 1 - b1^t, bc2 = 1 - b2^t]
// sgd (PyTorch SGD, nesterov, dampening 0):  d = g + wd p;  buf = mu buf + d (buf = d at the
//                         first step);  p -= lr (d + mu buf)
//   hyper = [lr, first step ? 1 : 0]
// `stride`/`off` select every `stride`-th element from `off` (the alpha or z column of the
// quantizers' [sites, 2] parameters, which may get their own learning rate).

struct Params { n: u32, off: u32, stride: u32, p0: u32, beta1: f32, beta2: f32, eps: f32, wd: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read> hyper: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * 256u + lid; }

@compute @workgroup_size(256)
fn adamw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let k = index(wid, nwg, lid);
    if (k >= p.n) { return; }
    let i = p.off + k * p.stride;
    let lr = hyper[0];
    let g = grad[i];
    let mi = p.beta1 * m[i] + (1.0 - p.beta1) * g;
    let vi = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    let decayed = param[i] * (1.0 - lr * p.wd);
    param[i] = decayed - lr * (mi / hyper[1]) / (sqrt(vi / hyper[2]) + p.eps);
}

@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let k = index(wid, nwg, lid);
    if (k >= p.n) { return; }
    let i = p.off + k * p.stride;
    let lr = hyper[0];
    let d = grad[i] + p.wd * param[i];
    var buf = d;
    if (hyper[1] == 0.0) { buf = p.beta1 * m[i] + d; }
    m[i] = buf;
    param[i] = param[i] - lr * (d + p.beta1 * buf);
}

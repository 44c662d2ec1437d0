// GELU with the exact erf form used by timm (nn.GELU()): y = 0.5 x (1 + erf(x / sqrt 2)).
// WGSL has no erf; Abramowitz & Stegun 7.1.26 (max abs error 1.5e-7) stands in for it.
// backward: dx = dy * (Phi(x) + x phi(x)).

// Fused forms (the same arithmetic, fewer launches): gelu_forward_q also writes y through
// activation quantizer p.site (yq: fc2's input); gelu_backward_masked reads dy through that
// quantizer's straight-through mask, taken from its input y_in (image synthesis).
struct Params { n: u32, site: u32, p1: u32, p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> yq: array<f32>;
@group(0) @binding(6) var<storage, read> qparams: array<f32>;
@group(0) @binding(7) var<storage, read> qmeta: array<f32>;
@group(0) @binding(8) var<storage, read> y_in: array<f32>;

fn erf_approx(v: f32) -> f32 {
    let s = sign(v);
    let a = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return s * (1.0 - poly * exp(-a * a));
}

fn gelu(v: f32) -> f32 { return 0.5 * v * (1.0 + erf_approx(v * 0.70710678118654752)); }

// d gelu / dx at v: Phi(v) + v phi(v).
fn gelu_grad(v: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf_approx(v * 0.70710678118654752));
    let pdf = 0.39894228040143268 * exp(-0.5 * v * v);
    return cdf + v * pdf;
}

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * 256u + lid; }

@compute @workgroup_size(256)
fn gelu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    y[i] = gelu(x[i]);
}

@compute @workgroup_size(256)
fn gelu_forward_q(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let v = gelu(x[i]);
    y[i] = v;
    yq[i] = fake_quant(v, qsite(p.site));
}

@compute @workgroup_size(256)
fn gelu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    dx[i] = dy[i] * gelu_grad(x[i]);
}

@compute @workgroup_size(256)
fn gelu_backward_masked(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    dx[i] = select(0.0, dy[i], in_range(y_in[i], qsite(p.site))) * gelu_grad(x[i]);
}

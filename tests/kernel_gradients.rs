//! Every backward kernel against central finite differences of the CPU forward (the forward
//! kernels against their CPU references are in tests/kernels.rs).

mod common;

use common::{Rng, VARIANTS, covered, geometries, gpu, read, run_all, run1, upload1, use_variant};
use maskaq::gpu::Tensor;
use maskaq::ops::matmul::{Matmul, View};
use maskaq::ops::reduce::SumRows;
use maskaq::ops::{gelu, layernorm, loss, softmax};

fn dot(w: &[f32], y: &[f32]) -> f64 {
    assert_eq!(w.len(), y.len());
    w.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Compares `grad[i]` with central differences of `objective` at `x` for the sampled `i`;
/// the error is relative to max |grad|.
#[track_caller]
fn check_fd(
    name: &str,
    grad: &[f32],
    x: &[f32],
    objective: &dyn Fn(&[f32]) -> f64,
    samples: &[usize],
    eps: f32,
    tol: f64,
) {
    assert_eq!(grad.len(), x.len(), "{name}: gradient length");
    let scale = grad.iter().fold(0f64, |m, &v| m.max((v as f64).abs())).max(1e-12);
    for &i in samples {
        let mut xp = x.to_vec();
        let mut xm = x.to_vec();
        xp[i] = x[i] + eps;
        xm[i] = x[i] - eps;
        let fd = (objective(&xp) - objective(&xm)) / (xp[i] as f64 - xm[i] as f64);
        let err = (fd - grad[i] as f64).abs() / scale;
        assert!(
            err < tol,
            "{name}: d/dx[{i}]: kernel {} vs finite difference {fd} (error {err:.2e} of max |grad| {scale:.3e})",
            grad[i]
        );
    }
}

const FD_EPS: f32 = 1e-3;
const FD_TOL: f64 = 1e-3;

#[test]
fn fd_gelu_backward() {
    let g = gpu();
    let mut rng = Rng::new(80);
    let n = 37;
    let x = rng.vec(n, 3.0);
    let w = rng.vec(n, 1.0);
    let (tx, tw, tdx) = (upload1(&g, &x), upload1(&g, &w), Tensor::zeros(&g, &[n]));
    run1(&g, &gelu::backward(&g, &tx, &tw, &tdx));
    let grad = read(&g, &tdx);
    let f = |x: &[f32]| dot(&w, &gelu::cpu_forward(x));
    check_fd("gelu_backward", &grad, &x, &f, &rng.sample(n, 12), FD_EPS, FD_TOL);
}

#[test]
fn fd_layernorm_backward() {
    let g = gpu();
    let mut rng = Rng::new(81);
    let (rows, d, eps) = (3, 17, 1e-6);
    let x: Vec<f32> = rng.vec(rows * d, 1.5).iter().map(|v| v - 0.4).collect();
    let gamma = rng.vec(d, 1.5);
    let beta = rng.vec(d, 0.5);
    let w = rng.vec(rows * d, 1.0);
    let (tx, tg, tb) = (upload1(&g, &x), upload1(&g, &gamma), upload1(&g, &beta));
    let (ty, ts) = (Tensor::zeros(&g, &[rows, d]), Tensor::zeros(&g, &[rows, 2]));
    let tw = upload1(&g, &w);
    let tdx = Tensor::zeros(&g, &[rows, d]);
    let (tdg, tdb) = (Tensor::zeros(&g, &[d]), Tensor::zeros(&g, &[d]));
    let mut ds = vec![
        layernorm::forward(&g, rows, d, eps, &tx, &tg, &tb, &ty, &ts),
        layernorm::backward_input(&g, rows, d, &tx, &tg, &ts, &tw, None, &tdx),
    ];
    ds.extend(layernorm::backward_params(&g, rows, d, &tx, &ts, &tw, &tdg, &tdb));
    run_all(&g, &ds);
    let ln = |x: &[f32], gm: &[f32], bt: &[f32]| dot(&w, &layernorm::cpu_forward(rows, d, eps, x, gm, bt).0);
    let fx = |v: &[f32]| ln(v, &gamma, &beta);
    let fg = |v: &[f32]| ln(&x, v, &beta);
    let fb = |v: &[f32]| ln(&x, &gamma, v);
    let sx = rng.sample(rows * d, 12);
    let sp = rng.sample(d, 8);
    check_fd("layernorm_backward_input", &read(&g, &tdx), &x, &fx, &sx, FD_EPS, FD_TOL);
    check_fd("layernorm dgamma", &read(&g, &tdg), &gamma, &fg, &sp, FD_EPS, FD_TOL);
    check_fd("layernorm dbeta", &read(&g, &tdb), &beta, &fb, &sp, FD_EPS, FD_TOL);
}

#[test]
fn fd_softmax_backward() {
    let g = gpu();
    let mut rng = Rng::new(82);
    let (rows, n, scale) = (3, 17, 0.7);
    let a = rng.vec(rows * n, 3.0);
    let w = rng.vec(rows * n, 1.0);
    let e = rng.vec(rows * n, 1.0);
    let (ta, tw, te) = (upload1(&g, &a), upload1(&g, &w), upload1(&g, &e));
    let tp = Tensor::zeros(&g, &[rows, n]);
    let (tda, tda_extra) = (Tensor::zeros(&g, &[rows, n]), Tensor::zeros(&g, &[rows, n]));
    g.run(&[
        &softmax::forward(&g, rows, n, scale, &ta, &tp),
        &softmax::backward(&g, rows, n, scale, &tp, &tw, None, &tda),
        &softmax::backward(&g, rows, n, scale, &tp, &tw, Some(&te), &tda_extra),
    ]);
    let f = |v: &[f32]| dot(&w, &softmax::cpu_forward(rows, n, scale, v));
    // `extra` is the gradient of a second term that reads the logits directly.
    let f_extra = |v: &[f32]| f(v) + dot(&e, v);
    let s = rng.sample(rows * n, 12);
    check_fd("softmax_backward", &read(&g, &tda), &a, &f, &s, FD_EPS, FD_TOL);
    check_fd("softmax_backward extra", &read(&g, &tda_extra), &a, &f_extra, &s, FD_EPS, FD_TOL);
}

/// A linear layer C = A B + bias: dA = W B^T, dB = A^T W (matmul with transposed views) and
/// dbias = sum_rows(W), against finite differences of `Matmul::cpu`.
#[test]
fn fd_matmul_backward() {
    let mut g = gpu();
    let mut rng = Rng::new(83);
    let (m, k, n) = (3, 17, 5);
    let a = rng.vec(m * k, 1.0);
    let b = rng.vec(k * n, 1.0);
    let bias = rng.vec(n, 1.0);
    let w = rng.vec(m * n, 1.0);
    let fwd = Matmul::new(m, n, k, View::rows(k), View::rows(n), View::rows(n)).bias(0);
    let obj = |a: &[f32], b: &[f32], bias: &[f32]| {
        let mut c = vec![0f32; m * n];
        fwd.cpu(a, b, Some(bias), &mut c);
        dot(&w, &c)
    };
    let (ta, tb, tw) = (upload1(&g, &a), upload1(&g, &b), upload1(&g, &w));
    for (vname, tiled) in VARIANTS {
        use_variant(&mut g, tiled);
        let (tda, tdb, tdbias) =
            (Tensor::zeros(&g, &[m, k]), Tensor::zeros(&g, &[k, n]), Tensor::zeros(&g, &[n]));
        // dA [m, k] = W [m, n] B^T (B stored k x n).
        let da = Matmul::new(m, k, n, View::rows(n), View::rows(n).t(), View::rows(k));
        // dB [k, n] = A^T (A stored m x k) W [m, n].
        let db = Matmul::new(k, n, m, View::rows(k).t(), View::rows(n), View::rows(n));
        g.run(&[
            &da.dispatch(&g, &tw, &tb, None, &tda),
            &db.dispatch(&g, &ta, &tw, None, &tdb),
            &SumRows::matrix(m, n).dispatch(&g, &tw, &tdbias),
        ]);
        let fa = |v: &[f32]| obj(v, &b, &bias);
        let fb = |v: &[f32]| obj(&a, v, &bias);
        let fc = |v: &[f32]| obj(&a, &b, v);
        let name = format!("matmul_{vname}");
        let sa = rng.sample(m * k, 10);
        let sb = rng.sample(k * n, 10);
        let sc = rng.sample(n, 5);
        check_fd(&format!("{name} dA"), &read(&g, &tda), &a, &fa, &sa, FD_EPS, FD_TOL);
        check_fd(&format!("{name} dB"), &read(&g, &tdb), &b, &fb, &sb, FD_EPS, FD_TOL);
        check_fd("sum_rows dbias", &read(&g, &tdbias), &bias, &fc, &sc, FD_EPS, FD_TOL);
    }
}

/// unpatchify is the gradient of patchify, including zero for pixels outside every patch.
#[test]
fn fd_unpatchify() {
    let g = gpu();
    let geo = geometries()[0];
    let mut rng = Rng::new(84);
    let npix = geo.batch * geo.chans * geo.h * geo.w;
    let ncols = geo.batch * geo.patches() * geo.kk();
    let img = rng.vec(npix, 1.0);
    let w = rng.vec(ncols, 1.0);
    let tw = upload1(&g, &w);
    let tdimg = Tensor::zeros(&g, &[npix]);
    run1(&g, &geo.unpatchify(&g, &tw, &tdimg, 0.0));
    let grad = read(&g, &tdimg);
    let f = |v: &[f32]| dot(&w, &geo.cpu_patchify(v));
    let mut s = rng.sample(npix, 10);
    // Leftover pixels: bottom-right corner and the last column of the first row.
    s.push(npix - 1);
    s.push(geo.w - 1);
    assert!(!covered(&geo, npix - 1) && !covered(&geo, geo.w - 1));
    check_fd("unpatchify", &grad, &img, &f, &s, FD_EPS, FD_TOL);
    assert_eq!(grad[npix - 1], 0.0);
    assert_eq!(grad[geo.w - 1], 0.0);
}

/// cross_entropy's dlogits is the gradient of scale * sum of the per-row losses.
#[test]
fn fd_cross_entropy() {
    let g = gpu();
    let mut rng = Rng::new(85);
    let (rows, classes) = (3, 17);
    let scale = 1.0 / rows as f32;
    let logits = rng.vec(rows * classes, 3.0);
    let targets: Vec<f32> = (0..rows).map(|_| rng.below(classes) as f32).collect();
    let (tl, tt) = (upload1(&g, &logits), upload1(&g, &targets));
    let (tloss, tgrad) = (Tensor::zeros(&g, &[rows]), Tensor::zeros(&g, &[rows, classes]));
    run1(&g, &loss::cross_entropy(&g, rows, classes, scale, &tl, &tt, &tloss, &tgrad));
    let f = |v: &[f32]| {
        let (l, _) = loss::cpu(rows, classes, scale, v, &targets);
        scale as f64 * l.iter().map(|&x| x as f64).sum::<f64>()
    };
    let mut s = rng.sample(rows * classes, 10);
    // Always include the target logits (the -1 branch).
    s.extend((0..rows).map(|r| r * classes + targets[r] as usize));
    check_fd("cross_entropy", &read(&g, &tgrad), &logits, &f, &s, FD_EPS, FD_TOL);
}

/// The linear layer's input and weight gradients with every matmul variant forced in turn, at
/// sizes where the vec4 layouts apply (dA = W Bᵀ is both-along-k, dB = Aᵀ W is A-along-m and
/// B-along-n), against finite differences.
#[test]
fn fd_matmul_backward_every_variant() {
    let mut g = gpu();
    let mut rng = Rng::new(85);
    let (m, k, n) = (8, 12, 16);
    let a = rng.vec(m * k, 1.0);
    let b = rng.vec(k * n, 1.0);
    let w = rng.vec(m * n, 1.0);
    let fwd = Matmul::new(m, n, k, View::rows(k), View::rows(n), View::rows(n));
    let obj = |a: &[f32], b: &[f32]| {
        let mut c = vec![0f32; m * n];
        fwd.cpu(a, b, None, &mut c);
        dot(&w, &c)
    };
    let (ta, tb, tw) = (upload1(&g, &a), upload1(&g, &b), upload1(&g, &w));
    let da = Matmul::new(m, k, n, View::rows(n), View::rows(n).t(), View::rows(k));
    let db = Matmul::new(k, n, m, View::rows(k).t(), View::rows(n), View::rows(n));
    let (sa, sb) = (rng.sample(m * k, 10), rng.sample(k * n, 10));
    for v in maskaq::ops::matmul_variants::VARIANTS.iter().filter(|v| !v.test_only) {
        g.forced_variant = Some(v.kernel.id.to_string());
        let (tda, tdb) = (Tensor::zeros(&g, &[m, k]), Tensor::zeros(&g, &[k, n]));
        g.run(&[&da.dispatch(&g, &tw, &tb, None, &tda), &db.dispatch(&g, &ta, &tw, None, &tdb)]);
        let id = v.kernel.id;
        check_fd(&format!("{id} dA"), &read(&g, &tda), &a, &|x: &[f32]| obj(x, &b), &sa, FD_EPS, FD_TOL);
        check_fd(&format!("{id} dB"), &read(&g, &tdb), &b, &|x: &[f32]| obj(&a, x), &sb, FD_EPS, FD_TOL);
    }
}

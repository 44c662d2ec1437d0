//! Optimizer kernels against their CPU references over several steps, on ragged sizes and a
//! strided slice.

mod common;

use common::{Rng, assert_close, gpu, read, upload1};
use maskaq::ops::optim::{self, Slice};

#[test]
fn adamw_matches_reference_over_steps() {
    let gpu = gpu();
    let mut rng = Rng::new(3);
    for n in [1, 3, 17, 65, 1000] {
        let mut p = rng.vec(n, 1.0);
        let (mut m, mut v) = (vec![0f32; n], vec![0f32; n]);
        let (pt, mt, vt) = (upload1(&gpu, &p), upload1(&gpu, &m), upload1(&gpu, &v));
        let gt = upload1(&gpu, &vec![0f32; n]);
        let hyper = upload1(&gpu, &[0.0; 4]);
        let (betas, eps, wd) = ((0.9, 0.999), 1e-8, 0.05);
        let step = optim::adamw(&gpu, Slice::all(n), betas, eps, wd, &pt, &gt, &mt, &vt, &hyper);
        for t in 1..=3 {
            let g = rng.vec(n, 0.5);
            let lr = 0.01 / t as f32;
            gt.write(&gpu, &g);
            hyper.write(&gpu, &[lr, 1.0 - 0.9f32.powi(t), 1.0 - 0.999f32.powi(t), 0.0]);
            gpu.run(&[&step]);
            optim::cpu_adamw(&mut p, &g, &mut m, &mut v, lr, betas, eps, wd, t);
        }
        // Elementwise atol: 1e-6 of each state's scale (p ~ 1, m ~ 0.1, v ~ 1e-3), for elements
        // near 0 where a few ULP of their terms are large relative errors; lavapipe is exact.
        assert_close(&format!("adamw n={n} p"), &read(&gpu, &pt), &p, 1e-5, 1e-6, 1e-5);
        assert_close(&format!("adamw n={n} m"), &read(&gpu, &mt), &m, 1e-5, 1e-7, 1e-5);
        assert_close(&format!("adamw n={n} v"), &read(&gpu, &vt), &v, 1e-5, 1e-9, 1e-5);
    }
}

#[test]
fn sgd_nesterov_matches_reference_over_steps() {
    let gpu = gpu();
    let mut rng = Rng::new(4);
    for n in [1, 17, 65] {
        let mut p = rng.vec(n, 1.0);
        let mut buf = vec![0f32; n];
        let (pt, bt) = (upload1(&gpu, &p), upload1(&gpu, &buf));
        let gt = upload1(&gpu, &vec![0f32; n]);
        let hyper = upload1(&gpu, &[0.0; 4]);
        let step = optim::sgd(&gpu, Slice::all(n), 0.9, 1e-4, &pt, &gt, &bt, &hyper);
        for t in 0..4 {
            let g = rng.vec(n, 0.5);
            gt.write(&gpu, &g);
            hyper.write(&gpu, &[0.1, if t == 0 { 1.0 } else { 0.0 }, 0.0, 0.0]);
            gpu.run(&[&step]);
            optim::cpu_sgd(&mut p, &g, &mut buf, 0.1, 0.9, 1e-4, t == 0);
        }
        assert_close(&format!("sgd n={n} p"), &read(&gpu, &pt), &p, 1e-5, 1e-6, 1e-5);
        assert_close(&format!("sgd n={n} buf"), &read(&gpu, &bt), &buf, 1e-5, 1e-6, 1e-5);
    }
}

#[test]
fn strided_slice_updates_only_its_elements() {
    // The alpha column of a [sites, 2] quantizer-parameter buffer.
    let gpu = gpu();
    let sites = 7;
    let p0: Vec<f32> = (0..2 * sites).map(|i| i as f32).collect();
    let g = vec![1.0f32; 2 * sites];
    let (pt, gt) = (upload1(&gpu, &p0), upload1(&gpu, &g));
    let bt = upload1(&gpu, &vec![0f32; 2 * sites]);
    let hyper = upload1(&gpu, &[0.5, 1.0, 0.0, 0.0]);
    gpu.run(&[&optim::sgd(&gpu, Slice { n: sites, off: 0, stride: 2 }, 0.9, 0.0, &pt, &gt, &bt, &hyper)]);
    let got = read(&gpu, &pt);
    for i in 0..2 * sites {
        let want = if i % 2 == 0 { p0[i] - 0.5 * (1.0 + 0.9) } else { p0[i] };
        assert!((got[i] - want).abs() < 1e-6, "element {i}: {} vs {want}", got[i]);
    }
}

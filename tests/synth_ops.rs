//! Image-space synthesis kernels: total variation against an f64 reference, finite differences
//! and PyTorch; the jitter against its CPU reference and its backward as the exact adjoint; the
//! clamp; and the training augmentation (shift and flip).

mod common;

use common::{Rng, gpu, read, upload1};
use maskaq::gpu::Tensor;
use maskaq::ops::{augment, synth};

#[test]
fn total_variation_value_and_gradient() {
    let gpu = gpu();
    let mut rng = Rng::new(1);
    for shape in [[1, 1, 1, 1], [2, 3, 5, 7], [1, 1, 17, 3], [3, 2, 9, 9]] {
        let n: usize = shape.iter().product();
        let img = rng.vec(n, 1.0);
        let it = upload1(&gpu, &img);
        let grad = upload1(&gpu, &vec![0.25; n]);
        let loss = Tensor::zeros(&gpu, &[1]);
        let s = synth::TvScratch::new(&gpu, n);
        let coef = 0.5;
        let ds = synth::tv(&gpu, shape, coef, &it, &grad, &loss, &s);
        gpu.run(&ds.iter().collect::<Vec<_>>());
        let x: Vec<f64> = img.iter().map(|&v| v as f64).collect();
        let want = coef as f64 * synth::cpu_tv(shape, &x);
        let got = read(&gpu, &loss)[0] as f64;
        assert!((got - want).abs() < 1e-5 * want.max(1.0), "{shape:?}: tv {got} vs {want}");
        let g = read(&gpu, &grad);
        let mut xm = x.clone();
        for i in (0..n).step_by((n / 40).max(1)) {
            let eps = 1e-6;
            xm[i] = x[i] + eps;
            let up = synth::cpu_tv(shape, &xm);
            xm[i] = x[i] - eps;
            let down = synth::cpu_tv(shape, &xm);
            xm[i] = x[i];
            let fd = coef as f64 * (up - down) / (2.0 * eps) + 0.25; // the kernel adds to 0.25
            assert!((fd - g[i] as f64).abs() < 1e-4, "{shape:?}: dTV/dx[{i}] fd {fd} gpu {}", g[i]);
        }
    }
}

#[test]
fn total_variation_matches_pytorch() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/objectives/objectives.safetensors");
    let fx = maskaq::model::checkpoint::read_f32_tensors(&path).unwrap();
    let gpu = gpu();
    let (shape, img) = &fx["images"];
    let shape = [shape[0], shape[1], shape[2], shape[3]];
    let it = upload1(&gpu, img);
    let grad = Tensor::zeros(&gpu, &[img.len()]);
    let loss = Tensor::zeros(&gpu, &[1]);
    let s = synth::TvScratch::new(&gpu, img.len());
    let ds = synth::tv(&gpu, shape, 1.0, &it, &grad, &loss, &s);
    gpu.run(&ds.iter().collect::<Vec<_>>());
    let want = fx["tv.value"].1[0];
    assert!((read(&gpu, &loss)[0] - want).abs() < 1e-4 * want, "tv value");
    common::assert_close("tv gradient", &read(&gpu, &grad), &fx["tv.grad_images"].1, 1e-4, 1e-6, 1e-4);
}

#[test]
fn jitter_forward_and_adjoint() {
    let gpu = gpu();
    let mut rng = Rng::new(2);
    for (shape, dy, dx) in [([2, 3, 8, 6], 3, -2), ([1, 1, 5, 5], -4, 4), ([3, 1, 7, 9], 0, 1)] {
        let n: usize = shape.iter().product();
        let mut draws = vec![dy as f32, dx as f32];
        for _ in 0..shape[0] * shape[1] {
            draws.push(rng.uniform(-1.0, 1.0));
            draws.push(rng.uniform(0.4, 2.7));
        }
        let img = rng.vec(n, 1.0);
        let (it, dt) = (upload1(&gpu, &img), upload1(&gpu, &draws));
        let x = Tensor::zeros(&gpu, &[n]);
        gpu.run(&[&synth::jitter_forward(&gpu, shape, &it, &x, &dt)]);
        common::assert_close(
            "jitter",
            &read(&gpu, &x),
            &synth::cpu_jitter(shape, &img, &draws),
            1e-6,
            1e-7,
            1e-6,
        );
        // The backward is the adjoint of the linear part: <J v, y> = <v, J^T y>.
        let y = rng.vec(n, 1.0);
        let (yt, back) = (upload1(&gpu, &y), Tensor::zeros(&gpu, &[n]));
        gpu.run(&[&synth::jitter_backward(&gpu, shape, &yt, &back, &dt)]);
        let mut lin = draws.clone();
        (0..shape[0] * shape[1]).for_each(|i| lin[2 + 2 * i] = 0.0);
        let jv = synth::cpu_jitter(shape, &img, &lin);
        let lhs: f64 = jv.iter().zip(&y).map(|(a, b)| (a * b) as f64).sum();
        let rhs: f64 = img.iter().zip(&read(&gpu, &back)).map(|(a, b)| (a * b) as f64).sum();
        assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "adjoint {lhs} vs {rhs}");
    }
}

#[test]
fn clamp_per_channel() {
    let gpu = gpu();
    let shape = [2, 3, 4, 5];
    let n: usize = shape.iter().product();
    let img: Vec<f32> = (0..n).map(|i| (i as f32 - 60.0) / 20.0).collect();
    let bounds = [-2.0f32, 1.0, -0.5, 0.5, 0.0, 3.0];
    let it = upload1(&gpu, &img);
    gpu.run(&[&synth::clamp_channels(&gpu, shape, &it, &upload1(&gpu, &bounds))]);
    let got = read(&gpu, &it);
    for i in 0..n {
        let c = (i / 20) % 3;
        assert_eq!(got[i], img[i].clamp(bounds[2 * c], bounds[2 * c + 1]));
    }
}

#[test]
fn shift_flip_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(3);
    for shape in [[2, 1, 6, 5], [3, 3, 4, 4]] {
        let n: usize = shape.iter().product();
        let img = rng.vec(n, 1.0);
        let draws: Vec<f32> =
            (0..shape[0]).flat_map(|b| [b as f32 - 1.0, 2.0 - b as f32, (b % 2) as f32]).collect();
        let fill: Vec<f32> = (0..shape[1]).map(|c| -(c as f32) - 0.5).collect();
        let (src, dt, dst) = (upload1(&gpu, &img), upload1(&gpu, &draws), Tensor::zeros(&gpu, &[n]));
        gpu.run(&[&augment::shift_flip(&gpu, shape, &fill, &src, &dst, &dt)]);
        common::assert_exact(
            "shift_flip",
            &read(&gpu, &dst),
            &augment::cpu_shift_flip(shape, &fill, &img, &draws),
        );
    }
}

//! The Q-training batch augmentation against small CPU references: crop-resize and flip,
//! brightness/contrast on one channel, grayscale on three, blur; the identity draw is exact.

mod common;

use common::{Rng, gpu, read, upload1};
use maskaq::gpu::Tensor;
use maskaq::ops::augment::{self, DRAWS};

fn run(shape: [usize; 4], img: &[f32], d: &[f32]) -> Vec<f32> {
    let gpu = gpu();
    let n = img.len();
    let (src, tmp, dst) = (upload1(&gpu, img), Tensor::zeros(&gpu, &[n]), Tensor::zeros(&gpu, &[n]));
    let stats = Tensor::zeros(&gpu, &[shape[0]]);
    let dt = upload1(&gpu, d);
    let ds = augment::batch_augment(&gpu, shape, &src, &tmp, &dst, &stats, &dt);
    gpu.run(&ds.iter().collect::<Vec<_>>());
    read(&gpu, &dst)
}

fn identity_draw(h: usize, w: usize, c: usize) -> Vec<f32> {
    let mut d = vec![0f32; DRAWS];
    d[..4].copy_from_slice(&[0.0, 0.0, h as f32, w as f32]);
    for k in 0..c {
        d[17 + k] = 0.5;
        d[20 + k] = 0.25;
    }
    d
}

/// Bilinear sample of one plane at the crop box (the kernel's half-pixel convention).
fn crop_resize(
    plane: &[f32],
    h: usize,
    w: usize,
    (top, left, ch, cw): (f32, f32, f32, f32),
    flip: bool,
) -> Vec<f32> {
    let mut out = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let xs = if flip { w - 1 - x } else { x };
            // torchvision crops, then resizes: positions clamp to the crop box's edge pixels.
            let sy = (top + (y as f32 + 0.5) * ch / h as f32 - 0.5).clamp(top, top + ch - 1.0);
            let sx = (left + (xs as f32 + 0.5) * cw / w as f32 - 0.5).clamp(left, left + cw - 1.0);
            let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
            let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
            let (fy, fx) = (sy - y0 as f32, sx - x0 as f32);
            let p = |yy: usize, xx: usize| plane[yy * w + xx];
            out[y * w + x] = (1.0 - fy) * ((1.0 - fx) * p(y0, x0) + fx * p(y0, x1))
                + fy * ((1.0 - fx) * p(y1, x0) + fx * p(y1, x1));
        }
    }
    out
}

#[test]
fn identity_draw_is_exact() {
    let mut rng = Rng::new(1);
    let shape = [2, 3, 7, 9];
    let img = rng.vec(shape.iter().product(), 1.5);
    let out = run(shape, &img, &identity_draw(7, 9, 3));
    common::assert_close("identity", &out, &img, 1e-6, 1e-7, 1e-6);
}

#[test]
fn crop_resize_and_flip() {
    let mut rng = Rng::new(2);
    let (h, w) = (8, 10);
    let shape = [2, 1, h, w];
    let img = rng.vec(2 * h * w, 1.0);
    let mut d = identity_draw(h, w, 1);
    d[..5].copy_from_slice(&[2.0, 3.0, 4.0, 6.0, 1.0]);
    let out = run(shape, &img, &d);
    let want: Vec<f32> = (0..2)
        .flat_map(|b| crop_resize(&img[b * h * w..(b + 1) * h * w], h, w, (2.0, 3.0, 4.0, 6.0), true))
        .collect();
    common::assert_close("crop + flip", &out, &want, 1e-5, 5e-6, 1e-5);
}

#[test]
fn brightness_contrast_one_channel_and_grayscale() {
    let mut rng = Rng::new(3);
    let (h, w) = (5, 6);
    let img: Vec<f32> = (0..2 * h * w).map(|_| rng.uniform(-2.0, 2.0)).collect();
    let (mean, std) = (0.5f32, 0.25f32);
    // Brightness 1.3 then contrast 0.6 (one channel: saturation and hue do nothing).
    let mut d = identity_draw(h, w, 1);
    d[5] = 1.3;
    d[6] = 0.6;
    d[7] = 1.7;
    d[13] = 0.1;
    d[8..12].copy_from_slice(&[1.0, 3.0, 2.0, 4.0]);
    let out = run([2, 1, h, w], &img, &d);
    let mut want = Vec::new();
    for b in 0..2 {
        let x01: Vec<f32> = img[b * h * w..(b + 1) * h * w]
            .iter()
            .map(|v| ((v * std + mean) * 1.3).clamp(0.0, 1.0))
            .collect();
        let m = x01.iter().sum::<f32>() / x01.len() as f32;
        want.extend(x01.iter().map(|v| (((v - m) * 0.6 + m).clamp(0.0, 1.0) - mean) / std));
    }
    common::assert_close("brightness + contrast", &out, &want, 1e-5, 2e-6, 1e-5);
    // Grayscale on three channels: every channel becomes 0.2989 R + 0.587 G + 0.114 B (torchvision).
    let img3: Vec<f32> = (0..3 * h * w).map(|_| rng.uniform(-1.5, 1.5)).collect();
    let mut d = identity_draw(h, w, 3);
    d[12] = 5.0;
    let out = run([1, 3, h, w], &img3, &d);
    for k in 0..h * w {
        let c = |ch: usize| (img3[ch * h * w + k] * 0.25 + 0.5).clamp(0.0, 1.0);
        let g = 0.2989 * c(0) + 0.587 * c(1) + 0.114 * c(2);
        for ch in 0..3 {
            assert!((out[ch * h * w + k] - (g - 0.5) / 0.25).abs() < 1e-5, "grayscale pixel {k}");
        }
    }
}

#[test]
fn blur_keeps_constants_and_spreads_an_impulse() {
    let (h, w) = (9, 9);
    let mut d = identity_draw(h, w, 1);
    d[14] = 2.0;
    d[15] = 1.0;
    d[16] = 1.0;
    let out = run([1, 1, h, w], &vec![0.7; h * w], &d);
    assert!(out.iter().all(|v| (v - 0.7).abs() < 1e-6), "a constant image stays constant");
    let mut imp = vec![0f32; h * w];
    imp[4 * w + 4] = 1.0;
    let out = run([1, 1, h, w], &imp, &d);
    // Separable normalised 5-tap Gaussian with sigma 1: the centre keeps k0^2.
    let k: Vec<f32> = (-2..=2).map(|t: i32| (-0.5 * (t * t) as f32).exp()).collect();
    let s: f32 = k.iter().sum();
    let k0 = k[2] / s;
    assert!((out[4 * w + 4] - k0 * k0).abs() < 1e-5, "centre {}", out[4 * w + 4]);
    assert!((out.iter().sum::<f32>() - 1.0).abs() < 1e-5, "mass preserved");
}

#[test]
fn draws_follow_the_recipe() {
    let mut rng = maskaq::rng::Rng::new(4);
    let mut jitter = 0;
    let trials = 2000;
    for _ in 0..trials {
        let d = augment::draw_batch_augment(&mut rng, 28, 28, &[0.5], &[0.25]);
        let (top, left, ch, cw) = (d[0], d[1], d[2], d[3]);
        assert!(ch >= 1.0 && cw >= 1.0 && top + ch <= 28.0 && left + cw <= 28.0);
        let area = ch * cw / (28.0 * 28.0);
        assert!((0.05..=1.0).contains(&area));
        if d[8] != 0.0 {
            jitter += 1;
            let mut ops: Vec<i32> = d[8..12].iter().map(|v| *v as i32).collect();
            ops.sort();
            assert_eq!(ops, vec![1, 2, 3, 4]);
            assert!((0.2..=1.8).contains(&d[5]) && (-0.2..=0.2).contains(&d[13]));
        }
        assert_eq!(d[14], 1.0, "kernel int(0.1 * 28) = 2 -> radius 1");
        assert!((0.1..=2.0).contains(&d[15]));
    }
    let p = jitter as f64 / trials as f64;
    assert!((p - 0.8).abs() < 0.04, "colour jitter applied {p:.2} of the time");
}

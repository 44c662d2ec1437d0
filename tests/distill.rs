//! Q-training losses against PyTorch autograd (tests/fixtures/objectives): knowledge
//! distillation at T = 5 and the mask-weighted SSIM head distillation over two blocks.

mod common;

use common::{assert_close, gpu, read, upload1};
use maskaq::gpu::Tensor;
use maskaq::model::checkpoint::read_f32_tensors;
use maskaq::ops::distill::{self, HeadDims};

fn fixture() -> std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/objectives/objectives.safetensors");
    read_f32_tensors(&path).unwrap()
}

#[test]
fn knowledge_distillation_matches_pytorch() {
    let fx = fixture();
    let gpu = gpu();
    let (shape, zp) = &fx["logits_p"];
    let (b, c) = (shape[0], shape[1]);
    let t = fx["kd.temperature"].1[0];
    let (zpt, zqt) = (upload1(&gpu, zp), upload1(&gpu, &fx["logits_q"].1));
    let dz = Tensor::zeros(&gpu, &[b, c]);
    let partial = Tensor::zeros(&gpu, &[b]);
    gpu.run(&[&distill::kd(&gpu, b, c, t, 1.0 / b as f32, &zpt, &zqt, &dz, &partial, 0)]);
    let v: f32 = read(&gpu, &partial).iter().sum();
    let want = fx["kd.value"].1[0];
    assert!((v - want).abs() < 1e-5 * want.max(1.0), "kd {v} vs {want}");
    assert_close("kd gradient", &read(&gpu, &dz), &fx["kd.grad_logits_q"].1, 1e-4, 2e-6, 1e-4);
}

#[test]
fn head_distillation_matches_pytorch() {
    let fx = fixture();
    let gpu = gpu();
    let (shape, op) = &fx["o_p"];
    let (l, b, h, n, d) = (shape[0], shape[1], shape[2], shape[3], shape[4]);
    let dims = HeadDims { b, h, n, prefix: 1, d };
    let k = dims.top_k(0.1);
    assert_eq!(k, 8, "round(81 * 0.1) = 8");
    let len = b * h * n * d;
    let coef = 1.0 / (l * b * h * d) as f32;
    let partial = Tensor::zeros(&gpu, &[l * b * h * d]);
    let mut grads = Vec::new();
    let mut weights = Vec::new();
    for li in 0..l {
        let opt = upload1(&gpu, &op[li * len..(li + 1) * len]);
        let oqt = upload1(&gpu, &fx["o_q"].1[li * len..(li + 1) * len]);
        let dq = Tensor::zeros(&gpu, &[len]);
        let w = Tensor::zeros(&gpu, &[b * dims.np()]);
        let ds = distill::head_distill(&gpu, &dims, k, coef, &opt, &oqt, &dq, &w, &partial, li * b * h * d);
        gpu.run(&ds.iter().collect::<Vec<_>>());
        grads.extend(read(&gpu, &dq));
        weights.extend(read(&gpu, &w));
    }
    assert_eq!(weights, fx["hd.weights"].1, "token weights (top 10% get 2)");
    // The partials are (1 - ssim) / count, so they sum to 1 - mean(ssim).
    let loss: f32 = read(&gpu, &partial).iter().sum();
    let want = fx["hd.value"].1[0];
    assert!((loss - want).abs() < 1e-5, "hd {loss} vs {want}");
    assert_close("hd gradient", &grads, &fx["hd.grad_o_q"].1, 1e-4, 1e-8, 1e-4);
}

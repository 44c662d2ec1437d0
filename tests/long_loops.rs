//! Reductions longer than llvmpipe lets one shader invocation loop. llvmpipe (lavapipe, and
//! Mesa's GL on llvmpipe) ends every loop of an invocation once 65,535 iterations have run in all,
//! silently (`Gpu::loop_limit`); these sums, each well past that, would come out short there
//! if their kernels looped over them in one invocation. Swin-T's first stage at batch 32 has
//! 100,352 token rows, so its bias, LayerNorm and weight gradients are such sums.

mod common;

use common::{Rng, assert_close, gpu, read, run_all, upload1};
use maskaq::gpu::Tensor;
use maskaq::ops::distill::HeadDims;
use maskaq::ops::layernorm;
use maskaq::ops::matmul::{Matmul, View};
use maskaq::ops::objectives::{self as obj, AttnDims};
use maskaq::ops::psaq;
use maskaq::ops::reduce::SumRows;
use maskaq::ops::window::RelBias;

#[test]
fn the_adapter_reports_llvmpipes_loop_limit() {
    let g = gpu();
    let llvmpipe = g.info.name.contains("llvmpipe") || g.info.driver.contains("llvmpipe");
    assert_eq!(g.loop_limit.is_some(), llvmpipe, "{:?}", g.info);
}

#[test]
fn sum_rows_over_140k_rows() {
    let g = gpu();
    let rows = 140_000;
    let x = Rng::new(1).vec(rows * 2, 1.0);
    let sum = SumRows::matrix(rows, 2);
    let out = Tensor::zeros(&g, &[2]);
    run_all(&g, &sum.dispatches(&g, &upload1(&g, &x), &out));
    let mut want = vec![0.0; 2];
    sum.cpu(&x, &mut want);
    assert_close("sum_rows", &read(&g, &out), &want, 1e-4, 1e-3, 1e-4);
}

#[test]
fn layernorm_parameter_gradients_over_70k_rows() {
    let g = gpu();
    let (rows, d) = (70_000, 3);
    let mut rng = Rng::new(2);
    let (x, dy, gamma) = (rng.vec(rows * d, 1.0), rng.vec(rows * d, 1.0), rng.vec(d, 1.0));
    let (_, stats) = layernorm::cpu_forward(rows, d, 1e-5, &x, &gamma, &vec![0.0; d]);
    let (_, dg_want, db_want) = layernorm::cpu_backward(rows, d, 1e-5, &x, &gamma, &dy);
    let (dg, db) = (Tensor::zeros(&g, &[d]), Tensor::zeros(&g, &[d]));
    let st = upload1(&g, &stats);
    run_all(&g, &layernorm::backward_params(&g, rows, d, &upload1(&g, &x), &st, &upload1(&g, &dy), &dg, &db));
    assert_close("dgamma", &read(&g, &dg), &dg_want, 1e-4, 1e-2, 1e-4);
    assert_close("dbeta", &read(&g, &db), &db_want, 1e-4, 1e-2, 1e-4);
}

/// A weight gradient dW = dYᵀ X whose k is every token of the batch.
#[test]
fn weight_gradient_with_k_of_70k() {
    let g = gpu();
    let (m, n, k) = (4, 8, 70_000);
    let mut rng = Rng::new(3);
    let (dy, x) = (rng.vec(k * m, 1.0), rng.vec(k * n, 1.0));
    let mm = Matmul::new(m, n, k, View::rows(m).t(), View::rows(n), View::rows(n));
    let c = Tensor::zeros(&g, &[m * n]);
    run_all(&g, &mm.dispatches(&g, &upload1(&g, &dy), &upload1(&g, &x), None, &c));
    let mut want = vec![0.0; m * n];
    mm.cpu(&dy, &x, None, &mut want);
    assert_close("dW", &read(&g, &c), &want, 1e-4, 1e-2, 1e-4);
}

/// 2,000 windows (Swin-T's first stage at batch 32 has 2,048).
#[test]
fn bias_table_gradient_over_2000_windows() {
    let g = gpu();
    let rb = RelBias { groups: 2000, heads: 1, window: 7, grid: 56, shift: 3 };
    let ds = Rng::new(4).vec(rb.groups * 49 * 49, 1.0);
    let dt = Tensor::zeros(&g, &[169]);
    run_all(&g, &rb.table_grad(&g, &upload1(&g, &ds), &dt));
    assert_close("dtable", &read(&g, &dt), &rb.cpu_table_grad(&ds), 1e-4, 1e-2, 1e-4);
}

/// Swin-T's last stage: 24 heads over a 7 x 7 window.
#[test]
fn inter_head_ssim_with_24_heads() {
    let g = gpu();
    let d = AttnDims { b: 2, h: 24, n: 49, prefix: 0, g: 7 };
    let a = Rng::new(5).vec(d.b * d.h * d.n * d.n, 2.0);
    let (da, part) = (Tensor::zeros(&g, &[a.len()]), Tensor::zeros(&g, &[d.b * 49]));
    let coef = 1.0 / (d.b * 49 * d.h * d.h) as f32;
    run_all(&g, &[obj::ssim_heads(&g, &d, coef, &upload1(&g, &a), &da, &part, 0)]);
    let got: f64 = read(&g, &part).iter().map(|&v| v as f64).sum();
    let a64: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    let want = obj::cpu_ssim_heads(&d, &a64);
    assert!((got - want).abs() < 1e-4 * want, "ssim {got} vs {want}");
    // Every head's gradient is reached (the serial kernel would stop after 13 heads there).
    let grad = read(&g, &da);
    for h in 0..d.h {
        let block = &grad[h * 49 * 49..(h + 1) * 49 * 49];
        assert!(block.iter().any(|&v| v != 0.0), "head {h} has no gradient");
    }
}

/// PSAQ's similarity range over 64 windows of 49 tokens (153,664 similarities).
#[test]
fn psaq_range_over_64_windows() {
    let g = gpu();
    let d = HeadDims { b: 64, h: 2, n: 49, prefix: 0, d: 4 };
    let o = Rng::new(6).vec(d.b * d.h * d.n * d.d, 1.0);
    let s = psaq::PsaqScratch::new(&g, &d);
    let (d_o, part) = (Tensor::zeros(&g, &[o.len()]), Tensor::zeros(&g, &[d.b]));
    run_all(&g, &psaq::entropy(&g, &d, 1.0 / d.b as f32, &upload1(&g, &o), &d_o, &part, 0, &s));
    let o64: Vec<f64> = o.iter().map(|&v| v as f64).collect();
    let got: f64 = read(&g, &part).iter().map(|&v| v as f64).sum();
    let want = psaq::cpu_entropy(&d, &o64, None);
    assert!((got - want).abs() < 1e-3 * want.abs().max(1e-3), "psaq entropy {got} vs {want}");
}

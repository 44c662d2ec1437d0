//! Every WGSL kernel against its CPU reference (`ops::*::cpu*`) on ragged shapes
//! (tests/kernel_gradients.rs checks every backward kernel against finite differences).
//!
//! Run with `WGPU_BACKEND=vulkan cargo test --test kernels -- --test-threads=1`. Without a GPU
//! the Mesa lavapipe software adapter is used; the tests fail (they do not skip) when there is
//! no adapter at all. Both matmul variants (`matmul_regs`, `matmul_tiled`) are tested on
//! whatever adapter is found by flipping `Gpu::cpu_like` before building the dispatches.

mod common;

use common::{
    Rng, VARIANTS, assert_close, assert_close_floor, assert_exact, covered, geometries, gpu, read, run_all,
    run1, upload, upload1, use_variant,
};
use maskaq::gpu::{Gpu, Tensor};
use maskaq::ops::copy::{self, Copy4};
use maskaq::ops::embed::Geometry;
use maskaq::ops::matmul::{Matmul, View};
use maskaq::ops::reduce::{Segment, SumRows, sum_segments};
use maskaq::ops::{gelu, layernorm, loss, softmax};

/// Relative error bound for kernel vs CPU reference (max abs error / max |reference|). Every
/// comparison also checks each element, `|got - want| <= atol + rtol |want|`, with `rtol` the
/// same bound and `atol` about ten times the largest absolute error measured on lavapipe (both
/// kernel families), from the scale of the rounding that the operation accumulates.
const TOL: f64 = 1e-5;

/// A matmul's absolute rounding grows with k (operands in [-1, 1)): lavapipe's worst was
/// 7e-8 k (k = 777, split-K), so 1e-6 (k + 4) leaves a margin of 14 and still fails any element of
/// C above that size that is 100 % wrong (C's elements are of order sqrt(k) / 3).
fn matmul_atol(mm: &Matmul) -> f64 {
    1e-6 * (mm.k as f64 + 4.0)
}

/// Sums over `rows` rows of values in [-1, 1) (sum_rows, LayerNorm's parameter gradients):
/// lavapipe's worst absolute error was 4.8e-5 at 1000 rows (serial sum).
fn sum_atol(rows: usize) -> f64 {
    1e-6 * (rows as f64 + 4.0)
}

/// LayerNorm's dx: at d = 1 it is exactly 0 but rstd = 1000 scales f32 rounding (the H200 gave
/// 2.9e-5, see the call site); otherwise lavapipe's worst absolute error was 4.3e-7.
fn ln_dx_atol(d: usize) -> f64 {
    if d == 1 { 1e-4 } else { 1e-5 }
}
/// Ragged sizes: 1, below a 4-wide register block, just past a 16 boundary, just past 64.
const SIZES: [usize; 4] = [1, 3, 17, 65];

fn dot(w: &[f32], y: &[f32]) -> f64 {
    assert_eq!(w.len(), y.len());
    w.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
}

fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

// ------------------------------------------------------------------------------------------
// matmul
// ------------------------------------------------------------------------------------------

/// One past the largest element index `v` addresses for a `rows x cols` operand.
fn span(v: &View, rows: usize, cols: usize, b1: usize, b2: usize) -> usize {
    if rows == 0 || cols == 0 {
        return v.off + 1;
    }
    v.off + (b1 - 1) * v.b1 + (b2 - 1) * v.b2 + (rows - 1) * v.rs + (cols - 1) * v.cs + 1
}

/// Which elements of C the product writes.
fn c_mask(mm: &Matmul, len: usize) -> Vec<bool> {
    let mut mask = vec![false; len];
    for z1 in 0..mm.batch1 {
        for z2 in 0..mm.batch2 {
            for i in 0..mm.m {
                for j in 0..mm.n {
                    mask[mm.c.off + z1 * mm.c.b1 + z2 * mm.c.b2 + i * mm.c.rs + j] = true;
                }
            }
        }
    }
    mask
}

/// Runs `mm` on random operands (with slack around each buffer, and C pre-filled with random
/// values) on both matmul variants and compares C with `Matmul::cpu`. Elements of C the
/// product does not address must be left bit-for-bit unchanged.
fn check_matmul(gpu: &mut Gpu, name: &str, mm: Matmul, seed: u64, tol: f64) {
    let (b1, b2) = (mm.batch1, mm.batch2);
    let mut rng = Rng::new(seed);
    let a_len = span(&mm.a, mm.m, mm.k, b1, b2) + 3;
    let b_len = span(&mm.b, mm.k, mm.n, b1, b2) + 2;
    let c_len = span(&mm.c, mm.m, mm.n, b1, b2) + 5;
    let a = rng.vec(a_len, 1.0);
    let b = rng.vec(b_len, 1.0);
    let c0 = rng.vec(c_len, 1.0);
    let bias = mm.bias_off.map(|off| rng.vec(off + mm.n + 2, 1.0));
    let mut want = c0.clone();
    mm.cpu(&a, &b, bias.as_deref(), &mut want);
    let mask = c_mask(&mm, c_len);

    let ta = upload1(gpu, &a);
    let tb = upload1(gpu, &b);
    let tbias = bias.as_ref().map(|v| upload1(gpu, v));
    for (vname, tiled) in VARIANTS {
        use_variant(gpu, tiled);
        let tc = upload1(gpu, &c0);
        run_all(gpu, &mm.dispatches(gpu, &ta, &tb, tbias.as_ref(), &tc));
        let got = read(gpu, &tc);
        let label = format!("matmul_{vname} {name} m={} n={} k={}", mm.m, mm.n, mm.k);
        assert_close(&label, &got, &want, tol, matmul_atol(&mm), tol);
        for i in 0..c_len {
            if !mask[i] {
                assert_eq!(
                    got[i].to_bits(),
                    c0[i].to_bits(),
                    "{label}: element {i} of C is outside the product but was written"
                );
            }
        }
    }
}

#[test]
fn matmul_plain_ragged() {
    let mut g = gpu();
    let mut seed = 1;
    for m in SIZES {
        for n in SIZES {
            for k in SIZES {
                let mm = Matmul::new(m, n, k, View::rows(k), View::rows(n), View::rows(n));
                check_matmul(&mut g, "plain", mm, seed, TOL);
                seed += 1;
            }
        }
    }
}

/// Transposed operands, padded leading dimensions, offsets, bias, alpha/beta.
#[test]
fn matmul_layouts_bias_scale() {
    let mut g = gpu();
    let shapes = [(3, 17, 65), (65, 17, 3), (17, 65, 1), (1, 1, 17), (65, 65, 65), (1, 65, 3)];
    let mut seed = 100;
    for (m, n, k) in shapes {
        let plain = Matmul::new(m, n, k, View::rows(k), View::rows(n), View::rows(n));
        // A stored K x M (leading dim m + 2), read transposed: weight-gradient products.
        let at = View::rows(m + 2).t();
        // B stored N x K (leading dim k + 1), read transposed: x W^T with torch weights.
        let bt = View::rows(k + 1).t();
        let cases: Vec<(&str, Matmul)> = vec![
            ("a_t", Matmul { a: at, ..plain }),
            ("b_t", Matmul { b: bt, ..plain }),
            ("a_t b_t", Matmul { a: at, b: bt, ..plain }),
            (
                "offsets and padded C",
                Matmul {
                    a: View::rows(k + 3).at(5),
                    b: View::rows(n + 1).at(7),
                    c: View::rows(n + 4).at(11),
                    ..plain
                },
            ),
            ("bias", plain.bias(4)),
            ("alpha beta", plain.scale(0.5, -1.5)),
            ("accumulate", plain.scale(1.0, 1.0)),
            ("alpha only", plain.scale(-2.0, 0.0)),
            ("bias alpha beta b_t", Matmul { b: bt, ..plain }.bias(1).scale(0.25, 0.75)),
        ];
        for (name, mm) in cases {
            check_matmul(&mut g, name, mm, seed, TOL);
            seed += 1;
        }
    }
}

/// K = 0: C = alpha * bias + beta * C.
#[test]
fn matmul_empty_k() {
    let mut g = gpu();
    let mm = Matmul::new(17, 5, 0, View::rows(1), View::rows(5), View::rows(5)).bias(2).scale(0.5, 2.0);
    check_matmul(&mut g, "k=0", mm, 7, TOL);
}

#[test]
fn matmul_large_and_long_k() {
    let mut g = gpu();
    let (m, n, k) = (128, 96, 80);
    let plain = Matmul::new(m, n, k, View::rows(k), View::rows(n), View::rows(n));
    check_matmul(&mut g, "128x96x80", plain, 200, TOL);
    // dW = X^T dY shape: A transposed, accumulate.
    let mm = Matmul { a: View::rows(m).t(), ..plain }.scale(1.0, 1.0);
    check_matmul(&mut g, "128x96x80 a_t accumulate", mm, 201, TOL);
    let mm = Matmul { b: View::rows(k).t(), ..plain }.bias(0);
    check_matmul(&mut g, "128x96x80 b_t bias", mm, 202, TOL);
    // A long reduction: error relative to max |C| stays at the f32 level.
    let (m, n, k) = (3, 5, 4099);
    let mm = Matmul::new(m, n, k, View::rows(k), View::rows(n), View::rows(n));
    check_matmul(&mut g, "long k", mm, 203, TOL);
}

/// Attention's batched products on a fused qkv matrix [B, N, 3D] (D = H * hd), heads as the
/// second batch index: S = Q K^T, O = P V (heads merged back into [B, N, D]), and the
/// backward dK = dS^T Q written into dqkv at offset D with accumulation.
#[test]
fn matmul_batched_attention_views() {
    let mut g = gpu();
    let (bsz, heads, hd, n) = (2, 3, 5, 17);
    let d = heads * hd;
    let rs = 3 * d;
    let q = View { off: 0, rs, cs: 1, b1: n * rs, b2: hd };
    let k = q.at(d);
    let v = q.at(2 * d);
    // scores / probabilities [B, H, N, N]
    let s = View { off: 0, rs: n, cs: 1, b1: heads * n * n, b2: n * n };
    let qk = Matmul::new(n, n, hd, q, k.t(), s).batched(bsz, heads);
    check_matmul(&mut g, "S = Q K^T", qk, 300, TOL);
    let scaled = Matmul::new(n, n, hd, q, k.t(), s).batched(bsz, heads).scale(0.125, 0.0);
    check_matmul(&mut g, "S = Q K^T * scale", scaled, 301, TOL);
    // O [B, N, D], head h at column h*hd.
    let o = View { off: 0, rs: d, cs: 1, b1: n * d, b2: hd };
    let pv = Matmul::new(n, hd, n, s, v, o).batched(bsz, heads);
    check_matmul(&mut g, "O = P V", pv, 302, TOL);
    // dK = dS^T Q into dqkv's k block, accumulating.
    let dk = Matmul::new(n, hd, n, s.t(), q, k).batched(bsz, heads).scale(1.0, 1.0);
    check_matmul(&mut g, "dK = dS^T Q", dk, 303, TOL);
    // dQ = dS K into dqkv's q block.
    let dq = Matmul::new(n, hd, n, s, k, q).batched(bsz, heads);
    check_matmul(&mut g, "dQ = dS K", dq, 304, TOL);
    // A batch of one with both batch strides zero (shared B, e.g. a weight).
    let shared = Matmul::new(
        n,
        hd,
        hd,
        View::rows(hd).batch(n * hd, 0),
        View::rows(hd),
        View::rows(hd).batch(n * hd, 0),
    )
    .batched(bsz, 1);
    check_matmul(&mut g, "batched, shared B", shared, 305, TOL);
}

// ------------------------------------------------------------------------------------------
// layernorm
// ------------------------------------------------------------------------------------------

fn split_stats(stats: &[f32]) -> (Vec<f32>, Vec<f32>) {
    (stats.iter().step_by(2).copied().collect(), stats.iter().skip(1).step_by(2).copied().collect())
}

/// LayerNorm's parameter gradients (sums over `rows`) against the CPU reference.
#[track_caller]
fn check_ln_params(g: &Gpu, name: &str, rows: usize, got: (&Tensor, &Tensor), want: (&[f32], &[f32])) {
    assert_close(&format!("layernorm dgamma {name}"), &read(g, got.0), want.0, TOL, sum_atol(rows), TOL);
    assert_close(&format!("layernorm dbeta {name}"), &read(g, got.1), want.1, TOL, sum_atol(rows), TOL);
}

#[test]
fn layernorm_forward_backward() {
    let g = gpu();
    let eps = 1e-6;
    let mut rng = Rng::new(11);
    for rows in [1, 3, 65] {
        for d in SIZES {
            let name = format!("rows={rows} d={d}");
            let x: Vec<f32> = rng.vec(rows * d, 2.0).iter().map(|v| v + 0.7).collect();
            let gamma = rng.vec(d, 1.5);
            let beta = rng.vec(d, 0.5);
            let (want_y, want_stats) = layernorm::cpu_forward(rows, d, eps, &x, &gamma, &beta);

            let tx = upload1(&g, &x);
            let tg = upload1(&g, &gamma);
            let tb = upload1(&g, &beta);
            let ty = Tensor::zeros(&g, &[rows, d]);
            let ts = Tensor::zeros(&g, &[rows, 2]);
            run1(&g, &layernorm::forward(&g, rows, d, eps, &tx, &tg, &tb, &ty, &ts));
            assert_close(&format!("layernorm y {name}"), &read(&g, &ty), &want_y, TOL, 1e-5, TOL);
            let (gm, gr) = split_stats(&read(&g, &ts));
            let (wm, wr) = split_stats(&want_stats);
            assert_close(&format!("layernorm mean {name}"), &gm, &wm, TOL, 5e-6, TOL);
            assert_close(&format!("layernorm rstd {name}"), &gr, &wr, TOL, 1e-6, TOL);

            let dy = rng.vec(rows * d, 1.0);
            let dres = rng.vec(rows * d, 1.0);
            let (want_dx, want_dg, want_db) = layernorm::cpu_backward(rows, d, eps, &x, &gamma, &dy);
            let tdy = upload1(&g, &dy);
            let tdres = upload1(&g, &dres);
            // dx starts as garbage: the kernel must overwrite, not accumulate.
            let tdx = upload1(&g, &rng.vec(rows * d, 9.0));
            run1(&g, &layernorm::backward_input(&g, rows, d, &tx, &tg, &ts, &tdy, None, &tdx));
            // At d = 1, dx is exactly 0 but rstd = 1/sqrt(eps) = 1000 scales the f32 rounding of
            // g - mean(g) (the H200 gave 2.9e-5): errors relative to max(|dx|, 1).
            assert_close_floor(
                &format!("layernorm dx {name}"),
                &read(&g, &tdx),
                &want_dx,
                1e-4,
                1.0,
                ln_dx_atol(d),
                1e-4,
            );
            run1(&g, &layernorm::backward_input(&g, rows, d, &tx, &tg, &ts, &tdy, Some(&tdres), &tdx));
            let want = add(&want_dx, &dres);
            assert_close_floor(
                &format!("layernorm dx+dres {name}"),
                &read(&g, &tdx),
                &want,
                1e-4,
                1.0,
                ln_dx_atol(d),
                1e-4,
            );
            let tdg = upload1(&g, &rng.vec(d, 9.0));
            let tdb = upload1(&g, &rng.vec(d, 9.0));
            run_all(&g, &layernorm::backward_params(&g, rows, d, &tx, &ts, &tdy, &tdg, &tdb));
            check_ln_params(&g, &name, rows, (&tdg, &tdb), (&want_dg, &want_db));
        }
    }
}

// ------------------------------------------------------------------------------------------
// softmax
// ------------------------------------------------------------------------------------------

#[test]
fn softmax_forward_backward() {
    let g = gpu();
    let mut rng = Rng::new(12);
    for rows in [1, 3, 65] {
        for n in SIZES {
            // (8, 13): the row max must be taken of scale * a, or exp overflows (8*13 - 13 > 88).
            for (scale, amp) in [(0.37f32, 5.0f32), (1.0, 60.0), (8.0, 13.0)] {
                let name = format!("rows={rows} n={n} scale={scale} amp={amp}");
                let a = rng.vec(rows * n, amp);
                let want = softmax::cpu_forward(rows, n, scale, &a);
                let ta = upload1(&g, &a);
                let tp = Tensor::zeros(&g, &[rows, n]);
                run1(&g, &softmax::forward(&g, rows, n, scale, &ta, &tp));
                assert_close(&format!("softmax {name}"), &read(&g, &tp), &want, TOL, 2e-6, TOL);

                let dprob = rng.vec(rows * n, 1.0);
                let extra = rng.vec(rows * n, 1.0);
                let want_da = softmax::cpu_backward(rows, n, scale, &want, &dprob);
                let tprob = upload1(&g, &want);
                let tdp = upload1(&g, &dprob);
                let tex = upload1(&g, &extra);
                let tda = upload1(&g, &rng.vec(rows * n, 9.0));
                run1(&g, &softmax::backward(&g, rows, n, scale, &tprob, &tdp, None, &tda));
                // With large logits the rows are one-hot and the reference gradient is ~1e-15
                // (rounding noise): measure the error against the gradient's natural scale,
                // scale * max |dprob| (~scale), instead; elementwise, atol scales with it too
                // (lavapipe's worst absolute error: 4.8e-7 at scale 8).
                let got = read(&g, &tda);
                let name_da = format!("softmax da {name}");
                assert_close_floor(&name_da, &got, &want_da, TOL, scale as f64, 1e-6 * scale as f64, TOL);
                run1(&g, &softmax::backward(&g, rows, n, scale, &tprob, &tdp, Some(&tex), &tda));
                assert_close(
                    &format!("softmax da+extra {name}"),
                    &read(&g, &tda),
                    &add(&want_da, &extra),
                    TOL,
                    5e-6,
                    TOL,
                );
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// gelu
// ------------------------------------------------------------------------------------------

#[test]
fn gelu_forward_backward() {
    let g = gpu();
    let mut rng = Rng::new(13);
    let mut inputs: Vec<Vec<f32>> = [1, 3, 17, 65, 1000].iter().map(|&n| rng.vec(n, 3.0)).collect();
    inputs.push(rng.vec(300, 8.0));
    inputs.push(vec![0.0, 1e-3, -1e-3, 0.5, -0.5, 1.0, -1.0, 3.0, -3.0, 10.0, -10.0, 20.0, -20.0]);
    for x in inputs {
        let n = x.len();
        let tx = upload1(&g, &x);
        let ty = upload1(&g, &rng.vec(n, 9.0));
        run1(&g, &gelu::forward(&g, &tx, &ty));
        assert_close(&format!("gelu n={n}"), &read(&g, &ty), &gelu::cpu_forward(&x), TOL, 5e-6, TOL);
        let dy = rng.vec(n, 1.0);
        let tdy = upload1(&g, &dy);
        let tdx = upload1(&g, &rng.vec(n, 9.0));
        run1(&g, &gelu::backward(&g, &tx, &tdy, &tdx));
        assert_close(
            &format!("gelu backward n={n}"),
            &read(&g, &tdx),
            &gelu::cpu_backward(&x, &dy),
            TOL,
            2e-6,
            TOL,
        );
    }
}

// ------------------------------------------------------------------------------------------
// copy4d, fill, sum_rows
// ------------------------------------------------------------------------------------------

/// Runs `c` on random src/dst (dst pre-filled) and compares all of dst with `Copy4::cpu`.
fn check_copy(g: &Gpu, name: &str, c: Copy4, src_len: usize, dst_len: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let src = rng.vec(src_len, 1.0);
    let dst0 = rng.vec(dst_len, 1.0);
    let mut want = dst0.clone();
    c.cpu(&src, &mut want);
    let ts = upload1(g, &src);
    let td = upload1(g, &dst0);
    run1(g, &c.dispatch(g, &ts, &td));
    let got = read(g, &td);
    if c.alpha == 1.0 && c.beta == 0.0 {
        assert_exact(&format!("copy4d {name}"), &got, &want);
    } else {
        assert_close(&format!("copy4d {name}"), &got, &want, 1e-6, 1e-6, 1e-6);
    }
}

#[test]
fn copy4d_strided() {
    let g = gpu();
    let (b, n, h, hd) = (2, 5, 3, 4);
    let d = h * hd;
    // Head split: the k block of a fused qkv [B, N, 3D] into [B, H, N, hd].
    let split = Copy4 {
        dims: [b, h, n, hd],
        s_off: d,
        s: [n * 3 * d, hd, 3 * d, 1],
        t_off: 0,
        t: [h * n * hd, n * hd, hd, 1],
        alpha: 1.0,
        beta: 0.0,
    };
    check_copy(&g, "head split", split, b * n * 3 * d, b * h * n * hd, 21);
    // Head merge back into the v block of a padded [B, N, 3D + 2] matrix, scaled, accumulating.
    let merge = Copy4 {
        dims: [b, h, n, hd],
        s_off: 0,
        s: [h * n * hd, n * hd, hd, 1],
        t_off: 2 * d + 1,
        t: [n * (3 * d + 2), hd, 3 * d + 2, 1],
        alpha: 0.5,
        beta: 2.0,
    };
    check_copy(&g, "head merge alpha beta", merge, b * h * n * hd, b * n * (3 * d + 2), 22);
    // 2-d transpose of a 17 x 65 matrix into a 65 x 17 one.
    let tr = Copy4 {
        dims: [1, 1, 65, 17],
        s_off: 0,
        s: [0, 0, 1, 65],
        t_off: 0,
        t: [0, 0, 17, 1],
        alpha: 1.0,
        beta: 0.0,
    };
    check_copy(&g, "transpose", tr, 17 * 65, 65 * 17, 23);
    // Class-token rows gathered from [B=3, N=17, D=65] with offsets, alpha only.
    let cls = Copy4 {
        dims: [1, 1, 3, 65],
        s_off: 65,
        s: [0, 0, 17 * 65, 1],
        t_off: 1,
        t: [0, 0, 65, 1],
        alpha: -1.5,
        beta: 0.0,
    };
    check_copy(&g, "gather rows alpha", cls, 3 * 17 * 65, 3 * 65 + 4, 24);
    // beta = 1 accumulation, every dimension ragged.
    let acc = Copy4 {
        dims: [3, 1, 17, 3],
        s_off: 2,
        s: [17 * 3 + 1, 0, 3, 1],
        t_off: 0,
        t: [17 * 3, 0, 3, 1],
        alpha: 1.0,
        beta: 1.0,
    };
    check_copy(&g, "accumulate", acc, 3 * (17 * 3 + 1) + 2, 3 * 17 * 3, 25);
    // Flat copy and an empty box (dst untouched).
    check_copy(&g, "flat", Copy4::flat(65), 65, 65, 26);
    let empty = Copy4 { dims: [2, 0, 3, 4], ..Copy4::flat(1) };
    check_copy(&g, "empty box", empty, 5, 7, 27);
}

#[test]
fn fill_ragged() {
    let g = gpu();
    let mut rng = Rng::new(31);
    for n in [1, 3, 17, 65, 300] {
        let t = upload1(&g, &rng.vec(n, 1.0));
        run1(&g, &copy::fill(&g, &t, -3.25));
        assert_exact(&format!("fill n={n}"), &read(&g, &t), &vec![-3.25; n]);
    }
}

/// `sum_segments`: ragged segments (empty, one value, a partial workgroup, several strides) of
/// three sources against a CPU sum in f64.
#[test]
fn sum_segments_ragged() {
    let g = gpu();
    let mut rng = Rng::new(33);
    let data: Vec<Vec<f32>> = [1000, 7, 300].iter().map(|&n| rng.vec(n, 1.0)).collect();
    let srcs: Vec<_> = data.iter().map(|d| upload1(&g, d)).collect();
    let out = upload1(&g, &[9.0; 8]);
    let segs = [(0, 3, 997), (1, 0, 7), (2, 5, 1), (0, 0, 0), (2, 0, 300), (0, 100, 65), (1, 2, 3)];
    let segs: Vec<Segment> = segs
        .iter()
        .enumerate()
        .map(|(k, &(src, off, len))| Segment { src, off, len, o: 7 - k, alpha: 0.5 + k as f32 })
        .collect();
    run1(&g, &sum_segments(&g, &srcs.iter().collect::<Vec<_>>(), &segs, &out));
    let mut want = vec![9.0f32; 8];
    for s in &segs {
        let sum: f64 = data[s.src][s.off..s.off + s.len].iter().map(|&v| v as f64).sum();
        want[s.o] = (s.alpha as f64 * sum) as f32;
    }
    assert_close("sum_segments", &read(&g, &out), &want, 1e-5, 1e-5, 1e-5);
}

/// `fill_all`: ragged buffers, four per launch (six here: a full launch and a partial one); a
/// buffer not in the list keeps its values.
#[test]
fn fill_all_ragged() {
    let g = gpu();
    let mut rng = Rng::new(32);
    let sizes = [5, 300, 1, 64, 257, 3];
    let ts: Vec<_> = sizes.iter().map(|&n| upload1(&g, &rng.vec(n, 1.0))).collect();
    let other = rng.vec(40, 1.0);
    let t_other = upload1(&g, &other);
    let ds = copy::fill_all(&g, &ts.iter().collect::<Vec<_>>(), 0.75);
    assert_eq!(ds.len(), 2);
    run_all(&g, &ds);
    for (t, &n) in ts.iter().zip(&sizes) {
        assert_exact(&format!("fill_all n={n}"), &read(&g, t), &vec![0.75; n]);
    }
    assert_exact("fill_all: other buffer", &read(&g, &t_other), &other);
}

/// More than 65535 workgroups: the 1-d grid folds into y, and the shaders must recover the
/// linear index from (wid.y * nwg.x + wid.x).
#[test]
fn copy_and_fill_folded_grid() {
    let g = gpu();
    let n = 256 * 65535 + 77;
    let grid = maskaq::gpu::grid_for(&copy::COPY, n);
    assert!(grid[1] > 1, "expected a folded grid, got {grid:?}");
    let src: Vec<f32> = (0..n).map(|i| (i % 1_000_003) as f32).collect();
    let ts = upload1(&g, &src);
    let td = Tensor::zeros(&g, &[n]);
    run1(&g, &Copy4::flat(n).dispatch(&g, &ts, &td));
    assert_exact("copy4d folded grid", &read(&g, &td), &src);
    run1(&g, &copy::fill(&g, &td, 0.5));
    let got = read(&g, &td);
    if let Some(i) = got.iter().position(|&v| v != 0.5) {
        panic!("fill folded grid: element {i} is {}", got[i]);
    }
}

#[test]
fn sum_rows_strided() {
    let g = gpu();
    let cases = [
        SumRows::matrix(65, 65),
        SumRows::matrix(1, 17),
        SumRows { n: 17, rows: 5, s_off: 3, rs: 20, o_off: 2, alpha: 0.5, beta: -2.0 },
        SumRows { n: 1, rows: 3, s_off: 1, rs: 4, o_off: 0, alpha: 1.0, beta: 1.0 },
        SumRows { n: 65, rows: 17, s_off: 65, rs: 3 * 65, o_off: 1, alpha: -1.0, beta: 0.0 },
        SumRows { n: 3, rows: 0, s_off: 0, rs: 3, o_off: 0, alpha: 1.0, beta: 0.5 },
    ];
    for (i, c) in cases.into_iter().enumerate() {
        let mut rng = Rng::new(40 + i as u64);
        let src_len = c.s_off + c.rows.max(1) * c.rs + 3;
        let src = rng.vec(src_len, 1.0);
        let out0 = rng.vec(c.o_off + c.n + 2, 1.0);
        let mut want = out0.clone();
        c.cpu(&src, &mut want);
        let ts = upload1(&g, &src);
        let to = upload1(&g, &out0);
        run1(&g, &c.dispatch(&g, &ts, &to));
        assert_close(&format!("sum_rows {c:?}"), &read(&g, &to), &want, TOL, sum_atol(c.rows), TOL);
    }
}

/// Long sums on GPUs run in chunks of rows (two launches); on CPU adapters in one. Both
/// against the CPU reference on ragged shapes, whatever the adapter.
#[test]
fn sum_rows_chunked() {
    let mut g = gpu();
    let cases = [
        SumRows::matrix(1000, 37),
        SumRows { n: 1, rows: 20_000, s_off: 5, rs: 1, o_off: 3, alpha: 0.25, beta: 0.0 },
        SumRows { n: 65, rows: 129, s_off: 7, rs: 70, o_off: 2, alpha: -0.5, beta: 1.5 },
        SumRows { n: 3, rows: 30_001, s_off: 0, rs: 3, o_off: 0, alpha: 1e-3, beta: 1.0 },
    ];
    for (i, c) in cases.into_iter().enumerate() {
        let mut rng = Rng::new(60 + i as u64);
        let src = rng.vec(c.s_off + c.rows * c.rs + 3, 1.0);
        let out0 = rng.vec(c.o_off + c.n + 2, 1.0);
        let mut want = out0.clone();
        c.cpu(&src, &mut want);
        let ts = upload1(&g, &src);
        for cpu_like in [true, false] {
            g.cpu_like = cpu_like;
            let to = upload1(&g, &out0);
            let ds = c.dispatches(&g, &ts, &to);
            assert_eq!(ds.len(), if cpu_like { 1 } else { 2 }, "chunking of {c:?}");
            run_all(&g, &ds);
            assert_close(
                &format!("sum_rows cpu_like={cpu_like} {c:?}"),
                &read(&g, &to),
                &want,
                TOL,
                sum_atol(c.rows),
                TOL,
            );
        }
    }
}

/// The GPU path splits products with few output tiles and a long k (weight gradients) into k
/// slices summed afterwards; checked on the layouts the model uses, with a ragged remainder.
#[test]
fn matmul_split_k() {
    let mut g = gpu();
    let cases = [
        // dW = dyᵀ x: A transposed (rows x out), B rows x in.
        (Matmul::new(70, 45, 1000, View::rows(70).t(), View::rows(45), View::rows(45)), 1.0, 0.0),
        (Matmul::new(64, 64, 1024, View::rows(64).t(), View::rows(64), View::rows(64)), 0.5, 0.0),
        // Both contiguous along k (the nt4 kernel), offsets and a strided C, alpha and beta.
        (
            Matmul::new(33, 17, 777, View::rows(780).at(4), View::rows(780).t(), View::rows(17).at(5)),
            2.0,
            -1.0,
        ),
        (Matmul::new(5, 130, 300, View::rows(300), View::rows(130), View::rows(130)), 1.0, 1.0),
    ];
    for (i, (mm, alpha, beta)) in cases.into_iter().enumerate() {
        let mm = mm.scale(alpha, beta);
        assert!(mm.split_k(false).is_some(), "case {i} is meant to be split: {mm:?}");
        assert!(mm.split_k(true).is_none(), "CPU adapters never split");
        check_matmul(&mut g, &format!("split-k case {i}"), mm, 70 + i as u64, TOL);
    }
    g.cpu_like = true;
}

/// LayerNorm's parameter gradients on GPUs also sum their rows in chunks.
#[test]
fn layernorm_params_chunked() {
    let mut g = gpu();
    let mut rng = Rng::new(80);
    for (rows, d) in [(300, 45), (129, 1), (1000, 65)] {
        let x = rng.vec(rows * d, 2.0);
        let gamma = rng.vec(d, 1.0);
        let beta = rng.vec(d, 1.0);
        let dy = rng.vec(rows * d, 1.0);
        let (_, want_dg, want_db) = layernorm::cpu_backward(rows, d, 1e-6, &x, &gamma, &dy);
        let (_, stats) = layernorm::cpu_forward(rows, d, 1e-6, &x, &gamma, &beta);
        let (tx, ts, tdy) = (upload1(&g, &x), upload1(&g, &stats), upload1(&g, &dy));
        for cpu_like in [true, false] {
            g.cpu_like = cpu_like;
            let tdg = upload1(&g, &rng.vec(d, 9.0));
            let tdb = upload1(&g, &rng.vec(d, 9.0));
            let ds = layernorm::backward_params(&g, rows, d, &tx, &ts, &tdy, &tdg, &tdb);
            assert_eq!(ds.len() > 1, !cpu_like, "chunking at rows={rows}");
            run_all(&g, &ds);
            let name = format!("rows={rows} d={d} cpu_like={cpu_like}");
            check_ln_params(&g, &name, rows, (&tdg, &tdb), (&want_dg, &want_db));
        }
    }
}

/// With beta = 0 the kernels overwrite their output without reading it: a destination full of
/// NaN (e.g. never-written memory) must not leak into the result.
#[test]
fn beta_zero_ignores_nan_destination() {
    let mut g = gpu();
    let mut rng = Rng::new(45);
    let (m, n, k) = (17, 5, 3);
    let a = rng.vec(m * k, 1.0);
    let b = rng.vec(k * n, 1.0);
    let bias = rng.vec(n, 1.0);
    let mm = Matmul::new(m, n, k, View::rows(k), View::rows(n), View::rows(n)).bias(0).scale(0.5, 0.0);
    let mut want = vec![f32::NAN; m * n];
    mm.cpu(&a, &b, Some(&bias), &mut want);
    let (ta, tb, tbias) = (upload1(&g, &a), upload1(&g, &b), upload1(&g, &bias));
    for (vname, tiled) in VARIANTS {
        use_variant(&mut g, tiled);
        let tc = upload1(&g, &vec![f32::NAN; m * n]);
        run1(&g, &mm.dispatch(&g, &ta, &tb, Some(&tbias), &tc));
        assert_close(
            &format!("matmul_{vname} beta=0 over NaN"),
            &read(&g, &tc),
            &want,
            TOL,
            matmul_atol(&mm),
            TOL,
        );
    }

    let src = rng.vec(3 * 17, 1.0);
    let ts = upload1(&g, &src);
    let c = Copy4 { alpha: 2.0, ..Copy4::flat(3 * 17) };
    let td = upload1(&g, &vec![f32::NAN; 3 * 17]);
    run1(&g, &c.dispatch(&g, &ts, &td));
    let want: Vec<f32> = src.iter().map(|v| 2.0 * v).collect();
    assert_close("copy4d beta=0 over NaN", &read(&g, &td), &want, 1e-6, 1e-6, 1e-6);

    let sr = SumRows { alpha: 0.5, ..SumRows::matrix(3, 17) };
    let mut want = vec![f32::NAN; 17];
    sr.cpu(&src, &mut want);
    let to = upload1(&g, &[f32::NAN; 17]);
    run1(&g, &sr.dispatch(&g, &ts, &to));
    assert_close("sum_rows beta=0 over NaN", &read(&g, &to), &want, TOL, sum_atol(sr.rows), TOL);

    let geo = geometries()[0];
    let npix = geo.batch * geo.chans * geo.h * geo.w;
    let dcols = rng.vec(geo.batch * geo.patches() * geo.kk(), 1.0);
    let tdcols = upload1(&g, &dcols);
    let tdimg = upload1(&g, &vec![f32::NAN; npix]);
    run1(&g, &geo.unpatchify(&g, &tdcols, &tdimg, 0.0));
    assert_exact("unpatchify beta=0 over NaN", &read(&g, &tdimg), &cpu_unpatchify(&geo, &dcols));
}

// ------------------------------------------------------------------------------------------
// cross-entropy
// ------------------------------------------------------------------------------------------

#[test]
fn cross_entropy_ragged() {
    let g = gpu();
    let mut rng = Rng::new(50);
    for rows in [1, 3, 65] {
        for classes in SIZES {
            let name = format!("rows={rows} classes={classes}");
            let logits = rng.vec(rows * classes, 4.0);
            let targets: Vec<f32> = (0..rows).map(|_| rng.below(classes) as f32).collect();
            let scale = 1.0 / rows as f32;
            let (want_loss, want_grad) = loss::cpu(rows, classes, scale, &logits, &targets);
            let tl = upload1(&g, &logits);
            let tt = upload1(&g, &targets);
            let tloss = upload1(&g, &rng.vec(rows, 9.0));
            let tgrad = upload1(&g, &rng.vec(rows * classes, 9.0));
            run1(&g, &loss::cross_entropy(&g, rows, classes, scale, &tl, &tt, &tloss, &tgrad));
            // GPUs' exp and log are not correctly rounded (Vulkan allows a few ULP): the H200 was
            // 1.3e-5 off on a small loss (0.013); 1e-4 still catches any real error. That error is
            // absolute (a few ULP of the log-sum-exp, up to about 8 here), hence atol 5e-5.
            assert_close(&format!("ce loss {name}"), &read(&g, &tloss), &want_loss, 1e-4, 5e-5, 1e-4);
            // f32 exp(logit - lse) carries ~1e-7 absolute error (lavapipe's worst: 1.3e-7); when
            // every gradient of a row is small (a confident row of 3 classes) that is ~1e-5
            // relative to their maximum.
            assert_close(&format!("ce grad {name}"), &read(&g, &tgrad), &want_grad, 5e-5, 2e-6, 5e-5);
        }
    }
}

// ------------------------------------------------------------------------------------------
// patch embedding
// ------------------------------------------------------------------------------------------

/// CPU unpatchify as the adjoint of `cpu_patchify`: patchify an image of pixel indices to get
/// each column's source pixel, then scatter.
fn cpu_unpatchify(geo: &Geometry, dcols: &[f32]) -> Vec<f32> {
    let npix = geo.batch * geo.chans * geo.h * geo.w;
    let ids: Vec<f32> = (0..npix).map(|i| i as f32).collect();
    let src = geo.cpu_patchify(&ids);
    let mut dimg = vec![0f32; npix];
    for (c, &pix) in src.iter().enumerate() {
        dimg[pix as usize] += dcols[c];
    }
    dimg
}

#[test]
fn patchify_unpatchify() {
    let g = gpu();
    for (gi, geo) in geometries().into_iter().enumerate() {
        let mut rng = Rng::new(60 + gi as u64);
        let npix = geo.batch * geo.chans * geo.h * geo.w;
        let ncols = geo.batch * geo.patches() * geo.kk();
        let img = rng.vec(npix, 1.0);
        let timg = upload(&g, &img, &[geo.batch, geo.chans, geo.h, geo.w]);
        let tcols = upload(&g, &rng.vec(ncols, 9.0), &[geo.batch * geo.patches(), geo.kk()]);
        run1(&g, &geo.patchify(&g, &timg, &tcols));
        let cols = read(&g, &tcols);
        assert_exact(&format!("patchify {geo:?}"), &cols, &geo.cpu_patchify(&img));

        // unpatchify(patchify(img)) is img on covered pixels and 0 on the leftover ones, even
        // when dimg held garbage (beta = 0 overwrites).
        let tdimg = upload1(&g, &rng.vec(npix, 9.0));
        run1(&g, &geo.unpatchify(&g, &tcols, &tdimg, 0.0));
        let back = read(&g, &tdimg);
        let want: Vec<f32> = (0..npix).map(|i| if covered(&geo, i) { img[i] } else { 0.0 }).collect();
        assert_exact(&format!("unpatchify(patchify) {geo:?}"), &back, &want);
        if geo.h % geo.patch != 0 || geo.w % geo.patch != 0 {
            assert!((0..npix).any(|i| !covered(&geo, i)));
        }

        // The exact adjoint on random column gradients, then with beta accumulation.
        let dcols = rng.vec(ncols, 1.0);
        let tdcols = upload1(&g, &dcols);
        run1(&g, &geo.unpatchify(&g, &tdcols, &tdimg, 0.0));
        let dimg = read(&g, &tdimg);
        let want = cpu_unpatchify(&geo, &dcols);
        assert_exact(&format!("unpatchify {geo:?}"), &dimg, &want);
        let lhs = dot(&geo.cpu_patchify(&img), &dcols);
        let rhs = dot(&img, &dimg);
        assert!(
            (lhs - rhs).abs() <= 1e-9 * lhs.abs().max(1.0),
            "unpatchify is not the adjoint of patchify: <P x, y> = {lhs}, <x, P^T y> = {rhs}"
        );
        let prev = rng.vec(npix, 1.0);
        let tprev = upload1(&g, &prev);
        run1(&g, &geo.unpatchify(&g, &tdcols, &tprev, 0.5));
        let want: Vec<f32> = want.iter().zip(&prev).map(|(w, p)| w + 0.5 * p).collect();
        assert_close(&format!("unpatchify beta=0.5 {geo:?}"), &read(&g, &tprev), &want, 1e-6, 1e-6, 1e-6);
    }
}

#[test]
fn tokens_forward_prefix_1_and_2() {
    let g = gpu();
    for (gi, geo) in geometries().into_iter().enumerate() {
        let mut rng = Rng::new(70 + gi as u64);
        let (np, d, n) = (geo.patches(), geo.d, geo.tokens());
        let patches = rng.vec(geo.batch * np * d, 1.0);
        let cls = rng.vec(d, 1.0);
        let dist = rng.vec(d, 1.0);
        let pos = rng.vec(n * d, 1.0);
        let want = geo.cpu_tokens(&patches, &cls, &dist, &pos);
        let tp = upload1(&g, &patches);
        let tc = upload1(&g, &cls);
        let td = upload1(&g, &dist);
        let tpos = upload1(&g, &pos);
        let tx = upload(&g, &rng.vec(geo.batch * n * d, 9.0), &[geo.batch, n, d]);
        run1(&g, &geo.tokens_forward(&g, &tp, &tc, &td, &tpos, &tx));
        let name = format!("tokens_forward prefix={} {geo:?}", geo.prefix);
        assert_exact(&name, &read(&g, &tx), &want);
    }
}

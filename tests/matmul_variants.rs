//! The matmul variants against the CPU reference on ragged M and N, with batching, offsets,
//! bias and beta: the default choice by operand layout (`Gpu::cpu_like` flipped to check each
//! adapter class's defaults), and every variant of the table forced in turn
//! (`Gpu::forced_variant`) on every layout it applies to. All of them run on any adapter:
//! lavapipe, GL, or a real GPU.

mod common;

use common::{Rng, assert_close, gpu, read, upload1};
use maskaq::ops::matmul::{Matmul, View};
use maskaq::ops::matmul_variants::{VARIANTS, default_variant, twin, untuned};

fn check(
    name: &str,
    expected_kernel: &str,
    mm: Matmul,
    a_len: usize,
    b_len: usize,
    c_len: usize,
    bias: bool,
) {
    // The CPU adapters' kernels (no workgroup barriers) are plain WGSL that any GPU runs too.
    let mut gpu = gpu();
    gpu.cpu_like = true;
    assert_eq!(default_variant(&mm, true).kernel.id, expected_kernel, "{name}: kernel choice");
    let mut rng = Rng::new(9);
    let (a, b, c0) = (rng.vec(a_len, 1.0), rng.vec(b_len, 1.0), rng.vec(c_len, 1.0));
    let bias_v = rng.vec(mm.n + 3, 1.0);
    let (at, bt, ct) = (upload1(&gpu, &a), upload1(&gpu, &b), upload1(&gpu, &c0));
    let biast = upload1(&gpu, &bias_v);
    let mm = if bias { mm.bias(3) } else { mm };
    gpu.run(&[&mm.dispatch(&gpu, &at, &bt, bias.then_some(&biast), &ct)]);
    let mut want = c0.clone();
    mm.cpu(&a, &b, bias.then_some(&bias_v[..]), &mut want);
    assert_close(name, &read(&gpu, &ct), &want, 1e-5, 1e-6 * (mm.k as f64 + 4.0), 1e-5);
}

#[test]
fn nt4_both_operands_along_k() {
    for (m, n, k) in [(1usize, 1usize, 4usize), (17, 13, 12), (65, 3, 64), (33, 66, 20)] {
        // C = A Bᵀ with A [m, k] and B [n, k] row-major, leading dimensions padded to 4.
        let (lda, ldb) = (k + 4, k + 8);
        let mm =
            Matmul::new(m, n, k, View::rows(lda).at(4), View::rows(ldb).t(), View::rows(n)).scale(0.7, 0.3);
        check(&format!("nt4 {m}x{n}x{k}"), "matmul_nt4", mm, 4 + m * lda, n * ldb, m * n, true);
    }
    // Attention logits: heads inside a fused qkv matrix.
    let (b, h, n, hd) = (2, 3, 9, 8);
    let d3 = 3 * h * hd;
    let q = View { off: 0, rs: d3, cs: 1, b1: n * d3, b2: hd };
    let kv = View { off: h * hd, ..q };
    let c = View { off: 0, rs: n, cs: 1, b1: h * n * n, b2: n * n };
    let mm = Matmul::new(n, n, hd, q, kv.t(), c).batched(b, h);
    check("nt4 q kᵀ", "matmul_nt4", mm, b * n * d3, b * n * d3, b * h * n * n, false);
}

#[test]
fn nn4_b_along_n() {
    for (m, n, k) in [(1usize, 4usize, 1usize), (17, 13, 5), (65, 8, 33), (3, 70, 64)] {
        let ldb = n.div_ceil(4) * 4 + 4;
        let mm = Matmul::new(m, n, k, View::rows(k + 1), View::rows(ldb), View::rows(n)).scale(1.0, 1.0);
        check(&format!("nn4 {m}x{n}x{k}"), "matmul_nn4", mm, m * (k + 1), k * ldb, m * n, true);
    }
}

#[test]
fn tn4_a_along_m_b_along_n() {
    for (m, n, k) in [(4usize, 4usize, 1usize), (17, 13, 5), (64, 9, 40), (6, 70, 3)] {
        // dW = dyᵀ x: A(m, k) = dy[k, m] with dy [k, m] row-major (ld multiple of 4).
        let (lda, ldb) = (m.div_ceil(4) * 4, n.div_ceil(4) * 4 + 4);
        let mm = Matmul::new(m, n, k, View::rows(lda).t(), View::rows(ldb), View::rows(n));
        check(&format!("tn4 {m}x{n}x{k}"), "matmul_tn4", mm, k * lda, k * ldb, m * n, false);
    }
}

#[test]
fn unaligned_layouts_fall_back_to_scalar_kernel() {
    // Head dimension 6: offsets of q/k/v are not multiples of 4.
    let (b, h, n, hd) = (1, 2, 5, 6);
    let d3 = 3 * h * hd;
    let q = View { off: 0, rs: d3, cs: 1, b1: n * d3, b2: hd };
    let k = View { off: h * hd, ..q };
    let c = View { off: 0, rs: n, cs: 1, b1: h * n * n, b2: n * n };
    let mm = Matmul::new(n, n, hd, q, k.t(), c).batched(b, h);
    check("regs fallback", "matmul_regs", mm, b * n * d3, b * n * d3, b * h * n * n, false);
}

#[test]
fn tiled_nt4_for_gpus() {
    // The GPU kernels run on lavapipe too when told the adapter is not a CPU.
    let mut gpu = gpu();
    gpu.cpu_like = false;
    let mut rng = Rng::new(10);
    for (m, n, k) in [(1usize, 1usize, 4usize), (17, 13, 12), (65, 70, 36), (130, 64, 64)] {
        let (lda, ldb) = (k + 4, k);
        let mm =
            Matmul::new(m, n, k, View::rows(lda).at(4), View::rows(ldb).t(), View::rows(n)).scale(0.5, 0.25);
        assert_eq!(default_variant(&mm, false).kernel.id, "matmul_tiled_nt4");
        let (a, b, c0) = (rng.vec(4 + m * lda, 1.0), rng.vec(n * ldb, 1.0), rng.vec(m * n, 1.0));
        let bias = rng.vec(n + 3, 1.0);
        let (at, bt, ct, biast) =
            (upload1(&gpu, &a), upload1(&gpu, &b), upload1(&gpu, &c0), upload1(&gpu, &bias));
        let mm = mm.bias(3);
        gpu.run(&[&mm.dispatch(&gpu, &at, &bt, Some(&biast), &ct)]);
        let mut want = c0.clone();
        mm.cpu(&a, &b, Some(&bias), &mut want);
        assert_close(
            &format!("tiled_nt4 {m}x{n}x{k}"),
            &read(&gpu, &ct),
            &want,
            1e-5,
            1e-6 * (k as f64 + 4.0),
            1e-5,
        );
    }
}

/// Products of every layout the graphs launch, with ragged sizes, offsets, bias and beta.
fn layouts() -> Vec<(&'static str, Matmul, [usize; 3])> {
    let mut out = Vec::new();
    for (m, n, k) in [(1usize, 1usize, 4usize), (17, 13, 12), (65, 70, 36), (33, 9, 132)] {
        // x Wᵀ: both operands along k.
        let (lda, ldb) = (k + 4, k + 8);
        let nt =
            Matmul::new(m, n, k, View::rows(lda).at(4), View::rows(ldb).t(), View::rows(n)).scale(0.7, 0.3);
        out.push(("x Wᵀ", nt.bias(1), [4 + m * lda, n * ldb, m * n]));
        // dy W: B along n.
        let ldb = n.div_ceil(4) * 4 + 4;
        let nn = Matmul::new(m, n, k, View::rows(k + 1), View::rows(ldb), View::rows(n)).scale(1.0, 1.0);
        out.push(("dy W", nn, [m * (k + 1), k * ldb, m * n]));
        // The same with A's rows 16-byte aligned (the texture twin reads four k at a time).
        let lda = k.next_multiple_of(4) + 4;
        let nn = Matmul::new(m, n, k, View::rows(lda).at(8), View::rows(ldb), View::rows(n));
        out.push(("dy W aligned", nn, [8 + m * lda, k * ldb, m * n]));
        // dyᵀ x: A along m, B along n.
        let (lda, ldb) = (m.div_ceil(4) * 4, n.div_ceil(4) * 4 + 4);
        let tn = Matmul::new(m, n, k, View::rows(lda).t(), View::rows(ldb), View::rows(n));
        out.push(("dyᵀ x", tn, [k * lda, k * ldb, m * n]));
    }
    // Attention: heads inside a fused qkv matrix, batched over images and heads.
    let (b, h, n, hd) = (2, 3, 9, 8);
    let d3 = 3 * h * hd;
    let q = View { off: 0, rs: d3, cs: 1, b1: n * d3, b2: hd };
    let kv = View { off: h * hd, ..q };
    let c = View { off: 0, rs: n, cs: 1, b1: h * n * n, b2: n * n };
    out.push((
        "q kᵀ",
        Matmul::new(n, n, hd, q, kv.t(), c).batched(b, h),
        [b * n * d3, b * n * d3, b * h * n * n],
    ));
    out
}

#[test]
fn every_variant_forced_in_turn() {
    let mut gpu = gpu();
    gpu.test_variants = true;
    let mut rng = Rng::new(11);
    let mut runs = vec![0usize; VARIANTS.len()];
    for (name, mm, [a_len, b_len, c_len]) in layouts() {
        let (a, b, c0) = (rng.vec(a_len, 1.0), rng.vec(b_len, 1.0), rng.vec(c_len, 1.0));
        let bias_v = rng.vec(mm.n + 3, 1.0);
        let mut want = c0.clone();
        mm.cpu(&a, &b, mm.bias_off.map(|_| &bias_v[..]), &mut want);
        let (at, bt, biast) = (upload1(&gpu, &a), upload1(&gpu, &b), upload1(&gpu, &bias_v));
        for (i, v) in VARIANTS.iter().enumerate() {
            if !v.applies(&mm) || !v.runs_on(&gpu) {
                continue;
            }
            gpu.forced_variant = Some(v.kernel.id.to_string());
            let ct = upload1(&gpu, &c0);
            let d = mm.dispatch(&gpu, &at, &bt, mm.bias_off.map(|_| &biast), &ct);
            assert_eq!(d.kernel, v.kernel.id, "{name}: the forced variant was not used");
            gpu.run(&[&d]);
            let label = format!("{} {name} {}x{}x{}", v.kernel.id, mm.m, mm.n, mm.k);
            assert_close(&label, &read(&gpu, &ct), &want, 1e-5, 1e-6 * (mm.k as f64 + 4.0), 1e-5);
            runs[i] += 1;
        }
    }
    for (v, n) in VARIANTS.iter().zip(runs) {
        // A variant for another subgroup size cannot run here (GL has no subgroups).
        assert!(
            n > 0 || !v.runs_on(&gpu),
            "{} was never checked: no layout of this test applies to it",
            v.kernel.id
        );
    }
}

/// Each twin (subgroup: on an adapter with subgroups of 8, lavapipe; texture operands: on any
/// adapter) gives its base variant's results bit for bit on every layout, so the CPU default
/// can switch to it without changing any result; the CPU default is the texture twin.
#[test]
fn twins_are_bit_identical_to_their_bases() {
    let mut gpu = gpu();
    let mut rng = Rng::new(12);
    let mut checked = [0, 0];
    for (name, mm, [a_len, b_len, c_len]) in layouts() {
        let base = default_variant(&mm, true);
        for (kind, count) in ["_sg", "_tex"].into_iter().zip(checked.iter_mut()) {
            let twins: Vec<_> = [false, true]
                .into_iter()
                .filter_map(|narrow| twin(base, kind, narrow))
                .filter(|t| t.fits(&mm, &gpu))
                .collect();
            for t in twins {
                let (a, b, c0) = (rng.vec(a_len, 1.0), rng.vec(b_len, 1.0), rng.vec(c_len, 1.0));
                let bias_v = rng.vec(mm.n + 3, 1.0);
                let (at, bt, biast) = (upload1(&gpu, &a), upload1(&gpu, &b), upload1(&gpu, &bias_v));
                let mut out = Vec::new();
                for id in [base.kernel.id, t.kernel.id] {
                    gpu.forced_variant = Some(id.to_string());
                    let ct = upload1(&gpu, &c0);
                    gpu.run(&[&mm.dispatch(&gpu, &at, &bt, mm.bias_off.map(|_| &biast), &ct)]);
                    out.push(read(&gpu, &ct).iter().map(|v| v.to_bits()).collect::<Vec<_>>());
                }
                let (id, bid) = (t.kernel.id, base.kernel.id);
                assert!(out[0] == out[1], "{name} {}x{}x{}: {id} differs from {bid}", mm.m, mm.n, mm.k);
                *count += 1;
            }
        }
    }
    assert!(checked[1] >= 8, "too few layouts had a texture twin: {}", checked[1]);
    if gpu.fixed_subgroup_size() == Some(8) {
        assert!(checked[0] >= 8, "too few layouts had a subgroup twin: {}", checked[0]);
    }
    gpu.forced_variant = None;
    gpu.cpu_like = true;
    let wide = |want: &str| layouts().into_iter().find(|(n, mm, _)| *n == want && mm.n > 16).unwrap().1;
    assert_eq!(untuned(&wide("x Wᵀ"), &gpu).kernel.id, "matmul_nt4_tex", "the CPU default");
    assert_eq!(untuned(&wide("dy W"), &gpu).kernel.id, "matmul_nn4_tex");
    assert_eq!(untuned(&layouts()[0].1, &gpu).kernel.id, "matmul_nt4_tex_c1", "16 columns or fewer");
}

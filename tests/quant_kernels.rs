//! The quantizer kernels against their CPU references on ragged shapes and strided regions.

mod common;

use common::{Rng, assert_close, assert_close_floor, gpu, read, upload1};
use maskaq::gpu::{Gpu, Tensor};
use maskaq::ops::quant::{self, ActQuantState, MAX_PARTIALS, Region};

#[test]
fn weight_quant_all_bits_ragged() {
    let gpu = gpu();
    let mut rng = Rng::new(7);
    for bits in 2..=8 {
        for (rows, cols) in [(1, 1), (3, 17), (17, 3), (65, 33)] {
            let mut w = rng.vec(rows * cols, 1.5);
            if rows > 1 {
                // An all-zero row must not divide by zero.
                w[cols..2 * cols].iter_mut().for_each(|v| *v = 0.0);
            }
            let wt = upload1(&gpu, &w);
            let out = Tensor::zeros(&gpu, &[rows * cols]);
            gpu.run(&[&quant::weight_quant(
                &gpu,
                rows,
                cols,
                bits,
                &wt,
                &out,
                &Tensor::zeros(&gpu, &[rows]),
            )]);
            let got = read(&gpu, &out);
            let want = quant::cpu_weight_quant(rows, cols, bits, &w);
            assert_close(&format!("weight_quant b{bits} {rows}x{cols}"), &got, &want, 1e-6, 1e-7, 1e-6);
            // At most 2^b levels per row.
            for r in 0..rows {
                let mut levels: Vec<u32> =
                    got[r * cols..(r + 1) * cols].iter().map(|v| (v + 0.0).to_bits()).collect();
                levels.sort();
                levels.dedup();
                assert!(levels.len() <= 1 << bits);
            }
        }
    }
}

/// Initialises one quantizer on `x0`'s region, quantizes `x`, and runs the backward with `dy`;
/// compares everything with the CPU reference.
fn check_act(gpu: &mut Gpu, bits: u32, region: Region, len: usize, seed: u64, shift: f32) {
    // Both the CPU-adapter and the GPU variants of the kernels, on whatever adapter is present
    // (one device per test: some drivers refuse after a few dozen devices in one process).
    let native = gpu.cpu_like;
    for cpu_like in [true, false] {
        gpu.cpu_like = cpu_like;
        check_act_on(gpu, bits, region, len, seed, shift);
    }
    gpu.cpu_like = native;
}

fn check_act_on(gpu: &Gpu, bits: u32, region: Region, len: usize, seed: u64, shift: f32) {
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = rng.vec(len, 2.0).iter().map(|v| v + shift).collect();
    let dy = rng.vec(len, 1.0);
    let st = ActQuantState::new(gpu, 3);
    let partials = Tensor::zeros(gpu, &[2 * MAX_PARTIALS]);
    let (xt, dyt) = (upload1(gpu, &x), upload1(gpu, &dy));
    let xq = Tensor::zeros(gpu, &[len]);
    let dx = Tensor::zeros(gpu, &[len]);
    let site = 1;
    let lsq = 0.37;
    let init = quant::act_init(gpu, &st, site, bits, lsq, region, &xt, &partials);
    let fwd = quant::act_forward(gpu, &st, site, region, &xt, &xq);
    let bwd = quant::act_backward(gpu, &st, site, region, &xt, &dyt, &dx, &partials, 1.0);
    gpu.run(&[&init[0], &init[1], &fwd, &bwd[0], &bwd[1]]);

    let sub: Vec<f32> = (0..region.numel()).map(|i| x[region.element(i)]).collect();
    let dsub: Vec<f32> = (0..region.numel()).map(|i| dy[region.element(i)]).collect();
    let (alpha, z, qn, qp, g, signed) = quant::cpu_init(&sub, bits, lsq);
    let p = read(gpu, &st.qparams);
    let m = read(gpu, &st.qmeta);
    let tag = format!("b{bits} {region:?} cpu_like={}", gpu.cpu_like);
    assert_close(&format!("{tag} alpha, z"), &p[2..4], &[alpha, z], 1e-5, 5e-6, 1e-5);
    assert_close(&format!("{tag} qn, qp, g"), &m[4..7], &[qn, qp, g], 1e-5, 1e-8, 1e-5);
    assert_eq!(m[7] == 1.0, signed, "{tag} signedness");

    let want_q = quant::cpu_act_forward(&sub, p[2], p[3], qn, qp);
    let (want_dx, want_ga, want_gz) = quant::cpu_act_backward(&sub, &dsub, p[2], p[3], qn, qp, m[6]);
    let got_q = read(gpu, &xq);
    let got_dx = read(gpu, &dx);
    let got_q: Vec<f32> = (0..region.numel()).map(|i| got_q[region.element(i)]).collect();
    let got_dx: Vec<f32> = (0..region.numel()).map(|i| got_dx[region.element(i)]).collect();
    assert_close(&format!("{tag} forward"), &got_q, &want_q, 1e-5, 1e-6, 1e-5);
    assert_close(&format!("{tag} dx"), &got_dx, &want_dx, 1e-6, 1e-7, 1e-6);
    let qg = read(gpu, &st.qgrad);
    assert_close(&format!("{tag} dalpha, dz"), &qg[2..4], &[want_ga, want_gz], 1e-4, 1e-5, 1e-4);
    // The zero point's gradient factor: 0 freezes it, a negative factor means LSQ's g.
    for (factor, want) in [(0.0, 0.0), (-1.0, want_gz * m[6])] {
        let bwd = quant::act_backward(gpu, &st, site, region, &xt, &dyt, &dx, &partials, factor);
        gpu.run(&[&bwd[0], &bwd[1]]);
        let qg = read(gpu, &st.qgrad);
        let got = [qg[2], qg[3]];
        assert_close_floor(
            &format!("{tag} z factor {factor}"),
            &got,
            &[want_ga, want],
            1e-4,
            1e-6,
            1e-7,
            1e-4,
        );
    }
    // Elements outside the region are untouched.
    let inside: std::collections::HashSet<usize> = (0..region.numel()).map(|i| region.element(i)).collect();
    let all_q = read(gpu, &xq);
    assert!(
        (0..len).filter(|i| !inside.contains(i)).all(|i| all_q[i] == 0.0),
        "{tag}: wrote outside the region"
    );
}

#[test]
fn act_quant_whole_tensors() {
    let mut g = gpu();
    for bits in [2, 3, 4, 8] {
        for n in [1, 3, 17, 65, 5000] {
            check_act(&mut g, bits, Region::whole(n), n, bits as u64 * 100 + n as u64, 0.0);
        }
    }
}

#[test]
fn act_quant_unsigned_inputs() {
    let mut g = gpu();
    // Non-negative inputs (softmax probabilities, GELU outputs) get the unsigned range.
    for n in [3, 65, 1000] {
        check_act(&mut g, 4, Region::whole(n), n, n as u64, 2.5);
    }
}

#[test]
fn act_quant_strided_regions() {
    let mut g = gpu();
    // q, k, v of a fused [rows, 3D] matrix.
    let (rows, d) = (17, 5);
    for which in 0..3 {
        let region = Region { rows, cols: d, off: which * d, rs: 3 * d };
        check_act(&mut g, 3, region, rows * 3 * d, 9 + which as u64, 0.3);
    }
}

/// `(a, b)` pairs for the division check: random magnitudes over a wide exponent range, exact
/// quotients, zero numerators, and numerators whose quotient sits within an ULP of a rounding tie
/// of an activation quantizer (and of the weight quantizer's row extreme, (2^b - 1) / 2m).
fn division_cases(rng: &mut Rng, zr: f32, qn: f32, qp: f32) -> Vec<(f32, f32)> {
    let mut c = Vec::new();
    let mag = |rng: &mut Rng, lo: f32, hi: f32| {
        let e = rng.uniform(lo, hi).floor();
        (1.0 + rng.unit()) * e.exp2()
    };
    for _ in 0..3000 {
        let a = mag(rng, -40.0, 40.0) * if rng.unit() < 0.5 { -1.0 } else { 1.0 };
        c.push((a, mag(rng, -40.0, 40.0)));
    }
    for _ in 0..500 {
        let alpha = mag(rng, -12.0, 4.0);
        let j = qn + (rng.unit() * (qp - qn + 1.0)).floor();
        // Ties of round(q + z'), and the clamp boundaries v = QN, QP.
        for t in [j + 0.5 - zr, qn - zr, qp - zr] {
            let x = t * alpha;
            for d in [-2i32, -1, 0, 1, 2] {
                c.push((f32::from_bits((x.to_bits() as i32 + d) as u32), alpha));
            }
        }
        // The weight quantizer: s = (2^b - 1) / (2 m).
        let bits = 2 + rng.below(7) as u32;
        c.push((((1u32 << bits) - 1) as f32, 2.0 * alpha));
    }
    c.extend([(0.0, 3.0), (-0.0, 3.0), (6.0, 3.0), (1.0, 3.0), (-1.0, 1.0), (7.5, 1.0), (1.0, 0.1)]);
    c
}

#[test]
fn division_and_rounding_decisions_are_ieee() {
    // Vulkan lets a division be 2.5 ULP off; a quantizer code at a rounding tie then depends on
    // the adapter. div_exact must equal IEEE division bit for bit, and lsq_quotient must give the
    // IEEE code and in-range decision even from a quotient several ULP off (simulated here, since
    // the CPU adapter's own division is already IEEE).
    let gpu = gpu();
    let mut rng = Rng::new(2026);
    let (zr, qn, qp) = (1.0f32, -8.0f32, 7.0f32);
    let cases = division_cases(&mut rng, zr, qn, qp);
    let n = cases.len();
    let a: Vec<f32> = cases.iter().map(|c| c.0).collect();
    let b: Vec<f32> = cases.iter().map(|c| c.1).collect();
    let (at, bt) = (upload1(&gpu, &a), upload1(&gpu, &b));
    let out = Tensor::zeros(&gpu, &[4 * n]);
    let code = |q: f32| (q + zr).clamp(qn, qp).round_ties_even();
    let in_range = |q: f32| (qn..=qp).contains(&(q + zr));
    let mut ties = 0;
    for k in [3u32, 8] {
        let params = [n as u32, k, zr.to_bits(), qn.to_bits(), qp.to_bits(), 0, 0, 0];
        gpu.run(&[&gpu.dispatch(&quant::DIV_CHECK, &params, &[&at, &bt, &out], maskaq::gpu::grid1d(n, 64))]);
        let o = read(&gpu, &out);
        for (i, &(x, y)) in cases.iter().enumerate() {
            let q = x / y;
            assert_eq!(
                o[4 * i].to_bits(),
                q.to_bits(),
                "div_exact({x:e}, {y:e}) = {:e}, IEEE {q:e}",
                o[4 * i]
            );
            if y <= 0.0 || !q.is_normal() && q != 0.0 {
                continue;
            }
            for (j, what) in [(1, "adapter quotient"), (2, "quotient k ULP high"), (3, "quotient k ULP low")]
            {
                let got = o[4 * i + j];
                assert_eq!(
                    code(got),
                    code(q),
                    "{what} (k = {k}): code of {x:e} / {y:e}: {} vs IEEE {}",
                    code(got),
                    code(q)
                );
                assert_eq!(
                    in_range(got),
                    in_range(q),
                    "{what} (k = {k}): in-range decision of {x:e} / {y:e}"
                );
            }
            let v = q + zr;
            if (v - v.floor() - 0.5).abs() < 1e-5 * v.abs().max(1.0) {
                ties += 1;
            }
        }
    }
    assert!(ties > 500, "only {ties} near-tie cases: the check would not exercise the exact path");
}

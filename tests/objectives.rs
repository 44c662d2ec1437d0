//! MaskAQ's attention objectives on the GPU against f64 CPU references (values) and central
//! finite differences of those references (gradients), on ragged shapes; mask selection
//! against a sort; and (when its fixture exists) against PyTorch autograd.

mod common;

use common::{Rng, assert_close, gpu, read, upload1};
use maskaq::gpu::{Gpu, Tensor};
use maskaq::ops::objectives::{self as obj, AttnDims, EntropyScratch};

const DIMS: [AttnDims; 3] = [
    AttnDims { b: 2, h: 3, n: 17, prefix: 1, g: 4 },
    AttnDims { b: 1, h: 2, n: 11, prefix: 2, g: 3 },
    AttnDims { b: 3, h: 1, n: 5, prefix: 1, g: 2 },
];

fn tap_len(d: &AttnDims) -> usize {
    d.b * d.h * d.n * d.n
}

fn random_tap(rng: &mut Rng, d: &AttnDims) -> Vec<f32> {
    (0..tap_len(d)).map(|_| rng.uniform(-3.0, 3.0)).collect()
}

/// `sub` distinct patch rows per image, as randperm(np)[:sub].
fn random_subset(rng: &mut Rng, d: &AttnDims, sub: usize) -> Vec<usize> {
    let mut subset = Vec::new();
    for _ in 0..d.b {
        let mut idx: Vec<usize> = (0..d.np()).collect();
        for i in (1..idx.len()).rev() {
            idx.swap(i, rng.below(i + 1));
        }
        subset.extend_from_slice(&idx[..sub]);
    }
    subset
}

/// `f` with the CPU-adapter kernels, then with the GPU variants (on whatever adapter is present).
fn on_both_variants<T>(f: impl Fn(&Gpu) -> T) -> (T, T) {
    let run = |cpu_like| {
        let mut gpu = gpu();
        gpu.cpu_like = cpu_like;
        f(&gpu)
    };
    (run(true), run(false))
}

/// Runs `launch` (which adds its gradient into `da` and its partials into `partial`) and
/// returns (sum of partials, gradient).
fn gpu_value_grad(
    gpu: &Gpu,
    d: &AttnDims,
    parts: usize,
    launch: impl Fn(&Tensor, &Tensor) -> Vec<maskaq::gpu::Dispatch>,
) -> (f64, Vec<f32>) {
    let da = Tensor::zeros(gpu, &[tap_len(d)]);
    let partial = Tensor::zeros(gpu, &[parts]);
    let ds = launch(&da, &partial);
    let refs: Vec<&maskaq::gpu::Dispatch> = ds.iter().collect();
    gpu.run(&refs);
    (read(gpu, &partial).iter().map(|&v| v as f64).sum(), read(gpu, &da))
}

/// Compares `grad` with central differences of `value` at a sample of coordinates.
fn check_fd(name: &str, a: &[f32], grad: &[f32], value: impl Fn(&[f64]) -> f64, coords: &[usize]) {
    let mut x: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    let scale = grad.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12) as f64;
    for &i in coords {
        let eps = 1e-5;
        let x0 = x[i];
        x[i] = x0 + eps;
        let up = value(&x);
        x[i] = x0 - eps;
        let down = value(&x);
        x[i] = x0;
        let fd = (up - down) / (2.0 * eps);
        let err = (fd - grad[i] as f64).abs() / scale;
        assert!(
            err < 1e-3,
            "{name}: d/dA[{i}] finite difference {fd:.6e}, GPU {:.6e} (rel {err:.2e})",
            grad[i]
        );
    }
}

/// Coordinates worth probing: every patch-block element of a few rows, plus random ones.
fn coords(rng: &mut Rng, d: &AttnDims, cls_row: bool) -> Vec<usize> {
    let mut c: Vec<usize> = (0..40).map(|_| rng.below(tap_len(d))).collect();
    for _ in 0..40 {
        let (b, h) = (rng.below(d.b), rng.below(d.h));
        let r = if cls_row { 0 } else { d.prefix + rng.below(d.np()) };
        let col = d.prefix + rng.below(d.np());
        c.push(((b * d.h + h) * d.n + r) * d.n + col);
    }
    c
}

#[test]
fn ssim_heads_value_and_gradient() {
    on_both_variants(ssim_heads_value_and_gradient_on);
}

fn ssim_heads_value_and_gradient_on(gpu: &Gpu) {
    let mut rng = Rng::new(1);
    for d in DIMS {
        let a = random_tap(&mut rng, &d);
        let at = upload1(gpu, &a);
        let coef = 1.0 / (d.b * d.np() * d.h * d.h) as f32;
        let (v, g) = gpu_value_grad(gpu, &d, d.b * d.np(), |da, p| {
            vec![obj::ssim_heads(gpu, &d, coef, &at, da, p, 0)]
        });
        let want = obj::cpu_ssim_heads(&d, &a.iter().map(|&x| x as f64).collect::<Vec<_>>());
        assert!((v - want).abs() < 1e-5 * want.abs().max(1.0), "{d:?}: ssim {v} vs {want}");
        check_fd(
            &format!("ssim {d:?}"),
            &a,
            &g,
            |x| obj::cpu_ssim_heads(&d, x),
            &coords(&mut rng, &d, false),
        );
    }
}

#[test]
fn entropy_value_and_gradient() {
    on_both_variants(entropy_value_and_gradient_on);
}

fn entropy_value_and_gradient_on(gpu: &Gpu) {
    let mut rng = Rng::new(2);
    for d in DIMS {
        for sub in [d.np(), (d.np() / 2).max(1)] {
            let a = random_tap(&mut rng, &d);
            let at = upload1(gpu, &a);
            let subset = random_subset(&mut rng, &d, sub);
            let st = upload1(gpu, &subset.iter().map(|&i| i as f32).collect::<Vec<_>>());
            let scratch = EntropyScratch::new(gpu, &d, sub);
            let coef = 1.0 / d.b as f32;
            let (v, g) = gpu_value_grad(gpu, &d, d.b, |da, p| {
                obj::entropy(gpu, &d, coef, &at, &st, da, p, 0, &scratch).to_vec()
            });
            let want = obj::cpu_entropy(&d, &a.iter().map(|&x| x as f64).collect::<Vec<_>>(), &subset, sub);
            assert!((v - want).abs() < 1e-4 * want.abs().max(1.0), "{d:?} sub {sub}: entropy {v} vs {want}");
            check_fd(
                &format!("entropy {d:?} sub {sub}"),
                &a,
                &g,
                |x| obj::cpu_entropy(&d, x, &subset, sub),
                &coords(&mut rng, &d, false),
            );
        }
    }
}

#[test]
fn ssim_gpu_variant_equals_cpu_variant_beyond_one_workgroup() {
    // np = 289 > 256 keys per query, 4 heads, and rows with tied extremes (the first index
    // carries the min/max gradient in both kernels).
    let d = AttnDims { b: 2, h: 4, n: 290, prefix: 1, g: 17 };
    let mut rng = Rng::new(5);
    let mut a = random_tap(&mut rng, &d);
    for (i, v) in a.iter_mut().enumerate() {
        if i % 7 == 0 {
            *v = 3.0;
        } else if i % 11 == 0 {
            *v = -3.0;
        }
    }
    let coef = 1.0 / (d.b * d.np() * d.h * d.h) as f32;
    let ((v0, g0), (v1, g1)) = on_both_variants(|gpu| {
        let at = upload1(gpu, &a);
        gpu_value_grad(gpu, &d, d.b * d.np(), |da, p| vec![obj::ssim_heads(gpu, &d, coef, &at, da, p, 0)])
    });
    assert!((v0 - v1).abs() < 1e-5 * v0.abs().max(1.0), "ssim {v0} vs {v1}");
    assert!(g0.iter().any(|&x| x != 0.0));
    // The extreme keys take (sum g s - sum g) / range, a difference of two sums over 289 keys
    // that cancels: serial and tree summation move it by about 1e-4 of the largest gradient.
    // A wrong tie index would put that whole term on another element (an O(1) error).
    // Elementwise: that noise is absolute, 8.5e-11 on lavapipe (max |gradient| 6.4e-7), so atol
    // 2e-10 can sit only a little below the max-relative allowance (3.2e-10) here.
    assert_close("ssim gradient, GPU variant vs CPU variant", &g1, &g0, 5e-4, 2e-10, 5e-4);
}

#[test]
fn entropy_gpu_variant_equals_cpu_variant_beyond_one_workgroup() {
    // np = 289 > 256: the GPU variant's invocations take more than one column each.
    let d = AttnDims { b: 2, h: 2, n: 290, prefix: 1, g: 17 };
    let sub = 64;
    let mut rng = Rng::new(4);
    let a = random_tap(&mut rng, &d);
    let subset: Vec<f32> = random_subset(&mut rng, &d, sub).iter().map(|&i| i as f32).collect();
    let ((v0, g0), (v1, g1)) = on_both_variants(|gpu| {
        let (at, st) = (upload1(gpu, &a), upload1(gpu, &subset));
        let scratch = EntropyScratch::new(gpu, &d, sub);
        gpu_value_grad(gpu, &d, d.b, |da, p| {
            obj::entropy(gpu, &d, 0.5, &at, &st, da, p, 0, &scratch).to_vec()
        })
    });
    assert!((v0 - v1).abs() < 1e-6 * v0.abs().max(1.0), "entropy {v0} vs {v1}");
    assert!(g0.iter().any(|&x| x != 0.0));
    // Serial vs tree summation: 6.2e-11 absolute on lavapipe (max |gradient| 4.1e-5).
    assert_close("entropy gradient, GPU variant vs CPU variant", &g1, &g0, 1e-5, 2e-10, 1e-5);
}

#[test]
fn masked_alignment_value_and_gradients() {
    let gpu = gpu();
    let mut rng = Rng::new(3);
    for d in DIMS {
        let (ap, aq) = (random_tap(&mut rng, &d), random_tap(&mut rng, &d));
        let mask: Vec<f32> =
            (0..d.b * d.np()).map(|i| if i == 0 || rng.below(3) == 0 { 1.0 } else { 0.0 }).collect();
        let count = mask.iter().sum::<f32>();
        let (apt, aqt, mt, ct) =
            (upload1(&gpu, &ap), upload1(&gpu, &aq), upload1(&gpu, &mask), upload1(&gpu, &[count]));
        let daq = Tensor::zeros(&gpu, &[tap_len(&d)]);
        let (v, gp) = gpu_value_grad(&gpu, &d, d.b * d.np(), |da, p| {
            vec![obj::masked_alignment(&gpu, &d, 1.0, &apt, &aqt, da, &daq, &mt, &ct, p, 0)]
        });
        let gq = read(&gpu, &daq);
        let m64: Vec<f64> = mask.iter().map(|&x| x as f64).collect();
        let (p64, q64): (Vec<f64>, Vec<f64>) =
            (ap.iter().map(|&x| x as f64).collect(), aq.iter().map(|&x| x as f64).collect());
        let want = obj::cpu_masked_alignment(&d, &p64, &q64, &m64);
        assert!((v - want).abs() < 1e-5 * want.max(1.0), "{d:?}: alignment {v} vs {want}");
        let cs = coords(&mut rng, &d, true);
        check_fd(
            &format!("alignment dA_P {d:?}"),
            &ap,
            &gp,
            |x| obj::cpu_masked_alignment(&d, x, &q64, &m64),
            &cs,
        );
        check_fd(
            &format!("alignment dA_Q {d:?}"),
            &aq,
            &gq,
            |x| obj::cpu_masked_alignment(&d, &p64, x, &m64),
            &cs,
        );
    }
}

#[test]
fn mask_selection_topk_and_random_drop() {
    let gpu = gpu();
    let mut rng = Rng::new(4);
    let d = AttnDims { b: 3, h: 2, n: 50, prefix: 1, g: 7 };
    let np = d.np();
    let layers: Vec<Vec<f32>> = (0..3).map(|_| random_tap(&mut rng, &d)).collect();
    let cls = Tensor::zeros(&gpu, &[d.b * np]);
    let taps: Vec<Tensor> = layers.iter().map(|a| upload1(&gpu, a)).collect();
    let ds: Vec<_> =
        taps.iter().enumerate().map(|(l, t)| obj::cls_mean(&gpu, &d, 1.0 / 3.0, l == 0, t, &cls)).collect();
    gpu.run(&ds.iter().collect::<Vec<_>>());
    let mut want = vec![0f64; d.b * np];
    for a in &layers {
        let c = obj::cpu_cls_mean(&d, &a.iter().map(|&x| x as f64).collect::<Vec<_>>());
        want.iter_mut().zip(c).for_each(|(w, v)| *w += v / 3.0);
    }
    let got = read(&gpu, &cls);
    for i in 0..want.len() {
        assert!((got[i] as f64 - want[i]).abs() < 1e-5, "cls mean {i}");
    }
    let k = 24; // int(49 * 0.5)
    let keep = 17; // round(0.7 * 24)
    let hyper = upload1(&gpu, &[k as f32, keep as f32, 0.0, 0.0]);
    let topk_want = obj::cpu_topk(&got.iter().map(|&v| v as f64).collect::<Vec<_>>(), d.b, np, k);
    let (topk, mask, count) =
        (Tensor::zeros(&gpu, &[d.b * np]), Tensor::zeros(&gpu, &[d.b * np]), Tensor::zeros(&gpu, &[1]));
    let keys = Tensor::zeros(&gpu, &[d.b * np]);
    let mut kept_times = vec![0u32; d.b * np];
    let trials = 400;
    for _ in 0..trials {
        keys.write(&gpu, &(0..d.b * np).map(|_| rng.unit()).collect::<Vec<_>>());
        let ds = obj::mask_select(&gpu, &d, &cls, &hyper, &keys, &topk, &mask, &count);
        gpu.run(&ds.iter().collect::<Vec<_>>());
        let (t, m) = (read(&gpu, &topk), read(&gpu, &mask));
        assert_eq!(t.iter().map(|&v| v as f64).collect::<Vec<_>>(), topk_want);
        for b in 0..d.b {
            let kept: f32 = m[b * np..(b + 1) * np].iter().sum();
            assert_eq!(kept as usize, keep, "image {b} keeps {keep} of its top {k}");
        }
        assert!(m.iter().zip(&t).all(|(mv, tv)| *mv <= *tv), "kept patches are selected ones");
        assert_eq!(read(&gpu, &count)[0] as usize, keep * d.b);
        m.iter().enumerate().for_each(|(i, &v)| kept_times[i] += v as u32);
    }
    // Every selected patch is kept with probability keep / k (uniformly random subset).
    let p = keep as f64 / k as f64;
    for i in 0..d.b * np {
        if topk_want[i] == 1.0 {
            let freq = kept_times[i] as f64 / trials as f64;
            assert!((freq - p).abs() < 0.12, "patch {i} kept {freq:.2} of the time, expected {p:.2}");
        }
    }
}

/// Against PyTorch autograd (tools/make_fixtures.py, tests/fixtures/objectives): L = 2 blocks
/// of [2, 2, 82, 82] taps (9 x 9 patches + CLS), each term's value and gradient.
#[test]
fn objectives_match_pytorch() {
    use maskaq::model::checkpoint::read_f32_tensors;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/objectives/objectives.safetensors");
    let fx = read_f32_tensors(&path).unwrap();
    let gpu = gpu();
    let d = AttnDims { b: 2, h: 2, n: 82, prefix: 1, g: 9 };
    let (l, len) = (2usize, tap_len(&d));
    let layer = |name: &str, i: usize| upload1(&gpu, &fx[name].1[i * len..(i + 1) * len]);
    let (ap, aq): (Vec<Tensor>, Vec<Tensor>) =
        ((0..l).map(|i| layer("a_p", i)).collect(), (0..l).map(|i| layer("a_q", i)).collect());
    let parts = d.b * d.np();
    let rel = |got: &[f32], want: &[f32]| {
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max) / scale
    };
    let grads = |bufs: &[Tensor]| bufs.iter().flat_map(|t| read(&gpu, t)).collect::<Vec<f32>>();
    let sum = |t: &Tensor| read(&gpu, t).iter().map(|&v| v as f64).sum::<f64>();

    // 2.1 inter-head SSIM: mean over (L, B*np, H, H).
    let da: Vec<Tensor> = (0..l).map(|_| Tensor::zeros(&gpu, &[len])).collect();
    let partial = Tensor::zeros(&gpu, &[l * parts]);
    let coef = 1.0 / (l * d.b * d.np() * d.h * d.h) as f32;
    let ds: Vec<_> =
        (0..l).map(|i| obj::ssim_heads(&gpu, &d, coef, &ap[i], &da[i], &partial, i * parts)).collect();
    gpu.run(&ds.iter().collect::<Vec<_>>());
    let v = sum(&partial);
    assert!((v - fx["ssim.value"].1[0] as f64).abs() < 1e-5, "ssim value {v}");
    let e = rel(&grads(&da), &fx["ssim.grad_a_p"].1);
    assert!(e < 1e-4, "ssim gradient rel err {e}");

    // 2.2 entropy with the fixture's row subsets.
    let sub = 64;
    let da: Vec<Tensor> = (0..l).map(|_| Tensor::zeros(&gpu, &[len])).collect();
    let partial = Tensor::zeros(&gpu, &[l * d.b]);
    let subsets: Vec<Tensor> =
        (0..l).map(|i| upload1(&gpu, &fx["entropy.subset"].1[i * d.b * sub..(i + 1) * d.b * sub])).collect();
    let scratch = EntropyScratch::new(&gpu, &d, sub);
    let coef = 1.0 / (l * d.b) as f32;
    for i in 0..l {
        let ds = obj::entropy(&gpu, &d, coef, &ap[i], &subsets[i], &da[i], &partial, i * d.b, &scratch);
        gpu.run(&ds.iter().collect::<Vec<_>>());
    }
    let v = sum(&partial);
    assert!((v - fx["entropy.value"].1[0] as f64).abs() < 1e-5, "entropy value {v}");
    let e = rel(&grads(&da), &fx["entropy.grad_a_p"].1);
    assert!(e < 1e-4, "entropy gradient rel err {e}");

    // 2.3 mask: layer- and head-averaged CLS logits, top-k at ratio 0.3.
    let cls = Tensor::zeros(&gpu, &[parts]);
    let ds: Vec<_> = (0..l).map(|i| obj::cls_mean(&gpu, &d, 1.0 / l as f32, i == 0, &ap[i], &cls)).collect();
    gpu.run(&ds.iter().collect::<Vec<_>>());
    assert!(rel(&read(&gpu, &cls), &fx["mask.cls_mean"].1) < 1e-5, "cls mean");
    let k = ((d.np() as f32 * fx["mask.ratio"].1[0]) as usize).max(1);
    let hyper = upload1(&gpu, &[k as f32, k as f32, 0.0, 0.0]);
    let (topk, mask, count) =
        (Tensor::zeros(&gpu, &[parts]), Tensor::zeros(&gpu, &[parts]), Tensor::zeros(&gpu, &[1]));
    let keys = upload1(&gpu, &vec![0.5; parts]);
    let ds = obj::mask_select(&gpu, &d, &cls, &hyper, &keys, &topk, &mask, &count);
    gpu.run(&ds.iter().collect::<Vec<_>>());
    assert_eq!(read(&gpu, &topk), fx["mask.topk"].1, "top-k mask");

    // 2.4 masked alignment with the fixture's mask: (1/L) sum over layers.
    let m = upload1(&gpu, &fx["att.mask"].1);
    let c = upload1(&gpu, &[fx["att.mask"].1.iter().sum::<f32>()]);
    let (dp, dq): (Vec<Tensor>, Vec<Tensor>) = (
        (0..l).map(|_| Tensor::zeros(&gpu, &[len])).collect(),
        (0..l).map(|_| Tensor::zeros(&gpu, &[len])).collect(),
    );
    let partial = Tensor::zeros(&gpu, &[l * parts]);
    let ds: Vec<_> = (0..l)
        .map(|i| {
            obj::masked_alignment(
                &gpu,
                &d,
                1.0 / l as f32,
                &ap[i],
                &aq[i],
                &dp[i],
                &dq[i],
                &m,
                &c,
                &partial,
                i * parts,
            )
        })
        .collect();
    gpu.run(&ds.iter().collect::<Vec<_>>());
    let v = sum(&partial);
    assert!((v - fx["att.value"].1[0] as f64).abs() < 1e-5, "alignment value {v}");
    assert!(rel(&grads(&dp), &fx["att.grad_a_p"].1) < 1e-4, "alignment dA_P");
    assert!(rel(&grads(&dq), &fx["att.grad_a_q"].1) < 1e-4, "alignment dA_Q");
}

//! PSAQ-ViT's KDE patch-similarity entropy: value against an f64 reference and the gradient
//! against finite differences (with the density grid held fixed, as the method does).

mod common;

use common::{Rng, gpu, read, upload1};
use maskaq::gpu::Tensor;
use maskaq::ops::distill::HeadDims;
use maskaq::ops::psaq::{self, PsaqScratch};

#[test]
fn kde_entropy_value_and_gradient() {
    let gpu = gpu();
    let mut rng = Rng::new(8);
    for d in [HeadDims { b: 2, h: 3, n: 10, prefix: 1, d: 5 }, HeadDims { b: 1, h: 2, n: 7, prefix: 2, d: 4 }]
    {
        let len = d.b * d.h * d.n * d.d;
        let o = rng.vec(len, 1.0);
        let (ot, dot) = (upload1(&gpu, &o), Tensor::zeros(&gpu, &[len]));
        let partial = Tensor::zeros(&gpu, &[d.b]);
        let s = PsaqScratch::new(&gpu, &d);
        let coef = 1.0 / d.b as f32;
        let ds = psaq::entropy(&gpu, &d, coef, &ot, &dot, &partial, 0, &s);
        gpu.run(&ds.iter().collect::<Vec<_>>());
        let v: f64 = read(&gpu, &partial).iter().map(|&x| x as f64).sum();
        let x: Vec<f64> = o.iter().map(|&v| v as f64).collect();
        let want = psaq::cpu_entropy(&d, &x, None);
        assert!((v - want).abs() < 1e-3 * want.abs().max(1.0), "{d:?}: entropy {v} vs {want}");
        // The grid at the base point, held fixed for the finite differences.
        let grid = psaq::cpu_range(&d, &x);
        let g = read(&gpu, &dot);
        let gmax = g.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        let mut xm = x.clone();
        for _ in 0..30 {
            let i = {
                let (b, h, t, c) =
                    (rng.below(d.b), rng.below(d.h), d.prefix + rng.below(d.np()), rng.below(d.d));
                ((b * d.h + h) * d.n + t) * d.d + c
            };
            let eps = 1e-6;
            xm[i] = x[i] + eps;
            let up = psaq::cpu_entropy(&d, &xm, Some(grid));
            xm[i] = x[i] - eps;
            let down = psaq::cpu_entropy(&d, &xm, Some(grid));
            xm[i] = x[i];
            let fd = (up - down) / (2.0 * eps);
            assert!(
                (fd - g[i] as f64).abs() < 2e-3 * gmax,
                "{d:?}: dO[{i}] fd {fd:.6e} gpu {:.6e} (max {gmax:.3e})",
                g[i]
            );
        }
    }
}

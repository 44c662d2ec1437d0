//! Sample synthesis: the gradient of the whole synthesis objective with respect to the images
//! against finite differences, and a short synthesis run on a tiny model.

mod common;

use std::path::Path;

use maskaq::maskaq::synth::{Method, SynthConfig, Synthesizer};
use maskaq::model::Model;
use maskaq::rng::Rng;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// All five MaskAQ terms with an unquantized Q (a quantized Q's straight-through gradient is
/// by design not the derivative of its piecewise-constant forward, so finite differences can
/// only check the chain with Q in full precision).
#[test]
fn synthesis_objective_gradient_matches_finite_differences() {
    let gpu = common::gpu();
    let p = Model::load(&gpu, &fixture("tiny_gray_f16"), None).unwrap();
    let q = Model::load(&gpu, &fixture("tiny_gray_f16"), None).unwrap();
    let mut cfg = SynthConfig::new(Method::Maskaq);
    cfg.batch = 2;
    cfg.iters = 10;
    cfg.weights.tv = 0.01; // large enough to matter in the check
    let mut s = Synthesizer::new(&gpu, &p, Some(&q), cfg).unwrap();
    let mut rng = Rng::new(5);
    let n = 2 * 28 * 28;
    let images: Vec<f32> = (0..n).map(|_| (rng.normal() * 0.5) as f32).collect();
    let (j0, grad) = s.objective_and_grad(&mut rng, 3, &images, &[1, 7]).unwrap();
    assert!(j0.is_finite());
    let gmax = grad.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut checked = 0;
    let mut bad = Vec::new();
    let mut x = images.clone();
    // The largest-gradient pixels and some random ones.
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| grad[b].abs().total_cmp(&grad[a].abs()));
    let mut coords: Vec<usize> = idx[..12].to_vec();
    coords.extend((0..12).map(|_| rng.below(n)));
    for &i in &coords {
        let eps = 2e-3;
        x[i] = images[i] + eps;
        let up = s.objective_again(&x).unwrap();
        x[i] = images[i] - eps;
        let down = s.objective_again(&x).unwrap();
        x[i] = images[i];
        let fd = (up - down) / (2.0 * eps);
        let err = (fd - grad[i]).abs() / gmax;
        checked += 1;
        eprintln!("pixel {i}: fd {fd:.6} grad {:.6}", grad[i]);
        if err > 0.02 {
            bad.push(format!("pixel {i}: finite difference {fd:.5}, gradient {:.5}", grad[i]));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {checked} coordinates disagree (max |grad| {gmax}):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// `--synth-init black` starts at pixel value 0 with the same draws as the authors' N(0, 1)
/// start, so the labels (and every later draw) are the same.
#[test]
fn black_init_starts_at_the_lower_bound_with_the_same_draws() {
    use maskaq::maskaq::synth::SynthInit;
    let gpu = common::gpu();
    let p = Model::load(&gpu, &fixture("tiny_gray_f16"), None).unwrap();
    let batch = |init| {
        let mut cfg = SynthConfig::new(Method::Noise);
        cfg.batch = 3;
        cfg.init = init;
        let mut s = Synthesizer::new(&gpu, &p, None, cfg).unwrap();
        s.run_batch(&mut Rng::new(9), |_| {}).unwrap()
    };
    let (randn, black) = (batch(SynthInit::Randn), batch(SynthInit::Black));
    assert_eq!(randn.labels, black.labels);
    let lo = -p.cfg.preprocess.mean[0] / p.cfg.preprocess.std[0];
    for (z, b) in randn.images.iter().zip(&black.images) {
        assert!((b - (lo + 0.01 * z.abs())).abs() < 1e-6, "{b} from {z}");
    }
}

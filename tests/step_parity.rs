//! One synthesis iteration and one Q-training step of maskaq against a PyTorch transcription of
//! the spec (tools/make_step_fixture.py, tests/fixtures/step_tiny_vit_w4a4; docs in
//! tests/fixtures/README.md), on tiny_vit at W4A4 with every random draw taken from the fixture:
//! the loss terms, the image gradient through the augmentation's adjoint and TV, the pixels after
//! AdamW and the clamp; the augmented batch, KD and head-distillation values, and Q's weights,
//! alpha, z and momentum buffers after Nesterov SGD. Both kernel families run (`cpu_like` true and
//! false, as tests/parity.rs does).
//!
//! Rounding decisions: Q's weights are the fixture's, and the weight quantizer takes its codes
//! from IEEE quotients (shaders/exact_div.wgsl), so weight codes are PyTorch's exactly. The
//! generator asserts that no activation code lies within 1e-5 of a rounding boundary or a clamp
//! bound and that every top-k has a clear gap, so a different f32 operation order cannot flip a
//! decision here.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use maskaq::gpu::{Gpu, Tensor};
use maskaq::maskaq::qtrain::{QTrainConfig, QTrainer};
use maskaq::maskaq::synth::{IterDraws, Method, SynthConfig, Synthesizer};
use maskaq::model::Model;
use maskaq::model::checkpoint::read_f32_tensors;
use maskaq::ops::augment::{self, AugParams, ColorJitter};
use maskaq::quant::{Bits, SiteState};
use maskaq::rng::Rng;

type Fixture = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load_fixture() -> Fixture {
    read_f32_tensors(&fixtures().join("step_tiny_vit_w4a4/fixture.safetensors")).unwrap()
}

fn t<'f>(fx: &'f Fixture, name: &str) -> &'f [f32] {
    &fx.get(name).unwrap_or_else(|| panic!("fixture has no tensor {name}")).1
}

fn scalar(fx: &Fixture, name: &str) -> f32 {
    t(fx, name)[0]
}

/// Tolerances. Values: max-relative 1e-4; elementwise rtol 1e-4 with atol 1e-5 of the tensor's
/// largest |value|: an element far below the tensor's scale comes out of f32 sums whose rounding
/// is set by the scale (a loss term summed over every patch, an updated weight next to its
/// neighbours), so 1e-4 of its own size would ask for more than f32 gives, while 1e-5 of the scale
/// is still 10x below the max-relative bound. Gradients (and optimiser updates, which are scaled
/// gradients): max-relative 1e-3, elementwise rtol 1e-3 with atol 1e-4 of the scale, for the same
/// reason one decade up (a gradient element is a sum of chain-rule products over many elements).
struct Check {
    tag: String,
    failures: Vec<String>,
}

impl Check {
    fn compare(&mut self, name: &str, got: &[f32], want: &[f32], tol: f64, atol_frac: f64, rtol: f64) {
        let atol = atol_frac * common::max_abs(want).max(1e-30);
        let (e, _) = common::rel_err(got, want);
        eprintln!("  [{}] {name:<48} rel err {e:.2e} (tol {tol:.0e})", self.tag);
        if let Err(msg) = common::compare(name, got, want, tol, 0.0, (atol, rtol)) {
            self.failures.push(msg);
        }
    }
    fn value(&mut self, name: &str, got: &[f32], want: &[f32]) {
        self.compare(name, got, want, 1e-4, 1e-5, 1e-4);
    }
    fn grad(&mut self, name: &str, got: &[f32], want: &[f32]) {
        self.compare(name, got, want, 1e-3, 1e-4, 1e-3);
    }
    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "[{}] differs from PyTorch:\n{}",
            self.tag,
            self.failures.join("\n")
        );
    }
}

/// Q: tiny_vit at W4A4 with the fixture's weights and quantizer state.
fn load_q(gpu: &Gpu, fx: &Fixture) -> Model {
    let mut q = Model::load(gpu, &fixtures().join("tiny_vit"), None).unwrap();
    q.quantize(gpu, Bits { w: 4, a: 4 });
    for p in &q.params {
        p.value.write(gpu, t(fx, &format!("q.{}", p.name)));
    }
    let quant = q.quant.as_ref().unwrap();
    let a = quant.bits.a as i32;
    let sites: Vec<SiteState> = quant
        .sites
        .iter()
        .map(|name| {
            let signed = scalar(fx, &format!("q.{name}.signed")) == 1.0;
            let (qn, qp) = if signed { (-(1 << (a - 1)), (1 << (a - 1)) - 1) } else { (0, (1 << a) - 1) };
            SiteState {
                name: name.clone(),
                alpha: scalar(fx, &format!("q.{name}.alpha")),
                zero_point: scalar(fx, &format!("q.{name}.zero_point")),
                qn: qn as f32,
                qp: qp as f32,
                g: scalar(fx, &format!("q.{name}.g")),
                signed,
            }
        })
        .collect();
    quant.write(gpu, &sites).unwrap();
    q
}

fn each_kernel_family(run: impl Fn(&Gpu, &str)) {
    let mut gpu = common::gpu();
    let found = gpu.cpu_like;
    for cpu_like in [found, !found] {
        gpu.cpu_like = cpu_like;
        run(&gpu, &format!("cpu_like={cpu_like}"));
    }
}

fn synthesis_on(gpu: &Gpu, tag: &str) {
    let fx = load_fixture();
    let p = Model::load(gpu, &fixtures().join("tiny_vit"), None).unwrap();
    let q = load_q(gpu, &fx);
    let b = t(&fx, "synth.labels").len();
    let i = scalar(&fx, "synth.iter") as usize;
    let mut cfg = SynthConfig::new(Method::Maskaq);
    cfg.batch = b;
    cfg.iters = scalar(&fx, "synth.iters") as usize;
    cfg.entropy_rows = scalar(&fx, "synth.entropy_rows_n") as usize;
    let mut s = Synthesizer::new(gpu, &p, Some(&q), cfg).unwrap();

    // The schedule is maskaq's own: its draw for iteration i must give the fixture's learning
    // rate, mask size and AdamW step; the random parts are then replaced by the fixture's draws.
    let mine = s.draw_iteration(&mut Rng::new(1), i);
    let lr = scalar(&fx, "synth.lr") as f64;
    assert!((mine.lr - lr).abs() <= 1e-6 * lr, "learning rate at iteration {i}: {} vs {lr}", mine.lr);
    assert_eq!(mine.mask_k, scalar(&fx, "synth.mask_k") as usize, "mask size k");
    assert_eq!(mine.mask_keep, scalar(&fx, "synth.mask_keep") as usize, "patches kept after the drop");
    assert_eq!(mine.adam_step, i as i32 + 1);
    let shift = t(&fx, "synth.shift");
    let f64s = |name: &str| t(&fx, name).iter().map(|&v| v as f64).collect::<Vec<_>>();
    let rows = t(&fx, "synth.entropy_rows");
    let per_block = rows.len() / p.cfg.vit().unwrap().depth;
    let draws = IterDraws {
        shift: (shift[0] as i32, shift[1] as i32),
        noise: f64s("synth.noise"),
        color_m: f64s("synth.color_m"),
        color_s: f64s("synth.color_s"),
        entropy_rows: rows.chunks(per_block).map(|c| c.iter().map(|&v| v as usize).collect()).collect(),
        mask_keys: t(&fx, "synth.mask_keys").to_vec(),
        ..mine
    };
    s.set_adam_moments(t(&fx, "synth.adam_m"), t(&fx, "synth.adam_v"));
    let images = t(&fx, "synth.images");
    let labels: Vec<usize> = t(&fx, "synth.labels").iter().map(|&v| v as usize).collect();
    let it = s.iterate_with(&draws, images, &labels).unwrap();

    let mut c = Check { tag: format!("synthesis {tag}"), failures: Vec::new() };
    let terms = &it.terms;
    for (name, got) in [
        ("ssim", terms.ssim),
        ("entropy", terms.entropy),
        ("alignment", terms.alignment),
        ("ce", terms.ce),
        ("tv", terms.tv),
        ("total", Some(terms.total)),
    ] {
        let got = got.unwrap_or_else(|| panic!("maskaq did not report the {name} term"));
        c.value(name, &[got], t(&fx, &format!("synth.{name}")));
    }
    c.grad("d objective / d pixels", &it.grad, t(&fx, "synth.grad_images"));
    let after = t(&fx, "synth.images_after");
    c.value("pixels after AdamW + clamp", &it.images, after);
    // The update itself (about 1e-2 of the pixels), so that a wrong step cannot hide in the pixels.
    let delta = |x: &[f32]| x.iter().zip(images).map(|(a, b)| a - b).collect::<Vec<_>>();
    c.grad("AdamW + clamp update", &delta(&it.images), &delta(after));
    c.finish();
}

fn qstep_on(gpu: &Gpu, tag: &str) {
    let fx = load_fixture();
    let p = Model::load(gpu, &fixtures().join("tiny_vit"), None).unwrap();
    let q = load_q(gpu, &fx);
    let images = t(&fx, "qstep.images");
    let shape = [2, 3, 32, 32];
    let b = shape[0];
    let cfg = QTrainConfig {
        batch: b,
        lr: scalar(&fx, "qstep.lr"),
        momentum: scalar(&fx, "qstep.momentum"),
        kd_temperature: scalar(&fx, "qstep.kd_temperature"),
        hd_coef: scalar(&fx, "qstep.hd_coef"),
        ..Default::default()
    };
    let (lr, mu) = (cfg.lr, cfg.momentum);
    assert_eq!(mu, 0.9, "the spec's momentum");
    let mut tr = QTrainer::new(gpu, &p, &q, cfg).unwrap();
    let quant = q.quant.as_ref().unwrap();
    // Momentum buffers of earlier steps: one per parameter, then the quantizers' (alpha, z) pairs.
    let qpairs = |prefix: &str| -> Vec<f32> {
        quant
            .sites
            .iter()
            .flat_map(|s| {
                [scalar(&fx, &format!("{prefix}{s}.alpha")), scalar(&fx, &format!("{prefix}{s}.zero_point"))]
            })
            .collect()
    };
    let mut mom: Vec<Vec<f32>> =
        q.params.iter().map(|p| t(&fx, &format!("qstep.mom.{}", p.name)).to_vec()).collect();
    mom.push(qpairs("qstep.mom."));
    // One update already made: the step takes Nesterov's buf = mu buf + g branch.
    tr.set_optimizer_state(&mom, 1).unwrap();

    let crop = t(&fx, "qstep.crop");
    let color = t(&fx, "qstep.color");
    let order = t(&fx, "qstep.color_order");
    assert_eq!(scalar(&fx, "qstep.jitter"), 1.0);
    let aug = AugParams {
        crop: [0, 1, 2, 3].map(|k| crop[k] as usize),
        flip: scalar(&fx, "qstep.flip") != 0.0,
        color: Some(ColorJitter {
            brightness: color[0],
            contrast: color[1],
            saturation: color[2],
            hue: color[3],
            order: [0, 1, 2, 3].map(|k| order[k] as u8),
        }),
        grayscale: scalar(&fx, "qstep.grayscale") != 0.0,
        blur_radius: scalar(&fx, "qstep.blur_radius") as usize,
        blur_sigma: scalar(&fx, "qstep.blur_sigma"),
    };
    let before_params = q.read_params(gpu).unwrap();
    let before_q = qpairs("q.");
    tr.step_with(images, Some(&aug), lr, true);
    let losses = tr.read_losses().unwrap();

    let mut c = Check { tag: format!("Q step {tag}"), failures: Vec::new() };
    // The augmented batch, from the trainer's own augmentation launches on the same parameters.
    let n = images.len();
    let (src, tmp, dst) =
        (Tensor::from_slice(gpu, images, &[n]), Tensor::zeros(gpu, &[n]), Tensor::zeros(gpu, &[n]));
    let stats = Tensor::zeros(gpu, &[b]);
    let pre = &p.cfg.preprocess;
    let dt = Tensor::from_slice(gpu, &aug.encode(&pre.mean, &pre.std), &[augment::DRAWS]);
    let ds = augment::batch_augment(gpu, shape, &src, &tmp, &dst, &stats, &dt);
    gpu.run(&ds.iter().collect::<Vec<_>>());
    c.value("augmented batch", &dst.read(gpu).unwrap(), t(&fx, "qstep.augmented"));
    c.value("kd", &[losses.kd], t(&fx, "qstep.kd"));
    c.value("hd (unweighted)", &[losses.hd], t(&fx, "qstep.hd"));

    let (mom_after, _) = tr.optimizer_state().unwrap();
    let sub = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<_>>();
    for (k, (name, _, after)) in q.read_params(gpu).unwrap().iter().enumerate() {
        let want = t(&fx, &format!("qstep.after.{name}"));
        let before = &before_params[k].2;
        c.value(&format!("{name} after"), after, want);
        c.grad(&format!("{name} update"), &sub(after, before), &sub(want, before));
        c.grad(&format!("{name} momentum"), &mom_after[k], t(&fx, &format!("qstep.mom_after.{name}")));
    }
    let sites = quant.read(gpu).unwrap();
    let qafter: Vec<f32> = sites.iter().flat_map(|s| [s.alpha, s.zero_point]).collect();
    let qwant = qpairs("qstep.after.");
    let qmom_want = qpairs("qstep.mom_after.");
    let qmom = mom_after.last().unwrap();
    // alpha and z have different scales (z is in integer units): one comparison each.
    for (k, what) in [(0, "alpha"), (1, "zero_point")] {
        let col = |v: &[f32]| v.iter().skip(k).step_by(2).copied().collect::<Vec<_>>();
        c.value(&format!("every {what} after"), &col(&qafter), &col(&qwant));
        c.grad(
            &format!("every {what} update"),
            &sub(&col(&qafter), &col(&before_q)),
            &sub(&col(&qwant), &col(&before_q)),
        );
        c.grad(&format!("every {what} momentum"), &col(qmom), &col(&qmom_want));
    }
    c.finish();
}

#[test]
fn one_synthesis_iteration_matches_pytorch() {
    each_kernel_family(synthesis_on);
}

#[test]
fn one_q_training_step_matches_pytorch() {
    each_kernel_family(qstep_on);
}

//! Q training (KD + mask-weighted head distillation, Nesterov SGD on every parameter of Q and
//! its quantizers): a few epochs on fixed images lower the distillation losses; frozen steps
//! leave Q unchanged.

mod common;

use std::path::Path;

use maskaq::maskaq::qtrain::{QTrainConfig, QTrainer, TrainParams, epoch_lr};
use maskaq::model::Model;
use maskaq::quant::Bits;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn distillation_losses_fall_and_frozen_steps_change_nothing() {
    let gpu = common::gpu();
    let p = Model::load(&gpu, &fixture("tiny_gray_f16"), None).unwrap();
    let mut q = Model::load(&gpu, &fixture("tiny_gray_f16"), None).unwrap();
    q.quantize(&gpu, Bits { w: 3, a: 3 });
    let cfg = QTrainConfig { batch: 8, lr: 0.02, ..Default::default() };
    let mut t = QTrainer::new(&gpu, &p, &q, cfg).unwrap();
    let mut rng = common::Rng::new(3);
    let per = 28 * 28;
    let images: Vec<Vec<f32>> =
        (0..4).map(|_| (0..8 * per).map(|_| rng.uniform(-1.0, 2.0)).collect()).collect();

    // Frozen epoch: the first step initialises the quantizers, nothing is updated.
    let before = q.read_params(&gpu).unwrap();
    let qp_before = q.quant.as_ref().unwrap().state.qparams.read(&gpu).unwrap();
    for x in &images {
        t.step(x, 0.02, false);
    }
    let first = t.read_losses().unwrap();
    assert_eq!(
        q.read_params(&gpu).unwrap().iter().map(|p| &p.2).collect::<Vec<_>>(),
        before.iter().map(|p| &p.2).collect::<Vec<_>>()
    );
    assert_ne!(q.quant.as_ref().unwrap().state.qparams.read(&gpu).unwrap(), qp_before, "LSQ initialised");
    let mut last = first.clone();
    for epoch in 0..12 {
        let lr = epoch_lr(0.02, epoch, 12);
        for x in &images {
            t.step(x, lr, true);
        }
        last = t.read_losses().unwrap();
    }
    eprintln!("first {first:?}, last {last:?}");
    assert!(first.kd > 0.0 && first.hd > 0.0);
    assert!(last.kd < 0.7 * first.kd, "KD did not fall: {first:?} -> {last:?}");
    assert!(last.hd < first.hd, "head distillation did not fall: {first:?} -> {last:?}");
}

#[test]
fn cosine_schedule_steps_at_epoch_start() {
    assert!((epoch_lr(1.0, 0, 200) - 0.99994).abs() < 1e-4, "epoch 0 already uses step 1");
    assert!((epoch_lr(1.0, 199, 200) - 0.01).abs() < 1e-6);
}

/// `--train-params quantizers` changes only the activation quantizers, `weights` only the
/// weights, and either still lowers the distillation loss.
#[test]
fn train_params_select_what_changes() {
    let gpu = common::gpu();
    let p = Model::load(&gpu, &fixture("tiny_gray_f16"), None).unwrap();
    let mut rng = common::Rng::new(5);
    let per = 28 * 28;
    let images: Vec<Vec<f32>> =
        (0..2).map(|_| (0..8 * per).map(|_| rng.uniform(-1.0, 2.0)).collect()).collect();
    for (which, weights_move, quant_move) in
        [(TrainParams::Quantizers, false, true), (TrainParams::Weights, true, false)]
    {
        let mut q = Model::load(&gpu, &fixture("tiny_gray_f16"), None).unwrap();
        q.quantize(&gpu, Bits { w: 3, a: 3 });
        let cfg = QTrainConfig { batch: 8, lr: 0.02, train_params: which, ..Default::default() };
        let mut t = QTrainer::new(&gpu, &p, &q, cfg).unwrap();
        t.step(&images[0], 0.02, false); // initialises the quantizers
        let first = t.read_losses().unwrap();
        let w0 = q.read_params(&gpu).unwrap();
        let q0 = q.quant.as_ref().unwrap().state.qparams.read(&gpu).unwrap();
        for _ in 0..6 {
            for x in &images {
                t.step(x, 0.02, true);
            }
        }
        let last = t.read_losses().unwrap();
        let w1 = q.read_params(&gpu).unwrap();
        let q1 = q.quant.as_ref().unwrap().state.qparams.read(&gpu).unwrap();
        let weights_changed = w0.iter().zip(&w1).any(|(a, b)| a.2 != b.2);
        assert_eq!(weights_changed, weights_move, "{which:?}: weights changed = {weights_changed}");
        assert_eq!(q0 != q1, quant_move, "{which:?}: quantizers changed = {}", q0 != q1);
        assert!(
            last.kd + last.hd < first.kd + first.hd,
            "{which:?}: loss did not fall: {first:?} -> {last:?}"
        );
    }
}

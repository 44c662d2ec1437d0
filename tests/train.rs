//! `maskaq train` lowers the loss: a few epochs of a tiny ViT on a small, learnable synthetic
//! IDX dataset (the class is the image's brightness level).

mod common;

use std::path::Path;

use maskaq::data::idx::{write_images, write_labels};
use maskaq::train::{TrainArgs, lr_at, train};

fn make_dataset(dir: &Path, n: usize) -> std::path::PathBuf {
    let mut rng = common::Rng::new(1);
    let mut pixels = vec![0u8; n * 28 * 28];
    let mut labels = vec![0u8; n];
    for i in 0..n {
        let class = rng.below(10);
        labels[i] = class as u8;
        for y in 0..28 {
            for x in 0..28 {
                let v = 15.0 + 24.0 * class as f32 + rng.uniform(-10.0, 10.0);
                pixels[i * 784 + y * 28 + x] = v.clamp(0.0, 255.0) as u8;
            }
        }
    }
    let images = dir.join("train-images-idx3-ubyte.gz");
    write_images(&images, n, 28, 28, &pixels, true).unwrap();
    write_labels(&dir.join("train-labels-idx1-ubyte.gz"), &labels, true).unwrap();
    images
}

#[test]
fn a_few_epochs_lower_the_loss() {
    let gpu = common::gpu();
    let dir = tempfile::tempdir().unwrap();
    let data = make_dataset(dir.path(), 512);
    let cfg = dir.path().join("config.json");
    std::fs::write(
        &cfg,
        r#"{"architecture": "vit_tiny_patch16_224", "num_classes": 10,
            "model_args": {"img_size": 28, "patch_size": 7, "in_chans": 1, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0},
            "pretrained_cfg": {"input_size": [1, 28, 28], "mean": [0.3], "std": [0.3], "crop_pct": 1.0, "interpolation": "bicubic"}}"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let args = TrainArgs {
        arch: Some(cfg.display().to_string()),
        model: None,
        data: data.clone(),
        epochs: 6,
        batch: 32,
        lr: 3e-3,
        weight_decay: 0.05,
        warmup_epochs: 1,
        seed: 0,
        out: out.clone(),
        eval_data: Some(data),
        limit: None,
        shift: 1,
        flip: false,
        progress: false,
    };
    let logs = train(&gpu, &args).unwrap();
    let first = logs.first().unwrap().train_loss;
    let last = logs.last().unwrap().train_loss;
    eprintln!("train losses: {:?}", logs.iter().map(|l| l.train_loss).collect::<Vec<_>>());
    assert!(last < 0.7 * first, "loss did not fall: {first} -> {last}");
    assert!(logs.last().unwrap().eval_top1.unwrap() > 30.0, "{:?}", logs.last());
    // A checkpoint that loads as a timm folder.
    assert!(
        out.join("config.json").exists()
            && out.join("model.safetensors").exists()
            && out.join("train_log.json").exists()
    );
    maskaq::model::Model::load(&gpu, &out, None).unwrap();
}

#[test]
fn learning_rate_schedule() {
    assert_eq!(lr_at(1.0, 0, 10, 100), 0.1);
    assert_eq!(lr_at(1.0, 9, 10, 100), 1.0);
    assert!((lr_at(1.0, 10, 10, 100) - 1.0).abs() < 1e-6);
    assert!(lr_at(1.0, 99, 10, 100) < 1e-3);
    assert!((lr_at(1.0, 55, 10, 100) - 0.5).abs() < 1e-6);
}

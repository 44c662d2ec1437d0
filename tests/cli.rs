//! The command line on good and bad input: every bad checkpoint or image gives a one-line error
//! naming the problem and a non-zero exit, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn maskaq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_maskaq")).args(args).output().expect("run maskaq")
}

/// Runs maskaq expecting failure with a single-line error containing every `needle`.
fn expect_error(args: &[&str], needles: &[&str]) {
    let out = maskaq(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "maskaq {args:?} should fail; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "maskaq {args:?} panicked: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got: {stderr}");
    assert!(lines[0].starts_with("maskaq: error:"), "unexpected error format: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "error for {args:?} should mention `{n}`: {stderr}");
    }
}

/// tiny_vit's tensors, modified by `edit`, written as a bare safetensors file.
fn write_modified(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
) -> PathBuf {
    let bytes = std::fs::read(fixtures().join("tiny_vit/model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    let out = safetensors::serialize(views, None).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, out).unwrap();
    path
}

fn img() -> String {
    fixtures().join("preprocess/img0.png").display().to_string()
}

fn cfg() -> String {
    fixtures().join("tiny_vit/config.json").display().to_string()
}

#[test]
fn predict_works_on_a_folder_and_on_a_bare_file() {
    let folder = fixtures().join("tiny_vit");
    let out = maskaq(&["predict", "--model", folder.to_str().unwrap(), "--json", "--top", "3", &img()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["top"].as_array().unwrap().len(), 3);
    assert_eq!(v[0]["logits"].as_array().unwrap().len(), 10);
    let p: f64 = v[0]["top"].as_array().unwrap().iter().map(|t| t["prob"].as_f64().unwrap()).sum();
    assert!(p > 0.0 && p <= 1.0 + 1e-6);
    let file = folder.join("model.safetensors");
    let out2 = maskaq(&[
        "predict",
        "--model",
        file.to_str().unwrap(),
        "--arch",
        &cfg(),
        "--json",
        "--top",
        "3",
        &img(),
    ]);
    assert!(out2.status.success(), "{}", String::from_utf8_lossy(&out2.stderr));
    assert_eq!(out.stdout, out2.stdout, "folder and bare file must predict the same");
}

#[test]
fn truncated_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixtures().join("tiny_vit/model.safetensors")).unwrap();
    let path = dir.path().join("truncated.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    expect_error(
        &["predict", "--model", path.to_str().unwrap(), "--arch", &cfg(), &img()],
        &["truncated.safetensors", "not a valid safetensors file"],
    );
}

#[test]
fn garbage_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.safetensors");
    let mut bytes = 40u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{this is not json at all, not even close}");
    std::fs::write(&path, bytes).unwrap();
    expect_error(
        &["predict", "--model", path.to_str().unwrap(), "--arch", &cfg(), &img()],
        &["garbage.safetensors", "not a valid safetensors file"],
    );
}

#[test]
fn wrong_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_modified(dir.path(), "int.safetensors", |t| {
        let e = t.iter_mut().find(|e| e.0 == "head.bias").unwrap();
        e.1 = Dtype::I32;
    });
    expect_error(
        &["predict", "--model", path.to_str().unwrap(), "--arch", &cfg(), &img()],
        &["head.bias", "I32", "F32, F16 or BF16"],
    );
}

#[test]
fn missing_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path =
        write_modified(dir.path(), "missing.safetensors", |t| t.retain(|e| e.0 != "blocks.1.mlp.fc2.weight"));
    expect_error(
        &["predict", "--model", path.to_str().unwrap(), "--arch", &cfg(), &img()],
        &["missing tensor `blocks.1.mlp.fc2.weight`", "[32, 128]"],
    );
}

#[test]
fn unexpected_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_modified(dir.path(), "extra.safetensors", |t| {
        t.push(("blocks.7.attn.qkv.weight".into(), Dtype::F32, vec![1], vec![0; 4]));
    });
    expect_error(
        &["predict", "--model", path.to_str().unwrap(), "--arch", &cfg(), &img()],
        &["unexpected tensor `blocks.7.attn.qkv.weight`"],
    );
}

#[test]
fn wrong_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_modified(dir.path(), "shape.safetensors", |t| {
        let e = t.iter_mut().find(|e| e.0 == "pos_embed").unwrap();
        e.2 = vec![1, e.2[2], e.2[1]];
    });
    expect_error(
        &["predict", "--model", path.to_str().unwrap(), "--arch", &cfg(), &img()],
        &["pos_embed", "[1, 32, 17]", "expected [1, 17, 32]"],
    );
}

#[test]
fn unknown_architecture() {
    let file = fixtures().join("tiny_vit/model.safetensors");
    expect_error(
        &["predict", "--model", file.to_str().unwrap(), "--arch", "resnet50", &img()],
        &["unknown architecture `resnet50`", "deit_tiny_patch16_224"],
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&file, dir.path().join("model.safetensors")).unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"architecture": "convnext_tiny", "num_classes": 10}"#)
        .unwrap();
    expect_error(
        &["predict", "--model", dir.path().to_str().unwrap(), &img()],
        &["config.json", "unknown architecture `convnext_tiny`"],
    );
}

#[test]
fn pth_checkpoint_is_refused_with_conversion_help() {
    let dir = tempfile::tempdir().unwrap();
    // A PyTorch .pth is a zip archive; the magic bytes are enough to recognise it.
    let path = dir.path().join("deit_tiny_patch16_224-a1311bcf.pth");
    std::fs::write(&path, b"PK\x03\x04 rest of a zip archive").unwrap();
    expect_error(
        &["predict", "--model", path.to_str().unwrap(), "--arch", "deit_tiny_patch16_224", &img()],
        &["PyTorch pickle checkpoint", "safetensors", "save_file"],
    );
    expect_error(&["predict", "--model", path.to_str().unwrap(), &img()], &["PyTorch pickle checkpoint"]);
}

#[test]
fn image_that_is_not_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("photo.jpg");
    std::fs::write(&bad, b"definitely not a jpeg").unwrap();
    let folder = fixtures().join("tiny_vit");
    expect_error(
        &["predict", "--model", folder.to_str().unwrap(), bad.to_str().unwrap()],
        &["photo.jpg", "not a readable image"],
    );
    expect_error(
        &["predict", "--model", folder.to_str().unwrap(), "/no/such/image.png"],
        &["/no/such/image.png"],
    );
}

#[test]
fn bad_flags() {
    expect_error(&["--backend", "directx9", "devices"], &["--backend", "directx9"]);
    expect_error(
        &["--adapter", "no-such-gpu-xyz", "bench", "--arch", "deit_tiny_patch16_224"],
        &["--adapter", "no-such-gpu-xyz"],
    );
    expect_error(&["bench", "--arch", "deit_tiny_patch16_224", "--batch", "0"], &["--batch"]);
}

#[test]
fn devices_lists_an_adapter() {
    let out = maskaq(&["devices", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v.as_array().unwrap();
    assert!(!list.is_empty(), "no adapter: install mesa-vulkan-drivers");
    assert!(list.iter().any(|a| a["default_choice"] == true));
}

#[test]
fn bench_runs_and_reports() {
    let folder = fixtures().join("tiny_deit_distilled");
    let out =
        maskaq(&["bench", "--model", folder.to_str().unwrap(), "--batch", "3", "--iters", "1", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["forward_images_per_s", "train_images_per_s", "forward_gflops"] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}");
    }
    assert!(v["gemm"]["gflops"].as_f64().unwrap() > 0.0);
}

/// `tune` stores picks in the cache it is given; `bench` reports them and the launch counts;
/// `bench --kernels` lists every variant; a corrupt cache is a warning, not an error.
#[test]
fn tune_and_bench_kernels() {
    let folder = fixtures().join("tiny_vit");
    let m = folder.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("kernels.json");
    let c = cache.to_str().unwrap();
    let out = maskaq(&["--tune-cache", c, "tune", "--model", m, "--batch", "2", "--rounds", "1", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shapes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shapes = shapes.as_array().unwrap();
    assert!(!shapes.is_empty());
    assert!(shapes.iter().all(|s| s["pick"].is_string() && s["variants"].as_array().unwrap().len() > 1));
    let stored: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    assert_eq!(stored["picks"].as_object().unwrap().len(), shapes.len());

    let out = maskaq(&["--tune-cache", c, "bench", "--model", m, "--batch", "2", "--iters", "1", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["tuning"].as_str().unwrap().contains(&format!("{} picks", shapes.len())), "{}", v["tuning"]);
    for key in ["dispatches_forward_backward", "dispatches_synth_iteration", "dispatches_qtrain_step"] {
        assert!(v[key].as_u64().unwrap() > 10, "{key}");
    }

    let out = maskaq(&["--tune", "off", "bench", "--model", m, "--batch", "2", "--kernels", "--iters", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("matmul_regs") && text.contains("% of the step"), "{text}");

    std::fs::write(&cache, "not json").unwrap();
    let out = maskaq(&["--tune-cache", c, "bench", "--model", m, "--batch", "2", "--iters", "1", "--json"]);
    assert!(out.status.success(), "a corrupt cache must not fail a run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("maskaq: warning: ignoring the tuning cache"));
    expect_error(&["tune", "--model", m, "--batch", "0"], &["--batch"]);
    expect_error(&["--tune", "fastest", "tune", "--model", m], &["--tune"]);
}

#[test]
fn ptq_bad_input() {
    let folder = fixtures().join("tiny_gray_f16");
    let m = folder.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.safetensors");
    let o = out.to_str().unwrap();
    expect_error(&["ptq", "--model", m, "--bits", "W9A4", "--out", o], &["--bits", "W9A4", "2 to 8"]);
    expect_error(&["ptq", "--model", m, "--bits", "W4", "--out", o], &["--bits", "W4"]);
    expect_error(
        &["ptq", "--model", m, "--bits", "W4A4", "--out", "/no/such/folder/q.safetensors"],
        &["--out", "does not exist"],
    );
    expect_error(&["ptq", "--model", m, "--bits", "W4A4", "--num", "0", "--out", o], &["--num"]);
    expect_error(
        &["ptq", "--model", m, "--bits", "W4A4", "--calib", "/no/such/data", "--out", o],
        &["--calib", "/no/such/data"],
    );
    assert!(!out.exists(), "a failed run must not leave an output file");
}

/// Six generated 28 x 28 grayscale images with labels 0..5 as IDX files in `dir`; returns the
/// images file.
fn six_images(dir: &Path) -> PathBuf {
    let pixels: Vec<u8> = (0..6 * 784).map(|i| (i * 37 % 251) as u8).collect();
    let images = dir.join("t10k-images-idx3-ubyte");
    maskaq::data::idx::write_images(&images, 6, 28, 28, &pixels, false).unwrap();
    maskaq::data::idx::write_labels(&dir.join("t10k-labels-idx1-ubyte"), &[0, 1, 2, 3, 4, 5], false).unwrap();
    images
}

#[test]
fn ptq_then_eval_quantized() {
    let folder = fixtures().join("tiny_gray_f16");
    let m = folder.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.safetensors");
    let o = out.to_str().unwrap();
    let run = maskaq(&["ptq", "--model", m, "--bits", "W4A8", "--num", "8", "--out", o]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    // Evaluate on a few generated Fashion-MNIST-shaped images.
    let images = six_images(dir.path());
    let d = images.to_str().unwrap();
    let ev = maskaq(&["eval", "--model", m, "--quantized", o, "--data", d, "--json"]);
    assert!(ev.status.success(), "{}", String::from_utf8_lossy(&ev.stderr));
    let v: serde_json::Value = serde_json::from_slice(&ev.stdout).unwrap();
    assert_eq!(v["images"], 6);
    // The quantized file belongs to another model than tiny_vit.
    let other = fixtures().join("tiny_vit");
    expect_error(
        &["eval", "--model", other.to_str().unwrap(), "--quantized", o, "--data", d],
        &["does not match --model"],
    );
}

#[test]
fn synth_bad_input_fails_before_work() {
    let folder = fixtures().join("tiny_gray_f16");
    let m = folder.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("syn");
    let o = o.to_str().unwrap();
    expect_error(&["synth", "--model", m, "--num", "0", "--out", o], &["--num"]);
    expect_error(
        &["synth", "--model", m, "--num", "4", "--method", "deepinversion", "--out", o],
        &["--method", "deepinversion"],
    );
    expect_error(&["synth", "--model", m, "--num", "4", "--bits", "W9A9", "--out", o], &["--bits"]);
    // An output folder that cannot be created (a file is in the way).
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let blocked = file.join("out");
    expect_error(
        &["synth", "--model", m, "--num", "4", "--out", blocked.to_str().unwrap()],
        &["--out", "cannot create"],
    );
    // A quantized model of another architecture.
    let q = dir.path().join("q.safetensors");
    let other = fixtures().join("tiny_vit");
    let run = maskaq(&[
        "ptq",
        "--model",
        other.to_str().unwrap(),
        "--bits",
        "W4A4",
        "--num",
        "2",
        "--out",
        q.to_str().unwrap(),
    ]);
    assert!(run.status.success());
    expect_error(
        &["synth", "--model", m, "--num", "4", "--quantized", q.to_str().unwrap(), "--out", o],
        &["does not match"],
    );
}

#[test]
fn synth_writes_dataset_previews_and_log() {
    let folder = fixtures().join("tiny_gray_f16");
    let m = folder.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("syn");
    let o = out.to_str().unwrap();
    let run = maskaq(&[
        "synth",
        "--model",
        m,
        "--num",
        "5",
        "--batch",
        "3",
        "--iters",
        "6",
        "--log-every",
        "2",
        "--out",
        o,
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    for f in ["synthetic.safetensors", "contact_sheet.png", "log.json", "previews/00004.png"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let log: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("log.json")).unwrap()).unwrap();
    assert_eq!(log["images"], 5);
    assert_eq!(log["batches"].as_array().unwrap().len(), 2);
    let terms = &log["batches"][0]["terms"];
    assert!(terms.as_array().unwrap().len() >= 3);
    for k in ["ssim", "entropy", "alignment", "ce", "tv", "total"] {
        assert!(terms[0][k].as_f64().is_some(), "term {k} logged");
    }
    let ev = maskaq(&["eval", "--model", m, "--data", o, "--json"]);
    assert!(ev.status.success(), "{}", String::from_utf8_lossy(&ev.stderr));
    let v: serde_json::Value = serde_json::from_slice(&ev.stdout).unwrap();
    assert_eq!(v["images"], 5);
    // The agreement synth reports is what `eval` measures on the written set.
    assert_eq!(log["agreement"]["images"], 5);
    assert_eq!(log["agreement"]["top1"].as_f64(), v["top1"].as_f64(), "{}", log["agreement"]);
    let per: usize = log["agreement"]["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(per, 5);
    assert!(String::from_utf8_lossy(&run.stderr).contains("synth: P classifies"));
    // Same seed, same adapter: the same images bit for bit.
    let out2 = dir.path().join("syn2");
    let run = maskaq(&[
        "synth",
        "--model",
        m,
        "--num",
        "5",
        "--batch",
        "3",
        "--iters",
        "6",
        "--out",
        out2.to_str().unwrap(),
    ]);
    assert!(run.status.success());
    let a = maskaq::model::checkpoint::read_f32_tensors(&out.join("synthetic.safetensors")).unwrap();
    let b = maskaq::model::checkpoint::read_f32_tensors(&out2.join("synthetic.safetensors")).unwrap();
    let bits = |v: &Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    assert!(bits(&a["images"].1) == bits(&b["images"].1), "same seed must give the same images bit for bit");
    assert!(a["labels"].1 == b["labels"].1);
}

#[test]
fn quantize_on_real_data_is_the_qat_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q");
    let model = fixtures().join("tiny_gray_f16");
    let slice = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/fashion-mnist-test-slice/t10k-images-idx3-ubyte.gz");
    let s = slice.to_str().unwrap();
    let args = [
        "quantize",
        "--model",
        model.to_str().unwrap(),
        "--eval-data",
        s,
        "--eval-limit",
        "50",
        "--real-data",
        s,
        "--num-images",
        "8",
        "--epochs",
        "2",
        "--refresh-every",
        "1",
        "--out",
        out.to_str().unwrap(),
    ];
    let run = maskaq(&args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("epoch 2: 8 real training images from"), "{stderr}");
    assert!(!stderr.contains("synthesized"), "{stderr}");
    assert!(String::from_utf8_lossy(&run.stdout).contains("real-data QAT"));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert!(r["config"]["real_data"].as_str().unwrap().contains("t10k-images"));
    assert!(r["final_top1"].as_f64().is_some());
}

#[test]
fn quantize_runs_the_pipeline_and_writes_its_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q");
    let model = fixtures().join("tiny_gray_f16");
    let slice = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/fashion-mnist-test-slice/t10k-images-idx3-ubyte.gz");
    let args = [
        "quantize",
        "--model",
        model.to_str().unwrap(),
        "--bits",
        "W4A4",
        "--eval-data",
        slice.to_str().unwrap(),
        "--num-images",
        "8",
        "--synth-iters",
        "3",
        "--epochs",
        "3",
        "--refresh-every",
        "2",
        "--frozen-epochs",
        "1",
        // Every spec hyperparameter is a flag and lands in the run's settings.
        "--momentum",
        "0.8",
        "--kd-temperature",
        "4",
        "--mask-proportion",
        "0.2",
        "--synth-lr",
        "0.05",
        "--mask-ratio",
        "0.4,0.2",
        "--jitter",
        "1,2",
        "--w-tv",
        "0",
        "--entropy-rows",
        "8",
        "--synth-color-jitter",
        "0.5",
        "--synth-noise",
        "0.25",
        "--synth-init",
        "black",
        "--out",
        out.to_str().unwrap(),
    ];
    let run = maskaq(&args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    for f in [
        "quantized.safetensors",
        "report.json",
        "curves_loss.png",
        "curves_accuracy.png",
        "synthetic/contact_sheet.png",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let c = &r["config"];
    assert_eq!(c["train"]["momentum"].as_f64(), Some(0.8));
    assert_eq!(c["train"]["kd_temperature"].as_f64(), Some(4.0));
    assert_eq!(c["train"]["mask_proportion"].as_f64(), Some(0.2));
    assert_eq!(c["synth"]["lr"].as_f64(), Some(0.05));
    assert_eq!(c["synth"]["mask_ratio"], serde_json::json!([0.4, 0.2]));
    assert_eq!(c["synth"]["jitter"], serde_json::json!([1, 2]));
    assert_eq!(c["synth"]["weights"]["tv"].as_f64(), Some(0.0));
    assert_eq!(c["synth"]["entropy_rows"].as_u64(), Some(8));
    assert_eq!(c["synth"]["color_jitter"].as_f64(), Some(0.5));
    assert_eq!(c["synth"]["noise_std"].as_f64(), Some(0.25));
    assert_eq!(c["synth"]["init"], "black");
    let epochs = r["epochs"].as_array().unwrap();
    // Each synthesis reports P's agreement with its targets; epoch 2 trained on epoch 1's set.
    for (e, refreshed) in [(0, true), (1, false), (2, true)] {
        let a = &epochs[e]["synthetic_agreement"];
        assert_eq!(a.as_f64().is_some_and(|v| (0.0..=100.0).contains(&v)), refreshed, "epoch {e}: {a}");
    }
    assert_eq!(epochs.len(), 3);
    assert_eq!(epochs[0]["updated"], false, "first epoch frozen");
    assert_eq!(epochs[2]["refreshed"], true, "refresh at epoch 3 (every 2)");
    for k in ["fp_top1", "ptq_noise_top1", "final_top1"] {
        assert!(r[k].as_f64().is_some(), "{k}");
    }
    // The exported model evaluates to the reported final accuracy, and the exported min-max PTQ
    // baseline to the reported baseline accuracy.
    for (file, key) in [("quantized.safetensors", "final_top1"), ("ptq_noise.safetensors", "ptq_noise_top1")]
    {
        let q = out.join(file);
        let (m, q, s) = (model.to_str().unwrap(), q.to_str().unwrap(), slice.to_str().unwrap());
        let ev = maskaq(&["eval", "--model", m, "--quantized", q, "--data", s, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&ev.stdout).unwrap();
        assert_eq!(v["top1"], r[key], "{file}");
    }
    // Starting again in the same --out without --resume is refused, and nothing is touched.
    let (m, o) = (model.to_str().unwrap(), out.to_str().unwrap());
    let before = std::fs::read(out.join("quantized.safetensors")).unwrap();
    expect_error(&args, &["--out", "already holds a run", "finished, 3 epochs", "--overwrite"]);
    let both = maskaq(&["quantize", "--model", m, "--out", o, "--resume", "--overwrite"]);
    assert!(!both.status.success() && String::from_utf8_lossy(&both.stderr).contains("--overwrite"));
    assert_eq!(std::fs::read(out.join("quantized.safetensors")).unwrap(), before, "nothing overwritten");
    // Resuming a finished run with other settings is refused.
    expect_error(
        &["quantize", "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--resume"],
        &["--resume", "other settings"],
    );
    expect_error(
        &["quantize", "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--preset", "huge"],
        &["--preset", "huge"],
    );
    expect_error(&["quantize", "--model", m, "--out", o, "--init", "zeros"], &["--init", "zeros"]);
    expect_error(&["quantize", "--model", m, "--out", o, "--z-grad", "half"], &["--z-grad", "half"]);
    expect_error(&["quantize", "--model", m, "--out", o, "--synth-batch", "0"], &["--synth-batch"]);
    expect_error(&["quantize", "--model", m, "--out", o, "--momentum", "1"], &["--momentum", "[0, 1)"]);
    expect_error(&["quantize", "--model", m, "--out", o, "--lr", "-1"], &["--lr", "positive"]);
    expect_error(
        &["quantize", "--model", m, "--out", o, "--mask-ratio", "0.5"],
        &["--mask-ratio", "START,END"],
    );
    expect_error(&["quantize", "--model", m, "--out", o, "--w-entropy", "-1"], &["--w-entropy"]);
    // A synthetic set of another image size, and one that does not exist.
    let other = tempfile::tempdir().unwrap();
    maskaq::data::synthetic::SyntheticDataset::write(
        other.path(),
        [1, 5, 5],
        &[0.0; 25],
        &[0],
        Default::default(),
    )
    .unwrap();
    expect_error(
        &["quantize", "--model", m, "--out", o, "--synthetic", other.path().to_str().unwrap()],
        &["--synthetic", "[1, 5, 5]"],
    );
    expect_error(
        &["quantize", "--model", m, "--out", o, "--synthetic", "/nonexistent/set"],
        &["--synthetic"],
    );
}

/// Interrupting after an epoch and resuming ends with the same Q as an uninterrupted run.
#[test]
fn quantize_resume_equals_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures().join("tiny_gray_f16");
    let m = model.to_str().unwrap();
    let slice = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/fashion-mnist-test-slice/t10k-images-idx3-ubyte.gz");
    let common = [
        "--eval-data",
        slice.to_str().unwrap(),
        "--eval-limit",
        "50",
        "--bits",
        "W4A4",
        "--num-images",
        "8",
        "--synth-iters",
        "3",
        "--epochs",
        "4",
        "--refresh-every",
        "2",
        "--frozen-epochs",
        "1",
        "--seed",
        "7",
        // Every weight trained too (demo trains only the quantizers), so that the resumed run
        // must restore the weights' momentum buffers as well.
        "--train-params",
        "all",
    ];
    let full = dir.path().join("full");
    let mut args = vec!["quantize", "--model", m];
    args.extend(common);
    args.extend(["--out", full.to_str().unwrap()]);
    let run = maskaq(&args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    let part = dir.path().join("part");
    let mut args = vec!["quantize", "--model", m];
    args.extend(common);
    args.extend(["--out", part.to_str().unwrap(), "--stop-after-epoch", "3"]);
    let stopped = maskaq(&args);
    assert!(!stopped.status.success(), "the interrupted run must stop");
    assert!(part.join("checkpoint.safetensors").exists());
    assert!(!part.join("quantized.safetensors").exists());

    // A checkpoint made with other settings is refused and left as it is.
    let before = std::fs::read(part.join("checkpoint.safetensors")).unwrap();
    // So is starting the same run again without --resume (it would discard three epochs).
    let mut again = vec!["quantize", "--model", m];
    again.extend(common);
    again.extend(["--out", part.to_str().unwrap()]);
    expect_error(&again, &["already holds a run", "epoch 3 of 4 done", "--resume"]);
    let mut other = vec![
        "quantize",
        "--model",
        m,
        "--bits",
        "W3A3",
        "--num-images",
        "8",
        "--synth-iters",
        "3",
        "--epochs",
        "4",
    ];
    other.extend([
        "--refresh-every",
        "2",
        "--frozen-epochs",
        "1",
        "--seed",
        "7",
        "--out",
        part.to_str().unwrap(),
        "--resume",
    ]);
    expect_error(&other, &["--resume", "other settings"]);
    assert_eq!(std::fs::read(part.join("checkpoint.safetensors")).unwrap(), before, "nothing overwritten");

    let mut args = vec!["quantize", "--model", m];
    args.extend(common);
    args.extend(["--out", part.to_str().unwrap(), "--resume"]);
    let resumed = maskaq(&args);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let a = maskaq::model::checkpoint::read_f32_tensors(&full.join("checkpoint.safetensors")).unwrap();
    let b = maskaq::model::checkpoint::read_f32_tensors(&part.join("checkpoint.safetensors")).unwrap();
    for (name, (_, va)) in &a {
        if name.starts_with("q.") || name.starts_with("momentum.") {
            let vb = &b[name].1;
            assert!(
                va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{name} differs after resuming"
            );
        }
    }
    let ra: serde_json::Value =
        serde_json::from_slice(&std::fs::read(full.join("report.json")).unwrap()).unwrap();
    let rb: serde_json::Value =
        serde_json::from_slice(&std::fs::read(part.join("report.json")).unwrap()).unwrap();
    assert_eq!(ra["epochs"].as_array().unwrap().len(), rb["epochs"].as_array().unwrap().len());
    // --eval-limit: 50 of the slice's 1,000 images, the same in both runs.
    assert_eq!(rb["eval_samples"].as_u64(), Some(50));
    assert!(rb["eval_data"].as_str().unwrap().contains("50 of its 1000"), "{}", rb["eval_data"]);
    assert_eq!(ra["final_top1"], rb["final_top1"]);
    // The resumed run's times cover both sessions.
    let secs = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    assert!(
        secs(&rb, "total_seconds") >= secs(&rb, "synthesis_seconds") + secs(&rb, "training_seconds"),
        "total time of a resumed run: {rb}"
    );

    // A corrupt checkpoint is refused.
    std::fs::write(part.join("checkpoint.safetensors"), b"garbage").unwrap();
    expect_error(&args, &["--resume", "not a valid checkpoint"]);
}

/// Every flag of every subcommand says what it is for in `--help`.
#[test]
fn every_flag_has_help() {
    use clap::CommandFactory;
    let cli = maskaq::cli::Cli::command();
    let mut missing = Vec::new();
    for sub in cli.get_subcommands() {
        assert!(sub.get_about().is_some(), "subcommand {} has no description", sub.get_name());
        for arg in sub.get_arguments() {
            if arg.get_help().is_none() && arg.get_long_help().is_none() && !arg.is_hide_set() {
                missing.push(format!("{} --{}", sub.get_name(), arg.get_id()));
            }
        }
    }
    assert!(missing.is_empty(), "flags without help: {missing:?}");
}

/// The choices of typed flags are listed in --help, and exit codes are documented.
#[test]
fn help_lists_choices_and_exit_codes() {
    let out = maskaq(&["quantize", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for want in
        ["demo", "fast", "paper", "maskaq", "mimiq", "minmax", "lsq", "Q training", "Synthesis", "Ablations"]
    {
        assert!(help.contains(want), "quantize --help lacks `{want}`");
    }
    let top = String::from_utf8_lossy(&maskaq(&["--help"]).stdout).to_string();
    assert!(top.contains("Exit codes") && top.contains("130"), "{top}");
}

/// Every command on a Swin: predict, ptq, eval of the export, synth, and bench (whose synthesis
/// and Q-training steps run MaskAQ's Swin objectives).
#[test]
fn swin_commands_run_end_to_end() {
    let folder = fixtures().join("tiny_swin");
    let m = folder.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let images = six_images(dir.path());
    let d = images.to_str().unwrap();
    let ok = |args: &[&str]| {
        let out = maskaq(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    };
    let pred = ok(&["predict", "--model", m, "--json", &img()]);
    assert!(!pred.stdout.is_empty());
    let q = dir.path().join("q.safetensors");
    let q = q.to_str().unwrap();
    ok(&["ptq", "--model", m, "--bits", "W4A4", "--num", "4", "--out", q]);
    let ev = ok(&["eval", "--model", m, "--quantized", q, "--data", d, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&ev.stdout).unwrap();
    assert_eq!(v["images"], 6);
    let out = dir.path().join("synth");
    for alignment in ["as-coded", "last-stage"] {
        let args = ["synth", "--model", m, "--num-images", "2", "--batch", "2", "--iters", "2"];
        ok(&[&args[..], &["--swin-alignment", alignment, "--out", out.to_str().unwrap(), "--overwrite"]]
            .concat());
    }
    let b = ok(&["bench", "--model", m, "--batch", "2", "--iters", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    assert!(v["synth_iteration_ms"].as_f64().unwrap() > 0.0 && v["qtrain_step_ms"].as_f64().unwrap() > 0.0);
}

//! The bad-input corpus: every way a user can hand maskaq something wrong, one test each. Each
//! must end with ONE stderr line `maskaq: error: ...` naming the file, tensor or flag and what
//! was expected, a non-zero exit, no panic, and nothing new on disk (no partial output, no
//! temporary file, no empty output folder). tests/cli.rs has the checkpoint-format cases
//! (truncated, garbage header, wrong dtype, missing/unexpected tensor, wrong shape, pickle).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fx(rel: &str) -> String {
    fixtures().join(rel).display().to_string()
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_maskaq"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run maskaq")
}

/// Every file and folder under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs maskaq in `dir` expecting one clean error line mentioning every needle, and checks
/// that `dir` holds exactly what it held before.
fn refused_in(dir: &Path, args: &[&str], env: &[(&str, &str)], needles: &[&str]) -> Output {
    let before = tree(dir);
    let out = run(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "maskaq {args:?} should fail; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "maskaq {args:?} panicked: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "maskaq {args:?}: expected a one-line error, got: {stderr}");
    assert!(lines[0].starts_with("maskaq: error:"), "unexpected error format: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "error for {args:?} should mention `{n}`: {stderr}");
    }
    assert_eq!(tree(dir), before, "maskaq {args:?} left files behind");
    out
}

fn refused(dir: &Path, args: &[&str], needles: &[&str]) {
    let out = refused_in(dir, args, &[], needles);
    assert_eq!(out.status.code(), Some(1), "an error exits with 1");
}

/// A usage error (bad flag or value) exits with 2.
fn usage_error(dir: &Path, args: &[&str], needles: &[&str]) {
    let out = refused_in(dir, args, &[], needles);
    assert_eq!(out.status.code(), Some(2), "a command-line error exits with 2");
}

/// A copy of tiny_vit's folder in `dir/name` with `edit` applied to its config.json.
fn model_with_config(dir: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let m = dir.join(name);
    std::fs::create_dir_all(&m).unwrap();
    std::fs::copy(fixtures().join("tiny_vit/model.safetensors"), m.join("model.safetensors")).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("tiny_vit/config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(m.join("config.json"), serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    m.display().to_string()
}

/// tiny_vit's weights with the tensor `name` replaced by `edit(bytes)` (same shape) as a folder.
fn model_with_tensor(dir: &Path, name: &str, dtype: Dtype, edit: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let m = dir.join("m");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::copy(fixtures().join("tiny_vit/config.json"), m.join("config.json")).unwrap();
    let bytes = std::fs::read(fixtures().join("tiny_vit/model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    let t = tensors.iter_mut().find(|t| t.0 == name).unwrap();
    t.3 = edit(&t.3);
    t.1 = dtype;
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(m.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    m.display().to_string()
}

/// A quantized model of `model` at `bits` made by `maskaq ptq` in `dir`.
fn ptq_file(dir: &Path, model: &str, bits: &str) -> String {
    let q = dir.join(format!("q-{bits}.safetensors"));
    let q = q.to_str().unwrap();
    let ok = run(&["ptq", "--model", &fx(model), "--bits", bits, "--num", "2", "--out", q], &[]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    q.to_string()
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn img() -> String {
    fx("preprocess/img0.png")
}

// ---- config.json ----

#[test]
fn config_without_architecture() {
    let d = tmp();
    let m = model_with_config(d.path(), "m", |c| {
        c.as_object_mut().unwrap().remove("architecture");
    });
    refused(d.path(), &["predict", "--model", &m, &img()], &["config.json", "architecture"]);
}

#[test]
fn config_negative_embed_dim() {
    let d = tmp();
    let m = model_with_config(d.path(), "m", |c| c["model_args"]["embed_dim"] = (-32).into());
    refused(d.path(), &["predict", "--model", &m, &img()], &["config.json", "embed_dim", "positive integer"]);
}

#[test]
fn config_zero_depth() {
    let d = tmp();
    let m = model_with_config(d.path(), "m", |c| c["model_args"]["depth"] = 0.into());
    refused(d.path(), &["predict", "--model", &m, &img()], &["config.json", "depth", "positive integer"]);
}

#[test]
fn config_patch_size_zero() {
    let d = tmp();
    let m = model_with_config(d.path(), "m", |c| c["model_args"]["patch_size"] = 0.into());
    refused(d.path(), &["predict", "--model", &m, &img()], &["patch_size", "positive integer"]);
}

#[test]
fn config_embed_dim_not_divisible_by_heads() {
    let d = tmp();
    let m = model_with_config(d.path(), "m", |c| c["model_args"]["num_heads"] = 3.into());
    refused(d.path(), &["predict", "--model", &m, &img()], &["embed_dim 32", "not divisible", "num_heads 3"]);
}

#[test]
fn config_img_size_not_a_multiple_of_patch_size() {
    let d = tmp();
    let m = model_with_config(d.path(), "m", |c| {
        c["model_args"]["img_size"] = 30.into();
        c["pretrained_cfg"]["input_size"] = serde_json::json!([3, 30, 30]);
    });
    refused(d.path(), &["predict", "--model", &m, &img()], &["img_size 30", "multiple of patch_size 8"]);
}

#[test]
fn config_inconsistent_input_size() {
    let d = tmp();
    let m = model_with_config(d.path(), "m", |c| {
        c["pretrained_cfg"]["input_size"] = serde_json::json!([3, 64, 64])
    });
    refused(d.path(), &["predict", "--model", &m, &img()], &["input_size", "does not match"]);
}

#[test]
fn config_zero_std() {
    let d = tmp();
    let m =
        model_with_config(d.path(), "m", |c| c["pretrained_cfg"]["std"] = serde_json::json!([0.5, 0.0, 0.5]));
    refused(d.path(), &["predict", "--model", &m, &img()], &["std", "positive"]);
}

#[test]
fn config_that_is_not_json() {
    let d = tmp();
    let m = model_with_config(d.path(), "m", |_| {});
    std::fs::write(Path::new(&m).join("config.json"), b"{ not json").unwrap();
    refused(d.path(), &["predict", "--model", &m, &img()], &["config.json", "not valid JSON"]);
}

#[test]
fn config_too_large_for_the_adapter() {
    // embed_dim 65536 would need a 51 GB weight: refused before any allocation.
    let d = tmp();
    let m = model_with_config(d.path(), "m", |c| {
        c["model_args"]["embed_dim"] = 65536.into();
        c["model_args"]["num_heads"] = 4.into();
    });
    let cfg = Path::new(&m).join("config.json").display().to_string();
    refused(d.path(), &["bench", "--arch", &cfg, "--batch", "1"], &["largest weight", "MiB", "allows"]);
}

#[test]
fn model_folder_without_weights() {
    let d = tmp();
    let m = model_with_config(d.path(), "m", |_| {});
    std::fs::remove_file(Path::new(&m).join("model.safetensors")).unwrap();
    refused(d.path(), &["predict", "--model", &m, &img()], &["no model.safetensors"]);
}

#[test]
fn config_json_given_as_model() {
    let d = tmp();
    refused(
        d.path(),
        &["predict", "--model", &fx("tiny_vit/config.json"), &img()],
        &["--model", "folder", "--arch"],
    );
}

// ---- weights ----

#[test]
fn nan_weight() {
    let d = tmp();
    let m = model_with_tensor(d.path(), "blocks.0.attn.qkv.weight", Dtype::F32, |b| {
        let mut v = b.to_vec();
        v[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
        v
    });
    refused(d.path(), &["predict", "--model", &m, &img()], &["blocks.0.attn.qkv.weight", "NaN or infinite"]);
}

#[test]
fn infinite_weight() {
    let d = tmp();
    let m = model_with_tensor(d.path(), "head.bias", Dtype::F32, |b| {
        let mut v = b.to_vec();
        v[0..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
        v
    });
    refused(d.path(), &["predict", "--model", &m, &img()], &["head.bias", "NaN or infinite"]);
}

#[test]
fn integer_typed_tensor() {
    let d = tmp();
    let m = model_with_tensor(d.path(), "norm.weight", Dtype::I32, |b| b.to_vec());
    refused(d.path(), &["predict", "--model", &m, &img()], &["norm.weight", "I32", "float"]);
}

#[test]
fn zero_byte_weights_file() {
    let d = tmp();
    let m = model_with_config(d.path(), "m", |_| {});
    std::fs::write(Path::new(&m).join("model.safetensors"), b"").unwrap();
    refused(d.path(), &["predict", "--model", &m, &img()], &["model.safetensors", "not a valid safetensors"]);
}

#[test]
fn folder_where_the_weights_file_belongs() {
    let d = tmp();
    let m = model_with_config(d.path(), "m", |_| {});
    let w = Path::new(&m).join("model.safetensors");
    std::fs::remove_file(&w).unwrap();
    std::fs::create_dir(&w).unwrap();
    refused(d.path(), &["predict", "--model", &m, &img()], &["model.safetensors"]);
}

#[test]
fn quantized_file_given_as_model() {
    let d = tmp();
    let q = ptq_file(d.path(), "tiny_vit", "W4A4");
    refused(
        d.path(),
        &["predict", "--model", q.as_str(), "--arch", &fx("tiny_vit/config.json"), &img()],
        &["quantized model", "--quantized"],
    );
}

// ---- images ----

fn write_png16(path: &Path) {
    let img = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_fn(8, 8, |x, y| {
        image::Rgb([x as u16 * 4000, y as u16 * 4000, 100])
    });
    img.save(path).unwrap();
}

#[test]
fn sixteen_bit_image() {
    let d = tmp();
    let p = d.path().join("deep.png");
    write_png16(&p);
    refused(d.path(), &["predict", "--model", &fx("tiny_vit"), p.to_str().unwrap()], &["deep.png", "8-bit"]);
}

#[test]
fn cmyk_jpeg() {
    // A minimal baseline JPEG header whose frame declares 4 components (CMYK).
    let d = tmp();
    let p = d.path().join("cmyk.jpg");
    let mut rgb = Vec::new();
    image::RgbImage::from_pixel(8, 8, image::Rgb([10, 20, 30]))
        .write_to(&mut std::io::Cursor::new(&mut rgb), image::ImageFormat::Jpeg)
        .unwrap();
    // Rewrite the SOF0 component count and add a fourth component entry: decoders then see CMYK.
    let sof = rgb.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    let len = u16::from_be_bytes([rgb[sof + 2], rgb[sof + 3]]);
    let mut out = rgb[..sof + 2].to_vec();
    out.extend_from_slice(&(len + 3).to_be_bytes());
    out.extend_from_slice(&rgb[sof + 4..sof + 9]);
    out.push(4);
    out.extend_from_slice(&rgb[sof + 10..sof + 2 + len as usize]);
    out.extend_from_slice(&[4, 0x11, 0]);
    out.extend_from_slice(&rgb[sof + 2 + len as usize..]);
    std::fs::write(&p, out).unwrap();
    refused(d.path(), &["predict", "--model", &fx("tiny_vit"), p.to_str().unwrap()], &["cmyk.jpg"]);
}

#[test]
fn one_pixel_image_is_resized_like_timm() {
    // Not an error: timm resizes a 1x1 image like any other. It must not panic.
    let d = tmp();
    let p = d.path().join("dot.png");
    image::RgbImage::from_pixel(1, 1, image::Rgb([200, 10, 10])).save(&p).unwrap();
    let out = run(&["predict", "--model", &fx("tiny_vit"), "--json", p.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn image_for_a_model_with_two_input_channels() {
    let d = tmp();
    let m = model_with_config(d.path(), "m", |c| {
        c["model_args"]["in_chans"] = 2.into();
        c["pretrained_cfg"]["input_size"] = serde_json::json!([2, 32, 32]);
        c["pretrained_cfg"]["mean"] = serde_json::json!([0.5, 0.5]);
        c["pretrained_cfg"]["std"] = serde_json::json!([0.5, 0.5]);
    });
    // The weights are for 3 channels, so the checkpoint is refused first, naming the tensor.
    refused(d.path(), &["predict", "--model", &m, &img()], &["patch_embed.proj.weight", "shape"]);
}

#[test]
fn folder_given_as_an_image() {
    let d = tmp();
    refused(
        d.path(),
        &["predict", "--model", &fx("tiny_vit"), d.path().to_str().unwrap()],
        &[d.path().to_str().unwrap()],
    );
}

// ---- numbers ----

#[test]
fn nan_learning_rate() {
    let d = tmp();
    let o = d.path().join("run");
    refused(d.path(), &["quantize", "--lr", "NaN", "--out", o.to_str().unwrap()], &["--lr", "NaN"]);
}

#[test]
fn negative_learning_rate_for_train() {
    let d = tmp();
    let o = d.path().join("run");
    refused(
        d.path(),
        &[
            "train",
            "--arch",
            &fx("tiny_gray_f16/config.json"),
            "--data",
            &fx("../../assets/fashion-mnist-test-slice/t10k-images-idx3-ubyte.gz"),
            "--lr",
            "-1",
            "--out",
            o.to_str().unwrap(),
        ],
        &["--lr -1", "positive"],
    );
}

#[test]
fn zero_epochs() {
    let d = tmp();
    let o = d.path().join("run");
    refused(d.path(), &["quantize", "--epochs", "0", "--out", o.to_str().unwrap()], &["--epochs"]);
}

#[test]
fn frozen_epochs_that_leave_nothing_to_train() {
    let d = tmp();
    let o = d.path().join("run");
    refused(
        d.path(),
        &["quantize", "--epochs", "2", "--frozen-epochs", "2", "--out", o.to_str().unwrap()],
        &["--frozen-epochs 2", "--epochs 2", "no epoch would train"],
    );
}

#[test]
fn huge_number_of_images() {
    let d = tmp();
    let o = d.path().join("syn");
    refused(
        d.path(),
        &["synth", "--model", &fx("tiny_vit"), "--num-images", "1000000000000", "--out", o.to_str().unwrap()],
        &["--num-images 1000000000000", "MiB"],
    );
}

#[test]
fn absurd_batch_for_the_adapter() {
    let d = tmp();
    refused(
        d.path(),
        &["bench", "--arch", "deit_tiny_patch16_224", "--batch", "100000"],
        &["--batch 100000", "allows", "smaller --batch"],
    );
}

#[test]
fn zero_bench_repeats() {
    let d = tmp();
    refused(d.path(), &["bench", "--arch", &fx("tiny_vit/config.json"), "--iters", "0"], &["--repeats"]);
}

#[test]
fn momentum_out_of_range() {
    let d = tmp();
    let o = d.path().join("run");
    refused(
        d.path(),
        &["quantize", "--momentum", "1.5", "--out", o.to_str().unwrap()],
        &["--momentum", "[0, 1)"],
    );
}

#[test]
fn negative_loss_weight() {
    let d = tmp();
    let o = d.path().join("syn");
    refused(
        d.path(),
        &["synth", "--model", &fx("tiny_vit"), "--num", "2", "--w-ssim", "-1", "--out", o.to_str().unwrap()],
        &["--w-ssim", "non-negative"],
    );
}

#[test]
fn mask_ratio_with_one_value() {
    let d = tmp();
    let o = d.path().join("run");
    refused(
        d.path(),
        &["quantize", "--mask-ratio", "0.5", "--out", o.to_str().unwrap()],
        &["--mask-ratio", "START,END"],
    );
}

#[test]
fn synth_color_jitter_out_of_range() {
    let d = tmp();
    let o = d.path().join("syn");
    refused(
        d.path(),
        &[
            "synth",
            "--model",
            &fx("tiny_vit"),
            "--num",
            "4",
            "--synth-color-jitter",
            "4",
            "--out",
            o.to_str().unwrap(),
        ],
        &["--synth-color-jitter", "[0, 3]"],
    );
}

#[test]
fn real_data_that_does_not_exist() {
    let d = tmp();
    let o = d.path().join("run");
    let missing = d.path().join("nope.gz");
    refused(
        d.path(),
        &["quantize", "--real-data", missing.to_str().unwrap(), "--out", o.to_str().unwrap()],
        &["--real-data", "nope.gz"],
    );
}

#[test]
fn zero_top() {
    let d = tmp();
    refused(d.path(), &["predict", "--model", &fx("tiny_vit"), "--top", "0", &img()], &["--top"]);
}

#[test]
fn unknown_method_lists_the_choices() {
    let d = tmp();
    let o = d.path().join("syn");
    usage_error(
        d.path(),
        &[
            "synth",
            "--model",
            &fx("tiny_vit"),
            "--num",
            "2",
            "--method",
            "deepinversion",
            "--out",
            o.to_str().unwrap(),
        ],
        &["deepinversion", "--method", "maskaq", "mimiq", "psaq", "noise"],
    );
}

#[test]
fn unknown_preset_lists_the_choices() {
    let d = tmp();
    usage_error(
        d.path(),
        &["quantize", "--preset", "huge", "--out", "x"],
        &["huge", "demo", "fast", "paper"],
    );
}

#[test]
fn unknown_flag() {
    let d = tmp();
    usage_error(d.path(), &["eval", "--modle", "m", "--data", "d"], &["--modle"]);
}

#[test]
fn non_number_for_a_number() {
    let d = tmp();
    usage_error(
        d.path(),
        &["bench", "--arch", "deit_tiny_patch16_224", "--batch", "many"],
        &["many", "--batch"],
    );
}

// ---- outputs ----

#[test]
fn out_below_a_regular_file() {
    let d = tmp();
    let file = d.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let o = file.join("syn");
    refused(
        d.path(),
        &["synth", "--model", &fx("tiny_vit"), "--num", "2", "--out", o.to_str().unwrap()],
        &["--out", "cannot create"],
    );
}

#[test]
fn ptq_out_is_the_model_it_reads() {
    let d = tmp();
    let m = model_with_config(d.path(), "m", |_| {});
    let o = Path::new(&m).join("model.safetensors");
    refused(
        d.path(),
        &["ptq", "--model", &m, "--bits", "W4A4", "--out", o.to_str().unwrap()],
        &["--out", "--model reads"],
    );
}

#[test]
fn ptq_out_exists() {
    let d = tmp();
    let o = d.path().join("q.safetensors");
    std::fs::write(&o, b"precious").unwrap();
    refused(
        d.path(),
        &["ptq", "--model", &fx("tiny_vit"), "--bits", "W4A4", "--out", o.to_str().unwrap()],
        &["--out", "exists", "--overwrite"],
    );
    assert_eq!(std::fs::read(&o).unwrap(), b"precious");
}

#[test]
fn ptq_out_is_a_folder() {
    let d = tmp();
    refused(
        d.path(),
        &["ptq", "--model", &fx("tiny_vit"), "--bits", "W4A4", "--out", d.path().to_str().unwrap()],
        &["--out", "is a folder", "file name"],
    );
}

#[test]
fn synth_into_a_used_folder() {
    let d = tmp();
    let o = d.path().join("syn");
    std::fs::create_dir(&o).unwrap();
    std::fs::write(o.join("notes.txt"), b"mine").unwrap();
    refused(
        d.path(),
        &["synth", "--model", &fx("tiny_vit"), "--num", "2", "--out", o.to_str().unwrap()],
        &["--out", "not empty", "--overwrite"],
    );
}

#[test]
fn train_out_is_its_own_model() {
    let d = tmp();
    let m = model_with_config(d.path(), "m", |_| {});
    refused(
        d.path(),
        &[
            "train",
            "--model",
            &m,
            "--data",
            &fx("../../assets/fashion-mnist-test-slice/t10k-images-idx3-ubyte.gz"),
            "--out",
            &m,
        ],
        &["--out", "--model", "inside it"],
    );
}

#[test]
fn quantized_file_of_another_model() {
    let d = tmp();
    let q = ptq_file(d.path(), "tiny_vit", "W4A4");
    let o = d.path().join("syn");
    refused(
        d.path(),
        &[
            "synth",
            "--model",
            &fx("tiny_gray_f16"),
            "--num",
            "2",
            "--quantized",
            q.as_str(),
            "--out",
            o.to_str().unwrap(),
        ],
        &["q-W4A4.safetensors", "does not match --model"],
    );
}

#[test]
fn quantized_bits_that_contradict_the_file() {
    let d = tmp();
    let q = ptq_file(d.path(), "tiny_vit", "W8A8");
    let o = d.path().join("syn");
    refused(
        d.path(),
        &[
            "synth",
            "--model",
            &fx("tiny_vit"),
            "--num",
            "2",
            "--quantized",
            q.as_str(),
            "--bits",
            "W3A3",
            "--out",
            o.to_str().unwrap(),
        ],
        &["--bits W3A3", "W8A8"],
    );
}

#[test]
fn corrupt_resume_checkpoint() {
    let d = tmp();
    let o = d.path().join("run");
    std::fs::create_dir(&o).unwrap();
    std::fs::write(o.join("checkpoint.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage").unwrap();
    refused(
        d.path(),
        &["quantize", "--resume", "--out", o.to_str().unwrap()],
        &["--resume", "checkpoint.safetensors"],
    );
}

// ---- data ----

#[test]
fn eval_on_the_slice_folder_points_at_its_idx_file() {
    let d = tmp();
    refused(
        d.path(),
        &["eval", "--model", &fx("tiny_gray_f16"), "--data", &fx("../../assets/fashion-mnist-test-slice")],
        &["no class folders", "t10k-images-idx3-ubyte.gz"],
    );
}

#[test]
fn eval_data_that_does_not_exist() {
    let d = tmp();
    refused(
        d.path(),
        &["eval", "--model", &fx("tiny_vit"), "--data", "/no/such/data"],
        &["--data", "/no/such/data"],
    );
}

#[test]
fn zero_eval_limit() {
    let d = tmp();
    refused(
        d.path(),
        &[
            "eval",
            "--model",
            &fx("tiny_gray_f16"),
            "--data",
            &fx("../../assets/fashion-mnist-test-slice/t10k-images-idx3-ubyte.gz"),
            "--limit",
            "0",
        ],
        &["--eval-limit"],
    );
}

// ---- adapters ----

#[test]
fn backend_not_in_this_build() {
    // Linux builds have no Metal backend; macOS builds have no DX12.
    let missing = if cfg!(target_os = "macos") { "dx12" } else { "metal" };
    let d = tmp();
    refused(d.path(), &["--backend", missing, "devices"], &["--backend", missing, "no such backend"]);
}

#[test]
fn bogus_wgpu_backend_variable() {
    let d = tmp();
    let out = refused_in(
        d.path(),
        &["devices"],
        &[("WGPU_BACKEND", "directx9")],
        &["WGPU_BACKEND=directx9", "unknown backend"],
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn unknown_backend_flag() {
    let d = tmp();
    usage_error(d.path(), &["--backend", "directx9", "devices"], &["--backend", "directx9", "vulkan"]);
}

#[test]
fn resume_with_a_changed_flag_names_it() {
    let d = tmp();
    let o = d.path().join("run");
    let o = o.to_str().unwrap();
    let m = fx("tiny_vit");
    let base =
        ["quantize", "--model", &m, "--num-images", "4", "--synth-iters", "2", "--epochs", "2", "--out", o];
    // Stops after epoch 1 as an interruption would (non-zero exit), keeping its checkpoint.
    let first = run(&[&base[..], &["--stop-after-epoch", "1"]].concat(), &[]);
    assert!(
        d.path().join("run/checkpoint.safetensors").is_file(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    refused(
        d.path(),
        &[&base[..], &["--resume", "--lr", "0.002"]].concat(),
        &["--resume", "--lr", "then", "now"],
    );
}

#[test]
fn ptq_calibrates_on_images_without_labels() {
    // Calibration needs no labels: a flat folder of images and an IDX file without its labels
    // file are accepted.
    let d = tmp();
    let flat = d.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    for i in 0..3u8 {
        image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x as u8 ^ y as u8).wrapping_mul(i + 1)]))
            .save(flat.join(format!("{i}.png")))
            .unwrap();
    }
    let idx = d.path().join("unlabelled-images-idx3-ubyte");
    let pixels: Vec<u8> = (0..3 * 784).map(|i| (i % 251) as u8).collect();
    maskaq::data::idx::write_images(&idx, 3, 28, 28, &pixels, false).unwrap();
    for (name, calib) in [("flat", &flat), ("idx", &idx)] {
        let q = d.path().join(format!("q-{name}.safetensors"));
        let out = run(
            &[
                "ptq",
                "--model",
                &fx("tiny_gray_f16"),
                "--bits",
                "W4A4",
                "--calib",
                calib.to_str().unwrap(),
                "--num",
                "3",
                "--out",
                q.to_str().unwrap(),
            ],
            &[],
        );
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(q.is_file());
    }
}

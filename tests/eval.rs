//! `maskaq eval` end to end on the tiny fixture models: IDX files and image folders it writes,
//! checked against `maskaq predict --json` on the same images, and every bad input giving a
//! one-line error with exit code 1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use maskaq::data::idx;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn model(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

fn maskaq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_maskaq")).args(args).output().expect("run maskaq")
}

fn success(args: &[&str]) -> Output {
    let out = maskaq(args);
    assert!(out.status.success(), "maskaq {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Runs maskaq expecting exit code 1 with a single-line error containing every `needle`.
fn expect_error(args: &[&str], needles: &[&str]) {
    let out = maskaq(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "maskaq {args:?} should exit with 1; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "maskaq {args:?} panicked: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got: {stderr}");
    assert!(lines[0].starts_with("maskaq: error:"), "unexpected error format: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "error for {args:?} should mention `{n}`: {stderr}");
    }
}

/// Deterministic pseudo-random bytes.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

/// Logits per image from `maskaq predict --json`.
fn predict_logits(model: &str, images: &[PathBuf]) -> Vec<Vec<f32>> {
    let mut args = vec!["predict", "--model", model, "--json"];
    let names: Vec<String> = images.iter().map(|p| p.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let out = success(&args);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| p["logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect()
}

/// The class `predict` ranks first (its stable descending sort: the lowest index on ties).
fn argmax(row: &[f32]) -> usize {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    idx[0]
}

/// (top-1 %, top-5 %) from predict's logits, ranking as predict does.
fn accuracy(logits: &[Vec<f32>], labels: &[usize]) -> (f64, f64) {
    let (mut t1, mut t5) = (0, 0);
    for (row, &l) in logits.iter().zip(labels) {
        let mut idx: Vec<usize> = (0..row.len()).collect();
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        let rank = idx.iter().position(|&k| k == l).unwrap();
        t1 += (rank == 0) as usize;
        t5 += (rank < 5.min(row.len())) as usize;
    }
    let n = labels.len() as f64;
    (100.0 * t1 as f64 / n, 100.0 * t5 as f64 / n)
}

/// Labels that make about half of the images right: the predicted class for even images,
/// another class for odd ones.
fn labels_from(logits: &[Vec<f32>]) -> Vec<usize> {
    logits
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let top = argmax(row);
            if i % 2 == 0 { top } else { (top + 3) % row.len() }
        })
        .collect()
}

/// Parses `--json` output, checking it has exactly the four fields.
fn report(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim().lines().count(), 1, "one JSON line: {text}");
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["images", "skipped", "top1", "top5"], "{text}");
    v
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn eval_idx_agrees_with_predict() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = model("tiny_gray_f16");
    let n = 19;
    // Smooth-ish random 28×28 gray images, as PNGs for predict and as IDX for eval.
    let pixels: Vec<u8> = bytes(n * 28 * 28, 11)
        .iter()
        .enumerate()
        .map(|(k, &b)| ((b as usize + (k % 28) * 6) / 2) as u8)
        .collect();
    let mut pngs = Vec::new();
    for i in 0..n {
        let p = d.join(format!("img{i:02}.png"));
        image::GrayImage::from_raw(28, 28, pixels[i * 784..(i + 1) * 784].to_vec())
            .unwrap()
            .save(&p)
            .unwrap();
        pngs.push(p);
    }
    let logits = predict_logits(&m, &pngs);
    let labels = labels_from(&logits);
    let (top1, top5) = accuracy(&logits, &labels);
    assert!((50.0..100.0).contains(&top1), "labels should be half right: {top1}");

    let images = d.join("t10k-images-idx3-ubyte.gz");
    idx::write_images(&images, n, 28, 28, &pixels, true).unwrap();
    let l8: Vec<u8> = labels.iter().map(|&l| l as u8).collect();
    idx::write_labels(&d.join("t10k-labels-idx1-ubyte.gz"), &l8, true).unwrap();
    let data = images.display().to_string();

    // Batches of 8: two full ones and a short one.
    let out = success(&["eval", "--model", &m, "--data", &data, "--batch", "8", "--json"]);
    let v = report(&out);
    assert_eq!(v["images"], 19);
    assert_eq!(v["skipped"], 0);
    assert!(close(v["top1"].as_f64().unwrap(), top1), "{v} vs {top1}");
    assert!(close(v["top5"].as_f64().unwrap(), top5), "{v} vs {top5}");

    // One batch larger than the dataset gives the same numbers.
    let out = success(&["eval", "--model", &m, "--data", &data, "--json"]);
    assert_eq!(report(&out), v);

    // --eval-limit (alias --limit) takes samples spread evenly over the set: i * len / 10.
    let out = success(&["eval", "--model", &m, "--data", &data, "--limit", "10", "--batch", "3", "--json"]);
    let v = report(&out);
    let picked: Vec<usize> = (0..10).map(|i| i * labels.len() / 10).collect();
    let (t1, t5) = accuracy(
        &picked.iter().map(|&i| logits[i].clone()).collect::<Vec<_>>(),
        &picked.iter().map(|&i| labels[i]).collect::<Vec<_>>(),
    );
    assert_eq!(v["images"], 10);
    assert!(close(v["top1"].as_f64().unwrap(), t1), "{v} vs {t1}");
    assert!(close(v["top5"].as_f64().unwrap(), t5), "{v} vs {t5}");

    // Plain (not gzip) IDX files, text output.
    let plain = d.join("plain");
    std::fs::create_dir(&plain).unwrap();
    idx::write_images(&plain.join("train-images-idx3-ubyte"), n, 28, 28, &pixels, false).unwrap();
    idx::write_labels(&plain.join("train-labels-idx1-ubyte"), &l8, false).unwrap();
    let out =
        success(&["eval", "--model", &m, "--data", plain.join("train-images-idx3-ubyte").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("19 images evaluated, 0 skipped"), "{text}");
    assert!(text.contains(&format!("top-1 accuracy: {top1:6.2} %")), "{text}");
    assert!(text.contains(&format!("top-5 accuracy: {top5:6.2} %")), "{text}");
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A PNG of `w`×`h` random RGB pixels.
fn write_png(path: &Path, w: u32, h: u32, seed: u64) {
    image::RgbImage::from_raw(w, h, bytes((w * h * 3) as usize, seed)).unwrap().save(path).unwrap();
}

#[test]
fn eval_image_folder_skips_broken_images() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = model("tiny_vit");
    // Nine PNGs of various sizes, classified by predict first.
    let staging = d.join("staging");
    std::fs::create_dir(&staging).unwrap();
    let sizes = [(32, 32), (40, 36), (36, 50), (64, 48), (33, 33)];
    let pngs: Vec<PathBuf> = (0..9)
        .map(|i| {
            let p = staging.join(format!("img{i}.png"));
            let (w, h) = sizes[i % sizes.len()];
            write_png(&p, w, h, 100 + i as u64);
            p
        })
        .collect();
    let logits = predict_logits(&m, &pngs);
    let labels = labels_from(&logits);

    // An ImageNet-val-like folder: class folders c0..c9 (some empty), the PNGs where their
    // labels say, plus a broken JPEG and 22 other unreadable files.
    let root = d.join("val");
    for k in 0..10 {
        std::fs::create_dir_all(root.join(format!("c{k}"))).unwrap();
    }
    let mut eval_order = Vec::new();
    for (i, p) in pngs.iter().enumerate() {
        let dest = root.join(format!("c{}", labels[i])).join(format!("img{i}.png"));
        std::fs::copy(p, &dest).unwrap();
        eval_order.push((dest, i));
    }
    let mut jpeg = Vec::new();
    image::RgbImage::from_raw(16, 16, bytes(16 * 16 * 3, 5))
        .unwrap()
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    std::fs::write(root.join("c1/broken.jpg"), &jpeg[..40]).unwrap();
    for k in 0..22 {
        std::fs::write(root.join(format!("c7/bad{k:02}.jpg")), b"not a jpeg").unwrap();
    }
    let data = root.display().to_string();
    let (top1, top5) = accuracy(&logits, &labels);

    let out = success(&["eval", "--model", &m, "--data", &data, "--batch", "4", "--json"]);
    let v = report(&out);
    assert_eq!(v["images"], 9);
    assert_eq!(v["skipped"], 23);
    assert!(close(v["top1"].as_f64().unwrap(), top1), "{v} vs {top1}");
    assert!(close(v["top5"].as_f64().unwrap(), top5), "{v} vs {top5}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("skipped 23 unreadable images"), "{stderr}");
    assert!(stderr.contains("broken.jpg"), "{stderr}");
    assert!(stderr.contains("bad00.jpg"), "{stderr}");
    assert!(stderr.contains("... and 3 more"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1 + 20 + 1, "{stderr}");

    let out = success(&["eval", "--model", &m, "--data", &data]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("9 images evaluated, 23 skipped"), "{text}");
    assert!(text.contains(&format!("top-1 accuracy: {top1:6.2} %")), "{text}");
}

#[test]
fn eval_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = model("tiny_gray_f16");
    let run = |data: &Path, needles: &[&str]| {
        expect_error(&["eval", "--model", &m, "--data", data.to_str().unwrap()], needles)
    };

    // Empty folders.
    let empty = d.join("empty");
    std::fs::create_dir(&empty).unwrap();
    run(&empty, &["empty", "no class folders"]);
    std::fs::create_dir(empty.join("cat")).unwrap();
    run(&empty, &["1 class folders hold no files"]);
    // Nothing readable.
    std::fs::write(empty.join("cat/broken.jpg"), b"not a jpeg").unwrap();
    run(&empty, &["none of the 1 images could be read", "broken.jpg"]);
    // More class folders than the model has classes.
    let many = d.join("many");
    for k in 0..11 {
        std::fs::create_dir_all(many.join(format!("k{k:02}"))).unwrap();
    }
    write_png(&many.join("k10/a.png"), 28, 28, 1);
    run(&many, &["a.png", "label 10", "10 classes", "has 11 classes"]);

    // IDX problems.
    let images = d.join("t10k-images-idx3-ubyte.gz");
    idx::write_images(&images, 3, 28, 28, &bytes(3 * 784, 2), true).unwrap();
    run(&images, &["labels file not found", "t10k-labels-idx1-ubyte.gz"]);
    let labels = d.join("t10k-labels-idx1-ubyte.gz");
    idx::write_labels(&labels, &[1, 2], true).unwrap();
    run(&images, &["t10k-labels-idx1-ubyte.gz", "2 labels", "has 3 images"]);
    idx::write_labels(&labels, &[1, 12, 2], true).unwrap();
    run(&images, &["t10k-images-idx3-ubyte.gz[1]", "label 12", "10 classes"]);
    run(&labels, &["not an IDX images file", "expected 0x00000803"]);
    let corrupt = d.join("corrupt-images-idx3-ubyte");
    std::fs::write(&corrupt, [0u8, 0, 9, 3, 0, 0, 0, 1]).unwrap();
    run(&corrupt, &["corrupt-images-idx3-ubyte", "0x00000903"]);
    let truncated = d.join("cut-images-idx3-ubyte");
    let full = std::fs::read(&images).unwrap();
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    run(&truncated, &["cut-images-idx3-ubyte", "corrupt or truncated gzip"]);
    run(&d.join("nothing-here"), &["nothing-here", "no such file or folder"]);

    // Flags.
    idx::write_labels(&labels, &[1, 2, 3], true).unwrap();
    let data = images.to_str().unwrap();
    expect_error(&["eval", "--model", &m, "--data", data, "--batch", "0"], &["--batch"]);
    expect_error(&["eval", "--model", &m, "--data", data, "--limit", "0"], &["--eval-limit"]);
    expect_error(&["eval", "--model", "/no/such/model", "--data", data], &["/no/such/model"]);
    // An RGB model takes IDX data too (the gray channel replicated).
    let out = success(&["eval", "--model", &model("tiny_vit"), "--data", data, "--json"]);
    assert_eq!(report(&out)["images"], 3);
}

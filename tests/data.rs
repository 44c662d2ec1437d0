//! Labelled datasets: IDX files (gzip and plain, every kind of damage) and image folders.
//! No GPU needed.

use std::io::Write;
use std::path::{Path, PathBuf};

use maskaq::data::dataset::{self, Dataset, image_tensor};
use maskaq::data::folder::FolderDataset;
use maskaq::data::idx::{self, IdxDataset};
use maskaq::data::preprocess::{Image8, eval_transform};
use maskaq::model::ModelConfig;
use maskaq::model::config::Preprocess;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn preprocess(model: &str) -> Preprocess {
    ModelConfig::from_json_file(&fixtures().join(model).join("config.json")).unwrap().preprocess
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

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// A raw IDX stream: magic, dims, then data.
fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = magic.to_be_bytes().to_vec();
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn err_text<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

fn assert_mentions(msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(msg.contains(n), "`{msg}` should mention `{n}`");
    }
    assert!(!msg.contains('\n'), "one-line message expected: {msg}");
}

/// Writes `t10k-images-idx3-ubyte[.gz]` and its labels file; returns the images path.
fn write_pair(dir: &Path, n: usize, h: usize, w: usize, labels: &[u8], gz: bool) -> PathBuf {
    let ext = if gz { ".gz" } else { "" };
    let images = dir.join(format!("t10k-images-idx3-ubyte{ext}"));
    idx::write_images(&images, n, h, w, &bytes(n * h * w, 7), gz).unwrap();
    idx::write_labels(&dir.join(format!("t10k-labels-idx1-ubyte{ext}")), labels, gz).unwrap();
    images
}

#[test]
fn idx_round_trip_gzip_and_plain() {
    let pp = preprocess("tiny_gray_f16");
    let labels = [3u8, 0, 9, 1, 1];
    let pixels = bytes(5 * 28 * 28, 7);
    let mut tensors = Vec::new();
    for gz in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let images = write_pair(dir.path(), 5, 28, 28, &labels, gz);
        let raw = std::fs::read(&images).unwrap();
        assert_eq!(raw.starts_with(&[0x1f, 0x8b]), gz);
        let ds = IdxDataset::open(&images).unwrap();
        assert_eq!(ds.len(), 5);
        assert_eq!(ds.labels, labels);
        assert_eq!((ds.images.height, ds.images.width), (28, 28));
        assert_eq!(ds.images.pixels, pixels);
        assert_eq!(ds.num_classes(), Some(10));
        assert_eq!(ds.label(2), 9);
        assert!(ds.name(4).ends_with("[4]"));
        let s = ds.load(1, &pp).unwrap();
        assert_eq!(s.label, 0);
        // The raw image through timm's eval transform, as an image file would go.
        let img = Image8 { w: 28, h: 28, chans: 1, data: pixels[28 * 28..2 * 28 * 28].to_vec() };
        assert_eq!(s.input, eval_transform(&img, &pp));
        tensors.push(s.input);
        // The generic opener picks IDX for a file.
        assert_eq!(dataset::open(&images).unwrap().len(), 5);
    }
    assert_eq!(tensors[0], tensors[1], "gzip and plain must load the same");
}

#[test]
fn idx_non_square_images_are_resized_like_image_files() {
    let pp = preprocess("tiny_gray_f16");
    let dir = tempfile::tempdir().unwrap();
    let images = write_pair(dir.path(), 2, 20, 35, &[1, 2], true);
    let ds = IdxDataset::open(&images).unwrap();
    let s = ds.load(1, &pp).unwrap();
    assert_eq!(s.input.len(), 28 * 28);
    assert_eq!(s.input, eval_transform(&ds.images.image(1), &pp));
}

#[test]
fn idx_gray_is_replicated_for_rgb_models() {
    let pp = preprocess("tiny_vit");
    assert_eq!(pp.input_size, [3, 32, 32]);
    let dir = tempfile::tempdir().unwrap();
    let images = write_pair(dir.path(), 2, 28, 28, &[1, 2], false);
    let ds = IdxDataset::open(&images).unwrap();
    let s = ds.load(0, &pp).unwrap();
    assert_eq!(s.input.len(), 3 * 32 * 32);
    let gray = ds.images.image(0);
    let rgb = Image8 { w: 28, h: 28, chans: 3, data: gray.data.iter().flat_map(|&g| [g, g, g]).collect() };
    assert_eq!(s.input, eval_transform(&rgb, &pp));
    assert_eq!(image_tensor(&gray, &pp).unwrap(), s.input);
}

#[test]
fn labels_path_follows_mnist_naming() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let images = d.join("t10k-images-idx3-ubyte.gz");
    std::fs::write(&images, b"").unwrap();
    let err = err_text(idx::labels_path(&images));
    assert_mentions(&err, &["labels file not found", "t10k-labels-idx1-ubyte.gz"]);
    std::fs::write(d.join("t10k-labels-idx1-ubyte.gz"), b"").unwrap();
    assert_eq!(idx::labels_path(&images).unwrap(), d.join("t10k-labels-idx1-ubyte.gz"));
    // A plain labels file beside a gzip images file is accepted too.
    let train = d.join("train-images-idx3-ubyte.gz");
    std::fs::write(d.join("train-labels-idx1-ubyte"), b"").unwrap();
    assert_eq!(idx::labels_path(&train).unwrap(), d.join("train-labels-idx1-ubyte"));
    // Kaggle's dotted naming.
    let dotted = d.join("t10k-images.idx3-ubyte");
    std::fs::write(d.join("t10k-labels.idx1-ubyte"), b"").unwrap();
    assert_eq!(idx::labels_path(&dotted).unwrap(), d.join("t10k-labels.idx1-ubyte"));
    let odd = d.join("pictures.bin");
    let err = err_text(idx::labels_path(&odd));
    assert_mentions(&err, &["pictures.bin", "images-idx3"]);
}

#[test]
fn corrupt_idx_header() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = d.join("t10k-images-idx3-ubyte");
    // Wrong magic.
    std::fs::write(&path, idx_bytes(0x0000_0804, &[1, 2, 2, 2], &[0; 8])).unwrap();
    let err = err_text(idx::read_images(&path));
    assert_mentions(&err, &["t10k-images-idx3-ubyte", "0x00000804", "expected 0x00000803"]);
    // Garbage (also gzip-compressed garbage).
    std::fs::write(&path, b"this is no IDX file, not even close").unwrap();
    let err = err_text(idx::read_images(&path));
    assert_mentions(&err, &["not an IDX images file", "not an IDX file"]);
    std::fs::write(&path, gzip(b"this is no IDX file, not even close")).unwrap();
    let err = err_text(idx::read_images(&path));
    assert_mentions(&err, &["not an IDX images file", "expected 0x00000803"]);
    // A labels file given as the images.
    std::fs::write(&path, idx_bytes(0x0000_0801, &[2], &[1, 2])).unwrap();
    let err = err_text(idx::read_images(&path));
    assert_mentions(&err, &["0x00000801 (an IDX labels file)", "expected 0x00000803"]);
    // Header cut short.
    std::fs::write(&path, &idx_bytes(0x0000_0803, &[1, 28, 28], &[])[..10]).unwrap();
    let err = err_text(idx::read_images(&path));
    assert_mentions(&err, &["truncated IDX header", "10 bytes", "expected 16"]);
    std::fs::write(&path, [0u8, 0]).unwrap();
    let err = err_text(idx::read_images(&path));
    assert_mentions(&err, &["truncated IDX header", "2 bytes"]);
    // Not gzip after all: magic bytes followed by junk.
    std::fs::write(&path, [0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
    let err = err_text(idx::read_images(&path));
    assert_mentions(&err, &["t10k-images-idx3-ubyte", "gzip"]);
    // Through the dataset opener: the images file is named.
    let err = err_text(IdxDataset::open(&path));
    assert_mentions(&err, &["t10k-images-idx3-ubyte"]);
    // A corrupt labels file.
    let images = write_pair(d, 2, 4, 4, &[0, 1], false);
    std::fs::write(d.join("t10k-labels-idx1-ubyte"), idx_bytes(0x0000_0803, &[2, 1, 1], &[0, 1])).unwrap();
    let err = err_text(IdxDataset::open(&images));
    assert_mentions(&err, &["t10k-labels-idx1-ubyte", "not an IDX labels file", "expected 0x00000801"]);
}

#[test]
fn labels_file_of_another_length() {
    for gz in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let images = write_pair(dir.path(), 4, 28, 28, &[0, 1, 2], gz);
        let err = err_text(IdxDataset::open(&images));
        assert_mentions(&err, &["t10k-labels-idx1-ubyte", "3 labels", "has 4 images"]);
    }
}

#[test]
fn truncated_idx_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t10k-images-idx3-ubyte");
    let full = idx_bytes(0x0000_0803, &[3, 28, 28], &bytes(3 * 28 * 28, 1));
    std::fs::write(&path, &full[..full.len() - 100]).unwrap();
    let err = err_text(idx::read_images(&path));
    assert_mentions(&err, &["truncated data", "3×28×28 = 2352 bytes", "found 2252"]);
    // A gzip stream cut in the middle.
    let gz_path = dir.path().join("t10k-images-idx3-ubyte.gz");
    let gz = gzip(&full);
    std::fs::write(&gz_path, &gz[..gz.len() / 2]).unwrap();
    let err = err_text(idx::read_images(&gz_path));
    assert_mentions(&err, &["t10k-images-idx3-ubyte.gz", "corrupt or truncated gzip"]);
    // Complete gzip of a truncated IDX stream.
    std::fs::write(&gz_path, gzip(&full[..full.len() - 1])).unwrap();
    let err = err_text(idx::read_images(&gz_path));
    assert_mentions(&err, &["truncated data", "found 2351"]);
    // Labels too.
    let lp = dir.path().join("t10k-labels-idx1-ubyte");
    std::fs::write(&lp, idx_bytes(0x0000_0801, &[10], &[1; 7])).unwrap();
    let err = err_text(idx::read_labels(&lp));
    assert_mentions(&err, &["t10k-labels-idx1-ubyte", "10 = 10 bytes", "found 7"]);
}

#[test]
fn idx_dims_product_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t10k-images-idx3-ubyte");
    std::fs::write(&path, idx_bytes(0x0000_0803, &[2, 3, 3], &[0; 20])).unwrap();
    let err = err_text(idx::read_images(&path));
    assert_mentions(&err, &["size mismatch", "2×3×3 = 18 bytes", "found 20"]);
    // Dimensions whose product overflows.
    std::fs::write(&path, idx_bytes(0x0000_0803, &[u32::MAX, u32::MAX, u32::MAX], &[0; 4])).unwrap();
    let err = err_text(idx::read_images(&path));
    assert_mentions(&err, &["t10k-images-idx3-ubyte"]);
    // Zero-sized images.
    std::fs::write(&path, idx_bytes(0x0000_0803, &[2, 0, 3], &[])).unwrap();
    let err = err_text(idx::read_images(&path));
    assert_mentions(&err, &["0×3"]);
}

/// A PNG of `w`×`h` random RGB pixels.
fn write_png(path: &Path, w: u32, h: u32, seed: u64) {
    let img = image::RgbImage::from_raw(w, h, bytes((w * h * 3) as usize, seed)).unwrap();
    img.save(path).unwrap();
}

#[test]
fn image_folder_classes_and_files_are_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (class, files) in
        [("n02", vec!["b.png", "a.png"]), ("n01", vec!["z.png"]), ("n10", vec!["c.png", "a.png", "b.png"])]
    {
        std::fs::create_dir(root.join(class)).unwrap();
        for (k, f) in files.iter().enumerate() {
            write_png(&root.join(class).join(f), 40, 36, k as u64);
        }
    }
    // Files in the root are not samples; an empty class folder is still a class.
    std::fs::write(root.join("README.txt"), b"not a class").unwrap();
    std::fs::create_dir(root.join("n05_empty")).unwrap();
    let ds = FolderDataset::open(root).unwrap();
    assert_eq!(ds.classes, ["n01", "n02", "n05_empty", "n10"]);
    assert_eq!(ds.num_classes(), Some(4));
    let order: Vec<(String, usize)> = ds
        .files
        .iter()
        .map(|(p, k)| {
            let rel = p.strip_prefix(root).unwrap();
            (rel.display().to_string(), *k)
        })
        .collect();
    let expect = [
        ("n01/z.png", 0),
        ("n02/a.png", 1),
        ("n02/b.png", 1),
        ("n10/a.png", 3),
        ("n10/b.png", 3),
        ("n10/c.png", 3),
    ];
    assert_eq!(order, expect.iter().map(|(p, k)| (p.to_string(), *k)).collect::<Vec<_>>());
    let pp = preprocess("tiny_vit");
    let s = ds.load(3, &pp).unwrap();
    assert_eq!(s.label, 3);
    let img = maskaq::data::preprocess::load_image(&root.join("n10/a.png"), 3).unwrap();
    assert_eq!(s.input, eval_transform(&img, &pp));
    // A 1-channel model gets luminance.
    let gray = ds.load(0, &preprocess("tiny_gray_f16")).unwrap();
    assert_eq!(gray.input.len(), 28 * 28);
    assert_eq!(dataset::open(root).unwrap().len(), 6);
}

#[test]
fn empty_image_folder_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = err_text(FolderDataset::open(dir.path()));
    assert_mentions(&err, &["no class folders"]);
    std::fs::write(dir.path().join("loose.png"), b"x").unwrap();
    let err = err_text(FolderDataset::open(dir.path()));
    assert_mentions(&err, &["no class folders"]);
    std::fs::create_dir(dir.path().join("cat")).unwrap();
    std::fs::create_dir(dir.path().join("dog")).unwrap();
    let err = err_text(FolderDataset::open(dir.path()));
    assert_mentions(&err, &["2 class folders hold no files"]);
    let err = err_text(dataset::open(&dir.path().join("missing")));
    assert_mentions(&err, &["missing", "no such file or folder"]);
}

#[test]
fn broken_jpeg_fails_to_load_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("a")).unwrap();
    write_png(&root.join("a/good.png"), 32, 32, 1);
    // A JPEG cut short.
    let mut jpeg = Vec::new();
    image::RgbImage::from_raw(32, 32, bytes(32 * 32 * 3, 2))
        .unwrap()
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    // (The decoder pads a JPEG cut in its scan data; one cut in its headers is unreadable.)
    std::fs::write(root.join("a/broken.jpg"), &jpeg[..40]).unwrap();
    let ds = FolderDataset::open(root).unwrap();
    assert_eq!(ds.len(), 2);
    let pp = preprocess("tiny_vit");
    let err = err_text(ds.load(0, &pp));
    assert_mentions(&err, &["broken.jpg"]);
    assert!(ds.load(1, &pp).is_ok());
}

/// The bundled slice (the first 1,000 Fashion-MNIST test images, assets/fashion-mnist-test-slice)
/// read through the IDX loader: shapes, the label histogram, the first labels of the real test
/// set and a pixel checksum, pinned from the files with Python's gzip module. Where the Debian
/// package's full test set is installed, it is also checked, and the slice must be its prefix.
#[test]
fn fashion_mnist_test_set() {
    let slice = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/fashion-mnist-test-slice");
    let ds = IdxDataset::open(&slice.join("t10k-images-idx3-ubyte.gz")).unwrap();
    assert_eq!(ds.len(), 1000);
    assert_eq!((ds.images.count, ds.images.height, ds.images.width), (1000, 28, 28));
    assert_eq!(ds.images.pixels.len(), 1000 * 28 * 28);
    assert_eq!(ds.num_classes(), Some(10));
    let mut per_class = [0usize; 10];
    for &l in &ds.labels {
        per_class[l as usize] += 1;
    }
    assert_eq!(per_class, [107, 105, 111, 93, 115, 87, 97, 95, 95, 95]);
    // Ankle boot, pullover, trouser, trouser, shirt, ... : the published order of t10k.
    assert_eq!(&ds.labels[..10], &[9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
    let sum: u64 = ds.images.pixels.iter().map(|&p| p as u64).sum();
    assert_eq!(sum, 58_034_149, "pixel sum of the slice");

    let full = Path::new("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz");
    if full.exists() {
        let all = IdxDataset::open(full).unwrap();
        assert_eq!(all.len(), 10_000);
        assert_eq!((all.images.height, all.images.width), (28, 28));
        let mut per_class = [0usize; 10];
        for &l in &all.labels {
            per_class[l as usize] += 1;
        }
        assert_eq!(per_class, [1000; 10]);
        assert_eq!(&all.labels[..1000], &ds.labels[..], "the slice's labels are the test set's first");
        assert!(all.images.pixels[..1000 * 784] == ds.images.pixels[..], "the slice's images are the first");
    }
}

#[test]
fn spread_subset_covers_a_class_ordered_dataset() {
    // 10 classes of 30 samples each, in class order; 20 spread samples hit every class twice.
    let dir = tempfile::tempdir().unwrap();
    let labels: Vec<u8> = (0..300).map(|i| (i / 30) as u8).collect();
    let path = write_pair(dir.path(), 300, 4, 4, &labels, false);
    let d = dataset::Spread::new(dataset::open(&path).unwrap(), 20);
    assert_eq!(d.len(), 20);
    let labels: Vec<usize> = (0..20).map(|i| d.label(i)).collect();
    assert_eq!(labels, (0..20).map(|i| i / 2).collect::<Vec<_>>());
    assert!(d.source().contains("20 of its 300"));
    // Asking for more than there is gives all of it.
    let all = dataset::Spread::new(dataset::open(&path).unwrap(), 1000);
    assert_eq!(all.len(), 300);
    assert_eq!(
        (0..300).map(|i| all.label(i)).collect::<Vec<_>>(),
        (0..300).map(|i| i / 30).collect::<Vec<_>>()
    );
}

#[test]
fn contact_sheet_is_capped_but_every_image_gets_a_preview() {
    let dir = tempfile::tempdir().unwrap();
    let n = maskaq::data::synthetic::SHEET_MAX + 44;
    let images: Vec<f32> = (0..n * 16).map(|i| ((i % 7) as f32 - 3.0) / 3.0).collect();
    let labels: Vec<usize> = (0..n).map(|i| i % 10).collect();
    let mut cfg = ModelConfig::from_json_file(&fixtures().join("tiny_gray_f16/config.json")).unwrap();
    (cfg.img_size, cfg.patch_size, cfg.preprocess.input_size) = (4, 2, [1, 4, 4]);
    maskaq::data::synthetic::write_previews(dir.path(), &images, &labels, &cfg).unwrap();
    assert!(dir.path().join(format!("previews/{:05}.png", n - 1)).is_file());
    // 256 images of 4 px upscaled to 96: a 16 x 16 grid of cells with an 18-px label strip
    // under each and 2-px gaps.
    let sheet = image::open(dir.path().join("contact_sheet.png")).unwrap();
    assert_eq!((sheet.width(), sheet.height()), (16 * 98 + 2, 16 * (96 + 18 + 2) + 2));
}

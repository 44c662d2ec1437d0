//! The quantized-model file: an exported model evaluates exactly like the in-memory
//! fake-quantized model it came from, packing round-trips, and bad files are refused.

mod common;

use std::path::{Path, PathBuf};

use maskaq::model::{Graph, GraphOptions, Model};
use maskaq::quant::Bits;
use maskaq::quant::calibrate::minmax_calibrate;
use maskaq::quant::export::{self, pack, unpack};
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a))).unwrap()
}

#[test]
fn pack_round_trips_every_width() {
    let mut rng = common::Rng::new(5);
    for bits in 2..=8u32 {
        for (rows, cols) in [(1, 1), (3, 5), (4, 8), (7, 33)] {
            let lo = -(1i32 << (bits - 1));
            let n = 1i32 << bits;
            let q: Vec<i8> = (0..rows * cols).map(|_| (lo + rng.below(n as usize) as i32) as i8).collect();
            let (bytes, shape) = pack(&q, rows, bits);
            assert_eq!(bytes.len(), shape.iter().product::<usize>());
            if bits <= 4 {
                assert_eq!(shape, vec![rows, cols.div_ceil(2)], "two values per byte at {bits} bits");
            }
            assert_eq!(unpack(&bytes, rows, cols, bits), q, "{bits} bits {rows}x{cols}");
        }
    }
}

/// Calibrates Q on noise, exports it, loads it back, and compares logits on other images.
fn exported_equals_in_memory(model: &str, bits: &str) {
    let gpu = common::gpu();
    let mut q = Model::load(&gpu, &fixture(model), None).unwrap();
    q.quantize(&gpu, bits.parse::<Bits>().unwrap());
    let per = q.cfg.in_chans * q.cfg.img_size * q.cfg.img_size;
    let mut rng = common::Rng::new(11);
    let calib: Vec<f32> = (0..16 * per).map(|_| rng.uniform(-2.0, 2.0)).collect();
    minmax_calibrate(&gpu, &q, &calib, 8).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.safetensors");
    export::export(&gpu, &q, "test", &path).unwrap();
    let loaded = export::load(&gpu, &path, Some(&q.cfg)).unwrap();

    let batch = 24;
    let images: Vec<f32> = (0..batch * per).map(|_| rng.uniform(-2.5, 2.5)).collect();
    let run = |m: &Model| {
        let g = Graph::build(&gpu, m, batch, GraphOptions::default());
        g.images.write(&gpu, &images);
        g.forward(&gpu);
        g.logits.read(&gpu).unwrap()
    };
    let (a, b) = (run(&q), run(&loaded));
    let c = q.cfg.num_classes;
    let top_a: Vec<usize> = a.chunks(c).map(argmax).collect();
    let top_b: Vec<usize> = b.chunks(c).map(argmax).collect();
    assert_eq!(top_a, top_b, "{model} {bits}: exported model predicts differently");
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert_eq!(worst, 0.0, "{model} {bits}: exported logits differ by up to {worst}");
}

#[test]
fn exported_model_equals_in_memory_model() {
    for bits in ["W3A3", "W4A4", "W4A8", "W8A8"] {
        exported_equals_in_memory("tiny_gray_f16", bits);
    }
    exported_equals_in_memory("tiny_deit_distilled", "W4A4");
    // Swin: the PatchMerging reductions and head.fc among the sites, the bias tables FP.
    exported_equals_in_memory("tiny_swin", "W4A4");
    exported_equals_in_memory("tiny_swin_3stage", "W3A3");
}

/// Rewrites an exported file with one tensor changed by `edit`.
fn corrupt(
    src: &Path,
    dst: &Path,
    edit: impl FnOnce(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) {
    let bytes = std::fs::read(src).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut t: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut t);
    let views: Vec<(String, TensorView)> =
        t.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(dst, safetensors::serialize(views, header.metadata().clone()).unwrap()).unwrap();
}

#[test]
fn bad_quantized_files_are_refused() {
    let gpu = common::gpu();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    let mut q = Model::load(&gpu, &fixture("tiny_gray_f16"), None).unwrap();
    q.quantize(&gpu, Bits { w: 4, a: 4 });
    let per = q.cfg.in_chans * q.cfg.img_size * q.cfg.img_size;
    minmax_calibrate(&gpu, &q, &vec![0.5; 4 * per], 4).unwrap();
    export::export(&gpu, &q, "test", &good).unwrap();

    let err =
        |p: &Path| format!("{:#}", export::load(&gpu, p, Some(&q.cfg)).err().expect("should be refused"));
    let bad = dir.path().join("bad.safetensors");
    corrupt(&good, &bad, |t| t.retain(|e| e.0 != "blocks.1.attn.proj.weight.scale"));
    assert!(err(&bad).contains("missing tensor `blocks.1.attn.proj.weight.scale`"), "{}", err(&bad));
    corrupt(&good, &bad, |t| t.retain(|e| e.0 != "blocks.0.mlp.fc1.act.alpha"));
    assert!(err(&bad).contains("blocks.0.mlp.fc1.act.alpha"), "{}", err(&bad));
    corrupt(&good, &bad, |t| {
        let e = t.iter_mut().find(|e| e.0 == "head.weight.qweight").unwrap();
        e.1 = safetensors::Dtype::I8;
    });
    assert!(err(&bad).contains("head.weight.qweight"), "{}", err(&bad));
    corrupt(&good, &bad, |t| {
        let e = t.iter_mut().find(|e| e.0 == "head.act.qrange").unwrap();
        e.3 = [-100i32, 100].iter().flat_map(|v| v.to_le_bytes()).collect();
    });
    assert!(err(&bad).contains("not a 4-bit range"), "{}", err(&bad));
    corrupt(&good, &bad, |t| t.push(("extra".into(), safetensors::Dtype::F32, vec![1], vec![0; 4])));
    assert!(err(&bad).contains("unexpected tensor `extra`"), "{}", err(&bad));
    // A plain checkpoint is not a quantized model.
    let plain = fixture("tiny_gray_f16").join("model.safetensors");
    assert!(err(&plain).contains("not a maskaq quantized model"), "{}", err(&plain));
    // A quantized model of another architecture.
    let other = Model::load(&gpu, &fixture("tiny_vit"), None).unwrap();
    let msg = format!("{:#}", export::load(&gpu, &good, Some(&other.cfg)).err().unwrap());
    assert!(msg.contains("does not match --model"), "{msg}");
}

//! Several adapters and shards: synthesis on two devices of one adapter equals a one-device
//! run bit for bit, Vulkan and GL together both take part, a shard's slots equal the same slots
//! of the whole run, and `synth-merge` joins shards into the unsharded set (refusing a missing
//! shard and mismatched settings).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use maskaq::gpu::{Gpu, GpuOptions};
use maskaq::maskaq::synth::{Method, SynthConfig, Synthesizer};
use maskaq::maskaq::synth_pool::{self, Plan, WorkerStats};
use maskaq::model::Model;
use maskaq::model::checkpoint::{Weights, load_weights, resolve};
use maskaq::quant::Bits;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn tiny() -> (maskaq::model::ModelConfig, Weights) {
    let (cfg, file) = resolve(&fixture("tiny_gray_f16"), None).unwrap();
    let w = load_weights(&cfg, &file).unwrap();
    (cfg, w)
}

fn open(list: &str) -> Vec<Gpu> {
    Gpu::open_list(&GpuOptions::default(), list).unwrap_or_else(|e| panic!("--adapters {list}: {e:#}"))
}

/// MaskAQ synthesis of `slots` (batches of 2, 3 iterations) with a W4A4 Q whose LSQ state
/// comes from batch 0: every slot's images, and what each adapter did.
fn synthesize(gpus: &[Gpu], slots: std::ops::Range<usize>) -> (Vec<(usize, Vec<f32>)>, Vec<WorkerStats>) {
    let (cfg, w) = tiny();
    let gpu = &gpus[0];
    let p = Model::new(gpu, cfg.clone(), &w);
    let mut q = Model::new(gpu, cfg.clone(), &w);
    q.quantize(gpu, Bits { w: 4, a: 4 });
    let mut sc = SynthConfig::new(Method::Maskaq);
    sc.batch = 2;
    sc.iters = 3;
    let mut s = Synthesizer::new(gpu, &p, Some(&q), sc).unwrap();
    let plan = Plan { seed: 7, stream: 0, slots, attempts: 1, on_log: &|_, _| {} };
    let (made, stats) = synth_pool::run(&mut s, &gpus[1..], Some(&w), &plan).unwrap();
    for m in &made {
        assert!(m.batch.finite, "slot {} went non-finite", m.slot);
    }
    (made.into_iter().map(|m| (m.slot, m.batch.images)).collect(), stats)
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn two_devices_of_one_adapter_synthesize_what_one_does() {
    let (one, _) = synthesize(&open("vulkan"), 0..4);
    let (two, stats) = synthesize(&open("vulkan,vulkan"), 0..4);
    assert_eq!(stats.len(), 2);
    assert!(stats.iter().all(|s| s.batches >= 1), "both devices take part: {stats:?}");
    assert_eq!(one.iter().map(|m| m.0).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    for ((slot, a), (_, b)) in one.iter().zip(&two) {
        assert!(same_bits(a, b), "slot {slot} differs between one device and two");
    }
}

#[test]
fn a_shard_makes_the_same_slots_as_the_whole_run() {
    let gpus = open("vulkan");
    let (whole, _) = synthesize(&gpus, 0..4);
    let (part, _) = synthesize(&gpus, 1..3);
    assert_eq!(part.iter().map(|m| m.0).collect::<Vec<_>>(), vec![1, 2]);
    for (slot, img) in &part {
        assert!(same_bits(img, &whole[*slot].1), "slot {slot} differs from the whole run's");
    }
}

#[test]
fn vulkan_and_gl_synthesize_together() {
    let gpus = open("vulkan,gl");
    assert_eq!(gpus[1].info.backend, wgpu::Backend::Gl);
    let (made, stats) = synthesize(&gpus, 0..3);
    assert_eq!(made.len(), 3);
    assert!(stats.iter().all(|s| s.batches >= 1), "both adapters take part: {stats:?}");
}

#[test]
fn an_adapter_item_that_matches_nothing_names_it_and_the_adapters() {
    let e = Gpu::open_list(&GpuOptions::default(), "vulkan,nosuchgpu").err().expect("must fail");
    let msg = format!("{e:#}");
    assert!(msg.contains("`nosuchgpu`") && msg.contains("llvmpipe"), "{msg}");
    assert!(Gpu::open_list(&GpuOptions::default(), "metal:x").is_err());
    assert!(Gpu::open_list(&GpuOptions::default(), "cuda:x").is_err());
}

fn maskaq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_maskaq")).args(args).output().expect("run maskaq")
}

fn ok(args: &[&str]) {
    let out = maskaq(args);
    assert!(out.status.success(), "maskaq {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn tensors(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let bytes = std::fs::read(dir.join("synthetic.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    (st.tensor("images").unwrap().data().to_vec(), st.tensor("labels").unwrap().data().to_vec())
}

/// `synth` of the tiny model (5 images, batches of 2: three batches, the last one cut).
fn synth(out: &Path, extra: &[&str]) {
    let model = fixture("tiny_gray_f16");
    let mut args = vec![
        "synth",
        "--model",
        model.to_str().unwrap(),
        "--num-images",
        "5",
        "--batch",
        "2",
        "--iters",
        "2",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(&args);
}

#[test]
fn merged_shards_equal_the_unsharded_set_and_merge_refuses_bad_sets() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |n: &str| tmp.path().join(n);
    synth(&d("whole"), &[]);
    for k in 0..3 {
        synth(&d(&format!("s{k}")), &["--shard", &format!("{k}/3")]);
    }
    let shard = |k: usize| d(&format!("s{k}")).to_str().unwrap().to_string();
    let merged = d("merged");
    // In any order.
    ok(&["synth-merge", &shard(2), &shard(0), &shard(1), "--out", merged.to_str().unwrap()]);
    assert_eq!(tensors(&merged), tensors(&d("whole")), "merged shards differ from the unsharded set");
    assert!(merged.join("contact_sheet.png").exists());

    let fail = |args: &[&str], needle: &str| {
        let out = maskaq(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "maskaq {args:?} should fail with `{needle}`: {err}"
        );
    };
    let out2 = d("m2");
    fail(&["synth-merge", &shard(0), &shard(2), "--out", out2.to_str().unwrap()], "shards missing: 1/3");
    fail(&["synth-merge", &shard(0), &shard(0), &shard(1), "--out", out2.to_str().unwrap()], "given twice");
    synth(&d("other"), &["--shard", "1/3", "--seed", "1"]);
    let other = d("other");
    fail(
        &["synth-merge", &shard(0), other.to_str().unwrap(), &shard(2), "--out", out2.to_str().unwrap()],
        "seed",
    );
    fail(&["synth-merge", d("whole").to_str().unwrap(), "--out", out2.to_str().unwrap()], "not a shard");
    assert!(!out2.exists(), "a refused merge writes nothing");
}

#[test]
fn quantize_on_two_devices_trains_the_q_one_device_does() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("tiny_gray_f16");
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "quantize",
            "--model",
            model.to_str().unwrap(),
            "--num-images",
            "6",
            "--synth-iters",
            "3",
            "--synth-batch",
            "2",
            "--epochs",
            "2",
            "--refresh-every",
            "1",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ok(&args);
        std::fs::read(out.join("quantized.safetensors")).unwrap()
    };
    // Named, so that WGPU_BACKEND (the suite's GL run) does not pick the one-device run's adapter.
    let one = run(&tmp.path().join("one"), &["--adapters", "vulkan"]);
    let two = run(&tmp.path().join("two"), &["--adapters", "vulkan,vulkan"]);
    // Tensor by tensor (the metadata's order may differ between runs).
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&one).unwrap(),
        safetensors::SafeTensors::deserialize(&two).unwrap(),
    );
    let mut names = a.names();
    names.sort();
    assert!(!names.is_empty());
    for name in names {
        let same = b.tensor(name).is_ok_and(|t| t.data() == a.tensor(name).unwrap().data());
        assert!(same, "Q's {name} after synthesis on two devices differs from one device's");
    }
}

/// `compare --adapters LIST --bits W4A4 --kernels` on the bundled model finds no difference
/// anywhere: logits, every site's codes, the weight codes, the synthesis, and no kernel launch
/// from the same inputs.
fn assert_compare_finds_no_difference(adapters: &str) {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/fashion_vit");
    let data = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/fashion-mnist-test-slice/t10k-images-idx3-ubyte.gz");
    let out = maskaq(&[
        "compare",
        "--adapters",
        adapters,
        "--model",
        model.to_str().unwrap(),
        "--bits",
        "W4A4",
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "40",
        "--probe",
        "4",
        "--synth-iters",
        "3",
        "--synth-batch",
        "2",
        "--kernels",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pair = &r["pairs"][0];
    assert_eq!(pair["top1_agreement"].as_f64(), Some(100.0), "{pair}");
    assert_eq!(pair["max_logit_diff"].as_f64(), Some(0.0), "{pair}");
    let sites = pair["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 33, "every activation site is probed");
    for s in sites {
        assert!(s["codes"].as_u64().unwrap() > 0 && s["differing"].as_u64() == Some(0), "{s}");
    }
    assert!(pair["weights"].as_array().unwrap().iter().all(|w| w["differing"].as_u64() == Some(0)));
    let synth = &pair["synth"];
    assert_eq!(synth["iterations"].as_u64(), Some(3), "{synth}");
    assert!(
        synth["first_differing_iteration"].is_null() && synth["max_pixel_diff"].as_f64() == Some(0.0),
        "{synth}"
    );
    let k = &r["kernels"][0];
    assert!(
        k["forward_launches"].as_u64().unwrap() > 100 && k["backward_launches"].as_u64().unwrap() > 100,
        "{k}"
    );
    assert_eq!(k["differing"].as_array().map(Vec::len), Some(0), "{k}");
}

#[test]
fn compare_finds_no_difference_between_two_devices_of_one_adapter() {
    assert_compare_finds_no_difference("vulkan,vulkan");
}

/// Both are llvmpipe, through two shader compilers (SPIR-V into lavapipe, GLSL into Mesa's GL).
/// With WGSL's `dot` they rounded the matmuls differently (docs/results.md §18); every product
/// over k is now spelled out as fused multiply-adds (shaders/dot.wgsl).
#[test]
fn vulkan_and_gl_compute_alike_bit_for_bit() {
    assert_compare_finds_no_difference("vulkan,gl");
}

/// The launch-by-launch trace pins a difference on the kernel that makes it: a second device
/// whose quantizer division is off by 3 ULP differs only in launches of kernels that divide by
/// a quantizer step, and two plain devices differ nowhere.
#[test]
fn the_kernel_trace_finds_the_kernel_that_computes_differently() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/fashion_vit");
    let data_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/fashion-mnist-test-slice/t10k-images-idx3-ubyte.gz");
    let (cfg, file) = resolve(&model, None).unwrap();
    let weights = load_weights(&cfg, &file).unwrap();
    let data = maskaq::data::dataset::open(&data_path).unwrap();
    let job = maskaq::compare::Job {
        cfg: &cfg,
        weights: &weights,
        quantized: None,
        bits: Some(Bits { w: 4, a: 4 }),
        data: data.as_ref(),
        limit: None,
        probe: 2,
        synth_iters: 0,
        synth_batch: 1,
        seed: 0,
    };
    let trace = |gpus: &[Gpu]| {
        let hidden = maskaq::progress::Progress::hidden();
        maskaq::compare::kernels::compare_kernels(&gpus[0], &gpus[1], [0, 1], &job, &hidden).unwrap()
    };
    let plain = trace(&open("vulkan,vulkan"));
    assert!(plain.differing.is_empty(), "{:?}", plain.differing);
    let mut gpus = open("vulkan,vulkan");
    gpus[1].div_error_ulp = 3;
    let off = trace(&gpus);
    assert!(!off.differing.is_empty(), "a 3-ULP division error changed no launch");
    let dividing: Vec<&str> = maskaq::ops::SHADERS
        .iter()
        .filter(|(_, src)| src.contains("adapter_div("))
        .map(|(_, src)| *src)
        .collect();
    for d in &off.differing {
        let name = &d.kernel[1];
        let divides = dividing.iter().any(|src| src.contains(&format!("fn {name}(")));
        assert!(divides, "{} launch {} ({name}) differs but never divides by a step", d.pass, d.index);
    }
}

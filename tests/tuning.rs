//! The kernel tuner (src/tune.rs) and the per-adapter tuning cache (src/gpu/tune.rs): picks
//! follow measured time (a deliberately slowed test-only variant is never picked), picks
//! round-trip through the cache file and are used by later devices, a corrupt or stale cache
//! is ignored, `--tune off` ignores the cache, and `--tune build` measures missing shapes.

mod common;

use std::path::Path;

use maskaq::gpu::tune::TuneMode;
use maskaq::gpu::{Gpu, GpuOptions, Tunable};
use maskaq::ops::matmul::{Matmul, View};
use maskaq::ops::matmul_variants::{default_variant, untuned};
use maskaq::tune::{fastest, measure};

fn gpu_with(mode: TuneMode, cache: &Path) -> Gpu {
    let opts = GpuOptions { tune: mode, tune_cache: Some(cache.to_path_buf()), ..Default::default() };
    Gpu::new(&opts).expect("a GPU adapter (lavapipe without a GPU)")
}

/// x Wᵀ: both operands along k, so the vec4 variants apply and the default is not the
/// reference kernel.
fn nt_product() -> Matmul {
    Matmul::new(40, 24, 32, View::rows(32), View::rows(32).t(), View::rows(24))
}

#[test]
fn tuner_picks_by_measured_time_and_never_the_slowed_variant() {
    let mut gpu = common::gpu();
    gpu.test_variants = true;
    // Offsets of 1: no vec4 variant applies, so the candidates are the scalar kernel, the
    // tiled one and the test-only kernel that does the scalar kernel's work eight times.
    let mm = Matmul::new(96, 80, 64, View::rows(65).at(1), View::rows(81).at(1), View::rows(80));
    let times = measure(&gpu, &mm, 3).unwrap();
    let ids: Vec<&str> = times.iter().map(|t| t.variant.as_str()).collect();
    assert!(ids.contains(&"matmul_slow_test") && ids.contains(&"matmul_regs"), "candidates {ids:?}");
    assert!(times.iter().all(|t| t.passed), "every variant computes the product: {times:?}");
    let ms = |id: &str| times.iter().find(|t| t.variant == id).unwrap().ms;
    assert!(ms("matmul_slow_test") > ms("matmul_regs"), "the slowed variant must measure slower: {times:?}");
    let pick = fastest(&times).unwrap();
    let min = times.iter().map(|t| t.ms).fold(f64::INFINITY, f64::min);
    assert_eq!(pick.ms, min, "the pick is the fastest measured");
    assert_ne!(pick.variant, "matmul_slow_test");
    // Without the test switch the slowed variant is not even a candidate.
    gpu.test_variants = false;
    assert!(!mm.variants(&gpu).iter().any(|k| k.id == "matmul_slow_test"));
}

#[test]
fn a_failing_variant_is_never_picked() {
    let gpu = common::gpu();
    let mm = nt_product();
    let mut times = measure(&gpu, &mm, 1).unwrap();
    // Mark the fastest as failed (as a wrong result would): the next fastest is picked.
    let best = fastest(&times).unwrap().variant.clone();
    for t in &mut times {
        if t.variant == best {
            t.passed = false;
            t.ms = 0.0;
        }
    }
    assert_ne!(fastest(&times).unwrap().variant, best);
}

#[test]
fn picks_round_trip_through_the_cache_and_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kernels.json");
    let mm = nt_product();
    let g1 = gpu_with(TuneMode::Cache, &path);
    assert!(g1.tuning.is_empty());
    let default = default_variant(&mm, g1.cpu_like).kernel.id;
    assert_ne!(default, "matmul_regs");
    g1.tuning.insert("matmul", &mm.key(), "matmul_regs");
    assert_eq!(mm.variant(&g1).kernel.id, "matmul_regs", "a pick in memory is used");
    g1.tuning.save().unwrap();
    drop(g1);

    let g2 = gpu_with(TuneMode::Cache, &path);
    assert_eq!(g2.tuning.len(), 1);
    assert_eq!(g2.tuning.pick("matmul", &mm.key()).as_deref(), Some("matmul_regs"));
    assert_eq!(mm.variant(&g2).kernel.id, "matmul_regs", "a later device uses the stored pick");
    // A pick that does not apply to a product's layout is not used for it.
    let unaligned = Matmul::new(40, 24, 30, View::rows(30), View::rows(30).t(), View::rows(24));
    g2.tuning.insert("matmul", &unaligned.key(), "matmul_nt4");
    assert_ne!(unaligned.variant(&g2).kernel.id, "matmul_nt4");

    let off = gpu_with(TuneMode::Off, &path);
    assert_eq!(mm.variant(&off).kernel.id, untuned(&mm, &off).kernel.id, "--tune off ignores the cache");
    assert_ne!(mm.variant(&off).kernel.id, "matmul_regs");
}

#[test]
fn corrupt_or_stale_caches_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kernels.json");
    std::fs::write(&path, "{ not json").unwrap();
    let g = gpu_with(TuneMode::Cache, &path);
    assert!(g.tuning.is_empty(), "a corrupt cache holds no picks");
    // A cache written for other shader sources (or by another version) is stale.
    g.tuning.insert("matmul", &nt_product().key(), "matmul_regs");
    g.tuning.save().unwrap();
    drop(g);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["shaders"] = serde_json::Value::String("0000000000000000".into());
    std::fs::write(&path, v.to_string()).unwrap();
    let g = gpu_with(TuneMode::Cache, &path);
    assert!(g.tuning.is_empty(), "a stale cache holds no picks");
    assert_eq!(nt_product().variant(&g).kernel.id, untuned(&nt_product(), &g).kernel.id);
}

#[test]
fn tune_build_measures_shapes_the_cache_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("kernels.json");
    let g = gpu_with(TuneMode::Build, &path);
    let mm = nt_product();
    let chosen = mm.variant(&g).kernel.id;
    assert_eq!(g.tuning.pick("matmul", &mm.key()).as_deref(), Some(chosen), "the measured pick is used");
    assert!(path.exists(), "the pick is saved at once");
    let again = gpu_with(TuneMode::Cache, &path);
    assert_eq!(mm.variant(&again).kernel.id, chosen);
}

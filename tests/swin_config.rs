//! Swin configs: timm's named architectures, custom `model_args`, and the geometries maskaq
//! refuses (those timm only runs by padding, head counts that do not divide the width, ambiguous
//! window lists), each with a one-line error naming the field.

use maskaq::model::ModelConfig;
use serde_json::json;

fn custom(args: serde_json::Value) -> anyhow::Result<ModelConfig> {
    ModelConfig::from_json(&json!({
        "architecture": "swin_tiny_patch4_window7_224",
        "num_classes": 10,
        "model_args": args,
    }))
}

fn refused(args: serde_json::Value, field: &str) {
    let err = format!("{:#}", custom(args.clone()).expect_err(&format!("{args} was accepted")));
    assert!(err.contains(field), "{args}: the error does not name `{field}`: {err}");
    assert!(!err.contains('\n'), "{args}: not one line: {err}");
}

fn tiny() -> serde_json::Value {
    json!({"img_size": 28, "patch_size": 2, "in_chans": 1, "embed_dim": 16, "depths": [2, 2],
           "num_heads": [2, 4], "window_size": 7})
}

fn with(key: &str, value: serde_json::Value) -> serde_json::Value {
    let mut v = tiny();
    v[key] = value;
    v
}

#[test]
fn named_swins_have_timms_tensors() {
    for (name, tensors, params) in [
        ("swin_tiny_patch4_window7_224", 173, 28_288_354usize),
        ("swin_small_patch4_window7_224", 329, 49_606_258),
        ("swin_base_patch4_window7_224", 329, 87_768_224),
    ] {
        let cfg = ModelConfig::from_arch(name).unwrap();
        let shapes = cfg.tensor_shapes();
        assert_eq!(shapes.len(), tensors, "{name}");
        assert_eq!(shapes.iter().map(|(_, s)| s.iter().product::<usize>()).sum::<usize>(), params, "{name}");
        assert_eq!(cfg.eps, 1e-5, "Swin's LayerNorm epsilon");
        assert_eq!(cfg.describe(), name);
    }
    assert_eq!(ModelConfig::from_arch("deit_tiny_patch16_224").unwrap().eps, 1e-6, "ViT's LayerNorm epsilon");
}

#[test]
fn custom_swins_are_read_like_timm() {
    let cfg = custom(tiny()).unwrap();
    let sw = cfg.swin().unwrap();
    let (s0, s1) = (sw.stage(cfg.grid(), 0), sw.stage(cfg.grid(), 1));
    assert_eq!((s0.grid, s0.dim, s0.window, s0.shift, s0.windows()), (14, 16, 7, 3, 4));
    assert_eq!((s1.grid, s1.dim, s1.window, s1.shift, s1.windows()), (7, 32, 7, 0, 1));
    assert!(cfg.describe().starts_with("custom Swin: 28 px, 1 channel, patch 2"), "{}", cfg.describe());
    // A window larger than a stage's grid is clamped to it (and that stage does not shift), as
    // is its bias table.
    let cfg = custom(with("window_size", json!(14))).unwrap();
    let sw = cfg.swin().unwrap();
    let (s0, s1) = (sw.stage(cfg.grid(), 0), sw.stage(cfg.grid(), 1));
    assert_eq!((s0.window, s0.shift, s1.window, s1.shift), (14, 0, 7, 0));
    let table = cfg
        .tensor_shapes()
        .into_iter()
        .find(|(n, _)| n == "layers.1.blocks.0.attn.relative_position_bias_table");
    assert_eq!(table.unwrap().1, vec![169, 4]);
    // Per-stage windows, and timm's (h, w) pair when there are not two stages.
    let three = json!({"img_size": 32, "patch_size": 2, "embed_dim": 12, "depths": [2, 2, 2],
                       "num_heads": [2, 2, 4], "window_size": [4, 4, 4], "in_chans": 3});
    assert_eq!(custom(three.clone()).unwrap().swin().unwrap().window_size, vec![4, 4, 4]);
    let mut pair = three;
    pair["window_size"] = json!([4, 4]);
    assert_eq!(custom(pair).unwrap().swin().unwrap().window_size, vec![4, 4, 4]);
    // The config round-trips through timm's JSON layout.
    let cfg = custom(tiny()).unwrap();
    assert_eq!(ModelConfig::from_json(&cfg.to_json()).unwrap(), cfg);
}

#[test]
fn a_grid_that_is_not_a_multiple_of_its_window_is_refused() {
    // 32 / 2 = 16 tokens per side, windows of 7: timm pads.
    refused(with("img_size", json!(32)), "model_args.window_size");
}

#[test]
fn an_odd_grid_before_a_merge_is_refused() {
    // 28 / 4 = 7 tokens per side, merged before stage 1: timm pads.
    refused(with("patch_size", json!(4)), "model_args.img_size");
}

#[test]
fn heads_that_do_not_divide_the_width_are_refused() {
    refused(with("num_heads", json!([3, 4])), "model_args.num_heads[0]");
    refused(with("head_dim", json!(4)), "model_args.head_dim");
}

#[test]
fn ambiguous_or_mismatched_lists_are_refused() {
    refused(with("window_size", json!([7, 7])), "model_args.window_size");
    refused(with("window_size", json!([7, 7, 7])), "model_args.window_size");
    refused(with("window_size", json!([6, 8, 7, 7])), "model_args.window_size");
    refused(with("num_heads", json!([2, 4, 8])), "model_args.num_heads");
    refused(with("embed_dim", json!([16, 32])), "model_args.embed_dim");
    refused(with("depths", json!([])), "model_args.depths");
}

#[test]
fn unsupported_swin_options_are_refused() {
    refused(with("always_partition", json!(true)), "model_args.always_partition");
    refused(with("qkv_bias", json!(false)), "model_args.qkv_bias");
    refused(with("global_pool", json!("")), "model_args.global_pool");
    refused(with("patch_norm", json!(false)), "model_args.patch_norm");
}

/// Swin checkpoints that still carry the relative-position index and the shift mask load; the
/// buffers are recomputed, never read.
#[test]
fn stored_index_and_mask_buffers_are_ignored() {
    let cfg = custom(tiny()).unwrap();
    let shapes = cfg.tensor_shapes();
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .iter()
        .map(|(n, s)| (n.clone(), s.clone(), vec![0u8; 4 * s.iter().product::<usize>()]))
        .collect();
    data.push(("layers.0.blocks.1.attn_mask".into(), vec![4, 49, 49], vec![0u8; 4 * 4 * 49 * 49]));
    data.push(("layers.0.blocks.0.attn.relative_position_index".into(), vec![2401], vec![0u8; 4 * 2401]));
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, s, b)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("maskaq-swin-buffers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    let w = maskaq::model::checkpoint::load_weights(&cfg, &path).expect("buffers are ignored");
    assert_eq!(w.tensors.len(), shapes.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

//! Model configs in timm's Hugging Face `config.json` layout, for every architecture maskaq
//! knows (ViT/DeiT in `vit.rs`, Swin in `swin.rs`).
//!
//! A config is a known timm architecture name (which fixes the defaults) plus optional
//! `model_args` overrides and a `pretrained_cfg` with the preprocessing, exactly as
//! `timm.create_model(cfg["architecture"], num_classes=..., **cfg["model_args"])` reads it.

mod swin;
mod vit;

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Map, Value};

pub use swin::{SwinDims, SwinStage};
pub use vit::VitDims;

/// Everything needed to build the graph and preprocess its input.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ModelConfig {
    pub architecture: String,
    pub img_size: usize,
    pub patch_size: usize,
    pub in_chans: usize,
    pub num_classes: usize,
    /// LayerNorm epsilon (timm ViT/DeiT: 1e-6; Swin: 1e-5).
    pub eps: f32,
    /// The architecture's own dimensions.
    pub arch: Arch,
    pub preprocess: Preprocess,
    /// Class names from the config's `label_names`, where it has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_names: Option<Vec<String>>,
}

/// The topology and its dimensions.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub enum Arch {
    Vit(VitDims),
    Swin(SwinDims),
}

/// timm's eval transform: resize the shorter side to floor(size / crop_pct), center crop,
/// normalise with mean/std.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Preprocess {
    pub input_size: [usize; 3],
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub crop_pct: f32,
    pub interpolation: String,
}

pub(crate) const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub(crate) const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Every architecture name maskaq knows.
pub fn known_architectures() -> Vec<&'static str> {
    vit::KNOWN.iter().map(|k| k.0).chain(swin::KNOWN.iter().map(|k| k.0)).collect()
}

impl ModelConfig {
    /// The timm defaults of a named architecture (a pretrained tag such as `.augreg_in21k` is ignored).
    pub fn from_arch(name: &str) -> Result<ModelConfig> {
        let base = name.split('.').next().unwrap_or(name);
        if let Some(cfg) = vit::from_arch(base) {
            return Ok(cfg);
        }
        if let Some(cfg) = swin::from_arch(base) {
            return Ok(cfg);
        }
        bail!(
            "unknown architecture `{name}`; maskaq knows: {} (smaller models: a config.json with \
             one of these plus model_args)",
            known_architectures().join(", ")
        )
    }

    /// Reads a timm Hugging Face `config.json`.
    pub fn from_json_file(path: &Path) -> Result<ModelConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))?;
        Self::from_json(&v).with_context(|| format!("{}", path.display()))
    }

    pub fn from_json(v: &Value) -> Result<ModelConfig> {
        let obj = v.as_object().context("config must be a JSON object")?;
        let arch = obj
            .get("architecture")
            .and_then(Value::as_str)
            .context("config has no string field `architecture`")?;
        let mut cfg = ModelConfig::from_arch(arch)?;
        let empty = Map::new();
        let args = match obj.get("model_args") {
            Some(Value::Object(m)) => m,
            Some(_) => bail!("`model_args` must be an object"),
            None => &empty,
        };
        match cfg.arch {
            Arch::Vit(_) => vit::read_model_args(&mut cfg, args)?,
            Arch::Swin(_) => swin::read_model_args(&mut cfg, args)?,
        }
        if let Some(n) = obj.get("num_classes") {
            cfg.num_classes =
                n.as_u64().filter(|&n| n > 0).context("`num_classes` must be a positive integer")? as usize;
        }
        // timm's default pretrained_cfg follows the architecture's input size.
        cfg.preprocess.input_size = [cfg.in_chans, cfg.img_size, cfg.img_size];
        if cfg.preprocess.mean.len() != cfg.in_chans {
            cfg.preprocess.mean = vec![cfg.preprocess.mean[0]; cfg.in_chans];
            cfg.preprocess.std = vec![cfg.preprocess.std[0]; cfg.in_chans];
        }
        if let Some(pc) = obj.get("pretrained_cfg") {
            cfg.read_pretrained_cfg(pc).context("in `pretrained_cfg`")?;
        }
        if let Some(names) = obj.get("label_names") {
            let names: Vec<String> = names
                .as_array()
                .context("`label_names` must be an array of strings")?
                .iter()
                .map(|v| v.as_str().map(str::to_string).context("`label_names` must hold strings"))
                .collect::<Result<_>>()?;
            if names.len() != cfg.num_classes {
                bail!("`label_names` has {} names for {} classes", names.len(), cfg.num_classes);
            }
            cfg.label_names = Some(names);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn read_pretrained_cfg(&mut self, pc: &Value) -> Result<()> {
        let pc = pc.as_object().context("must be an object")?;
        let floats = |key: &str| -> Result<Option<Vec<f32>>> {
            match pc.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_f64().map(|f| f as f32).with_context(|| format!("`{key}` must hold numbers"))
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(Some),
                Some(_) => bail!("`{key}` must be an array"),
            }
        };
        if let Some(sz) = floats("input_size")? {
            if sz.len() != 3 || sz.iter().any(|&v| v < 1.0 || v.fract() != 0.0) {
                bail!("`input_size` must be [channels, height, width]");
            }
            self.preprocess.input_size = [sz[0] as usize, sz[1] as usize, sz[2] as usize];
        }
        if let Some(m) = floats("mean")? {
            self.preprocess.mean = m;
        }
        if let Some(s) = floats("std")? {
            self.preprocess.std = s;
        }
        if let Some(c) = pc.get("crop_pct").and_then(Value::as_f64) {
            self.preprocess.crop_pct = c as f32;
        }
        if let Some(i) = pc.get("interpolation").and_then(Value::as_str) {
            self.preprocess.interpolation = i.to_string();
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<()> {
        if self.patch_size > self.img_size {
            bail!("patch_size {} is larger than img_size {}", self.patch_size, self.img_size);
        }
        if !self.img_size.is_multiple_of(self.patch_size) {
            bail!(
                "img_size {} is not a multiple of patch_size {} (maskaq needs whole patches)",
                self.img_size,
                self.patch_size
            );
        }
        match &self.arch {
            Arch::Vit(v) => v.validate()?,
            Arch::Swin(s) => s.validate(self.grid())?,
        }
        let p = &self.preprocess;
        if p.input_size != [self.in_chans, self.img_size, self.img_size] {
            bail!(
                "pretrained_cfg.input_size {:?} does not match the model ({} channels, {} px)",
                p.input_size,
                self.in_chans,
                self.img_size
            );
        }
        if p.mean.len() != self.in_chans || p.std.len() != self.in_chans {
            bail!("pretrained_cfg mean/std need {} values (one per input channel)", self.in_chans);
        }
        if p.std.iter().any(|&s| s <= 0.0) {
            bail!("pretrained_cfg std must be positive");
        }
        if !(p.crop_pct > 0.0 && p.crop_pct <= 1.0) {
            bail!("pretrained_cfg crop_pct must be in (0, 1], found {}", p.crop_pct);
        }
        Ok(())
    }

    /// The timm Hugging Face `config.json` object for this config (what timm's
    /// `save_pretrained` writes and [`ModelConfig::from_json`] reads).
    pub fn to_json(&self) -> Value {
        let p = &self.preprocess;
        let (num_features, global_pool, args) = match &self.arch {
            Arch::Vit(v) => (v.embed_dim, "token", v.model_args()),
            Arch::Swin(s) => (s.num_features(), "avg", s.model_args()),
        };
        let mut model_args = serde_json::json!({
            "img_size": self.img_size,
            "patch_size": self.patch_size,
            "in_chans": self.in_chans,
        });
        for (k, v) in args {
            model_args[k] = v;
        }
        let mut v = serde_json::json!({
            "architecture": self.architecture,
            "num_classes": self.num_classes,
            "num_features": num_features,
            "global_pool": global_pool,
            "model_args": model_args,
            "pretrained_cfg": {
                "input_size": p.input_size,
                "mean": p.mean,
                "std": p.std,
                "crop_pct": p.crop_pct,
                "interpolation": p.interpolation,
                "num_classes": self.num_classes,
            },
        });
        if let Some(names) = &self.label_names {
            v["label_names"] = serde_json::json!(names);
        }
        v
    }

    /// What the model is, for logs: its timm name when it has that architecture's shape,
    /// otherwise its own dimensions (a small custom model is not a `vit_tiny_patch16_224`).
    pub fn describe(&self) -> String {
        let named = ModelConfig::from_arch(&self.architecture).is_ok_and(|a| {
            (a.img_size, a.patch_size, a.in_chans, a.num_classes, &a.arch)
                == (self.img_size, self.patch_size, self.in_chans, self.num_classes, &self.arch)
        });
        if named {
            return self.architecture.clone();
        }
        let chans = format!("{} channel{}", self.in_chans, if self.in_chans == 1 { "" } else { "s" });
        let dims = match &self.arch {
            Arch::Vit(v) => v.describe(),
            Arch::Swin(s) => s.describe(),
        };
        let (kind, dims) = dims;
        format!(
            "custom {kind}: {} px, {chans}, patch {}, {dims}, {} classes",
            self.img_size, self.patch_size, self.num_classes
        )
    }

    /// The ViT/DeiT dimensions, if this is one.
    pub fn vit(&self) -> Option<&VitDims> {
        match &self.arch {
            Arch::Vit(v) => Some(v),
            Arch::Swin(_) => None,
        }
    }

    /// The Swin dimensions, if this is one.
    pub fn swin(&self) -> Option<&SwinDims> {
        match &self.arch {
            Arch::Swin(s) => Some(s),
            Arch::Vit(_) => None,
        }
    }

    /// Patches per side of the input.
    pub fn grid(&self) -> usize {
        self.img_size / self.patch_size
    }

    /// Every tensor of the checkpoint, in timm `state_dict` order, with its shape.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let conv = vec![self.in_chans, self.patch_size, self.patch_size];
        match &self.arch {
            Arch::Vit(v) => v.tensor_shapes(self.grid(), &conv, self.num_classes),
            Arch::Swin(s) => s.tensor_shapes(self.grid(), &conv, self.num_classes),
        }
    }

    /// Multiply-accumulates of one forward pass for one image (the matrix products).
    pub fn macs_per_image(&self) -> f64 {
        let embed = (self.grid() * self.grid() * self.in_chans * self.patch_size * self.patch_size) as f64;
        match &self.arch {
            Arch::Vit(v) => embed * v.embed_dim as f64 + v.macs(self.grid(), self.num_classes),
            Arch::Swin(s) => embed * s.embed_dim as f64 + s.macs(self.grid(), self.num_classes),
        }
    }

    /// A buffer some checkpoints carry that maskaq computes itself and ignores in a file: Swin's
    /// `relative_position_index` and `attn_mask` (older timm and the Microsoft layout store
    /// them; timm ≥ 0.9 does not).
    pub fn is_recomputed_buffer(&self, name: &str) -> bool {
        self.swin().is_some()
            && name.starts_with("layers.")
            && (name.ends_with(".attn.relative_position_index") || name.ends_with(".attn_mask"))
    }

    /// Elements of the largest activation tensor of one image (for memory checks).
    pub fn largest_activation_per_image(&self) -> usize {
        match &self.arch {
            Arch::Vit(v) => v.largest_activation(self.grid()),
            Arch::Swin(s) => s.largest_activation(self.grid()),
        }
    }
}

/// One pre-norm transformer block's tensors in timm's `state_dict` order, under `prefix`; a Swin
/// block also has its relative-position bias table `[(2w - 1)², heads]` after `norm1`.
pub(crate) fn block_tensors(
    v: &mut Vec<(String, Vec<usize>)>,
    prefix: &str,
    d: usize,
    hidden: usize,
    table: Option<[usize; 2]>,
) {
    let n = |x: &str| format!("{prefix}.{x}");
    v.push((n("norm1.weight"), vec![d]));
    v.push((n("norm1.bias"), vec![d]));
    if let Some(t) = table {
        v.push((n("attn.relative_position_bias_table"), t.to_vec()));
    }
    for (name, shape) in [
        ("attn.qkv.weight", vec![3 * d, d]),
        ("attn.qkv.bias", vec![3 * d]),
        ("attn.proj.weight", vec![d, d]),
        ("attn.proj.bias", vec![d]),
        ("norm2.weight", vec![d]),
        ("norm2.bias", vec![d]),
        ("mlp.fc1.weight", vec![hidden, d]),
        ("mlp.fc1.bias", vec![hidden]),
        ("mlp.fc2.weight", vec![d, hidden]),
        ("mlp.fc2.bias", vec![d]),
    ] {
        v.push((n(name), shape));
    }
}

/// The `model_args` every architecture has; false when `key` is not one of them.
pub(crate) fn read_common_arg(cfg: &mut ModelConfig, key: &str, val: &Value) -> Result<bool> {
    match key {
        "img_size" => cfg.img_size = img_size(val)?,
        "patch_size" => cfg.patch_size = positive(key, val)?,
        "in_chans" => cfg.in_chans = positive(key, val)?,
        "num_classes" => cfg.num_classes = positive(key, val)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// `model_args.KEY` as a positive integer.
pub(crate) fn positive(key: &str, val: &Value) -> Result<usize> {
    val.as_u64()
        .filter(|&n| n > 0)
        .map(|n| n as usize)
        .with_context(|| format!("model_args.{key} must be a positive integer, found {val}"))
}

/// `model_args.img_size`: an integer or a square [h, w].
pub(crate) fn img_size(val: &Value) -> Result<usize> {
    match val {
        Value::Array(a) if a.len() == 2 && a[0] == a[1] => {
            Ok(a[0].as_u64().context("model_args.img_size: expected integers")? as usize)
        }
        Value::Array(_) => bail!("model_args.img_size must be one integer or a square [h, w], found {val}"),
        _ => positive("img_size", val),
    }
}

/// `model_args.mlp_ratio` as a positive number.
pub(crate) fn mlp_ratio(val: &Value) -> Result<f64> {
    val.as_f64()
        .filter(|r| *r > 0.0)
        .with_context(|| format!("model_args.mlp_ratio must be a positive number, found {val}"))
}

//! ViT/DeiT architecture configs in timm's Hugging Face `config.json` layout.
//!
//! A config is a known timm architecture name (which fixes the defaults) plus optional
//! `model_args` overrides and a `pretrained_cfg` with the preprocessing, exactly as
//! `timm.create_model(cfg["architecture"], num_classes=..., **cfg["model_args"])` reads it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Map, Value};

/// Everything needed to build the graph and preprocess its input.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct VitConfig {
    pub architecture: String,
    pub img_size: usize,
    pub patch_size: usize,
    pub in_chans: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_hidden: usize,
    pub num_classes: usize,
    /// DeiT distilled: a distillation token and a second head, averaged at inference.
    pub distilled: bool,
    /// LayerNorm epsilon (timm ViT/DeiT: 1e-6).
    pub eps: f32,
    pub preprocess: Preprocess,
    /// Class names from the config's `label_names`, where it has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_names: Option<Vec<String>>,
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

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The architectures maskaq knows by name: (name, embed_dim, num_heads, distilled, deit-style preprocessing).
const KNOWN: &[(&str, usize, usize, bool, bool)] = &[
    ("vit_tiny_patch16_224", 192, 3, false, false),
    ("vit_small_patch16_224", 384, 6, false, false),
    ("vit_base_patch16_224", 768, 12, false, false),
    ("deit_tiny_patch16_224", 192, 3, false, true),
    ("deit_small_patch16_224", 384, 6, false, true),
    ("deit_base_patch16_224", 768, 12, false, true),
    ("deit_tiny_distilled_patch16_224", 192, 3, true, true),
    ("deit_small_distilled_patch16_224", 384, 6, true, true),
    ("deit_base_distilled_patch16_224", 768, 12, true, true),
];

pub fn known_architectures() -> Vec<&'static str> {
    KNOWN.iter().map(|k| k.0).collect()
}

impl VitConfig {
    /// The timm defaults of a named architecture (a pretrained tag such as `.augreg_in21k` is ignored).
    pub fn from_arch(name: &str) -> Result<VitConfig> {
        let base = name.split('.').next().unwrap_or(name);
        let Some(&(arch, d, h, distilled, deit)) = KNOWN.iter().find(|k| k.0 == base) else {
            bail!(
                "unknown architecture `{name}`; maskaq knows: {} (smaller models: a config.json with \
                 one of these plus model_args)",
                known_architectures().join(", ")
            );
        };
        let (mean, std) =
            if deit { (IMAGENET_MEAN.to_vec(), IMAGENET_STD.to_vec()) } else { (vec![0.5; 3], vec![0.5; 3]) };
        Ok(VitConfig {
            architecture: arch.to_string(),
            img_size: 224,
            patch_size: 16,
            in_chans: 3,
            embed_dim: d,
            depth: 12,
            num_heads: h,
            mlp_hidden: 4 * d,
            num_classes: 1000,
            distilled,
            eps: 1e-6,
            preprocess: Preprocess {
                input_size: [3, 224, 224],
                mean,
                std,
                crop_pct: 0.9,
                interpolation: "bicubic".into(),
            },
            label_names: None,
        })
    }

    /// Reads a timm Hugging Face `config.json`.
    pub fn from_json_file(path: &Path) -> Result<VitConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))?;
        Self::from_json(&v).with_context(|| format!("{}", path.display()))
    }

    pub fn from_json(v: &Value) -> Result<VitConfig> {
        let obj = v.as_object().context("config must be a JSON object")?;
        let arch = obj
            .get("architecture")
            .and_then(Value::as_str)
            .context("config has no string field `architecture`")?;
        let mut cfg = VitConfig::from_arch(arch)?;
        let empty = Map::new();
        let args = match obj.get("model_args") {
            Some(Value::Object(m)) => m,
            Some(_) => bail!("`model_args` must be an object"),
            None => &empty,
        };
        let mut mlp_ratio = None;
        for (key, val) in args {
            let num = || -> Result<usize> {
                val.as_u64()
                    .filter(|&n| n > 0)
                    .map(|n| n as usize)
                    .with_context(|| format!("model_args.{key} must be a positive integer, found {val}"))
            };
            match key.as_str() {
                "img_size" => {
                    cfg.img_size = match val {
                        Value::Array(a) if a.len() == 2 && a[0] == a[1] => {
                            a[0].as_u64().context("model_args.img_size: expected integers")? as usize
                        }
                        _ => num()?,
                    }
                }
                "patch_size" => cfg.patch_size = num()?,
                "in_chans" => cfg.in_chans = num()?,
                "embed_dim" => cfg.embed_dim = num()?,
                "depth" => cfg.depth = num()?,
                "num_heads" => cfg.num_heads = num()?,
                "num_classes" => cfg.num_classes = num()?,
                "mlp_ratio" => {
                    mlp_ratio = Some(val.as_f64().filter(|r| *r > 0.0).with_context(|| {
                        format!("model_args.mlp_ratio must be a positive number, found {val}")
                    })?)
                }
                "qkv_bias" | "class_token" if val == &Value::Bool(true) => {}
                "global_pool" if val == "token" => {}
                // Regularisers are identity at inference and in maskaq's training.
                "drop_rate" | "pos_drop_rate" | "proj_drop_rate" | "attn_drop_rate" | "drop_path_rate" => {}
                _ => bail!("model_args.{key} = {val} is not supported by maskaq (only plain timm ViT/DeiT)"),
            }
        }
        if let Some(n) = obj.get("num_classes") {
            cfg.num_classes =
                n.as_u64().filter(|&n| n > 0).context("`num_classes` must be a positive integer")? as usize;
        }
        cfg.mlp_hidden = (cfg.embed_dim as f64 * mlp_ratio.unwrap_or(4.0)) as usize;
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
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            bail!("embed_dim {} is not divisible by num_heads {}", self.embed_dim, self.num_heads);
        }
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
        if self.mlp_hidden == 0 {
            bail!("mlp_ratio gives an MLP of 0 channels at embed_dim {}", self.embed_dim);
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
    /// `save_pretrained` writes and [`VitConfig::from_json`] reads).
    pub fn to_json(&self) -> serde_json::Value {
        let cfg = self;
        let p = &cfg.preprocess;
        let mut v = serde_json::json!({
            "architecture": cfg.architecture,
            "num_classes": cfg.num_classes,
            "num_features": cfg.embed_dim,
            "global_pool": "token",
            "model_args": {
                "img_size": cfg.img_size,
                "patch_size": cfg.patch_size,
                "in_chans": cfg.in_chans,
                "embed_dim": cfg.embed_dim,
                "depth": cfg.depth,
                "num_heads": cfg.num_heads,
                "mlp_ratio": cfg.mlp_hidden as f64 / cfg.embed_dim as f64,
            },
            "pretrained_cfg": {
                "input_size": p.input_size,
                "mean": p.mean,
                "std": p.std,
                "crop_pct": p.crop_pct,
                "interpolation": p.interpolation,
                "num_classes": cfg.num_classes,
            },
        });
        if let Some(names) = &cfg.label_names {
            v["label_names"] = serde_json::json!(names);
        }
        v
    }

    /// What the model is, for logs: its timm name when it has that architecture's shape,
    /// otherwise its own dimensions (a small custom model is not a `vit_tiny_patch16_224`).
    pub fn describe(&self) -> String {
        let same = VitConfig::from_arch(&self.architecture).is_ok_and(|a| {
            (
                a.img_size,
                a.patch_size,
                a.in_chans,
                a.embed_dim,
                a.depth,
                a.num_heads,
                a.mlp_hidden,
                a.num_classes,
            ) == (
                self.img_size,
                self.patch_size,
                self.in_chans,
                self.embed_dim,
                self.depth,
                self.num_heads,
                self.mlp_hidden,
                self.num_classes,
            )
        });
        if same {
            return self.architecture.clone();
        }
        format!(
            "custom {}: {} px, {} channel{}, patch {}, D {}, depth {}, {} heads, {} classes",
            if self.distilled { "DeiT (distilled)" } else { "ViT" },
            self.img_size,
            self.in_chans,
            if self.in_chans == 1 { "" } else { "s" },
            self.patch_size,
            self.embed_dim,
            self.depth,
            self.num_heads,
            self.num_classes
        )
    }

    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }
    pub fn grid(&self) -> usize {
        self.img_size / self.patch_size
    }
    pub fn patches(&self) -> usize {
        self.grid() * self.grid()
    }
    pub fn prefix_tokens(&self) -> usize {
        if self.distilled { 2 } else { 1 }
    }
    pub fn tokens(&self) -> usize {
        self.patches() + self.prefix_tokens()
    }

    /// Every tensor of the checkpoint, in timm `state_dict` order, with its shape.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (d, h, p, c) = (self.embed_dim, self.mlp_hidden, self.patch_size, self.in_chans);
        let mut v: Vec<(String, Vec<usize>)> = vec![("cls_token".into(), vec![1, 1, d])];
        if self.distilled {
            v.push(("dist_token".into(), vec![1, 1, d]));
        }
        v.push(("pos_embed".into(), vec![1, self.tokens(), d]));
        v.push(("patch_embed.proj.weight".into(), vec![d, c, p, p]));
        v.push(("patch_embed.proj.bias".into(), vec![d]));
        for i in 0..self.depth {
            let b = |s: &str| format!("blocks.{i}.{s}");
            v.push((b("norm1.weight"), vec![d]));
            v.push((b("norm1.bias"), vec![d]));
            v.push((b("attn.qkv.weight"), vec![3 * d, d]));
            v.push((b("attn.qkv.bias"), vec![3 * d]));
            v.push((b("attn.proj.weight"), vec![d, d]));
            v.push((b("attn.proj.bias"), vec![d]));
            v.push((b("norm2.weight"), vec![d]));
            v.push((b("norm2.bias"), vec![d]));
            v.push((b("mlp.fc1.weight"), vec![h, d]));
            v.push((b("mlp.fc1.bias"), vec![h]));
            v.push((b("mlp.fc2.weight"), vec![d, h]));
            v.push((b("mlp.fc2.bias"), vec![d]));
        }
        v.push(("norm.weight".into(), vec![d]));
        v.push(("norm.bias".into(), vec![d]));
        v.push(("head.weight".into(), vec![self.num_classes, d]));
        v.push(("head.bias".into(), vec![self.num_classes]));
        if self.distilled {
            v.push(("head_dist.weight".into(), vec![self.num_classes, d]));
            v.push(("head_dist.bias".into(), vec![self.num_classes]));
        }
        v
    }

    /// Multiply-accumulates of one forward pass for one image.
    pub fn macs_per_image(&self) -> f64 {
        let (n, d, h) = (self.tokens() as f64, self.embed_dim as f64, self.mlp_hidden as f64);
        let embed = self.patches() as f64 * d * (self.in_chans * self.patch_size * self.patch_size) as f64;
        let block = n * d * 3.0 * d + 2.0 * n * n * d + n * d * d + 2.0 * n * d * h;
        embed + self.depth as f64 * block + d * self.num_classes as f64 * self.prefix_tokens() as f64
    }
}

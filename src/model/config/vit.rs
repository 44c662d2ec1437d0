//! ViT/DeiT dimensions (`timm/models/vision_transformer.py`, `deit.py`).

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Arch, IMAGENET_MEAN, IMAGENET_STD, ModelConfig, Preprocess};

/// A plain ViT: `depth` global-attention blocks over a class token (plus a distillation token
/// for distilled DeiT) and the patch tokens.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct VitDims {
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_hidden: usize,
    /// DeiT distilled: a distillation token and a second head, averaged at inference.
    pub distilled: bool,
}

/// The ViT/DeiT architectures maskaq knows by name: (name, embed_dim, num_heads, distilled,
/// DeiT-style ImageNet preprocessing).
pub(super) const KNOWN: &[(&str, usize, usize, bool, bool)] = &[
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

pub(super) fn from_arch(base: &str) -> Option<ModelConfig> {
    let &(arch, d, h, distilled, deit) = KNOWN.iter().find(|k| k.0 == base)?;
    let (mean, std) =
        if deit { (IMAGENET_MEAN.to_vec(), IMAGENET_STD.to_vec()) } else { (vec![0.5; 3], vec![0.5; 3]) };
    Some(ModelConfig {
        architecture: arch.to_string(),
        img_size: 224,
        patch_size: 16,
        in_chans: 3,
        num_classes: 1000,
        eps: 1e-6,
        arch: Arch::Vit(VitDims { embed_dim: d, depth: 12, num_heads: h, mlp_hidden: 4 * d, distilled }),
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

pub(super) fn read_model_args(cfg: &mut ModelConfig, args: &Map<String, Value>) -> Result<()> {
    let mut ratio = None;
    for (key, val) in args {
        if super::read_common_arg(cfg, key, val)? {
            continue;
        }
        let Arch::Vit(v) = &mut cfg.arch else { unreachable!() };
        let num = || super::positive(key, val);
        match key.as_str() {
            "embed_dim" => v.embed_dim = num()?,
            "depth" => v.depth = num()?,
            "num_heads" => v.num_heads = num()?,
            "mlp_ratio" => ratio = Some(super::mlp_ratio(val)?),
            "qkv_bias" | "class_token" if val == &Value::Bool(true) => {}
            "global_pool" if val == "token" => {}
            // Regularisers are identity at inference and in maskaq's training.
            "drop_rate" | "pos_drop_rate" | "proj_drop_rate" | "attn_drop_rate" | "drop_path_rate" => {}
            _ => bail!("model_args.{key} = {val} is not supported by maskaq (only plain timm ViT/DeiT)"),
        }
    }
    let Arch::Vit(v) = &mut cfg.arch else { unreachable!() };
    v.mlp_hidden = (v.embed_dim as f64 * ratio.unwrap_or(4.0)) as usize;
    Ok(())
}

impl VitDims {
    pub(super) fn validate(&self) -> Result<()> {
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            bail!("embed_dim {} is not divisible by num_heads {}", self.embed_dim, self.num_heads);
        }
        if self.mlp_hidden == 0 {
            bail!("mlp_ratio gives an MLP of 0 channels at embed_dim {}", self.embed_dim);
        }
        Ok(())
    }

    pub(super) fn model_args(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("embed_dim", self.embed_dim.into()),
            ("depth", self.depth.into()),
            ("num_heads", self.num_heads.into()),
            ("mlp_ratio", (self.mlp_hidden as f64 / self.embed_dim as f64).into()),
        ]
    }

    /// ("ViT" or "DeiT (distilled)", its dimensions) for `ModelConfig::describe`.
    pub(super) fn describe(&self) -> (&'static str, String) {
        let kind = if self.distilled { "DeiT (distilled)" } else { "ViT" };
        (kind, format!("D {}, depth {}, {} heads", self.embed_dim, self.depth, self.num_heads))
    }

    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }
    /// Class (and distillation) tokens before the patch tokens.
    pub fn prefix_tokens(&self) -> usize {
        if self.distilled { 2 } else { 1 }
    }
    /// Tokens per image for a patch grid of `grid` per side.
    pub fn tokens(&self, grid: usize) -> usize {
        grid * grid + self.prefix_tokens()
    }

    pub(super) fn tensor_shapes(
        &self,
        grid: usize,
        conv: &[usize],
        classes: usize,
    ) -> Vec<(String, Vec<usize>)> {
        let (d, h) = (self.embed_dim, self.mlp_hidden);
        let mut v: Vec<(String, Vec<usize>)> = vec![("cls_token".into(), vec![1, 1, d])];
        if self.distilled {
            v.push(("dist_token".into(), vec![1, 1, d]));
        }
        v.push(("pos_embed".into(), vec![1, self.tokens(grid), d]));
        v.push(("patch_embed.proj.weight".into(), [&[d][..], conv].concat()));
        v.push(("patch_embed.proj.bias".into(), vec![d]));
        for i in 0..self.depth {
            super::block_tensors(&mut v, &format!("blocks.{i}"), d, h, None);
        }
        v.push(("norm.weight".into(), vec![d]));
        v.push(("norm.bias".into(), vec![d]));
        v.push(("head.weight".into(), vec![classes, d]));
        v.push(("head.bias".into(), vec![classes]));
        if self.distilled {
            v.push(("head_dist.weight".into(), vec![classes, d]));
            v.push(("head_dist.bias".into(), vec![classes]));
        }
        v
    }

    /// Multiply-accumulates of one image after the patch embedding.
    pub(super) fn macs(&self, grid: usize, classes: usize) -> f64 {
        let (n, d, h) = (self.tokens(grid) as f64, self.embed_dim as f64, self.mlp_hidden as f64);
        let block = n * d * 3.0 * d + 2.0 * n * n * d + n * d * d + 2.0 * n * d * h;
        self.depth as f64 * block + d * classes as f64 * self.prefix_tokens() as f64
    }

    pub(super) fn largest_activation(&self, grid: usize) -> usize {
        let n = self.tokens(grid);
        (self.num_heads * n * n).max(n * self.mlp_hidden).max(n * 3 * self.embed_dim)
    }
}

//! Swin Transformer dimensions (`timm/models/swin_transformer.py`, timm ≥ 0.9 layout; see
//! docs/swin.md). Only geometries timm computes without padding are accepted.

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Arch, IMAGENET_MEAN, IMAGENET_STD, ModelConfig, Preprocess};

/// A Swin: stages of window-attention blocks (odd blocks shifted), a PatchMerging before every
/// stage but the first, mean pooling and `head.fc`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SwinDims {
    /// Channels of stage 0; stage s has `embed_dim · 2^s`.
    pub embed_dim: usize,
    pub depths: Vec<usize>,
    pub num_heads: Vec<usize>,
    /// The requested window side per stage (a stage whose grid is smaller uses its grid).
    pub window_size: Vec<usize>,
    pub mlp_ratio: f64,
}

/// One stage as the graph runs it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SwinStage {
    /// Tokens per side of the stage's grid.
    pub grid: usize,
    pub dim: usize,
    pub heads: usize,
    pub depth: usize,
    /// Window side actually used: min(requested, grid).
    pub window: usize,
    /// Cyclic shift of the odd blocks (0 when one window covers the grid).
    pub shift: usize,
    pub hidden: usize,
}

impl SwinStage {
    pub fn head_dim(&self) -> usize {
        self.dim / self.heads
    }
    /// Tokens per window.
    pub fn window_tokens(&self) -> usize {
        self.window * self.window
    }
    /// Windows per image.
    pub fn windows(&self) -> usize {
        (self.grid / self.window).pow(2)
    }
    /// The shift of block `b` (odd blocks are SW-MSA).
    pub fn block_shift(&self, b: usize) -> usize {
        if b % 2 == 1 { self.shift } else { 0 }
    }
}

/// (name, embed_dim, depths, heads) of the Swin architectures maskaq knows.
pub(super) const KNOWN: &[(&str, usize, [usize; 4], [usize; 4])] = &[
    ("swin_tiny_patch4_window7_224", 96, [2, 2, 6, 2], [3, 6, 12, 24]),
    ("swin_small_patch4_window7_224", 96, [2, 2, 18, 2], [3, 6, 12, 24]),
    ("swin_base_patch4_window7_224", 128, [2, 2, 18, 2], [4, 8, 16, 32]),
];

pub(super) fn from_arch(base: &str) -> Option<ModelConfig> {
    let &(arch, c, depths, heads) = KNOWN.iter().find(|k| k.0 == base)?;
    Some(ModelConfig {
        architecture: arch.to_string(),
        img_size: 224,
        patch_size: 4,
        in_chans: 3,
        num_classes: 1000,
        eps: 1e-5,
        arch: Arch::Swin(SwinDims {
            embed_dim: c,
            depths: depths.to_vec(),
            num_heads: heads.to_vec(),
            window_size: vec![7; 4],
            mlp_ratio: 4.0,
        }),
        preprocess: Preprocess {
            input_size: [3, 224, 224],
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
            crop_pct: 0.9,
            interpolation: "bicubic".into(),
        },
        label_names: None,
    })
}

fn usize_list(key: &str, val: &Value) -> Result<Vec<usize>> {
    let err = || anyhow::anyhow!("model_args.{key} must be a list of positive integers, found {val}");
    let a = val.as_array().ok_or_else(err)?;
    let v: Vec<usize> = a
        .iter()
        .map(|x| x.as_u64().filter(|&n| n > 0).map(|n| n as usize))
        .collect::<Option<_>>()
        .ok_or_else(err)?;
    if v.is_empty() {
        return Err(err());
    }
    Ok(v)
}

pub(super) fn read_model_args(cfg: &mut ModelConfig, args: &Map<String, Value>) -> Result<()> {
    let mut window = None;
    let mut head_dim = None;
    for (key, val) in args {
        if super::read_common_arg(cfg, key, val)? {
            continue;
        }
        let Arch::Swin(s) = &mut cfg.arch else { unreachable!() };
        let num = || super::positive(key, val);
        match key.as_str() {
            "embed_dim" if val.is_array() => {
                bail!("model_args.embed_dim must be one integer (stage widths double), found {val}")
            }
            "embed_dim" => s.embed_dim = num()?,
            "depths" => s.depths = usize_list(key, val)?,
            "num_heads" => s.num_heads = usize_list(key, val)?,
            "window_size" => window = Some(val.clone()),
            "head_dim" if !val.is_null() => head_dim = Some(val.clone()),
            "head_dim" => {}
            "mlp_ratio" => s.mlp_ratio = super::mlp_ratio(val)?,
            "qkv_bias" if val == &Value::Bool(true) => {}
            "global_pool" if val == "avg" => {}
            "always_partition" if val == &Value::Bool(false) => {}
            // Only the configured input size is ever run, so the mask is the same either way.
            "strict_img_size" if val.is_boolean() => {}
            "drop_rate" | "proj_drop_rate" | "attn_drop_rate" | "drop_path_rate" => {}
            _ => bail!("model_args.{key} = {val} is not supported by maskaq (only plain timm Swin)"),
        }
    }
    let Arch::Swin(s) = &mut cfg.arch else { unreachable!() };
    let stages = s.depths.len();
    if s.num_heads.len() != stages {
        bail!(
            "model_args.num_heads has {} entries for {} stages (model_args.depths has {})",
            s.num_heads.len(),
            stages,
            stages
        );
    }
    s.window_size = match window {
        None => vec![s.window_size[0]; stages],
        Some(w) => window_list(&w, stages)?,
    };
    if let Some(hd) = head_dim {
        let hd = super::positive("head_dim", &hd)?;
        for (i, &h) in s.num_heads.iter().enumerate() {
            let dim = s.embed_dim << i;
            if h * hd != dim {
                bail!(
                    "model_args.head_dim {hd} × num_heads[{i}] {h} is not stage {i}'s width {dim} \
                     (maskaq needs head_dim = width / heads)"
                );
            }
        }
    }
    Ok(())
}

/// `window_size`: one integer for every stage or one per stage. timm reads a 2-element list as
/// (h, w) for all stages, which with two stages is ambiguous, so that is refused.
fn window_list(w: &Value, stages: usize) -> Result<Vec<usize>> {
    if !w.is_array() {
        return Ok(vec![super::positive("window_size", w)?; stages]);
    }
    let v = usize_list("window_size", w)?;
    if v.len() == 2 && stages == 2 {
        bail!(
            "model_args.window_size {w} is ambiguous with 2 stages (timm reads a 2-list as one (h, w) \
             window for every stage); give one integer"
        );
    }
    if v.len() == stages {
        return Ok(v);
    }
    if v.len() == 2 {
        if v[0] != v[1] {
            bail!("model_args.window_size {w}: maskaq supports square windows only");
        }
        return Ok(vec![v[0]; stages]);
    }
    bail!("model_args.window_size {w} has {} entries for {stages} stages", v.len())
}

impl SwinDims {
    pub fn stages(&self) -> usize {
        self.depths.len()
    }

    /// Stage `s` on a patch grid of `grid` per side after the embedding.
    pub fn stage(&self, grid: usize, s: usize) -> SwinStage {
        let r = grid >> s;
        let window = self.window_size[s].min(r);
        let dim = self.embed_dim << s;
        SwinStage {
            grid: r,
            dim,
            heads: self.num_heads[s],
            depth: self.depths[s],
            window,
            shift: if r <= window { 0 } else { window / 2 },
            hidden: (dim as f64 * self.mlp_ratio) as usize,
        }
    }

    pub fn num_features(&self) -> usize {
        self.embed_dim << (self.stages() - 1)
    }

    /// Refuses what timm only runs by padding (see the module comment), with the field to fix.
    pub(super) fn validate(&self, grid: usize) -> Result<()> {
        for s in 0..self.stages() {
            let r = grid >> s;
            if s > 0 && !(grid >> (s - 1)).is_multiple_of(2) {
                bail!(
                    "model_args.img_size: stage {} would merge an odd grid of {} tokens per side \
                     (timm pads it); choose img_size / patch_size divisible by {}",
                    s,
                    grid >> (s - 1),
                    1 << (self.stages() - 1)
                );
            }
            if r == 0 {
                bail!("model_args.depths: {} stages need a larger img_size", self.stages());
            }
            let st = self.stage(grid, s);
            if !r.is_multiple_of(st.window) {
                bail!(
                    "model_args.window_size: stage {s}'s grid of {r} tokens per side is not a multiple \
                     of its window {} (timm pads it)",
                    st.window
                );
            }
            if !st.dim.is_multiple_of(st.heads) {
                bail!(
                    "model_args.num_heads[{s}] = {} does not divide stage {s}'s width {}",
                    st.heads,
                    st.dim
                );
            }
            if st.hidden == 0 {
                bail!("model_args.mlp_ratio gives an MLP of 0 channels in stage {s}");
            }
        }
        Ok(())
    }

    pub(super) fn model_args(&self) -> Vec<(&'static str, Value)> {
        let w = &self.window_size;
        let window: Value = if w.iter().all(|&x| x == w[0]) { w[0].into() } else { w.clone().into() };
        vec![
            ("embed_dim", self.embed_dim.into()),
            ("depths", self.depths.clone().into()),
            ("num_heads", self.num_heads.clone().into()),
            ("window_size", window),
            ("mlp_ratio", self.mlp_ratio.into()),
        ]
    }

    pub(super) fn describe(&self) -> (&'static str, String) {
        let w = &self.window_size;
        let window = if w.iter().all(|&x| x == w[0]) { w[0].to_string() } else { format!("{w:?}") };
        (
            "Swin",
            format!(
                "C {}, depths {:?}, heads {:?}, window {window}",
                self.embed_dim, self.depths, self.num_heads
            ),
        )
    }

    pub(super) fn tensor_shapes(
        &self,
        grid: usize,
        conv: &[usize],
        classes: usize,
    ) -> Vec<(String, Vec<usize>)> {
        let c0 = self.embed_dim;
        let mut v: Vec<(String, Vec<usize>)> = vec![
            ("patch_embed.proj.weight".into(), [&[c0][..], conv].concat()),
            ("patch_embed.proj.bias".into(), vec![c0]),
            ("patch_embed.norm.weight".into(), vec![c0]),
            ("patch_embed.norm.bias".into(), vec![c0]),
        ];
        for s in 0..self.stages() {
            let st = self.stage(grid, s);
            let (c, h) = (st.dim, st.hidden);
            if s > 0 {
                let d = |x: &str| format!("layers.{s}.downsample.{x}");
                v.push((d("norm.weight"), vec![2 * c]));
                v.push((d("norm.bias"), vec![2 * c]));
                v.push((d("reduction.weight"), vec![c, 2 * c]));
            }
            let table = (2 * st.window - 1).pow(2);
            for b in 0..st.depth {
                super::block_tensors(
                    &mut v,
                    &format!("layers.{s}.blocks.{b}"),
                    c,
                    h,
                    Some([table, st.heads]),
                );
            }
        }
        let f = self.num_features();
        v.push(("norm.weight".into(), vec![f]));
        v.push(("norm.bias".into(), vec![f]));
        v.push(("head.fc.weight".into(), vec![classes, f]));
        v.push(("head.fc.bias".into(), vec![classes]));
        v
    }

    pub(super) fn macs(&self, grid: usize, classes: usize) -> f64 {
        let mut m = 0.0;
        for s in 0..self.stages() {
            let st = self.stage(grid, s);
            let (t, c, h, n) =
                (st.grid.pow(2) as f64, st.dim as f64, st.hidden as f64, st.window_tokens() as f64);
            if s > 0 {
                m += t * 2.0 * c * c;
            }
            let block = t * c * 3.0 * c + 2.0 * t * n * c + t * c * c + 2.0 * t * c * h;
            m += st.depth as f64 * block;
        }
        m + (self.num_features() * classes) as f64
    }

    pub(super) fn largest_activation(&self, grid: usize) -> usize {
        (0..self.stages())
            .map(|s| {
                let st = self.stage(grid, s);
                let t = st.grid * st.grid;
                (t * st.hidden).max(t * st.heads * st.window_tokens()).max(t * 3 * st.dim)
            })
            .max()
            .unwrap_or(0)
    }
}

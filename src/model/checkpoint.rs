//! Checkpoint loading: a timm Hugging Face folder (`config.json` + `model.safetensors`) or a bare
//! `.safetensors` file plus an architecture. Every tensor is checked against the config: a
//! missing, unexpected, mis-shaped or non-float tensor is an error naming it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use safetensors::{Dtype, SafeTensors};

use super::config::ModelConfig;

/// A named tensor on the host: (name, shape, values).
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Weights by timm name, widened to f32, in config order.
#[derive(Clone)]
pub struct Weights {
    pub tensors: Vec<NamedTensor>,
}

impl Weights {
    /// timm-style random initialisation (truncated normal 0.02 for weights and embeddings,
    /// zero biases, unit LayerNorm scales), for benchmarks and tests without a checkpoint.
    pub fn random(cfg: &ModelConfig, seed: u64) -> Weights {
        let mut rng = crate::rng::Rng::new(seed);
        let tensors = cfg
            .tensor_shapes()
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let data: Vec<f32> = if name.ends_with(".bias") {
                    vec![0.0; n]
                } else if name.contains("norm") {
                    vec![1.0; n]
                } else {
                    (0..n).map(|_| rng.trunc_normal(0.02) as f32).collect()
                };
                (name, shape, data)
            })
            .collect();
        Weights { tensors }
    }

    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.tensors.iter().find(|t| t.0 == name).map(|t| t.2.as_slice())
    }
}

const PTH_HELP: &str = "this is a PyTorch pickle checkpoint (.pth), which maskaq does not read. Convert it \
once with Python: python3 -c \"import torch, safetensors.torch as st; sd = torch.load('IN.pth', \
map_location='cpu'); sd = sd.get('model', sd); st.save_file({k: v.float().contiguous() for k, v in \
sd.items()}, 'model.safetensors')\" and pass the .safetensors file with --arch NAME";

/// Resolves `--model` (and `--arch`) to a config and the safetensors file holding its weights.
pub fn resolve(model: &Path, arch: Option<&str>) -> Result<(ModelConfig, PathBuf)> {
    if model.is_dir() {
        let cfg_path = model.join("config.json");
        let st = model.join("model.safetensors");
        if !cfg_path.exists() {
            bail!("{}: folder has no config.json (expected a timm Hugging Face folder)", model.display());
        }
        if !st.exists() {
            bail!("{}: folder has no model.safetensors", model.display());
        }
        let cfg = match arch {
            Some(_) => bail!(
                "--arch is only for a bare .safetensors file; {} has its own config.json",
                model.display()
            ),
            None => ModelConfig::from_json_file(&cfg_path)?,
        };
        return Ok((cfg, st));
    }
    if !model.exists() {
        bail!("{}: no such file or folder", model.display());
    }
    let cfg = match arch {
        Some(a) if a.ends_with(".json") => ModelConfig::from_json_file(Path::new(a))?,
        Some(a) => ModelConfig::from_arch(a)?,
        None if model.file_name().is_some_and(|n| n == "config.json") => bail!(
            "--model {}: give the model's folder ({}, which holds config.json and model.safetensors), \
             or use --arch {} for random weights where a command allows it",
            model.display(),
            model.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).display(),
            model.display()
        ),
        None => {
            check_not_pickle(model)?;
            bail!(
                "{}: a bare weights file needs --arch NAME (or --arch path/to/config.json)",
                model.display()
            )
        }
    };
    Ok((cfg, model.to_path_buf()))
}

fn check_not_pickle(path: &Path) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let mut head = [0u8; 4];
    let n = std::fs::File::open(path).and_then(|mut f| std::io::Read::read(&mut f, &mut head)).unwrap_or(0);
    let zip = n >= 4 && head == *b"PK\x03\x04";
    let pickle = n >= 2 && head[0] == 0x80 && head[1] <= 5;
    if matches!(ext.as_str(), "pth" | "pt" | "bin" | "ckpt") || zip || pickle {
        bail!("{}: {PTH_HELP}", path.display());
    }
    Ok(())
}

/// Loads and checks every tensor of `cfg` from a safetensors file.
pub fn load_weights(cfg: &ModelConfig, path: &Path) -> Result<Weights> {
    check_not_pickle(path)?;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file ({e})", path.display()))?;
    if let Ok((_, header)) = SafeTensors::read_metadata(&bytes)
        && header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("format"))
            .is_some_and(|f| f.starts_with("maskaq-quantized"))
    {
        bail!(
            "{}: is a maskaq quantized model; pass it as --quantized FILE, with the full-precision \
             --model it was made from",
            path.display()
        );
    }
    let expected = cfg.tensor_shapes();
    let wanted: HashMap<&str, &Vec<usize>> = expected.iter().map(|(n, s)| (n.as_str(), s)).collect();
    let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
    names.sort();
    for n in &names {
        if !wanted.contains_key(n.as_str()) && !cfg.is_recomputed_buffer(n) {
            bail!(
                "{}: unexpected tensor `{n}` for architecture {} (is the --arch or config right?)",
                path.display(),
                cfg.architecture
            );
        }
    }
    let mut tensors = Vec::with_capacity(expected.len());
    for (name, shape) in &expected {
        let t = st.tensor(name).map_err(|_| {
            anyhow::anyhow!("{}: missing tensor `{name}` (expected shape {shape:?})", path.display())
        })?;
        if t.shape() != shape.as_slice() {
            bail!("{}: tensor `{name}` has shape {:?}, expected {shape:?}", path.display(), t.shape());
        }
        let data = t.data();
        let values: Vec<f32> = match t.dtype() {
            Dtype::F32 => {
                data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
            Dtype::F16 => {
                data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            Dtype::BF16 => {
                data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            other => bail!(
                "{}: tensor `{name}` has dtype {other:?}; expected a float tensor (F32, F16 or BF16)",
                path.display()
            ),
        };
        if values.iter().any(|v| !v.is_finite()) {
            bail!("{}: tensor `{name}` holds NaN or infinite values", path.display());
        }
        tensors.push((name.clone(), shape.clone(), values));
    }
    Ok(Weights { tensors })
}

/// Reads a safetensors file of f32 tensors (fixtures, datasets) into a name -> (shape, data) map.
#[allow(clippy::type_complexity)]
pub fn read_f32_tensors(path: &Path) -> Result<HashMap<String, (Vec<usize>, Vec<f32>)>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file ({e})", path.display()))?;
    let mut out = HashMap::new();
    for (name, t) in st.tensors() {
        if t.dtype() != Dtype::F32 {
            bail!("{}: tensor `{name}` is {:?}, expected F32", path.display(), t.dtype());
        }
        let v = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.insert(name, (t.shape().to_vec(), v));
    }
    Ok(out)
}

/// Writes a timm Hugging Face folder (`config.json` + `model.safetensors`, F32) for `vit`'s
/// current parameters; each file is replaced atomically.
pub fn save_model(gpu: &crate::gpu::Gpu, vit: &crate::model::Model, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let params = vit.read_params(gpu)?;
    let bytes: Vec<Vec<u8>> =
        params.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = params
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            Ok((name.clone(), safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), b)?))
        })
        .collect::<Result<_>>()?;
    let st = safetensors::serialize(views, None)?;
    crate::io::write_atomic(&dir.join("model.safetensors"), &st)?;
    let cfg = serde_json::to_string_pretty(&vit.cfg.to_json())?;
    crate::io::write_atomic(&dir.join("config.json"), cfg.as_bytes())
}

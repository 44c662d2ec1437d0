//! The quantized-model file: one `.safetensors` with integer weights, per-channel scales, every
//! activation quantizer's state, the FP tensors, and the architecture in the metadata.
//! Format: docs/quantized-format.md. Loading checks every field.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::{Bits, SiteState, quantized_weights};
use crate::gpu::{Gpu, Tensor};
use crate::io::write_atomic;
use crate::model::checkpoint::Weights;
use crate::model::{Model, ModelConfig, Param};
use crate::ops::quant::weight_quant;

pub const FORMAT: &str = "maskaq-quantized-v1";

/// Packs signed integers of `bits` <= 4 two per byte (even index in the low nibble), or stores
/// them as one i8 per byte for more bits. Rows are packed independently.
pub fn pack(q: &[i8], rows: usize, bits: u32) -> (Vec<u8>, Vec<usize>) {
    let cols = q.len() / rows;
    if bits > 4 {
        return (q.iter().map(|&v| v as u8).collect(), vec![rows, cols]);
    }
    let pc = cols.div_ceil(2);
    let mut out = vec![0u8; rows * pc];
    for r in 0..rows {
        for j in 0..cols {
            let nib = (q[r * cols + j] as u8) & 0x0f;
            out[r * pc + j / 2] |= if j % 2 == 0 { nib } else { nib << 4 };
        }
    }
    (out, vec![rows, pc])
}

/// Inverse of [`pack`].
pub fn unpack(bytes: &[u8], rows: usize, cols: usize, bits: u32) -> Vec<i8> {
    if bits > 4 {
        return bytes.iter().map(|&b| b as i8).collect();
    }
    let pc = cols.div_ceil(2);
    let mut out = vec![0i8; rows * cols];
    for r in 0..rows {
        for j in 0..cols {
            let b = bytes[r * pc + j / 2];
            let nib = if j % 2 == 0 { b & 0x0f } else { b >> 4 };
            // Sign-extend the 4-bit two's complement value.
            out[r * cols + j] = ((nib << 4) as i8) >> 4;
        }
    }
    out
}

/// A quantized weight's integer codes ([rows, cols] row-major) and per-row scales, as Q's
/// weight quantizer makes them on `gpu` (the fake-quantized value is code / scale).
pub fn weight_codes(gpu: &Gpu, bits: u32, p: &Param) -> Result<(Vec<i8>, Vec<f32>)> {
    let rows = p.shape[0];
    let cols = p.value.numel() / rows;
    let w_hat = Tensor::zeros(gpu, &p.shape);
    let scales = Tensor::zeros(gpu, &[rows]);
    gpu.run(&[&weight_quant(gpu, rows, cols, bits, &p.value, &w_hat, &scales)]);
    let (w_hat, scales) = (w_hat.read(gpu)?, scales.read(gpu)?);
    let mut ints = vec![0i8; rows * cols];
    for r in 0..rows {
        for j in 0..cols {
            let v = (w_hat[r * cols + j] * scales[r]).round();
            if (v - w_hat[r * cols + j] * scales[r]).abs() > 1e-3 {
                bail!("internal: quantized weight {} is not on its integer grid", p.name);
            }
            ints[r * cols + j] = v as i8;
        }
    }
    Ok((ints, scales))
}

/// Exports Q (fake-quantized weights, initialised activation quantizers) to `path`.
pub fn export(gpu: &Gpu, q: &Model, method: &str, path: &Path) -> Result<()> {
    let quant = q.quant.as_ref().context("export needs a quantized model")?;
    if quant.frozen_weights {
        bail!("this model's weights are already quantized values; export the model it came from");
    }
    let bits = quant.bits;
    let qweights = quantized_weights(&q.cfg);
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    for p in &q.params {
        if !qweights.contains(&p.name) {
            tensors.push((p.name.clone(), Dtype::F32, p.shape.clone(), f32_bytes(&p.value.read(gpu)?)));
            continue;
        }
        let rows = p.shape[0];
        let (ints, scales) = weight_codes(gpu, bits.w, p)?;
        let (packed, shape) = pack(&ints, rows, bits.w);
        let dtype = if bits.w > 4 { Dtype::I8 } else { Dtype::U8 };
        tensors.push((format!("{}.qweight", p.name), dtype, shape, packed));
        tensors.push((format!("{}.scale", p.name), Dtype::F32, vec![rows], f32_bytes(&scales)));
    }
    for s in quant.read(gpu)? {
        tensors.push((format!("{}.alpha", s.name), Dtype::F32, vec![1], f32_bytes(&[s.alpha])));
        tensors.push((format!("{}.zero_point", s.name), Dtype::F32, vec![1], f32_bytes(&[s.zero_point])));
        tensors.push((format!("{}.grad_scale", s.name), Dtype::F32, vec![1], f32_bytes(&[s.g])));
        let range: Vec<u8> = [s.qn as i32, s.qp as i32].iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((format!("{}.qrange", s.name), Dtype::I32, vec![2], range));
    }
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), FORMAT.to_string());
    meta.insert("bits".to_string(), bits.to_string());
    meta.insert("method".to_string(), method.to_string());
    meta.insert("config".to_string(), q.cfg.to_json().to_string());
    meta.insert("activation_quantizers".to_string(), serde_json::to_string(&quant.sites)?);
    meta.insert("producer".to_string(), format!("maskaq {}", env!("CARGO_PKG_VERSION")));
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<_>>()?;
    let bytes = crate::io::safetensors_bytes(views, meta)?;
    write_atomic(path, &bytes)
}

fn scalar_f32(st: &SafeTensors, path: &Path, name: &str, len: usize) -> Result<Vec<f32>> {
    let t = st.tensor(name).map_err(|_| anyhow::anyhow!("{}: missing tensor `{name}`", path.display()))?;
    if t.dtype() != Dtype::F32 || t.shape() != [len] {
        bail!(
            "{}: tensor `{name}` must be F32 [{len}], found {:?} {:?}",
            path.display(),
            t.dtype(),
            t.shape()
        );
    }
    Ok(t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Loads a quantized model. `expected`, when given (the `--model` it should belong to), must
/// have the same architecture.
pub fn load(gpu: &Gpu, path: &Path, expected: Option<&ModelConfig>) -> Result<Model> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file ({e})", path.display()))?;
    let (bits, cfg) = read_header(&bytes, path, expected)?;
    let qweights = quantized_weights(&cfg);
    let mut expected_names = std::collections::HashSet::new();
    let mut tensors = Vec::new();
    for (name, shape) in cfg.tensor_shapes() {
        let v = if qweights.contains(&name) {
            expected_names.insert(format!("{name}.qweight"));
            expected_names.insert(format!("{name}.scale"));
            read_quantized_weight(&st, path, &name, &shape, bits)?
        } else {
            expected_names.insert(name.clone());
            read_f32(&st, path, &name, &shape)?
        };
        tensors.push((name, shape, v));
    }
    let mut model = Model::new(gpu, cfg, &Weights { tensors });
    model.quantize(gpu, bits);
    let quant = model.quant.as_mut().unwrap();
    quant.frozen_weights = true;
    let mut sites = Vec::new();
    for name in &quant.sites {
        sites.push(read_site(&st, path, name, bits)?);
        for suffix in ["alpha", "zero_point", "grad_scale", "qrange"] {
            expected_names.insert(format!("{name}.{suffix}"));
        }
    }
    for n in st.names() {
        if !expected_names.contains(n) {
            bail!("{}: unexpected tensor `{n}`", path.display());
        }
    }
    quant.write(gpu, &sites)?;
    Ok(model)
}

/// The bit widths and the model config in the file's metadata, the config checked against
/// `expected` (class names aside).
fn read_header(bytes: &[u8], path: &Path, expected: Option<&ModelConfig>) -> Result<(Bits, ModelConfig)> {
    let (_, header) = SafeTensors::read_metadata(bytes)?;
    let meta = header.metadata().clone().unwrap_or_default();
    let get = |k: &str| {
        meta.get(k).with_context(|| {
            format!("{}: not a maskaq quantized model (no `{k}` in its metadata)", path.display())
        })
    };
    if get("format")? != FORMAT {
        bail!("{}: format `{}` is not {FORMAT}", path.display(), get("format")?);
    }
    let bits: Bits = get("bits")?.parse().with_context(|| format!("{}: metadata `bits`", path.display()))?;
    let cfg_json: serde_json::Value = serde_json::from_str(get("config")?)
        .with_context(|| format!("{}: metadata `config` is not JSON", path.display()))?;
    let cfg = ModelConfig::from_json(&cfg_json)
        .with_context(|| format!("{}: metadata `config`", path.display()))?;
    if let Some(exp) = expected {
        let mut a = exp.clone();
        let mut b = cfg.clone();
        a.label_names = None;
        b.label_names = None;
        if a != b {
            bail!(
                "{}: the quantized model's config does not match --model ({} vs {})",
                path.display(),
                cfg.describe(),
                exp.describe()
            );
        }
    }
    Ok((bits, cfg))
}

/// A full-precision tensor, F32 of exactly `shape`.
fn read_f32(st: &SafeTensors, path: &Path, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = st.tensor(name).map_err(|_| anyhow::anyhow!("{}: missing tensor `{name}`", path.display()))?;
    if t.dtype() != Dtype::F32 || t.shape() != shape {
        bail!(
            "{}: tensor `{name}` must be F32 {shape:?}, found {:?} {:?}",
            path.display(),
            t.dtype(),
            t.shape()
        );
    }
    Ok(t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// A quantized weight: its integer codes (checked for the bit range) over its per-row scales.
fn read_quantized_weight(
    st: &SafeTensors,
    path: &Path,
    name: &str,
    shape: &[usize],
    bits: Bits,
) -> Result<Vec<f32>> {
    let rows = shape[0];
    let cols: usize = shape.iter().product::<usize>() / rows;
    let qname = format!("{name}.qweight");
    let t = st.tensor(&qname).map_err(|_| anyhow::anyhow!("{}: missing tensor `{qname}`", path.display()))?;
    let (dtype, want) =
        if bits.w > 4 { (Dtype::I8, vec![rows, cols]) } else { (Dtype::U8, vec![rows, cols.div_ceil(2)]) };
    if t.dtype() != dtype || t.shape() != want.as_slice() {
        bail!(
            "{}: tensor `{qname}` must be {dtype:?} {want:?} for {}-bit weights, found {:?} {:?}",
            path.display(),
            bits.w,
            t.dtype(),
            t.shape()
        );
    }
    let ints = unpack(t.data(), rows, cols, bits.w);
    let (lo, hi) = (-(1i32 << (bits.w - 1)), (1i32 << (bits.w - 1)) - 1);
    if let Some(bad) = ints.iter().find(|&&v| (v as i32) < lo || (v as i32) > hi) {
        bail!("{}: `{qname}` holds {bad}, outside the {}-bit range [{lo}, {hi}]", path.display(), bits.w);
    }
    let scales = scalar_f32(st, path, &format!("{name}.scale"), rows)?;
    if scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        bail!("{}: `{name}.scale` must be positive and finite", path.display());
    }
    Ok((0..rows * cols).map(|i| ints[i] as f32 / scales[i / cols]).collect())
}

/// One activation quantizer: step, zero point, LSQ gradient scale and its integer range.
fn read_site(st: &SafeTensors, path: &Path, name: &str, bits: Bits) -> Result<SiteState> {
    let alpha = scalar_f32(st, path, &format!("{name}.alpha"), 1)?[0];
    let z = scalar_f32(st, path, &format!("{name}.zero_point"), 1)?[0];
    let g = scalar_f32(st, path, &format!("{name}.grad_scale"), 1)?[0];
    let rname = format!("{name}.qrange");
    let r = st.tensor(&rname).map_err(|_| anyhow::anyhow!("{}: missing tensor `{rname}`", path.display()))?;
    if r.dtype() != Dtype::I32 || r.shape() != [2] {
        bail!("{}: tensor `{rname}` must be I32 [2]", path.display());
    }
    let qn = i32::from_le_bytes(r.data()[0..4].try_into().unwrap());
    let qp = i32::from_le_bytes(r.data()[4..8].try_into().unwrap());
    if (qn, qp) != (-(1 << (bits.a - 1)), (1 << (bits.a - 1)) - 1) && (qn, qp) != (0, (1 << bits.a) - 1) {
        bail!("{}: `{rname}` = [{qn}, {qp}] is not a {}-bit range", path.display(), bits.a);
    }
    if !(alpha.is_finite() && alpha > 0.0 && z.is_finite() && g.is_finite()) {
        bail!("{}: activation quantizer `{name}` has an invalid step or zero point", path.display());
    }
    Ok(SiteState {
        name: name.to_string(),
        alpha,
        zero_point: z,
        qn: qn as f32,
        qp: qp as f32,
        g,
        signed: qn < 0,
    })
}

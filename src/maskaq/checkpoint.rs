//! The pipeline's checkpoint: after every epoch the whole run state (Q, the quantizers, the
//! optimiser, the synthetic set, the scheduler position and the random-number state) in one
//! safetensors file written atomically, with the settings and a fingerprint of P in its
//! metadata, so `--resume` refuses a checkpoint of another model or other settings.

use std::path::Path;

use anyhow::{Context, Result, bail};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::Serialize;

use super::pipeline::{CHECKPOINT, EpochReport, QuantizeConfig, Run, RunState};
use super::qtrain::QTrainer;
use super::synth::Synthesizer;
use crate::model::checkpoint::Weights;
use crate::rng::Rng;

pub(super) const CHECKPOINT_FORMAT: &str = "maskaq-checkpoint-v1";

/// FNV-1a of the full-precision weights: a resumed run must start from the same model.
pub fn fingerprint(w: &Weights) -> String {
    let mut h = crate::io::Fnv::default();
    for (name, _, v) in &w.tensors {
        h.update(name.bytes().chain(v.iter().flat_map(|x| x.to_le_bytes())));
    }
    h.hex()
}

#[derive(Serialize, serde::Deserialize)]
pub(super) struct ScheduleState {
    pub(super) format: String,
    pub(super) config: String,
    pub(super) model: String,
    pub(super) next_epoch: usize,
    pub(super) rng: u64,
    pub(super) noise_calls: usize,
    pub(super) updates_done: usize,
    pub(super) aug_rng: u64,
    pub(super) epochs: Vec<EpochReport>,
    pub(super) fp_top1: Option<f64>,
    pub(super) ptq_top1: Option<f64>,
    pub(super) synth_s: f64,
    pub(super) train_s: f64,
    /// Wall seconds of the run up to this checkpoint, over every session (resumed runs add on).
    #[serde(default)]
    pub(super) total_s: f64,
    pub(super) dropped: usize,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(super) fn write_checkpoint(
    path: &Path,
    st: &ScheduleState,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, v)| f32_bytes(v)).collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_>>()?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("state".to_string(), serde_json::to_string(st)?);
    crate::io::write_atomic(path, &crate::io::safetensors_bytes(views, meta)?)
}

/// The run state in a checkpoint's metadata.
fn schedule_state(bytes: &[u8]) -> Option<ScheduleState> {
    let (_, header) = SafeTensors::read_metadata(bytes).ok()?;
    serde_json::from_str(header.metadata().as_ref()?.get("state")?).ok()
}

/// Reads and checks a checkpoint against this run's configuration and model.
pub(super) fn read_checkpoint(
    path: &Path,
    config: &str,
    model: &str,
) -> Result<(ScheduleState, std::collections::HashMap<String, Vec<f32>>)> {
    let bytes = std::fs::read(path).with_context(|| format!("--resume: cannot read {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("--resume: {} is not a valid checkpoint ({e})", path.display()))?;
    let state =
        schedule_state(&bytes).with_context(|| format!("--resume: {} holds no run state", path.display()))?;
    if state.format != CHECKPOINT_FORMAT {
        bail!("--resume: {} is format `{}`, expected {CHECKPOINT_FORMAT}", path.display(), state.format);
    }
    if state.model != model {
        bail!("--resume: {} was made from another model (weights differ)", path.display());
    }
    if state.config != config {
        bail!(
            "--resume: {} was made with other settings ({}); rerun with the flags of that run",
            path.display(),
            changed_flags(&state.config, config)
        );
    }
    let mut tensors = std::collections::HashMap::new();
    for (name, t) in st.tensors() {
        if t.dtype() != Dtype::F32 {
            bail!("--resume: tensor `{name}` of {} is not F32", path.display());
        }
        tensors.insert(
            name,
            t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        );
    }
    Ok((state, tensors))
}

/// The flags whose values differ between two serialized [`QuantizeConfig`]s, as
/// "--lr 0.001 then, 0.002 now; ...".
fn changed_flags(then: &str, now: &str) -> String {
    fn leaves(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    leaves(&p, x, out);
                }
            }
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    // The config's field path to the flag that sets it (`synth.lr` is --synth-lr, `train.lr`
    // is --lr, `synth.weights.tv` is --w-tv).
    fn flag(path: &str) -> String {
        let parts: Vec<&str> = path.split('.').collect();
        let last = parts.last().copied().unwrap_or(path).replace('_', "-");
        match parts.as_slice() {
            [.., "weights", _] => format!("--w-{last}"),
            ["synth", "lr" | "lr_min" | "weight_decay" | "batch" | "iters"] => format!("--synth-{last}"),
            ["train", "batch"] => "--train-batch".into(),
            ["train", "augment"] => "--no-augment".into(),
            _ => format!("--{last}"),
        }
    }
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap_or(serde_json::Value::Null);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    leaves("", &parse(then), &mut a);
    leaves("", &parse(now), &mut b);
    let now: std::collections::HashMap<_, _> = b.into_iter().collect();
    let diffs: Vec<String> = a
        .iter()
        .filter(|(k, v)| now.get(k) != Some(v))
        .map(|(k, v)| format!("{} {v} then, {} now", flag(k), now.get(k).map_or("unset", String::as_str)))
        .collect();
    if diffs.is_empty() { "a setting differs".into() } else { diffs.join("; ") }
}

/// "epoch 3 of 8 done" (or "finished, 8 epochs") for a checkpoint, or why it cannot be read.
pub fn describe_checkpoint(path: &Path) -> String {
    let Some(st) = std::fs::read(path).ok().and_then(|bytes| schedule_state(&bytes)) else {
        return "not a readable maskaq checkpoint".into();
    };
    let total = serde_json::from_str::<serde_json::Value>(&st.config)
        .ok()
        .and_then(|c| c["epochs"].as_u64())
        .map(|e| e as usize);
    match total {
        Some(t) if st.next_epoch >= t => format!("finished, {t} epochs"),
        Some(t) => format!("epoch {} of {t} done", st.next_epoch),
        None => format!("{} epochs done", st.next_epoch),
    }
}

/// Checks, before any work, that `out`'s checkpoint can continue this run.
pub fn check_resume(out: &Path, cfg: &QuantizeConfig, weights: &Weights) -> Result<()> {
    read_checkpoint(&out.join(CHECKPOINT), &serde_json::to_string(cfg)?, &fingerprint(weights)).map(|_| ())
}

/// Q, its quantizers, the optimiser and every random state as the checkpoint left them.
pub(super) fn restore(
    run: &Run,
    trainer: &mut QTrainer,
    synth: &mut Synthesizer,
    st: ScheduleState,
    t: &std::collections::HashMap<String, Vec<f32>>,
) -> Result<RunState> {
    let (gpu, q) = (run.gpu, run.q);
    let quant = q.quant.as_ref().context("Q must be quantized")?;
    let get = |name: &str, len: usize| -> Result<&Vec<f32>> {
        let v = t.get(name).with_context(|| format!("--resume: checkpoint lacks `{name}`"))?;
        if v.len() != len {
            bail!("--resume: checkpoint tensor `{name}` has {} values, expected {len}", v.len());
        }
        Ok(v)
    };
    for prm in &q.params {
        prm.value.write(gpu, get(&format!("q.{}", prm.name), prm.value.numel())?);
    }
    quant.state.qparams.write(gpu, get("q.qparams", quant.state.qparams.numel())?);
    quant.state.qmeta.write(gpu, get("q.qmeta", quant.state.qmeta.numel())?);
    quant.initialized.set(true);
    let mut momentum = Vec::new();
    for (i, prm) in q.params.iter().enumerate() {
        momentum.push(get(&format!("momentum.{i}"), prm.value.numel())?.clone());
    }
    momentum.push(get(&format!("momentum.{}", q.params.len()), quant.state.qparams.numel())?.clone());
    trainer.set_optimizer_state(&momentum, st.updates_done)?;
    trainer.set_aug_rng_state(st.aug_rng);
    synth.set_noise_calls(st.noise_calls);
    let n = t.get("synthetic.labels").map_or(0, Vec::len);
    Ok(RunState {
        images: get("synthetic.images", n * run.per)?.clone(),
        labels: get("synthetic.labels", n)?.iter().map(|&l| l as usize).collect(),
        rng: Rng::from_state(st.rng),
        epochs: st.epochs,
        next_epoch: st.next_epoch,
        fp_top1: st.fp_top1,
        ptq_top1: st.ptq_top1,
        synth_s: st.synth_s,
        train_s: st.train_s,
        earlier_s: st.total_s,
        dropped: st.dropped,
    })
}

/// The checkpoint after an epoch: everything needed to continue from the next one.
pub(super) fn save(
    run: &Run,
    trainer: &QTrainer,
    synth: &Synthesizer,
    state: &RunState,
    config_json: &str,
    model_fp: &str,
    total_s: f64,
) -> Result<()> {
    let (gpu, q) = (run.gpu, run.q);
    let quant = q.quant.as_ref().context("Q must be quantized")?;
    let (momentum, updates_done) = trainer.optimizer_state()?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for prm in &q.params {
        tensors.push((format!("q.{}", prm.name), vec![prm.value.numel()], prm.value.read(gpu)?));
    }
    tensors.push(("q.qparams".into(), vec![quant.state.qparams.numel()], quant.state.qparams.read(gpu)?));
    tensors.push(("q.qmeta".into(), vec![quant.state.qmeta.numel()], quant.state.qmeta.read(gpu)?));
    for (i, m) in momentum.into_iter().enumerate() {
        tensors.push((format!("momentum.{i}"), vec![m.len()], m));
    }
    tensors.push(("synthetic.images".into(), vec![state.images.len()], state.images.clone()));
    let labels = state.labels.iter().map(|&l| l as f32).collect();
    tensors.push(("synthetic.labels".into(), vec![state.labels.len()], labels));
    let st = ScheduleState {
        format: CHECKPOINT_FORMAT.into(),
        config: config_json.to_string(),
        model: model_fp.to_string(),
        next_epoch: state.next_epoch,
        rng: state.rng.state(),
        noise_calls: synth.noise_calls(),
        updates_done,
        aug_rng: trainer.aug_rng_state(),
        epochs: state.epochs.clone(),
        fp_top1: state.fp_top1,
        ptq_top1: state.ptq_top1,
        synth_s: state.synth_s,
        train_s: state.train_s,
        total_s,
        dropped: state.dropped,
    };
    write_checkpoint(&run.opts.out.join(CHECKPOINT), &st, tensors)
}

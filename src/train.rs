//! `maskaq train`: ordinary supervised training of a full-precision ViT — AdamW, cross-entropy,
//! light augmentation (random shift with padding, horizontal flip), warm-up then cosine
//! learning rate — with a progress bar and a checkpoint after every epoch.
//!
//! A step is one submission (augment, forward, loss, backward, optimizer) that the host does
//! not wait for; the per-image losses are summed on the GPU and read back only when logged.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::data::dataset;
use crate::eval::{ModelRunner, check_labels, evaluate};
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::model::checkpoint::{Weights, load_weights, resolve, save_model};
use crate::model::{Graph, GraphOptions, Model, ModelConfig};
use crate::ops::augment::shift_flip;
use crate::ops::loss::cross_entropy;
use crate::ops::optim::{Slice, adamw};
use crate::ops::reduce::SumRows;
use crate::progress::Progress;
use crate::rng::Rng;

pub struct TrainArgs {
    /// Start from random weights of this architecture (timm name or config.json path)...
    pub arch: Option<String>,
    /// ...or from this checkpoint.
    pub model: Option<PathBuf>,
    pub data: PathBuf,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub weight_decay: f32,
    pub warmup_epochs: usize,
    pub seed: u64,
    pub out: PathBuf,
    pub eval_data: Option<PathBuf>,
    /// Train on the first N samples only.
    pub limit: Option<usize>,
    /// Largest random shift in pixels (0: none); horizontal flips with probability 1/2.
    pub shift: usize,
    pub flip: bool,
    pub progress: bool,
}

#[derive(Serialize, Clone, Debug)]
pub struct EpochLog {
    pub epoch: usize,
    pub train_loss: f64,
    pub lr_end: f32,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_top1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_top5: Option<f64>,
}

/// The learning rate at `step` of `total`: linear warm-up over `warmup` steps, then cosine to 0.
pub fn lr_at(base: f32, step: usize, warmup: usize, total: usize) -> f32 {
    if step < warmup {
        return base * (step + 1) as f32 / warmup as f32;
    }
    let t = (step - warmup) as f32 / (total - warmup).max(1) as f32;
    base * 0.5 * (1.0 + (std::f32::consts::PI * t).cos())
}

/// timm's convention: no weight decay on biases, norms, tokens and position embeddings.
fn decays(name: &str, shape: &[usize]) -> bool {
    shape.len() >= 2 && !name.contains("token") && !name.contains("pos_embed")
}

fn initial_model(gpu: &Gpu, args: &TrainArgs) -> Result<Model> {
    match (&args.model, &args.arch) {
        (Some(m), arch) => {
            let (cfg, file) = resolve(m, arch.as_deref())?;
            Ok(Model::new(gpu, cfg.clone(), &load_weights(&cfg, &file)?))
        }
        (None, Some(a)) => {
            let cfg = if a.ends_with(".json") {
                ModelConfig::from_json_file(Path::new(a))?
            } else {
                ModelConfig::from_arch(a)?
            };
            Ok(Model::new(gpu, cfg.clone(), &Weights::random(&cfg, args.seed)))
        }
        (None, None) => bail!("give --arch CONFIG (random initialisation) or --model CHECKPOINT"),
    }
}

pub fn train(gpu: &Gpu, args: &TrainArgs) -> Result<Vec<EpochLog>> {
    if args.epochs == 0 || args.batch == 0 {
        bail!("--epochs and --batch must be at least 1");
    }
    let data = dataset::open(&args.data).with_context(|| format!("--data {}", args.data.display()))?;
    let n = args.limit.map_or(data.len(), |l| l.min(data.len()));
    if n < args.batch {
        bail!("--data {}: {n} samples, fewer than one batch of {}", args.data.display(), args.batch);
    }
    let vit = initial_model(gpu, args)?;
    let cfg = vit.cfg.clone();
    check_labels(data.as_ref(), n, cfg.num_classes)?;
    let eval_data = match &args.eval_data {
        Some(p) => Some(dataset::open(p).with_context(|| format!("--eval-data {}", p.display()))?),
        None => None,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("--out {}: cannot create", args.out.display()))?;

    let b = args.batch;
    let shape = [b, cfg.in_chans, cfg.img_size, cfg.img_size];
    let per = cfg.in_chans * cfg.img_size * cfg.img_size;
    let g = Graph::build(gpu, &vit, b, GraphOptions { backward: true, ..Default::default() });
    let raw = Tensor::zeros(gpu, &shape);
    let draws = Tensor::zeros(gpu, &[b, 3]);
    let targets = Tensor::zeros(gpu, &[b]);
    let losses = Tensor::zeros(gpu, &[b]);
    let loss_sum = Tensor::zeros(gpu, &[1]);
    let hyper = Tensor::zeros(gpu, &[4]);
    let fill: Vec<f32> = (0..cfg.in_chans).map(|c| -cfg.preprocess.mean[c] / cfg.preprocess.std[c]).collect();
    let pre: Vec<Dispatch> = vec![shift_flip(gpu, shape, &fill, &raw, &g.images, &draws)];
    let post: Vec<Dispatch> = vec![
        cross_entropy(gpu, b, cfg.num_classes, 1.0 / b as f32, &g.logits, &targets, &losses, &g.d_logits),
        SumRows { n: 1, rows: b, s_off: 0, rs: 1, o_off: 0, alpha: 1.0, beta: 1.0 }
            .dispatch(gpu, &losses, &loss_sum),
    ];
    let (opt, moments) = adamw_steps(gpu, &vit, args.weight_decay, &hyper);

    let steps_per_epoch = n / b;
    let total = steps_per_epoch * args.epochs;
    let warmup = (steps_per_epoch * args.warmup_epochs).min(total / 2);
    let mut rng = Rng::new(args.seed ^ 0x0074_7261_696e);
    let mut step = 0usize;
    let mut logs = Vec::new();
    let pb = if args.progress { Progress::new("train", "steps") } else { Progress::hidden() };
    pb.start(total as u64, format!("epoch 1/{}", args.epochs));
    let mut images = vec![0f32; b * per];
    let mut labels = vec![0f32; b];
    let mut draw = vec![0f32; 3 * b];
    for epoch in 0..args.epochs {
        let start = Instant::now();
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        loss_sum.write(gpu, &[0.0]);
        let mut lr = 0.0;
        for s in 0..steps_per_epoch {
            if crate::interrupt::requested() {
                if epoch == 0 {
                    bail!("during epoch 1, before any epoch had finished: no model was written");
                }
                bail!("during epoch {}; {} holds the model of epoch {epoch}", epoch + 1, args.out.display());
            }
            let batch = Batch { images: &mut images, labels: &mut labels, draws: &mut draw };
            load_batch(data.as_ref(), &order[s * b..(s + 1) * b], &cfg.preprocess, args, &mut rng, batch)?;
            raw.write(gpu, &images);
            targets.write(gpu, &labels);
            draws.write(gpu, &draw);
            lr = lr_at(args.lr, step, warmup, total);
            let t = (step + 1) as i32;
            hyper.write(gpu, &[lr, 1.0 - 0.9f32.powi(t), 1.0 - 0.999f32.powi(t), 0.0]);
            gpu.run_all(&[&pre, g.forward_dispatches(), &post, g.backward_dispatches(), &opt]);
            step += 1;
            pb.inc(1);
            if (s + 1) % 50 == 0 {
                let mean = loss_sum.read(gpu)?[0] as f64 / ((s + 1) * b) as f64;
                pb.set_message(format!("epoch {}/{}  loss {mean:.4}  lr {lr:.2e}", epoch + 1, args.epochs));
            }
        }
        let train_loss = loss_sum.read(gpu)?[0] as f64 / (steps_per_epoch * b) as f64;
        if !train_loss.is_finite() {
            bail!("training diverged at epoch {} (loss {train_loss}); try a smaller --lr", epoch + 1);
        }
        save_model(gpu, &vit, &args.out)?;
        let (eval_top1, eval_top5) = match &eval_data {
            Some(ed) => {
                let mut runner = ModelRunner::new(gpu, &vit, 64.min(ed.len().max(1)));
                let report = evaluate(ed.as_ref(), &cfg.preprocess, &mut runner, None, &Progress::hidden())?;
                (Some(report.top1), Some(report.top5))
            }
            None => (None, None),
        };
        let log = EpochLog {
            epoch: epoch + 1,
            train_loss,
            lr_end: lr,
            seconds: start.elapsed().as_secs_f64(),
            eval_top1,
            eval_top5,
        };
        let line = format!(
            "epoch {}/{}: train loss {:.4}{}  ({:.1} s)",
            log.epoch,
            args.epochs,
            log.train_loss,
            eval_top1.map_or(String::new(), |t| format!(", eval top-1 {t:.2} %")),
            log.seconds
        );
        if args.progress {
            pb.suspend(|| eprintln!("{line}"));
        }
        logs.push(log);
        crate::io::write_atomic(
            &args.out.join("train_log.json"),
            serde_json::to_string_pretty(&logs)?.as_bytes(),
        )?;
    }
    pb.finish();
    drop(moments); // the AdamW moments live until training ends
    Ok(logs)
}

/// One AdamW dispatch per parameter (weight decay only where `decays` says), and the moments
/// they update, which must live as long as the dispatches are run.
fn adamw_steps(
    gpu: &Gpu,
    vit: &Model,
    weight_decay: f32,
    hyper: &Tensor,
) -> (Vec<Dispatch>, Vec<(Tensor, Tensor)>) {
    let mut moments = Vec::new();
    let mut opt = Vec::new();
    for p in &vit.params {
        let (m, v) = (Tensor::zeros(gpu, &p.shape), Tensor::zeros(gpu, &p.shape));
        let wd = if decays(&p.name, &p.shape) { weight_decay } else { 0.0 };
        opt.push(adamw(
            gpu,
            Slice::all(p.value.numel()),
            (0.9, 0.999),
            1e-8,
            wd,
            &p.value,
            &p.grad,
            &m,
            &v,
            hyper,
        ));
        moments.push((m, v));
    }
    (opt, moments)
}

/// The host side of one training batch.
struct Batch<'a> {
    images: &'a mut [f32],
    labels: &'a mut [f32],
    /// Per image: the shift in y and x and the flip (1) of the augmentation kernel.
    draws: &'a mut [f32],
}

/// Loads the samples `idx` and draws each one's random shift and flip.
fn load_batch(
    data: &dyn dataset::Dataset,
    idx: &[usize],
    pp: &crate::model::config::Preprocess,
    args: &TrainArgs,
    rng: &mut Rng,
    batch: Batch,
) -> Result<()> {
    let per = batch.images.len() / idx.len();
    let j = args.shift as i64;
    let shift = |r: &mut Rng| if j > 0 { r.below(2 * j as usize + 1) as f32 - j as f32 } else { 0.0 };
    for (k, &i) in idx.iter().enumerate() {
        let sample = data.load(i, pp).with_context(|| format!("training sample {}", data.name(i)))?;
        batch.images[k * per..(k + 1) * per].copy_from_slice(&sample.input);
        batch.labels[k] = sample.label as f32;
        batch.draws[3 * k] = shift(rng);
        batch.draws[3 * k + 1] = shift(rng);
        batch.draws[3 * k + 2] = if args.flip && rng.below(2) == 1 { 1.0 } else { 0.0 };
    }
    Ok(())
}

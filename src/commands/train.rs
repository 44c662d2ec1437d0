//! `maskaq train`: the command-line side of supervised training (`crate::train`): flags, their
//! checks and the output folder.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::gpu::{Gpu, GpuOptions};
use crate::io::{Existing, OutDir};

#[derive(clap::Args, Debug)]
pub struct TrainCmd {
    /// Architecture to initialise randomly: a timm name or a config.json path.
    #[arg(long, value_name = "NAME|CONFIG")]
    pub arch: Option<String>,
    /// Or continue from this checkpoint (a timm folder or a .safetensors file with --arch).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Training data: an image folder (one subfolder per class) or an IDX images file.
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// Passes over the training data.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Images per step.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Peak AdamW learning rate (linear warm-up, then cosine to 0).
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    pub lr: f32,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    pub weight_decay: f32,
    /// Epochs of linear learning-rate warm-up.
    #[arg(long, default_value_t = 1)]
    pub warmup_epochs: usize,
    /// Largest random shift in pixels (padding with black), 0 for none.
    #[arg(long, default_value_t = 2)]
    pub shift: usize,
    /// No random horizontal flips.
    #[arg(long)]
    pub no_flip: bool,
    /// Seed of the initialisation, the order and the augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Evaluate after every epoch on this dataset.
    #[arg(long, value_name = "PATH")]
    pub eval_data: Option<PathBuf>,
    /// Train on the first N samples only.
    #[arg(long, visible_alias = "limit", value_name = "N")]
    pub train_limit: Option<usize>,
    /// Output folder (config.json + model.safetensors after every epoch, train_log.json).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace what an earlier run wrote in --out.
    #[arg(long)]
    pub overwrite: bool,
    /// Print the per-epoch log as JSON on stdout at the end.
    #[arg(long)]
    pub json: bool,
}

pub fn run(gpu_opts: &GpuOptions, a: &TrainCmd) -> Result<()> {
    if a.epochs == 0 || a.batch == 0 {
        bail!("--epochs and --batch must be at least 1");
    }
    if !(a.lr.is_finite() && a.lr > 0.0) {
        bail!("--lr {}: expected a positive learning rate", a.lr);
    }
    if !(a.weight_decay.is_finite() && a.weight_decay >= 0.0) {
        bail!("--weight-decay {}: expected a weight decay >= 0", a.weight_decay);
    }
    if a.train_limit == Some(0) {
        bail!("--train-limit must be at least 1");
    }
    let cfg = crate::commands::config_of(a.model.as_deref(), a.arch.as_deref())?;
    let mut inputs: Vec<(&str, &Path)> = vec![("--data", a.data.as_path())];
    if let Some(m) = &a.model {
        inputs.push(("--model", m.as_path()));
    }
    if let Some(e) = &a.eval_data {
        inputs.push(("--eval-data", e.as_path()));
    }
    let out = OutDir::prepare(
        &a.out,
        &inputs,
        a.overwrite,
        Existing::Refuse,
        &["config.json", "model.safetensors", "train_log.json"],
    )?;
    let gpu = Gpu::new(gpu_opts)?;
    crate::commands::check_fits(&gpu, &cfg, a.batch, "--batch")?;
    let args = crate::train::TrainArgs {
        arch: a.arch.clone(),
        model: a.model.clone(),
        data: a.data.clone(),
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        weight_decay: a.weight_decay,
        warmup_epochs: a.warmup_epochs,
        seed: a.seed,
        out: out.path.clone(),
        eval_data: a.eval_data.clone(),
        limit: a.train_limit,
        shift: a.shift,
        flip: !a.no_flip,
        progress: true,
    };
    let logs = crate::train::train(&gpu, &args)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&logs)?);
    }
    Ok(())
}

//! `maskaq predict`: top-k classes per image with timm's preprocessing.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use crate::data::preprocess::{eval_transform, load_image};
use crate::gpu::Gpu;
use crate::model::{Graph, GraphOptions, Model};

#[derive(Serialize)]
pub struct ClassProb {
    pub class: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub prob: f32,
}

#[derive(Serialize)]
pub struct Prediction {
    pub file: String,
    pub top: Vec<ClassProb>,
    pub logits: Vec<f32>,
}

#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    pub model: crate::cli::ModelArgs,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Print the predictions as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Image files (PNG or JPEG).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
}

pub fn run(gpu_opts: &crate::gpu::GpuOptions, args: &PredictArgs) -> Result<()> {
    if args.top == 0 {
        anyhow::bail!("--top must be at least 1");
    }
    let (cfg, file) = crate::commands::resolve(&args.model.model, args.model.arch.as_deref())?;
    let weights = crate::model::checkpoint::load_weights(&cfg, &file)?;
    let gpu = Gpu::new(gpu_opts)?;
    let vit = Model::new(&gpu, cfg, &weights);
    let preds = predict(&gpu, &vit, &args.images, args.top)?;
    print(&preds, args.json)
}

/// Images are processed in batches of this many.
const BATCH: usize = 16;

pub fn predict(gpu: &Gpu, vit: &Model, images: &[PathBuf], top: usize) -> Result<Vec<Prediction>> {
    let cfg = &vit.cfg;
    // Decode everything first so a bad file fails before any GPU work.
    let mut inputs = Vec::with_capacity(images.len());
    for path in images {
        let img = load_image(path, cfg.in_chans)?;
        inputs.push(eval_transform(&img, &cfg.preprocess));
    }
    let mut out = Vec::new();
    let batch = images.len().clamp(1, BATCH);
    let graph = Graph::build(gpu, vit, batch, GraphOptions::default());
    let per_image = inputs.first().map_or(0, Vec::len);
    for (chunk_paths, chunk) in images.chunks(batch).zip(inputs.chunks(batch)) {
        let mut flat = vec![0f32; batch * per_image];
        for (i, x) in chunk.iter().enumerate() {
            flat[i * per_image..(i + 1) * per_image].copy_from_slice(x);
        }
        graph.images.write(gpu, &flat);
        graph.forward(gpu);
        let logits = graph.logits.read(gpu)?;
        let c = cfg.num_classes;
        for (i, path) in chunk_paths.iter().enumerate() {
            let row = &logits[i * c..(i + 1) * c];
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let z: f64 = row.iter().map(|&v| ((v - m) as f64).exp()).sum();
            let mut idx: Vec<usize> = (0..c).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            let top = idx
                .iter()
                .take(top.min(c))
                .map(|&k| ClassProb {
                    class: k,
                    label: cfg.label_names.as_ref().and_then(|l| l.get(k).cloned()),
                    prob: (((row[k] - m) as f64).exp() / z) as f32,
                })
                .collect();
            out.push(Prediction { file: path.display().to_string(), top, logits: row.to_vec() });
        }
    }
    Ok(out)
}

pub fn print(preds: &[Prediction], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(preds)?);
        return Ok(());
    }
    for p in preds {
        println!("{}", p.file);
        for t in &p.top {
            match &t.label {
                Some(l) => println!("  {:>5}  {:<24} {:.4}", t.class, l, t.prob),
                None => println!("  {:>5}  {:.4}", t.class, t.prob),
            }
        }
    }
    Ok(())
}

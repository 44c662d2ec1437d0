//! Top-1/top-5 accuracy of a model on a labelled dataset (an image folder in the ImageNet val
//! layout, or IDX files such as Fashion-MNIST's): what `maskaq eval`, the pipeline's per-epoch
//! evaluation, training and the agreement check share.
//!
//! The model is reached only through [`Runner`] (a batch of preprocessed images in, logits
//! out), so another model runner (a quantized model) can be evaluated by the same code.
//! A loader thread decodes and preprocesses the next batch while the runner works on the
//! current one.

use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::data::dataset::{Dataset, one_line};
use crate::gpu::Gpu;
use crate::model::config::Preprocess;
use crate::model::{Graph, GraphOptions, Model};
use crate::progress::Progress;

/// Maps batches of preprocessed images to logits.
pub trait Runner {
    /// The most images one call takes.
    fn batch(&self) -> usize;
    /// Logits per image.
    fn num_classes(&self) -> usize;
    /// `images` holds `count` (≤ [`Runner::batch`]) images, `[C, H, W]` each, back to back;
    /// returns `count × num_classes` logits, row-major.
    fn logits(&mut self, images: &[f32], count: usize) -> Result<Vec<f32>>;
}

/// A model (full precision, or Q with its fake quantization): one forward [`Graph`] built for
/// `batch` images, a short last batch padded with zeros.
pub struct ModelRunner<'a> {
    gpu: &'a Gpu,
    graph: Graph,
    classes: usize,
    per_image: usize,
}

impl<'a> ModelRunner<'a> {
    pub fn new(gpu: &'a Gpu, vit: &Model, batch: usize) -> ModelRunner<'a> {
        let [c, h, w] = vit.cfg.preprocess.input_size;
        ModelRunner {
            gpu,
            graph: Graph::build(gpu, vit, batch, GraphOptions::default()),
            classes: vit.cfg.num_classes,
            per_image: c * h * w,
        }
    }
}

impl Runner for ModelRunner<'_> {
    fn batch(&self) -> usize {
        self.graph.batch
    }

    fn num_classes(&self) -> usize {
        self.classes
    }

    fn logits(&mut self, images: &[f32], count: usize) -> Result<Vec<f32>> {
        let b = self.graph.batch;
        if count > b || images.len() != count * self.per_image {
            bail!("internal: {} values for {count} images of {} (batch {b})", images.len(), self.per_image);
        }
        if count == b {
            self.graph.images.write(self.gpu, images);
        } else {
            let mut padded = vec![0f32; b * self.per_image];
            padded[..images.len()].copy_from_slice(images);
            self.graph.images.write(self.gpu, &padded);
        }
        self.graph.forward(self.gpu);
        let mut logits = self.graph.logits.read(self.gpu)?;
        logits.truncate(count * self.classes);
        Ok(logits)
    }
}

/// The result of an evaluation. Serializes to exactly `top1`, `top5`, `images`, `skipped`.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// Top-1 accuracy in percent (0–100).
    pub top1: f64,
    /// Top-k accuracy in percent, k = [`EvalReport::top_k`] = min(5, classes).
    pub top5: f64,
    /// Images evaluated (skipped ones not counted).
    pub images: usize,
    /// Images that could not be read.
    pub skipped: usize,
    #[serde(skip)]
    pub top_k: usize,
    /// The skipped samples: (name, error message).
    #[serde(skip)]
    pub skipped_files: Vec<(String, String)>,
    /// Wall time of the evaluation (loading, preprocessing and the model).
    #[serde(skip)]
    pub seconds: f64,
}

/// Checks that every label among the first `n` samples is a class of the model.
pub fn check_labels(data: &dyn Dataset, n: usize, classes: usize) -> Result<()> {
    if let Some(i) = (0..n).find(|&i| data.label(i) >= classes) {
        let known = match data.num_classes() {
            Some(k) => format!(" ({} has {k} classes)", data.source()),
            None => String::new(),
        };
        bail!(
            "{}: label {} but the model has {classes} classes (0..={}){known}",
            data.name(i),
            data.label(i),
            classes - 1
        );
    }
    Ok(())
}

/// Rank of `label` in `row` (0 = the top class), ties broken by the lower index as in
/// `maskaq predict`'s stable sort.
pub fn rank(row: &[f32], label: usize) -> usize {
    let v = row[label];
    row.iter()
        .enumerate()
        .filter(|&(j, x)| match x.total_cmp(&v) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => j < label,
            std::cmp::Ordering::Less => false,
        })
        .count()
}

/// A batch prepared by the loader thread.
struct Batch {
    inputs: Vec<f32>,
    labels: Vec<usize>,
    /// Dataset samples this batch covers, skipped ones included (for the progress bar).
    consumed: u64,
}

/// Evaluates the first `limit` samples (all by default) of `data`, preprocessed with `pp`,
/// through `runner`. Unreadable samples are skipped and reported; an error when none is
/// readable or a label is not a class of the model.
pub fn evaluate(
    data: &dyn Dataset,
    pp: &Preprocess,
    runner: &mut dyn Runner,
    limit: Option<usize>,
    progress: &Progress,
) -> Result<EvalReport> {
    let n = limit.map_or(data.len(), |l| l.min(data.len()));
    if n == 0 {
        bail!("{}: no images", data.source());
    }
    let classes = runner.num_classes();
    check_labels(data, n, classes)?;
    let batch = runner.batch().max(1);
    let top_k = classes.min(5);
    let start = Instant::now();
    let (tx, rx) = mpsc::sync_channel::<Batch>(1);

    let loader = move || -> Vec<(String, String)> {
        let mut skipped = Vec::new();
        let mut cur = Batch { inputs: Vec::new(), labels: Vec::new(), consumed: 0 };
        for i in 0..n {
            cur.consumed += 1;
            match data.load(i, pp) {
                Ok(s) => {
                    cur.inputs.extend_from_slice(&s.input);
                    cur.labels.push(s.label);
                }
                Err(e) => skipped.push((data.name(i), one_line(&format!("{e:#}")))),
            }
            if cur.labels.len() == batch || i + 1 == n {
                let full = std::mem::replace(
                    &mut cur,
                    Batch { inputs: Vec::new(), labels: Vec::new(), consumed: 0 },
                );
                // A closed channel means the consumer failed: stop loading.
                if tx.send(full).is_err() {
                    break;
                }
            }
        }
        skipped
    };

    let mut consume = |rx: mpsc::Receiver<Batch>| -> Result<(usize, usize, usize)> {
        let (mut seen, mut top1, mut topk) = (0, 0, 0);
        for b in rx {
            crate::interrupt::check()?;
            if !b.labels.is_empty() {
                let logits = runner.logits(&b.inputs, b.labels.len())?;
                if logits.len() != b.labels.len() * classes {
                    bail!(
                        "the model returned {} logits for {} images of {classes} classes",
                        logits.len(),
                        b.labels.len()
                    );
                }
                for (row, &label) in logits.chunks_exact(classes).zip(&b.labels) {
                    let r = rank(row, label);
                    top1 += (r == 0) as usize;
                    topk += (r < top_k) as usize;
                }
                seen += b.labels.len();
            }
            progress.inc(b.consumed);
        }
        Ok((seen, top1, topk))
    };

    let (counts, skipped_files) = std::thread::scope(|s| {
        let handle = s.spawn(loader);
        // `consume` owns the receiver and drops it on return, which stops the loader early
        // when the runner fails.
        let counts = consume(rx);
        let skipped = handle.join().map_err(|_| anyhow::anyhow!("the data loader thread panicked"));
        (counts, skipped)
    });
    let (images, top1, topk) = counts?;
    let skipped_files = skipped_files?;
    if images == 0 {
        let (name, why) = &skipped_files[0];
        bail!("{}: none of the {n} images could be read (first: {})", data.source(), with_name(name, why));
    }
    let pct = |k: usize| 100.0 * k as f64 / images as f64;
    Ok(EvalReport {
        top1: pct(top1),
        top5: pct(topk),
        images,
        skipped: skipped_files.len(),
        top_k,
        skipped_files,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// `message`, prefixed with `name` unless it already names the sample.
fn with_name(name: &str, message: &str) -> String {
    if message.contains(name) { message.to_string() } else { format!("{name}: {message}") }
}

/// How many skipped samples are listed by name.
const SKIPPED_LISTED: usize = 20;

/// The skipped samples, one per line (at most 20, then `... and N more`); empty when none.
pub fn skipped_lines(report: &EvalReport) -> Vec<String> {
    if report.skipped_files.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![format!(
        "skipped {} unreadable image{}:",
        report.skipped,
        if report.skipped == 1 { "" } else { "s" }
    )];
    for (name, why) in report.skipped_files.iter().take(SKIPPED_LISTED) {
        lines.push(format!("  {}", with_name(name, why)));
    }
    if report.skipped_files.len() > SKIPPED_LISTED {
        lines.push(format!("  ... and {} more", report.skipped_files.len() - SKIPPED_LISTED));
    }
    lines
}

/// The `--json` line: `{"top1": %, "top5": %, "images": N, "skipped": N}`.
pub fn json_line(report: &EvalReport) -> Result<String> {
    let num = |x: f64| serde_json::to_string(&x);
    Ok(format!(
        "{{\"top1\": {}, \"top5\": {}, \"images\": {}, \"skipped\": {}}}",
        num(report.top1)?,
        num(report.top5)?,
        report.images,
        report.skipped
    ))
}

//! How well a synthetic set does its first job: the share of images that P classifies as the
//! label they were synthesized for, overall and per class. It is measured on the final images as
//! written (no augmentation), the way `maskaq eval --data SYNTH_DIR` would, so a low number means
//! the set teaches Q the wrong classes (docs/results.md §5).

use anyhow::Result;
use serde::Serialize;

use crate::eval::{ModelRunner, Runner, rank};
use crate::gpu::Gpu;
use crate::model::Model;

#[derive(Clone, Debug, Serialize)]
pub struct Agreement {
    /// Percent of images whose top-1 class under P is their target.
    pub top1: f64,
    pub images: usize,
    /// Per target class: (images, of which P gives that class).
    pub per_class: Vec<(usize, usize)>,
}

impl Agreement {
    /// "103 of 128 (80.5 %) as their targets", then the classes below 90 % with their counts.
    pub fn summary(&self, names: Option<&[String]>) -> String {
        let hits: usize = self.per_class.iter().map(|c| c.1).sum();
        let mut s = format!("{hits} of {} ({:.1} %) as their targets", self.images, self.top1);
        let weak: Vec<String> = self
            .per_class
            .iter()
            .enumerate()
            .filter(|&(_, &(n, h))| n > 0 && (h as f64) < 0.9 * n as f64)
            .map(|(c, &(n, h))| {
                let name = names.and_then(|v| v.get(c)).cloned().unwrap_or_else(|| format!("class {c}"));
                format!("{name} {h}/{n}")
            })
            .collect();
        if !weak.is_empty() {
            s += &format!("; below 90 %: {}", weak.join(", "));
        }
        s
    }
}

/// P's agreement with `labels` on `images` ([N, C, H, W] in normalised space).
pub fn agreement(gpu: &Gpu, p: &Model, images: &[f32], labels: &[usize]) -> Result<Agreement> {
    let classes = p.cfg.num_classes;
    let per = images.len() / labels.len().max(1);
    let mut runner = ModelRunner::new(gpu, p, labels.len().clamp(1, 64));
    let mut per_class = vec![(0usize, 0usize); classes];
    let b = runner.batch();
    for (chunk, ls) in images.chunks(b * per).zip(labels.chunks(b)) {
        let logits = runner.logits(chunk, ls.len())?;
        for (row, &l) in logits.chunks_exact(classes).zip(ls) {
            per_class[l].0 += 1;
            per_class[l].1 += (rank(row, l) == 0) as usize;
        }
    }
    let hits: usize = per_class.iter().map(|c| c.1).sum();
    Ok(Agreement { top1: 100.0 * hits as f64 / labels.len().max(1) as f64, images: labels.len(), per_class })
}

//! Labelled datasets for evaluation: an image folder (ImageNet val layout) or IDX files
//! (MNIST, Fashion-MNIST). Both give preprocessed samples through [`Dataset`].

use std::path::Path;

use anyhow::{Result, bail};

use crate::data::folder::FolderDataset;
use crate::data::idx::IdxDataset;
use crate::data::preprocess::{Image8, eval_transform};
use crate::model::config::Preprocess;

/// One preprocessed sample: a `[C, H, W]` tensor (CHW, normalised) and its class index.
#[derive(Clone, Debug)]
pub struct Sample {
    pub input: Vec<f32>,
    pub label: usize,
}

/// A labelled dataset of images, indexed `0..len()` in a fixed order.
///
/// `Sync` so a loader thread can prepare the next batch while the model runs.
pub trait Dataset: Sync {
    /// Number of samples (unreadable files included: they fail in [`Dataset::load`]).
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of classes where the dataset knows it (an image folder: its class folders;
    /// IDX: the largest label + 1).
    fn num_classes(&self) -> Option<usize>;

    /// The class index of sample `i` (known without reading the image).
    fn label(&self, i: usize) -> usize;

    /// A name for sample `i` in messages (a file path, or `file[i]`).
    fn name(&self, i: usize) -> String;

    /// What the dataset was opened from, for messages.
    fn source(&self) -> String;

    /// Sample `i` through timm's eval transform for `pp`. An unreadable image is an error
    /// (naming it), so the caller can skip it and count it.
    fn load(&self, i: usize, pp: &Preprocess) -> Result<Sample>;
}

/// `n` samples of `inner` spread evenly over it (sample i is inner's floor(i len / n)), so a
/// class-ordered image folder keeps every class.
pub struct Spread {
    inner: Box<dyn Dataset>,
    n: usize,
}

impl Spread {
    pub fn new(inner: Box<dyn Dataset>, n: usize) -> Spread {
        let n = n.min(inner.len());
        Spread { inner, n }
    }

    fn map(&self, i: usize) -> usize {
        (i as u128 * self.inner.len() as u128 / self.n.max(1) as u128) as usize
    }
}

impl Dataset for Spread {
    fn len(&self) -> usize {
        self.n
    }
    fn num_classes(&self) -> Option<usize> {
        self.inner.num_classes()
    }
    fn label(&self, i: usize) -> usize {
        self.inner.label(self.map(i))
    }
    fn name(&self, i: usize) -> String {
        self.inner.name(self.map(i))
    }
    fn source(&self) -> String {
        format!("{} ({} of its {} samples, evenly spread)", self.inner.source(), self.n, self.inner.len())
    }
    fn load(&self, i: usize, pp: &Preprocess) -> Result<Sample> {
        self.inner.load(self.map(i), pp)
    }
}

/// Opens `path` as a dataset: a directory is an image folder ([`FolderDataset`]), a file an
/// IDX images file with its labels file beside it ([`IdxDataset`]).
pub fn open(path: &Path) -> Result<Box<dyn Dataset>> {
    if path.is_dir() && path.join(crate::data::synthetic::FILE).is_file() {
        Ok(Box::new(crate::data::synthetic::SyntheticDataset::open(path)?))
    } else if path.is_dir() {
        Ok(Box::new(FolderDataset::open(path)?))
    } else if path.is_file() {
        Ok(Box::new(IdxDataset::open(path)?))
    } else if path.exists() {
        bail!("{}: neither a folder nor a regular file", path.display())
    } else {
        bail!("{}: no such file or folder", path.display())
    }
}

/// Like [`open`], for uses that need no labels (calibration): an image folder without class
/// subfolders, or an IDX images file without its labels file, is accepted too.
pub fn open_unlabelled(path: &Path) -> Result<Box<dyn Dataset>> {
    if path.is_dir() && !path.join(crate::data::synthetic::FILE).is_file() {
        Ok(Box::new(FolderDataset::open_unlabelled(path)?))
    } else if path.is_file() {
        Ok(Box::new(IdxDataset::open_unlabelled(path)?))
    } else {
        open(path)
    }
}

/// `message` on one line: its lines trimmed and joined with "; " (decoder errors may end in or
/// hold newlines).
pub fn one_line(message: &str) -> String {
    message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// Brings an 8-bit image to the model's channel count (gray → RGB by replication; RGB → gray
/// with Pillow's `convert("L")` weights) and applies timm's eval transform.
pub fn image_tensor(img: &Image8, pp: &Preprocess) -> Result<Vec<f32>> {
    let chans = pp.input_size[0];
    if chans != 1 && chans != 3 {
        bail!("models with {chans} input channels take no images (1 or 3 channels only)");
    }
    if img.chans == chans {
        return Ok(eval_transform(img, pp));
    }
    let data = match (img.chans, chans) {
        (1, 3) => img.data.iter().flat_map(|&g| [g, g, g]).collect(),
        (3, 1) => img
            .data
            .chunks_exact(3)
            .map(|p| ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8)
            .collect(),
        (c, _) => bail!("images with {c} channels are not supported (1 or 3 only)"),
    };
    let conv = Image8 { w: img.w, h: img.h, chans, data };
    Ok(eval_transform(&conv, pp))
}

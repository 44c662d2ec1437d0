//! Synthetic datasets written by `maskaq synth` (and the refresh of `maskaq quantize`):
//! `synthetic.safetensors` in a folder, holding `images` [N, C, H, W] in the model's normalised
//! input space and `labels` [N] (the target classes, as f32), plus PNG previews and a labelled
//! contact sheet for people.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::data::dataset::{Dataset, Sample};
use crate::io::write_atomic;
use crate::model::config::{ModelConfig, Preprocess};

pub const FILE: &str = "synthetic.safetensors";

/// Images with their labels, in normalised space.
pub struct SyntheticDataset {
    pub path: PathBuf,
    /// [C, H, W] of one image.
    pub shape: [usize; 3],
    pub images: Vec<f32>,
    pub labels: Vec<usize>,
    pub classes: Option<usize>,
    /// The file's metadata (method, seed, the run's settings, a shard's place).
    pub meta: HashMap<String, String>,
}

impl SyntheticDataset {
    /// Reads `dir/synthetic.safetensors`.
    pub fn open(dir: &Path) -> Result<SyntheticDataset> {
        let path = dir.join(FILE);
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file ({e})", path.display()))?;
        let get = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
            let t = st
                .tensor(name)
                .map_err(|_| anyhow::anyhow!("{}: missing tensor `{name}`", path.display()))?;
            if t.dtype() != Dtype::F32 {
                bail!("{}: tensor `{name}` must be F32", path.display());
            }
            let v = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            Ok((t.shape().to_vec(), v))
        };
        let (ishape, images) = get("images")?;
        let (lshape, labels) = get("labels")?;
        if ishape.len() != 4 || lshape != [ishape[0]] {
            bail!(
                "{}: expected images [N, C, H, W] and labels [N], found {ishape:?} and {lshape:?}",
                path.display()
            );
        }
        if let Some(bad) = labels.iter().find(|l| !(**l >= 0.0 && l.fract() == 0.0)) {
            bail!("{}: label {bad} is not a class index", path.display());
        }
        let (_, header) = SafeTensors::read_metadata(&bytes)?;
        let meta = header.metadata().clone().unwrap_or_default();
        let classes = meta.get("num_classes").and_then(|v| v.parse().ok());
        Ok(SyntheticDataset {
            path,
            shape: [ishape[1], ishape[2], ishape[3]],
            images,
            labels: labels.iter().map(|&l| l as usize).collect(),
            classes,
            meta,
        })
    }

    /// Writes `dir/synthetic.safetensors` atomically.
    pub fn write(
        dir: &Path,
        shape: [usize; 3],
        images: &[f32],
        labels: &[usize],
        meta: HashMap<String, String>,
    ) -> Result<()> {
        let n = labels.len();
        let per: usize = shape.iter().product();
        assert_eq!(images.len(), n * per);
        let ib: Vec<u8> = images.iter().flat_map(|v| v.to_le_bytes()).collect();
        let lb: Vec<u8> = labels.iter().flat_map(|&l| (l as f32).to_le_bytes()).collect();
        let views = vec![
            ("images".to_string(), TensorView::new(Dtype::F32, vec![n, shape[0], shape[1], shape[2]], &ib)?),
            ("labels".to_string(), TensorView::new(Dtype::F32, vec![n], &lb)?),
        ];
        write_atomic(&dir.join(FILE), &crate::io::safetensors_bytes(views, meta)?)
    }
}

impl Dataset for SyntheticDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn num_classes(&self) -> Option<usize> {
        self.classes.or_else(|| self.labels.iter().max().map(|m| m + 1))
    }
    fn label(&self, i: usize) -> usize {
        self.labels[i]
    }
    fn name(&self, i: usize) -> String {
        format!("{}[{i}]", self.path.display())
    }
    fn source(&self) -> String {
        self.path.display().to_string()
    }
    /// Synthetic images are already in the model's normalised input space.
    fn load(&self, i: usize, pp: &Preprocess) -> Result<Sample> {
        if pp.input_size != self.shape {
            bail!(
                "{}: images are {:?}, the model takes {:?}",
                self.path.display(),
                self.shape,
                pp.input_size
            );
        }
        let per: usize = self.shape.iter().product();
        Ok(Sample { input: self.images[i * per..(i + 1) * per].to_vec(), label: self.labels[i] })
    }
}

/// An image in normalised space back to 8-bit pixels (x * std + mean, clamped).
pub fn to_rgb8(img: &[f32], shape: [usize; 3], pp: &Preprocess) -> image::RgbImage {
    let [c, h, w] = shape;
    image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let px = |ch: usize| {
            let v = img[(ch * h + y as usize) * w + x as usize] * pp.std[ch] + pp.mean[ch];
            (v.clamp(0.0, 1.0) * 255.0).round() as u8
        };
        if c == 1 { image::Rgb([px(0); 3]) } else { image::Rgb([px(0), px(1), px(2)]) }
    })
}

/// Images on a contact sheet at most (a sheet of the authors' 10,000 images at 224 px would be a
/// 22,600-pixel square).
pub const SHEET_MAX: usize = 256;

/// Contact-sheet cells are at least this many pixels wide, so that 28-px images and their
/// labels stay readable.
pub const SHEET_CELL_MIN: usize = 96;
/// Height of the strip under each cell that holds its label, and the label's text size.
pub const SHEET_LABEL_H: u32 = 18;
const SHEET_LABEL_PX: u32 = 14;
/// White between cells.
pub const SHEET_GAP: u32 = 2;

/// What the contact sheet writes under an image of class `label`: its name where the model's
/// config has `label_names`, else its index.
pub fn class_label(label: usize, names: Option<&[String]>) -> String {
    match names.and_then(|n| n.get(label)) {
        Some(name) => name.clone(),
        None => format!("class {label}"),
    }
}

/// One PNG per image in `dir/previews/` and `dir/contact_sheet.png`: a grid of the first
/// [`SHEET_MAX`] images, each upscaled (nearest neighbour) to a cell at least
/// [`SHEET_CELL_MIN`] pixels wide with its target class written under it. The images are
/// `cfg`'s input shape, in its normalised space.
pub fn write_previews(dir: &Path, images: &[f32], labels: &[usize], cfg: &ModelConfig) -> Result<()> {
    let shape = [cfg.in_chans, cfg.img_size, cfg.img_size];
    let per: usize = shape.iter().product();
    let n = images.len() / per;
    ensure!(labels.len() == n, "{n} images but {} labels", labels.len());
    let on_sheet = n.min(SHEET_MAX);
    let pdir = dir.join("previews");
    std::fs::create_dir_all(&pdir).with_context(|| format!("cannot create {}", pdir.display()))?;
    let scale = SHEET_CELL_MIN.div_ceil(shape[1].max(1)) as u32;
    let (w, h) = (shape[2] as u32 * scale, shape[1] as u32 * scale);
    let (cell_w, cell_h) = (w + SHEET_GAP, h + SHEET_LABEL_H + SHEET_GAP);
    let cols = (on_sheet as f64).sqrt().ceil().max(1.0) as u32;
    let rows = (on_sheet as u32).div_ceil(cols);
    let mut sheet = image::RgbImage::from_pixel(
        cols * cell_w + SHEET_GAP,
        rows * cell_h + SHEET_GAP,
        image::Rgb([255, 255, 255]),
    );
    let mut texts = Vec::with_capacity(on_sheet);
    for i in 0..n {
        let small = to_rgb8(&images[i * per..(i + 1) * per], shape, &cfg.preprocess);
        crate::plot::write_png(&pdir.join(format!("{i:05}.png")), &small)?;
        if i >= on_sheet {
            continue;
        }
        let big = image::imageops::resize(&small, w, h, image::imageops::FilterType::Nearest);
        let x = SHEET_GAP + (i as u32 % cols) * cell_w;
        let y = SHEET_GAP + (i as u32 / cols) * cell_h;
        image::imageops::replace(&mut sheet, &big, x as i64, y as i64);
        texts.push(crate::plot::Label {
            x: x as i32 + 2,
            y: (y + h) as i32 + 2,
            max_width: w.saturating_sub(4),
            size: SHEET_LABEL_PX,
            text: class_label(labels[i], cfg.label_names.as_deref()),
        });
    }
    crate::plot::draw_labels(&mut sheet, &texts);
    crate::plot::write_png(&dir.join("contact_sheet.png"), &sheet)
}

//! IDX files, the format of MNIST and Fashion-MNIST: a big-endian header (magic, then one u32
//! per dimension) followed by the raw values. Images are `0x00000803` (u8, N×H×W), labels
//! `0x00000801` (u8, N). Files may be gzip-compressed (recognised by the magic bytes 1f 8b, not
//! by the name).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::data::dataset::{Dataset, Sample, image_tensor};
use crate::data::preprocess::Image8;
use crate::model::config::Preprocess;

/// Magic number of an IDX file of u8 images (N×H×W).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of u8 labels (N).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// The decoded contents of an IDX images file.
#[derive(Clone, Debug)]
pub struct IdxImages {
    pub count: usize,
    pub height: usize,
    pub width: usize,
    /// `count × height × width` pixels, row-major.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// Image `i` as a one-channel 8-bit image.
    pub fn image(&self, i: usize) -> Image8 {
        let n = self.height * self.width;
        Image8 { w: self.width, h: self.height, chans: 1, data: self.pixels[i * n..(i + 1) * n].to_vec() }
    }
}

/// Reads a file, decompressing it when it starts with the gzip magic bytes.
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| anyhow::anyhow!("{}: corrupt or truncated gzip data ({e})", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn describe_magic(magic: u32) -> &'static str {
    match magic {
        IMAGES_MAGIC => " (an IDX images file)",
        LABELS_MAGIC => " (an IDX labels file)",
        m if m >> 16 == 0 && (m >> 8) & 0xff != 0x08 => " (IDX data that is not unsigned bytes)",
        m if m >> 16 == 0 => " (IDX data of another number of dimensions)",
        _ => " (not an IDX file)",
    }
}

/// Parses an IDX byte stream with the expected magic (whose low byte is the number of
/// dimensions); returns the dimensions and the data.
fn parse(path: &Path, bytes: &[u8], magic: u32, what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let ndim = (magic & 0xff) as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < 4 {
        bail!(
            "{}: truncated IDX header: {} bytes, expected at least {header} for an {what} file",
            path.display(),
            bytes.len()
        );
    }
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    let found = be(0);
    if found != magic {
        bail!(
            "{}: not an IDX {what} file: magic 0x{found:08x}{}, expected 0x{magic:08x}",
            path.display(),
            describe_magic(found)
        );
    }
    if bytes.len() < header {
        bail!(
            "{}: truncated IDX header: {} bytes, expected {header} ({ndim} dimensions)",
            path.display(),
            bytes.len()
        );
    }
    let dims: Vec<usize> = (0..ndim).map(|k| be(4 + 4 * k) as usize).collect();
    let shape = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×");
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .with_context(|| format!("{}: IDX dimensions {shape} are too large", path.display()))?;
    let data = &bytes[header..];
    if data.len() < expected {
        bail!(
            "{}: truncated data: the header says {shape} = {expected} bytes, found {}",
            path.display(),
            data.len()
        );
    }
    if data.len() > expected {
        bail!(
            "{}: size mismatch: the header says {shape} = {expected} bytes, found {} ({} extra)",
            path.display(),
            data.len(),
            data.len() - expected
        );
    }
    Ok((dims, data.to_vec()))
}

/// Reads an IDX images file (magic 0x00000803, u8, N×H×W), gzip or plain.
pub fn read_images(path: &Path) -> Result<IdxImages> {
    let bytes = read_maybe_gzip(path)?;
    let (dims, pixels) = parse(path, &bytes, IMAGES_MAGIC, "images")?;
    if dims[1] == 0 || dims[2] == 0 {
        bail!("{}: images of size {}×{}, expected at least 1×1", path.display(), dims[1], dims[2]);
    }
    Ok(IdxImages { count: dims[0], height: dims[1], width: dims[2], pixels })
}

/// Reads an IDX labels file (magic 0x00000801, u8, N), gzip or plain.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_maybe_gzip(path)?;
    Ok(parse(path, &bytes, LABELS_MAGIC, "labels")?.1)
}

/// The labels file that goes with an images file, MNIST naming: `images-idx3` → `labels-idx1`
/// (`t10k-images-idx3-ubyte.gz` → `t10k-labels-idx1-ubyte.gz`; `images.idx3` → `labels.idx1`
/// too). Where that name is missing, the same name with or without `.gz` is accepted.
pub fn labels_path(images: &Path) -> Result<PathBuf> {
    let name = images.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let renamed = [("images-idx3", "labels-idx1"), ("images.idx3", "labels.idx1")]
        .iter()
        .find(|(from, _)| name.contains(from))
        .map(|(from, to)| name.replacen(from, to, 1));
    let Some(renamed) = renamed else {
        bail!(
            "{}: cannot find its labels file: expected an images file named like \
             `t10k-images-idx3-ubyte.gz` (MNIST naming) with `t10k-labels-idx1-ubyte.gz` beside it",
            images.display()
        );
    };
    let first = images.with_file_name(&renamed);
    let other = match renamed.strip_suffix(".gz") {
        Some(plain) => images.with_file_name(plain),
        None => images.with_file_name(format!("{renamed}.gz")),
    };
    for p in [&first, &other] {
        if p.is_file() {
            return Ok(p.clone());
        }
    }
    bail!("{}: labels file not found: expected {}", images.display(), first.display())
}

/// An IDX images file with its labels file.
pub struct IdxDataset {
    pub images_path: PathBuf,
    pub labels_path: PathBuf,
    pub images: IdxImages,
    pub labels: Vec<u8>,
}

impl IdxDataset {
    /// Opens an images file and the labels file beside it ([`labels_path`]).
    pub fn open(images_path: &Path) -> Result<IdxDataset> {
        let images = read_images(images_path)?;
        let labels_path = labels_path(images_path)?;
        Self::with_labels(images_path, images, &labels_path)
    }

    /// Opens an images file for uses that need no labels (calibration): with its labels file
    /// when there is one, else every image as class 0.
    pub fn open_unlabelled(images_path: &Path) -> Result<IdxDataset> {
        let images = read_images(images_path)?;
        match labels_path(images_path) {
            Ok(lp) => Self::with_labels(images_path, images, &lp),
            Err(_) => Ok(IdxDataset {
                images_path: images_path.to_path_buf(),
                labels_path: PathBuf::new(),
                labels: vec![0; images.count],
                images,
            }),
        }
    }

    /// Opens an images file with an explicitly named labels file.
    pub fn open_with_labels(images_path: &Path, labels_path: &Path) -> Result<IdxDataset> {
        let images = read_images(images_path)?;
        Self::with_labels(images_path, images, labels_path)
    }

    fn with_labels(images_path: &Path, images: IdxImages, labels_path: &Path) -> Result<Self> {
        let labels = read_labels(labels_path)?;
        if labels.len() != images.count {
            bail!(
                "{}: {} labels, but {} has {} images",
                labels_path.display(),
                labels.len(),
                images_path.display(),
                images.count
            );
        }
        Ok(IdxDataset {
            images_path: images_path.to_path_buf(),
            labels_path: labels_path.to_path_buf(),
            images,
            labels,
        })
    }
}

impl Dataset for IdxDataset {
    fn len(&self) -> usize {
        self.images.count
    }

    /// IDX files do not record the number of classes: the largest label + 1.
    fn num_classes(&self) -> Option<usize> {
        self.labels.iter().max().map(|&m| m as usize + 1)
    }

    fn label(&self, i: usize) -> usize {
        self.labels[i] as usize
    }

    fn name(&self, i: usize) -> String {
        format!("{}[{i}]", self.images_path.display())
    }

    fn source(&self) -> String {
        self.images_path.display().to_string()
    }

    fn load(&self, i: usize, pp: &Preprocess) -> Result<Sample> {
        let gray = self.images.image(i);
        let input = image_tensor(&gray, pp).with_context(|| self.name(i))?;
        Ok(Sample { input, label: self.label(i) })
    }
}

fn write_idx(path: &Path, magic: u32, dims: &[usize], data: &[u8], gzip: bool) -> Result<()> {
    let mut bytes = magic.to_be_bytes().to_vec();
    for &d in dims {
        let d = u32::try_from(d).context("IDX dimension does not fit in u32")?;
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&bytes)?;
        bytes = enc.finish()?;
    }
    fs::write(path, bytes).with_context(|| format!("{}: cannot write", path.display()))
}

/// Writes an IDX images file (`pixels` holds count × height × width bytes).
pub fn write_images(
    path: &Path,
    count: usize,
    height: usize,
    width: usize,
    pixels: &[u8],
    gzip: bool,
) -> Result<()> {
    if pixels.len() != count * height * width {
        bail!("write_images: {} pixels for {count}×{height}×{width}", pixels.len());
    }
    write_idx(path, IMAGES_MAGIC, &[count, height, width], pixels, gzip)
}

/// Writes an IDX labels file.
pub fn write_labels(path: &Path, labels: &[u8], gzip: bool) -> Result<()> {
    write_idx(path, LABELS_MAGIC, &[labels.len()], labels, gzip)
}

//! An image-folder dataset in the ImageNet val layout (torchvision's `ImageFolder`): one
//! subfolder per class, the classes being the sorted subfolder names (index = position), the
//! samples every regular file inside them, sorted. Files directly in the root are ignored.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::data::dataset::{Dataset, Sample, image_tensor, one_line};
use crate::data::preprocess::load_image;
use crate::model::config::Preprocess;

pub struct FolderDataset {
    pub root: PathBuf,
    /// Class names: the sorted subfolder names.
    pub classes: Vec<String>,
    /// Every file with its class index, class by class, each class's files sorted.
    pub files: Vec<(PathBuf, usize)>,
}

/// The entries of `dir`, sorted by name.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
        let e = e.with_context(|| format!("{}: cannot list", dir.display()))?;
        entries.push(e.path());
    }
    entries.sort();
    Ok(entries)
}

impl FolderDataset {
    pub fn open(root: &Path) -> Result<FolderDataset> {
        if !root.is_dir() {
            bail!("{}: not a folder", root.display());
        }
        let class_dirs: Vec<PathBuf> = sorted_entries(root)?.into_iter().filter(|p| p.is_dir()).collect();
        if class_dirs.is_empty() {
            // An IDX file in the folder is most likely what was meant (e.g. the bundled slice).
            let idx = sorted_entries(root)?
                .into_iter()
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains("images-idx3")));
            let hint = match idx {
                Some(f) => format!("; to use the IDX file inside it, pass {}", f.display()),
                None => String::new(),
            };
            bail!(
                "{}: no class folders (expected one subfolder of images per class, as in \
                 ImageNet val){hint}",
                root.display()
            );
        }
        let mut classes = Vec::with_capacity(class_dirs.len());
        let mut files = Vec::new();
        for (k, dir) in class_dirs.iter().enumerate() {
            classes.push(dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            for f in sorted_entries(dir)? {
                if f.is_file() {
                    files.push((f, k));
                }
            }
        }
        if files.is_empty() {
            bail!("{}: its {} class folders hold no files", root.display(), classes.len());
        }
        Ok(FolderDataset { root: root.to_path_buf(), classes, files })
    }
}

impl FolderDataset {
    /// A folder of images for uses that need no labels (calibration): class subfolders if it
    /// has them, else the image files directly inside it, all as class 0.
    pub fn open_unlabelled(root: &Path) -> Result<FolderDataset> {
        if !root.is_dir() {
            bail!("{}: not a folder", root.display());
        }
        let entries = sorted_entries(root)?;
        if entries.iter().any(|p| p.is_dir()) {
            return Self::open(root);
        }
        let files: Vec<(PathBuf, usize)> =
            entries.into_iter().filter(|p| p.is_file()).map(|p| (p, 0)).collect();
        if files.is_empty() {
            bail!("{}: the folder holds no image files", root.display());
        }
        Ok(FolderDataset { root: root.to_path_buf(), classes: vec![String::new()], files })
    }
}

impl Dataset for FolderDataset {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn num_classes(&self) -> Option<usize> {
        Some(self.classes.len())
    }

    fn label(&self, i: usize) -> usize {
        self.files[i].1
    }

    fn name(&self, i: usize) -> String {
        self.files[i].0.display().to_string()
    }

    fn source(&self) -> String {
        self.root.display().to_string()
    }

    fn load(&self, i: usize, pp: &Preprocess) -> Result<Sample> {
        let (path, label) = &self.files[i];
        let img =
            load_image(path, pp.input_size[0]).map_err(|e| anyhow::anyhow!(one_line(&format!("{e:#}"))))?;
        let input = image_tensor(&img, pp).with_context(|| path.display().to_string())?;
        Ok(Sample { input, label: *label })
    }
}

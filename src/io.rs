//! File output: never a half-written file, never an input overwritten, never a used output
//! replaced without `--overwrite`, and nothing left behind by a run that failed before it
//! finished any work.
//!
//! Every command that writes goes through [`OutFile`] (one file, e.g. `ptq --out q.safetensors`)
//! or [`OutDir`] (a folder, e.g. `synth --out DIR`), so the policy lives in one place.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// reader never sees a half-written file. The file and its folder are synced before and after
/// the rename, so a crash leaves either the old file or the complete new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    if !dir.is_dir() {
        bail!("{}: the folder {} does not exist", path.display(), dir.display());
    }
    if path.is_dir() {
        bail!("{}: is a folder, expected a file name", path.display());
    }
    let name = path.file_name().context("output path has no file name")?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        use std::io::Write;
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir);
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        bail!("cannot write {}: {e}", path.display());
    }
    Ok(())
}

/// Syncs a folder's entry list (the rename that just happened). Not every platform can open a
/// folder for syncing; there the rename is as durable as the OS makes it.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// `path` made absolute and resolved as far as it exists (the rest appended), so that two
/// spellings of one place compare equal even before the place exists.
fn resolved(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut tail = Vec::new();
    let mut head = abs.as_path();
    loop {
        if let Ok(c) = head.canonicalize() {
            return tail.iter().rev().fold(c, |p, t| p.join(t));
        }
        match (head.parent(), head.file_name()) {
            (Some(p), Some(n)) => {
                tail.push(n.to_os_string());
                head = p;
            }
            _ => return abs,
        }
    }
}

/// The inputs a command reads, each with the flag that named it (for the error message).
pub type Inputs<'a> = &'a [(&'a str, &'a Path)];

/// Files inside a checkpoint folder that the command reads: a folder input means its files.
fn input_files<'a>(inputs: Inputs<'a>) -> Vec<(&'a str, PathBuf)> {
    let mut files = Vec::new();
    for &(flag, p) in inputs {
        let r = resolved(p);
        if r.is_dir() {
            for entry in std::fs::read_dir(&r).into_iter().flatten().flatten() {
                files.push((flag, resolved(&entry.path())));
            }
        }
        files.push((flag, r));
    }
    files
}

/// One output file.
pub struct OutFile {
    pub path: PathBuf,
}

impl OutFile {
    /// Checks `--out FILE` before any work: not one of the inputs, not a folder, its folder
    /// exists and is writable, and an existing file is replaced only with `overwrite`.
    pub fn prepare(path: &Path, inputs: Inputs, overwrite: bool) -> Result<OutFile> {
        let out = resolved(path);
        for (flag, f) in input_files(inputs) {
            if f == out {
                bail!("--out {}: that is the file {flag} reads; write elsewhere", path.display());
            }
        }
        if path.is_dir() {
            bail!(
                "--out {}: is a folder; give a file name, e.g. {}",
                path.display(),
                path.join("quantized.safetensors").display()
            );
        }
        if path.exists() && !overwrite {
            bail!("--out {}: the file exists; add --overwrite to replace it", path.display());
        }
        let dir = parent_dir(path);
        if !dir.is_dir() {
            bail!("--out {}: the folder {} does not exist", path.display(), dir.display());
        }
        probe_writable(dir)
            .with_context(|| format!("--out {}: cannot write in {}", path.display(), dir.display()))?;
        Ok(OutFile { path: path.to_path_buf() })
    }
}

/// One output folder. Created by [`OutDir::prepare`]; a folder this run created is removed
/// again if the run ends (fails or is dropped) while it is still empty.
pub struct OutDir {
    pub path: PathBuf,
    created: bool,
}

/// What an output folder may already hold.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse a folder that holds anything (unless `--overwrite`).
    Refuse,
    /// The caller checked what is there (e.g. `quantize --resume`): accept it.
    Accept,
}

impl OutDir {
    /// Checks `--out DIR` before any work: no input lies inside it, it is not a file, and a
    /// folder that holds anything is used only with `overwrite` (or `existing == Accept`).
    /// With `overwrite`, the `stale` entries (files or folders this command writes) are removed
    /// first, so nothing of an earlier run is mistaken for this one's.
    pub fn prepare(
        path: &Path,
        inputs: Inputs,
        overwrite: bool,
        existing: Existing,
        stale: &[&str],
    ) -> Result<OutDir> {
        let out = resolved(path);
        for (flag, f) in input_files(inputs) {
            if f == out || f.starts_with(&out) {
                bail!(
                    "--out {}: {flag} {} is inside it and would be overwritten; write elsewhere",
                    path.display(),
                    f.display()
                );
            }
        }
        if path.exists() && !path.is_dir() {
            bail!("--out {}: is a file, expected a folder", path.display());
        }
        let used = std::fs::read_dir(path).map(|mut d| d.next().is_some()).unwrap_or(false);
        if used && existing == Existing::Refuse {
            if !overwrite {
                bail!(
                    "--out {}: the folder is not empty; add --overwrite to replace what this command \
                     writes there, or choose another --out",
                    path.display()
                );
            }
            for name in stale {
                let p = path.join(name);
                let gone = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
                if let Err(e) = gone
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    bail!("--out {}: cannot remove the old {name}: {e}", path.display());
                }
            }
        }
        let created = !path.exists();
        std::fs::create_dir_all(path)
            .with_context(|| format!("--out {}: cannot create the folder", path.display()))?;
        let dir = OutDir { path: path.to_path_buf(), created };
        probe_writable(path)
            .with_context(|| format!("--out {}: cannot write in the folder", path.display()))?;
        Ok(dir)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        // Only a folder this run made, and only while nothing was written into it.
        if self.created && std::fs::read_dir(&self.path).is_ok_and(|mut d| d.next().is_none()) {
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

fn probe_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".maskaq-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// FNV-1a (64 bits): a fingerprint of models and settings, to tell runs apart (not a
/// cryptographic hash).
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, bytes: impl IntoIterator<Item = u8>) {
        for b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// The [`Fnv`] fingerprint of `bytes`, as 16 hex digits.
pub fn fingerprint_bytes(bytes: &[u8]) -> String {
    let mut h = Fnv::default();
    h.update(bytes.iter().copied());
    h.hex()
}

/// A safetensors file of `views` with `meta` as its metadata, the same bytes for the same
/// contents: `safetensors::serialize` writes the metadata in HashMap order, so two runs that
/// made identical tensors (on Vulkan and on GL, say) wrote files that differed. Here the header
/// is written again with its keys sorted (serde_json's map); the tensors' offsets are relative
/// to the data, so the data is kept as it is.
pub fn safetensors_bytes(
    views: Vec<(String, safetensors::tensor::TensorView<'_>)>,
    meta: std::collections::HashMap<String, String>,
) -> Result<Vec<u8>> {
    let raw = safetensors::serialize(views, None)?;
    let n = u64::from_le_bytes(raw[..8].try_into()?) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&raw[8..8 + n])?;
    let meta: serde_json::Map<String, serde_json::Value> =
        meta.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
    header.insert("__metadata__".to_string(), serde_json::Value::Object(meta));
    let mut text = serde_json::to_vec(&header)?;
    // The data starts 8-byte aligned, as safetensors writes and expects it.
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len() + raw.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&raw[8 + n..]);
    Ok(out)
}

#[cfg(test)]
mod safetensors_tests {
    use std::collections::HashMap;

    use safetensors::{Dtype, SafeTensors, tensor::TensorView};

    #[test]
    fn safetensors_bytes_do_not_depend_on_the_metadata_map_order() {
        let data: Vec<u8> = (0..24).collect();
        let write = |keys: &[&str]| {
            let views = vec![("t".to_string(), TensorView::new(Dtype::F32, vec![2, 3], &data).unwrap())];
            let meta: HashMap<String, String> =
                keys.iter().map(|k| (k.to_string(), format!("v{k}"))).collect();
            super::safetensors_bytes(views, meta).unwrap()
        };
        let names: Vec<String> = (0..40).map(|i| format!("key{i}")).collect();
        let fwd: Vec<&str> = names.iter().map(String::as_str).collect();
        let rev: Vec<&str> = fwd.iter().rev().copied().collect();
        let (a, b) = (write(&fwd), write(&rev));
        assert_eq!(a, b);
        let (_, md) = SafeTensors::read_metadata(&a).unwrap();
        assert_eq!(md.metadata().as_ref().unwrap()["key7"], "vkey7");
        let st = SafeTensors::deserialize(&a).unwrap();
        assert_eq!(st.tensor("t").unwrap().data(), data.as_slice());
    }
}

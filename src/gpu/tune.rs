//! The per-adapter tuning cache: which kernel variant each (op, shape) uses, as measured by
//! `maskaq tune` (or at graph build with `--tune build`). One JSON file per adapter and driver
//! version under the user's cache directory. A file that does not parse, or was written by
//! another maskaq version or for other shader sources, is ignored with one warning: its picks
//! could name variants that no longer exist or were measured on other code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// How a run uses the tuning cache (`--tune`). The library's default is `Off` (a program
/// using maskaq as a library gets the built-in kernels unless it asks); the command line's
/// default is `cache`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TuneMode {
    /// Every launch uses its adapter class's default variant; the cache is not read.
    #[default]
    Off,
    /// Use the picks the cache holds; shapes it lacks use the default (no measuring).
    Cache,
    /// As `cache`, and measure (then store) a pick for each shape the cache lacks while the
    /// graphs are built: a slower start, tuned kernels from the first run on.
    Build,
}

impl TuneMode {
    /// The flag value, as `--tune` spells it.
    pub fn name(self) -> &'static str {
        match self {
            TuneMode::Off => "off",
            TuneMode::Cache => "cache",
            TuneMode::Build => "build",
        }
    }
}

/// The cache file's contents.
#[derive(Serialize, Deserialize, Debug, Default)]
struct CacheFile {
    format: u32,
    maskaq: String,
    /// Hash of every WGSL source: picks measured on other shader code are stale.
    shaders: String,
    adapter: String,
    driver: String,
    /// "op key" -> variant id.
    picks: BTreeMap<String, String>,
}

const FORMAT: u32 = 1;

/// The tuning state of one device.
pub struct Tuning {
    pub mode: TuneMode,
    /// Where picks are read from and written to (None: no cache directory on this system).
    pub path: Option<PathBuf>,
    adapter: String,
    driver: String,
    picks: Mutex<BTreeMap<String, String>>,
}

/// FNV-1a over every shader source, as hex: changes whenever any kernel's code changes.
fn shaders_hash() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, src) in crate::ops::SHADERS {
        for b in name.bytes().chain(src.bytes()) {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The cache file for an adapter: the adapter's name and a hash of everything that identifies
/// it and its driver, so a driver update starts a new file.
pub fn default_path(info: &wgpu::AdapterInfo) -> Option<PathBuf> {
    let dir = dirs::cache_dir()?.join("maskaq");
    let ident = format!(
        "{}|{:?}|{}|{}|{}|{}",
        info.name, info.backend, info.vendor, info.device, info.driver, info.driver_info
    );
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ident.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    let name: String = info
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect();
    let backend = format!("{:?}", info.backend).to_lowercase();
    Some(dir.join(format!("kernels-{backend}-{}-{:08x}.json", name.trim_matches('-'), h as u32)))
}

impl Tuning {
    /// The tuning state for an adapter; reads the cache unless `mode` is off.
    pub fn open(info: &wgpu::AdapterInfo, mode: TuneMode, path: Option<PathBuf>) -> Tuning {
        let path = path.or_else(|| default_path(info));
        let driver = format!("{} {}", info.driver, info.driver_info);
        let picks = match (&path, mode) {
            (Some(p), TuneMode::Cache | TuneMode::Build) if p.exists() => read(p, &info.name, &driver),
            _ => BTreeMap::new(),
        };
        Tuning { mode, path, adapter: info.name.clone(), driver, picks: Mutex::new(picks) }
    }

    /// The variant id the cache holds for `op` at `key`, unless tuning is off.
    pub fn pick(&self, op: &str, key: &str) -> Option<String> {
        if self.mode == TuneMode::Off {
            return None;
        }
        self.picks.lock().unwrap_or_else(|p| p.into_inner()).get(&format!("{op} {key}")).cloned()
    }

    pub fn insert(&self, op: &str, key: &str, variant: &str) {
        self.picks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(format!("{op} {key}"), variant.to_string());
    }

    /// Number of picks held.
    pub fn len(&self) -> usize {
        self.picks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the picks (temporary file, then rename: a crash never leaves half a cache).
    pub fn save(&self) -> Result<Option<PathBuf>> {
        let Some(path) = &self.path else { return Ok(None) };
        let file = CacheFile {
            format: FORMAT,
            maskaq: env!("CARGO_PKG_VERSION").to_string(),
            shaders: shaders_hash(),
            adapter: self.adapter.clone(),
            driver: self.driver.clone(),
            picks: self.picks.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&file)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(Some(path.clone()))
    }
}

/// The picks of a cache file, or none (with a warning) when it is corrupt or stale.
fn read(path: &Path, adapter: &str, driver: &str) -> BTreeMap<String, String> {
    let warn = |why: &str| {
        eprintln!(
            "maskaq: warning: ignoring the tuning cache {} ({why}); `maskaq tune` rewrites it",
            path.display()
        );
        BTreeMap::new()
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return warn(&format!("unreadable: {e}")),
    };
    let file: CacheFile = match serde_json::from_str(&text) {
        Ok(f) => f,
        Err(e) => return warn(&format!("not a tuning cache: {e}")),
    };
    if file.format != FORMAT || file.maskaq != env!("CARGO_PKG_VERSION") || file.shaders != shaders_hash() {
        return warn("written by another maskaq version or for other kernels");
    }
    if file.adapter != adapter || file.driver != driver {
        return warn(&format!("measured on {} ({}), not on this adapter", file.adapter, file.driver));
    }
    file.picks
}

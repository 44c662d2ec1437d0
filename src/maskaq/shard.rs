//! Sharded synthesis for job arrays: shard K of N makes a contiguous share of a run's batches
//! (slots), whose images equal those slots of the unsharded run bit for bit on the same adapter,
//! because every slot has its own random stream (`synth_pool::batch_rng`).

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::data::synthetic::SyntheticDataset;

/// Which share of a run's batches this process synthesizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// From 0.
    pub index: usize,
    pub count: usize,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// `K/N` (0 <= K < N), or `auto`: from the job array's environment (see [`Shard::from_env`]).
    /// `count` is `--shard-count`, needed where the environment gives no count.
    pub fn parse(text: &str, count: Option<usize>) -> Result<Shard> {
        if text == "auto" {
            return Shard::from_env(count, |k| std::env::var(k).ok());
        }
        let bad = || format!("--shard {text}: expected K/N with 0 <= K < N (e.g. 0/4), or auto");
        let (k, n) = text.split_once('/').with_context(bad)?;
        let (k, n): (usize, usize) =
            (k.trim().parse().with_context(bad)?, n.trim().parse().with_context(bad)?);
        if n == 0 || k >= n {
            bail!("{}", bad());
        }
        if count.is_some_and(|c| c != n) {
            bail!("--shard-count {}: --shard {text} already says {n} shards", count.unwrap_or(0));
        }
        Ok(Shard { index: k, count: n })
    }

    /// A Slurm job array's task (`SLURM_ARRAY_TASK_ID` less `SLURM_ARRAY_TASK_MIN`, of
    /// `SLURM_ARRAY_TASK_COUNT` or `count`) or a Kubernetes Indexed Job's completion
    /// (`JOB_COMPLETION_INDEX`, of `count`). `env` reads a variable (the process environment,
    /// or a test's).
    pub fn from_env(count: Option<usize>, env: impl Fn(&str) -> Option<String>) -> Result<Shard> {
        let num = |name: &str| -> Result<Option<usize>> {
            match env(name) {
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .with_context(|| format!("--shard auto: {name}={v} is not a whole number")),
                None => Ok(None),
            }
        };
        let (index, env_count, source) = if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            if id < min {
                bail!("--shard auto: SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}");
            }
            (id - min, num("SLURM_ARRAY_TASK_COUNT")?, "SLURM_ARRAY_TASK_ID")
        } else if let Some(i) = num("JOB_COMPLETION_INDEX")? {
            (i, None, "JOB_COMPLETION_INDEX")
        } else {
            bail!(
                "--shard auto: neither SLURM_ARRAY_TASK_ID (Slurm job arrays) nor JOB_COMPLETION_INDEX \
                 (Kubernetes Indexed Jobs) is set; give --shard K/N"
            );
        };
        let n = match (env_count, count) {
            (Some(e), Some(c)) if e != c => {
                bail!("--shard-count {c}: SLURM_ARRAY_TASK_COUNT says {e} tasks")
            }
            (Some(n), _) | (None, Some(n)) => n,
            (None, None) => bail!(
                "--shard auto: {source} gives this task's index but not the number of tasks; add --shard-count N"
            ),
        };
        if n == 0 || index >= n {
            bail!("--shard auto: task {index} ({source}) of {n}: the index must be below the count");
        }
        Ok(Shard { index, count: n })
    }

    /// This shard's slots of a run with `batches` slots: a contiguous range, the ranges of the N
    /// shards covering 0..batches in order. Every shard gets at least one slot.
    pub fn slots(&self, batches: usize) -> Result<Range<usize>> {
        if self.count > batches {
            bail!(
                "--shard {self}: the run has {batches} batches, fewer than {} shards (give at most {batches} shards, or more images)",
                self.count
            );
        }
        Ok(batches * self.index / self.count..batches * (self.index + 1) / self.count)
    }
}

/// The shards of one run, joined in shard order.
pub struct Merged {
    /// [C, H, W] of one image.
    pub shape: [usize; 3],
    pub images: Vec<f32>,
    pub labels: Vec<usize>,
    /// The shards' common metadata, without their place (`shard`).
    pub meta: HashMap<String, String>,
    pub count: usize,
}

/// Reads every shard folder (a `synth --shard` output) and joins them in shard order: refused
/// unless they are shards 0..N of one N, each exactly once, all with the same settings.
pub fn merge(dirs: &[PathBuf]) -> Result<Merged> {
    let mut shards: Vec<(Shard, SyntheticDataset)> = Vec::new();
    for dir in dirs {
        let set = SyntheticDataset::open(dir)?;
        let place = set.meta.get("shard").with_context(|| {
            format!("{}: not a shard (written by `maskaq synth` without --shard)", dir.display())
        })?;
        let shard =
            Shard::parse(place, None).with_context(|| format!("{}: shard `{place}`", dir.display()))?;
        shards.push((shard, set));
    }
    let Some((first, first_set)) = shards.first() else { bail!("synth-merge: no shard folders given") };
    let (n, run) = (first.count, first_set.meta.get("run").cloned().unwrap_or_default());
    for (s, set) in &shards[1..] {
        if s.count != n {
            bail!(
                "{}: shard {s} is one of {} shards, {} is one of {n}",
                set.path.display(),
                s.count,
                first_set.path.display()
            );
        }
        let other = set.meta.get("run").cloned().unwrap_or_default();
        if other != run || set.shape != first_set.shape {
            bail!(
                "{}: made with other settings than {} ({}); shards of one run must share every setting",
                set.path.display(),
                first_set.path.display(),
                differing_settings(&run, &other)
            );
        }
    }
    let mut by_index: Vec<Option<&SyntheticDataset>> = vec![None; n];
    for (s, set) in &shards {
        if let Some(seen) = by_index[s.index] {
            bail!("shard {s} is given twice: {} and {}", seen.path.display(), set.path.display());
        }
        by_index[s.index] = Some(set);
    }
    let missing: Vec<String> =
        (0..n).filter(|&k| by_index[k].is_none()).map(|k| Shard { index: k, count: n }.to_string()).collect();
    if !missing.is_empty() {
        bail!("shards missing: {} (the run has {n} shards; give every shard's folder)", missing.join(", "));
    }
    let mut meta = first_set.meta.clone();
    meta.remove("shard");
    meta.insert("merged_shards".to_string(), n.to_string());
    let mut m = Merged { shape: first_set.shape, images: Vec::new(), labels: Vec::new(), meta, count: n };
    for set in by_index.into_iter().flatten() {
        m.images.extend_from_slice(&set.images);
        m.labels.extend_from_slice(&set.labels);
    }
    Ok(m)
}

/// Which of two runs' settings (the `run` metadata, JSON) differ, for the refusal.
fn differing_settings(a: &str, b: &str) -> String {
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap_or_default();
    let (a, b) = (parse(a), parse(b));
    let walk = |prefix: &str, x: &serde_json::Value, y: &serde_json::Value| -> Vec<String> {
        let (Some(x), Some(y)) = (x.as_object(), y.as_object()) else { return Vec::new() };
        x.keys()
            .chain(y.keys().filter(|k| !x.contains_key(*k)))
            .filter(|k| x.get(*k) != y.get(*k) && *k != "config")
            .map(|k| format!("{prefix}{k}"))
            .collect()
    };
    let mut out = walk("", &a, &b);
    out.extend(walk("config.", &a["config"], &b["config"]));
    if out.is_empty() { "settings unknown".to_string() } else { format!("differing: {}", out.join(", ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batches_in_order() {
        for batches in 1..12 {
            for n in 1..=batches {
                let mut next = 0;
                for k in 0..n {
                    let r = Shard { index: k, count: n }.slots(batches).unwrap();
                    assert_eq!(r.start, next);
                    assert!(!r.is_empty());
                    next = r.end;
                }
                assert_eq!(next, batches);
            }
        }
        assert!(Shard { index: 0, count: 3 }.slots(2).is_err());
    }

    #[test]
    fn parse_and_environment() {
        assert_eq!(Shard::parse("1/3", None).unwrap(), Shard { index: 1, count: 3 });
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(Shard::parse(bad, None).is_err(), "{bad}");
        }
        assert!(Shard::parse("1/3", Some(4)).is_err());
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        assert_eq!(Shard::from_env(None, slurm).unwrap(), Shard { index: 1, count: 3 });
        let k8s = env(&[("JOB_COMPLETION_INDEX", "2")]);
        assert_eq!(Shard::from_env(Some(4), k8s).unwrap(), Shard { index: 2, count: 4 });
        assert!(Shard::from_env(None, env(&[("JOB_COMPLETION_INDEX", "2")])).is_err());
        assert!(Shard::from_env(Some(2), env(&[("JOB_COMPLETION_INDEX", "2")])).is_err());
        assert!(Shard::from_env(Some(2), env(&[])).is_err());
        assert!(
            Shard::from_env(None, env(&[("SLURM_ARRAY_TASK_ID", "x"), ("SLURM_ARRAY_TASK_COUNT", "2")]))
                .is_err()
        );
    }
}

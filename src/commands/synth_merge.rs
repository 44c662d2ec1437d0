//! `maskaq synth-merge`: joins the shard folders of one `synth --shard K/N` run into one
//! synthetic set (the unsharded run's images, in order), with previews and a contact sheet.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::data::synthetic::{SyntheticDataset, write_previews};
use crate::io::{Existing, OutDir};
use crate::maskaq::shard::merge;
use crate::model::checkpoint::resolve;

#[derive(clap::Args, Debug)]
pub struct SynthMergeArgs {
    /// The shard folders (`synth --shard K/N --out DIR`), one per shard, in any order.
    #[arg(required = true, value_name = "DIR")]
    pub shards: Vec<PathBuf>,
    /// Output folder (synthetic.safetensors, previews/, contact_sheet.png).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace what an earlier run wrote in --out.
    #[arg(long)]
    pub overwrite: bool,
    /// The model the previews are drawn for (default: the one the shards name).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
}

const OUTPUTS: &[&str] = &["synthetic.safetensors", "previews", "contact_sheet.png"];

pub fn run(args: &SynthMergeArgs) -> Result<()> {
    let inputs: Vec<(&str, &Path)> = args.shards.iter().map(|d| ("a shard", d.as_path())).collect();
    let merged = merge(&args.shards)?;
    let out = OutDir::prepare(&args.out, &inputs, args.overwrite, Existing::Refuse, OUTPUTS)?;
    SyntheticDataset::write(&out.path, merged.shape, &merged.images, &merged.labels, merged.meta.clone())?;
    let model = args.model.clone().or_else(|| merged.meta.get("model").map(PathBuf::from));
    let previews = match &model {
        Some(m) => resolve(m, None)
            .with_context(|| format!("the previews' model {}", m.display()))
            .and_then(|(cfg, _)| write_previews(&out.path, &merged.images, &merged.labels, &cfg)),
        None => Err(anyhow::anyhow!("the shards name no model")),
    };
    if let Err(e) = previews {
        eprintln!("synth-merge: no previews written ({e:#}); give --model to draw them");
    }
    eprintln!(
        "synth-merge: {} images from {} shards written to {}",
        merged.labels.len(),
        merged.count,
        args.out.display()
    );
    Ok(())
}

//! A model's parameters on the GPU; with [`Quant`] state it is the quantized model Q.
//! The forward/backward passes live in `graph.rs`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;

use super::checkpoint::{self, Weights};
use super::config::ModelConfig;
use crate::gpu::{Gpu, Tensor};
use crate::quant::{Bits, Quant};

/// A parameter with its gradient, named as in timm's `state_dict`.
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub value: Tensor,
    pub grad: Tensor,
}

/// A model (any architecture) on the GPU.
pub struct Model {
    pub cfg: ModelConfig,
    pub params: Vec<Param>,
    index: HashMap<String, usize>,
    /// Present for the quantized model Q: graphs built from it fake-quantize.
    pub quant: Option<Quant>,
}

impl Model {
    /// Uploads checked weights.
    pub fn new(gpu: &Gpu, cfg: ModelConfig, weights: &Weights) -> Model {
        let mut params = Vec::new();
        let mut index = HashMap::new();
        for (name, shape, data) in &weights.tensors {
            index.insert(name.clone(), params.len());
            params.push(Param {
                name: name.clone(),
                shape: shape.clone(),
                value: Tensor::from_slice(gpu, data, shape),
                grad: Tensor::zeros(gpu, shape),
            });
        }
        Model { cfg, params, index, quant: None }
    }

    /// Loads `--model` (folder or .safetensors with `--arch`).
    pub fn load(gpu: &Gpu, model: &Path, arch: Option<&str>) -> Result<Model> {
        let (cfg, file) = checkpoint::resolve(model, arch)?;
        let w = checkpoint::load_weights(&cfg, &file)?;
        Ok(Model::new(gpu, cfg, &w))
    }

    pub fn param(&self, name: &str) -> &Param {
        &self.params[*self.index.get(name).unwrap_or_else(|| panic!("no parameter {name}"))]
    }

    /// Turns this model into Q at `bits`; the activation quantizers still need initialising
    /// (`Graph::forward_init` on a first batch, or values from an exported model).
    pub fn quantize(&mut self, gpu: &Gpu, bits: Bits) {
        self.quant = Some(Quant::new(gpu, &self.cfg, bits));
    }

    /// Current parameter values by name (read back from the GPU).
    pub fn read_params(&self, gpu: &Gpu) -> Result<Vec<super::checkpoint::NamedTensor>> {
        self.params.iter().map(|p| Ok((p.name.clone(), p.shape.clone(), p.value.read(gpu)?))).collect()
    }

    pub fn num_params(&self) -> usize {
        self.params.iter().map(|p| p.value.numel()).sum()
    }
}

//! maskaq: data-free quantization of Vision Transformers (MaskAQ) on any GPU through wgpu.
//!
//! Layout: [`gpu`] (device, buffers, dispatch), [`ops`] (one module per WGSL kernel family,
//! each with a CPU reference), [`model`] (timm configs, checkpoints, the ViT forward/backward).

pub mod cli;
pub mod commands;
pub mod compare;
pub mod data;
pub mod eval;
pub mod gpu;
pub mod interrupt;
pub mod io;
pub mod maskaq;
pub mod model;
pub mod onnx;
pub mod ops;
pub mod plot;
pub mod progress;
pub mod quant;
pub mod rng;
pub mod train;
pub mod tune;

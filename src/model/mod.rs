//! Models: configs, checkpoints, parameters, and the forward/backward graphs of each
//! architecture (ViT/DeiT and Swin), built from shared layers.

mod builder;
pub mod checkpoint;
pub mod config;
pub mod graph;
mod layers;
pub mod params;
pub(crate) mod swin;
pub(crate) mod vit;

pub use config::{Arch, ModelConfig};
pub use graph::{Graph, GraphOptions, TapGeometry, Taps};
pub use params::{Model, Param};

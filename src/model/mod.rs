//! timm ViT/DeiT: configs, checkpoints, parameters, and the forward/backward graph.

pub mod checkpoint;
pub mod config;
pub mod graph;
pub mod vit;

pub use config::VitConfig;
pub use graph::{Graph, GraphOptions, Taps};
pub use vit::{Param, Vit};

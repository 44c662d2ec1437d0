//! timm ViT/DeiT: configs, checkpoints, and the forward/backward graph.

pub mod checkpoint;
pub mod config;
pub mod vit;

pub use config::VitConfig;
pub use vit::{Graph, GraphOptions, Taps, Vit};

//! Input data: image decoding and timm's evaluation preprocessing.

pub mod dataset;
pub mod folder;
pub mod idx;
pub mod preprocess;
pub mod synthetic;

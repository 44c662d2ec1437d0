//! Input data: image decoding and timm's evaluation preprocessing.

pub mod preprocess;

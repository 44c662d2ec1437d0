//! GPU context: adapter selection, device creation, buffers, and the kernel dispatch machinery.
//!
//! Everything numeric in maskaq runs as WGSL compute shaders through this module. The design:
//! - [`Gpu`] owns the device and queue and caches every compute pipeline it builds
//!   (keyed by kernel), so a pipeline is compiled once per process.
//! - [`Tensor`] is an f32 storage buffer with a shape.
//! - A [`Dispatch`] is a fully bound kernel launch (pipeline + bind group + grid), created once
//!   when a model is built for a batch size and replayed every step; a step therefore costs no
//!   allocation and no bind-group creation on the host.

mod context;
mod kernel;
mod mirror;
mod tensor;
pub mod tune;

pub use context::{AdapterItem, AdapterReport, Backend, Gpu, GpuOptions, list_adapters};
pub use kernel::{Dispatch, Kernel, Tunable, grid_for, grid1d};
pub use mirror::TexMirror;
pub use tensor::Tensor;
pub(crate) use tensor::read_words;

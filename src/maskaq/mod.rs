//! The MaskAQ method: sample synthesis (objectives on P's and Q's attention taps), and, later,
//! Q training and the refresh scheduler. Each module reads like the matching section of
//! docs/method.md.

pub mod agreement;
mod checkpoint;
pub use checkpoint::fingerprint;
pub mod pipeline;
pub mod qtrain;
pub mod shard;
pub mod synth;
pub mod synth_config;
pub mod synth_objectives;
pub mod synth_pool;

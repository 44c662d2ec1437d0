//! Attention head outputs between the heads-major and token-major layouts, fused with proj's
//! input quantizer and the tap gradient (shaders/heads.wgsl).

use super::quant::Site;
use super::u;
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, grid_for};

pub const SOURCE: &str = with_fake_quant!("../../shaders/heads.wgsl");

/// Mirrors the shader's `Params` block (heads.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    g: u32,
    h: u32,
    n: u32,
    hd: u32,
    site: u32,
    pad: [u32; 3],
}

pub const MERGE_Q: Kernel = Kernel {
    id: "heads_merge_q",
    source: SOURCE,
    entry: "heads_merge_q",
    storage: &[(1, false), (2, true), (3, true), (4, false), (5, false)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};
pub const SPLIT_ADD: Kernel = Kernel {
    id: "heads_split_add",
    source: SOURCE,
    entry: "heads_split_add",
    storage: &[(6, false), (7, false), (8, true)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};
pub const SPLIT_MASKED_ADD: Kernel = Kernel {
    id: "heads_split_masked_add",
    source: SOURCE,
    entry: "heads_split_masked_add",
    storage: &[(4, false), (5, false), (6, false), (7, false), (8, true), (9, false)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};

/// The shape of a heads-major tensor [G, H, N, hd].
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub groups: usize,
    pub heads: usize,
    pub tokens: usize,
    pub head_dim: usize,
}

impl Heads {
    fn numel(&self) -> usize {
        self.groups * self.heads * self.tokens * self.head_dim
    }

    fn params(&self, site: u32) -> Params {
        let (g, h, n, hd) = (u(self.groups), u(self.heads), u(self.tokens), u(self.head_dim));
        Params { g, h, n, hd, site, pad: [0; 3] }
    }

    fn check(&self, ts: &[&Tensor]) {
        assert!(ts.iter().all(|t| t.numel() == self.numel()), "heads: buffers are not {self:?}");
    }

    /// `merged` = `o` in token-major order, and `merged_q` = `merged` through quantizer `site`.
    pub fn merge_q(&self, gpu: &Gpu, o: &Tensor, merged: &Tensor, site: Site, merged_q: &Tensor) -> Dispatch {
        self.check(&[o, merged, merged_q]);
        let (qp, qm) = (&site.state.qparams, &site.state.qmeta);
        let grid = grid_for(&MERGE_Q, self.numel());
        gpu.dispatch(&MERGE_Q, &self.params(site.index()), &[o, merged, merged_q, qp, qm], grid)
    }

    /// `d_o` = `dmerged` in heads-major order + `extra`; with a quantizer (`site`, and its input
    /// `merged`), `dmerged` is the gradient on its output and passes its mask first.
    pub fn split_add(
        &self,
        gpu: &Gpu,
        dmerged: &Tensor,
        masked: Option<(Site, &Tensor)>,
        extra: &Tensor,
        d_o: &Tensor,
    ) -> Dispatch {
        self.check(&[dmerged, extra, d_o]);
        let grid = grid_for(&SPLIT_ADD, self.numel());
        match masked {
            None => gpu.dispatch(&SPLIT_ADD, &self.params(0), &[dmerged, extra, d_o], grid),
            Some((site, merged)) => {
                self.check(&[merged]);
                let (qp, qm) = (&site.state.qparams, &site.state.qmeta);
                let buffers = [qp, qm, dmerged, extra, d_o, merged];
                gpu.dispatch(&SPLIT_MASKED_ADD, &self.params(site.index()), &buffers, grid)
            }
        }
    }
}

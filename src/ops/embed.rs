//! Patch embedding im2col and token assembly (shaders/embed.wgsl).

use super::u;
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, grid_for};

pub const SOURCE: &str = include_str!("../../shaders/embed.wgsl");

/// Mirrors the shader's `Params` block (embed.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    chans: u32,
    h: u32,
    w: u32,
    psize: u32,
    gh: u32,
    gw: u32,
    tokens: u32,
    d: u32,
    prefix: u32,
    beta: f32,
    pad: u32,
}

pub const PATCHIFY: Kernel = Kernel {
    id: "patchify",
    source: SOURCE,
    entry: "patchify",
    storage: &[(1, false), (2, true)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};
pub const UNPATCHIFY: Kernel = Kernel {
    id: "unpatchify",
    source: SOURCE,
    entry: "unpatchify",
    storage: &[(3, false), (4, true)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};
pub const TOKENS: Kernel = Kernel {
    id: "tokens_forward",
    source: SOURCE,
    entry: "tokens_forward",
    storage: &[(5, false), (6, false), (7, false), (8, false), (9, true)],
    workgroup: 256,
    constants: &[],
    textures: &[],
};

/// Image and token geometry of a patch-embedding ViT.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub batch: usize,
    pub chans: usize,
    pub h: usize,
    pub w: usize,
    pub patch: usize,
    /// Number of prefix tokens (class, and distillation token for distilled DeiT).
    pub prefix: usize,
    pub d: usize,
}

impl Geometry {
    pub fn gh(&self) -> usize {
        self.h / self.patch
    }
    pub fn gw(&self) -> usize {
        self.w / self.patch
    }
    pub fn patches(&self) -> usize {
        self.gh() * self.gw()
    }
    pub fn tokens(&self) -> usize {
        self.patches() + self.prefix
    }
    /// Columns of the im2col matrix: C * P * P.
    pub fn kk(&self) -> usize {
        self.chans * self.patch * self.patch
    }
    fn params(&self, beta: f32) -> Params {
        Params {
            batch: u(self.batch),
            chans: u(self.chans),
            h: u(self.h),
            w: u(self.w),
            psize: u(self.patch),
            gh: u(self.gh()),
            gw: u(self.gw()),
            tokens: u(self.tokens()),
            d: u(self.d),
            prefix: u(self.prefix),
            beta,
            pad: 0,
        }
    }

    /// `cols[B*np, C*P*P]` from `img[B, C, H, W]`.
    pub fn patchify(&self, gpu: &Gpu, img: &Tensor, cols: &Tensor) -> Dispatch {
        assert_eq!(img.numel(), self.batch * self.chans * self.h * self.w);
        assert_eq!(cols.numel(), self.batch * self.patches() * self.kk());
        gpu.dispatch(&PATCHIFY, &self.params(0.0), &[img, cols], grid_for(&PATCHIFY, cols.numel()))
    }

    /// `dimg = unpatchify(dcols) + beta * dimg`.
    pub fn unpatchify(&self, gpu: &Gpu, dcols: &Tensor, dimg: &Tensor, beta: f32) -> Dispatch {
        assert_eq!(dimg.numel(), self.batch * self.chans * self.h * self.w);
        assert_eq!(dcols.numel(), self.batch * self.patches() * self.kk());
        gpu.dispatch(&UNPATCHIFY, &self.params(beta), &[dcols, dimg], grid_for(&UNPATCHIFY, dimg.numel()))
    }

    /// `x[B, N, D]` = prefix tokens and patch embeddings, plus position embeddings.
    pub fn tokens_forward(
        &self,
        gpu: &Gpu,
        patches: &Tensor,
        cls: &Tensor,
        dist: &Tensor,
        pos: &Tensor,
        x: &Tensor,
    ) -> Dispatch {
        assert_eq!(x.numel(), self.batch * self.tokens() * self.d);
        assert_eq!(pos.numel(), self.tokens() * self.d);
        gpu.dispatch(&TOKENS, &self.params(0.0), &[patches, cls, dist, pos, x], grid_for(&TOKENS, x.numel()))
    }

    pub fn cpu_patchify(&self, img: &[f32]) -> Vec<f32> {
        let (kk, np, p) = (self.kk(), self.patches(), self.patch);
        let mut cols = vec![0f32; self.batch * np * kk];
        for b in 0..self.batch {
            for py in 0..self.gh() {
                for px in 0..self.gw() {
                    for c in 0..self.chans {
                        for ky in 0..p {
                            for kx in 0..p {
                                let row = b * np + py * self.gw() + px;
                                let col = (c * p + ky) * p + kx;
                                cols[row * kk + col] =
                                    img[((b * self.chans + c) * self.h + py * p + ky) * self.w + px * p + kx];
                            }
                        }
                    }
                }
            }
        }
        cols
    }

    pub fn cpu_tokens(&self, patches: &[f32], cls: &[f32], dist: &[f32], pos: &[f32]) -> Vec<f32> {
        let (n, d) = (self.tokens(), self.d);
        let mut x = vec![0f32; self.batch * n * d];
        for b in 0..self.batch {
            for t in 0..n {
                for j in 0..d {
                    let v = if t == 0 {
                        cls[j]
                    } else if t < self.prefix {
                        dist[j]
                    } else {
                        patches[(b * self.patches() + t - self.prefix) * d + j]
                    };
                    x[(b * n + t) * d + j] = v + pos[t * d + j];
                }
            }
        }
        x
    }
}

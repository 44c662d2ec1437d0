//! Swin's token permutations, relative-position bias with the shift mask, and mean pooling
//! (shaders/window.wgsl; docs/swin.md).

use super::reduce::SumRows;
use super::u;
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, grid_for};
use bytemuck::Zeroable;

pub const SOURCE: &str = include_str!("../../shaders/window.wgsl");

/// Mirrors the shader's `Params` block (window.wgsl), shared by all four kernels.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    kind: u32,
    total: u32,
    grid: u32,
    window: u32,
    shift: u32,
    d: u32,
    alpha: f32,
    beta: f32,
}

pub const TOKEN_MAP: Kernel = Kernel {
    id: "token_map",
    source: SOURCE,
    entry: "token_map",
    storage: &[(1, false), (2, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const REL_BIAS: Kernel = Kernel {
    id: "rel_bias",
    source: SOURCE,
    entry: "rel_bias",
    storage: &[(3, false), (4, false), (5, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const REL_BIAS_TABLE_GRAD: Kernel = Kernel {
    id: "rel_bias_table_grad",
    source: SOURCE,
    entry: "rel_bias_table_grad",
    storage: &[(6, false), (7, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};
pub const MEAN_TOKENS: Kernel = Kernel {
    id: "mean_tokens",
    source: SOURCE,
    entry: "mean_tokens",
    storage: &[(1, false), (2, true)],
    workgroup: 64,
    constants: &[],
    textures: &[],
};

/// Windows one invocation of the table gradient walks (each up to (2w - 1)² offsets x w² pairs
/// in all: at w = 7, 64 windows are about 3,600 loop iterations).
pub const TABLE_GRAD_GROUPS: usize = 64;

/// The value timm's shift mask adds between tokens of different regions.
pub const MASK_VALUE: f32 = -100.0;

/// Which permutation a [`TokenMap`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// Image order -> window order after the cyclic shift.
    ToWindows = 0,
    /// Window order -> image order (undoing the shift).
    FromWindows = 1,
    /// [B, R, R, C] -> PatchMerging's [B, R/2, R/2, 4C].
    Merge = 2,
    /// The inverse of `Merge`.
    Unmerge = 3,
}

/// A token permutation over `images` images of `grid`² tokens with `d` channels (for
/// `Merge`/`Unmerge`, `d` is the channels before merging).
#[derive(Clone, Copy, Debug)]
pub struct TokenMap {
    pub kind: MapKind,
    pub images: usize,
    pub grid: usize,
    pub window: usize,
    pub shift: usize,
    pub d: usize,
}

impl TokenMap {
    pub fn windows(images: usize, grid: usize, window: usize, shift: usize, d: usize) -> TokenMap {
        assert!(grid.is_multiple_of(window) && shift < window, "windows of {window} on a grid of {grid}");
        TokenMap { kind: MapKind::ToWindows, images, grid, window, shift, d }
    }

    pub fn merge(images: usize, grid: usize, d: usize) -> TokenMap {
        assert!(grid.is_multiple_of(2), "PatchMerging needs an even grid, got {grid}");
        TokenMap { kind: MapKind::Merge, images, grid, window: 1, shift: 0, d }
    }

    /// The inverse permutation (each map's backward).
    pub fn inverse(self) -> TokenMap {
        let kind = match self.kind {
            MapKind::ToWindows => MapKind::FromWindows,
            MapKind::FromWindows => MapKind::ToWindows,
            MapKind::Merge => MapKind::Unmerge,
            MapKind::Unmerge => MapKind::Merge,
        };
        TokenMap { kind, ..self }
    }

    pub fn numel(&self) -> usize {
        self.images * self.grid * self.grid * self.d
    }

    fn params(&self, alpha: f32, beta: f32) -> Params {
        let (total, grid, window, shift, d) =
            (u(self.numel()), u(self.grid), u(self.window), u(self.shift), u(self.d));
        Params { kind: self.kind as u32, total, grid, window, shift, d, alpha, beta }
    }

    /// `dst = alpha map(src) + beta dst`.
    pub fn dispatch(&self, gpu: &Gpu, src: &Tensor, dst: &Tensor, alpha: f32, beta: f32) -> Dispatch {
        assert!(src.numel() == self.numel() && dst.numel() == self.numel(), "token_map: sizes {self:?}");
        gpu.dispatch(&TOKEN_MAP, &self.params(alpha, beta), &[src, dst], grid_for(&TOKEN_MAP, self.numel()))
    }

    /// The index of `src` that element `i` of the output reads.
    pub fn source(&self, i: usize) -> usize {
        let (g, d, w, sh) = (self.grid, self.d, self.window, self.shift);
        let t_img = g * g;
        let h = g / 2;
        match self.kind {
            MapKind::ToWindows => {
                let (r, c) = (i / d, i % d);
                let (b, local) = (r / t_img, r % t_img);
                let (win, t) = (local / (w * w), local % (w * w));
                let nw = g / w;
                let y = ((win / nw) * w + t / w + sh) % g;
                let x = ((win % nw) * w + t % w + sh) % g;
                (b * t_img + y * g + x) * d + c
            }
            MapKind::FromWindows => {
                let (r, c) = (i / d, i % d);
                let (b, local) = (r / t_img, r % t_img);
                let ys = (local / g + g - sh) % g;
                let xs = (local % g + g - sh) % g;
                let win = (ys / w) * (g / w) + xs / w;
                (b * t_img + win * w * w + (ys % w) * w + xs % w) * d + c
            }
            MapKind::Merge => {
                let (r, k) = (i / (4 * d), i % (4 * d));
                let (q, c) = (k / d, k % d);
                let (b, local) = (r / (h * h), r % (h * h));
                let y = 2 * (local / h) + q % 2;
                let x = 2 * (local % h) + q / 2;
                (b * t_img + y * g + x) * d + c
            }
            MapKind::Unmerge => {
                let (r, c) = (i / d, i % d);
                let (b, local) = (r / t_img, r % t_img);
                let (y, x) = (local / g, local % g);
                let q = 2 * (x % 2) + y % 2;
                (b * h * h + (y / 2) * h + x / 2) * 4 * d + q * d + c
            }
        }
    }

    /// CPU reference of [`TokenMap::dispatch`].
    pub fn cpu(&self, src: &[f32], dst: &mut [f32], alpha: f32, beta: f32) {
        for (i, v) in dst.iter_mut().enumerate() {
            let s = alpha * src[self.source(i)];
            *v = if beta != 0.0 { s + beta * *v } else { s };
        }
    }
}

/// Window attention's additive terms over [groups, heads, w², w²] logits, groups = images ×
/// windows in batch-major order.
#[derive(Clone, Copy, Debug)]
pub struct RelBias {
    pub groups: usize,
    pub heads: usize,
    pub window: usize,
    /// Tokens per side of the image grid (for the shift mask's regions).
    pub grid: usize,
    /// 0: no mask.
    pub shift: usize,
}

impl RelBias {
    fn params(&self) -> Params {
        let (total, grid, window, shift, d) =
            (u(self.groups), u(self.grid), u(self.window), u(self.shift), u(self.heads));
        Params { kind: 0, total, grid, window, shift, d, alpha: 0.0, beta: 0.0 }
    }
    fn numel(&self) -> usize {
        self.groups * self.heads * self.window.pow(4)
    }
    fn table_len(&self) -> usize {
        (2 * self.window - 1).pow(2) * self.heads
    }

    /// `s = a + table[rel(i, j), h] + mask`.
    pub fn forward(&self, gpu: &Gpu, a: &Tensor, table: &Tensor, s: &Tensor) -> Dispatch {
        assert!(a.numel() == self.numel() && s.numel() == self.numel(), "rel_bias: logits {self:?}");
        assert_eq!(table.numel(), self.table_len(), "rel_bias: table size");
        gpu.dispatch(&REL_BIAS, &self.params(), &[a, table, s], grid_for(&REL_BIAS, self.numel()))
    }

    /// `dtable[t, h] = Σ ds` over every (group, i, j) whose offset is t (overwrites): groups in
    /// chunks of [`TABLE_GRAD_GROUPS`] summed in parallel, then the chunks summed.
    pub fn table_grad(&self, gpu: &Gpu, ds: &Tensor, dtable: &Tensor) -> Vec<Dispatch> {
        assert_eq!(ds.numel(), self.numel(), "rel_bias_table_grad: gradient size");
        assert_eq!(dtable.numel(), self.table_len(), "rel_bias_table_grad: table size");
        let k = &REL_BIAS_TABLE_GRAD;
        let chunks = self.groups.div_ceil(TABLE_GRAD_GROUPS).max(1);
        // The table gradient reads its groups per invocation from `kind`.
        let params = Params { kind: u(TABLE_GRAD_GROUPS), ..self.params() };
        if chunks == 1 {
            return vec![gpu.dispatch(k, &params, &[ds, dtable], grid_for(k, self.table_len()))];
        }
        let len = self.table_len();
        let scratch = Tensor::zeros(gpu, &[chunks * len]);
        let mut out = vec![gpu.dispatch(k, &params, &[ds, &scratch], grid_for(k, chunks * len))];
        out.extend(SumRows::matrix(chunks, len).dispatches(gpu, &scratch, dtable));
        out
    }

    /// timm's `relative_position_index[i, j]`.
    pub fn rel_index(&self, i: usize, j: usize) -> usize {
        let w = self.window;
        let (ri, ci, rj, cj) = (i / w, i % w, j / w, j % w);
        (ri + w - 1 - rj) * (2 * w - 1) + (ci + w - 1 - cj)
    }

    /// timm's `attn_mask[win, i, j]` for window `win` of an image: 0 or [`MASK_VALUE`].
    pub fn mask(&self, win: usize, i: usize, j: usize) -> f32 {
        if self.shift == 0 {
            return 0.0;
        }
        let (w, g, s) = (self.window, self.grid, self.shift);
        let band = |c: usize| (c >= g - w) as usize + (c >= g - s) as usize;
        let nw = g / w;
        let (y0, x0) = ((win / nw) * w, (win % nw) * w);
        let region = |t: usize| 3 * band(y0 + t / w) + band(x0 + t % w);
        if region(i) == region(j) { 0.0 } else { MASK_VALUE }
    }

    pub fn cpu_forward(&self, a: &[f32], table: &[f32]) -> Vec<f32> {
        let n = self.window * self.window;
        let per_image = (self.grid / self.window).pow(2);
        let mut s = a.to_vec();
        for (idx, v) in s.iter_mut().enumerate() {
            let (j, i, h, grp) =
                (idx % n, (idx / n) % n, (idx / (n * n)) % self.heads, idx / (n * n * self.heads));
            *v += table[self.rel_index(i, j) * self.heads + h] + self.mask(grp % per_image, i, j);
        }
        s
    }

    pub fn cpu_table_grad(&self, ds: &[f32]) -> Vec<f32> {
        let n = self.window * self.window;
        let mut g = vec![0.0f32; self.table_len()];
        for (idx, v) in ds.iter().enumerate() {
            let (j, i, h) = (idx % n, (idx / n) % n, (idx / (n * n)) % self.heads);
            g[self.rel_index(i, j) * self.heads + h] += v;
        }
        g
    }
}

/// `y[b, c] = mean_t x[b, t, c]` for x [images, tokens, d].
pub fn mean_tokens(gpu: &Gpu, images: usize, tokens: usize, d: usize, x: &Tensor, y: &Tensor) -> Dispatch {
    assert!(x.numel() == images * tokens * d && y.numel() == images * d, "mean_tokens: sizes");
    let params = Params { total: u(images), grid: u(tokens), d: u(d), ..Params::zeroed() };
    gpu.dispatch(&MEAN_TOKENS, &params, &[x, y], grid_for(&MEAN_TOKENS, images * d))
}

pub fn cpu_mean_tokens(images: usize, tokens: usize, d: usize, x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; images * d];
    for b in 0..images {
        for c in 0..d {
            let s: f32 = (0..tokens).map(|t| x[(b * tokens + t) * d + c]).sum();
            y[b * d + c] = s / tokens as f32;
        }
    }
    y
}

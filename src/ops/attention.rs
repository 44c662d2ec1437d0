//! Fused ViT self-attention: the forward in one launch, the backward in two (shaders/attention.wgsl;
//! docs/ARCHITECTURE.md "Fused attention"). The graph uses it where [`Attention::fits`] holds and
//! fusion is on; elsewhere (Swin's windows, Q training's quantizer-step gradients, `--unfused`)
//! the attention runs op by op (src/model/layers.rs).

use super::quant::{ActQuantState, Site};
use super::u;
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, TexMirror};

const SOURCE_BUF: &str = concat!(
    include_str!("../../shaders/attention.wgsl"),
    include_str!("../../shaders/attention_load_buf.wgsl"),
    include_str!("../../shaders/fake_quant.wgsl"),
    include_str!("../../shaders/exact_div.wgsl"),
    include_str!("../../shaders/dot.wgsl")
);
const SOURCE_TEX: &str = concat!(
    include_str!("../../shaders/attention.wgsl"),
    include_str!("../../shaders/attention_load_tex.wgsl"),
    include_str!("../../shaders/fake_quant.wgsl"),
    include_str!("../../shaders/exact_div.wgsl"),
    include_str!("../../shaders/dot.wgsl")
);
/// The shader with each loader (for validation in the tests).
pub const SOURCES: [(&str, &str); 2] = [
    ("attention.wgsl + attention_load_buf.wgsl", SOURCE_BUF),
    ("attention.wgsl + attention_load_tex.wgsl", SOURCE_TEX),
];

/// Mirrors the shader's `Params` block (attention.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    g: u32,
    h: u32,
    n: u32,
    hd: u32,
    scale: f32,
    quant: u32,
    site_p: u32,
    site_o: u32,
    site_q: u32,
    site_k: u32,
    site_v: u32,
    has_extra_o: u32,
    has_extra_a: u32,
    tw: u32,
    tw_o: u32,
    pad: u32,
}

/// The storage bindings (binding, read_write) in the order the launches pass buffers, for the
/// texture loader; the buffer loader also binds qkv (binding 9), passed last.
const FORWARD_STORAGE: [(u32, bool); 8] =
    [(1, true), (2, true), (3, true), (4, true), (5, true), (6, true), (7, false), (8, false)];
const BACKWARD_STORAGE: [(u32, bool); 11] = [
    (7, false),
    (8, false),
    (10, false),
    (11, false),
    (13, false),
    (14, false),
    (15, false),
    (16, false),
    (17, true),
    (18, true),
    (19, true),
];
/// The keys' launch: with the texture loader, q, k, v and dO come through textures 9 and 20.
const KEYS_STORAGE: [(u32, bool); 6] =
    [(7, false), (8, false), (10, false), (12, false), (21, false), (19, true)];
const FORWARD_STORAGE_BUF: [(u32, bool); 9] = with_qkv(&FORWARD_STORAGE);
const BACKWARD_STORAGE_BUF: [(u32, bool); 12] = with_qkv(&BACKWARD_STORAGE);
const KEYS_STORAGE_BUF: [(u32, bool); 8] =
    [(7, false), (8, false), (10, false), (12, false), (21, false), (19, true), (9, false), (20, false)];

/// `base` with the buffer loader's qkv binding appended (`M` = its length + 1).
const fn with_qkv<const M: usize>(base: &[(u32, bool)]) -> [(u32, bool); M] {
    assert!(base.len() + 1 == M);
    let mut all = [(9, false); M];
    let mut i = 0;
    while i < base.len() {
        all[i] = base[i];
        i += 1;
    }
    all
}

/// The `HD4` pipeline constant (hd / 4) of each variant: one pipeline per head size.
const HD4: [&[(&str, f64)]; 16] = [
    &[("HD4", 1.0)],
    &[("HD4", 2.0)],
    &[("HD4", 3.0)],
    &[("HD4", 4.0)],
    &[("HD4", 5.0)],
    &[("HD4", 6.0)],
    &[("HD4", 7.0)],
    &[("HD4", 8.0)],
    &[("HD4", 9.0)],
    &[("HD4", 10.0)],
    &[("HD4", 11.0)],
    &[("HD4", 12.0)],
    &[("HD4", 13.0)],
    &[("HD4", 14.0)],
    &[("HD4", 15.0)],
    &[("HD4", 16.0)],
];

/// One kernel for each head size hd = 4 (i + 1), i < 16; with `textures` (q, k and v's, and
/// the keys' launch's dO) the texture loader, else the buffer loader.
const fn kernels(
    id: &'static str,
    entry: &'static str,
    storage: &'static [(u32, bool)],
    textures: &'static [u32],
) -> [Kernel; 16] {
    let source = if textures.is_empty() { SOURCE_BUF } else { SOURCE_TEX };
    let mut all = [Kernel { id, source, entry, storage, workgroup: 64, constants: HD4[0], textures }; 16];
    let mut i = 1;
    while i < 16 {
        all[i].constants = HD4[i];
        i += 1;
    }
    all
}

pub const FORWARD: [Kernel; 16] =
    kernels("attention_forward", "attention_forward", &FORWARD_STORAGE_BUF, &[]);
pub const FORWARD_TEX: [Kernel; 16] =
    kernels("attention_forward_tex", "attention_forward", &FORWARD_STORAGE, &[9]);
/// The backward's two launches: the query rows' phase (dO, dA, dq), then the keys' (dk, dv).
pub const BACKWARD_ROWS: [Kernel; 16] =
    kernels("attention_backward_rows", "attention_backward_rows", &BACKWARD_STORAGE_BUF, &[]);
pub const BACKWARD_ROWS_TEX: [Kernel; 16] =
    kernels("attention_backward_rows_tex", "attention_backward_rows", &BACKWARD_STORAGE, &[9]);
pub const BACKWARD_KEYS: [Kernel; 16] =
    kernels("attention_backward_keys", "attention_backward_keys", &KEYS_STORAGE_BUF, &[]);
pub const BACKWARD_KEYS_TEX: [Kernel; 16] =
    kernels("attention_backward_keys_tex", "attention_backward_keys", &KEYS_STORAGE, &[9, 20]);

/// One ViT attention layer's shape: `groups` images of `n` tokens, `heads` heads of `hd`.
#[derive(Clone, Copy, Debug)]
pub struct Attention {
    pub groups: usize,
    pub heads: usize,
    pub n: usize,
    pub hd: usize,
    /// The softmax's logit scale (hd^-1/2).
    pub scale: f32,
}

/// How q, k and v are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loader {
    Buffer,
    /// Through a texture mirror of qkv (CPU adapters: see src/gpu/mirror.rs).
    Texture,
}

/// The quantizers a Q layer applies: P's (`attn.matmul2.act_a`) and proj's input
/// (`attn.proj.act`) forward; in the backward also q's, k's and v's masks.
#[derive(Clone, Copy)]
pub struct QuantSites<'a> {
    pub state: &'a ActQuantState,
    /// P, proj's input, q, k, v.
    pub index: [usize; 5],
}

impl<'a> QuantSites<'a> {
    pub fn new(sites: [Site<'a>; 5]) -> QuantSites<'a> {
        QuantSites { state: sites[0].state, index: sites.map(|s| s.index) }
    }
}

/// What the forward writes: the taps A and O, P, and merged (proj's input).
pub struct ForwardOut<'a> {
    pub logits: &'a Tensor,
    pub prob: &'a Tensor,
    pub attn_out: &'a Tensor,
    pub merged: &'a Tensor,
    /// Q: P's and merged's quantized copies.
    pub quantized: Option<(QuantSites<'a>, [&'a Tensor; 2])>,
}

/// What the backward reads and writes.
pub struct BackwardIo<'a> {
    /// qkv before its quantizers (Q: the masks' inputs; FP: the same as the values).
    pub qkv_raw: &'a Tensor,
    pub prob: &'a Tensor,
    /// P' (Q: quantized P; FP: P).
    pub prob_q: &'a Tensor,
    /// merged before proj's input quantizer.
    pub merged: &'a Tensor,
    /// Gradient on merged' (proj's input).
    pub dmerged: &'a Tensor,
    /// Loss gradients on the taps O and A.
    pub extra_o: Option<&'a Tensor>,
    pub extra_a: Option<&'a Tensor>,
    /// Scratch [G, H, N, hd] and [G, H, N, N]; dA is left in `da`.
    pub d_o: &'a Tensor,
    pub da: &'a Tensor,
    /// Output [G N, 3 D].
    pub dqkv: &'a Tensor,
    pub sites: Option<QuantSites<'a>>,
}

impl Attention {
    fn d(&self) -> usize {
        self.heads * self.hd
    }

    /// Loop iterations one invocation runs at most (llvmpipe caps them: `Gpu::loop_limit`): a
    /// backward row's, which bounds the forward's row and a backward key's.
    fn iterations(&self) -> usize {
        let hd4 = self.hd / 4;
        2 * self.n * (hd4 + 1) + self.n + 3 * hd4
    }

    /// Whether the fused forward can run this layer on `gpu`: hd a multiple of 4 up to 64 (the
    /// kernels' vec4 rows), its 9 storage bindings, and the loops within the driver's cap.
    pub fn fits(&self, gpu: &Gpu) -> bool {
        (4..=64).contains(&self.hd)
            && self.hd.is_multiple_of(4)
            && self.heads <= 65535
            && self.groups <= 65535
            && gpu.limits.max_storage_buffers_per_shader_stage as usize >= FORWARD_STORAGE_BUF.len()
            && gpu.fits_one_invocation(self.iterations())
    }

    /// Whether the fused backward can run it too: also its rows launch's 12 storage bindings.
    pub fn backward_fits(&self, gpu: &Gpu) -> bool {
        self.fits(gpu)
            && gpu.limits.max_storage_buffers_per_shader_stage as usize >= BACKWARD_STORAGE_BUF.len()
    }

    /// The loader `gpu` takes for a qkv buffer of `len` floats: a texture on CPU adapters where
    /// it fits one.
    pub fn loader(gpu: &Gpu, len: usize) -> Loader {
        if gpu.cpu_like && len <= TexMirror::max_len(gpu) { Loader::Texture } else { Loader::Buffer }
    }

    fn params(&self, quant: bool, index: [usize; 5], extra: [bool; 2]) -> Params {
        Params {
            g: u(self.groups),
            h: u(self.heads),
            n: u(self.n),
            hd: u(self.hd),
            scale: self.scale,
            quant: quant as u32,
            site_p: u(index[0]),
            site_o: u(index[1]),
            site_q: u(index[2]),
            site_k: u(index[3]),
            site_v: u(index[4]),
            has_extra_o: extra[0] as u32,
            has_extra_a: extra[1] as u32,
            ..Default::default()
        }
    }

    fn check(&self, qkv: &Tensor) {
        assert!(
            (4..=64).contains(&self.hd) && self.hd.is_multiple_of(4),
            "fused attention: head dim {}",
            self.hd
        );
        assert_eq!(
            qkv.numel(),
            self.groups * self.n * 3 * self.d(),
            "fused attention: qkv is not [G N, 3 D]"
        );
    }

    /// Launches `kernel` (buffer or texture loader) with `buffers`, and qkv (and dO for the
    /// keys' launch) bound as the loader reads them.
    #[allow(clippy::too_many_arguments)]
    fn launch(
        gpu: &Gpu,
        loader: Loader,
        kernels: [&'static [Kernel; 16]; 2],
        mut params: Params,
        buffers: &[&Tensor],
        qkv: &Tensor,
        d_o: Option<&Tensor>,
        grid: [u32; 3],
    ) -> Dispatch {
        // The pipeline for this head size (`HD4` = hd / 4).
        let variant = params.hd as usize / 4 - 1;
        match loader {
            Loader::Buffer => {
                let mut all = buffers.to_vec();
                all.push(qkv);
                all.extend(d_o);
                gpu.dispatch(&kernels[0][variant], &params, &all, grid)
            }
            Loader::Texture => {
                let m = TexMirror::shared(gpu, qkv, 0, qkv.numel());
                params.tw = m.width_log2;
                let mut mirrors = vec![m];
                if let Some(d_o) = d_o {
                    let m = TexMirror::shared(gpu, d_o, 0, d_o.numel());
                    params.tw_o = m.width_log2;
                    mirrors.push(m);
                }
                gpu.dispatch_mirrored(&kernels[1][variant], &params, buffers, mirrors, grid)
            }
        }
    }

    /// The forward from `qkv` (Q: the quantized copy) into `out`.
    pub fn forward(&self, gpu: &Gpu, loader: Loader, qkv: &Tensor, out: ForwardOut) -> Dispatch {
        self.check(qkv);
        let (nn, nhd) = (self.groups * self.heads * self.n * self.n, self.groups * self.n * self.d());
        assert!(
            out.logits.numel() == nn && out.prob.numel() == nn,
            "fused attention: A or P is not [G, H, N, N]"
        );
        assert!(
            out.attn_out.numel() == nhd && out.merged.numel() == nhd,
            "fused attention: O or merged size"
        );
        // The FP model binds small stand-ins where Q has its quantized copies and quantizer state.
        let stand_in = || Tensor::zeros(gpu, &[4]);
        let (quant, index, copies, state) = match &out.quantized {
            Some((s, [pq, mq])) => {
                assert!(pq.numel() == nn && mq.numel() == nhd);
                (
                    true,
                    s.index,
                    [(*pq).clone(), (*mq).clone()],
                    [s.state.qparams.clone(), s.state.qmeta.clone()],
                )
            }
            None => (false, [0; 5], [stand_in(), stand_in()], [stand_in(), stand_in()]),
        };
        let params = self.params(quant, index, [false; 2]);
        let buffers =
            [out.logits, out.prob, &copies[0], out.attn_out, out.merged, &copies[1], &state[0], &state[1]];
        let grid = [u(self.n.div_ceil(64)), u(self.heads), u(self.groups)];
        Self::launch(gpu, loader, [&FORWARD, &FORWARD_TEX], params, &buffers, qkv, None, grid)
    }

    /// The backward from `io.dmerged` into `io.dqkv`, reading q, k and v from `qkv` (Q: the
    /// quantized copy): the rows' launch, then the keys'.
    pub fn backward(&self, gpu: &Gpu, loader: Loader, qkv: &Tensor, io: BackwardIo) -> [Dispatch; 2] {
        self.check(qkv);
        assert_eq!(io.qkv_raw.numel(), qkv.numel());
        assert_eq!(io.dqkv.numel(), qkv.numel());
        let stand_in = Tensor::zeros(gpu, &[4]);
        let (quant, index, qp, qm) = match &io.sites {
            Some(s) => (true, s.index, &s.state.qparams, &s.state.qmeta),
            None => (false, [0; 5], &stand_in, &stand_in),
        };
        let params = self.params(quant, index, [io.extra_o.is_some(), io.extra_a.is_some()]);
        let rows = [
            qp,
            qm,
            io.qkv_raw,
            io.prob,
            io.merged,
            io.dmerged,
            io.extra_o.unwrap_or(io.dmerged),
            io.extra_a.unwrap_or(io.prob),
            io.d_o,
            io.da,
            io.dqkv,
        ];
        let keys = [qp, qm, io.qkv_raw, io.prob_q, io.da, io.dqkv];
        let grid = [u(self.n.div_ceil(64)), u(self.heads), u(self.groups)];
        [
            Self::launch(gpu, loader, [&BACKWARD_ROWS, &BACKWARD_ROWS_TEX], params, &rows, qkv, None, grid),
            Self::launch(
                gpu,
                loader,
                [&BACKWARD_KEYS, &BACKWARD_KEYS_TEX],
                params,
                &keys,
                qkv,
                Some(io.d_o),
                grid,
            ),
        ]
    }
}

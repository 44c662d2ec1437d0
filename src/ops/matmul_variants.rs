//! The matmul variants (shaders/matmul.wgsl) in one table, how a product picks one, and the
//! [`Tunable`] view of a product that `maskaq bench --kernels` and `maskaq tune` use.
//!
//! A product uses, in order: the variant a test forced (`Gpu::forced_variant`), the pick the
//! per-adapter tuning cache holds for its shape key (`Gpu::tuning`), or the default of its
//! adapter class ([`default_variant`]). Each is used only where it applies to the operands'
//! layout, so a stale or hand-edited cache cannot select a kernel that would read wrongly.

use std::sync::Arc;

use super::matmul::{Matmul, View};
use crate::gpu::tune::TuneMode;
use crate::gpu::{Dispatch, Gpu, Kernel, Tensor, TexMirror, Tunable};
use crate::rng::Rng;

use super::matmul::SOURCE;

/// Which operand layouts a variant reads correctly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Any strides.
    Any,
    /// A and B contiguous along k, offsets and strides multiples of 4 ([`Matmul::nt4_ok`]).
    K4,
    /// B contiguous along n, its offsets and strides multiples of 4.
    N4,
    /// As `N4`, and A contiguous along m with offsets and strides multiples of 4.
    Mn4,
}

/// The order the launch passes its buffers in (each entry point binds a subset of
/// matmul.wgsl's declarations).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binds {
    /// a, b, bias, c (bindings 1-4).
    Plain,
    /// bias, c, a as vec4, b as vec4 (bindings 3-6).
    Vec4Both,
    /// a, bias, c, b as vec4 (bindings 1, 3, 4, 6).
    Vec4B,
    /// bias, c (bindings 3, 4), with A and B through texture mirrors (bindings 7, 8).
    Tex,
}

/// One matmul kernel variant.
pub struct Variant {
    pub kernel: Kernel,
    /// Rows and columns of C one workgroup computes (the grid is sized from them).
    pub tile: (usize, usize),
    pub layout: Layout,
    pub binds: Binds,
    /// Offered to the tuner only when `Gpu::test_variants` is set: the deliberately slowed
    /// kernel a test uses to show that picks follow measured time.
    pub test_only: bool,
    /// The subgroup size the kernel is written for (0: it uses no subgroup operations); it
    /// applies only on an adapter whose subgroups are always exactly this size.
    pub subgroup: u32,
}

const PLAIN: &[(u32, bool)] = &[(1, false), (2, false), (3, false), (4, true)];
const VEC4_BOTH: &[(u32, bool)] = &[(3, false), (4, true), (5, false), (6, false)];
const VEC4_B: &[(u32, bool)] = &[(1, false), (3, false), (4, true), (6, false)];
const TEX: &[(u32, bool)] = &[(3, false), (4, true)];

const fn storage(binds: Binds) -> &'static [(u32, bool)] {
    match binds {
        Binds::Plain => PLAIN,
        Binds::Vec4Both => VEC4_BOTH,
        Binds::Vec4B => VEC4_B,
        Binds::Tex => TEX,
    }
}

/// A variant of `entry` built with `constants`.
const fn v(
    id: &'static str,
    entry: &'static str,
    workgroup: u32,
    constants: &'static [(&'static str, f64)],
    tile: (usize, usize),
    layout: Layout,
    binds: Binds,
) -> Variant {
    let kernel =
        Kernel { id, source: SOURCE, entry, storage: storage(binds), workgroup, constants, textures: &[] };
    Variant { kernel, tile, layout, binds, test_only: false, subgroup: 0 }
}

/// A subgroup variant (shaders/matmul_subgroup.wgsl, written for subgroups of 8): the 4 x 4
/// kernel of its layout with the loads shared inside each subgroup, on 32 x 32 tiles.
const fn sg(id: &'static str, layout: Layout, binds: Binds) -> Variant {
    sg_tile(id, id, &[], (32, 32), layout, binds)
}

/// A subgroup variant of `entry` with its override constants and tile.
const fn sg_tile(
    id: &'static str,
    entry: &'static str,
    constants: &'static [(&'static str, f64)],
    tile: (usize, usize),
    layout: Layout,
    binds: Binds,
) -> Variant {
    let kernel = Kernel {
        id,
        source: super::matmul::SUBGROUP_SOURCE,
        entry,
        storage: storage(binds),
        workgroup: 64,
        constants,
        textures: &[],
    };
    Variant { kernel, tile, layout, binds, test_only: false, subgroup: 8 }
}

/// A texture variant (shaders/matmul_tex.wgsl): `entry`'s vec4 base kernel with A and B read
/// through texture mirrors, `tx` invocations along n.
const fn tex(id: &'static str, entry: &'static str, tx: usize, layout: Layout) -> Variant {
    let constants: &'static [(&'static str, f64)] = match tx {
        4 => &[("TX", 4.0)],
        _ => &[("TX", 8.0)],
    };
    let kernel = Kernel {
        id,
        source: super::matmul::TEX_SOURCE,
        entry,
        storage: TEX,
        workgroup: 64,
        constants,
        textures: &[7, 8],
    };
    Variant { kernel, tile: (4 * 64 / tx, 4 * tx), layout, binds: Binds::Tex, test_only: false, subgroup: 0 }
}

/// A vec4 4 x 4 variant (`matmul_nt4`, `nn4`, `tn4`) with `tx` invocations along n.
macro_rules! narrow {
    ($id:literal, $entry:literal, $tx:literal, $layout:expr, $binds:expr) => {
        v($id, $entry, 64, &[("TX", $tx as f64)], (4 * 64 / $tx, 4 * $tx), $layout, $binds)
    };
}

/// Every matmul variant; the first is the reference the others are checked against (scalar
/// loads, no workgroup memory: the simplest code, correct on every layout and adapter).
pub static VARIANTS: &[Variant] = &[
    v("matmul_regs", "matmul_regs", 64, &[], (32, 32), Layout::Any, Binds::Plain),
    v("matmul_nt4", "matmul_nt4", 64, &[], (32, 32), Layout::K4, Binds::Vec4Both),
    v("matmul_nn4", "matmul_nn4", 64, &[], (32, 32), Layout::N4, Binds::Vec4B),
    v("matmul_tn4", "matmul_tn4", 64, &[], (32, 32), Layout::Mn4, Binds::Vec4Both),
    v("matmul_tiled", "matmul_tiled", 256, &[], (64, 64), Layout::Any, Binds::Plain),
    v("matmul_tiled_nt4", "matmul_tiled_nt4", 256, &[], (64, 64), Layout::K4, Binds::Vec4Both),
    v("matmul_nt8", "matmul_nt8", 64, &[], (64, 64), Layout::K4, Binds::Vec4Both),
    narrow!("matmul_nt4_tx4", "matmul_nt4", 4, Layout::K4, Binds::Vec4Both),
    narrow!("matmul_nn4_tx4", "matmul_nn4", 4, Layout::N4, Binds::Vec4B),
    narrow!("matmul_nn4_tx2", "matmul_nn4", 2, Layout::N4, Binds::Vec4B),
    narrow!("matmul_tn4_tx4", "matmul_tn4", 4, Layout::Mn4, Binds::Vec4Both),
    narrow!("matmul_nt4_tx16", "matmul_nt4", 16, Layout::K4, Binds::Vec4Both),
    Variant {
        kernel: Kernel {
            id: "matmul_slow_test",
            source: SOURCE,
            entry: "matmul_slow_test",
            storage: PLAIN,
            workgroup: 64,
            constants: &[],
            textures: &[],
        },
        tile: (32, 32),
        layout: Layout::Any,
        binds: Binds::Plain,
        test_only: true,
        subgroup: 0,
    },
    sg("matmul_nt4_sg", Layout::K4, Binds::Vec4Both),
    sg("matmul_nn4_sg", Layout::N4, Binds::Vec4B),
    sg("matmul_tn4_sg", Layout::Mn4, Binds::Vec4Both),
    sg_tile("matmul_nt4_sg_c1", "matmul_nt4_sg", &[("SGC", 1.0)], (64, 16), Layout::K4, Binds::Vec4Both),
    sg_tile("matmul_nn4_sg_c1", "matmul_nn4_sg", &[("SGC", 1.0)], (64, 16), Layout::N4, Binds::Vec4B),
    sg_tile("matmul_tn4_sg_c1", "matmul_tn4_sg", &[("SGC", 1.0)], (64, 16), Layout::Mn4, Binds::Vec4Both),
    tex("matmul_nt4_tex", "matmul_nt4_tex", 8, Layout::K4),
    tex("matmul_nn4_tex", "matmul_nn4_tex", 8, Layout::N4),
    tex("matmul_tn4_tex", "matmul_tn4_tex", 8, Layout::Mn4),
    tex("matmul_nt4_tex_c1", "matmul_nt4_tex", 4, Layout::K4),
    Variant { tile: (32, 64), ..tex("matmul_nt4x8_tex", "matmul_nt4x8_tex", 8, Layout::K4) },
    tex("matmul_nn4_tex_c1", "matmul_nn4_tex", 4, Layout::N4),
    tex("matmul_tn4_tex_c1", "matmul_tn4_tex", 4, Layout::Mn4),
];

/// The variant with this kernel id.
pub fn variant(id: &str) -> Option<&'static Variant> {
    VARIANTS.iter().find(|v| v.kernel.id == id)
}

fn aligned4(vals: &[usize]) -> bool {
    vals.iter().all(|v| v % 4 == 0)
}

impl Layout {
    fn applies(self, mm: &Matmul) -> bool {
        let (a, b) = (&mm.a, &mm.b);
        let b_n4 = b.cs == 1 && aligned4(&[b.off, b.rs, b.b1, b.b2]);
        match self {
            Layout::Any => true,
            Layout::K4 => mm.nt4_ok(),
            Layout::N4 => b_n4,
            Layout::Mn4 => b_n4 && a.rs == 1 && aligned4(&[a.off, a.cs, a.b1, a.b2]),
        }
    }
}

impl Variant {
    pub fn applies(&self, mm: &Matmul) -> bool {
        self.layout.applies(mm)
    }

    /// Whether the variant reads its operands through texture mirrors.
    pub fn textured(&self) -> bool {
        !self.kernel.textures.is_empty()
    }

    /// Whether the variant can compute `mm` on `gpu`: its layout, and for a texture variant
    /// operands that fit one texture each.
    pub fn fits(&self, mm: &Matmul, gpu: &Gpu) -> bool {
        self.applies(mm)
            && self.runs_on(gpu)
            && (!self.textured() || mirror_ranges(mm).iter().all(|&(_, len)| len <= TexMirror::max_len(gpu)))
    }

    /// Whether this adapter can run the variant (its subgroup size, where it needs one).
    pub fn runs_on(&self, gpu: &Gpu) -> bool {
        self.subgroup == 0 || gpu.fixed_subgroup_size() == Some(self.subgroup)
    }
}

/// The variant a product uses when nothing was forced or tuned: on CPU adapters the vec4
/// variant its layout allows (no workgroup barriers: lavapipe emulates them slowly), on GPUs
/// the 64x64 tiled kernel.
pub fn default_variant(mm: &Matmul, cpu_like: bool) -> &'static Variant {
    let ids: &[&str] = if cpu_like {
        &["matmul_nt4", "matmul_tn4", "matmul_nn4", "matmul_regs"]
    } else {
        &["matmul_tiled_nt4", "matmul_tiled"]
    };
    ids.iter()
        .filter_map(|id| variant(id))
        .find(|v| v.applies(mm))
        .expect("the last default applies to any layout")
}

/// What a product uses without a forced or tuned variant: [`default_variant`], or on a CPU
/// adapter with subgroups of 8 its subgroup twin (`matmul_nt4` -> `matmul_nt4_sg`, ...), which
/// computes the same values bit for bit with fewer loads, once the device has shown that it
/// does ([`subgroup_twins_agree`]).
pub fn untuned(mm: &Matmul, gpu: &Gpu) -> &'static Variant {
    let base = default_variant(mm, gpu.cpu_like);
    if !gpu.cpu_like {
        return base;
    }
    let narrow = mm.n <= 16;
    if let Some(t) = twin(base, "_tex", narrow).filter(|t| t.fits(mm, gpu)) {
        return t;
    }
    match twin(base, "_sg", narrow) {
        Some(t) if t.runs_on(gpu) && subgroup_twins_agree(gpu) => t,
        _ => base,
    }
}

/// The `kind` twin (`_sg`: subgroup, `_tex`: texture operands) of a 4 x 4 vec4 variant, if it
/// has one; `narrow`: the one with 64 x 16 tiles (for products of at most 16 columns, where
/// the 32 x 32 tile leaves half its lanes idle). Twins compute their base's values bit for bit.
pub fn twin(v: &Variant, kind: &str, narrow: bool) -> Option<&'static Variant> {
    let suffix = if narrow { "_c1" } else { "" };
    ["matmul_nt4", "matmul_nn4", "matmul_tn4"]
        .contains(&v.kernel.id)
        .then(|| variant(&format!("{}{kind}{suffix}", v.kernel.id)))
        .flatten()
}

/// Whether each subgroup twin gives its base variant's results bit for bit on this device, on
/// one ragged product of each layout; checked once per device. The twins assume subgroups of 8
/// consecutive invocations, which the API does not promise, so the default relies on them only
/// where this check has seen it hold.
fn subgroup_twins_agree(gpu: &Gpu) -> bool {
    *gpu.subgroup_kernels.get_or_init(|| {
        let (m, n, k) = (37, 45, 20);
        let products = [
            Matmul::new(m, n, k, View::rows(k), View::rows(k).t(), View::rows(n)),
            Matmul::new(m, n + 3, k + 1, View::rows(k + 1), View::rows(n + 3), View::rows(n + 3)),
            Matmul::new(m + 3, n + 3, k + 1, View::rows(m + 3).t(), View::rows(n + 3), View::rows(n + 3)),
        ];
        products.iter().flat_map(|mm| [(mm, false), (mm, true)]).all(|(mm, narrow)| {
            let base = default_variant(mm, true);
            let Some(t) = twin(base, "_sg", narrow) else { return false };
            let run = |v: &'static Variant| -> Option<Vec<u32>> {
                let (d, out) = mm.standalone(gpu, &v.kernel, 7);
                gpu.run(&d.iter().collect::<Vec<_>>());
                out.read(gpu).ok().map(|x| x.iter().map(|f| f.to_bits()).collect())
            };
            let want = run(base);
            t.applies(mm) && want.is_some() && want == run(t)
        })
    })
}

/// The variant `mm` uses on `gpu` (see the module comment).
pub fn choose(mm: &Matmul, gpu: &Gpu) -> &'static Variant {
    let usable = |id: &str| variant(id).filter(|v| v.fits(mm, gpu));
    if let Some(v) = gpu.forced_variant.as_deref().and_then(usable) {
        return v;
    }
    let key = key(mm);
    if let Some(v) = gpu.tuning.pick(OP, &key).as_deref().and_then(usable) {
        return v;
    }
    if gpu.tuning.mode == TuneMode::Build
        && let Some(v) = crate::tune::tune_now(gpu, mm).as_deref().and_then(usable)
    {
        return v;
    }
    untuned(mm, gpu)
}

/// The op name in tuning caches and kernel benchmarks.
pub const OP: &str = "matmul";

fn view_key(v: &View) -> String {
    let strides = [v.rs, v.cs].map(|s| if s == 1 { 0 } else { s });
    let al = aligned4(&[v.off, strides[0], strides[1], v.b1, v.b2]);
    format!("{},{}{}", v.rs, v.cs, if al { "" } else { "u" })
}

/// The tuning cache's key for a product: its sizes and everything about the layout that
/// decides which variants apply and how fast they are (strides, alignment, bias, beta).
pub fn key(mm: &Matmul) -> String {
    format!(
        "{}x{}x{} z{}x{} a{} b{} c{}{}{}",
        mm.m,
        mm.n,
        mm.k,
        mm.batch1,
        mm.batch2,
        view_key(&mm.a),
        view_key(&mm.b),
        mm.c.rs,
        if mm.bias_off.is_some() { " bias" } else { "" },
        if mm.beta != 0.0 { " beta" } else { "" },
    )
}

/// The buffer ranges (first float, length) of A and B that a texture variant mirrors: from the
/// view's offset rounded down to a multiple of 4 to its last element.
fn mirror_ranges(mm: &Matmul) -> [(usize, usize); 2] {
    let (b1, b2) = (mm.batch1, mm.batch2);
    [(&mm.a, mm.m, mm.k), (&mm.b, mm.k, mm.n)].map(|(v, rows, cols)| {
        let lo = v.off / 4 * 4;
        (lo, span(v, rows, cols, b1, b2) - lo)
    })
}

/// Elements a view spans (its largest index + 1).
fn span(v: &View, rows: usize, cols: usize, b1: usize, b2: usize) -> usize {
    if rows == 0 || cols == 0 {
        return v.off + 1;
    }
    v.off + (b1 - 1) * v.b1 + (b2 - 1) * v.b2 + (rows - 1) * v.rs + (cols - 1) * v.cs + 1
}

impl Tunable for Matmul {
    fn op(&self) -> &'static str {
        OP
    }

    fn key(&self) -> String {
        key(self)
    }

    fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k * self.batch1 * self.batch2) as f64
    }

    fn bytes(&self) -> f64 {
        let z = self.batch1 * self.batch2;
        4.0 * (z * (self.m * self.k + self.k * self.n + self.m * self.n)) as f64
    }

    fn variants(&self, gpu: &Gpu) -> Vec<&'static Kernel> {
        VARIANTS
            .iter()
            .filter(|v| v.fits(self, gpu) && (!v.test_only || gpu.test_variants))
            .map(|v| &v.kernel)
            .collect()
    }

    fn standalone(&self, gpu: &Gpu, kernel: &'static Kernel, seed: u64) -> (Vec<Dispatch>, Tensor) {
        let var = variant(kernel.id).expect("a matmul kernel from VARIANTS");
        let (b1, b2) = (self.batch1, self.batch2);
        let mut rng = Rng::new(seed);
        let mut random = |n: usize| -> Tensor {
            let v: Vec<f32> = (0..n).map(|_| rng.unit() as f32 * 2.0 - 1.0).collect();
            Tensor::from_slice(gpu, &v, &[n])
        };
        let a = random(span(&self.a, self.m, self.k, b1, b2));
        let b = random(span(&self.b, self.k, self.n, b1, b2));
        let c = random(span(&self.c, self.m, self.n, b1, b2));
        let bias = self.bias_off.map(|off| random(off + self.n));
        (vec![self.dispatch_variant(gpu, var, &a, &b, bias.as_ref(), &c)], c)
    }
}

impl Matmul {
    /// A texture variant's launch: A and B mirrored (offsets passed relative to the mirrors).
    #[allow(clippy::too_many_arguments)]
    fn dispatch_mirrored(
        &self,
        gpu: &Gpu,
        var: &'static Variant,
        a: &Tensor,
        b: &Tensor,
        bias: &Tensor,
        c: &Tensor,
        grid: [u32; 3],
    ) -> Dispatch {
        let [(a_lo, a_len), (b_lo, b_len)] = mirror_ranges(self);
        let ma = TexMirror::shared(gpu, a, a_lo, a_len);
        let mb = TexMirror::shared(gpu, b, b_lo, b_len);
        let rel = Matmul {
            a: View { off: self.a.off - a_lo, ..self.a },
            b: View { off: self.b.off - b_lo, ..self.b },
            ..*self
        };
        let mut params = rel.params();
        params.a_tw = ma.width_log2;
        params.b_tw = mb.width_log2;
        gpu.dispatch_mirrored(&var.kernel, &params, &[bias, c], vec![ma, mb], grid)
    }

    /// One launch of `var` (no split-K), tagged so the tuner can find it in a graph.
    pub(crate) fn dispatch_variant(
        &self,
        gpu: &Gpu,
        var: &'static Variant,
        a: &Tensor,
        b: &Tensor,
        bias: Option<&Tensor>,
        c: &Tensor,
    ) -> Dispatch {
        let grid = [
            self.n.div_ceil(var.tile.1).max(1) as u32,
            self.m.div_ceil(var.tile.0).max(1) as u32,
            super::u(self.batch1 * self.batch2),
        ];
        let bias = bias.unwrap_or(a);
        let mut d = match var.binds {
            Binds::Tex => self.dispatch_mirrored(gpu, var, a, b, bias, c, grid),
            binds => {
                let buffers: [&Tensor; 4] = match binds {
                    Binds::Plain => [a, b, bias, c],
                    Binds::Vec4Both => [bias, c, a, b],
                    _ => [a, bias, c, b],
                };
                gpu.dispatch(&var.kernel, &self.params(), &buffers, grid)
            }
        };
        d.tunable = Some(Arc::new(*self));
        d
    }
}

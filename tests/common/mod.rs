//! Shared helpers for the GPU tests: opening the device, a seeded RNG, and error metrics.
#![allow(dead_code)]

use maskaq::gpu::{Dispatch, Gpu, GpuOptions, Tensor};

/// Opens the default adapter. Panics (the test fails, it is not skipped) when there is none:
/// the error explains how to install the software Vulkan driver.
pub fn gpu() -> Gpu {
    match Gpu::new(&GpuOptions::default()) {
        Ok(g) => g,
        Err(e) => panic!("cannot open a GPU for the kernel tests: {e:#}"),
    }
}

/// Uploads `data` as a tensor of `shape`.
pub fn upload(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu, data, shape)
}

/// Uploads a flat vector.
pub fn upload1(gpu: &Gpu, data: &[f32]) -> Tensor {
    Tensor::from_slice(gpu, data, &[data.len()])
}

/// Submits one dispatch.
pub fn run1(gpu: &Gpu, d: &Dispatch) {
    gpu.run(&[d]);
}

/// Submits several dispatches in order, as one submission.
pub fn run_all(gpu: &Gpu, ds: &[Dispatch]) {
    gpu.run(&ds.iter().collect::<Vec<_>>());
}

/// Reads a tensor back (waits for the GPU).
pub fn read(gpu: &Gpu, t: &Tensor) -> Vec<f32> {
    t.read(gpu).expect("tensor readback failed")
}

/// Seeded test data: the crate's own RNG with the helpers the tests need.
pub struct Rng(maskaq::rng::Rng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(maskaq::rng::Rng::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `n` values uniform in [-scale, scale).
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(-scale, scale)).collect()
    }

    /// `k` indices in [0, n) (with repetition when k > n, all of them when n <= k).
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        if n <= k { (0..n).collect() } else { (0..k).map(|_| self.below(n)).collect() }
    }
}

/// `max |got - want| / max(max |want|, 1e-12)` and the index of the worst element.
pub fn rel_err(got: &[f32], want: &[f32]) -> (f64, usize) {
    assert_eq!(got.len(), want.len(), "rel_err: length mismatch");
    let scale = max_abs(want).max(1e-12);
    let mut worst = (0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g as f64 - w as f64).abs();
        // NaN in `got` must fail, not compare as small.
        let d = if d.is_nan() { f64::INFINITY } else { d };
        if d > worst.0 {
            worst = (d, i);
        }
    }
    (worst.0 / scale, worst.1)
}

/// `max |want|` (0 for an empty slice).
pub fn max_abs(want: &[f32]) -> f64 {
    want.iter().fold(0f64, |m, &v| m.max((v as f64).abs()))
}

/// The elementwise check `|got - want| <= atol + rtol |want|` for every element: the worst ratio
/// `|got - want| / (atol + rtol |want|)` (above 1 fails; NaN counts as infinite) and its index.
/// A max-relative figure alone lets a small element be 100 % wrong; this does not, down to
/// elements of about `atol / (1 - rtol)`.
pub fn elementwise(got: &[f32], want: &[f32], atol: f64, rtol: f64) -> (f64, usize) {
    assert_eq!(got.len(), want.len(), "elementwise: length mismatch");
    assert!(atol >= 0.0 && rtol >= 0.0, "elementwise: bad atol {atol} / rtol {rtol}");
    let mut worst = (0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g as f64, w as f64);
        let d = (g - w).abs();
        let bound = atol + rtol * w.abs();
        // Exact agreement passes even at a zero bound (atol = 0, want = 0).
        let r = if g == w {
            0.0
        } else if d.is_nan() {
            f64::INFINITY
        } else {
            d / bound
        };
        if r > worst.0 {
            worst = (r, i);
        }
    }
    worst
}

/// Both checks of one comparison: the max-relative error against `max(max |want|, floor)` below
/// `tol`, and every element within `atol + rtol |want|`. Err holds the message.
pub fn compare(
    name: &str,
    got: &[f32],
    want: &[f32],
    tol: f64,
    floor: f64,
    (atol, rtol): (f64, f64),
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{name}: got {} values, want {}", got.len(), want.len()));
    }
    let (err, i) = rel_err(got, want);
    let max_want = max_abs(want).max(1e-12);
    let err = err * max_want / max_want.max(floor);
    let (ew, j) = elementwise(got, want, atol, rtol);
    if std::env::var_os("MASKAQ_TOL_REPORT").is_some() {
        // Calibration aid: the smallest atol the elementwise check needs at this rtol.
        let need =
            got.iter().zip(want).map(|(&g, &w)| ((g - w).abs() as f64 - rtol * (w as f64).abs()).max(0.0));
        let need = need.fold(0f64, f64::max);
        eprintln!(
            "TOL {name}: rel {err:.2e} / {tol:.0e}; elementwise {ew:.2e} (atol {atol:.1e}, rtol {rtol:.1e}); \
             needs atol {need:.2e} = {:.2e} of max|want| {max_want:.2e}",
            need / max_want
        );
    }
    let mut msg = Vec::new();
    // Written so that NaN fails both checks.
    let (rel_ok, ew_ok) = (err < tol, ew <= 1.0);
    if !rel_ok {
        let floor_txt =
            if floor > 0.0 { format!(" (relative to max(max |want|, {floor:e}))") } else { String::new() };
        msg.push(format!(
            "{name}: relative error {err:.3e}{floor_txt} >= {tol:.1e}; worst index {i}: got {} want {} (len {})",
            got[i],
            want[i],
            got.len()
        ));
    }
    if !ew_ok {
        msg.push(format!(
            "{name}: element {j} off by {:.3e} > atol {atol:.1e} + rtol {rtol:.1e} * |want| ({ew:.2e} times \
             the bound): got {} want {} (len {})",
            (got[j] as f64 - want[j] as f64).abs(),
            got[j],
            want[j],
            got.len()
        ));
    }
    if msg.is_empty() { Ok(()) } else { Err(msg.join("\n")) }
}

/// Asserts `rel_err(got, want) < tol` and every element within `atol + rtol |want|`, printing the
/// name, the error and the worst element.
#[track_caller]
pub fn assert_close(name: &str, got: &[f32], want: &[f32], tol: f64, atol: f64, rtol: f64) {
    if let Err(e) = compare(name, got, want, tol, 0.0, (atol, rtol)) {
        panic!("{e}");
    }
}

/// Like [`assert_close`] but the max-relative error is relative to `max(max |want|, floor)`: for
/// outputs whose natural scale is known and the reference can be all but zero (e.g. the gradient
/// of a saturated softmax, ~1e-15, which is pure rounding noise on either side). The elementwise
/// check is unchanged (pick `atol` at the scale of that noise).
#[track_caller]
pub fn assert_close_floor(name: &str, got: &[f32], want: &[f32], tol: f64, floor: f64, atol: f64, rtol: f64) {
    if let Err(e) = compare(name, got, want, tol, floor, (atol, rtol)) {
        panic!("{e}");
    }
}

/// Asserts two slices are bit-for-bit equal (pure data movement kernels).
#[track_caller]
pub fn assert_exact(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length mismatch");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{name}: element {i} differs: got {} want {} (len {})", got[i], want[i], got.len());
    }
}

/// The two matmul kernel families: barrier-free register kernels (CPU adapters) and tiled
/// workgroup-memory kernels (GPUs), by name and `tiled`.
pub const VARIANTS: [(&str, bool); 2] = [("regs", false), ("tiled", true)];

/// Selects the matmul variant used by dispatches built from now on.
pub fn use_variant(gpu: &mut Gpu, tiled: bool) {
    gpu.cpu_like = !tiled;
}

/// Patch-embedding geometries for the kernel tests: ragged sizes, one or two prefix tokens.
pub fn geometries() -> [maskaq::ops::embed::Geometry; 3] {
    use maskaq::ops::embed::Geometry;
    [
        // 10 x 9 with patch 4: the last 2 rows and 1 column are not covered by any patch.
        Geometry { batch: 2, chans: 3, h: 10, w: 9, patch: 4, prefix: 1, d: 5 },
        Geometry { batch: 2, chans: 1, h: 8, w: 8, patch: 4, prefix: 2, d: 3 },
        Geometry { batch: 3, chans: 2, h: 7, w: 13, patch: 3, prefix: 1, d: 17 },
    ]
}

/// Whether pixel `i` (flat [B, C, H, W] index) lies in some patch.
pub fn covered(geo: &maskaq::ops::embed::Geometry, i: usize) -> bool {
    let x = i % geo.w;
    let y = (i / geo.w) % geo.h;
    y < geo.gh() * geo.patch && x < geo.gw() * geo.patch
}

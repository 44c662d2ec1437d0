//! Min-max calibration of the activation quantizers: the plain PTQ baseline every data-free
//! method must beat. The full-precision model runs on the calibration images, each quantizer's
//! input range is folded into a running min/max on the GPU, and each quantizer's step and zero
//! point then spread that range over its integer levels (`ops::quant::minmax_state`).

use anyhow::{Result, bail};

use super::SiteState;
use crate::gpu::Gpu;
use crate::model::{Graph, GraphOptions, Model};
use crate::ops::quant::minmax_state;

/// Calibrates `q`'s activation quantizers on `images` ([N, C, H, W] flattened, normalised),
/// `batch` at a time.
pub fn minmax_calibrate(gpu: &Gpu, q: &Model, images: &[f32], batch: usize) -> Result<()> {
    minmax_calibrate_with(gpu, q, images, batch, &crate::progress::Progress::hidden())
}

/// [`minmax_calibrate`], counting batches on `progress`.
pub fn minmax_calibrate_with(
    gpu: &Gpu,
    q: &Model,
    images: &[f32],
    batch: usize,
    progress: &crate::progress::Progress,
) -> Result<()> {
    let quant = q.quant.as_ref().expect("calibration needs a quantized model");
    let per = q.cfg.in_chans * q.cfg.img_size * q.cfg.img_size;
    let n = images.len() / per;
    if n == 0 || !images.len().is_multiple_of(per) {
        bail!("calibration needs at least one whole image");
    }
    let sites = quant.sites.len();
    let init: Vec<f32> = (0..sites).flat_map(|_| [f32::INFINITY, f32::NEG_INFINITY]).collect();
    quant.calib.write(gpu, &init);
    let batch = batch.clamp(1, n);
    let opts = GraphOptions { calibrate: true, ..Default::default() };
    let full = Graph::build(gpu, q, batch, opts);
    let rest = n % batch;
    let tail = (rest > 0).then(|| Graph::build(gpu, q, rest, opts));
    progress.start(n.div_ceil(batch) as u64, "calibrating, batches");
    for chunk in images.chunks(batch * per) {
        crate::interrupt::check()?;
        let g = if chunk.len() == batch * per { &full } else { tail.as_ref().unwrap() };
        g.images.write(gpu, chunk);
        g.forward(gpu);
        progress.inc(1);
    }
    progress.finish();
    let mm = quant.calib.read(gpu)?;
    let states: Vec<SiteState> = quant
        .list
        .act
        .iter()
        .enumerate()
        .map(|(i, site)| {
            let (lo, hi) = (mm[2 * i], mm[2 * i + 1]);
            let (alpha, z, qn, qp) = minmax_state(lo, hi, quant.bits.a);
            let numel = (site.numel_per_image * batch) as f32;
            SiteState {
                name: site.name.clone(),
                alpha,
                zero_point: z,
                qn,
                qp,
                g: site.lsq_g / (numel * qp).sqrt(),
                signed: qn < 0.0,
            }
        })
        .collect();
    if let Some(bad) = states.iter().find(|s| !s.alpha.is_finite() || !s.zero_point.is_finite()) {
        bail!("calibration produced a non-finite range at `{}` (non-finite activations?)", bad.name);
    }
    quant.write(gpu, &states)
}

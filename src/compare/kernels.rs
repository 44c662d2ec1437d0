//! `compare --kernels`: which kernels compute differently on two adapters, each from the same
//! inputs.
//!
//! Comparing a whole pass's end result only says that two adapters drift apart: once one op
//! rounds differently, every later op inherits it. Here both adapters run one graph (the model
//! under test, forward and backward on the probe batch) launch by launch in lockstep. Before
//! every launch, the buffers it binds on the second adapter are overwritten with the first
//! adapter's, so both run it on bit-identical inputs; afterwards every bound buffer is compared
//! word for word. A difference is then that kernel's own.

use anyhow::{Result, bail};
use serde::Serialize;

use super::{Job, model_under_test, probe_images};
use crate::gpu::{Dispatch, Gpu, read_words};
use crate::model::{Graph, GraphOptions, Model};
use crate::progress::Progress;

/// One launch that wrote different words on the two adapters.
#[derive(Serialize, Clone, Debug)]
pub struct LaunchDiff {
    /// "forward" or "backward".
    pub pass: &'static str,
    /// The launch's position in its pass.
    pub index: usize,
    /// The kernel on each adapter (variants may differ, e.g. a subgroup matmul).
    pub kernel: [String; 2],
    pub words: usize,
    pub differing: usize,
    /// The largest |a - b| of the differing words read as floats (finite pairs only).
    pub max_abs: f32,
    /// The largest distance in units in the last place between the differing floats.
    pub max_ulp: u64,
}

/// Every launch of one kernel, summed.
#[derive(Serialize, Clone, Debug, Default)]
pub struct KernelDiff {
    pub kernel: String,
    pub launches: usize,
    pub launches_differing: usize,
    pub words: usize,
    pub differing: usize,
    pub max_abs: f32,
    pub max_ulp: u64,
}

/// Two adapters' kernels compared, each launch from the same inputs.
#[derive(Serialize, Clone, Debug)]
pub struct KernelReport {
    pub a: usize,
    pub b: usize,
    pub forward_launches: usize,
    pub backward_launches: usize,
    /// The launches whose results differ, in order.
    pub differing: Vec<LaunchDiff>,
    /// Per kernel (by the first adapter's name), in order of first launch.
    pub kernels: Vec<KernelDiff>,
}

/// A float's bits mapped so that integer order is float order (for ULP distances).
fn ordered(bits: u32) -> i64 {
    if bits & 0x8000_0000 != 0 { -((bits & 0x7fff_ffff) as i64) } else { bits as i64 }
}

/// How two word lists differ: (differing words, max |a - b| and max ULP over finite floats).
pub fn word_diff(a: &[u32], b: &[u32]) -> (usize, f32, u64) {
    let (mut n, mut abs, mut ulp) = (0, 0f32, 0u64);
    for (&x, &y) in a.iter().zip(b) {
        if x == y {
            continue;
        }
        n += 1;
        let (fx, fy) = (f32::from_bits(x), f32::from_bits(y));
        if fx.is_finite() && fy.is_finite() {
            abs = abs.max((fx - fy).abs());
            ulp = ulp.max(ordered(x).abs_diff(ordered(y)));
        }
    }
    (n, abs, ulp)
}

fn words_of(buf: &wgpu::Buffer) -> usize {
    (buf.size() / 4) as usize
}

/// Runs launch `i` of `da` on `ga` and of `db` on `gb` from `ga`'s buffer contents, and
/// compares what both left in every buffer the launch binds.
fn replay(ga: &Gpu, gb: &Gpu, da: &Dispatch, db: &Dispatch) -> Result<(usize, usize, f32, u64)> {
    let (ba, bb) = (da.buffers(), db.buffers());
    let same_shape = ba.len() == bb.len() && ba.iter().zip(&bb).all(|(x, y)| x.size() == y.size());
    if !same_shape {
        bail!("the graphs differ: {} and {} bind different buffers", da.kernel, db.kernel);
    }
    for (x, y) in ba.iter().zip(&bb) {
        let words: Vec<u32> = read_words(ga, x, words_of(x))?;
        gb.queue.write_buffer(y, 0, bytemuck::cast_slice(&words));
    }
    ga.run(&[da]);
    gb.run(&[db]);
    let (mut words, mut differing, mut abs, mut ulp) = (0, 0, 0f32, 0u64);
    for (x, y) in ba.iter().zip(&bb) {
        let wa: Vec<u32> = read_words(ga, x, words_of(x))?;
        let wb: Vec<u32> = read_words(gb, y, words_of(y))?;
        let (n, a, u) = word_diff(&wa, &wb);
        words += wa.len();
        differing += n;
        abs = abs.max(a);
        ulp = ulp.max(u);
    }
    Ok((words, differing, abs, ulp))
}

/// The graph traced on one adapter: the model under test with its backward, fed the probe
/// batch and a fixed gradient on the logits.
fn traced_graph(gpu: &Gpu, job: &Job) -> Result<(Model, Graph)> {
    let model = model_under_test(gpu, job)?;
    let n = job.probe.min(job.data.len()).max(1);
    let graph = Graph::build(gpu, &model, n, GraphOptions { backward: true, ..Default::default() });
    graph.images.write(gpu, &probe_images(job, n)?);
    let d: Vec<f32> = (0..graph.d_logits.numel()).map(|i| 0.01 * ((i as f32) * 0.618).sin()).collect();
    graph.d_logits.write(gpu, &d);
    Ok((model, graph))
}

/// Adapters `a` and `b` (indices into the compared list, for the report) run the job's graph
/// launch by launch, every launch from the same inputs.
pub fn compare_kernels(
    ga: &Gpu,
    gb: &Gpu,
    ab: [usize; 2],
    job: &Job,
    progress: &Progress,
) -> Result<KernelReport> {
    let (qa, graph_a) = traced_graph(ga, job)?;
    let (_qb, graph_b) = traced_graph(gb, job)?;
    // Q without state initialises LSQ on this batch, as `compare --bits` does.
    let init = qa.quant.as_ref().is_some_and(|q| !q.initialized.get());
    fn forward(g: &Graph, init: bool) -> &[Dispatch] {
        if init { g.forward_init_dispatches() } else { g.forward_dispatches() }
    }
    let passes = [
        ("forward", forward(&graph_a, init), forward(&graph_b, init)),
        ("backward", graph_a.backward_dispatches(), graph_b.backward_dispatches()),
    ];
    let total = passes.iter().map(|p| p.1.len()).sum::<usize>();
    progress.start(total as u64, format!("kernels {} vs {}: launch by launch", ab[0], ab[1]));
    let mut differing = Vec::new();
    let mut kernels: Vec<KernelDiff> = Vec::new();
    for (pass, la, lb) in passes {
        if la.len() != lb.len() {
            bail!(
                "the graphs differ: {} {pass} launches on one adapter, {} on the other",
                la.len(),
                lb.len()
            );
        }
        for (index, (da, db)) in la.iter().zip(lb).enumerate() {
            let (words, n, max_abs, max_ulp) = replay(ga, gb, da, db)?;
            progress.inc(1);
            let k = kernels.iter().position(|k| k.kernel == da.kernel).unwrap_or_else(|| {
                kernels.push(KernelDiff { kernel: da.kernel.to_string(), ..Default::default() });
                kernels.len() - 1
            });
            let kd = &mut kernels[k];
            kd.launches += 1;
            kd.words += words;
            if n > 0 {
                kd.launches_differing += 1;
                kd.differing += n;
                kd.max_abs = kd.max_abs.max(max_abs);
                kd.max_ulp = kd.max_ulp.max(max_ulp);
                let kernel = [da.kernel.to_string(), db.kernel.to_string()];
                differing.push(LaunchDiff { pass, index, kernel, words, differing: n, max_abs, max_ulp });
            }
        }
    }
    Ok(KernelReport {
        a: ab[0],
        b: ab[1],
        forward_launches: forward(&graph_a, init).len(),
        backward_launches: graph_a.backward_dispatches().len(),
        differing,
        kernels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_diff_counts_bits_and_ulps() {
        let a = [1.0f32.to_bits(), 2.0f32.to_bits(), 0.0f32.to_bits(), 7];
        let next = f32::from_bits(1.0f32.to_bits() + 3);
        let b = [next.to_bits(), 2.0f32.to_bits(), (-0.0f32).to_bits(), 7];
        let (n, abs, ulp) = word_diff(&a, &b);
        assert_eq!(n, 2, "1.0 vs 1.0 + 3 ULP, and +0 vs -0");
        assert_eq!(ulp, 3);
        assert!((abs - (next - 1.0)).abs() < 1e-12);
    }
}

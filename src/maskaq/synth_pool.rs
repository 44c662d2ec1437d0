//! Synthesis batches over one or several adapters (ARCHITECTURE.md, "Several adapters").
//!
//! Every batch ("slot") draws from its own random stream, [`batch_rng`], derived from the run's
//! seed, the set (`stream`: which refresh) and the slot. A batch's images therefore depend only
//! on the settings, the slot and the adapter that computes them: not on how many adapters run,
//! which one took which slot, or which shard of a job array the slot fell in. Q's activation
//! quantizers are initialised on batch 0's first input everywhere ([`Synthesizer::init_q`]), so
//! every worker starts from the Q a one-adapter run has.
//!
//! One host thread per extra adapter builds its own P, Q and [`Synthesizer`] from host copies
//! ([`HostModels`]); the calling thread works on the first adapter with the caller's
//! synthesizer. Each worker starts on a slot of its own (so every adapter takes part however
//! long the others take to start), then takes whichever slot is free next; results come back
//! in slot order.

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};

use super::synth::{SynthBatch, SynthConfig, Synthesizer, TermLog};
use crate::gpu::Gpu;
use crate::model::checkpoint::Weights;
use crate::model::{Model, ModelConfig};
use crate::quant::{Bits, SiteState};
use crate::rng::Rng;

/// The random stream of attempt `attempt` at slot `slot` of set `stream` of a run seeded `seed`.
pub fn batch_rng(seed: u64, stream: u64, slot: usize, attempt: usize) -> Rng {
    Rng::derive(seed, &[stream, slot as u64, attempt as u64])
}

/// Q as host data: what another adapter needs to hold the same quantized model.
#[derive(Clone)]
pub struct HostQuant {
    pub weights: Weights,
    pub bits: Bits,
    /// Every activation quantizer's state; `None` while Q holds none yet.
    pub sites: Option<Vec<SiteState>>,
    pub frozen_weights: bool,
}

/// P's weights and Q's state on the host, from which each extra adapter builds its own copies.
#[derive(Clone)]
pub struct HostModels {
    pub cfg: ModelConfig,
    pub p: Weights,
    pub q: Option<HostQuant>,
}

impl HostModels {
    /// P from its weights; Q read back from `gpu` as it is now (trained parameters included).
    pub fn read(gpu: &Gpu, cfg: &ModelConfig, p: &Weights, q: Option<&Model>) -> Result<HostModels> {
        let q = match q {
            Some(q) => {
                let quant = q.quant.as_ref().context("Q is not quantized")?;
                Some(HostQuant {
                    weights: Weights { tensors: q.read_params(gpu)? },
                    bits: quant.bits,
                    sites: if quant.initialized.get() { Some(quant.read(gpu)?) } else { None },
                    frozen_weights: quant.frozen_weights,
                })
            }
            None => None,
        };
        Ok(HostModels { cfg: cfg.clone(), p: p.clone(), q })
    }

    /// P and Q on `gpu`.
    pub fn build(&self, gpu: &Gpu) -> Result<(Model, Option<Model>)> {
        let p = Model::new(gpu, self.cfg.clone(), &self.p);
        let q = match &self.q {
            Some(hq) => {
                let mut q = Model::new(gpu, self.cfg.clone(), &hq.weights);
                q.quantize(gpu, hq.bits);
                let quant = q.quant.as_mut().expect("just quantized");
                quant.frozen_weights = hq.frozen_weights;
                if let Some(sites) = &hq.sites {
                    quant.write(gpu, sites)?;
                }
                Some(q)
            }
            None => None,
        };
        Ok((p, q))
    }
}

/// Which batches to make and how.
pub struct Plan<'a> {
    pub seed: u64,
    /// Which set of the run (0 for `synth`; the refresh's epoch in `quantize`).
    pub stream: u64,
    /// The slots to synthesize (a shard's share, or all of them).
    pub slots: Range<usize>,
    /// Tries per slot until a batch stays finite (1: a non-finite batch is returned as it is).
    pub attempts: usize,
    /// Called after every logged iteration, with the worker's index (0 = the caller's adapter).
    pub on_log: &'a (dyn Fn(usize, &TermLog) + Sync),
}

/// One synthesized slot.
pub struct Made {
    pub slot: usize,
    /// Tries it took (the batch is the last one's).
    pub attempts: usize,
    pub batch: SynthBatch,
    /// Which worker made it (0 = the caller's adapter).
    pub worker: usize,
}

/// What one adapter did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WorkerStats {
    pub adapter: String,
    pub batches: usize,
    pub seconds: f64,
}

/// Shared by the workers: the next free slot, the results, the first error.
struct Board {
    next: AtomicUsize,
    stop: AtomicBool,
    made: Mutex<Vec<Made>>,
    error: Mutex<Option<anyhow::Error>>,
}

impl Board {
    fn fail(&self, e: anyhow::Error) {
        self.stop.store(true, Ordering::SeqCst);
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
    }
}

/// Synthesizes `plan.slots` on `primary` (the caller's adapter) and on each of `extra`, and
/// returns the batches in slot order with what each adapter did. `host` must be given when
/// `extra` is not empty: the P weights the workers build P from (Q is read from `primary`
/// after its initialisation).
pub fn run(
    primary: &mut Synthesizer,
    extra: &[Gpu],
    p_weights: Option<&Weights>,
    plan: &Plan,
) -> Result<(Vec<Made>, Vec<WorkerStats>)> {
    // Every worker's Q starts from the state batch 0's first input gives it.
    primary.init_q(batch_rng(plan.seed, plan.stream, 0, 0))?;
    let host = if extra.is_empty() {
        None
    } else {
        let w = p_weights.context("synthesis on several adapters needs P's weights")?;
        let (gpu, p, q) = primary.models();
        Some(HostModels::read(gpu, &p.cfg, w, q)?)
    };
    let board = Board {
        // Slots start..start + workers are each worker's first (see `work`).
        next: AtomicUsize::new(plan.slots.start + extra.len() + 1),
        stop: AtomicBool::new(false),
        made: Mutex::new(Vec::new()),
        error: Mutex::new(None),
    };
    let cfg = primary.config().clone();
    let mut stats = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = extra
            .iter()
            .enumerate()
            .map(|(k, gpu)| {
                let (board, host, cfg) = (&board, host.as_ref(), &cfg);
                scope.spawn(move || {
                    let t0 = Instant::now();
                    let n = match worker_on(gpu, host.expect("host models"), cfg, k + 1, plan, board) {
                        Ok(n) => n,
                        Err(e) => {
                            board.fail(e.context(format!("synthesis on {}", gpu.describe())));
                            0
                        }
                    };
                    WorkerStats { adapter: gpu.describe(), batches: n, seconds: t0.elapsed().as_secs_f64() }
                })
            })
            .collect();
        let t0 = Instant::now();
        let n = work(primary, 0, plan, &board).unwrap_or_else(|e| {
            board.fail(e);
            0
        });
        let (gpu, _, _) = primary.models();
        stats.push(WorkerStats { adapter: gpu.describe(), batches: n, seconds: t0.elapsed().as_secs_f64() });
        for h in handles {
            match h.join() {
                Ok(s) => stats.push(s),
                Err(_) => board.fail(anyhow!("a synthesis worker thread panicked")),
            }
        }
    });
    if let Some(e) = board.error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut made = board.made.into_inner().unwrap_or_else(|p| p.into_inner());
    made.sort_by_key(|m| m.slot);
    Ok((made, stats))
}

/// An extra adapter's worker: its own P, Q and synthesizer, then [`work`].
fn worker_on(
    gpu: &Gpu,
    host: &HostModels,
    cfg: &SynthConfig,
    worker: usize,
    plan: &Plan,
    board: &Board,
) -> Result<usize> {
    let (p, q) = host.build(gpu)?;
    let mut synth = Synthesizer::new(gpu, &p, q.as_ref(), cfg.clone())?;
    work(&mut synth, worker, plan, board)
}

/// Slot `start + worker` first, then free slots until none is left (or another worker
/// failed); returns how many it made.
fn work(synth: &mut Synthesizer, worker: usize, plan: &Plan, board: &Board) -> Result<usize> {
    let mut n = 0;
    let mut own = Some(plan.slots.start + worker);
    while !board.stop.load(Ordering::SeqCst) {
        let slot = own.take().unwrap_or_else(|| board.next.fetch_add(1, Ordering::SeqCst));
        if slot >= plan.slots.end {
            break;
        }
        let mut attempt = 0;
        let batch = loop {
            let mut rng = batch_rng(plan.seed, plan.stream, slot, attempt);
            let b = synth.run_batch(&mut rng, |t| (plan.on_log)(worker, t))?;
            attempt += 1;
            if b.finite || attempt >= plan.attempts {
                break b;
            }
        };
        board.made.lock().unwrap_or_else(|p| p.into_inner()).push(Made {
            slot,
            attempts: attempt,
            batch,
            worker,
        });
        n += 1;
    }
    Ok(n)
}

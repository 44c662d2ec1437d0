//! The MaskAQ objectives on Swin's window taps against PyTorch (tools/make_swin_fixtures.py,
//! tests/fixtures/swin_objectives): the authors' per-window inter-head SSIM and patch-similarity
//! entropy through the synthesis wiring (`maskaq::synth_objectives`), maskaq's last-stage
//! masked alignment, and the per-window head distillation of Q training, values and gradients.
//! Block 0 has 2 images x 4 windows and 2 heads, block 1 one window per image and 24 heads.

mod common;

use std::collections::HashMap;
use std::path::Path;

use maskaq::gpu::{Gpu, Tensor};
use maskaq::maskaq::synth::Weights;
use maskaq::maskaq::synth_objectives::{self as so, head_dims};
use maskaq::model::checkpoint::read_f32_tensors;
use maskaq::model::{TapGeometry, Taps};
use maskaq::ops::distill;

type Fixture = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn fixture() -> Fixture {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/swin_objectives/objectives.safetensors");
    read_f32_tensors(&path).unwrap()
}

/// The two blocks' geometry (the fixture's OBJ_BLOCKS).
fn geometry(l: usize) -> TapGeometry {
    let (windows, heads, head_dim) = if l == 0 { (4, 2, 8) } else { (1, 24, 4) };
    TapGeometry {
        images: 2,
        windows,
        heads,
        tokens: 49,
        head_dim,
        prefix: 0,
        side: 7,
        stage: l,
        shift: if l == 0 { 3 } else { 0 },
        last_stage: l == 1,
    }
}

fn taps(gpu: &Gpu, fx: &Fixture, which: &str) -> Vec<Taps> {
    (0..2)
        .map(|l| {
            let g = geometry(l);
            let a = fx
                .get(&format!("a_{which}.{l}"))
                .map(|t| t.1.clone())
                .unwrap_or_else(|| vec![0.0; g.groups() * g.heads * 49 * 49]);
            let o = fx
                .get(&format!("o_{which}.{l}"))
                .map(|t| t.1.clone())
                .unwrap_or_else(|| vec![0.0; g.groups() * g.heads * 49 * g.head_dim]);
            Taps {
                d_attn_logits: Some(Tensor::zeros(gpu, &[a.len()])),
                d_attn_out: Some(Tensor::zeros(gpu, &[o.len()])),
                attn_logits: Tensor::from_slice(gpu, &a, &[a.len()]),
                attn_out: Tensor::from_slice(gpu, &o, &[o.len()]),
                geometry: g,
            }
        })
        .collect()
}

const OFF: Weights = Weights { ssim: 0.0, entropy: 0.0, alignment: 0.0, ce: 0.0, tv: 0.0, kde: 0.0 };

/// Runs one term's launches; returns its value (the partial sums of its segment / weight).
fn run_term(gpu: &Gpu, w: Weights, segment: usize, p: &[Taps], q: Option<&[Taps]>) -> f64 {
    let o = so::build(gpu, &w, 64, p, q).unwrap();
    for bt in &o.blocks {
        let rows: Vec<f32> = (0..bt.dims.b).flat_map(|_| (0..bt.sub).map(|r| r as f32)).collect();
        bt.subset.write(gpu, &rows);
    }
    if q.is_some() {
        // The fixture's mask: the top 10 query means, none dropped.
        o.hyper_mask.write(gpu, &[10.0, 10.0, 0.0, 0.0]);
        o.keys.write(gpu, &vec![0.5; o.keys.numel()]);
    }
    gpu.run(&o.launches.iter().collect::<Vec<_>>());
    let (off, n) = o.segments[segment];
    let weight = [w.ssim, w.entropy, w.alignment, w.kde][segment] as f64;
    o.partial.read(gpu).unwrap()[off..off + n].iter().map(|&v| v as f64).sum::<f64>() / weight
}

fn check_value(name: &str, got: f64, fx: &Fixture) {
    let want = fx[&format!("{name}.value")].1[0] as f64;
    assert!((got - want).abs() <= 1e-4 * want.abs().max(1e-3), "{name}: {got} vs PyTorch {want}");
}

fn check_grad(name: &str, got: &Tensor, gpu: &Gpu, fx: &Fixture) {
    common::assert_close(name, &got.read(gpu).unwrap(), &fx[name].1, 1e-3, 1e-7, 1e-3);
}

#[test]
fn window_ssim_matches_pytorch() {
    let (gpu, fx) = (common::gpu(), fixture());
    let p = taps(&gpu, &fx, "p");
    let v = run_term(&gpu, Weights { ssim: 1.0, ..OFF }, 0, &p, None);
    check_value("ssim", v, &fx);
    for (l, tap) in p.iter().enumerate() {
        check_grad(&format!("ssim.grad.a_p.{l}"), tap.d_attn_logits.as_ref().unwrap(), &gpu, &fx);
    }
}

#[test]
fn window_entropy_matches_pytorch() {
    let (gpu, fx) = (common::gpu(), fixture());
    let p = taps(&gpu, &fx, "p");
    let v = run_term(&gpu, Weights { entropy: 1.0, ..OFF }, 1, &p, None);
    check_value("entropy", v, &fx);
    for (l, tap) in p.iter().enumerate() {
        check_grad(&format!("entropy.grad.a_p.{l}"), tap.d_attn_logits.as_ref().unwrap(), &gpu, &fx);
    }
}

#[test]
fn last_stage_alignment_matches_pytorch() {
    let (gpu, fx) = (common::gpu(), fixture());
    let (p, q) = (taps(&gpu, &fx, "p"), taps(&gpu, &fx, "q"));
    let v = run_term(&gpu, Weights { alignment: 1.0, ..OFF }, 2, &p, Some(&q));
    check_value("alignment", v, &fx);
    check_grad("alignment.grad.a_p.1", p[1].d_attn_logits.as_ref().unwrap(), &gpu, &fx);
    check_grad("alignment.grad.a_q.1", q[1].d_attn_logits.as_ref().unwrap(), &gpu, &fx);
    // Only the last stage is aligned.
    assert!(p[0].d_attn_logits.as_ref().unwrap().read(&gpu).unwrap().iter().all(|&g| g == 0.0));
}

/// Q training's head distillation per window, with the coefficient `QTrainer` gives each block.
#[test]
fn window_head_distillation_matches_pytorch() {
    let (gpu, fx) = (common::gpu(), fixture());
    let (p, q) = (taps(&gpu, &fx, "p"), taps(&gpu, &fx, "q"));
    let dims: Vec<_> = p.iter().map(|t| head_dims(&t.geometry)).collect();
    let len: usize = dims.iter().map(|d| d.b * d.h * d.d).sum();
    let partial = Tensor::zeros(&gpu, &[len]);
    let weights = Tensor::zeros(&gpu, &[dims.iter().map(|d| d.b * d.np()).max().unwrap()]);
    let mut off = 0;
    for (l, d) in dims.iter().enumerate() {
        let coef = 1.0 / (dims.len() * d.b * d.h * d.d) as f32;
        let ds = distill::head_distill(
            &gpu,
            d,
            d.top_k(0.1),
            coef,
            &p[l].attn_out,
            &q[l].attn_out,
            q[l].d_attn_out.as_ref().unwrap(),
            &weights,
            &partial,
            off,
        );
        gpu.run(&ds.iter().collect::<Vec<_>>());
        off += d.b * d.h * d.d;
    }
    let v: f64 = partial.read(&gpu).unwrap().iter().map(|&v| v as f64).sum();
    check_value("hd", v, &fx);
    for (l, tap) in q.iter().enumerate() {
        check_grad(&format!("hd.grad.o_q.{l}"), tap.d_attn_out.as_ref().unwrap(), &gpu, &fx);
    }
}

#!/usr/bin/env python3
"""PyTorch reference timings for MaskAQ's two hot steps, to set beside `maskaq bench`.

    python3 tools/bench_torch_maskaq.py --arch deit_tiny_patch16_224 --batch 16 [--iters 10] [--device cuda]
    python3 tools/bench_torch_maskaq.py --model assets/fashion_vit --batch 16

Times, at W4A4, with the loss functions of tools/make_fixtures.py (the spec's formulas):
  synthesis iteration: random roll jitter and noise, P and Q (fake-quantized) forward with attention
      taps, inter-head SSIM + patch-similarity entropy (64 rows) + masked CLS alignment (top-k ratio
      0.5, 30% drop) + CE + TV, backward into the images, AdamW on the pixels, clamp;
  Q-training step: P forward (no grad), Q forward, KD (T=5) + 10 x mask-weighted head distillation,
      backward, SGD with Nesterov momentum on all of Q's parameters and its quantizer steps.
Neither model's parameters get gradients during synthesis (only the images are optimised). The
entropy term loops over (layer, image) in Python as the authors' code does. Eager mode, f32,
TF32 off. Prints JSON with the median milliseconds of each step.
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402  (the spec's loss functions and Q's graph)
from bench_torch import timed  # noqa: E402  (median wall time after a warm-up call)


def weight_fq(w, bits):
    """Per-output-channel symmetric min-max fake quantization with a straight-through gradient."""
    wd = w.detach()
    rows = wd.reshape(wd.shape[0], -1)
    m = torch.maximum(rows.amin(1).abs(), rows.amax(1).abs())
    s = ((2.0 ** bits - 1) / torch.clamp(2 * m, min=1e-8)).reshape((-1,) + (1,) * (w.dim() - 1))
    return torch.clamp(torch.round(s * wd), -2 ** (bits - 1), 2 ** (bits - 1) - 1) / s + (w - wd)


class LeanSim(mf.QuantSim):
    """make_fixtures' QuantSim without its bookkeeping (which synchronises with the device)."""

    def weight(self, name, w):
        return weight_fq(w, self.wbits)

    def activation(self, site, x):
        if site not in self.quantizers:
            self._init(site, x.detach())
        q = self.quantizers[site]
        alpha = mf.grad_scale(q["alpha"], q["g"])
        zp = mf.round_pass(q["zero_point"])
        v = torch.clamp(x / alpha + zp, q["qn"], q["qp"])
        return (mf.round_pass(v) - zp) * alpha


def load_model(args, device):
    import timm
    if args.model:
        cfg = json.load(open(os.path.join(args.model, "config.json")))
        model = timm.create_model(cfg["architecture"], pretrained=False, num_classes=cfg["num_classes"],
                                  **cfg.get("model_args", {}))
        from safetensors.torch import load_file
        model.load_state_dict(load_file(os.path.join(args.model, "model.safetensors")))
    else:
        model = timm.create_model(args.arch, pretrained=False)
    return model.to(device).eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="deit_tiny_patch16_224")
    ap.add_argument("--model", help="a timm Hugging Face folder (config.json + model.safetensors)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)

    P = load_model(a, dev)
    Q = load_model(a, dev)
    for p in P.parameters():
        p.requires_grad_(False)
    prefix = P.num_prefix_tokens
    c, h, w = P.patch_embed.proj.in_channels, *P.patch_embed.img_size
    B = a.batch
    sim = LeanSim(4, 4)
    with torch.no_grad():
        mf.quant_forward(Q, torch.randn(B, c, h, w, device=dev), sim)  # LSQ lazy init

    # ---- synthesis iteration ----------------------------------------------------------------
    for p in Q.parameters():
        p.requires_grad_(False)
    quant_leaves = [t for q in sim.quantizers.values() for t in (q["alpha"], q["zero_point"])]
    for t in quant_leaves:
        t.requires_grad_(False)
    x = torch.randn(B, c, h, w, device=dev, requires_grad=True)
    labels = torch.randint(0, P.num_classes, (B,), device=dev)
    opt = torch.optim.AdamW([x], lr=0.1, weight_decay=1e-6)
    jitter = max(1, round(8 * h / 224))
    n_patches = P.patch_embed.num_patches
    rows = min(64, n_patches)

    def synth_step():
        opt.zero_grad(set_to_none=True)
        dx, dy = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,)))
        xa = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
        xa = xa + 0.1 * torch.randn_like(xa)
        lp, tp = mf.manual_forward(P, xa)
        _, tq = mf.quant_forward(Q, xa, sim)
        a_p = torch.stack([t[0] for t in tp])
        a_q = torch.stack([t[0] for t in tq])
        L = a_p.shape[0]
        subset = torch.stack([torch.randperm(n_patches, device=dev)[:rows] for _ in range(L * B)]).reshape(L, B, rows)
        mask, _ = mf.obj_topk_mask(mf.obj_cls_mean(a_p.detach(), prefix), 0.5)
        mask = mask * (torch.rand_like(mask) >= 0.3)
        loss = (mf.obj_ssim(a_p, prefix) + mf.obj_entropy(a_p, subset, prefix)
                + 0.1 * mf.obj_att(a_p, a_q, mask, prefix) + mf.obj_ce(lp, labels) + 2.5e-5 * mf.obj_tv(x))
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(-3.0, 3.0)

    synth_s = timed(synth_step, a.iters, sync)

    # ---- Q-training step ----------------------------------------------------------------------
    for p in Q.parameters():
        p.requires_grad_(True)
    for t in quant_leaves:
        t.requires_grad_(True)
    sgd = torch.optim.SGD(list(Q.parameters()) + quant_leaves, lr=1e-3, momentum=0.9, nesterov=True)
    data = torch.randn(B, c, h, w, device=dev)

    def train_step():
        xb = torch.flip(data, dims=(3,))
        with torch.no_grad():
            lp, tp = mf.manual_forward(P, xb)
        lq, tq = mf.quant_forward(Q, xb, sim)
        o_p = torch.stack([t[1] for t in tp])
        o_q = torch.stack([t[1] for t in tq])
        wts, _ = mf.obj_hd_weights(o_p, prefix)
        loss = mf.obj_kd(lq, lp, 5.0) + 10.0 * mf.obj_hd(o_p, o_q, wts, prefix)
        loss.backward()
        sgd.step()
        sgd.zero_grad(set_to_none=True)

    train_s = timed(train_step, a.iters, sync)
    import timm
    print(json.dumps({
        "framework": f"torch {torch.__version__}, timm {timm.__version__}",
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "model": a.model or a.arch,
        "batch": B,
        "bits": "W4A4",
        "synth_iteration_ms": synth_s * 1e3,
        "train_step_ms": train_s * 1e3,
        "iters": a.iters,
    }, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch/timm reference timings for `maskaq bench`: the same model, batch and precision (f32).

    python3 tools/bench_torch.py --arch deit_tiny_patch16_224 --batch 32 [--iters 20] [--device cuda]

Prints JSON with forward and forward+backward images/s (eager mode, TF32 off, random weights,
random normal images; the backward pass starts from a random logit gradient like maskaq's).
Run it on the same machine as `maskaq bench --arch NAME --batch B --json` and compare the ratio.
"""

import argparse
import json
import time

import timm
import torch


def timed(fn, iters, sync):
    fn()
    sync()
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return samples[len(samples) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="deit_tiny_patch16_224")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device(a.device)
    model = timm.create_model(a.arch, pretrained=False).to(dev).eval()
    cfg = model.pretrained_cfg
    c, h, w = cfg.get("input_size", (3, 224, 224))
    x = torch.randn(a.batch, c, h, w, device=dev)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)

    def fwd():
        with torch.no_grad():
            model(x)

    g = torch.randn(a.batch, model.num_classes, device=dev) * 1e-3
    xg = x.clone().requires_grad_(True)

    def train():
        model.zero_grad(set_to_none=True)
        out = model(xg)
        out.backward(g)

    tf = timed(fwd, a.iters, sync)
    tt = timed(train, a.iters, sync)
    print(json.dumps({
        "framework": f"torch {torch.__version__}, timm {timm.__version__}",
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "architecture": a.arch, "batch": a.batch,
        "forward_ms": tf * 1e3, "forward_images_per_s": a.batch / tf,
        "train_step_ms": tt * 1e3, "train_images_per_s": a.batch / tt,
    }, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""P-side synthesis in PyTorch, to find which part of the recipe stops a class from being reached.

Optimises a batch of 10 x PER images (PER per class of a 10-class model) from noise or from black
with the recipe of docs/method.md §1.2 on P alone: AdamW (lr 0.1, cosine to 1e-3), roll jitter
(8 then 16 px at 224, scaled to the image size), the noise constant (0.5, falling to 0) and the
colour jitter (x - m) / s, m ~ U[-A, A], s = exp(U[-A, A]); loss CE + entropy + SSIM + 2.5e-5 TV
(each term switchable; the masked P-Q alignment needs Q and is left out). Then prints P's
agreement with the targets on the final images, overall and per class.

Each SPEC is comma-separated key=value settings (defaults in brackets): iters [100], cj (A) [1],
init (randn|black) [randn], roll (0|1) [1], noise [0.5], lr [0.1], ent [1], ssim [1], tv [2.5e-5],
seed [0], per [8].

  python3 tools/synth_probe.py --model M iters=100,init=randn iters=100,init=black,cj=0.5
  python3 tools/synth_probe.py --model M roll=0,ent=0,ssim=0,tv=0   # CE alone, no roll

The entropy and SSIM terms read ViT attention; on a Swin give ent=0,ssim=0 (CE and TV alone).

With --real DIR (a Fashion-MNIST folder with t10k-*-ubyte.gz) it first prints P's top-1 on the
first 2,000 test images rolled by a few shifts and under the colour jitter and the noise
constant, overall and per class: how far the augmentations are within what P tolerates.

Needs torch and timm (tools/requirements.txt). A run of 80 images x 100 iterations on a 20 px
model takes seconds on a CPU.
"""

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synth_term_grads import entropy, forward_with_logits, load_model, ssim_heads, total_variation  # noqa: E402

DEFAULTS = dict(iters=100, cj=1.0, init="randn", roll=1, noise=0.5, lr=0.1, ent=1.0, ssim=1.0, tv=2.5e-5,
                seed=0, per=8)


def parse(spec):
    kw = dict(DEFAULTS)
    for item in filter(None, spec.split(",")):
        k, v = item.split("=")
        if k not in DEFAULTS:
            sys.exit(f"synth_probe.py: unknown setting `{k}` in `{spec}` (known: {', '.join(DEFAULTS)})")
        kw[k] = v if k == "init" else type(DEFAULTS[k])(v)
    return kw


def probe(cfg, model, kw):
    size = cfg["model_args"]["img_size"]
    chans = cfg["model_args"].get("in_chans", 3)
    mean = torch.tensor(cfg["pretrained_cfg"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(cfg["pretrained_cfg"]["std"]).view(1, -1, 1, 1)
    lo, hi = (0 - mean) / std, (1 - mean) / std
    classes = cfg["num_classes"]
    per, iters = kw["per"], kw["iters"]
    b = classes * per
    shifts = [max(1, round(8 * size / 224)), max(1, round(16 * size / 224))]
    g = torch.Generator().manual_seed(kw["seed"])
    z = torch.randn(b, chans, size, size, generator=g)
    img = z if kw["init"] == "randn" else lo + 0.01 * z.abs()
    img = img.clone().requires_grad_(True)
    y = torch.arange(classes).repeat_interleave(per)
    opt = torch.optim.AdamW([img], kw["lr"], (0.9, 0.999), 1e-8, 1e-6)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters, 1e-3)
    h_first = h_last = None
    for i in range(iters):
        x = img
        if kw["roll"]:
            j = shifts[0] if i < iters // 2 else shifts[1]
            dy, dx = (int(torch.randint(-j, j + 1, (1,), generator=g)) for _ in range(2))
            x = torch.roll(x, (dy, dx), (2, 3))
        x = x + torch.randn(b, chans, 1, 1, generator=g) * (iters - 1 - i) * kw["noise"] / iters
        m = (torch.rand(b, chans, 1, 1, generator=g) * 2 - 1) * kw["cj"]
        s = ((torch.rand(b, chans, 1, 1, generator=g) * 2 - 1) * kw["cj"]).exp()
        if kw["ent"] or kw["ssim"]:
            logits, taps = forward_with_logits(model, (x - m) / s)
            ent = entropy(taps, 1)
        else:
            # CE (and TV) alone need no attention taps: any timm model, Swin included.
            logits, ent = model((x - m) / s), torch.zeros(())
        loss = F.cross_entropy(logits, y) + kw["ent"] * ent + kw["tv"] * total_variation(img)
        if kw["ssim"]:
            loss = loss + kw["ssim"] * ssim_heads(taps, 1, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            img.copy_(torch.maximum(torch.minimum(img, hi), lo))
        h_last = -ent.item()
        h_first = h_last if h_first is None else h_first
    with torch.no_grad():
        hits = (model(img).argmax(1) == y).view(classes, per).sum(1)
    return hits, h_first, h_last


@torch.no_grad()
def roll_tolerance(cfg, model, folder, names):
    import gzip

    import numpy as np
    from PIL import Image

    size = cfg["model_args"]["img_size"]
    mean, std = cfg["pretrained_cfg"]["mean"][0], cfg["pretrained_cfg"]["std"][0]
    with gzip.open(os.path.join(folder, "t10k-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:2000]
    with gzip.open(os.path.join(folder, "t10k-labels-idx1-ubyte.gz")) as f:
        y = torch.tensor(np.frombuffer(f.read(), np.uint8, offset=8)[:2000].astype(np.int64))
    if size != 28:
        x = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in x])
    x = (torch.tensor(x, dtype=torch.float32)[:, None] / 255 - mean) / std
    def report(what, hit):
        per = " ".join(f"{n}:{100 * hit[y == c].float().mean().item():.1f}" for c, n in enumerate(names))
        print(f"real test images {what}: top-1 {100 * hit.float().mean().item():.1f} %  [{per}]")

    for shift in [(0, 0), (1, 0), (0, 1), (1, 1), (-1, -1), (2, 2)]:
        report(f"rolled by {shift}", model(torch.roll(x, shift, (2, 3))).argmax(1) == y)
    # The intensity augmentations of synthesis at their first iteration: the colour jitter of
    # strength A and the noise constant of standard deviation sd (one draw per image, seed 0).
    g = torch.Generator().manual_seed(0)
    for a, sd in [(0.5, 0.0), (1.0, 0.0), (0.0, 0.5), (0.5, 0.5)]:
        m = (torch.rand(len(x), 1, 1, 1, generator=g) * 2 - 1) * a
        s = ((torch.rand(len(x), 1, 1, 1, generator=g) * 2 - 1) * a).exp()
        noise = torch.randn(len(x), 1, 1, 1, generator=g) * sd
        report(f"under colour jitter {a}, noise {sd}", model((x + noise - m) / s).argmax(1) == y)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a timm folder (config.json + model.safetensors)")
    ap.add_argument("--real", help="Fashion-MNIST folder: first check the roll tolerance on real images")
    ap.add_argument("specs", nargs="*")
    args = ap.parse_args()
    cfg, model = load_model(args.model)
    for p in model.parameters():
        p.requires_grad_(False)
    names = cfg.get("label_names") or [str(c) for c in range(cfg["num_classes"])]
    if args.real:
        roll_tolerance(cfg, model, args.real, names)
    for spec in args.specs:
        kw = parse(spec)
        hits, h0, h1 = probe(cfg, model, kw)
        total = hits.sum().item() / (kw["per"] * len(hits))
        per_class = " ".join(f"{n}:{h}" for n, h in zip(names, hits.tolist()))
        ent = f"  entropy {h0:.3f} -> {h1:.3f}" if kw["ent"] or kw["ssim"] else ""
        print(f"{spec or 'defaults'}: agreement {100 * total:.1f} %{ent}  [{per_class}]", flush=True)


if __name__ == "__main__":
    main()

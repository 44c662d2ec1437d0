#!/usr/bin/env python3
"""Per-term image gradients of MaskAQ's synthesis objectives, for diagnosing a synthesis run.

Usage (CPU; needs torch, timm, safetensors):

    python3 tools/synth_term_grads.py --model assets/fashion_vit --data SYNTH_DIR [--batch 16] [--seed 0]

For the images of a `maskaq synth` folder (SYNTH_DIR/synthetic.safetensors: `images` in the model's
normalised space, `labels`) and for N(0, 1) noise of the same shape (the start of a synthesis), it
prints, per term of P's objective, its value and the L2 norm of the gradient of the *weighted* term with
respect to the images, and the cosine between each term's gradient and the cross-entropy's. The terms
are those of docs/method.md section 2, computed as maskaq computes them (src/ops/objectives.rs): inter-head SSIM
of the min-max normalised key-logit rows on the patch grid, the Gaussian entropy of the row-normalised
patch-similarity matrix (all patch rows: the grid has fewer than 64), cross-entropy to the targets and
the un-squared total variation. The masked P-Q alignment needs Q and is left out. No augmentation, no
jitter: the gradients are at the images themselves, so they show the balance of the terms, not the
exact step maskaq takes.

With --real IDX_DIR (Fashion-MNIST gzip IDX files, resized to the model's size as
tools/train_fashion.py does) it also prints top-1 on the first 1,000 test images and on the synthesised
set, clean and under synthesis's colour jitter (x - m) / s, m ~ U[-1, 1], s = exp(U[-1, 1]) per image,
in normalised space (mean of 4 draws): how much of the objective's cross-entropy the augmentation
alone keeps up.
"""

import argparse
import json
import math
import os

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

WEIGHTS = {"ssim": 1.0, "entropy": 1.0, "ce": 1.0, "tv": 2.5e-5}


def load_model(folder):
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    model = timm.create_model(cfg["architecture"], pretrained=False, num_classes=cfg["num_classes"],
                              **cfg["model_args"])
    model.load_state_dict(load_file(os.path.join(folder, "model.safetensors")), strict=True)
    return cfg, model.eval()


def forward_with_logits(model, x):
    """timm's forward, also returning every block's raw attention logits q k^T (before the scale)."""
    taps = []
    t = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    for blk in model.blocks:
        a = blk.attn
        h = blk.norm1(t)
        b, n, c = h.shape
        q, k, v = a.qkv(h).reshape(b, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = a.q_norm(q), a.k_norm(k)
        logits = q @ k.transpose(-2, -1)
        taps.append(logits)
        o = ((logits * a.scale).softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        t = t + blk.ls1(a.proj(a.norm(o)))
        t = t + blk.ls2(blk.mlp(blk.norm2(t)))
    return model.forward_head(model.norm(t)), taps


def ssim_heads(taps, prefix, g):
    """Mean over blocks, query patches and head pairs of 1 - SSIM^2 between heads' key-logit maps."""
    total = 0.0
    for a in taps:
        s = a[:, :, prefix:, prefix:]  # B,H,np,np
        lo = s.amin(-1, keepdim=True)
        hi = s.amax(-1, keepdim=True)
        s = (s - lo) / (hi - lo + 1e-8)
        s = s.permute(0, 2, 1, 3)  # B,np,H,np: per query patch, one map per head
        mu = s.mean(-1)
        s2 = (s * s).mean(-1) - mu * mu
        cross = torch.einsum("bqhk,bqjk->bqhj", s, s) / s.shape[-1] - mu[..., :, None] * mu[..., None, :]
        c1, c2 = 0.01 ** 2, 0.03 ** 2
        ssim = ((2 * mu[..., :, None] * mu[..., None, :] + c1) * (2 * cross + c2)) / (
            (mu[..., :, None] ** 2 + mu[..., None, :] ** 2 + c1) * (s2[..., :, None] + s2[..., None, :] + c2))
        total = total + (1 - ssim ** 2).mean()
    return total / len(taps)


def entropy(taps, prefix):
    """-(mean over blocks and images) Gaussian entropy of the patch-similarity matrix (all rows)."""
    h = 0.0
    for a in taps:
        v = a.mean(1)[:, prefix:, prefix:]  # B,np,np
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        sim = v @ v.transpose(-2, -1)
        var = sim.flatten(1).var(dim=1, unbiased=False) + 1e-8
        h = h + (0.5 * (math.log(2 * math.pi * math.e) + var.log())).mean()
    return -h / len(taps)


def total_variation(x):
    dx = x[..., :, 1:] - x[..., :, :-1]
    dy = x[..., 1:, :] - x[..., :-1, :]
    d1 = x[..., 1:, 1:] - x[..., :-1, :-1]
    d2 = x[..., 1:, :-1] - x[..., :-1, 1:]
    return dx.norm() + dy.norm() + (d1.norm() + d2.norm()) / math.sqrt(2)


def term_grads(model, x, y, prefix, g):
    out = {}
    grads = {}
    for name in WEIGHTS:
        xi = x.clone().requires_grad_(True)
        logits, taps = forward_with_logits(model, xi)
        val = {"ssim": lambda: ssim_heads(taps, prefix, g), "entropy": lambda: entropy(taps, prefix),
               "ce": lambda: F.cross_entropy(logits, y), "tv": lambda: total_variation(xi)}[name]()
        (WEIGHTS[name] * val).backward()
        grads[name] = xi.grad.flatten()
        out[name] = {"value": val.item(), "grad_norm": grads[name].norm().item()}
        if name == "ce":
            out[name]["agreement"] = (logits.argmax(1) == y).float().mean().item()
    for name in WEIGHTS:
        out[name]["cos_with_ce"] = F.cosine_similarity(grads[name], grads["ce"], dim=0).item()
    return out


@torch.no_grad()
def jitter_top1(model, x, y, draws=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    clean = (model(x).argmax(1) == y).float().mean().item()
    hits = 0.0
    for _ in range(draws):
        m = torch.rand(x.shape[0], 1, 1, 1, generator=gen) * 2 - 1
        s = (torch.rand(x.shape[0], 1, 1, 1, generator=gen) * 2 - 1).exp()
        hits += (model((x - m) / s).argmax(1) == y).float().mean().item()
    return clean, hits / draws


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="a `maskaq synth` output folder")
    ap.add_argument("--batch", type=int, default=16, help="images taken from the start of the set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real", default=None, help="Fashion-MNIST IDX folder for the colour-jitter check")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    cfg, model = load_model(args.model)
    for p in model.parameters():
        p.requires_grad_(False)
    st = load_file(os.path.join(args.data, "synthetic.safetensors"))
    x = st["images"][:args.batch].float()
    y = st["labels"][:args.batch].long()
    ma = cfg["model_args"]
    g = ma["img_size"] // ma["patch_size"]
    prefix = 1
    for label, imgs in (("noise N(0,1)", torch.randn_like(x)), ("synthesised", x)):
        res = term_grads(model, imgs, y, prefix, g)
        print(f"{args.model} at {label} ({imgs.shape[0]} images, {g}x{g} patches):")
        for name, r in res.items():
            extra = f"  top-1 agreement {r['agreement'] * 100:.1f}%" if "agreement" in r else ""
            print(f"  {name:8s} value {r['value']:9.4f}  |grad of weighted term| {r['grad_norm']:.3e}  "
                  f"cos with CE grad {r['cos_with_ce']:+.3f}{extra}")
    if args.real:
        import sys
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import train_fashion as tf
        tx, ty = tf.load_split(args.real, "t10k")
        tx = tf.normalize(tf.resize_u8(tx[:1000], ma["img_size"]))
        for label, (xx, yy) in (("real test[:1000]", (tx, ty[:1000])),
                                ("synthesised (all)", (st["images"].float(), st["labels"].long()))):
            clean, jit = jitter_top1(model, xx, yy)
            print(f"  {label}: top-1 clean {clean * 100:.1f}%, under colour jitter {jit * 100:.1f}%")


if __name__ == "__main__":
    main()

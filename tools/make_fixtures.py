#!/usr/bin/env python3
"""Write the PyTorch/timm parity fixtures that maskaq's Rust tests compare against.

Usage (CPU only; needs `pip install -r tools/requirements.txt`):

    python3 tools/make_fixtures.py [--out tests/fixtures] [--only NAME] [--hashed-model DIR]

    --out DIR    where to write (default: tests/fixtures next to this script's parent)
    --hashed-model DIR  write only deit_tiny_full's hashed weights as a timm folder (config.json +
                 F32 model.safetensors, 23 MB) to DIR: a full-size model for benchmarks (tools/fast_deit.sh)
    --only NAME  write one fixture only: tiny_vit, tiny_deit_distilled, tiny_gray_f16,
                 deit_tiny_full, quant_tiny_vit_w4a4, quant_tiny_vit_w3a3,
                 quant_tiny_deit_distilled_w4a4, preprocess, objectives (a quant_* fixture reads
                 its FP fixture's folder under --out, so write that first)

Everything is seeded and computed on one CPU thread, so a rerun with the same library versions on the same
machine writes the same bytes. Another CPU may round differently in the last bits: regenerating the tiny
fixtures on the machine that wrote deit_tiny_full changed their tensors by up to 4.5e-7 (absolute), so
the committed tiny fixtures were left as they were.

One folder per model, `<out>/<name>/`:
  config.json          timm Hugging Face layout: timm.create_model(cfg["architecture"],
                       num_classes=cfg["num_classes"], **cfg["model_args"]) rebuilds the model.
  model.safetensors    the model's state_dict() under timm names (F32; F16 for tiny_gray_f16).
  fixture.safetensors  F32 tensors, metadata {"objective", "coef_a", "coef_o"}:
    images [B,C,H,W]                normalized-space input (randn)
    targets [B]                     class indices stored as F32
    logits [B,num_classes]          eval-mode output (distilled: (head(x0) + head_dist(x1)) / 2)
    blocks.{i}.attn_logits [B,H,N,N]  A = q @ k^T per head, before the scale and the softmax
    blocks.{i}.attn_out [B,H,N,hd]    O = softmax(scale * A) @ v per head, before merge and proj
    objective [1]                   J = CE(logits, targets) + 0.001 sum_i mean(A_i^2) + 0.1 sum_i mean(O_i^2)
    grad.images [B,C,H,W]           dJ/dimages
    grad.<param> (param shapes)     dJ/dparam for every parameter of the model
    Each fixture file this script writes also records the library versions in its metadata
    (`torch_version`, ...; tests/fixtures files written before that lack them).
`<out>/deit_tiny_full/` (full-size deit_tiny_patch16_224, batch 2) stores no weights and no images: both
  are a hash of (tensor name, element index) that tests/parity.rs recomputes bit for bit (`hashed_values`
  below: uniform, spreads as in `hashed_rule`); the metadata holds fingerprints of both
  (`weights_fingerprint`, `images_fingerprint`) that the Rust side checks first. config.json as above, and fixture.safetensors with targets, logits, objective,
  attn_logits_meansq / attn_out_meansq [depth] (every block's mean(A^2), mean(O^2)), blocks.{i}.attn_logits
  / attn_out for i in 0, 6, 11, grad.images and grad.<param> for cls_token, pos_embed, patch_embed.*,
  every tensor of blocks 0 and 11, norm.* and head.* (MODELS["deit_tiny_full"]["stored"]).
`<out>/preprocess/`: img{k}.png plus preprocess.safetensors holding img{k} = timm's eval transform of
that file (versions and transform repr in its metadata).

Quantized fixtures `<out>/quant_<model>_w<b>a<b>/fixture.safetensors` (F32; metadata {"model", "wbits",
"abits", "objective", "coef_a", "coef_o", "lsq_g_scale_head"}): MaskAQ's Q built on the FP fixture
<model> (same weights from its model.safetensors, same images and targets), docs/method.md §3:
  - weights of every Linear and of patch_embed.proj: symmetric per-output-channel min-max,
    s_c = (2^b - 1) / max(2 max(|min_c W|, |max_c W|), 1e-8),
    W_hat = clamp(round(s_c W), -2^(b-1), 2^(b-1) - 1) / s_c, recomputed every forward, plain STE;
    biases FP. s_c times a row's extreme element is (2^b - 1) / 2 exactly in real arithmetic: a
    rounding tie, which decides -2^(b-1) vs -2^(b-1) + 1 in rows whose extreme is negative, so the
    f32 op order (true division, then round half to even of the product) matters there.
  - per-tensor LSQ activation quantizers ("QuantAct_lsq") at the input of every Linear and on both
    operands of q @ k^T and softmax @ v; the image, LayerNorm, softmax, GELU, residuals, the scale and
    cls/pos embeddings stay FP. Site names: blocks.{i}.attn.qkv.act, blocks.{i}.attn.proj.act,
    blocks.{i}.mlp.fc1.act, blocks.{i}.mlp.fc2.act, blocks.{i}.attn.matmul1.act_a (q) / .act_b (k),
    blocks.{i}.attn.matmul2.act_a (softmax probabilities) / .act_b (v), head.act, head_dist.act.
    Lazy init on the first tensor x0 each sees: signed = min x0 < 1e-5, [QN, QP] = [-2^(b-1),
    2^(b-1) - 1] or [0, 2^b - 1]; alpha = 2 mean|x0| / sqrt(QP); z = 0.1 (min x0 - alpha QP);
    g = lsq_g_scale / sqrt(numel(x0) QP), lsq_g_scale 1.0 except 0.01 for head.act / head_dist.act.
    Forward x_hat = (round_pass(clamp(x / alpha' + round_pass(z), QN, QP)) - round_pass(z)) alpha',
    alpha' = alpha with its gradient scaled by g; round half to even; torch.clamp's gradient.
  - the first forward (the fixture images) initialises every quantizer, with upstream quantizers
    already applied as in MaskAQ; the recorded values come from a second forward + backward.
  Tensors: images, targets, logits, blocks.{i}.attn_logits (A = quant(q) @ quant(k)^T, unscaled),
  blocks.{i}.attn_out (O = quant(P) @ quant(v)), objective (J as above on Q's values), grad.images,
  grad.<param> (STE through the weight quantizer); per activation site S: S.alpha, S.zero_point (as
  initialised, z before rounding), S.signed (1/0), S.g, S.ties (elements of clamp(x / alpha' + z') within
  1e-4 of a rounding tie, where an f32 reimplementation may round the other way), grad.S.alpha,
  grad.S.zero_point (all [1]); wq.blocks.0.attn.qkv.weight and wq.patch_embed.proj.weight = W_hat.
  grad.S.zero_point is exactly 0 in real arithmetic when no element of S is clamped; the stored f32
  value is then the residue of two cancelling sums (about 1e-8): compare it with an absolute tolerance.
  Checked against a float64 rerun with the same alpha / z in which near-tie codes take the f32 decision
  (only weight ties flip there); the run prints every site's init values and tie counts.

`<out>/objectives/objectives.safetensors` (F32, no model): MaskAQ's loss terms (docs/method.md §1.2, 1.3, 2)
as plain functions of seeded random tensors, each with its value and its gradient with respect to each of
its inputs, computed in float64 with autograd from the stored F32 inputs and rounded to F32 (a float32
rerun, the f32 top-k masks and a float64 central-difference check along one random direction per
gradient are asserted). Shapes generalise the code's 197/14: L 2 blocks, B 2, H 2 heads, G 9 (np = 81
patches), prefix 1 (CLS = token 0), N 82, d 8, C 7, images [2,3,12,12]. Metadata: those dims and every
constant used. Inputs: a_p, a_q [L,B,H,N,N] (raw q k^T logits, a_p = 3 randn, a_q = a_p + 0.3 randn),
o_p, o_q [L,B,H,N,d] (o_q = o_p + 0.5 randn), images, logits_p, logits_q [B,C], labels [B] (F32 indices).
  ssim.value, ssim.grad_a_p      2.1: per (l, b, query patch q, head h) the key row S = a_p[l,b,h,1+q,1:]
                                 -> (S - min) / (max - min + 1e-8); global SSIM with population stats
                                 between heads h, h' (C1 = 0.01^2, C2 = 0.03^2); mean of 1 - ssim^2 over
                                 (L, B*np, H, H), the diagonal h = h' included (it is 1, so adds 0).
  entropy.subset [L,B,64], entropy.value, entropy.grad_a_p   2.2 with the fixed 64 patch rows per (l, b)
                                 (0-based into the np patch rows): V = mean_h a_p[l,b,:,1:,1:][subset],
                                 rows / max(|row|, 1e-6), Ssim = V V^T (64 x 64), var = population variance
                                 + 1e-8, h = (log(2 pi e) + log var) / 2; value = -mean_{l,b} h.
  mask.ratio, mask.cls_mean [B,np], mask.topk [B,np]   2.3 without the random drop: cls_mean =
                                 mean_{l,h} a_p[l,b,h,0,1:], topk = 1 on its top k = max(1, int(np ratio)).
  att.mask [B,np], att.value, att.grad_a_p, att.grad_a_q   2.4 with a fixed mask: (1/L) sum_l sum_{b,j}
                                 |mean_h a_p[l,b,:,0,1+j] - mean_h a_q[l,b,:,0,1+j]| M[b,j] / (sum M + 1e-8).
  tv.value, tv.grad_images       2.6: |dx| + |dy| + |d1|/sqrt2 + |d2|/sqrt2, Frobenius over the batch;
                                 dx = x[..., :, 1:] - x[..., :, :-1], dy = x[..., 1:, :] - x[..., :-1, :],
                                 d1 = x[..., 1:, 1:] - x[..., :-1, :-1], d2 = x[..., 1:, :-1] - x[..., :-1, 1:].
  ce.value, ce.grad_logits_p     CE(logits_p, labels), mean over the batch.
  kd.temperature, kd.value, kd.grad_logits_q   1.3: sum p (log p - log q) / B * T^2, p = softmax(logits_p / T)
                                 (constant), log q = log_softmax(logits_q / T), T = 5.
  hd.weights [L,B,np], hd.value, hd.grad_o_q   2.5, teacher o_p constant: imp = mean_h mean_d |o_p[l,b,:,1:,:]|,
                                 k = max(1, round(np 0.1)) (Python round: 8), w = 2 on the top k, else 1
                                 (stored w has no 1e-6); per (l, b, d-channel, h) over the np patch tokens,
                                 w' = w + 1e-6: mu = sum w' t / sum w', s_t = sum w' t^2 / sum w' - mu_t^2 (same
                                 for q), s_tq = sum w t q / (sum w + 1e-6) - mu_t mu_q, ssim = (2 s_tq + C2) /
                                 ((s_t + s_q + C2) + 1e-6), C2 = 0.03^2; value = 1 - mean ssim.

All weights are random (timm's own init leaves biases 0 and LayerNorm weights 1, which would hide bugs):
Linear/Conv weights N(0, 1/fan_in), their biases N(0, 0.1^2), LayerNorm weight 1 + 0.2 N(0,1), bias
0.1 N(0,1), cls_token / dist_token / pos_embed N(0, 0.5^2).
"""

import argparse
import copy
import hashlib
import json
import math
import os
import struct
import sys
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import PIL
import timm
import timm.data
import safetensors
from PIL import Image
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

COEF_A = 0.001
COEF_O = 0.1
FIXTURE_METADATA = {
    "objective": "ce+0.001*sum_l mean(A_l^2)+0.1*sum_l mean(O_l^2)",
    "coef_a": "0.001",
    "coef_o": "0.1",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def save_file(tensors, path, metadata=None):
    """safetensors.torch.save_file with a deterministic header.

    safetensors 0.8 serializes `__metadata__` from a hash map, so its key order (and the file's bytes)
    changes from run to run. Re-encode the header with sorted metadata keys; tensor entries, data
    offsets and the data itself are kept as the library wrote them.
    """
    raw = safetensors_bytes(tensors, metadata=metadata)
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", None)
    out = {"__metadata__": dict(sorted(meta.items()))} if meta else {}
    out.update(header)
    text = json.dumps(out, separators=(",", ":"), ensure_ascii=True).encode()
    text += b" " * (-len(text) % 8)  # keep the data section 8-byte aligned, as the library does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + raw[8 + n:])

MODELS = {
    "tiny_vit": dict(
        architecture="vit_tiny_patch16_224",
        num_classes=10,
        model_args=dict(img_size=32, patch_size=8, in_chans=3, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0),
        batch=2, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), f16=False,
    ),
    "tiny_deit_distilled": dict(
        architecture="deit_tiny_distilled_patch16_224",
        num_classes=7,
        model_args=dict(img_size=24, patch_size=4, in_chans=3, embed_dim=48, depth=2, num_heads=3, mlp_ratio=4.0),
        batch=3, mean=IMAGENET_MEAN, std=IMAGENET_STD, f16=False,
    ),
    "tiny_gray_f16": dict(
        architecture="vit_tiny_patch16_224",
        num_classes=10,
        model_args=dict(img_size=28, patch_size=7, in_chans=1, embed_dim=24, depth=3, num_heads=4, mlp_ratio=4.0),
        batch=2, mean=(0.2860,), std=(0.3530,), f16=True,
    ),
    # Full size, hashed weights and images (make_hashed_fixture): batch 2 = 394 tokens, enough for the
    # GPU kernels' split-K weight gradients (k >= 256) and chunked reductions.
    "deit_tiny_full": dict(
        architecture="deit_tiny_patch16_224",
        num_classes=1000,
        model_args=dict(img_size=224, patch_size=16, in_chans=3, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0),
        batch=2, mean=IMAGENET_MEAN, std=IMAGENET_STD, f16=False, hashed=True,
        stored=dict(
            blocks=(0, 6, 11),
            grads=["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
            + [f"blocks.{i}.{p}" for i in (0, 11) for p in (
                "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                "mlp.fc2.weight", "mlp.fc2.bias")]
            + ["norm.weight", "norm.bias", "head.weight", "head.bias"],
        ),
    ),
}

# (file, PIL mode, width, height, transform settings)
PREPROCESS_IMAGES = [
    ("img0", "RGB", 37, 53, dict(input_size=(3, 32, 32), mean=IMAGENET_MEAN, std=IMAGENET_STD)),
    ("img1", "RGB", 80, 61, dict(input_size=(3, 32, 32), mean=IMAGENET_MEAN, std=IMAGENET_STD)),
    ("img2", "L", 50, 50, dict(input_size=(1, 28, 28), mean=(0.2860,), std=(0.3530,))),
]
PREPROCESS_CROP_PCT = 0.875
PREPROCESS_INTERPOLATION = "bicubic"


def seed_of(name):
    """A fixed per-fixture seed, so --only NAME writes the same bytes as a full run."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def versions():
    import torchvision

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
    }


def with_versions(metadata):
    """A copy of `metadata` with the library versions that computed the fixture (`torch_version`, ...)."""
    out = dict(metadata)
    out.update({f"{k}_version": v for k, v in versions().items()})
    return out


# ----------------------------------------------------------------------------------------------------
# Model construction and random weights


def build_model(spec):
    model = timm.create_model(spec["architecture"], pretrained=False, num_classes=spec["num_classes"],
                              **spec["model_args"])
    return model.eval()


@torch.no_grad()
def randomize_(model, gen):
    """Overwrite every parameter with seeded random values (see the module docstring)."""
    owner = {}
    for mname, mod in model.named_modules():
        for pname, _ in mod.named_parameters(recurse=False):
            owner[f"{mname}.{pname}" if mname else pname] = mod
    for name, p in model.named_parameters():
        mod = owner[name]
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(mod, (nn.Linear, nn.Conv2d)) and leaf == "weight":
            fan_in = p[0].numel()
            new = torch.randn(p.shape, generator=gen) * fan_in ** -0.5
        elif isinstance(mod, (nn.Linear, nn.Conv2d)) and leaf == "bias":
            new = torch.randn(p.shape, generator=gen) * 0.1
        elif isinstance(mod, nn.LayerNorm) and leaf == "weight":
            new = 1.0 + 0.2 * torch.randn(p.shape, generator=gen)
        elif isinstance(mod, nn.LayerNorm) and leaf == "bias":
            new = 0.1 * torch.randn(p.shape, generator=gen)
        elif name in ("cls_token", "dist_token", "pos_embed"):
            new = 0.5 * torch.randn(p.shape, generator=gen)
        elif leaf == "relative_position_bias_table":  # Swin (tools/make_swin_fixtures.py)
            new = 0.5 * torch.randn(p.shape, generator=gen)
        else:
            raise RuntimeError(f"no init rule for parameter {name} ({type(mod).__name__})")
        p.copy_(new)


# ----------------------------------------------------------------------------------------------------
# Manual forward with attention taps (same math as timm's Block/Attention, explicit softmax path)


def manual_attention(attn, x, taps):
    B, N, D = x.shape
    H = attn.num_heads
    hd = D // H
    qkv = attn.qkv(x).reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    scale = getattr(attn, "scale", hd ** -0.5)
    a = q @ k.transpose(-2, -1)  # A: before scale and softmax
    p = a.mul(scale).softmax(dim=-1)
    p = attn.attn_drop(p)
    o = p @ v  # O: before the head merge
    taps.append((a, o, p))
    x = o.transpose(1, 2).reshape(B, N, D)
    x = getattr(attn, "norm", nn.Identity())(x)
    x = attn.proj(x)
    return attn.proj_drop(x)


def manual_forward(model, images):
    """Returns (logits, [(A_i, O_i, softmax_i)])."""
    taps = []
    x = model.patch_embed(images)
    x = model._pos_embed(x)
    x = model.patch_drop(x)
    x = model.norm_pre(x)
    for blk in model.blocks:
        x = x + blk.drop_path1(blk.ls1(manual_attention(blk.attn, blk.norm1(x), taps)))
        x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
    x = model.norm(x)
    return model.forward_head(x), taps


def objective(logits, targets, taps):
    ce = F.cross_entropy(logits, targets.long(), reduction="mean")
    reg_a = sum(a.pow(2).mean() for a, _, _ in taps)
    reg_o = sum(o.pow(2).mean() for _, o, _ in taps)
    return ce + COEF_A * reg_a + COEF_O * reg_o


def run_with_grads(model, images, targets, forward=None):
    """Forward + backward; returns logits, taps, J and {name: grad} (grads of images and params).
    `forward` (default `manual_forward`) returns (logits, [(A_i, O_i, P_i)])."""
    model.zero_grad(set_to_none=True)
    images = images.detach().clone().requires_grad_(True)
    logits, taps = (forward or manual_forward)(model, images)
    j = objective(logits, targets, taps)
    j.backward()
    grads = {"images": images.grad.detach().clone()}
    for name, p in model.named_parameters():
        if p.grad is None:
            raise RuntimeError(f"no gradient reached {name}")
        grads[name] = p.grad.detach().clone()
    return logits.detach(), [(a.detach(), o.detach(), p.detach()) for a, o, p in taps], j.detach(), grads


def rel_err(x, ref):
    return ((x.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


# ----------------------------------------------------------------------------------------------------
# One model fixture


def config_json(spec):
    c = spec["model_args"]["in_chans"]
    size = spec["model_args"]["img_size"]
    return {
        "architecture": spec["architecture"],
        "num_classes": spec["num_classes"],
        "num_features": spec["model_args"]["embed_dim"],
        "global_pool": "token",
        "model_args": dict(spec["model_args"]),
        "pretrained_cfg": {
            "input_size": [c, size, size],
            "mean": list(spec["mean"]),
            "std": list(spec["std"]),
            "crop_pct": 0.9,
            "interpolation": "bicubic",
            "num_classes": spec["num_classes"],
        },
    }


def make_model_fixture(name, spec, out_dir):
    seed = seed_of(name)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(spec)
    randomize_(model, gen)
    if spec["f16"]:
        # The fixture must be exact for a loader that widens F16 to F32: compute from rounded weights.
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().float())

    state = model.state_dict()
    params = dict(model.named_parameters())
    assert list(state) == list(params), f"state_dict has non-parameter tensors: {set(state) ^ set(params)}"

    ma = spec["model_args"]
    b, c, s = spec["batch"], ma["in_chans"], ma["img_size"]
    images = torch.randn((b, c, s, s), generator=gen)
    targets = torch.randint(0, spec["num_classes"], (b,), generator=gen)

    logits, taps, j, grads = run_with_grads(model, images, targets)

    # The fixture is timm's model: its own eval forward (fused attention) must agree.
    with torch.no_grad():
        ref = model(images)
    diff = (ref - logits).abs().max().item()
    print(f"  logits vs timm model(images): max |diff| = {diff:.2e}")
    assert diff <= 1e-5, f"{name}: manual forward disagrees with timm ({diff})"

    # Float64 cross-check of everything that is written.
    m64 = copy.deepcopy(model).double()
    logits64, taps64, j64, grads64 = run_with_grads(m64, images.double(), targets)
    errs = {"logits": rel_err(logits, logits64), "objective": rel_err(j, j64)}
    errs["attn_logits"] = max(rel_err(a, a64) for (a, _, _), (a64, _, _) in zip(taps, taps64))
    errs["attn_out"] = max(rel_err(o, o64) for (_, o, _), (_, o64, _) in zip(taps, taps64))
    errs["grads"] = max(rel_err(grads[k], grads64[k]) for k in grads)
    worst_grad = max(grads, key=lambda k: rel_err(grads[k], grads64[k]))
    print("  f32 vs f64 (max|diff| / max|ref|): "
          + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()) + f" (worst grad: {worst_grad})")
    assert max(errs.values()) < 1e-3, f"{name}: f32 and f64 disagree: {errs}"

    # Attention statistics: A should have std of order 1..few, softmax clearly non-uniform.
    hd = ma["embed_dim"] // ma["num_heads"]
    for i, (a, _, p) in enumerate(taps):
        n = a.shape[-1]
        print(f"  block {i}: std(A) {a.std().item():.2f}, std(scale*A) {a.std().item() * hd ** -0.5:.2f}, "
              f"softmax max {p.max().item():.3f}, mean row max {p.amax(-1).mean().item():.3f} "
              f"(uniform {1 / n:.3f})")
    zero = [k for k, g in grads.items() if g.abs().max() == 0]
    assert not zero, f"{name}: all-zero gradients for {zero}"
    print(f"  objective {j.item():.6f} (ce part {F.cross_entropy(logits, targets).item():.4f})")

    tensors = {
        "images": images,
        "targets": targets.float(),
        "logits": logits,
    }
    for i, (a, o, _) in enumerate(taps):
        tensors[f"blocks.{i}.attn_logits"] = a
        tensors[f"blocks.{i}.attn_out"] = o
    tensors["objective"] = j.reshape(1)
    for k, g in grads.items():
        tensors[f"grad.{k}"] = g
    tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}

    weight_dtype = torch.float16 if spec["f16"] else torch.float32
    weights = {k: v.detach().to(weight_dtype).contiguous() for k, v in state.items()}

    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config_json(spec), f, indent=2)
        f.write("\n")
    save_file(weights, os.path.join(folder, "model.safetensors"))
    save_file(tensors, os.path.join(folder, "fixture.safetensors"), metadata=with_versions(FIXTURE_METADATA))

    verify_model_fixture(folder)
    return folder


def verify_model_fixture(folder):
    """Rebuild the model from config.json + model.safetensors as a user would; logits must match."""
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    model = timm.create_model(cfg["architecture"], pretrained=False, num_classes=cfg["num_classes"],
                              **cfg["model_args"]).eval()
    weights = {k: v.float() for k, v in load_file(os.path.join(folder, "model.safetensors")).items()}
    model.load_state_dict(weights, strict=True)
    fx = load_file(os.path.join(folder, "fixture.safetensors"))
    with torch.no_grad():
        logits = model(fx["images"])
    diff = (logits - fx["logits"]).abs().max().item()
    assert diff <= 1e-5, f"{folder}: reloaded model disagrees ({diff})"
    grad_names = {k[5:] for k in fx if k.startswith("grad.")}
    assert grad_names == set(weights) | {"images"}, "grad.* names do not match the weights"
    for k, v in weights.items():
        assert fx[f"grad.{k}"].shape == v.shape, k


# ----------------------------------------------------------------------------------------------------
# Hashed fixtures: weights and images from an integer hash, so only outputs need committing

# Every value is a function of (tensor name, element index) that Rust recomputes bit for bit
# (tests/parity.rs, `hashed_tensor`): h = splitmix64(fnv1a64(name) + index) (wrapping u64),
# r = (h >> 40) * 2^-23 - 1 (exact in f32: a multiple of 2^-23 in [-1, 1)), value = f32(r * a) + c in
# f32 arithmetic with a = f32(scale) and c per the rule below (round to nearest, no fused multiply-add).
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
U64 = (1 << 64) - 1


def fnv1a64(data):
    h = FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & U64
    return h


def splitmix64(x):
    """splitmix64's finaliser on a uint64 array (numpy wraps modulo 2^64)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def hashed_bits(name, n):
    with np.errstate(over="ignore"):
        return splitmix64(np.uint64(fnv1a64(name.encode())) + np.arange(n, dtype=np.uint64))


def hashed_values(name, shape, scale, offset=0.0):
    """Uniform in [offset - scale, offset + scale): std scale / sqrt(3)."""
    n = int(np.prod(shape))
    r = (hashed_bits(name, n) >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -23) - np.float32(1.0)
    return (r * np.float32(scale) + np.float32(offset)).reshape(shape)


def hashed_rule(name, shape):
    """(scale, offset) of a parameter, uniform with spreads of the order of `randomize_`'s normals (no
    zero biases or unit LayerNorm weights, which would hide bugs): Linear/conv weights std 1/sqrt(fan_in)
    (scale sqrt(3 / fan_in): exactly 0.125 and 0.0625 for DeiT-Tiny's fan-ins 192 and 768), biases and
    LayerNorm biases scale 0.125 (std 0.072), LayerNorm weights 1 +- 0.25, cls/dist tokens and pos_embed
    scale 1 (std 0.58); images scale sqrt(3) (std 1)."""
    if name in ("cls_token", "dist_token", "pos_embed"):
        return 1.0, 0.0
    if "norm" in name:
        return (0.25, 1.0) if name.endswith(".weight") else (0.125, 0.0)
    if name.endswith(".weight"):
        fan_in = int(np.prod(shape[1:]))
        return math.sqrt(3.0 / fan_in), 0.0
    if name.endswith(".bias"):
        return 0.125, 0.0
    raise RuntimeError(f"no hashed rule for {name}")


def fingerprint(name, values):
    """Order-independent digest of named f32 tensors that Rust recomputes: per tensor the wrapping sum
    of splitmix64(bits_i ^ (i << 32)), then splitmix64(fnv1a64(name) + that) summed over tensors."""
    bits = np.ascontiguousarray(values, dtype=np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
    with np.errstate(over="ignore"):
        idx = np.arange(bits.size, dtype=np.uint64) << np.uint64(32)
        per = np.uint64(splitmix64(bits ^ idx).sum(dtype=np.uint64))
        return int(splitmix64(np.array([np.uint64(fnv1a64(name.encode())) + per]))[0])


def fingerprint_all(tensors):
    return sum(fingerprint(k, v) for k, v in tensors.items()) & U64


def hashed_weights(model):
    out = {}
    for name, p in model.state_dict().items():
        scale, offset = hashed_rule(name, tuple(p.shape))
        out[name] = hashed_values(name, tuple(p.shape), scale, offset)
    return out


def make_hashed_fixture(name, spec, out_dir):
    """A model fixture whose weights and images are hashed (not stored). Holds config.json and
    fixture.safetensors only, with the outputs and gradients listed in spec["stored"]."""
    model = build_model(spec)
    weights = hashed_weights(model)
    with torch.no_grad():
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    ma = spec["model_args"]
    b, c, s = spec["batch"], ma["in_chans"], ma["img_size"]
    images = hashed_values("images", (b, c, s, s), math.sqrt(3.0))
    targets = hashed_bits("targets", b) % np.uint64(spec["num_classes"])
    images_t = torch.from_numpy(images)
    targets_t = torch.from_numpy(targets.astype(np.int64))

    logits, taps, j, grads = run_with_grads(model, images_t, targets_t)
    with torch.no_grad():
        ref = model(images_t)
    diff = (ref - logits).abs().max().item()
    print(f"  logits vs timm model(images): max |diff| = {diff:.2e}")
    assert diff <= 1e-5, f"{name}: manual forward disagrees with timm ({diff})"

    m64 = copy.deepcopy(model).double()
    logits64, taps64, j64, grads64 = run_with_grads(m64, images_t.double(), targets_t)
    errs = {"logits": rel_err(logits, logits64), "objective": rel_err(j, j64),
            "attn_logits": max(rel_err(a, a64) for (a, _, _), (a64, _, _) in zip(taps, taps64)),
            "attn_out": max(rel_err(o, o64) for (_, o, _), (_, o64, _) in zip(taps, taps64)),
            "grads": max(rel_err(grads[k], grads64[k]) for k in grads)}
    print("  f32 vs f64 (max|diff| / max|ref|): " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
    assert max(errs.values()) < 1e-3, f"{name}: f32 and f64 disagree: {errs}"
    hd = ma["embed_dim"] // ma["num_heads"]
    for i, (a, _, p) in enumerate(taps):
        print(f"  block {i}: std(A) {a.std().item():.2f}, std(scale*A) {a.std().item() * hd ** -0.5:.2f}, "
              f"mean row max of softmax {p.amax(-1).mean().item():.3f} (uniform {1 / a.shape[-1]:.4f})")
    zero = [k for k, g in grads.items() if g.abs().max() == 0]
    assert not zero, f"{name}: all-zero gradients for {zero}"
    print(f"  objective {j.item():.6f} (ce part {F.cross_entropy(logits, targets_t).item():.4f})")

    stored = spec["stored"]
    tensors = {"targets": targets_t.float(), "logits": logits, "objective": j.reshape(1)}
    # Every block's mean(A^2) and mean(O^2) (the objective's terms), also for blocks not stored whole.
    tensors["attn_logits_meansq"] = torch.stack([a.double().pow(2).mean() for a, _, _ in taps])
    tensors["attn_out_meansq"] = torch.stack([o.double().pow(2).mean() for _, o, _ in taps])
    for i in stored["blocks"]:
        a, o, _ = taps[i]
        tensors[f"blocks.{i}.attn_logits"] = a
        tensors[f"blocks.{i}.attn_out"] = o
    tensors["grad.images"] = grads["images"]
    missing = [k for k in stored["grads"] if k not in grads]
    assert not missing, f"{name}: no such parameters {missing}"
    for k in stored["grads"]:
        tensors[f"grad.{k}"] = grads[k]
    tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}

    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    for stale in ("model.safetensors",):  # the former F32 layout of this folder
        if os.path.exists(os.path.join(folder, stale)):
            os.remove(os.path.join(folder, stale))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config_json(spec), f, indent=2)
        f.write("\n")
    metadata = with_versions(FIXTURE_METADATA)
    metadata["weights"] = "hashed (tools/make_fixtures.py, hashed_values)"
    metadata["weights_fingerprint"] = f"{fingerprint_all(weights):016x}"
    metadata["images_fingerprint"] = f"{fingerprint('images', images):016x}"
    save_file(tensors, os.path.join(folder, "fixture.safetensors"), metadata=metadata)
    verify_hashed_fixture(folder)
    return folder


def write_hashed_model(spec, folder):
    """The hashed weights as a timm Hugging Face folder (config.json + F32 model.safetensors): a
    full-size model with fixed random weights for benchmarks (tools/fast_deit.sh); not a fixture."""
    model = build_model(spec)
    weights = hashed_weights(model)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config_json(spec), f, indent=2)
        f.write("\n")
    save_file({k: torch.from_numpy(v) for k, v in weights.items()}, os.path.join(folder, "model.safetensors"))
    print(f"wrote {folder}/model.safetensors (weights fingerprint {fingerprint_all(weights):016x})")


def verify_hashed_fixture(folder):
    """Rebuild the model from config.json and the hash as the Rust test does; logits must match."""
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    model = timm.create_model(cfg["architecture"], pretrained=False, num_classes=cfg["num_classes"],
                              **cfg["model_args"]).eval()
    weights = hashed_weights(model)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    fx = load_file(os.path.join(folder, "fixture.safetensors"))
    with open(os.path.join(folder, "fixture.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        meta = json.loads(f.read(n))["__metadata__"]
    assert meta["weights_fingerprint"] == f"{fingerprint_all(weights):016x}"
    b = fx["targets"].shape[0]
    ma = cfg["model_args"]
    images = hashed_values("images", (b, ma["in_chans"], ma["img_size"], ma["img_size"]), math.sqrt(3.0))
    assert meta["images_fingerprint"] == f"{fingerprint('images', images):016x}"
    with torch.no_grad():
        logits = model(torch.from_numpy(images))
    diff = (logits - fx["logits"]).abs().max().item()
    assert diff <= 1e-5, f"{folder}: rebuilt model disagrees ({diff})"


# ----------------------------------------------------------------------------------------------------
# Quantized-model fixtures: MaskAQ's Q (W/A fake quantization, LSQ activations, min-max weights)

QUANT_FIXTURES = {
    "quant_tiny_vit_w4a4": dict(model="tiny_vit", wbits=4, abits=4),
    "quant_tiny_vit_w3a3": dict(model="tiny_vit", wbits=3, abits=3),
    "quant_tiny_deit_distilled_w4a4": dict(model="tiny_deit_distilled", wbits=4, abits=4),
}
LSQ_G_SCALE = 1.0  # every activation quantizer inside blocks (MaskAQ's recursion passes the default)
LSQ_G_SCALE_HEAD = 0.01  # only the top-level head / head_dist get the CLI value
HEAD_SITES = ("head.act", "head_dist.act")
TIE_EPS = 1e-4
WQ_FIXTURE_WEIGHTS = ("blocks.0.attn.qkv.weight", "patch_embed.proj.weight")


def round_pass(y):
    """round(y) (half to even) forward, identity gradient. The value is exactly y.round()."""
    return y + (y.round() - y).detach()


def grad_scale(x, g):
    """Exactly x forward (x + 0), gradient multiplied by g."""
    xg = x * g
    return x.detach() + (xg - xg.detach())


def take_tie_flips(v, codes, ref):
    """Cross-check runs only: where `codes` (rounded v) differ from the reference run's codes only because
    v sits within TIE_EPS of a rounding boundary, take the reference code. Returns (codes, count)."""
    if ref is None:
        return codes, 0
    ref = ref.to(codes.dtype)
    flip = (codes != ref) & ((v - ref).abs() <= 0.5 + TIE_EPS)
    return torch.where(flip, ref, codes), int(flip.sum())


def quantize_weight(w, bits, ref=None):
    """Symmetric per-output-channel min-max fake quantization (spec section 3), recomputed per call:
    m_c = max(|min_c W|, |max_c W|), s_c = (2^b - 1) / max(2 m_c, 1e-8),
    W_hat = clamp(round(s_c W), -2^(b-1), 2^(b-1) - 1) / s_c; plain STE (identity gradient to W).
    Note s_c * (the row's extreme element) is (2^b - 1) / 2 in exact arithmetic, a rounding tie: it
    decides between -2^(b-1) and -2^(b-1) + 1 when the extreme is negative.
    Returns (W_hat, integer codes, number of codes taken from `ref` at a tie, number of near-ties)."""
    wd = w.detach()
    rows = wd.reshape(wd.shape[0], -1)
    m = torch.maximum(rows.min(dim=1).values.abs(), rows.max(dim=1).values.abs())
    s = torch.full_like(m, 2.0 ** bits - 1) / torch.clamp(2 * m, min=1e-8)
    s = s.reshape((-1,) + (1,) * (w.dim() - 1))
    v = s * wd
    lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    codes = torch.clamp(torch.round(v), lo, hi)
    codes, forced = take_tie_flips(v, codes, ref)
    w_hat = codes / s
    # near-ties whose two candidate codes stay different after the clamp
    ties = int((((v - v.floor() - 0.5).abs() <= TIE_EPS)
                & (torch.clamp(v.floor(), lo, hi) != torch.clamp(v.floor() + 1, lo, hi))).sum())
    return w_hat + (w - wd), codes, forced, ties  # value W_hat (+0), gradient identity


class QuantSim:
    """Q's fake quantization. Activation quantizers ("QuantAct_lsq", per tensor) are created lazily,
    each on the first tensor it sees (spec 1.4 / 3); every forward records the integer codes, the
    number of rounding near-ties and of near-clamp-bound elements per site. wbits/abits None: FP.
    ref_codes (cross-check runs): another run's codes, taken wherever only a rounding near-tie differs."""

    def __init__(self, wbits, abits, ref_codes=None):
        self.wbits, self.abits, self.ref_codes = wbits, abits, ref_codes
        self.quantizers = {}  # site -> dict(alpha, zero_point: leaf [1]; signed; qn; qp; g)
        self.reset_records()

    def reset_records(self):
        self.codes, self.ties, self.edges, self.wq, self.forced, self.wties = {}, {}, {}, {}, {}, {}

    def _ref(self, name):
        return None if self.ref_codes is None else self.ref_codes[name]

    def with_dtype(self, dtype, ref_codes=None):
        """A copy with the same (already initialised) quantizers, values cast to dtype."""
        other = QuantSim(self.wbits, self.abits, ref_codes)
        for site, q in self.quantizers.items():
            other.quantizers[site] = dict(q, alpha=q["alpha"].detach().to(dtype).requires_grad_(True),
                                          zero_point=q["zero_point"].detach().to(dtype).requires_grad_(True))
        return other

    def weight(self, name, w):
        if self.wbits is None:
            return w
        w_hat, codes, self.forced[name], self.wties[name] = quantize_weight(w, self.wbits, self._ref(name))
        self.codes[name] = codes
        self.wq[name] = w_hat.detach()
        return w_hat

    def _init(self, site, x0):
        b = self.abits
        signed = bool(x0.min() < 1e-5)
        qn, qp = (-2 ** (b - 1), 2 ** (b - 1) - 1) if signed else (0, 2 ** b - 1)
        alpha = (2 * x0.abs().mean() / math.sqrt(qp)).reshape(1)
        zero_point = 0.1 * (x0.min() - alpha * qp)  # x units, used as integer units (as MaskAQ does)
        g = (LSQ_G_SCALE_HEAD if site in HEAD_SITES else LSQ_G_SCALE) / math.sqrt(x0.numel() * qp)
        self.quantizers[site] = dict(alpha=alpha.detach().clone().requires_grad_(True),
                                     zero_point=zero_point.detach().clone().requires_grad_(True),
                                     signed=signed, qn=qn, qp=qp, g=g)

    def activation(self, site, x):
        if self.abits is None:
            return x
        if site not in self.quantizers:
            self._init(site, x.detach())
        q = self.quantizers[site]
        alpha = grad_scale(q["alpha"], q["g"])
        zero_point = round_pass(q["zero_point"])  # no gradient scaling on z
        u = x / alpha + zero_point
        v = torch.clamp(u, q["qn"], q["qp"])
        ud, vd = u.detach(), v.detach()
        if self.ref_codes is None:
            x_int = round_pass(v)
        else:
            r, self.forced[site] = take_tie_flips(vd, vd.round(), self._ref(site))
            x_int = v + (r - vd)
        self.ties[site] = int(((vd - vd.floor() - 0.5).abs() <= TIE_EPS).sum())
        self.edges[site] = int((((ud - q["qn"]).abs() <= TIE_EPS) | ((ud - q["qp"]).abs() <= TIE_EPS)).sum())
        self.codes[site] = x_int.detach()
        return (x_int - zero_point) * alpha


def check_plain_vit(model):
    """quant_forward spells out only what these models use; fail loudly on anything else."""
    ident = lambda m: isinstance(m, nn.Identity) or (isinstance(m, nn.Dropout) and m.p == 0.0)
    pe = model.patch_embed
    assert pe.flatten and ident(pe.norm) and not getattr(pe, "dynamic_img_pad", False)
    assert model.global_pool == "token" and getattr(model, "attn_pool", None) is None
    assert all(ident(m) for m in (model.patch_drop, model.norm_pre, model.fc_norm, model.head_drop))
    for blk in model.blocks:
        a = blk.attn
        assert all(ident(m) for m in (blk.ls1, blk.ls2, blk.drop_path1, blk.drop_path2, a.q_norm, a.k_norm,
                                      a.attn_drop, a.proj_drop, getattr(a, "norm", nn.Identity()),
                                      blk.mlp.drop1, blk.mlp.norm, blk.mlp.drop2))
        assert isinstance(blk.mlp.act, nn.GELU) and blk.mlp.act.approximate == "none"


def quant_linear(lin, x, name, sim):
    x = sim.activation(f"{name}.act", x)
    return F.linear(x, sim.weight(f"{name}.weight", lin.weight), lin.bias)


def quant_attention(attn, x, prefix, sim, taps):
    B, N, D = x.shape
    H = attn.num_heads
    hd = D // H
    qkv = quant_linear(attn.qkv, x, f"{prefix}.qkv", sim).reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    a = sim.activation(f"{prefix}.matmul1.act_a", q) @ sim.activation(f"{prefix}.matmul1.act_b", k.transpose(-2, -1))
    p = a.mul(attn.scale).softmax(dim=-1)  # the scale, softmax stay FP
    o = sim.activation(f"{prefix}.matmul2.act_a", p) @ sim.activation(f"{prefix}.matmul2.act_b", v)
    taps.append((a, o, p))
    x = o.transpose(1, 2).reshape(B, N, D)
    return quant_linear(attn.proj, x, f"{prefix}.proj", sim)


def quant_forward(model, images, sim):
    """Q's forward: P's graph with fake quantization at every Linear's input and weight, at both operands
    of both attention matmuls, and at the patch_embed weight (its input image stays FP).
    Returns (logits, [(A_i, O_i, softmax_i)]) like manual_forward."""
    check_plain_vit(model)
    proj = model.patch_embed.proj
    w = sim.weight("patch_embed.proj.weight", proj.weight)
    x = F.conv2d(images, w, proj.bias, proj.stride, proj.padding, proj.dilation, proj.groups)
    x = model._pos_embed(x.flatten(2).transpose(1, 2))
    taps = []
    for i, blk in enumerate(model.blocks):
        x = x + quant_attention(blk.attn, blk.norm1(x), f"blocks.{i}.attn", sim, taps)
        h = quant_linear(blk.mlp.fc1, blk.norm2(x), f"blocks.{i}.mlp.fc1", sim)
        x = x + quant_linear(blk.mlp.fc2, blk.mlp.act(h), f"blocks.{i}.mlp.fc2", sim)
    x = model.norm(x)
    logits = quant_linear(model.head, x[:, 0], "head", sim)
    if getattr(model, "head_dist", None) is not None:  # distilled DeiT at inference: mean of both heads
        logits = (logits + quant_linear(model.head_dist, x[:, 1], "head_dist", sim)) / 2
    return logits, taps


def run_quant_with_grads(model, images, targets, sim, forward=None):
    """Forward + backward through Q; grads of images, model parameters and every quantizer's alpha / z.
    `forward`: Q's forward (default `quant_forward`, the ViT; tools/make_swin_fixtures.py passes Swin's)."""
    forward = forward or quant_forward
    model.zero_grad(set_to_none=True)
    for q in sim.quantizers.values():
        q["alpha"].grad = q["zero_point"].grad = None
    sim.reset_records()
    images = images.detach().clone().requires_grad_(True)
    logits, taps = forward(model, images, sim)
    j = objective(logits, targets, taps)
    j.backward()
    grads = {"images": images.grad.detach().clone()}
    for name, p in model.named_parameters():
        if p.grad is None:
            raise RuntimeError(f"no gradient reached {name}")
        grads[name] = p.grad.detach().clone()
    for site, q in sim.quantizers.items():
        for key in ("alpha", "zero_point"):
            g = q[key].grad
            grads[f"{site}.{key}"] = torch.zeros_like(q[key]) if g is None else g.detach().clone()
    return logits.detach(), [(a.detach(), o.detach(), p.detach()) for a, o, p in taps], j.detach(), grads


def quant_metadata(qspec):
    meta = dict(FIXTURE_METADATA)
    meta.update(model=qspec["model"], wbits=str(qspec["wbits"]), abits=str(qspec["abits"]),
                lsq_g_scale_head=str(LSQ_G_SCALE_HEAD))
    return meta


def make_quant_fixture(name, qspec, out_dir):
    """Q of an existing FP fixture (same weights, images, targets, read from <out>/<model>/).
    Other architectures (tools/make_swin_fixtures.py) give qspec "build" (the FP model, untrained),
    "forward" (Q's forward), "wq" (weights whose W_hat is stored) and "sites" (the expected site names)."""
    base = os.path.join(out_dir, qspec["model"])
    if not os.path.exists(os.path.join(base, "fixture.safetensors")):
        raise RuntimeError(f"{name} needs {base}/ (write it first: --only {qspec['model']})")
    quant_forward = qspec.get("forward", globals()["quant_forward"])
    model = qspec["build"]() if "build" in qspec else build_model(MODELS[qspec["model"]])
    model.load_state_dict({k: v.float() for k, v in load_file(os.path.join(base, "model.safetensors")).items()},
                          strict=True)
    fx = load_file(os.path.join(base, "fixture.safetensors"))
    images, targets = fx["images"], fx["targets"]

    # Structure check: Q with quantization off is P (the FP fixture's logits).
    with torch.no_grad():
        fp_logits, _ = quant_forward(model, images, QuantSim(None, None))
    diff = (fp_logits - fx["logits"]).abs().max().item()
    print(f"  quant_forward with quantization off vs FP fixture logits: max |diff| = {diff:.2e}")
    assert diff <= 1e-5, f"{name}: quant_forward's graph differs from P ({diff})"

    # First forward initialises every activation quantizer on the tensor it sees (upstream already
    # quantized, as in MaskAQ where init and quantization happen in the same call).
    sim = QuantSim(qspec["wbits"], qspec["abits"])
    with torch.no_grad():
        init_logits, _ = quant_forward(model, images, sim)
    sites = list(sim.quantizers)
    # Second forward + backward with alpha / z fixed: that is what is recorded.
    logits, taps, j, grads = run_quant_with_grads(model, images, targets, sim, quant_forward)
    assert torch.equal(init_logits, logits), f"{name}: second forward differs from the init forward"
    ties, edges, wq, wties, codes = dict(sim.ties), dict(sim.edges), dict(sim.wq), dict(sim.wties), dict(sim.codes)

    # Float64 cross-check with the same (f32-initialised) alpha / z. Rounding near-ties may legitimately
    # flip between f32 and f64; there the f64 run takes the f32 code, everything else must agree.
    m64 = copy.deepcopy(model).double()
    sim64 = sim.with_dtype(torch.float64, ref_codes=codes)
    logits64, taps64, j64, grads64 = run_quant_with_grads(m64, images.double(), targets, sim64, quant_forward)
    mismatch = {k: int((c.double() != sim64.codes[k]).sum()) for k, c in codes.items()}
    mismatch = {k: n for k, n in mismatch.items() if n}
    forced = {k: n for k, n in sim64.forced.items() if n}
    errs = {"logits": rel_err(logits, logits64), "objective": rel_err(j, j64)}
    errs["attn_logits"] = max(rel_err(a, a64) for (a, _, _), (a64, _, _) in zip(taps, taps64))
    errs["attn_out"] = max(rel_err(o, o64) for (_, o, _), (_, o64, _) in zip(taps, taps64))
    pgrads = [k for k in grads if not k.endswith((".alpha", ".zero_point"))]
    qgrads = [k for k in grads if k.endswith((".alpha", ".zero_point"))]
    errs["grads"] = max(rel_err(grads[k], grads64[k]) for k in pgrads)
    # One scale for all alpha / z gradients: a z gradient is exactly 0 where no element of its site is
    # clamped, and its f32 value there is the residue of sum(g*alpha) - sum(g*alpha) (about 1e-8).
    qscale = max(grads64[k].abs().max().item() for k in qgrads)
    errs["quantizer grads"] = max((grads[k].double() - grads64[k]).abs().max().item() for k in qgrads) / qscale
    worst = max(pgrads, key=lambda k: rel_err(grads[k], grads64[k]))
    print("  f32 vs f64, same alpha/z, f32 codes at near-ties (max|diff| / max|ref|): "
          + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()) + f" (worst grad: {worst})")
    print(f"  near-tie codes the f64 run rounds the other way: {sum(forced.values())} {forced if forced else ''}")
    assert not mismatch, f"{name}: f32 and f64 codes differ away from rounding ties: {mismatch}"
    assert errs["logits"] <= 1e-5, f"{name}: f32 and f64 logits disagree: {errs}"
    assert max(errs.values()) < 1e-3, f"{name}: f32 and f64 disagree: {errs}"

    # The initialisation itself in float64 (its own first forward, f32 codes at near-ties).
    sim64i = QuantSim(qspec["wbits"], qspec["abits"], ref_codes=codes)
    with torch.no_grad():
        quant_forward(m64, images.double(), sim64i)
    for key in ("alpha", "zero_point"):
        e = max(abs(sim.quantizers[s][key].item() - sim64i.quantizers[s][key].item())
                / max(abs(sim64i.quantizers[s][key].item()), 1e-30) for s in sites)
        print(f"  init {key}: f32 vs f64 init max relative diff {e:.1e}")
        assert e < 1e-5, f"{name}: f32 and f64 initialisation disagree ({key}: {e})"
    assert all(sim.quantizers[s]["signed"] == sim64i.quantizers[s]["signed"] for s in sites)
    print(f"  weight near-ties (codes differ after the clamp): {sum(wties.values())} "
          f"({', '.join(f'{k} {n}' for k, n in wties.items() if n)})")

    # Two places where the MaskAQ code's arithmetic can differ from the spec's formula by an ulp:
    # grad_scale as y - y*g + y*g, and s_c computed as reciprocal(2 m_c) * (2^b - 1).
    gs_ulps = sum(int((q["alpha"].detach() - q["alpha"].detach() * q["g"] + q["alpha"].detach() * q["g"]
                       != q["alpha"].detach()).item()) for q in sim.quantizers.values())
    w_diff = c_diff = 0
    for wname in [k for k in codes if k.endswith(".weight")]:
        wt = dict(model.named_parameters())[wname].detach()
        rows = wt.reshape(wt.shape[0], -1)
        m = torch.maximum(rows.min(dim=1).values.abs(), rows.max(dim=1).values.abs())
        s_alt = (torch.clamp(2 * m, min=1e-8).reciprocal() * (2 ** qspec["wbits"] - 1)).reshape(
            (-1,) + (1,) * (wt.dim() - 1))
        c_alt = torch.clamp(torch.round(s_alt * wt), -2 ** (qspec["wbits"] - 1), 2 ** (qspec["wbits"] - 1) - 1)
        w_diff += int((c_alt / s_alt != wq[wname]).sum())
        c_diff += int((c_alt != codes[wname]).sum())
    print(f"  MaskAQ-code arithmetic variants: grad_scale value != alpha at {gs_ulps}/{len(sites)} quantizers; "
          f"reciprocal-form s_c changes {w_diff} W_hat elements ({c_diff} codes)")

    print(f"  {'quantizer':32s} {'signed':>6s} {'alpha':>11s} {'z':>11s} {'round(z)':>8s} {'g':>10s} "
          f"{'ties':>4s} {'edge':>4s} {'numel':>6s}")
    for s in sites:
        q = sim.quantizers[s]
        print(f"  {s:32s} {int(q['signed']):6d} {q['alpha'].item():11.6f} {q['zero_point'].item():11.6f} "
              f"{q['zero_point'].round().item():8.0f} {q['g']:10.3e} {ties[s]:4d} {edges[s]:4d} "
              f"{codes[s].numel():6d}")
    print(f"  total rounding near-ties (|frac - 0.5| <= {TIE_EPS}): {sum(ties.values())}, "
          f"near clamp bounds: {sum(edges.values())}; objective {j.item():.6f}")
    zero = [k for k in pgrads if grads[k].abs().max() == 0]
    assert not zero, f"{name}: all-zero gradients for {zero}"
    zero_q = [k for k in qgrads if grads[k].abs().max() == 0]
    if zero_q:
        print(f"  note: zero quantizer gradients (no clamped element / no signal): {zero_q}")

    tensors = {"images": images, "targets": targets, "logits": logits}
    for i, (a, o, _) in enumerate(taps):
        tensors[f"blocks.{i}.attn_logits"] = a
        tensors[f"blocks.{i}.attn_out"] = o
    tensors["objective"] = j.reshape(1)
    for k in pgrads:
        tensors[f"grad.{k}"] = grads[k]
    for s in sites:
        q = sim.quantizers[s]
        tensors[f"{s}.alpha"] = q["alpha"].detach()
        tensors[f"{s}.zero_point"] = q["zero_point"].detach()
        tensors[f"{s}.signed"] = torch.tensor([1.0 if q["signed"] else 0.0])
        tensors[f"{s}.g"] = torch.tensor([q["g"]], dtype=torch.float64)
        tensors[f"{s}.ties"] = torch.tensor([float(ties[s])])
        tensors[f"grad.{s}.alpha"] = grads[f"{s}.alpha"]
        tensors[f"grad.{s}.zero_point"] = grads[f"{s}.zero_point"]
    for wname in qspec.get("wq", WQ_FIXTURE_WEIGHTS):
        tensors[f"wq.{wname}"] = wq[wname]
    tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}

    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    save_file(tensors, os.path.join(folder, "fixture.safetensors"), metadata=with_versions(quant_metadata(qspec)))
    verify_quant_fixture(folder, qspec, out_dir)
    return folder, ties, wties


def verify_quant_fixture(folder, qspec, out_dir):
    base = os.path.join(out_dir, qspec["model"])
    fx = load_file(os.path.join(folder, "fixture.safetensors"))
    fp = load_file(os.path.join(base, "fixture.safetensors"))
    weights = load_file(os.path.join(base, "model.safetensors"))
    assert torch.equal(fx["images"], fp["images"]) and torch.equal(fx["targets"], fp["targets"])
    sites = {k[:-len(".alpha")] for k in fx if k.endswith(".alpha") and not k.startswith("grad.")}
    if "sites" in qspec:
        expect = set(qspec["sites"])
    else:
        depth = MODELS[qspec["model"]]["model_args"]["depth"]
        expect = {"head.act"} | ({"head_dist.act"} if "head_dist.weight" in weights else set())
        for i in range(depth):
            expect |= {f"blocks.{i}.attn.{s}" for s in ("qkv.act", "proj.act", "matmul1.act_a", "matmul1.act_b",
                                                        "matmul2.act_a", "matmul2.act_b")}
            expect |= {f"blocks.{i}.mlp.fc1.act", f"blocks.{i}.mlp.fc2.act"}
    assert sites == expect, sites ^ expect
    grad_names = {k[5:] for k in fx if k.startswith("grad.")}
    assert grad_names == (set(weights) | {"images"} | {f"{s}.{p}" for s in sites for p in ("alpha", "zero_point")})
    for k, v in weights.items():
        assert fx[f"grad.{k}"].shape == v.shape, k
    for wname in qspec.get("wq", WQ_FIXTURE_WEIGHTS):
        assert fx[f"wq.{wname}"].shape == weights[wname].shape


# ----------------------------------------------------------------------------------------------------
# Preprocessing fixture


def smooth_image(rng, mode, width, height):
    """Seeded low-frequency content: a few random sinusoids plus a gradient per channel, uint8."""
    channels = 3 if mode == "RGB" else 1
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x / width, y / height
    planes = []
    for _ in range(channels):
        f = rng.uniform(-0.3, 0.3) * (u - 0.5) + rng.uniform(-0.3, 0.3) * (v - 0.5)
        for _ in range(4):
            fx, fy = rng.uniform(0.0, 3.0, size=2)
            phase = rng.uniform(0.0, 2.0 * math.pi)
            amp = rng.uniform(0.2, 0.6)
            f = f + amp * np.sin(2.0 * math.pi * (fx * u + fy * v) + phase)
        planes.append(np.clip(np.rint(255.0 * (0.5 + 0.5 * np.tanh(f))), 0, 255).astype(np.uint8))
    arr = np.stack(planes, axis=-1) if channels == 3 else planes[0]
    return Image.fromarray(arr, mode=mode)


def make_preprocess_fixture(out_dir):
    folder = os.path.join(out_dir, "preprocess")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.Generator(np.random.PCG64(seed_of("preprocess")))
    vers = versions()
    metadata = {f"{k}_version": v for k, v in vers.items()}
    metadata["crop_pct"] = str(PREPROCESS_CROP_PCT)
    metadata["interpolation"] = PREPROCESS_INTERPOLATION
    metadata["note"] = (
        "timm eval transform on the PIL image read from img{k}.png: Resize(shorter side to "
        "floor(size / crop_pct), longer side floor(new_short * long / short)) is PIL's bicubic resize "
        "(a = -0.5, support widened by the scale factor when shrinking) and is rounded to uint8; then "
        "CenterCrop (top = round((h - size) / 2), left likewise), ToTensor (/255) and Normalize. "
        "width/height are the PNG's size before the transform.")
    tensors = {}
    for key, mode, w, h, t in PREPROCESS_IMAGES:
        path = os.path.join(folder, f"{key}.png")
        smooth_image(rng, mode, w, h).save(path, format="PNG")
        transform = timm.data.create_transform(
            input_size=t["input_size"], interpolation=PREPROCESS_INTERPOLATION, crop_pct=PREPROCESS_CROP_PCT,
            mean=t["mean"], std=t["std"], is_training=False)
        with Image.open(path) as img:
            img.load()
            assert img.mode == mode and img.size == (w, h)
            out = transform(img)
        assert tuple(out.shape) == tuple(t["input_size"]), (key, out.shape)
        tensors[key] = out.float().contiguous()
        metadata[f"{key}.file"] = f"{key}.png"
        metadata[f"{key}.mode"] = mode
        metadata[f"{key}.width"] = str(w)
        metadata[f"{key}.height"] = str(h)
        metadata[f"{key}.input_size"] = json.dumps(list(t["input_size"]))
        metadata[f"{key}.mean"] = json.dumps(list(t["mean"]))
        metadata[f"{key}.std"] = json.dumps(list(t["std"]))
        metadata[f"{key}.transform"] = repr(transform)
        print(f"  {key}.png {mode} {w}x{h} (WxH) -> {list(out.shape)}, range [{out.min():.3f}, {out.max():.3f}]")
    save_file(tensors, os.path.join(folder, "preprocess.safetensors"), metadata=metadata)
    print("  transform (RGB):\n    " + metadata["img0.transform"].replace("\n", "\n    "))
    return folder


# ----------------------------------------------------------------------------------------------------
# Loss-term fixture: MaskAQ's objectives (docs/method.md §1.2, 1.3, 2) on random tensors.
# Each term is a plain function of its inputs; the reference is computed in float64 with autograd and
# stored as F32, and a float32 rerun of the same functions must agree to about 1e-5.

OBJ_DIMS = dict(L=2, B=2, H=2, G=9, prefix=1, d=8, C=7, image=12)
OBJ_SSIM_C1 = 0.01 ** 2
OBJ_SSIM_C2 = 0.03 ** 2
OBJ_SSIM_MINMAX_EPS = 1e-8
OBJ_ENT_SUBSAMPLE = 64
OBJ_ENT_NORM_EPS = 1e-6
OBJ_ENT_VAR_EPS = 1e-8
OBJ_MASK_RATIO = 0.3
OBJ_MASK_DROP_PROB = 0.3
OBJ_ATT_MASK_P = 0.3
OBJ_ATT_EPS = 1e-8
OBJ_KD_T = 5.0
OBJ_HD_PROPORTION = 0.1
OBJ_HD_WEIGHT_HIGH = 2.0
OBJ_HD_WEIGHT_LOW = 1.0
OBJ_HD_EPS = 1e-6
OBJ_HD_C2 = 0.03 ** 2


def obj_ssim(a, prefix):
    """Spec 2.1, MimiQ inter-head similarity. a [L,B,H,N,N] raw logits -> mean (1 - ssim^2) over (L, B*np, H, H).

    Per (l, b, query patch q, head h) the key-patch row a[l,b,h,prefix+q,prefix:] (length np = G*G, the G x G
    map flattened) is min-max normalised; SSIM is one global window with population statistics, so the
    map's 2-D layout does not enter. Every ordered head pair counts, the diagonal h = h' included.
    """
    s = a[:, :, :, prefix:, prefix:].transpose(2, 3)  # L,B,np(query),H,np(key)
    lo = s.amin(-1, keepdim=True)
    hi = s.amax(-1, keepdim=True)
    s = (s - lo) / (hi - lo + OBJ_SSIM_MINMAX_EPS)
    mu = s.mean(-1)  # L,B,np,H
    var = (s * s).mean(-1) - mu * mu
    cov = (s[..., :, None, :] * s[..., None, :, :]).mean(-1) - mu[..., :, None] * mu[..., None, :]  # L,B,np,H,H
    mu_h, mu_g = mu[..., :, None], mu[..., None, :]
    var_h, var_g = var[..., :, None], var[..., None, :]
    ssim = ((2 * mu_h * mu_g + OBJ_SSIM_C1) * (2 * cov + OBJ_SSIM_C2)) / (
        (mu_h * mu_h + mu_g * mu_g + OBJ_SSIM_C1) * (var_h + var_g + OBJ_SSIM_C2))
    return (1 - ssim * ssim).mean()


def obj_entropy(a, subset, prefix):
    """Spec 2.2. a [L,B,H,N,N], subset [L,B,k] long (patch-row indices) -> L_ent = -mean_{l,b} h."""
    v = a.mean(2)[:, :, prefix:, prefix:]  # L,B,np,np: head-averaged, query patch rows x key patch cols
    hs = []
    for l in range(v.shape[0]):
        for b in range(v.shape[1]):
            x = v[l, b][subset[l, b]]  # k x np
            x = x / x.norm(dim=-1, keepdim=True).clamp_min(OBJ_ENT_NORM_EPS)
            sims = (x @ x.t()).reshape(-1)  # k*k cosine similarities, diagonal included
            var = ((sims - sims.mean()) ** 2).mean() + OBJ_ENT_VAR_EPS  # population variance
            hs.append(0.5 * (math.log(2 * math.pi * math.e) + torch.log(var)))
    return -torch.stack(hs).mean()


def obj_cls_mean(a, prefix):
    """Spec 2.3: CLS-query logits to each patch, averaged over all layers and heads. [L,B,H,N,N] -> [B,np]."""
    return a.mean(0).mean(1)[:, 0, prefix:]


def obj_topk_mask(c, ratio):
    """Spec 2.3 deterministic part: 1 on the top k = max(1, int(np * ratio)) entries of each row of c."""
    k = max(1, int(c.shape[-1] * ratio))
    idx = torch.topk(c, k, dim=-1).indices
    return torch.zeros_like(c).scatter_(-1, idx, 1.0), k


def obj_att(a_p, a_q, mask, prefix):
    """Spec 2.4: (1/L) sum_l sum_{b,j} |mean_h A_P - mean_h A_Q| (CLS row, patch cols) * M / (sum M + 1e-8)."""
    dp = a_p.mean(2)[:, :, 0, prefix:]  # L,B,np
    dq = a_q.mean(2)[:, :, 0, prefix:]
    per_layer = ((dp - dq).abs() * mask).sum((1, 2)) / (mask.sum() + OBJ_ATT_EPS)
    return per_layer.sum() / a_p.shape[0]


def obj_tv(x):
    """Spec 2.6 TV on the whole [B,3,H,W] tensor, Frobenius norms (not squared)."""
    def fro(t):
        return (t * t).sum().sqrt()
    dx = x[..., :, 1:] - x[..., :, :-1]
    dy = x[..., 1:, :] - x[..., :-1, :]
    d1 = x[..., 1:, 1:] - x[..., :-1, :-1]   # down-right neighbour
    d2 = x[..., 1:, :-1] - x[..., :-1, 1:]   # down-left neighbour
    return fro(dx) + fro(dy) + fro(d1) / math.sqrt(2.0) + fro(d2) / math.sqrt(2.0)


def obj_ce(logits, labels):
    """Cross-entropy, mean over the batch; labels hold class indices."""
    logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    return -logp.gather(-1, labels[:, None]).mean()


def obj_kd(logits_q, logits_p, t):
    """Spec 1.3: KL_batchmean(log_softmax(zQ/T), softmax(zP/T)) * T^2; zP is a constant (teacher)."""
    logq = logits_q / t - torch.logsumexp(logits_q / t, dim=-1, keepdim=True)
    logp = logits_p / t - torch.logsumexp(logits_p / t, dim=-1, keepdim=True)
    p = logp.exp()
    return (p * (logp - logq)).sum() / logits_q.shape[0] * (t * t)


def obj_hd_weights(o_t, prefix):
    """Spec 2.5 token weights from the teacher: imp = mean_h mean_d |O_P| over patch tokens, top
    k = max(1, round(np * 0.1)) (Python round, half to even) per (l, b) get 2.0, the rest 1.0. -> [L,B,np], k."""
    imp = o_t[:, :, :, prefix:, :].abs().mean(-1).mean(2)  # L,B,np
    k = max(1, int(round(imp.shape[-1] * OBJ_HD_PROPORTION)))
    idx = torch.topk(imp, k, dim=-1).indices
    mk = torch.zeros_like(imp).scatter_(-1, idx, 1.0)
    return mk * (OBJ_HD_WEIGHT_HIGH - OBJ_HD_WEIGHT_LOW) + OBJ_HD_WEIGHT_LOW, k


def obj_hd(o_t, o_q, w, prefix):
    """Spec 2.5 mask-weighted contrast-structure SSIM over the patch-token axis, per (l, b, d-channel, head).

    With w' = w + 1e-6 ("w+1e-6 in means"):
      mu_t = sum w' t / sum w',  s_t = sum w' t^2 / sum w' - mu_t^2   (same for q)
      s_tq = sum w t q / (sum w + 1e-6) - mu_t mu_q                  (plain w here)
      ssim = (2 s_tq + C2) / ((s_t + s_q + C2) + 1e-6)
    L_hd = 1 - mean ssim.
    """
    t = o_t[:, :, :, prefix:, :].permute(0, 1, 4, 2, 3)  # L,B,d,H,np
    q = o_q[:, :, :, prefix:, :].permute(0, 1, 4, 2, 3)
    wm = w[:, :, None, None, :]
    we = wm + OBJ_HD_EPS
    wes = we.sum(-1)
    mu_t = (t * we).sum(-1) / wes
    mu_q = (q * we).sum(-1) / wes
    s_t = (t * t * we).sum(-1) / wes - mu_t * mu_t
    s_q = (q * q * we).sum(-1) / wes - mu_q * mu_q
    s_tq = (t * q * wm).sum(-1) / (wm.expand_as(t).sum(-1) + OBJ_HD_EPS) - mu_t * mu_q
    ssim = (2 * s_tq + OBJ_HD_C2) / ((s_t + s_q + OBJ_HD_C2) + OBJ_HD_EPS)
    return 1 - ssim.mean()


def obj_inputs(gen):
    """Seeded random inputs, drawn in float64 and rounded to float32 (the stored values)."""
    dm = OBJ_DIMS
    L, B, H, G, P, d, C, S = dm["L"], dm["B"], dm["H"], dm["G"], dm["prefix"], dm["d"], dm["C"], dm["image"]
    npatch = G * G
    N = P + npatch

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    a_p = 3.0 * randn(L, B, H, N, N)
    a_q = a_p + 0.3 * randn(L, B, H, N, N)
    o_p = randn(L, B, H, N, d)
    o_q = o_p + 0.5 * randn(L, B, H, N, d)
    images = randn(B, 3, S, S)
    logits_p = 2.0 * randn(B, C)
    logits_q = logits_p + randn(B, C)
    labels = torch.randint(0, C, (B,), generator=gen)
    subset = torch.stack([torch.stack([torch.randperm(npatch, generator=gen)[:OBJ_ENT_SUBSAMPLE] for _ in range(B)])
                          for _ in range(L)])
    att_mask = (torch.rand(B, npatch, generator=gen, dtype=torch.float64) < OBJ_ATT_MASK_P).double()
    for b in range(B):
        if att_mask[b].sum() == 0:
            att_mask[b, torch.randint(0, npatch, (1,), generator=gen)] = 1.0
    x = dict(a_p=a_p, a_q=a_q, o_p=o_p, o_q=o_q, images=images, logits_p=logits_p, logits_q=logits_q)
    x = {k: v.float() for k, v in x.items()}
    return x, labels, subset, att_mask.float()


def obj_terms(x, labels, subset, att_mask, dtype):
    """Value and input gradients of every term, computed in `dtype` from the F32 inputs x."""
    P = OBJ_DIMS["prefix"]
    out = {}

    def leaf(name):
        return x[name].to(dtype).clone().requires_grad_(True)

    def run(term, f, wrt):
        leaves = {k: leaf(k) for k in wrt}
        v = f(leaves)
        grads = torch.autograd.grad(v, [leaves[k] for k in wrt])
        out[f"{term}.value"] = v.detach().reshape(1)
        for k, g in zip(wrt, grads):
            out[f"{term}.grad_{k}"] = g
        return v

    m = att_mask.to(dtype)
    run("ssim", lambda t: obj_ssim(t["a_p"], P), ["a_p"])
    run("entropy", lambda t: obj_entropy(t["a_p"], subset, P), ["a_p"])
    run("att", lambda t: obj_att(t["a_p"], t["a_q"], m, P), ["a_p", "a_q"])
    run("tv", lambda t: obj_tv(t["images"]), ["images"])
    run("ce", lambda t: obj_ce(t["logits_p"], labels), ["logits_p"])
    run("kd", lambda t: obj_kd(t["logits_q"], x["logits_p"].to(dtype), OBJ_KD_T), ["logits_q"])
    w, k_hd = obj_hd_weights(x["o_p"].to(dtype), P)
    run("hd", lambda t: obj_hd(x["o_p"].to(dtype), t["o_q"], w, P), ["o_q"])
    out["hd.weights"] = w
    c = obj_cls_mean(x["a_p"].to(dtype), P)
    topk, k_mask = obj_topk_mask(c, OBJ_MASK_RATIO)
    out["mask.cls_mean"] = c
    out["mask.topk"] = topk
    return out, k_mask, k_hd


def obj_fd_check(x, labels, subset, att_mask, ref, gen):
    """float64 central differences along one random direction per (term, input) vs <grad, direction>."""
    P = OBJ_DIMS["prefix"]
    x64 = {k: v.double() for k, v in x.items()}
    m = att_mask.double()
    w, _ = obj_hd_weights(x64["o_p"], P)
    fns = {
        ("ssim", "a_p"): lambda z: obj_ssim(z["a_p"], P),
        ("entropy", "a_p"): lambda z: obj_entropy(z["a_p"], subset, P),
        ("att", "a_p"): lambda z: obj_att(z["a_p"], z["a_q"], m, P),
        ("att", "a_q"): lambda z: obj_att(z["a_p"], z["a_q"], m, P),
        ("tv", "images"): lambda z: obj_tv(z["images"]),
        ("ce", "logits_p"): lambda z: obj_ce(z["logits_p"], labels),
        ("kd", "logits_q"): lambda z: obj_kd(z["logits_q"], z["logits_p"], OBJ_KD_T),
        ("hd", "o_q"): lambda z: obj_hd(z["o_p"], z["o_q"], w, P),
    }
    worst = 0.0
    for (term, name), f in fns.items():
        g = ref[f"{term}.grad_{name}"]
        dirn = torch.randn(g.shape, generator=gen, dtype=torch.float64)
        h = 1e-6
        zp, zm = dict(x64), dict(x64)
        zp[name] = x64[name] + h * dirn
        zm[name] = x64[name] - h * dirn
        fd = (f(zp) - f(zm)).item() / (2 * h)
        an = (g * dirn).sum().item()
        err = abs(fd - an) / max(abs(an), 1e-12)
        worst = max(worst, err)
        print(f"    fd {term}.grad_{name}: directional {an:+.9e} vs central difference {fd:+.9e} (rel {err:.1e})")
    assert worst < 1e-5, worst


def make_objectives_fixture(out_dir):
    folder = os.path.join(out_dir, "objectives")
    os.makedirs(folder, exist_ok=True)
    gen = torch.Generator().manual_seed(seed_of("objectives"))
    x, labels, subset, att_mask = obj_inputs(gen)
    ref, k_mask, k_hd = obj_terms(x, labels, subset, att_mask, torch.float64)
    f32, k_mask32, k_hd32 = obj_terms(x, labels, subset, att_mask, torch.float32)
    assert (k_mask32, k_hd32) == (k_mask, k_hd)

    # Ranking robustness: the f32 masks must equal the f64 ones, with margins well above f32 noise.
    assert torch.equal(f32["mask.topk"].double(), ref["mask.topk"]), "mask top-k differs in f32"
    assert torch.equal(f32["hd.weights"].double(), ref["hd.weights"]), "hd top-k differs in f32"
    c = ref["mask.cls_mean"].sort(-1, descending=True).values
    mask_gap = (c[:, k_mask - 1] - c[:, k_mask]).min().item()
    imp = x["o_p"].double()[:, :, :, OBJ_DIMS["prefix"]:, :].abs().mean(-1).mean(2).sort(-1, descending=True).values
    hd_gap = (imp[..., k_hd - 1] - imp[..., k_hd]).min().item()
    P = OBJ_DIMS["prefix"]
    att_diff = (x["a_p"].double().mean(2)[:, :, 0, P:] - x["a_q"].double().mean(2)[:, :, 0, P:]).abs()
    att_min = att_diff[:, att_mask.bool()].min().item()
    print(f"  margins: mask k-th vs (k+1)-th {mask_gap:.3e}, hd k-th vs (k+1)-th {hd_gap:.3e}, "
          f"min |mean_h dA| on the att mask {att_min:.3e}")
    assert min(mask_gap, hd_gap, att_min) > 1e-4

    worst = 0.0
    for key, r in ref.items():
        err = (f32[key].double() - r).abs().max().item() / max(r.abs().max().item(), 1e-30)
        worst = max(worst, err)
        print(f"    f32 vs f64 {key:18s} max |diff| / max |ref| = {err:.1e}")
    assert worst < 1e-4, worst
    obj_fd_check(x, labels, subset, att_mask, ref, gen)

    tensors = dict(x)
    tensors["labels"] = labels.float()
    tensors["entropy.subset"] = subset.float()
    tensors["att.mask"] = att_mask
    tensors["mask.ratio"] = torch.tensor([OBJ_MASK_RATIO])
    tensors["kd.temperature"] = torch.tensor([OBJ_KD_T])
    for key, r in ref.items():
        tensors[key] = r.float()
    tensors = {k: v.float().contiguous() for k, v in sorted(tensors.items())}

    dm = OBJ_DIMS
    npatch = dm["G"] * dm["G"]
    metadata = {
        "L": dm["L"], "B": dm["B"], "H": dm["H"], "N": dm["prefix"] + npatch, "G": dm["G"], "np": npatch,
        "d": dm["d"], "C": dm["C"], "prefix": dm["prefix"], "image_size": dm["image"],
        "ssim_c1": OBJ_SSIM_C1, "ssim_c2": OBJ_SSIM_C2, "ssim_minmax_eps": OBJ_SSIM_MINMAX_EPS,
        "entropy_subsample": OBJ_ENT_SUBSAMPLE, "entropy_norm_eps": OBJ_ENT_NORM_EPS,
        "entropy_var_eps": OBJ_ENT_VAR_EPS,
        "mask_ratio": OBJ_MASK_RATIO, "mask_k": k_mask, "mask_drop_prob": OBJ_MASK_DROP_PROB,
        "att_eps": OBJ_ATT_EPS, "kd_temperature": OBJ_KD_T,
        "hd_mask_proportion": OBJ_HD_PROPORTION, "hd_k": k_hd, "hd_weight_high": OBJ_HD_WEIGHT_HIGH,
        "hd_weight_low": OBJ_HD_WEIGHT_LOW, "hd_eps": OBJ_HD_EPS, "hd_c2": OBJ_HD_C2,
        "tv_diagonals": "d1 = x[..., 1:, 1:] - x[..., :-1, :-1]; d2 = x[..., 1:, :-1] - x[..., :-1, 1:]",
        "reference": "float64 autograd on the stored F32 inputs, rounded to F32",
    }
    metadata = with_versions({k: str(v) for k, v in metadata.items()})
    save_file(tensors, os.path.join(folder, "objectives.safetensors"), metadata=metadata)
    for term in ("ssim", "entropy", "att", "tv", "ce", "kd", "hd"):
        print(f"  {term}.value = {ref[term + '.value'].item():.9g}")
    print(f"  mask k = {k_mask}, hd k = {k_hd}; att.mask ones per image {att_mask.sum(-1).tolist()}")
    return folder


# ----------------------------------------------------------------------------------------------------


def summarize(folders):
    print("\nSummary")
    for folder in folders:
        total = 0
        for fname in sorted(os.listdir(folder)):
            path = os.path.join(folder, fname)
            size = os.path.getsize(path)
            total += size
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()[:16]
            print(f"  {path:60s} {size:>10,d} B  sha256 {digest}")
        print(f"  {folder + '/':60s} {total:>10,d} B total")
    print("Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))


def main():
    default_out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=default_out)
    ap.add_argument("--only", choices=list(MODELS) + list(QUANT_FIXTURES) + ["preprocess", "objectives"])
    ap.add_argument("--hashed-model", metavar="DIR",
                    help="only write deit_tiny_full's hashed weights as a timm folder to DIR (benchmarks)")
    args = ap.parse_args()

    if args.hashed_model:
        write_hashed_model(MODELS["deit_tiny_full"], args.hashed_model)
        return
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)

    if args.only:
        names = [args.only]
    else:
        names = list(MODELS) + list(QUANT_FIXTURES) + ["preprocess", "objectives"]
    folders = []
    all_ties = {}
    for name in names:
        print(f"{name}:")
        if name == "preprocess":
            folders.append(make_preprocess_fixture(args.out))
        elif name == "objectives":
            folders.append(make_objectives_fixture(args.out))
        elif name in QUANT_FIXTURES:
            folder, ties, wties = make_quant_fixture(name, QUANT_FIXTURES[name], args.out)
            folders.append(folder)
            all_ties[name] = (ties, wties)
        elif MODELS[name].get("hashed"):
            folders.append(make_hashed_fixture(name, MODELS[name], args.out))
        else:
            folders.append(make_model_fixture(name, MODELS[name], args.out))
    summarize(folders)
    for name, (ties, wties) in all_ties.items():
        hit = {s: n for s, n in ties.items() if n}
        print(f"{name}: activation rounding near-ties {sum(ties.values())} " + (f"{hit}" if hit else "")
              + f"; weight near-ties {sum(wties.values())} (mostly the structural tie at a row's negative extreme)")


if __name__ == "__main__":
    main()

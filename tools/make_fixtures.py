#!/usr/bin/env python3
"""Write the PyTorch/timm parity fixtures that maskaq's Rust tests compare against.

Usage (CPU only; needs `pip install -r tools/requirements.txt`):

    python3 tools/make_fixtures.py [--out tests/fixtures] [--only NAME] [--full]

    --out DIR    where to write (default: tests/fixtures next to this script's parent)
    --only NAME  write one fixture only: tiny_vit, tiny_deit_distilled, tiny_gray_f16,
                 deit_tiny_full, preprocess
    --full       also write the full-size deit_tiny_full (about 55 MB, not committed)

Everything is seeded and computed on one CPU thread, so a rerun with the same library versions writes
the same bytes.

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
`<out>/preprocess/`: img{k}.png plus preprocess.safetensors holding img{k} = timm's eval transform of
that file (versions and transform repr in its metadata).

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
        batch=2, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), f16=False, full=False,
    ),
    "tiny_deit_distilled": dict(
        architecture="deit_tiny_distilled_patch16_224",
        num_classes=7,
        model_args=dict(img_size=24, patch_size=4, in_chans=3, embed_dim=48, depth=2, num_heads=3, mlp_ratio=4.0),
        batch=3, mean=IMAGENET_MEAN, std=IMAGENET_STD, f16=False, full=False,
    ),
    "tiny_gray_f16": dict(
        architecture="vit_tiny_patch16_224",
        num_classes=10,
        model_args=dict(img_size=28, patch_size=7, in_chans=1, embed_dim=24, depth=3, num_heads=4, mlp_ratio=4.0),
        batch=2, mean=(0.2860,), std=(0.3530,), f16=True, full=False,
    ),
    "deit_tiny_full": dict(
        architecture="deit_tiny_patch16_224",
        num_classes=1000,
        model_args=dict(img_size=224, patch_size=16, in_chans=3, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0),
        batch=1, mean=IMAGENET_MEAN, std=IMAGENET_STD, f16=False, full=True,
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


def run_with_grads(model, images, targets):
    """Forward + backward; returns logits, taps, J and {name: grad} (grads of images and params)."""
    model.zero_grad(set_to_none=True)
    images = images.detach().clone().requires_grad_(True)
    logits, taps = manual_forward(model, images)
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
    save_file(tensors, os.path.join(folder, "fixture.safetensors"), metadata=FIXTURE_METADATA)

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
    ap.add_argument("--only", choices=list(MODELS) + ["preprocess"])
    ap.add_argument("--full", action="store_true", help="also write the full-size deit_tiny_full")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)

    if args.only:
        names = [args.only]
    else:
        names = [n for n, s in MODELS.items() if args.full or not s["full"]] + ["preprocess"]
    folders = []
    for name in names:
        print(f"{name}:")
        if name == "preprocess":
            folders.append(make_preprocess_fixture(args.out))
        else:
            folders.append(make_model_fixture(name, MODELS[name], args.out))
    summarize(folders)


if __name__ == "__main__":
    main()

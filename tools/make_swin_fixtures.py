#!/usr/bin/env python3
"""Write the PyTorch/timm Swin parity fixtures that tests/swin.rs compares against.

Usage (CPU only; needs `pip install -r tools/requirements.txt`; keep TIMM_FUSED_ATTN unset):

    python3 tools/make_swin_fixtures.py [--out tests/fixtures] [--only NAME]

Fixtures (same layout as tools/make_fixtures.py's, whose helpers this script uses):
  tiny_swin/          swin_tiny_patch4_window7_224 with model_args 1x28 px, patch 2, C 16, depths [2, 2],
                      heads [2, 4], window 7, 10 classes, batch 2: grids 14 -> 7, stage 0 has 4 windows and
                      its odd block shifts by 3 with the -100 mask, one PatchMerging, stage 1 is one window.
  tiny_swin_3stage/   3x32 px, patch 2, C 12, depths [2, 2, 2], heads [2, 2, 4], window 4, mlp_ratio 2,
                      7 classes, batch 2: grids 16 -> 8 -> 4, shifts of 2 in two stages, two merges.
  swin_tiny_full/     full-size swin_tiny_patch4_window7_224 with hashed weights and images (as
                      deit_tiny_full: nothing but outputs is stored), batch 2.
  swin_objectives/     the Swin objectives (inter-head SSIM, entropy, head distillation per window; maskaq's
                      last-stage alignment) on random taps of two blocks, values and gradients (make_objectives).
  quant_tiny_swin_w4a4/, quant_tiny_swin_w3a3/   Q of tiny_swin with the authors' quantizer sites on Swin
                      (see the comment above quant_window_attention), written by make_fixtures.py's
                      make_quant_fixture (same layout, checks and tie counts as the ViT quant fixtures).

Each fixture.safetensors holds (F32): images (tiny ones only), targets, logits, per block i (blocks counted
across stages, timm order) blocks.{i}.attn_logits = A = (q * scale) @ k^T [B*nW, H, N, N] before the
relative-position bias and the mask, in timm's window order (batch-major, after the cyclic shift), and
blocks.{i}.attn_out = O = softmax(A + bias + mask) @ v [B*nW, H, N, hd]; objective
J = CE(logits, targets) + 0.001 sum_i mean(A_i^2) + 0.1 sum_i mean(O_i^2); grad.images and grad.<param> for
every parameter, the relative-position bias tables included (swin_tiny_full: a subset, see FULL_STORED).
A and O come from timm's own WindowAttention arithmetic (non-fused path) with the two products recorded;
the script checks that the recorded forward gives timm's logits, that every relative_position_index runs
over 0..(2w-1)^2-1 with the formula maskaq uses, and f32 against f64.

Random weights: tiny fixtures make_fixtures.py's randomize_ (relative_position_bias_table N(0, 0.5^2):
timm's 0.02 would hide an indexing bug); swin_tiny_full: hashed_rule, with the tables uniform
in [-1, 1).
"""

import argparse
import copy
import json
import math
import os
import sys
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402

import timm  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

TINY = {
    "tiny_swin": dict(
        num_classes=10,
        model_args=dict(img_size=28, patch_size=2, in_chans=1, embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                        window_size=7),
        mean=[0.5], std=[0.5], batch=2),
    "tiny_swin_3stage": dict(
        num_classes=7,
        model_args=dict(img_size=32, patch_size=2, in_chans=3, embed_dim=12, depths=[2, 2, 2],
                        num_heads=[2, 2, 4], window_size=4, mlp_ratio=2.0),
        mean=list(mf.IMAGENET_MEAN), std=list(mf.IMAGENET_STD), batch=2),
}
FULL = dict(num_classes=1000, model_args=dict(img_size=224, patch_size=4, in_chans=3, embed_dim=96),
            mean=list(mf.IMAGENET_MEAN), std=list(mf.IMAGENET_STD), batch=2)
ARCH = "swin_tiny_patch4_window7_224"
FULL_BLOCKS = [1, 11]  # stored whole: stage 0 SW-MSA (4 regions, mask) and stage 3 (one window, no shift)
FULL_STORED = (["patch_embed.proj.weight", "patch_embed.proj.bias", "patch_embed.norm.weight",
                "patch_embed.norm.bias"]
               + [f"layers.0.blocks.{b}.{p}" for b in (0, 1) for p in
                  ("norm1.weight", "norm1.bias", "attn.relative_position_bias_table", "attn.qkv.weight",
                   "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                   "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")]
               + ["layers.1.downsample.norm.weight", "layers.1.downsample.norm.bias",
                  "layers.1.downsample.reduction.weight", "layers.1.blocks.1.attn.relative_position_bias_table",
                  "layers.2.blocks.5.attn.relative_position_bias_table", "layers.2.blocks.5.norm1.weight",
                  "layers.3.downsample.norm.weight", "layers.3.blocks.1.attn.relative_position_bias_table",
                  "layers.3.blocks.1.attn.proj.bias", "layers.3.blocks.1.mlp.fc2.bias", "norm.weight",
                  "norm.bias", "head.fc.bias"])


def build(spec):
    assert os.environ.get("TIMM_FUSED_ATTN") in (None, ""), "unset TIMM_FUSED_ATTN: the reference is timm's non-fused path"
    model = timm.create_model(ARCH, pretrained=False, num_classes=spec["num_classes"], **spec["model_args"])
    model.eval()
    for name, mod in model.named_modules():
        if hasattr(mod, "relative_position_index"):
            w = mod.window_size[0]
            idx = mod.relative_position_index
            assert int(idx.min()) == 0 and int(idx.max()) == (2 * w - 1) ** 2 - 1, f"{name}: index range"
            i = torch.arange(w * w)
            ri, ci = i // w, i % w
            mine = (ri[:, None] - ri[None, :] + w - 1) * (2 * w - 1) + (ci[:, None] - ci[None, :] + w - 1)
            assert torch.equal(idx.view(w * w, w * w), mine), f"{name}: index formula"
    return model


def recording_attention(taps):
    """timm's non-fused WindowAttention.forward with A and O recorded."""
    def forward(self, x, mask=None):
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = q * self.scale
        a = q @ k.transpose(-2, -1)
        attn = a + self._get_rel_pos_bias()
        if mask is not None:
            num_win = mask.shape[0]
            attn = attn.view(-1, num_win, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        p = self.softmax(attn)
        o = p @ v
        taps.append((a, o, p))
        x = o.transpose(1, 2).reshape(B_, N, -1)
        return self.proj(x)
    return forward


def forward_with_taps(model, images):
    taps = []
    originals = []
    for mod in model.modules():
        if type(mod).__name__ == "WindowAttention":
            originals.append((mod, mod.forward))
            mod.forward = types.MethodType(recording_attention(taps), mod)
    try:
        logits = model(images)
    finally:
        for mod, f in originals:
            mod.forward = f
    return logits, taps


def run(model, images, targets):
    """make_fixtures' objective (CE + 0.001 sum mean(A^2) + 0.1 sum mean(O^2)) through the recorded
    forward: logits, taps, J and the gradients of the images and every parameter."""
    return mf.run_with_grads(model, images, targets, forward=forward_with_taps)


def check(name, model, images, targets):
    """Runs the fixture objective in f32 and f64 and checks them against timm and each other."""
    logits, taps, j, grads = run(model, images, targets)
    with torch.no_grad():
        ref = model(images)
    diff = (ref - logits).abs().max().item()
    print(f"  logits vs timm model(images): max |diff| = {diff:.2e}")
    assert diff <= 1e-5, f"{name}: recorded forward disagrees with timm ({diff})"
    m64 = copy.deepcopy(model).double()
    logits64, taps64, j64, grads64 = run(m64, images.double(), targets)
    errs = {"logits": mf.rel_err(logits, logits64), "objective": mf.rel_err(j, j64),
            "attn_logits": max(mf.rel_err(a, a64) for (a, _, _), (a64, _, _) in zip(taps, taps64)),
            "attn_out": max(mf.rel_err(o, o64) for (_, o, _), (_, o64, _) in zip(taps, taps64)),
            "grads": max(mf.rel_err(grads[k], grads64[k]) for k in grads)}
    print("  f32 vs f64 (max|diff| / max|ref|): " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
    assert max(errs.values()) < 1e-3, f"{name}: f32 and f64 disagree: {errs}"
    zero = [k for k, g in grads.items() if g.abs().max() == 0]
    assert not zero, f"{name}: all-zero gradients for {zero}"
    for i, (a, o, _) in enumerate(taps):
        print(f"  block {i}: A {tuple(a.shape)} std {a.std().item():.2f}, O {tuple(o.shape)}")
    print(f"  objective {j.item():.6f} (ce part {F.cross_entropy(logits, targets.long()).item():.4f})")
    return logits, taps, j, grads


def config_json(spec):
    ma = spec["model_args"]
    c, size = ma["in_chans"], ma["img_size"]
    depths = ma.get("depths", [2, 2, 6, 2])
    return {
        "architecture": ARCH,
        "num_classes": spec["num_classes"],
        "num_features": ma["embed_dim"] * 2 ** (len(depths) - 1),
        "global_pool": "avg",
        "model_args": dict(ma),
        "pretrained_cfg": {"input_size": [c, size, size], "mean": spec["mean"], "std": spec["std"],
                           "crop_pct": 0.9, "interpolation": "bicubic", "num_classes": spec["num_classes"]},
    }


def write(folder, spec, tensors, metadata, weights=None):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config_json(spec), f, indent=2)
        f.write("\n")
    if weights is not None:
        mf.save_file(weights, os.path.join(folder, "model.safetensors"))
    tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}
    mf.save_file(tensors, os.path.join(folder, "fixture.safetensors"), metadata=metadata)


def make_tiny(name, spec, out_dir):
    gen = torch.Generator().manual_seed(mf.seed_of(name))
    model = build(spec)
    mf.randomize_(model, gen)
    state = model.state_dict()
    params = dict(model.named_parameters())
    kept = [k for k in state if k in params]
    assert set(state) - set(kept) <= {k for k in state if k.endswith(("relative_position_index", "attn_mask"))}
    ma = spec["model_args"]
    b, c, s = spec["batch"], ma["in_chans"], ma["img_size"]
    images = torch.randn((b, c, s, s), generator=gen)
    targets = torch.randint(0, spec["num_classes"], (b,), generator=gen)
    logits, taps, j, grads = check(name, model, images, targets)
    tensors = {"images": images, "targets": targets.float(), "logits": logits, "objective": j.reshape(1)}
    for i, (a, o, _) in enumerate(taps):
        tensors[f"blocks.{i}.attn_logits"] = a
        tensors[f"blocks.{i}.attn_out"] = o
    for k, g in grads.items():
        tensors[f"grad.{k}"] = g
    weights = {k: state[k].detach().float().contiguous() for k in kept}
    folder = os.path.join(out_dir, name)
    write(folder, spec, tensors, mf.with_versions(mf.FIXTURE_METADATA), weights)
    # Reload as a user would.
    m2 = timm.create_model(ARCH, pretrained=False, num_classes=spec["num_classes"], **ma).eval()
    missing, unexpected = m2.load_state_dict(load_file(os.path.join(folder, "model.safetensors")), strict=False)
    assert not unexpected and all(k.endswith(("relative_position_index", "attn_mask")) for k in missing), missing
    with torch.no_grad():
        assert (m2(images) - logits).abs().max().item() <= 1e-5
    return folder


def hashed_rule(name, shape):
    if name.endswith("relative_position_bias_table"):
        return 1.0, 0.0
    return mf.hashed_rule(name, shape)


# ----------------------------------------------------------------------------------------------------
# Q on Swin, with the authors' quantizer sites (docs/swin.md): the patch convolution's weight; per
# block the inputs of qkv, q * scale and k (before q k^T), P and v, proj, fc1, fc2; each PatchMerging's
# reduction (input and weight, no bias); head.fc. The relative-position bias is added in full precision
# after the quantized product; LayerNorms, softmax, GELU, roll, partition and pooling stay FP.
# lsq_g_scale is 1.0 everywhere (head.fc is nested in ClassifierHead, so the authors' 0.01 never
# reaches it); make_fixtures.QuantSim gives 0.01 only to the ViT names head.act / head_dist.act.

from timm.models.swin_transformer import window_partition, window_reverse  # noqa: E402


def quant_window_attention(attn, x, mask, prefix, sim, taps):
    B_, N, C = x.shape
    qkv = mf.quant_linear(attn.qkv, x, f"{prefix}.qkv", sim).reshape(B_, N, 3, attn.num_heads, -1)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    q = q * attn.scale
    a = sim.activation(f"{prefix}.matmul1.act_a", q) @ sim.activation(f"{prefix}.matmul1.act_b", k.transpose(-2, -1))
    s = a + attn._get_rel_pos_bias()
    if mask is not None:
        num_win = mask.shape[0]
        s = (s.view(-1, num_win, attn.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)).view(-1, attn.num_heads, N, N)
    p = attn.softmax(s)
    o = sim.activation(f"{prefix}.matmul2.act_a", p) @ sim.activation(f"{prefix}.matmul2.act_b", v)
    taps.append((a, o, p))
    return mf.quant_linear(attn.proj, o.transpose(1, 2).reshape(B_, N, -1), f"{prefix}.proj", sim)


def quant_block(blk, x, prefix, sim, taps):
    """timm's SwinTransformerBlock.forward / _attn (no padding: maskaq refuses such geometries)."""
    B, H, W, C = x.shape
    sh, ws = blk.shift_size, blk.window_size
    assert H % ws[0] == 0 and W % ws[1] == 0
    y = blk.norm1(x)
    if any(sh):
        y = torch.roll(y, shifts=(-sh[0], -sh[1]), dims=(1, 2))
    windows = window_partition(y, ws).view(-1, ws[0] * ws[1], C)
    out = quant_window_attention(blk.attn, windows, blk.attn_mask, f"{prefix}.attn", sim, taps)
    y = window_reverse(out.view(-1, ws[0], ws[1], C), ws, H, W)
    if any(sh):
        y = torch.roll(y, shifts=sh, dims=(1, 2))
    x = (x + y).reshape(B, -1, C)
    h = mf.quant_linear(blk.mlp.fc1, blk.norm2(x), f"{prefix}.mlp.fc1", sim)
    x = x + mf.quant_linear(blk.mlp.fc2, blk.mlp.act(h), f"{prefix}.mlp.fc2", sim)
    return x.reshape(B, H, W, C)


def quant_swin_forward(model, images, sim):
    proj = model.patch_embed.proj
    x = F.conv2d(images, sim.weight("patch_embed.proj.weight", proj.weight), proj.bias, proj.stride)
    x = model.patch_embed.norm(x.permute(0, 2, 3, 1))
    taps = []
    for s, stage in enumerate(model.layers):
        ds = stage.downsample
        if not isinstance(ds, nn.Identity):
            B, H, W, C = x.shape
            x = ds.norm(x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3))
            site = f"layers.{s}.downsample.reduction"
            x = F.linear(sim.activation(f"{site}.act", x), sim.weight(f"{site}.weight", ds.reduction.weight))
        for b, blk in enumerate(stage.blocks):
            x = quant_block(blk, x, f"layers.{s}.blocks.{b}", sim, taps)
    pooled = model.norm(x).mean(dim=(1, 2))
    return mf.quant_linear(model.head.fc, pooled, "head.fc", sim), taps


def swin_sites(spec):
    a = spec["model_args"]
    sites = ["head.fc.act"]
    for s, depth in enumerate(a["depths"]):
        if s > 0:
            sites.append(f"layers.{s}.downsample.reduction.act")
        for b in range(depth):
            p = f"layers.{s}.blocks.{b}"
            sites += [f"{p}.attn.{x}" for x in ("qkv.act", "matmul1.act_a", "matmul1.act_b", "matmul2.act_a",
                                                 "matmul2.act_b", "proj.act")]
            sites += [f"{p}.mlp.fc1.act", f"{p}.mlp.fc2.act"]
    return sites


QUANT = {
    "quant_tiny_swin_w4a4": dict(model="tiny_swin", wbits=4, abits=4),
    "quant_tiny_swin_w3a3": dict(model="tiny_swin", wbits=3, abits=3),
}


def make_quant(name, out_dir):
    spec = TINY["tiny_swin"]
    qspec = dict(QUANT[name], build=lambda: build(spec), forward=quant_swin_forward,
                 wq=("layers.0.blocks.0.attn.qkv.weight", "patch_embed.proj.weight",
                     "layers.1.downsample.reduction.weight"),
                 sites=swin_sites(spec))
    # Structure check first: Q's forward with quantization off is timm's model.
    model = build(spec)
    model.load_state_dict(load_file(os.path.join(out_dir, "tiny_swin", "model.safetensors")), strict=True)
    fx = load_file(os.path.join(out_dir, "tiny_swin", "fixture.safetensors"))
    with torch.no_grad():
        logits, _ = quant_swin_forward(model, fx["images"], mf.QuantSim(None, None))
    assert (logits - model(fx["images"])).abs().max().item() <= 1e-5, "quant_swin_forward is not timm's graph"
    folder, ties, wties = mf.make_quant_fixture(name, qspec, out_dir)
    print(f"  activation near-ties {sum(ties.values())}, weight near-ties {sum(wties.values())}")
    return folder


# ----------------------------------------------------------------------------------------------------
# The objectives on Swin's window taps (docs/swin.md): the authors' per-window terms and maskaq's
# last-stage alignment, as plain functions of random taps of two blocks of different shapes (block 0:
# 2 images x 4 windows, 2 heads; block 1: 2 images x 1 window, 24 heads as Swin-T's last stage), 7x7
# windows. Values and gradients in float64 with autograd, from the stored F32 inputs.

OBJ_BLOCKS = [dict(groups=8, heads=2, hd=8), dict(groups=2, heads=24, hd=4)]
OBJ_IMAGES = 2
OBJ_N = 49
OBJ_MASK_K = 10


def swin_ssim(a_blocks):
    """ssim_loss_att_map_swin: per block the mean of (1 - ssim^2) over (window, query) rows and ordered
    head pairs (diagonal included), each key row min-max normalised; then the mean over blocks."""
    return torch.stack([mf.obj_ssim(a[None], 0) for a in a_blocks]).mean()


def swin_entropy(a_blocks):
    """attention_entropy_loss_similarity(is_swin): h per window from V = mean_h A[u] (all 49 rows, no
    subsampling at 49 <= 64); minus the mean over every window of every block (window-weighted)."""
    total = sum(a.shape[0] for a in a_blocks)
    rows = torch.arange(OBJ_N)
    return sum(mf.obj_entropy(a[None], rows.expand(1, a.shape[0], OBJ_N), 0) * a.shape[0] for a in a_blocks) / total


def query_mean(a):
    """[B, H, N, N] -> [B, N]: the mean over heads and query rows of each key column."""
    return a.mean(1).mean(1)


def swin_alignment(a_p_last, a_q_last, k):
    """maskaq's proposal (docs/swin.md): M = top-k of P's last-stage query means; L_att = mean over
    last-stage blocks of sum |abar_P - abar_Q| M / (sum M + 1e-8)."""
    c = torch.stack([query_mean(a) for a in a_p_last]).mean(0)
    idx = torch.topk(c, k, dim=-1).indices
    m = torch.zeros_like(c).scatter_(-1, idx, 1.0)
    per = [((query_mean(p) - query_mean(q)).abs() * m).sum() / (m.sum() + mf.OBJ_ATT_EPS)
           for p, q in zip(a_p_last, a_q_last)]
    return torch.stack(per).mean(), m


def swin_hd(o_p_blocks, o_q_blocks):
    """ssim_dist_loss_swin_masked: per window the top max(1, round(49 * 0.1)) = 5 tokens of P's mean |O|
    weigh 2, the rest 1; 1 - the mean weighted SSIM per block; then the mean over blocks."""
    vals = []
    for o_p, o_q in zip(o_p_blocks, o_q_blocks):
        w, _ = mf.obj_hd_weights(o_p[None], 0)
        vals.append(mf.obj_hd(o_p[None], o_q[None], w, 0))
    return torch.stack(vals).mean()


def make_objectives(out_dir):
    gen = torch.Generator().manual_seed(mf.seed_of("swin_objectives"))
    t = {}
    for i, b in enumerate(OBJ_BLOCKS):
        g, h, hd = b["groups"], b["heads"], b["hd"]
        t[f"a_p.{i}"] = torch.randn((g, h, OBJ_N, OBJ_N), generator=gen) * 1.5
        t[f"o_p.{i}"] = torch.randn((g, h, OBJ_N, hd), generator=gen)
        t[f"o_q.{i}"] = t[f"o_p.{i}"] + 0.3 * torch.randn((g, h, OBJ_N, hd), generator=gen)
    last = len(OBJ_BLOCKS) - 1
    t[f"a_q.{last}"] = t[f"a_p.{last}"] + 0.5 * torch.randn(t[f"a_p.{last}"].shape, generator=gen)
    x = {k: v.double().requires_grad_(True) for k, v in t.items()}
    a_p = [x[f"a_p.{i}"] for i in range(len(OBJ_BLOCKS))]
    out = dict(t)
    for name, value, inputs in [
        ("ssim", lambda: swin_ssim(a_p), [f"a_p.{i}" for i in range(len(OBJ_BLOCKS))]),
        ("entropy", lambda: swin_entropy(a_p), [f"a_p.{i}" for i in range(len(OBJ_BLOCKS))]),
        ("alignment", lambda: swin_alignment([a_p[last]], [x[f"a_q.{last}"]], OBJ_MASK_K)[0],
         [f"a_p.{last}", f"a_q.{last}"]),
        ("hd", lambda: swin_hd([x[f"o_p.{i}"].detach() for i in range(len(OBJ_BLOCKS))],
                               [x[f"o_q.{i}"] for i in range(len(OBJ_BLOCKS))]),
         [f"o_q.{i}" for i in range(len(OBJ_BLOCKS))]),
    ]:
        for v in x.values():
            v.grad = None
        val = value()
        val.backward()
        out[f"{name}.value"] = val.detach().reshape(1)
        for k in inputs:
            out[f"{name}.grad.{k}"] = x[k].grad.detach()
        print(f"  {name}: {val.item():.6f}")
    _, m = swin_alignment([a_p[last].detach()], [x[f"a_q.{last}"].detach()], OBJ_MASK_K)
    out["alignment.mask"] = m
    folder = os.path.join(out_dir, "swin_objectives")
    os.makedirs(folder, exist_ok=True)
    meta = mf.with_versions({"blocks": json.dumps(OBJ_BLOCKS), "images": str(OBJ_IMAGES), "tokens": str(OBJ_N),
                             "mask_k": str(OBJ_MASK_K)})
    mf.save_file({k: v.detach().float().contiguous() for k, v in out.items()},
                 os.path.join(folder, "objectives.safetensors"), metadata=meta)
    return folder


def make_full(out_dir):
    name = "swin_tiny_full"
    model = build(FULL)
    weights = {}
    for k, p in model.named_parameters():
        scale, offset = hashed_rule(k, tuple(p.shape))
        weights[k] = mf.hashed_values(k, tuple(p.shape), scale, offset)
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(torch.from_numpy(weights[k]))
    b = FULL["batch"]
    images = mf.hashed_values("images", (b, 3, 224, 224), math.sqrt(3.0))
    targets = torch.from_numpy((mf.hashed_bits("targets", b) % np.uint64(1000)).astype(np.int64))
    logits, taps, j, grads = check(name, model, torch.from_numpy(images), targets)
    tensors = {"targets": targets.float(), "logits": logits, "objective": j.reshape(1)}
    tensors["attn_logits_meansq"] = torch.stack([a.double().pow(2).mean() for a, _, _ in taps])
    tensors["attn_out_meansq"] = torch.stack([o.double().pow(2).mean() for _, o, _ in taps])
    for i in FULL_BLOCKS:
        tensors[f"blocks.{i}.attn_logits"] = taps[i][0]
        tensors[f"blocks.{i}.attn_out"] = taps[i][1]
    tensors["grad.images"] = grads["images"]
    for k in FULL_STORED:
        tensors[f"grad.{k}"] = grads[k]
    metadata = mf.with_versions(mf.FIXTURE_METADATA)
    metadata["weights"] = "hashed (tools/make_fixtures.py hashed_values; tables: scale 1)"
    metadata["weights_fingerprint"] = f"{mf.fingerprint_all(weights):016x}"
    metadata["images_fingerprint"] = f"{mf.fingerprint('images', images):016x}"
    folder = os.path.join(out_dir, name)
    write(folder, FULL, tensors, metadata)
    return folder


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
    ap.add_argument("--only", choices=list(TINY) + ["swin_tiny_full"] + list(QUANT) + ["swin_objectives"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = [args.only] if args.only else list(TINY) + ["swin_tiny_full"] + list(QUANT) + ["swin_objectives"]
    for name in names:
        print(f"{name}:")
        if name == "swin_tiny_full":
            folder = make_full(args.out)
        elif name in QUANT:
            folder = make_quant(name, args.out)
        elif name == "swin_objectives":
            folder = make_objectives(args.out)
        else:
            folder = make_tiny(name, TINY[name], args.out)
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
        print(f"  wrote {folder} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()

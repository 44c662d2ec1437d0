#!/usr/bin/env python3
"""Write the step-level parity fixture of MaskAQ's two product steps (tests/step_parity.rs).

Usage (CPU only; needs `pip install -r tools/requirements.txt`; reads tests/fixtures/tiny_vit/):

    python3 tools/make_step_fixture.py [--out tests/fixtures] [--models tests/fixtures]

writes `<out>/step_tiny_vit_w4a4/fixture.safetensors` (F32, deterministic header; seeded, one CPU
thread, so the same library versions write the same bytes). It is a PyTorch transcription of
docs/method.md §1.2, 1.3, 2 and 3, written from the spec (the loss terms and Q's fake
quantization are tools/make_fixtures.py's `obj_*` and `quant_forward`), with every random draw fixed
and stored so that maskaq can be fed the same draws:

Model: P = tests/fixtures/tiny_vit (32 px, patch 8: np = 16 patches, D 32, 2 blocks, 2 heads, 10
classes, mean = std = 0.5). Q = P's weights plus a small random perturbation (a Q part-way through
training), at W4A4, with its activation quantizers LSQ-initialised on a noise batch (their state is
stored; both steps start from it).
  q.<param>                         Q's weights before either step (every parameter, timm names)
  q.<site>.alpha, .zero_point (unrounded), .g, .signed   Q's quantizer state

One synthesis iteration (spec 1.2), iteration i = 6 of 10 (second half: jitter 16 px at 224 scaled to
round(16 * 32 / 224) = 2 px; mask ratio 0.5 (1 - 0.6) + 0.1 * 0.6 = 0.26 -> k = int(16 * 0.26) = 4, keep
round(0.7 * 4) = 3; cosine learning rate at i / iters), batch 2, entropy rows 8 of 16 (fewer than np,
so which rows matters), the MaskAQ weights (ssim 1, entropy 1, alignment 0.1, ce 1, tv 2.5e-5):
  synth.images [B,3,H,W]            the pixels before the iteration (inside the clamp range)
  synth.labels [B]                  class indices (F32)
  synth.adam_m, synth.adam_v        AdamW's moments before the iteration (the state of earlier steps)
  synth.iter, synth.iters, synth.lr, synth.entropy_rows_n, synth.mask_k, synth.mask_keep  [1] each
  draws: synth.shift [2] (rows, columns of torch.roll), synth.noise [B,3] (GaussianNoise's constant
         randn * rem * 0.5 / iters, rem = iters - 1 - i), synth.color_m [B,3], synth.color_s [B,3]
         (ColorJitter x -> (x - m) / s), synth.entropy_rows [L,B,8] (0-based patch rows),
         synth.mask_keys [B,np] (uniform; the stochastic drop keeps the `keep` selected patches with
         the smallest keys, i.e. a uniformly random subset)
  x = (roll(img, shift) + noise - m) / s; loss = ssim + entropy + 0.1 alignment + ce + 2.5e-5 TV(img)
  synth.ssim, .entropy, .alignment, .ce, .tv (unweighted, as maskaq logs them), synth.total (weighted)
  synth.grad_images                 d loss / d img: through the jitter and augmentation, plus TV
  synth.images_after                after torch.optim.AdamW (lr, betas (0.9, 0.999), eps 1e-8, wd 1e-6,
                                    step i + 1) and the per-channel clamp to [(0 - mean) / std, (1 - mean) / std]
  synth.mask [B,np]                 the alignment mask after the drop (for diagnosis)

One Q-training step (spec 1.3) on batch 2, from the same Q, after earlier steps (momentum buffers set):
  qstep.images [B,3,H,W]            the batch before augmentation
  qstep.lr [1], qstep.momentum [1], qstep.hd_coef [1], qstep.kd_temperature [1]
  augmentation (T_aug, one draw for the batch, torchvision's own parameter draws):
         qstep.crop [4] (top, left, height, width of RandomResizedCrop.get_params), qstep.flip [1],
         qstep.jitter [1] (colour jitter applied: forced 1), qstep.color [4] (brightness, contrast,
         saturation, hue factors of ColorJitter.get_params, redrawn until brightness and contrast lie in
         [0.6, 1.6] (a batch squeezed to an almost flat gray tests little) and the order is not the
         identity), qstep.color_order [4] (the op order,
         1 brightness, 2 contrast, 3 saturation, 4 hue), qstep.grayscale [1] (forced 0: a grayscale
         after the jitter would hide the saturation), qstep.blur_radius [1], qstep.blur_sigma [1] (U(0.1, 2) redrawn
         below 0.5: at 32 px the kernel has 3 taps, and below about 0.4 its side taps vanish in f32)
  qstep.augmented [B,3,H,W]         T_aug of the batch (resized_crop bilinear, hflip, denorm ->
                                    ColorJitter in the drawn order -> norm, the authors' GaussianBlur:
                                    reflect padding, separable normalised kernel)
  qstep.mom.<param>, qstep.mom.<site>.alpha / .zero_point   momentum buffers before the step
  qstep.kd, qstep.hd                KD (T = 5, times T^2) and the unweighted mask-weighted head
                                    distillation; the loss is kd + hd_coef hd
  qstep.after.<param>, qstep.after.<site>.alpha / .zero_point   after torch.optim.SGD (nesterov,
                                    momentum 0.9, wd 0) on every parameter of Q and every alpha and z
  qstep.mom_after.<...>             the momentum buffers after the step

Rounding decisions: both sides quantize the same weights with the same f32 operations (maskaq takes
them from IEEE quotients, shaders/exact_div.wgsl), so weight codes agree exactly. Activation codes and
the top-k selections depend on values both sides compute with different f32 operation orders; the
script prints and asserts the smallest distance of any activation code x / alpha + z' to a rounding
boundary (and of x / alpha + z' to a clamp bound) in each Q forward, and the smallest gap between the
k-th and (k+1)-th candidate of each top-k (the alignment mask, the head-distillation weights).
"""

import argparse
import copy
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402  (the spec's loss functions and Q's fake-quantized graph)

NAME = "step_tiny_vit_w4a4"
BASE = "tiny_vit"
BITS = 4
B = 2
# Synthesis settings (maskaq defaults except the iteration count and the entropy rows).
ITERS, ITER = 10, 6
ENTROPY_ROWS = 8
SYN_LR, SYN_LR_MIN, SYN_WD = 0.1, 1e-3, 1e-6
W_SSIM, W_ENT, W_ATT, W_CE, W_TV = 1.0, 1.0, 0.1, 1.0, 2.5e-5
RATIO = (0.5, 0.1)
DROP = 0.3
# Q training: the spec's momentum, T and hd_coef; a learning rate large enough that the update is
# well above f32 rounding of the weights.
Q_LR, Q_MOMENTUM, Q_T, HD_COEF = 0.02, 0.9, 5.0, 10.0
# Margins the draws must keep (see the module docstring).
MIN_CODE_MARGIN = 1e-5
MIN_TOPK_GAP = 1e-4
# Added to the seed when a draw breaks a margin above (--search N finds one); 0 keeps them all.
SEED_OFFSET = 0


class MarginSim(mf.QuantSim):
    """QuantSim that also records, per forward, the smallest distance of an activation code to a
    rounding boundary and of x / alpha + z' to a clamp bound."""

    def reset_margins(self):
        self.round_margin, self.clamp_margin = 1.0, float("inf")

    def activation(self, site, x):
        out = super().activation(site, x)
        q = self.quantizers[site]
        with torch.no_grad():
            u = x.detach() / q["alpha"].detach() + q["zero_point"].detach().round()
            v = torch.clamp(u, q["qn"], q["qp"])
            inside = (u > q["qn"]) & (u < q["qp"])
            if inside.any():
                self.round_margin = min(self.round_margin, ((v - v.floor() - 0.5).abs())[inside].min().item())
            self.clamp_margin = min(self.clamp_margin, torch.minimum((u - q["qn"]).abs(), (u - q["qp"]).abs()).min().item())
        return out


def topk_gap(values, k):
    """Smallest gap between the k-th and (k+1)-th largest entry of each row, relative to the row's scale."""
    s = values.detach().sort(dim=-1, descending=True).values
    gap = (s[..., k - 1] - s[..., k]) / s.abs().amax(-1).clamp_min(1e-30)
    return gap.min().item()


def load_models():
    spec = mf.MODELS[BASE]
    base = os.path.join(ARGS.models, BASE)
    p = mf.build_model(spec)
    p.load_state_dict({k: v.float() for k, v in load_file(os.path.join(base, "model.safetensors")).items()})
    return spec, p


def perturbed_copy(model, gen):
    q = copy.deepcopy(model)
    with torch.no_grad():
        for _, t in q.named_parameters():
            t.add_(0.05 * t.std() * torch.randn(t.shape, generator=gen))
    return q


def synthesis(p, q, sim, spec, gen, out):
    prefix = p.num_prefix_tokens
    c, h, w = 3, spec["model_args"]["img_size"], spec["model_args"]["img_size"]
    mean = torch.tensor(spec["mean"]).reshape(1, 3, 1, 1)
    std = torch.tensor(spec["std"]).reshape(1, 3, 1, 1)
    lo, hi = (0 - mean) / std, (1 - mean) / std
    n_patch = p.patch_embed.num_patches
    depth = len(p.blocks)

    img0 = torch.maximum(torch.minimum(0.7 * torch.randn(B, c, h, w, generator=gen), hi), lo)
    labels = torch.randint(0, p.num_classes, (B,), generator=gen)
    j224 = 8 if ITER < ITERS / 2 else 16
    jit = max(1, round(j224 * h / 224))
    shift = torch.randint(-jit, jit + 1, (2,), generator=gen)
    rem = ITERS - 1 - ITER  # GaussianNoise's count-down (this batch's noise calls started at 0)
    noise = torch.randn(B, c, generator=gen) * rem * 0.5 / ITERS
    color_m = torch.rand(B, c, generator=gen) * 2 - 1
    color_s = torch.exp(torch.rand(B, c, generator=gen) * 2 - 1)
    rows = torch.stack([torch.randperm(n_patch, generator=gen)[:ENTROPY_ROWS] for _ in range(depth * B)])
    rows = rows.reshape(depth, B, ENTROPY_ROWS)
    keys = torch.rand(B, n_patch, generator=gen)
    t = ITER / ITERS
    ratio = RATIO[0] * (1 - t) + RATIO[1] * t
    k = max(1, int(n_patch * ratio))
    keep = min(k, max(1, round((1 - DROP) * k)))
    lr = SYN_LR_MIN + 0.5 * (SYN_LR - SYN_LR_MIN) * (1 + math.cos(math.pi * t))

    def objective(img):
        x = torch.roll(img, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
        x = x + noise[:, :, None, None]  # GaussianNoise
        x = (x - color_m[:, :, None, None]) / color_s[:, :, None, None]  # ColorJitter
        logits_p, taps_p = mf.manual_forward(p, x)
        sim.reset_margins()
        _, taps_q = mf.quant_forward(q, x, sim)
        a_p = torch.stack([a for a, _, _ in taps_p])
        a_q = torch.stack([a for a, _, _ in taps_q])
        cls = mf.obj_cls_mean(a_p.detach(), prefix)
        topk, k2 = mf.obj_topk_mask(cls, ratio)
        assert k2 == k
        # Stochastic drop: of the selected patches keep the `keep` with the smallest keys.
        order = torch.where(topk > 0, keys, torch.full_like(keys, 2.0)).argsort(dim=-1, stable=True)
        mask = torch.zeros_like(topk).scatter_(-1, order[:, :keep], 1.0)
        terms = {
            "ssim": mf.obj_ssim(a_p, prefix),
            "entropy": mf.obj_entropy(a_p, rows, prefix),
            "alignment": mf.obj_att(a_p, a_q, mask, prefix),
            "ce": mf.obj_ce(logits_p, labels),
            "tv": mf.obj_tv(img),
        }
        total = (W_SSIM * terms["ssim"] + W_ENT * terms["entropy"] + W_ATT * terms["alignment"]
                 + W_CE * terms["ce"] + W_TV * terms["tv"])
        return total, terms, mask, cls

    # A first evaluation sets the scale of AdamW's moments (those of earlier iterations).
    img = img0.clone().requires_grad_(True)
    objective(img)[0].backward()
    g_rms = img.grad.pow(2).mean().sqrt()
    adam_m = 0.5 * g_rms * torch.randn(img0.shape, generator=gen)
    adam_v = (g_rms * torch.randn(img0.shape, generator=gen)) ** 2

    img = img0.clone().requires_grad_(True)
    total, terms, mask, cls = objective(img)
    total.backward()
    grad = img.grad.detach().clone()
    print(f"  synthesis: {', '.join(f'{n} {v.item():.6f}' for n, v in terms.items())}; total {total.item():.6f}")
    print(f"  synthesis Q forward: smallest code distance to a rounding boundary {sim.round_margin:.2e}, "
          f"to a clamp bound {sim.clamp_margin:.2e}; alignment top-{k} gap {topk_gap(cls, k):.2e}")
    margins = [("synthesis rounding", sim.round_margin, MIN_CODE_MARGIN),
               ("synthesis clamp", sim.clamp_margin, MIN_CODE_MARGIN),
               ("alignment top-k", topk_gap(cls, k), MIN_TOPK_GAP)]

    opt = torch.optim.AdamW([img], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=SYN_WD, foreach=False)
    opt.state[img] = {"step": torch.tensor(float(ITER)), "exp_avg": adam_m.clone(), "exp_avg_sq": adam_v.clone()}
    opt.step()
    with torch.no_grad():
        after = torch.maximum(torch.minimum(img, hi), lo)

    out.update({
        "synth.images": img0, "synth.labels": labels.float(), "synth.adam_m": adam_m, "synth.adam_v": adam_v,
        "synth.iter": torch.tensor([float(ITER)]), "synth.iters": torch.tensor([float(ITERS)]),
        "synth.lr": torch.tensor([lr], dtype=torch.float64), "synth.entropy_rows_n": torch.tensor([float(ENTROPY_ROWS)]),
        "synth.mask_k": torch.tensor([float(k)]), "synth.mask_keep": torch.tensor([float(keep)]),
        "synth.shift": shift.float(), "synth.noise": noise, "synth.color_m": color_m, "synth.color_s": color_s,
        "synth.entropy_rows": rows.float(), "synth.mask_keys": keys,
        "synth.total": total.reshape(1), "synth.grad_images": grad, "synth.images_after": after,
        "synth.mask": mask,
    })
    for n, v in terms.items():
        out[f"synth.{n}"] = v.reshape(1)
    return margins


def blur(x, radius, sigma):
    """The authors' GaussianBlur: reflect padding, then a (k, 1) and a (1, k) depthwise convolution with
    the normalised kernel exp(-t^2 / (2 sigma^2)) (computed in float64, used as float32)."""
    t = np.arange(-radius, radius + 1)
    kern = np.exp(-np.power(t, 2) / (2 * sigma * sigma))
    kern = torch.from_numpy(kern / kern.sum()).float()
    c, k = x.shape[1], 2 * radius + 1
    x = F.pad(x, (radius,) * 4, mode="reflect")
    x = F.conv2d(x, kern.view(1, 1, k, 1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, kern.view(1, 1, 1, k).repeat(c, 1, 1, 1), groups=c)


def augment(x, spec, a):
    """Spec 1.3's T_aug with fixed parameters `a` (one draw for the whole batch)."""
    size = list(x.shape[-2:])
    x = TF.resized_crop(x, *a["crop"], size, interpolation=T.InterpolationMode.BILINEAR, antialias=True)
    if a["flip"]:
        x = TF.hflip(x)
    mean, std = list(spec["mean"]), list(spec["std"])
    if a["jitter"]:
        # The authors' denormalize (Normalize(0, 1 / std) then Normalize(-mean, 1)), ColorJitter, normalize.
        x = TF.normalize(TF.normalize(x, [0.0] * 3, [1 / s for s in std]), [-m for m in mean], [1.0] * 3)
        ops = [lambda v: TF.adjust_brightness(v, a["color"][0]), lambda v: TF.adjust_contrast(v, a["color"][1]),
               lambda v: TF.adjust_saturation(v, a["color"][2]), lambda v: TF.adjust_hue(v, a["color"][3])]
        for op in a["order"]:
            x = ops[op](x)
        x = TF.normalize(x, mean, std)
    if a["grayscale"]:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    return blur(x, a["radius"], a["sigma"])


def qstep(p, q, sim, spec, gen, out):
    prefix = p.num_prefix_tokens
    h = spec["model_args"]["img_size"]
    images = torch.clamp(0.7 * torch.randn(B, 3, h, h, generator=gen), -1.0, 1.0)
    # torchvision's own parameter draws, from a seeded global generator.
    torch.manual_seed(int(torch.randint(0, 2 ** 31, (1,), generator=gen)))
    top, left, ch, cw = T.RandomResizedCrop.get_params(images, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    while True:  # redrawn until brightness and contrast keep the batch's contrast (see the docstring)
        fn_idx, bri, con, sat, hue = T.ColorJitter.get_params((0.2, 1.8), (0.2, 1.8), (0.2, 1.8), (-0.2, 0.2))
        if 0.6 <= bri <= 1.6 and 0.6 <= con <= 1.6 and fn_idx.tolist() != sorted(fn_idx.tolist()):
            break
    blur_rng = np.random.default_rng(int(torch.randint(0, 2 ** 31, (1,))))
    while True:  # the authors' draw, U(0.1, 2), redrawn below 0.5 (see the docstring)
        sigma = float(np.float32(blur_rng.uniform(0.1, 2.0)))
        if sigma >= 0.5:
            break
    a = dict(crop=(top, left, ch, cw), flip=True, jitter=True, color=(bri, con, sat, hue),
             order=[int(i) for i in fn_idx], grayscale=False, radius=int(0.1 * h) // 2, sigma=sigma)
    # the factors as the f32 values maskaq receives
    a["color"] = tuple(float(np.float32(v)) for v in a["color"])
    x = augment(images, spec, a)
    print(f"  augmentation: crop {a['crop']}, colour {a['color']} order {a['order']}, blur radius {a['radius']} "
          f"sigma {sigma:.4f}; augmented range [{x.min().item():.3f}, {x.max().item():.3f}]")

    for t in q.parameters():
        t.requires_grad_(True)
    quant_leaves = []
    for site, st in sim.quantizers.items():
        for key in ("alpha", "zero_point"):
            st[key].requires_grad_(True)
            st[key].grad = None
            quant_leaves.append((f"{site}.{key}", st[key]))
    q.zero_grad(set_to_none=True)
    with torch.no_grad():
        lp, tp = mf.manual_forward(p, x)
    sim.reset_margins()
    lq, tq = mf.quant_forward(q, x, sim)
    o_p = torch.stack([o for _, o, _ in tp])
    o_q = torch.stack([o for _, o, _ in tq])
    wts, k = mf.obj_hd_weights(o_p, prefix)
    kd = mf.obj_kd(lq, lp, Q_T)
    hd = mf.obj_hd(o_p, o_q, wts, prefix)
    (kd + HD_COEF * hd).backward()
    imp = o_p[:, :, :, prefix:, :].abs().mean(-1).mean(2)
    print(f"  Q step: kd {kd.item():.6f}, hd {hd.item():.6f}; Q forward: smallest code distance to a rounding "
          f"boundary {sim.round_margin:.2e}, to a clamp bound {sim.clamp_margin:.2e}; hd top-{k} gap "
          f"{topk_gap(imp, k):.2e}")
    margins = [("Q-step rounding", sim.round_margin, MIN_CODE_MARGIN),
               ("Q-step clamp", sim.clamp_margin, MIN_CODE_MARGIN),
               ("hd top-k", topk_gap(imp, k), MIN_TOPK_GAP)]

    params = list(q.named_parameters()) + quant_leaves
    opt = torch.optim.SGD([t for _, t in params], lr=Q_LR, momentum=Q_MOMENTUM, nesterov=True, weight_decay=0.0,
                          foreach=False)
    # Momentum buffers of earlier steps, at each tensor's gradient scale (one scale for all alphas and
    # one for all zero points: a zero point's gradient is 0 where its site clamps nothing).
    qscale = {key: torch.stack([t.grad.abs().reshape(()) for n, t in quant_leaves if n.endswith(key)]).max()
              for key in (".alpha", ".zero_point")}
    quant_names = {n for n, _ in quant_leaves}
    for name, t in params:
        if name in quant_names:
            scale = qscale[".alpha" if name.endswith(".alpha") else ".zero_point"]
        else:
            scale = t.grad.pow(2).mean().sqrt()
        buf = scale * torch.randn(t.shape, generator=gen)
        opt.state[t] = {"momentum_buffer": buf.clone()}
        out[f"qstep.mom.{name}"] = buf
    opt.step()
    for name, t in params:
        out[f"qstep.after.{name}"] = t.detach().clone()
        out[f"qstep.mom_after.{name}"] = opt.state[t]["momentum_buffer"].clone()

    out.update({
        "qstep.images": images, "qstep.lr": torch.tensor([Q_LR]), "qstep.momentum": torch.tensor([Q_MOMENTUM]),
        "qstep.hd_coef": torch.tensor([HD_COEF]), "qstep.kd_temperature": torch.tensor([Q_T]),
        "qstep.crop": torch.tensor([float(v) for v in a["crop"]]), "qstep.flip": torch.tensor([1.0]),
        "qstep.jitter": torch.tensor([1.0]), "qstep.color": torch.tensor(a["color"]),
        "qstep.color_order": torch.tensor([float(i + 1) for i in a["order"]]),
        "qstep.grayscale": torch.tensor([0.0]), "qstep.blur_radius": torch.tensor([float(a["radius"])]),
        "qstep.blur_sigma": torch.tensor([sigma]), "qstep.augmented": x,
        "qstep.kd": kd.detach().reshape(1), "qstep.hd": hd.detach().reshape(1),
    })
    return margins


def make(offset):
    seed = mf.seed_of(NAME) + offset
    gen = torch.Generator().manual_seed(seed)
    spec, p = load_models()
    for t in p.parameters():
        t.requires_grad_(False)
    q = perturbed_copy(p, gen)
    out = {f"q.{n}": t.detach().clone() for n, t in q.named_parameters()}
    sim = MarginSim(BITS, BITS)
    sim.reset_margins()
    h = spec["model_args"]["img_size"]
    with torch.no_grad():
        mf.quant_forward(q, torch.randn(B, 3, h, h, generator=gen), sim)  # LSQ lazy init on noise
    for site, st in sim.quantizers.items():
        out[f"q.{site}.alpha"] = st["alpha"].detach().clone()
        out[f"q.{site}.zero_point"] = st["zero_point"].detach().clone()
        out[f"q.{site}.g"] = torch.tensor([st["g"]], dtype=torch.float64)
        out[f"q.{site}.signed"] = torch.tensor([1.0 if st["signed"] else 0.0])
    for t in q.parameters():
        t.requires_grad_(False)
    margins = synthesis(p, q, sim, spec, gen, out)
    margins += qstep(p, q, sim, spec, gen, out)
    bad = [f"{n} {v:.2e} < {m:.0e}" for n, v, m in margins if not v >= m]
    return out, bad


def main():
    global ARGS
    default_out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=default_out)
    ap.add_argument("--search", type=int, default=0, help="try seed offsets 0..N-1, print the first that keeps every margin")
    ap.add_argument("--models", default=default_out, help="where tiny_vit/ is (default: tests/fixtures)")
    ARGS = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if ARGS.search:
        for offset in range(ARGS.search):
            print(f"seed offset {offset}:")
            if not make(offset)[1]:
                print(f"seed offset {offset} keeps every margin")
                return
        return
    print(f"{NAME}:")
    out, bad = make(SEED_OFFSET)
    assert not bad, f"a rounding decision is too close to call (change SEED_OFFSET): {bad}"
    tensors = {k: v.detach().float().contiguous() for k, v in out.items()}
    folder = os.path.join(ARGS.out, NAME)
    os.makedirs(folder, exist_ok=True)
    meta = {"model": BASE, "wbits": str(BITS), "abits": str(BITS), "reference": "torch float32, docs/method.md §1.2, 1.3, 2, 3"}
    mf.save_file(tensors, os.path.join(folder, "fixture.safetensors"), metadata=meta)
    mf.summarize([folder])


if __name__ == "__main__":
    main()

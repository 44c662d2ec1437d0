#!/usr/bin/env python3
"""Train the small timm ViT that maskaq bundles (Fashion-MNIST, 28x28 grayscale, 10 classes).

Usage (CPU only; needs torch, timm, safetensors, numpy -- see tools/requirements.txt):

    python3 tools/train_fashion.py --out assets/fashion_vit [--epochs E] [--seed S]
        [--data /usr/share/datasets/fashion-mnist] [--slice assets/fashion-mnist-test-slice]
        [--embed-dim 64] [--depth 4] [--heads 4] [--mlp-ratio 2] [--threads 1]
        [--img-size 28] [--patch-size 4] [--label-smoothing 0.1] [--distill-from TEACHER_DIR]
    python3 tools/train_fashion.py --eval-only assets/fashion_vit [--slice DIR]

The data are the gzip IDX files of Fashion-MNIST (Debian package `dataset-fashion-mnist`, installed in
/usr/share/datasets/fashion-mnist: train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz); this script parses them itself (nothing is
downloaded). Training uses the 60,000 training images; the 10,000 test images are only evaluated
(per-epoch accuracy is logged, the reported number is the final epoch's, never the best epoch's).

Model: timm `vit_tiny_patch16_224` with model_args img_size=28, patch_size=4 (7x7 = 49 patches + class
token = 50 tokens; other sizes with --img-size/--patch-size), in_chans=1, num_classes=10 and the given embed_dim/depth/num_heads/mlp_ratio; plain
VisionTransformer (class token, qkv_bias, global_pool 'token', LayerNorm eps 1e-6, exact GELU).
With --distill-from TEACHER_DIR: a DeiT-style distilled model instead (timm
`deit_tiny_distilled_patch16_224` with the same model_args: class and distillation tokens, two heads
whose logits are averaged at inference), trained with DeiT's hard distillation: the loss is
0.5 * CE(class head, label) + 0.5 * CE(distillation head, the teacher's top-1 on the same augmented
batch); the teacher (a folder this script wrote, same image size) is frozen.

Preprocessing = timm's eval transform for the written pretrained_cfg (input_size (1,28,28), crop_pct
1.0, bicubic, mean 0.2860, std 0.3530): resize to 28 and center-crop 28 are no-ops on a 28x28 image, so
x = (pixel/255 - 0.2860) / 0.3530. With --img-size S other than 28 every image (train, test, --slice) is
first resized 28 -> S with PIL's bicubic filter on the uint8 image, rounded back to uint8 -- what timm's
eval transform (input_size (1,S,S), crop_pct 1.0, bicubic) does to a 28x28 PIL image, so maskaq's `eval`
on the 28 px IDX files sees the same inputs; the crop augmentation then works on the S px image with the
same 2 px padding. Training augmentation (train only): random horizontal flip and a
random 28x28 crop of the image zero-padded by 2 px (pixel value 0 = background, before normalizing).
Optimizer AdamW (lr 1e-3 at batch 128, weight decay 0.05, no decay on biases/norms/tokens/pos_embed),
linear warmup then cosine decay to 1e-5 per step, cross-entropy with label smoothing 0.1.

Determinism: fixed seed for random/numpy/torch, one explicit torch.Generator for shuffling and
augmentation, torch.use_deterministic_algorithms(True), --threads CPU threads (default 1). A rerun with
the same seed, thread count and library versions gives the same weights.

Output folder (--out):
  config.json        timm Hugging Face layout read by maskaq (architecture, num_classes, num_features,
                     global_pool, model_args, pretrained_cfg, label_names)
  model.safetensors  exactly model.state_dict() (F32, contiguous), via safetensors.torch.save_file
  TRAINING.md        command, seed, config, per-epoch train loss / test accuracy, final top-1/top-5 on
                     the full test set and on its first 1,000 images, wall time, versions
The final accuracies are measured with model.eval() and timm's own forward, after reloading the model
from the written config.json + model.safetensors.
"""

import argparse
import gzip
import json
import math
import os
import platform
import random
import shlex
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import safetensors
import timm
from safetensors.torch import load_file, save_file

MEAN = 0.2860
STD = 0.3530
ARCH = "vit_tiny_patch16_224"
ARCH_DISTILLED = "deit_tiny_distilled_patch16_224"
ARCH_SWIN = "swin_tiny_patch4_window7_224"
# Fashion-MNIST's classes in label order (Zalando Research's README), written to config.json as
# `label_names` so that maskaq can name them (predict, contact sheets).
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]


def read_idx(path):
    """Parse a (gzip) IDX file: returns a uint8 numpy array of shape dims."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not a uint8 IDX file (header {data[:4].hex()})")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {dims} = {np.prod(dims)} bytes, found {arr.size}")
    return arr.reshape(dims)


def load_split(folder, prefix):
    images = read_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"))
    assert images.shape[0] == labels.shape[0], (images.shape, labels.shape)
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def resize_u8(u8, size):
    """uint8 [B,H,W] -> uint8 [B,size,size] with PIL bicubic (timm's eval resize); no-op at the same size."""
    if u8.shape[-1] == size and u8.shape[-2] == size:
        return u8
    from PIL import Image
    out = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.BICUBIC)) for a in u8.numpy()])
    return torch.from_numpy(out)


def normalize(u8):
    """uint8 [B,S,S] -> float [B,1,S,S] in timm's normalized space."""
    return ((u8.float() / 255.0 - MEAN) / STD).unsqueeze(1)


def augment(u8, gen, pad=2):
    """Random horizontal flip + random crop of the zero-padded image (both per sample)."""
    b, h, w = u8.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None], u8.flip(-1), u8)
    padded = F.pad(x, (pad, pad, pad, pad))  # pixel value 0 = background
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])  # [B,h]
    cols = (dx[:, None] + torch.arange(w)[None, :])  # [B,w]
    idx_b = torch.arange(b)[:, None, None]
    return padded[idx_b, rows[:, :, None], cols[:, None, :]]


def make_config(args_like):
    d = args_like["embed_dim"]
    size = args_like.get("img_size", 28)
    arch = args_like.get("arch", ARCH)
    model_args = {"img_size": size, "patch_size": args_like.get("patch_size", 4), "in_chans": 1, "embed_dim": d}
    if arch == ARCH_SWIN:
        depths = args_like["depths"]
        model_args.update({"depths": depths, "num_heads": args_like["num_heads"],
                           "window_size": args_like["window_size"], "mlp_ratio": float(args_like["mlp_ratio"])})
        num_features, pool = d * 2 ** (len(depths) - 1), "avg"
    else:
        model_args.update({"depth": args_like["depth"], "num_heads": args_like["num_heads"],
                           "mlp_ratio": float(args_like["mlp_ratio"])})
        num_features, pool = d, "token"
    return {
        "architecture": arch,
        "num_classes": 10,
        "num_features": num_features,
        "global_pool": pool,
        "model_args": model_args,
        "pretrained_cfg": {
            "input_size": [1, size, size],
            "mean": [MEAN],
            "std": [STD],
            "crop_pct": 1.0,
            "interpolation": "bicubic",
            "num_classes": 10,
        },
        "label_names": CLASSES,
    }


def build_model(cfg):
    return timm.create_model(cfg["architecture"], pretrained=False, num_classes=cfg["num_classes"],
                             **cfg["model_args"])


def prefix_tokens(cfg):
    """Class token, plus the distillation token of a distilled DeiT (Swin has none)."""
    return {ARCH_DISTILLED: 2, ARCH_SWIN: 0}.get(cfg["architecture"], 1)


def swin_macs_per_image(cfg):
    """Linears, window attention products, PatchMerging reductions, head."""
    a = cfg["model_args"]
    grid = a["img_size"] // a["patch_size"]
    macs = grid * grid * a["in_chans"] * a["patch_size"] ** 2 * a["embed_dim"]
    for s, depth in enumerate(a["depths"]):
        r, c = grid >> s, a["embed_dim"] << s
        w = min(a["window_size"], r)
        t, hidden = r * r, int(c * a["mlp_ratio"])
        if s > 0:
            macs += t * 4 * (c // 2) * c
        macs += depth * (t * (3 * c * c + c * c + 2 * c * hidden) + 2 * t * w * w * c)
    return macs + (a["embed_dim"] << (len(a["depths"]) - 1)) * cfg["num_classes"]


def macs_per_image(cfg):
    if cfg["architecture"] == ARCH_SWIN:
        return swin_macs_per_image(cfg)
    a = cfg["model_args"]
    d, L, r, p = a["embed_dim"], a["depth"], a["mlp_ratio"], a["patch_size"]
    n_patch = (a["img_size"] // p) ** 2
    n = n_patch + prefix_tokens(cfg)
    hidden = int(d * r)
    patch = n_patch * a["in_chans"] * p * p * d
    block = n * (3 * d * d + d * d + 2 * d * hidden) + 2 * n * n * d  # linears + QK^T + AV
    return patch + L * block + d * cfg["num_classes"]


@torch.no_grad()
def evaluate(model, images, labels, batch=500):
    model.eval()
    if hasattr(model, "set_distilled_training"):
        model.set_distilled_training(False)
    top1 = top5 = 0
    for i in range(0, images.shape[0], batch):
        logits = model(normalize(images[i:i + batch]))
        y = labels[i:i + batch]
        t5 = logits.topk(5, dim=1).indices
        top1 += (t5[:, 0] == y).sum().item()
        top5 += (t5 == y[:, None]).any(dim=1).sum().item()
    n = images.shape[0]
    return top1 / n, top5 / n


def load_model_dir(folder):
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    model = build_model(cfg)
    sd = load_file(os.path.join(folder, "model.safetensors"))
    model.load_state_dict(sd, strict=True)
    model.eval()
    return cfg, model


def eval_slice(model, slice_dir, test_images, test_labels, img_size=28):
    """Accuracy on the shipped slice files; checks they equal the first N test images/labels."""
    si, sl = load_split(slice_dir, "t10k")
    si = resize_u8(si, img_size)
    n = si.shape[0]
    if test_images is not None:
        assert torch.equal(si, test_images[:n]) and torch.equal(sl, test_labels[:n]), \
            "slice differs from the first test images"
    return n, evaluate(model, si, sl)


def set_determinism(seed, threads):
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="assets/fashion_vit")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--slice", default=None, help="also evaluate the slice folder (t10k-*-idx*-ubyte.gz)")
    ap.add_argument("--eval-only", default=None, metavar="MODEL_DIR",
                    help="only evaluate a written model folder on the test set (and --slice)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr", type=float, default=1e-5)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--warmup-epochs", type=float, default=2.0)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--embed-dim", type=int, default=64)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--mlp-ratio", type=float, default=2.0)
    ap.add_argument("--swin", action="store_true",
                    help="train a Swin (timm swin_tiny_patch4_window7_224 with model_args) instead of a ViT")
    ap.add_argument("--depths", default="2,2", help="Swin: blocks per stage")
    ap.add_argument("--stage-heads", default="2,4", help="Swin: heads per stage")
    ap.add_argument("--window", type=int, default=7, help="Swin: window size")
    ap.add_argument("--img-size", type=int, default=28, help="resize the 28 px images to S px (PIL bicubic)")
    ap.add_argument("--patch-size", type=int, default=4)
    ap.add_argument("--distill-from", default=None, metavar="TEACHER_DIR",
                    help=f"train a DeiT-style distilled model ({ARCH_DISTILLED}) with hard distillation from this model")
    ap.add_argument("--max-steps", type=int, default=0, help="debug: stop each epoch after N steps")
    args = ap.parse_args()

    set_determinism(args.seed, args.threads)
    test_x, test_y = load_split(args.data, "t10k") if os.path.isdir(args.data) else (None, None)

    if args.eval_only:
        cfg, model = load_model_dir(args.eval_only)
        args.img_size = cfg["model_args"]["img_size"]
        if test_x is not None:
            test_x = resize_u8(test_x, args.img_size)
        if test_x is not None:
            t1, t5 = evaluate(model, test_x, test_y)
            print(f"test ({test_x.shape[0]} images): top-1 {t1 * 100:.2f}%  top-5 {t5 * 100:.2f}%")
            f1, f5 = evaluate(model, test_x[:1000], test_y[:1000])
            print(f"first 1000 test images: top-1 {f1 * 100:.2f}%  top-5 {f5 * 100:.2f}%")
        if args.slice:
            n, (s1, s5) = eval_slice(model, args.slice, test_x, test_y, args.img_size)
            print(f"slice {args.slice} ({n} images): top-1 {s1 * 100:.2f}%  top-5 {s5 * 100:.2f}%")
        return

    t_start = time.time()
    if args.img_size % args.patch_size:
        ap.error(f"--img-size {args.img_size} is not a multiple of --patch-size {args.patch_size}")
    train_x, train_y = load_split(args.data, "train")
    train_x, test_x = resize_u8(train_x, args.img_size), resize_u8(test_x, args.img_size)
    teacher = None
    if args.distill_from:
        tcfg, teacher = load_model_dir(args.distill_from)
        if tcfg["model_args"]["img_size"] != args.img_size:
            ap.error(f"--distill-from {args.distill_from}: the teacher takes {tcfg['model_args']['img_size']} px "
                     f"images, this model {args.img_size} px (--img-size)")
        for p in teacher.parameters():
            p.requires_grad_(False)
    if args.swin and teacher is not None:
        ap.error("--distill-from trains a distilled DeiT; it does not go with --swin")
    arch = ARCH_SWIN if args.swin else ARCH_DISTILLED if teacher is not None else ARCH
    ints = lambda text: [int(v) for v in text.split(",")]  # noqa: E731
    cfg = make_config({"embed_dim": args.embed_dim, "depth": args.depth,
                       "num_heads": ints(args.stage_heads) if args.swin else args.heads,
                       "depths": ints(args.depths), "window_size": args.window,
                       "mlp_ratio": args.mlp_ratio, "img_size": args.img_size,
                       "patch_size": args.patch_size, "arch": arch})
    model = build_model(cfg)
    if teacher is not None:
        model.set_distilled_training(True)
    n_params = sum(p.numel() for p in model.parameters())
    macs = macs_per_image(cfg)
    print(f"{arch} {cfg['model_args']}: {n_params} params, {macs / 1e6:.2f} M MACs/image", flush=True)

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        no = p.ndim <= 1 or name in ("cls_token", "pos_embed") or name.endswith("relative_position_bias_table")
        (no_decay if no else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.999))

    gen = torch.Generator().manual_seed(args.seed)
    n_train = train_x.shape[0]
    steps_per_epoch = n_train // args.batch  # drop the last partial batch
    if args.max_steps:
        steps_per_epoch = min(steps_per_epoch, args.max_steps)
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = int(args.warmup_epochs * steps_per_epoch)

    def lr_at(step):
        if step < warmup_steps:
            return args.lr * (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * t))

    history = []
    step = 0
    for epoch in range(1, args.epochs + 1):
        t0 = time.time()
        model.train()
        if teacher is not None:
            model.set_distilled_training(True)
        perm = torch.randperm(n_train, generator=gen)
        loss_sum = 0.0
        correct = 0
        for s in range(steps_per_epoch):
            idx = perm[s * args.batch:(s + 1) * args.batch]
            x = normalize(augment(train_x[idx], gen))
            y = train_y[idx]
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            if teacher is None:
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
            else:
                # DeiT's hard distillation: the distillation head learns the teacher's top-1.
                logits, logits_dist = model(x)
                with torch.no_grad():
                    t_label = teacher(x).argmax(1)
                loss = 0.5 * F.cross_entropy(logits, y, label_smoothing=args.label_smoothing) \
                    + 0.5 * F.cross_entropy(logits_dist, t_label)
                logits = (logits + logits_dist) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += loss.item()
            correct += (logits.argmax(1) == y).sum().item()
        train_time = time.time() - t0
        t1, t5 = evaluate(model, test_x, test_y)
        row = {"epoch": epoch, "lr_end": lr_at(step - 1), "train_loss": loss_sum / steps_per_epoch,
               "train_acc": correct / (steps_per_epoch * args.batch), "test_top1": t1, "test_top5": t5,
               "epoch_s": time.time() - t0, "train_s": train_time}
        history.append(row)
        print(f"epoch {epoch:3d}/{args.epochs}  lr {row['lr_end']:.2e}  loss {row['train_loss']:.4f}  "
              f"train {row['train_acc'] * 100:.2f}%  test top-1 {t1 * 100:.2f}%  top-5 {t5 * 100:.2f}%  "
              f"({row['epoch_s']:.1f} s, total {time.time() - t_start:.0f} s)", flush=True)

    train_wall = time.time() - t_start

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    sd = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(args.out, "model.safetensors"))

    # Final numbers: reload from the written files, eval mode, timm's own forward.
    _, final = load_model_dir(args.out)
    reloaded = final.state_dict()
    assert set(reloaded) == set(sd) and all(torch.equal(reloaded[k], sd[k]) for k in sd)
    top1, top5 = evaluate(final, test_x, test_y)
    f1, f5 = evaluate(final, test_x[:1000], test_y[:1000])
    slice_line = ""
    if args.slice and os.path.isdir(args.slice):
        n, (s1, s5) = eval_slice(final, args.slice, test_x, test_y, args.img_size)
        slice_line = (f"- Shipped slice `{args.slice}` ({n} images, checked identical to the first {n} "
                      f"test images): top-1 **{s1 * 100:.2f}%**, top-5 {s5 * 100:.2f}%\n")
    total_wall = time.time() - t_start
    print(f"final (reloaded, eval): test top-1 {top1 * 100:.2f}%  top-5 {top5 * 100:.2f}%; "
          f"first 1000: top-1 {f1 * 100:.2f}%  top-5 {f5 * 100:.2f}%; wall {total_wall:.0f} s", flush=True)

    cmd = "python3 " + " ".join(shlex.quote(a) for a in sys.argv)
    size, patch = args.img_size, args.patch_size
    n_tok = (size // patch) ** 2
    resized = "" if size == 28 else f"Every 28x28 image is first resized to {size}x{size} (PIL bicubic, uint8). "
    kind = "Swin" if args.swin else "DeiT (distilled)" if teacher is not None else "ViT"
    if args.swin:
        tokens = (f"a {size // patch}x{size // patch} patch grid, windows of {args.window}, stages "
                  f"{cfg['model_args']['depths']}, no class token")
    else:
        tokens = (f"{n_tok} patches + {'class and distillation tokens' if teacher is not None else 'class token'} "
                  f"= {n_tok + prefix_tokens(cfg)} tokens")
    lines = [
        "# Training record: maskaq's bundled Fashion-MNIST ViT" if size == 28 and patch == 4 and kind == "ViT"
        else f"# Training record: a Fashion-MNIST {kind} at {size} px, patch {patch}",
        "",
        "Written by `tools/train_fashion.py` (PyTorch on CPU; not trained with maskaq).",
        "",
        "## Command",
        "",
        "```",
        cmd,
        "```",
        "",
        f"- Seed: {args.seed}; CPU threads: {args.threads}; `torch.use_deterministic_algorithms(True)`",
        f"- Versions: Python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}, "
        f"safetensors {safetensors.__version__}, numpy {np.__version__}",
        f"- Machine: {platform.machine()}, {platform.processor() or platform.platform()}",
        f"- Wall time: {train_wall:.0f} s training + per-epoch evaluation, {total_wall:.0f} s in all "
        f"({total_wall / 60:.1f} min)",
        "",
        "## Model",
        "",
        f"timm `{arch}` with model_args `{json.dumps(cfg['model_args'])}`, num_classes 10: "
        f"{tokens}, {n_params:,} parameters, {macs / 1e6:.2f} M MACs per image (linears + attention matmuls).",
        f"{resized}Preprocessing (pretrained_cfg): input (1, {size}, {size}), crop_pct 1.0, bicubic, "
        "mean 0.2860, std 0.3530, i.e. x = (pixel/255 - 0.2860) / 0.3530.",
        "",
        "## Training",
        "",
        f"- Data: Fashion-MNIST from `{args.data}` (60,000 train / 10,000 test), IDX gzip parsed by the script",
        f"- {args.epochs} epochs x {steps_per_epoch} steps, batch {args.batch} (last partial batch dropped)",
        f"- AdamW lr {args.lr:g}, betas (0.9, 0.999), weight decay {args.weight_decay:g} (none on biases, "
        f"norms, cls_token, pos_embed, relative-position bias tables); linear warmup {args.warmup_epochs:g} epochs then cosine to "
        f"{args.min_lr:g}, per step",
        f"- Cross-entropy, label smoothing {args.label_smoothing:g}" + (
            "" if teacher is None else f"; DeiT hard distillation from `{args.distill_from}`: "
            "0.5 CE(class head, label) + 0.5 CE(distillation head, the teacher's top-1 on the augmented batch)"),
        f"- Augmentation: random horizontal flip, random {size}x{size} crop of the image zero-padded by 2 px",
        "- No dropout, no stochastic depth; timm default init",
        "- The test set was only evaluated; the reported accuracy is the final epoch's.",
        "",
        "## Per epoch",
        "",
        "| epoch | lr (end) | train loss | train acc | test top-1 | test top-5 | seconds |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in history:
        lines.append(f"| {r['epoch']} | {r['lr_end']:.2e} | {r['train_loss']:.4f} | {r['train_acc'] * 100:.2f}% "
                     f"| {r['test_top1'] * 100:.2f}% | {r['test_top5'] * 100:.2f}% | {r['epoch_s']:.1f} |")
    lines += [
        "",
        "## Final accuracy (model reloaded from config.json + model.safetensors, eval mode, timm forward)",
        "",
        f"- Full test set (10,000 images): top-1 **{top1 * 100:.2f}%**, top-5 {top5 * 100:.2f}%",
        f"- First 1,000 test images: top-1 **{f1 * 100:.2f}%**, top-5 {f5 * 100:.2f}%",
    ]
    with open(os.path.join(args.out, "TRAINING.md"), "w") as f:
        f.write("\n".join(lines) + "\n" + slice_line)


if __name__ == "__main__":
    main()

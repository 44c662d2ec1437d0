#!/usr/bin/env python3
"""PyTorch reference time for the step counts of a finished `maskaq quantize` run.

    python3 tools/fast_reference.py RUN/report.json BENCH.json [BENCH2.json] [--wall SECONDS]

BENCH.json is the output of tools/bench_torch_maskaq.py at the run's synthesis batch (and
BENCH2.json at its training batch when that differs). The reference is the per-step median of
the PyTorch transcription times the run's counts:
  synthesis iterations = syntheses (epochs with `refreshed`) x ceil(num_images / synth batch) x iters
  training steps       = epochs x ceil(num_images / train batch)   (frozen epochs compute them too)
It leaves out what both sides do once (model loading, calibration, evaluation, writing files), so
the comparison is of the two phases, with maskaq's whole wall time shown beside them.
Prints a markdown table and, with --json, the numbers as JSON.
"""

import argparse
import json
import math


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("bench", nargs="+", help="bench_torch_maskaq.py JSON outputs")
    ap.add_argument("--wall", type=float, help="maskaq quantize's wall time in seconds")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    r = json.load(open(a.report))
    benches = [json.load(open(p)) for p in a.bench]
    cfg = r["config"]
    n = cfg["num_images"]
    sb, tb = cfg["synth"]["batch"], cfg["train"]["batch"]

    def bench_at(batch, key):
        for b in benches:
            if b["batch"] == batch:
                return b[key]
        raise SystemExit(f"no bench JSON at batch {batch} among {[b['batch'] for b in benches]}")

    syntheses = sum(1 for e in r["epochs"] if e.get("refreshed"))
    synth_iters = syntheses * math.ceil(n / sb) * cfg["synth"]["iters"]
    steps = len(r["epochs"]) * math.ceil(n / tb)
    t_synth = bench_at(sb, "synth_iteration_ms") * synth_iters / 1e3
    t_train = bench_at(tb, "train_step_ms") * steps / 1e3
    out = {
        "adapter": r["adapter"],
        "torch": benches[0].get("framework"), "torch_device": benches[0].get("device"),
        "synthesis_iterations": synth_iters, "training_steps": steps,
        "maskaq_synthesis_s": r["synthesis_seconds"], "maskaq_training_s": r["training_seconds"],
        "maskaq_total_s": r["total_seconds"], "maskaq_wall_s": a.wall,
        "torch_synthesis_s": t_synth, "torch_training_s": t_train, "torch_total_s": t_synth + t_train,
    }
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"maskaq on {r['adapter']}; PyTorch ({out['torch']}) on {out['torch_device']}")
    print(f"{synth_iters} synthesis iterations at batch {sb}, {steps} training steps at batch {tb}\n")
    print("| phase | maskaq | PyTorch (per-step median x count) | maskaq / PyTorch |")
    print("|---|---|---|---|")
    for name, m, t in [("synthesis", r["synthesis_seconds"], t_synth),
                       ("Q training", r["training_seconds"], t_train),
                       ("both", r["synthesis_seconds"] + r["training_seconds"], t_synth + t_train)]:
        print(f"| {name} | {m:.1f} s | {t:.1f} s | {m / t:.2f} |")
    wall = f", wall {a.wall:.1f} s" if a.wall else ""
    print(f"\nmaskaq quantize in all: {r['total_seconds']:.1f} s in report.json{wall}")


if __name__ == "__main__":
    main()

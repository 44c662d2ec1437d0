#!/usr/bin/env python3
"""Summarise the runs of tools/quantize_table.sh as the Markdown table of docs/results.md.

    python3 tools/quantize_table.py RUNS_DIR [--json OUT.json]

Reads RUNS_DIR/{fp,ptq-B,<row>-B}.eval.json (full test set) and RUNS_DIR/<row>-B/report.json
(per-epoch accuracy on the bundled slice, timings). Missing cells print as "not run".
"""

import argparse
import json
import os

BITS = ["W3A3", "W4A4", "W4A8"]
ROWS = [
    ("psaq", "PSAQ-ViT objective (`--method psaq`)", "--method psaq"),
    ("mimiq", "MimiQ objective (`--method mimiq`)", "--method mimiq"),
    ("maskaq", "**MaskAQ** (`--method maskaq`)", "--method maskaq"),
    ("maskaq-seed1", "MaskAQ, another seed", "--method maskaq --seed 1"),
    ("no-entropy", "MaskAQ without the entropy term", "--no-entropy"),
    ("no-alignment", "MaskAQ without the masked alignment", "--no-alignment"),
    ("no-mask-weights", "MaskAQ without the mask weights in distillation", "--no-mask-weights"),
    ("no-refresh", "MaskAQ without refresh", "--no-refresh"),
    ("lsq-init", "MaskAQ with the authors' LSQ init on noise", "--init lsq"),
]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("--json")
    a = ap.parse_args()
    summary = {"fp": load(os.path.join(a.runs, "fp.eval.json")), "cells": {}}
    header = "| row | command (B = the column's bits) | " + " | ".join(BITS) + " |"
    lines = [header, "|" + "---|" * (2 + len(BITS))]
    fp = summary["fp"]
    lines.append("| full precision | `maskaq eval --model assets/fashion_vit --data TEST` | "
                 + " | ".join(f"{fp['top1']:.2f}" if fp else "not run" for _ in BITS) + " |")
    ptq = []
    for b in BITS:
        e = load(os.path.join(a.runs, f"ptq-{b}.eval.json"))
        summary["cells"][f"ptq-{b}"] = e
        ptq.append(f"{e['top1']:.2f}" if e else "not run")
    lines.append("| min-max PTQ on noise | `maskaq ptq --model assets/fashion_vit --bits B --calib noise "
                 "--out Q`, then `eval --quantized Q` | " + " | ".join(ptq) + " |")
    for key, label, flags in ROWS:
        cells = []
        for b in BITS:
            e = load(os.path.join(a.runs, f"{key}-{b}.eval.json"))
            rep = load(os.path.join(a.runs, f"{key}-{b}", "report.json"))
            cell = {"full_test_top1": e["top1"] if e else None}
            if rep:
                cell.update(slice_top1_per_epoch=[ep["top1"] for ep in rep["epochs"]],
                            slice_ptq_top1=rep.get("ptq_noise_top1"), seconds=rep.get("total_seconds"),
                            adapter=rep.get("adapter"))
            summary["cells"][f"{key}-{b}"] = cell
            cells.append(f"{e['top1']:.2f}" if e else "not run")
        cmd = f"`maskaq quantize --bits B {flags} --out R`, then `eval --quantized R/quantized.safetensors`"
        lines.append(f"| {label} | {cmd} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()

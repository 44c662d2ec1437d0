#!/usr/bin/env python3
"""Runs `maskaq quantize` for every (model, bits, method, seed) cell and reports mean ± sd.

Each run writes its own folder under --out (OUT/<model>/<bits>/<method>/seed<k>); a folder whose
report.json exists is not run again, so an interrupted sweep continues where it stopped. The
table (OUT/table.md) and every number behind it (OUT/table.json) are rewritten after each run.

Rows: full precision and min-max PTQ on noise are measured inside every run (the same model and
evaluation data each time, so their spread is 0 unless the evaluation differs); `maskaq` and
`mimiq` are the synthesis methods; `real` is real-data QAT (`--real-data`, the same Q training on
real training images). The number of a run is its final epoch's top-1 (never the best epoch).

Only the standard library: the binary does the work.

Example (the bundled model, W4A4 and W3A3, 3 seeds, full Fashion-MNIST test set):
  cargo build --release
  python3 tools/seeds.py --out runs/seeds --bits W4A4 W3A3 --seeds 1 2 3 \\
      --eval-data /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \\
      --real-data /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def run_cell(args, model, bits, method, seed, folder):
    report = os.path.join(folder, "report.json")
    if os.path.exists(report):
        return json.load(open(report)), 0.0
    cmd = [args.binary, "quantize", "--preset", args.preset, "--bits", bits, "--seed", str(seed),
           "--out", folder, "--overwrite"]
    if model != "bundled":
        cmd += ["--model", model]
    if args.eval_data:
        cmd += ["--eval-data", args.eval_data]
    if method == "real":
        cmd += ["--real-data", args.real_data]
    else:
        cmd += ["--method", method]
    cmd += args.extra
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.time()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    if r.returncode != 0:
        sys.exit(f"seeds.py: the run above failed with exit code {r.returncode}")
    return json.load(open(report)), time.time() - t0


def stats(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return {"mean": statistics.fmean(vals), "sd": sd, "n": len(vals), "values": vals}


def write_table(out, cells):
    """cells: {(model, bits): {row: [values]}}"""
    lines = ["| model | bits | row | mean ± sd top-1 (%) | seeds | per seed |", "|---|---|---|---|---|---|"]
    data = []
    for (model, bits), rows in cells.items():
        for row, vals in rows.items():
            s = stats(vals)
            if s is None:
                continue
            per = ", ".join(f"{v:.2f}" for v in s["values"])
            lines.append(f"| {model} | {bits} | {row} | {s['mean']:.2f} ± {s['sd']:.2f} | {s['n']} | {per} |")
            data.append({"model": model, "bits": bits, "row": row, **s})
    tmp = os.path.join(out, "table.md.tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, os.path.join(out, "table.md"))
    tmp = os.path.join(out, "table.json.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, os.path.join(out, "table.json"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--binary", default="target/release/maskaq")
    ap.add_argument("--models", nargs="+", default=["bundled"], help="model folders ('bundled' = the default)")
    ap.add_argument("--bits", nargs="+", default=["W4A4"])
    ap.add_argument("--methods", nargs="+", default=["maskaq", "mimiq", "real"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--eval-data")
    ap.add_argument("--real-data", help="labelled training data for the `real` row")
    ap.add_argument("extra", nargs="*", help="further quantize flags, after --")
    args = ap.parse_args()
    if "real" in args.methods and not args.real_data:
        ap.error("the `real` row needs --real-data")
    os.makedirs(args.out, exist_ok=True)
    cells = {}
    for model in args.models:
        name = os.path.basename(os.path.normpath(model))
        for bits in args.bits:
            rows = cells.setdefault((name, bits), {"full precision": [], "PTQ noise": []})
            for method in args.methods:
                for seed in args.seeds:
                    folder = os.path.join(args.out, name, bits, method, f"seed{seed}")
                    rep, secs = run_cell(args, model, bits, method, seed, folder)
                    if method == args.methods[0]:
                        rows["full precision"].append(rep.get("fp_top1"))
                        rows["PTQ noise"].append(rep.get("ptq_noise_top1"))
                    rows.setdefault(method, []).append(rep.get("final_top1"))
                    print(f"seeds.py: {name} {bits} {method} seed {seed}: final top-1 "
                          f"{rep.get('final_top1')} (PTQ {rep.get('ptq_noise_top1')}, {secs:.0f} s)", flush=True)
                    write_table(args.out, cells)
    print(open(os.path.join(args.out, "table.md")).read())


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Summarise a `maskaq synth` log.json: per batch, each loss term at a few iterations and its
mean over the last quarter of the iterations (the terms are logged unweighted).

Usage: python3 tools/synth_log_summary.py SYNTH_DIR [SYNTH_DIR ...]
"""

import json
import os
import sys

TERMS = ("ssim", "entropy", "alignment", "ce", "tv", "total")


def main():
    for d in sys.argv[1:]:
        with open(os.path.join(d, "log.json")) as f:
            log = json.load(f)
        iters = log["config"]["iters"]
        w = log["config"]["weights"]
        print(f"{d}: {log['model']}, {log['images']} images x {iters} iterations, {log['seconds']:.0f} s, "
              f"weights {w}")
        for b in log["batches"]:
            rows = b["terms"]
            late = [r for r in rows if r["iter"] >= iters * 3 // 4]
            picks = [rows[0]] + [r for r in rows if r["iter"] in (iters // 4 - 1, iters // 2 - 1)] + [rows[-1]]
            for r in picks:
                vals = "  ".join(f"{t} {r[t]:.4f}" for t in TERMS if r.get(t) is not None)
                print(f"  batch {b['batch']} iter {r['iter']:4d}: {vals}")
            mean = "  ".join(f"{t} {sum(r[t] for r in late) / len(late):.4f}" for t in TERMS
                             if late and late[0].get(t) is not None)
            print(f"  batch {b['batch']} mean over iter >= {iters * 3 // 4}: {mean}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Runs `maskaq quantize` for every (model, bits, method, seed) cell and reports mean ± sd.

Each run writes its own folder under --out (OUT/<model>/<bits>/<method>/seed<k>); a folder whose
report.json exists is not run again, so an interrupted sweep continues where it stopped. The
table (OUT/table.md) and every number behind it (OUT/table.json) are rewritten after each run.

Rows: full precision and min-max PTQ on noise are measured inside every run (the same model and
evaluation data each time, so their spread is 0 unless the evaluation differs); `maskaq` and
`mimiq` (and `psaq`) are the synthesis methods, `maskaq-as-coded` / `maskaq-last-stage` MaskAQ on
a Swin with each reading of the masked alignment (docs/swin.md); `real` is real-data QAT (`--real-data`, the same Q training on
real training images). The number of a run is its final epoch's top-1 (never the best epoch).

With --test-data, every run's final Q and its PTQ baseline (and each model in full precision)
are also evaluated on that file (`maskaq eval --quantized ... --json`), the results kept in the
run folder (test_eval.json) and the table reports those numbers, with each method's gain over
the same seed's PTQ baseline (paired: mean ± sd of the per-seed differences). The per-epoch
evaluation during a run stays on --eval-data (a slice is cheap enough for every epoch).

--jobs N runs N cells at once (on lavapipe each gets cores/N threads through LP_NUM_THREADS unless
that is set; on a GPU the runs share it). The table is the same whatever the order of completion.

Only the standard library: the binary does the work.

Example (the bundled model, W4A4 and W3A3, 3 seeds, per-epoch numbers on the bundled 1,000-image
slice, final numbers on the full Fashion-MNIST test set):
  cargo build --release
  python3 tools/seeds.py --out runs/seeds --bits W4A4 W3A3 --seeds 0 1 2 \\
      --eval-data assets/fashion-mnist-test-slice/t10k-images-idx3-ubyte.gz \\
      --test-data /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \\
      --real-data /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

The Swin table (docs/results.md §10; the flags after -- are the demo preset's Swin settings,
spelled out so the commands are the same before and after the preset learned them):
  python3 tools/seeds.py --out runs/swin --jobs 2 --models assets/fashion_swin --bits W4A4 W3A3 W4A8 \\
      --methods mimiq maskaq-as-coded psaq maskaq-last-stage --seeds 0 \\
      --eval-data assets/fashion-mnist-test-slice/t10k-images-idx3-ubyte.gz \\
      --test-data /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \\
      -- --synth-color-jitter 0 --synth-noise 0 --eval-limit 500
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time


BUNDLED_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "fashion_vit")


# Rows that are a method plus a setting (Swin's two readings of the masked alignment, docs/swin.md).
METHOD_FLAGS = {
    "maskaq-as-coded": ["--method", "maskaq", "--swin-alignment", "as-coded"],
    "maskaq-last-stage": ["--method", "maskaq", "--swin-alignment", "last-stage"],
}


class RunFailed(Exception):
    pass


def child_env(args):
    env = dict(os.environ)
    if args.jobs > 1 and "LP_NUM_THREADS" not in env:
        env["LP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.jobs))
    return env


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
        cmd += METHOD_FLAGS.get(method, ["--method", method])
    cmd += args.extra
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.time()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, env=child_env(args))
    if r.returncode != 0:
        raise RunFailed(f"`{' '.join(cmd)}` failed with exit code {r.returncode}")
    return json.load(open(report)), time.time() - t0


def eval_top1(args, model, quantized):
    """top-1 (%) of `model` (in full precision, or with `quantized`) on --test-data."""
    # `eval` has no bundled default: name the bundled model's folder.
    path = BUNDLED_MODEL if model == "bundled" else model
    cmd = [args.binary, "eval", "--data", args.test_data, "--json", "--model", path]
    if quantized:
        cmd += ["--quantized", quantized]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=child_env(args))
    if r.returncode != 0:
        raise RunFailed(f"`{' '.join(cmd)}` failed with exit code {r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])["top1"]


def test_eval(args, model, folder, cache):
    """The run's final Q and PTQ baseline on --test-data, cached in the run folder."""
    path = os.path.join(folder, "test_eval.json")
    if os.path.exists(path):
        res = json.load(open(path))
        if res.get("data") == os.path.abspath(args.test_data):
            return res
    # Runs of one seed share their PTQ baseline (the same noise): evaluate each file once.
    ptq = os.path.join(folder, "ptq_noise.safetensors")
    digest = hashlib.sha256(open(ptq, "rb").read()).hexdigest()
    res = {"data": os.path.abspath(args.test_data),
           "fp_top1": cache.get(("fp", model), lambda: eval_top1(args, model, None)),
           "ptq_noise_top1": cache.get(("ptq", digest), lambda: eval_top1(args, model, ptq)),
           "final_top1": eval_top1(args, model, os.path.join(folder, "quantized.safetensors"))}
    with open(path + ".tmp", "w") as f:
        json.dump(res, f, indent=1)
    os.replace(path + ".tmp", path)
    return res


class OnceCache:
    """Thread-safe memo: each key's value is computed once, by the first job that asks."""

    def __init__(self):
        self.lock, self.values, self.locks = threading.Lock(), {}, {}

    def get(self, key, compute):
        with self.lock:
            key_lock = self.locks.setdefault(key, threading.Lock())
        with key_lock:
            if key not in self.values:
                self.values[key] = compute()
            return self.values[key]


def stats(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return {"mean": statistics.fmean(vals), "sd": sd, "n": len(vals), "values": vals}


def table_cells(jobs, done, name_of):
    """{(model, bits): {row: {seed: top-1}}} in the order of the command line."""
    cells = {}
    for job in jobs:
        model, bits, method, seed = job
        rows = cells.setdefault((name_of(model), bits), {"full precision": {}, "PTQ noise": {}})
        rep = done.get(job)
        if rep is None:
            continue
        # FP and PTQ depend on the model, the bits and the seed, not on the method.
        rows["full precision"].setdefault(seed, rep.get("fp_top1"))
        rows["PTQ noise"].setdefault(seed, rep.get("ptq_noise_top1"))
        rows.setdefault(method, {})[seed] = rep.get("final_top1")
    return cells


def write_table(out, cells, what):
    """cells: {(model, bits): {row: {seed: value}}}; gains are paired with the PTQ row's seeds."""
    lines = [f"Top-1 (%) on {what}; final epoch of each run.", "",
             "| model | bits | row | mean ± sd | gain over PTQ noise (paired) | seeds | per seed |",
             "|---|---|---|---|---|---|---|"]
    data = []
    for (model, bits), rows in cells.items():
        ptq = rows.get("PTQ noise", {})
        for row, by_seed in rows.items():
            seeds = sorted(k for k, v in by_seed.items() if v is not None)
            s = stats([by_seed[k] for k in seeds])
            if s is None:
                continue
            gain, gain_txt = None, ""
            if row not in ("full precision", "PTQ noise"):
                gain = stats([by_seed[k] - ptq[k] for k in seeds if ptq.get(k) is not None])
                if gain:
                    gain_txt = f"{gain['mean']:+.2f} ± {gain['sd']:.2f}"
            per = ", ".join(f"{by_seed[k]:.2f} (seed {k})" for k in seeds)
            lines.append(f"| {model} | {bits} | {row} | {s['mean']:.2f} ± {s['sd']:.2f} | {gain_txt} "
                         f"| {s['n']} | {per} |")
            data.append({"model": model, "bits": bits, "row": row, "seeds": seeds, **s,
                         "gain_over_ptq": gain})
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
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--eval-data")
    ap.add_argument("--jobs", type=int, default=1, help="cells run at once (see above)")
    ap.add_argument("--test-data", help="labelled data the final numbers are measured on (see above)")
    ap.add_argument("--real-data", help="labelled training data for the `real` row")
    ap.add_argument("extra", nargs="*", help="further quantize flags, after --")
    args = ap.parse_args()
    if "real" in args.methods and not args.real_data:
        ap.error("the `real` row needs --real-data")
    if args.jobs < 1:
        ap.error("--jobs must be at least 1")
    os.makedirs(args.out, exist_ok=True)
    cache, done, lock = OnceCache(), {}, threading.Lock()
    what = args.test_data or args.eval_data or "the binary's default evaluation data"
    jobs = [(model, bits, method, seed) for model in args.models for bits in args.bits
            for method in args.methods for seed in args.seeds]

    def name_of(model):
        return os.path.basename(os.path.normpath(model))

    def run(job):
        model, bits, method, seed = job
        folder = os.path.join(args.out, name_of(model), bits, method, f"seed{seed}")
        rep, secs = run_cell(args, model, bits, method, seed, folder)
        if args.test_data:
            rep = test_eval(args, model, folder, cache)
        with lock:
            done[job] = rep
            print(f"seeds.py: {name_of(model)} {bits} {method} seed {seed}: final top-1 "
                  f"{rep.get('final_top1')} (PTQ {rep.get('ptq_noise_top1')}, {secs:.0f} s)", flush=True)
            write_table(args.out, table_cells(jobs, done, name_of), what)

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run, job) for job in jobs]
        failed = [f.exception() for f in futures if f.exception() is not None]
    if failed:
        sys.exit("seeds.py: " + "; ".join(str(e) for e in failed))
    print(open(os.path.join(args.out, "table.md")).read())


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# `maskaq quantize --preset fast` on DeiT-Tiny end to end, timed, with the PyTorch reference for
# the same step counts (tools/bench_torch_maskaq.py per-step medians x counts; tools/fast_reference.py).
# Random weights (deit_tiny_full's hashed weights, written to runs/deit_tiny_hashed by
# tools/make_fixtures.py --hashed-model): a speed measurement; no ImageNet evaluation.
#
#   tools/fast_deit.sh [OUT] [extra quantize flags...]     (MASKAQ=path/to/maskaq: a prebuilt binary)
#
# Writes OUT/ (the run), OUT/torch_b*.json, OUT/reference.md. Extra flags shrink the run for a
# plumbing check, e.g. `tools/fast_deit.sh /tmp/f --num-images 4 --synth-iters 2 --epochs 2`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/fast_deit}
shift || true
M=${MASKAQ:-target/release/maskaq}
if [ ! -x "$M" ]; then cargo build --release; fi
MODEL=runs/deit_tiny_hashed
if [ ! -f $MODEL/model.safetensors ]; then
  python3 tools/make_fixtures.py --hashed-model $MODEL
fi
mkdir -p "$OUT"
s=$(date +%s.%N)
"$M" quantize --model $MODEL --preset fast --out "$OUT" --overwrite "$@"
wall=$(python3 -c "print(round($(date +%s.%N) - $s, 1))")
echo "maskaq quantize wall time: $wall s"
read -r sb tb < <(python3 -c "import json; c=json.load(open('$OUT/report.json'))['config']; print(c['synth']['batch'], c['train']['batch'])")
benches=()
for b in $(printf '%s\n' "$sb" "$tb" | sort -u); do
  python3 tools/bench_torch_maskaq.py --model $MODEL --batch "$b" > "$OUT/torch_b$b.json"
  benches+=("$OUT/torch_b$b.json")
done
python3 tools/fast_reference.py "$OUT/report.json" "${benches[@]}" --wall "$wall" | tee "$OUT/reference.md"

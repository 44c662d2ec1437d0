#!/bin/bash
# The results table of docs/results.md: every method row x bit-width column of `maskaq quantize`
# on the bundled model (demo preset), each final Q evaluated on the full Fashion-MNIST test set.
#
#   tools/quantize_table.sh [RUNS_DIR] [PARALLEL]
#
# Needs the full test set (Debian: apt-get install dataset-fashion-mnist) and a release build.
# Each run is skipped when RUNS_DIR/<row>-<bits>.eval.json exists (so an interrupted table
# resumes). On lavapipe with PARALLEL=2 (one llvmpipe thread each) a run takes 5-8 minutes.
# Then: python3 tools/quantize_table.py RUNS_DIR
set -u
RUNS=${1:-runs/table}
PAR=${2:-2}
TEST=${TEST:-/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/maskaq
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release) || exit 1
[ -f "$TEST" ] || { echo "no Fashion-MNIST test set at $TEST (set TEST=...)"; exit 1; }
mkdir -p "$RUNS"
export BIN TEST RUNS ROOT
job() {
  local n=$1 b=$2; shift 2
  local o=$RUNS/$n-$b
  [ -f $o.eval.json ] && grep -q top1 $o.eval.json && return 0
  local s=$(date +%s)
  (cd "$ROOT" && LP_NUM_THREADS=${LP_NUM_THREADS:-1} "$BIN" quantize --bits $b --out $o --overwrite "$@") > $o.log 2>&1
  local rc=$?
  "$BIN" eval --model "$ROOT/assets/fashion_vit" --quantized $o/quantized.safetensors --data "$TEST" --json \
    > $o.eval.json 2>>$o.log
  echo "$n $b rc=$rc wall_s=$(( $(date +%s)-s )) $(cat $o.eval.json)"
}
export -f job
for b in W3A3 W4A4 W4A8; do
  f=$RUNS/ptq-$b.eval.json
  if ! grep -q top1 $f 2>/dev/null; then
    "$BIN" ptq --model "$ROOT/assets/fashion_vit" --bits $b --calib noise --out $RUNS/ptq-$b.safetensors &&
      "$BIN" eval --model "$ROOT/assets/fashion_vit" --quantized $RUNS/ptq-$b.safetensors --data "$TEST" --json > $f
  fi
done
grep -q top1 $RUNS/fp.eval.json 2>/dev/null ||
  "$BIN" eval --model "$ROOT/assets/fashion_vit" --data "$TEST" --json > $RUNS/fp.eval.json
xargs -P "$PAR" -L 1 bash -c 'job "$@"' _ <<'JOBS'
maskaq W4A4 --method maskaq
maskaq W3A3 --method maskaq
mimiq W4A4 --method mimiq
mimiq W3A3 --method mimiq
psaq W4A4 --method psaq
psaq W3A3 --method psaq
no-entropy W4A4 --method maskaq --no-entropy
no-entropy W3A3 --method maskaq --no-entropy
no-alignment W4A4 --method maskaq --no-alignment
no-alignment W3A3 --method maskaq --no-alignment
no-mask-weights W4A4 --method maskaq --no-mask-weights
no-mask-weights W3A3 --method maskaq --no-mask-weights
no-refresh W4A4 --method maskaq --no-refresh
no-refresh W3A3 --method maskaq --no-refresh
maskaq W4A8 --method maskaq
lsq-init W4A4 --method maskaq --init lsq
lsq-init W3A3 --method maskaq --init lsq
mimiq W4A8 --method mimiq
psaq W4A8 --method psaq
no-entropy W4A8 --method maskaq --no-entropy
no-alignment W4A8 --method maskaq --no-alignment
no-mask-weights W4A8 --method maskaq --no-mask-weights
no-refresh W4A8 --method maskaq --no-refresh
lsq-init W4A8 --method maskaq --init lsq
maskaq-seed1 W4A4 --method maskaq --seed 1
maskaq-seed1 W3A3 --method maskaq --seed 1
JOBS

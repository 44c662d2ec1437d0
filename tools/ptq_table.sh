#!/usr/bin/env bash
# Measures the README's PTQ table on the bundled model: FP, and min-max PTQ calibrated on
# Gaussian noise and on 512 real training images, at W8A8, W4A8, W4A4, W3A3, each evaluated
# with `maskaq eval` on the full Fashion-MNIST test set. Needs the Debian package
# dataset-fashion-mnist and a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
M=assets/fashion_vit
D=/usr/share/datasets/fashion-mnist
BIN=./target/release/maskaq
OUT=${OUT:-/tmp/maskaq-ptq}
mkdir -p "$OUT"
top1() { python3 -c 'import json,sys; print(json.load(sys.stdin)["top1"])'; }
echo "| model | W8A8 | W4A8 | W4A4 | W3A3 |"
echo "|---|---|---|---|---|"
fp=$($BIN eval --model $M --data $D/t10k-images-idx3-ubyte.gz --json | top1)
echo "| FP (no quantization) | $fp | $fp | $fp | $fp |"
for calib in noise real; do
    row="| min-max PTQ, $calib |"
    for bits in W8A8 W4A8 W4A4 W3A3; do
        if [ $calib = noise ]; then src=noise; num=64; else src=$D/train-images-idx3-ubyte.gz; num=512; fi
        $BIN ptq --model $M --bits $bits --calib $src --num $num --out "$OUT/$calib-$bits.safetensors" 2>/dev/null
        acc=$($BIN eval --model $M --quantized "$OUT/$calib-$bits.safetensors" --data $D/t10k-images-idx3-ubyte.gz --json | top1)
        row="$row $acc |"
    done
    echo "$row"
done

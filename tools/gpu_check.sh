#!/usr/bin/env bash
# The GPU check of issue 13 (docs/results.md): GPU tests, kernel tuning and the speed comparison
# with PyTorch on one NVIDIA machine, in one run of under 8 minutes.
#
#   tools/gpu_check.sh prepare   # here (x86-64 Linux with Debian's archive): builds and packs
#   tools/gpu_check.sh run OUT   # on the GPU machine, from the repository root
#
# `prepare` builds the release binary and the release test binaries the check runs, strips them
# and packs them as .gpu/bin.tar.xz, and downloads the Vulkan loader packages into .gl/ (both
# folders are git-ignored through .git/info/exclude; together about 7 MiB). Ship .gpu and .gl
# with the working tree (the device tool: carry [".gpu", ".gl"]). `run` installs the loader, points Vulkan at NVIDIA's driver, then:
#   1. the GPU tests: every matmul variant forced in turn (CPU reference, finite differences,
#      PyTorch parity of the tiny ViT and Swin, full-size DeiT-Tiny through the tuned picks), the
#      tuner tests, the kernel tests and the whole-model parity (DeiT-T, Swin-T);
#   2. `maskaq tune` and `maskaq bench` (with `--tune off` and with the tuned cache) for DeiT-T and
#      DeiT-S at batch 16, and `bench --kernels` for DeiT-T;
#   3. tools/bench_torch.py and tools/bench_torch_maskaq.py for the same models and batch;
#   4. `bench --unfused` for DeiT-T (what the fused kernels gain).
# Everything it prints is also in OUT (one log per step).
set -euo pipefail
cd "$(dirname "$0")/.."

TESTS=(matmul_variants tuning kernels kernel_gradients parity step_parity)

prepare() {
    cargo build --release
    cargo test --release --no-run --message-format=json "${TESTS[@]/#/--test=}" >/tmp/gpu_check_build.json
    rm -rf .gpu/stage && mkdir -p .gpu/stage
    cp target/release/maskaq .gpu/stage/
    python3 - <<'EOF'
import json, shutil
for line in open('/tmp/gpu_check_build.json'):
    m = json.loads(line)
    if m.get('reason') == 'compiler-artifact' and m.get('executable') and 'test' in m['target']['kind']:
        shutil.copy(m['executable'], '.gpu/stage/' + m['target']['name'])
EOF
    strip .gpu/stage/*
    tar -C .gpu/stage -cJf .gpu/bin.tar.xz . && rm -rf .gpu/stage
    # The test binaries find tests/fixtures through the absolute path they were built in.
    pwd > .gpu/built_in
    if ! ls .gl/*.deb >/dev/null 2>&1; then
        mkdir -p .gl /tmp/amd64/partial
        local o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
        # shellcheck disable=SC2086
        apt-get $o update -qq && (cd .gl && apt-get $o download libvulkan1)
    fi
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo '/.gl/' >> .git/info/exclude
    du -sh .gpu .gl
}

step() {  # step NAME COMMAND...: runs it with its output in OUT/NAME.log, never stops the check
    local name=$1; shift
    echo "== $name: $*"
    local t0=$SECONDS
    if "$@" >"$OUT/$name.log" 2>&1; then echo "   ok ($((SECONDS - t0)) s)"; else echo "   FAILED ($((SECONDS - t0)) s)"; fi
    tail -n 25 "$OUT/$name.log"
}

run() {
    OUT=${1:?give the output folder}
    mkdir -p "$OUT" .gpu/bin
    tar -C .gpu/bin -xJf .gpu/bin.tar.xz
    local built_in; built_in=$(cat .gpu/built_in)
    if [ "$built_in" != "$PWD" ] && [ ! -e "$built_in" ]; then mkdir -p "$(dirname "$built_in")"; ln -s "$PWD" "$built_in"; fi
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
    export WGPU_BACKEND=vulkan CI=true
    local bin=.gpu/bin/maskaq cache="$OUT/kernels.json"
    step devices "$bin" devices
    for t in "${TESTS[@]}"; do step "test_$t" ".gpu/bin/$t" --test-threads=1; done
    for arch in deit_tiny_patch16_224 deit_small_patch16_224; do
        step "tune_$arch" "$bin" --tune-cache "$cache" tune --arch "$arch" --batch 16 --rounds 5
        step "bench_off_$arch" "$bin" --tune off bench --arch "$arch" --batch 16 --json
        step "bench_tuned_$arch" "$bin" --tune-cache "$cache" bench --arch "$arch" --batch 16 --json
        step "torch_$arch" python3 tools/bench_torch.py --arch "$arch" --batch 16
        step "torch_maskaq_$arch" python3 tools/bench_torch_maskaq.py --arch "$arch" --batch 16
    done
    step kernels_deit_tiny "$bin" --tune-cache "$cache" bench --arch deit_tiny_patch16_224 --batch 16 --kernels
    # What the fused launches gain on a GPU (the same bits in fewer launches).
    step bench_unfused_deit_tiny "$bin" --unfused --tune-cache "$cache" bench --arch deit_tiny_patch16_224 --batch 16 --json
}

case "${1:-}" in
    prepare) prepare ;;
    run) run "${2:-}" ;;
    *) echo "usage: tools/gpu_check.sh prepare | run OUT" >&2; exit 2 ;;
esac

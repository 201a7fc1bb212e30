#!/usr/bin/env bash
# The README's run command: builds SAGE, runs a small GPU function natively
# and under SAGE, checks both give the same output, and prints what SAGE saw
# (the set-up breakdown from the trace); then parallel set-up, and sharing:
# a function that uploads weights, run twice with sage-run --share (no broker
# set up: sage-run starts one of the user's own, which the second run finds
# and maps what the first published). Without an NVIDIA GPU it says so and runs on
# the simulated driver (tests/fakecuda), labelled as simulated.
#   scripts/demo.sh [--build DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=build
[ "${1:-}" = "--build" ] && build=$2
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n '2,7p' "$0"; exit 0; fi

scripts/install-deps.sh
[ -f "$build/build.ninja" ] || meson setup "$build" >/dev/null
ninja -C "$build" >/dev/null

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if nvidia-smi -L >/dev/null 2>&1 && [ -x "$nvcc" ]; then
  mode="GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
  "$nvcc" -O2 -o "$tmp/function" tests/gpu/static_cudart.cu
  "$nvcc" -O2 -Itests/gpu -o "$tmp/reset_loop" tests/gpu/reset_loop.cu
  "$nvcc" -O2 -Itests/gpu -o "$tmp/share_weights" tests/gpu/share_weights.cu
  run=("$tmp/function")
  setup_demo=("$tmp/reset_loop")
  share_demo=("$tmp/share_weights" "$tmp/weights.bin")
  envs=()
else
  mode="SIMULATED driver (no NVIDIA GPU here: tests/fakecuda stands in for libcuda.so.1)"
  run=("$build/tests/integration/workload" --threads 2)
  # A function whose own start-up (imports, weight reads) takes 400 ms before it touches CUDA.
  setup_demo=("$build/tests/integration/setup-test-linked" overlap 400)
  share_demo=("$build/tests/integration/share-test" 256 7)
  envs=(LD_LIBRARY_PATH="$(realpath "$build/tests/fakecuda")" SAGE_FAKE_INIT_MS=150 SAGE_FAKE_CTX_MS=100)
fi
echo "== SAGE demo on $mode"
echo "== 1. the function, natively"
t0=$(date +%s%N)
env "${envs[@]}" "${run[@]}" | tee "$tmp/native.out"
t1=$(date +%s%N)
echo "== 2. the same function under SAGE (sage-run --trace)"
env "${envs[@]}" "$build/tools/sage-run" --trace "$tmp/trace.json" -- "${run[@]}" | tee "$tmp/sage.out"
t2=$(date +%s%N)
if cmp -s "$tmp/native.out" "$tmp/sage.out"; then same=identical; else same=DIFFERENT; fi
awk -v s="$same" -v a="$t0" -v b="$t1" -v c="$t2" \
  'BEGIN { printf "== 3. outputs: %s; wall time native %.1f ms, under SAGE %.1f ms\n", s, (b - a) / 1e6, (c - b) / 1e6 }'
echo "== 4. what SAGE saw (sage-trace summary)"
"$build/tools/sage-trace" summary "$tmp/trace.json"
echo "== 5. parallel set-up: ${setup_demo[*]##*/}, natively and under SAGE"
echo "-- native:"
env "${envs[@]}" "${setup_demo[@]}" 2>&1 | grep -E 'setup_ms|waited' || true
echo "-- SAGE (the context is warmed while the function starts / idles):"
env "${envs[@]}" "$build/tools/sage-run" -- "${setup_demo[@]}" 2>&1 | grep -E 'setup_ms|waited' || true
echo "== 6. sharing (sage-run --share, experimental): ${share_demo[0]##*/} natively, then twice under sage-run --share"
# No saged set up: sage-run uses the system broker if one runs, else starts the
# user's own (here in a fresh runtime folder, so run 1 starts from nothing),
# which stays 3 s after a run for the next one to find.
mkdir -m 700 "$tmp/run"
envs+=(XDG_RUNTIME_DIR="$tmp/run")
env "${envs[@]}" "${share_demo[@]}" > "$tmp/share.native.out"
for i in 1 2; do
  env "${envs[@]}" "$build/tools/sage-run" --share --broker-grace 3 --trace "$tmp/share$i.json" -- \
    "${share_demo[@]}" > "$tmp/share$i.out"
  if cmp -s "$tmp/share.native.out" "$tmp/share$i.out"; then out=identical; else out=DIFFERENT; same=DIFFERENT; fi
  printf -- '-- run %s (output %s to native): ' "$i" "$out"
  "$build/tools/sage-trace" summary "$tmp/share$i.json" | grep '^sharing' || echo "no sharing (no broker?)"
done
echo "-- broker: $(env "${envs[@]}" "$build/tools/sage-run" --share --broker-grace 3 -- "$build/tools/sagectl" stats)"
[ "$same" = identical ]

#!/usr/bin/env bash
# Sharing coverage (issue 14's "Done when"): per workload (jax, resnet50, bert,
# gpt2, cfunc, llm) the shared fraction on a warm broker (libsage's counters),
# native and SAGE upload times side by side; the cold upload (a broker of its
# own per run, page cache warm) of cfunc and llm in GB/s with its CPU time;
# 16 gpt2 at once, native and SAGE; small-model hits against native's copy.
# The processes and the figures: sharing_coverage.py.
set -uo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/bench/sharing-coverage.sh [--build DIR] [--quick] [--only LIST] [--runs N] [options]

  --build DIR     meson build folder (intercept/libsage.so, daemon/saged, tools/sage-trace) (default: build)
  --runs N        warm rounds (native + SAGE) per workload and cold runs of cfunc/llm (default 5)
  --quick         2 rounds, a 2 GiB llm, one round of 16 gpt2 at once; budget 230 s
                  (<= 240 s on an H100/H200 once the weights exist in --data)
  --only LIST     comma list of workloads (jax,resnet50,bert,gpt2,cfunc,llm); the full
                  run in two calls of < 10 min: --only cfunc,llm and --only jax,resnet50,bert,gpt2,
                  then: scripts/bench/sharing_coverage.py merge OUT A.json B.json
  --budget SEC    start no workload later than SEC after the start (default 560)
  --fake          a dry run on the simulated driver (tests/fakecuda in DIR): the C
                  function stands in for every workload; the figures mean nothing
  --arch ARCH     nvcc -arch for share_cfunc.cu (default sm_90)
  --data DIR      generated weights (default DIR/bench-bin/sharing-coverage/data, kept)
  -h, --help      this help

Writes $OUT/sharing-coverage.json (+ .txt); logs in DIR/bench-bin/sharing-coverage/logs.
Environment: NVCC, PYTHON (torch, torchvision, transformers, safetensors; jax for
the jax workload), SAGE_BENCH_COMMIT. Exit: 0 every output identical, 1 not, 77 no GPU.
USAGE
}

build_dir=build quick=0 only= runs=5 budget= fake=0 arch=sm_90 data=
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}
. "$here/lib.sh"
bench_args sharing-coverage "--build=build_dir --quick=quick=1 --only=only --runs=runs --budget=budget --fake=fake=1
    --arch=arch --data=data" "$@"
[ "$quick" = 1 ] && [ "$runs" = 5 ] && runs=2
[ -n "$budget" ] || budget=$([ "$quick" = 1 ] && echo 230 || echo 560)
case "$runs$budget" in *[!0-9]*|'') echo "sharing-coverage: --runs/--budget take numbers" >&2; exit 2 ;; esac

bench_build sharing-coverage
build=$build_dir
for f in daemon/saged tools/sage-trace; do
    [ -e "$build/$f" ] || { echo "sharing-coverage: $build/$f not found: build SAGE first" >&2; exit 1; }
done
bench_bin_dir sharing-coverage
bin=$bin_dir data=${data:-$bin_dir/data} out=${OUT:-$bin_dir/out}
mkdir -p "$data" || exit 1

if [ "$fake" = 1 ]; then
    fakedir=$build/tests/fakecuda
    [ -e "$fakedir/libcuda.so.1" ] || { echo "sharing-coverage: --fake needs $fakedir/libcuda.so.1" >&2; exit 1; }
    export LD_LIBRARY_PATH=$fakedir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    cfunc=$bin/sharing_coverage_fake
    inc=${SAGE_BENCH_CUDA_INCLUDE:-/usr/local/cuda/include}
    ${CC:-cc} -O2 -I"$inc" -o "$cfunc" "$here/sharing_coverage_fake.c" -L"$fakedir" -l:libcuda.so.1 ||
        { echo "sharing-coverage: cannot build the simulated C function" >&2; exit 1; }
    unset CUDA_VISIBLE_DEVICES
else
    bench_require_gpu sharing-coverage
    bench_require_nvcc sharing-coverage
    cfunc=$bin/share_cfunc
    TMPDIR=$bin "$nvcc" -arch="$arch" -O2 -I"$here" -o "$cfunc" "$here/share_cfunc.cu" ||
        { echo "sharing-coverage: nvcc failed on share_cfunc.cu" >&2; exit 1; }
    bench_bytecode "$bin" "$python" || exit 1
fi

echo "sharing-coverage: $([ "$fake" = 1 ] && echo "simulated driver (dry run)" || nvidia-smi -L | head -n1); runs $runs; budget ${budget} s; results to $out"
"$python" "$here/sharing_coverage.py" run --out "$out" --build "$build" --data "$data" --logs "$logs" \
    --cfunc "$cfunc" --runs "$runs" --budget "$budget" ${only:+--only "$only"} \
    $([ "$quick" = 1 ] && echo --quick) $([ "$fake" = 1 ] && echo --fake)
rc=$?
if [ "$fake" = 1 ] && [ -z "$only" ]; then
    "$python" "$here/sharing_coverage.py" check-dry-run "$out/sharing-coverage.json" || rc=1
fi
exit "$rc"

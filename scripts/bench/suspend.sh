#!/usr/bin/env bash
# Suspend benchmark (issue 12 item 7): per workload one invocation in a new
# native process (cold), in a keep-alive process (warm), and in a SAGE
# instance suspended while idle (resumed, and the part of it spent resuming);
# GPU memory of a suspended instance; 8 and 16 suspended instances invoked at
# once; a FaaS-shaped run (HTTP function servers under a seeded Poisson
# stream, keep-alive vs SAGE_SUSPEND_IDLE); oversubscription under saged
# --instance-memory. Every output is compared with the native one.
# The processes: suspend_runner.py; the figures and the table: suspend_report.py.
set -uo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/bench/suspend.sh [--build DIR] [--quick] [--only LIST] [--runs N] [options]

  --build DIR       meson build folder (intercept/libsage.so, daemon/saged, tools/sagectl) (default: build)
  --quick           cfunc + resnet50, 8 at once, a small oversubscription, a short FaaS
                    run; budget 230 s (<= 240 s on an H100/H200 with the set-up)
  --only LIST       comma list of parts (workloads,concurrent,faas,oversub) and/or
                    workloads (cfunc,resnet50,bert,gpt2,llm)
  --runs N          suspend/resume rounds and cold runs per workload (default 3)
  --budget SEC      start nothing estimated to end past SEC after the start
                    (default 560, --quick 230); what is skipped is listed
  --resume-by HOW   auto (default: libsage's gate where it has SAGE_SUSPEND_IDLE,
                    else `sagectl resume` before the call), gate, operator
  --fake            a dry run against the simulated driver (tests/fakecuda, built in
                    DIR): cfunc and sgemm (cuBLAS on the CPU), no GPU needed; the
                    figures mean nothing
  --arch ARCH       nvcc -arch for the cfunc kernel (default sm_90)
  --data DIR        folder for generated weights (default: DIR/bench-bin/suspend/data, kept)
  -h, --help        this help

Writes $OUT/suspend.json and $OUT/suspend.txt (the table); logs in
DIR/bench-bin/suspend/logs. Environment: NVCC, PYTHON (torch, torchvision,
transformers, safetensors for the Python workloads), SAGE_BENCH_COMMIT.
Exit: 0 done with every output identical, 1 a mismatch or a failed
invocation, 77 no GPU or no nvcc.
USAGE
}

build=build quick=0 only= runs=3 budget= resume_by=auto fake=0 arch=sm_90 data=
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build=${2:?--build needs a folder}; shift 2 ;;
        --quick) quick=1; shift ;;
        --only) only=${2:?--only needs a list}; shift 2 ;;
        --runs) runs=${2:?--runs needs a number}; shift 2 ;;
        --budget) budget=${2:?--budget needs seconds}; shift 2 ;;
        --resume-by) resume_by=${2:?}; shift 2 ;;
        --fake) fake=1; shift ;;
        --arch) arch=${2:?}; shift 2 ;;
        --data) data=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "suspend: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$budget" ] || budget=$([ "$quick" = 1 ] && echo 230 || echo 560)
case "$runs$budget" in *[!0-9]*|'') echo "suspend: --runs/--budget take numbers" >&2; exit 2 ;; esac
[ "$runs" -ge 1 ] || { echo "suspend: --runs must be at least 1" >&2; exit 2; }
case "$resume_by" in auto|gate|operator) ;; *) echo "suspend: --resume-by auto|gate|operator" >&2; exit 2 ;; esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}
. "$here/lib.sh"
[ -d "$build" ] || { echo "suspend: build folder '$build' not found" >&2; exit 1; }
build=$(cd "$build" && pwd)
for f in intercept/libsage.so daemon/saged tools/sagectl; do
    [ -e "$build/$f" ] || { echo "suspend: $build/$f not found: build SAGE first" >&2; exit 1; }
done
bin=$build/bench-bin/suspend
logs=$bin/logs
data=${data:-$bin/data}
rm -rf "$logs"
mkdir -p "$logs" "$data" || exit 1
out=${OUT:-$bin/out}

if [ "$fake" = 1 ]; then
    fakedir=$build/tests/fakecuda
    [ -e "$fakedir/libcuda.so.1" ] || { echo "suspend: --fake needs $fakedir/libcuda.so.1" >&2; exit 1; }
    export LD_LIBRARY_PATH=$fakedir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    module=$bin/suspend_cfunc_fake.so
    ${CC:-cc} -shared -fPIC -O2 -I"$here/../../tests/fakecuda" -o "$module" "$here/suspend_cfunc_fake.c" ||
        { echo "suspend: cannot build the simulated kernel" >&2; exit 1; }
    # sgemm's two cuBLAS calls on the CPU (the simulated device memory is host memory).
    mkdir -p "$bin/fakeblas"
    ${CC:-cc} -shared -fPIC -O2 -o "$bin/fakeblas/libcublas.so" "$here/suspend_cublas_fake.c" ||
        { echo "suspend: cannot build the simulated cuBLAS" >&2; exit 1; }
    export LD_LIBRARY_PATH=$bin/fakeblas:$LD_LIBRARY_PATH
    unset CUDA_VISIBLE_DEVICES
else
    bench_require_gpu suspend
    bench_require_nvcc suspend
    module=$bin/suspend_cfunc.cubin
    TMPDIR=$bin "$nvcc" -arch="$arch" --cubin -O2 -o "$module" "$here/suspend_cfunc.cu" ||
        { echo "suspend: nvcc failed on suspend_cfunc.cu" >&2; exit 1; }
    bench_bytecode "$bin" "$python" || exit 1
fi

# The driver's restore alone (part concurrent's baseline): the checkpoint API on native instances' pids.
restore_tool=$bin/suspend_restore
cuda_inc=${CUDA_INCLUDE:-}
for d in /usr/local/cuda/include /usr/include; do
    [ -n "$cuda_inc" ] || { [ -e "$d/cuda.h" ] && cuda_inc=$d; }
done
${CC:-cc} -std=c11 -D_GNU_SOURCE -O2 -I"${cuda_inc:-/usr/local/cuda/include}" -o "$restore_tool" "$here/suspend_restore.c" -ldl -lpthread ||
    { echo "suspend: cannot build suspend_restore.c" >&2; exit 1; }

echo "suspend: $([ "$fake" = 1 ] && echo "simulated driver (dry run)" || nvidia-smi -L | head -n1); budget ${budget} s; results to $out"
"$python" "$here/suspend_runner.py" --out "$out" --build "$build" --logs "$logs" --data "$data" \
    --module "$module" --restore-tool "$restore_tool" --runs "$runs" --budget "$budget" --resume-by "$resume_by" \
    ${only:+--only "$only"} $([ "$quick" = 1 ] && echo --quick) $([ "$fake" = 1 ] && echo --fake)
rc=$?
# A dry run checks itself: the whole flow, every figure, nothing held while suspended.
if [ "$fake" = 1 ] && [ -z "$only" ] && [ -z "${SAGE_BENCH_SUSPEND_ASSUME:-}" ]; then
    "$python" "$here/suspend_report.py" check-dry-run "$out/suspend.json" "$runs" || rc=1
fi
exit "$rc"

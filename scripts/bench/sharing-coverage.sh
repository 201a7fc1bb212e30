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
  --runs N        samples per figure: cold runs of cfunc/llm, rounds (native + SAGE) per
                  workload (default 5; --quick 1)
  --quick         small sizes: cfunc 2 GiB, llm 1 GiB, 8 gpt2 at once (not 16), one round
                  of them (gpt2's fraction from those); budget 110 s + margin 30 s: <= 140 s
                  on an H100 with the weights made inside the call (settings say so; the
                  plan, each step's expected length, is printed at the start)
  --only LIST     comma list of workloads (jax,resnet50,bert,gpt2,cfunc,llm); the full
                  run in two calls of < 9 min: --only cfunc,llm and --only jax,resnet50,bert,gpt2,
                  then: scripts/bench/sharing_coverage.py merge OUT A.json B.json
  --rounds-at-once N  rounds of gpt2 at once, native and SAGE each, in turn first (default 2; --quick 1): more
                  samples of the 16 at once, whose uploads meet the others' model building by chance
  --variant NAME:SAGE_VAR=VALUE[,...]  gpt2 at once also with SAGE under these settings, in the same
                  rounds (native, SAGE, SAGE with NAME; which goes first turns): e.g.
                  --variant predict:SAGE_SHARE_PREDICT=1; several separated by spaces (one
                  quoted argument); reported beside, not a target
  --budget SEC    start no step later than SEC after the script's start (default 450)
  --margin SEC    the deadline is budget + margin (default 60; --quick 30): what still runs
                  then is killed and the document written; give a caller's timeout more
  --no-place      SAGE without learned placement (default: SAGE_SHARE_PLACE, a folder per broker)
  --fake          a dry run on the simulated driver (tests/fakecuda in DIR): the C
                  function stands in for every workload; the figures mean nothing
  --arch ARCH     nvcc -arch for share_cfunc.cu (default sm_90)
  --data DIR      generated weights (default DIR/bench-bin/sharing-coverage/data, kept;
                  the names are suspend.sh's and share_hits.sh's: one folder serves them all
                  in one call, each file made once)
  -h, --help      this help

Writes $OUT/sharing-coverage.json (+ .txt) at the start, after every step and at the
end (atomically; on SIGTERM/SIGINT too): "state" (complete, partial: why, interrupted
by SIGTERM; running: the run was killed -9) and "missing" say what it lacks. Logs in
DIR/bench-bin/sharing-coverage/logs. Environment: SAGE_BENCH_IDLE_MS (default 300: resnet50, bert and gpt2
idle this long after their invocation, as a serverless instance between calls, and compute
once more; SAGE runs them with SAGE_SUSPEND=1, so assembly waits for the idleness; 0: they
exit at once and assembly runs at the first launch), NVCC, PYTHON (torch, torchvision,
transformers, safetensors; numpy + jax for the jax workload, else it is skipped),
SAGE_BENCH_COMMIT, SAGE_BENCH_KEEP_STDERR (each SAGE process's stderr kept beside its trace
in the logs, e.g. with SAGE_VERBOSE=3: every assembled run's shape, mapped or missed). Exit: 0 every output identical, 1 not or a process failed, 77 no
GPU, 128+N stopped by signal N.
USAGE
}

started=$(date +%s.%N)
build_dir=build quick=0 only= runs=5 budget= margin= fake=0 arch=sm_90 data= place=1 at_once= variant=
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}
. "$here/lib.sh"
bench_args sharing-coverage "--build=build_dir --quick=quick=1 --only=only --runs=runs --rounds-at-once=at_once --variant=variant --budget=budget --margin=margin
    --fake=fake=1 --arch=arch --data=data --no-place=place=0" "$@"
[ "$quick" = 1 ] && [ "$runs" = 5 ] && runs=1
[ -n "$budget" ] || budget=$([ "$quick" = 1 ] && echo 110 || echo 450)
[ -n "$margin" ] || margin=$([ "$quick" = 1 ] && echo 30 || echo 60)
case "$runs$budget$margin${at_once:-0}" in *[!0-9]*|'') echo "sharing-coverage: --runs/--rounds-at-once/--budget/--margin take numbers" >&2; exit 2 ;; esac
[ "${at_once:-1}" -ge 1 ] || { echo "sharing-coverage: --rounds-at-once takes 1 or more" >&2; exit 2; }
variants=()  # --variant "A:SAGE_X=1 B:SAGE_Y=2": one a word
read -r -a words <<< "$variant"
for v in ${words[@]+"${words[@]}"}; do
    "$python" "$here/sharing_coverage.py" check-variant "$v" || exit 2
    variants+=(--variant "$v")
done

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
    bench_bytecode "$bin" "$python" || exit 1
    # The libraries' byte code on every CPU beside nvcc (untimed; else the first import on a
    # fresh machine compiles it on one CPU, inside the weights' generation).
    timeout 60 "${pyw[@]}" "$here/suite_gen.py" compile > "$logs/compile.json" 2>&1 &
    compiling=$!
    cfunc=$bin/share_cfunc
    TMPDIR=$bin "$nvcc" -arch="$arch" -O2 -I"$here" -o "$cfunc" "$here/share_cfunc.cu" ||
        { echo "sharing-coverage: nvcc failed on share_cfunc.cu" >&2; exit 1; }
    wait "$compiling" || echo "sharing-coverage: NOTE: compiling the byte code: exit $? (see $logs/compile.json)"
fi

echo "sharing-coverage: $([ "$fake" = 1 ] && echo "simulated driver (dry run)" || nvidia-smi -L | head -n1); runs $runs; placement $([ "$place" = 1 ] && echo on || echo off)"
echo "sharing-coverage: no step starts after ${budget} s; all ends by $((budget + margin)) s from the start (what runs then is killed, the results written): give a caller's timeout > $((budget + margin + 5)) s; results to $out"
# The runner in the background, so that a SIGTERM/SIGINT to this script
# reaches it (it writes what it has and exits 128+N); `timeout` signals the
# whole process group anyway.
"$python" "$here/sharing_coverage.py" run --out "$out" --build "$build" --data "$data" --logs "$logs" \
    --cfunc "$cfunc" --runs "$runs" ${at_once:+--rounds-at-once "$at_once"} ${variants[@]+"${variants[@]}"} --budget "$budget" --margin "$margin" --started "$started" ${only:+--only "$only"} \
    $([ "$quick" = 1 ] && echo --quick) $([ "$fake" = 1 ] && echo --fake) $([ "$place" = 0 ] && echo --no-place) &
runner=$!
trap 'kill -TERM "$runner" 2>/dev/null' TERM
trap 'kill -INT "$runner" 2>/dev/null' INT
rc=0
wait "$runner" || rc=$?
while kill -0 "$runner" 2>/dev/null; do  # a signal ended the wait, not the runner: wait for its document
    rc=0
    wait "$runner" || rc=$?
done
trap - TERM INT
if [ "$fake" = 1 ] && [ -z "$only" ] && [ "$rc" -lt 128 ]; then
    "$python" "$here/sharing_coverage.py" check-dry-run "$out/sharing-coverage.json" || rc=1
    # A run that stops early (budget, SIGTERM) leaves a valid partial document.
    "$python" "$here/sharing_coverage.py" check-partial "$out/partial" bash "$here/sharing-coverage.sh" --fake \
        --build "$build" --only cfunc || rc=1
fi
exit "$rc"

#!/usr/bin/env bash
# Startup benchmark: time from exec to first kernel completion of a small
# static-cudart function (cudaFree(0) + one kernel + sync), natively and
# under libsage, with 1 and 8 processes started at once. Variants are
# interleaved run by run (order rotated) so drift cancels; medians reported.
# Whatever SAGE environment the caller sets (SAGE_SOCKET for a running
# broker, say) reaches the SAGE runs.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/bench/startup.sh [--build DIR] [--runs N] [--concurrency "1 8"] [--gap SEC] [--arch ARCH]

Time from exec to first kernel completion, native vs SAGE.

  --build DIR          meson build folder holding intercept/libsage.so (default: build)
  --runs N             runs per (variant, concurrency) (default: 5)
  --concurrency LIST   process counts started at once (default: "1 8")
  --gap SEC            pause between runs so the previous processes are gone (default: 0.5)
  --arch ARCH          nvcc -arch value (default: sm_90)
  -h, --help           this help

Binaries and logs go to DIR/bench-bin. With OUT set, writes OUT/startup.json.
Environment: NVCC (nvcc to use), PYTHON (default python3).
Exit: 0 measured, 1 error, 77 no GPU or no nvcc.
EOF
}

build_dir=build
runs=5
concurrency="1 8"
gap=0.5
arch=sm_90
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}

. "$here/lib.sh"
bench_args startup "--build=build_dir --runs=runs --concurrency=concurrency --gap=gap --arch=arch" "$@"
bench_require_gpu startup
bench_require_nvcc startup

bench_build startup

bin_dir=$build_dir/bench-bin
logs=$bin_dir/startup
rm -rf "$logs"
mkdir -p "$logs" "$bin_dir/tmp"
echo "startup: building into $bin_dir"
env "TMPDIR=$bin_dir/tmp" "$nvcc" "-arch=$arch" -O2 -I"$here" -o "$bin_dir/startup_probe" "$here/startup_probe.cu"
env "TMPDIR=$bin_dir/tmp" "$nvcc" -O2 -cudart none -o "$bin_dir/startup_launch" "$here/startup_launch.c"

limit=(timeout --kill-after=10 300)
variants=(native sage)

# run_batch VARIANT CONCURRENCY RUN: N processes at once, one JSON line each.
run_batch() {
    local variant=$1 conc=$2 run=$3
    local out=$logs/$variant.c$conc.$run.jsonl err=$logs/$variant.c$conc.$run.stderr
    local envs=(-u LD_PRELOAD -u SAGE_TRACE -u SAGE_BENCH_CHILD_PRELOAD)
    # The launcher itself runs without libsage: only the probes get it.
    [ "$variant" = sage ] && envs+=("SAGE_BENCH_CHILD_PRELOAD=$libsage")
    "${limit[@]}" env "${envs[@]}" "$bin_dir/startup_launch" "$conc" "$bin_dir/startup_probe" \
        > "$out" 2> "$err"
}

for ((run = 1; run <= runs; run++)); do
    for conc in $concurrency; do
        order=("${variants[@]}")
        (( run % 2 == 0 )) && order=("${variants[1]}" "${variants[0]}")
        for v in "${order[@]}"; do
            if ! run_batch "$v" "$conc" "$run"; then
                echo "startup: $v x$conc failed in run $run: $(tail -n1 "$logs/$v.c$conc.$run.stderr")" >&2
                exit 1
            fi
            sleep "$gap"
        done
    done
    echo "startup: run $run/$runs done"
done

# The table and OUT/startup.json: startup_report.py, through bench_result
# (the one result schema of scripts/bench).
BENCH_LOGS=$logs BENCH_RUNS=$runs BENCH_CONC=$concurrency BENCH_OUT=${OUT:-} \
BENCH_NVCC=$nvcc BENCH_LIBSAGE=$libsage "$python" "$here/startup_report.py"

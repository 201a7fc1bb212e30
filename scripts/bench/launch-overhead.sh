#!/usr/bin/env bash
# Hook overhead on the launch path: runs scripts/bench/launch_overhead.cu
# natively, under libsage with tracing off, and under libsage with tracing on,
# interleaved round by round (the order rotates each round) so that clock and
# thermal drift cancel out, then compares medians. Target: tracing off costs
# at most 2% per launch.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/bench/launch-overhead.sh [--build DIR] [--rounds N] [--launches N]
                                        [--sync-launches N] [--reps N] [--no-trace] [--arch ARCH]
                                        [--baseline DIR] [--suspend]

Measures the cost per kernel launch natively and under libsage (tracing off
and on), interleaved, and prints a side-by-side table.

  --build DIR         meson build folder holding intercept/libsage.so (default: build)
  --rounds N          rounds of (native, sage, sage+trace), order rotated (default: 5)
  --launches N        launches per async sample (default: 200000)
  --sync-launches N   launch+sync iterations per sync sample (default: 20000)
  --reps N            samples per process (default: 7)
  --no-trace          leave out the tracing-on variant
  --baseline DIR      add a variant with DIR/intercept/libsage.so (another commit's build, tracing
                      off), interleaved with the others: the regression check of a change
  --suspend           add a variant with SAGE_SUSPEND=1 (the suspend gate on; no broker needed)
  --arch ARCH         nvcc -arch value (default: sm_90)
  -h, --help          this help

Binary and logs go to DIR/bench-bin. With OUT set, writes OUT/launch-overhead.json.
Environment: NVCC (nvcc to use), PYTHON (default python3).
Exit: 0 measured (whatever the verdict), 1 error, 77 no GPU or no nvcc.
EOF
}

build_dir=build
rounds=5
launches=200000
sync_launches=20000
reps=7
with_trace=1
with_suspend=0
baseline_dir=""
arch=sm_90
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}

. "$here/lib.sh"
bench_args launch-overhead "--build=build_dir --rounds=rounds --launches=launches --sync-launches=sync_launches
    --reps=reps --no-trace=with_trace=0 --baseline=baseline_dir --suspend=with_suspend=1 --arch=arch" "$@"
bench_require_gpu launch-overhead
bench_require_nvcc launch-overhead

bench_build launch-overhead
base_libsage=""
if [ -n "$baseline_dir" ]; then
    base_libsage=$(cd "$baseline_dir" && pwd)/intercept/libsage.so
    [ -f "$base_libsage" ] || { echo "launch-overhead: $base_libsage not found" >&2; exit 1; }
fi

bin_dir=$build_dir/bench-bin
logs=$bin_dir/launch-overhead
rm -rf "$logs"
mkdir -p "$logs" "$bin_dir/tmp"
prog=$bin_dir/launch_overhead
echo "launch-overhead: building $prog"
env "TMPDIR=$bin_dir/tmp" "$nvcc" "-arch=$arch" -O2 -I"$here" -o "$prog" "$here/launch_overhead.cu"

variants=(native sage)
[ "$with_trace" = 1 ] && variants+=(sage_trace)
[ -n "$base_libsage" ] && variants+=(sage_base)
[ "$with_suspend" = 1 ] && variants+=(sage_suspend)
args=(--launches "$launches" --sync-launches "$sync_launches" --reps "$reps")

# A hung run is killed, and the script stops with an error.
limit=(timeout --kill-after=10 600)

run_variant() {
    local variant=$1 round=$2
    local out=$logs/$variant.$round.json err=$logs/$variant.$round.stderr
    case "$variant" in
        native) "${limit[@]}" env -u LD_PRELOAD -u SAGE_TRACE "$prog" "${args[@]}" > "$out" 2> "$err" ;;
        sage) "${limit[@]}" env -u SAGE_TRACE "LD_PRELOAD=$libsage" "$prog" "${args[@]}" > "$out" 2> "$err" ;;
        sage_base) "${limit[@]}" env -u SAGE_TRACE "LD_PRELOAD=$base_libsage" "$prog" "${args[@]}" > "$out" 2> "$err" ;;
        sage_suspend)
            "${limit[@]}" env -u SAGE_TRACE SAGE_SUSPEND=1 "LD_PRELOAD=$libsage" "$prog" "${args[@]}" > "$out" 2> "$err" ;;
        sage_trace)
            "${limit[@]}" env "LD_PRELOAD=$libsage" "SAGE_TRACE=$logs/trace.$round.json" \
                "$prog" "${args[@]}" > "$out" 2> "$err" || return
            # The dump holds every launch (~100+ MB): keep its size, not the file.
            if [ -f "$logs/trace.$round.json" ]; then
                stat -c %s "$logs/trace.$round.json" > "$logs/trace.$round.size"
                rm -f "$logs/trace.$round.json"
            else
                echo 0 > "$logs/trace.$round.size"
            fi ;;
    esac
}

n=${#variants[@]}
for ((round = 1; round <= rounds; round++)); do
    order=()
    for ((k = 0; k < n; k++)); do
        order+=("${variants[(k + round - 1) % n]}")
    done
    echo "launch-overhead: round $round/$rounds: ${order[*]}"
    for v in "${order[@]}"; do
        if ! run_variant "$v" "$round"; then
            echo "launch-overhead: $v failed in round $round: $(tail -n1 "$logs/$v.$round.stderr")" >&2
            exit 1
        fi
    done
done

# The table and OUT/launch-overhead.json: launch_overhead_report.py, through
# bench_result (the one result schema of scripts/bench).
BENCH_LOGS=$logs BENCH_ROUNDS=$rounds BENCH_VARIANTS="${variants[*]}" BENCH_OUT=${OUT:-} \
BENCH_NVCC=$nvcc BENCH_LIBSAGE=$libsage BENCH_BASE_LIBSAGE=$base_libsage "$python" "$here/launch_overhead_report.py"

#!/usr/bin/env bash
# Parallel-setup benchmark: how much of a GPU function's CUDA set-up SAGE's
# background warm-up (and context redirect) hides. Native vs SAGE vs SAGE
# with SAGE_WARMUP=off (control), interleaved run by run (order rotated), on
#   c1   a CUDA C function: read 2 GiB weights, cudaFree(0), upload, checksum kernel
#   py1  a PyTorch function: import torch, load 1 GiB safetensors, cuda init, upload, forward
#   c8   8 concurrent starts of c1
#   py8  8 concurrent starts of py1 (skipped by --quick)
#   ctx  warm-container loop: N x (cuCtxCreate, alloc, HtoD, kernel, free, cuCtxDestroy)
# Whatever SAGE environment the caller sets (SAGE_SOCKET, say) reaches the
# SAGE runs, except SAGE_WARMUP, SAGE_CTX_REDIRECT and SAGE_TRACE, which each
# mode sets itself. Modes: native; sage (defaults); sage_eager/sage_auto
# (SAGE_WARMUP=...); sage_off (SAGE_WARMUP=off); sage_noredir (SAGE_CTX_REDIRECT=0).
set -uo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/bench/parallel-setup.sh [--build DIR] [--runs N] [--quick] [options]

Native vs SAGE start-up of GPU functions (parallel set-up), medians over N runs.

  --build DIR      meson build folder holding intercept/libsage.so (default: build)
  --runs N         runs per (workload, mode) (default: 5; py8 and ctx use at most 2)
  --quick          2 runs, no 8-process PyTorch case
  --iters N        iterations of the warm-container loop (default: 100)
  --c-mib N        size of the C function's weight file in MiB (default: 2048)
  --no-torch       skip the PyTorch workloads
  --gap SEC        pause between runs (default: 0.3)
  --budget SEC     start no further run (round of all workloads) that would end
                   more than SEC after the start (default: 420; at least 1 run)
  --arch ARCH      nvcc -arch value (default: sm_90)
  --data DIR       folder for the generated weight files (default: a new one
                   under ${TMPDIR:-/tmp}, deleted at the end)
  --keep-data      keep the generated weight files
  -h, --help       this help

Binaries and logs go to DIR/bench-bin/parallel-setup. With OUT set, writes
OUT/parallel-setup.json (all per-run data, machine info) and
OUT/parallel-setup.txt (the table). Environment: NVCC, PYTHON (default python3;
needs torch + safetensors for py1/py8, otherwise they are skipped).
Exit: 0 measured and all checks passed, 1 a run failed or a check did not
pass (the table is printed anyway), 77 no GPU or no nvcc.
EOF
}

build_dir=build
runs=5
quick=0
iters=100
c_mib=2048
use_torch=1
gap=0.3
budget=420
arch=sm_90
data_dir=
keep_data=0
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build_dir=${2:?--build needs a folder}; shift 2 ;;
        --runs) runs=${2:?}; shift 2 ;;
        --quick) quick=1; shift ;;
        --iters) iters=${2:?}; shift 2 ;;
        --c-mib) c_mib=${2:?}; shift 2 ;;
        --no-torch) use_torch=0; shift ;;
        --gap) gap=${2:?}; shift 2 ;;
        --budget) budget=${2:?}; shift 2 ;;
        --arch) arch=${2:?}; shift 2 ;;
        --data) data_dir=${2:?}; shift 2 ;;
        --keep-data) keep_data=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "parallel-setup: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$quick" = 1 ] && runs=2
case "$runs$iters$c_mib$budget" in *[!0-9]*) echo "parallel-setup: --runs/--iters/--c-mib take numbers" >&2; exit 2 ;; esac
[ "$runs" -ge 1 ] || runs=1

say() { echo "parallel-setup: $*"; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}

. "$here/lib.sh"
bench_require_gpu parallel-setup
bench_require_nvcc parallel-setup
py_abs=$(command -v "$python" || true)
[ -n "$py_abs" ] || { say "$python not found (set PYTHON)" >&2; exit 1; }
case "$py_abs" in /*) ;; *) py_abs=$(cd "$(dirname "$py_abs")" && pwd)/$(basename "$py_abs") ;; esac

bench_build parallel-setup
bench_bin_dir parallel-setup
t_start=$(date +%s)

# ------------------------------------------------------------------ build
say "building into $bin_dir"
nv() { env "TMPDIR=$bin_dir/tmp" "$nvcc" "$@"; }
if ! { nv "-arch=$arch" -O2 -I"$here" -o "$bin_dir/cfunc" "$here/parallel_setup_cfunc.cu" &&
       nv "-arch=$arch" -cubin -o "$bin_dir/step.cubin" "$here/parallel_setup_ctxloop_kernel.cu" &&
       nv -O2 -cudart none -o "$bin_dir/ctxloop" "$here/parallel_setup_ctxloop.c" -lcuda &&
       nv -O2 -cudart none -o "$bin_dir/launch" "$here/startup_launch.c"; }; then
    say "build failed" >&2
    exit 1
fi

if [ "$use_torch" = 1 ] && ! "$py_abs" -c 'import torch, safetensors' > /dev/null 2>&1; then
    say "NOTE: $py_abs cannot import torch + safetensors: PyTorch workloads skipped"
    use_torch=0
fi

# ------------------------------------------------------------------ data
bench_data_dir parallel-setup
cleanup() {
    if [ "$keep_data" = 0 ]; then
        rm -f "$data_dir/weights.bin" "$data_dir/weights.safetensors" "$data_dir/weights.safetensors.tmp"
        [ "$own_data" = 1 ] && rm -rf "$data_dir"
    fi
    rm -rf "$bin_dir/tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

c_bytes=$((c_mib * 1024 * 1024))
say "generating $c_mib MiB of C weights in $data_dir"
if ! timeout 600 "$bin_dir/cfunc" --gen "$data_dir/weights.bin" "$c_bytes" > "$logs/gen-c.json" 2> "$logs/gen-c.stderr"; then
    say "generating the C weights failed: $(tail -n2 "$logs/gen-c.stderr")" >&2
    exit 1
fi
if [ "$use_torch" = 1 ]; then
    say "generating ~1 GiB of fp16 safetensors weights"
    if ! timeout 600 "$py_abs" "$here/parallel_setup_torch.py" --gen "$data_dir/weights.safetensors" \
            > "$logs/gen-py.json" 2> "$logs/gen-py.stderr"; then
        say "NOTE: generating the safetensors weights failed, PyTorch workloads skipped: $(tail -n2 "$logs/gen-py.stderr")"
        use_torch=0
    fi
fi

# ------------------------------------------------------------------ runs
# Workloads: name, processes, modes, most runs, timeout (s).
declare -A wl_conc wl_modes wl_runs wl_limit
workloads=(c1)
wl_conc[c1]=1; wl_modes[c1]="native sage sage_off"; wl_runs[c1]=$runs; wl_limit[c1]=120
if [ "$use_torch" = 1 ]; then
    workloads+=(py1)
    wl_conc[py1]=1; wl_modes[py1]="native sage_eager sage_auto sage_off"; wl_runs[py1]=$runs; wl_limit[py1]=300
fi
workloads+=(c8)
wl_conc[c8]=8; wl_modes[c8]="native sage sage_off"; wl_runs[c8]=$runs; wl_limit[c8]=300
if [ "$use_torch" = 1 ] && [ "$quick" = 0 ]; then
    workloads+=(py8)
    wl_conc[py8]=8; wl_modes[py8]="native sage_eager"; wl_runs[py8]=$((runs < 2 ? runs : 2)); wl_limit[py8]=400
fi
workloads+=(ctx)
wl_conc[ctx]=1; wl_modes[ctx]="native sage sage_off sage_noredir"; wl_runs[ctx]=$((runs < 2 ? runs : 2)); wl_limit[ctx]=300
# wl_argv WORKLOAD: the program and arguments each process runs, into cmd.
wl_argv() {
    case "$1" in
        c1|c8) cmd=("$bin_dir/cfunc" "$data_dir/weights.bin") ;;
        py1|py8) cmd=("$py_abs" "$here/parallel_setup_torch.py" "$data_dir/weights.safetensors") ;;
        ctx) cmd=("$bin_dir/ctxloop" "$bin_dir/step.cubin" "$iters") ;;
    esac
}

failures=0
# run_case WORKLOAD MODE RUN: one batch; stdout (one JSON line per process),
# stderr and "rc wall_us" go to logs/WORKLOAD.MODE.RUN.{jsonl,stderr,status}.
run_case() {
    local wl=$1 mode=$2 run=$3
    local base=$logs/$wl.$mode.$run
    local envs=(-u LD_PRELOAD -u SAGE_BENCH_CHILD_PRELOAD -u SAGE_WARMUP -u SAGE_CTX_REDIRECT -u SAGE_TRACE)
    case "$mode" in
        native) ;;
        sage|sage_auto) envs+=("SAGE_BENCH_CHILD_PRELOAD=$libsage") ;;
        sage_eager) envs+=("SAGE_BENCH_CHILD_PRELOAD=$libsage" SAGE_WARMUP=eager) ;;
        sage_off) envs+=("SAGE_BENCH_CHILD_PRELOAD=$libsage" SAGE_WARMUP=off) ;;
        sage_noredir) envs+=("SAGE_BENCH_CHILD_PRELOAD=$libsage" SAGE_CTX_REDIRECT=0) ;;
        *) echo "unknown mode $mode" >&2; return 1 ;;
    esac
    local cmd=()
    wl_argv "$wl"
    local a b rc
    a=$(date +%s%N)
    timeout --kill-after=10 "${wl_limit[$wl]}" env "${envs[@]}" "$bin_dir/launch" "${wl_conc[$wl]}" "${cmd[@]}" \
        > "$base.jsonl" 2> "$base.stderr"
    rc=$?
    b=$(date +%s%N)
    echo "$rc $(( (b - a) / 1000 ))" > "$base.status"
    if [ "$rc" != 0 ]; then
        failures=$((failures + 1))
        [ "$rc" = 124 ] || [ "$rc" = 137 ] && echo "timed out after ${wl_limit[$wl]} s" >> "$base.stderr"
        say "  FAILED: $wl $mode run $run (rc $rc): $(grep -v -e '^$' -e '^startup_launch:' "$base.stderr" | tail -n1)"
    fi
    sleep "$gap"
    return 0
}

# Untimed warm-up round (first CUDA process after idle, torch files into the page cache).
say "warm-up round (discarded)"
for m in native sage; do run_case c1 "$m" 0; done
[ "$use_torch" = 1 ] && run_case py1 native 0

t_measure=$(date +%s)
say "measuring: ${workloads[*]}; $runs runs (py8/ctx at most 2), ctx loop $iters iterations"
for ((run = 1; run <= runs; run++)); do
    for wl in "${workloads[@]}"; do
        [ "$run" -le "${wl_runs[$wl]}" ] || continue
        read -r -a modes <<< "${wl_modes[$wl]}"
        n=${#modes[@]}
        k=$(( (run - 1) % n ))
        for ((i = 0; i < n; i++)); do
            run_case "$wl" "${modes[$(( (i + k) % n ))]}" "$run"
        done
    done
    now=$(date +%s)
    say "run $run/$runs done ($((now - t_start)) s so far)"
    # Time guard: stop early rather than run far past the budget (slow disk, say).
    per_run=$(( (now - t_measure) / run ))
    if [ "$run" -lt "$runs" ] && [ $((now - t_start + per_run)) -gt "$budget" ]; then
        say "NOTE: stopping after $run of $runs runs: another would pass the ${budget} s budget (--budget)"
        runs_done=$run
        break
    fi
done
runs=${runs_done:-$runs}
for wl in "${workloads[@]}"; do
    [ "${wl_runs[$wl]}" -le "$runs" ] || wl_runs[$wl]=$runs
done

# ------------------------------------------------------------------ report
# Machine, commit and the JSON: parallel_setup_report.py through bench_result.
BENCH_LOGS=$logs BENCH_RUNS=$runs BENCH_OUT=${OUT:-} BENCH_WORKLOADS="${workloads[*]}" \
BENCH_MODES_c1="${wl_modes[c1]}" BENCH_MODES_py1="${wl_modes[py1]:-}" BENCH_MODES_c8="${wl_modes[c8]}" \
BENCH_MODES_py8="${wl_modes[py8]:-}" BENCH_MODES_ctx="${wl_modes[ctx]}" \
BENCH_RUNS_c1="${wl_runs[c1]}" BENCH_RUNS_c8="${wl_runs[c8]}" BENCH_RUNS_py1="${wl_runs[py1]:-0}" BENCH_RUNS_py8="${wl_runs[py8]:-0}" BENCH_RUNS_ctx="${wl_runs[ctx]}" BENCH_ITERS=$iters \
BENCH_C_MIB=$c_mib BENCH_STOPPED=${runs_done:+"stopped after $runs_done runs (--budget $budget s)"} BENCH_QUICK=$quick \
BENCH_NVCC=$nvcc BENCH_LIBSAGE=$libsage BENCH_ELAPSED=$(( $(date +%s) - t_start )) \
"$py_abs" "$here/parallel_setup_report.py"
report_rc=$?
say "done in $(( $(date +%s) - t_start )) s"
exit $report_rc

#!/usr/bin/env bash
# GPU suite of SAGE: builds the programs of tests/gpu with nvcc, runs each
# natively and under LD_PRELOAD=libsage.so, and passes a program when both
# runs exit 0 with identical stdout and the SAGE run left a valid trace (the
# trace proves libsage was loaded: ld.so silently ignores a preload it
# cannot load). Exit 77 where there is no GPU or no nvcc.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/gpu-test.sh [--build DIR] [--timeout SEC] [--only NAME,...] [--arch ARCH]

Runs the GPU suite (tests/gpu) natively and under libsage and compares.

  --build DIR     meson build folder holding intercept/libsage.so (default: build)
  --timeout SEC   limit of one program run; a run past it is killed and FAILs (default: 120)
  --only LIST     run only these programs (comma separated; names as in the table)
  --arch ARCH     nvcc -arch value (default: sm_90)
  -h, --help      this help

Programs are built into DIR/gpu-bin; logs and traces go to DIR/gpu-bin/logs.
Environment:
  NVCC                 nvcc to use (default: nvcc on PATH, else /usr/local/cuda/bin/nvcc)
  PYTHON               python with torch/torchvision, jax, cupy and triton for the Python rows (default: python3)
  SAGE_LIBUNWIND_DIR   folder with libunwind.so.8: adds a static_cudart row with
                       SAGE_TRACE_STACKS=1 that checks the trace holds stacks
  OUT                  if set: writes OUT/gpu-results.json and OUT/gpu-logs.tar.gz
Exit: 0 all passed, 1 a program failed, 77 no GPU or no nvcc (skipped), 2 usage.
EOF
}

build_dir=build
run_timeout=120
only=""
arch=sm_90
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build_dir=${2:?--build needs a folder}; shift 2 ;;
        --build=*) build_dir=${1#--build=}; shift ;;
        --timeout) run_timeout=${2:?--timeout needs seconds}; shift 2 ;;
        --timeout=*) run_timeout=${1#--timeout=}; shift ;;
        --only) only=${2:?--only needs names}; shift 2 ;;
        --only=*) only=${1#--only=}; shift ;;
        --arch) arch=${2:?--arch needs a value}; shift 2 ;;
        --arch=*) arch=${1#--arch=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu-test: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

src_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
gpu_src=$src_root/tests/gpu
python=${PYTHON:-python3}
out_dir=${OUT:-}

skip() {
    echo "gpu-test: SKIP: $*"
    if [ -n "$out_dir" ]; then
        mkdir -p "$out_dir"
        local reason=${*//[\\\"]/ }
        printf '{"skipped": true, "reason": "%s"}\n' "$reason" > "$out_dir/gpu-results.json"
    fi
    exit 77
}

# ------------------------------------------------------------------ checks
if ! command -v nvidia-smi > /dev/null 2>&1; then
    skip "no GPU: nvidia-smi not found"
fi
if ! gpu_list=$(nvidia-smi -L 2>&1) || ! grep -q '^GPU ' <<< "$gpu_list"; then
    skip "no GPU: nvidia-smi -L lists none (${gpu_list//$'\n'/ })"
fi
nvcc=${NVCC:-}
if [ -z "$nvcc" ]; then
    nvcc=$(command -v nvcc || true)
    [ -n "$nvcc" ] || nvcc=/usr/local/cuda/bin/nvcc
fi
[ -x "$nvcc" ] || command -v "$nvcc" > /dev/null 2>&1 || skip "nvcc not found (set NVCC)"

[ -d "$build_dir" ] || { echo "gpu-test: build folder '$build_dir' not found" >&2; exit 1; }
build_dir=$(cd "$build_dir" && pwd)
libsage=$build_dir/intercept/libsage.so
[ -f "$libsage" ] || { echo "gpu-test: $libsage not found: build SAGE first (meson compile -C $build_dir)" >&2; exit 1; }
check_trace=$src_root/tests/check_trace.py
[ -f "$check_trace" ] || { echo "gpu-test: $check_trace not found" >&2; exit 1; }
command -v "$python" > /dev/null 2>&1 || { echo "gpu-test: $python not found" >&2; exit 1; }
command -v timeout > /dev/null 2>&1 || { echo "gpu-test: timeout(1) not found" >&2; exit 1; }

bin_dir=$build_dir/gpu-bin
logs=$bin_dir/logs
rm -rf "$logs"
mkdir -p "$logs"
results=$logs/results.tsv
: > "$results"

# Both runs see the same environment apart from what SAGE needs.
export CUBLAS_WORKSPACE_CONFIG=:4096:8
export PYTHONDONTWRITEBYTECODE=1

# ------------------------------------------------------------------ programs
# The programs, in run order (build_program knows how each is built).
all_programs=(static_cudart static_cudart_shared per_thread driver_api vmm ipc graphs capture_beside cublas_gemm reset_loop torch_model torch_expandable jax_fn cupy_fn triton_fn fork_exec share_weights share_alloc share_reach lean_stack suspend_idle)

selected() {
    [ -z "$only" ] && return 0
    case ",$only," in *",$1,"*) return 0 ;; esac
    return 1
}

build_program() {
    local name=$1
    # nvcc's temporaries stay in the build folder too.
    local nv=(env "TMPDIR=$bin_dir/tmp" "$nvcc" "-arch=$arch" -O2 -I"$gpu_src")
    case "$name" in
        static_cudart) "${nv[@]}" -o "$bin_dir/$name" "$gpu_src/static_cudart.cu" ;;
        static_cudart_shared) "${nv[@]}" -cudart shared -o "$bin_dir/$name" "$gpu_src/static_cudart.cu" ;;
        per_thread) "${nv[@]}" --default-stream per-thread -o "$bin_dir/$name" "$gpu_src/per_thread.cu" ;;
        driver_api)
            # Kernels as a fatbin, embedded by .incbin; host code only (-x c++)
            # so the binary links no cudart at all.
            "${nv[@]}" --fatbin -o "$bin_dir/driver_api_kernels.fatbin" "$gpu_src/driver_api_kernels.cu" &&
            "${nv[@]}" -x c++ -cudart none \
                -DSAGE_KERNEL_FATBIN="\"$bin_dir/driver_api_kernels.fatbin\"" \
                -o "$bin_dir/$name" "$gpu_src/driver_api.cu" -lcuda ;;
        vmm) "${nv[@]}" -o "$bin_dir/$name" "$gpu_src/vmm.cu" -lcuda ;;
        ipc) "${nv[@]}" -o "$bin_dir/$name" "$gpu_src/ipc.cu" ;;
        graphs) "${nv[@]}" -o "$bin_dir/$name" "$gpu_src/graphs.cu" ;;
        capture_beside) "${nv[@]}" -o "$bin_dir/$name" "$gpu_src/capture_beside.cu" -lpthread ;;
        cublas_gemm) "${nv[@]}" -o "$bin_dir/$name" "$gpu_src/cublas_gemm.cu" -lcublas ;;
        reset_loop) "${nv[@]}" -o "$bin_dir/$name" "$gpu_src/reset_loop.cu" ;;
        share_weights) "${nv[@]}" -o "$bin_dir/$name" "$gpu_src/share_weights.cu" ;;
        share_alloc) "${nv[@]}" -o "$bin_dir/$name" "$gpu_src/share_alloc.cu" -lcuda ;;
        share_reach) "${nv[@]}" -o "$bin_dir/$name" "$gpu_src/share_reach.cu" -lcuda ;;
        lean_stack) "${nv[@]}" -o "$bin_dir/$name" "$gpu_src/lean_stack.cu" ;;
        suspend_idle) "${nv[@]}" -o "$bin_dir/$name" "$gpu_src/suspend_idle.cu" ;;
        fork_exec) "${nv[@]}" -o "$bin_dir/$name" "$gpu_src/fork_exec.cu" ;;
        torch_model|torch_expandable) "$python" -c 'import torch, torchvision; assert torch.cuda.is_available(), "torch sees no GPU"' ;;
        jax_fn)
            # The weights file is made here, untimed; the check needs no GPU.
            "$python" -c 'import jax, jaxlib' &&
            "$python" "$gpu_src/jax_fn.py" --make "$bin_dir/jax-weights.npy" ;;
        cupy_fn) "$python" -c 'import cupy, numpy' && "$python" "$gpu_src/cupy_fn.py" --make "$bin_dir/cupy-weights.npy" ;;
        triton_fn)
            "$python" -c 'import torch, triton, numpy; assert torch.cuda.is_available(), "torch sees no GPU"' &&
            "$python" "$gpu_src/triton_fn.py" --make "$bin_dir/triton-weights.npy" ;;
        *) echo "unknown program $name"; return 1 ;;
    esac
}

# command_of NAME: sets cmd (an array) to the command line of a program.
command_of() {
    case "$1" in
        torch_model) cmd=("$python" "$gpu_src/torch_model.py") ;;
        # PyTorch's expandable segments: its pool maps 2/20 MiB cuMemCreate handles into one reservation.
        torch_expandable) cmd=(env PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "$python" "$gpu_src/torch_model.py") ;;
        jax_fn) cmd=("$python" "$gpu_src/jax_fn.py" "$bin_dir/jax-weights.npy") ;;
        cupy_fn) cmd=("$python" "$gpu_src/cupy_fn.py" "$bin_dir/cupy-weights.npy") ;;
        triton_fn) cmd=("$python" "$gpu_src/triton_fn.py" "$bin_dir/triton-weights.npy") ;;
        share_weights) cmd=("$bin_dir/$1" "$bin_dir/share-weights.bin") ;;
        *) cmd=("$bin_dir/$1") ;;
    esac
}

# min_traces_of NAME: how many processes of a run make driver calls, each leaving a trace
# (ipc: two; fork_exec: the parent and its exec'd and shell-started children, not the shell).
min_traces_of() {
    case "$1" in
        ipc) echo 2 ;;
        fork_exec) echo 3 ;;
        *) echo 1 ;;
    esac
}

programs=()
for p in "${all_programs[@]}"; do
    selected "$p" && programs+=("$p")
done
[ ${#programs[@]} -gt 0 ] || { echo "gpu-test: --only '$only' selects nothing" >&2; exit 2; }

echo "gpu-test: GPU: $(head -n1 <<< "$gpu_list")"
echo "gpu-test: libsage: $libsage"
echo "gpu-test: building ${#programs[@]} programs with $nvcc -arch=$arch into $bin_dir"
mkdir -p "$bin_dir/tmp"
declare -A build_pid build_ok
for p in "${programs[@]}"; do
    build_program "$p" > "$logs/$p.build.log" 2>&1 &
    build_pid[$p]=$!
done
for p in "${programs[@]}"; do
    if wait "${build_pid[$p]}"; then build_ok[$p]=1; else build_ok[$p]=0; fi
done

# ------------------------------------------------------------------ running
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# run_program NAME MODE ENV... -- CMD...: sets run_rc, run_ms.
run_program() {
    local name=$1 mode=$2
    shift 2
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    local t0
    t0=$(now_ms)
    run_rc=0
    # timeout signals the whole process group: spawned children die too.
    timeout --kill-after=10 "$run_timeout" env "${envs[@]}" "$@" \
        > "$logs/$name.$mode.stdout" 2> "$logs/$name.$mode.stderr" < /dev/null || run_rc=$?
    run_ms=$(( $(now_ms) - t0 ))
}

# check_traces NAME MODE MIN_COUNT: sets trace_ok (1/0) and trace_note. Every trace must be
# well formed, and MIN_COUNT of them must hold GPU work (mem, copy and launch events): a
# process that only tears down at exit (fork_exec's forked child without CUDA runs cudart's
# exit handlers, which the driver refuses there) writes a trace of those calls alone.
check_traces() {
    local name=$1 mode=$2 min=$3 t reason working=0 idle_note=
    local traces=()
    for t in "$logs/$name.$mode".*.json; do
        [ -e "$t" ] && traces+=("$t")
    done
    trace_ok=1
    if [ ${#traces[@]} -lt "$min" ]; then
        trace_ok=0
        trace_note="missing (${#traces[@]} of $min)"
        return
    fi
    for t in "${traces[@]}"; do
        if reason=$("$python" "$check_trace" "$t" --expect-cat mem,copy,launch 2>&1); then
            working=$((working + 1))
        elif ! reason=$("$python" "$check_trace" "$t" 2>&1); then
            trace_ok=0
            trace_note="bad $(basename "$t"): $(tail -n1 <<< "$reason")"
            return
        else
            idle_note="; $(basename "$t"): no GPU work"
        fi
    done
    if [ "$working" -lt "$min" ]; then
        trace_ok=0
        trace_note="$working of ${#traces[@]} traces hold GPU work, want $min$idle_note"
        return
    fi
    trace_note="ok (${#traces[@]})"
    [ "$working" -eq ${#traces[@]} ] || trace_note="ok (${#traces[@]}, $working working)"
}

# Any mem/copy/ctx event with a non-empty "stack" argument?
check_stacks() {
    "$python" - "$@" <<'EOF'
import json, sys
for path in sys.argv[1:]:
    with open(path) as f:
        events = json.load(f).get("traceEvents", [])
    for ev in events:
        stack = (ev.get("args") or {}).get("stack")
        if ev.get("cat") in ("mem", "copy", "ctx") and isinstance(stack, list) and stack:
            print(f"stack of {ev.get('name')}: {stack[0]}")
            sys.exit(0)
print("no mem/copy/ctx event has a non-empty stack")
sys.exit(1)
EOF
}

clean() {
    local v=${1//$'\t'/ }
    printf '%s' "${v//$'\n'/ }"
}

# record NAME NATIVE_RC NATIVE_MS SAGE_RC SAGE_MS IDENTICAL TRACE EXACT RESULT NOTE
record() {
    local fields=("$@") i
    for i in "${!fields[@]}"; do fields[i]=$(clean "${fields[i]}"); done
    (IFS=$'\t'; echo "${fields[*]}") >> "$results"
    printf 'gpu-test: %-22s %s%s\n' "$1" "$9" "${10:+ (${10})}"
}

rc_text() {
    case "$1" in
        -) echo "-" ;;
        0) echo "ok" ;;
        124|137) echo "timeout" ;;
        *) echo "rc=$1" ;;
    esac
}

# failure_text RC STDERR_FILE: why a run failed, in a few words.
failure_text() {
    case "$1" in
        124|137) echo "timed out (${run_timeout} s)" ;;
        *) echo "failed (rc=$1): $(tail -n1 "$2" 2>/dev/null || true)" ;;
    esac
}

# exact: lines on stderr (bit-level hashes where stdout holds rounded values).
exact_match() {
    local a=$logs/$1.native.stderr b=$logs/$1.$2.stderr
    if ! grep -q '^exact: ' "$a" 2>/dev/null; then echo "-"; return; fi
    if diff -q <(grep '^exact: ' "$a") <(grep '^exact: ' "$b") > /dev/null 2>&1; then
        echo "yes"
    else
        echo "no"
    fi
}

# evaluate LABEL NAME MODE NATIVE_RC NATIVE_MS SAGE_RC SAGE_MS MIN_TRACES [EXTRA_NOTE]
# LABEL names the table row; NAME.MODE.* are the logs of the run judged.
evaluate() {
    local label=$1 name=$2 mode=$3 nrc=$4 nms=$5 src=$6 sms=$7 min=$8 extra=${9:-}
    local identical=no result=FAIL note=""
    if cmp -s "$logs/$name.native.stdout" "$logs/$name.$mode.stdout"; then identical=yes; fi
    check_traces "$name" "$mode" "$min"
    if [ "$nrc" != 0 ]; then
        note="native run $(failure_text "$nrc" "$logs/$name.native.stderr")"
    elif [ "$src" != 0 ]; then
        note="sage run $(failure_text "$src" "$logs/$name.$mode.stderr")"
    elif [ "$identical" != yes ]; then
        note="stdout differs (diff $name.native.stdout $name.$mode.stdout)"
    elif [ "$trace_ok" != 1 ]; then
        note="trace: $trace_note"
    elif [ -n "$extra" ] && [ "$extra" != ok ]; then
        note=$extra
    else
        result=PASS
    fi
    record "$label" "$nrc" "$nms" "$src" "$sms" "$identical" "$trace_note" \
        "$(exact_match "$name" "$mode")" "$result" "$note"
}

native_env=(-u LD_PRELOAD -u SAGE_TRACE -u SAGE_TRACE_STACKS)
for p in "${programs[@]}"; do
    if [ "${build_ok[$p]}" != 1 ]; then
        if [ "$p" = torch_model ] || [ "$p" = torch_expandable ] || [ "$p" = jax_fn ] || [ "$p" = cupy_fn ] ||
            [ "$p" = triton_fn ]; then
            record "$p" - - - - - - - SKIP "python/torch/jax/cupy/triton unusable: $(tail -n1 "$logs/$p.build.log")"
        else
            record "$p" - - - - - - - FAIL "build failed: see $p.build.log"
        fi
        continue
    fi
    command_of "$p"
    run_program "$p" native "${native_env[@]}" -- "${cmd[@]}"
    nrc=$run_rc nms=$run_ms
    run_program "$p" sage -u SAGE_TRACE_STACKS "LD_PRELOAD=$libsage" \
        "SAGE_TRACE=$logs/$p.sage.%p.json" -- "${cmd[@]}"
    min_traces=$(min_traces_of "$p")
    evaluate "$p" "$p" sage "$nrc" "$nms" "$run_rc" "$run_ms" "$min_traces"
done

# Stacks row: static_cudart again with SAGE_TRACE_STACKS=1 (libunwind needed).
if selected static_cudart; then
    if [ -z "${SAGE_LIBUNWIND_DIR:-}" ]; then
        record static_cudart+stacks - - - - - - - SKIP "SAGE_LIBUNWIND_DIR unset"
    elif [ "${build_ok[static_cudart]}" != 1 ]; then
        record static_cudart+stacks - - - - - - - FAIL "build failed"
    else
        p=static_cudart
        nrc=$(awk -F'\t' '$1 == "static_cudart" { print $2 }' "$results")
        nms=$(awk -F'\t' '$1 == "static_cudart" { print $3 }' "$results")
        run_program "$p" stacks "LD_PRELOAD=$libsage" "SAGE_TRACE=$logs/$p.stacks.%p.json" \
            SAGE_TRACE_STACKS=1 \
            "LD_LIBRARY_PATH=$SAGE_LIBUNWIND_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
            -- "$bin_dir/$p"
        stack_note=ok
        stack_traces=("$logs/$p.stacks".*.json)
        if [ -e "${stack_traces[0]}" ]; then
            stack_out=$(check_stacks "${stack_traces[@]}" 2>&1) || stack_note="stacks: $(tail -n1 <<< "$stack_out")"
        fi
        evaluate static_cudart+stacks "$p" stacks "$nrc" "$nms" "$run_rc" "$run_ms" 1 "$stack_note"
    fi
fi

# Eager rows: SAGE_WARMUP=eager, the README's advice for Python functions.
# XLA runs ptxas as a child that inherits LD_PRELOAD: the child must neither
# break nor initialise CUDA, and every trace of the run (one per process that
# made a driver call) must be a valid one. Triton runs ptxas and the host
# compiler the same way; fork_exec's children start with a warm-up of their own.
for p in jax_fn torch_model cupy_fn triton_fn fork_exec; do
    selected "$p" || continue
    [ "${build_ok[$p]:-0}" = 1 ] || continue
    nrc=$(awk -F'\t' -v p="$p" '$1 == p { print $2 }' "$results")
    nms=$(awk -F'\t' -v p="$p" '$1 == p { print $3 }' "$results")
    command_of "$p"
    run_program "$p" eager -u SAGE_TRACE_STACKS "LD_PRELOAD=$libsage" SAGE_WARMUP=eager \
        "SAGE_TRACE=$logs/$p.eager.%p.json" -- "${cmd[@]}"
    evaluate "$p+eager" "$p" eager "$nrc" "$nms" "$run_rc" "$run_ms" "$(min_traces_of "$p")"
done

# Wrapped row: a CUDA program started by wrappers (timeout, sh -c) under
# eager warm-up. Only the program may leave a trace: a wrapper that made no
# driver call writes none (it would be an empty dump, which check_traces
# rejects, and with one path it would clobber the program's).
if selected static_cudart && [ "${build_ok[static_cudart]:-0}" = 1 ]; then
    p=static_cudart
    nrc=$(awk -F'\t' '$1 == "static_cudart" { print $2 }' "$results")
    nms=$(awk -F'\t' '$1 == "static_cudart" { print $3 }' "$results")
    run_program "$p" wrapped -u SAGE_TRACE_STACKS "LD_PRELOAD=$libsage" SAGE_WARMUP=eager \
        "SAGE_TRACE=$logs/$p.wrapped.%p.json" -- timeout 300 sh -c 'true; "$0"; true' "$bin_dir/$p"
    wrapped_traces=("$logs/$p.wrapped".*.json)
    wrapped_note=ok
    [ -e "${wrapped_traces[0]}" ] && [ ${#wrapped_traces[@]} != 1 ] &&
        wrapped_note="${#wrapped_traces[@]} traces: processes without driver calls wrote dumps"
    evaluate static_cudart+wrapped "$p" wrapped "$nrc" "$nms" "$run_rc" "$run_ms" 1 "$wrapped_note"
fi

# Lean rows: SAGE_CTX_STACK_LIMIT=16 (lean contexts, off by default). The
# output must be what the native run printed: the driver grows the stack
# at launch to each kernel's static frame (lean_stack's frames go up to
# 2 KiB). lean_stack's stderr says the app saw the lean limit before its
# first launch, and the process's GPU memory then (the context footprint):
# lean-mem.txt puts it next to the native run's.
for p in lean_stack static_cudart torch_model; do
    selected "$p" || continue
    [ "${build_ok[$p]:-0}" = 1 ] || continue
    nrc=$(awk -F'\t' -v p="$p" '$1 == p { print $2 }' "$results")
    nms=$(awk -F'\t' -v p="$p" '$1 == p { print $3 }' "$results")
    command_of "$p"
    run_program "$p" lean -u SAGE_TRACE_STACKS "LD_PRELOAD=$libsage" SAGE_CTX_STACK_LIMIT=16 \
        "SAGE_TRACE=$logs/$p.lean.%p.json" -- "${cmd[@]}"
    lean_note=ok
    if [ "$p" = lean_stack ]; then
        grep -q '^stack_limit_at_start=16$' "$logs/$p.lean.stderr" ||
            lean_note="the app did not see the lean stack limit: $(grep stack_limit "$logs/$p.lean.stderr" | tr '\n' ' ')"
        for mode in native lean; do
            echo "gpu-test: lean_stack $mode: $(grep -E '^(stack_limit|gpu_mib)' "$logs/$p.$mode.stderr" | tr '\n' ' ')"
        done >> "$logs/lean-mem.txt"
    fi
    evaluate "$p+lean" "$p" lean "$nrc" "$nms" "$run_rc" "$run_ms" 1 "$lean_note"
done
cat "$logs/lean-mem.txt" 2>/dev/null || true

# Suspend rows: SAGE_SUSPEND=1 with a broker of their own (suspend on, no
# idle suspension: SAGE_SUSPEND_IDLE unset), every program once (issue 12:
# "the GPU suite still passes with suspend enabled"). Output identical to the
# native run, a valid trace, and the broker saw the process register (its log
# has one more "registered" line; ipc: two processes).
suspend_saged=$build_dir/daemon/saged
if [ -x "$suspend_saged" ]; then
    ssock=$logs/saged-suspend.sock
    "$suspend_saged" --socket "$ssock" --foreground -v 2> "$logs/saged-suspend.log" &
    ssaged_pid=$!
    for _ in $(seq 100); do [ -S "$ssock" ] && break; sleep 0.1; done
    for p in "${programs[@]}"; do
        [ "${build_ok[$p]:-0}" = 1 ] || continue
        nrc=$(awk -F'\t' -v p="$p" '$1 == p { print $2 }' "$results")
        nms=$(awk -F'\t' -v p="$p" '$1 == p { print $3 }' "$results")
        command_of "$p"
        before=$(grep -c ') registered' "$logs/saged-suspend.log" || true)
        run_program "$p" suspend -u SAGE_TRACE_STACKS -u SAGE_SUSPEND_IDLE "LD_PRELOAD=$libsage" SAGE_SUSPEND=1 \
            "SAGE_SOCKET=$ssock" "SAGE_TRACE=$logs/$p.suspend.%p.json" -- "${cmd[@]}"
        after=$(grep -c ') registered' "$logs/saged-suspend.log" || true)
        suspend_note=ok
        [ "$after" -gt "$before" ] || suspend_note="the process did not register with saged (SAGE_SUSPEND=1)"
        min_traces=$(min_traces_of "$p")
        evaluate "$p+suspend" "$p" suspend "$nrc" "$nms" "$run_rc" "$run_ms" "$min_traces" "$suspend_note"
    done
    kill "$ssaged_pid" 2>/dev/null || true
    wait "$ssaged_pid" 2>/dev/null || true
else
    record suspend - - - - - - - SKIP "no saged in $build_dir"
fi

# Sharing rows: SAGE_SHARE=1 with a broker, each program twice: the first
# run publishes what it uploaded, the second maps it instead of copying.
# Both must print what the native run printed; the second must have been
# served by the broker where the program's uploads can be (share_weights,
# torch_model), IPC must have been emulated (ipc), and share_weights' kernel
# that writes mapped weights must have got a private copy first.
share_programs=(share_weights share_alloc share_reach vmm ipc torch_model torch_expandable jax_fn cupy_fn triton_fn fork_exec cublas_gemm graphs capture_beside static_cudart)
saged=$build_dir/daemon/saged
# stat_sum NAME MODE STAT: a libsage counter summed over the traces of a run.
stat_sum() {
    "$python" - "$3" "$logs/$1.$2".*.json <<'EOF'
import json, sys
total = 0
for path in sys.argv[2:]:
    try:
        total += json.load(open(path))["otherData"]["stats"].get(sys.argv[1], 0)
    except (OSError, ValueError, KeyError):
        pass
print(total)
EOF
}
if [ -x "$saged" ]; then
    sock=$logs/saged.sock
    # --spool: suspend_idle+restart's broker restart keeps the parked weights (docs/suspend.md).
    "$saged" --socket "$sock" --foreground --spool "$logs/spool" 2> "$logs/saged.log" &
    saged_pid=$!
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
    for p in "${share_programs[@]}"; do
        selected "$p" || continue
        [ "${build_ok[$p]:-0}" = 1 ] || { record "$p+share" - - - - - - - SKIP "not built"; continue; }
        nrc=$(awk -F'\t' -v p="$p" '$1 == p { print $2 }' "$results")
        nms=$(awk -F'\t' -v p="$p" '$1 == p { print $3 }' "$results")
        command_of "$p"
        for round in 1 2; do
            run_program "$p" "share$round" -u SAGE_TRACE_STACKS "LD_PRELOAD=$libsage" SAGE_SHARE=1 \
                "SAGE_SOCKET=$sock" "SAGE_TRACE=$logs/$p.share$round.%p.json" -- "${cmd[@]}"
            extra=ok
            hits=$(stat_sum "$p" "share$round" SHARE_HITS)
            mapped=$(stat_sum "$p" "share$round" SHARE_BYTES_MAPPED)
            copied=$(stat_sum "$p" "share$round" SHARE_BYTES_COPIED)
            fallbacks=$(stat_sum "$p" "share$round" SHARE_FALLBACKS)
            guard=$(stat_sum "$p" "share$round" SHARE_GUARD_UNSHARED)
            ipc=$(stat_sum "$p" "share$round" SHARE_IPC_EXPORTS)
            asm_hits=$(stat_sum "$p" "share$round" SHARE_ASSEMBLED_HITS)
            asm_bytes=$(stat_sum "$p" "share$round" SHARE_BYTES_ASSEMBLED)
            dropped=$(stat_sum "$p" "share$round" SHARE_DROPPED)
            dropped_bytes=$(stat_sum "$p" "share$round" SHARE_BYTES_DROPPED)
            keep=$(stat_sum "$p" "share$round" SHARE_KEEP_COPIES)
            staged=$(stat_sum "$p" "share$round" SHARE_STAGED)
            allocs=$(stat_sum "$p" "share$round" SHARE_ALLOCS)
            misses=$(stat_sum "$p" "share$round" SHARE_MISSES)
            app_vmm=$(stat_sum "$p" "share$round" SHARE_APP_VMM)
            # sage-trace's "% shared": (mapped + assembled) / all upload bytes that reached SAGE-backed memory.
            fraction=$(awk -v m="$mapped" -v a="$asm_bytes" -v c="$copied" \
                'BEGIN { if (m + c > 0) printf "%.4f", (m + a) / (m + c); else printf "0" }')
            echo "gpu-test: $p share$round: hits $hits, misses $misses, allocs backed $allocs, app handles backed $app_vmm, mapped $mapped B, copied $copied B (of which assembled and mapped: $asm_hits runs, $asm_bytes B), shared_fraction $fraction, fallbacks $fallbacks, guard $guard, ipc $ipc, not published $dropped ($dropped_bytes B), keep copies $keep, staged misses $staged" \
                >> "$logs/share-stats.txt"
            if [ "$fallbacks" != 0 ]; then
                extra="$fallbacks sharing fallbacks"
            elif [ "$round" = 2 ] && { [ "$p" = share_weights ] || [ "$p" = torch_model ] || [ "$p" = torch_expandable ] ||
                [ "$p" = jax_fn ]; } &&
                [ "$hits" = 0 ]; then
                extra="second run not served by the broker"
            elif [ "$round" = 1 ] && [ "$p" = share_weights ] && [ "$staged" = 0 ]; then
                extra="the first run's misses were not copied through staging"
            elif [ "$p" = share_reach ] && [ "$(stat_sum "$p" "share$round" SHARE_DEFERRED)" -lt 5 ]; then
                extra="the buffers reached first by a query, a stream write or a batch were not deferred"
            elif [ "$round" = 2 ] && [ "$p" = capture_beside ] && [ "$hits" = 0 ]; then
                extra="second run: the uploads after the captures were not served by the broker"
            elif [ "$round" = 2 ] && [ "$p" = capture_beside ] && [ "$guard" = 0 ]; then
                extra="second run: the captured kernel writing mapped weights got no private copy"
            elif [ "$round" = 2 ] && [ "$p" = share_reach ] && [ "$hits" = 0 ]; then
                extra="second run: the weights the stream write and the batch write were not mapped"
            elif [ "$round" = 2 ] && [ "$p" = share_alloc ] && [ "$hits" -lt 4 ]; then
                extra="second run: $hits hits, not S, Q, T and V (cudaMallocAsync, pool, pitched, app VMM) mapped"
            elif [ "$round" = 2 ] && [ "$p" = share_alloc ] && [ "$guard" = 0 ]; then
                extra="the kernel writing mapped weights (R) got no private copy"
            elif [ "$round" = 2 ] && [ "$p" = share_weights ] && [ "$guard" = 0 ]; then
                extra="the kernel writing mapped weights got no private copy"
            elif [ "$p" = ipc ] && [ "$ipc" = 0 ]; then
                extra="IPC not emulated"
            fi
            min_traces=$(min_traces_of "$p")
            evaluate "$p+share$round" "$p" "share$round" "$nrc" "$nms" "$run_rc" "$run_ms" "$min_traces" \
                "$extra"
        done
    done
    # Predicted remap rows (SAGE_SHARE_PREDICT=1, docs/sharing.md#predict): the programs that upload
    # weights three more times, hints and placement in a folder of their own (the broker holds their
    # extents from the rows above): the first learns the hints, the second may still learn placement and
    # marks the allocations whose predicted pieces were written before their upload (never predicted
    # again), the third must waste no prediction (SHARE_PREDICT_UNUSED 0) and print native's output;
    # share_weights must map its hits as its allocations are made (SHARE_PREDICTED > 0; its memset 64 MiB
    # buffer is marked), torch_model may not (deterministic mode fills every new tensor with a kernel before
    # its upload: docs/sharing.md#predict); share_weights' kernel writing mapped weights still gets a private
    # copy first.
    for p in share_weights torch_model; do
        selected "$p" && [ "${build_ok[$p]:-0}" = 1 ] || continue
        nrc=$(awk -F'\t' -v p="$p" '$1 == p { print $2 }' "$results")
        nms=$(awk -F'\t' -v p="$p" '$1 == p { print $3 }' "$results")
        command_of "$p"
        mkdir -p "$logs/predict-$p"
        for round in 1 2 3; do
            run_program "$p" "predict$round" -u SAGE_TRACE_STACKS "LD_PRELOAD=$libsage" SAGE_SHARE=1 \
                SAGE_SHARE_PREDICT=1 "SAGE_SHARE_PLACE=$logs/predict-$p" "SAGE_SOCKET=$sock" \
                "SAGE_TRACE=$logs/$p.predict$round.%p.json" -- "${cmd[@]}"
            extra=ok
            declare -A st=()
            for k in HITS PREDICTED PREDICT_MAPPED PREDICT_UNUSED LOOKUPS PREDICT_WINDOWS FALLBACKS GUARD_UNSHARED; do
                st[$k]=$(stat_sum "$p" "predict$round" "SHARE_$k")
            done
            echo "gpu-test: $p predict$round: hits ${st[HITS]}, predicted ${st[PREDICTED]} of ${st[PREDICT_MAPPED]} mapped at allocation (${st[PREDICT_UNUSED]} unused), upload lookups ${st[LOOKUPS]}, allocation windows ${st[PREDICT_WINDOWS]}, fallbacks ${st[FALLBACKS]}, guard ${st[GUARD_UNSHARED]}" \
                >> "$logs/share-stats.txt"
            if [ "${st[FALLBACKS]}" != 0 ]; then
                extra="${st[FALLBACKS]} sharing fallbacks"
            elif [ "$round" = 3 ] && [ "${st[PREDICT_UNUSED]}" != 0 ]; then
                extra="third run: ${st[PREDICT_UNUSED]} predictions unused"
            elif [ "$round" = 3 ] && [ "$p" = share_weights ] && [ "${st[PREDICTED]}" = 0 ]; then
                extra="third run: no hit mapped at allocation"
            elif [ "$round" = 3 ] && [ "$p" = share_weights ] && [ "${st[GUARD_UNSHARED]}" = 0 ]; then
                extra="the kernel writing mapped weights got no private copy"
            fi
            evaluate "$p+predict$round" "$p" "predict$round" "$nrc" "$nms" "$run_rc" "$run_ms" 1 "$extra"
        done
    done
    # Suspend rows (issue 12): suspend_idle under SAGE_SUSPEND=1 SAGE_SUSPEND_IDLE=1s SAGE_SHARE=1,
    # twice (the second maps the first's weights): while it idles the broker must suspend it (a
    # watcher polls sagectl instances --json, bounded), its next call resumes it; output identical.
    if selected suspend_idle; then
        if [ "${build_ok[suspend_idle]:-0}" = 1 ]; then
            nrc=$(awk -F'\t' '$1 == "suspend_idle" { print $2 }' "$results")
            nms=$(awk -F'\t' '$1 == "suspend_idle" { print $3 }' "$results")
            command_of suspend_idle
            for round in 1 2; do
                seen=$logs/suspend_idle.suspend$round.seen
                rm -f "$seen"
                (for _ in $(seq 80); do
                    if SAGE_SOCKET=$sock "$build_dir/tools/sagectl" instances --json 2>/dev/null |
                        grep -q '"state": "suspended"'; then
                        SAGE_SOCKET=$sock "$build_dir/tools/sagectl" instances --json > "$seen" 2>&1
                        break
                    fi
                    sleep 0.1
                done) &
                watcher=$!
                run_program suspend_idle "suspend$round" -u SAGE_TRACE_STACKS "LD_PRELOAD=$libsage" SAGE_SHARE=1 \
                    SAGE_SUSPEND=1 SAGE_SUSPEND_IDLE=1s "SAGE_SOCKET=$sock" \
                    "SAGE_TRACE=$logs/suspend_idle.suspend$round.%p.json" -- "${cmd[@]}"
                wait "$watcher" 2>/dev/null || true
                extra=ok
                hits=$(stat_sum suspend_idle "suspend$round" SHARE_HITS)
                if [ ! -s "$seen" ]; then
                    extra="never seen suspended in sagectl instances"
                elif [ "$round" = 2 ] && [ "$hits" = 0 ]; then
                    extra="second run not served by the broker"
                fi
                evaluate "suspend_idle+suspend$round" suspend_idle "suspend$round" "$nrc" "$nms" "$run_rc" \
                    "$run_ms" 1 "$extra"
            done
            # suspend_idle+restart (issue 12, item 3): a third run maps the weights, idles 10 s and is
            # suspended (weights parked); the watcher kills saged (-9) and starts a new one with the same
            # --spool on the same socket; libsage registers again (CHECKPOINTED), the new broker loads the
            # spooled weights, the next call resumes the process: output identical to native.
            seen=$logs/suspend_idle.restart.seen
            rm -f "$seen" "$logs/saged-restart.pid"
            (for _ in $(seq 150); do
                if SAGE_SOCKET=$sock "$build_dir/tools/sagectl" instances --json 2>/dev/null |
                    grep -q '"state": "suspended"'; then
                    SAGE_SOCKET=$sock "$build_dir/tools/sagectl" instances --json > "$seen" 2>&1
                    kill -9 "$saged_pid"
                    for _ in $(seq 100); do kill -0 "$saged_pid" 2>/dev/null || break; sleep 0.05; done
                    rm -f "$sock"
                    "$saged" --socket "$sock" --foreground -v --spool "$logs/spool" 2>> "$logs/saged.log" &
                    echo $! > "$logs/saged-restart.pid"
                    break
                fi
                sleep 0.1
            done) &
            watcher=$!
            run_program suspend_idle restart -u SAGE_TRACE_STACKS "LD_PRELOAD=$libsage" SAGE_SHARE=1 \
                SAGE_SUSPEND=1 SAGE_SUSPEND_IDLE=1s "SAGE_SOCKET=$sock" \
                "SAGE_TRACE=$logs/suspend_idle.restart.%p.json" -- "${cmd[@]}" 10
            wait "$watcher" 2>/dev/null || true
            [ -s "$logs/saged-restart.pid" ] && saged_pid=$(cat "$logs/saged-restart.pid")
            extra=ok
            if [ ! -s "$seen" ]; then
                extra="never seen suspended in sagectl instances"
            elif [ "$(stat_sum suspend_idle restart SHARE_HITS)" = 0 ]; then
                extra="weights not mapped from the broker (nothing parked)"
            elif ! grep -q 'adopted: checkpointed under a previous broker' "$logs/saged.log"; then
                extra="the restarted broker did not adopt the instance"
            fi
            evaluate "suspend_idle+restart" suspend_idle restart "$nrc" "$nms" "$run_rc" "$run_ms" 1 "$extra"
            grep -h "suspended in\|resumed in\|failed\|adopted\|spooled" "$logs/saged.log" > "$logs/suspend.txt" 2>/dev/null || true
            cat "$logs/suspend.txt" 2>/dev/null || true
        else
            record "suspend_idle+suspend" - - - - - - - SKIP "not built"
        fi
    fi
    SAGE_SOCKET=$sock "$build_dir/tools/sagectl" stats --json > "$logs/saged-stats.json" 2>&1 || true
    kill "$saged_pid" 2>/dev/null || true
    wait "$saged_pid" 2>/dev/null || true
    cat "$logs/share-stats.txt" 2>/dev/null || true
else
    record share - - - - - - - SKIP "no saged in $build_dir"
fi

# ------------------------------------------------------------------ report
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 || true)
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1 || true)
cuda_release=$("$nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p' | head -n1 || true)
cpus=$(nproc)
date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)

echo
printf '%-22s | %-8s %8s | %-8s %8s | %-9s | %-22s | %-5s | %s\n' \
    program native ms sage ms identical trace exact result
printf '%s\n' "$(printf '%.0s-' {1..110})"
passed=0 failed=0 skipped=0
while IFS=$'\t' read -r name nrc nms src sms identical trace exact result note; do
    printf '%-22s | %-8s %8s | %-8s %8s | %-9s | %-22.22s | %-5s | %s\n' \
        "$name" "$(rc_text "$nrc")" "$nms" "$(rc_text "$src")" "$sms" "$identical" \
        "$trace" "$exact" "$result${note:+: $note}"
    case "$result" in
        PASS) passed=$((passed + 1)) ;;
        SKIP) skipped=$((skipped + 1)) ;;
        *) failed=$((failed + 1)) ;;
    esac
done < "$results"
echo
echo "machine: ${gpu_name:-?}, driver ${driver:-?}, CUDA ${cuda_release:-?}, $cpus CPUs, $date_utc"
echo "logs: $logs"
[ "$skipped" = 0 ] || echo "skipped: $skipped"

if [ -n "$out_dir" ]; then
    mkdir -p "$out_dir"
    GPU_NAME=$gpu_name GPU_DRIVER=$driver GPU_CUDA=$cuda_release GPU_CPUS=$cpus \
    GPU_DATE=$date_utc GPU_ARCH=$arch GPU_LIBSAGE=$libsage GPU_TIMEOUT=$run_timeout \
    GPU_COUNTS="$passed $failed $skipped" \
    "$python" - "$results" "$out_dir/gpu-results.json" <<'EOF'
import json, os, sys
keys = ["name", "native_rc", "native_ms", "sage_rc", "sage_ms", "output_identical",
        "trace", "exact_bits_identical", "result", "note"]
def num(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
flag = {"yes": True, "no": False}
rows = []
with open(sys.argv[1]) as f:
    for line in f:
        row = dict(zip(keys, line.rstrip("\n").split("\t")))
        for k in ("native_rc", "native_ms", "sage_rc", "sage_ms"):
            row[k] = num(row.get(k))
        for k in ("output_identical", "exact_bits_identical"):
            row[k] = flag.get(row.get(k))
        rows.append(row)
e = os.environ
passed, failed, skipped = (int(x) for x in e["GPU_COUNTS"].split())
doc = {
    "machine": {"gpu": e["GPU_NAME"], "driver": e["GPU_DRIVER"], "cuda": e["GPU_CUDA"],
                "cpus": int(e["GPU_CPUS"]), "date": e["GPU_DATE"], "arch": e["GPU_ARCH"]},
    "libsage": e["GPU_LIBSAGE"],
    "timeout_s": int(e["GPU_TIMEOUT"]),
    "passed": passed, "failed": failed, "skipped": skipped,
    "programs": rows,
}
with open(sys.argv[2], "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
EOF
    tar -czf "$out_dir/gpu-logs.tar.gz" -C "$bin_dir" logs
    echo "results: $out_dir/gpu-results.json, $out_dir/gpu-logs.tar.gz"
fi

echo "GPU suite: $passed passed, $failed failed"
[ "$failed" = 0 ]

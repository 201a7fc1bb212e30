#!/usr/bin/env bash
# Benchmark suite of SAGE: every workload in the modes the landed capabilities
# support, interleaved in one run, then results.json + plots + a table.
#   workloads  cfunc (parallel_setup_cfunc.cu), sgemm (suite_sgemm.cu, cuBLAS),
#              resnet50 / bert / gpt2 / llm (suite_fn.py; random weights, local safetensors)
#   modes      native, mps, sage (libsage), sage_broker (+ saged), sage_shared_cold
#              (+ SAGE_SHARE=1, a saged started fresh right before: misses, publishes),
#              sage_shared (+ SAGE_SHARE=1, a warm saged holding the workload's
#              extents: maps them), warm_process (python only)
#   parts      conc1 (duration + breakdown), warm (warm_process), concN (8/16 at
#              once), poisson (open-loop arrivals), density (memory per instance),
#              then optional extra runs while the budget lasts
#
# Time (suite_plan.py's estimate_plan(); suite_test.py checks the estimates
# against the default budgets):
#   default (--budget 480; C 1 GiB, LLM 4 GiB), estimated with the
#   conservative 2026-11-29 model: set-up ~40 s (nvcc x2 in parallel with the
#   untimed warm-up import, then the weights), conc1 ~177 s (cfunc/sgemm in all
#   6 modes x3; each Python workload once in native, sage_shared_cold,
#   sage_shared), warm ~13 s, concN ~111 s, poisson ~73 s, density ~66 s; then
#   optional extras (Python under sage and MPS, runs 2-3, warm processes of
#   gpt2, llm, bert) while the budget lasts.
#   --quick (--budget 390; C 512 MiB, LLM 2 GiB, x8 only, one Poisson rate).
# The COMPLETE result: --shard K/N, the full plan (every workload in every
# mode x3 at concurrency 1, a warm process of every Python workload, concN,
# poisson, density) cut into N shards that each fit --budget, then
# `suite.py merge OUT_DIR shard1/results.json ...`. At the speeds of the
# 2026-11-30 complete run with byte code (gpt2 ~9 s an invocation, bert ~8,
# resnet50 ~4, llm ~2.7, cfunc ~1, sgemm ~0.7; ~814 s of runs) that is 2
# shards of 480 s (`suite.py shards` prints them):
#   1/2 ~428 s  cfunc, gpt2 + warm, llm + warm, poisson, density
#   2/2 ~425 s  sgemm, resnet50 + warm, bert + warm, concN cfunc + resnet50
# --full runs the whole plan as shard 1/1 (default --budget 1800; ~800 s).
set -uo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/bench/suite.sh [--build DIR] [--quick] [--only LIST] [options]
       scripts/bench/suite.sh [--build DIR] --shard K/N [--budget SEC] [--runs N]

  --build DIR       meson build folder (intercept/libsage.so, daemon/saged, tools/sagectl) (default: build)
  --quick           C 512 MiB, LLM 2 GiB, concurrency 8 only, one Poisson rate,
                    Python workloads one run per mode; budget 390 s
  --only LIST       comma list of parts (conc1,warm,concN,poisson,density) and/or
                    workloads (cfunc,sgemm,resnet50,bert,gpt2,llm) to run
  --runs N          concurrency-1 runs: C functions per mode; Python: the most
                    runs of native and sharing if the budget allows (default 3)
  --budget SEC      start nothing that would end more than SEC after the start
                    (default 480, --quick 390); what is skipped is reported
  --full            the full plan in one run (--shard 1/1; default --budget 1800):
                    ~14 min on the H200, where nothing else limits a call
  --shard K/N       run shard K of the full plan (every workload x mode x --runs,
                    warm processes, concN, poisson, density) cut into N shards
                    that each fit --budget (default 480); `python3 suite.py
                    shards` prints them; then `python3 suite.py merge OUT_DIR
                    S1/results.json ...` combines the shards' results.json
  --hook-json FILE  launch-overhead.sh's JSON to include (default: $OUT/launch-overhead.json if present)
  --arch ARCH       nvcc -arch (default sm_90)
  --data DIR        folder for generated weights (default: a temporary one, deleted)
  -h, --help        this help

Writes $OUT/results.json, $OUT/table.txt, $OUT/duration.png, $OUT/latency_cdf.png,
$OUT/density.png (plots need matplotlib). Logs: DIR/bench-bin/suite/logs.
Python byte code goes to PYTHONPYCACHEPREFIX=DIR/bench-bin/suite/pycache, filled
by an untimed warm-up import before anything is timed.
Environment: NVCC, PYTHON (default python3; torch, torchvision, transformers,
safetensors for the Python workloads), SAGE_BENCH_COMMIT (the commit to record
where the tree's .git is not its own). Exit: 0 done and checks passed, 1 a
checksum or preload check failed, 77 no GPU or no nvcc.
EOF
}

build_dir=build
build_arg=build
shard=
full=0
quick=0
only=
runs=
budget=
hook_json=
arch=sm_90
data_dir=
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build_dir=${2:?--build needs a folder}; build_arg=$2; shift 2 ;;
        --shard) shard=${2:?--shard needs K/N}; shift 2 ;;
        --full) shard=1/1; full=1; shift ;;
        --quick) quick=1; shift ;;
        --only) only=${2:?}; shift 2 ;;
        --runs) runs=${2:?}; shift 2 ;;
        --budget) budget=${2:?}; shift 2 ;;
        --hook-json) hook_json=${2:?}; shift 2 ;;
        --arch) arch=${2:?}; shift 2 ;;
        --data) data_dir=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "suite: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
t_start=$(date +%s.%N)
[ -n "$budget" ] || budget=$([ "$quick" = 1 ] && echo 390 || { [ "$full" = 1 ] && echo 1800; } || echo 480)
case "$runs$budget" in *[!0-9]*) echo "suite: --runs/--budget take numbers" >&2; exit 2 ;; esac
[ "$runs" = 0 ] && { echo "suite: --runs must be at least 1" >&2; exit 2; }

say() { echo "suite: $*"; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}

shard_parts=
shard_wls=
if [ -n "$shard" ]; then
    [ "$quick" = 1 ] || [ -n "$only" ] && { say "--shard runs a part of the full plan: not with --quick or --only" >&2; exit 2; }
    # The shard's parts and workloads (the plan is pure Python: no GPU needed).
    sel=$("$python" "$here/suite.py" shard-select "$shard" --budget "$budget" ${runs:+--runs "$runs"}) || exit 2
    shard_parts=$(echo "$sel" | sed -n 1p)
    shard_wls=$(echo "$sel" | sed -n 2p)
fi

. "$here/lib.sh"
bench_require_gpu suite
bench_require_nvcc suite
py_abs=$(command -v "$python" || true)
[ -n "$py_abs" ] || { say "$python not found (set PYTHON)" >&2; exit 1; }

build_dir=$(cd "$build_dir" && pwd) || exit 1
libsage=$build_dir/intercept/libsage.so
[ -f "$libsage" ] || say "NOTE: $libsage not found: sage modes will be reported unavailable"
bench_bin_dir suite
bench_bytecode "$bin_dir" "$py_abs" || exit 1  # written by the warm-up import and weight generation below

bench_data_dir suite
svc_dir=$(mktemp -d "${TMPDIR:-/tmp}/sage-suite-svc.XXXXXX") || exit 1
mps_ctl=$(command -v nvidia-cuda-mps-control || true)
cleanup() {
    # Safety net: suite.py stops MPS and saged itself.
    if [ -n "$mps_ctl" ] && [ -e "$svc_dir/mps-pipe/control" ]; then
        echo quit | CUDA_MPS_PIPE_DIRECTORY=$svc_dir/mps-pipe CUDA_MPS_LOG_DIRECTORY=$svc_dir/mps-log \
            timeout 10 "$mps_ctl" > /dev/null 2>&1 || true
    fi
    [ "$own_data" = 1 ] && bench_drop_data "$data_dir"
    rm -rf "$svc_dir" "$bin_dir/tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

want() {  # want NAME: is NAME selected by --only (parts and workloads filter independently)?
    local kind=$2
    [ -z "$only" ] && return 0
    local sel=",$only,"
    local any=0 x
    for x in ${3}; do case "$sel" in *",$x,"*) any=1 ;; esac; done
    [ "$any" = 0 ] && return 0
    case "$sel" in *",$1,"*) return 0 ;; esac
    return 1
}
all_parts="conc1 warm concN poisson density"
all_wls="cfunc sgemm resnet50 bert gpt2 llm"
parts=; for p in $all_parts; do want "$p" x "$all_parts" && parts="$parts $p"; done
wls=; for w in $all_wls; do want "$w" x "$all_wls" && wls="$wls $w"; done
if [ -n "$shard" ]; then parts=" $shard_parts"; wls=" $shard_wls"; fi
has_py=0; for w in $wls; do case "$w" in resnet50|bert|gpt2|llm) has_py=1 ;; esac; done

# ------------------------------------------------------------------ build (parallel)
say "building into $bin_dir"
nv() { env "TMPDIR=$bin_dir/tmp" "$nvcc" "$@"; }
fresh() {  # fresh BIN SRC...: BIN was built for this --arch after every SRC changed
    local bin=$1 f; shift
    [ -x "$bin" ] && [ "$(cat "$bin.arch" 2>/dev/null)" = "$arch" ] || return 1
    for f in "$@" "$here/bench_common.h" "$here/bench_weights.h" "$here/../../tests/gpu/gpu_check.h"; do [ "$bin" -nt "$f" ] || return 1; done
}
build() {  # build NAME SRC [LIBS]: nvcc unless fresh (shards of one machine share the folder)
    local name=$1 src=$here/$2; shift 2
    if fresh "$bin_dir/$name" "$src"; then echo "up to date" > "$logs/build-$name.log"; return 0; fi
    rm -f "$bin_dir/$name.arch"
    nv "-arch=$arch" -O2 -I"$here" -o "$bin_dir/$name" "$src" "$@" > "$logs/build-$name.log" 2>&1 \
        && echo "$arch" > "$bin_dir/$name.arch"
}
build cfunc parallel_setup_cfunc.cu &
p1=$!
build sgemm suite_sgemm.cu -lcublas &
p2=$!
# Meanwhile (CPU only): one untimed warm-up import of every library the
# functions use (fills the byte-code folder and the page cache), then the weights.
c_mib=$([ "$quick" = 1 ] && echo 512 || echo 1024)
llm_gib=$([ "$quick" = 1 ] && echo 2 || echo 4)
py_ok=1
torch_ver=
warm_py='import json, time
t = time.monotonic()
import torch, torchvision, torchvision.models, transformers, safetensors.torch
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel
print(json.dumps({"warmup_import_s": round(time.monotonic() - t, 2), "torch": torch.__version__,
                  "torchvision": torchvision.__version__, "transformers": transformers.__version__}))'
if [ "$has_py" = 0 ]; then
    py_ok=0  # no Python workload selected: no warm-up import
elif ! timeout 300 "${pyw[@]}" -c "$warm_py" > "$logs/warmup-import.json" 2> "$logs/warmup-import.log"; then
    say "NOTE: $py_abs cannot import torch+torchvision+transformers+safetensors: Python workloads skipped ($(tail -n1 "$logs/warmup-import.log"))"
    py_ok=0
else
    torch_ver=$(sed -n 's/.*"torch": *"\([^"]*\)".*/\1/p' "$logs/warmup-import.json")
    say "warm-up import: $(cat "$logs/warmup-import.json")"
    gen_pids=()
    for k in resnet50 bert gpt2 llm; do
        case " $wls " in *" $k "*) ;; *) continue ;; esac
        # A --data folder keeps the weights and gen's record (its fast-build
        # proof) for the next shard: generation is deterministic.
        tag="$k gib=$llm_gib"
        if [ "$own_data" = 0 ] && [ -s "$data_dir/$k.safetensors" ] && [ -s "$data_dir/gen-$k.json" ] \
            && [ "$(cat "$data_dir/gen-$k.tag" 2>/dev/null)" = "$tag" ]; then
            cp "$data_dir/gen-$k.json" "$logs/gen-$k.json"
            echo "reused $data_dir/$k.safetensors" > "$logs/gen-$k.stderr"
            continue
        fi
        rm -f "$data_dir/gen-$k.tag"
        bench_unseal "$data_dir/$k.safetensors"
        ( timeout 600 "${pyw[@]}" "$here/suite_fn.py" gen "$k" "$data_dir/$k.safetensors" --gib "$llm_gib" --from-model \
            > "$logs/gen-$k.json" 2> "$logs/gen-$k.stderr" \
            && cp "$logs/gen-$k.json" "$data_dir/gen-$k.json" && echo "$tag" > "$data_dir/gen-$k.tag" ) &
        gen_pids+=($!)
    done
fi
wait $p1; rc1=$?
wait $p2; rc2=$?
if [ "$rc1" != 0 ]; then say "building cfunc failed: $(tail -n3 "$logs/build-cfunc.log")" >&2; exit 1; fi
if [ "$rc2" != 0 ]; then say "building sgemm failed: $(tail -n3 "$logs/build-sgemm.log")" >&2; exit 1; fi
case " $wls " in *" cfunc "*)
    if [ "$own_data" = 0 ] && [ -s "$data_dir/gen-c.json" ] && [ "$(cat "$data_dir/gen-c.tag" 2>/dev/null)" = "$c_mib" ] \
        && [ "$(stat -c %s "$data_dir/weights.bin" 2>/dev/null)" = $((c_mib * 1024 * 1024)) ]; then
        say "reusing $c_mib MiB of C weights in $data_dir"
        cp "$data_dir/gen-c.json" "$logs/gen-c.json"
    else
        say "generating $c_mib MiB of C weights"
        rm -f "$data_dir/gen-c.tag"
        bench_unseal "$data_dir/weights.bin"
        timeout 300 "$bin_dir/cfunc" --gen "$data_dir/weights.bin" $((c_mib * 1024 * 1024)) > "$logs/gen-c.json" 2> "$logs/gen-c.stderr" \
            || { say "generating the C weights failed: $(tail -n2 "$logs/gen-c.stderr")" >&2; exit 1; }
        cp "$logs/gen-c.json" "$data_dir/gen-c.json" && echo "$c_mib" > "$data_dir/gen-c.tag"
    fi
    bench_seal "$data_dir/weights.bin" ;;
esac
py_wls=
if [ "$py_ok" = 1 ]; then
    say "waiting for the Python weights (resnet50, bert, gpt2, llm $llm_gib GiB)"
    for pid in "${gen_pids[@]}"; do wait "$pid"; done
    for k in resnet50 bert gpt2 llm; do
        case " $wls " in *" $k "*) ;; *) continue ;; esac
        if [ -s "$data_dir/$k.safetensors" ]; then py_wls="$py_wls $k"; bench_seal "$data_dir/$k.safetensors"
        else say "NOTE: generating $k weights failed, skipped: $(tail -n1 "$logs/gen-$k.stderr")"; fi
    done
fi
c_wls=; for w in cfunc sgemm; do case " $wls " in *" $w "*) c_wls="$c_wls $w" ;; esac; done
say "set-up done after $(( $(date +%s) - ${t_start%.*} )) s; workloads:$c_wls$py_wls; parts:$parts"

# ------------------------------------------------------------------ machine + config
gpu_index=0
case "${CUDA_VISIBLE_DEVICES:-}" in [0-9]*) gpu_index=${CUDA_VISIBLE_DEVICES%%,*} ;; esac
[ -z "$hook_json" ] && [ -n "${OUT:-}" ] && [ -f "$OUT/launch-overhead.json" ] && hook_json=$OUT/launch-overhead.json
# The machine and the commit come from bench_result.machine(), as in every
# benchmark; a copy of a tree whose .git lags behind it (so the device tool's
# copies) names its commit in SAGE_BENCH_COMMIT, and both go into the JSON.

S_QUICK=$quick S_RUNS=$runs S_BUDGET=$budget S_TSTART=$t_start S_PARTS="$parts" S_CWLS="$c_wls" S_PYWLS="$py_wls" \
S_LOGS=$logs S_BIN=$bin_dir S_DATA=$data_dir S_HERE=$here S_PY=$py_abs S_LIBSAGE=$libsage \
S_SAGED=$build_dir/daemon/saged S_SAGECTL=$build_dir/tools/sagectl S_SOCK=$svc_dir/s.sock \
S_MPS_CTL=$mps_ctl S_MPS_PIPE=$svc_dir/mps-pipe S_MPS_LOG=$svc_dir/mps-log S_OUT=${OUT:-} S_HOOK=$hook_json \
S_GPUIDX=$gpu_index S_NVCC=$nvcc S_TORCH=$torch_ver \
S_CMIB=$c_mib S_LLMGIB=$llm_gib S_SHARD=$shard \
"$py_abs" "$here/suite.py" config "$logs/config.json" || exit 1

# The harness itself runs without libsage (only the functions get it).
env -u LD_PRELOAD "$py_abs" "$here/suite.py" run "$logs/config.json"
rc=$?
say "done in $(( $(date +%s) - ${t_start%.*} )) s (logs: $logs)"
if [ -n "$shard" ] && [ "${shard#*/}" != 1 ]; then
    k=${shard%/*}; n=${shard#*/}
    opts="--budget $budget${runs:+ --runs $runs}"
    say "shard $k/$n written to ${OUT:-(no OUT: results not written)}; the other shards, one device call each, each in its own OUT folder (replace SHARDS_DIR):"
    files=
    for j in $(seq 1 "$n"); do
        files="$files SHARDS_DIR/suite-shard-$j/results.json"
        [ "$j" = "$k" ] && continue
        echo "  OUT=SHARDS_DIR/suite-shard-$j scripts/bench/suite.sh --build $build_arg --shard $j/$n $opts"
    done
    say "then, anywhere (no GPU needed):"
    echo "  python3 scripts/bench/suite.py merge SHARDS_DIR/suite-merged$files"
fi
exit $rc

#!/usr/bin/env bash
# Sharing-based memory benchmark (issue 4, part 4): native vs SAGE
# (LD_PRELOAD=libsage.so SAGE_SHARE=1 with saged running) in one run, per
# workload: sequential invocations (upload time, hits), 16 at once (upload,
# GPU memory per instance), and density (instances resident at once).
#   workloads  cfunc    share_cfunc.cu: a 6 GiB weight file, one cudaMemcpy, checksum kernel
#              llm      suite_fn.py llm: a 6 GiB fp16 safetensors state dict + matmul chain
#              resnet50, gpt2   suite_fn.py: real architectures (GPT-2 medium)
# Driver and report: density.py (its docstring says what each phase does).
set -uo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/bench/density.sh [--build DIR] [--quick] [--workloads LIST] [--out DIR] [options]

  --build DIR       meson build folder (intercept/libsage.so, daemon/saged, tools/sagectl) (default: build)
  --quick           fewer invocations, smaller density caps, budget 230 s (about 4 minutes)
  --workloads LIST  comma list of cfunc,llm,resnet50,gpt2 (default: all four)
  --out DIR         where density.json, density.txt, density.png go (default: $OUT, else the logs folder)
  --data DIR        folder for the generated weights, kept and reused (default: a temporary one, deleted)
  --budget SEC      start nothing that would end after SEC seconds from the start, set-up included
                    (default 470, --quick 230; 0 = no budget); what is skipped or cut is reported
  --counts SPEC     override counts, e.g. llm.seq_sage=16,all.conc=8 (keys: seq_native, seq_sage,
                    conc, cap, wave; density.py prints the counts used)
  --c-gib G         size of the C function's weight file (default 6)
  --llm-gib G       size of the llm state dict (default 6)
  --cfunc-read      the C function read()s its file into a malloc'ed buffer (default: mmap, MAP_PRIVATE)
  --arch ARCH       nvcc -arch (default sm_90)
  -h, --help        this help

Default counts (--quick in brackets): cfunc seq native 8 [4] / SAGE 16 [8], 16 [8] at once,
density cap 160 [64]; llm 3 [2] / 8 [4], 16 [8], cap 48 [24]; resnet50 3 [2] / 4 [3], 16 [8],
cap 48 [16]; gpt2 2 [1] / 4 [3], 16 [4], cap 48 [16].
Prints a table (workload | native upload | SAGE upload (hits) | speed-up | MiB per instance |
bytes shared | density native vs SAGE | extrapolated density | checksums). Environment: NVCC,
PYTHON (default python3; torch, safetensors, transformers (gpt2), torchvision (resnet50)).
Logs and traces: BUILD/bench-bin/density/logs. Exit: 0 every checksum matched, 1 a mismatch or
a failed invocation, 2 usage, 77 no GPU or no nvcc.
EOF
}

build_dir=build quick=0 workloads=cfunc,llm,resnet50,gpt2 out=${OUT:-} data_dir= budget= counts=
c_gib=6 llm_gib=6 cfunc_read=0 arch=sm_90
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build_dir=${2:?--build needs a folder}; shift 2 ;;
        --quick) quick=1; shift ;;
        --workloads) workloads=${2:?}; shift 2 ;;
        --out) out=${2:?}; shift 2 ;;
        --data) data_dir=${2:?}; shift 2 ;;
        --budget) budget=${2:?}; shift 2 ;;
        --counts) counts=${2:?}; shift 2 ;;
        --c-gib) c_gib=${2:?}; shift 2 ;;
        --llm-gib) llm_gib=${2:?}; shift 2 ;;
        --cfunc-read) cfunc_read=1; shift ;;
        --arch) arch=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "density: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
t_start=$(date +%s.%N)
[ -n "$budget" ] || budget=$([ "$quick" = 1 ] && echo 230 || echo 470)
case "$budget" in ''|*[!0-9]*) echo "density: --budget takes whole seconds" >&2; exit 2 ;; esac
for g in "$c_gib" "$llm_gib"; do
    case "$g" in ''|*[!0-9.]*) echo "density: --c-gib/--llm-gib take numbers" >&2; exit 2 ;; esac
done
for w in ${workloads//,/ }; do
    case "$w" in cfunc|llm|resnet50|gpt2) ;; *) echo "density: unknown workload $w" >&2; exit 2 ;; esac
done

say() { echo "density: $*"; }
has() { case ",$workloads," in *",$1,"*) return 0 ;; esac; return 1; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}

. "$here/lib.sh"
bench_require_gpu density
bench_find_nvcc
if has cfunc && ! command -v "$nvcc" > /dev/null 2>&1; then say "SKIP: nvcc not found (set NVCC)"; exit 77; fi
py_abs=$(command -v "$python" || true)
[ -n "$py_abs" ] || { say "$python not found (set PYTHON)" >&2; exit 1; }
# The interpreter itself, not a wrapper (pyenv shims): functions start as one process.
py_abs=$("$py_abs" -c 'import sys; print(sys.executable)' 2> /dev/null) || py_abs=$(command -v "$python")

build_dir=$(cd "$build_dir" && pwd) || exit 1
libsage=$build_dir/intercept/libsage.so saged=$build_dir/daemon/saged sagectl=$build_dir/tools/sagectl
for f in "$libsage" "$saged"; do
    [ -f "$f" ] || { say "$f not found: build the project first (meson compile -C $build_dir)" >&2; exit 1; }
done
[ -x "$sagectl" ] || { say "NOTE: $sagectl not found: no broker statistics"; sagectl=; }

bench_bin_dir density
bench_bytecode "$bin_dir" "$py_abs" || exit 1  # written by the import checks and weight generation below
[ -n "$out" ] && { mkdir -p "$out" || exit 1; out=$(cd "$out" && pwd); }
bench_data_dir density
data_dir=$(cd "$data_dir" && pwd)
svc_dir=$(mktemp -d "${TMPDIR:-/tmp}/sage-density-svc.XXXXXX") || exit 1
pids=()
cleanup() {
    # Safety net: density.py stops saged and its function processes itself.
    local p
    for p in "${pids[@]}"; do kill "$p" 2> /dev/null; done
    if [ -s "$svc_dir/saged.pid" ]; then
        p=$(cat "$svc_dir/saged.pid")
        kill "$p" 2> /dev/null && sleep 1 && kill -9 "$p" 2> /dev/null
    fi
    [ "$own_data" = 1 ] && bench_drop_data "$data_dir"
    rm -rf "$svc_dir" "$bin_dir/tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ build + weights (in parallel)
c_bytes=$(awk -v g="$c_gib" 'BEGIN { printf "%.0f", int(g * 1073741824 / 8) * 8 }')
c_file=$data_dir/cfunc-${c_gib}g.bin
llm_file=$data_dir/llm-${llm_gib}g.safetensors
if has cfunc; then
    say "building share_cfunc; weights in $data_dir"
    env "TMPDIR=$bin_dir/tmp" "$nvcc" "-arch=$arch" -O2 -I"$here" -o "$bin_dir/share_cfunc" "$here/share_cfunc.cu" \
        > "$logs/build-cfunc.log" 2>&1 &
    build_pid=$!
    pids+=("$build_pid")
fi
notes=()
py_wls=
torch_ok=
for k in llm resnet50 gpt2; do
    has "$k" || continue
    mods="torch, safetensors.torch"
    case "$k" in gpt2) mods="$mods, transformers" ;; resnet50) mods="$mods, torchvision.models" ;; esac
    more=
    [ "$k" = gpt2 ] && more="; from transformers import GPT2Config, GPT2LMHeadModel"
    if ! timeout 180 "${pyw[@]}" -c "import $mods$more" > "$logs/import-$k.log" 2>&1; then
        notes+=(--note "$k: skipped, $py_abs cannot import $mods: $(tail -n1 "$logs/import-$k.log")")
        say "NOTE: $k skipped: cannot import $mods ($(tail -n1 "$logs/import-$k.log"))"
        continue
    fi
    py_wls="$py_wls $k"
done
gen_pids=()
for k in $py_wls; do
    f=$data_dir/$k.safetensors
    [ "$k" = llm ] && f=$llm_file
    [ -s "$f" ] && continue
    timeout 900 "${pyw[@]}" "$here/suite_fn.py" gen "$k" "$f" --gib "$llm_gib" \
        > "$logs/gen-$k.json" 2> "$logs/gen-$k.stderr" &
    gen_pids+=($!)
    pids+=($!)
done
[ ${#gen_pids[@]} -gt 0 ] && say "generating Python weights:$py_wls (llm $llm_gib GiB)"
cfunc_expect=
if has cfunc; then
    wait "$build_pid" || { say "building share_cfunc failed: $(tail -n3 "$logs/build-cfunc.log")" >&2; exit 1; }
    if [ -f "$c_file" ] && [ "$(stat -c %s "$c_file")" = "$c_bytes" ] && [ -s "$c_file.json" ]; then
        say "reusing $c_file"
    else
        say "generating $c_gib GiB of C weights"
        if ! timeout 600 "$bin_dir/share_cfunc" --gen "$c_file.tmp" "$c_bytes" > "$c_file.json.tmp" 2> "$logs/gen-cfunc.stderr"; then
            say "generating the C weights failed: $(tail -n2 "$logs/gen-cfunc.stderr")" >&2
            exit 1
        fi
        bench_unseal "$c_file"
        mv "$c_file.tmp" "$c_file" && mv "$c_file.json.tmp" "$c_file.json" || exit 1
    fi
    cfunc_expect=$(sed -n 's/.*"checksum": *"\([0-9a-f]*\)".*/\1/p' "$c_file.json")
    bench_seal "$c_file"
fi
for p in "${gen_pids[@]}"; do wait "$p"; done
files=()
has cfunc && files+=(--file "cfunc=$c_file")
for k in $py_wls; do
    f=$data_dir/$k.safetensors
    [ "$k" = llm ] && f=$llm_file
    if [ -s "$f" ]; then
        files+=(--file "$k=$f")
        bench_seal "$f"
    else
        notes+=(--note "$k: skipped, generating its weights failed: $(tail -n1 "$logs/gen-$k.stderr" 2> /dev/null)")
        say "NOTE: generating $k weights failed, skipped: $(tail -n1 "$logs/gen-$k.stderr" 2> /dev/null)"
    fi
done
pids=()
say "set-up done after $(( $(date +%s) - ${t_start%.*} )) s"

gpu_index=0
case "${CUDA_VISIBLE_DEVICES:-}" in [0-9]*) gpu_index=${CUDA_VISIBLE_DEVICES%%,*} ;; esac
args=(run --libsage "$libsage" --saged "$saged" --sagectl "$sagectl" --socket "$svc_dir/s.sock"
      --pidfile "$svc_dir/saged.pid" --python "$py_abs" --suite-fn "$here/suite_fn.py"
      --workloads "$workloads" --budget "$budget" --t-start "$t_start" --gpu-index "$gpu_index"
      --logs "$logs" "${files[@]}" "${notes[@]}")
[ "$quick" = 1 ] && args+=(--quick)
[ -n "$out" ] && args+=(--out "$out")
[ -n "$counts" ] && args+=(--counts "$counts")
has cfunc && args+=(--cfunc-bin "$bin_dir/share_cfunc" --cfunc-expect "$cfunc_expect")
[ "$cfunc_read" = 1 ] && args+=(--cfunc-read)

# The harness itself runs without libsage (only the functions get it).
env -u LD_PRELOAD "$py_abs" "$here/density.py" "${args[@]}"
rc=$?
say "done in $(( $(date +%s) - ${t_start%.*} )) s (exit $rc)"
exit $rc

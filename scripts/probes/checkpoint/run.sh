#!/usr/bin/env bash
# The checkpoint-API probes for the design of instance suspend (issue 12), on
# the GPU machine. Each probe is bounded (its own SIGALRM bound, and timeout
# around it), prints one line of facts `NAME: key=value ...`, and kills the
# processes it started. See probe.c's header for what each one answers.
#
#   scripts/probes/checkpoint/run.sh [PROBE...]   (default: all)
#     PROBE: block self reservation unmapped-import held-import ctxmem recursion
#   Environment: OUT (default ./probe-out): OUT/checkpoint-probes.json and .txt;
#     PROBE_LIBSAGE (default: build/intercept/libsage.so if present): ctxmem
#     also measures a context under libsage with SAGE_CTX_STACK_LIMIT=16;
#     NVCC (default nvcc): builds recursion.cu for the recursion probe.
# held-import is the known-bad control (restore NOT_SUPPORTED, stuck for
# good on driver 580): run last, and the stuck process is SIGKILLed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${OUT:-$PWD/probe-out}
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
mkdir -p "$out"
probes=("$@")
[ ${#probes[@]} -gt 0 ] || probes=(ctxmem recursion block self reservation unmapped-import held-import)

stubs=()
[ -d /usr/local/cuda/lib64/stubs ] && stubs=(-L/usr/local/cuda/lib64/stubs)
gcc -O2 -I/usr/local/cuda/include "$here/probe.c" "${stubs[@]}" -lcuda -lpthread -o "$bin/probe" ||
    { echo "run.sh: probe.c does not build" >&2; exit 1; }
if [ -z "${PROBE_LIBSAGE:-}" ] && [ -f "$root/build/intercept/libsage.so" ]; then
    export PROBE_LIBSAGE=$root/build/intercept/libsage.so
fi
nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}

recursion() {
    if ! "$nvcc" -arch=sm_90 -O2 -o "$bin/recursion" "$here/recursion.cu" > "$bin/nvcc.log" 2>&1; then
        echo "recursion: build=failed ($(tail -n1 "$bin/nvcc.log"))"
        return
    fi
    local line="" stack depth max frame=""
    for stack in 0 16; do
        max=0
        for depth in 0 1 2 4 8 16 32 64; do
            r=$(timeout 60 "$bin/recursion" "$depth" "$stack" 2>&1 | tail -n1)
            case $r in
                ok*) max=$depth; frame=${r#*static_frame=}; frame=${frame%% *} ;;
                *) line+=" stack${stack}_first_failure=[${r//[$'\n']/ }]"; break ;;
            esac
        done
        line+=" stack${stack}_max_depth=$max"
    done
    echo "recursion: static_frame=$frame$line"
}

: > "$out/checkpoint-probes.txt"
for p in "${probes[@]}"; do
    case $p in
        recursion) line=$(recursion) ;;
        *) line=$(timeout -k 5 150 "$bin/probe" "$p" 120 2> "$out/$p.stderr" | tail -n1)
           [ -n "$line" ] || line="$p: no_result=yes rc=$?" ;;
    esac
    echo "$line" | tee -a "$out/checkpoint-probes.txt"
done

gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n1)
python3 - "$out/checkpoint-probes.txt" "$out/checkpoint-probes.json" "$gpu" <<'PY'
import json, re, sys
result = {"gpu": sys.argv[3], "probes": {}}
for line in open(sys.argv[1]):
    name, _, rest = line.rstrip("\n").partition(": ")
    facts = {}
    # key=value, where a value may be [bracketed text with spaces]
    for m in re.finditer(r"(\S+?)=(\[[^\]]*\]|\S+)", rest):
        facts[m.group(1)] = m.group(2).strip("[]")
    result["probes"][name] = {"line": rest, "facts": facts}
json.dump(result, open(sys.argv[2], "w"), indent=2)
PY
echo "run.sh: $out/checkpoint-probes.json"

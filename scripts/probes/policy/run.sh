#!/usr/bin/env bash
# The broker's memory policy on the GPU (issue 12; docs/suspend.md, "Memory
# policy"): what only the real driver and NVML can say. Bounded; prints one
# line of facts per check, `NAME: key=value ...`, and kills what it started.
#
#   scripts/probes/policy/run.sh        (after scripts/test.sh --build build)
#
# nvml       sagectl's gpu_bytes for an instance holding 256 MiB against
#            nvidia-smi's used_memory for its pid (match=yes within 1 MiB),
#            then 0 while suspended and host_bytes = the footprint
# cap        saged --instance-memory = 1.5 x one instance's footprint,
#            --instance-evict any: the second instance's registration
#            suspends the first; resuming the first suspends the second; both
#            read their memory back intact (first=ok second=ok)
# free       cuMemGetInfo's view: a resume is refused while the GPU lacks the
#            footprint + 256 MiB (filled by a third process), then served
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=${BUILD:-$root/build}
command -v nvidia-smi > /dev/null || { echo "policy: no GPU (nvidia-smi not found)"; exit 77; }
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2> /dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
stubs=()
[ -d /usr/local/cuda/lib64/stubs ] && stubs=(-L/usr/local/cuda/lib64/stubs)
gcc -O2 -I/usr/local/cuda/include "$here/holder.c" "${stubs[@]}" -lcuda -o "$tmp/holder" ||
    { echo "policy: holder.c does not build"; exit 1; }
sock=$tmp/saged.sock
saged_pid=
saged() {
    # shellcheck disable=SC2086 # SAGED_ARGS: extra words (a smoke run without a GPU: the simulated NVML)
    "$build/daemon/saged" ${SAGED_ARGS:-} --foreground --socket "$sock" -v "$@" 2>> "$tmp/saged.log" &
    saged_pid=$!
    pids+=("$saged_pid")
    for _ in $(seq 100); do
        "$build/tools/sagectl" --socket "$sock" ping > /dev/null 2>&1 && return
        sleep 0.1
    done
}
stop_saged() { kill "$saged_pid" 2> /dev/null; wait "$saged_pid" 2> /dev/null; rm -f "$tmp"/*.in "$tmp"/*.out; }
ctl() { timeout 60 "$build/tools/sagectl" --socket "$sock" "$@"; }
# holder NAME MiB: start it under libsage (registered as an instance); its pid in PID_NAME,
# its stdin/stdout on the fds in W[NAME] / R[NAME]. Not in a subshell: the fds and pids stay here.
declare -A W R P
holder() {
    local line w r
    mkfifo "$tmp/$1.in" "$tmp/$1.out"
    SAGE_SUSPEND=1 SAGE_SOCKET=$sock LD_PRELOAD=$build/intercept/libsage.so \
        "$tmp/holder" "$2" < "$tmp/$1.in" > "$tmp/$1.out" &
    pids+=($!)
    P[$1]=$!
    exec {w}> "$tmp/$1.in" {r}< "$tmp/$1.out"
    W[$1]=$w
    R[$1]=$r
    read -r -t 60 line <&"$r" || true
}
ask() {
    local line
    echo x >&"${W[$1]}"
    read -r -t 60 line <&"${R[$1]}" || true
    echo "${line:-timeout}"
}
field() { ctl instances --json | python3 -c "import json,sys; print(next((str(e['$2']) for e in json.load(sys.stdin) if e['pid']==$1), 'none'))"; }
smi_mib() { nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits | awk -F', ' -v p="$1" '$1==p {print $2}'; }

# nvml
saged
holder a 256; a=${P[a]}
bytes=$(field "$a" gpu_bytes); smi=$(smi_mib "$a")
match=no; [ -n "$smi" ] && [ "$bytes" != None ] && [ $(( (bytes >> 20) - smi )) -le 1 ] && [ $(( smi - (bytes >> 20) )) -le 1 ] && match=yes
ctl suspend "$a" > /dev/null
echo "nvml: gpu_bytes=$bytes nvidia_smi_mib=${smi:-none} match=$match suspended_gpu_bytes=$(field "$a" gpu_bytes) host_bytes=$(field "$a" host_bytes) smi_while_suspended=$(smi_mib "$a" || true)"
ctl resume "$a" > /dev/null
footprint=$bytes
echo "nvml: after_resume=$(ask a) gpu_bytes=$(field "$a" gpu_bytes)"
kill "$a"; stop_saged

# cap
cap=$(( footprint * 3 / 2 ))
saged --instance-memory "$cap" --instance-evict any
holder a 256; a=${P[a]}
holder b 256; b=${P[b]}
sleep 3
echo "cap: cap_bytes=$cap first=$(field "$a" state) second=$(field "$b" state)"
ctl resume "$a" > /dev/null
echo "cap: after_resume_first first=$(field "$a" state) second=$(field "$b" state) first_memory=$(ask a)"
ctl resume "$b" > /dev/null
echo "cap: after_resume_second first=$(field "$a" state) second=$(field "$b" state) second_memory=$(ask b)"
kill "$a" "$b"
stop_saged

# free: fill the GPU but the footprint, then ask for a restore
saged
holder c 256; c=${P[c]}
ctl suspend "$c" > /dev/null
free_mib=$(nvidia-smi --query-gpu=memory.free --format=csv,noheader,nounits -i 0)
fill=$(( free_mib - 128 ))
holder f "$fill"; f=${P[f]}
echo "free: filled_mib=$fill resume=\"$(ctl resume "$c" 2>&1 | tr '\n' ' ')\" state=$(field "$c" state)"
kill "$f"
sleep 2
echo "free: after_fill_gone resume=\"$(ctl resume "$c" 2>&1 | tr '\n' ' ')\" state=$(field "$c" state) memory=$(ask c)"
kill "$c"
stop_saged

#!/usr/bin/env bash
# Sharing-based memory (experimental, SAGE_SHARE=1): the C function of
# parallel_setup_cfunc.cu (reads a weight file, cudaMalloc + one cudaMemcpy of
# it, a kernel that checksums it) invoked N times in sequence, native and
# under SAGE with a broker, interleaved. Prints the upload time and checksum
# of every invocation side by side; writes $OUT/sharing.json when OUT is set
# (sharing_report.py: n, median, min, max of native, cold and warm uploads).
#   scripts/bench/sharing.sh [--build DIR] [--gib N] [--runs N]
set -euo pipefail
build=build gib=4 runs=4
usage() { sed -n '2,8p' "$0"; }
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
bench_args sharing "--build=build --gib=gib --runs=runs" "$@"
build=$(cd "$build" && pwd)
bench_require_gpu sharing
bench_require_nvcc sharing
tmp=$(mktemp -d)
saged_pid=
trap '[ -n "$saged_pid" ] && kill "$saged_pid" 2>/dev/null; rm -rf "$tmp"' EXIT
"$nvcc" -arch=sm_90 -O2 -I"$here" -o "$tmp/cfunc" "$here/parallel_setup_cfunc.cu"
"$tmp/cfunc" --gen "$tmp/weights.bin" $((gib << 30)) >/dev/null
export SAGE_SOCKET=$tmp/saged.sock
"$build/daemon/saged" --socket "$SAGE_SOCKET" --foreground 2>"$tmp/saged.log" &
saged_pid=$!
for _ in $(seq 100); do [ -S "$SAGE_SOCKET" ] && break; sleep 0.1; done
field() { sed -n "s/.*\"$1\":\\([0-9.]*\\).*/\\1/p"; }
sumf() { sed -n 's/.*"checksum":"\{0,1\}\([0-9a-fx]*\).*/\1/p'; }
printf '%-4s | %-28s | %-28s\n' run "native: upload ms, checksum" "SAGE: upload ms, checksum"
: > "$tmp/runs.jsonl"
for i in $(seq "$runs"); do
  n=$("$tmp/cfunc" "$tmp/weights.bin")
  s=$(SAGE_SHARE=1 SAGE_TRACE="$tmp/t$i.json" LD_PRELOAD="$build/intercept/libsage.so" "$tmp/cfunc" "$tmp/weights.bin")
  stats=$(python3 -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))['otherData']['stats']))" "$tmp/t$i.json")
  printf '%-4s | %10s  %-16s | %10s  %-16s\n' "$i" "$(field upload_ms <<<"$n")" "$(sumf <<<"$n")" \
    "$(field upload_ms <<<"$s")" "$(sumf <<<"$s")"
  printf '{"run":%s,"native":%s,"sage":%s,"sage_stats":%s}\n' "$i" "$n" "$s" "$stats" >> "$tmp/runs.jsonl"
done
mem=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader | grep "^$saged_pid," || true)
broker=$("$build/tools/sagectl" stats --json || true)
echo "broker: $broker; GPU memory of saged: ${mem:-?}"
# OUT/sharing.json: sharing_report.py, through bench_result (the one result schema).
if [ -n "${OUT:-}" ]; then
  python3 "$here/sharing_report.py" "$tmp/runs.jsonl" "$OUT" "$nvcc" "${broker:-null}"
fi
exit 0

#!/usr/bin/env bash
# Sharing-based memory against the simulated driver and the real broker:
# a first function publishes its weights, a second maps them instead of
# copying; outputs never change; no broker / another content: plain path.
#   share_checks.sh SHARE_TEST SAGED SAGECTL PYTHON3
set -euo pipefail
prog=$1 saged=$2 sagectl=$3 python=$4
. "$(dirname "$0")/lib.sh"
export SAGE_SOCKET=$tmp/saged.sock SAGE_SHARE=1
"$saged" --socket "$SAGE_SOCKET" --foreground 2>"$tmp/saged.log" &
saged_pid=$!
trap 'kill "$saged_pid" 2>/dev/null || true; wait "$saged_pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do [ -S "$SAGE_SOCKET" ] && break; sleep 0.1; done

native=$("$prog" 96 7)
step "first function: uploads, publishes at free"
out=$(SAGE_TRACE="$tmp/1.json" LD_PRELOAD="$preload" "$prog" 96 7) || bad "first run"
[ "$out" = "$native" ] || bad "first run output: $out vs $native"
[ "$(stat_of "$tmp/1.json" SHARE_ALLOCS)" = 1 ] || bad "not VMM-backed"
[ "$(stat_of "$tmp/1.json" SHARE_MISSES)" = 1 ] || bad "first upload not a miss"
[ "$(stat_of "$tmp/1.json" SHARE_PUBLISHED)" = 1 ] || bad "not published"
"$sagectl" stats --json | "$python" -c 'import json,sys; d=json.load(sys.stdin); assert d["extents"] == 1, d' || bad "broker holds no extent"

step "second function: maps the extent instead of copying, same output"
out=$(SAGE_TRACE="$tmp/2.json" LD_PRELOAD="$preload" "$prog" 96 7) || bad "second run"
[ "$out" = "$native" ] || bad "second run output: $out vs $native"
[ "$(stat_of "$tmp/2.json" SHARE_HITS)" = 1 ] || bad "second upload not served by the extent"
"$python" - "$tmp/2.json" <<'PY' || bad "the hit still copied"
import json, sys
ev = [e for e in json.load(open(sys.argv[1]))["traceEvents"] if e.get("name") == "cuMemcpyHtoD_v2"]
assert len(ev) == 1 and ev[0]["args"]["bytes"] == 96 << 20, ev
PY

step "other content: a miss, same output as native"
native2=$("$prog" 96 8)
out=$(SAGE_TRACE="$tmp/3.json" LD_PRELOAD="$preload" "$prog" 96 8) || bad "third run"
[ "$out" = "$native2" ] || bad "third run output"
[ "$(stat_of "$tmp/3.json" SHARE_HITS)" = 0 ] || bad "different content hit"

step "small allocations and no broker: the plain path"
out=$(SAGE_SHARE_MIN=1G SAGE_TRACE="$tmp/4.json" LD_PRELOAD="$preload" "$prog" 96 7) || bad "small run"
[ "$(stat_of "$tmp/4.json" SHARE_ALLOCS)" = 0 ] || bad "below SAGE_SHARE_MIN yet VMM-backed"
kill "$saged_pid"; wait "$saged_pid" 2>/dev/null || true
out=$(SAGE_TRACE="$tmp/5.json" LD_PRELOAD="$preload" "$prog" 96 7) || bad "no-broker run"
[ "$out" = "$native" ] || bad "no-broker output"
[ "$(stat_of "$tmp/5.json" SHARE_ALLOCS)" = 0 ] || bad "VMM-backed without a broker"

[ "$fail" -eq 0 ] && echo "share_checks: all passed"
exit "$fail"

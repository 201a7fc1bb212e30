#!/usr/bin/env bash
# Integration checks of libsage against the simulated driver:
# transparency (same output and exit code with and without libsage), the
# trace dump (valid Chrome JSON with the expected events, stacks, dumps on a
# fatal signal), and silence (a process that never uses CUDA: no output, no
# driver loaded).
#   trace_checks.sh WORKLOAD CHECK_TRACE_PY PYTHON3 SAGE_RUN SAGE_TRACE
set -euo pipefail
workload=$1 check=$2 python=$3 sage_run=$4 sage_trace=$5
. "$(dirname "$0")/lib.sh"

step "transparency: 4 threads, native vs libsage"
"$workload" --threads 4 >"$tmp/native.out" 2>"$tmp/native.err" || bad "native run exited $?"
LD_PRELOAD=$preload "$workload" --threads 4 >"$tmp/sage.out" 2>"$tmp/sage.err" || bad "libsage run exited $?"
cmp -s "$tmp/native.out" "$tmp/sage.out" || { bad "outputs differ"; diff "$tmp/native.out" "$tmp/sage.out" || true; }
[ -s "$tmp/native.out" ] || bad "no output"
[ ! -s "$tmp/sage.err" ] || { bad "libsage printed on stderr uninvited"; cat "$tmp/sage.err"; }

step "trace: events, categories and per-thread names"
"$workload" --threads 2 >"$tmp/native2.out" || bad "native 2-thread run exited $?"
SAGE_TRACE="$tmp/trace-%p.json" LD_PRELOAD=$preload "$workload" --threads 2 >"$tmp/t.out" || bad "traced run exited $?"
cmp -s "$tmp/native2.out" "$tmp/t.out" || bad "traced output differs from native"
set -- "$tmp"/trace-*.json
[ -f "$1" ] || bad "no trace written"
"$python" "$check" "$1" --expect-cat init,ctx,mem,copy,module,launch,sync,proc \
  --expect-name cuMemAlloc_v2 --expect-name cuMemcpyHtoD_v2_ptds --expect-name cuMemcpyDtoHAsync_v2_ptsz \
  --expect-name cuLaunchKernel_ptsz --expect-count cuMemAlloc_v2=2 --expect-count cuLaunchKernel_ptsz=2 \
  || bad "trace content"
# The workload reaches the driver as cudart does (dlsym of cuGetProcAddress_v2,
# then every entry point through it): each answer must be the driver's own
# entry point, routed by pointer identity to SAGE's hook.
[ "$(stat_of "$1" PROCADDR_SUBSTITUTED)" -gt 0 ] || bad "cuGetProcAddress answers were not routed to hooks"
[ "$(stat_of "$1" PROCADDR_UNMATCHED)" = 0 ] || bad "$(stat_of "$1" PROCADDR_UNMATCHED) cuGetProcAddress answers matched no hook"
rm -f "$tmp"/trace-*.json

step "trace: SAGE_TRACE_STACKS=1 adds backtraces"
SAGE_TRACE="$tmp/stacks.json" SAGE_TRACE_STACKS=1 LD_PRELOAD=$preload "$workload" >/dev/null || bad "stacks run exited $?"
"$python" "$check" "$tmp/stacks.json" --expect-stack || bad "no stacks"
# The app's own calls: the innermost frame is the workload, not libsage.
"$python" - "$tmp/stacks.json" <<'PY' || bad "stacks do not start in the app"
import json, sys
ev = [e for e in json.load(open(sys.argv[1]))["traceEvents"] if e.get("name") in ("cuMemAlloc_v2", "cuMemFree_v2")]
assert ev, "no allocation events"
for e in ev:
    st = e.get("args", {}).get("stack") or e.get("stack")
    assert st and st[0].startswith("workload+"), (e["name"], st)
PY

step "trace: a fatal signal still writes the dump, and the signal still kills"
set +e
# (Under AddressSanitizer, ASan would take SIGSEGV itself: leave it to us.)
ASAN_OPTIONS="${ASAN_OPTIONS:-}:handle_segv=0" \
  SAGE_TRACE="$tmp/crash.json" LD_PRELOAD=$preload "$workload" --crash >/dev/null 2>&1
rc=$?
set -e
[ "$rc" -eq $((128 + 11)) ] || bad "crash run exited $rc, expected death by SIGSEGV (139)"
"$python" "$check" "$tmp/crash.json" --expect-name cuMemAlloc_v2 || bad "no dump after SIGSEGV"

step "trace: the event cap drops, counts, and keeps the file valid"
SAGE_TRACE="$tmp/cap.json" SAGE_TRACE_MAX_EVENTS=5 LD_PRELOAD=$preload "$workload" >/dev/null || bad "capped run"
"$python" - "$tmp/cap.json" <<'PY' || bad "cap not honoured"
import json, sys
d = json.load(open(sys.argv[1]))
x = [e for e in d["traceEvents"] if e["ph"] == "X"]
assert len(x) == 5, len(x)
assert d["otherData"]["stats"]["TRACE_DROPPED"] > 0
PY

step "silence: no CUDA, no driver, no output"
out=$(LD_PRELOAD=$preload "$workload" --no-cuda 2>&1) || bad "no-cuda run: $out"
[ "$out" = "no-cuda: driver not loaded" ] || bad "no-cuda run printed: $out"
out=$(LD_PRELOAD=$preload SAGE_TRACE="$tmp/none.json" true 2>&1) || bad "true failed"
[ -z "$out" ] || bad "true printed: $out"

step "trace: a wrapper that made no driver call leaves the app's dump (timeout, sh -c)"
# The wrapper exits after the app: before the fix its empty dump (process_name
# only) replaced the app's.
for wrap in "timeout 30" "sh -c \"\$0\";:"; do
  rm -f "$tmp/wrapped.json"
  SAGE_TRACE="$tmp/wrapped.json" LD_PRELOAD=$preload $wrap "$workload" >/dev/null || bad "$wrap: run exited $?"
  "$python" "$check" "$tmp/wrapped.json" --expect-name cuLaunchKernel_ptsz || bad "$wrap: the app's dump was overwritten"
done
# And a process that made no call neither writes nor truncates one.
echo keep >"$tmp/existing.json"
SAGE_TRACE="$tmp/existing.json" LD_PRELOAD=$preload "$workload" --no-cuda >/dev/null || bad "no-cuda run"
[ "$(cat "$tmp/existing.json")" = keep ] || bad "a process without driver calls rewrote an existing dump"
SAGE_TRACE="$tmp/nocalls.json" LD_PRELOAD=$preload true || bad "true failed"
[ ! -e "$tmp/nocalls.json" ] || bad "a process without driver calls wrote a dump"

step "options: SAGE_VERBOSE=1 lists options; bad values are warned about, not fatal"
out=$(SAGE_VERBOSE=1 SAGE_TRACE_STACKS=maybe LD_PRELOAD=$preload "$workload" 2>&1 >/dev/null) || bad "verbose run"
grep -q 'sage: option SAGE_TRACE_STACKS=0' <<<"$out" || bad "option listing missing: $out"
grep -q 'ignoring SAGE_TRACE_STACKS="maybe"' <<<"$out" || bad "bad value not reported: $out"

step "sage-run: preloads, traces, refuses a missing library"
"$workload" >"$tmp/native1.out" || bad "native exited $?"
"$sage_run" --trace "$tmp/run.json" -- "$workload" >"$tmp/run.out" || bad "sage-run exited $?"
cmp -s "$tmp/native1.out" "$tmp/run.out" || bad "sage-run output differs"
"$python" "$check" "$tmp/run.json" --expect-name cuLaunchKernel_ptsz || bad "sage-run trace"
set +e
out=$("$sage_run" --lib /nonexistent/libsage.so -- true 2>&1); rc=$?
set -e
[ "$rc" -eq 127 ] && grep -q "cannot find libsage.so" <<<"$out" || bad "missing library: rc $rc, $out"

step "sage-trace: summary and JSON of a dump"
"$sage_trace" summary "$tmp/run.json" >"$tmp/summary.txt" || bad "sage-trace summary exited $?"
grep -q "first launch" "$tmp/summary.txt" && grep -q "host to device *16384" "$tmp/summary.txt" \
  || { bad "summary content"; cat "$tmp/summary.txt"; }
"$sage_trace" summary --json "$tmp/run.json" | "$python" -c '
import json, sys
d = json.load(sys.stdin)
assert d["bytes"]["htod"] == 16384 and d["setup"]["launch"] is not None, d' || bad "sage-trace --json"
set +e
"$sage_trace" summary "$tmp/native.out" >/dev/null 2>&1; rc=$?
set -e
[ "$rc" -eq 1 ] || bad "sage-trace accepted a file that is no trace (rc $rc)"

[ "$fail" -eq 0 ] && echo "trace_checks: all passed"
exit "$fail"

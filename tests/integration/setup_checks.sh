#!/usr/bin/env bash
# Parallel set-up and context redirect, against the simulated driver:
# overlap of the warm-up with the app's start-up, auto/lazy/eager modes,
# fork safety, exit during warm-up, error transparency, and the redirect's
# semantics (same results, memory returned, nesting and flags).
#   setup_checks.sh SETUP_TEST_LINKED SETUP_TEST_DLOPEN PYTHON3 FRAMEWORK_LIB
set -euo pipefail
linked=$1 dl=$2 python=$3 framework=$4
. "$(dirname "$0")/lib.sh"
sage() { env LD_PRELOAD="$preload" "$@"; }
ms() { sed -n 's/^setup_ms=//p'; }
export SAGE_FAKE_INIT_MS=300 SAGE_FAKE_CTX_MS=200

step "overlap: 600 ms of the app's own start-up hide 500 ms of CUDA set-up"
native=$("$linked" overlap 600 | ms)
auto=$(sage "$linked" overlap 600 | ms)
lazy=$(SAGE_WARMUP=lazy sage "$linked" overlap 600 | ms)
# A Python function: the framework's CUDA library is dlopen()ed first (it
# brings libcuda in as a dependency), the rest of the start-up follows.
eager_dl=$(SAGE_WARMUP=eager sage "$dl" framework-overlap 600 "$framework" | ms)
auto_dl=$(sage "$dl" framework-overlap 600 "$framework" | ms)
echo "blocked in set-up (ms): native $native, auto (linked) $auto, lazy $lazy, eager (framework) $eager_dl, auto (framework) $auto_dl"
# Relative bounds: a loaded CI machine stretches every figure alike.
[ "$native" -ge 450 ] || bad "native set-up $native ms: the simulated delays are not in effect"
[ "$auto" -le $((native / 4)) ] || bad "auto warm-up of a CUDA-linked program left $auto of $native ms of set-up"
[ "$eager_dl" -le $((native / 4)) ] || bad "eager warm-up left $eager_dl of $native ms of set-up"
[ "$lazy" -ge $((native / 2)) ] || bad "lazy warm-up must not start before the first sign of CUDA ($lazy ms)"
[ "$auto_dl" -ge $((native / 2)) ] || bad "auto must be lazy for a program without CUDA at load ($auto_dl ms)"

# The same, deterministically: the warm-up thread retained the primary
# context, and the app's own retain got that very context.
SAGE_TRACE="$tmp/overlap.json" sage "$linked" overlap 100 >/dev/null || bad "traced overlap run"
"$python" - "$tmp/overlap.json" <<'PY' || bad "the warm-up did not retain the primary context the app then used"
import json, sys
ev = [e for e in json.load(open(sys.argv[1]))["traceEvents"] if e.get("name") == "cuDevicePrimaryCtxRetain"]
main = [e for e in ev if e["tid"] == e["pid"]]
warm = [e for e in ev if e["tid"] != e["pid"]]
assert main and warm, ev
assert all(e["args"]["result"] == 0 for e in ev), ev
assert warm[0]["args"]["ctx"] == main[0]["args"]["ctx"], ev  # (which retain starts first is a race)
PY

step "eager warms only a process that loads a CUDA library, also behind a wrapper"
# Before: every process under eager ran cuInit (sh -c 'true; true': two; XLA's
# ptxas child aborted). A process without driver calls writes no dump, so a
# dump here is a process that initialised CUDA.
SAGE_WARMUP=eager SAGE_TRACE="$tmp/eg-%p.json" sage sh -c 'true; true; "$0" --version >/dev/null 2>&1 || :' \
  "$(command -v ptxas || echo /usr/local/cuda/bin/ptxas)" || bad "eager sh -c: rc $?"
set -- "$tmp"/eg-*.json
[ ! -e "$1" ] || { bad "eager initialised CUDA in a process without a CUDA library: $(grep -l cuInit "$@" | wc -l) dump(s)"; rm -f "$@"; }
# `sh -c ./cuda_app` (and `timeout`): the app itself is warmed, at load.
for wrap in sh timeout; do
  case $wrap in
    sh) cmd=(sh -c '"$@"; :' sh) ;; # the trailing ':' keeps sh from exec'ing the app
    timeout) cmd=(timeout 30) ;;
  esac
  w=$(SAGE_WARMUP=eager SAGE_TRACE="$tmp/w-%p.json" sage "${cmd[@]}" "$linked" overlap 600 | ms)
  set -- "$tmp"/w-*.json
  [ "$#" -eq 1 ] && [ -e "$1" ] || bad "$wrap: expected one dump (the app's), got $#"
  grep -q '"warmup":"load"' "$1" || bad "$wrap: the app was not warmed at load"
  [ "$w" -le $((native / 4)) ] || bad "$wrap: eager left $w of $native ms of set-up"
  rm -f "$tmp"/w-*.json
done
# A program that dlopen()s the driver by name is warmed at that dlopen.
SAGE_WARMUP=eager SAGE_TRACE="$tmp/d.json" sage "$dl" overlap 0 >/dev/null || bad "eager dlopen run"
grep -q '"warmup":"dlopen"' "$tmp/d.json" || bad "eager: not warmed at the driver's dlopen"

step "fork: auto never initialises CUDA before the app does; eager/lazy hazards are detected and reported"
out=$(sage "$dl" lookup-fork 800)
grep -q 'child cuInit=0' <<<"$out" || bad "auto: symbol lookups in the parent broke the forked child: $out"
out=$(SAGE_WARMUP=lazy SAGE_VERBOSE=1 sage "$dl" lookup-fork 800 2>&1)
grep -q 'fork() after the CUDA warm-up' <<<"$out" || bad "lazy: fork after a lookup-started warm-up not reported: $out"
out=$(sage "$dl" fork 400)
grep -q 'child cuInit=0' <<<"$out" || bad "auto: the forked child cannot use CUDA: $out"
out=$("$dl" fork 400)
grep -q 'child cuInit=0' <<<"$out" || bad "native fork: $out"
# eager: a parent that never loads a CUDA library is not warmed, its child works;
# one that does (it resolves driver symbols) is, and the hazard is reported.
out=$(SAGE_WARMUP=eager sage "$dl" fork 400)
grep -q 'child cuInit=0' <<<"$out" || bad "eager: a parent without CUDA broke its forked child: $out"
out=$(SAGE_WARMUP=eager SAGE_VERBOSE=1 sage "$dl" lookup-fork 600 2>&1)
grep -q 'fork() after the CUDA warm-up' <<<"$out" || bad "fork after an eager warm-up not reported: $out"
# fork() while the warm-up is inside the driver: the fork waits for it, so the
# child never inherits a driver lock held by a thread it does not have.
# The fork comes once the warm-up's cuInit is inside the driver (it marks a
# file there, then takes 1 s), so it is a fork during the warm-up every time.
out=$(SAGE_WARMUP=eager SAGE_FAKE_INIT_MS=1000 SAGE_FAKE_INIT_MARK="$tmp/in-init" SETUP_TEST_FORK_AFTER="$tmp/in-init" \
  timeout 10 env LD_PRELOAD="$preload" "$dl" lookup-fork 0 2>&1) || bad "fork during warm-up: rc $? $out"
grep -q 'child exit=' <<<"$out" || bad "fork during warm-up: $out"

step "exit while the warm-up is still running: clean, bounded"
t0=$(date +%s%N)
SAGE_WARMUP=eager sage "$linked" exit || bad "exit during warm-up: rc $?"
t1=$(date +%s%N)
el=$(( (t1 - t0) / 1000000 ))
echo "exit took $el ms (warm-up: 300 + 200 ms)"
[ "$el" -le 2000 ] || bad "exit during warm-up took $el ms"
out=$(SAGE_WARMUP=off sage "$dl" exit 2>&1) || bad "off: rc"
[ -z "$out" ] || bad "SAGE_WARMUP=off printed: $out"
# The driver is loaded while the warm-up runs, so its exit-time teardown is
# registered after libsage's wait, and ran first, under the warm-up's cuInit
# (the simulated driver aborts; a real one crashes on its destroyed locks).
# The program exits 150 ms into the warm-up's 300 ms cuInit, as ptxas does.
out=$(SAGE_WARMUP=eager sage "$dl" exit 150 2>&1) || bad "exit during a warm-up that loaded the driver: rc $? $out"

step "errors: the app sees exactly the driver's error"
for envs in "SAGE_FAKE_FAIL_INIT=100" "CUDA_VISIBLE_DEVICES=" "SAGE_FAKE_FAIL_INIT=999"; do
  n=$(env $envs "$linked" error)
  s=$(env $envs SAGE_WARMUP=eager LD_PRELOAD="$preload" "$linked" error)
  [ "$n" = "$s" ] || bad "$envs: native '$n', SAGE '$s'"
  echo "$envs: native '$n', SAGE '$s'"
done

step "context redirect: warm-container loop, identical results, memory returned"
SAGE_FAKE_CTX_MS=100 "$linked" ctx-loop 5 >"$tmp/native.out" 2>"$tmp/native.err" || bad "native ctx-loop"
SAGE_FAKE_CTX_MS=100 SAGE_TRACE="$tmp/loop.json" sage "$linked" ctx-loop 5 >"$tmp/sage.out" 2>"$tmp/sage.err" || bad "sage ctx-loop"
cmp -s "$tmp/native.out" "$tmp/sage.out" || { bad "ctx-loop output differs"; diff "$tmp/native.out" "$tmp/sage.out" || true; }
grep -q LEAKED "$tmp/sage.out" && bad "redirected contexts leaked device memory"
echo "native: $(tail -1 "$tmp/native.err"); sage: $(tail -1 "$tmp/sage.err")"
"$python" - "$tmp/loop.json" "$tmp/sage.err" <<'PY' || bad "redirect stats / speed"
import json, sys
stats = json.load(open(sys.argv[1]))["otherData"]["stats"]
assert stats["CTX_REDIRECTED"] == 5, stats
assert stats["CTX_RESOURCES_FREED"] >= 15, stats   # allocation, module, stream per invocation
worst = float(open(sys.argv[2]).read().rsplit("per_invocation_max_ms=", 1)[1])
assert worst < 50, f"a redirected invocation took {worst} ms (creating a real context sleeps 100)"
PY

step "context redirect: nesting and flags fall through to real contexts"
"$linked" ctx-nested >"$tmp/n.out" || bad "native nested"
SAGE_TRACE="$tmp/nested.json" sage "$linked" ctx-nested >"$tmp/s.out" || bad "sage nested"
cmp -s "$tmp/n.out" "$tmp/s.out" || { bad "nested output differs"; diff "$tmp/n.out" "$tmp/s.out" || true; }
"$python" - "$tmp/nested.json" <<'PY' || bad "nested stats"
import json, sys
stats = json.load(open(sys.argv[1]))["otherData"]["stats"]
assert stats["CTX_REDIRECTED"] == 1 and stats["CTX_NOT_REDIRECTED"] == 2, stats
PY

step "context redirect: what the app destroyed is not destroyed again at cuCtxDestroy"
# The driver reuses a freed address first: by cuCtxDestroy the invocation's
# freed buffer is another context's.
"$linked" ctx-reuse >"$tmp/reuse-n.out" || bad "native ctx-reuse"
grep -q "address reused: yes" "$tmp/reuse-n.out" || bad "the simulated driver did not reuse the freed address"
SAGE_TRACE="$tmp/reuse.json" sage "$linked" ctx-reuse >"$tmp/reuse-s.out" || bad "sage ctx-reuse"
cmp -s "$tmp/reuse-n.out" "$tmp/reuse-s.out" || { bad "ctx-reuse output differs"; diff "$tmp/reuse-n.out" "$tmp/reuse-s.out" || true; }
[ "$(stat_of "$tmp/reuse.json" CTX_REDIRECTED)" = 1 ] || bad "ctx-reuse: the first context was not redirected"

step "device reset at the end of an invocation: freed as natively, the context re-created in the background"
SAGE_FAKE_CTX_MS=100 "$linked" reset-loop 4 >"$tmp/rn.out" 2>"$tmp/rn.err" || bad "native reset-loop"
SAGE_FAKE_CTX_MS=100 sage "$linked" reset-loop 4 >"$tmp/rs.out" 2>"$tmp/rs.err" || bad "sage reset-loop"
cmp -s "$tmp/rn.out" "$tmp/rs.out" || { bad "reset-loop output differs"; diff "$tmp/rn.out" "$tmp/rs.out" || true; }
n=$(sed -n 's/^reset_wait_max_ms=//p' "$tmp/rn.err"); s=$(sed -n 's/^reset_wait_max_ms=//p' "$tmp/rs.err")
echo "after a reset, the next invocation waited for its context: native ${n} ms, SAGE ${s} ms (worst)"
awk -v n="$n" -v s="$s" 'BEGIN { exit !(n >= 90 && s <= n / 4) }' || bad "re-warm after reset: native $n ms, SAGE $s ms"
t0=$(date +%s%N)
SAGE_FAKE_CTX_MS=400 sage "$linked" reset-loop 1 >/dev/null 2>&1 || bad "reset then exit"
t1=$(date +%s%N)
el=$(( (t1 - t0) / 1000000 ))
echo "reset, 300 ms idle, exit: $el ms"
# Set-up 500 ms, idle 300, a re-warm of 400 at most still inside the driver:
# far under the 10 s an exit would wait for a re-warm that never ends.
[ "$el" -le 4000 ] || bad "exit after a reset took $el ms"

[ "$fail" -eq 0 ] && echo "setup_checks: all passed"
exit "$fail"

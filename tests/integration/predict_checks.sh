#!/usr/bin/env bash
# Predicted remap (SAGE_SHARE_PREDICT, intercept/share_hint.c) against the
# simulated driver and the real broker: a GPT-2-like load (predict_test.c)
# run three times on one broker; the third maps every hit as its segment is
# made and its uploads only confirm them (no broker lookup at upload);
# changed weights, a kernel before an upload and forged hint files still
# give native's output; SAGE_SHARE_PREDICT=0 behaves as without it. Answers
# asked ahead (SAGE_SHARE_AHEAD, share_ahead.c): the same hints' keys asked
# by the warm-up thread (or the first hit), no lookup at an upload.
#   predict_checks.sh PREDICT_TEST SAGED PYTHON3
set -euo pipefail
prog=$1 saged=$2 python=$3
. "$(dirname "$0")/lib.sh"
export SAGE_SOCKET=$tmp/saged.sock SAGE_SHARE=1 SAGE_SHARE_PLACE=$tmp/place
mkdir "$tmp/place" "$tmp/place-fill"
start_saged
trap 'kill "$saged_pid" 2>/dev/null || true; wait "$saged_pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT

# run TAG [VAR=VALUE...]: one invocation under sharing (trace $tmp/TAG.json, stderr in $tmp/TAG.err); its output
# in $out.
run() {
  local tag=$1
  shift
  out=$(env "$@" SAGE_TRACE="$tmp/$tag.json" LD_PRELOAD="$preload" "$prog" 5 2>"$tmp/$tag.err") ||
    bad "$tag: the run failed (a fault?): $(tail -3 "$tmp/$tag.err")"
}
st() { stat_of "$tmp/$1.json" "$2"; }

native=$("$prog" 5)
native_e=$(PREDICT_TEST_EARLY=5 "$prog" 5) # a kernel writes tensor 5's memory before its upload
# whole_of OUTPUT: the tensors with a whole granule, as predict-test printed them.
whole_of() { sed -n 's/.*tensors, \([0-9]*\) with whole granules.*/\1/p' <<<"$1"; }
whole=$(whole_of "$native")
echo "native: $native"

step "three invocations: the first publishes, the third maps every hit as its segment is made"
for i in 1 2 3; do
  run p$i SAGE_SHARE_PREDICT=1
  [ "$out" = "$native" ] || bad "run $i output: $out vs $native"
done
ls "$tmp/place"/predict-* >/dev/null 2>&1 || bad "no hints written"
[ "$(st p1 SHARE_MISSES)" = "$whole" ] && [ "$(st p1 SHARE_PREDICT_MAPPED)" = 0 ] || bad "first run: not $whole misses, nothing predicted"
for k in SHARE_HITS SHARE_PREDICTED; do
  [ "$(st p3 $k)" = "$whole" ] || bad "third run: $k $(st p3 $k), not $whole"
done
# Mapped at allocation: every whole-granule hit and every assembled run (their uploads kept on the host, confirmed).
[ "$(st p3 SHARE_PREDICT_MAPPED)" = $((whole + $(st p3 SHARE_PREDICTED_RUNS))) ] && [ "$(st p3 SHARE_PREDICT_RUNS_COPIED)" = 0 ] ||
  bad "third run: $(st p3 SHARE_PREDICT_MAPPED) mapped at allocation, not $whole + $(st p3 SHARE_PREDICTED_RUNS) runs"
[ "$(st p3 SHARE_LOOKUPS)" = 0 ] || bad "third run: $(st p3 SHARE_LOOKUPS) broker lookups at upload"
# Every allocation's keys asked at the first one: one window (14 keys), the other three segments take theirs.
[ "$(st p3 SHARE_PREDICT_WINDOWS)" = 1 ] || bad "third run: $(st p3 SHARE_PREDICT_WINDOWS) lookup windows at allocation, not 1"
[ "$(st p3 SHARE_MISSES)" = 0 ] && [ "$(st p3 SHARE_PREDICT_UNUSED)" = 0 ] || bad "third run: misses or unused predictions"
[ "$(st p3 SHARE_GUARD_UNSHARED)" = 0 ] || bad "third run: the guard privatized a confirmed piece"

step "made ahead: the warm-up thread makes every hinted segment before the app asks; its cuMemAlloc takes it"
# Each map 20 ms: a segment made at the app's cuMemAlloc would make it wait for its maps; made ahead, for none.
cp -r "$SAGE_SHARE_PLACE" "$tmp/place-m1"
cp -r "$SAGE_SHARE_PLACE" "$tmp/place-m2"
run m1 SAGE_SHARE_PREDICT=1 PREDICT_TEST_SLEEP_MS=1500 SAGE_FAKE_MAP_MS=20 SAGE_SHARE_PLACE=$tmp/place-m1
[ "$out" = "$native" ] || bad "made ahead output: $out vs $native"
made=$(st m1 SHARE_PREMADE)
[ "$made" -gt 0 ] && [ "$(st m1 SHARE_PREMADE_TAKEN)" = "$made" ] && [ "$(st m1 SHARE_PREMADE_UNUSED)" = 0 ] ||
  bad "made ahead: $made made, $(st m1 SHARE_PREMADE_TAKEN) taken, $(st m1 SHARE_PREMADE_UNUSED) unused"
[ "$(st m1 SHARE_PREDICTED)" = "$whole" ] && [ "$(st m1 SHARE_LOOKUPS)" = 0 ] && [ "$(st m1 SHARE_MISSES)" = 0 ] ||
  bad "made ahead: $(st m1 SHARE_PREDICTED) confirmed, $(st m1 SHARE_LOOKUPS) lookups, $(st m1 SHARE_MISSES) misses"
[ "$(st m1 SHARE_NS_ALLOC)" -lt 20000000 ] ||
  bad "made ahead: the app's allocations waited $(st m1 SHARE_NS_ALLOC) ns (a map is 20 ms): made at cuMemAlloc"
# A kernel before tensor 5's upload (after some were confirmed): what no cuMemAlloc took yet goes back there; the
# segments after it are made by their own cuMemAlloc; native's output.
run m2 SAGE_SHARE_PREDICT=1 PREDICT_TEST_SLEEP_MS=300 PREDICT_TEST_EARLY=5 SAGE_SHARE_PLACE=$tmp/place-m2
[ "$out" = "$native_e" ] || bad "made ahead, early kernel output: $out vs $native_e"
[ "$(st m2 SHARE_PREMADE_UNUSED)" -gt 0 ] &&
  [ $(($(st m2 SHARE_PREMADE_TAKEN) + $(st m2 SHARE_PREMADE_UNUSED))) = "$(st m2 SHARE_PREMADE)" ] ||
  bad "made ahead, early kernel: $(st m2 SHARE_PREMADE) made, $(st m2 SHARE_PREMADE_TAKEN) taken, $(st m2 SHARE_PREMADE_UNUSED) given back"
# A kernel before any upload (PyTorch's set-up launches first): every segment made ahead is kept past it and taken.
cp -r "$tmp/place-m1" "$tmp/place-m4"
run m4 SAGE_SHARE_PREDICT=1 PREDICT_TEST_SLEEP_MS=300 PREDICT_TEST_EARLY=0 SAGE_SHARE_PLACE=$tmp/place-m4
[ "$out" = "$(PREDICT_TEST_EARLY=0 "$prog" 5)" ] || bad "made ahead, a kernel first output: $out"
[ "$(st m4 SHARE_PREMADE)" = "$made" ] && [ "$(st m4 SHARE_PREMADE_TAKEN)" = "$made" ] ||
  bad "made ahead, a kernel first: $(st m4 SHARE_PREMADE) made, $(st m4 SHARE_PREMADE_TAKEN) taken, not $made, $(st m4 SHARE_PREMADE_UNUSED) given back"
# Another layout (XLA's BFC region) in little memory: what was made ahead for the pool's segments is given back
# when the region's cuMemAlloc runs out of memory, and it is made then; native's output.
cp -r "$tmp/place-m1" "$tmp/place-m5"
cp -r "$tmp/place-m1" "$tmp/place-m6"
native_bfc=$(PREDICT_TEST_BFC=1 SAGE_FAKE_MEM=136M "$prog" 5)
run m5 SAGE_SHARE_PREDICT=1 PREDICT_TEST_SLEEP_MS=300 PREDICT_TEST_BFC=1 SAGE_FAKE_MEM=136M SAGE_SHARE_PLACE=$tmp/place-m5
[ "$out" = "$native_bfc" ] && [ "$(st m5 SHARE_PREMADE)" = "$made" ] && [ "$(st m5 SHARE_PREMADE_UNUSED)" = "$made" ] &&
  [ "$(st m5 SHARE_ALLOCS)" = 1 ] ||
  bad "made ahead, another layout in 136 MiB: output $out vs $native_bfc; $(st m5 SHARE_PREMADE) made, $(st m5 SHARE_PREMADE_UNUSED) given back, $(st m5 SHARE_ALLOCS) backed by SAGE (the region: 1)"
# The driver's own allocations (1 MiB, below SAGE_SHARE_MIN: cuMemAlloc, which SAGE's hook hands on, and
# cuMemAllocManaged, which it only passes) probing the free memory before the weights: the one that runs out of
# memory gives back what was made ahead and is made again, so the app finds native's free memory.
for probe in 1 2; do
  cp -r "$tmp/place-m1" "$tmp/place-m7-$probe"
  native_p=$(PREDICT_TEST_PROBE=$probe SAGE_FAKE_MEM=136M "$prog" 5)
  run m7-$probe SAGE_SHARE_PREDICT=1 PREDICT_TEST_SLEEP_MS=300 PREDICT_TEST_PROBE=$probe SAGE_FAKE_MEM=136M \
    SAGE_SHARE_PLACE=$tmp/place-m7-$probe
  [ "$out" = "$native_p" ] && [ "$(st m7-$probe SHARE_PREMADE)" = "$made" ] &&
    [ "$(st m7-$probe SHARE_PREMADE_RECLAIMED)" = 1 ] && [ "$(st m7-$probe SHARE_PREMADE_UNUSED)" = "$made" ] ||
    bad "made ahead, the free memory probed ($probe): output $out vs $native_p; $(st m7-$probe SHARE_PREMADE) made, $(st m7-$probe SHARE_PREMADE_RECLAIMED) reclaimed, $(st m7-$probe SHARE_PREMADE_UNUSED) given back"
done
# A set-up kernel while the warm-up thread still imports the answers (each import 100 ms, asked by 300 ms;
# PyTorch's torch.zeros(1, device="cuda") soon after its context): no upload came, so they are kept; every
# segment is made ahead once they are imported, and taken.
cp -r "$tmp/place-m1" "$tmp/place-m6b"
cp -r "$tmp/place-m1" "$tmp/place-m6c"
run m6 SAGE_SHARE_PREDICT=1 PREDICT_TEST_SLEEP_MS=300 PREDICT_TEST_SETUP_MS=2500 SAGE_FAKE_IMPORT_MS=100 \
  SAGE_SHARE_PLACE=$tmp/place-m6
[ "$out" = "$(PREDICT_TEST_SETUP_MS=0 "$prog" 5)" ] && [ "$(st m6 SHARE_PREMADE)" = "$made" ] &&
  [ "$(st m6 SHARE_PREMADE_TAKEN)" = "$made" ] && [ "$(st m6 SHARE_LOOKUPS)" = 0 ] ||
  bad "made ahead, a set-up kernel during the imports: output $out, $(st m6 SHARE_PREMADE) made, $(st m6 SHARE_PREMADE_TAKEN) taken, not $made; $(st m6 SHARE_LOOKUPS) lookups"
# The same with the first segment made at its cuMemAlloc (its pieces unconfirmed) and a kernel writing it before its
# upload: still no upload, so the answers stay; the segments after a pause are made ahead and taken.
run m6c SAGE_SHARE_PREDICT=1 PREDICT_TEST_SLEEP_MS=300 PREDICT_TEST_EARLY=0 PREDICT_TEST_PAUSE=1:2500 \
  SAGE_FAKE_IMPORT_MS=100 SAGE_SHARE_PLACE=$tmp/place-m6c
[ "$out" = "$(PREDICT_TEST_EARLY=0 "$prog" 5)" ] && [ "$(st m6c SHARE_PREMADE)" = $((made - 1)) ] &&
  [ "$(st m6c SHARE_PREMADE_TAKEN)" = $((made - 1)) ] ||
  bad "made ahead, a kernel before the first upload during the imports: output $out, $(st m6c SHARE_PREMADE) made, $(st m6c SHARE_PREMADE_TAKEN) taken, not $((made - 1))"
# A kernel after the first uploads while the imports go on: the answers go back there, and nothing is made ahead
# after that (the segments after a pause would be).
run m6b SAGE_SHARE_PREDICT=1 PREDICT_TEST_EARLY=2 PREDICT_TEST_PAUSE=3:2500 SAGE_FAKE_IMPORT_MS=100 \
  SAGE_SHARE_PLACE=$tmp/place-m6b
[ "$out" = "$(PREDICT_TEST_EARLY=2 "$prog" 5)" ] && [ "$(st m6b SHARE_PREMADE)" = 0 ] ||
  bad "made ahead, a kernel during the imports after uploads: output $out, $(st m6b SHARE_PREMADE) made ahead after the answers went back"
# Its hints now mark tensor 5's segment spoiled: the next run makes every segment ahead but that one.
run m3 SAGE_SHARE_PREDICT=1 PREDICT_TEST_SLEEP_MS=300 PREDICT_TEST_EARLY=5 SAGE_SHARE_PLACE=$tmp/place-m2
[ "$out" = "$native_e" ] && [ "$(st m3 SHARE_PREMADE)" = $((made - 1)) ] ||
  bad "made ahead, a spoiled segment: output $out, $(st m3 SHARE_PREMADE) made ahead, not $((made - 1))"

step "an fd limit of 32: at most 8 hits held ahead (a quarter), the rest asked by their own allocation"
out=$(ulimit -n 32 && env SAGE_SHARE_PREDICT=1 SAGE_TRACE="$tmp/lim.json" LD_PRELOAD="$preload" "$prog" 5) || bad "fd limit 32: the run failed"
[ "$out" = "$native" ] || bad "fd limit 32 output: $out vs $native"
[ "$(st lim SHARE_PREDICTED)" = "$whole" ] && [ "$(st lim SHARE_LOOKUPS)" = 0 ] || bad "fd limit 32: predicted $(st lim SHARE_PREDICTED), lookups $(st lim SHARE_LOOKUPS)"
[ "$(st lim SHARE_PREDICT_WINDOWS)" -gt 1 ] || bad "fd limit 32: every key asked ahead ($(st lim SHARE_PREDICT_WINDOWS) window): up to $whole fds held"

step "SAGE_SHARE_PREDICT=0 SAGE_SHARE_AHEAD=0: the same hints ignored, every hit looked up at its upload"
run off SAGE_SHARE_PREDICT=0 SAGE_SHARE_AHEAD=0
[ "$out" = "$native" ] || bad "predict off output: $out vs $native"
[ "$(st off SHARE_HITS)" = "$whole" ] && [ "$(st off SHARE_LOOKUPS)" = "$whole" ] && [ "$(st off SHARE_PREDICT_MAPPED)" = 0 ] ||
  bad "predict off: hits $(st off SHARE_HITS), lookups $(st off SHARE_LOOKUPS), predicted $(st off SHARE_PREDICT_MAPPED)"
[ "$(st off SHARE_AHEAD_HITS)" = 0 ] && [ "$(st off SHARE_PREDICT_WINDOWS)" = 0 ] || bad "ahead off: keys asked ahead"

step "deferred backing (SAGE_SHARE_DEFER): hits map over unmapped ranges, few driver VMM calls a hit"
run d1 SAGE_SHARE_PREDICT=0 SAGE_FAKE_VMM_COUNT="$tmp/d1.vmm"
[ "$out" = "$native" ] || bad "deferred output: $out vs $native"
run d0 SAGE_SHARE_PREDICT=0 SAGE_SHARE_DEFER=0 SAGE_FAKE_VMM_COUNT="$tmp/d0.vmm"
[ "$out" = "$native" ] || bad "mapped at cuMemAlloc output: $out vs $native"
calls_d1=$(vmm_calls "$tmp/d1.vmm") calls_d0=$(vmm_calls "$tmp/d0.vmm")
echo "VMM calls for $whole hits: deferred $calls_d1 ($(cat "$tmp/d1.vmm")), mapped at cuMemAlloc $calls_d0 ($(cat "$tmp/d0.vmm"))"
[ "$(st d1 SHARE_HITS)" = "$whole" ] && [ "$(st d0 SHARE_HITS)" = "$whole" ] || bad "hits: $(st d1 SHARE_HITS) deferred, $(st d0 SHARE_HITS) not"
[ "$(st d1 SHARE_DEFERRED)" -gt 0 ] && [ "$(st d0 SHARE_DEFERRED)" = 0 ] || bad "SHARE_DEFERRED: $(st d1 SHARE_DEFERRED), $(st d0 SHARE_DEFERRED)"
[ "$calls_d1" -le $((calls_d0 * 6 / 10)) ] || bad "deferred: $calls_d1 VMM calls, not <= 60% of $calls_d0"

step "new weights in one tensor: its prediction is not trusted, the bytes are the app's"
native_c=$(PREDICT_TEST_CHANGE=3 "$prog" 5)
[ "$native_c" != "$native" ] || bad "the change changes nothing"
run c SAGE_SHARE_PREDICT=1 PREDICT_TEST_CHANGE=3
[ "$out" = "$native_c" ] || bad "changed weights output: $out vs $native_c"
[ "$(st c SHARE_PREDICTED)" = $((whole - 1)) ] && [ "$(st c SHARE_MISSES)" = 1 ] ||
  bad "changed weights: predicted $(st c SHARE_PREDICTED), misses $(st c SHARE_MISSES)"

step "a kernel writing a tensor's memory before its upload: its own private memory, no fault"
run e SAGE_SHARE_PREDICT=1 PREDICT_TEST_EARLY=5
[ "$out" = "$native_e" ] || bad "early kernel output: $out vs $native_e"
[ "$(st e SHARE_PREDICT_UNUSED)" -gt 0 ] || bad "early kernel: no unconfirmed piece made private"
[ "$(st e SHARE_HITS)" = "$whole" ] || bad "early kernel: $(st e SHARE_HITS) hits (the uploads after it look up)"
# What was asked ahead went back at the kernel: the segments after it ask for their own keys.
[ "$(st e SHARE_PREDICT_WINDOWS)" -gt 1 ] || bad "early kernel: the answers asked ahead were kept past the launch"

step "a kernel writing every tensor before its upload (PyTorch's deterministic fill): predicted once, then never"
native_k=$(PREDICT_TEST_FILL=1 "$prog" 5)
for i in 1 2 3; do
  run k$i SAGE_SHARE_PREDICT=1 PREDICT_TEST_FILL=1 SAGE_SHARE_PLACE=$tmp/place-fill
  [ "$out" = "$native_k" ] || bad "fill run $i output: $out vs $native_k"
  [ "$(st k$i SHARE_HITS)" = "$whole" ] || bad "fill run $i: $(st k$i SHARE_HITS) hits, not $whole"
done
[ "$(st k2 SHARE_PREDICT_UNUSED)" -gt 0 ] || bad "fill run 2: nothing predicted (the hints of run 1 unused?)"
# The second run's predictions were all made private before their uploads: the third makes none.
[ "$(st k3 SHARE_PREDICT_MAPPED)" = 0 ] && [ "$(st k3 SHARE_PREDICT_UNUSED)" = 0 ] && [ "$(st k3 SHARE_PREDICT_WINDOWS)" = 0 ] ||
  bad "fill run 3: $(st k3 SHARE_PREDICT_MAPPED) mapped at allocation, $(st k3 SHARE_PREDICT_UNUSED) unused, $(st k3 SHARE_PREDICT_WINDOWS) windows: not 0"
grep -q ' 0 0 0\{32\}$' "$tmp/place-fill"/predict-* || bad "fill: no allocation marked never to predict"

step "forged hint files: garbage, huge counts, offsets past the allocation, pieces moved: native's output"
hints=$(ls "$tmp/place"/predict-*)
cp "$hints" "$tmp/good-hints"
"$python" - "$tmp/good-hints" "$hints" <<'PY'
import sys
lines = open(sys.argv[1]).read().split("\n")
lines = [l for l in lines if l]
with open(sys.argv[2], "w") as f:
    f.write("garbage\n\x00\xff\n" + "9" * 5000 + "\n")
    for l in lines:  # every piece one granule later, and past its allocation; each as the other kind (run or not)
        size, ordinal, off, length, key = l.split()[:5]
        run = "" if l.endswith(" run") else " run"
        f.write("%s %s %d %s %s\n" % (size, ordinal, int(off) + 2097152, length, key))
        f.write("%s %s %d %s %s\n" % (size, ordinal, int(size) + 2097152, length, key))
        f.write("%s %s %s %s %s%s\n" % (size, ordinal, off, length, key, run))
    # keys swapped between pieces of the same length
    for a, b in zip(lines, lines[1:]):
        sa, oa, fa, la, ka = a.split()[:5]; sb, ob, fb, lb, kb = b.split()[:5]
        if la == lb:
            f.write("%s %s %s %s %s\n" % (sa, oa, fa, la, kb))
    for i in range(70000):
        f.write("20971520 0 %d 2097152 %032x\n" % (i * 2097152, i))
PY
run f SAGE_SHARE_PREDICT=1
[ "$out" = "$native" ] || bad "forged hints output: $out vs $native"
# A piece forged as a run takes its upload (all inside it) on the host and confirms it as a run: shared all the same.
[ $(($(st f SHARE_HITS) + $(st f SHARE_PREDICTED_RUNS))) = "$whole" ] ||
  bad "forged hints: $(st f SHARE_HITS) hits and $(st f SHARE_PREDICTED_RUNS) runs, not $whole"
printf 'x y z\n' >"$hints"
run g SAGE_SHARE_PREDICT=1
[ "$out" = "$native" ] && [ "$(st g SHARE_PREDICT_MAPPED)" = 0 ] || bad "garbage hints: output or predictions"

step "answers asked ahead (SAGE_SHARE_AHEAD, the default): the warm-up thread asks every hinted key and imports the hits; no lookup at an upload"
# Hints of their own (the runs above changed and marked theirs): learned by a0 (the broker holds every extent).
export SAGE_SHARE_PLACE=$tmp/place-ahead
mkdir "$SAGE_SHARE_PLACE"
run a0 SAGE_SHARE_PREDICT=0
[ "$out" = "$native" ] && [ "$(st a0 SHARE_HITS)" = "$whole" ] && [ "$(st a0 SHARE_AHEAD_HITS)" = 0 ] ||
  bad "ahead, no hints yet: output, $(st a0 SHARE_HITS) hits, $(st a0 SHARE_AHEAD_HITS) asked ahead"
run a1 SAGE_SHARE_PREDICT=0 PREDICT_TEST_SLEEP_MS=300
[ "$out" = "$native" ] || bad "ahead output: $out vs $native"
[ "$(st a1 SHARE_HITS)" = "$whole" ] && [ "$(st a1 SHARE_AHEAD_HITS)" = "$whole" ] && [ "$(st a1 SHARE_LOOKUPS)" = 0 ] ||
  bad "ahead: hits $(st a1 SHARE_HITS), of them asked ahead $(st a1 SHARE_AHEAD_HITS), lookups $(st a1 SHARE_LOOKUPS)"
[ "$(st a1 SHARE_AHEAD_IMPORTED)" = "$whole" ] && [ "$(st a1 SHARE_PREDICT_WINDOWS)" = 1 ] ||
  bad "ahead: $(st a1 SHARE_AHEAD_IMPORTED) imported by the warm-up thread in $(st a1 SHARE_PREDICT_WINDOWS) windows, not $whole in 1"
# Every hinted key held: hits expected, no miss path's staging made by the warm-up (128 MiB pinned for nothing).
err=$(env SAGE_SHARE_PREDICT=0 PREDICT_TEST_SLEEP_MS=300 SAGE_VERBOSE=2 LD_PRELOAD="$preload" "$prog" 5 2>&1 >/dev/null)
grep -q "hinted keys asked ahead, $whole held" <<<"$err" && ! grep -q "miss path's staging made ahead" <<<"$err" ||
  bad "ahead, every key held: the miss path's staging made all the same: $(grep 'ahead' <<<"$err" | head -3)"
run a2 SAGE_SHARE_PREDICT=0 SAGE_WARMUP=off
[ "$out" = "$native" ] || bad "ahead without warm-up output: $out vs $native"
[ "$(st a2 SHARE_AHEAD_HITS)" = "$whole" ] && [ "$(st a2 SHARE_LOOKUPS)" = 0 ] && [ "$(st a2 SHARE_AHEAD_IMPORTED)" = 0 ] &&
  [ "$(st a2 SHARE_PREDICT_WINDOWS)" = 1 ] ||
  bad "ahead without warm-up: $(st a2 SHARE_AHEAD_HITS) asked ahead (at the first hit, one window: $(st a2 SHARE_PREDICT_WINDOWS)), lookups $(st a2 SHARE_LOOKUPS), imported $(st a2 SHARE_AHEAD_IMPORTED)"
# Imports slow (a driver under contention): the uploads come while the warm-up thread imports. None waits for the
# others' imports: an answer not imported yet is taken with its fd (the upload imports it), the one being imported
# is asked of the broker again; the thread imports from the last answer, so the two meet about once, not at every
# upload in step (under ASan they did: 11 of 14 asked again).
run a5 SAGE_SHARE_PREDICT=0 PREDICT_TEST_SLEEP_MS=300 SAGE_FAKE_IMPORT_MS=100
[ "$out" = "$native" ] || bad "ahead, slow imports output: $out vs $native"
[ "$(st a5 SHARE_HITS)" = "$whole" ] && [ "$(st a5 SHARE_AHEAD_IMPORTED)" -gt 0 ] && [ "$(st a5 SHARE_LOOKUPS)" -le 2 ] &&
  [ $(($(st a5 SHARE_AHEAD_HITS) + $(st a5 SHARE_LOOKUPS))) = "$whole" ] ||
  bad "ahead, slow imports: $(st a5 SHARE_HITS) hits, $(st a5 SHARE_AHEAD_HITS) asked ahead, $(st a5 SHARE_AHEAD_IMPORTED) imported by the warm-up thread, $(st a5 SHARE_LOOKUPS) lookups"
# Imports that fail (the warm-up thread's first two): each tried once, their answers kept with their fds; the two
# uploads import them themselves, no lookup.
run a8 SAGE_SHARE_PREDICT=0 PREDICT_TEST_SLEEP_MS=300 SAGE_FAKE_FAIL_IMPORT=2
[ "$out" = "$native" ] || bad "ahead, failing imports output: $out vs $native"
[ "$(st a8 SHARE_AHEAD_HITS)" = "$whole" ] && [ "$(st a8 SHARE_AHEAD_IMPORTED)" = $((whole - 2)) ] &&
  [ "$(st a8 SHARE_LOOKUPS)" = 0 ] && [ "$(st a8 SHARE_FALLBACKS)" = 0 ] ||
  bad "ahead, failing imports: $(st a8 SHARE_AHEAD_HITS) asked ahead, $(st a8 SHARE_AHEAD_IMPORTED) imported by the warm-up thread, $(st a8 SHARE_LOOKUPS) lookups, $(st a8 SHARE_FALLBACKS) fallbacks"
# Each on a copy of these hints (a run's exit rewrites them); tensor 7's new bytes are no extent yet.
cp -r "$SAGE_SHARE_PLACE" "$tmp/place-a3"
cp -r "$SAGE_SHARE_PLACE" "$tmp/place-a4"
cp -r "$SAGE_SHARE_PLACE" "$tmp/place-a6"
cp -r "$SAGE_SHARE_PLACE" "$tmp/place-a7"
cp -r "$SAGE_SHARE_PLACE" "$tmp/place-a9"
native_c=$(PREDICT_TEST_CHANGE=7 "$prog" 5)
run a3 SAGE_SHARE_PREDICT=0 PREDICT_TEST_CHANGE=7 PREDICT_TEST_SLEEP_MS=300 SAGE_SHARE_PLACE=$tmp/place-a3
[ "$out" = "$native_c" ] || bad "ahead, changed weights output: $out vs $native_c"
[ "$(st a3 SHARE_AHEAD_HITS)" = $((whole - 1)) ] && [ "$(st a3 SHARE_MISSES)" = 1 ] && [ "$(st a3 SHARE_LOOKUPS)" = 1 ] ||
  bad "ahead, changed weights: $(st a3 SHARE_AHEAD_HITS) asked ahead, $(st a3 SHARE_MISSES) misses, $(st a3 SHARE_LOOKUPS) lookups"
run a4 SAGE_SHARE_PREDICT=0 PREDICT_TEST_EARLY=5 PREDICT_TEST_SLEEP_MS=300 SAGE_SHARE_PLACE=$tmp/place-a4
[ "$out" = "$native_e" ] || bad "ahead, early kernel output: $out vs $native_e"
# Taken from, then a kernel (before tensor 5): the uploads have begun, what is left goes back; the rest ask the broker.
[ "$(st a4 SHARE_HITS)" = "$whole" ] && [ "$(st a4 SHARE_AHEAD_HITS)" = 5 ] && [ "$(st a4 SHARE_LOOKUPS)" = $((whole - 5)) ] ||
  bad "ahead, early kernel: $(st a4 SHARE_HITS) hits, $(st a4 SHARE_AHEAD_HITS) asked ahead, $(st a4 SHARE_LOOKUPS) lookups"
# A kernel before any upload (PyTorch's set-up fills a tensor first): kept past it, no lookup at all.
run a7 SAGE_SHARE_PREDICT=0 PREDICT_TEST_EARLY=0 PREDICT_TEST_SLEEP_MS=300 SAGE_SHARE_PLACE=$tmp/place-a7
[ "$out" = "$(PREDICT_TEST_EARLY=0 "$prog" 5)" ] || bad "ahead, a kernel first output: $out"
[ "$(st a7 SHARE_AHEAD_HITS)" = "$whole" ] && [ "$(st a7 SHARE_LOOKUPS)" = 0 ] ||
  bad "ahead, a kernel first: $(st a7 SHARE_AHEAD_HITS) asked ahead, $(st a7 SHARE_LOOKUPS) lookups"

# A miss first (tensor 0's new bytes), then a kernel: none taken yet, so kept past it; the others' hits take theirs.
run a9 SAGE_SHARE_PREDICT=0 PREDICT_TEST_CHANGE=0 PREDICT_TEST_EARLY=1 PREDICT_TEST_SLEEP_MS=300 \
  SAGE_SHARE_PLACE=$tmp/place-a9
[ "$out" = "$(PREDICT_TEST_CHANGE=0 PREDICT_TEST_EARLY=1 "$prog" 5)" ] || bad "ahead, a miss then a kernel output: $out"
[ "$(st a9 SHARE_AHEAD_HITS)" = $((whole - 1)) ] && [ "$(st a9 SHARE_LOOKUPS)" = 1 ] ||
  bad "ahead, a miss then a kernel: $(st a9 SHARE_AHEAD_HITS) asked ahead, $(st a9 SHARE_LOOKUPS) lookups"

# A new broker: the hints' extents are gone, every key asked ahead misses; each upload asks again and misses.
stop_saged
export SAGE_SOCKET=$tmp/saged-new.sock
start_saged
run a6 SAGE_SHARE_PREDICT=0 PREDICT_TEST_SLEEP_MS=300 SAGE_SHARE_PLACE=$tmp/place-a6 SAGE_VERBOSE=2
[ "$out" = "$native" ] || bad "ahead, new broker output: $out vs $native"
[ "$(st a6 SHARE_AHEAD_MISSED)" = "$whole" ] && [ "$(st a6 SHARE_AHEAD_HITS)" = 0 ] && [ "$(st a6 SHARE_MISSES)" = "$whole" ] &&
  [ "$(st a6 SHARE_FALLBACKS)" = 0 ] ||
  bad "ahead, new broker: $(st a6 SHARE_AHEAD_MISSED) missed ahead, $(st a6 SHARE_AHEAD_HITS) taken, $(st a6 SHARE_MISSES) misses, $(st a6 SHARE_FALLBACKS) fallbacks"
grep -q "miss path's staging made ahead" "$tmp/a6.err" || bad "ahead, new broker: keys missed, yet no staging made ahead"

step "the app's own VMM memory (XLA's allocator: one region, cuMemCreate + cuMemMap): its hits asked ahead too, nothing predicted there"
mkdir "$tmp/place-vmm"
native_v=$(PREDICT_TEST_APPVMM=1 "$prog" 5)
whole_v=$(whole_of "$native_v")
for i in 1 2 3; do
  run v$i PREDICT_TEST_APPVMM=1 PREDICT_TEST_SLEEP_MS=300 SAGE_SHARE_PLACE=$tmp/place-vmm SAGE_SHARE_PREDICT=$((i == 3))
  [ "$out" = "$native_v" ] || bad "app VMM run $i output: $out vs $native_v"
done
[ "$(st v1 SHARE_APP_VMM)" = 1 ] || bad "app VMM: $(st v1 SHARE_APP_VMM) allocations backed, not 1"
for i in 2 3; do
  [ "$(st v$i SHARE_HITS)" = "$whole_v" ] && [ "$(st v$i SHARE_AHEAD_HITS)" = "$whole_v" ] && [ "$(st v$i SHARE_LOOKUPS)" = 0 ] ||
    bad "app VMM run $i: $(st v$i SHARE_HITS) hits, $(st v$i SHARE_AHEAD_HITS) asked ahead, $(st v$i SHARE_LOOKUPS) lookups (not $whole_v, $whole_v, 0)"
done
# Their hints carry the app's ordinal bit: a cuMemAlloc'd allocation never takes them for a prediction.
[ "$(st v3 SHARE_PREDICT_MAPPED)" = 0 ] && grep -q " 2147483648 " "$tmp"/place-vmm/predict-* ||
  bad "app VMM: $(st v3 SHARE_PREDICT_MAPPED) mapped at allocation, or no hint with the app's ordinal"
# Nor does the warm-up thread make one ahead for them (the app makes its own memory).
[ "$(st v3 SHARE_PREMADE)" = 0 ] || bad "app VMM: $(st v3 SHARE_PREMADE) allocations made ahead for the app's own memory"

exit $fail

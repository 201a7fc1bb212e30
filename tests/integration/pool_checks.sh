#!/usr/bin/env bash
# Weights placed by a framework's caching allocator (pool_test.c) against
# the simulated driver and the real broker (issue 14): without placement the
# pool's activations share granules with the last weights of their segments
# and those granules stay private in every invocation; with
# SAGE_SHARE_PLACE the first invocation learns where each segment is to
# start, and from the third on (the second publishes the new layout)
# >= 98% of the uploaded bytes are mapped or assembled. Outputs never change.
#   pool_checks.sh POOL_TEST SAGED PYTHON3
set -euo pipefail
prog=$1 saged=$2 python=$3
. "$(dirname "$0")/lib.sh"
export SAGE_SOCKET=$tmp/saged.sock SAGE_SHARE=1
# A fresh broker (lib.sh's start_saged): nothing published yet.
start_broker() {
  stop_saged
  rm -f "$SAGE_SOCKET"
  start_saged
}
# run TAG [VAR=VALUE...]: one invocation under sharing, trace $tmp/TAG.json, output compared with native's.
run() {
  local tag=$1 out
  shift
  out=$(env "$@" SAGE_TRACE="$tmp/$tag.json" LD_PRELOAD="$preload" "$prog" 5) || bad "$tag: the run failed (a fault?)"
  [ "$out" = "$native" ] || bad "$tag output: $out vs $native"
}
# The share of the uploaded bytes mapped (whole granules of an upload) or assembled, in percent.
# shared TAG [NATIVE]: the % of NATIVE's uploaded bytes (default: ResNet's) mapped or assembled in run TAG.
shared() {
  "$python" - "$tmp/$1.json" "${2:-$native}" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["otherData"]["stats"]
uploaded = int(sys.argv[2].split()[1])
print("%.2f" % (100.0 * (s["SHARE_BYTES_MAPPED"] + s["SHARE_BYTES_ASSEMBLED"]) / uploaded))
PY
}
at_least() { "$python" -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)' "$1" "$2"; }

native=$("$prog" 5)
echo "native: $native"

step "without placement: the activations' granules stay private in every invocation"
start_broker
run a1
run a2
echo "shared: first $(shared a1)%, second $(shared a2)%"
at_least "$(shared a2)" 98 && bad "the model does not show the loss placement removes ($(shared a2)% shared without it)"
[ "$(stat_of "$tmp/a2.json" SHARE_DROPPED)" -gt 0 ] || bad "no candidate dropped for a buffer between uploads"

step "with SAGE_SHARE_PLACE: learned in the first invocation, >= 98% from the third"
start_broker
mkdir "$tmp/place"
run b1 SAGE_SHARE_PLACE="$tmp/place"
[ "$(stat_of "$tmp/b1.json" SHARE_PLACED)" = 0 ] || bad "placed before anything was learned"
ls "$tmp/place"/place-* >/dev/null 2>&1 || bad "no hints written"
[ "$(stat_of "$tmp/b1.json" SHARE_PUBLISHED)" -lt "$(stat_of "$tmp/a1.json" SHARE_PUBLISHED)" ] ||
  bad "the segments that move were published all the same"
run b2 SAGE_SHARE_PLACE="$tmp/place"
run b3 SAGE_SHARE_PLACE="$tmp/place"
echo "shared: $(shared b1)%, $(shared b2)%, $(shared b3)%; placed $(stat_of "$tmp/b3.json" SHARE_PLACED) segments"
[ "$(stat_of "$tmp/b3.json" SHARE_PLACED)" -gt 0 ] || bad "no segment placed"
at_least "$(shared b3)" 98 || bad "third invocation: $(shared b3)% shared (< 98%)"
[ "$(stat_of "$tmp/b3.json" SHARE_DROPPED)" = 0 ] || bad "third invocation: $(stat_of "$tmp/b3.json" SHARE_DROPPED) candidates dropped"
[ "$(stat_of "$tmp/b3.json" SHARE_GUARD_UNSHARED)" = 0 ] || bad "third invocation: the guard privatized shared pieces"
[ "$(stat_of "$tmp/b3.json" SHARE_SYNCS_SKIPPED)" -gt 0 ] || bad "no hit skipped its synchronize"

step "deferred backing (SAGE_SHARE_DEFER): the same invocation, about the VMM calls of mapping at cuMemAlloc"
run b4 SAGE_SHARE_PLACE="$tmp/place" SAGE_FAKE_VMM_COUNT="$tmp/b4.vmm"
run b5 SAGE_SHARE_PLACE="$tmp/place" SAGE_FAKE_VMM_COUNT="$tmp/b5.vmm" SAGE_SHARE_DEFER=0
calls_b4=$(vmm_calls "$tmp/b4.vmm") calls_b5=$(vmm_calls "$tmp/b5.vmm")
echo "VMM calls: deferred $calls_b4 ($(cat "$tmp/b4.vmm")), mapped at cuMemAlloc $calls_b5 ($(cat "$tmp/b5.vmm"))"
# b5 runs on extents the deferred runs published: its own layout (assembled runs) differs, it need not hit them all.
at_least "$(shared b4)" 98 || bad "deferred: $(shared b4)% shared (< 98%)"
[ "$(stat_of "$tmp/b4.json" SHARE_DEFERRED)" -gt 0 ] && [ "$(stat_of "$tmp/b5.json" SHARE_DEFERRED)" = 0 ] ||
  bad "SHARE_DEFERRED: $(stat_of "$tmp/b4.json" SHARE_DEFERRED) deferred, $(stat_of "$tmp/b5.json" SHARE_DEFERRED) not"
# Most of this pool's weights are small tensors, copied and assembled, each copy backing its own granules:
# about the calls of the eager path (the GPT-2-like load of predict_checks.sh is where deferral pays).
[ $((calls_b4 * 100)) -le $((calls_b5 * 105)) ] || bad "deferred: $calls_b4 VMM calls, more than 105% of $calls_b5"
[ "$(stat_of "$tmp/b5.json" SHARE_RESTS_AHEAD)" -gt 0 ] || bad "no hit took the rests made while the broker answered"

step "a kernel writing placed, shared weights: a private copy first (the launch guard), same output as native"
native_w=$(POOL_TEST_WRITE=1 "$prog" 5)
[ "$native_w" != "$native" ] || bad "the writing kernel changes nothing"
out=$(SAGE_SHARE_PLACE="$tmp/place" POOL_TEST_WRITE=1 SAGE_TRACE="$tmp/w.json" LD_PRELOAD="$preload" "$prog" 5) ||
  bad "write run (a fault?)"
[ "$out" = "$native_w" ] || bad "write output: $out vs $native_w"
[ "$(stat_of "$tmp/w.json" SHARE_PLACED)" -gt 0 ] && [ "$(stat_of "$tmp/w.json" SHARE_GUARD_UNSHARED)" -gt 0 ] ||
  bad "write: the guard did not privatize the written weights of a placed segment"

step "CUDA IPC of placed segments: the child sees the segment's first byte where the parent does"
native_i=$(POOL_TEST_IPC=1 "$prog" 5)
out=$(SAGE_SHARE_PLACE="$tmp/place" POOL_TEST_IPC=1 SAGE_TRACE="$tmp/i.json" LD_PRELOAD="$preload" "$prog" 5) || bad "ipc run"
[ "$out" = "$native_i" ] || bad "ipc output: $out vs $native_i"
[ "$(stat_of "$tmp/i.json" SHARE_PLACED)" -gt 0 ] && [ "$(stat_of "$tmp/i.json" SHARE_IPC_EXPORTS)" -gt 0 ] ||
  bad "ipc: no placed segment exported"
grep -q "parent sees 5a5a5a5a5a5a5a5a" <<<"$out" || bad "ipc: the child's write did not reach the parent"

step "BERT base: whole granules whose hit would re-back copied bytes are assembled with them (SAGE_SHARE_FOLD)"
native_b=$(POOL_TEST_BERT=1 "$prog" 5)
# bert TAG [VAR=VALUE...]: one BERT invocation on the broker as it is, output compared with native's.
# Mapped at cuMemAlloc (SAGE_SHARE_DEFER=0): deferred, a hit re-backs no copied bytes and nothing folds.
bert() {
  local tag=$1 out
  shift
  out=$(env SAGE_SHARE_DEFER=0 "$@" POOL_TEST_BERT=1 SAGE_TRACE="$tmp/$tag.json" LD_PRELOAD="$preload" "$prog" 5) || bad "$tag: the run failed"
  [ "$out" = "$native_b" ] || bad "$tag output: $out vs $native_b"
}
# Broker requests of a warm invocation: a lookup per upload looked up, a key per assembled run (one window).
requests() { echo $(($(stat_of "$tmp/$1.json" SHARE_LOOKUPS) + $(stat_of "$tmp/$1.json" SHARE_ASSEMBLED))); }
for fold in 0 1; do
  start_broker
  bert f$fold-1 SAGE_SHARE_FOLD=$fold
  bert f$fold-2 SAGE_SHARE_FOLD=$fold
  echo "SAGE_SHARE_FOLD=$fold: $(stat_of "$tmp/f$fold-2.json" SHARE_HITS) hits, $(stat_of "$tmp/f$fold-2.json" SHARE_FOLDED) folded," \
    "$(stat_of "$tmp/f$fold-2.json" SHARE_ASSEMBLED) runs, $(requests f$fold-2) broker requests," \
    "$(stat_of "$tmp/f$fold-2.json" SHARE_KEEP_COPIES) keep copies, $(native=$native_b shared f$fold-2)% shared"
done
[ "$(stat_of "$tmp/f0-2.json" SHARE_FOLDED)" = 0 ] || bad "SAGE_SHARE_FOLD=0 folded"
[ "$(stat_of "$tmp/f1-2.json" SHARE_FOLDED)" -gt 0 ] || bad "nothing folded"
[ "$(requests f1-2)" -le $(($(requests f0-2) * 2 / 3)) ] || bad "folding saved too few broker requests: $(requests f1-2) vs $(requests f0-2)"
[ "$(stat_of "$tmp/f1-2.json" SHARE_KEEP_COPIES)" -lt "$(stat_of "$tmp/f0-2.json" SHARE_KEEP_COPIES)" ] || bad "folding saved no keep copy"
at_least "$(native=$native_b shared f1-2)" 99 || bad "folded: $(native=$native_b shared f1-2)% shared (< 99%)"
[ "$(stat_of "$tmp/f1-2.json" SHARE_MISSES)" = 0 ] || bad "folded, warm: $(stat_of "$tmp/f1-2.json" SHARE_MISSES) misses"

step "predicted runs (SAGE_SHARE_PREDICT): assembled runs mapped at cuMemAlloc, their uploads kept on the host and confirmed at the launch"
start_broker
mkdir "$tmp/place-p"
for i in 1 2 3; do run p$i SAGE_SHARE_PLACE="$tmp/place-p" SAGE_SHARE_PREDICT=1; done
echo "third: $(stat_of "$tmp/p3.json" SHARE_PREDICTED_RUNS) runs and $(stat_of "$tmp/p3.json" SHARE_PREDICTED) pieces confirmed," \
  "$(stat_of "$tmp/p3.json" SHARE_LOOKUPS) lookups, $(stat_of "$tmp/p3.json" SHARE_NS_ASSEMBLE_READ) ns reading back, $(shared p3)% shared"
[ "$(stat_of "$tmp/p3.json" SHARE_PREDICTED_RUNS)" -gt 0 ] || bad "no predicted run confirmed"
[ "$(stat_of "$tmp/p3.json" SHARE_PREDICTED_RUNS)" = "$(stat_of "$tmp/p3.json" SHARE_ASSEMBLED_HITS)" ] ||
  bad "runs assembled the usual way besides the predicted ones"
[ "$(stat_of "$tmp/p3.json" SHARE_PREDICT_UNUSED)" = 0 ] && [ "$(stat_of "$tmp/p3.json" SHARE_PREDICT_RUNS_COPIED)" = 0 ] ||
  bad "third: predictions unused or runs copied"
[ "$(stat_of "$tmp/p3.json" SHARE_LOOKUPS)" = 0 ] || bad "third: $(stat_of "$tmp/p3.json" SHARE_LOOKUPS) lookups at upload"
at_least "$(shared p3)" 98 || bad "predicted: $(shared p3)% shared (< 98%)"
# Other weights (seed 6, same command line) under the same hints, read back before the first kernel: the runs' images differ from
# the extents mapped, so each run turns private with its uploads copied in; the read sees the new bytes.
native6=$(POOL_TEST_READ=1 POOL_TEST_SEED=6 "$prog" 5)
grep -q "read back" <<<"$native6" && bad "native read-back: $native6"
out=$(SAGE_SHARE_PLACE="$tmp/place-p" SAGE_SHARE_PREDICT=1 POOL_TEST_READ=1 POOL_TEST_SEED=6 SAGE_TRACE="$tmp/p6.json" \
  LD_PRELOAD="$preload" "$prog" 5) || bad "p6: the run failed"
[ "$out" = "$native6" ] && [ "$native6" != "$native" ] || bad "other weights, read first: $out vs $native6"
[ "$(stat_of "$tmp/p6.json" SHARE_PREDICT_RUNS_COPIED)" -gt 0 ] && [ "$(stat_of "$tmp/p6.json" SHARE_PREDICTED_RUNS)" = 0 ] ||
  bad "other weights: $(stat_of "$tmp/p6.json" SHARE_PREDICT_RUNS_COPIED) runs copied, $(stat_of "$tmp/p6.json" SHARE_PREDICTED_RUNS) confirmed"
# Back to seed 5, the run after: the runs p6 published are new hints; seed 5's come back in two.
run p7 SAGE_SHARE_PLACE="$tmp/place-p" SAGE_SHARE_PREDICT=1
run p8 SAGE_SHARE_PLACE="$tmp/place-p" SAGE_SHARE_PREDICT=1
[ "$(stat_of "$tmp/p8.json" SHARE_PREDICTED_RUNS)" = "$(stat_of "$tmp/p3.json" SHARE_PREDICTED_RUNS)" ] ||
  bad "after other weights: $(stat_of "$tmp/p8.json" SHARE_PREDICTED_RUNS) runs confirmed (was $(stat_of "$tmp/p3.json" SHARE_PREDICTED_RUNS))"
# Made ahead (share_predict_premake): with a pause before the model (a Python function reading it), the warm-up
# thread makes every predicted segment, each at its learned lead (placed), and each cuMemAlloc takes its own.
run p9 SAGE_SHARE_PLACE="$tmp/place-p" SAGE_SHARE_PREDICT=1 POOL_TEST_PAUSE_MS=400
made=$(stat_of "$tmp/p9.json" SHARE_PREMADE)
[ "$made" -gt 0 ] && [ "$(stat_of "$tmp/p9.json" SHARE_PREMADE_TAKEN)" = "$made" ] && [ "$(stat_of "$tmp/p9.json" SHARE_PLACED)" -gt 0 ] ||
  bad "made ahead: $made made, $(stat_of "$tmp/p9.json" SHARE_PREMADE_TAKEN) taken, $(stat_of "$tmp/p9.json" SHARE_PLACED) placed"
[ "$(stat_of "$tmp/p9.json" SHARE_PREDICTED_RUNS)" = "$(stat_of "$tmp/p3.json" SHARE_PREDICTED_RUNS)" ] &&
  [ "$(stat_of "$tmp/p9.json" SHARE_LOOKUPS)" = 0 ] ||
  bad "made ahead: $(stat_of "$tmp/p9.json" SHARE_PREDICTED_RUNS) runs confirmed, $(stat_of "$tmp/p9.json" SHARE_LOOKUPS) lookups"
# Each run's host image made and faulted in by the warm-up thread too; its first upload takes it.
images=$(stat_of "$tmp/p9.json" SHARE_IMAGES_AHEAD)
[ "$images" -gt 0 ] && [ "$(stat_of "$tmp/p9.json" SHARE_IMAGES_AHEAD_TAKEN)" = "$images" ] ||
  bad "made ahead: $images run images made ahead, $(stat_of "$tmp/p9.json" SHARE_IMAGES_AHEAD_TAKEN) taken"

step "assembly at idleness (SAGE_SUSPEND=1, SAGE_SHARE_ASSEMBLE_IDLE): the runs the last invocation shared wait for the idle process"
# runi TAG EXPECTED [VAR=VALUE...]: an invocation that idles 500 ms after its pass, then checksums every weight again.
runi() {
  local tag=$1 expected=$2 out
  shift 2
  out=$(env SAGE_SUSPEND=1 SAGE_SHARE_PLACE="$tmp/place-i" POOL_TEST_IDLE_MS=500 "$@" SAGE_TRACE="$tmp/$tag.json" \
    LD_PRELOAD="$preload" "$prog" 5) || bad "$tag: the run failed (a fault?)"
  [ "$out" = "$expected" ] || bad "$tag output: $out vs $expected"
  echo "$tag: $(stat_of "$tmp/$tag.json" SHARE_ASSEMBLE_DEFERRED) runs left for idleness," \
    "$(stat_of "$tmp/$tag.json" SHARE_ASSEMBLED_IDLE) mapped then; $(stat_of "$tmp/$tag.json" SHARE_ASSEMBLED) keyed in all"
}
idle_of() { stat_of "$tmp/$1.json" SHARE_ASSEMBLED_IDLE; }
# Runs left for idleness: at the first launch (hinted), and uploads copied because their hit cost more.
due_of() { echo $(($(stat_of "$tmp/$1.json" SHARE_ASSEMBLE_DEFERRED) + $(stat_of "$tmp/$1.json" SHARE_COPIED_DUE))); }
native_idle=$(POOL_TEST_IDLE_MS=500 "$prog" 5)
grep -q "^again " <<<"$native_idle" || bad "native: no second pass: $native_idle"
start_broker
mkdir "$tmp/place-i"
for i in 1 2 3; do runi i$i "$native_idle"; done
[ "$(due_of i1)" = 0 ] || bad "the first invocation (nothing shared before) left runs for idleness"
[ "$(due_of i3)" -gt 0 ] && [ "$(idle_of i3)" = "$(due_of i3)" ] &&
  [ "$(stat_of "$tmp/i3.json" SHARE_ASSEMBLED_HITS)" = "$(idle_of i3)" ] ||
  bad "third: $(due_of i3) runs due, $(idle_of i3) mapped at idleness, $(stat_of "$tmp/i3.json" SHARE_ASSEMBLED_HITS) hits"
# The first launch's breakdown is the first launch's: nothing read back there (the idle pass's own is taken back).
[ "$(stat_of "$tmp/i3.json" SHARE_NS_ASSEMBLE_READ)" = 0 ] || bad "third: the first launch read back"
[ "$(stat_of "$tmp/i3.json" SHARE_NS_ASSEMBLE_IDLE)" -gt 0 ] || bad "third: no time at idleness"
at_least "$(shared i3)" 98 || bad "at idleness: $(shared i3)% shared (< 98%)"
# A process that never idles keeps its runs private, and their hints: the next one still leaves them for idleness.
runi n1 "$native" POOL_TEST_IDLE_MS=0
[ "$(due_of n1)" -gt 0 ] && [ "$(idle_of n1)" = 0 ] || bad "no idleness: $(idle_of n1) mapped"
runi n2 "$native_idle"
[ "$(due_of n2)" = "$(due_of i3)" ] && [ "$(idle_of n2)" = "$(due_of i3)" ] || bad "after no idleness: hints lost"
# Predicted remap beside it: the hits mapped at allocation, the runs left for idleness as without it (none
# predicted: nothing kept on the host for the first launch to settle), mapped there.
cp -r "$tmp/place-i" "$tmp/place-ip"
runi ip1 "$native_idle" SAGE_SHARE_PREDICT=1 SAGE_SHARE_PLACE="$tmp/place-ip"
[ "$(stat_of "$tmp/ip1.json" SHARE_PREDICTED)" -gt 0 ] && [ "$(stat_of "$tmp/ip1.json" SHARE_PREDICTED_RUNS)" = 0 ] &&
  [ "$(due_of ip1)" = "$(due_of i3)" ] && [ "$(idle_of ip1)" = "$(due_of i3)" ] ||
  bad "predicted, runs at idleness: $(stat_of "$tmp/ip1.json" SHARE_PREDICTED) hits predicted, $(stat_of "$tmp/ip1.json" SHARE_PREDICTED_RUNS) runs predicted, $(due_of ip1) due, $(idle_of ip1) mapped at idleness (i3: $(due_of i3))"
# A kernel writes weights in place before the idleness: those runs miss, stay private, are no candidates.
native_w=$(POOL_TEST_WRITE=1 POOL_TEST_IDLE_MS=500 "$prog" 5)
runi w1 "$native_w" POOL_TEST_WRITE=1
[ "$(idle_of w1)" -lt "$(due_of w1)" ] && [ "$(idle_of w1)" -gt 0 ] || bad "written: $(idle_of w1) of $(due_of w1) mapped"
[ "$(stat_of "$tmp/w1.json" SHARE_PUBLISHED)" = 0 ] || bad "written: a run missed at idleness was published"
# The next call comes during the pass (maps slowed to 40 ms: the pass outlasts the 100 ms idleness): its copies and
# launches wait at the gate, then see the weights as they were. Maps that slow make a hit cost more than its copy:
# SAGE_SHARE_COPY_CHEAPER=auto (on where assembly at idleness runs) copies those uploads, their whole granules due
# at the idleness with the rest.
runi g1 "$native_idle" SAGE_FAKE_MAP_MS=40 POOL_TEST_IDLE_MS=100 SAGE_SHARE_COPY_CHEAPER=auto
[ "$(idle_of g1)" -gt 0 ] && [ "$(idle_of g1)" = "$(due_of g1)" ] || bad "a call during the pass: $(idle_of g1) mapped"
copied_g1=$(stat_of "$tmp/g1.json" SHARE_COPY_CHEAPER)
[ "$copied_g1" -gt 0 ] && [ "$(stat_of "$tmp/g1.json" SHARE_COPIED_DUE)" = "$copied_g1" ] ||
  bad "slow maps: $copied_g1 uploads copied, $(stat_of "$tmp/g1.json" SHARE_COPIED_DUE) of them due at idleness"
echo "g1: $copied_g1 uploads copied (their hit cost more), $(shared g1)% shared after the idleness"
# Memory first (SAGE_SHARE_COPY_CHEAPER=0, the default), or auto without assembly at idleness (no suspend gate):
# every hit mapped.
runi k1 "$native_idle" SAGE_FAKE_MAP_MS=40
runi k2 "$native_idle" SAGE_FAKE_MAP_MS=40 SAGE_SUSPEND=0 SAGE_SHARE_COPY_CHEAPER=auto
[ "$(stat_of "$tmp/k1.json" SHARE_COPY_CHEAPER)/$(stat_of "$tmp/k2.json" SHARE_COPY_CHEAPER)" = 0/0 ] &&
  [ "$(stat_of "$tmp/k1.json" SHARE_HITS)" -gt 0 ] ||
  bad "memory first: $(stat_of "$tmp/k1.json" SHARE_COPY_CHEAPER) and $(stat_of "$tmp/k2.json" SHARE_COPY_CHEAPER) copied"
# An app thread forks during the pass, while a map holds sharing's lock (the gate closed): the child's call fails
# as without SAGE, at once, and the parent's pass goes on. (Natively no map comes: it forks after the wait.)
native_fork=$(POOL_TEST_IDLE_MS=100 POOL_TEST_FORK="$tmp/no-map" "$prog" 5)
grep -q "^forked child: 3$" <<<"$native_fork" || bad "native: the forked child: $native_fork"
runi g2 "$native_fork" SAGE_FAKE_MAP_MS=40 POOL_TEST_IDLE_MS=100 POOL_TEST_FORK="$tmp/map-mark" \
  SAGE_FAKE_MAP_MARK="$tmp/map-mark" SAGE_SHARE_COPY_CHEAPER=auto
[ -e "$tmp/map-mark.seen" ] || bad "a fork during the pass: no map in progress when it forked"
[ "$(idle_of g2)" -gt 0 ] && [ "$(idle_of g2)" = "$(due_of g2)" ] || bad "a fork during the pass: $(idle_of g2) mapped"
# Copying again, the runs around the copies are hinted in their new shapes: due at the first launch, mapped at idleness.
runi g3 "$native_idle" SAGE_FAKE_MAP_MS=40 SAGE_SHARE_COPY_CHEAPER=auto
echo "g3: $(stat_of "$tmp/g3.json" SHARE_COPY_CHEAPER) uploads copied, $(shared g3)% shared after the idleness"
[ "$(stat_of "$tmp/g3.json" SHARE_COPIED_DUE)" -gt 0 ] && at_least "$(shared g3)" 98 ||
  bad "copying again: $(shared g3)% shared after the idleness (< 98%)"
# BERT's pool while copying: an upload whose hit would re-back bytes copied before it (a fold) is copied as well,
# its whole granules due at idleness (folded into a run of a new shape at the first launch, which assembles nothing
# new while copying, it was lost: 58% shared).
native_bi=$(POOL_TEST_BERT=1 POOL_TEST_IDLE_MS=500 "$prog" 5)
mkdir "$tmp/place-b"
for i in 1 2 3; do runi b$i "$native_bi" POOL_TEST_BERT=1 SAGE_SHARE_PLACE="$tmp/place-b"; done
runi b4 "$native_bi" POOL_TEST_BERT=1 SAGE_SHARE_PLACE="$tmp/place-b" SAGE_FAKE_MAP_MS=40 SAGE_SHARE_COPY_CHEAPER=auto
folded_b4=$(stat_of "$tmp/b4.json" SHARE_FOLDED) copied_b4=$(stat_of "$tmp/b4.json" SHARE_COPY_CHEAPER)
echo "b4: $copied_b4 uploads copied, $folded_b4 folded, $(shared b4 "$native_bi")% shared after the idleness"
[ "$folded_b4" -gt 0 ] && [ "$(stat_of "$tmp/b4.json" SHARE_COPIED_DUE)" = $((copied_b4 + folded_b4)) ] &&
  at_least "$(shared b4 "$native_bi")" 99.9 ||
  bad "BERT while copying: $copied_b4 copied + $folded_b4 folded, $(stat_of "$tmp/b4.json" SHARE_COPIED_DUE) due, $(shared b4 "$native_bi")% shared"
# A server that forks before it uses the GPU (its libsage loaded, nothing of CUDA started: SAGE_WARMUP=lazy, as the
# README says for those): the child shares, registers and assembles at idleness as any process does (the fork
# handlers leave a parent's unused parts alone).
runi f1 "$native_idle" POOL_TEST_PREFORK=1 SAGE_WARMUP=lazy
[ "$(stat_of "$tmp/f1.json" SHARE_ALLOCS)" -gt 0 ] && [ "$(idle_of f1)" -gt 0 ] ||
  bad "pre-fork child: $(stat_of "$tmp/f1.json" SHARE_ALLOCS) allocations backed, $(idle_of f1) runs mapped at idleness"
# Off: without the suspend gate, or with SAGE_SHARE_ASSEMBLE_IDLE=0, everything is assembled at the first launch.
runi o1 "$native_idle" SAGE_SUSPEND=0
runi o2 "$native_idle" SAGE_SHARE_ASSEMBLE_IDLE=0
[ "$(due_of o1)" = 0 ] && [ "$(due_of o2)" = 0 ] && [ "$(stat_of "$tmp/o2.json" SHARE_ASSEMBLED_HITS)" -gt 0 ] ||
  bad "off: $(due_of o1) and $(due_of o2) runs left for idleness"
# Registration refused (one instance per uid, another process holds it): no listener in the process, so nothing
# is left for an idleness no one would measure; the hints stay (the same broker, its extents).
stop_saged
start_saged "$SAGE_SOCKET" --max-instances-per-uid 1
SAGE_SUSPEND=1 POOL_TEST_IDLE_MS=4000 LD_PRELOAD="$preload" "$prog" 7 >/dev/null 2>&1 &
holder=$!
sleep 1
runi o3 "$native_idle"
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null || true
[ "$(due_of o3)" = 0 ] && [ "$(stat_of "$tmp/o3.json" SHARE_ASSEMBLED)" -gt 0 ] ||
  bad "no listener: $(due_of o3) runs left for idleness"

step "answers asked ahead that nothing took go back before a suspend (an imported handle nothing maps fails the restore)"
# Seed 5's hints (place-i), other weights (POOL_TEST_SEED, the same command line): every hit asked ahead is imported
# by the warm-up thread and never taken.
# Suspended by sagectl while it idles, resumed by its own next call: the restore must find no imported memory.
sagectl=$(dirname "$saged")/../tools/sagectl
start_broker
cp -r "$tmp/place-i" "$tmp/place-s"
runi s0 "$native_idle" SAGE_SHARE_PLACE="$tmp/place-s" # the new broker gets seed 5's extents
# suspended TAG EXPECTED [VAR=VALUE...]: an invocation in the background, suspended by sagectl once it idles (tried
# every 0.1 s from 0.5 s on), resumed by its own next call; its output must be EXPECTED.
suspended() {
  local tag=$1 expected=$2 app done=
  shift 2
  env SAGE_SUSPEND=1 "$@" SAGE_TRACE="$tmp/$tag.json" LD_PRELOAD="$preload" "$prog" 5 >"$tmp/$tag.out" 2>"$tmp/$tag.err" &
  app=$!
  sleep 0.5
  for _ in $(seq 30); do
    if "$sagectl" suspend "$app" >"$tmp/$tag.ctl" 2>&1; then done=1 && break; fi
    sleep 0.1
  done
  wait "$app" || bad "$tag: the run failed: $(tail -3 "$tmp/$tag.err")"
  [ -n "$done" ] || bad "$tag: never suspended: $(cat "$tmp/$tag.ctl")"
  [ "$(cat "$tmp/$tag.out")" = "$expected" ] || bad "$tag: output $(cat "$tmp/$tag.out") vs $expected"
}
# By 0.5 s its answers were asked and imported (~1 ms) and its uploads done: idle, holding them.
suspended s1 "$(POOL_TEST_SEED=9 POOL_TEST_IDLE_MS=2500 "$prog" 5)" SAGE_SHARE_PLACE="$tmp/place-s" POOL_TEST_SEED=9 \
  POOL_TEST_IDLE_MS=2500
[ "$(stat_of "$tmp/s1.json" SHARE_AHEAD_IMPORTED)" -gt 0 ] && [ "$(stat_of "$tmp/s1.json" SHARE_AHEAD_HITS)" = 0 ] ||
  bad "suspend: $(stat_of "$tmp/s1.json" SHARE_AHEAD_IMPORTED) imported ahead, $(stat_of "$tmp/s1.json" SHARE_AHEAD_HITS) taken"
# Suspended while its warm-up thread still imports, the process idle before its uploads: an import that outlasts the
# 2 s a suspend waits for it (4 s here) puts the suspend off until it returned (a handle imported during the
# checkpoint fails the restore); then suspended, resumed by its uploads. (The pause changes no output.)
suspended s2 "$(POOL_TEST_SEED=9 "$prog" 5)" SAGE_SHARE_PLACE="$tmp/place-s" POOL_TEST_SEED=9 POOL_TEST_PAUSE_MS=6000 \
  SAGE_FAKE_IMPORT_MS=4000

step "a hint file that lies: placement is checked, output unchanged"
for f in "$tmp/place"/place-*; do printf '2097152 0 999\n20971520 0 4294967295\nx y z\n' >"$f"; done
run c1 SAGE_SHARE_PLACE="$tmp/place"
[ "$(stat_of "$tmp/c1.json" SHARE_PLACED)" = 0 ] || bad "a bad hint was applied"
run c2 SAGE_SHARE_PLACE="$tmp/nonexistent/dir"

exit $fail

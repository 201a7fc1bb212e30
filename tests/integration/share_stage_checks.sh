#!/usr/bin/env bash
# The miss path's staged copy (intercept/share_stage.c) against the simulated
# driver (asynchronous streams) and the real broker: a miss is copied by
# SAGE through pinned staging, keyed by what arrived (published, so the key
# matched the device), a hit on the second run; an async upload stays
# ordered on the app's stream; streamed stores (SAGE_SHARE_STAGE_STORES)
# key what arrived too; SAGE_SHARE_STAGING=0 is the app's own copy;
# a staged copy the broker turns out to hold is mapped over. Outputs never
# change.
#   share_stage_checks.sh SHARE_TEST SAGED PYTHON3
set -euo pipefail
prog=$1 saged=$2 python=$3
. "$(dirname "$0")/lib.sh"
# Small uploads (publishing verifies them within the broker's call timeout on a
# loaded CI machine) through small buffers: 4 MiB each, so 24 MiB take 6 rounds
# through 6 of the 8 buffers (the unit test share_stage reuses them).
export SAGE_SOCKET=$tmp/saged.sock SAGE_SHARE=1 SAGE_SHARE_STAGING=32M
start_saged

# run TAG ARGS... (lib.sh): under sharing, traced to $tmp/TAG.json; the output must be native's.
# expect TAG COUNTER=VALUE...
expect() {
  local tag=$1 kv got
  shift
  for kv in "$@"; do
    got=$(stat_of "$tmp/$tag.json" "${kv%%=*}")
    [ "$got" = "${kv#*=}" ] || bad "$tag: ${kv%%=*} is $got, not ${kv#*=}"
  done
}

step "cold broker: staged first (no hash pass before it), after the app's queued memset, published; then a hit"
# async-order: a memset, the upload and a kernel queued on one stream of the app's.
run cold 24 21 async-order
expect cold SHARE_MISSES=1 SHARE_STAGED=1 SHARE_BYTES_STAGED=$((24 << 20)) SHARE_STAGED_HITS=0 SHARE_NS_KEY=0 \
  SHARE_PUBLISHED=1 SHARE_DROPPED=0
[ "$(stat_of "$tmp/cold.json" SHARE_NS_STAGE_CPU)" -gt 0 ] || bad "cold: no CPU time reported"
# Every ms of the upload call accounted for: its parts lie within it, and the allocation is timed too.
parts=0
for k in SHARE_NS_FILE_KEY SHARE_NS_KEY SHARE_NS_BROKER SHARE_NS_REMAP SHARE_NS_STAGE SHARE_NS_STAGE_READY; do
  parts=$((parts + $(stat_of "$tmp/cold.json" $k)))
done
upload_ns=$(stat_of "$tmp/cold.json" SHARE_NS_UPLOAD)
[ "$upload_ns" -ge "$parts" ] && [ "$parts" -gt 0 ] || bad "cold: SHARE_NS_UPLOAD $upload_ns, its parts $parts"
[ "$(stat_of "$tmp/cold.json" SHARE_NS_ALLOC)" -gt 0 ] || bad "cold: the allocation's time not counted"
# ... and the calling threads' CPU time in them, never more than their time (the staging threads' apart).
cpu_within() { # TAG WALL_COUNTER CPU_COUNTER
  local wall cpu
  wall=$(stat_of "$tmp/$1.json" "$2") cpu=$(stat_of "$tmp/$1.json" "$3")
  [ "$cpu" -gt 0 ] && [ "$cpu" -le "$wall" ] || bad "$1: $3 $cpu against $2 $wall"
}
cpu_within cold SHARE_NS_UPLOAD SHARE_NS_UPLOAD_CPU
cpu_within cold SHARE_NS_ALLOC SHARE_NS_ALLOC_CPU
run warm 24 21 async-order
expect warm SHARE_HITS=1 SHARE_STAGED=0 SHARE_BYTES_MAPPED=$((24 << 20))
cpu_within warm SHARE_NS_UPLOAD SHARE_NS_UPLOAD_CPU
cpu_within warm SHARE_NS_KEY SHARE_NS_KEY_CPU

step "a broker holding extents: hashed first, the miss staged (keyed by what arrived), published; then a hit"
run miss1 24 22
expect miss1 SHARE_MISSES=1 SHARE_STAGED=1 SHARE_PUBLISHED=1 SHARE_DROPPED=0
run miss2 24 22
expect miss2 SHARE_HITS=1 SHARE_STAGED=0

step "SAGE_SHARE_STAGE_STORES=streamed: the miss copied by streamed stores, keyed by what arrived, published"
SAGE_SHARE_STAGE_STORES=streamed SAGE_VERBOSE=3 run streamed 24 41 2> "$tmp/streamed.err"
grep -q "staged 24 MiB in .*; streamed stores" "$tmp/streamed.err" || bad "streamed: not streamed: $(cat "$tmp/streamed.err")"
expect streamed SHARE_MISSES=1 SHARE_STAGED=1 SHARE_PUBLISHED=1 SHARE_DROPPED=0
run streamed2 24 41
expect streamed2 SHARE_HITS=1 SHARE_STAGED=0

step "SAGE_SHARE_STAGING=0: the app's own copy, keyed before it, still published"
SAGE_SHARE_STAGING=0 run nostage 24 23
expect nostage SHARE_MISSES=1 SHARE_STAGED=0 SHARE_PUBLISHED=1

step "a staged copy of bytes the broker holds: mapped over (after a miss, uploads are staged first)"
run known 32 31
"$prog" 32 30 file2 "$tmp/a.bin" "$tmp/b.bin" > /dev/null 2>&1   # writes the files: b.bin holds seed 31's bytes
run spec 32 30 file2 "$tmp/a.bin" "$tmp/b.bin"
expect spec SHARE_MISSES=1 SHARE_HITS=1 SHARE_STAGED=2 SHARE_STAGED_HITS=1 SHARE_BYTES_MAPPED=$((32 << 20))

step "staging made ahead buffer by buffer: the first miss starts with two, the rest are made meanwhile"
# Each cuMemHostAlloc takes 100 ms (page-locking on a GPU host): the warm-up thread makes the
# read-back staging, then the miss path's 8 buffers one by one. The miss comes at once and goes
# once 2 are made: its timeline is printed before the warm-up thread is done (~600 ms later).
native=$("$prog" 24 25)
out=$(SAGE_FAKE_PIN_MS=100 SAGE_WARMUP=eager SAGE_VERBOSE=3 SAGE_TRACE="$tmp/ahead.json" LD_PRELOAD="$preload" \
  "$prog" 24 25 2> "$tmp/ahead.err") || bad "ahead: failed"
[ "$out" = "$native" ] || bad "ahead: output $out vs native $native"
expect ahead SHARE_STAGED=1 SHARE_FALLBACKS=0
staged_at=$(grep -n "staged 24 MiB in" "$tmp/ahead.err" | head -1 | cut -d: -f1)
made_at=$(grep -n "the miss path's staging made ahead (32 MiB pinned, registered)" "$tmp/ahead.err" | head -1 | cut -d: -f1)
[ -n "$staged_at" ] && [ -n "$made_at" ] && [ "$staged_at" -lt "$made_at" ] ||
  bad "ahead: the miss waited for every buffer (staged at line ${staged_at:-none}, made at ${made_at:-none}): $(cat "$tmp/ahead.err")"
# The pages were made beside the warm-up's cuInit: the staging registered those, none of its own.
grep -q "the staging's pages made ahead: 8 buffers used, 0 unmapped" "$tmp/ahead.err" ||
  bad "ahead: the staging did not take the pages made ahead: $(cat "$tmp/ahead.err")"

step "pages made ahead for a process that gets no context (cuInit fails): let go, the app's own error unchanged"
SAGE_FAKE_FAIL_INIT=100 SAGE_WARMUP=eager SAGE_VERBOSE=2 LD_PRELOAD="$preload" "$prog" 24 25 > /dev/null \
  2> "$tmp/noinit.err" && bad "noinit: the app ran without a device"
grep -q "the staging's pages made ahead: 0 buffers used" "$tmp/noinit.err" ||
  bad "noinit: the pages made ahead were kept: $(cat "$tmp/noinit.err")"

step "a hit never waits for the staging the warm-up thread is making (a C function on a warm broker)"
# The same upload again, the broker holding it (published by the run above): hashed, looked up,
# mapped; the staging (200 ms a buffer) is still being made when it comes.
out=$(SAGE_FAKE_PIN_MS=200 SAGE_WARMUP=eager SAGE_TRACE="$tmp/ahead-hit.json" LD_PRELOAD="$preload" \
  "$prog" 24 25 2> /dev/null) || bad "ahead-hit: failed"
[ "$out" = "$native" ] || bad "ahead-hit: output $out vs native $native"
expect ahead-hit SHARE_HITS=1 SHARE_STAGED=0 SHARE_NS_STAGE_READY=0

step "a driver that will not register host memory: the staging is pinned by cuMemAllocHost, the miss staged as before"
# 801 = CUDA_ERROR_NOT_SUPPORTED: asked once, then every buffer by cuMemAllocHost.
out=$(SAGE_FAKE_REGISTER_REFUSE=801 SAGE_WARMUP=eager SAGE_VERBOSE=2 SAGE_TRACE="$tmp/refused.json" \
  LD_PRELOAD="$preload" "$prog" 24 26 2> "$tmp/refused.err") || bad "refused: failed"
[ "$out" = "$("$prog" 24 26)" ] || bad "refused: output $out differs from native"
expect refused SHARE_STAGED=1 SHARE_FALLBACKS=0
[ "$(grep -c "the driver refused to register staging (801)" "$tmp/refused.err")" = 1 ] &&
  grep -q "staging made ahead (32 MiB pinned, by cuMemAllocHost)" "$tmp/refused.err" ||
  bad "refused: not asked once, then pinned by cuMemAllocHost: $(cat "$tmp/refused.err")"

step "an app thread captures (global mode) beside another's uploads and launches: the capture holds"
# The driver refuses cuCtxSynchronize while any stream captures, in every mode, and pinning or a
# stream wait from a thread in the global mode while another captures in it; either invalidates the
# capture (scripts/probes/capture; graphs+share on the H100). share-test capture-beside says how.
# first: an upload over memset bytes while the capture is open: a plain copy (no synchronize); the
# same bytes uploaded after the capture (every mode does): shared again, a miss staged.
SAGE_WARMUP=off run beside 24 27 capture-beside 0 first
expect beside SHARE_MISSES=1 SHARE_STAGED=1 SHARE_FALLBACKS=0
# late: the upload began first and pins its staging (100 ms a buffer) when the capture opens: relaxed.
SAGE_FAKE_PIN_MS=100 SAGE_WARMUP=off run beside-late 24 29 capture-beside 0 late
expect beside-late SHARE_MISSES=2 SHARE_STAGED=2 SHARE_FALLBACKS=0
# assemble: a kernel on the other thread while the capture is open: assembly (it synchronizes) not done.
SAGE_WARMUP=off run beside-assemble 12 27 capture-beside 0 assemble
expect beside-assemble SHARE_MISSES=3 SHARE_ASSEMBLED=0
# The warm-up thread pins the staging and assembly's read-back staging while the capture stays open 1.2 s.
SAGE_FAKE_PIN_MS=100 SAGE_WARMUP=eager run beside-ahead 24 28 capture-beside 1200 first
expect beside-ahead SHARE_MISSES=1 SHARE_STAGED=1 SHARE_FALLBACKS=0

step "SAGE_VERBOSE=3: a staged copy's timeline on stderr (where its time went), the output unchanged"
native=$("$prog" 24 24)
out=$(SAGE_VERBOSE=3 LD_PRELOAD="$preload" "$prog" 24 24 2> "$tmp/verbose.err") || bad "verbose: failed"
[ "$out" = "$native" ] || bad "verbose: output $out vs native $native"
grep -Eq "staged 24 MiB in [0-9.]+ ms .* threads, 6 rounds, [0-9]+ copies; first DMA at .* caller waited .* for DMA" \
  "$tmp/verbose.err" || bad "verbose: no timeline line: $(cat "$tmp/verbose.err")"
grep -q "; cached stores" "$tmp/verbose.err" || bad "verbose: the default stores not cached: $(cat "$tmp/verbose.err")"

exit "$fail"

#!/usr/bin/env bash
# Sharing-based memory against the simulated driver and the real broker:
# a first function publishes its weights, a second maps them instead of
# copying; outputs never change; no broker / another content: plain path.
#   share_checks.sh SHARE_TEST SAGED SAGECTL PYTHON3 SAGE_TRACE
set -euo pipefail
prog=$1 saged=$2 sagectl=$3 python=$4 sage_trace=$5
. "$(dirname "$0")/lib.sh"
export SAGE_SOCKET=$tmp/saged.sock SAGE_SHARE=1
start_saged
trap 'stop_saged; chattr -i "$tmp/imm.bin" 2>/dev/null; rm -rf "$tmp"' EXIT

# twice TAG WHAT ARGS...: ARGS natively (output in twice_native), then twice
# under sharing (traces $tmp/TAG1.json, $tmp/TAG2.json), each time with
# native's output.
twice() {
  local tag=$1 what=$2 out i
  shift 2
  twice_native=$("$prog" "$@")
  for i in 1 2; do
    out=$(SAGE_TRACE="$tmp/$tag$i.json" LD_PRELOAD="$preload" "$prog" "$@") || bad "$what run $i (a fault?)"
    [ "$out" = "$twice_native" ] || bad "$what run $i output: $out vs $twice_native"
  done
}

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
"$sage_trace" summary "$tmp/2.json" | grep -q "^sharing (SAGE_SHARE=1): 1 hits, 0 misses; 96.0 MiB mapped, 0.0 MiB copied (100.0% shared)" ||
  bad "sage-trace summary does not report the hit"
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

step "a framework pool: three tensors in one allocation (sync, async, unified copies)"
twice p pieces 96 9 pieces
[ "$(stat_of "$tmp/p1.json" SHARE_MISSES)" = 3 ] || bad "pieces: not three misses"
[ "$(stat_of "$tmp/p1.json" SHARE_ASSEMBLED)" = 2 ] || bad "pieces: the two granules two uploads share were not assembled"
[ "$(stat_of "$tmp/p1.json" SHARE_PUBLISHED)" = 5 ] || bad "pieces: not 3 + 2 assembled extents published"
[ "$(stat_of "$tmp/p2.json" SHARE_HITS)" = 3 ] || bad "pieces: not three hits"
mapped=$(stat_of "$tmp/p2.json" SHARE_BYTES_MAPPED); copied=$(stat_of "$tmp/p2.json" SHARE_BYTES_COPIED)
[ $((mapped + copied)) = $((96 << 20)) ] || bad "pieces: mapped $mapped + copied $copied != uploaded"
[ "$copied" -lt $((6 << 20)) ] || bad "pieces: copied $copied bytes (only the partial granules should be)"
[ "$(stat_of "$tmp/p2.json" SHARE_ASSEMBLED_HITS)" = 2 ] || bad "pieces: the assembled granules were not mapped"
[ "$(stat_of "$tmp/p2.json" SHARE_BYTES_ASSEMBLED)" = "$copied" ] || bad "pieces: not every copied byte ended up shared"
for i in 1 2; do  # the tensors follow each other: no split through bytes to keep (no device-to-device copy)
  [ "$(stat_of "$tmp/p$i.json" SHARE_KEEP_COPIES)" = 0 ] || bad "pieces run $i: $(stat_of "$tmp/p$i.json" SHARE_KEEP_COPIES) pieces copied to re-back them"
done

step "deferred backing: each way into memory no upload reached finds it mapped; a hit with unaligned ends"
twice d deferred 16 12 deferred
[ "$(stat_of "$tmp/d2.json" SHARE_DEFERRED)" = 5 ] || bad "deferred: $(stat_of "$tmp/d2.json" SHARE_DEFERRED) of 5 allocations deferred"
[ "$(stat_of "$tmp/d2.json" SHARE_HITS)" = 1 ] || bad "deferred: the weights did not hit"
SAGE_SHARE_DEFER=0 SAGE_TRACE="$tmp/d0.json" LD_PRELOAD="$preload" "$prog" 16 12 deferred >"$tmp/d0.out" || bad "SAGE_SHARE_DEFER=0 (a fault?)"
[ "$(cat "$tmp/d0.out")" = "$twice_native" ] && [ "$(stat_of "$tmp/d0.json" SHARE_DEFERRED)" = 0 ] || bad "SAGE_SHARE_DEFER=0: deferred"

step "deferred backing: a pointer query, a stream write, a batch of memory operations each find memory mapped"
LD_PRELOAD="$preload" "$prog" 16 13 >/dev/null || bad "reach: publishing the weights"  # then written where mapped
twice r reach 16 13 reach
for i in 1 2; do
  [ "$(stat_of "$tmp/r$i.json" SHARE_DEFERRED)" -ge 5 ] || bad "reach run $i: $(stat_of "$tmp/r$i.json" SHARE_DEFERRED) allocations deferred"
  [ "$(stat_of "$tmp/r$i.json" SHARE_HITS)" = 2 ] || bad "reach run $i: the weights did not hit twice (the writes then found them shared)"
done
grep -q "^query 1 attributes 1 2$" <<<"$twice_native" || bad "reach natively: $twice_native"

step "the warm-up thread makes assembly's read-back and the miss path's pinned staging ahead (the exit waits for it)"
SAGE_WARMUP=eager SAGE_VERBOSE=2 LD_PRELOAD="$preload" "$prog" 2 11 idle >/dev/null 2>"$tmp/ahead.err" || bad "idle run"
grep -q "read-back staging made ahead (pinned)" "$tmp/ahead.err" || bad "no staging made ahead: $(cat "$tmp/ahead.err")"
grep -q "the miss path's staging made ahead (16 MiB pinned, registered)" "$tmp/ahead.err" || bad "no miss staging made ahead: $(cat "$tmp/ahead.err")"
SAGE_SHARE=0 SAGE_WARMUP=eager SAGE_VERBOSE=2 LD_PRELOAD="$preload" "$prog" 2 11 idle >/dev/null 2>"$tmp/ahead0.err" || bad "idle run, sharing off"
! grep -q "made ahead" "$tmp/ahead0.err" || bad "staging made ahead with sharing off"

step "small tensors packed in a pool segment: assembled at the first launch, keyed by content, shared"
twice s packed 2 11 packed
native_s=$twice_native
[ "$(stat_of "$tmp/s1.json" SHARE_ALLOCS)" = 1 ] || bad "packed: a 2 MiB segment not VMM-backed"
[ "$(stat_of "$tmp/s1.json" SHARE_ASSEMBLED)" = 1 ] || bad "packed: not assembled"
[ "$(stat_of "$tmp/s1.json" SHARE_PUBLISHED)" = 1 ] || bad "packed: not published"
[ "$(stat_of "$tmp/s2.json" SHARE_ASSEMBLED_HITS)" = 1 ] || bad "packed: second run did not map the segment"
tensor_bytes=$(sed -n 's/^packed [0-9]* tensors, \([0-9]*\) bytes.*/\1/p' <<<"$native_s")
[ "$(stat_of "$tmp/s2.json" SHARE_BYTES_COPIED)" = "$tensor_bytes" ] || bad "packed: copied bytes are not the tensors' bytes"
[ "$(stat_of "$tmp/s2.json" SHARE_BYTES_ASSEMBLED)" = "$tensor_bytes" ] || bad "packed: not every tensor byte ended up shared"
[ "$(stat_of "$tmp/s2.json" SHARE_GUARD_UNSHARED)" = 0 ] || bad "packed: the reading kernels were not allowed"
[ "$(stat_of "$tmp/s1.json" SHARE_DROPPED)" = 0 ] || bad "packed: a candidate counted as dropped"

step "a kernel writing the free rest of such a segment, leaving its bytes as they were: never published, no fault"
twice g gapwrite 2 12 packed-gapwrite
[ "$(stat_of "$tmp/g1.json" SHARE_ASSEMBLED)" = 1 ] || bad "gapwrite: not assembled"
[ "$(stat_of "$tmp/g1.json" SHARE_PUBLISHED)" = 0 ] || bad "gapwrite: a segment whose free part a kernel wrote was published"
[ "$(stat_of "$tmp/g1.json" SHARE_DROPPED)" = 1 ] || bad "gapwrite: the dropped run not counted"
gap_bytes=$(sed -n 's/^packed [0-9]* tensors, \([0-9]*\) bytes.*/\1/p' <<<"$("$prog" 2 12 packed-gapwrite)")
[ -n "$gap_bytes" ] && [ "$(stat_of "$tmp/g1.json" SHARE_BYTES_DROPPED)" = "$gap_bytes" ] ||
  bad "gapwrite: dropped bytes $(stat_of "$tmp/g1.json" SHARE_BYTES_DROPPED) are not the tensors' $gap_bytes"
SAGE_VERBOSE=3 LD_PRELOAD="$preload" "$prog" 2 16 packed-gapwrite > /dev/null 2> "$tmp/g-verbose.err" || bad "gapwrite verbose run"
grep -q "not published: kernel parameter [0-9]* points between its uploads" "$tmp/g-verbose.err" ||
  bad "gapwrite: SAGE_VERBOSE=3 does not say why the run was not published: $(grep share: "$tmp/g-verbose.err" | head -3)"
[ "$(stat_of "$tmp/g2.json" SHARE_ASSEMBLED_HITS)" = 0 ] || bad "gapwrite: mapped a segment a kernel writes"
out=$(SAGE_TRACE="$tmp/g3.json" LD_PRELOAD="$preload" "$prog" 2 11 packed-gapwrite) || bad "gapwrite over a shared segment (a fault?)"
[ "$out" = "$("$prog" 2 11 packed-gapwrite)" ] || bad "gapwrite over a shared segment: output differs from native"
[ "$(stat_of "$tmp/g3.json" SHARE_ASSEMBLED_HITS)" = 1 ] || bad "gapwrite over a shared segment: not mapped first"
[ "$(stat_of "$tmp/g3.json" SHARE_GUARD_UNSHARED)" = 1 ] || bad "gapwrite over a shared segment: not made private before the launch"
out=$(LD_PRELOAD="$preload" "$prog" 2 11 packed) || bad "packed after a gap writer"
[ "$out" = "$native_s" ] || bad "after a gap writer the shared segment changed: $out vs $native_s"

step "a buffer reaching into the tensors' first granule from before: that granule never shared, no fault"
twice r reach 6 14 packed-reach
[ "$(stat_of "$tmp/r2.json" SHARE_ASSEMBLED_HITS)" -ge 1 ] || bad "reach: the granules after the first not shared"

step "the first launch after an upload captured into a graph: assembly waits, the capture holds"
twice c capture 8 15 capture
[ "$(stat_of "$tmp/c2.json" SHARE_HITS)" = 1 ] || bad "capture: the upload's whole granules not served by the broker"
step "an upload captured into a graph (tests/gpu/graphs.cu's order): recorded, a plain copy, the capture holds"
twice cc capture-copy 24 16 capture-copy
[ "$(stat_of "$tmp/cc2.json" SHARE_HITS)" = 0 ] || bad "capture-copy: a captured upload was served by the broker"

step "a larger segment: granules the tensors fill are shared even when a kernel writes the free granule"
twice l "large gapwrite" 4 13 packed-gapwrite
[ "$(stat_of "$tmp/l1.json" SHARE_ASSEMBLED)" = 2 ] || bad "large gapwrite: the full granule and the one with room not two runs"
[ "$(stat_of "$tmp/l1.json" SHARE_PUBLISHED)" = 1 ] || bad "large gapwrite: not only the full granule published"
[ "$(stat_of "$tmp/l1.json" SHARE_DROPPED)" = 1 ] || bad "large gapwrite: the granule with room not counted as dropped"
l_bytes=$(sed -n 's/^packed [0-9]* tensors, \([0-9]*\) bytes.*/\1/p' <<<"$("$prog" 4 13 packed-gapwrite)")
[ $(( $(stat_of "$tmp/l1.json" SHARE_BYTES_DROPPED) + $(stat_of "$tmp/l2.json" SHARE_BYTES_ASSEMBLED) )) = "$l_bytes" ] ||
  bad "large gapwrite: dropped $(stat_of "$tmp/l1.json" SHARE_BYTES_DROPPED) + shared $(stat_of "$tmp/l2.json" SHARE_BYTES_ASSEMBLED) bytes are not the tensors' $l_bytes"
[ "$(stat_of "$tmp/l2.json" SHARE_ASSEMBLED_HITS)" = 1 ] || bad "large gapwrite: the full granule not mapped"
[ "$(stat_of "$tmp/l2.json" SHARE_GUARD_UNSHARED)" = 0 ] || bad "large gapwrite: the mapped granule was made private"

step "weights from an mmap()ed file that may change: keyed by content, re-keyed when the file changes"
native_f=$("$prog" 64 4 file "$tmp/w.bin")
out=$(SAGE_TRACE="$tmp/f1.json" LD_PRELOAD="$preload" "$prog" 64 4 file "$tmp/w.bin") || bad "file first run"
[ "$out" = "$native_f" ] || bad "file first output"
[ "$(stat_of "$tmp/f1.json" SHARE_FILE_KEYS)" = 0 ] || bad "file: a file that may change keyed by its identity"
[ "$(stat_of "$tmp/f1.json" SHARE_FILE_MUTABLE)" = 1 ] || bad "file: the mapping not seen as a file that may change"
out=$(SAGE_TRACE="$tmp/f2.json" LD_PRELOAD="$preload" "$prog" 64 4 file "$tmp/w.bin") || bad "file second run"
[ "$out" = "$native_f" ] || bad "file second output"
[ "$(stat_of "$tmp/f2.json" SHARE_HITS)" = 1 ] || bad "file: second run not a hit"
rm -f "$tmp/w.bin"
native_f5=$("$prog" 64 5 file "$tmp/w.bin")
out=$(SAGE_TRACE="$tmp/f3.json" LD_PRELOAD="$preload" "$prog" 64 5 file "$tmp/w.bin") || bad "file third run"
[ "$out" = "$native_f5" ] || bad "file: a rewritten file gave the old content: $out vs $native_f5"
[ "$(stat_of "$tmp/f3.json" SHARE_HITS)" = 0 ] || bad "file: a rewritten file hit"

step "a weight file rewritten in place through a live MAP_SHARED mapping (size and times kept): never the old bytes"
# A trainer (numpy.memmap) holds a shared writable mapping whose pages are
# already dirty; writing them again faults nothing, so neither size nor
# mtime/ctime move (tmpfs never moves them for mapped writes). Before, the
# second run mapped the first run's extent by file identity: the old weights.
"$prog" 64 30 file "$tmp/m.bin" >"$tmp/m-old.native"
"$prog" 64 31 file "$tmp/m-new.bin" >"$tmp/m-new.native"
coproc WRITER { "$python" -c '
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
m = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[:] = m[:]  # earlier writes of the trainer: every page dirty, the times moved now
before = os.fstat(fd)
print("ready", flush=True)
sys.stdin.readline()
m[:] = open(sys.argv[2], "rb").read()  # already dirty pages: no fault, no time update
after = os.fstat(fd)
same = [(s.st_size, s.st_mtime_ns, s.st_ctime_ns) for s in (before, after)]
print("rewritten", "times-kept" if same[0] == same[1] else "times-moved", flush=True)
sys.stdin.readline()
' "$tmp/m.bin" "$tmp/m-new.bin"; }
read -r line <&"${WRITER[0]}"
out=$(SAGE_TRACE="$tmp/m1.json" LD_PRELOAD="$preload" "$prog" 64 30 file "$tmp/m.bin") || bad "in-place: first run"
[ "$out" = "$(cat "$tmp/m-old.native")" ] || bad "in-place: first run output"
[ "$(stat_of "$tmp/m1.json" SHARE_PUBLISHED)" = 1 ] || bad "in-place: the first run did not publish"
echo go >&"${WRITER[1]}"
read -r line times <&"${WRITER[0]}"
echo "in-place rewrite through the mapping: $times"
cmp -s "$tmp/m.bin" "$tmp/m-new.bin" || bad "in-place: the rewrite did not reach the file"
out=$(SAGE_TRACE="$tmp/m2.json" LD_PRELOAD="$preload" "$prog" 64 30 file "$tmp/m.bin") || bad "in-place: second run"
[ "$out" = "$(cat "$tmp/m-new.native")" ] || bad "in-place: the second run got the old weights ($times): $out"
[ "$(stat_of "$tmp/m2.json" SHARE_HITS)" = 0 ] || bad "in-place: the rewritten file hit"
out=$(SAGE_TRACE="$tmp/m3.json" LD_PRELOAD="$preload" "$prog" 64 30 file "$tmp/m.bin") || bad "in-place: third run"
[ "$out" = "$(cat "$tmp/m-new.native")" ] || bad "in-place: third run output"
[ "$(stat_of "$tmp/m3.json" SHARE_HITS)" = 1 ] || bad "in-place: the new content, published, not shared"
exec {WRITER[1]}>&-
wait "$WRITER_PID" || bad "in-place: the writer failed"

step "an immutable weight file (chattr +i): keyed by file identity, no hash pass"
"$prog" 64 32 file "$tmp/imm.bin" >"$tmp/imm.native"
if chattr +i "$tmp/imm.bin" 2>/dev/null; then
  for i in 1 2; do
    out=$(SAGE_TRACE="$tmp/i$i.json" LD_PRELOAD="$preload" "$prog" 64 32 file "$tmp/imm.bin") || bad "immutable run $i"
    [ "$out" = "$(cat "$tmp/imm.native")" ] || bad "immutable run $i output"
    [ "$(stat_of "$tmp/i$i.json" SHARE_FILE_KEYS)" = 1 ] || bad "immutable run $i: not keyed by file identity"
  done
  [ "$(stat_of "$tmp/i2.json" SHARE_HITS)" = 1 ] || bad "immutable: second run not a hit"
  chattr -i "$tmp/imm.bin"
else
  echo "chattr +i not possible here (filesystem or capability): the unit test file_immutable covers the decision"
fi

step "a file unmapped and another mapped at its address: each keyed by its own file"
native_2=$("$prog" 64 21 file2 "$tmp/x1.bin" "$tmp/x2.bin")
for i in 1 2; do
  out=$(SAGE_TRACE="$tmp/x$i.json" LD_PRELOAD="$preload" "$prog" 64 21 file2 "$tmp/x1.bin" "$tmp/x2.bin") || bad "file2 run $i"
  [ "$out" = "$native_2" ] || bad "file2 run $i output: $out vs $native_2"
  [ "$(stat_of "$tmp/x$i.json" SHARE_FILE_MUTABLE)" = 2 ] || bad "file2 run $i: not two file mappings keyed by content"
done
[ "$(stat_of "$tmp/x2.json" SHARE_HITS)" = 2 ] || bad "file2: second run not two hits"

step "a write through the API into shared weights: private copy first; others keep reading the original"
native_w=$("$prog" 96 7 write)
out=$(SAGE_TRACE="$tmp/w1.json" LD_PRELOAD="$preload" "$prog" 96 7 write) || bad "write run"
[ "$out" = "$native_w" ] || bad "write output: $out vs $native_w"
[ "$(stat_of "$tmp/w1.json" SHARE_HITS)" = 1 ] || bad "write: the upload was not a hit"
[ "$(stat_of "$tmp/w1.json" SHARE_UNSHARED)" -ge 1 ] || bad "write: the shared piece was not made private"
out=$(SAGE_TRACE="$tmp/w2.json" LD_PRELOAD="$preload" "$prog" 96 7) || bad "after-write run"
[ "$out" = "$native" ] || bad "after a write by another client the extent changed: $out vs $native"
[ "$(stat_of "$tmp/w2.json" SHARE_HITS)" = 1 ] || bad "after-write: not a hit"

for m in write2d set2d write3d; do
  step "$m: a pitched API write into shared weights: private copy first, same output as native; others keep the original"
  native_m=$("$prog" 96 7 $m)
  out=$(SAGE_TRACE="$tmp/$m.json" LD_PRELOAD="$preload" "$prog" 96 7 $m) || bad "$m run (the write failed?)"
  [ "$out" = "$native_m" ] || bad "$m output: $out vs $native_m"
  [ "$(stat_of "$tmp/$m.json" SHARE_HITS)" = 1 ] || bad "$m: the upload was not a hit"
  [ "$(stat_of "$tmp/$m.json" SHARE_UNSHARED)" -ge 1 ] || bad "$m: the shared piece was not made private"
  out=$(LD_PRELOAD="$preload" "$prog" 96 7) || bad "after-$m run"
  [ "$out" = "$native" ] || bad "after a $m writer the extent changed: $out vs $native"
done

step "a kernel that writes shared weights: its use was never seen by the publisher, so a private copy first"
[ "$(stat_of "$tmp/2.json" SHARE_GUARD_UNSHARED)" = 0 ] || bad "the publisher's own reading kernel was not allowed"
native_k=$("$prog" 96 7 kernel-write)
out=$(SAGE_TRACE="$tmp/k1.json" LD_PRELOAD="$preload" "$prog" 96 7 kernel-write) || bad "kernel-write run (a fault?)"
[ "$out" = "$native_k" ] || bad "kernel-write output: $out vs $native_k"
[ "$(stat_of "$tmp/k1.json" SHARE_HITS)" = 1 ] || bad "kernel-write: the upload was not a hit"
[ "$(stat_of "$tmp/k1.json" SHARE_GUARD_UNSHARED)" = 1 ] || bad "kernel-write: not made private before the launch"
out=$(LD_PRELOAD="$preload" "$prog" 96 7) || bad "after-kernel-write run"
[ "$out" = "$native" ] || bad "after a kernel writer the extent changed: $out vs $native"

step "the same writer through cuLaunchKernelEx_ptsz: guarded too"
out=$(SAGE_TRACE="$tmp/kx.json" LD_PRELOAD="$preload" "$prog" 96 7 kernel-write-ex) || bad "kernel-write-ex run (a fault?)"
[ "$out" = "$native_k" ] || bad "kernel-write-ex output: $out vs $native_k"
[ "$(stat_of "$tmp/kx.json" SHARE_GUARD_UNSHARED)" = 1 ] || bad "kernel-write-ex: not made private before the launch"

step "the writer captured into a graph: the capture holds, the piece is private before the graph runs"
# Making a piece private synchronizes the context, which the driver refuses while a capture is open and
# which breaks that capture: a captured launch's piece is made private after the capture (share_guard.h),
# when the last capture ends; so too a hit mapped over it before the graph runs (-reupload), and the graph
# may run while another stream captures (-beside).
for m in kernel-write-captured unknown-layout-captured kernel-write-captured-reupload kernel-write-captured-beside; do
  native_c=$("$prog" 96 7 $m)
  [ "$native_c" = "$native_k" ] || bad "$m: native output $native_c, not kernel-write's $native_k"
  out=$(SAGE_TRACE="$tmp/$m.json" LD_PRELOAD="$preload" "$prog" 96 7 $m) || bad "$m run (the capture broke?)"
  [ "$out" = "$native_c" ] || bad "$m output: $out vs $native_c"
  # -reupload: the second upload hits too, and is made private before the graph runs (its writer was captured)
  want=1; [ "$m" = kernel-write-captured-reupload ] && want=2
  [ "$(stat_of "$tmp/$m.json" SHARE_HITS)" = "$want" ] || bad "$m: not $want hits"
  [ "$(stat_of "$tmp/$m.json" SHARE_GUARD_UNSHARED)" = "$want" ] || bad "$m: not made private before the graph ran"
  out=$(LD_PRELOAD="$preload" "$prog" 96 7) || bad "after-$m run"
  [ "$out" = "$native" ] || bad "after a captured writer the extent changed: $out vs $native"
done

step "a reader the publisher never ran, beside another stream's capture: the capture holds, private after it"
# Before: the guard made the piece private at once; its context synchronize broke the other capture.
native_r=$("$prog" 96 7 read-beside-capture)
out=$(SAGE_TRACE="$tmp/rb.json" LD_PRELOAD="$preload" "$prog" 96 7 read-beside-capture) || bad "read-beside-capture run (the capture broke?)"
[ "$out" = "$native_r" ] || bad "read-beside-capture output: $out vs $native_r"
[ "$(stat_of "$tmp/rb.json" SHARE_HITS)" = 1 ] || bad "read-beside-capture: the upload was not a hit"
[ "$(stat_of "$tmp/rb.json" SHARE_GUARD_UNSHARED)" = 1 ] || bad "read-beside-capture: not made private after the capture"

step "weights a kernel changed after their upload: never published under the upload's key"
out=$(SAGE_TRACE="$tmp/kc1.json" LD_PRELOAD="$preload" "$prog" 96 21 kernel-write) || bad "kernel-changed run"
[ "$out" = "$("$prog" 96 21 kernel-write)" ] || bad "kernel-changed output: $out"
[ "$(stat_of "$tmp/kc1.json" SHARE_PUBLISHED)" = 0 ] || bad "kernel-changed: changed content was published"
out=$(SAGE_TRACE="$tmp/kc2.json" LD_PRELOAD="$preload" "$prog" 96 21) || bad "after-kernel-changed run"
[ "$out" = "$("$prog" 96 21)" ] || bad "after a publisher's kernel changed its weights, a hit served them: $out"

step "a kernel whose parameter layout the driver cannot tell writes shared weights: every shared piece private first"
native_u=$("$prog" 96 7 unknown-layout)
out=$(SAGE_TRACE="$tmp/u1.json" LD_PRELOAD="$preload" "$prog" 96 7 unknown-layout) || bad "unknown-layout run (a fault?)"
[ "$out" = "$native_u" ] || bad "unknown-layout output: $out vs $native_u"
[ "$(stat_of "$tmp/u1.json" SHARE_HITS)" = 1 ] || bad "unknown-layout: the upload was not a hit"
[ "$(stat_of "$tmp/u1.json" SHARE_GUARD_UNKNOWN)" -ge 1 ] || bad "unknown-layout: the layout was not unknown to SAGE"
out=$(LD_PRELOAD="$preload" "$prog" 96 7) || bad "after-unknown-layout run"
[ "$out" = "$native" ] || bad "after an unknown-layout writer the extent changed: $out vs $native"

step "a write no kernel parameter shows (pointer in device memory): faults in the writer only, the extent stays"
out=$(SAGE_TRACE="$tmp/h1.json" LD_PRELOAD="$preload" "$prog" 96 7 hidden-write) || bad "hidden-write run"
[ "$(stat_of "$tmp/h1.json" SHARE_HITS)" = 1 ] || bad "hidden-write: the upload was not a hit"
# The extent is mapped read-only: the GPU faults (sticky, this process only).
grep -q "hidden write faulted: 700" <<<"$out" || bad "hidden-write: the write into shared memory did not fault: $out"
out=$(LD_PRELOAD="$preload" "$prog" 96 7) || bad "after-hidden-write run"
[ "$out" = "$native" ] || bad "after a hidden writer the extent changed: $out vs $native"

step "an upload while work on the allocation is still queued: the backing is replaced only after it ran"
twice q "inflight" 96 13 inflight
[ "$(stat_of "$tmp/q2.json" SHARE_HITS)" = 1 ] || bad "inflight: the second upload was not a hit"

step "hits costlier than their copy (a slow driver): copied instead, counted, same output"
# 8 tensors of ~4 MiB published, then mapped by a driver whose cuMemMap
# takes 60 ms: the first two hits teach the process what a hit costs (~120 ms
# against ~1 ms for the copy of 4 MiB it learned from the bias), the other
# six are copied, and nothing is assembled (not even the granule the first
# two share: assembly would only add cost). Without SAGE_SHARE_COPY_CHEAPER=1
# (memory first, the default) all eight are mapped.
native_t=$("$prog" 32 31 tensors)
for run in 1 2 3; do
  case $run in
    1) env=() ;;
    2) env=(SAGE_FAKE_MAP_MS=60 SAGE_SHARE_COPY_CHEAPER=1) ;;
    3) env=(SAGE_FAKE_MAP_MS=60) ;;
  esac
  out=$(env "${env[@]}" SAGE_TRACE="$tmp/c$run.json" LD_PRELOAD="$preload" "$prog" 32 31 tensors) || bad "tensors run $run"
  [ "$out" = "$native_t" ] || bad "tensors run $run output: $out vs $native_t"
done
[ "$(stat_of "$tmp/c1.json" SHARE_MISSES)" = 8 ] || bad "tensors: not 8 misses at first"
[ "$(stat_of "$tmp/c2.json" SHARE_HITS)/$(stat_of "$tmp/c2.json" SHARE_COPY_CHEAPER)" = 2/6 ] ||
  bad "slow hits: $(stat_of "$tmp/c2.json" SHARE_HITS) hits, $(stat_of "$tmp/c2.json" SHARE_COPY_CHEAPER) copied (want 2, 6)"
[ "$(stat_of "$tmp/c2.json" SHARE_ASSEMBLED)" = 0 ] || bad "slow hits: the copied tensors were assembled"
# Copying from then on: the first copy backs all that is left of the allocation at once (the pieces around the two
# hits, at most 3), not each copy its own granules (8 pieces backed).
[ "$(stat_of "$tmp/c2.json" SHARE_BACKED_LATER)" -le 3 ] ||
  bad "slow hits: $(stat_of "$tmp/c2.json" SHARE_BACKED_LATER) pieces backed one copy at a time"
[ "$(stat_of "$tmp/c3.json" SHARE_HITS)/$(stat_of "$tmp/c3.json" SHARE_COPY_CHEAPER)" = 8/0 ] ||
  bad "by default (memory first) not every tensor was mapped"

step "CUDA IPC on a VMM-backed allocation: emulated through the broker"
native_i=$("$prog" 96 7 ipc-export)
out=$(SAGE_TRACE="$tmp/i1.json" LD_PRELOAD="$preload" "$prog" 96 7 ipc-export) || bad "ipc run"
[ "$out" = "$native_i" ] || bad "ipc output: $out vs $native_i"
[ "$(stat_of "$tmp/i1.json" SHARE_IPC_EXPORTS)" = 1 ] || bad "ipc: not emulated"
grep -q "parent sees 5a5a5a5a5a5a5a5a" <<<"$out" || bad "ipc: the child's write did not reach the parent"
out=$(SAGE_TRACE="$tmp/i2.json" LD_PRELOAD="$preload" "$prog" 96 7) || bad "after-ipc run"
[ "$out" = "$native" ] || bad "after an IPC writer the extent changed: $out vs $native"

step "broker killed with SIGKILL and restarted: misses, same output"
kill -9 "$saged_pid"; wait "$saged_pid" 2>/dev/null || true
out=$(LD_PRELOAD="$preload" "$prog" 96 7) || bad "no-broker run after SIGKILL"
[ "$out" = "$native" ] || bad "output without the broker"
rm -f "$SAGE_SOCKET"
start_saged
out=$(SAGE_TRACE="$tmp/r1.json" LD_PRELOAD="$preload" "$prog" 96 7) || bad "restarted-broker run"
[ "$out" = "$native" ] || bad "restarted broker output"
[ "$(stat_of "$tmp/r1.json" SHARE_MISSES)" = 1 ] || bad "restarted broker: not a miss"

step "budget exhausted: the plain path, same output"
stop_saged
start_saged "$SAGE_SOCKET" --budget 8M
for i in 1 2; do
  out=$(SAGE_TRACE="$tmp/b$i.json" LD_PRELOAD="$preload" "$prog" 96 7) || bad "budget run $i"
  [ "$out" = "$native" ] || bad "budget run $i output"
done
[ "$(stat_of "$tmp/b2.json" SHARE_HITS)" = 0 ] || bad "budget: an extent over budget was served"

step "small allocations and no broker: the plain path"
out=$(SAGE_SHARE_MIN=1G SAGE_TRACE="$tmp/4.json" LD_PRELOAD="$preload" "$prog" 96 7) || bad "small run"
[ "$(stat_of "$tmp/4.json" SHARE_ALLOCS)" = 0 ] || bad "below SAGE_SHARE_MIN yet VMM-backed"
stop_saged
out=$(SAGE_TRACE="$tmp/5.json" LD_PRELOAD="$preload" "$prog" 96 7) || bad "no-broker run"
[ "$out" = "$native" ] || bad "no-broker output"
[ "$(stat_of "$tmp/5.json" SHARE_ALLOCS)" = 0 ] || bad "VMM-backed without a broker"

step "an impostor broker (another uid on the socket path): refused, the plain path, same output"
if [ "$(id -u)" = 0 ]; then
  chmod 0711 "$tmp"
  mkdir -m 0700 "$tmp/impostor" && chown 65534:65534 "$tmp/impostor"
  setpriv --reuid=65534 --regid=65534 --clear-groups "$saged" --socket "$tmp/impostor/s.sock" --foreground \
    2>>"$tmp/saged.log" &
  impostor_pid=$!
  for _ in $(seq 50); do [ -S "$tmp/impostor/s.sock" ] && break; sleep 0.1; done
  [ -S "$tmp/impostor/s.sock" ] || bad "the impostor broker did not start"
  out=$(SAGE_SOCKET="$tmp/impostor/s.sock" SAGE_VERBOSE=1 SAGE_TRACE="$tmp/6.json" LD_PRELOAD="$preload" \
    "$prog" 96 7 2>"$tmp/6.err") || bad "impostor run"
  [ "$out" = "$native" ] || bad "impostor output: $out vs $native"
  [ "$(stat_of "$tmp/6.json" SHARE_ALLOCS)" = 0 ] || bad "sharing went on with an impostor broker"
  grep -q "runs as uid 65534.*impostor.*sharing off" "$tmp/6.err" || bad "no warning about the impostor: $(cat "$tmp/6.err")"
  kill "$impostor_pid"; wait "$impostor_pid" 2>/dev/null || true
else
  echo "(skipped: needs root to run a broker as another uid)"
fi

[ "$fail" -eq 0 ] && echo "share_checks: all passed"
exit "$fail"

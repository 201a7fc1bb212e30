#!/usr/bin/env bash
# Sharing for the allocators beyond cuMemAlloc (docs/sharing.md,
# "Allocators"), against the simulated driver and the real broker: XLA's
# preallocated BFC region, stream-ordered allocations (default pool: shared;
# an app's own pool: the driver's), pitched allocations with 2D uploads, and
# app-managed VMM (XLA's one big handle, PyTorch's expandable segments, a
# handle unmapped, re-granted, mapped twice, exported). Each: the native output, a first run that
# publishes, a second that maps, a kernel that writes mapped weights (the
# launch guard), and no broker at all.
#   alloc_checks.sh ALLOC_TEST SAGED SAGECTL PYTHON3
set -euo pipefail
prog=$1 saged=$2 sagectl=$3 python=$4
. "$(dirname "$0")/lib.sh"
export SAGE_SOCKET=$tmp/saged.sock SAGE_SHARE=1
# An 8 GiB simulated GPU: XLA's region is 6 GiB of it, so a region backed by
# one physical allocation could not be split (the split would need 12).
export SAGE_FAKE_MEM=8G
start_saged

# run TAG ARGS... (lib.sh): under sharing, traced to $tmp/TAG.json; the output must be native's.
# shared MODE SEED [MIB]: published by a first run, mapped by a second, guarded against a writing kernel.
shared() {
  local mode=$1 seed=$2 mib=${3:-16}
  run "$mode.1" "$mib" "$seed" "$mode"
  [ "$(stat_of "$tmp/$mode.1.json" SHARE_ALLOCS)" -ge 1 ] || [ "$(stat_of "$tmp/$mode.1.json" SHARE_APP_VMM)" -ge 1 ] ||
    bad "$mode: not VMM-backed"
  [ "$(stat_of "$tmp/$mode.1.json" SHARE_MISSES)" = 1 ] || bad "$mode: the upload was not a miss"
  [ "$(stat_of "$tmp/$mode.1.json" SHARE_FALLBACKS)" = 0 ] ||
    bad "$mode: $(stat_of "$tmp/$mode.1.json" SHARE_FALLBACKS) fallbacks"
  [ "$(stat_of "$tmp/$mode.1.json" SHARE_PUBLISHED)" -ge 1 ] || bad "$mode: not published"
  run "$mode.2" "$mib" "$seed" "$mode"
  [ "$(stat_of "$tmp/$mode.2.json" SHARE_HITS)" = 1 ] || bad "$mode: the second run's upload was not a hit"
  run "$mode.w" "$mib" "$seed" "$mode-write"
  [ "$(stat_of "$tmp/$mode.w.json" SHARE_HITS)" = 1 ] || bad "$mode-write: the upload was not a hit"
  [ "$(stat_of "$tmp/$mode.w.json" SHARE_GUARD_UNSHARED)" -ge 1 ] || bad "$mode-write: not made private before the kernel"
  run "$mode.3" "$mib" "$seed" "$mode"
  [ "$(stat_of "$tmp/$mode.3.json" SHARE_HITS)" = 1 ] || bad "$mode: not a hit after a writer"
}

step "XLA's preallocated BFC region (3/4 of the GPU in one cuMemAlloc), uploads from pinned staging"
shared bfc 41
step "stream-ordered allocations from the device's default pool (cuMemAllocAsync, cuMemAllocFromPoolAsync)"
shared async 42
shared pool 43
step "a tensor filling its last granule in part: that end assembled and mapped, then written through the tensor's base"
# Before, the hit recorded only the copied ends as written, so the run holding
# the tail had the tail as its span: a kernel given the tensor's base pointer
# was not seen using it and wrote the read-only extent (a fault, a wrong result).
shared async 49 17
step "pitched allocations, rows uploaded by cuMemcpy2D / cuMemcpy2DAsync (padding zeroed)"
shared pitch 44
shared pitch-async 45

step "SAGE_SHARE_ASYNC=0: stream-ordered and pitched allocations left to the driver"
for mode in async pitch; do
  SAGE_SHARE_ASYNC=0 run "off.$mode" 16 50 "$mode"
  [ "$(stat_of "$tmp/off.$mode.json" SHARE_ALLOCS)" = 0 ] || bad "SAGE_SHARE_ASYNC=0, $mode: VMM-backed"
done
step "a pool the app made: the driver's memory, not shared"
run own.1 16 46 own-pool
[ "$(stat_of "$tmp/own.1.json" SHARE_ALLOCS)" = 0 ] || bad "own-pool: an app pool's allocation VMM-backed"
step "app-managed VMM: the handle SAGE backs, the weights filling it"
shared vmm 47
step "XLA: one cuMemCreate of 3/4 of the GPU, mapped and granted by the app, weights uploaded into it"
shared xla 51
step "XLA: the mapping unmapped, mapped again and granted between upload and kernels"
run xla-remap 16 51 xla-remap
[ "$(stat_of "$tmp/xla-remap.json" SHARE_HITS)" = 1 ] || bad "xla-remap: not a hit"
# The shared piece is mapped again read-only; the app's grant must not reach it: private first.
[ "$(stat_of "$tmp/xla-remap.json" SHARE_UNSHARED)" -ge 1 ] || bad "xla-remap: the extent was granted to the app"
run xla-remap.w 16 51 xla-remap-write
step "XLA: the mapping made read-only and read-write again (cuMemGetAccess says the app's grant)"
run xla-access 16 51 xla-access
run xla-access.w 16 51 xla-access-write
step "XLA: the handle mapped a second time: private, never shared again"
run xla-multi 16 51 xla-multi
[ "$(stat_of "$tmp/xla-multi.json" SHARE_UNSHARED)" -ge 1 ] || bad "xla-multi: the hit was not made private"
run xla-multi.w 16 51 xla-multi-write
step "PyTorch expandable segments: 20 MiB handles, a tensor spanning two, a handle released twice (the driver's answer)"
run seg.1 16 52 segments
[ "$(stat_of "$tmp/seg.1.json" SHARE_APP_VMM)" = 4 ] || bad "segments: $(stat_of "$tmp/seg.1.json" SHARE_APP_VMM) handles backed"
run seg.2 16 52 segments
# The spanning tensor's part in the first handle and the second tensor; the rest in the next handle is copied.
[ "$(stat_of "$tmp/seg.2.json" SHARE_HITS)" = 2 ] || bad "segments: $(stat_of "$tmp/seg.2.json" SHARE_HITS) hits, not 2"
run seg.w 16 52 segments-write
[ "$(stat_of "$tmp/seg.w.json" SHARE_GUARD_UNSHARED)" -ge 1 ] || bad "segments-write: not made private before the kernel"
step "an exported handle: one private backing (consolidated after a hit), imported and read elsewhere"
run export.1 16 47 export
[ "$(stat_of "$tmp/export.1.json" SHARE_HITS)" = 1 ] || bad "export: the upload was not a hit"
run export.2 16 47 export-write
step "an exported handle unmapped first: the fd is a private copy, never the broker's extent"
# Before, the unmapped handle's shared piece was exported as it was: the app
# (or the peer it hands the fd to) mapped the sealed extent read-write and
# its kernel changed the weights every later hit maps.
run export-unmapped.w 16 47 export-unmapped-write
[ "$(stat_of "$tmp/export-unmapped.w.json" SHARE_HITS)" = 1 ] || bad "export-unmapped: the upload was not a hit"
[ "$(stat_of "$tmp/export-unmapped.w.json" SHARE_UNSHARED)" -ge 1 ] || bad "export-unmapped: the extent was exported"
run export-unmapped.after 16 47 vmm
step "SAGE_SHARE_VMM=0: the app's handles are the driver's"
SAGE_SHARE_VMM=0 run off.vmm 16 51 xla
[ "$(stat_of "$tmp/off.vmm.json" SHARE_APP_VMM)" = 0 ] && [ "$(stat_of "$tmp/off.vmm.json" SHARE_MISSES)" = 0 ] ||
  bad "SAGE_SHARE_VMM=0: the app's handle was backed"

step "no broker: every allocator the plain path, same output"
stop_saged
for mode in bfc async pool pitch pitch-async own-pool vmm xla segments export bfc-write; do
  run "nb.$mode" 16 48 "$mode"
  [ "$(stat_of "$tmp/nb.$mode.json" SHARE_ALLOCS)" = 0 ] && [ "$(stat_of "$tmp/nb.$mode.json" SHARE_APP_VMM)" = 0 ] ||
    bad "no broker, $mode: VMM-backed"
done

[ "$fail" -eq 0 ] && echo "alloc_checks: all passed"
exit "$fail"

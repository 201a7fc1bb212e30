#!/usr/bin/env bash
# Sharing for the allocators beyond cuMemAlloc (docs/sharing.md,
# "Allocators"), against the simulated driver and the real broker: XLA's
# preallocated BFC region, stream-ordered allocations (default pool: shared;
# an app's own pool: the driver's), pitched allocations with 2D uploads, and
# app-managed VMM (never replaced). Each: the native output, a first run that
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
start_broker "$saged" "$SAGE_SOCKET"

# run TAG ARGS... (lib.sh): under sharing, traced to $tmp/TAG.json; the output must be native's.
# shared MODE SEED [MIB]: published by a first run, mapped by a second, guarded against a writing kernel.
shared() {
  local mode=$1 seed=$2 mib=${3:-16}
  run "$mode.1" "$mib" "$seed" "$mode"
  [ "$(stat_of "$tmp/$mode.1.json" SHARE_ALLOCS)" -ge 1 ] || bad "$mode: not VMM-backed"
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
step "app-managed VMM (cuMemCreate + cuMemMap): never replaced, the plain copy"
for i in 1 2; do
  run "vmm.$i" 16 47 vmm
  [ "$(stat_of "$tmp/vmm.$i.json" SHARE_MISSES)" = 0 ] && [ "$(stat_of "$tmp/vmm.$i.json" SHARE_HITS)" = 0 ] ||
    bad "vmm run $i: an upload into the app's own mapping was considered"
done
run vmm.w 16 47 vmm-write

step "no broker: every allocator the plain path, same output"
kill "$saged_pid"; wait "$saged_pid" 2>/dev/null || true
for mode in bfc async pool pitch pitch-async own-pool vmm bfc-write; do
  run "nb.$mode" 16 48 "$mode"
  [ "$(stat_of "$tmp/nb.$mode.json" SHARE_ALLOCS)" = 0 ] || bad "no broker, $mode: VMM-backed"
done

[ "$fail" -eq 0 ] && echo "alloc_checks: all passed"
exit "$fail"

#!/usr/bin/env bash
# What each driver VMM call costs with 1, 8 and 16 processes making them at
# once (docs/sharing.md, "Deferred backing"): builds probe.c and runs it on
# GPU 0 (bounded: 60 s a count; ~1-5 s each). Per count it prints
#   N at once, R rounds: slowest process T ms
#     reserve / create 20 MiB / create 2 MiB / map / access 2 MiB / access
#     20 MiB / access run (again, first) / export fd / import fd / unmap /
#     release / free: mean U us, worst W us (C calls)
# Reading it: the kinds whose mean grows most from 1 to 16 are those the
# driver serializes across processes; a hit with deferred backing makes
# import + map + access, mapped at cuMemAlloc also create + unmap + release
# + map + access of the rest, and an allocation reserve + create (+ map +
# access eager). "access run (first)" (one first grant over 10 fresh
# mappings) against 10 x "access 2 MiB": whether granting a run of hits at
# once pays (at 4e14f3e, H100: no, 10,112 us at 16 against 10 x 585);
# "access 20 MiB" against "access 2 MiB": whether a grant costs by mapping
# or by byte (at f3ef3ed, H100: 86.9 against 35.3 us alone, 845 against 393
# at 16: a ten times larger mapping costs 2.2-2.5 times); "access run
# (again)" re-grants what already has access. (Mapping pieces of one handle
# at offsets into it, one import for a run of hits, is not possible:
# cuMemMap answers CUDA_ERROR_NOT_SUPPORTED for a nonzero offset, f3ef3ed.)
# Each count past 1 runs again with PROBE_LOCK=1 (every call under one
# flock the processes share): if the slowest process is then faster, the
# driver's own serialization costs more than ours would.
#   scripts/probes/vmm-contend/run.sh [COUNTS...]   (default: 1 8 16)
# `run.sh busy` instead measures one process beside 0, 4 and 15 others busy
# with each kind of GPU set-up (PROBE_BUSY, PROBE_BUSY_KIND: contexts,
# modules, allocations): which of them a hit's VMM calls wait for (16 gpt2
# at once: the re-mapping grew with the processes setting up; ~1 min).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
probe_prepare vmm-contend "$here/probe.c"
if [ "${1:-}" = busy ]; then
  rc=0
  for kind in ctx module alloc; do
    for k in 0 4 15; do
      PROBE_BUSY=$k PROBE_BUSY_KIND=$kind timeout 60 "$probe" 1 20 || rc=1
    done
  done
  exit $rc
fi
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 8 16)
rc=0
for n in "${counts[@]}"; do
  timeout 60 "$probe" "$n" 20 || rc=1
  if [ "$n" -gt 1 ]; then PROBE_LOCK=1 PROBE_LOCK_FILE=$tmp/lock timeout 60 "$probe" "$n" 20 || rc=1; fi
done
exit $rc

#!/usr/bin/env bash
# What each driver VMM call costs with 1, 8 and 16 processes making them at
# once (docs/sharing.md, "Deferred backing"): builds probe.c and runs it on
# GPU 0 (bounded: 60 s a count; ~1-5 s each). Per count it prints
#   N at once, R rounds: slowest process T ms
#     reserve / create 20 MiB / create 2 MiB / map / access / access run /
#     unmap / release / free: mean U us, worst W us (C calls)
# Reading it: the kinds whose mean grows most from 1 to 16 are those the
# driver serializes across processes; a hit with deferred backing makes
# import + map + access, mapped at cuMemAlloc also create + unmap + release
# + map + access of the rest, and an allocation reserve + create (+ map +
# access eager). "access run (first)" (one first grant over 10 fresh
# mappings) against 10 x "access" says whether granting a run of hits at
# once pays; "access run (again)" re-grants what already has access (run on
# the H100 at a1a1a1d before the "first" row existed: 3.9 us at 16).
#   scripts/probes/vmm-contend/run.sh [COUNTS...]   (default: 1 8 16)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
probe_prepare vmm-contend "$here/probe.c"
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 8 16)
rc=0
for n in "${counts[@]}"; do
  timeout 60 "$probe" "$n" 20 || rc=1
done
exit $rc

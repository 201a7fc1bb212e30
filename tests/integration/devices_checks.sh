#!/usr/bin/env bash
# shellcheck disable=SC2154 # preload, tmp, fail: set by lib.sh
# GPU identity by UUID (issue 15 item 1): one broker serving two simulated
# GPUs, functions pinned to each with CUDA_VISIBLE_DEVICES (each sees its GPU
# as device 0). A hit maps only an extent of the function's own GPU; IPC
# across the two GPUs answers what the driver answers natively; sagectl
# shows extents per GPU; a GPU the broker does not serve is not shared.
#   devices_checks.sh SHARE_TEST SAGED SAGECTL PYTHON3
set -euo pipefail
prog=$1 saged=$2 sagectl=$3 python=$4
. "$(dirname "$0")/lib.sh"
export SAGE_FAKE_DEVICES=2 SAGE_SHARE=1
unset CUDA_VISIBLE_DEVICES
export SAGE_SOCKET=$tmp/saged.sock
start_saged "$SAGE_SOCKET"

# run TAG VISIBLE ARGS...: share-test on the GPUs VISIBLE under SAGE (trace $tmp/TAG.json), output as native's.
run() {
  local tag=$1 visible=$2 native out
  shift 2
  native=$(CUDA_VISIBLE_DEVICES=$visible "$prog" "$@") || bad "$tag: native run failed"
  out=$(CUDA_VISIBLE_DEVICES=$visible SAGE_TRACE="$tmp/$tag.json" LD_PRELOAD="$preload" "$prog" "$@") ||
    bad "$tag: run failed"
  [ "$out" = "$native" ] || bad "$tag: output '$out' vs native '$native'"
}

uuids=$("$sagectl" devices --json | "$python" -c 'import json,sys; print(" ".join(d["uuid"] for d in json.load(sys.stdin)))') || uuids=
read -r uuid0 uuid1 <<<"$uuids"
[ -n "${uuid1:-}" ] && [ "$uuid0" != "$uuid1" ] || bad "the broker does not list two GPUs by distinct UUIDs: '$uuids'"

step "GPU 1 (CUDA_VISIBLE_DEVICES=1, its device 0) publishes"
run g1a 1 16 7
[ "$(stat_of "$tmp/g1a.json" SHARE_MISSES)" = 1 ] || bad "g1a: not a miss"
[ "$(stat_of "$tmp/g1a.json" SHARE_PUBLISHED)" = 1 ] || bad "g1a: not published (the broker refused GPU 1's extent?)"

step "GPU 0 (CUDA_VISIBLE_DEVICES=0): the same bytes miss and are copied, never GPU 1's extent"
run g0a 0 16 7
[ "$(stat_of "$tmp/g0a.json" SHARE_HITS)" = 0 ] || bad "g0a: a hit on GPU 0 (GPU 1's extent?)"
[ "$(stat_of "$tmp/g0a.json" SHARE_MISSES)" = 1 ] || bad "g0a: not a miss"
[ "$(stat_of "$tmp/g0a.json" SHARE_PUBLISHED)" = 1 ] || bad "g0a: GPU 0's copy not published"

step "GPU 1 again, by ordinal and by UUID (and a UUID prefix): hits its own GPU's extent"
run g1b 1 16 7
[ "$(stat_of "$tmp/g1b.json" SHARE_HITS)" = 1 ] || bad "g1b: GPU 1's second run did not hit"
run g1u "$uuid1" 16 7
[ "$(stat_of "$tmp/g1u.json" SHARE_HITS)" = 1 ] || bad "g1u: CUDA_VISIBLE_DEVICES=$uuid1 did not hit"
run g1p "${uuid1:0:12}" 16 7
[ "$(stat_of "$tmp/g1p.json" SHARE_HITS)" = 1 ] || bad "g1p: CUDA_VISIBLE_DEVICES=${uuid1:0:12} did not hit"
step "GPU 1 as device 0 of a process that sees both (CUDA_VISIBLE_DEVICES=1,0)"
run g10 1,0 16 7
[ "$(stat_of "$tmp/g10.json" SHARE_HITS)" = 1 ] || bad "g10: did not hit GPU 1's extent"
step "GPU 0 by UUID: hits GPU 0's extent"
run g0u "$uuid0" 16 7
[ "$(stat_of "$tmp/g0u.json" SHARE_HITS)" = 1 ] || bad "g0u: GPU 0's second run did not hit"

step "GPU 0 alone publishes new bytes; GPU 1 as device 0 next to GPU 0 (CUDA_VISIBLE_DEVICES=1,0) misses them"
run g0b 0 4 8
[ "$(stat_of "$tmp/g0b.json" SHARE_PUBLISHED)" = 1 ] || bad "g0b: not published"
run g10b 1,0 4 8
[ "$(stat_of "$tmp/g10b.json" SHARE_HITS)" = 0 ] || bad "g10b: GPU 1 mapped GPU 0's extent"
run g01b 0,1 4 8
[ "$(stat_of "$tmp/g01b.json" SHARE_HITS)" = 1 ] || bad "g01b: GPU 0 (device 0 of 0,1) did not hit its extent"
"$sagectl" evict --unreferenced >/dev/null || bad "evict"
run g1c 1 16 7
run g0c 0 16 7

step "sagectl: one extent per GPU, named by UUID"
"$sagectl" devices --json | "$python" -c '
import json, sys
d = json.load(sys.stdin)
assert [x["extents"] for x in d] == [1, 1] and all(x["served"] for x in d), d
assert all(x["bytes"] == 16 << 20 for x in d), d' || bad "sagectl devices: not one 16 MiB extent per GPU"
"$sagectl" list --json | "$python" -c '
import json, sys
l = json.load(sys.stdin)
assert sorted(e["uuid"] for e in l) == sorted(sys.argv[1:]), l' "$uuid0" "$uuid1" || bad "sagectl list: not one extent per UUID"
"$sagectl" list | grep -q "${uuid1:0:12}" || bad "sagectl list: no short UUID column"

step "CUDA IPC: the importer on the same GPU under another ordinal works; on the other GPU, the driver's answer"
for child in 1 "$uuid1" 1,0 0; do
  out_n=$(CUDA_VISIBLE_DEVICES=1 SHARE_TEST_CHILD_DEVICES=$child "$prog" 16 9 ipc-export) || bad "ipc native ($child)"
  out_s=$(CUDA_VISIBLE_DEVICES=1 SHARE_TEST_CHILD_DEVICES=$child SAGE_TRACE="$tmp/ipc.json" LD_PRELOAD="$preload" \
    "$prog" 16 9 ipc-export) || bad "ipc under SAGE ($child)"
  [ "$out_s" = "$out_n" ] || bad "ipc, importer on $child: '$out_s' vs native '$out_n'"
  [ "$(stat_of "$tmp/ipc.json" SHARE_IPC_EXPORTS)" = 1 ] || bad "ipc ($child): not emulated"
  case $child in
    0) grep -q "child open: CUDA_ERROR_PEER_ACCESS_UNSUPPORTED" <<<"$out_s" || bad "ipc across GPUs: '$out_s'" ;;
    *) grep -q "parent sees 5a5a5a5a5a5a5a5a" <<<"$out_s" || bad "ipc on GPU 1 ($child): '$out_s'" ;;
  esac
done

step "saged --devices by UUID: an unknown UUID serves no GPU (as an unknown ordinal), a malformed one is refused"
stop_saged
start_saged "$tmp/x.sock" --devices GPU-00000000-0000-0000-0000-000000000000
[ "$(SAGE_SOCKET=$tmp/x.sock "$sagectl" devices --json | tr -d ' \n')" = "[]" ] || bad "a GPU served for an unknown UUID"
grep -q "device GPU-00000000-0000-0000-0000-000000000000 does not exist" "$tmp/saged.log" || bad "no clear warning"
rc=0; "$saged" --socket "$tmp/x.sock" --foreground --devices GPU-12 2>/dev/null || rc=$?
[ "$rc" = 2 ] || bad "saged --devices GPU-12: exit $rc, not 2"

step "a broker serving GPU 0 only (--devices GPU-…): a function on GPU 1 runs without sharing, unharmed"
stop_saged
export SAGE_SOCKET=$tmp/only0.sock
start_saged "$SAGE_SOCKET" --devices "$uuid0"
"$sagectl" devices --json | "$python" -c '
import json, sys
assert [x["served"] for x in json.load(sys.stdin)] == [True, False]' || bad "--devices $uuid0 does not serve exactly GPU 0"
run only1 1 16 7
[ "$(stat_of "$tmp/only1.json" SHARE_ALLOCS)" = 0 ] || bad "only1: VMM-backed on a GPU the broker does not serve"
[ "$(stat_of "$tmp/only1.json" SHARE_UNKNOWN_GPU)" = 1 ] || bad "only1: not counted as an unknown GPU"
out=$(CUDA_VISIBLE_DEVICES=1 SAGE_VERBOSE=1 LD_PRELOAD="$preload" "$prog" 16 7 2>&1 >/dev/null)
grep -q "the broker does not serve $uuid1 (device 0 here)" <<<"$out" || bad "only1: no clear warning: '$out'"
run only0 0 16 7
[ "$(stat_of "$tmp/only0.json" SHARE_PUBLISHED)" = 1 ] || bad "only0: GPU 0 not shared"

[ "$fail" = 0 ] && echo "devices_checks: all passed"
exit "$fail"

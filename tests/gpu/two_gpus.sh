#!/usr/bin/env bash
# shellcheck disable=SC2154 # the *_hits/*_published counters: set by run() through eval
# Two GPUs, one broker (issue 16; GPU identity by UUID, issue 15 item 1):
# share_weights pinned to each GPU with CUDA_VISIBLE_DEVICES (each sees its
# GPU as device 0), natively and under SAGE_SHARE=1. A function on GPU 0
# after GPU 1's published the same weights must miss (never map GPU 1's
# extent); second runs on each GPU hit their own GPU's extents; by UUID as
# well; sagectl lists extents on both UUIDs; outputs equal native's. Then
# two_gpus_probe says what this driver answers where the simulated one
# assumes (peer access, cross-GPU import and IPC).
#   tests/gpu/two_gpus.sh [--build DIR] [--arch sm_90]
# Exit 0 passed, 1 failed, 77 fewer than 2 GPUs or no nvcc. With OUT set:
# OUT/two-gpus.json (results) and OUT/two-gpus-logs/.
set -uo pipefail
build=build arch=sm_90
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    -h|--help) sed -n "3,15p" "$0"; exit 0 ;;
    *) echo "two_gpus: unknown argument $1" >&2; exit 2 ;;
  esac
done
src=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$build" && pwd) || exit 1
out=${OUT:-$(mktemp -d)}
logs=$out/two-gpus-logs
mkdir -p "$logs"
skip() { echo "two_gpus: SKIP: $*"; printf '{"skipped": true, "reason": "%s"}\n' "$*" > "$out/two-gpus.json"; exit 77; }

command -v nvidia-smi >/dev/null 2>&1 || skip "no nvidia-smi"
mapfile -t uuids < <(nvidia-smi --query-gpu=uuid --format=csv,noheader 2>/dev/null)
[ "${#uuids[@]}" -ge 2 ] || skip "${#uuids[@]} GPU(s), need 2"
nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[ -x "$nvcc" ] || skip "nvcc not found (set NVCC)"
unset CUDA_VISIBLE_DEVICES
# CUDA's ordinals in nvidia-smi's order, for every process here (broker included).
export CUDA_DEVICE_ORDER=PCI_BUS_ID
libsage=$build/intercept/libsage.so saged=$build/daemon/saged sagectl=$build/tools/sagectl
for f in "$libsage" "$saged" "$sagectl"; do [ -x "$f" ] || [ -f "$f" ] || { echo "two_gpus: $f missing" >&2; exit 1; }; done

bin=$logs/bin
mkdir -p "$bin/tmp"
nv=(env "TMPDIR=$bin/tmp" "$nvcc" "-arch=$arch" -O2 -I"$src")
"${nv[@]}" -o "$bin/share_weights" "$src/share_weights.cu" || exit 1
"${nv[@]}" -o "$bin/two_gpus_probe" "$src/two_gpus_probe.cu" -lcuda || exit 1

fail=0 results=()
bad() { echo "two_gpus: FAIL: $*"; fail=1; }
stat_sum() {  # stat_sum TRACE_GLOB NAME: the counter summed over the traces
  python3 - "$@" <<'PY'
import glob, json, sys
print(sum(json.load(open(f))["otherData"]["stats"].get(sys.argv[2], 0) for f in glob.glob(sys.argv[1])))
PY
}

weights=$logs/share-weights.bin
native=$(CUDA_VISIBLE_DEVICES=0 "$bin/share_weights" "$weights") || bad "native run on GPU 0"
sock=$logs/saged.sock
"$saged" --socket "$sock" --foreground -v 2> "$logs/saged.log" &
saged_pid=$!
trap 'kill $saged_pid 2>/dev/null; wait $saged_pid 2>/dev/null' EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
"$sagectl" --socket "$sock" devices --json > "$logs/devices.json" || bad "sagectl devices"
python3 - "$logs/devices.json" "${uuids[@]}" <<'PY' || bad "the broker's UUIDs are not nvidia-smi's"
import json, sys
d = json.load(open(sys.argv[1]))
assert sorted(x["uuid"] for x in d) == sorted(sys.argv[2:]), (d, sys.argv[2:])
PY
# The broker's ordinal 1, by its UUID: what CUDA_VISIBLE_DEVICES=1 selects too.
uuid1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[1]["uuid"])' "$logs/devices.json")

# run TAG VISIBLE: share_weights under sharing on the GPUs VISIBLE; prints hits, misses, published.
run() {
  local tag=$1 visible=$2 o
  o=$(CUDA_VISIBLE_DEVICES=$visible LD_PRELOAD=$libsage SAGE_SHARE=1 SAGE_SOCKET=$sock \
      SAGE_TRACE="$logs/$tag.%p.json" "$bin/share_weights" "$weights" 2> "$logs/$tag.err")
  [ "$o" = "$native" ] || bad "$tag: output differs from native's"
  ls "$logs/$tag".*.json >/dev/null 2>&1 || bad "$tag: no trace (libsage not loaded?)"
  local h m p
  h=$(stat_sum "$logs/$tag.*.json" SHARE_HITS) m=$(stat_sum "$logs/$tag.*.json" SHARE_MISSES)
  p=$(stat_sum "$logs/$tag.*.json" SHARE_PUBLISHED)
  echo "two_gpus: $tag (CUDA_VISIBLE_DEVICES=$visible): hits $h, misses $m, published $p"
  results+=("{\"run\": \"$tag\", \"visible\": \"$visible\", \"hits\": $h, \"misses\": $m, \"published\": $p}")
  eval "${tag}_hits=$h ${tag}_published=$p"
}
run gpu1_first 1
run gpu0_first 0
run gpu1_again 1
run gpu1_uuid "$uuid1"
run gpu0_again 0
[ "$gpu1_first_published" -gt 0 ] || bad "GPU 1 published nothing"
[ "$gpu0_first_hits" = 0 ] || bad "GPU 0's first run hit $gpu0_first_hits extents (GPU 1's?)"
[ "$gpu0_first_published" -gt 0 ] || bad "GPU 0 published nothing"
[ "$gpu1_again_hits" -gt 0 ] || bad "GPU 1's second run did not hit"
[ "$gpu1_uuid_hits" -gt 0 ] || bad "GPU 1 by UUID did not hit"
[ "$gpu0_again_hits" -gt 0 ] || bad "GPU 0's second run did not hit"
"$sagectl" --socket "$sock" devices --json > "$logs/devices-after.json"
python3 - "$logs/devices-after.json" <<'PY' || bad "sagectl devices: extents not on both GPUs"
import json, sys
d = json.load(open(sys.argv[1]))
assert d[0]["extents"] > 0 and d[1]["extents"] > 0, d
PY
"$sagectl" --socket "$sock" list > "$logs/list.txt"

"$bin/two_gpus_probe" > "$logs/probe.txt" 2>&1 || bad "two_gpus_probe failed (see $logs/probe.txt)"
cat "$logs/probe.txt"
probe=$(awk '$1 == "probe" { printf "%s\"%s\": \"%s\"", n++ ? ", " : "", $2, $3 }' "$logs/probe.txt")
{
  printf '{"gpus": ["%s", "%s"], "passed": %s, "runs": [' "${uuids[0]}" "${uuids[1]}" "$([ $fail = 0 ] && echo true || echo false)"
  (IFS=,; printf '%s' "${results[*]}")
  printf '], "probe": {%s}}\n' "$probe"
} > "$out/two-gpus.json"
echo "two_gpus: results in $out/two-gpus.json"
[ "$fail" = 0 ] && echo "two_gpus: passed"
exit "$fail"

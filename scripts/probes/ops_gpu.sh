#!/usr/bin/env bash
# On a GPU machine: sage-run --share's per-user broker and saged's metrics
# endpoint against the real driver (CI checks both on the simulated one).
#   1. two runs of tests/gpu/share_weights under `sage-run --share` with no
#      broker set up: the first starts the user's broker and publishes, the
#      second maps (SHARE_HITS > 0), outputs identical to native; the broker
#      exits after its grace period.
#   2. saged --metrics-listen 127.0.0.1:0: after a run, /metrics shows the
#      bytes resident on device 0 under the UUID nvidia-smi reports for it,
#      and passes `promtool check metrics` where promtool is installed.
# Prints PASS/FAIL lines; exit 0 all passed, 1 a check failed, 77 no GPU/nvcc.
#   scripts/probes/ops_gpu.sh [--build DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=build
[ "${1:-}" = --build ] && build=$2
nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if ! nvidia-smi -L >/dev/null 2>&1 || [ ! -x "$nvcc" ]; then
  echo "SKIP: no GPU or no nvcc"
  exit 77
fi
# Built here (the GPU machine lacks the xxhash/libunwind headers): never rebuilt there.
for f in tools/sage-run daemon/saged intercept/libsage.so; do
  [ -x "$build/$f" ] || [ -f "$build/$f" ] || { echo "ops_gpu: $build/$f missing: build first (scripts/test.sh)" >&2; exit 1; }
done
tmp=$(mktemp -d)
saged_pid=
trap '[ -n "$saged_pid" ] && kill "$saged_pid" 2>/dev/null; rm -rf "$tmp"' EXIT
fail=0
pass() { echo "PASS: $*"; }
bad() { echo "FAIL: $*"; fail=1; }
stat_of() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['otherData']['stats'][sys.argv[2]])" "$1" "$2"; }

"$nvcc" -O2 -arch "${ARCH:-sm_90}" -Itests/gpu -o "$tmp/share_weights" tests/gpu/share_weights.cu
native=$("$tmp/share_weights" "$tmp/w.bin")

mkdir -m 700 "$tmp/run"
for i in 1 2; do
  t0=$(date +%s%N)
  out=$(XDG_RUNTIME_DIR=$tmp/run "$build/tools/sage-run" --share --broker-grace 3 --trace "$tmp/r$i.json" -- \
    "$tmp/share_weights" "$tmp/w.bin") || bad "run $i failed"
  t1=$(date +%s%N)
  [ "$out" = "$native" ] || bad "run $i output differs from native"
  echo "run $i: $(( (t1 - t0) / 1000000 )) ms, published $(stat_of "$tmp/r$i.json" SHARE_PUBLISHED), hits $(stat_of "$tmp/r$i.json" SHARE_HITS)"
done
[ "$(stat_of "$tmp/r1.json" SHARE_PUBLISHED)" -gt 0 ] && pass "run 1 started the user's broker and published" ||
  bad "run 1 published nothing"
[ "$(stat_of "$tmp/r2.json" SHARE_HITS)" -gt 0 ] && pass "run 2 mapped what run 1 published" || bad "run 2 had no hit"
broker=$(python3 -c '
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(sys.argv[1])
print(struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0])' "$tmp/run/sage/saged.sock" 2>/dev/null || echo none)
if [ "$broker" = none ]; then
  bad "no broker after the runs"
else
  python3 -c 'import os, select, sys; fd = os.pidfd_open(int(sys.argv[1])); p = select.poll(); p.register(fd, select.POLLIN); sys.exit(0 if p.poll(20000) else 1)' "$broker" &&
    pass "the broker exited after its grace period" || bad "the broker still runs 20 s after a 3 s grace"
fi

"$build/daemon/saged" --socket "$tmp/m.sock" --foreground -v --metrics-listen 127.0.0.1:0 2>"$tmp/saged.log" &
saged_pid=$!
for _ in $(seq 100); do grep -q "metrics: http://" "$tmp/saged.log" && [ -S "$tmp/m.sock" ] && break; sleep 0.1; done
url=$(sed -n 's|.*metrics: \(http://[^ ]*/metrics\).*|\1|p' "$tmp/saged.log")
"$build/tools/sage-run" --share --socket "$tmp/m.sock" -- "$tmp/share_weights" "$tmp/w.bin" >/dev/null || bad "metrics run failed"
page=$(curl -sf "$url") || bad "no page at $url"
uuid=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i 0 | tr -d ' ')
line=$(grep "^sage_resident_bytes{device=\"0\"" <<<"$page" || true)
echo "nvidia-smi device 0: $uuid; page: $line"
[[ "$line" == *"uuid=\"$uuid\""* ]] && [ "${line##* }" -gt 0 ] && pass "bytes resident on device 0 under its UUID" ||
  bad "sage_resident_bytes of device 0 does not carry $uuid or is 0"
if command -v promtool >/dev/null; then
  promtool check metrics <<<"$page" && pass "promtool check metrics" || bad "promtool check metrics"
else
  echo "(promtool not installed: page not linted)"
fi
exit "$fail"

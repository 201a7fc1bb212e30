#!/usr/bin/env bash
# The broker client's spread lookups against a real saged on the simulated
# driver (no GPU): probe.c, notes of 0, 4, 16 and 32 KiB, three rounds each.
# Prints per round: "notes N: r 0 hits 34 sending S ms, end E ms, slowest W ms at K".
# An end of ~0.01-0.05 ms says the answers were read as they came; ~0.15-1.5
# ms and K growing smaller with the notes says they piled up in the socket.
#   scripts/probes/lookup-window/run.sh [BUILD_DIR]   (default: build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
tmp=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
gcc -O2 -std=gnu11 -I"$root/common" -I"$build/common" -I/usr/local/cuda/include -o "$tmp/probe" "$here/probe.c" \
  "$build/common/libsage-common.a" "$build"/common/libsage-hash-*.a -lxxhash -lpthread -ldl
export LD_LIBRARY_PATH=$build/tests/fakecuda SAGE_FAKE_DEVICES=1
"$build/daemon/saged" --socket "$tmp/s.sock" --foreground 2>"$tmp/saged.log" &
pid=$!
for _ in $(seq 50); do [ -S "$tmp/s.sock" ] && break; sleep 0.1; done
for notes in 0 4096 16384 32768; do "$tmp/probe" "$tmp/s.sock" "$notes"; done

#!/usr/bin/env bash
# On the GPU machine: build and run the first-DMA probe (probe.c says what each column is).
# Usage: scripts/probes/first-dma/run.sh [MiB [rounds]]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
gcc -O2 -std=gnu11 -I/usr/local/cuda/include -o "$out/probe" "$here/probe.c" -lcuda
"$out/probe" "${1:-128}" "${2:-5}"
rm -rf "$out"

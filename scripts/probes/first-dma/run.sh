#!/usr/bin/env bash
# On the GPU machine: build and run the first-DMA probe (probe.c says what each column is).
#   scripts/probes/first-dma/run.sh [MiB [rounds]]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
probe_build first-dma "$here/probe.c" "$tmp/probe"
timeout 60 "$tmp/probe" "${1:-128}" "${2:-5}"

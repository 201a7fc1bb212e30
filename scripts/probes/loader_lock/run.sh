#!/usr/bin/env bash
# On a GPU machine: does the real driver's cuInit + primary-context retain
# need glibc's loader lock (probe.c says why that matters to the eager
# warm-up)? No libsage involved. Exit 0: they do not; 1: they blocked; 77: no driver.
#   scripts/probes/loader_lock/run.sh
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
inc=${CUDA_HOME:-/usr/local/cuda}/include
cc -O1 -shared -fPIC -o "$tmp/libholder.so" holder.c
cc -O1 -I"$inc" -o "$tmp/probe" probe.c -ldl -lpthread
"$tmp/probe" "$tmp/libholder.so"

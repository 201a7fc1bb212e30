#!/usr/bin/env bash
# What page-locking the miss path's 128 MiB of staging costs, and whether it
# holds up another thread's copies (docs/sharing.md, "Misses at DMA speed").
# Builds probe.c, runs it on GPU 0 (bounded: 30 s; it takes ~1 s); prints
#   alloc_host: CUDA_SUCCESS 8 x 16 MiB in T ms (per buffer A-B)      (twice)
#   register_thp: ... populate P ms (hugepage advice taken N), register R ms, total T ms
#   register_4k:  ... the same without MADV_HUGEPAGE
#   copies alone: G GB/s, longest enqueue E ms
#   copies while pinning 8 x 16 MiB (T ms): G GB/s, longest enqueue E ms
#   copies while registering K x S MiB: CUDA_SUCCESS, register T ms (longest call C ms): G GB/s, longest enqueue E ms
#     (K x S = 1 x 128, 8 x 16, 32 x 4; populated beforehand, as libsage's staging now is)
# Reading it: register_thp's total well under alloc_host's (the H100 host:
# ~50 ms) says libsage should pin by mmap + MADV_HUGEPAGE + populate +
# cuMemHostRegister (the populate runs outside the driver, on any thread);
# "copies while pinning" near "copies alone" says the warm-up thread's
# pinning does not hold up the app's first miss (buffer by buffer is then
# all it needs); a longest enqueue of milliseconds says the driver
# serializes them, and pinning must finish before a C function's upload.
# "copies while registering": a longest enqueue near the longest call says
# the driver holds copies for one registration at a time, so registering in
# pieces (libsage: one per 16 MiB buffer) bounds what the app's copy waits;
# 8 x 16 near 32 x 4 says smaller pieces would gain nothing.
#   scripts/probes/pin/run.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
probe_build pin "$here/probe.c" "$tmp/probe"
timeout 30 "$tmp/probe"

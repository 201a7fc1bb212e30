#!/usr/bin/env bash
# Can the driver back XLA's BFC region (3/4 of the GPU in one cuMemAlloc) the
# way SAGE does (docs/sharing.md, "Allocators")? Builds probe.c, runs it on
# GPU 0 with nothing else on it; prints one line per way:
#   alloc / create_fd / create / pieces_fd: RESULT MS
# JAX shared nothing on the H100 while no fallback was counted: if
# create_fd says CUDA_ERROR_OUT_OF_MEMORY (or anything but SUCCESS) and
# pieces_fd says CUDA_SUCCESS, that was it, and the 1 GiB pieces fix it.
#   scripts/probes/vmm-big/run.sh      (bounded: 60 s)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
probe_build vmm-big "$here/probe.c" "$tmp/probe"
timeout 60 "$tmp/probe"

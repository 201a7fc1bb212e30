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
command -v nvidia-smi > /dev/null || { echo "vmm-big: no GPU (nvidia-smi not found)"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
stubs=()
[ -d /usr/local/cuda/lib64/stubs ] && stubs=(-L/usr/local/cuda/lib64/stubs)
gcc -O2 -std=gnu11 -I/usr/local/cuda/include "$here/probe.c" "${stubs[@]}" -lcuda -o "$tmp/probe" ||
    { echo "vmm-big: probe.c does not build"; exit 1; }
timeout 60 "$tmp/probe"

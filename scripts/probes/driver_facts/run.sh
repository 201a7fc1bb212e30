#!/usr/bin/env bash
# driver_facts: measures, on the GPU machine, what tests/fakecuda/README.md
# marks "not measured" (issue 17): imports of fds the driver did not export,
# cuFuncGetParamInfo where the layout is unknown, cuMemAlloc address reuse,
# cuMemRelease of a handle released already,
# the checkpoint API from another uid / without cuInit / on oneself, and
# checkpoints of managed memory and of an exporter. probe.c says how.
#
#   scripts/probes/driver_facts/run.sh [GROUP...]   (default: all)
#     GROUP: import param strip-kparam strip-cbank strip-noinfo reuse release ckpt
#   Environment: OUT (optional): OUT/driver-facts.json and OUT/driver-facts.txt;
#     NVCC (default: nvcc on PATH, else /usr/local/cuda/bin/nvcc); ARCH (sm_90).
# Prints `fact NAME: RESULT` lines. Run it as root (a caller of uid 65534
# is part of it); it needs the driver and nvcc only, and takes < 60 s.
# Exit: 0 ran, 1 did not build, 77 no GPU.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
arch=${ARCH:-sm_90}
command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU ' ||
    { echo "driver_facts: no GPU: skipped"; exit 77; }
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
nv=(env "TMPDIR=$bin" "$nvcc" "-arch=$arch")
if ! { "${nv[@]}" -cubin -o "$bin/kernels.cubin" "$here/kernels.cu" &&
       "${nv[@]}" -ptx -o "$bin/kernels.ptx" "$here/kernels.cu" &&
       "${nv[@]}" -O2 -o "$bin/probe" "$here/probe.c" -lcuda; } > "$bin/build.log" 2>&1; then
    cat "$bin/build.log" >&2
    echo "driver_facts: does not build" >&2
    exit 1
fi
[ "$(id -u)" = 0 ] || echo "driver_facts: not root: the uid-65534 caller facts will say setuid failed" >&2
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    timeout -k 5 60 "$bin/probe" "$bin" "$@" | tee "$OUT/driver-facts.txt"
else
    timeout -k 5 60 "$bin/probe" "$bin" "$@"
fi
exit 0

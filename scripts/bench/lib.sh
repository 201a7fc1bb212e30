# Sourced by the benchmark scripts of scripts/bench: where one cannot run,
# it skips (exit 77, meson's "skipped") and says why, prefixed with its name.

# bench_require_gpu NAME: skip unless nvidia-smi lists a GPU.
bench_require_gpu() {
    if ! command -v nvidia-smi > /dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
        echo "$1: SKIP: no GPU (nvidia-smi -L lists none)"
        exit 77
    fi
}

# bench_find_nvcc: sets nvcc (NVCC, else nvcc on PATH, else /usr/local/cuda/bin/nvcc).
bench_find_nvcc() {
    nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
}

# bench_require_nvcc NAME: bench_find_nvcc, and skip unless it runs.
bench_require_nvcc() {
    bench_find_nvcc
    command -v "$nvcc" > /dev/null 2>&1 || { echo "$1: SKIP: nvcc not found (set NVCC)"; exit 77; }
}

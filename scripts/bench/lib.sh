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

# bench_bytecode DIR PYTHON: Python byte code in DIR/pycache (exported as
# PYTHONPYCACHEPREFIX), and pyw, an array that runs PYTHON with byte-code
# writing on. An image that ships torch & co. as .py files only and sets
# PYTHONDONTWRITEBYTECODE=1, as the H200's does, makes every function process
# compile them again (import torch 4.0 s, + torchvision 9.3 s, transformers'
# BertModel 15.7 s measured there): the untimed set-up writes the byte code
# through pyw; the timed functions keep the environment as it is and read it.
bench_bytecode() {
    mkdir -p "$1/pycache" || return 1
    export PYTHONPYCACHEPREFIX=$1/pycache
    pyw=(env -u PYTHONDONTWRITEBYTECODE "$2")
}

# bench_seal FILE: make a weights file immutable (chattr +i) so libsage may
# key it by file identity (the fast path: no read, no hash, on a warm broker).
# libsage keys any file that can still change by its content, so on a
# filesystem or machine without chattr +i the SAGE figures include hashing
# the file; the NOTE says so. bench_unseal FILE before removing or
# regenerating it.
bench_seal() {
    if chattr +i "$1" 2> /dev/null; then
        return 0
    fi
    echo "NOTE: cannot make $1 immutable (chattr +i): SAGE keys it by content (hashes it each run)" >&2
    return 1
}
bench_unseal() {
    [ -e "$1" ] && chattr -i "$1" 2> /dev/null
    return 0
}

# bench_drop_data DIR: remove a weights folder this run made (unsealing its files first).
bench_drop_data() {
    local f
    for f in "$1"/*; do bench_unseal "$f"; done
    rm -rf "$1"
}

# bench_build NAME: build_dir made absolute, libsage the one built there (exit 1 without it).
bench_build() {
    build_dir=$(cd "$build_dir" && pwd) || exit 1
    libsage=$build_dir/intercept/libsage.so
    [ -f "$libsage" ] || { echo "$1: $libsage not found" >&2; exit 1; }
}

# bench_bin_dir NAME: bin_dir (build_dir/bench-bin/NAME, binaries and their
# TMPDIR) and logs in it, emptied of an earlier run's.
bench_bin_dir() {
    bin_dir=$build_dir/bench-bin/$1
    logs=$bin_dir/logs
    rm -rf "$logs"
    mkdir -p "$logs" "$bin_dir/tmp" || exit 1
}

# bench_data_dir NAME: data_dir, a new temporary one unless given (own_data=1:
# this run made it, so this run removes it).
bench_data_dir() {
    if [ -z "$data_dir" ]; then
        data_dir=$(mktemp -d "${TMPDIR:-/tmp}/sage-$1.XXXXXX") || exit 1
        own_data=1
    else
        mkdir -p "$data_dir" || exit 1
        own_data=0
    fi
}

# bench_args NAME SPEC ARGS...: a part's arguments by SPEC, one word per
# option: "--build=build_dir" takes a value into build_dir, and
# "--no-trace=with_trace=0" is a flag that sets with_trace to 0. -h/--help
# prints the part's usage and exits 0; anything else is an error (exit 2).
bench_args() {
    local name=$1 spec=$2 word opt var
    shift 2
    while [ $# -gt 0 ]; do
        case $1 in -h|--help) usage; exit 0 ;; esac
        for word in $spec; do
            opt=${word%%=*} var=${word#*=}
            [ "$1" = "$opt" ] || continue
            if [ "$var" != "${var%%=*}" ]; then
                printf -v "${var%%=*}" '%s' "${var#*=}"
                shift
            else
                [ -n "${2:-}" ] || { echo "$name: $1 needs a value" >&2; exit 2; }
                printf -v "$var" '%s' "$2"
                shift 2
            fi
            continue 2
        done
        echo "$name: unknown argument: $1 (see --help)" >&2
        exit 2
    done
}

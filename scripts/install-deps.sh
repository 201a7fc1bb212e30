#!/usr/bin/env bash
# Installs SAGE's build and test dependencies on Debian/Ubuntu when missing.
#   scripts/install-deps.sh [--fuzz]
# --fuzz adds what scripts/fuzz.sh needs: clang, and compiler-rt's libFuzzer,
# ASan and UBSan runtimes (Debian 12: libclang-rt-14-dev, through
# libclang-rt-dev; clang alone recommends it, which --no-install-recommends
# skips, and then -fsanitize=fuzzer does not link).
set -euo pipefail
fuzz=0
[ "${1:-}" = --fuzz ] && fuzz=1
need=()
command -v meson >/dev/null || need+=(meson)
command -v ninja >/dev/null || need+=(ninja-build)
command -v cc >/dev/null || need+=(gcc)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v python3 >/dev/null || need+=(python3)
command -v clang-format >/dev/null || need+=(clang-format) # the format test (tests/check_format.py)
# The metrics tests: promtool lints saged's /metrics page, a real prometheus scrapes it
# (tests/integration/metrics_checks.py; Debian's package has both).
command -v promtool >/dev/null || need+=(prometheus)
command -v musl-gcc >/dev/null || need+=(musl-tools)     # tests/deploy: a musl process under the injection
python3 -c 'import yaml' 2>/dev/null || need+=(python3-yaml) # tests/deploy: the Kubernetes manifests' checks
[ -f /usr/include/xxhash.h ] || need+=(libxxhash-dev)
[ -f /usr/include/libunwind.h ] || [ -f /usr/include/x86_64-linux-gnu/libunwind.h ] || need+=(libunwind-dev)
cuda_h=${SAGE_CUDA_INCLUDE:-/usr/local/cuda/include}/cuda.h
if [ ! -f "$cuda_h" ] && [ ! -f /usr/include/cuda.h ]; then
  need+=(nvidia-cuda-dev)
fi
if [ "$fuzz" = 1 ]; then
  command -v clang >/dev/null || need+=(clang)
  # libFuzzer links only if compiler-rt is there: ask clang (a missing file comes back as the bare name).
  if ! command -v clang >/dev/null || [ ! -f "$(clang -print-file-name=libclang_rt.fuzzer-$(uname -m).a)" ]; then
    need+=(libclang-rt-dev) # resolved below, once the package lists are fresh
  fi
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-deps: missing ${need[*]}; install them (Debian/Ubuntu: apt-get install ${need[*]})" >&2
  exit 1
fi
echo "install-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Before the split into libclang-rt-N-dev (Ubuntu 22.04) compiler-rt came with libclang-common-dev.
if [[ " ${need[*]} " == *" libclang-rt-dev "* ]] && ! apt-cache show libclang-rt-dev >/dev/null 2>&1; then
  need=("${need[@]/libclang-rt-dev/libclang-common-dev}")
fi
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

#!/usr/bin/env bash
# Installs SAGE's build and test dependencies on Debian/Ubuntu when missing.
set -euo pipefail
need=()
command -v meson >/dev/null || need+=(meson)
command -v ninja >/dev/null || need+=(ninja-build)
command -v cc >/dev/null || need+=(gcc)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v python3 >/dev/null || need+=(python3)
[ -f /usr/include/xxhash.h ] || need+=(libxxhash-dev)
[ -f /usr/include/libunwind.h ] || [ -f /usr/include/x86_64-linux-gnu/libunwind.h ] || need+=(libunwind-dev)
cuda_h=${SAGE_CUDA_INCLUDE:-/usr/local/cuda/include}/cuda.h
if [ ! -f "$cuda_h" ] && [ ! -f /usr/include/cuda.h ]; then
  need+=(nvidia-cuda-dev)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-deps: missing ${need[*]}; install them (Debian/Ubuntu: apt-get install ${need[*]})" >&2
  exit 1
fi
echo "install-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

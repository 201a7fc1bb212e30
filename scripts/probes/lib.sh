# Sourced by a probe's run.sh: probe_build NAME SRC OUT builds a driver-API
# probe (C, gcc, -lcuda; the stubs where the toolkit has them) or exits: 77
# where there is no GPU, 1 where it does not build.
probe_build() {
  local label=$1 src=$2 out=$3 stubs=()
  command -v nvidia-smi > /dev/null || { echo "$label: no GPU (nvidia-smi not found)"; exit 77; }
  [ -d /usr/local/cuda/lib64/stubs ] && stubs=(-L/usr/local/cuda/lib64/stubs)
  gcc -O2 -std=gnu11 -I/usr/local/cuda/include -I"$(dirname "${BASH_SOURCE[0]}")" "$src" "${stubs[@]}" \
    -lcuda -lpthread -o "$out" || { echo "$label: $(basename "$src") does not build"; exit 1; }
}
# probe_prepare NAME SRC: probe_build into a temporary folder removed at exit; the binary's path in $probe.
probe_prepare() {
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  probe=$tmp/probe
  probe_build "$1" "$2" "$probe"
}

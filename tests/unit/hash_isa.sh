#!/bin/bash
# libsage must load and run on any x86-64 CPU: no AVX2 or AVX-512
# instruction may be in its code outside the two XXH3 kernels that
# common/hash.c calls only where the CPU has them (common/meson.build).
# And those two must be built for their instruction sets, or the fast
# kernels are not fast. Checked on the objects libsage is linked from.
set -euo pipefail
build=$1
command -v objdump >/dev/null || { echo "no objdump: skipped"; exit 77; }
wide() { objdump -d --no-show-raw-insn "$1" | grep -c "%$2mm" || true; }
bad=0
for o in "$build"/intercept/libsage.so.p/*.o "$build"/common/libsage-common.a.p/*.o \
         "$build"/common/libsage-hash-base.a.p/*.o; do
  n=$(( $(wide "$o" y) + $(wide "$o" z) ))
  if [ "$n" != 0 ]; then
    echo "FAIL: $o has $n AVX2/AVX-512 instructions (only the dispatched kernels may)"
    bad=1
  fi
done
avx2=$(wide "$build"/common/libsage-hash-avx2.a.p/hash_kernel.c.o y)
avx512=$(wide "$build"/common/libsage-hash-avx512.a.p/hash_kernel.c.o z)
echo "AVX2 kernel: $avx2 instructions on ymm; AVX-512 kernel: $avx512 on zmm"
[ "$avx2" -gt 100 ] || { echo "FAIL: the AVX2 kernel is not built for AVX2"; bad=1; }
[ "$avx512" -gt 100 ] || { echo "FAIL: the AVX-512 kernel is not built for AVX-512"; bad=1; }
exit $bad

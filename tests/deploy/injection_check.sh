#!/usr/bin/env bash
# The injection layout (deploy/sage-install-preload): with
# LD_PRELOAD='DIR/$LIB/libsage.so' a glibc process loads libsage and prints
# nothing unless SAGE_VERBOSE asks; a musl process (the image libsage
# cannot serve) runs as without SAGE, silently, where the plain path would
# make it fail to start. The musl part is skipped, with a message, without
# musl-gcc (Debian: musl-tools).
#   injection_check.sh LIBSAGE SAGE_INSTALL_PRELOAD
set -euo pipefail
libsage=$1 installer=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bad() { echo "FAIL: $*"; exit 1; }
# Under ASan the sanitizer's runtime must come first in LD_PRELOAD (tests/meson.build).
asan=
case ${SAGE_TEST_PRELOAD:-} in *" "*) asan="${SAGE_TEST_PRELOAD% *} " ;; esac

dir=$tmp/preload
line=$("$installer" --lib "$libsage" "$dir")
# shellcheck disable=SC2016 # $LIB is for ld.so, not for the shell
[ "$line" = "LD_PRELOAD=$dir/\$LIB/libsage.so" ] || bad "sage-install-preload said: $line"
"$installer" --lib "$libsage" "$dir" >/dev/null || bad "a second run (upgrade) failed"
for l in lib/libsage.so lib64/libsage.so lib/x86_64-linux-gnu/libsage.so lib/aarch64-linux-gnu/libsage.so; do
  [ "$dir/$l" -ef "$dir/lib/libsage.so" ] || bad "$l does not lead to the one copy"
done
cmp -s "$libsage" "$dir/lib/libsage.so" || bad "the copy differs from libsage.so"
[ -z "$(find "$dir" -name '.libsage*')" ] || bad "a temporary copy was left behind"
"$installer" --lib "$libsage" relative/dir >/dev/null 2>&1 && bad "a relative DIR was accepted"
# shellcheck disable=SC2016
preload="$asan$dir/\$LIB/libsage.so"

# glibc: libsage is loaded (SAGE_VERBOSE lists its options), and silent otherwise, down a process tree.
out=$(LD_PRELOAD=$preload SAGE_VERBOSE=1 /bin/true 2>&1) || bad "glibc process under the injection failed"
[[ $out == *"sage: option SAGE_VERBOSE=1"* ]] || bad "libsage not loaded through \$LIB: $out"
out=$(LD_PRELOAD=$preload sh -c 'echo hello; sh -c "echo child"' 2>"$tmp/err") || bad "shell under the injection failed"
[ "$out" = "hello
child" ] || bad "stdout changed: $out"
[ ! -s "$tmp/err" ] || bad "stderr not empty: $(cat "$tmp/err")"

# musl: silently without SAGE.
if [ -n "$asan" ]; then
  echo "SKIP part: musl under ASan (the sanitizer's runtime cannot preload into a musl process)"
elif ! command -v musl-gcc >/dev/null; then
  echo "SKIP part: musl-gcc not installed (Debian: musl-tools); the musl image case was not run"
else
  printf '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n' >"$tmp/hello.c"
  musl-gcc -o "$tmp/hello-musl" "$tmp/hello.c" || bad "musl-gcc"
  # The hazard this layout exists for: the plain path stops every musl process.
  if LD_PRELOAD=$libsage "$tmp/hello-musl" >/dev/null 2>&1; then
    bad "a musl process now starts with libsage preloaded by its plain path: revisit deploy/README.md (Injection)"
  fi
  out=$(LD_PRELOAD=$preload "$tmp/hello-musl" 2>"$tmp/err") || bad "musl process under the injection failed"
  [ "$out" = hello ] || bad "musl stdout: $out"
  [ ! -s "$tmp/err" ] || bad "musl stderr not empty: $(cat "$tmp/err")"
fi
echo "deploy injection: ok"

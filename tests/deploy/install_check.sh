#!/usr/bin/env bash
# `meson install` into a DESTDIR puts libsage, saged, the tools and the
# systemd units where the units expect them, and nothing else (no test
# program); the units pass `systemd-analyze verify` (skipped with a message
# where systemd-analyze is missing) and keep their hardening.
#   install_check.sh BUILD_DIR
set -euo pipefail
build=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bad() { echo "FAIL: $*"; exit 1; }

DESTDIR=$tmp/root meson install -C "$build" --no-rebuild --quiet >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; bad "meson install"; }
root=$tmp/root
option() {
  meson introspect "$build" --buildoptions | python3 -c '
import json, sys
print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == sys.argv[1]))' "$1"
}
prefix=$(option prefix)
sanitize=$(option b_sanitize)

# Exactly these, by name: a test binary or a fake driver installed by mistake fails here.
found=$(cd "$root" && find . -type f -o -type l | sed 's#.*/##' | sort | tr '\n' ' ')
want="libsage.so sage-install-preload sage-run sage-trace sagectl saged saged.conf saged.service saged.socket "
[ "$found" = "$want" ] || bad "installed: $found; expected: $want"

service=$(find "$root" -name saged.service)
socket=$(find "$root" -name saged.socket)
[ "$(dirname "$service")" = "$(dirname "$socket")" ] || bad "the units in two folders"
exec_start=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$service")
[ "$exec_start" = "$prefix/sbin/saged" ] || bad "ExecStart=$exec_start, saged is installed as $prefix/sbin/saged"
[ -x "$root$exec_start" ] || bad "ExecStart $exec_start: not installed"
grep -q '^Type=notify$' "$service" || bad "saged.service is not Type=notify (saged says READY=1)"
main=$(sed -n 's/^ListenSequentialPacket=//p' "$socket")
grep -q -- "--socket $main " "$service" || bad "saged.service's --socket is not the socket unit's $main"
grep -q "^ReadWritePaths=$(dirname "$main")$" "$service" || bad "the socket folder is not writable under ProtectSystem"
conf=$(sed -n 's/^EnvironmentFile=-//p' "$service")
case $conf in /*/sage/saged.conf) ;; *) bad "EnvironmentFile=$conf" ;; esac

# The installed programs run, and sage-run looks for the libsage that was installed.
"$root$prefix/sbin/saged" --version | grep -q "protocol" || bad "installed saged --version"
"$root$prefix/bin/sagectl" --help >/dev/null || bad "installed sagectl --help"
"$root$prefix/bin/sage-trace" --help >/dev/null 2>&1 || bad "installed sage-trace --help"
lib=$("$root$prefix/bin/sage-run" --help | sed -n 's/.*--lib PATH.*, \([^ ]*\))$/\1/p')
[ -n "$lib" ] && [ -f "$root$lib/libsage.so" ] || bad "sage-run's default libsage ($lib) is not where libsage was installed"

# libsage's hard dependencies stay libc's (DESIGN.md): a GPU node lacks the rest.
needed=$(readelf -d "$root$lib/libsage.so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
for n in $needed; do
  case $n in
    libc.so.*|libdl.so.*|libpthread.so.*|ld-linux*.so.*) ;;
    libasan.so.*|libubsan.so.*) [ "$sanitize" != none ] || bad "libsage.so needs $n" ;; # an --asan build's
    *) bad "libsage.so needs $n" ;;
  esac
done
glibc=$(readelf -V "$root$lib/libsage.so" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
echo "libsage.so needs $needed; newest glibc symbol version: $glibc (images with an older glibc: no injection)"

# The units themselves.
if command -v systemd-analyze >/dev/null; then
  mkdir "$tmp/units"
  # verify checks that ExecStart exists: point it at the DESTDIR copy.
  sed "s#^ExecStart=$prefix#ExecStart=$root$prefix#" "$service" >"$tmp/units/saged.service"
  cp "$socket" "$tmp/units/saged.socket"
  (cd "$tmp/units" && systemd-analyze verify --man=no saged.socket saged.service) >"$tmp/verify.log" 2>&1 ||
    { cat "$tmp/verify.log"; bad "systemd-analyze verify"; }
  # It warns (unknown key, bad value) without failing: any word on our units is a failure.
  if grep -q 'saged\.\(service\|socket\)' "$tmp/verify.log"; then cat "$tmp/verify.log"; bad "systemd-analyze verify warns"; fi
  if systemd-analyze security --offline=true "$tmp/units/saged.service" >"$tmp/security.log" 2>&1; then
    level=$(sed -n 's/.*Overall exposure level for saged.service: \([0-9.]*\).*/\1/p' "$tmp/security.log")
    echo "systemd-analyze security: exposure $level"
    python3 -c "import sys; sys.exit(0 if float('$level') <= 6.0 else 1)" ||
      bad "exposure $level > 6.0: hardening lost"
  else
    echo "SKIP part: systemd-analyze security --offline unsupported here"
  fi
else
  echo "SKIP part: systemd-analyze not installed; the units were not verified"
fi
echo "deploy install: ok"

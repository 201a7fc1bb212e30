#!/usr/bin/env bash
# The test command (README): installs what is missing on a Debian/Ubuntu
# machine, configures build/, builds, and runs meson's lint (source text:
# format, mutant anchors), unit, integration and gpu suites (gpu skips with
# 77 where there is no GPU).
#   scripts/test.sh [--asan] [--build DIR] [-- extra meson test args]
set -euo pipefail
cd "$(dirname "$0")/.."

build=build
asan=0
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --asan) asan=1; build=build-asan ;;
    --build) build=$2; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "test.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

scripts/install-deps.sh

opts=(-Dwerror=true)
[ "$asan" = 1 ] && opts+=(-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug)
if [ -f "$build/build.ninja" ]; then
  meson configure "$build" "${opts[@]}" >/dev/null
else
  meson setup "$build" "${opts[@]}"
fi
ninja -C "$build"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
meson test -C "$build" --print-errorlogs --suite lint --suite unit --suite integration --suite gpu "${extra[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# meson's counts as one plain line, for CI.
ok=$(sed -n 's/^Ok: *\([0-9]*\).*/\1/p' "$log" | tail -1)
expfail=$(sed -n 's/^Expected Fail: *\([0-9]*\).*/\1/p' "$log" | tail -1)
failn=$(sed -n 's/^Fail: *\([0-9]*\).*/\1/p' "$log" | tail -1)
unexp=$(sed -n 's/^Unexpected Pass: *\([0-9]*\).*/\1/p' "$log" | tail -1)
timeout=$(sed -n 's/^Timeout: *\([0-9]*\).*/\1/p' "$log" | tail -1)
skipped=$(sed -n 's/^Skipped: *\([0-9]*\).*/\1/p' "$log" | tail -1)
echo "$(( ${ok:-0} + ${expfail:-0} )) passed, $(( ${failn:-0} + ${unexp:-0} + ${timeout:-0} )) failed, ${skipped:-0} skipped"
exit "$rc"

#!/usr/bin/env bash
# Fuzzing, for a bounded time (CI runs it after the test suites): configures a
# clang + ASan/UBSan build folder of its own, then runs
#   fuzz-proto      libFuzzer on the protocol decoder (tests/unit/fuzz_proto.c)
#   sage-live-fuzz  hostile clients (uids 0, 65534, 65533 as root) against a
#                   live ASan+UBSan saged on the simulated driver
#                   (tests/fuzz/live_fuzz.c); its saged log is grepped too
# Both must pass. Each prints its seed; pass it back to replay.
#   scripts/fuzz.sh [--build DIR] [--proto-seconds N] [--live-seconds N] [--seed N]
# Defaults: build-fuzz, 60 s each (also $SAGE_FUZZ_PROTO_SECONDS,
# $SAGE_FUZZ_LIVE_SECONDS), a random seed.
set -euo pipefail
cd "$(dirname "$0")/.."

build=build-fuzz
proto_seconds=${SAGE_FUZZ_PROTO_SECONDS:-60}
live_seconds=${SAGE_FUZZ_LIVE_SECONDS:-60}
seed=
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift ;;
    --proto-seconds) proto_seconds=$2; shift ;;
    --live-seconds) live_seconds=$2; shift ;;
    --seed) seed=$2; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
# libFuzzer takes a 32-bit seed; the live fuzzer any 64-bit one.
[ -n "$seed" ] || seed=$(( $(od -An -N4 -tu4 /dev/urandom) % 2147483647 + 1 ))

scripts/install-deps.sh
scripts/install-deps.sh --fuzz

opts=(-Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized)
if [ -f "$build/build.ninja" ]; then
  meson configure "$build" "${opts[@]}" >/dev/null
else
  CC=clang meson setup "$build" "${opts[@]}" >/dev/null
fi
# The fuzzers and what they run against only: libsage itself is not under test here.
# (Not `| grep -q`: under pipefail its early exit gives ninja a SIGPIPE once the list is long enough.)
if ! ninja -C "$build" -t targets all | grep '^daemon/fuzz-proto:' > /dev/null; then
  echo "fuzz.sh: meson did not configure fuzz-proto (no libFuzzer found for $(sed -n "s/^C compiler for the host machine: //p" "$build/meson-logs/meson-log.txt" | tail -1)); see $build/meson-logs/meson-log.txt" >&2
  exit 1
fi
ninja -C "$build" daemon/fuzz-proto daemon/saged tests/fuzz/sage-live-fuzz tests/fakecuda/libcuda.so.1

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
rc=0

echo "== fuzz-proto: ${proto_seconds} s, seed $seed"
corpus=$build/fuzz-proto-corpus
seeds=$build/fuzz-proto-seeds
artifacts=$build/fuzz-proto-artifacts/
mkdir -p "$corpus" "$artifacts"
# Seeds: a valid message of every type, the largest ones too (new finds go to $corpus).
"$build/tests/fuzz/sage-live-fuzz" --write-corpus "$seeds"
if ! "$build/daemon/fuzz-proto" -seed="$seed" -max_total_time="$proto_seconds" -max_len=65556 -timeout=10 \
     -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$artifacts" \
     -dict=tests/unit/fuzz_proto.dict "$corpus" "$seeds" 2>"$build/fuzz-proto.log"; then
  tail -60 "$build/fuzz-proto.log" >&2
  echo "fuzz.sh: fuzz-proto FAILED (seed $seed); inputs in $artifacts; replay: $build/daemon/fuzz-proto INPUT" >&2
  rc=1
else
  grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|Done )' "$build/fuzz-proto.log" || true
fi

echo "== live fuzzer: ${live_seconds} s, seed $seed"
log=$build/live-fuzz-saged.log
if ! LD_LIBRARY_PATH="$build/tests/fakecuda" SAGE_FAKE_DEVICES=1 \
     "$build/tests/fuzz/sage-live-fuzz" --saged "$build/daemon/saged" --seconds "$live_seconds" \
     --seed "$seed" --log "$log"; then
  echo "fuzz.sh: live fuzzer FAILED (seed $seed; saged's log: $log); replay:" >&2
  echo "  LD_LIBRARY_PATH=$build/tests/fakecuda $build/tests/fuzz/sage-live-fuzz --saged $build/daemon/saged --seed $seed --seconds $live_seconds" >&2
  rc=1
fi
# The live fuzzer checks the log itself; say it here too, where CI logs look.
if grep -n -E 'AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:' "$log" >&2; then
  echo "fuzz.sh: sanitizer reports in $log" >&2
  rc=1
fi
[ "$rc" = 0 ] && echo "fuzz.sh: both fuzzers passed (seed $seed)"
exit "$rc"

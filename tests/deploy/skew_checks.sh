#!/usr/bin/env bash
# shellcheck disable=SC2154 # preload, tmp, fail: set by lib.sh
# Version skew: a pod's libsage and the node's saged come from different
# releases. Against a broker of another protocol version (newer, older,
# refusing ours, granting unknown features) or a broken one (garbage, hang
# up, silence), a function under libsage with SAGE_SHARE=1 runs to the same
# output as without SAGE, exits 0, and prints nothing; with SAGE_VERBOSE=1
# it says the broker speaks another protocol version. saged refuses a client
# of the next version and serves on.
#   skew_checks.sh SKEW_BROKER SHARE_TEST SAGED SAGECTL PYTHON3
set -euo pipefail
broker=$1 prog=$2 saged=$3 sagectl=$4 python=$5
. "$(dirname "$0")/../integration/lib.sh"
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap stop_all EXIT
export SAGE_SHARE=1

native=$("$prog" 8 5)
for mode in newer older refuse features garbage hangup silent; do
  step "a broker that answers as '$mode'"
  sock=$tmp/$mode.sock
  pids+=("$("$broker" "$mode" "$sock")")
  out=$(SAGE_SOCKET=$sock SAGE_TRACE=$tmp/$mode.json LD_PRELOAD=$preload "$prog" 8 5 2>"$tmp/$mode.err") ||
    bad "$mode: the function failed (exit $?)"
  [ "$out" = "$native" ] || bad "$mode: output $out, without SAGE $native"
  [ ! -s "$tmp/$mode.err" ] || bad "$mode: stderr not empty: $(cat "$tmp/$mode.err")"
  [ -f "$tmp/$mode.json" ] || { bad "$mode: no trace (libsage not loaded?)"; continue; }
  for stat in SHARE_HITS SHARE_PUBLISHED; do
    [ "$(stat_of "$tmp/$mode.json" "$stat")" = 0 ] || bad "$mode: $stat is not 0"
  done
  # Asked to, libsage says why sharing is off: another protocol version, named.
  SAGE_SOCKET=$sock SAGE_VERBOSE=1 LD_PRELOAD=$preload "$prog" 8 5 >/dev/null 2>"$tmp/$mode.verbose" ||
    bad "$mode: the verbose run failed"
  case $mode in
    newer | older | refuse)
      grep -q "sage: .*share: the broker on $sock speaks another protocol version" "$tmp/$mode.verbose" ||
        bad "$mode: SAGE_VERBOSE=1 does not name the version skew: $(grep -v 'option SAGE_' "$tmp/$mode.verbose")" ;;
  esac
done
# skew-broker answers as SAGE_PROTO_VERSION + 1 ('newer') and as version 1 ('older').
version=$(sed -n 's/^#define SAGE_PROTO_VERSION \([0-9]*\).*/\1/p' "$(dirname "$0")/../../common/proto.h")
grep -q "speaks protocol version $((version + 1))" "$tmp/newer.verbose" || bad "newer: the broker's version is not named"
grep -q "speaks protocol version 1" "$tmp/older.verbose" || bad "older: the broker's version is not named"

step "saged refuses a client of the next version and serves on"
# Started as systemd would (Type=notify): READY=1 on NOTIFY_SOCKET once it listens.
pids+=("$("$python" - "$saged" "$tmp" <<'PY'
import os, socket, subprocess, sys
saged, tmp = sys.argv[1], sys.argv[2]
notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
notify.bind(tmp + "/notify.sock")
notify.settimeout(10)
log = open(tmp + "/saged.log", "w")
p = subprocess.Popen([saged, "--socket", tmp + "/saged.sock", "--foreground"], stdout=log, stderr=log,
                     env=dict(os.environ, NOTIFY_SOCKET=tmp + "/notify.sock"))
assert notify.recv(64) == b"READY=1"
print(p.pid)
PY
)")
"$broker" client-newer "$tmp/saged.sock" || bad "saged's answer to a newer client is no refusal"
"$sagectl" --socket "$tmp/saged.sock" ping >/dev/null || bad "saged no longer answers after the newer client"
exit $fail

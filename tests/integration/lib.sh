# Shared by the integration check scripts (sourced): the preload under test,
# a scratch folder removed at exit, a broker (stopped at exit), and the
# step/failure reporting.
preload=${SAGE_TEST_PRELOAD:?}
tmp=$(mktemp -d)
saged_pid=
trap 'stop_saged; rm -rf "$tmp"' EXIT
fail=0
step() { printf '== %s\n' "$*"; }
bad() { printf 'FAIL: %s\n' "$*"; fail=1; }
# The counter NAME of libsage in the trace dump FILE.
stat_of() { "$python" -c "import json,sys; print(json.load(open(sys.argv[1]))['otherData']['stats'][sys.argv[2]])" "$1" "$2"; }
# The driver VMM calls a process made: the simulated driver's SAGE_FAKE_VMM_COUNT file, summed.
vmm_calls() { awk '{ n = 0; for (i = 2; i <= NF; i += 2) n += $i; print n }' "$1"; }
# stop_saged: the broker start_saged started, if one runs, stopped and waited for.
stop_saged() {
  [ -z "$saged_pid" ] || { kill "$saged_pid" 2>/dev/null || true; wait "$saged_pid" 2>/dev/null || true; }
  saged_pid=
}
# start_saged [SOCKET [ARGS...]]: $saged serving SOCKET (default $SAGE_SOCKET)
# with ARGS in the background (its pid: saged_pid, stopped at exit; its log:
# $tmp/saged.log), waited for until its socket is there, or exit 1.
start_saged() {
  local sock=${1:-$SAGE_SOCKET}
  shift $(($# > 0))
  "$saged" --socket "$sock" --foreground "$@" 2>>"$tmp/saged.log" &
  saged_pid=$!
  for _ in $(seq 100); do [ -S "$sock" ] && return 0; kill -0 "$saged_pid" 2>/dev/null || break; sleep 0.1; done
  echo "FAIL: saged did not come up"; cat "$tmp/saged.log"; stop_saged; exit 1
}
# run TAG ARGS...: $prog ARGS natively, then under libsage (trace $tmp/TAG.json); the output must be native's.
run() {
  local tag=$1 native out
  shift
  native=$("$prog" "$@")
  out=$(SAGE_TRACE="$tmp/$tag.json" LD_PRELOAD="$preload" "$prog" "$@") || bad "$tag: $* failed (a fault?)"
  [ "$out" = "$native" ] || bad "$tag: output $out vs native $native"
}

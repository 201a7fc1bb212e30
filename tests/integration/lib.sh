# Shared by the integration check scripts (sourced): the preload under test,
# a scratch folder removed at exit, and the step/failure reporting.
preload=${SAGE_TEST_PRELOAD:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
step() { printf '== %s\n' "$*"; }
bad() { printf 'FAIL: %s\n' "$*"; fail=1; }
# The counter NAME of libsage in the trace dump FILE.
stat_of() { "$python" -c "import json,sys; print(json.load(open(sys.argv[1]))['otherData']['stats'][sys.argv[2]])" "$1" "$2"; }
# start_saged: $saged serving $SAGE_SOCKET (its pid: saged_pid; its log: $tmp/saged.log), or exit 1.
start_saged() {
  "$saged" --socket "$SAGE_SOCKET" --foreground 2>"$tmp/saged.log" &
  saged_pid=$!
  for _ in $(seq 100); do [ -S "$SAGE_SOCKET" ] && return 0; kill -0 "$saged_pid" 2>/dev/null || break; sleep 0.1; done
  echo "FAIL: saged did not come up"; cat "$tmp/saged.log"; kill "$saged_pid" 2>/dev/null; exit 1
}
# start_broker SAGED SOCKET [ARGS...]: saged in the background ($saged_pid,
# log $tmp/saged.log), waited for until its socket is there; stopped at exit.
start_broker() {
  local bin=$1 sock=$2
  shift 2
  "$bin" --socket "$sock" --foreground "$@" 2>>"$tmp/saged.log" &
  saged_pid=$!
  trap 'kill "$saged_pid" 2>/dev/null || true; wait "$saged_pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
  for _ in $(seq 100); do [ -S "$sock" ] && break; kill -0 "$saged_pid" 2>/dev/null || break; sleep 0.1; done
  [ -S "$sock" ] || { echo "FAIL: saged did not come up"; cat "$tmp/saged.log"; exit 1; }
}
# run TAG ARGS...: $prog ARGS natively, then under libsage (trace $tmp/TAG.json); the output must be native's.
run() {
  local tag=$1 native out
  shift
  native=$("$prog" "$@")
  out=$(SAGE_TRACE="$tmp/$tag.json" LD_PRELOAD="$preload" "$prog" "$@") || bad "$tag: $* failed (a fault?)"
  [ "$out" = "$native" ] || bad "$tag: output $out vs native $native"
}

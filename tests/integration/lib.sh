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

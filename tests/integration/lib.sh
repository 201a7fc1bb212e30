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

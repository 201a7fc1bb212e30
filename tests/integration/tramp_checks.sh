#!/usr/bin/env bash
# Trampolines under libsage (tramp_test.c): handed out with SAGE_SUSPEND=1,
# the driver's own pointers without it, the export-table kill switch, and
# the trace counting calls through trampolines by name (sage-trace shows them).
#   tramp_checks.sh TRAMP_TEST PYTHON3 SAGE_TRACE
set -euo pipefail
test_exe=$1 python=$2 sage_trace=$3
. "$(dirname "$0")/lib.sh"

step "SAGE_SUSPEND=1 SAGE_GATE_EXPORT_TABLES=1: trampolines for unhooked entry points and export-table functions"
SAGE_SUSPEND=1 SAGE_GATE_EXPORT_TABLES=1 LD_PRELOAD=$preload "$test_exe" on || bad "suspend on"

step "SAGE_SUSPEND=1 alone: export tables as the driver gave them (the default: wrapping breaks cudart on driver 580)"
SAGE_SUSPEND=1 LD_PRELOAD=$preload "$test_exe" plain-tables || bad "default tables not plain"

step "SAGE_SUSPEND unset: the driver's own pointers and table"
LD_PRELOAD=$preload "$test_exe" off || bad "suspend off"
SAGE_SUSPEND=0 LD_PRELOAD=$preload "$test_exe" off || bad "suspend=0"

step "SAGE_GATE_EXPORT_TABLES=0: the driver's own table, trampolines for entry points"
SAGE_SUSPEND=1 SAGE_GATE_EXPORT_TABLES=0 LD_PRELOAD=$preload "$test_exe" plain-tables || bad "kill switch"

step "SAGE_TRACE_UNHOOKED=1: the trace counts calls through trampolines by name"
SAGE_TRACE="$tmp/t.json" SAGE_TRACE_UNHOOKED=1 LD_PRELOAD=$preload "$test_exe" count 7 || bad "traced run"
"$python" - "$tmp/t.json" <<'PY' || bad "unhooked_calls in the dump"
import json, sys
d = json.load(open(sys.argv[1]))["otherData"]
assert d["unhooked_calls"].get("cuDeviceGetName") == 7, d["unhooked_calls"]
assert d["stats"]["TRAMP_HANDED_OUT"] >= 1, d["stats"]
PY
"$sage_trace" summary "$tmp/t.json" | grep -E '^  cuDeviceGetName +7$' >/dev/null || bad "sage-trace summary shows no cuDeviceGetName 7"
"$sage_trace" summary --json "$tmp/t.json" | grep -F '"unhooked":{"cuDeviceGetName":7}' >/dev/null ||
  bad "sage-trace summary --json shows no unhooked cuDeviceGetName 7"

step "SAGE_TRACE_UNHOOKED=0, and unset (the default): the trace hands out the driver's own pointers"
SAGE_TRACE="$tmp/t0.json" SAGE_TRACE_UNHOOKED=0 LD_PRELOAD=$preload "$test_exe" off || bad "trace without trampolines"
SAGE_TRACE="$tmp/t1.json" LD_PRELOAD=$preload "$test_exe" off || bad "trace, SAGE_TRACE_UNHOOKED unset"

exit $fail

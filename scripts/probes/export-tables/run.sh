#!/usr/bin/env bash
# Which private tables real cudart programs take from cuGetExportTable, and
# whether SAGE's trampolines can wrap them (issue 12 item 2; docs/interception.md,
# "Trampolines"). On the GPU machine, from the repository root after a build:
#
#   scripts/probes/export-tables/run.sh
#   Environment: OUT (default ./probe-out): OUT/export-tables.txt (one line of
#     facts per program and mode, then the raw table lines); LIBSAGE (default
#     build/intercept/libsage.so); SAGE_TRACE_TOOL (default build/tools/sage-trace);
#     NVCC (default nvcc); PYTHON (default python3, needs torch for the torch row).
#
# For each program (hello: a static-cudart nvcc program; torch: torch.zeros(1).cuda())
#   list:    SAGE_VERBOSE=2 under libsage with suspend off (nothing wrapped): every
#            table asked for, its UUID, first word (the size, when it is one) and,
#            per slot, T = a pointer into libcuda's executable text, . = anything else;
#   wrapped: SAGE_SUSPEND=1 SAGE_GATE_EXPORT_TABLES=1 (no broker needed): the tables handed out as copies with
#            trampolines; the output must be identical to the list run's, and
#            EXPORT_TABLES_WRAPPED / TRAMP_HANDED_OUT say how much was wrapped;
#   trace:   SAGE_SUSPEND=1 + SAGE_TRACE: the calls through trampolines by name
#            (sage-trace summary's "unhooked entry points").
# What proves it: `wrapped: program=hello rc=0 same_output=yes wrapped=N` with N >= 1
# (and the same for torch); a `same_output=no` or a nonzero rc means a wrapped
# table broke cudart: run with SAGE_GATE_EXPORT_TABLES=0 and report the table lines.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${OUT:-$PWD/probe-out}
libsage=${LIBSAGE:-$root/build/intercept/libsage.so}
sage_trace=${SAGE_TRACE_TOOL:-$root/build/tools/sage-trace}
nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
python=${PYTHON:-python3}
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
mkdir -p "$out"
report=$out/export-tables.txt
: > "$report"
[ -f "$libsage" ] || { echo "run.sh: no $libsage (build first)" >&2; exit 1; }

stat_of() { sed -n "s/^sage: stat $2=\([0-9]*\)$/\1/p" "$1" | tail -n1; }

probe() { # NAME COMMAND...
    local name=$1; shift
    local rc1 rc2 same tables
    SAGE_VERBOSE=2 LD_PRELOAD=$libsage timeout 300 "$@" > "$bin/$name.list.out" 2> "$bin/$name.list.err"
    rc1=$?
    tables=$(grep -c '^sage: export table ' "$bin/$name.list.err")
    echo "list: program=$name rc=$rc1 table_requests=$tables distinct=$(grep '^sage: export table ' "$bin/$name.list.err" | sort -u | wc -l)" | tee -a "$report"
    SAGE_SUSPEND=1 SAGE_GATE_EXPORT_TABLES=1 SAGE_VERBOSE=2 LD_PRELOAD=$libsage timeout 300 "$@" > "$bin/$name.wrap.out" 2> "$bin/$name.wrap.err"
    rc2=$?
    same=no
    cmp -s "$bin/$name.list.out" "$bin/$name.wrap.out" && same=yes
    echo "wrapped: program=$name rc=$rc2 same_output=$same wrapped=$(stat_of "$bin/$name.wrap.err" EXPORT_TABLES_WRAPPED) plain=$(stat_of "$bin/$name.wrap.err" EXPORT_TABLES_PLAIN) handed_out=$(stat_of "$bin/$name.wrap.err" TRAMP_HANDED_OUT) pool_full=$(stat_of "$bin/$name.wrap.err" TRAMP_POOL_FULL)" | tee -a "$report"
    SAGE_SUSPEND=1 SAGE_TRACE="$bin/$name.trace.json" LD_PRELOAD=$libsage timeout 300 "$@" > /dev/null 2>&1
    if [ -x "$sage_trace" ] && [ -f "$bin/$name.trace.json" ]; then
        echo "trace: program=$name unhooked=$("$sage_trace" summary --json "$bin/$name.trace.json" | sed -n 's/.*"unhooked":\({[^}]*}\).*/\1/p')" | tee -a "$report"
    fi
    { echo "--- $name: tables (list run)"; grep '^sage: export table ' "$bin/$name.list.err" | sort -u
      echo "--- $name: output"; cat "$bin/$name.list.out"; } >> "$report"
    [ "$rc2" = 0 ] && [ "$same" = yes ] || { echo "--- $name: stderr of the wrapped run"; tail -n 30 "$bin/$name.wrap.err"; } >> "$report"
}

if "$nvcc" -O2 -o "$bin/hello" "$here/hello.cu" > "$bin/nvcc.log" 2>&1; then
    probe hello "$bin/hello"
else
    echo "list: program=hello build=failed ($(tail -n1 "$bin/nvcc.log"))" | tee -a "$report"
fi
if "$python" -c 'import torch' 2>/dev/null; then
    probe torch "$python" -c 'import torch; print(torch.zeros(1).cuda() + 1)'
else
    echo "list: program=torch skipped=no-torch" | tee -a "$report"
fi
echo "report: $report"

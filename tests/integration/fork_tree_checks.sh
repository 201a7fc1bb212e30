#!/usr/bin/env bash
# A CUDA process tree under the preload (fork_tree.c, the simulated driver's
# form of the GPU suite's fork_exec): the parent forks and execs CUDA
# children, one through `sh -c`, and forks one that uses no CUDA. Every run
# prints what the native run printed; exactly the three processes that made
# driver calls leave a trace (not the shell, not the forked child: theirs
# would be empty dumps or would clobber another's), each a valid one; the
# preload says nothing on stderr. Plain, SAGE_WARMUP=eager, and SAGE_SHARE=1
# with a broker (the later processes map the weights the first published).
#   fork_tree_checks.sh FORK_TREE SAGED CHECK_TRACE_PY PYTHON3
set -euo pipefail
prog=$1 saged=$2 check=$3 python=$4
. "$(dirname "$0")/lib.sh"

native=$("$prog") || bad "native run failed"
echo "$native"
[ "$(grep -c ': weights ' <<< "$native")" = 4 ] || bad "native output lacks a process's line"

# tree TAG [VAR=VALUE...]: one run under libsage, traces $tmp/TAG.PID.json.
tree() {
  local tag=$1 out traces t
  shift
  out=$(env "$@" SAGE_TRACE="$tmp/$tag.%p.json" LD_PRELOAD="$preload" "$prog" 2>"$tmp/$tag.err") ||
    bad "$tag: the run failed"
  [ "$out" = "$native" ] || { bad "$tag: output differs from native"; diff <(echo "$native") <(echo "$out") || true; }
  [ ! -s "$tmp/$tag.err" ] || { bad "$tag: libsage printed on stderr uninvited"; cat "$tmp/$tag.err"; }
  traces=("$tmp/$tag".*.json)
  [ -e "${traces[0]}" ] || traces=()
  [ ${#traces[@]} = 3 ] || bad "$tag: ${#traces[@]} traces, expected 3 (parent, exec child, shell's child)"
  for t in "${traces[@]}"; do
    "$python" "$check" "$t" --expect-cat mem,copy,launch > /dev/null || bad "$tag: $(basename "$t") is not a valid trace"
  done
}

step "plain"
tree plain
step "SAGE_WARMUP=eager"
tree eager SAGE_WARMUP=eager
step "SAGE_SHARE=1: the children and the second tree map the published weights"
export SAGE_SOCKET=$tmp/saged.sock
start_saged
tree share1 SAGE_SHARE=1
tree share2 SAGE_SHARE=1
hits=0
for t in "$tmp"/share2.*.json; do hits=$((hits + $(stat_of "$t" SHARE_HITS))); done
echo "second tree: $hits sharing hits"
[ "$hits" -ge 4 ] || bad "second tree: $hits sharing hits, expected one for each process's weights (4)"
exit $fail

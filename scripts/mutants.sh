#!/usr/bin/env bash
# Mutation check of the suites: applies each one-line bug of
# scripts/mutants.list to a scratch copy of the tree, rebuilds, runs the unit
# and integration suites, and says whether some test failed (caught) or not
# (survived). Prints "N of M caught"; exits 0 only when every mutant was
# caught. Run it before resolving an issue that changes a core mechanism and
# quote its last line.
#   scripts/mutants.sh [--list|--check] [--only ID|NUMBER]... [--no-baseline] [--dir DIR]
#     --list         print the list (number, id, mechanism, file, what it breaks)
#     --check        only check that every mutant's pattern occurs exactly once
#                    in its file (after reformatting or refactoring); no build
#     --only K       run mutant K (its number or id); may be repeated
#     --no-baseline  skip the unmutated run (which proves the suites pass first)
#     --dir DIR      scratch folder (default build-mutants/: src/ is the copy of
#                    the working tree, build/ its build, reused between runs so
#                    each mutant rebuilds only what it touches)
# Environment: SAGE_MUTANT_TIMEOUT (seconds per suite run, default 600).
set -euo pipefail
# One compound command: bash reads it whole before running it, so editing
# this file (or the list) while it runs cannot derail the run.
{
cd "$(dirname "$0")/.."
root=$PWD
list=$root/scripts/mutants.list
scratch=$root/build-mutants
only=()
baseline=1
do_list=0
do_check=0
while [ $# -gt 0 ]; do
  case $1 in
    --list) do_list=1 ;;
    --check) do_check=1 ;;
    --only) only+=("$2"); shift ;;
    --no-baseline) baseline=0 ;;
    --dir) scratch=$2; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "mutants.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# The list parser and the patcher: python3 (the suites need it anyway).
helper() {
  python3 - "$list" "$@" <<'PY'
import re, sys

def parse(path):
    muts, cur = [], {}
    for line in open(path).read().split("\n") + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if cur:
                muts.append(cur)
            cur = {}
            continue
        key, sep, value = line.partition(":")
        if not sep:
            sys.exit(f"mutants.list: not 'key: value': {line!r}")
        cur[key.strip()] = value[1:] if value.startswith(" ") else value
    for i, m in enumerate(muts, 1):
        for k in ("id", "mechanism", "file", "find", "replace", "breaks"):
            if k not in m:
                sys.exit(f"mutants.list: mutant {i} ({m.get('id', '?')}) has no {k}")
    ids = [m["id"] for m in muts]
    if len(set(ids)) != len(ids):
        sys.exit("mutants.list: duplicate ids")
    return muts

def pattern(find):
    return re.compile(r"\s+".join(re.escape(t) for t in find.split()))

muts = parse(sys.argv[1])
cmd = sys.argv[2]
if cmd == "list":
    for i, m in enumerate(muts, 1):
        print(f"{i:3} {m['id']:36} {m['mechanism']:18} {m['file']}\n    {m['breaks']}")
elif cmd == "select":  # numbers of the mutants asked for (all when none)
    want = sys.argv[3:]
    for i, m in enumerate(muts, 1):
        if not want or str(i) in want or m["id"] in want:
            print(i)
    unknown = [w for w in want if w not in [str(i) for i in range(1, len(muts) + 1)] + [m["id"] for m in muts]]
    if unknown:
        sys.exit(f"mutants.sh: no mutant {', '.join(unknown)}")
elif cmd == "field":
    print(muts[int(sys.argv[3]) - 1][sys.argv[4]])
elif cmd == "apply":  # apply mutant K to the copy in SRC; exit 3 when it no longer anchors
    m = muts[int(sys.argv[3]) - 1]
    path = sys.argv[4] + "/" + m["file"]
    text = open(path).read()
    hits = list(pattern(m["find"]).finditer(text))
    if len(hits) != 1:
        print(f"pattern found {len(hits)} times in {m['file']} (re-anchor it): {m['find']}")
        sys.exit(3)
    h = hits[0]
    open(path, "w").write(text[: h.start()] + m["replace"] + text[h.end():])
elif cmd == "check":  # every mutant anchors exactly once in the tree at ROOT
    bad = 0
    for i, m in enumerate(muts, 1):
        n = len(pattern(m["find"]).findall(open(sys.argv[3] + "/" + m["file"]).read()))
        if n != 1:
            print(f"{i:3} {m['id']}: pattern found {n} times in {m['file']} (re-anchor it): {m['find']}")
            bad += 1
    print(f"{len(muts) - bad} of {len(muts)} mutants anchor exactly once")
    sys.exit(1 if bad else 0)
elif cmd == "count":
    print(len(muts))
PY
}

# A snapshot: the list may be edited while a run goes on.
mkdir -p "$scratch"
cp "$list" "$scratch/mutants.list"
list=$scratch/mutants.list
if [ "$do_list" = 1 ]; then
  helper list
  exit 0
fi
if [ "$do_check" = 1 ]; then
  helper check "$root"
  exit
fi
selected=$(helper select "${only[@]}")
total=$(wc -w <<<"$selected")

# The scratch copy: tracked and untracked-but-not-ignored files of the working
# tree. A file is rewritten only where it differs, so timestamps of the rest
# stay and ninja rebuilds only what changed (a mutant left behind by a killed
# run is undone here too).
mkdir -p "$scratch/src"
sync_tree() {
  (cd "$root" && git ls-files -z --cached --others --exclude-standard) |
    while IFS= read -r -d '' f; do
      [ -f "$root/$f" ] || continue
      if ! cmp -s "$root/$f" "$scratch/src/$f"; then
        mkdir -p "$scratch/src/$(dirname "$f")"
        cp -p "$root/$f" "$scratch/src/$f"
        touch "$scratch/src/$f"
      fi
    done
}
sync_tree
if [ ! -f "$scratch/build/build.ninja" ]; then
  # No -Werror: a mutant may leave a function unused, which is no test's business.
  meson setup "$scratch/build" "$scratch/src" -Dwerror=false >"$scratch/setup.log" 2>&1 ||
    { cat "$scratch/setup.log"; echo "mutants.sh: meson setup failed" >&2; exit 2; }
fi

meson configure "$scratch/build" -Dwerror=false >/dev/null
timeout_s=${SAGE_MUTANT_TIMEOUT:-600}
# Build and run the suites; prints the failing tests; returns the suite's status.
run_suites() {
  local log=$1
  if ! ninja -C "$scratch/build" >"$log.build" 2>&1; then
    return 100
  fi
  timeout "$timeout_s" meson test -C "$scratch/build" --no-rebuild --print-errorlogs \
    --suite unit --suite integration --maxfail 1 >"$log" 2>&1
}
failed_tests() {
  sed -n 's/^ *[0-9]*\/[0-9]* [^ ]* \/ \([^ ]*\) *\(FAIL\|TIMEOUT\|ERROR\) .*/\1/p' "$1" | sort -u | tr '\n' ' '
}

if [ "$baseline" = 1 ]; then
  printf 'baseline (no mutant): '
  t0=$SECONDS
  if run_suites "$scratch/baseline.log"; then
    echo "suites pass ($((SECONDS - t0)) s)"
  else
    echo "FAILS: fix the suites first ($(failed_tests "$scratch/baseline.log")); see $scratch/baseline.log"
    exit 2
  fi
fi

caught=0
survivors=()
for k in $selected; do
  id=$(helper field "$k" id)
  file=$(helper field "$k" file)
  printf '[%d/%d] %s (%s): ' "$k" "$(helper count)" "$id" "$file"
  t0=$SECONDS
  set +e
  msg=$(helper apply "$k" "$scratch/src")
  applied=$?
  set -e
  if [ "$applied" != 0 ]; then
    echo "NOT APPLIED: $msg"
    survivors+=("$id (not applied)")
    continue
  fi
  set +e
  run_suites "$scratch/mutant-$id.log"
  rc=$?
  set -e
  # Undo: the original again, with a new timestamp so ninja rebuilds it.
  cp "$root/$file" "$scratch/src/$file"
  touch "$scratch/src/$file"
  if [ "$rc" = 100 ]; then
    echo "DOES NOT BUILD (fix the mutant): $(grep -m1 -i error "$scratch/mutant-$id.log.build")"
    survivors+=("$id (does not build)")
  elif [ "$rc" != 0 ]; then
    echo "caught by $(failed_tests "$scratch/mutant-$id.log")($((SECONDS - t0)) s)"
    caught=$((caught + 1))
  else
    echo "SURVIVED ($((SECONDS - t0)) s): $(helper field "$k" breaks)"
    survivors+=("$id")
  fi
done
ninja -C "$scratch/build" >/dev/null 2>&1 || true

echo "$caught of $total caught"
if [ ${#survivors[@]} -gt 0 ]; then
  echo "not caught: ${survivors[*]}"
  exit 1
fi
exit 0
}

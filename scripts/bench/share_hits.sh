#!/usr/bin/env bash
# Sharing's hits for PyTorch models on a GPU (issue 14: coverage and the cost
# of a hit), native and SAGE side by side in one run:
# - resnet50 and bert (suite_fn.py, weights from safetensors): per model, R
#   native invocations, then under SAGE_SHARE=1 with a fresh broker and
#   learned placement (SAGE_SHARE_PLACE): 2 warm-up invocations (the first
#   learns and publishes, the second publishes what placement moved), then
#   R measured ones: upload ms (what the app waits for) and the shared
#   fraction, (SHARE_BYTES_MAPPED + SHARE_BYTES_ASSEMBLED) / (SHARE_BYTES_MAPPED
#   + SHARE_BYTES_COPIED), with SHARE_SYNCS_SKIPPED, SHARE_PLACED and
#   SHARE_COPY_CHEAPER (uploads copied: their hit measured costlier); then
#   R more with SAGE_SHARE_COPY_CHEAPER=1 (time first), a line of their own;
# - gpt2 (medium, fp16): 16 processes started at once, native, then under
#   SAGE on the warm broker, then N with SAGE_SHARE_COPY_CHEAPER=1: median
#   upload ms per process.
# Every SAGE output must be bit-identical to native's (checksum), else FAIL.
# Prints two lines per model (memory first, time first) and `share_hits: ok`; with OUT set,
# writes $OUT/share-hits.jsonl (one record per invocation).
#   scripts/bench/share_hits.sh [--build DIR] [--runs R] [--conc N] [--quick] [--no-place] [--data DIR]
#   --quick: R=1, conc 16 (about 2-3 minutes on an H100, to be checked)
#   --data DIR: the weights there (sharing-coverage.sh's, suspend.sh's names), made only if missing
set -euo pipefail
build=build runs=3 conc=16 place=1 data=
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    --quick|--no-place) [ "$1" = --quick ] && runs=1 || place=0 ;;
    --build|--runs|--conc|--data) [ $# -ge 2 ] || exit 2; declare "${1#--}=$2"; shift ;;
    *) echo "share_hits: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
here=$(cd "$(dirname "$0")" && pwd) python=${PYTHON:-python3}
fn=$here/suite_fn.py
. "$here/lib.sh"
bench_require_gpu share_hits
build=$(cd "$build" && pwd) tmp=$(mktemp -d) saged_pid=
trap '[ -n "$saged_pid" ] && kill "$saged_pid" 2>/dev/null; rm -rf "$tmp"' EXIT
bench_bytecode "$tmp" "$python"
export SAGE_SOCKET=$tmp/saged.sock
"$build/daemon/saged" --socket "$SAGE_SOCKET" --foreground 2>"$tmp/saged.log" &
saged_pid=$!
for _ in $(seq 100); do [ -S "$SAGE_SOCKET" ] && break; sleep 0.1; done
[ -S "$SAGE_SOCKET" ] || { echo "share_hits: FAIL: saged did not come up"; exit 1; }
mkdir -p "$tmp/place"
sage_env=(SAGE_SHARE=1 LD_PRELOAD="$build/intercept/libsage.so")
[ "$place" = 1 ] && sage_env+=(SAGE_SHARE_PLACE="$tmp/place")
fail=0

# one MODE KIND TAG: one invocation; appends its record; prints its SAGE_BENCH json.
one() {
  local mode=$1 kind=$2 tag=$3 line stats=null
  local cheaper=()
  [ "$mode" = cheaper ] && cheaper=(SAGE_SHARE_COPY_CHEAPER=1)
  if [ "$mode" = native ]; then
    line=$("$python" "$fn" run "$kind" "$data/$kind.safetensors" | grep '^SAGE_BENCH ')
  else
    line=$(env "${sage_env[@]}" ${cheaper[@]+"${cheaper[@]}"} SAGE_TRACE="$tmp/$tag.json" "$python" "$fn" run "$kind" "$data/$kind.safetensors" |
      grep '^SAGE_BENCH ')
    stats=$("$python" -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))['otherData']['stats']))" \
      "$tmp/$tag.json")
  fi
  printf '{"mode":"%s","kind":"%s","tag":"%s","bench":%s,"stats":%s}\n' "$mode" "$kind" "$tag" "${line#SAGE_BENCH }" \
    "$stats" > "$tmp/rec-$tag.json"
}

data=${data:-$tmp}
mkdir -p "$data"
gens=()
for kind in resnet50 bert gpt2; do
  [ -s "$data/$kind.safetensors" ] && continue
  "${pyw[@]}" "$fn" gen "$kind" "$data/$kind.safetensors" > /dev/null & gens+=($!)
done
for p in ${gens[@]+"${gens[@]}"}; do wait "$p" || { echo "share_hits: FAIL: generating weights"; exit 1; }; done
for kind in resnet50 bert; do
  for i in $(seq "$runs"); do one native "$kind" "n$kind$i"; done
  one sage "$kind" "w${kind}1"
  one sage "$kind" "w${kind}2"
  for i in $(seq "$runs"); do one sage "$kind" "s$kind$i"; done
  for i in $(seq "$runs"); do one cheaper "$kind" "k$kind$i"; done
done
# gpt2: published by two invocations, then conc at once in each mode.
one sage gpt2 wgpt21
one sage gpt2 wgpt22
for mode in native sage cheaper; do
  pids=()
  for i in $(seq "$conc"); do
    one "$mode" gpt2 "c$mode$i" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || fail=1; done
done

cat "$tmp"/rec-*.json > "$tmp/runs.jsonl"
"$python" - "$tmp/runs.jsonl" <<'PY' || fail=1
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
bad = 0
def med(xs):
    return statistics.median(xs) if xs else float("nan")
# Assembly (share_assemble.c: read back, key, look up, map the runs uploads filled in part), medians in ms.
for kind in ("resnet50", "bert", "gpt2"):
    st = [r["stats"] for r in recs if r["kind"] == kind and r["mode"] == "sage" and not r["tag"].startswith("w")]
    if st:
        print("%-9s sage: assembled %s runs, %s hits, %.1f MB; ms assemble %.1f (max %.1f)" % (
            kind, st[-1].get("SHARE_ASSEMBLED"), st[-1].get("SHARE_ASSEMBLED_HITS"),
            st[-1].get("SHARE_BYTES_ASSEMBLED", 0) / 1e6, med([s.get("SHARE_NS_ASSEMBLE", 0) / 1e6 for s in st]),
            max(s.get("SHARE_NS_ASSEMBLE", 0) / 1e6 for s in st)))
for kind, mode in [(k, m) for k in ("resnet50", "bert", "gpt2") for m in ("sage", "cheaper")]:
    nat = [r for r in recs if r["kind"] == kind and r["mode"] == "native"]
    sage = [r for r in recs if r["kind"] == kind and r["mode"] == mode and not r["tag"].startswith("w")]
    sums = {r["bench"]["checksum"] for r in nat + sage}
    if len(sums) != 1:
        print("share_hits: FAIL: %s outputs differ: %s" % (kind, sorted(sums)))
        bad = 1
    frac = []
    for r in sage:
        s = r["stats"]
        total = s["SHARE_BYTES_MAPPED"] + s["SHARE_BYTES_COPIED"]
        frac.append((s["SHARE_BYTES_MAPPED"] + s["SHARE_BYTES_ASSEMBLED"]) / total if total else 0.0)
    print("%-9s %s: upload ms native %.1f, %s %.1f (median of %d/%d); shared %.4f (min %.4f); "
          "syncs skipped %s, placed %s, copied instead %s" % (
              kind, "x%d at once" % len(nat) if kind == "gpt2" else "alone", med([r["bench"]["upload_ms"] for r in nat]),
              "sage" if mode == "sage" else "sage+SAGE_SHARE_COPY_CHEAPER=1", med([r["bench"]["upload_ms"] for r in sage]),
              len(nat), len(sage), med(frac), min(frac) if frac else float("nan"),
              sage[-1]["stats"].get("SHARE_SYNCS_SKIPPED") if sage else None,
              sage[-1]["stats"].get("SHARE_PLACED") if sage else None,
              sage[-1]["stats"].get("SHARE_COPY_CHEAPER") if sage else None))
# Where a hit's time goes (medians over the SAGE invocations, ms), and how many hits made their rests while the
# broker answered (SHARE_RESTS_AHEAD): NS_BROKER no longer holds the synchronize and creates made meanwhile.
for kind in ("resnet50", "bert", "gpt2"):
    sage = [r["stats"] for r in recs if r["kind"] == kind and r["mode"] == "sage" and not r["tag"].startswith("w")]
    if sage:
        print("%-9s sage: hits %s, rests ahead %s, ms key %.1f broker %.1f remap %.1f (max %.1f %.1f %.1f)" % (
            kind, sage[-1].get("SHARE_HITS"), sage[-1].get("SHARE_RESTS_AHEAD"),
            *[med([s.get(k, 0) / 1e6 for s in sage]) for k in ("SHARE_NS_KEY", "SHARE_NS_BROKER", "SHARE_NS_REMAP")],
            *[max(s.get(k, 0) / 1e6 for s in sage) for k in ("SHARE_NS_KEY", "SHARE_NS_BROKER", "SHARE_NS_REMAP")]))
sys.exit(bad)
PY
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp "$tmp/runs.jsonl" "$OUT/share-hits.jsonl"
fi
[ "$fail" = 0 ] && echo "share_hits: ok"
exit "$fail"

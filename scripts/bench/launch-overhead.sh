#!/usr/bin/env bash
# Hook overhead on the launch path: runs scripts/bench/launch_overhead.cu
# natively, under libsage with tracing off, and under libsage with tracing on,
# interleaved round by round (the order rotates each round) so that clock and
# thermal drift cancel out, then compares medians. Target: tracing off costs
# at most 2% per launch.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/bench/launch-overhead.sh [--build DIR] [--rounds N] [--launches N]
                                        [--sync-launches N] [--reps N] [--no-trace] [--arch ARCH]

Measures the cost per kernel launch natively and under libsage (tracing off
and on), interleaved, and prints a side-by-side table.

  --build DIR         meson build folder holding intercept/libsage.so (default: build)
  --rounds N          rounds of (native, sage, sage+trace), order rotated (default: 5)
  --launches N        launches per async sample (default: 200000)
  --sync-launches N   launch+sync iterations per sync sample (default: 20000)
  --reps N            samples per process (default: 7)
  --no-trace          leave out the tracing-on variant
  --arch ARCH         nvcc -arch value (default: sm_90)
  -h, --help          this help

Binary and logs go to DIR/bench-bin. With OUT set, writes OUT/launch-overhead.json.
Environment: NVCC (nvcc to use), PYTHON (default python3).
Exit: 0 measured (whatever the verdict), 1 error, 77 no GPU or no nvcc.
EOF
}

build_dir=build
rounds=5
launches=200000
sync_launches=20000
reps=7
with_trace=1
arch=sm_90
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build_dir=${2:?--build needs a folder}; shift 2 ;;
        --rounds) rounds=${2:?}; shift 2 ;;
        --launches) launches=${2:?}; shift 2 ;;
        --sync-launches) sync_launches=${2:?}; shift 2 ;;
        --reps) reps=${2:?}; shift 2 ;;
        --no-trace) with_trace=0; shift ;;
        --arch) arch=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "launch-overhead: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}

. "$here/lib.sh"
bench_require_gpu launch-overhead
bench_require_nvcc launch-overhead

build_dir=$(cd "$build_dir" && pwd)
libsage=$build_dir/intercept/libsage.so
[ -f "$libsage" ] || { echo "launch-overhead: $libsage not found" >&2; exit 1; }

bin_dir=$build_dir/bench-bin
logs=$bin_dir/launch-overhead
rm -rf "$logs"
mkdir -p "$logs" "$bin_dir/tmp"
prog=$bin_dir/launch_overhead
echo "launch-overhead: building $prog"
env "TMPDIR=$bin_dir/tmp" "$nvcc" "-arch=$arch" -O2 -I"$here" -o "$prog" "$here/launch_overhead.cu"

variants=(native sage)
[ "$with_trace" = 1 ] && variants+=(sage_trace)
args=(--launches "$launches" --sync-launches "$sync_launches" --reps "$reps")

# A hung run is killed, and the script stops with an error.
limit=(timeout --kill-after=10 600)

run_variant() {
    local variant=$1 round=$2
    local out=$logs/$variant.$round.json err=$logs/$variant.$round.stderr
    case "$variant" in
        native) "${limit[@]}" env -u LD_PRELOAD -u SAGE_TRACE "$prog" "${args[@]}" > "$out" 2> "$err" ;;
        sage) "${limit[@]}" env -u SAGE_TRACE "LD_PRELOAD=$libsage" "$prog" "${args[@]}" > "$out" 2> "$err" ;;
        sage_trace)
            "${limit[@]}" env "LD_PRELOAD=$libsage" "SAGE_TRACE=$logs/trace.$round.json" \
                "$prog" "${args[@]}" > "$out" 2> "$err" || return
            # The dump holds every launch (~100+ MB): keep its size, not the file.
            if [ -f "$logs/trace.$round.json" ]; then
                stat -c %s "$logs/trace.$round.json" > "$logs/trace.$round.size"
                rm -f "$logs/trace.$round.json"
            else
                echo 0 > "$logs/trace.$round.size"
            fi ;;
    esac
}

n=${#variants[@]}
for ((round = 1; round <= rounds; round++)); do
    order=()
    for ((k = 0; k < n; k++)); do
        order+=("${variants[(k + round - 1) % n]}")
    done
    echo "launch-overhead: round $round/$rounds: ${order[*]}"
    for v in "${order[@]}"; do
        if ! run_variant "$v" "$round"; then
            echo "launch-overhead: $v failed in round $round: $(tail -n1 "$logs/$v.$round.stderr")" >&2
            exit 1
        fi
    done
done

gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1 || true)
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n1 || true)
cuda_release=$("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p' | head -n1 || true)

BENCH_LOGS=$logs BENCH_ROUNDS=$rounds BENCH_VARIANTS="${variants[*]}" BENCH_OUT=${OUT:-} \
BENCH_GPU=$gpu_name BENCH_DRIVER=$driver BENCH_CUDA=$cuda_release BENCH_CPUS=$(nproc) \
BENCH_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) BENCH_LIBSAGE=$libsage \
"$python" - <<'EOF'
import json, os, statistics, sys

e = os.environ
logs, rounds = e["BENCH_LOGS"], int(e["BENCH_ROUNDS"])
variants = e["BENCH_VARIANTS"].split()
raw = {v: [] for v in variants}
problems = []
for v in variants:
    for r in range(1, rounds + 1):
        with open(f"{logs}/{v}.{r}.json") as f:
            doc = json.loads(f.read().strip().splitlines()[-1])
        want = v != "native"
        if doc["sage_loaded"] != want:
            problems.append(f"{v} round {r}: libsage {'not ' if want else ''}loaded")
        if v == "sage_trace":
            with open(f"{logs}/trace.{r}.size") as f:
                doc["trace_bytes"] = int(f.read())
            if doc["trace_bytes"] == 0:
                problems.append(f"sage_trace round {r}: no trace written")
        raw[v].append(doc)

summary = {}
for v in variants:
    summary[v] = {}
    for key in ("async_ns", "sync_ns"):
        samples = [x for doc in raw[v] for x in doc[key]["runs"]]
        # Median over every sample of every round; min is the best case.
        summary[v][key] = {"median": statistics.median(samples), "min": min(samples),
                           "samples": len(samples)}

def overhead(v, key, stat="median"):
    base = summary["native"][key][stat]
    val = summary[v][key][stat]
    return {"ns": val - base, "pct": 100.0 * (val - base) / base}

for v in variants[1:]:
    for key in ("async_ns", "sync_ns"):
        summary[v][key]["overhead_median"] = overhead(v, key)
        summary[v][key]["overhead_min"] = overhead(v, key, "min")

names = {"native": "native", "sage": "sage (trace off)", "sage_trace": "sage (trace on)"}
labels = {"async_ns": "async launch", "sync_ns": "launch + sync"}
print()
print(f"{'ns per launch':<22}" + "".join(f" | {names[v]:>30}" for v in variants))
print("-" * (22 + 33 * len(variants)))
for key in ("async_ns", "sync_ns"):
    for stat in ("median", "min"):
        cells = []
        for v in variants:
            s = summary[v][key]
            cell = f"{s[stat]:.1f}"
            if v != "native":
                o = overhead(v, key, stat)
                cell += f" ({o['pct']:+.2f}%, {o['ns']:+.1f} ns)"
            cells.append(cell)
        print(f"{labels[key] + ' ' + stat:<22}" + "".join(f" | {c:>30}" for c in cells))

target = 2.0
verdict = {}
if "sage" in summary:
    for key in ("async_ns", "sync_ns"):
        pct = summary["sage"][key]["overhead_median"]["pct"]
        verdict[key] = "met" if pct <= target else "MISSED"
    print()
    print(f"target: trace off <= {target}% slower: async {verdict['async_ns']} "
          f"({summary['sage']['async_ns']['overhead_median']['pct']:+.2f}%), "
          f"sync {verdict['sync_ns']} ({summary['sage']['sync_ns']['overhead_median']['pct']:+.2f}%)")
for p in problems:
    print("problem:", p)

doc = {
    "bench": "launch_overhead",
    "machine": {"gpu": e["BENCH_GPU"], "driver": e["BENCH_DRIVER"], "cuda": e["BENCH_CUDA"],
                "cpus": int(e["BENCH_CPUS"]), "date": e["BENCH_DATE"]},
    "libsage": e["BENCH_LIBSAGE"],
    "rounds": rounds,
    "config": {k: raw["native"][0][k] for k in ("launches", "sync_launches", "reps")},
    "target_pct": target,
    "verdict": verdict,
    "problems": problems,
    "summary": summary,
    "raw": raw,
}
if e.get("BENCH_OUT"):
    os.makedirs(e["BENCH_OUT"], exist_ok=True)
    path = os.path.join(e["BENCH_OUT"], "launch-overhead.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print("wrote", path)
sys.exit(1 if problems else 0)
EOF

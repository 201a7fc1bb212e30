#!/usr/bin/env bash
# Startup benchmark: time from exec to first kernel completion of a small
# static-cudart function (cudaFree(0) + one kernel + sync), natively and
# under libsage, with 1 and 8 processes started at once. Variants are
# interleaved run by run (order rotated) so drift cancels; medians reported.
# Whatever SAGE environment the caller sets (SAGE_SOCKET for a running
# broker, say) reaches the SAGE runs.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/bench/startup.sh [--build DIR] [--runs N] [--concurrency "1 8"] [--gap SEC] [--arch ARCH]

Time from exec to first kernel completion, native vs SAGE.

  --build DIR          meson build folder holding intercept/libsage.so (default: build)
  --runs N             runs per (variant, concurrency) (default: 5)
  --concurrency LIST   process counts started at once (default: "1 8")
  --gap SEC            pause between runs so the previous processes are gone (default: 0.5)
  --arch ARCH          nvcc -arch value (default: sm_90)
  -h, --help           this help

Binaries and logs go to DIR/bench-bin. With OUT set, writes OUT/startup.json.
Environment: NVCC (nvcc to use), PYTHON (default python3).
Exit: 0 measured, 1 error, 77 no GPU or no nvcc.
EOF
}

build_dir=build
runs=5
concurrency="1 8"
gap=0.5
arch=sm_90
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build_dir=${2:?--build needs a folder}; shift 2 ;;
        --runs) runs=${2:?}; shift 2 ;;
        --concurrency) concurrency=${2:?}; shift 2 ;;
        --gap) gap=${2:?}; shift 2 ;;
        --arch) arch=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "startup: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}

. "$here/lib.sh"
bench_require_gpu startup
bench_require_nvcc startup

build_dir=$(cd "$build_dir" && pwd)
libsage=$build_dir/intercept/libsage.so
[ -f "$libsage" ] || { echo "startup: $libsage not found" >&2; exit 1; }

bin_dir=$build_dir/bench-bin
logs=$bin_dir/startup
rm -rf "$logs"
mkdir -p "$logs" "$bin_dir/tmp"
echo "startup: building into $bin_dir"
env "TMPDIR=$bin_dir/tmp" "$nvcc" "-arch=$arch" -O2 -I"$here" -o "$bin_dir/startup_probe" "$here/startup_probe.cu"
env "TMPDIR=$bin_dir/tmp" "$nvcc" -O2 -cudart none -o "$bin_dir/startup_launch" "$here/startup_launch.c"

limit=(timeout --kill-after=10 300)
variants=(native sage)

# run_batch VARIANT CONCURRENCY RUN: N processes at once, one JSON line each.
run_batch() {
    local variant=$1 conc=$2 run=$3
    local out=$logs/$variant.c$conc.$run.jsonl err=$logs/$variant.c$conc.$run.stderr
    local envs=(-u LD_PRELOAD -u SAGE_TRACE -u SAGE_BENCH_CHILD_PRELOAD)
    # The launcher itself runs without libsage: only the probes get it.
    [ "$variant" = sage ] && envs+=("SAGE_BENCH_CHILD_PRELOAD=$libsage")
    "${limit[@]}" env "${envs[@]}" "$bin_dir/startup_launch" "$conc" "$bin_dir/startup_probe" \
        > "$out" 2> "$err"
}

for ((run = 1; run <= runs; run++)); do
    for conc in $concurrency; do
        order=("${variants[@]}")
        (( run % 2 == 0 )) && order=("${variants[1]}" "${variants[0]}")
        for v in "${order[@]}"; do
            if ! run_batch "$v" "$conc" "$run"; then
                echo "startup: $v x$conc failed in run $run: $(tail -n1 "$logs/$v.c$conc.$run.stderr")" >&2
                exit 1
            fi
            sleep "$gap"
        done
    done
    echo "startup: run $run/$runs done"
done

gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1 || true)
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n1 || true)
cuda_release=$("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p' | head -n1 || true)

BENCH_LOGS=$logs BENCH_RUNS=$runs BENCH_CONC=$concurrency BENCH_OUT=${OUT:-} \
BENCH_GPU=$gpu_name BENCH_DRIVER=$driver BENCH_CUDA=$cuda_release BENCH_CPUS=$(nproc) \
BENCH_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) BENCH_LIBSAGE=$libsage \
"$python" - <<'EOF'
import json, os, statistics, sys

e = os.environ
logs, runs = e["BENCH_LOGS"], int(e["BENCH_RUNS"])
concs = [int(c) for c in e["BENCH_CONC"].split()]
variants = ["native", "sage"]
metrics = ["main_ms", "init_ms", "first_kernel_ms"]
raw, summary, problems = {}, {}, []
for v in variants:
    for c in concs:
        key = f"{v}_x{c}"
        batches = []
        for r in range(1, runs + 1):
            with open(f"{logs}/{v}.c{c}.{r}.jsonl") as f:
                procs = [json.loads(line) for line in f if line.strip().startswith("{")]
            if len(procs) != c:
                problems.append(f"{key} run {r}: {len(procs)} of {c} processes reported")
            for p in procs:
                if p["sage_loaded"] != (v == "sage"):
                    problems.append(f"{key} run {r}: pid {p['pid']} sage_loaded={p['sage_loaded']}")
            batches.append(procs)
        raw[key] = batches
        s = {}
        for m in metrics:
            every = [p[m] for b in batches for p in b]
            s[m] = {"median": statistics.median(every), "min": min(every), "max": max(every)}
        # When the last of the batch had its kernel done: the batch's makespan.
        s["batch_last_kernel_ms"] = {"median": statistics.median(
            max(p["first_kernel_ms"] for p in b) for b in batches if b)}
        summary[key] = s

print()
print(f"{'procs':>5} | {'metric (ms from exec)':<26} | {'native':>10} | {'sage':>10} | {'sage vs native':>16}")
print("-" * 80)
rows = [("main_ms", "median", "main() entered"),
        ("init_ms", "median", "cudaFree(0) done"),
        ("first_kernel_ms", "median", "first kernel done"),
        ("first_kernel_ms", "min", "first kernel done (min)"),
        ("batch_last_kernel_ms", "median", "last of batch done")]
for c in concs:
    for m, stat, label in rows:
        n = summary[f"native_x{c}"][m][stat]
        s = summary[f"sage_x{c}"][m][stat]
        pct = 100.0 * (s - n) / n if n else float("nan")
        print(f"{c:>5} | {label:<26} | {n:>10.1f} | {s:>10.1f} | {s - n:>+8.1f} {pct:>+6.1f}%")
for p in problems:
    print("problem:", p)

doc = {
    "bench": "startup",
    "machine": {"gpu": e["BENCH_GPU"], "driver": e["BENCH_DRIVER"], "cuda": e["BENCH_CUDA"],
                "cpus": int(e["BENCH_CPUS"]), "date": e["BENCH_DATE"]},
    "libsage": e["BENCH_LIBSAGE"],
    "runs": runs,
    "concurrency": concs,
    "problems": problems,
    "summary": summary,
    "raw": raw,
}
if e.get("BENCH_OUT"):
    os.makedirs(e["BENCH_OUT"], exist_ok=True)
    path = os.path.join(e["BENCH_OUT"], "startup.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print("wrote", path)
sys.exit(1 if problems else 0)
EOF

"""Report of scripts/bench/startup.sh: time from exec to first kernel, native
vs SAGE, 1 and N processes at once, from the JSON lines each batch left in the
log folder; the table on stdout, the result through bench_result
(OUT/startup.json).

    startup_report.py            (environment: BENCH_LOGS, BENCH_RUNS, BENCH_CONC,
                                  BENCH_OUT, BENCH_NVCC, BENCH_LIBSAGE; set by startup.sh)
    startup_report.py selftest
"""
import json
import os
import sys

import bench_result

VARIANTS = ["native", "sage"]
METRICS = ["main_ms", "init_ms", "first_kernel_ms"]
ROWS = [("main_ms", "median", "main() entered"),
        ("init_ms", "median", "cudaFree(0) done"),
        ("first_kernel_ms", "median", "first kernel done"),
        ("first_kernel_ms", "min", "first kernel done (min)"),
        ("batch_last_kernel_ms", "median", "last of batch done")]


def load(logs, runs, concs):
    """raw {variant_xC: [[process record] per run]} and the problems found."""
    raw, problems = {}, []
    for v in VARIANTS:
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
    return raw, problems


def summarize(raw):
    """Per variant and concurrency: each metric over every process of every
    run, and the batch's makespan (when its last process had its kernel done)."""
    summary = {}
    for key, batches in raw.items():
        s = {m: bench_result.stats([p[m] for b in batches for p in b], ndigits=None) for m in METRICS}
        s["batch_last_kernel_ms"] = bench_result.stats(
            [max(p["first_kernel_ms"] for p in b) for b in batches if b], ndigits=None)
        summary[key] = s
    return summary


def table(summary, concs, problems):
    L = ["", f"{'procs':>5} | {'metric (ms from exec)':<26} | {'native':>10} | {'sage':>10} | {'sage vs native':>16}",
         "-" * 80]
    for c in concs:
        for m, stat, label in ROWS:
            n = summary[f"native_x{c}"][m][stat]
            s = summary[f"sage_x{c}"][m][stat]
            pct = 100.0 * (s - n) / n if n else float("nan")
            L.append(f"{c:>5} | {label:<26} | {n:>10.1f} | {s:>10.1f} | {s - n:>+8.1f} {pct:>+6.1f}%")
        L.append(f"{'':>5} | n = {summary[f'native_x{c}']['first_kernel_ms']['n']} processes per variant, "
                 f"{summary[f'native_x{c}']['batch_last_kernel_ms']['n']} batches")
    L += [f"problem: {p}" for p in problems]
    return "\n".join(L)


def document(raw, runs, concs, summary, problems, machine, libsage):
    return bench_result.result("startup", machine, {"runs": runs, "concurrency": concs, "libsage": libsage},
                               summary, problems=problems, raw=raw)


def main():
    e = os.environ
    logs, runs = e["BENCH_LOGS"], int(e["BENCH_RUNS"])
    concs = [int(c) for c in e["BENCH_CONC"].split()]
    raw, problems = load(logs, runs, concs)
    summary = summarize(raw)
    print(table(summary, concs, problems))
    doc = document(raw, runs, concs, summary, problems, bench_result.machine(nvcc=e.get("BENCH_NVCC")),
                   e.get("BENCH_LIBSAGE"))
    if e.get("BENCH_OUT"):
        print("wrote", bench_result.write(e["BENCH_OUT"], doc))
    return 1 if problems else 0


def selftest():
    import tempfile
    with tempfile.TemporaryDirectory() as logs:
        for v, base in (("native", 200.0), ("sage", 150.0)):
            for c in (1, 2):
                for r in (1, 2):
                    procs = [{"pid": 100 + i, "sage_loaded": v == "sage", "main_ms": 5.0 + i,
                              "init_ms": base + i, "first_kernel_ms": base + 10 * r + i} for i in range(c)]
                    if v == "sage" and c == 2 and r == 2:
                        procs = procs[:1]  # one process never reported
                    with open(f"{logs}/{v}.c{c}.{r}.jsonl", "w") as f:
                        f.write("start\n" + "".join(json.dumps(p) + "\n" for p in procs))
        raw, problems = load(logs, 2, [1, 2])
    assert problems == ["sage_x2 run 2: 1 of 2 processes reported"], problems
    summary = summarize(raw)
    assert summary["native_x2"]["first_kernel_ms"] == {"n": 4, "median": 215.5, "min": 210.0, "max": 221.0}
    assert summary["native_x2"]["batch_last_kernel_ms"] == {"n": 2, "median": 216.0, "min": 211.0, "max": 221.0}
    text = table(summary, [1, 2], problems)
    assert "first kernel done" in text and "n = 4 processes per variant, 2 batches" in text, text
    mach = {k: "x" for k in bench_result.MACHINE_KEYS}
    doc = document(raw, 2, [1, 2], summary, problems, mach, "/lib/libsage.so")
    assert bench_result.check(doc) == [], bench_result.check(doc)
    print("startup_report selftest: ok")
    return 0


if __name__ == "__main__":
    sys.exit(selftest() if sys.argv[1:] == ["selftest"] else main())

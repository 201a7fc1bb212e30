"""Report of scripts/bench/launch-overhead.sh: per-launch cost natively and
under libsage (tracing off and on), from the per-process JSON lines the
rounds left in the log folder; the table on stdout, the result through
bench_result (OUT/launch-overhead.json).

    launch_overhead_report.py            (environment: BENCH_LOGS, BENCH_ROUNDS,
                                          BENCH_VARIANTS, BENCH_OUT, BENCH_NVCC,
                                          BENCH_LIBSAGE, BENCH_BASE_LIBSAGE; set by
                                          launch-overhead.sh)
    launch_overhead_report.py selftest
"""
import json
import os
import sys

import bench_result

TARGET_PCT = 2.0
KEYS = ("async_ns", "sync_ns")
NAMES = {"native": "native", "sage": "sage (trace off)", "sage_trace": "sage (trace on)",
         "sage_base": "baseline build (trace off)", "sage_suspend": "sage (SAGE_SUSPEND=1)"}
LABELS = {"async_ns": "async launch", "sync_ns": "launch + sync"}


def load(logs, rounds, variants):
    """raw {variant: [doc per round]} and the problems found reading them."""
    raw, problems = {v: [] for v in variants}, []
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
    return raw, problems


def overhead(summary, v, key, stat):
    base, val = summary["native"][key][stat], summary[v][key][stat]
    return {"ns": val - base, "pct": 100.0 * (val - base) / base}


def summarize(raw, variants):
    """Per variant and key: every sample of every round as one figure (the
    median is the verdict, min the best case), overheads against native."""
    summary = {v: {key: bench_result.stats([x for doc in raw[v] for x in doc[key]["runs"]], ndigits=None)
                   for key in KEYS} for v in variants}
    for v in variants[1:]:
        for key in KEYS:
            summary[v][key]["overhead_median"] = overhead(summary, v, key, "median")
            summary[v][key]["overhead_min"] = overhead(summary, v, key, "min")
    verdict = {}
    if "sage" in summary:
        verdict = {key: "met" if summary["sage"][key]["overhead_median"]["pct"] <= TARGET_PCT else "MISSED"
                   for key in KEYS}
    if "sage" in summary and "sage_base" in summary:
        # This build against the baseline build, both under libsage: the regression check.
        for key in KEYS:
            base, val = summary["sage_base"][key]["median"], summary["sage"][key]["median"]
            summary["sage"][key]["vs_baseline_median"] = {"ns": val - base, "pct": 100.0 * (val - base) / base}
    if "sage_suspend" in summary:
        for key in KEYS:
            verdict["suspend_" + key] = ("met" if summary["sage_suspend"][key]["overhead_median"]["pct"] <= TARGET_PCT
                                         else "MISSED")
    return summary, verdict


def table(summary, variants, verdict, problems):
    L = ["", f"{'ns per launch':<22}" + "".join(f" | {NAMES[v]:>30}" for v in variants),
         "-" * (22 + 33 * len(variants))]
    for key in KEYS:
        for stat in ("median", "min"):
            cells = []
            for v in variants:
                cell = f"{summary[v][key][stat]:.1f}"
                if v != "native":
                    o = overhead(summary, v, key, stat)
                    cell += f" ({o['pct']:+.2f}%, {o['ns']:+.1f} ns)"
                cells.append(cell)
            L.append(f"{LABELS[key] + ' ' + stat:<22}" + "".join(f" | {c:>30}" for c in cells))
    n = summary["native"]["async_ns"]["n"]
    L.append(f"n = {n} samples per variant (every sample of every round)")
    if "vs_baseline_median" in summary.get("sage", {}).get("async_ns", {}):
        o = {key: summary["sage"][key]["vs_baseline_median"]["pct"] for key in KEYS}
        L.append(f"this build vs baseline build (medians): async {o['async_ns']:+.2f}%, sync {o['sync_ns']:+.2f}%")
    if "suspend_async_ns" in verdict:
        o = {key: summary["sage_suspend"][key]["overhead_median"]["pct"] for key in KEYS}
        L.append(f"target: SAGE_SUSPEND=1 <= {TARGET_PCT}% slower: async {verdict['suspend_async_ns']} "
                 f"({o['async_ns']:+.2f}%), sync {verdict['suspend_sync_ns']} ({o['sync_ns']:+.2f}%)")
    if "async_ns" in verdict:
        o = {key: summary["sage"][key]["overhead_median"]["pct"] for key in KEYS}
        L += ["", f"target: trace off <= {TARGET_PCT}% slower: async {verdict['async_ns']} ({o['async_ns']:+.2f}%), "
                  f"sync {verdict['sync_ns']} ({o['sync_ns']:+.2f}%)"]
    L += [f"problem: {p}" for p in problems]
    return "\n".join(L)


def document(raw, variants, rounds, summary, verdict, problems, machine, libsage, base_libsage=None):
    settings = {"rounds": rounds, "variants": variants, "libsage": libsage, "baseline_libsage": base_libsage,
                **{k: raw["native"][0][k] for k in ("launches", "sync_launches", "reps")}}
    return bench_result.result("launch-overhead", machine, settings, summary, target_pct=TARGET_PCT,
                               verdict=verdict, problems=problems, raw=raw)


def main():
    e = os.environ
    logs, rounds, variants = e["BENCH_LOGS"], int(e["BENCH_ROUNDS"]), e["BENCH_VARIANTS"].split()
    raw, problems = load(logs, rounds, variants)
    summary, verdict = summarize(raw, variants)
    print(table(summary, variants, verdict, problems))
    doc = document(raw, variants, rounds, summary, verdict, problems,
                   bench_result.machine(nvcc=e.get("BENCH_NVCC")), e.get("BENCH_LIBSAGE"),
                   e.get("BENCH_BASE_LIBSAGE") or None)
    if e.get("BENCH_OUT"):
        print("wrote", bench_result.write(e["BENCH_OUT"], doc))
    return 1 if problems else 0


def selftest():
    import tempfile
    variants = ["native", "sage", "sage_trace"]
    with tempfile.TemporaryDirectory() as logs:
        for v, base in (("native", 4000.0), ("sage", 4060.0), ("sage_trace", 4400.0)):
            for r in (1, 2):
                doc = {"sage_loaded": v != "native", "launches": 10, "sync_launches": 5, "reps": 3,
                       "async_ns": {"runs": [base + r, base + 10 + r, base - 5]},
                       "sync_ns": {"runs": [2 * base, 2 * base + r, 2 * base + 7]}}
                with open(f"{logs}/{v}.{r}.json", "w") as f:
                    f.write("noise\n" + json.dumps(doc) + "\n")
                if v == "sage_trace":
                    with open(f"{logs}/trace.{r}.size", "w") as f:
                        f.write("0\n" if r == 2 else "123\n")
        raw, problems = load(logs, 2, variants)
    assert problems == ["sage_trace round 2: no trace written"], problems
    summary, verdict = summarize(raw, variants)
    s = summary["sage"]["async_ns"]
    assert s["n"] == 6 and s["min"] == 4055.0 and s["max"] == 4072.0, s
    assert s["overhead_median"] == {"ns": 60.0, "pct": 100.0 * 60 / 4001.5}, s
    assert verdict == {"async_ns": "met", "sync_ns": "met"}, verdict
    text = table(summary, variants, verdict, problems)
    assert "async launch median" in text and "n = 6 samples" in text and "problem: sage_trace" in text, text
    mach = {k: "x" for k in bench_result.MACHINE_KEYS}
    doc = document(raw, variants, 2, summary, verdict, problems, mach, "/lib/libsage.so")
    assert bench_result.check(doc) == [], bench_result.check(doc)
    assert doc["settings"]["launches"] == 10 and doc["bench"] == "launch-overhead"
    # The baseline and suspend variants: the regression line and the suspend verdict.
    raw2 = {"native": raw["native"], "sage": raw["sage"],
            "sage_base": [dict(d, async_ns={"runs": [x - 100 for x in d["async_ns"]["runs"]]}) for d in raw["sage"]],
            "sage_suspend": [dict(d, async_ns={"runs": [x + 200 for x in d["async_ns"]["runs"]]}) for d in raw["sage"]]}
    v2 = ["native", "sage", "sage_base", "sage_suspend"]
    summary2, verdict2 = summarize(raw2, v2)
    assert summary2["sage"]["async_ns"]["vs_baseline_median"]["ns"] == 100.0, summary2["sage"]["async_ns"]
    assert verdict2["suspend_async_ns"] == "MISSED" and verdict2["suspend_sync_ns"] == "met", verdict2
    text2 = table(summary2, v2, verdict2, [])
    assert "vs baseline build" in text2 and "SAGE_SUSPEND=1 <= 2.0% slower: async MISSED" in text2, text2
    print("launch_overhead_report selftest: ok")
    return 0


if __name__ == "__main__":
    sys.exit(selftest() if sys.argv[1:] == ["selftest"] else main())

"""Report of scripts/bench/sharing.sh: upload time per invocation, native vs
SAGE (SAGE_SHARE=1 with a broker), from one JSON line per run
({"run", "native", "sage", "sage_stats"}); writes OUT/sharing.json through
bench_result (the one result schema).

    sharing_report.py RUNS.jsonl OUT_DIR NVCC BROKER_STATS
    sharing_report.py selftest
"""
import json
import sys

import bench_result


def summarize(runs):
    """Native over every run; SAGE's run 1 is cold (it publishes), 2..N warm."""
    up = lambda rs, mode: bench_result.stats([r[mode].get("upload_ms") for r in rs], ndigits=None)  # noqa: E731
    cold = [r for r in runs if r["run"] == 1]
    warm = [r for r in runs if r["run"] >= 2]
    checks = {r["run"]: r["native"].get("checksum") == r["sage"].get("checksum") for r in runs}
    return {"native_upload_ms": up(runs, "native"), "sage_cold_upload_ms": up(cold, "sage"),
            "sage_warm_upload_ms": up(warm, "sage"),
            "sage_warm_hits": sum(int((r.get("sage_stats") or {}).get("SHARE_HITS") or 0) for r in warm),
            "checksums_equal": all(checks.values()), "checksums": checks}


def document(runs, machine, broker_stats):
    settings = {"runs": len(runs), "sage_env": {"SAGE_SHARE": "1"}}
    return bench_result.result("sharing", machine, settings, summarize(runs), broker=broker_stats, raw=runs)


def main(argv):
    if argv[1:] == ["selftest"]:
        return selftest()
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    try:
        broker = json.loads(argv[4])
    except ValueError:
        broker = argv[4]
    doc = document(runs, bench_result.machine(nvcc=argv[3]), broker)
    print("wrote", bench_result.write(argv[2], doc))
    return 0 if doc["summary"]["checksums_equal"] else 1


def selftest():
    runs = [{"run": i, "native": {"upload_ms": 900.0 + i, "checksum": "ab"},
             "sage": {"upload_ms": 1000.0 if i == 1 else 10.0 + i, "checksum": "ab"},
             "sage_stats": {"SHARE_HITS": 0 if i == 1 else 1}} for i in (1, 2, 3)]
    s = summarize(runs)
    assert s["native_upload_ms"] == {"n": 3, "median": 902.0, "min": 901.0, "max": 903.0}, s
    assert s["sage_cold_upload_ms"]["n"] == 1 and s["sage_warm_upload_ms"]["median"] == 12.5, s
    assert s["sage_warm_hits"] == 2 and s["checksums_equal"], s
    mach = {k: "x" for k in bench_result.MACHINE_KEYS}
    doc = document(runs, mach, {"hits": 2})
    assert bench_result.check(doc) == [], bench_result.check(doc)
    runs[2]["sage"]["checksum"] = "cd"
    assert not summarize(runs)["checksums_equal"]
    print("sharing_report selftest: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

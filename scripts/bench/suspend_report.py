"""Pure logic of the suspend benchmark (scripts/bench/suspend.sh): parsing
what the processes and tools print, the plan and its time estimates, the
figures, the result document (suspend.json) and the side-by-side table.
suspend_runner.py does the processes; everything here runs without a GPU and
is checked by `suspend_report.py selftest` (part of `bench selftest`).

suspend.json (bench_result.py's frame, "bench": "suspend"), with the keys of
issue 12 item 7 at the top level:

    "workloads": {NAME: {"cold_ms", "warm_ms", "sage_warm_ms", "resumed_ms",
                         "resume_ms", "suspend_ms", "resumed_idle_ms",
                         "resume_idle_ms", "active_gpu_mib", "idle_gpu_mib",
                         "native_gpu_mib", "invocations", "mismatches",
                         "failures", "resume_by", "cold_over_resumed"}},
    "concurrent_resume_ms": {"8": {"kind", "instances", "resume_ms",
                             "resumed_ms", "failures", "mismatches", "driver_restore_ms",
                             "driver_checkpoint_ms", "sage_over_driver_ms"}, "16": ...},
    (driver_*: the driver alone on N native instances, suspend_restore.c)
    "faas": {"keepalive"|"suspend": {"latency_ms" (+p50, p99), "gpu_mib"
             (over time: stats + "series"), "requests", "failures", "mismatches"}},
    "oversubscription": {"instances", "fit", "failures", "mismatches", ...}

Every *_ms / *_mib figure is a stats object: n, median, min, max, p10, p90.
A part that could not run is {"skipped": REASON}.
"""
import json
import math
import os
import random
import sys

# Seconds one step takes on an H100/H200, conservatively (2026-11-30 suite
# speeds: a new resnet50 process ~4 s, bert ~8, gpt2 ~9, llm ~2.7; a resnet50
# checkpoint 0.56 s, restore 0.31 s). "load": a new process until it serves.
COST = {
    "cfunc": {"load": 1.5, "invoke": 0.05, "suspend": 1.0, "resume": 0.6},
    "sgemm": {"load": 1.5, "invoke": 0.05, "suspend": 0.5, "resume": 0.4},
    "resnet50": {"load": 5.0, "invoke": 0.05, "suspend": 0.8, "resume": 0.5},
    "bert": {"load": 9.0, "invoke": 0.05, "suspend": 1.0, "resume": 0.6},
    "gpt2": {"load": 10.0, "invoke": 0.1, "suspend": 1.5, "resume": 0.9},
    "llm": {"load": 4.0, "invoke": 0.3, "suspend": 2.5, "resume": 1.2},  # 2 GiB of weights
}
SETTLE_S = 5.0  # the most oversubscription waits for the broker to bring instances under the cap
FAKE_COST = {"load": 0.3, "invoke": 0.01, "suspend": 0.05, "resume": 0.05}
WORKLOADS = ("cfunc", "sgemm", "resnet50", "bert", "gpt2", "llm")
PARTS = ("workloads", "concurrent", "faas", "oversub")


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of the samples; None for none."""
    s = sorted(v for v in values if v is not None)
    if not s:
        return None
    k = max(1, math.ceil(p / 100.0 * len(s)))
    return s[min(k, len(s)) - 1]


def figure(values, ndigits=3):
    """A figure: n, median, min, max, p10, p90 (None: no samples)."""
    v = [float(x) for x in values if x is not None]
    if not v:
        return None
    s = sorted(v)
    n = len(s)
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0
    r = lambda x: round(x, ndigits)  # noqa: E731
    return {"n": n, "median": r(med), "min": r(s[0]), "max": r(s[-1]),
            "p10": r(percentile(s, 10)), "p90": r(percentile(s, 90))}


def latency_figure(values):
    f = figure(values)
    if f:
        f["p50"] = round(percentile(values, 50), 3)
        f["p99"] = round(percentile(values, 99), 3)
    return f


def has_option(libsage, name):
    """Whether the libsage at that path has option NAME (SAGE_...): common/options.def's
    names are in its table without the prefix, as NUL-terminated strings."""
    try:
        with open(libsage, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"\0" + (name[5:] if name.startswith("SAGE_") else name).encode() + b"\0" in data


def rss_mib(pid, status=None):
    """VmRSS of a process in MiB (status: /proc/PID/status's text, for tests); None if gone."""
    if status is None:
        try:
            with open(f"/proc/{pid}/status") as f:
                status = f.read()
        except OSError:
            return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return None


def sgemm_matrix(n, mul_i, mul_j, mod, off):
    """An n x n fp32 matrix of small integers ((i*mul_i + j*mul_j) % mod - off), row
    major, fast: a row depends on i only through (i*mul_i) % mod."""
    import array

    rows = [array.array("f", (float((r + j * mul_j) % mod - off) for j in range(n))).tobytes()
            for r in range(mod)]
    return b"".join(rows[(i * mul_i) % mod] for i in range(n))


def tagged(text, tag):
    """The JSON objects of lines `TAG {json}` in text (others ignored)."""
    out = []
    for line in text.splitlines():
        if line.startswith(tag + " "):
            try:
                out.append(json.loads(line[len(tag) + 1:]))
            except ValueError:
                pass
    return out


def instances(text):
    """`sagectl instances --json` -> {pid: entry}; {} for anything else."""
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return {e["pid"]: e for e in doc if isinstance(e, dict) and "pid" in e} if isinstance(doc, list) else {}


def smi_apps(text):
    """`nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits`
    -> {pid: MiB} (a pid listed twice, e.g. on two GPUs, is summed)."""
    out = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2 and parts[0].isdigit():
            try:
                mib = float(parts[1].split()[0])
            except (ValueError, IndexError):
                continue
            out[int(parts[0])] = out.get(int(parts[0]), 0.0) + mib
    return out


def poisson(rate, duration, seed, n_instances):
    """Open-loop arrivals: [(t_seconds, instance_index)], exponential gaps at
    `rate` per second over `duration` seconds, each to a uniformly chosen
    instance; the same seed gives the same stream."""
    rng = random.Random(seed)
    t, out = 0.0, []
    while rate > 0:
        t += rng.expovariate(rate)
        if t >= duration:
            break
        out.append((round(t, 6), rng.randrange(n_instances)))
    return out


def plan(quick, only=None, fake=False):
    """The parts and their settings. only: a set of part and workload names."""
    only = set(only or ())
    wl_only = only & set(WORKLOADS)
    part_only = only & set(PARTS)
    if fake:
        kinds, heavy = ["cfunc", "sgemm"], "cfunc"
    elif quick:
        kinds, heavy = ["cfunc", "resnet50"], "resnet50"
    else:
        kinds, heavy = list(WORKLOADS), "resnet50"
    if wl_only and not fake:
        kinds = [k for k in WORKLOADS if k in wl_only]
        heavy = "resnet50" if "resnet50" in kinds else kinds[0]
    p = {
        "kinds": kinds,
        "heavy": heavy,
        # Suspended by SAGE_SUSPEND_IDLE too (a second instance each): the cheap ones.
        "idle_kinds": [k for k in kinds if k in ("cfunc", "resnet50")],
        "concurrency": [8] if quick else [8, 16],
        # The driver's restore alone beside SAGE's (native instances): not in --quick (its 240 s).
        "driver_baseline": not quick,
        "faas": {"kind": heavy, "instances": 3 if quick else 4, "rate": 1.0 if quick else 0.8,
                 "duration": 12.0 if quick else 30.0, "idle": "1s", "seed": 12},
        "oversub": {"kind": heavy, "fit": 1 if quick else 2, "factor": 4, "rounds": 1},
        "llm_gib": 2,
        "parts": [x for x in PARTS if not part_only or x in part_only],
    }
    if fake:
        p["faas"].update(duration=4.0, rate=2.0, idle="300ms")
    return p


def cost(kind, fake):
    return FAKE_COST if fake else COST.get(kind, COST["resnet50"])


def estimate_workload(kind, runs, idle_too, fake=False):
    """Seconds for one workload of the workloads part: native cold x runs, a
    native warm process, a SAGE instance (warm, then runs x suspend + resume),
    and with idle_too a second SAGE instance suspended by SAGE_SUSPEND_IDLE."""
    c = cost(kind, fake)
    idle_wait = 0.3 if fake else 1.5
    s = runs * (c["load"] + c["invoke"]) + 2 * c["load"] + 4 * runs * c["invoke"]
    s += runs * (c["suspend"] + c["resume"] + c["invoke"] + 0.2)
    if idle_too:
        s += c["load"] + runs * (idle_wait + c["suspend"] + c["resume"] + c["invoke"])
    return round(s, 1)


def estimate_concurrent(kind, n, fake=False, baseline=True):
    c = cost(kind, fake)
    # N loads at once share the CPU: ~N/4 loads' time on 16 cores, at least one; twice: the driver's
    # baseline (N native instances, checkpointed together, restored at once) and SAGE's.
    native = max(1.0, n / 4.0) * c["load"] + c["suspend"] + c["resume"] + 2 if baseline else 0
    return round(native + max(1.0, n / 4.0) * c["load"] + n * c["suspend"] / 2 + 3 * c["resume"] + 5, 1)


def estimate_faas(f, fake=False):
    c = cost(f["kind"], fake)
    return round(2 * (f["instances"] * c["load"] / 2 + f["duration"] + 3), 1)


def estimate_oversub(o, fake=False):
    c = cost(o["kind"], fake)
    n = o["fit"] * o["factor"]
    # + up to SETTLE_S after each start for the broker to make room (3 s on average)
    return round(c["load"] + n * (c["load"] + c["suspend"] + 1.5 + 3)
                 + o["rounds"] * n * (c["resume"] + c["suspend"] + c["invoke"]), 1)


def identical(records, reference):
    """(mismatches, failures) of invocation records against the native checksum."""
    mism = sum(1 for r in records if "error" not in r and r.get("checksum") != reference)
    fail = sum(1 for r in records if "error" in r)
    return mism, fail


def workload_entry(w):
    """The suspend.json entry of a workload from the runner's raw record w."""
    e = {}
    for key in ("cold_ms", "warm_ms", "sage_warm_ms", "resumed_ms", "resume_ms", "suspend_ms",
                "resumed_idle_ms", "resume_idle_ms", "active_gpu_mib", "idle_gpu_mib", "native_gpu_mib",
                "idle_idle_gpu_mib", "idle_device_delta_mib", "idle_host_delta_mib", "idle_host_mib"):
        f = figure(w.get(key, []))
        if f is not None:
            e[key] = f
    e["invocations"] = w.get("invocations", 0)
    e["mismatches"] = w.get("mismatches", 0)
    e["failures"] = w.get("failures", 0)
    e["resume_by"] = w.get("resume_by")
    if w.get("problems"):
        e["problems"] = w["problems"]
    act = e.get("active_gpu_mib")
    if act and act["max"] == 0:
        e.setdefault("problems", []).append("nvidia-smi lists no GPU memory for the active instance (another pid "
                                            "namespace?): idle_gpu_mib proves nothing; see idle_device_delta_mib")
    if "cold_ms" in e and "resumed_ms" in e and e["resumed_ms"]["median"] > 0:
        e["cold_over_resumed"] = round(e["cold_ms"]["median"] / e["resumed_ms"]["median"], 2)
    return e


def concurrent_entry(c):
    e = {"kind": c["kind"], "instances": c["instances"],
         "resume_ms": figure(c.get("resume_ms", [])), "resumed_ms": figure(c.get("resumed_ms", [])),
         "failures": c.get("failures", 0), "mismatches": c.get("mismatches", 0),
         "resume_by": c.get("resume_by")}
    for key in ("driver_restore_ms", "driver_checkpoint_ms"):  # absent where not measured (--quick)
        if figure(c.get(key, [])):
            e[key] = figure(c[key])
    if e["resume_ms"] and e.get("driver_restore_ms"):
        e["sage_over_driver_ms"] = round(e["resume_ms"]["median"] - e["driver_restore_ms"]["median"], 1)
    if c.get("problems"):
        e["problems"] = c["problems"]
    return e


def faas_entry(m):
    mem = [x[1] for x in m.get("gpu_series", [])]
    e = {"latency_ms": latency_figure(m.get("latency_ms", [])), "gpu_mib": figure(mem),
         "requests": m.get("requests", 0), "failures": m.get("failures", 0),
         "mismatches": m.get("mismatches", 0), "instances": m.get("instances"),
         "instances_suspended": m.get("instances_suspended")}
    if e["gpu_mib"]:
        e["gpu_mib"]["series"] = [[round(t, 2), round(v, 1)] for t, v in m.get("gpu_series", [])]
    return e


def targets(doc):
    """The issue's targets, each {"want", "got", "ok"} (ok None: not measured)."""
    out = {}
    wl = doc.get("workloads", {})
    for k in sorted(wl):
        f = wl[k].get("idle_gpu_mib")
        out[f"{k} idle GPU MiB"] = {"want": "0", "got": f and f["max"], "ok": None if not f else f["max"] == 0}
    r = wl.get("resnet50", {}).get("resume_ms")
    out["resnet50 resume_ms alone"] = {"want": "<= 350", "got": r and r["median"],
                                       "ok": None if not r else r["median"] <= 350}
    c8 = doc.get("concurrent_resume_ms", {}).get("8", {})
    r8 = c8.get("resume_ms") if c8.get("kind") == "resnet50" else None
    out["resnet50 resume_ms, 8 at once"] = {"want": "<= 1300 each", "got": r8 and r8["max"],
                                            "ok": None if not r8 else r8["max"] <= 1300}
    over = c8.get("sage_over_driver_ms") if c8.get("kind") == "resnet50" else None
    out["resnet50 8x: SAGE over driver"] = {"want": "<= 40 ms (medians)", "got": over,
                                                 "ok": None if over is None else over <= 40}
    for k in ("resnet50", "bert", "gpt2"):
        ratio = wl.get(k, {}).get("cold_over_resumed")
        out[f"{k} cold/resumed"] = {"want": ">= 10", "got": ratio, "ok": None if ratio is None else ratio >= 10}
    o = doc.get("oversubscription", {})
    if "instances" in o:
        ok = o["failures"] == 0 and o["mismatches"] == 0 and o["instances"] >= 4 * max(1, o["fit"])
        ok = ok and o.get("max_gpu_mib", 0) <= o.get("cap_mib", 0)  # the cap held
        out["oversubscription"] = {"want": ">= 4x, 0 failures, 0 mismatches",
                                   "got": f"{o['instances']} on {o['fit']}, {o['failures']} failures, "
                                          f"{o['mismatches']} mismatches, max {o.get('max_gpu_mib')} MiB "
                                          f"of {o.get('cap_mib')}", "ok": ok}
    return out


def document(raw, machine, settings):
    """suspend.json from the runner's raw results."""
    import bench_result

    wl = {k: workload_entry(v) if "skipped" not in v else {"skipped": v["skipped"]}
          for k, v in raw.get("workloads", {}).items()}
    conc = {str(n): concurrent_entry(c) if "skipped" not in c else {"skipped": c["skipped"]}
            for n, c in raw.get("concurrent", {}).items()}
    faas = raw.get("faas") or {"skipped": "not run"}
    if "skipped" not in faas:
        faas = {m: faas_entry(v) for m, v in faas.items()}
    over = dict(raw.get("oversub") or {"skipped": "not run"})
    over.pop("records", None)
    for k in ("resumed_ms", "resume_ms"):
        if isinstance(over.get(k), list):
            over[k] = figure(over[k])
    doc = bench_result.result("suspend", machine, settings, {}, workloads=wl, concurrent_resume_ms=conc,
                              faas=faas, oversubscription=over, problems=raw.get("problems", []),
                              skipped=raw.get("skipped", []), parts_s=raw.get("parts_s", {}))
    doc["summary"] = {"targets": targets(doc), "mismatches": total_mismatches(doc),
                      "failures": total_failures(doc)}
    return doc


def total_mismatches(doc):
    n = sum(w.get("mismatches", 0) for w in doc["workloads"].values())
    n += sum(c.get("mismatches", 0) for c in doc["concurrent_resume_ms"].values())
    n += sum(m.get("mismatches", 0) for m in doc["faas"].values() if isinstance(m, dict))
    return n + doc["oversubscription"].get("mismatches", 0)


def total_failures(doc):
    n = sum(w.get("failures", 0) for w in doc["workloads"].values())
    n += sum(c.get("failures", 0) for c in doc["concurrent_resume_ms"].values())
    n += sum(m.get("failures", 0) for m in doc["faas"].values() if isinstance(m, dict))
    return n + doc["oversubscription"].get("failures", 0)


def _med(f, spread=True):
    if not f:
        return "-"
    if not spread:
        return f"{f['median']:.1f}"
    return f"{f['median']:.1f} [{f['min']:.1f}-{f['max']:.1f}] n={f['n']}"


def _part(lines, label, part, describe):
    """A part's lines (describe(part)), or why the runner skipped it."""
    if "skipped" in part:
        lines.append(f"{label}: skipped: {part['skipped']}")
    else:
        lines += describe(part)


def table(doc):
    """The side-by-side text table."""
    m = doc["machine"]
    lines = [f"suspend benchmark: {m.get('gpu')} driver {m.get('driver')}, commit {m.get('commit')}, "
             f"{m.get('date')}", "median [min-max] n; native cold/warm vs SAGE warm/resumed"
             + ("; SAGE instances share their uploads (SAGE_SHARE=1)" if doc.get("settings", {}).get("sharing") else "")
             + "".join(f"; {k}={v}" for k, v in sorted(doc.get("settings", {}).get("instance_env", {}).items())),
             ""]
    hdr = f"{'workload':<9} | {'cold_ms (native)':<26} | {'warm_ms (native)':<24} | {'sage warm_ms':<22} | " \
          f"{'resumed_ms':<26} | {'resume_ms':<24} | {'idle MiB':<8} | {'cold/res':<8} | ok"
    lines += [hdr, "-" * len(hdr)]
    for k, w in doc["workloads"].items():
        if "skipped" in w:
            lines.append(f"{k:<9} | skipped: {w['skipped']}")
            continue
        idle = w.get("idle_gpu_mib")
        idle_s = f"{idle['max']:.0f}" if idle else "-"
        ok = "yes" if not w["mismatches"] and not w["failures"] else f"{w['mismatches']} mism, {w['failures']} fail"
        lines.append(f"{k:<9} | {_med(w.get('cold_ms')):<26} | {_med(w.get('warm_ms')):<24} | "
                     f"{_med(w.get('sage_warm_ms')):<22} | {_med(w.get('resumed_ms')):<26} | "
                     f"{_med(w.get('resume_ms')):<24} | {idle_s:<8} | "
                     f"{w.get('cold_over_resumed', '-')!s:<8} | {ok}")
        if "resumed_idle_ms" in w:
            lines.append(f"{'':<9} | by SAGE_SUSPEND_IDLE: resumed_ms {_med(w['resumed_idle_ms'])}, "
                         f"resume_ms {_med(w.get('resume_idle_ms'))}")
        lines.append(f"{'':<9} | host MiB while suspended: RSS +{_med(w.get('idle_host_delta_mib'), False)}, "
                     f"broker's estimate {_med(w.get('idle_host_mib'), False)}")
        lines.append(f"{'':<9} | resume by {w.get('resume_by')}; suspend_ms {_med(w.get('suspend_ms'))}; "
                     f"GPU MiB native {_med(w.get('native_gpu_mib'), False)}, "
                     f"SAGE active {_med(w.get('active_gpu_mib'), False)}")
    lines.append("")
    for n, c in doc["concurrent_resume_ms"].items():
        _part(lines, f"concurrent {n}", c, lambda c: [
            f"concurrent {n} x {c['kind']}: resume_ms {_med(c['resume_ms'])}, "
            f"resumed_ms {_med(c['resumed_ms'])}, {c['failures']} failures, "
            f"{c['mismatches']} mismatches (resume by {c.get('resume_by')})",
            f"concurrent {n} x {c['kind']}, the driver alone (native): restore_ms "
            f"{_med(c.get('driver_restore_ms'))}, checkpoint_ms {_med(c.get('driver_checkpoint_ms'))}; "
            f"SAGE over the driver {c.get('sage_over_driver_ms', '-')} ms"])
    def faas(mode, e):
        lat = e["latency_ms"]
        return (f"faas {mode:<9}: {e['requests']} requests, p50 {lat and lat['p50']} ms, "
                f"p99 {lat and lat['p99']} ms, GPU MiB {_med(e['gpu_mib'])}, "
                f"{e['failures']} failures, {e['mismatches']} mismatches")
    _part(lines, "faas", doc["faas"], lambda f: [faas(mode, e) for mode, e in f.items()])
    _part(lines, "oversubscription", doc["oversubscription"], lambda o: [
        f"oversubscription: {o['instances']} {o.get('kind')} instances, {o['fit']} fit under "
        f"{o.get('cap_mib')} MiB; {o['failures']} failures, {o['mismatches']} mismatches; "
        f"max GPU MiB held {o.get('max_gpu_mib')}"])
    lines += ["", "targets (issue 12):"]
    for name, t in doc["summary"]["targets"].items():
        ok = {True: "ok", False: "MISSED", None: "not measured"}[t["ok"]]
        lines.append(f"  {name:<32} want {t['want']:<32} got {t['got']!s:<24} {ok}")
    for s in doc.get("skipped", []):
        lines.append(f"SKIPPED: {s}")
    for p in doc.get("problems", []):
        lines.append(f"PROBLEM: {p}")
    return "\n".join(lines)


def _fake_raw():
    wl = {"cold_ms": [4000, 4100, 3900], "warm_ms": [7.9, 8.0, 8.1], "sage_warm_ms": [8.0, 8.2, 8.1],
          "resumed_ms": [330, 320, 340], "resume_ms": [310, 300, 305], "suspend_ms": [560, 550, 570],
          "active_gpu_mib": [1470], "idle_gpu_mib": [0, 0, 0], "native_gpu_mib": [1468],
          "invocations": 10, "mismatches": 0, "failures": 0, "resume_by": "gate"}
    return {"workloads": {"resnet50": wl, "bert": {"skipped": "budget"}},
            "concurrent": {8: {"kind": "resnet50", "instances": 8, "resume_ms": [1200] * 8,
                               "resumed_ms": [1250] * 8, "failures": 0, "mismatches": 0,
                               "driver_restore_ms": [1180] * 8, "driver_checkpoint_ms": [900] * 8}},
            "faas": {"keepalive": {"latency_ms": [8, 9, 10], "gpu_series": [(0.0, 5000), (0.5, 5000)],
                                   "requests": 3},
                     "suspend": {"latency_ms": [300, 320, 9], "gpu_series": [(0.0, 1500), (0.5, 0)],
                                 "requests": 3}},
            "oversub": {"kind": "resnet50", "instances": 8, "fit": 2, "failures": 0, "mismatches": 0,
                        "cap_mib": 3200, "max_gpu_mib": 3000, "records": [{"x": 1}], "resume_ms": [300, 310]},
            "skipped": ["bert: budget"]}


def selftest():
    import bench_result

    assert percentile([5, 1, 3, 2, 4], 50) == 3 and percentile([1], 99) == 1 and percentile([], 50) is None
    assert percentile(list(range(1, 101)), 99) == 99 and percentile(list(range(1, 101)), 10) == 10
    f = figure([3, 1, 2, 10])
    assert f == {"n": 4, "median": 2.5, "min": 1.0, "max": 10.0, "p10": 1.0, "p90": 10.0}, f
    assert figure([None]) is None
    assert tagged("x\nSAGE_BENCH {\"a\": 1}\nSAGE_BENCH {bad\nSAGE_READYX {}\n", "SAGE_BENCH") == [{"a": 1}]
    js = '[\n {"pid": 12, "state": "suspended", "gpu_bytes": 0, "resume_ms": 0}]\n'
    assert instances(js)[12]["state"] == "suspended" and instances("not json") == {} and instances("{}") == {}
    import tempfile
    with tempfile.NamedTemporaryFile() as f:
        f.write(b"x\0SUSPEND\0SUSPEND_KEEP_ALIVE\0INSTANCE_IDLE_X\0")
        f.flush()
        assert has_option(f.name, "SAGE_SUSPEND_KEEP_ALIVE") and has_option(f.name, "SAGE_SUSPEND")
        assert not has_option(f.name, "SAGE_SUSPEND_IDLE") and not has_option("/nonexistent", "SAGE_SUSPEND")
    assert rss_mib(0, "Name:\tx\nVmRSS:\t  2048 kB\n") == 2.0 and rss_mib(0, "Name: x\n") is None
    assert rss_mib(os.getpid()) > 0
    import array
    m = array.array("f")
    m.frombytes(sgemm_matrix(6, 7, 3, 17, 8))
    assert list(m) == [float((i * 7 + j * 3) % 17 - 8) for i in range(6) for j in range(6)]
    assert smi_apps("123, 952\n456, 1 MiB\nbad line\n123, 2\n") == {123: 954.0, 456: 1.0}
    s1, s2 = poisson(2.0, 30.0, 7, 4), poisson(2.0, 30.0, 7, 4)
    assert s1 == s2 and 30 < len(s1) < 95 and all(0 < t < 30 and 0 <= i < 4 for t, i in s1), len(s1)
    assert all(a[0] < b[0] for a, b in zip(s1, s1[1:])) and poisson(2.0, 30.0, 8, 4) != s1
    assert poisson(0, 10, 1, 2) == []
    q, full, fk = plan(True), plan(False), plan(False, fake=True)
    assert q["kinds"] == ["cfunc", "resnet50"] and q["concurrency"] == [8] and full["concurrency"] == [8, 16]
    assert full["kinds"] == list(WORKLOADS) and fk["kinds"] == ["cfunc", "sgemm"] and fk["heavy"] == "cfunc"
    o = plan(True, only={"bert", "concurrent"})
    assert o["kinds"] == ["bert"] and o["parts"] == ["concurrent"] and o["heavy"] == "bert"
    assert o["oversub"]["fit"] * o["oversub"]["factor"] >= 4
    # The budgets: --quick within 240 s, the full run within 570 s (set-up included).
    for p, budget, setup in ((q, 240, 45), (full, 570, 60)):
        total = setup + sum(estimate_workload(k, 3, k in p["idle_kinds"]) for k in p["kinds"])
        total += sum(estimate_concurrent(p["heavy"], n, baseline=p["driver_baseline"]) for n in p["concurrency"])
        total += estimate_faas(p["faas"]) + estimate_oversub(p["oversub"])
        assert total <= budget, (p["kinds"], total, budget)
    assert identical([{"checksum": "a"}, {"checksum": "b"}, {"error": "x"}], "a") == (1, 1)
    doc = document(_fake_raw(), {k: "x" for k in bench_result.MACHINE_KEYS}, {"quick": True})
    assert bench_result.check(doc) == [], bench_result.check(doc)
    w = doc["workloads"]["resnet50"]
    assert w["resumed_ms"]["median"] == 330 and w["cold_over_resumed"] == round(4000 / 330, 2)
    assert doc["workloads"]["bert"] == {"skipped": "budget"}
    assert doc["concurrent_resume_ms"]["8"]["resume_ms"]["max"] == 1200
    assert doc["concurrent_resume_ms"]["8"]["sage_over_driver_ms"] == 20.0
    assert doc["summary"]["targets"]["resnet50 8x: SAGE over driver"]["ok"] is True
    assert doc["faas"]["suspend"]["latency_ms"]["p99"] == 320 and doc["faas"]["suspend"]["gpu_mib"]["min"] == 0
    assert doc["oversubscription"]["resume_ms"]["n"] == 2 and "records" not in doc["oversubscription"]
    t = doc["summary"]["targets"]
    assert t["resnet50 resume_ms alone"]["ok"] is True and t["resnet50 idle GPU MiB"]["ok"] is True
    assert t["resnet50 resume_ms, 8 at once"]["ok"] is True and t["bert cold/resumed"]["ok"] is None
    assert t["oversubscription"]["ok"] is True and doc["summary"]["mismatches"] == 0
    text = table(doc)
    assert "resnet50" in text and "12.12" in text and "concurrent 8 x resnet50" in text, text
    assert "the driver alone (native): restore_ms 1180.0" in text and "over the driver 20.0 ms" in text, text
    quick = _fake_raw()
    quick["concurrent"][8].pop("driver_restore_ms")
    doc = document(quick, doc["machine"], {})
    assert "driver_restore_ms" not in doc["concurrent_resume_ms"]["8"] and bench_result.check(doc) == []
    assert doc["summary"]["targets"]["resnet50 8x: SAGE over driver"]["ok"] is None
    assert "faas suspend" in text and "oversubscription: 8 resnet50" in text and "SKIPPED: bert" in text
    bad = _fake_raw()
    bad["workloads"]["resnet50"].update(mismatches=2, idle_gpu_mib=[0, 12])
    doc = document(bad, {k: "x" for k in bench_result.MACHINE_KEYS}, {})
    assert doc["summary"]["mismatches"] == 2 and doc["summary"]["targets"]["resnet50 idle GPU MiB"]["ok"] is False
    assert "2 mism" in table(doc)
    bad["oversub"]["max_gpu_mib"] = 3300  # over the cap: the target is missed
    assert document(bad, doc["machine"], {})["summary"]["targets"]["oversubscription"]["ok"] is False
    skipped = {"workloads": {}, "concurrent": {8: {"skipped": "no gate"}}, "faas": {"skipped": "no idle"},
               "oversub": {"skipped": "skipped: broker has no --instance-memory"}}
    doc = document(skipped, {k: "x" for k in bench_result.MACHINE_KEYS}, {})
    assert bench_result.check(doc) == [] and "oversubscription: skipped" in table(doc)
    doc = document({"workloads": {}, "concurrent": {}, "faas": {}, "oversub": {}}, doc["machine"], {})
    assert doc["oversubscription"] == {"skipped": "not run"} and "faas: skipped: not run" in table(doc)
    good = document(_fake_raw(), {k: "x" for k in bench_result.MACHINE_KEYS}, {})
    good["workloads"] = {"cfunc": dict(good["workloads"]["resnet50"])}
    assert check_dry_run(good, 3, ("cfunc",)) == [], check_dry_run(good, 3, ("cfunc",))
    assert any("workloads.sgemm.cold_ms" in b for b in check_dry_run(good, 3))
    good["workloads"]["cfunc"]["idle_gpu_mib"] = figure([0, 8, 0])
    assert any("holds device memory" in b for b in check_dry_run(good, 3, ("cfunc",)))
    assert any("wanted 4 samples" in b for b in check_dry_run(good, 4, ("cfunc",)))
    print("suspend_report selftest: ok")
    return 0


def check_dry_run(doc, runs, kinds=("cfunc", "sgemm")):
    """What a dry run on the simulated driver must show (suspend.sh --fake runs
    it): every figure measured runs times, a suspended instance at 0 bytes,
    every concurrent instance resumed, nothing failed, every output identical."""
    import bench_result

    bad = list(bench_result.check(doc))
    for kind in kinds:
        w = doc.get("workloads", {}).get(kind, {})
        for k in ("cold_ms", "warm_ms", "sage_warm_ms", "resumed_ms", "resume_ms", "suspend_ms", "idle_gpu_mib"):
            if (w.get(k) or {}).get("n") != runs:
                bad.append(f"workloads.{kind}.{k}: {w.get(k)}, wanted {runs} samples")
        if (w.get("idle_gpu_mib") or {}).get("max") != 0:
            bad.append(f"{kind}: a suspended instance holds device memory: {w.get('idle_gpu_mib')}")
        if not (w.get("active_gpu_mib") or {}).get("min"):
            bad.append(f"{kind}: an active instance holds no device memory: {w.get('active_gpu_mib')}")
        bad += [f"{kind}: problem: {p}" for p in w.get("problems", [])]
    for n, c in doc.get("concurrent_resume_ms", {}).items():
        if (c.get("resumed_ms") or {}).get("n") != int(n) or (c.get("resume_ms") or {}).get("n") != int(n):
            bad.append(f"concurrent {n}: {c}")
        if (c.get("driver_restore_ms") or {}).get("n") != int(n):
            bad.append(f"concurrent {n}: the driver's restore alone: {c.get('driver_restore_ms')}")
    if not doc.get("concurrent_resume_ms"):
        bad.append("concurrent: not run")
    s = doc.get("summary", {})
    if s.get("mismatches") or s.get("failures"):
        bad.append(f"{s.get('mismatches')} mismatches, {s.get('failures')} failures")
    bad += [f"problem: {p}" for p in doc.get("problems", [])]
    return bad


def main(argv):
    if len(argv) >= 2 and argv[1] == "selftest":
        return selftest()
    if len(argv) == 4 and argv[1] == "check-dry-run":
        with open(argv[2]) as f:
            bad = check_dry_run(json.load(f), int(argv[3]))
        for b in bad:
            print(f"suspend dry run: FAIL: {b}")
        print("suspend dry run: " + ("FAILED" if bad else "ok: the whole flow ran on the simulated driver"))
        return 1 if bad else 0
    if len(argv) >= 2 and argv[1] == "estimate":
        quick = "--quick" in argv
        p = plan(quick, fake="--fake" in argv)
        print(json.dumps({"plan": p, "workloads": {k: estimate_workload(k, 3, k in p["idle_kinds"])
                                                   for k in p["kinds"]}}))
        return 0
    print("usage: suspend_report.py selftest | estimate [--quick] [--fake] | check-dry-run FILE RUNS",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
    sys.exit(main(sys.argv))

"""Benchmark suite of SAGE: from per-run records to the results document.

Pure logic on plain per-run records (what suite_runner's Runner.record
writes): the functions' output parser, stats, the checksum and preload
checks, the duration / concurrency / sharing summaries, the Poisson schedule
and its summary, the density extrapolation; assemble (records + run metadata
-> results.json), merge_docs (shards -> one document), the table, the plots
and write_outputs. Unit-tested by suite_test.py without a GPU. Plots need
matplotlib; without it they are skipped and the JSON says so. Standard
library otherwise.
"""
import json
import math
import os
import random

import bench_result
from suite_plan import MODE_TEXT, MODES, SAGE_MODES, SHARED_MODES, covered_items


# ---------------------------------------------------------------- pure logic
def percentile(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    if not s:
        return None
    k = max(1, int(math.ceil(q / 100.0 * len(s))))
    return s[min(k, len(s)) - 1]


median = bench_result.median


def stats(values):
    """bench_result's figure (n, median, min, max) plus the p99 of latencies."""
    s = bench_result.stats(values)
    if s:
        s["p99"] = round(percentile([float(x) for x in values if x is not None], 99), 3)
    return s


def summary_of(doc):
    """The figures of a results document: under "summary" (the schema of
    bench_result.py); files written before it kept them at the top level."""
    return doc.get("summary") or doc


def settings_of(doc):
    """The run's settings ("config" in files written before the schema)."""
    return doc.get("settings") or doc.get("config") or {}


def parse_output(text, kind=None):
    """Per-process JSON records from a function's stdout: lines `SAGE_BENCH {..}`
    (suite functions) or plain `{..}` (parallel_setup_cfunc). Normalises the
    phase names: compute_ms (cfunc: kernel_ms), host_ms = import + read."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("SAGE_BENCH "):
            line = line[len("SAGE_BENCH "):]
        elif not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if "compute_ms" not in d and "kernel_ms" in d:
            d["compute_ms"] = d["kernel_ms"]
        if kind and "kind" not in d:
            d["kind"] = kind
        d["host_ms"] = round(float(d.get("import_ms", 0) or 0) + float(d.get("read_ms", 0) or 0), 3)
        out.append(d)
    return out


def checksum_check(records):
    """Compare every successful record's checksum with native's, per workload.
    Exact bit checksums when native agrees with itself, else the approximate
    value (reported as such). Returns (problems, per-workload basis)."""
    problems, basis = [], {}
    by_wl = {}
    for r in records:
        if r.get("ok") and r.get("checksum"):
            by_wl.setdefault(r["wl"], []).append(r)
    for wl, recs in sorted(by_wl.items()):
        nat = [r for r in recs if r["mode"] == "native"]
        if not nat:
            basis[wl] = "no native run to compare with"
            continue
        exact = {r["checksum"] for r in nat}
        if len(exact) == 1:
            key, ref, basis[wl] = "checksum", exact, "exact (bit patterns)"
        else:
            key, ref = "approx", {r.get("approx") for r in nat}
            basis[wl] = f"approximate: native itself gave {len(exact)} different exact checksums"
            if len(ref) != 1:
                problems.append(f"MISMATCH {wl}: native runs disagree even approximately: {sorted(map(str, ref))}")
                continue
        want = next(iter(ref))
        for r in recs:
            if r["mode"] != "native" and r.get(key) != want:
                problems.append(f"MISMATCH {wl} {r['mode']} ({r.get('part')} run {r.get('run')}): "
                                f"{key} {r.get(key)} != native {want}")
    return problems, basis


def preload_check(records):
    """libsage must be mapped in sage modes and absent elsewhere."""
    problems, proof = [], {}
    for r in records:
        if not r.get("ok") or "sage_loaded" not in r:
            continue
        want = r["mode"] in SAGE_MODES
        p = proof.setdefault(r["mode"], {"libsage_loaded": 0, "not_loaded": 0})
        p["libsage_loaded" if r["sage_loaded"] else "not_loaded"] += 1
        if bool(r["sage_loaded"]) != want:
            problems.append(f"{r['wl']} {r['mode']} ({r.get('part')} run {r.get('run')}): libsage "
                            f"{'loaded' if r['sage_loaded'] else 'NOT loaded'} (expected "
                            f"{'loaded' if want else 'absent'})")
    return problems, proof


def summarize_duration(records):
    """Concurrency-1 records -> {wl: {mode: summary}}."""
    out = {}
    for r in records:
        if r.get("part") != "conc1":
            continue
        d = out.setdefault(r["wl"], {}).setdefault(r["mode"], {"runs": [], "failures": 0})
        if r.get("ok"):
            d["runs"].append(r)
        else:
            d["failures"] += 1
    for wl, modes in out.items():
        for mode, d in modes.items():
            runs = d.pop("runs")
            d["n"] = len(runs)
            for k in ("duration_ms", "setup_ms", "upload_ms", "compute_ms", "host_ms", "total_ms"):
                d[k] = stats([r.get(k) for r in runs])
    return out


def ratios(duration):
    """native median / mode median, within this run."""
    out = {}
    for wl, modes in duration.items():
        nat = (modes.get("native") or {}).get("duration_ms")
        if not nat:
            continue
        for mode, d in modes.items():
            if mode != "native" and d.get("duration_ms"):
                out.setdefault(wl, {})[mode] = round(nat["median"] / d["duration_ms"]["median"], 3)
    return out


def summarize_concurrency(records):
    out = {}
    for r in records:
        if r.get("part") != "concN":
            continue
        key = str(r["conc"])
        d = out.setdefault(r["wl"], {}).setdefault(key, {}).setdefault(
            r["mode"], {"durations": [], "setups": [], "walls": {}, "failures": 0})
        if r.get("ok"):
            d["durations"].append(r["duration_ms"])
            if r.get("setup_ms") is not None:
                d["setups"].append(r["setup_ms"])
        else:
            d["failures"] += 1
        if r.get("batch_wall_ms") is not None:
            d["walls"][r.get("run", 1)] = r["batch_wall_ms"]
    for wl in out.values():
        for conc in wl.values():
            for mode, d in conc.items():
                conc[mode] = {"per_process_ms": stats(d["durations"]), "setup_ms": stats(d["setups"]),
                              "batch_wall_ms": stats(list(d["walls"].values())), "failures": d["failures"]}
    return out


def poisson_arrivals(rate, duration_s, seed):
    """Arrival offsets (s) of a Poisson stream; the same seed gives every mode
    the same schedule."""
    rng = random.Random(seed)
    t, out = 0.0, []
    while True:
        t += rng.expovariate(rate)
        if t >= duration_s:
            return out
        out.append(round(t, 6))


def poisson_summary(reqs, rate, duration_s):
    """reqs: [{'arrival_s', 'end_s' (None if failed), 'ok'}] relative to the window start."""
    done = [r for r in reqs if r.get("ok") and r.get("end_s") is not None]
    lat = [(r["end_s"] - r["arrival_s"]) * 1000.0 for r in done]
    span = max([r["end_s"] for r in done], default=0.0)
    return {"rate_rps": rate, "window_s": duration_s, "offered": len(reqs), "completed": len(done),
            "failed": len(reqs) - len(done),
            "p50_ms": round(percentile(lat, 50), 1) if lat else None,
            "p99_ms": round(percentile(lat, 99), 1) if lat else None,
            "throughput_rps": round(len(done) / span, 3) if span > 0 else 0.0,
            "latencies_ms": [round(x, 1) for x in sorted(lat)]}


def density_extrapolate(points, total_mib, baseline_mib):
    """points: [{'instances': k, 'used_mib': GPU memory used with k resident}].
    Per-instance figure = marginal slope from the fewest to the most instances
    (first-instance overheads such as an MPS server excluded), and the average.
    Extrapolated count = instances that fit in total - baseline, labelled so."""
    pts = sorted((p for p in points if p.get("used_mib") is not None), key=lambda p: p["instances"])
    if not pts:
        return {"error": "no measurement"}
    lo, hi = pts[0], pts[-1]
    avg = (hi["used_mib"] - baseline_mib) / hi["instances"]
    if hi["instances"] > lo["instances"]:
        marginal = (hi["used_mib"] - lo["used_mib"]) / (hi["instances"] - lo["instances"])
    else:
        marginal = avg
    first = lo["used_mib"] - baseline_mib - marginal * (lo["instances"] - 1)
    per = marginal if marginal > 0 else avg
    count = None
    if per > 0 and total_mib:
        count = int(max(0, (total_mib - baseline_mib - first)) // per) + 1 if first <= total_mib - baseline_mib else 0
    return {"per_instance_mib_marginal": round(marginal, 1), "per_instance_mib_average": round(avg, 1),
            "first_instance_mib": round(first, 1), "gpu_total_mib": total_mib, "baseline_mib": baseline_mib,
            "extrapolated_max_instances": count,
            "label": "EXTRAPOLATED from %s instances (not measured to OOM)" % "/".join(
                str(p["instances"]) for p in pts)}



# ---------------------------------------------------------------- results document
def sharing_summary(records):
    """Broker counters (sagectl stats deltas around each concurrency-1
    invocation) summed per workload and sharing mode."""
    out = {}
    for r in records:
        if r.get("part") != "conc1" or r.get("mode") not in SHARED_MODES or "broker_delta" not in r:
            continue
        d = out.setdefault(r["wl"], {}).setdefault(r["mode"], {"n": 0, "hits": 0, "misses": 0, "publishes": 0})
        d["n"] += 1
        for k in ("hits", "misses", "publishes"):
            d[k] += int((r["broker_delta"] or {}).get(k) or 0)
    return out


def fmt_ms(s):
    if not s:
        return "-"
    m = s["median"]
    v = f"{m:.0f}" if m >= 100 else f"{m:.1f}" if m >= 1 else f"{m:.2f}"
    return v


def fmt_range(s):
    if not s:
        return "-"
    return f"{fmt_ms(s)} [{fmt_ms({'median': s['min']})}-{fmt_ms({'median': s['max']})}]"


def table(doc):
    L = []
    m = doc.get("machine", {})
    L.append(f"SAGE suite: {m.get('gpu')} | driver {m.get('driver')} | CUDA {m.get('cuda')} | "
             f"{m.get('cpus')} CPUs | {m.get('date')} | commit {m.get('commit') or '?'}"
             f"{' | --quick' if settings_of(doc).get('quick') else ''}")
    L.append("modes:")
    for k, v in doc.get("modes", {}).items():
        text = doc.get("mode_text", {}).get(k)
        L.append(f"  {k:<17} {text + ' | ' if text else ''}{v}")
    if settings_of(doc).get("plan_note"):
        L.append(settings_of(doc)["plan_note"])
    dur = summary_of(doc).get("duration", {})
    modes = [x for x in MODES if any(x in d for d in dur.values())]
    if dur:
        L += ["", "Function duration, 1 at a time, process start -> exit: median [min-max] ms, n runs; "
              "below: GPU setup / upload / compute medians"]
        L.append(f"{'workload':<10}" + "".join(f"{x:>24}" for x in modes))
        for wl, d in dur.items():
            row, sub = f"{wl:<10}", f"{'':<10}"
            for x in modes:
                s = d.get(x)
                if not s:
                    row += f"{doc.get('na', {}).get(wl, {}).get(x, '-'):>24}"[:24].rjust(24)
                    sub += " " * 24
                    continue
                fail = f" ({s['failures']} failed)" if s.get("failures") else ""
                n = f" n={s['n']}" if s.get("n") else ""
                row += f"{fmt_range(s.get('duration_ms')) + n + fail:>24}"
                sub += f"{fmt_ms(s.get('setup_ms')) + ' / ' + fmt_ms(s.get('upload_ms')) + ' / ' + fmt_ms(s.get('compute_ms')):>24}"
            L.append(row)
            L.append(sub)
        rat = summary_of(doc).get("ratios", {})
        if rat:
            L.append("native/mode median duration (x faster than native, this run): " + "; ".join(
                f"{wl}: " + ", ".join(f"{k} {v:.2f}x" for k, v in r.items()) for wl, r in rat.items()))
        sh = summary_of(doc).get("sharing", {})
        if sh:
            L.append("broker hits / misses / publishes during the invocations (sagectl stats deltas): " + "; ".join(
                f"{wl}: " + ", ".join(f"{'cold' if m == 'sage_shared_cold' else 'warm'} {d['hits']}/{d['misses']}/"
                                      f"{d['publishes']} (n={d['n']})" for m, d in by.items())
                for wl, by in sh.items()))
    conc = summary_of(doc).get("concurrency", {})
    if conc:
        L += ["", "Concurrent starts: per-process duration median / p99, batch wall median (ms); GPU setup median"]
        for wl, byc in conc.items():
            for c, bym in byc.items():
                for mode, s in bym.items():
                    pp = s.get("per_process_ms")
                    L.append(f"  {wl} x{c} {mode:<12} {fmt_ms(pp)} / "
                             f"{fmt_ms({'median': pp['p99']}) if pp else '-'}  wall {fmt_ms(s.get('batch_wall_ms'))}"
                             f"  setup {fmt_ms(s.get('setup_ms'))}"
                             f"{'  FAILED ' + str(s['failures']) if s.get('failures') else ''}")
    def entries(title, items, describe):
        """Section `title`, a line per (label, entry): describe(entry), or the entry where it is an error text."""
        L.extend(["", title] + [f"  {label} {s if isinstance(s, str) else describe(s)}" for label, s in items])

    po = doc.get("poisson", {})
    if po.get("rates"):
        entries(f"Open-loop Poisson arrivals of {po.get('workload')} (new process per request): "
                "p50 / p99 latency (ms), throughput (req/s), completed/offered",
                [(f"{rate:>4} req/s {mode:<12}", s) for rate, bym in po["rates"].items() for mode, s in bym.items()],
                lambda s: f"{s['p50_ms']} / {s['p99_ms']}  {s['throughput_rps']} req/s  {s['completed']}/{s['offered']}")
    de = doc.get("density", {})
    if de.get("modes"):
        entries(f"Density of {de.get('workload')} (GPU memory per resident instance, nvidia-smi; "
                "sage_shared: the broker's extents are in the baseline):",
                [(f"{mode:<12}", s) for mode, s in de["modes"].items()],
                lambda s: s.get("error") if "per_instance_mib_marginal" not in s else (
                    f"{s['per_instance_mib_marginal']:.0f} MiB/instance measured "
                    f"(avg {s['per_instance_mib_average']:.0f}); {s['extrapolated_max_instances']} instances "
                    f"on {s['gpu_total_mib']} MiB: {s['label']}"))
    L.append("")
    L.append("hook overhead: " + (doc["hook_overhead"] if isinstance(doc.get("hook_overhead"), str)
                                  else json.dumps(doc.get("hook_overhead", {}).get("summary",
                                                  "see results.json"))[:300]))
    ch = doc.get("checks", {})
    L.append("checksums vs native: " + ("OK (" + "; ".join(f"{k}: {v}" for k, v in ch.get("checksum_basis", {}).items())
                                        + ")" if not ch.get("checksum_problems") else
                                        "*** MISMATCH *** " + " | ".join(ch["checksum_problems"])))
    L.append("libsage mapped (/proc/self/maps): " + "; ".join(
        f"{k}: {v['libsage_loaded']} loaded, {v['not_loaded']} not" for k, v in ch.get("preload_proof", {}).items())
        + ("  *** PRELOAD PROBLEM *** " + " | ".join(ch["preload_problems"]) if ch.get("preload_problems") else "  OK"))
    if ch.get("failures"):
        L.append(f"FAILED processes: {len(ch['failures'])}: " + " | ".join(ch["failures"][:6]))
    for s in doc.get("notes", []):
        L.append("note: " + s)
    for sh in doc.get("merged_from", []):
        m = sh.get("machine") or {}
        est, took = sh.get("estimate_s") or {}, sh.get("part_s") or {}
        L.append(f"shard {sh['shard']} ({sh.get('file')}): {m.get('gpu')} | {m.get('date')} | commit "
                 f"{m.get('commit')} | {sh.get('elapsed_s')} s | {', '.join(sh.get('units') or [])} | "
                 "s per part est/taken: " + ", ".join(f"{p} {est.get(p, '-')}/{took.get(p, '-')}" for p in
                                                     list(est) + [p for p in took if p not in est]))
    for s in doc.get("merge_warnings", []):
        L.append("*** MERGE WARNING *** " + s)
    merged = "merged_from" in doc
    if doc.get("not_run"):
        L.append(f"NOT RUN ({len(doc['not_run'])} of {len(doc.get('full_plan', {}).get('items', []))} items of the "
                 "full plan: no shard measured them): " if merged else
                 f"NOT RUN in this shard ({len(doc['not_run'])} of its items): ")
        L[-1] += ", ".join(doc["not_run"][:40]) + (" ..." if len(doc["not_run"]) > 40 else "")
    elif "not_run" in doc:
        L.append((f"full plan covered: every one of its {len(doc.get('full_plan', {}).get('items', []))} items"
                  if merged else "every item of this shard") + " was measured (failures, if any, listed above)")
    for s in doc.get("skipped", []):
        L.append("SKIPPED: " + s)
    if doc.get("trimmed"):
        L.append(f"optional extra runs not done (time budget): {len(doc['trimmed'])}: "
                 + ", ".join(doc["trimmed"][:8]) + (" ..." if len(doc["trimmed"]) > 8 else ""))
    sh = doc.get("shard")
    if sh:
        L.append(f"shard {sh['k']}/{sh['n']} (budget {sh.get('budget_s')} s, estimated {sh.get('est_s')} s): "
                 + ", ".join(sh.get("units", [])) + (" | workloads not built here: " + ", ".join(
                     sh["missing_here"]) if sh.get("missing_here") else ""))
    est, took = doc.get("estimate_s") or {}, doc.get("part_s") or {}
    if est or took:
        L.append("seconds per part, estimated / taken: " + ", ".join(
            f"{p} {est.get(p, '-')} / {took.get(p, '-')}" for p in list(est) + [p for p in took if p not in est]))
    py = settings_of(doc).get("python_env")
    if py:
        L.append(f"python: {py}")
    L.append(f"elapsed {doc.get('elapsed_s')} s")
    return "\n".join(L)


def plots(doc, out_dir):
    """duration.png, latency_cdf.png, density.png; returns (written, note)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001
        return [], f"plots skipped: matplotlib unavailable ({e})"
    written = []

    def save(fig, name):
        fig.tight_layout()
        written.append(os.path.join(out_dir, name))
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

    dur = summary_of(doc).get("duration", {})
    if dur:
        wls = list(dur)
        modes = [x for x in MODES if any(x in d for d in dur.values())]
        fig, axes = plt.subplots(1, len(wls), figsize=(3.2 * len(wls), 4.2), squeeze=False)
        colors = {"other": "#bbbbbb", "setup": "#d62728", "upload": "#1f77b4", "compute": "#2ca02c"}
        for ax, wl in zip(axes[0], wls):
            for i, mode in enumerate(modes):
                s = dur[wl].get(mode)
                if not s or not s.get("duration_ms"):
                    continue
                tot = s["duration_ms"]["median"]
                parts = {k: (s.get(k + "_ms") or {}).get("median", 0) for k in ("setup", "upload", "compute")}
                parts = {"other": max(0.0, tot - sum(parts.values())), **parts}
                bottom = 0.0
                for k, v in parts.items():
                    ax.bar(i, v, bottom=bottom, color=colors[k], label=k if i == 0 else None)
                    bottom += v
                ax.errorbar(i, tot, yerr=[[tot - s["duration_ms"]["min"]], [s["duration_ms"]["max"] - tot]],
                            fmt="none", ecolor="black", capsize=3)
            ax.set_xticks(range(len(modes)))
            ax.set_xticklabels(modes, rotation=45, ha="right", fontsize=8)
            ax.set_title(wl)
            ax.set_ylabel("ms (median; start -> exit)")
        axes[0][0].legend(fontsize=7)
        save(fig, "duration.png")
    po = doc.get("poisson", {}).get("rates", {})
    if po:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for rate, bym in po.items():
            for mode, s in bym.items():
                if isinstance(s, str) or not s.get("latencies_ms"):
                    continue
                lat = s["latencies_ms"]
                ax.step(lat, [(i + 1) / len(lat) for i in range(len(lat))], where="post",
                        label=f"{mode} @ {rate} req/s")
        ax.set_xlabel("latency, arrival -> process exit (ms)")
        ax.set_ylabel("CDF")
        ax.set_title(f"open-loop Poisson arrivals: {doc['poisson'].get('workload')}")
        ax.legend(fontsize=7)
        save(fig, "latency_cdf.png")
    de = doc.get("density", {}).get("modes", {})
    ok = {m: s for m, s in de.items() if isinstance(s, dict) and s.get("extrapolated_max_instances") is not None}
    if ok:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 4))
        names = list(ok)
        a1.bar(names, [ok[m]["per_instance_mib_marginal"] for m in names], color="#1f77b4")
        a1.set_title("GPU MiB per instance (measured)")
        a2.bar(names, [ok[m]["extrapolated_max_instances"] for m in names], color="#ff7f0e")
        a2.set_title("instances per GPU (EXTRAPOLATED)")
        fig.suptitle(f"density: {doc['density'].get('workload')}")
        save(fig, "density.png")
    return written, ""


MACHINE_KEYS = ("gpu", "driver", "gpu_memory", "cuda", "cpus", "torch")


def merge_docs(docs, names=None):
    """Shards' results documents -> one (pure). The summaries and checks are
    recomputed from the records: checksums against native within each shard,
    ratios within each shard (a workload cut into several shards: the median
    of its shards' ratios, every shard having run native), preload over all;
    every item of the full plan that no shard measured is listed in not_run.
    Shards of another commit, machine or plan are merged but warned about
    (merge_warnings, also in the table)."""
    names = names or [f"#{i + 1}" for i in range(len(docs))]
    warnings = []
    by_k = {}
    for name, d in zip(names, docs):
        sh = d.get("shard")
        if not sh:
            warnings.append(f"{name}: not a shard (no shard id): merged as shard 0")
            sh = {"k": 0, "n": 0}
        if sh["k"] in by_k:
            warnings.append(f"shard {sh['k']} given twice ({by_k[sh['k']][0]} and {name}): using {name}")
        by_k[sh["k"]] = (name, d)
    ks = sorted(by_k)
    shards = [by_k[k][1] for k in ks]
    first = shards[0]
    plan = first.get("full_plan") or {}
    ns = {d.get("shard", {}).get("n") for d in shards}
    for k in ks:
        name, d = by_k[k]
        fp = d.get("full_plan") or {}
        if fp.get("units") != plan.get("units") or fp.get("n") != plan.get("n"):
            warnings.append(f"shard {k} ({name}) was cut from another plan (budget {fp.get('budget_s')} s, "
                            f"{fp.get('n')} shards, runs {fp.get('runs')}) than shard {ks[0]} "
                            f"(budget {plan.get('budget_s')} s, {plan.get('n')} shards, runs {plan.get('runs')})")
    commits = {d.get("machine", {}).get("commit") for d in shards}
    if len(commits) > 1:
        warnings.append("shards come from DIFFERENT COMMITS: " + ", ".join(
            f"shard {k}: {by_k[k][1].get('machine', {}).get('commit')}" for k in ks))
    elif any(c is None or str(c).endswith("+dirty") for c in commits):
        warnings.append(f"commit {next(iter(commits))}: uncommitted changes may differ between the shards")
    for key in MACHINE_KEYS:
        vals = {str(d.get("machine", {}).get(key)) for d in shards}
        if len(vals) > 1:
            warnings.append(f"shards ran on DIFFERENT MACHINES ({key}): " + ", ".join(
                f"shard {k}: {by_k[k][1].get('machine', {}).get(key)}" for k in ks))
    missing = sorted(set(range(1, (plan.get("n") or 0) + 1)) - set(ks))
    if missing:
        warnings.append(f"shards not given: {', '.join(map(str, missing))} of {plan.get('n')}")

    records = []
    cp, basis, by_shard_ratios = [], {}, {}
    for k, d in zip(ks, shards):
        recs = [dict(r, shard=k) for r in d.get("records", [])]
        records.extend(recs)
        p, b = checksum_check(recs)
        cp.extend(f"shard {k}: {x}" for x in p)
        for wl, v in b.items():
            basis.setdefault(wl, []).append(f"shard {k} {v}")
        by_shard_ratios[str(k)] = ratios(summarize_duration(recs))
    # The same workload's native output must agree across shards too.
    nat = {}
    for r in records:
        if r.get("ok") and r.get("checksum") and r.get("mode") == "native":
            nat.setdefault(r["wl"], {}).setdefault(r["shard"], set()).add((r["checksum"], r.get("approx")))
    for wl, per in sorted(nat.items()):
        if len(per) > 1 and len({a for v in per.values() for _, a in v}) > 1:
            cp.append(f"MISMATCH {wl}: native differs between shards {sorted(per)} even approximately")
    rat = {}
    for k, r in by_shard_ratios.items():
        for wl, by in r.items():
            for mode, v in by.items():
                rat.setdefault(wl, {}).setdefault(mode, []).append(v)
    rat = {wl: {m: round(median(v), 3) for m, v in by.items()} for wl, by in rat.items()}
    split = sorted(wl for wl in rat if sum(wl in r for r in by_shard_ratios.values()) > 1)

    modes = {}
    for m in MODES:
        states = [(k, d.get("modes", {}).get(m)) for k, d in zip(ks, shards) if d.get("modes", {}).get(m)]
        vals = {v for _, v in states}
        modes[m] = next(iter(vals)) if len(vals) == 1 else "; ".join(f"shard {k}: {v}" for k, v in states)
    po, de = {}, {}
    for d in shards:
        if (d.get("poisson") or {}).get("rates"):
            p = d["poisson"]
            if not po:
                po = {k: v for k, v in p.items() if k != "rates"}
                po["rates"] = {}
            for rate, bym in p["rates"].items():
                po["rates"].setdefault(rate, {}).update(bym)
        if (d.get("density") or {}).get("modes"):
            if not de:
                de = {k: v for k, v in d["density"].items() if k != "modes"}
                de["modes"] = {}
            de["modes"].update(d["density"]["modes"])
    na = {}
    for d in shards:
        for wl, by in (d.get("na") or {}).items():
            na.setdefault(wl, {}).update(by)
    items = plan.get("items") or []
    covered = covered_items(records)
    not_run = [x for x in items if x not in covered]
    hook = next((d["hook_overhead"] for d in shards if d.get("hook_overhead") not in (None, "not run")), "not run")
    m0 = dict(first.get("machine", {}))
    dates = [d.get("machine", {}).get("date") for d in shards]
    m0["date"] = " .. ".join(x for x in (min(filter(None, dates), default=None),
                                          max(filter(None, dates), default=None)) if x)
    if len(set(dates)) == 1:
        m0["date"] = dates[0]
    cfg0 = settings_of(first)
    extra = {
        "machine": m0,
        "settings": {"quick": False, "merged": True, "plan_note": "merged from %d of %s shards; %s" % (
            len(ks), plan.get("n", "?"), plan.get("plan_note", "")), "python_env": cfg0.get("python_env")},
        "merged_from": [{"shard": k, "file": by_k[k][0], "machine": d.get("machine"), "units":
                         (d.get("shard") or {}).get("units"), "estimate_s": d.get("estimate_s"),
                         "part_s": d.get("part_s"), "elapsed_s": d.get("elapsed_s")} for k, d in zip(ks, shards)],
        "full_plan": plan, "merge_warnings": warnings, "not_run": not_run,
        "modes": modes, "mode_text": dict(MODE_TEXT), "na": na,
        "skipped": [f"shard {k}: {x}" for k, d in zip(ks, shards) for x in d.get("skipped", [])],
        "trimmed": [f"shard {k}: {x}" for k, d in zip(ks, shards) for x in d.get("trimmed", [])],
        "notes": [f"shard {k}: {x}" for k, d in zip(ks, shards) for x in d.get("notes", [])]
        + ([f"ratios of {', '.join(split)}: median of the ratios of the shards that ran them "
            "(each with its own native runs)"] if split else []),
        "hook_overhead": hook, "poisson": po, "density": de,
        "elapsed_s": round(sum(d.get("elapsed_s") or 0 for d in shards), 1),
    }
    doc = assemble(records, extra)
    doc["summary"]["ratios"], doc["ratios_by_shard"] = rat, by_shard_ratios
    doc["checks"]["checksum_problems"] = cp
    doc["checks"]["checksum_basis"] = {wl: "; ".join(v) for wl, v in sorted(basis.items())}
    return doc


def assemble(records, extra):
    """The results document from raw records + run metadata (pure)."""
    dur = summarize_duration(records)
    summary = {"duration": dur, "ratios": ratios(dur), "concurrency": summarize_concurrency(records),
               "sharing": sharing_summary(records)}
    # extra may be a document again (suite.py report): its schema keys, old
    # "config" and old top-level figures are replaced, not carried twice.
    drop = ("schema", "bench", "machine", "settings", "config", "summary", *summary)
    doc = bench_result.result("suite", extra.get("machine", {}), settings_of(extra), summary,
                              **{k: v for k, v in extra.items() if k not in drop})
    cp, basis = checksum_check(records)
    pp, proof = preload_check(records)
    fails = [f"{r['wl']} {r['mode']} {r.get('part')} run {r.get('run')}: {r.get('error', '')[:160]}"
             for r in records if not r.get("ok")]
    doc["checks"] = {"checksum_problems": cp, "checksum_basis": basis, "preload_problems": pp,
                     "preload_proof": proof, "failures": fails}
    doc["records"] = records
    return doc


def write_outputs(doc, out_dir):
    text = table(doc)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        written, note = plots(doc, out_dir)
        doc["plots"] = [os.path.basename(p) for p in written] or note
        bench_result.write(out_dir, doc, text, name="results", text_name="table")
        if note:
            text += "\n" + note
    print(text, flush=True)

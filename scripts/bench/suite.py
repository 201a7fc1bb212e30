"""Benchmark suite of SAGE: runner and report (driven by scripts/bench/suite.sh).

    suite.py run CONFIG.json     run everything CONFIG asks, write results
    suite.py report RAW.json     re-render table/plots from a results.json
    suite.py shards [--budget S] [--runs R] [--n N]
                                 the full plan cut into shards (suite.sh --shard K/N)
    suite.py merge OUT_DIR A/results.json B/results.json ...
                                 shards -> one results.json + table.txt + plots
                                 (exit 1: a check failed, 3: part of the full plan not run)

The pure-logic parts (stats, checks, density extrapolation, Poisson schedule
and summary, table, plots) take plain per-run records and are unit-tested by
suite_test.py without a GPU. Plots need matplotlib; without it they are
skipped and the JSON says so. Standard library otherwise.
"""
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time

MODES = ("native", "mps", "sage", "sage_broker", "sage_shared_cold", "sage_shared", "warm_process")
SAGE_MODES = ("sage", "sage_broker", "sage_shared_cold", "sage_shared")  # libsage preloaded
SHARED_MODES = ("sage_shared_cold", "sage_shared")  # + SAGE_SHARE=1
BROKER_MODES = ("sage_broker",) + SHARED_MODES  # + a saged on SAGE_SOCKET
# Concurrency 1 rotates these groups from round to round; a group runs all its
# workloads before the next. Cold and warm sharing are one group: per workload
# a fresh broker, the cold invocation (it misses and publishes), then the warm
# one on that broker (it maps what the cold one published).
MODE_GROUPS = (("native",), ("mps",), ("sage",), ("sage_broker",), SHARED_MODES)
PY_KINDS = ("resnet50", "bert", "gpt2", "llm")
C_KINDS = ("cfunc", "sgemm")
MODE_TEXT = {
    "native": "the function alone",
    "mps": "under an MPS control daemon (nvidia-cuda-mps-control -d)",
    "sage": "LD_PRELOAD=libsage.so (parallel set-up; Python: SAGE_WARMUP=eager)",
    "sage_broker": "libsage + a saged broker (SAGE_SOCKET; keeps the GPU initialised)",
    "sage_shared_cold": "libsage + SAGE_SHARE=1 + a saged started fresh (no extents) right before the "
                        "invocation: it misses, copies and publishes at exit",
    "sage_shared": "libsage + SAGE_SHARE=1 + a warm saged already holding this workload's extents "
                   "(primed by one untimed invocation, or by the cold one just before): it maps them",
}

# Time model of the plan (seconds), from the --quick partial run of 2026-11-29
# on the H200 (docs/results/2026-11-29-h200/suite-quick-partial.*): medians
# over its modes, bert/gpt2 without their read_ms (8-14 s of building the model
# with random weights, no longer done) plus ~0.3-0.5 s to build it without, and
# imports as slow as measured there (torch + torchvision 7.4 s, transformers
# 5 s): a worst case; faster imports leave time for the optional extra runs.
# One invocation, process start -> exit (cfunc and llm scale with their files):
EST_S = {"cfunc": 0.55, "cfunc_per_gib": 0.65, "sgemm": 0.7, "resnet50": 10.5, "bert": 8.2, "gpt2": 8.4,
         "llm": 4.5, "llm_per_gib": 0.35}
EST_COLD_EXTRA_S = 1.0  # a cold sharing invocation hashes, reads back and publishes at exit
EST_BROKER_S = 1.4      # stop + start a saged (it needs ~1 s for cuInit + its context)
EST_MPS_S = 2.0         # start the MPS daemon + its probe
EST_SETUP_S = 40        # nvcc x2 | warm-up import, then the weights (C 1 GiB, LLM 4 GiB)
# The time model of --shard (cfg "time_model": "h200-2026-11-30"): the full
# run of 2026-11-30 on the H200 (/work/.device/3, docs/results/2026-11-30-h200/
# suite.*), one invocation start -> exit, at the slow end of its modes:
# resnet50 10.4-12.0 s, bert 20.3-22.7, gpt2 19.5, llm 7.5 (4 GiB), cfunc
# 0.9-1.4 (1 GiB), sgemm 0.5-1.2; its set-up took 51 s (the untimed warm-up
# import alone 20.7 s). At these speeds the single-call default plan above
# does not fit 480 s (that run skipped 25 core items at --budget 430).
EST_MODELS = {
    "h200-2026-11-29": EST_S,
    "h200-2026-11-30": {"cfunc": 0.55, "cfunc_per_gib": 0.65, "sgemm": 0.8, "resnet50": 11.5, "bert": 21.5,
                        "gpt2": 20.5, "llm": 6.0, "llm_per_gib": 0.4},
}
SHARD_MODEL = "h200-2026-11-30"
EST_SHARD_SETUP_S = {"python": 52, "c": 30}  # a shard's set-up with / without Python workloads
SHARD_BUDGET_S = 480    # default --budget of one shard (one 10-minute device call)


# ---------------------------------------------------------------- pure logic
def percentile(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    if not s:
        return None
    k = max(1, int(math.ceil(q / 100.0 * len(s))))
    return s[min(k, len(s)) - 1]


def median(values):
    s = sorted(values)
    n = len(s)
    if n == 0:
        return None
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0


def stats(values):
    v = [float(x) for x in values if x is not None]
    if not v:
        return None
    return {"n": len(v), "median": round(median(v), 3), "min": round(min(v), 3), "max": round(max(v), 3),
            "p99": round(percentile(v, 99), 3)}


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


def est_invocation(cfg, kind, mode="native"):
    """Estimated seconds of one invocation of kind (EST_S, scaled by the file sizes)."""
    m = EST_MODELS.get(cfg.get("time_model"), EST_S)
    if kind == "cfunc":
        t = m["cfunc"] + m["cfunc_per_gib"] * cfg.get("c_mib", 1024) / 1024.0
    elif kind == "llm":
        t = m["llm"] + m["llm_per_gib"] * cfg.get("llm_gib", 4)
    else:
        t = m.get(kind, 10.0)
    return t + (EST_COLD_EXTRA_S if mode == "sage_shared_cold" else 0.0)


def est_batch(one_s, kind, n):
    """n started at once: C functions contend for the GPU set-up, Python ones
    for the CPU while importing (8 PyTorch starts took 1.4x one, 8 C 1.8x)."""
    return one_s * (1.0 + n / (10.0 if kind in C_KINDS else 16.0))


def conc1_rounds(plan):
    return max([r[1] for modes in plan.values() for r in modes.values()] or [0])


def conc1_schedule(plan, run, extra=False):
    """(kind, mode) pairs of concurrency-1 round `run` (1-based), in order.
    plan: {kind: {mode: [core_runs, max_runs(, first_run)]}}: rounds from
    first_run (default 1) up to core_runs are the core (extra=False), the ones
    after it up to max_runs the optional extra runs (extra=True) done at the
    end while the budget allows. The mode groups rotate by one each round."""
    k = (run - 1) % len(MODE_GROUPS)
    groups = MODE_GROUPS[k:] + MODE_GROUPS[:k]
    out = []
    for group in groups:
        for kind, modes in plan.items():
            for mode in group:
                if mode not in modes:
                    continue
                core, most = modes[mode][:2]
                first = modes[mode][2] if len(modes[mode]) > 2 else 1
                if (first <= run <= core) if not extra else (core < run <= most):
                    out.append((kind, mode))
    return out


def estimate_plan(cfg, est=None):
    """Seconds each part of cfg should take (its core items; 'extra' = all the
    optional ones), est(kind, mode) -> one invocation (default est_invocation).
    Counts service starts and the untimed invocations that prime a broker, and
    a warm broker that one part leaves to the next (run_all's order)."""
    est = est or (lambda kind, mode: est_invocation(cfg, kind, mode))
    gap = cfg.get("gap", 0.2)
    out = {}
    primed = [None]  # the workload the running broker holds, if it is still up

    def prime_cost(kind, mode):
        if mode == "sage_shared" and primed[0] == kind:
            return 0.0
        return EST_BROKER_S + est(kind, mode) if mode in SHARED_MODES else 0.0

    def conc1_round(pairs):
        t, seen_mps, seen_broker, cold = 0.0, False, False, set()
        for kind, mode in pairs:
            t += est(kind, mode) + gap
            if mode == "mps" and not seen_mps:
                t, seen_mps = t + EST_MPS_S, True
            if mode == "sage_broker" and not seen_broker:
                t, seen_broker = t + EST_BROKER_S, True
            if mode == "sage_shared_cold":
                t += EST_BROKER_S
                cold.add(kind)
            if mode == "sage_shared" and kind not in cold:  # primed first
                t += EST_BROKER_S + est(kind, mode)
        return t

    plan = cfg.get("conc1", {})
    rounds = conc1_rounds(plan)
    out["conc1"] = sum(conc1_round(conc1_schedule(plan, r)) for r in range(1, rounds + 1))
    out["warm"] = sum(est(k, "native") * 1.1 + 1.0 for k in cfg.get("warm", []))
    t = 0.0
    for kind, ns in cfg.get("concN", {}).items():
        for mode in cfg.get("concN_modes", {}).get(kind, []):
            t += (EST_MPS_S if mode == "mps" else 0.0) + prime_cost(kind, mode)
            t += sum(est_batch(est(kind, mode), kind, n) + 0.5 for n in ns)
            primed[0] = kind if mode in SHARED_MODES else None
    out["concN"] = t
    t, kind = 0.0, cfg.get("poisson_kind")
    for mode in cfg.get("poisson_modes", []):
        t += (EST_MPS_S if mode == "mps" else 0.0) + prime_cost(kind, mode)
        t += sum(cfg.get("poisson_window_s", 5) + 1.3 * est(kind, mode) + 0.5 for _ in cfg.get("poisson_rates", []))
        primed[0] = kind if mode in SHARED_MODES else None
    out["poisson"] = t
    t, kind = 0.0, cfg.get("density_kind")
    for mode in cfg.get("density_modes", []):
        t += (EST_MPS_S if mode == "mps" else 0.0) + prime_cost(kind, mode) + 1.0
        prev = 0
        for n in cfg.get("density_counts", []):
            t += est_batch(est(kind, mode), kind, n - prev) + 1.5
            prev = n
        primed[0] = kind if mode in SHARED_MODES else None
    out["density"] = t
    xt = sum(est(k, m) + gap + prime_cost(k, m) for r in range(1, rounds + 1)
             for k, m in conc1_schedule(plan, r, extra=True) if m != "sage_shared")
    xt += sum(est(k, "native") * 1.1 + 1.0 for k in cfg.get("warm_extra", []))
    out = {k: round(v, 1) for k, v in out.items() if k in cfg.get("parts", out)}
    out["extra"] = round(xt, 1)
    return out


def build_config(s):
    """The run's settings (what suite.sh decided) -> the plan. s: quick, runs
    (None: default), cw, pw (workloads built), c_mib, llm_gib. Pure, so the
    plan and its estimate are unit-tested.

    The core (what must fit the budget, see suite.sh for the estimate) runs
    every part for a reduced set: C functions in every mode 3 times, each
    Python one once in native, cold and warm sharing; the optional extra runs
    (Python: MPS and libsage alone once, then up to `runs` runs of native and
    sharing; more warm processes) fill what the budget leaves at the end."""
    if s.get("shard"):
        return shard_config(s)
    quick, cw, pw = s["quick"], s["cw"], s["pw"]
    full = bool(s.get("full")) and not quick
    runs = s.get("runs") or 3
    six = ["native", "mps", "sage", "sage_broker", "sage_shared_cold", "sage_shared"]
    conc1 = {w: {m: [runs, runs] for m in six} for w in cw + (pw if full else [])}
    py_runs = 1 if quick else runs
    for w in ([] if full else pw):
        conc1[w] = {"native": [1, py_runs], "sage_shared_cold": [1, py_runs], "sage_shared": [1, py_runs],
                    "sage": [0, 1]}
        if w == "resnet50":
            conc1[w]["mps"] = [0, 1]
        if quick and w != "resnet50":
            del conc1[w]["sage"]
    warm = [w for w in (PY_KINDS if full else ("resnet50",)) if w in pw]
    has = set(cw + pw)
    sizes = [8] if quick else [8, 16]
    cfg = {
        "quick": quick, "runs": runs,
        "conc1": conc1,
        "warm": warm, "warm_extra": [w for w in ("gpt2", "llm", "bert", "resnet50") if w in pw and w not in warm],
        "warm_n": 3,
        "concN": {w: sizes for w in ("cfunc", "resnet50") if w in has},
        "concN_modes": {"cfunc": ["native", "mps", "sage_shared"], "resnet50": ["native", "sage_shared"]},
        # sage_shared first: it finds the broker concN's resnet50 runs left primed.
        "poisson_kind": "resnet50", "poisson_rates": [2] if quick else [1, 2],
        "poisson_window_s": 4, "poisson_modes": ["sage_shared", "native"], "poisson_limit_s": 90,
        "density_kind": "resnet50", "density_counts": [1, 3], "density_modes": ["native", "sage_shared"],
        "gap": 0.2, "c_mib": s["c_mib"], "llm_gib": s["llm_gib"],
    }
    if full:
        cfg["full"] = True
        cfg["plan_note"] = ("full plan: concurrency 1: every workload in every mode x%d; warm process: %s; "
                            "no optional extras" % (runs, ", ".join(warm) or "-"))
        return cfg
    cfg["plan_note"] = (
        "plan: concurrency 1: cfunc/sgemm in every mode x%d; Python: native, sage_shared_cold, sage_shared "
        "once, then while the budget allows %slibsage alone (+ resnet50 under MPS) once; warm process: %s "
        "(+ %s while the budget allows)" % (
            runs, "" if py_runs == 1 else "up to %d runs of those three and " % py_runs,
            ", ".join(warm) or "-", ", ".join(cfg["warm_extra"]) or "-"))
    return cfg


# ---------------------------------------------------------------- shards
# The full plan (build_config full=True: every workload in every mode x runs
# at concurrency 1, a warm process of every Python workload, concN, poisson,
# density) in units that stay together: a workload's concurrency-1 runs in
# all its modes with its native runs and its warm process (ratios are taken
# within one shard), cut into pieces of whole rounds only where it cannot fit
# one shard (each piece still runs native); each concN workload; poisson;
# density (each runs its own native). The units are packed into N shards
# (largest first, each to the least loaded shard), each shard estimated with
# the 2026-11-30 H200 model (SHARD_MODEL) plus its set-up within --budget.
# At those speeds the full plan (~1620 s of runs) needs 4 shards of 480 s.

def full_config(runs=None):
    """The full (non-quick) plan with every workload, independent of what a
    shard's machine managed to build (every shard derives the same plan)."""
    cfg = build_config({"quick": False, "runs": runs, "cw": list(C_KINDS), "pw": list(PY_KINDS),
                        "c_mib": 1024, "llm_gib": 4, "full": True})
    cfg["time_model"] = SHARD_MODEL
    cfg["parts"] = ["conc1", "warm", "concN", "poisson", "density"]
    return cfg


def _unit_config(full, unit):
    """full restricted to one unit's (or several units') items."""
    units = unit if isinstance(unit, list) else [unit]
    cfg = {k: v for k, v in full.items() if k not in ("conc1", "warm", "concN", "parts", "poisson_modes",
                                                      "density_modes")}
    cfg.update({"conc1": {}, "warm": [], "warm_extra": [], "concN": {}, "poisson_modes": [], "density_modes": []})
    parts = set()
    for u in units:
        if u["part"] == "conc1":
            lo, hi = u["rounds"]
            cfg["conc1"][u["wl"]] = {m: [hi, hi, lo] for m in full["conc1"][u["wl"]]}
            parts.add("conc1")
            if u.get("warm"):
                cfg["warm"].append(u["wl"])
                parts.add("warm")
        elif u["part"] == "concN":
            cfg["concN"][u["wl"]] = full["concN"][u["wl"]]
            parts.add("concN")
        else:
            cfg[u["part"] + "_modes"] = list(full[u["part"] + "_modes"])
            parts.add(u["part"])
    cfg["parts"] = [p for p in ("conc1", "warm", "concN", "poisson", "density") if p in parts]
    return cfg


def unit_workloads(units):
    out = set()
    for u in units:
        out.add(u["wl"])
    return [w for w in C_KINDS + PY_KINDS if w in out]


def shard_estimate(full, units):
    """Seconds one shard of these units should take: its set-up + every part
    (estimate_plan on the shard's own plan, services and priming included)."""
    if not units:
        return 0.0
    est = estimate_plan(_unit_config(full, units))
    py = any(w in PY_KINDS for w in unit_workloads(units))
    return round(EST_SHARD_SETUP_S["python" if py else "c"] + sum(v for k, v in est.items() if k != "extra"), 1)


def plan_units(full, budget):
    """The full plan as units (dicts: id, part, wl, rounds, warm, est_s), in a
    fixed order. A workload whose concurrency-1 runs + warm process do not fit
    one shard is cut into pieces of whole rounds (the first keeps the warm
    process), each as many rounds as fit."""
    units = []
    runs = conc1_rounds(full["conc1"])
    for wl in full["conc1"]:
        warm = wl in full["warm"]
        u = {"part": "conc1", "wl": wl, "rounds": [1, runs], "warm": warm}
        if shard_estimate(full, [u]) <= budget:
            units.append(u)
            continue
        lo = 1
        while lo <= runs:
            hi = lo
            while hi < runs and shard_estimate(full, [dict(u, rounds=[lo, hi + 1], warm=warm and lo == 1)]) <= budget:
                hi += 1
            units.append(dict(u, rounds=[lo, hi], warm=warm and lo == 1))
            lo = hi + 1
    for wl in full["concN"]:
        units.append({"part": "concN", "wl": wl})
    if full.get("poisson_modes"):
        units.append({"part": "poisson", "wl": full["poisson_kind"]})
    if full.get("density_modes"):
        units.append({"part": "density", "wl": full["density_kind"]})
    for u in units:
        if u["part"] == "conc1":
            r = u["rounds"]
            u["id"] = f"conc1 {u['wl']} runs {r[0]}-{r[1]}" + (" + warm" if u["warm"] else "")
        else:
            u["id"] = f"{u['part']} {u['wl']}"
        setup = EST_SHARD_SETUP_S["python" if u["wl"] in PY_KINDS else "c"]
        u["est_s"] = round(shard_estimate(full, [u]) - setup, 1)
    return units


def pack_units(full, units, n, budget):
    """units into n shards: largest first, each to the least loaded shard
    (ties: the lower number). None when a shard would exceed budget."""
    shards = [[] for _ in range(n)]
    load = [0.0] * n
    for u in sorted(units, key=lambda u: (-u["est_s"], u["id"])):
        i = min(range(n), key=lambda j: (load[j], j))
        shards[i].append(u)
        load[i] += u["est_s"]
        if shard_estimate(full, shards[i]) > budget:
            return None
    if any(not s for s in shards):
        return None
    order = {u["id"]: i for i, u in enumerate(units)}
    return [sorted(s, key=lambda u: order[u["id"]]) for s in shards]


def shard_plan(budget=SHARD_BUDGET_S, runs=None, n=None):
    """The full plan in shards: {budget_s, runs, n, min_n, units, shards: [{k,
    units, workloads, parts, est_s}], total_s}. n None: the fewest shards that
    fit. Raises ValueError when n shards (or any) cannot fit the budget."""
    full = full_config(runs)
    units = plan_units(full, budget)
    big = [u["id"] for u in units if shard_estimate(full, [u]) > budget]
    if big:
        raise ValueError(f"one shard of {budget} s cannot hold {', '.join(big)}")
    total = sum(u["est_s"] for u in units)
    min_n, packed = None, None
    for m in range(1, len(units) + 1):
        packed = pack_units(full, units, m, budget)
        if packed:
            min_n = m
            break
    if n is None:
        n = min_n
    elif n < min_n:
        raise ValueError(f"{n} shards of {budget} s cannot hold the full plan: it needs at least {min_n}")
    else:
        packed = pack_units(full, units, n, budget)
        if not packed:
            raise ValueError(f"the full plan cannot be cut into {n} shards of {budget} s "
                             f"(it has {len(units)} units; {min_n} shards fit)")
    shards = []
    for k, us in enumerate(packed, 1):
        cfg = _unit_config(full, us)
        shards.append({"k": k, "units": [u["id"] for u in us], "workloads": unit_workloads(us),
                       "parts": cfg["parts"], "est_s": shard_estimate(full, us)})
    return {"budget_s": budget, "runs": full["runs"], "n": n, "min_n": min_n, "time_model": SHARD_MODEL,
            "units": [{k: u[k] for k in ("id", "part", "wl", "est_s")} for u in units],
            "total_s": round(total, 1), "plan_note": full["plan_note"], "items": plan_items(full),
            "shards": shards}


def parse_shard(text):
    """'K/N' -> (K, N), ValueError otherwise."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except (ValueError, AttributeError):
        raise ValueError(f"--shard takes K/N (e.g. 1/4), not {text!r}") from None
    if not 1 <= k <= n:
        raise ValueError(f"--shard {text}: K must be 1..N")
    return k, n


def shard_config(s):
    """build_config for one shard: s['shard'] 'K/N', s['budget'] (default
    SHARD_BUDGET_S), s['runs']; cw/pw: what this machine built (a unit of a
    workload missing here is not run, and the merge reports it)."""
    k, n = parse_shard(s["shard"])
    budget = s.get("budget") or SHARD_BUDGET_S
    plan = shard_plan(budget, s.get("runs"), n)
    full = full_config(s.get("runs"))
    units = [u for u in plan_units(full, budget) if u["id"] in plan["shards"][k - 1]["units"]]
    have = set(s["cw"]) | set(s["pw"])
    cfg = _unit_config(full, [u for u in units if u["wl"] in have])
    cfg.update({"c_mib": s["c_mib"], "llm_gib": s["llm_gib"], "quick": False, "time_model": SHARD_MODEL})
    if "resnet50" not in have:
        cfg["parts"] = [p for p in cfg["parts"] if p not in ("poisson", "density")]
    cfg["shard"] = {"k": k, "n": n, "budget_s": budget, "units": plan["shards"][k - 1]["units"],
                    "est_s": plan["shards"][k - 1]["est_s"],
                    "missing_here": [u["id"] for u in units if u["wl"] not in have]}
    cfg["full_plan"] = plan
    cfg["plan_note"] = (f"shard {k}/{n} of the full plan ({', '.join(cfg['shard']['units'])}); "
                        + full["plan_note"])
    return cfg


def plan_items(cfg):
    """Every measurement cfg asks for, as keys that covered_items() gives the
    records that measured it (whatever their outcome)."""
    out = []
    plan = cfg.get("conc1", {})
    for r in range(1, conc1_rounds(plan) + 1):
        for kind, mode in sorted(conc1_schedule(plan, r) + conc1_schedule(plan, r, extra=True)):
            out.append(f"conc1 {kind} {mode} run {r}")
    for kind in cfg.get("warm", []) + cfg.get("warm_extra", []):
        out.append(f"warm_process {kind}")
    for kind, ns in cfg.get("concN", {}).items():
        for mode in cfg.get("concN_modes", {}).get(kind, []):
            for n in ns:
                out.append(f"concN {kind} x{n} {mode}")
    for mode in cfg.get("poisson_modes", []):
        for rate in cfg.get("poisson_rates", []):
            out.append(f"poisson {cfg['poisson_kind']} {rate} req/s {mode}")
    for mode in cfg.get("density_modes", []):
        out.append(f"density {cfg['density_kind']} {mode}")
    return out


def covered_items(records):
    """plan_items() keys that these records measured (failed ones included)."""
    out = set()
    for r in records:
        part, wl, mode = r.get("part"), r.get("wl"), r.get("mode")
        if mode == "warm_process":
            out.add(f"warm_process {wl}")
        elif part == "conc1":
            out.add(f"conc1 {wl} {mode} run {r.get('run')}")
        elif part == "concN":
            out.add(f"concN {wl} x{r.get('conc')} {mode}")
        elif part == "poisson":
            out.add(f"poisson {wl} {r.get('rate')} req/s {mode}")
        elif part == "density":
            out.add(f"density {wl} {mode}")
    return out


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
             f"{' | --quick' if doc.get('config', {}).get('quick') else ''}")
    L.append("modes:")
    for k, v in doc.get("modes", {}).items():
        text = doc.get("mode_text", {}).get(k)
        L.append(f"  {k:<17} {text + ' | ' if text else ''}{v}")
    if doc.get("config", {}).get("plan_note"):
        L.append(doc["config"]["plan_note"])
    dur = doc.get("duration", {})
    modes = [x for x in MODES if any(x in d for d in dur.values())]
    if dur:
        L.append("")
        L.append("Function duration, 1 at a time, process start -> exit: median [min-max] ms, n runs; "
                 "below: GPU setup / upload / compute medians")
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
        rat = doc.get("ratios", {})
        if rat:
            L.append("native/mode median duration (x faster than native, this run): " + "; ".join(
                f"{wl}: " + ", ".join(f"{k} {v:.2f}x" for k, v in r.items()) for wl, r in rat.items()))
        sh = doc.get("sharing", {})
        if sh:
            L.append("broker hits / misses / publishes during the invocations (sagectl stats deltas): " + "; ".join(
                f"{wl}: " + ", ".join(f"{'cold' if m == 'sage_shared_cold' else 'warm'} {d['hits']}/{d['misses']}/"
                                      f"{d['publishes']} (n={d['n']})" for m, d in by.items())
                for wl, by in sh.items()))
    conc = doc.get("concurrency", {})
    if conc:
        L.append("")
        L.append("Concurrent starts: per-process duration median / p99, batch wall median (ms); GPU setup median")
        for wl, byc in conc.items():
            for c, bym in byc.items():
                for mode, s in bym.items():
                    pp = s.get("per_process_ms")
                    L.append(f"  {wl} x{c} {mode:<12} {fmt_ms(pp)} / "
                             f"{fmt_ms({'median': pp['p99']}) if pp else '-'}  wall {fmt_ms(s.get('batch_wall_ms'))}"
                             f"  setup {fmt_ms(s.get('setup_ms'))}"
                             f"{'  FAILED ' + str(s['failures']) if s.get('failures') else ''}")
    po = doc.get("poisson", {})
    if po.get("rates"):
        L.append("")
        L.append(f"Open-loop Poisson arrivals of {po.get('workload')} (new process per request): "
                 "p50 / p99 latency (ms), throughput (req/s), completed/offered")
        for rate, bym in po["rates"].items():
            for mode, s in bym.items():
                if isinstance(s, str):
                    L.append(f"  {rate:>4} req/s {mode:<12} {s}")
                    continue
                L.append(f"  {rate:>4} req/s {mode:<12} {s['p50_ms']} / {s['p99_ms']}  "
                         f"{s['throughput_rps']} req/s  {s['completed']}/{s['offered']}")
    de = doc.get("density", {})
    if de.get("modes"):
        L.append("")
        L.append(f"Density of {de.get('workload')} (GPU memory per resident instance, nvidia-smi; "
                 "sage_shared: the broker's extents are in the baseline):")
        for mode, s in de["modes"].items():
            if isinstance(s, str) or "per_instance_mib_marginal" not in s:
                L.append(f"  {mode:<12} {s if isinstance(s, str) else s.get('error')}")
                continue
            L.append(f"  {mode:<12} {s['per_instance_mib_marginal']:.0f} MiB/instance measured "
                     f"(avg {s['per_instance_mib_average']:.0f}); {s['extrapolated_max_instances']} instances "
                     f"on {s['gpu_total_mib']} MiB: {s['label']}")
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
    py = doc.get("config", {}).get("python_env")
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
    dur = doc.get("duration", {})
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
        fig.tight_layout()
        p = os.path.join(out_dir, "duration.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
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
        fig.tight_layout()
        p = os.path.join(out_dir, "latency_cdf.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
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
        fig.tight_layout()
        p = os.path.join(out_dir, "density.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
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
    cfg0 = first.get("config", {})
    extra = {
        "machine": m0,
        "config": {"quick": False, "merged": True, "plan_note": "merged from %d of %s shards; %s" % (
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
    doc["ratios"], doc["ratios_by_shard"] = rat, by_shard_ratios
    doc["checks"]["checksum_problems"] = cp
    doc["checks"]["checksum_basis"] = {wl: "; ".join(v) for wl, v in sorted(basis.items())}
    return doc


def assemble(records, extra):
    """The results document from raw records + run metadata (pure)."""
    doc = dict(extra)
    doc["duration"] = summarize_duration(records)
    doc["ratios"] = ratios(doc["duration"])
    doc["concurrency"] = summarize_concurrency(records)
    doc["sharing"] = sharing_summary(records)
    cp, basis = checksum_check(records)
    pp, proof = preload_check(records)
    fails = [f"{r['wl']} {r['mode']} {r.get('part')} run {r.get('run')}: {r.get('error', '')[:160]}"
             for r in records if not r.get("ok")]
    doc["checks"] = {"checksum_problems": cp, "checksum_basis": basis, "preload_problems": pp,
                     "preload_proof": proof, "failures": fails}
    doc["records"] = records
    return doc


# ---------------------------------------------------------------- running
class Proc:
    def __init__(self, cmd, env, log_base, limit_s, keep_stdin=False):
        self.t0 = time.monotonic_ns()
        env = dict(env, SAGE_BENCH_T0_NS=str(self.t0))
        self.out_path, self.err_path = log_base + ".out", log_base + ".err"
        self.limit_s, self.t_end, self.timed_out = limit_s, None, False
        with open(self.out_path, "w") as o, open(self.err_path, "w") as e:
            self.p = subprocess.Popen(cmd, env=env, stdout=o, stderr=e,
                                      stdin=subprocess.PIPE if keep_stdin else subprocess.DEVNULL,
                                      start_new_session=True)
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self):
        try:
            self.p.wait(timeout=self.limit_s)
        except subprocess.TimeoutExpired:
            self.timed_out = True
            self.kill()
            self.p.wait()
        self.t_end = time.monotonic_ns()

    def kill(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except OSError:
            pass

    def join(self):
        self.thread.join()
        return self

    def stdout(self):
        try:
            with open(self.out_path) as f:
                return f.read()
        except OSError:
            return ""

    def err_tail(self):
        try:
            with open(self.err_path) as f:
                lines = [x for x in f.read().splitlines() if x.strip()]
            return " / ".join(lines[-2:])[:300]
        except OSError:
            return ""


class Runner:
    def __init__(self, cfg):
        self.cfg = cfg
        self.logs = cfg["logs"]
        self.records, self.skipped, self.trimmed, self.notes = [], [], [], []
        self.t_start = cfg["t_start"]
        self.deadline = self.t_start + cfg["budget_s"]
        self.mps_state = None  # None, "up", "down", "unavailable: ..."
        self.mps_proof = None
        self.broker = None
        self.broker_state = None
        self.broker_proof = None
        self.broker_n = 0
        self.broker_primed = set()  # workloads whose extents the running broker holds
        self.seq = 0
        self.costs = {}        # (kind, mode) -> [s]: one invocation, process start -> exit
        self.batch_costs = {}  # (kind, n) -> [s]: n started at once, first start -> last exit
        self.na, self.mode_state = {}, {}
        self.parts, self.estimate, self.part_s = [], {}, {}

    # ---- environment of one mode
    def env(self, mode, kind):
        base = {k: v for k, v in os.environ.items()
                if k not in ("LD_PRELOAD", "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")
                and not k.startswith("SAGE_BENCH")}
        if mode not in SAGE_MODES:
            base = {k: v for k, v in base.items() if not k.startswith("SAGE_")}
        for k in ("SAGE_WARMUP", "SAGE_TRACE", "SAGE_SOCKET", "SAGE_SHARE"):
            base.pop(k, None)
        base["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        if mode == "mps":
            base["CUDA_MPS_PIPE_DIRECTORY"] = self.cfg["mps_pipe"]
            base["CUDA_MPS_LOG_DIRECTORY"] = self.cfg["mps_log"]
        if mode in SAGE_MODES:
            base["LD_PRELOAD"] = self.cfg["libsage"]
            if kind in PY_KINDS:
                base["SAGE_WARMUP"] = "eager"
        if mode in BROKER_MODES:
            base["SAGE_SOCKET"] = self.cfg["socket"]
        if mode in SHARED_MODES:
            base["SAGE_SHARE"] = "1"
        return base

    def cmd(self, kind, action="run", extra=()):
        c = self.cfg
        if kind == "cfunc":
            return [c["bin"] + "/cfunc", c["data"] + "/weights.bin"]
        if kind == "sgemm":
            return [c["bin"] + "/sgemm", str(c.get("sgemm_n", 4096))]
        slow = ["--slow-build"] if kind in c.get("slow_build", []) else []
        return [c["python"], c["here"] + "/suite_fn.py", action, kind, f"{c['data']}/{kind}.safetensors",
                *extra, *slow]

    def limit(self, kind):
        return 60 if kind in C_KINDS else 180

    # ---- services
    def _ctl(self, text, timeout=10):
        env = dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=self.cfg["mps_pipe"],
                   CUDA_MPS_LOG_DIRECTORY=self.cfg["mps_log"])
        try:
            r = subprocess.run([self.cfg["mps_ctl"]] + ([] if text is not None else ["-d"]),
                               input=text, env=env, capture_output=True, text=True, timeout=timeout)
            return r.returncode, (r.stdout + r.stderr).strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            return 1, str(e)

    def _log_tail(self, path):
        try:
            with open(path) as f:
                return " / ".join(f.read().splitlines()[-2:])[:300]
        except OSError:
            return ""

    def start_mps(self):
        if self.mps_state == "up" or (self.mps_state or "").startswith("unavailable"):
            return
        if not self.cfg.get("mps_ctl"):
            self.mps_state = "unavailable: nvidia-cuda-mps-control not found"
            return
        os.makedirs(self.cfg["mps_pipe"], exist_ok=True)
        os.makedirs(self.cfg["mps_log"], exist_ok=True)
        rc, msg = self._ctl(None)
        if rc != 0:
            self.mps_state = f"unavailable: nvidia-cuda-mps-control -d failed (rc {rc}): {msg[:200]}"
            return
        self.mps_state = "up"
        # Probe (discarded, also starts the MPS server): a small cuBLAS function.
        p = Proc([self.cfg["bin"] + "/sgemm", "256"], self.env("mps", "sgemm"),
                 f"{self.logs}/mps-probe-{self.seq}", 60).join()
        self.seq += 1
        rc2, servers = self._ctl("get_server_list\n")
        if p.p.returncode != 0:
            reason = p.err_tail() or self._log_tail(self.cfg["mps_log"] + "/control.log")
            self.stop_mps()
            self.mps_state = f"unavailable: a CUDA process under MPS failed (rc {p.p.returncode}): {reason}"
            return
        if not servers.split():
            self.notes.append("MPS: get_server_list listed no server after the probe")
        self.mps_proof = f"get_server_list: {servers[:100]}"

    def stop_mps(self):
        if self.mps_state != "up":
            return
        self._ctl("quit\n")
        for _ in range(50):
            rc, _ = self._ctl("get_server_list\n", timeout=2)
            if rc != 0:
                break
            time.sleep(0.1)
        self.mps_state = "down"

    def start_broker(self):
        if self.broker or (self.broker_state or "").startswith("unavailable"):
            return
        saged, sock = self.cfg.get("saged"), self.cfg["socket"]
        if not saged or not os.path.exists(saged):
            self.broker_state = "unavailable: saged not built"
            return
        try:
            os.unlink(sock)
        except OSError:
            pass
        self.broker_n += 1
        self.broker_primed = set()
        log_path = f"{self.logs}/saged.{self.broker_n}.log"
        with open(log_path, "w") as log:
            self.broker = subprocess.Popen([saged, "--socket", sock, "--foreground"], stdout=log, stderr=log,
                                           stdin=subprocess.DEVNULL, start_new_session=True,
                                           env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})
        for _ in range(100):
            if os.path.exists(sock) or self.broker.poll() is not None:
                break
            time.sleep(0.05)
        if self.broker.poll() is not None or not os.path.exists(sock):
            self.stop_broker()
            self.broker_state = "unavailable: saged did not start: " + self._log_tail(log_path)
            return
        time.sleep(1.0)  # its cuInit + context retain (~450 ms on the H200)
        self.broker_state = "up"
        ctl = self.cfg.get("sagectl")
        if ctl and os.path.exists(ctl) and not self.broker_proof:
            try:
                r = subprocess.run([ctl, "--socket", sock, "ping"], capture_output=True, text=True, timeout=10)
                self.broker_proof = f"sagectl ping rc {r.returncode}: {(r.stdout + r.stderr).strip()[:100]}"
            except (OSError, subprocess.TimeoutExpired) as e:
                self.broker_proof = f"sagectl ping failed: {e}"

    def stop_broker(self):
        self.broker_primed = set()
        if self.broker:
            self.broker.terminate()
            try:
                self.broker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.broker.kill()
                self.broker.wait()
            self.broker = None
            if self.broker_state == "up":
                self.broker_state = "down"

    def broker_stats(self):
        """sagectl stats --json of the running broker, or None."""
        ctl = self.cfg.get("sagectl")
        if not self.broker or not ctl or not os.path.exists(ctl):
            return None
        try:
            r = subprocess.run([ctl, "--socket", self.cfg["socket"], "stats", "--json"], capture_output=True,
                               text=True, timeout=10)
            d = json.loads(r.stdout) if r.returncode == 0 else None
            return d if isinstance(d, dict) else None
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return None

    def services(self, mode):
        """Only the mode's own service runs while it is measured (a broker left
        up would keep the GPU initialised for the others, and MPS would take
        them in). Returns None or 'unavailable: why'."""
        if mode == "mps":
            self.stop_broker()
            self.start_mps()
            return self.mps_state if self.mps_state.startswith("unavailable") else None
        self.stop_mps()
        if mode in SAGE_MODES and not os.path.exists(self.cfg["libsage"]):
            self.stop_broker()
            return "unavailable: libsage.so not built"
        if mode in BROKER_MODES:
            self.start_broker()
            return self.broker_state if self.broker_state.startswith("unavailable") else None
        self.stop_broker()
        return None

    def prepare(self, kind, mode, part):
        """Services for running kind in mode: cold sharing gets a broker
        started fresh, warm sharing one that holds kind's extents (primed by an
        untimed invocation when it does not yet). None or 'unavailable: why'."""
        if mode == "sage_shared_cold":
            self.stop_broker()
        why = self.services(mode)
        if why or mode != "sage_shared" or kind in self.broker_primed:
            return why
        self.seq += 1
        p = Proc(self.cmd(kind), self.env("sage_shared", kind), f"{self.logs}/prime.{part}.{kind}.{self.seq}",
                 self.limit(kind)).join()
        recs = self.record(p, kind, "sage_shared", "prime", 0, {"for_part": part,
                                                                 "broker_after": self.broker_stats()})
        if all(r["ok"] for r in recs):
            self.broker_primed.add(kind)
        else:
            self.notes.append(f"priming the broker with {kind} for {part} failed ({recs[0].get('error')}): "
                              "the sage_shared runs after it may miss")
        time.sleep(self.cfg.get("gap", 0.2))
        return None

    def shutdown(self):
        self.stop_broker()
        self.stop_mps()

    # ---- measuring
    def record(self, proc, kind, mode, part, run, extra=None):
        recs = parse_output(proc.stdout(), kind)
        base = {"wl": kind, "mode": mode, "part": part, "run": run, "rc": proc.p.returncode,
                "duration_ms": round((proc.t_end - proc.t0) / 1e6, 3)}
        base.update(extra or {})
        if not recs:
            recs = [{}]
        out = []
        for d in recs:
            r = dict(d)
            r.update(base)
            r["ok"] = proc.p.returncode == 0 and bool(d) and not proc.timed_out
            if not r["ok"]:
                r["error"] = ("timed out after %d s" % proc.limit_s if proc.timed_out
                              else f"rc {proc.p.returncode}: {proc.err_tail()}" if proc.p.returncode
                              else "no SAGE_BENCH record")
            out.append(r)
        self.records.extend(out)
        return out

    def invoke(self, kind, mode, part, run):
        """One invocation alone on the GPU: its records, or None (mode unavailable)."""
        why = self.prepare(kind, mode, part)
        if why:
            self.unavailable(kind, mode, why)
            return None
        before = self.broker_stats() if mode in SHARED_MODES else None
        self.seq += 1
        p = Proc(self.cmd(kind), self.env(mode, kind), f"{self.logs}/{part}.{kind}.{mode}.{run}.{self.seq}",
                 self.limit(kind)).join()
        extra = {}
        if before is not None:
            after = self.broker_stats() or {}
            extra["broker_delta"] = {k: after[k] - before[k] for k in ("hits", "misses", "publishes", "extents",
                                                                        "bytes_resident")
                                     if isinstance(after.get(k), int) and isinstance(before.get(k), int)}
        recs = self.record(p, kind, mode, part, run, extra)
        if all(r["ok"] for r in recs):
            self.costs.setdefault((kind, mode), []).append((p.t_end - p.t0) / 1e9)
            if mode in SHARED_MODES:
                self.broker_primed.add(kind)
        return recs

    def batch(self, kind, mode, part, run, n, extra=None):
        procs = []
        for i in range(n):
            self.seq += 1
            procs.append(Proc(self.cmd(kind), self.env(mode, kind),
                              f"{self.logs}/{part}.{kind}.{mode}.{run}.{i}.{self.seq}", self.limit(kind)))
        for p in procs:
            p.join()
        wall = round((max(p.t_end for p in procs) - procs[0].t0) / 1e6, 3)
        for p in procs:
            self.record(p, kind, mode, part, run, dict(extra or {}, conc=n, batch_wall_ms=wall))
        self.batch_costs.setdefault((kind, n), []).append(wall / 1000.0)
        return wall

    # ---- the time budget
    def est(self, kind, mode="native"):
        """Seconds one invocation of kind in mode should take: measured in this
        run where it was, else the time model (EST_S)."""
        v = self.costs.get((kind, mode))
        if v:
            return median(v)
        v = [x for (k, m), xs in self.costs.items() if k == kind for x in xs]
        if v:
            return median(v) + (EST_COLD_EXTRA_S if mode == "sage_shared_cold" else 0.0)
        return est_invocation(self.cfg, kind, mode)

    def need(self, kind, mode, seconds):
        """seconds + what getting mode's services ready for kind will cost."""
        if mode == "sage_shared_cold":
            seconds += EST_BROKER_S
        elif mode == "sage_shared" and kind not in self.broker_primed:
            seconds += EST_BROKER_S + self.est(kind, mode)
        elif mode == "mps" and self.mps_state != "up":
            seconds += EST_MPS_S
        return seconds

    def batch_est(self, kind, mode, n):
        v = self.batch_costs.get((kind, n))
        return median(v) if v else est_batch(self.est(kind, mode), kind, n)

    def fits(self, seconds, deadline):
        return time.time() + seconds <= deadline

    def part_deadline(self, part):
        """When `part` must be done: the time left, shared among the parts
        still to run in proportion to their estimated cost (re-estimated with
        what was measured so far). When the plan fits, each part gets at least
        its estimate; when it does not, every part gives up a share."""
        rest = self.parts[self.parts.index(part):]
        est = estimate_plan(self.cfg, self.est)
        total = sum(est.get(p, 0.0) for p in rest)
        left = max(0.0, self.deadline - time.time())
        return time.time() + (left * est.get(part, 0.0) / total if total > 0 else left)

    # ---- parts
    def conc1(self, deadline, extra=False, rounds=None):
        c = self.cfg
        plan = c["conc1"]
        gap = c.get("gap", 0.2)
        for run in rounds or range(1, conc1_rounds(plan) + 1):
            pairs = conc1_schedule(plan, run, extra)
            if not pairs:
                continue
            for kind, mode in pairs:
                if kind in self.na and mode in self.na[kind]:
                    continue  # unavailable: said once
                if not self.fits(self.need(kind, mode, self.est(kind, mode) + gap), deadline):
                    (self.trimmed if extra else self.skipped).append(
                        f"conc1 {kind} {mode} run {run}" + ("" if extra else " (time budget)"))
                    continue
                self.invoke(kind, mode, "conc1", run)
                time.sleep(gap)
            print(f"suite: conc1 {'extra ' if extra else ''}run {run} done ({time.time() - self.t_start:.0f} s)",
                  flush=True)

    def unavailable(self, kind, mode, why):
        self.na.setdefault(kind, {})[mode] = why.split(":")[0]
        self.mode_state[mode] = why

    def warm(self, deadline, kinds, extra=False):
        for kind in kinds:
            if not self.fits(self.est(kind) * 1.1 + 1.0, deadline):
                (self.trimmed if extra else self.skipped).append(
                    f"warm_process {kind}" + ("" if extra else " (time budget)"))
                continue
            self.services("native")
            self.seq += 1
            n = self.cfg["warm_n"]
            p = Proc(self.cmd(kind, "serve", [str(n)]), self.env("warm_process", kind),
                     f"{self.logs}/warm.{kind}.{self.seq}", self.limit(kind) + 30).join()
            for r in self.record(p, kind, "warm_process", "warm", 0):
                inv = r.get("invocation")
                if inv == 0:  # the cold load: kept, but not a warm invocation
                    r["part"], r["cold_load"] = "warm_cold_load", True
                else:
                    r["part"], r["run"] = "conc1", inv
                    r["duration_ms"] = r.get("total_ms")  # in-process invocation time

    def concurrency(self, deadline):
        for kind, ns in self.cfg["concN"].items():
            for mode in self.cfg["concN_modes"].get(kind, []):  # mode-major: a primed broker serves all n
                for n in ns:
                    if not self.fits(self.need(kind, mode, self.batch_est(kind, mode, n) + 0.5), deadline):
                        self.skipped.append(f"concurrency {kind} x{n} {mode} (time budget)")
                        continue
                    why = self.prepare(kind, mode, "concN")
                    if why:
                        self.unavailable(kind, mode, why)
                        break
                    self.batch(kind, mode, "concN", 1, n)
                    time.sleep(0.5)

    def poisson(self, deadline):
        c = self.cfg
        kind, dur = c["poisson_kind"], c["poisson_window_s"]
        out = {}
        for mode in c["poisson_modes"]:  # mode-major: a primed broker serves every rate
            for ri, rate in enumerate(c["poisson_rates"]):
                arrivals = poisson_arrivals(rate, dur, seed=1000 + ri)
                if not self.fits(self.need(kind, mode, dur + 1.3 * self.est(kind, mode) + 0.5), deadline):
                    self.skipped.append(f"poisson {rate} req/s {mode} (time budget)")
                    continue
                why = self.prepare(kind, mode, "poisson")
                if why:
                    out.setdefault(str(rate), {})[mode] = why
                    continue
                start = time.monotonic()
                procs = []
                for i, off in enumerate(arrivals):
                    delay = start + off - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    self.seq += 1
                    procs.append((off, Proc(self.cmd(kind), self.env(mode, kind),
                                            f"{self.logs}/poisson.{rate}.{mode}.{i}.{self.seq}",
                                            c.get("poisson_limit_s", 90))))
                reqs = []
                start_ns = int(start * 1e9)
                for i, (off, p) in enumerate(procs):
                    p.join()
                    r = self.record(p, kind, mode, "poisson", i, {"rate": rate, "arrival_s": off})[0]
                    reqs.append({"arrival_s": off, "ok": r["ok"], "end_s": (p.t_end - start_ns) / 1e9})
                out.setdefault(str(rate), {})[mode] = poisson_summary(reqs, rate, dur)
                time.sleep(0.5)
        return {"workload": kind, "window_s": dur, "rates": out,
                "note": "each request is a new process; latency = scheduled arrival -> process exit; "
                        "every mode gets the same arrival schedule per rate"}

    def smi_used(self):
        try:
            r = subprocess.run(["nvidia-smi", "-i", str(self.cfg.get("gpu_index", 0)),
                                "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True, timeout=20)
            used, total = [int(x.strip()) for x in r.stdout.strip().splitlines()[0].split(",")]
            return used, total
        except Exception:  # noqa: BLE001
            return None, None

    def density(self, deadline):
        c = self.cfg
        kind, counts = c["density_kind"], c["density_counts"]
        out = {}
        for mode in c["density_modes"]:
            need, prev = 1.0, 0
            for n in counts:
                need, prev = need + est_batch(self.est(kind, mode), kind, n - prev) + 1.5, n
            if not self.fits(self.need(kind, mode, need), deadline):
                self.skipped.append(f"density {mode} (time budget)")
                continue
            why = self.prepare(kind, mode, "density")
            if why:
                out[mode] = why
                continue
            time.sleep(0.5)
            base, total = self.smi_used()
            procs, points, failed = [], [], None
            for n in counts:
                while len(procs) < n and not failed:
                    self.seq += 1
                    procs.append(Proc(self.cmd(kind, "hold"), self.env(mode, kind),
                                      f"{self.logs}/density.{mode}.{len(procs)}.{self.seq}", 240, keep_stdin=True))
                t_lim = time.time() + 120
                while not failed and time.time() < t_lim:
                    ready = sum("SAGE_HOLDING" in p.stdout() for p in procs)
                    dead = [p for p in procs if p.t_end is not None]
                    if dead:
                        failed = f"an instance exited early: {dead[0].err_tail()}"
                    if ready == len(procs):
                        break
                    time.sleep(0.1)
                else:
                    if not failed:
                        failed = f"{n} instances not ready within 120 s"
                if failed:
                    break
                time.sleep(0.5)
                used, _ = self.smi_used()
                points.append({"instances": n, "used_mib": used})
            for p in procs:
                try:
                    p.p.stdin.close()
                except OSError:
                    pass
            for p in procs:
                p.join()
                self.record(p, kind, mode, "density", len(procs))
            res = density_extrapolate(points, total, base) if base is not None else {"error": "nvidia-smi gave no memory figure"}
            res["points"] = points
            if failed:
                res["error"] = failed
            out[mode] = res
            time.sleep(0.5)
        return {"workload": kind, "modes": out, "method": "nvidia-smi memory.used with %s resident instances "
                "(each holds its weights on the GPU and waits); count beyond that is EXTRAPOLATED; "
                "sage_shared: measured with its warm broker up (the broker's extents are in the baseline)"
                % "/".join(str(n) for n in counts)}

    def run_all(self):
        c = self.cfg
        self.parts = [p for p in ("conc1", "warm", "concN", "poisson", "density") if p in c["parts"]]
        doc = {"poisson": {}, "density": {}}
        self.estimate = estimate_plan(c)
        self.estimate["setup"] = round(time.time() - self.t_start, 1)
        print("suite: plan estimate (s): " + ", ".join(f"{k} {v}" for k, v in self.estimate.items())
              + f"; budget {c['budget_s']:.0f} s", flush=True)
        for part in self.parts:
            if time.time() >= self.deadline:
                self.skipped.append(f"{part}: whole part (time budget of {c['budget_s']} s spent)")
                continue
            dl = self.part_deadline(part)
            print(f"suite: {part} (until +{dl - self.t_start:.0f} s)", flush=True)
            a = time.time()
            try:
                if part == "conc1":
                    self.conc1(dl)
                elif part == "warm":
                    self.warm(dl, c["warm"])
                elif part == "concN":
                    self.concurrency(dl)
                elif part == "poisson":
                    doc["poisson"] = self.poisson(dl)
                elif part == "density":
                    doc["density"] = self.density(dl)
            except Exception as e:  # noqa: BLE001 - a failing part is reported, not fatal
                self.skipped.append(f"{part}: aborted by {type(e).__name__}: {e}")
            self.part_s[part] = round(time.time() - a, 1)
        # Optional: more concurrency-1 runs of the Python workloads and warm
        # processes for the others, while the budget allows (not reported as skipped).
        a = time.time()
        try:
            rounds = conc1_rounds(c["conc1"])
            if "conc1" in self.parts:
                self.conc1(self.deadline, extra=True, rounds=range(1, min(rounds, 2) + 1))
            if "warm" in self.parts:
                self.warm(self.deadline, c.get("warm_extra", []), extra=True)
            if "conc1" in self.parts and rounds >= 3:
                self.conc1(self.deadline, extra=True, rounds=range(3, rounds + 1))
        except Exception as e:  # noqa: BLE001
            self.skipped.append(f"extra runs: aborted by {type(e).__name__}: {e}")
        self.part_s["extra"] = round(time.time() - a, 1)
        self.shutdown()
        return doc


def mode_states(cfg, runner):
    st = {}
    for m in MODES[:-1]:
        s = runner.mode_state.get(m, "ok")
        if m == "mps" and runner.mps_proof and s == "ok":
            s = "ok (" + runner.mps_proof + ")"
        if m in BROKER_MODES and runner.broker_proof and s == "ok":
            s = "ok (" + runner.broker_proof + ")"
        st[m] = s
    st["warm_process"] = "python workloads only (one process, model loaded once; C: n/a)"
    return st


def write_outputs(doc, out_dir):
    text = table(doc)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        written, note = plots(doc, out_dir)
        doc["plots"] = [os.path.basename(p) for p in written] or note
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump(doc, f, indent=1)
        with open(os.path.join(out_dir, "table.txt"), "w") as f:
            f.write(text + "\n")
        if note:
            text += "\n" + note
    print(text, flush=True)


def main(argv):
    if len(argv) == 3 and argv[1] == "report":
        with open(argv[2]) as f:
            doc = json.load(f)
        print(table(doc))
        return 0
    if len(argv) >= 2 and argv[1] in ("shards", "shard-select"):
        return shards_main(argv)
    if len(argv) >= 4 and argv[1] == "merge":
        return merge_main(argv[2], argv[3:])
    if len(argv) != 3 or argv[1] != "run":
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[2]) as f:
        cfg = json.load(f)
    runner = Runner(cfg)

    def on_signal(sig, frame):
        runner.shutdown()
        sys.exit(130)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        parts = runner.run_all()
    finally:
        runner.shutdown()
    hook = "not run"
    hp = cfg.get("hook_json")
    if hp and os.path.exists(hp):
        try:
            with open(hp) as f:
                hook = json.load(f)
            hook = {"source": hp, "summary": {k: hook[k] for k in hook if k not in ("raw", "rounds_raw")},
                    } if isinstance(hook, dict) else hook
        except (OSError, ValueError) as e:
            hook = f"unreadable: {e}"
    na = {k: {m: "n/a" for m in ("warm_process",)} for k in C_KINDS}
    for k, v in runner.na.items():
        na.setdefault(k, {}).update(v)
    extra = {"machine": cfg["machine"], "config": {k: cfg[k] for k in cfg if k not in ("machine",)},
             "modes": mode_states(cfg, runner), "mode_text": dict(MODE_TEXT), "na": na,
             "skipped": runner.skipped, "trimmed": runner.trimmed, "notes": runner.notes,
             "hook_overhead": hook, "poisson": parts["poisson"], "density": parts["density"],
             "estimate_s": runner.estimate, "part_s": runner.part_s,
             "elapsed_s": round(time.time() - cfg["t_start"], 1)}
    if cfg.get("shard"):
        extra["shard"], extra["full_plan"] = cfg["shard"], cfg["full_plan"]
        extra["config"] = {k: v for k, v in extra["config"].items() if k not in ("shard", "full_plan")}
        extra["not_run"] = [x for x in plan_items(cfg) if x not in covered_items(runner.records)]
        extra["not_run"] += [f"{u} (workload not built here)" for u in cfg["shard"]["missing_here"]]
    doc = assemble(runner.records, extra)
    write_outputs(doc, cfg.get("out"))
    bad = doc["checks"]["checksum_problems"] or doc["checks"]["preload_problems"]
    return 1 if bad else 0


def _opt(args, name, conv, default=None):
    if name in args:
        i = args.index(name)
        if i + 1 >= len(args):
            raise ValueError(f"{name} needs a value")
        return conv(args[i + 1])
    return default


def shards_main(argv):
    """shards [--budget S] [--runs R] [--n N]: print the full plan in shards.
    shard-select K/N [--budget S] [--runs R]: two lines for suite.sh (the
    shard's parts, its workloads), its description on stderr."""
    args = argv[2:]
    try:
        budget = _opt(args, "--budget", float, SHARD_BUDGET_S)
        runs = _opt(args, "--runs", int)
        if argv[1] == "shard-select":
            if not args or args[0].startswith("--"):
                raise ValueError("shard-select needs K/N")
            k, n = parse_shard(args[0])
        else:
            k, n = None, _opt(args, "--n", int)
        plan = shard_plan(budget, runs, n)
    except ValueError as e:
        print(f"suite: {e}", file=sys.stderr)
        return 2
    if k is not None:
        sh = plan["shards"][k - 1]
        print(" ".join(sh["parts"]))
        print(" ".join(sh["workloads"]))
        print(f"suite: shard {k}/{plan['n']} of the full plan (fewest shards of {budget:.0f} s: {plan['min_n']}): "
              f"{', '.join(sh['units'])}; estimated {sh['est_s']} s", file=sys.stderr)
        return 0
    print(f"{plan['plan_note']}; {len(plan['items'])} items, ~{plan['total_s']:.0f} s of runs "
          f"({plan['time_model']} model); {plan['n']} shards of {budget:.0f} s (fewest: {plan['min_n']})")
    for sh in plan["shards"]:
        print(f"  shard {sh['k']}/{plan['n']}: ~{sh['est_s']:.0f} s incl. set-up: {', '.join(sh['units'])}")
    return 0


def merge_main(out_dir, paths):
    """merge OUT_DIR A/results.json B/results.json ...: one results.json +
    table.txt + plots in OUT_DIR. Exit 1: a checksum or preload check failed;
    3: checks passed but items of the full plan were not run; 2: unreadable."""
    docs = []
    for p in paths:
        try:
            with open(p) as f:
                docs.append(json.load(f))
        except (OSError, ValueError) as e:
            print(f"suite: merge: cannot read {p}: {e}", file=sys.stderr)
            return 2
    doc = merge_docs(docs, paths)
    for w in doc["merge_warnings"]:
        print("suite: *** MERGE WARNING *** " + w, file=sys.stderr)
    write_outputs(doc, out_dir)
    if doc["checks"]["checksum_problems"] or doc["checks"]["preload_problems"]:
        return 1
    return 3 if doc["not_run"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

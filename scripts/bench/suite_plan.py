"""Benchmark suite of SAGE: the plan that suite.py run measures, and its time model.

The modes and workloads; est_invocation / estimate_plan (the seconds each
part should take, from the H200 time models below); build_config (what
suite.sh decided -> the plan); the full plan cut into shards that each fit
one --budget (shard_plan, shard_config; `suite.py shards` prints them);
plan_items / covered_items (what a plan asks for, what records measured).
Pure and standard library only: unit-tested by suite_test.py, and suite.sh's
config step imports it.
"""

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
# "h200-2026-11-30-bytecode": the full plan again, once suite.sh really wrote
# the byte code (the image sets PYTHONDONTWRITEBYTECODE=1, so every function
# had compiled torch & co.): 4 shards at the old model took 164-216 s each
# instead of 439-466 (docs/results/2026-11-30-h200/suite-full.*). Per
# invocation, the slowest mode's median: gpt2 9.2 s, bert 8.3, resnet50 3.9,
# llm 2.7 (4 GiB), cfunc 1.0 (1 GiB), sgemm 0.65; set-up 17-35 s (the first
# on a machine writes the byte code: warm-up import 20 s, later 6 s).
EST_MODELS["h200-2026-11-30-bytecode"] = {"cfunc": 0.35, "cfunc_per_gib": 0.65, "sgemm": 0.7, "resnet50": 4.5,
                                          "bert": 9.5, "gpt2": 10.0, "llm": 1.4, "llm_per_gib": 0.35}
SHARD_MODEL = "h200-2026-11-30-bytecode"
EST_SHARD_SETUP_S = {"python": 40, "c": 30}  # a shard's set-up with / without Python workloads
SHARD_BUDGET_S = 480    # default --budget of one shard (one 10-minute device call)


# ---------------------------------------------------------------- plan
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
# At the speeds of the complete run with byte code (SHARD_MODEL) the full plan
# (~814 s of runs) needs 2 shards of 480 s.

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

"""Benchmark suite of SAGE: runner and report (driven by scripts/bench/suite.sh).

    suite.py config CONFIG.json  write the run's config: the plan, the machine, and
                                 what suite.sh set up (S_* environment variables)
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

# The command line; the work is in its siblings (imported as scripts/bench is
# this script's directory):
#   suite_plan.py    the plan, its time model, the shards (pure)
#   suite_runner.py  Runner: runs a plan on the GPU, one record per process
#   suite_report.py  records -> results document: stats, checks, summaries,
#                    merge, table, plots (pure)
import json
import os
import signal
import sys
import time

import bench_result
import suite_plan
from suite_plan import C_KINDS, MODE_TEXT, SHARD_BUDGET_S, covered_items, parse_shard, plan_items, shard_plan
from suite_report import assemble, merge_docs, table, write_outputs
from suite_runner import Runner, mode_states


def config_main(path):
    """config CONFIG.json: what suite.sh measured about the machine and its set-up
    (S_* environment variables) + the plan (suite_plan) -> the run's config."""
    e = os.environ
    cw, pw = e["S_CWLS"].split(), e["S_PYWLS"].split()
    cfg = suite_plan.build_config({"quick": e["S_QUICK"] == "1", "runs": int(e["S_RUNS"]) if e["S_RUNS"] else None,
                                   "cw": cw, "pw": pw, "c_mib": int(e["S_CMIB"]), "llm_gib": float(e["S_LLMGIB"]),
                                   "shard": e["S_SHARD"] or None, "budget": float(e["S_BUDGET"])})
    logs = e["S_LOGS"]

    def last_json(log):
        try:
            with open(log) as f:
                return json.loads(f.read().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            return {}

    # The fast model build (no random init) only where gen found it bit-identical
    # to the slow one; every mode builds a workload the same way either way.
    fast = {k: last_json(f"{logs}/gen-{k}.json").get("fast_build", "not checked") for k in pw if k != "llm"}
    warm = last_json(f"{logs}/warmup-import.json")
    cfg.update({
        "budget_s": float(e["S_BUDGET"]), "t_start": float(e["S_TSTART"]),
        "parts": e["S_PARTS"].split(), "logs": logs, "bin": e["S_BIN"], "data": e["S_DATA"], "here": e["S_HERE"],
        "python": e["S_PY"], "libsage": e["S_LIBSAGE"], "saged": e["S_SAGED"], "sagectl": e["S_SAGECTL"],
        "socket": e["S_SOCK"], "mps_ctl": e["S_MPS_CTL"], "mps_pipe": e["S_MPS_PIPE"], "mps_log": e["S_MPS_LOG"],
        "out": e["S_OUT"], "hook_json": e["S_HOOK"], "gpu_index": int(e["S_GPUIDX"]), "sgemm_n": 4096,
        "fast_build": fast, "slow_build": [k for k, v in fast.items() if not v.startswith("ok")],
        "python_env": {"PYTHONPYCACHEPREFIX": e.get("PYTHONPYCACHEPREFIX"),
                       "PYTHONDONTWRITEBYTECODE (timed functions)": e.get("PYTHONDONTWRITEBYTECODE"),
                       "byte-code files before the first timed run": sum(
                           f.endswith(".pyc") for _, _, fs in os.walk(e.get("PYTHONPYCACHEPREFIX") or "/nonexistent")
                           for f in fs),
                       "warmup_import": ("done before anything was timed (untimed): %s s" % warm["warmup_import_s"])
                       if "warmup_import_s" in warm else "not done (no Python workloads)",
                       **{k: v for k, v in warm.items() if k != "warmup_import_s"}},
        "machine": dict(bench_result.machine(int(e["S_GPUIDX"]), e["S_NVCC"]), torch=e["S_TORCH"] or None),
    })
    if "resnet50" not in pw:
        cfg["parts"] = [p for p in cfg["parts"] if p not in ("poisson", "density")]
    for k in cfg["slow_build"]:
        print(f"suite: NOTE: {k}: fast model build not proven identical ({fast[k]}): every mode builds it the slow way")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "config":
        return config_main(argv[2])
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
    extra = {"machine": cfg["machine"], "settings": {k: cfg[k] for k in cfg if k not in ("machine",)},
             "modes": mode_states(cfg, runner), "mode_text": dict(MODE_TEXT), "na": na,
             "skipped": runner.skipped, "trimmed": runner.trimmed, "notes": runner.notes,
             "hook_overhead": hook, "poisson": parts["poisson"], "density": parts["density"],
             "estimate_s": runner.estimate, "part_s": runner.part_s,
             "elapsed_s": round(time.time() - cfg["t_start"], 1)}
    if cfg.get("shard"):
        extra["shard"], extra["full_plan"] = cfg["shard"], cfg["full_plan"]
        extra["settings"] = {k: v for k, v in extra["settings"].items() if k not in ("shard", "full_plan")}
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

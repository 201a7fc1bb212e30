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

from suite_plan import C_KINDS, MODE_TEXT, SHARD_BUDGET_S, covered_items, parse_shard, plan_items, shard_plan
from suite_report import assemble, merge_docs, table, write_outputs
from suite_runner import Runner, mode_states


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

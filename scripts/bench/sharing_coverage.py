"""The sharing-coverage benchmark (issue 14's "Done when"): how much of each
workload's uploads sharing serves, how fast a miss uploads, and what a hit
costs, native and SAGE side by side in one run. sharing-coverage.sh builds
the programs and calls

    sharing_coverage.py run --out DIR --build DIR --data DIR --logs DIR --cfunc BIN [--fake] [--quick]
                            [--runs N] [--only LIST] [--budget SEC] [--margin SEC] [--no-place]
    sharing_coverage.py merge OUT_DIR A.json B.json  runs split by --only, as one document
    sharing_coverage.py check-dry-run FILE.json      the --fake flow's own check
    sharing_coverage.py check-partial OUT CMD...      CMD (a --fake run) with --budget 0, then stopped
                                                     by SIGTERM: each leaves a valid partial document
    sharing_coverage.py selftest                     the report on fabricated runs

Per workload (jax, resnet50, bert, gpt2, cfunc, llm; the processes and the
time budget: sharing_coverage_runner.py): a first native run (the reference
output), cold SAGE runs, each with a broker of its own (cfunc and llm:
--runs of them, measured; the others one), an untimed warm-up on the first
cold run's broker, then rounds of (native run, SAGE run) on that warm
broker. SAGE runs with learned placement (SAGE_SHARE_PLACE, a folder per
broker: the cold run learns, the warm-up publishes what placement moved;
--no-place: without). A workload prints `SAGE_BENCH {json}` with upload_ms
(the upload the app waits for) and upload_cpu_ms (its process's CPU time
over it, SAGE's threads included); every SAGE run writes a trace whose
`sage-trace summary --json` gives shared_fraction ((mapped + assembled) /
all upload bytes: libsage's counters, one definition) and the bytes
uploaded. Every output is compared with native's. gpt2 also runs N at once,
native and SAGE (warm broker; N: 16, 8 with --quick).
"""
import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import bench_result as br

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = ("jax", "resnet50", "bert", "gpt2", "cfunc", "llm")
COLD_KINDS = ("cfunc", "llm")
SMALL_KINDS = ("bert", "resnet50")
CONCURRENT = 16
# Measurement's order: what the issue asks most first, so a budget that runs out costs the least.
# The first pass takes one sample of each figure; the later ones favour the small hits (a 5% target).
MEASURE_ORDER = ("cfunc", "llm", "resnet50", "bert", "gpt2", "jax")
LATER_ORDER = ("resnet50", "bert", "gpt2", "jax", "cfunc", "llm")
NATIVE_TAGS = ("first", "native", "concurrent-native")
# The targets: shared fraction on a warm broker, cold GB/s, hits no slower than native (+5%).
FRACTION_TARGETS = {"jax": 0.95, "resnet50": 0.98, "bert": 0.95, "gpt2": 0.95}
GBPS_TARGET = 25.0
# Stand-ins for the dry run (simulated driver, no torch): the C function with
# a state dict's shape (file MiB, tensors). The flow is the GPU run's.
FAKE_SHAPES = {"cfunc": (48, 1), "llm": (64, 8), "gpt2": (24, 6), "bert": (16, 4), "resnet50": (16, 8),
               "jax": (16, 2)}


class Skip(Exception):
    """A workload that cannot run here (no jax, no weights): skipped, with the reason."""


def parse_record(stdout, prefix="SAGE_BENCH"):
    for line in stdout.splitlines():
        if line.startswith(prefix + " "):
            rest = line[len(prefix) + 1:]
            return json.loads(rest) if rest.startswith("{") else rest
    return None


# ---------------------------------------------------------------- the figures
def values(runs, tag, key):
    return [r.get(key) for r in runs if r.get("tag") == tag and "error" not in r and r.get(key) is not None]


# Staging's own counters (ns), in the report as ms.
STAGE_STATS = {"SHARE_NS_STAGE": "stage_ms", "SHARE_NS_STAGE_FIRST_DMA": "first_dma_ms",
               "SHARE_NS_STAGE_WAIT_HOST": "wait_host_ms", "SHARE_NS_STAGE_WAIT_DMA": "wait_dma_ms"}
# Where a cold upload's time went: SAGE's upload calls (SHARE_NS_UPLOAD) and their parts, its cuMemAllocs.
UPLOAD_PARTS = {"SHARE_NS_STAGE": "stage_ms", "SHARE_NS_STAGE_READY": "stage_ready_ms",
                "SHARE_NS_FILE_KEY": "file_key_ms", "SHARE_NS_KEY": "key_ms", "SHARE_NS_BROKER": "broker_ms",
                "SHARE_NS_REMAP": "remap_ms"}
UPLOAD_STATS = {"SHARE_NS_UPLOAD": "upload_calls_ms", "SHARE_NS_ALLOC": "alloc_ms", **UPLOAD_PARTS}


def accounted(run):
    """A cold run's upload_ms split (ms): SAGE's upload calls, its allocations, their parts, and what is left:
    sage_unaccounted_ms (inside SAGE's upload calls, no part of them: the app's end copies, locks) and
    outside_sage_ms (the app's upload window outside SAGE's calls: the framework, unbacked calls)."""
    sh = run.get("sharing") or {}
    if "SHARE_NS_UPLOAD" not in sh or run.get("upload_ms") is None:
        return None  # a libsage of before these counters
    out = {name: sh.get(stat, 0) / 1e6 for stat, name in UPLOAD_STATS.items()}
    out["sage_unaccounted_ms"] = out["upload_calls_ms"] - sum(out[n] for n in UPLOAD_PARTS.values())
    out["outside_sage_ms"] = run["upload_ms"] - out["upload_calls_ms"] - out["alloc_ms"]
    return out


# The first launch's share of a hit (ms): assembly split (intercept/share_assemble.c), then the backing.
FIRST_LAUNCH_STATS = {"assembly": "SHARE_NS_ASSEMBLE", "sync": "SHARE_NS_ASSEMBLE_SYNC", "read_back": "SHARE_NS_ASSEMBLE_READ",
                      "read_dma": "SHARE_NS_ASSEMBLE_READ_DMA", "read_hash": "SHARE_NS_ASSEMBLE_READ_HASH",
                      "lookup": "SHARE_NS_ASSEMBLE_LOOKUP",
                      "lookup_first": "SHARE_NS_ASSEMBLE_LOOKUP_FIRST",
                      "lookup_slowest": "SHARE_NS_ASSEMBLE_LOOKUP_SLOWEST", "map": "SHARE_NS_ASSEMBLE_MAP",
                      "backing": "SHARE_NS_BACK", "backing_in_read_back": "SHARE_NS_BACK_OVERLAPPED",
                      "predict_settle": "SHARE_NS_PREDICT_SETTLE"}


def run_hit_ms(r):
    """One run's upload_ms plus what its uploads left for the first launch (hit_ms); native: upload_ms."""
    sh = r.get("sharing") or {}
    return r["upload_ms"] + (sh.get("SHARE_NS_ASSEMBLE", 0) + sh.get("SHARE_NS_BACK", 0) +
                             sh.get("SHARE_NS_PREDICT_SETTLE", 0)) / 1e6


def hit_ms(runs, tag):
    """What a SAGE run's uploads cost the app: upload_ms plus assembly (SHARE_NS_ASSEMBLE), deferred
    backing (SHARE_NS_BACK: the memory no hit took, mapped before the first launch) and the settling of
    predictions (SHARE_NS_PREDICT_SETTLE: predicted runs hashed from their host images), the work the uploads
    left for the first launch after them, which the app waits for there instead. Either of them that ran
    inside the upload window (a launch between uploads), or later for other allocations, is counted twice:
    the figure errs against SAGE."""
    return [run_hit_ms(r) for r in runs if r.get("tag") == tag and "error" not in r and r.get("upload_ms") is not None]


PHASES = ("start_ms", "import_ms", "read_ms", "setup_ms", "upload_ms")


def others_reading(runs, tag):
    """N processes at once: for each, how many others of its round were still reading (imports done, the
    model being built and loaded on the CPU, PyTorch's threads on every core) when its upload began, and
    its hit_ms: (others, ms) pairs. Which uploads meet the others' reading is chance, and it decides much
    of an upload's time (its wait for a CPU): the report splits the uploads by it. Rounds are told by
    "batch", each process placed by "start_ms" (its start in the round; the phases are durations after it,
    main_ms, the interpreter's start, first)."""
    return [(n, ms) for n, ms, _ in reading_of(runs, tag)]


def reading_of(runs, tag):
    """others_reading's (others, ms, record) triples."""
    return [(n, ms, r) for n, _, ms, r in at_upload(runs, tag)]


def at_upload(runs, tag):
    """(others reading, others setting up, ms, record) for each process: as others_reading, and how many
    others of its round were in their GPU set-up (after reading, before their upload: the CUDA runtime's
    start, its first kernel's module) when its upload began. Those work in the driver, and SAGE's
    re-mapping waits for them (2026-12-07, 88ce1c1: remap_ms follows them, not the CPU run queue)."""
    rounds = {}
    for r in runs:
        if r.get("tag") == tag and "error" not in r and r.get("batch") is not None and \
                all(r.get(k) is not None for k in PHASES):
            rounds.setdefault(r["batch"], []).append(r)
    out = []
    def read_from(r):  # when its reading began, from its round's start
        return r["start_ms"] + (r.get("main_ms") or 0.0) + r["import_ms"]
    for rs in rounds.values():
        for r in rs:
            at = read_from(r) + r["read_ms"] + r["setup_ms"]
            n = sum(1 for o in rs if o is not r and read_from(o) <= at < read_from(o) + o["read_ms"])
            up = sum(1 for o in rs if o is not r and
                     read_from(o) + o["read_ms"] <= at < read_from(o) + o["read_ms"] + o["setup_ms"])
            out.append((n, up, run_hit_ms(r), r))
    return out


# Where N processes at once spent their upload (ms): the uploading thread's wait for a CPU, and SAGE's parts.
# The calling threads' CPU time in SAGE's upload calls (the driver's copies in them too), in the keys, in SAGE's
# cuMemAllocs: the process's totals over its run, beside (not part of) the uploading thread's CPU over the upload
# (upload_thread_cpu_ms; upload_cpu_ms is the whole process's: hashing and staging threads, the framework's).
CPU_STATS = {"SHARE_NS_UPLOAD_CPU": "upload_calls_cpu_ms", "SHARE_NS_KEY_CPU": "key_cpu_ms",
             "SHARE_NS_ALLOC_CPU": "alloc_cpu_ms"}
WAIT_STATS = {"SHARE_NS_KEY": "key_ms", "SHARE_NS_KEY_TAIL": "key_tail_ms", "SHARE_NS_BROKER": "broker_ms",
              "SHARE_NS_REMAP": "remap_ms", "SHARE_NS_ALLOC": "alloc_ms", "SHARE_NS_BACK": "back_ms", **CPU_STATS}


def where_waited(runs, sage_tag="concurrent-sage"):
    """N at once: native's and SAGE's (sage_tag: the default SAGE, or a --variant's) waits and parts."""
    out = {}
    for side, tag in (("native", "concurrent-native"), ("sage", sage_tag)):
        out[side] = {}
        for key in ("upload_runq_ms", "upload_switches", "upload_preempted", "upload_cpu_ms", "upload_thread_cpu_ms"):
            out[side][key] = br.stats(values(runs, tag, key))
        pairs = others_reading(runs, tag)
        if pairs:  # documents before the rounds were recorded have none
            out[side]["others_reading"] = br.stats([n for n, _ in pairs])
            out[side]["ms_none_reading"] = br.stats([ms for n, ms in pairs if n == 0])
            out[side]["ms_some_reading"] = br.stats([ms for n, ms in pairs if n > 0])
    sage = [r for r in runs if r.get("tag") == sage_tag and r.get("sharing")]
    for stat, name in WAIT_STATS.items():  # a counter the run's libsage lacked: no figure, not 0
        out["sage"][name] = br.stats([r["sharing"][stat] / 1e6 for r in sage if stat in r["sharing"]])
    # the keys' pool: helpers that hashed (summed over a process's keys), key_tail_ms the wait for them
    out["sage"]["key_helpers"] = br.stats([r["sharing"].get("SHARE_KEY_HELPERS", 0) for r in sage])
    # predicted remap's allocations made ahead by the warm-up thread, and of them taken by the app's cuMemAlloc
    for stat, name in (("SHARE_PREMADE", "premade"), ("SHARE_PREMADE_TAKEN", "premade_taken")):
        out["sage"][name] = br.stats([r["sharing"][stat] for r in sage if stat in r["sharing"]])
    rounds = [r["round"] for r in runs if r.get("tag") == sage_tag and r.get("round")]
    # saged over each SAGE round: its CPU time, its wait for a CPU, how often it ran
    out["broker_round"] = {k: br.stats([r[k] for r in rounds]) for k in rounds[0]} if rounds else None
    return out


VARIANT_TAG = "concurrent-sage-"  # + a --variant's name: SAGE at once with that variant's settings


def variants_at_once(runs):
    """Each --variant's SAGE processes at once beside the same rounds' native and default SAGE ones."""
    out = {}
    for tag in sorted({r["tag"] for r in runs if r.get("tag", "").startswith(VARIANT_TAG)}):
        w = where_waited(runs, tag)
        out[tag[len(VARIANT_TAG):]] = {"sage_ms": br.stats(hit_ms(runs, tag)),
                                       "first_result_ms": br.stats(values(runs, tag, "first_result_ms")),
                                       "where": w["sage"], "broker_round": w["broker_round"]}
    return out


def report(raw, problems, at_once=CONCURRENT):
    """The issue's document: workloads, cold_upload_gbps (+ CPU), concurrent16, small_hits; targets."""
    workloads, cold, cold_cpu, cold_ms, native_gbps, concurrent, small, targets = {}, {}, {}, {}, {}, {}, {}, {}
    for kind in KINDS:
        w = raw.get(kind, {})
        runs = w.get("runs", [])
        if w.get("skipped"):
            workloads[kind] = {"skipped": w["skipped"]}
            continue
        # Warm-broker SAGE runs: alone, else the ones at once (gpt2 with --quick).
        fractions = values(runs, "warm", "shared_fraction") or values(runs, "concurrent-sage", "shared_fraction")
        workloads[kind] = {"shared_fraction": br.stats(fractions, 4),
                           "native_upload_ms": br.stats(values(runs, "native", "upload_ms")),
                           "sage_upload_ms": br.stats(values(runs, "warm", "upload_ms"))}
        if kind in FRACTION_TARGETS and workloads[kind]["shared_fraction"]:
            f = workloads[kind]["shared_fraction"]["median"]
            targets[f"{kind} shared_fraction >= {FRACTION_TARGETS[kind]}"] = f >= FRACTION_TARGETS[kind]
        if kind in COLD_KINDS:
            colds = [r for r in runs if r.get("tag") == "cold" and "error" not in r]
            gbps = [r["htod_bytes"] / (r["upload_ms"] * 1e6) for r in colds if r.get("htod_bytes") and r.get("upload_ms")]
            cold[kind] = br.stats(gbps)
            cold_ms[kind] = br.stats(values(runs, "cold", "upload_ms"))
            cold_cpu[kind] = {"upload_cpu_ms": br.stats(values(runs, "cold", "upload_cpu_ms")),
                              "staging_cpu_ms": br.stats([r["sharing"].get("SHARE_NS_STAGE_CPU", 0) / 1e6
                                                          for r in colds if r.get("sharing")])}
            # Where the staged copies' time went (share_stage.c): the first cold run's timeline lines.
            for stat, name in STAGE_STATS.items():
                cold_cpu[kind][name] = br.stats([r["sharing"].get(stat, 0) / 1e6 for r in colds if r.get("sharing")])
            cold_cpu[kind]["timeline"] = next((r["stage_timeline"] for r in colds if r.get("stage_timeline")), [])
            splits = [x for x in map(accounted, colds) if x]
            cold_cpu[kind]["accounted"] = {k: br.stats([x[k] for x in splits]) for k in splits[0]} if splits else None
            size = next((r.get("htod_bytes") for r in colds if r.get("htod_bytes")), None)
            native_gbps[kind] = br.stats([size / (ms * 1e6) for ms in values(runs, "native", "upload_ms")
                                          if size and ms]) if size else None
            if cold[kind]:
                targets[f"{kind} cold upload >= {GBPS_TARGET} GB/s"] = cold[kind]["median"] >= GBPS_TARGET
        if kind == "gpt2":
            n = br.stats(values(runs, "concurrent-native", "upload_ms"))
            s = br.stats(hit_ms(runs, "concurrent-sage"))
            concurrent[kind] = {"native_ms": n, "sage_ms": s,
                                "sage_upload_ms": br.stats(values(runs, "concurrent-sage", "upload_ms")),
                                # the whole function: start to its first result, per process
                                "first_result_ms": {side: br.stats(values(runs, "concurrent-" + side, "first_result_ms"))
                                                    for side in ("native", "sage")}}
            concurrent[kind]["where"] = where_waited(runs)
            concurrent[kind]["variants"] = variants_at_once(runs)  # not a target: what a setting would change
            if n and s:
                targets[f"{at_once} gpt2 at once no slower than native"] = s["median"] <= n["median"]
        if kind in SMALL_KINDS:
            n, s = workloads[kind]["native_upload_ms"], br.stats(hit_ms(runs, "warm"))
            small[kind] = {"native_ms": n, "sage_ms": s, "sage_upload_ms": workloads[kind]["sage_upload_ms"]}
            # What the first launch waits for: assembly's parts and the deferred backing (SHARE_NS_*, ms).
            warm = [r["sharing"] for r in runs if r.get("tag") == "warm" and r.get("sharing")]
            small[kind]["first_launch_ms"] = {k: br.stats([w.get(stat, 0) / 1e6 for w in warm])
                                              for k, stat in FIRST_LAUNCH_STATS.items()} if warm else None
            # saged's one thread over each warm invocation: its CPU, its wait for one (ms).
            brk = [r["broker"] for r in runs if r.get("tag") == "warm" and r.get("broker")]
            small[kind]["broker_ms"] = {k: br.stats([b[k] for b in brk]) for k in ("cpu_ms", "runq_ms")} if brk else None
            # After the idleness (SAGE_BENCH_IDLE_MS): the next call's compute, and the assembly done meanwhile.
            small[kind]["after_idle"] = {
                "native_again_ms": br.stats(values(runs, "native", "again_ms")),
                "sage_again_ms": br.stats(values(runs, "warm", "again_ms")),
                "assemble_idle_ms": br.stats([w.get("SHARE_NS_ASSEMBLE_IDLE", 0) / 1e6 for w in warm]),
                "runs_due": br.stats([w.get("SHARE_ASSEMBLE_DEFERRED", 0) for w in warm]),
                "runs_mapped_idle": br.stats([w.get("SHARE_ASSEMBLED_IDLE", 0) for w in warm])} if warm else None
            if n and s:
                targets[f"{kind} hit within 5% of native's copy"] = s["median"] <= 1.05 * n["median"]
    return {"workloads": workloads, "cold_upload_gbps": cold, "cold_upload_ms": cold_ms, "cold_upload_cpu": cold_cpu,
            "native_upload_gbps": native_gbps, "concurrent16": concurrent, "small_hits": small,
            "targets": targets, "output_mismatches": mismatches(raw),
            "outputs_identical": not mismatches(raw) and not any("differs" in p for p in problems)}


# The workloads that idle after their invocation and compute once more (suite_fn.py), and SAGE's
# setting for them: the suspend gate on, so that assembly waits for the idleness (share_idle.c).
IDLE_KINDS = ("resnet50", "bert", "gpt2")
IDLE_MS_DEFAULT = 300


def idle_ms():
    """SAGE_BENCH_IDLE_MS (default IDLE_MS_DEFAULT; 0: invocations exit at once, assembly at the first launch)."""
    v = os.environ.get("SAGE_BENCH_IDLE_MS")
    return int(v) if v not in (None, "") else IDLE_MS_DEFAULT


def mismatches(raw):
    """Every output compared with native's (the first native run's), whatever ran first."""
    out = []
    for kind, w in raw.items():
        runs = [r for r in w.get("runs", []) if "error" not in r and r.get("checksum") is not None]
        ref = next((r["checksum"] for r in runs if r.get("tag") in NATIVE_TAGS), None)
        again = next((r["again_checksum"] for r in runs if r.get("tag") in NATIVE_TAGS and r.get("again_checksum")),
                     None)
        for r in runs:
            if ref is not None and r["checksum"] != ref:
                out.append(f"{kind} {r.get('tag')}: output {r['checksum']} differs from native's {ref}")
            # The call after the idleness (SAGE_BENCH_IDLE_MS): SAGE may have remapped its memory meanwhile.
            if r.get("again_checksum") and r["again_checksum"] != again:
                out.append(f"{kind} {r.get('tag')}: output after idleness {r['again_checksum']} differs from "
                           f"native's {again}")
    return out


def fmt(st, unit=""):
    """A stats object as the tables print it: median [min-max] n."""
    return f"{st['median']}{unit} [{st['min']}-{st['max']}] n={st['n']}" if st else "-"


def table(doc):
    s, lines, f = doc["summary"], ["sharing-coverage (median [min-max], n)"], fmt
    for kind, w in s["workloads"].items():
        if "skipped" in w:
            lines.append(f"  {kind:9} skipped: {w['skipped']}")
        else:
            lines.append(f"  {kind:9} shared {f(w['shared_fraction'])}; upload native {f(w['native_upload_ms'], ' ms')}"
                         f", SAGE (warm) {f(w['sage_upload_ms'], ' ms')}")
    for kind, st in s["cold_upload_gbps"].items():
        cpu = s["cold_upload_cpu"].get(kind, {})
        lines.append(f"  cold {kind}: {f(st, ' GB/s')} (native {f(s['native_upload_gbps'].get(kind), ' GB/s')}); "
                     f"CPU {f(cpu.get('upload_cpu_ms'), ' ms')}, staging CPU {f(cpu.get('staging_cpu_ms'), ' ms')}")
        lines.append(f"  cold {kind} staging: " + ", ".join(f"{name} {f(cpu.get(name), ' ms')}"
                                                             for name in STAGE_STATS.values()))
        if cpu.get("accounted"):
            lines.append(f"  cold {kind} upload: " + ", ".join(f"{name} {f(st, ' ms')}"
                                                            for name, st in cpu["accounted"].items()))
        lines += [f"    {line}" for line in cpu.get("timeline", [])]
    for kind, c in s["concurrent16"].items():
        lines.append(f"  {doc['settings'].get('concurrent', CONCURRENT)} {kind} at once: native {f(c['native_ms'], ' ms')}, "
                     f"SAGE {f(c['sage_ms'], ' ms')} (upload + assembly at the first launch)")
        fr = c.get("first_result_ms") or {}
        if fr.get("native") and fr.get("sage"):
            lines.append(f"    start to first result: native {f(fr['native'], ' ms')}, SAGE {f(fr['sage'], ' ms')}")
        w = c.get("where") or {}
        for side in ("native", "sage"):
            lines.append(f"    {side}: " + ", ".join(f"{k} {f(v, '')}" for k, v in (w.get(side) or {}).items()))
        if w.get("broker_round"):
            lines.append("    saged over a SAGE round: " + ", ".join(f"{k} {f(v, '')}" for k, v in w["broker_round"].items()))
        for name, v in (c.get("variants") or {}).items():
            env = " ".join(f"{k}={x}" for k, x in (doc["settings"].get("variants") or {}).get(name, {}).items())
            lines.append(f"    SAGE with {name} ({env}): {f(v['sage_ms'], ' ms')}; start to first result "
                         f"{f(v['first_result_ms'], ' ms')}")
            lines.append(f"      {name}: " + ", ".join(f"{k} {f(x, '')}" for k, x in v["where"].items()))
    for kind, c in s["small_hits"].items():
        lines.append(f"  {kind} hits: native {f(c['native_ms'], ' ms')}, SAGE {f(c['sage_ms'], ' ms')} "
                     f"(upload + assembly at the first launch)")
        if c.get("after_idle") and c["after_idle"]["sage_again_ms"]:
            ai = c["after_idle"]
            lines.append(f"    after idleness: next call native {f(ai['native_again_ms'], ' ms')}, SAGE "
                         f"{f(ai['sage_again_ms'], ' ms')}; assembled then {f(ai['assemble_idle_ms'], ' ms')}, "
                         f"runs {f(ai['runs_mapped_idle'])} of {f(ai['runs_due'])} due")
        if c.get("first_launch_ms"):
            lines.append("    first launch: " + ", ".join(f"{k} {f(v, ' ms')}" for k, v in c["first_launch_ms"].items()))
        if c.get("broker_ms"):
            lines.append("    saged meanwhile: " + ", ".join(f"{k} {f(v, '')}" for k, v in c["broker_ms"].items()))
    for name, met in s["targets"].items():
        lines.append(f"  target {'met ' if met else 'MISSED'}: {name}")
    made = {k: w["weights"]["gen_s"] for k, w in doc["raw"].items() if w.get("weights", {}).get("generated")}
    if made:
        lines.append("  weights generated in this run (s, at once): " + ", ".join(f"{k} {v}" for k, v in made.items()))
    if "state" in doc:
        t = doc.get("timeline")  # a merged document has none: its state names each file's
        lines.append(f"  state: {doc['state']}" + (f" (written at {t.get('written_at_s')} s; prepared at "
                     f"{t.get('prepared_s')} s, {t.get('weights_generated')} weights generated; "
                     f"expected {t.get('expected_s')} s on an H100)" if t else ""))
        lines += [f"  missing: {m}" for m in doc.get("missing", [])]
    return "\n".join(lines)


def document(a, raw, problems, machine):
    summary = report(raw, problems, getattr(a, "concurrent", CONCURRENT))
    settings = {k: getattr(a, k, None) for k in ("runs", "quick", "fake", "only", "budget", "margin", "cfunc_gib",
                                                 "llm_gib", "concurrent", "concurrent_rounds", "place")}
    settings["staging"] = getattr(a, "staging", None) or os.environ.get("SAGE_SHARE_STAGING", "default")
    settings["predict"] = os.environ.get("SAGE_SHARE_PREDICT", "0")  # predicted remap: the GPU run compares both
    settings["variants"] = dict(getattr(a, "variants", None) or [])  # --variant NAME: its SAGE settings
    # Idleness after each invocation of IDLE_KINDS (SAGE_BENCH_IDLE_MS; SAGE with SAGE_SUSPEND=1): assembly at idleness.
    settings["idle_ms"] = idle_ms()
    settings["warmup"] = ("the cold run on the warm broker (learns placement) + 1 untimed invocation (publishes "
                          "what placement moved), then the measured warm runs")
    if getattr(a, "concurrent", CONCURRENT) != CONCURRENT:
        settings["concurrent_note"] = f"{a.concurrent} gpt2 at once instead of {CONCURRENT} (concurrent16's figure)"
    return br.result("sharing-coverage", machine, settings, summary, problems=problems, raw=raw,
                     **{k: summary[k] for k in ("workloads", "cold_upload_gbps", "concurrent16", "small_hits")})


READING_BUCKETS = ((0, 0), (1, 3), (4, 7), (8, 15), (16, 255))


def reading(paths):
    """`sharing_coverage.py reading DOC.json...`: each document's gpt2 uploads at once split by the others'
    reading (others_reading). Documents written before the rounds were recorded ("batch", "start_ms") have
    their rounds told by order (a round's processes are collected together, `settings.concurrent` of them)
    and each process placed at the round's start (the spawn loop takes well under 0.1 s): said so."""
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        runs = [dict(r) for r in doc.get("raw", {}).get("gpt2", {}).get("runs", []) if "error" not in r]
        at_once = doc.get("settings", {}).get("concurrent") or CONCURRENT
        print(path)
        variants = sorted({r["tag"] for r in runs if r.get("tag", "").startswith(VARIANT_TAG)})
        for tag in ["concurrent-native", "concurrent-sage"] + variants:
            rs = [r for r in runs if r.get("tag") == tag]
            guessed = any(r.get("batch") is None for r in rs)
            if guessed:
                for i, r in enumerate(rs):
                    r["batch"], r["start_ms"] = i // at_once + 1, 0.0
            quads = at_upload(rs, tag)
            triples = [(n, ms, r) for n, _, ms, r in quads]
            groups = {"none": [t for t in triples if t[0] == 0], "some": [t for t in triples if t[0] > 0]}
            side = tag[len("concurrent-"):]
            side = f"{side:6}" if len(side) <= 6 else side + "\n" + " " * 8  # a variant's: its own line
            print(f"  {side} others reading {fmt(br.stats([n for n, _, _ in triples]))}; "
                  f"none reading {fmt(br.stats([ms for _, ms, _ in groups['none']]), ' ms')}; "
                  f"some reading {fmt(br.stats([ms for _, ms, _ in groups['some']]), ' ms')}"
                  + (" (rounds by order, starts not recorded)" if guessed and triples else ""))
            # like for like: the uploads by how many others were reading (median ms, n)
            buckets = [(lo, hi, [ms for n, ms, _ in triples if lo <= n <= hi]) for lo, hi in READING_BUCKETS]
            if triples:
                print("    by others reading: " + ", ".join(f"{lo}-{hi} {br.stats(v)['median']} ms n={len(v)}"
                                                       for lo, hi, v in buckets if v))
                # and by how many were setting up (their GPU start), with what SAGE re-mapped in (median ms)
                by_setup = [(lo, hi, [(ms, r) for _, u, ms, r in quads if lo <= u <= hi]) for lo, hi in READING_BUCKETS]
                print("    by others setting up: " + ", ".join(
                    f"{lo}-{hi} {br.stats([ms for ms, _ in v])['median']} ms n={len(v)}" + remap_of([r for _, r in v])
                    for lo, hi, v in by_setup if v))
            # the same processes: the upload's CPU and waits, medians
            for name, g in groups.items():
                medians = {k: br.stats([r.get(k) for _, _, r in g]) for k in
                           ("upload_cpu_ms", "upload_thread_cpu_ms", "upload_runq_ms", "upload_switches",
                            "upload_preempted")}
                for stat, k in CPU_STATS.items():  # the process's counters (libsage of 2026-12-07 on)
                    medians[k] = br.stats([r["sharing"][stat] / 1e6 for _, _, r in g if stat in (r.get("sharing") or {})])
                parts = [f"{k} {st['median']}" for k, st in medians.items() if st]
                if parts:
                    print(f"    {name} reading: " + ", ".join(parts))
    return 0


def remap_of(records):
    """' (remap R, alloc A ms)': the records' medians of SAGE's driver-call waits (SHARE_NS_REMAP at the
    uploads, SHARE_NS_ALLOC in the allocations, where predicted hits map), for the sides that count them."""
    parts = []
    for stat, name in (("SHARE_NS_REMAP", "remap"), ("SHARE_NS_ALLOC", "alloc")):
        ms = [r["sharing"][stat] / 1e6 for r in records if stat in (r.get("sharing") or {})]
        if ms:
            parts.append(f"{name} {br.stats(ms)['median']}")
    return f" ({', '.join(parts)} ms)" if parts else ""


def variant(text):
    """argparse's type for --variant NAME:SAGE_VAR=VALUE[,SAGE_VAR=VALUE...]: (NAME, {VAR: VALUE})."""
    name, _, spec = text.partition(":")
    pairs = [p.partition("=") for p in spec.split(",") if p]
    if not re.fullmatch(r"[a-z0-9_]{1,32}", name) or not pairs or \
            any(not re.fullmatch(r"SAGE_[A-Z0-9_]+", k) or not eq for k, eq, _ in pairs):
        raise argparse.ArgumentTypeError(f"{text}: NAME:SAGE_VAR=VALUE[,SAGE_VAR=VALUE...] (NAME a-z 0-9 _)")
    return name, {k: v for k, _, v in pairs}


def positive(text):
    """argparse's type for a count of at least 1."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text}: at least 1")
    return n


def run(argv):
    p = argparse.ArgumentParser(prog="sharing_coverage.py run")
    for k in ("out", "build", "data", "logs", "cfunc"):
        p.add_argument("--" + k, required=True)
    p.add_argument("--fake", action="store_true")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-place", dest="place", action="store_false")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--rounds-at-once", type=positive, default=None, metavar="N")
    p.add_argument("--variant", dest="variants", type=variant, action="append", default=[],
                   help="NAME:SAGE_VAR=VALUE[,...]: gpt2 at once also with SAGE under these settings, same rounds")
    p.add_argument("--only", default="")
    p.add_argument("--budget", type=float, default=480)
    p.add_argument("--margin", type=float, default=60)
    p.add_argument("--started", type=float, default=None, help="the script's start (time.time())")
    a = p.parse_args(argv)
    if len({name for name, _ in a.variants}) != len(a.variants):
        p.error("--variant: each NAME once")
    a.saged = os.path.join(a.build, "daemon", "saged")
    a.sage_trace = os.path.join(a.build, "tools", "sage-trace")
    a.preload = os.environ.get("SAGE_BENCH_PRELOAD") or os.path.join(a.build, "intercept", "libsage.so")
    a.cfunc_gib, a.llm_gib = (1, 1) if a.fake else (2, 1) if a.quick else (6, 6)
    a.concurrent = 4 if a.fake else 8 if a.quick else CONCURRENT
    a.concurrent_rounds = a.rounds_at_once or (1 if a.quick or a.fake else 2)
    a.timeout = 60 if a.fake else 180
    kinds = [k for k in KINDS if not a.only or k in a.only.split(",")]
    import sharing_coverage_runner
    return sharing_coverage_runner.execute(a, kinds)


def merge(out, paths):
    """Runs split by --only (each call <= 10 min) into one document: each workload from the file that ran it."""
    docs = [json.load(open(p)) for p in paths]
    raw, problems = {k: {"runs": [], "skipped": "in no file"} for k in KINDS}, []
    for d in docs:
        problems += d.get("problems", [])
        for kind, w in d["raw"].items():
            if not w.get("skipped"):
                raw[kind] = w
    a = argparse.Namespace(**docs[0]["settings"])
    a.only = "merged"
    doc = document(a, raw, problems, docs[0]["machine"])
    doc["merged_from"] = list(paths)
    states = [d.get("state", "unknown") for d in docs]
    doc["state"] = "complete" if all(x == "complete" for x in states) else \
        "partial (" + "; ".join(f"{os.path.basename(p)}: {x}" for p, x in zip(paths, states)) + ")"
    doc["missing"] = [m for d in docs for m in d.get("missing", [])]
    br.write(out, doc, table(doc))
    print(table(doc))
    return 0


def check_dry_run(path):
    """The --fake flow did everything: every workload measured, misses staged, hits mapped, same outputs."""
    doc = json.load(open(path))
    bad = br.check(doc)
    s = doc["summary"]
    for kind in KINDS:
        w = s["workloads"].get(kind, {})
        if not w.get("shared_fraction") or w["shared_fraction"]["median"] < 0.9:
            bad.append(f"{kind}: shared_fraction {w.get('shared_fraction')} (a warm broker maps it all)")
    for kind in COLD_KINDS:
        if not s["cold_upload_gbps"].get(kind):
            bad.append(f"{kind}: no cold upload figure")
        colds = [r for r in doc["raw"][kind]["runs"] if r.get("tag") == "cold"]
        if not colds or any(not r.get("sharing", {}).get("SHARE_STAGED") for r in colds):
            bad.append(f"{kind}: a cold run did not stage its misses")
    if not all(s["concurrent16"].get("gpt2", {}).get(k) for k in ("native_ms", "sage_ms")):
        bad.append("concurrent16: missing")
    if not all(s["small_hits"].get(k, {}).get("sage_ms") for k in SMALL_KINDS):
        bad.append("small_hits: missing")
    if not s["outputs_identical"] or doc["problems"]:
        bad.append(f"problems: {doc['problems']}")
    bad += check_warmup(doc)
    if doc.get("state") != "complete" or doc.get("missing"):
        bad.append(f"state {doc.get('state')!r}, missing {doc.get('missing')}")
    for b in bad:
        print("sharing-coverage dry run: " + b, file=sys.stderr)
    return 1 if bad else 0


def check_warmup(doc):
    """Every workload: the native reference first (unless its weights were made by this run: their
    generation warmed the page cache and wrote the byte code), then its cold run(s), one warm-up on the
    warm broker before any measured warm run, placement on in every SAGE run."""
    bad = []
    if doc["settings"].get("place") is not True:
        bad.append(f"settings.place {doc['settings'].get('place')!r}: the dry run runs with placement")
    for kind in KINDS:
        tags = [r.get("tag") for r in doc["raw"][kind]["runs"]]
        warm = [i for i, t in enumerate(tags) if t in ("warm", "concurrent-sage")]
        if tags[:2] != ["first", "cold"] and tags[:1] != ["cold"] or tags.count("warmup") != 1 or not warm or \
                tags.index("warmup") > warm[0]:
            bad.append(f"{kind}: runs in the order {tags}: want first, cold, one warm-up, then warm runs")
        if any(r.get("place") is not True for r in doc["raw"][kind]["runs"] if r.get("tag") not in
               ("first", "native", "concurrent-native")):
            bad.append(f"{kind}: a SAGE run without placement")
    return bad


def check_partial(out, cmd):
    """What a run that stops early leaves: CMD (a --fake run of one workload, writing to OUT as
    $OUT/sharing-coverage.json) with --budget 0 (nothing starts), then with many runs, stopped by
    SIGTERM to its process group (as `timeout` sends it) once its first measured step is written.
    Each must leave a valid document saying what is missing."""
    bad = []

    def doc_of(sub):
        try:
            with open(os.path.join(out, sub, "sharing-coverage.json")) as f:
                return json.load(f)
        except (OSError, ValueError):  # not written yet (a partial file is never there: atomic writes)
            return None
    for sub in ("budget", "signal"):  # an earlier run's document would be taken for this one's
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    p = subprocess.run(cmd + ["--budget", "0"], env=dict(os.environ, OUT=os.path.join(out, "budget")),
                       capture_output=True, text=True, timeout=60)
    doc = doc_of("budget")
    if p.returncode != 0 or not doc or br.check(doc) or not doc.get("state", "").startswith("partial") or \
            not any("skipped: time budget" in m for m in doc.get("missing", [])):
        bad.append(f"--budget 0: exit {p.returncode}, state {doc and doc.get('state')!r}, "
                   f"missing {doc and doc.get('missing')}: {p.stderr[-300:]}")
    proc = subprocess.Popen(cmd + ["--runs", "50"], env=dict(os.environ, OUT=os.path.join(out, "signal")),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline, doc, seen = time.monotonic() + 60, None, False
    while time.monotonic() < deadline and proc.poll() is None and not seen:
        doc = doc_of("signal")
        seen = bool(doc) and any(r.get("tag") == "cold" for w in doc["raw"].values() for r in w.get("runs", []))
        if not seen:
            time.sleep(0.05)  # polling the file the run writes after each step: no event to wait on
    if not seen:
        bad.append("no document written after the first measured step (written only at the end?)")
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it ended first: what it wrote is checked all the same
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    doc = doc_of("signal")
    if proc.returncode != 128 + signal.SIGTERM or not doc or br.check(doc) or \
            doc.get("state") != "interrupted by SIGTERM" or not doc.get("missing") or \
            not any(r.get("tag") == "cold" and "error" not in r for w in doc["raw"].values() for r in w["runs"]):
        bad.append(f"SIGTERM: exit {proc.returncode}, state {doc and doc.get('state')!r}, missing "
                   f"{doc and doc.get('missing')}, schema {doc and br.check(doc)}: {err[-300:]}")
    for b in bad:
        print("sharing-coverage partial: " + b, file=sys.stderr)
    if not bad:
        print("sharing-coverage partial: a budget of 0 and a SIGTERM each leave a valid document "
              f"({doc['missing'][0]})")
    return 1 if bad else 0


def selftest():
    raw = {}
    for kind in KINDS:
        runs = [{"tag": "native", "upload_ms": 100.0 + i, "checksum": "1"} for i in range(3)]
        runs += [{"tag": "warm", "upload_ms": 10.0 + i, "checksum": "1", "shared_fraction": 0.99,
                  "sharing": {"SHARE_NS_ASSEMBLE": 3e6, "SHARE_NS_ASSEMBLE_READ": 2e6, "SHARE_NS_BACK": 1e6,
                              "SHARE_NS_PREDICT_SETTLE": 1e6}}
                 for i in range(3)]
        runs += [{"tag": "cold", "upload_ms": 200.0, "upload_cpu_ms": 900.0, "htod_bytes": 6 << 30,
                  "sharing": {"SHARE_NS_STAGE_CPU": 8e8, "SHARE_STAGED": 1, "SHARE_NS_UPLOAD": 190e6,
                              "SHARE_NS_ALLOC": 4e6, "SHARE_NS_STAGE": 150e6, "SHARE_NS_STAGE_READY": 20e6,
                              "SHARE_NS_BROKER": 2e6, "SHARE_NS_REMAP": 3e6}} for _ in range(3)]
        runs += [{"tag": t, "upload_ms": 50.0} for t in ("concurrent-native", "concurrent-sage") for _ in range(4)]
        raw[kind] = {"runs": runs}
    raw["jax"] = {"runs": [], "skipped": "no jax workload"}
    a = argparse.Namespace(runs=3, quick=False, fake=True, only="", budget=1, cfunc_gib=1, llm_gib=1, concurrent=4,
                           concurrent_rounds=1)
    doc = document(a, raw, [], {k: None for k in br.MACHINE_KEYS})
    assert br.check(doc) == [], br.check(doc)
    s = doc["summary"]
    assert abs(s["cold_upload_gbps"]["cfunc"]["median"] - (6 << 30) / 2e8) < 0.01
    split = s["cold_upload_cpu"]["llm"]["accounted"]  # 190 in SAGE's calls: 175 in parts; 200 - 190 - 4 outside
    assert split["sage_unaccounted_ms"]["median"] == 15.0 and split["outside_sage_ms"]["median"] == 6.0, split
    assert "stage_ready_ms 20.0 ms" in table(doc)
    assert s["workloads"]["resnet50"]["shared_fraction"]["median"] == 0.99
    assert s["targets"]["resnet50 shared_fraction >= 0.98"] and s["targets"]["cfunc cold upload >= 25.0 GB/s"]
    assert s["small_hits"]["bert"]["native_ms"]["median"] == 101.0 and doc["workloads"]["jax"] == {"skipped": "no jax workload"}
    # A hit: its upload, then what the first launch waits for (assembly, backing, predicted runs), split too.
    assert s["small_hits"]["bert"]["sage_ms"]["median"] == 16.0, s["small_hits"]["bert"]
    assert s["small_hits"]["bert"]["first_launch_ms"]["predict_settle"]["median"] == 1.0
    assert s["small_hits"]["bert"]["first_launch_ms"]["read_back"]["median"] == 2.0
    assert "first launch: assembly 3.0 ms" in table(doc), table(doc)
    assert s["concurrent16"]["gpt2"]["sage_ms"]["n"] == 4 and "cold" in table(doc)
    assert s["targets"]["4 gpt2 at once no slower than native"] and s["outputs_identical"]
    assert "others_reading" not in s["concurrent16"]["gpt2"]["where"]["sage"]  # no rounds recorded: none
    # merge: each workload from the file that ran it; a partial part names its file, no empty timeline
    import contextlib
    import io
    import tempfile
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        parts = []
        for name, kinds_in, state in (("a", ("bert", "cfunc"), "partial: time budget"), ("g", ("gpt2",), "complete")):
            d = dict(doc, raw={k: (w if k in kinds_in else {"runs": [], "skipped": "not asked"})
                               for k, w in raw.items()}, state=state)
            parts.append(os.path.join(tmp, name + ".json"))
            with open(parts[-1], "w") as f:
                json.dump(d, f)
        assert merge(tmp, parts) == 0
        with open(os.path.join(tmp, "sharing-coverage.json")) as f:
            m = json.load(f)
    assert m["state"] == "partial (a.json: partial: time budget; g.json: complete)", m["state"]
    assert "state: partial (a.json" in table(m) and "written at" not in table(m), table(m)
    assert m["summary"]["concurrent16"]["gpt2"]["sage_ms"]["n"] == 4 and "resnet50" not in m["workloads"] or \
        m["workloads"]["resnet50"].get("skipped"), m["workloads"].get("resnet50")
    assert s["concurrent16"]["gpt2"]["first_result_ms"]["sage"] is None and "first result" not in table(doc)
    for r in raw["gpt2"]["runs"]:
        if r["tag"].startswith("concurrent"):
            r["first_result_ms"] = 900.0 if r["tag"] == "concurrent-sage" else 1000.0
    fr = report(raw, [])["concurrent16"]["gpt2"]["first_result_ms"]
    assert fr["sage"]["median"] == 900.0 and fr["native"]["n"] == 4, fr
    assert "start to first result: native 1000.0 ms" in table(document(a, raw, [], {k: None for k in br.MACHINE_KEYS}))
    # A --variant's SAGE processes at once: beside the default, not a target, its settings in the table.
    assert report(raw, [])["concurrent16"]["gpt2"]["variants"] == {}
    raw["gpt2"]["runs"] += [{"tag": "concurrent-sage-predict", "upload_ms": 40.0 + i, "first_result_ms": 800.0,
                             "sharing": {"SHARE_NS_BACK": 1e6, "SHARE_KEY_HELPERS": 3}} for i in range(3)]
    a.variants = [("predict", {"SAGE_SHARE_PREDICT": "1"})]
    doc = document(a, raw, [], {k: None for k in br.MACHINE_KEYS})
    v = doc["summary"]["concurrent16"]["gpt2"]["variants"]["predict"]
    assert v["sage_ms"]["median"] == 42.0 and v["first_result_ms"]["n"] == 3 and v["where"]["key_helpers"]["max"] == 3, v
    assert doc["summary"]["concurrent16"]["gpt2"]["sage_ms"]["n"] == 4  # the default's samples, not the variant's
    assert "SAGE with predict (SAGE_SHARE_PREDICT=1): 42.0 ms" in table(doc) and br.check(doc) == [], table(doc)
    assert variant("predict:SAGE_SHARE_PREDICT=1,SAGE_X=a=b") == ("predict", {"SAGE_SHARE_PREDICT": "1", "SAGE_X": "a=b"})
    for bad in ("predict", "Predict:SAGE_A=1", "p:LD_PRELOAD=x", "p:SAGE_A", "p:"):
        try:
            variant(bad)
            raise AssertionError(bad)
        except argparse.ArgumentTypeError:
            pass
    raw["gpt2"]["runs"] = [r for r in raw["gpt2"]["runs"] if r["tag"] != "concurrent-sage-predict"]
    a.variants = []
    # A round at once: a's upload (at 1110) meets b reading (105-2105); b's (2115) none; c's (220) both.
    rnd = [dict(tag="concurrent-sage", batch=1, start_ms=t, import_ms=100.0, read_ms=rd, setup_ms=10.0,
                upload_ms=50.0, sharing={"SHARE_NS_BACK": 2e6}) for t, rd in ((0.0, 1000.0), (5.0, 2000.0), (10.0, 100.0))]
    other = dict(rnd[2], batch=2, start_ms=0.0)  # alone in its round: nothing to meet
    late = [dict(rnd[0], main_ms=1000.0), rnd[1]]  # a's interpreter took 1 s: its upload (2110) after b's reading
    assert [n for n, _ in others_reading(late, "concurrent-sage")] == [0, 0]
    assert others_reading(rnd + [other, dict(rnd[0], tag="concurrent-native")], "concurrent-sage") == \
        [(1, 52.0), (0, 52.0), (2, 52.0), (0, 52.0)]
    # c set up for 1 s (210-1210): a's upload (1110) meets it setting up, b reading; c's (1210) b reading
    su = [dict(r) for r in rnd]
    su[2]["setup_ms"] = 1000.0
    assert [(n, u) for n, u, _, _ in at_upload(su, "concurrent-sage")] == [(1, 1), (0, 0), (1, 0)]
    assert remap_of(su) == "" and remap_of([{"sharing": {"SHARE_NS_REMAP": 3e6}}]) == " (remap 3.0 ms)"
    # An older document (no batch, no start_ms): rounds told by order, each process at its round's start.
    import contextlib
    import io
    import tempfile
    old = [{k: v for k, v in r.items() if k not in ("batch", "start_ms")} for r in rnd]
    old[1]["upload_cpu_ms"] = 7.0  # b's upload, the one no other reading meets: the none-reading line
    with tempfile.NamedTemporaryFile("w", suffix=".json") as tmp, contextlib.redirect_stdout(io.StringIO()) as out:
        json.dump({"settings": {"concurrent": 3}, "raw": {"gpt2": {"runs": old + [dict(old[0], batch=None)]}}}, tmp)
        tmp.flush()
        assert reading([tmp.name]) == 0
    # a (1110) meets b (reading 100-2100, at its round's start now), b none, c (210) both; the 4th alone: 1, 0, 2, 0
    assert "sage   others reading 0.5 [0.0-2.0] n=4; none reading 52.0 ms [52.0-52.0] n=2; some reading 52.0 ms " \
        "[52.0-52.0] n=2 (rounds by order" in out.getvalue(), out.getvalue()
    assert "    none reading: upload_cpu_ms 7.0\n" in out.getvalue() and "some reading: upload" not in out.getvalue()
    assert "    by others reading: 0-0 52.0 ms n=2, 1-3 52.0 ms n=2\n" in out.getvalue(), out.getvalue()
    assert "    by others setting up: 0-0 52.0 ms n=4\n" in out.getvalue(), out.getvalue()
    w = where_waited([dict(rnd[0], sharing={"SHARE_KEY_HELPERS": 7, "SHARE_NS_KEY_TAIL": 3e6,
                                            "SHARE_NS_KEY_CPU": 4e6, "SHARE_NS_UPLOAD_CPU": 5e6})])["sage"]
    assert w["key_helpers"]["max"] == 7 and w["key_tail_ms"]["max"] == 3.0 and w["key_cpu_ms"]["max"] == 4.0, w
    assert w["upload_calls_cpu_ms"]["max"] == 5.0 and w["alloc_cpu_ms"] is None, w  # a counter missing: no figure
    assert w["premade"] is None  # a libsage without the counter: no figure
    made = where_waited([dict(rnd[0], sharing={"SHARE_PREMADE": 6, "SHARE_PREMADE_TAKEN": 5})])["sage"]
    assert made["premade"]["max"] == 6 and made["premade_taken"]["max"] == 5, made
    w = where_waited(rnd)["sage"]
    assert w["others_reading"]["max"] == 2 and w["ms_none_reading"]["n"] == 1 and w["ms_some_reading"]["n"] == 2, w
    raw["bert"]["runs"].insert(0, {"tag": "cold", "upload_ms": 1.0, "checksum": "2"})  # SAGE first: still caught
    assert mismatches(raw) == ["bert cold: output 2 differs from native's 1"], mismatches(raw)
    raw["bert"]["runs"].pop(0)
    # The call after the idleness: compared with native's own second call.
    raw["bert"]["runs"][0].update(again_checksum="3", again_ms=5.0)
    raw["bert"]["runs"][3].update(again_checksum="4", again_ms=6.0)
    assert mismatches(raw) == ["bert warm: output after idleness 4 differs from native's 3"], mismatches(raw)
    raw["bert"]["runs"][3]["again_checksum"] = "3"
    assert report(raw, [])["small_hits"]["bert"]["after_idle"]["sage_again_ms"]["median"] == 6.0 and not mismatches(raw)
    # --quick: gpt2's fraction from its SAGE processes at once (no rounds alone).
    raw["gpt2"]["runs"] = [r for r in raw["gpt2"]["runs"] if r["tag"] != "warm"]
    raw["gpt2"]["runs"] += [{"tag": "concurrent-sage", "upload_ms": 50.0, "shared_fraction": 0.97}]
    assert report(raw, [])["workloads"]["gpt2"]["shared_fraction"]["median"] == 0.97
    import sharing_coverage_runner as runner
    a.quick, a.runs, a.concurrent_rounds = True, 2, 1
    want = runner.plan(a)
    assert want["gpt2"]["rounds"] == 0 and want["gpt2"]["concurrent"] == 1 and want["cfunc"]["cold"] == 2
    assert want["bert"]["rounds"] == 2 and want["jax"]["rounds"] == 1 and want["bert"]["concurrent"] == 0
    # --quick's plan (sharing-coverage.sh: --runs 1, deadline 110 + 30 s) fits, with ~10 s for nvcc + byte code.
    a.runs, a.concurrent = 1, 8
    lines, total = runner.expected(a, runner.plan(a), list(KINDS))
    assert total + 10 <= 110 + 30 and len(lines) == len(KINDS) + 1, (total, lines)
    # The jax function without jax (CI): exit 77 and the reason, which the harness records as a skip.
    if importlib.util.find_spec("jax") is None:
        p = subprocess.run([sys.executable, os.path.join(HERE, "suite_jax.py"), "run", "/nonexistent.npy"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 77 and parse_record(p.stdout, "SAGE_BENCH_SKIP").startswith("jax not installed"), \
            (p.returncode, p.stdout, p.stderr)
    print("sharing_coverage selftest: ok")
    return 0


def main(argv):
    if len(argv) >= 2 and argv[1] == "run":
        return run(argv[2:])
    if len(argv) == 3 and argv[1] == "check-dry-run":
        return check_dry_run(argv[2])
    if len(argv) >= 4 and argv[1] == "merge":
        return merge(argv[2], argv[3:])
    if len(argv) >= 4 and argv[1] == "check-partial":
        return check_partial(argv[2], argv[3:])
    if len(argv) >= 3 and argv[1] == "reading":
        return reading(argv[2:])
    if len(argv) == 3 and argv[1] == "check-variant":  # sharing-coverage.sh, before it builds anything
        try:
            variant(argv[2])
            return 0
        except argparse.ArgumentTypeError as e:
            print(f"sharing-coverage: --variant {e}", file=sys.stderr)
            return 2
    if len(argv) == 2 and argv[1] == "selftest":
        return selftest()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

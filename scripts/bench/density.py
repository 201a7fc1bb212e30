"""Sharing-based memory benchmark of SAGE: driver and report (scripts/bench/density.sh).

    density.py run [options]       run the phases (density.sh passes the options)
    density.py report FILE.json    re-print the table of a density.json
    density.py selftest            check the pure-logic parts (no GPU needed)

Workloads: cfunc (share_cfunc.cu: one file, one cudaMemcpy, a checksum
kernel), llm (suite_fn.py llm: an fp16 safetensors state dict of --llm-gib),
resnet50 and gpt2 (suite_fn.py: real architectures). Per workload, with a
fresh broker (saged) that then holds only that workload's weights:

  seq      the function started N times in sequence, native and SAGE
           interleaved (SAGE invocation 1 is cold: it hashes, copies and
           publishes at exit; later ones should hit and map)
  conc     C instances started at once (--hold / suite_fn hold), native, then
           SAGE: per-instance upload, wall to all ready, GPU memory per
           instance (nvidia-smi memory.used delta / C, and per process)
  density  instances started one after another (in waves while the GPU
           memory estimate leaves room, one by one near the limit), each
           kept resident, until one fails, the cap, the host-memory guard
           or the time budget; SAGE with the broker up, then native with the
           broker stopped (its extents would take native's memory)

SAGE = LD_PRELOAD=libsage.so SAGE_SHARE=1 SAGE_SOCKET=<sock> (+ SAGE_TRACE
per invocation in seq/conc: otherData.stats gives SHARE_BYTES_MAPPED,
SHARE_BYTES_COPIED, SHARE_HITS, ...; absent keys are reported n/a).
Standard library only; matplotlib (optional) for density.png.

density.json (bench_result's schema): machine (gpu, driver, cpus, date, commit, torch), settings
(counts per workload, files, budget, SAGE environment), summary (per
workload: the table's figures, each with n, median, min, max), phases (per workload: conc/density per
mode, broker stats), checks (problems, checksum basis, tally), skipped,
notes, records (one per process: wl, mode, phase, idx, ok, rc, error,
wall_ms = process start to exit (holders: including the hold), ready_ms,
the function's SAGE_BENCH fields, peak_rss_mib, peak_anon_mib, smi_mib,
sage_stats = the trace's otherData.stats or null).
"""

# The command line and the results file; the work is in its siblings
# (imported as scripts/bench is this script's directory):
#   density_runner.py  Runner: the phases, processes, broker, GPU memory
#   density_report.py  pure logic: counts, checks, summary, table, plot, selftest
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import bench_result
from density_report import ORDER, check, parse_counts, plot, selftest, summarize, table
from density_runner import HOST_RESERVE_MIB, WEIGHTS, Runner, meminfo_mib


def machine(a):
    """bench_result's machine (the one schema), plus what density needs."""
    nvcc = os.environ.get("NVCC") or shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    return dict(bench_result.machine(a.gpu_index, nvcc), host_memory_mib=meminfo_mib("MemTotal"))


def run(a):
    here = os.path.dirname(os.path.abspath(__file__))
    a.suite_fn = a.suite_fn or os.path.join(here, "suite_fn.py")
    files = {}
    for item in a.file:
        wl, _, path = item.partition("=")
        files[wl] = path
    a.files = files
    wanted = [w for w in (a.workloads or ",".join(ORDER)).split(",") if w]
    bad = [w for w in wanted if w not in ORDER]
    if bad:
        print(f"density: unknown workload(s) {bad} (known: {','.join(ORDER)})", file=sys.stderr)
        return 2
    notes = list(a.note or [])
    wls = []
    for w in ORDER:
        if w not in wanted:
            continue
        if not files.get(w) or not os.path.exists(files[w]):
            notes.append(f"{w}: skipped, no weight file")
            continue
        wls.append(w)
    a.workloads = wls
    try:
        a.counts = parse_counts(a.counts_spec, a.quick, wls)
    except ValueError as e:
        print(f"density: {e}", file=sys.stderr)
        return 2
    os.makedirs(a.logs, exist_ok=True)
    a.traces = os.path.join(a.logs, "traces")
    os.makedirs(a.traces, exist_ok=True)
    runner = Runner(a)
    runner.notes += notes

    def on_signal(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    interrupted = False
    mach = machine(a)
    runner.say(f"{mach['gpu']} (driver {mach['driver']}), {mach['cpus']} CPUs; workloads {','.join(wls) or '-'}; "
               f"budget {a.budget or 'none'} s from the start of density.sh")
    try:
        runner.run_all()
    except KeyboardInterrupt:
        interrupted = True
        runner.skipped.append("interrupted (SIGINT/SIGTERM): the rest was not run")
    finally:
        runner.shutdown()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    expect = {"cfunc": a.cfunc_expect} if a.cfunc_expect else {}
    problems, basis, tally = check(runner.records, expect)
    torch_v = next((r.get("torch") for r in runner.records if r.get("torch")), None)
    if torch_v:
        mach["torch"] = torch_v
    settings = {"quick": a.quick, "budget_s": a.budget, "workloads": wls, "counts": a.counts,
                        "files": {w: {"path": files[w], "bytes": os.path.getsize(files[w])} for w in wls},
                        "cfunc_source": "read" if a.cfunc_read else "mmap", "gpu_index": a.gpu_index,
                        "libsage": a.libsage, "saged": a.saged, "sagectl": a.sagectl,
                        "sage_env": {"LD_PRELOAD": a.libsage, "SAGE_SHARE": "1", "SAGE_SOCKET": a.socket,
                                     "SAGE_TRACE": "seq/conc only: <logs>/traces/WL-PHASE-sage-IDX-%p.json",
                                     **{k: v for k, v in os.environ.items() if k.startswith("SAGE_")
                                        and k not in ("SAGE_TRACE", "SAGE_SOCKET", "SAGE_SHARE")}},
                        "host_reserve_mib": HOST_RESERVE_MIB, "weights": WEIGHTS, "logs": a.logs,
                        "python": a.python, "suite_fn": a.suite_fn}
    details = {"phases": runner.phases, "checks": {"problems": problems, "basis": basis, "tally": tally},
               "skipped": runner.skipped, "notes": runner.notes, "interrupted": interrupted,
               "elapsed_s": round(time.time() - runner.t_start, 1), "records": runner.records}
    summary = summarize(dict(details, settings=settings))
    doc = bench_result.result("density", mach, settings, summary, **details)
    out_dir = a.out or a.logs
    os.makedirs(out_dir, exist_ok=True)
    try:
        png, why = plot(doc, out_dir)
    except Exception as e:  # noqa: BLE001 - a plot must not cost the results
        png, why = None, f"no plot: {type(e).__name__}: {e}"
    doc["plot"] = os.path.basename(png) if png else why
    text = table(doc)
    bench_result.write(out_dir, doc, text)
    print(text)
    print(f"\ndensity: {os.path.join(out_dir, 'density.json')}" + (f", {png}" if png else f" ({why})")
          + f"; logs {a.logs}; {doc['elapsed_s']} s in all", flush=True)
    if interrupted:
        return 130
    return 1 if problems else 0


def main(argv):
    if len(argv) == 2 and argv[1] == "selftest":
        return selftest()
    if len(argv) == 3 and argv[1] == "report":
        with open(argv[2]) as f:
            try:
                print(table(json.load(f)))
            except BrokenPipeError:
                pass
        return 0
    if len(argv) < 2 or argv[1] != "run":
        print(__doc__, file=sys.stderr)
        return 2
    ap = argparse.ArgumentParser(prog="density.py run")
    ap.add_argument("--libsage", required=True)
    ap.add_argument("--saged", required=True)
    ap.add_argument("--sagectl", default="")
    ap.add_argument("--socket", required=True)
    ap.add_argument("--pidfile", default="", help="where the broker's pid is kept (density.sh's safety net)")
    ap.add_argument("--cfunc-bin", default="")
    ap.add_argument("--cfunc-read", action="store_true")
    ap.add_argument("--cfunc-expect", default="", help="checksum printed by share_cfunc --gen")
    ap.add_argument("--file", action="append", default=[], help="WL=PATH of a workload's weights")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--suite-fn", default="")
    ap.add_argument("--workloads", default="")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--budget", type=float, default=0, help="seconds from --t-start; 0: none")
    ap.add_argument("--t-start", type=float, default=0)
    ap.add_argument("--counts", dest="counts_spec", default="")
    ap.add_argument("--gpu-index", type=int, default=0)
    ap.add_argument("--logs", required=True)
    ap.add_argument("--out", default="")
    ap.add_argument("--note", action="append", default=[])
    return run(ap.parse_args(argv[2:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))

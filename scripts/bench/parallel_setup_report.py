"""Report of scripts/bench/parallel-setup.sh: reads its logs (paths and
settings in BENCH_* environment variables), checks every run (exit status,
process count, libsage loaded or not as the mode says, checksums), prints the
table and writes $OUT/parallel-setup.json and .txt. Exit 1 if any check
failed. Standard library only."""
import json
import os
import statistics
import sys

import bench_result

e = os.environ
logs = e["BENCH_LOGS"]
workloads = e["BENCH_WORKLOADS"].split()
conc = {"c1": 1, "py1": 1, "c8": 8, "py8": 8, "ctx": 1}
runs = int(e["BENCH_RUNS"])
wl_runs = {"c1": int(e.get("BENCH_RUNS_c1") or runs), "py1": int(e.get("BENCH_RUNS_py1") or runs),
           "c8": int(e.get("BENCH_RUNS_c8") or runs),
           "py8": int(e.get("BENCH_RUNS_py8") or 0), "ctx": int(e["BENCH_RUNS_ctx"])}
modes = {w: e.get(f"BENCH_MODES_{w}", "").split() for w in conc}
problems = []      # failed runs
mismatches = []    # checksum disagreements


def load_json(path):
    try:
        with open(path) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None


gen_c = load_json(f"{logs}/gen-c.json") or {}
gen_py = load_json(f"{logs}/gen-py.json") or {}


def read_run(wl, mode, run):
    base = f"{logs}/{wl}.{mode}.{run}"
    rec = {"run": run, "mode": mode, "rc": None, "wall_ms": None, "procs": [], "ok": False, "error": ""}
    try:
        with open(base + ".status") as f:
            rc, wall_us = f.read().split()
        rec["rc"], rec["wall_ms"] = int(rc), int(wall_us) / 1000.0
    except (OSError, ValueError):
        rec["error"] = "not run"
        return rec
    try:
        with open(base + ".jsonl") as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        rec["procs"].append(json.loads(line))
                    except ValueError:
                        pass
    except OSError:
        pass
    errs = []
    if rec["rc"] != 0:
        tail = ""
        try:
            with open(base + ".stderr") as f:
                lines = [ln.strip() for ln in f if ln.strip()]
            own = [ln for ln in lines if not ln.startswith("startup_launch:")]
            tail = (own or lines or [""])[-1]
        except OSError:
            pass
        errs.append(f"rc {rec['rc']}" + (f": {tail}" if tail else ""))
    if len(rec["procs"]) != conc[wl]:
        errs.append(f"{len(rec['procs'])} of {conc[wl]} processes reported")
    want_sage = mode != "native"
    bad = [p.get("pid") for p in rec["procs"] if p.get("sage_loaded") != want_sage]
    if bad:
        errs.append(f"libsage {'NOT loaded' if want_sage else 'loaded'} in pids {bad}")
    if any(not p.get("t0_given") for p in rec["procs"]):
        errs.append("launcher timestamp missing")
    rec["error"] = "; ".join(errs)
    rec["ok"] = not errs
    return rec


raw = {}
for wl in workloads:
    raw[wl] = {}
    for mode in modes[wl]:
        recs = []
        first = 0 if (wl == "c1" and mode in ("native", "sage")) or (wl == "py1" and mode == "native") else 1
        for run in range(first, wl_runs[wl] + 1):
            rec = read_run(wl, mode, run)
            rec["warmup"] = run == 0
            if not rec["ok"]:
                problems.append(f"{wl} {mode} run {run}{' (warm-up)' if run == 0 else ''}: {rec['error']}")
            recs.append(rec)
        raw[wl][mode] = recs

# ---------------------------------------------------------------- checksums
reference = {}
for wl in workloads:
    for mode in modes[wl]:
        for rec in raw[wl][mode]:
            for p in rec["procs"]:
                where = f"{wl} {mode} run {rec['run']} pid {p.get('pid')}"
                cs = p.get("checksum")
                if wl in ("c1", "c8"):
                    if gen_c.get("checksum") and cs != gen_c["checksum"]:
                        mismatches.append(f"{where}: checksum {cs} != expected {gen_c['checksum']}")
                    continue
                if wl in ("py1", "py8") and gen_py.get("weights_checksum") and \
                        p.get("weights_checksum") != gen_py["weights_checksum"]:
                    mismatches.append(f"{where}: weights on GPU {p.get('weights_checksum')} "
                                      f"!= file {gen_py['weights_checksum']}")
                if wl == "ctx" and p.get("verified") != p.get("iterations"):
                    mismatches.append(f"{where}: {p.get('verified')} of {p.get('iterations')} iterations verified")
                fam = "py" if wl.startswith("py") else wl
                # The first native result is the reference; any other result must equal it.
                if mode == "native" and fam not in reference:
                    reference[fam] = (cs, where)
# second pass, now that the native reference exists
for wl in workloads:
    if wl in ("c1", "c8"):
        continue
    fam = "py" if wl.startswith("py") else wl
    if fam not in reference:
        continue
    ref, ref_where = reference[fam]
    for mode in modes[wl]:
        for rec in raw[wl][mode]:
            for p in rec["procs"]:
                if p.get("checksum") != ref:
                    mismatches.append(f"{wl} {mode} run {rec['run']} pid {p.get('pid')}: output checksum "
                                      f"{p.get('checksum')} != native {ref} ({ref_where})")

# ---------------------------------------------------------------- metrics


def one(key):
    return lambda rec: rec["procs"][0][key]


def across(key, how):
    return lambda rec: how([p[key] for p in rec["procs"]])


def sub(key, stat):
    return lambda rec: rec["procs"][0][key][stat]


def wall(rec):
    return rec["wall_ms"]


c_mib = int(e.get("BENCH_C_MIB", "2048"))
c_size = f"{c_mib / 1024:g} GiB" if c_mib >= 1024 else f"{c_mib} MiB"
ROWS = {
    "c1": [("exec -> main()", one("main_ms")),
           (f"read {c_size} file", one("read_ms")),
           ("GPU setup: cudaFree(0)", one("setup_ms")),
           (f"upload {c_size}", one("upload_ms")),
           ("checksum kernel", one("kernel_ms")),
           ("exec -> 1st kernel done", one("first_kernel_ms")),
           ("exec -> end of main", one("total_ms")),
           ("process wall incl. exit", wall)],
    "py1": [("exec -> script start", one("main_ms")),
            ("import torch", one("import_ms")),
            ("load safetensors", one("read_ms")),
            ("GPU setup: init+zeros", one("setup_ms")),
            ("upload state dict", one("upload_ms")),
            ("forward pass", one("kernel_ms")),
            ("exec -> 1st kernel done", one("first_kernel_ms")),
            ("exec -> end of script", one("total_ms")),
            ("process wall incl. exit", wall)],
    "c8": [("GPU setup, median proc", across("setup_ms", statistics.median)),
           ("GPU setup, max proc", across("setup_ms", max)),
           ("read file, median proc", across("read_ms", statistics.median)),
           ("1st kernel, median proc", across("first_kernel_ms", statistics.median)),
           ("1st kernel, last proc", across("first_kernel_ms", max)),
           ("batch wall incl. exit", wall)],
    "ctx": [("cycle, median iteration", sub("cycle", "median")),
            ("cycle, min iteration", sub("cycle", "min")),
            ("cuCtxCreate, median", sub("create", "median")),
            ("cuCtxDestroy, median", sub("destroy", "median")),
            ("alloc+copy+kernel, median", sub("work", "median")),
            ("cycle, 1st iteration", sub("cycle", "first")),
            ("cuCtxCreate, 1st iteration", sub("create", "first")),
            ("cuInit (before loop)", one("init_ms")),
            ("process wall incl. exit", wall)],
}
ROWS["py8"] = [("GPU setup, median proc", across("setup_ms", statistics.median)),
               ("GPU setup, max proc", across("setup_ms", max)),
               ("import torch, median proc", across("import_ms", statistics.median)),
               ("1st kernel, median proc", across("first_kernel_ms", statistics.median)),
               ("1st kernel, last proc", across("first_kernel_ms", max)),
               ("batch wall incl. exit", wall)]

TITLES = {
    "c1": f"(a) C function: read {c_size} weights, cudaFree(0), upload, kernel (1 process)",
    "py1": "(b) PyTorch function: import, load 1 GiB safetensors, cuda init, upload, forward (1 process)",
    "c8": "(c) 8 concurrent starts of (a)",
    "py8": "(c) 8 concurrent starts of (b)",
    "ctx": f"(d) warm container: {e.get('BENCH_ITERS', '?')} x (cuCtxCreate .. cuCtxDestroy) in one process",
}
LABEL = {"native": "native", "sage": "SAGE", "sage_eager": "SAGE eager", "sage_auto": "SAGE auto",
         "sage_off": "SAGE off", "sage_noredir": "no redir"}


stats = bench_result.stats  # every figure: n, median, min, max


summary = {}
for wl in workloads:
    summary[wl] = {}
    for mode in modes[wl]:
        good = [r for r in raw[wl][mode] if r["ok"] and not r["warmup"]]
        summary[wl][mode] = {"runs_ok": len(good), "runs": wl_runs[wl]}
        for label, fn in ROWS[wl]:
            vals = []
            for r in good:
                try:
                    v = fn(r)
                except (KeyError, IndexError, TypeError, ValueError):
                    continue
                if v is not None:
                    vals.append(float(v))
            summary[wl][mode][label] = stats(vals)


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


machine = bench_result.machine(nvcc=e.get("BENCH_NVCC"))
out = []
out.append(f"parallel setup, ms: median [min-max] over runs; x = mode/native of medians; "
           f"{machine['gpu'] or '?'}, driver {machine['driver'] or '?'}, {machine['cpus']} CPUs")
for wl in workloads:
    ms_ = modes[wl]
    s = summary[wl]
    out.append("")
    ok = ", ".join(f"{LABEL[m]} {s[m]['runs_ok']}/{s[m]['runs']}" for m in ms_)
    out.append(f"{TITLES[wl]}   [runs ok: {ok}]")
    head = f"  {'':<27}"
    for i, m in enumerate(ms_):
        w = 20 if i < 2 else 9
        head += f" {LABEL[m]:>{w}}"
        if i:
            head += f" {'x':>6}"
    out.append(head)
    for label, _ in ROWS[wl]:
        line = f"  {label:<27}"
        nat = s[ms_[0]][label]
        for i, m in enumerate(ms_):
            st = s[m][label]
            if i < 2:
                cell = "FAIL" if st is None else f"{fmt(st['median'])} [{fmt(st['min'])}-{fmt(st['max'])}]"
                line += f" {cell:>20}"
            else:
                line += f" {'FAIL' if st is None else fmt(st['median']):>9}"
            if i:
                r = None if (st is None or nat is None or nat["median"] <= 0) else st["median"] / nat["median"]
                ratio = "-" if r is None else f"{r:.2f}" if r >= 0.1 else f"{r:.3f}"
                line += f" {ratio:>6}"
        out.append(line)
notes = []
if "c1" in workloads:
    notes.append("the weight files are read from the page cache (generated just before; not dropped).")
if "py1" in workloads:
    notes.append("PyTorch: under SAGE auto, python carries no CUDA code at load, so the warm-up starts at its own cuInit.")
if "ctx" in workloads:
    notes.append("(d): SAGE off = SAGE_WARMUP=off (redirect still on); no redir = SAGE_CTX_REDIRECT=0.")
if e.get("BENCH_STOPPED"):
    notes.insert(0, "time budget: " + e["BENCH_STOPPED"] + ".")
out.append("")
for n in notes:
    out.append("note: " + n)
if mismatches:
    out.append("")
    out.append("!!!!!!!! CHECKSUM MISMATCH !!!!!!!!")
    groups = {}
    for m in mismatches:
        groups.setdefault(" ".join(m.split()[:2]), []).append(m)
    for key, items in groups.items():
        out.append(f"!!! MISMATCH {key}: {len(items)} process(es), e.g. {items[0]}")
else:
    nproc = sum(len(r["procs"]) for wl in workloads for m in modes[wl] for r in raw[wl][m])
    out.append(f"checksums: no mismatch among the {nproc} process results (vs expected / native)")
for p in problems[:12]:
    out.append("FAILED: " + p)
if len(problems) > 12:
    out.append(f"FAILED: ... and {len(problems) - 12} more (see the JSON)")
text = "\n".join(out)
print()
print(text)

doc = bench_result.result(
    "parallel-setup", machine,
    {"runs": runs, "runs_per_workload": {w: wl_runs[w] for w in workloads}, "libsage": e.get("BENCH_LIBSAGE"),
     "quick": e.get("BENCH_QUICK") == "1", "stopped": e.get("BENCH_STOPPED") or None,
     "ctx_iterations": int(e.get("BENCH_ITERS") or 0), "c_weights_mib": c_mib,
     "modes": {w: modes[w] for w in workloads},
     "page_cache": "weight files are page-cached (written just before the runs)"},
    summary,
    generated={"c": gen_c, "torch": gen_py}, elapsed_s=int(e.get("BENCH_ELAPSED") or 0), problems=problems,
    mismatches=mismatches, raw=raw, table=text)
if e.get("BENCH_OUT"):
    print("wrote", bench_result.write(e["BENCH_OUT"], doc, text))
sys.exit(1 if problems or mismatches else 0)

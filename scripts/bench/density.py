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

density.json: machine (gpu, driver, cpus, date, commit, torch), settings
(counts per workload, files, budget, SAGE environment), summary (per
workload: the table's figures), phases (per workload: conc/density per
mode, broker stats), checks (problems, checksum basis, tally), skipped,
notes, records (one per process: wl, mode, phase, idx, ok, rc, error,
wall_ms = process start to exit (holders: including the hold), ready_ms,
the function's SAGE_BENCH fields, peak_rss_mib, peak_anon_mib, smi_mib,
sage_stats = the trace's otherData.stats or null).
"""
import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

ORDER = ("cfunc", "llm", "resnet50", "gpt2")  # run order (cheap and central first)
PY_WLS = ("llm", "resnet50", "gpt2")
MODES = ("native", "sage")
COUNT_KEYS = ("seq_native", "seq_sage", "conc", "cap", "wave")
COUNTS = {
    False: {  # default run (about 8 minutes with --budget 470)
        "cfunc": {"seq_native": 8, "seq_sage": 16, "conc": 16, "cap": 160, "wave": 16},
        "llm": {"seq_native": 3, "seq_sage": 8, "conc": 16, "cap": 48, "wave": 8},
        "resnet50": {"seq_native": 3, "seq_sage": 4, "conc": 16, "cap": 48, "wave": 16},
        "gpt2": {"seq_native": 2, "seq_sage": 4, "conc": 16, "cap": 48, "wave": 16},
    },
    True: {  # --quick (about 4 minutes with --budget 230)
        "cfunc": {"seq_native": 4, "seq_sage": 8, "conc": 8, "cap": 64, "wave": 16},
        "llm": {"seq_native": 2, "seq_sage": 4, "conc": 8, "cap": 24, "wave": 8},
        "resnet50": {"seq_native": 2, "seq_sage": 3, "conc": 8, "cap": 16, "wave": 8},
        "gpt2": {"seq_native": 1, "seq_sage": 3, "conc": 4, "cap": 16, "wave": 8},
    },
}
# Share of the time left that each workload may use (what one leaves, the next gets).
WEIGHTS = {"cfunc": 0.22, "llm": 0.42, "resnet50": 0.13, "gpt2": 0.23}
# Guesses of one invocation's wall time before the first one is measured (s).
EST_RUN_S = {"cfunc": 2.0, "llm": 8.0, "resnet50": 7.0, "gpt2": 18.0}
# Guesses of the host memory (anonymous) one starting instance needs, MiB.
EST_ANON_MIB = {"cfunc": 512, "llm": 8192, "resnet50": 3072, "gpt2": 4096}
# libsage counters summed per workload over its SAGE sequential invocations (absent ones: n/a).
STAT_KEYS = ("SHARE_HITS", "SHARE_MISSES", "SHARE_BYTES_MAPPED", "SHARE_BYTES_COPIED", "SHARE_PUBLISHED",
             "SHARE_FALLBACKS", "SHARE_ALLOCS", "SHARE_FILE_KEYS", "SHARE_UNSHARED", "SHARE_ASSEMBLED",
             "SHARE_ASSEMBLED_HITS", "SHARE_BYTES_ASSEMBLED", "SHARE_GUARD_UNSHARED")
HOST_RESERVE_MIB = 8192


# ---------------------------------------------------------------- pure logic
def median(values):
    s = sorted(float(v) for v in values if v is not None)
    n = len(s)
    if n == 0:
        return None
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0


def parse_counts(spec, quick, wls):
    """COUNTS for the mode, overridden by SPEC 'wl.key=N,all.key=N,...'."""
    counts = {w: dict(COUNTS[quick][w]) for w in wls}
    for item in filter(None, (x.strip() for x in (spec or "").split(","))):
        m = re.fullmatch(r"(\w+)\.(\w+)=(\d+)", item)
        if not m or m.group(2) not in COUNT_KEYS or (m.group(1) != "all" and m.group(1) not in ORDER):
            raise ValueError(f"--counts: bad item '{item}' (want WL.KEY=N, WL in all,{','.join(ORDER)}, "
                             f"KEY in {','.join(COUNT_KEYS)})")
        for w in wls if m.group(1) == "all" else [m.group(1)]:
            if w in counts:
                counts[w][m.group(2)] = int(m.group(3))
    for w in counts:
        counts[w]["wave"] = max(1, counts[w]["wave"])
    return counts


def parse_bench(text):
    """The `SAGE_BENCH {json}` records of a function's stdout."""
    out = []
    for line in text.splitlines():
        if line.startswith("SAGE_BENCH "):
            try:
                d = json.loads(line[len("SAGE_BENCH "):])
            except ValueError:
                continue
            if isinstance(d, dict):
                out.append(d)
    return out


def trace_stats(path):
    """libsage's counters (otherData.stats) of a trace dump, or None."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > (16 << 20):  # a big dump: the counters are in its last bytes
                f.seek(size - (1 << 20))
            raw = f.read()
    except OSError:
        return None
    try:
        stats = json.loads(raw)["otherData"]["stats"]
        if isinstance(stats, dict):
            return {k: v for k, v in stats.items() if isinstance(v, (int, float))}
    except (ValueError, KeyError, TypeError):
        pass
    # A big, damaged or truncated dump: the counters are near its end.
    i = raw.rfind(b'"stats":{')
    if i < 0:
        return None
    return {m.group(1).decode(): int(m.group(2)) for m in re.finditer(rb'"([A-Z_0-9]+)":(\d+)', raw[i:])}


def shared_fraction(stats_list):
    """(shared, copied, fraction) summed over the stats given; None where
    the counters are absent (older libsage) or nothing was uploaded.
    Shared = upload bytes served by mapping + copied upload bytes that
    assembly then mapped (SHARE_BYTES_ASSEMBLED, part of COPIED too);
    fraction = shared / all upload bytes (MAPPED + COPIED)."""
    have = [s for s in stats_list if s and "SHARE_BYTES_MAPPED" in s and "SHARE_BYTES_COPIED" in s]
    if not have:
        return None, None, None
    mapped = sum(int(s["SHARE_BYTES_MAPPED"]) for s in have)
    copied = sum(int(s["SHARE_BYTES_COPIED"]) for s in have)
    shared = mapped + sum(int(s.get("SHARE_BYTES_ASSEMBLED", 0)) for s in have)
    return shared, copied, (shared / (mapped + copied) if mapped + copied else None)


def extrapolate(total_mib, base_mib, per_instance_mib):
    """GPU-memory-bound instance count: (total - base) / per instance."""
    if not total_mib or base_mib is None or not per_instance_mib or per_instance_mib <= 0:
        return None
    return int(max(0, total_mib - base_mib) // per_instance_mib)


def next_wave(ready, cap, wave_max, free_mib, per_mib, host_room):
    """How many instances to start next in the density phase: waves of up to
    wave_max while the GPU estimate leaves room (3/4 of what should fit),
    one at a time near the limit, or when nothing is known yet."""
    w = min(wave_max, cap - ready, host_room)
    if per_mib is None or per_mib <= 0 or free_mib is None:
        return max(0, min(w, 1 if ready == 0 else w))
    fit = int(free_mib // per_mib)
    if fit <= 2:
        return max(0, min(w, 1))
    return max(0, min(w, max(1, (fit * 3) // 4)))


def check(records, expect):
    """Checksums of every successful record against the workload's reference
    (expect[wl], e.g. cfunc's --gen checksum; else native's sequential runs:
    exact bit checksums when they agree, else the approximate value), libsage
    present exactly in SAGE records, and failed invocations outside the
    density phase (where the failure that ends it is expected).
    Returns (problems, basis, per-workload {'ok': n, 'bad': n})."""
    problems, basis, tally = [], {}, {}
    wls = sorted({r["wl"] for r in records})
    for wl in wls:
        recs = [r for r in records if r["wl"] == wl]
        t = tally.setdefault(wl, {"ok": 0, "bad": 0})
        nat = [r for r in recs if r["mode"] == "native" and r.get("ok") and r.get("checksum")
               and r["phase"] == "seq"] or [r for r in recs if r["mode"] == "native" and r.get("ok")
                                             and r.get("checksum")]
        key, want = "checksum", None
        if expect.get(wl):
            want, basis[wl] = expect[wl], "exact: checksum of the generated file"
            bad_nat = {r["checksum"] for r in nat if r["checksum"] != want}
            if bad_nat:
                basis[wl] += f" (native gave {sorted(bad_nat)} too)"
        elif nat:
            exact = {r["checksum"] for r in nat}
            if len(exact) == 1:
                want, basis[wl] = exact.pop(), "exact: native's bit checksum"
            else:
                approx = {r.get("approx") for r in nat}
                if len(approx) == 1 and None not in approx:
                    key, want = "approx", approx.pop()
                    basis[wl] = f"approximate: native itself gave {len(exact)} different exact checksums"
                else:
                    basis[wl] = "none: native runs disagree"
                    problems.append(f"MISMATCH {wl}: native runs disagree: {sorted(exact)}")
        else:
            basis[wl] = "none: no successful native run"
            problems.append(f"NO REFERENCE {wl}: no successful native run to compare with")
        for r in recs:
            where = f"{wl} {r['mode']} {r['phase']} #{r.get('idx')}"
            if not r.get("ok"):
                # The instance that ends the density phase fails before its
                # record (OOM, ...): expected. Anything else is a failure.
                if r["phase"] != "density" or r.get("had_record") or r.get("density_unexpected"):
                    problems.append(f"FAILED {where}: {r.get('error')}")
                    t["bad"] += 1
                continue
            if r.get("checksum") is None:
                problems.append(f"NO CHECKSUM {where}")
                t["bad"] += 1
            elif want is not None and r.get(key) != want:
                problems.append(f"MISMATCH {where}: {key} {r.get(key)} != {want}")
                t["bad"] += 1
            elif want is not None:
                t["ok"] += 1
            if "sage_loaded" in r and bool(r["sage_loaded"]) != (r["mode"] == "sage"):
                problems.append(f"PRELOAD {where}: libsage {'loaded' if r['sage_loaded'] else 'NOT loaded'}")
    return problems, basis, tally


def summarize(doc):
    """One summary per workload from the raw records and phase results."""
    out = {}
    recs = doc.get("records", [])
    tally = doc.get("checks", {}).get("tally", {})
    for wl in doc.get("settings", {}).get("workloads", []):
        ph = doc.get("phases", {}).get(wl, {})
        seq = [r for r in recs if r["wl"] == wl and r["phase"] == "seq" and r.get("ok")]
        nat = [r for r in seq if r["mode"] == "native"]
        sage = sorted((r for r in seq if r["mode"] == "sage"), key=lambda r: r["idx"])
        cold = [r for r in sage if r["idx"] == 1]
        warm = [r for r in sage if r["idx"] >= 2]
        s = {"native_upload_ms": median(r.get("upload_ms") for r in nat), "native_n": len(nat),
             "sage_cold_upload_ms": cold[0].get("upload_ms") if cold else None,
             "sage_warm_upload_ms": median(r.get("upload_ms") for r in warm), "sage_warm_n": len(warm),
             "native_wall_ms": median(r.get("wall_ms") for r in nat),
             "sage_warm_wall_ms": median(r.get("wall_ms") for r in warm)}
        with_stats = [r for r in warm if r.get("sage_stats") is not None]
        # hit: every shared upload mapped (hits, no misses); partial: some of both.
        kinds = [hit_kind(r["sage_stats"]) for r in with_stats]
        s["warm_hits"] = kinds.count("H") if with_stats else None
        s["warm_partial"] = kinds.count("P") if with_stats else None
        s["warm_with_stats"] = len(with_stats)
        s["speedup"] = (s["native_upload_ms"] / s["sage_warm_upload_ms"]
                        if s["native_upload_ms"] and s["sage_warm_upload_ms"] else None)
        mapped, copied, frac = shared_fraction([r.get("sage_stats") for r in warm])
        s.update({"warm_bytes_shared": mapped, "warm_bytes_copied": copied, "warm_shared_fraction": frac})
        _, _, frac_all = shared_fraction([r.get("sage_stats") for r in sage])
        s["all_sage_shared_fraction"] = frac_all
        have = [r["sage_stats"] for r in sage if r.get("sage_stats") is not None]
        s["sage_seq_counters"] = {k: (sum(int(x[k]) for x in have if k in x) if any(k in x for x in have)
                                      else None) for k in STAT_KEYS}
        for mode in MODES:
            c = (ph.get("conc") or {}).get(mode)
            d = (ph.get("density") or {}).get(mode)
            c = c if isinstance(c, dict) else {}  # a string: skipped, and why
            d = d if isinstance(d, dict) else {}
            s[f"{mode}_mib_per_instance"] = c.get("per_instance_mib") or d.get("per_instance_mib")
            s[f"{mode}_density"] = d.get("count")
            s[f"{mode}_density_capped"] = d.get("at_least")
            s[f"{mode}_density_stop"] = d.get("stop")
            s[f"{mode}_extrapolated"] = d.get("extrapolated") if d.get("extrapolated") is not None \
                else c.get("extrapolated")
        t = tally.get(wl, {})
        s["checksums_ok"], s["checksums_bad"] = t.get("ok", 0), t.get("bad", 0)
        out[wl] = s
    return out


def hit_kind(stats):
    """H: uploads mapped, none missed; P: some of both; M: none mapped; ?: no counters."""
    if not stats or "SHARE_HITS" not in stats:
        return "?"
    h, m = int(stats.get("SHARE_HITS") or 0), int(stats.get("SHARE_MISSES") or 0)
    return "M" if h == 0 else "P" if m else "H"


def f_ms(v):
    return "n/a" if v is None else f"{v:.1f} ms" if v < 1000 else f"{v / 1000:.2f} s"


def nz(v):
    return "n/a" if v is None else v


def f_count(n, at_least):
    return "n/a" if n is None else ("≥" if at_least else "") + str(n)


def wl_label(wl, settings):
    sz = settings.get("files", {}).get(wl, {}).get("bytes")
    return f"{wl} {sz / 2**30:.1f}G" if sz and wl in ("cfunc", "llm") else wl


def table(doc):
    st = doc.get("settings", {})
    summ = summarize(doc)
    head = ["workload", "native upload med", "SAGE upload med (hits)", "speed-up", "MiB/inst native vs SAGE",
            "bytes shared", "density native vs SAGE", "extrap. (GPU mem)", "checksums"]
    rows = []
    for wl, s in summ.items():
        hits = ("hits n/a" if s["warm_hits"] is None else f"{s['warm_hits']}/{s['warm_with_stats']} hit"
                + (f", {s['warm_partial']} partial" if s["warm_partial"] else ""))
        nm, sm = s["native_mib_per_instance"], s["sage_mib_per_instance"]
        ne, se = s["native_extrapolated"], s["sage_extrapolated"]
        rows.append([
            wl_label(wl, st),
            f"{f_ms(s['native_upload_ms'])} (n={s['native_n']})",
            f"{f_ms(s['sage_warm_upload_ms'])} (n={s['sage_warm_n']}, {hits})",
            "n/a" if s["speedup"] is None else f"{s['speedup']:.1f}x",
            f"{'n/a' if nm is None else round(nm)} vs {'n/a' if sm is None else round(sm)}",
            "n/a" if s["warm_shared_fraction"] is None else f"{100 * s['warm_shared_fraction']:.1f}%",
            f"{f_count(s['native_density'], s['native_density_capped'])} vs "
            f"{f_count(s['sage_density'], s['sage_density_capped'])}",
            f"~{'n/a' if ne is None else ne} vs ~{'n/a' if se is None else se}",
            ("OK" if not s["checksums_bad"] else "FAIL") + f" {s['checksums_ok']}/{s['checksums_ok'] + s['checksums_bad']}",
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: " | ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    m = doc.get("machine", {})
    L = [f"SAGE sharing-based memory: native vs SAGE (SAGE_SHARE=1 + saged), one run; "
         f"{m.get('gpu', '?')}, driver {m.get('driver', '?')}, {m.get('cpus', '?')} CPUs, {m.get('date', '?')}",
         line(head), "-+-".join("-" * w for w in widths)]
    L += [line(r) for r in rows]
    L += ["",
          "upload = the host->device upload inside the function (cfunc: its one cudaMemcpy; PyTorch: .to('cuda') "
          "of the weights + sync); SAGE median over invocations 2..N (invocation 1 is cold).",
          "MiB/inst = GPU memory per resident instance from the concurrent phase (nvidia-smi memory.used delta / "
          "instances; SAGE's shared extents live in the broker and are in the baseline).",
          "bytes shared = (SHARE_BYTES_MAPPED + SHARE_BYTES_ASSEMBLED) / (MAPPED + COPIED) over SAGE invocations 2..N "
          "(libsage trace counters: upload bytes mapped at the upload or by assembly at the first launch).",
          "density = instances resident at once, measured (≥: stopped by the cap, host memory or time, not by a "
          "failure); extrap. = (GPU memory total - baseline) / MiB per instance: EXTRAPOLATED, not measured."]
    # Details per workload.
    for wl in summ:
        s, ph, c = summ[wl], doc.get("phases", {}).get(wl, {}), st.get("counts", {}).get(wl, {})
        L += ["", f"== {wl_label(wl, st)}: counts seq native {c.get('seq_native')} / SAGE {c.get('seq_sage')}, "
                  f"conc {c.get('conc')}, density cap {c.get('cap')} (waves of up to {c.get('wave')})"]
        recs = [r for r in doc.get("records", []) if r["wl"] == wl and r["phase"] == "seq"]
        for mode in MODES:
            items = []
            for r in sorted((r for r in recs if r["mode"] == mode), key=lambda r: r["idx"]):
                if not r.get("ok"):
                    items.append(f"#{r['idx']} FAILED")
                    continue
                tag = hit_kind(r.get("sage_stats")) if mode == "sage" else ""
                items.append(f"{r.get('upload_ms', float('nan')):.0f}{tag}")
            lab = "native" if mode == "native" else "SAGE  "
            L.append(f"  seq {lab} upload ms: {' '.join(items) or '-'}")
        L.append(f"  (H = hits and no misses, P = partial: both, M = no hit, ? = no counters); SAGE cold upload {f_ms(s['sage_cold_upload_ms'])}; "
                 f"wall start->exit med native {f_ms(s['native_wall_ms'])}, SAGE 2..N {f_ms(s['sage_warm_wall_ms'])}; "
                 f"bytes shared over all SAGE runs incl. cold: "
                 f"{'n/a' if s['all_sage_shared_fraction'] is None else '%.1f%%' % (100 * s['all_sage_shared_fraction'])}")
        L.append("  libsage counters over the SAGE sequential runs: "
                 + ", ".join(f"{k[6:]} {nz(v)}" for k, v in s["sage_seq_counters"].items()))
        for mode in MODES:
            cc = (ph.get("conc") or {}).get(mode)
            if isinstance(cc, dict):
                L.append(f"  conc {mode:6s}: {cc.get('ready')}/{cc.get('n')} ready, wall to all ready "
                         f"{f_ms(cc.get('wall_ready_ms'))}, upload med {f_ms(cc.get('upload_med_ms'))} max "
                         f"{f_ms(cc.get('upload_max_ms'))}, MiB/inst {nz(cc.get('per_instance_mib'))} (Δ used), "
                         f"per process (nvidia-smi) med {nz(cc.get('smi_per_process_mib'))}, host anon MiB/inst "
                         f"med {nz(cc.get('host_anon_mib_med'))}" + (f"; {cc['error']}" if cc.get("error") else ""))
            elif cc:
                L.append(f"  conc {mode:6s}: {cc}")
        for mode in MODES:
            d = (ph.get("density") or {}).get(mode)
            if isinstance(d, dict):
                L.append(f"  density {mode:6s}: {f_count(d.get('count'), d.get('at_least'))} resident "
                         f"(stop: {d.get('stop')}), MiB/inst {nz(d.get('per_instance_mib'))}, EXTRAPOLATED "
                         f"GPU-bound {nz(d.get('extrapolated'))} (total {nz(d.get('total_mib'))} - baseline "
                         f"{nz(d.get('base_mib'))} MiB), {nz(d.get('elapsed_s'))} s")
            elif d:
                L.append(f"  density {mode:6s}: {d}")
        bs = ph.get("broker_stats")
        if bs:
            L.append(f"  broker (sagectl stats): {json.dumps(bs)}")
    if doc.get("skipped"):
        L += ["", "Skipped / shortened:"] + [f"  - {x}" for x in doc["skipped"]]
    if doc.get("notes"):
        L += ["", "Notes:"] + [f"  - {x}" for x in doc["notes"]]
    probs = doc.get("checks", {}).get("problems", [])
    L.append("")
    if probs:
        L.append(f"!!!!!!!! FAIL: {len(probs)} problem(s) !!!!!!!!")
        L += [f"  {p}" for p in probs[:60]]
        if len(probs) > 60:
            L.append(f"  ... and {len(probs) - 60} more (density.json: checks.problems)")
    else:
        L.append("checksums: every invocation matched its reference "
                 f"({'; '.join(f'{k}: {v}' for k, v in doc.get('checks', {}).get('basis', {}).items())})")
    return "\n".join(L)


def plot(doc, out_dir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001
        return None, f"no plot: matplotlib unavailable ({type(e).__name__})"
    summ = summarize(doc)
    wls = list(summ)
    if not wls:
        return None, "no plot: no workload"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = range(len(wls))
    for i, mode in enumerate(MODES):
        axes[0].bar([j + (i - 0.5) * 0.38 for j in x], [summ[w][f"{mode}_density"] or 0 for w in wls], 0.38,
                    label=f"{mode} (measured)")
        axes[0].scatter([j + (i - 0.5) * 0.38 for j in x], [summ[w][f"{mode}_extrapolated"] or 0 for w in wls],
                        marker="_", s=300, label=f"{mode} (extrapolated, GPU memory)")
        axes[1].bar([j + (i - 0.5) * 0.38 for j in x], [summ[w][f"{mode}_mib_per_instance"] or 0 for w in wls],
                    0.38, label=mode)
    for ax, t in ((axes[0], "resident instances"), (axes[1], "GPU MiB per instance")):
        ax.set_xticks(list(x))
        ax.set_xticklabels(wls)
        ax.set_title(t)
        ax.legend(fontsize=7)
    fig.tight_layout()
    p = os.path.join(out_dir, "density.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p, None


# ---------------------------------------------------------------- processes
def meminfo_mib(key):
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def proc_status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class Proc:
    """One function process: stdout/stderr to files, its own process group,
    reaped with wait4 (peak RSS), killed after limit_s when given."""

    def __init__(self, runner, cmd, env, log_base, limit_s=None, hold=False):
        self.runner, self.hold = runner, hold
        self.t0 = time.monotonic_ns()
        env = dict(env, SAGE_BENCH_T0_NS=str(self.t0))
        self.out_path, self.err_path = log_base + ".out", log_base + ".err"
        self.rc = self.t_end = self.maxrss_kib = None
        self.timed_out, self.t_ready, self.peak_anon_kib, self.anon_kib = False, None, 0, None
        self.done = threading.Event()
        with open(self.out_path, "w") as o, open(self.err_path, "w") as e:
            self.p = subprocess.Popen(cmd, env=env, stdout=o, stderr=e,
                                      stdin=subprocess.PIPE if hold else subprocess.DEVNULL,
                                      start_new_session=True)
        self.pid = self.p.pid
        runner.live.add(self)
        self.timer = None
        if limit_s:
            self.timer = threading.Timer(limit_s, self._timeout)
            self.timer.daemon = True
            self.timer.start()
        threading.Thread(target=self._reap, daemon=True).start()

    def _reap(self):
        status, ru = None, None
        while True:
            try:
                _, status, ru = os.wait4(self.pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break
        self.t_end = time.monotonic_ns()
        self.rc = os.waitstatus_to_exitcode(status) if status is not None else -1
        self.p.returncode = self.rc  # reaped here: Popen must not wait again
        self.maxrss_kib = ru.ru_maxrss if ru else None
        if self.timer:
            self.timer.cancel()
        self.runner.live.discard(self)
        self.done.set()

    def _timeout(self):
        if not self.done.is_set():
            self.timed_out = True
            self.kill()

    def kill(self):
        if not self.done.is_set():
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass

    def release(self):
        """Close stdin: a holder then frees and exits."""
        if self.p.stdin:
            try:
                self.p.stdin.close()
            except OSError:
                pass

    def wait(self, timeout=None):
        return self.done.wait(timeout)

    def stdout(self):
        try:
            with open(self.out_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def err_tail(self):
        try:
            with open(self.err_path, errors="replace") as f:
                lines = [x for x in f.read().splitlines() if x.strip()]
            # The exception line (e.g. "torch.AcceleratorError: CUDA error: ..."), then the last lines.
            err = [x for x in lines if re.match(r"[\w.]*(Error|Exception)\b", x.strip())][-1:]
            return " / ".join(dict.fromkeys(err + lines[-2:]))[:500]
        except OSError:
            return ""

    def wall_ms(self):
        return round((self.t_end - self.t0) / 1e6, 3) if self.t_end else None


class Runner:
    def __init__(self, a):
        self.a = a
        self.t_start = a.t_start or time.time()
        self.deadline = self.t_start + a.budget if a.budget > 0 else float("inf")
        self.records, self.skipped, self.notes = [], [], []
        self.phases = {}
        self.live = set()
        self.broker = None
        self.broker_n = 0
        self.seq_no = 0
        self.walls = {}  # (wl, mode) -> [wall s]
        self.anon_peak = {}  # (wl, mode) -> MiB
        self.conc_mem = {}  # (wl, mode) -> MiB per instance
        self.stop_sampler = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    # ---- host memory sampling (peak anonymous RSS of every live process)
    def _sample(self):
        while not self.stop_sampler.wait(0.2):
            for p in list(self.live):
                v = proc_status_kib(p.pid, "RssAnon")
                if v is not None and not p.done.is_set():
                    p.anon_kib = v
                    p.peak_anon_kib = max(p.peak_anon_kib, v)

    def say(self, msg):
        print(f"density: [{time.time() - self.t_start:5.0f} s] {msg}", flush=True)

    # ---- commands and environments
    def cmd(self, wl, hold):
        f = self.a.files[wl]
        if wl == "cfunc":
            return [self.a.cfunc_bin, f] + (["--read"] if self.a.cfunc_read else []) + (["--hold"] if hold else [])
        return [self.a.python, self.a.suite_fn, "hold" if hold else "run", wl, f]

    def env(self, mode, trace=None):
        e = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("SAGE_BENCH")}
        if mode == "native":
            e = {k: v for k, v in e.items() if not k.startswith("SAGE_")}
        else:
            for k in ("SAGE_TRACE", "SAGE_SOCKET", "SAGE_SHARE"):
                e.pop(k, None)
            e.update(LD_PRELOAD=self.a.libsage, SAGE_SHARE="1", SAGE_SOCKET=self.a.socket)
            if trace:
                e["SAGE_TRACE"] = trace
        e.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        return e

    def limit(self, wl):
        return 120 if wl == "cfunc" else 300

    def start(self, wl, mode, phase, idx, hold, trace=False):
        self.seq_no += 1
        base = f"{self.a.logs}/{wl}.{phase}.{mode}.{idx}"
        tpath = f"{self.a.traces}/{wl}-{phase}-{mode}-{idx}-%p.json" if trace and mode == "sage" else None
        p = Proc(self, self.cmd(wl, hold), self.env(mode, tpath), base, None if hold else self.limit(wl), hold)
        p.meta = {"wl": wl, "mode": mode, "phase": phase, "idx": idx, "trace": tpath}
        return p

    def record(self, p, extra=None):
        """The record of a finished process (appended to self.records)."""
        recs = parse_bench(p.stdout())
        r = dict(recs[0]) if recs else {}
        r.update(p.meta)
        r.update({"pid": p.pid, "rc": p.rc, "wall_ms": p.wall_ms(), "had_record": bool(recs),
                  "peak_rss_mib": round(p.maxrss_kib / 1024, 1) if p.maxrss_kib else None,
                  "peak_anon_mib": round(p.peak_anon_kib / 1024, 1) if p.peak_anon_kib else None,
                  "log": p.out_path})
        if p.t_ready:
            r["ready_ms"] = round((p.t_ready - p.t0) / 1e6, 3)
        r.update(extra or {})
        r["ok"] = bool(recs) and not p.timed_out and (p.rc == 0 or (p.hold and r.get("killed_after_release")))
        if not r["ok"] and "error" not in r:
            r["error"] = (f"timed out after {self.limit(p.meta['wl'])} s" if p.timed_out
                          else f"rc {p.rc}: {p.err_tail()}" if p.rc else "no SAGE_BENCH record")
        if p.meta.get("trace"):
            tp = p.meta["trace"].replace("%p", str(p.pid))
            r["trace"] = tp
            r["sage_stats"] = trace_stats(tp)
        self.records.append(r)
        key = (p.meta["wl"], p.meta["mode"])
        if r["ok"] and r.get("wall_ms") and not p.hold:
            self.walls.setdefault(key, []).append(r["wall_ms"] / 1000)
        if r.get("peak_anon_mib"):
            self.anon_peak[key] = max(self.anon_peak.get(key, 0), r["peak_anon_mib"])
        return r

    def wall_est(self, wl, mode=None):
        vals = [v for (w, m), vs in self.walls.items() if w == wl and (mode is None or m == mode) for v in vs]
        return median(vals) or EST_RUN_S[wl]

    def anon_est(self, wl, mode):
        return max(self.anon_peak.get((wl, mode), 0), 256) if (wl, mode) in self.anon_peak else EST_ANON_MIB[wl]

    # ---- GPU memory
    def smi_used(self):
        try:
            r = subprocess.run(["nvidia-smi", "-i", str(self.a.gpu_index), "--query-gpu=memory.used,memory.total",
                                "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30)
            used, total = [int(x.strip()) for x in r.stdout.strip().splitlines()[0].split(",")]
            return used, total
        except Exception:  # noqa: BLE001
            return None, None

    def smi_apps(self):
        try:
            r = subprocess.run(["nvidia-smi", "-i", str(self.a.gpu_index), "--query-compute-apps=pid,used_memory",
                                "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30)
            out = {}
            for line in r.stdout.splitlines():
                parts = [x.strip() for x in line.split(",")]
                if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                    out[int(parts[0])] = int(parts[1])
            return out
        except Exception:  # noqa: BLE001
            return {}

    def settle_used(self):
        """memory.used once it stopped moving (after processes exit)."""
        last = None
        for _ in range(10):
            used, total = self.smi_used()
            if used is not None and last is not None and abs(used - last) < 64:
                return used, total
            last = used
            time.sleep(0.3)
        return self.smi_used()

    # ---- broker
    def broker_start(self):
        self.broker_stop()
        try:
            os.unlink(self.a.socket)
        except OSError:
            pass
        self.broker_n += 1
        log = open(f"{self.a.logs}/saged.{self.broker_n}.log", "w")
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        self.broker = subprocess.Popen([self.a.saged, "--socket", self.a.socket, "--foreground"], stdout=log,
                                       stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        log.close()
        if self.a.pidfile:
            with open(self.a.pidfile, "w") as f:
                f.write(f"{self.broker.pid}\n")
        for _ in range(200):
            if os.path.exists(self.a.socket) or self.broker.poll() is not None:
                break
            time.sleep(0.05)
        if self.broker.poll() is not None or not os.path.exists(self.a.socket):
            self.broker_stop()
            raise RuntimeError(f"saged did not start (log {self.a.logs}/saged.{self.broker_n}.log)")
        time.sleep(1.0)  # its cuInit + context retain

    def broker_stats(self):
        if not self.a.sagectl or not os.path.exists(self.a.sagectl):
            return None
        try:
            r = subprocess.run([self.a.sagectl, "--socket", self.a.socket, "stats", "--json"], capture_output=True,
                               text=True, timeout=10)
            return json.loads(r.stdout) if r.returncode == 0 else {"error": (r.stdout + r.stderr).strip()[:200]}
        except (OSError, ValueError, subprocess.TimeoutExpired) as e:
            return {"error": str(e)[:200]}

    def broker_stop(self):
        if self.broker:
            self.broker.terminate()
            try:
                self.broker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.broker.kill()
                self.broker.wait()
            self.broker = None
            if self.a.pidfile:
                try:
                    os.unlink(self.a.pidfile)
                except OSError:
                    pass

    def shutdown(self):
        """Every function process still running: stdin closed, 5 s to exit, then SIGKILL."""
        procs = list(self.live)
        for p in procs:
            p.release()
        end = time.monotonic() + 5
        for p in procs:
            p.wait(max(0.05, end - time.monotonic()))
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(5)
        self.broker_stop()
        self.stop_sampler.set()

    # ---- holders
    def wait_ready(self, procs, timeout_s):
        """Wait until every holder printed its SAGE_BENCH line, one exited,
        or timeout_s passed. Returns the first failure (text) or None."""
        end = time.monotonic() + timeout_s
        failed = None
        pending = list(procs)
        while pending:
            for p in list(pending):
                if "SAGE_BENCH " in p.stdout():
                    p.t_ready = p.t_ready or time.monotonic_ns()
                    pending.remove(p)
                elif p.done.is_set():
                    pending.remove(p)
                    failed = failed or (f"{p.meta['wl']} {p.meta['mode']} #{p.meta['idx']} exited rc {p.rc} "
                                        f"before its record: {p.err_tail()}")
            if pending and time.monotonic() > end:
                for p in pending:
                    p.kill()
                failed = failed or f"{len(pending)} instance(s) not ready within {timeout_s} s"
                break
            if pending:
                time.sleep(0.05)
        return failed

    def release_all(self, procs, extra_fn=None):
        for p in procs:
            p.release()
        end = time.monotonic() + 30 + 0.2 * len(procs)
        for p in procs:
            p.wait(max(0.1, end - time.monotonic()))
        killed = [p for p in procs if not p.done.is_set()]
        for p in killed:
            p.kill()
        for p in killed:
            p.wait(10)
        out = []
        for p in procs:
            extra = dict(extra_fn(p) if extra_fn else {})
            if p in killed:
                extra["killed_after_release"] = True
            out.append(self.record(p, extra))
        return out

    # ---- phases
    def phase_seq(self, wl):
        c = self.a.counts[wl]
        n = max(c["seq_native"], c["seq_sage"])
        for i in range(1, n + 1):
            for mode in MODES:
                if i > c[f"seq_{mode}"]:
                    continue
                if time.time() > self.deadline:
                    self.skipped.append(f"{wl} seq {mode}: stopped after {i - 1} of {c[f'seq_{mode}']} "
                                        "(time budget)")
                    continue
                p = self.start(wl, mode, "seq", i, hold=False, trace=True)
                p.wait()
                r = self.record(p)
                st = r.get("sage_stats")
                hit = ""
                if mode == "sage":
                    hit = (" stats n/a" if st is None else
                           f" hits {st.get('SHARE_HITS', 'n/a')} misses {st.get('SHARE_MISSES', 'n/a')} "
                           f"mapped {st.get('SHARE_BYTES_MAPPED', 'n/a')} copied {st.get('SHARE_BYTES_COPIED', 'n/a')}")
                ref = self.a.cfunc_expect if wl == "cfunc" and self.a.cfunc_expect else next(
                    (x.get("checksum") for x in self.records if x["wl"] == wl and x["mode"] == "native"
                     and x["phase"] == "seq" and x.get("ok")), None)
                if r["ok"] and ref and r.get("checksum") != ref:
                    hit += f" !!!!!!!! CHECKSUM MISMATCH (reference {ref}; exact bits, see the final check)"
                self.say(f"{wl} seq {mode} {i}/{c[f'seq_{mode}']}: "
                         + (f"upload {f_ms(r.get('upload_ms'))}, wall {f_ms(r.get('wall_ms'))}, "
                            f"checksum {r.get('checksum')}{hit}" if r["ok"] else f"FAILED: {r.get('error')}"))

    def phase_conc(self, wl, mode, n):
        """n holders started at once; all ready -> measure memory -> release."""
        avail = meminfo_mib("MemAvailable")
        est = self.anon_est(wl, mode)
        res = {"n_asked": n}
        if avail is not None:
            room = int((avail - HOST_RESERVE_MIB) // est)
            if room < n:
                res["reduced_by_host_memory"] = f"MemAvailable {avail} MiB, ~{est:.0f} MiB anon per instance"
                self.notes.append(f"{wl} conc {mode}: {max(1, room)} instead of {n} instances (host memory: "
                                  f"MemAvailable {avail} MiB, ~{est:.0f} MiB per instance)")
                n = max(1, room)
        base, total = self.settle_used()
        t0 = time.monotonic_ns()
        procs = [self.start(wl, mode, "conc", i + 1, hold=True, trace=True) for i in range(n)]
        failed = self.wait_ready(procs, self.limit(wl))
        ready = [p for p in procs if p.t_ready and not p.done.is_set()]
        time.sleep(0.5)
        used, _ = self.smi_used()
        apps = self.smi_apps()
        anon = {p.pid: proc_status_kib(p.pid, "RssAnon") for p in ready}
        recs = self.release_all(procs, lambda p: {
            "conc": n, "smi_mib": apps.get(p.pid),
            "host_anon_mib_held": round(anon[p.pid] / 1024, 1) if anon.get(p.pid) else None})
        by_pid = {r["pid"]: r for r in recs}
        finish = []
        for p in ready:
            r = by_pid[p.pid]
            if r.get("total_ms") is not None:  # ready = start + the function's own total (precise)
                finish.append((p.t0 - t0) / 1e6 + float(r["total_ms"]))
            else:
                finish.append((p.t_ready - t0) / 1e6)
        per = round((used - base) / len(ready), 1) if ready and used is not None and base is not None else None
        smi = [apps[p.pid] for p in ready if p.pid in apps]
        ups = [r.get("upload_ms") for r in recs if r.get("ok")]
        res.update({"n": n, "ready": len(ready), "wall_ready_ms": round(max(finish), 1) if finish else None,
                    "wall_exit_ms": (round((max(p.t_end for p in procs) - t0) / 1e6, 1)
                                     if all(p.t_end for p in procs) else None),
                    "upload_med_ms": median(ups), "upload_max_ms": max(ups) if ups else None,
                    "base_mib": base, "used_mib": used, "total_mib": total, "per_instance_mib": per,
                    "smi_per_process_mib": median(smi),
                    "smi_note": None if smi else "nvidia-smi listed none of the holders' pids (pid namespace?)",
                    "host_anon_mib_med": median(round(v / 1024) for v in anon.values() if v),
                    "extrapolated": extrapolate(total, base, per)})
        if failed:
            res["error"] = failed
        if per:
            self.conc_mem[(wl, mode)] = per
        self.say(f"{wl} conc {mode} x{n}: {len(ready)} ready, wall {f_ms(res['wall_ready_ms'])}, upload med "
                 f"{f_ms(res['upload_med_ms'])}, {per} MiB/instance" + (f"; {failed}" if failed else ""))
        return res

    def phase_density(self, wl, mode, deadline):
        c = self.a.counts[wl]
        cap, wave_max = c["cap"], c["wave"]
        base, total = self.settle_used()
        a = time.time()
        holders, waves, stop, failed = [], [], None, False
        per_est = self.conc_mem.get((wl, mode))
        anon_est = self.anon_est(wl, mode)
        while True:
            alive = [p for p in holders if p.t_ready and not p.done.is_set()]
            if len(alive) < len([p for p in holders if p.t_ready]):
                stop, failed = "a resident instance exited", True
                break
            k = len(alive)
            if k >= cap:
                stop = f"cap {cap}"
                break
            if time.time() > deadline:
                stop = "time budget"
                break
            avail = meminfo_mib("MemAvailable")
            host_room = int((avail - HOST_RESERVE_MIB) // anon_est) if avail is not None else wave_max
            if host_room < 1:
                stop = f"host memory (MemAvailable {avail} MiB)"
                break
            used, _ = self.smi_used()
            per = round((used - base) / k, 1) if k and used is not None and base is not None else per_est
            free = total - used if total is not None and used is not None else None
            w = next_wave(k, cap, wave_max, free, per, host_room)
            if w < 1:
                stop = f"cap {cap}"
                break
            new = [self.start(wl, mode, "density", len(holders) + i + 1, hold=True) for i in range(w)]
            holders += new
            why = self.wait_ready(new, self.limit(wl))
            waves.append({"started": w, "ready_total": len([p for p in holders if p.t_ready]),
                          "free_mib_before": free, "per_instance_est_mib": per})
            if why:
                stop, failed = f"instance failed: {why}", True
                break
        alive = [p for p in holders if p.t_ready and not p.done.is_set()]
        time.sleep(0.5)
        used, _ = self.smi_used()
        # A failure with plenty of GPU memory left is not the end of density but a bug.
        unexpected = None
        if failed and used is not None and total is not None:
            free = total - used
            room = 2 * (per_est or (used - base) / max(1, len(alive)) if base is not None else 0) + 4096
            if free > room:
                unexpected = f"failed with {free} MiB of GPU memory free: not out of memory"
                stop += f" [{unexpected}]"
                for p in holders:
                    p.meta["density_unexpected"] = unexpected
        per = round((used - base) / len(alive), 1) if alive and used is not None and base is not None else None
        res = {"count": len(alive), "at_least": not failed, "stop": stop, "cap": cap, "waves": waves,
               "base_mib": base, "used_mib": used, "total_mib": total, "per_instance_mib": per,
               "extrapolated": extrapolate(total, base, per),
               "host_available_mib_at_end": meminfo_mib("MemAvailable"), "unexpected_failure": unexpected}
        self.release_all(holders)
        res["elapsed_s"] = round(time.time() - a, 1)
        self.say(f"{wl} density {mode}: {f_count(res['count'], res['at_least'])} resident (stop: {stop}); "
                 f"{per} MiB/instance; EXTRAPOLATED GPU-bound {res['extrapolated']}")
        return res

    def workload(self, wl, wl_deadline):
        c = self.a.counts[wl]
        ph = self.phases.setdefault(wl, {"conc": {}, "density": {}})
        self.broker_start()  # fresh: holds only this workload's weights
        ph["broker_start"] = self.broker_stats()
        self.phase_seq(wl)
        ph["broker_after_seq"] = self.broker_stats()
        # Concurrent: 16 at once, native then SAGE (the broker holds the weights now).
        n = asked = c["conc"]
        if n > 0:
            f = 3.0 if wl == "cfunc" else 2.5
            est = lambda k: sum(self.wall_est(wl, m) for m in MODES) * max(1.5, f * k / 16) + 10  # noqa: E731
            end = min(wl_deadline, self.deadline)
            while n > 2 and time.time() + est(n) > end:
                n //= 2
            if time.time() + est(n) > end:
                for m in MODES:
                    ph["conc"][m] = f"skipped (time budget: {n} at once need ~{est(n):.0f} s)"
                self.skipped.append(f"{wl} conc: even {n} at once (~{est(n):.0f} s) do not fit the time left to it")
            else:
                if n != asked:
                    self.skipped.append(f"{wl} conc: {n} instances at once instead of {asked} (time budget)")
                for m in MODES:
                    ph["conc"][m] = self.phase_conc(wl, m, n)
        # Density: SAGE first (broker up, weights published), then native with the broker stopped.
        left = min(wl_deadline, self.deadline) - time.time()
        one = self.wall_est(wl, "sage") + self.wall_est(wl, "native")
        if c["cap"] <= 0:
            ph["density"] = {m: "not asked (cap 0)" for m in MODES}
        elif left < 2 * one + 4:
            for m in MODES:
                ph["density"][m] = f"skipped (time budget: {max(0, left):.0f} s left)"
            self.skipped.append(f"{wl} density: {max(0, left):.0f} s left, not enough")
        else:
            ph["density"]["sage"] = self.phase_density(wl, "sage", time.time() + left / 2)
        ph["broker_stats"] = self.broker_stats()
        self.broker_stop()
        if isinstance(ph["density"].get("sage"), dict):
            ph["density"]["native"] = self.phase_density(wl, "native", min(wl_deadline, self.deadline))

    def run_all(self):
        wls = self.a.workloads
        for i, wl in enumerate(wls):
            now = time.time()
            if now >= self.deadline:
                self.skipped.append(f"{wl}: whole workload (time budget of {self.a.budget} s spent)")
                continue
            w_left = sum(WEIGHTS[w] for w in wls[i:])
            wl_deadline = now + (self.deadline - now) * WEIGHTS[wl] / w_left if self.deadline != float("inf") \
                else float("inf")
            self.say(f"== {wl} (until +{wl_deadline - self.t_start:.0f} s): counts {self.a.counts[wl]}")
            try:
                self.workload(wl, wl_deadline)
            except Exception as e:  # noqa: BLE001 - reported, the next workload still runs
                self.skipped.append(f"{wl}: aborted by {type(e).__name__}: {e}")
                self.say(f"{wl}: aborted by {type(e).__name__}: {e}")
                for p in list(self.live):
                    p.release()
                    p.kill()
                self.broker_stop()


def machine(a):
    def q(field):
        try:
            r = subprocess.run(["nvidia-smi", "-i", str(a.gpu_index), f"--query-gpu={field}",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
            return r.stdout.strip().splitlines()[0].strip() if r.returncode == 0 and r.stdout.strip() else None
        except Exception:  # noqa: BLE001
            return None
    commit = None
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        commit = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        if commit and subprocess.run(["git", "-C", here, "status", "--porcelain"], capture_output=True,
                                     text=True, timeout=10).stdout.strip():
            commit += "+dirty"
    except Exception:  # noqa: BLE001
        pass
    return {"gpu": q("name"), "driver": q("driver_version"), "gpu_memory": q("memory.total"),
            "gpu_index": a.gpu_index, "cpus": os.cpu_count(), "host_memory_mib": meminfo_mib("MemTotal"),
            "kernel": os.uname().release, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "commit": commit, "python": sys.version.split()[0]}


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
    doc = {"benchmark": "density", "machine": mach,
           "settings": {"quick": a.quick, "budget_s": a.budget, "workloads": wls, "counts": a.counts,
                        "files": {w: {"path": files[w], "bytes": os.path.getsize(files[w])} for w in wls},
                        "cfunc_source": "read" if a.cfunc_read else "mmap", "gpu_index": a.gpu_index,
                        "libsage": a.libsage, "saged": a.saged, "sagectl": a.sagectl,
                        "sage_env": {"LD_PRELOAD": a.libsage, "SAGE_SHARE": "1", "SAGE_SOCKET": a.socket,
                                     "SAGE_TRACE": "seq/conc only: <logs>/traces/WL-PHASE-sage-IDX-%p.json",
                                     **{k: v for k, v in os.environ.items() if k.startswith("SAGE_")
                                        and k not in ("SAGE_TRACE", "SAGE_SOCKET", "SAGE_SHARE")}},
                        "host_reserve_mib": HOST_RESERVE_MIB, "weights": WEIGHTS, "logs": a.logs,
                        "python": a.python, "suite_fn": a.suite_fn},
           "phases": runner.phases, "checks": {"problems": problems, "basis": basis, "tally": tally},
           "skipped": runner.skipped, "notes": runner.notes, "interrupted": interrupted,
           "elapsed_s": round(time.time() - runner.t_start, 1), "records": runner.records}
    doc["summary"] = summarize(doc)
    out_dir = a.out or a.logs
    os.makedirs(out_dir, exist_ok=True)
    try:
        png, why = plot(doc, out_dir)
    except Exception as e:  # noqa: BLE001 - a plot must not cost the results
        png, why = None, f"no plot: {type(e).__name__}: {e}"
    doc["plot"] = os.path.basename(png) if png else why
    with open(os.path.join(out_dir, "density.json"), "w") as f:
        json.dump(doc, f, indent=1)
    text = table(doc)
    with open(os.path.join(out_dir, "density.txt"), "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"\ndensity: {os.path.join(out_dir, 'density.json')}" + (f", {png}" if png else f" ({why})")
          + f"; logs {a.logs}; {doc['elapsed_s']} s in all", flush=True)
    if interrupted:
        return 130
    return 1 if problems else 0


# ---------------------------------------------------------------- self-test
def selftest():
    def rec(wl, mode, phase, idx, up, ck, ok=True, stats=None, wall=1000.0):
        return {"wl": wl, "mode": mode, "phase": phase, "idx": idx, "ok": ok, "upload_ms": up, "checksum": ck,
                "sage_loaded": mode == "sage", "wall_ms": wall, "sage_stats": stats,
                **({} if ok else {"error": "rc 1"})}
    G = 6 << 30
    hit = {"SHARE_HITS": 1, "SHARE_MISSES": 0, "SHARE_BYTES_MAPPED": G, "SHARE_BYTES_COPIED": 0}
    miss = {"SHARE_HITS": 0, "SHARE_MISSES": 1, "SHARE_BYTES_MAPPED": 0, "SHARE_BYTES_COPIED": G}
    recs = [rec("cfunc", "native", "seq", i, 600.0 + i, "aa") for i in (1, 2, 3)]
    recs += [rec("cfunc", "sage", "seq", 1, 720.0, "aa", stats=miss)]
    recs += [rec("cfunc", "sage", "seq", i, 60.0 + i, "aa", stats=hit) for i in (2, 3, 4)]
    recs += [rec("cfunc", "sage", "density", 9, None, None, ok=False)]  # the failure that ends density
    recs += [rec("llm", "native", "seq", 1, 800.0, "bb"), rec("llm", "native", "seq", 2, 810.0, "bb")]
    recs += [rec("llm", "sage", "seq", 1, 900.0, "bb", stats=None), rec("llm", "sage", "seq", 2, 805.0, "bb")]
    probs, basis, tally = check(recs, {"cfunc": "aa"})
    assert probs == [], probs
    assert tally["cfunc"] == {"ok": 7, "bad": 0} and tally["llm"] == {"ok": 4, "bad": 0}, tally
    assert basis["cfunc"].startswith("exact: checksum of the generated"), basis
    bad = recs + [rec("cfunc", "sage", "conc", 3, 61.0, "ab"), rec("llm", "sage", "seq", 3, 1.0, None, ok=False)]
    probs, _, tally = check(bad, {"cfunc": "aa"})
    assert any(p.startswith("MISMATCH cfunc sage conc #3") for p in probs), probs
    assert any(p.startswith("FAILED llm sage seq #3") for p in probs), probs
    assert tally["cfunc"]["bad"] == 1 and tally["llm"]["bad"] == 1
    # A density instance that failed after its record (e.g. at exit) is a failure.
    late = dict(rec("cfunc", "sage", "density", 3, 60.0, "aa", ok=False), had_record=True)
    probs, _, _ = check(recs + [late], {"cfunc": "aa"})
    assert probs == ["FAILED cfunc sage density #3: rc 1"], probs
    odd = dict(rec("cfunc", "sage", "density", 4, None, None, ok=False), density_unexpected="free")
    probs, _, _ = check(recs + [odd], {"cfunc": "aa"})
    assert probs == ["FAILED cfunc sage density #4: rc 1"], probs
    # Native disagreeing with itself falls back to the approximate value.
    am = [dict(rec("gpt2", "native", "seq", i, 1.0, c), approx="1.0e+00") for i, c in ((1, "x"), (2, "y"))]
    am.append(dict(rec("gpt2", "sage", "seq", 1, 1.0, "z"), approx="1.0e+00"))
    probs, basis, _ = check(am, {})
    assert probs == [] and basis["gpt2"].startswith("approximate"), (probs, basis)
    # Preload check.
    pl = [rec("resnet50", "native", "seq", 1, 1.0, "c"), dict(rec("resnet50", "sage", "seq", 1, 1.0, "c"),
                                                              sage_loaded=False)]
    probs, _, _ = check(pl, {})
    assert any(p.startswith("PRELOAD resnet50 sage") for p in probs), probs
    # Counts.
    c = parse_counts("llm.seq_sage=16,all.conc=4", False, ["cfunc", "llm"])
    assert c["llm"]["seq_sage"] == 16 and c["cfunc"]["conc"] == 4 and c["llm"]["conc"] == 4, c
    for badspec in ("llm.nope=1", "x.conc=1", "llm.conc=a"):
        try:
            parse_counts(badspec, False, ["llm"])
            raise AssertionError(badspec)
        except ValueError:
            pass
    # Waves and extrapolation.
    assert next_wave(0, 160, 16, None, None, 99) == 1
    assert next_wave(0, 160, 16, 140000, 6700, 99) == 15
    assert next_wave(18, 160, 16, 14000, 6700, 99) == 1
    assert next_wave(10, 12, 16, 140000, 500, 99) == 2
    assert next_wave(4, 160, 16, 140000, 500, 3) == 3
    assert next_wave(4, 160, 16, 140000, None, 99) == 16
    assert extrapolate(143771, 1000, 6700) == 21 and extrapolate(143771, None, 10) is None
    assert extrapolate(100, 0, 0) is None
    assert median([3, 1, 2]) == 2 and median([1, 2, 3, 4]) == 2.5 and median([None]) is None
    assert shared_fraction([hit, miss]) == (G, G, 0.5) and shared_fraction([{}, None]) == (None, None, None)
    part = {"SHARE_BYTES_MAPPED": 6 * G, "SHARE_BYTES_COPIED": 4 * G, "SHARE_BYTES_ASSEMBLED": 3 * G}
    assert shared_fraction([part]) == (9 * G, 4 * G, 0.9)
    # Summary + table.
    doc = {"settings": {"workloads": ["cfunc", "llm"], "files": {"cfunc": {"bytes": G}},
                        "counts": {"cfunc": COUNTS[False]["cfunc"], "llm": COUNTS[False]["llm"]}},
           "machine": {"gpu": "TEST", "driver": "0", "cpus": 16, "date": "now"},
           "phases": {"cfunc": {"conc": {"native": {"per_instance_mib": 6700.0, "extrapolated": 21, "n": 16,
                                                    "ready": 16},
                                         "sage": {"per_instance_mib": 520.0, "extrapolated": 270, "n": 16,
                                                  "ready": 16}},
                                "density": {"native": {"count": 20, "at_least": False, "stop": "instance failed",
                                                       "extrapolated": 21, "per_instance_mib": 6690.0},
                                            "sage": {"count": 160, "at_least": True, "stop": "cap 160",
                                                     "extrapolated": 265, "per_instance_mib": 530.0}}},
                      "llm": {"conc": {"native": "skipped (time budget)", "sage": "skipped (time budget)"}}},
           "records": recs}
    probs, basis, tally = check(recs, {"cfunc": "aa"})
    doc["checks"] = {"problems": probs, "basis": basis, "tally": tally}
    s = summarize(doc)
    assert s["cfunc"]["native_upload_ms"] == 602.0 and s["cfunc"]["sage_warm_upload_ms"] == 63.0, s["cfunc"]
    assert s["cfunc"]["warm_hits"] == 3 and s["cfunc"]["warm_shared_fraction"] == 1.0
    assert hit_kind({"SHARE_HITS": 5, "SHARE_MISSES": 1}) == "P" and hit_kind({"SHARE_HITS": 0}) == "M"
    assert hit_kind(None) == "?" and hit_kind({"SHARE_MISSES": 1}) == "?"
    assert s["cfunc"]["all_sage_shared_fraction"] == 0.75
    assert s["llm"]["warm_hits"] is None and s["llm"]["warm_shared_fraction"] is None
    assert s["cfunc"]["sage_seq_counters"]["SHARE_HITS"] == 3 and s["cfunc"]["sage_seq_counters"]["SHARE_MISSES"] == 1
    assert s["cfunc"]["sage_seq_counters"]["SHARE_UNSHARED"] is None
    assert s["cfunc"]["sage_density"] == 160 and s["cfunc"]["sage_density_capped"] is True
    t = table(doc)
    for want in ("602.0 ms (n=3)", "63.0 ms (n=3, 3/3 hit)", "9.6x", "6700 vs 520", "100.0%", "20 vs ≥160",
                 "~21 vs ~265", "OK 7/7", "hits n/a", "EXTRAPOLATED", "720M 62H 63H 64H"):
        assert want in t, (want, t)
    assert "FAIL" not in t
    doc["checks"]["problems"] = ["MISMATCH x"]
    assert "!!!!!!!! FAIL" in table(doc)
    # Trace counters: whole JSON, and a damaged dump.
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.json")
        with open(p, "w") as f:
            json.dump({"traceEvents": [], "otherData": {"stats": {"SHARE_HITS": 1, "SHARE_BYTES_MAPPED": 5}}}, f)
        assert trace_stats(p) == {"SHARE_HITS": 1, "SHARE_BYTES_MAPPED": 5}
        with open(p, "w") as f:
            f.write('{"traceEvents":[{"x":1},\n],"otherData":{"pid":3,"stats":{"SHARE_HITS":2,"SHARE_MISSES":0}}')
        assert trace_stats(p) == {"SHARE_HITS": 2, "SHARE_MISSES": 0}, trace_stats(p)
        assert trace_stats(os.path.join(d, "none.json")) is None
    assert parse_bench('x\nSAGE_BENCH {"a": 1}\nSAGE_BENCH {bad\nSAGE_HOLDING\n') == [{"a": 1}]
    print("density.py selftest: OK")
    return 0


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

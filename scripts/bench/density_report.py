"""Sharing-based memory benchmark of SAGE: the pure logic of density.py.

No processes and no GPU: the counts per workload (COUNTS, --counts), the
functions' SAGE_BENCH records and libsage's trace counters, the bytes-shared
fraction, the GPU-memory extrapolation, the wave size of the density phase,
the checks (checksums against a reference, libsage present exactly in SAGE
records, failures), the per-workload summary, the table and the plot
(matplotlib, optional). selftest (`density.py selftest`) checks them on
fabricated records. Standard library only.
"""
import json
import os
import re

import bench_result

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
# libsage counters summed per workload over its SAGE sequential invocations (absent ones: n/a).
STAT_KEYS = ("SHARE_HITS", "SHARE_MISSES", "SHARE_BYTES_MAPPED", "SHARE_BYTES_COPIED", "SHARE_PUBLISHED",
             "SHARE_FALLBACKS", "SHARE_ALLOCS", "SHARE_FILE_KEYS", "SHARE_UNSHARED", "SHARE_ASSEMBLED",
             "SHARE_ASSEMBLED_HITS", "SHARE_BYTES_ASSEMBLED", "SHARE_GUARD_UNSHARED",
             "SHARE_DROPPED", "SHARE_BYTES_DROPPED", "SHARE_KEEP_COPIES")


# ---------------------------------------------------------------- pure logic
def median(values):
    return bench_result.median(float(v) for v in values if v is not None)


def med(figure):
    """The median of a figure (bench_result.stats), None for none."""
    return figure["median"] if figure else None


def n_of(figure):
    return figure["n"] if figure else 0


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
        # Figures (bench_result's schema): n, median, min, max over the invocations.
        fig = lambda rs, key: bench_result.stats([r.get(key) for r in rs], ndigits=None)  # noqa: E731
        s = {"native_upload_ms": fig(nat, "upload_ms"), "sage_cold_upload_ms": fig(cold, "upload_ms"),
             "sage_warm_upload_ms": fig(warm, "upload_ms"), "native_wall_ms": fig(nat, "wall_ms"),
             "sage_warm_wall_ms": fig(warm, "wall_ms")}
        with_stats = [r for r in warm if r.get("sage_stats") is not None]
        # hit: every shared upload mapped (hits, no misses); partial: some of both.
        kinds = [hit_kind(r["sage_stats"]) for r in with_stats]
        s["warm_hits"] = kinds.count("H") if with_stats else None
        s["warm_partial"] = kinds.count("P") if with_stats else None
        s["warm_with_stats"] = len(with_stats)
        nu, su = med(s["native_upload_ms"]), med(s["sage_warm_upload_ms"])
        s["speedup"] = nu / su if nu and su else None  # of the medians
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
            f"{f_ms(med(s['native_upload_ms']))} (n={n_of(s['native_upload_ms'])})",
            f"{f_ms(med(s['sage_warm_upload_ms']))} (n={n_of(s['sage_warm_upload_ms'])}, {hits})",
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
        L.append(f"  (H = hits and no misses, P = partial: both, M = no hit, ? = no counters); SAGE cold upload {f_ms(med(s['sage_cold_upload_ms']))}; "
                 f"wall start->exit med native {f_ms(med(s['native_wall_ms']))}, SAGE 2..N {f_ms(med(s['sage_warm_wall_ms']))}; "
                 f"bytes shared over all SAGE runs incl. cold: "
                 f"{'n/a' if s['all_sage_shared_fraction'] is None else '%.1f%%' % (100 * s['all_sage_shared_fraction'])}")
        L.append("  libsage counters over the SAGE sequential runs: "
                 + ", ".join(f"{k[6:]} {nz(v)}" for k, v in s["sage_seq_counters"].items()))
        def per_mode(key, describe):
            """A line per mode of ph[key]: describe(entry), or the entry itself (an error text)."""
            for mode in MODES:
                e = (ph.get(key) or {}).get(mode)
                if isinstance(e, dict) or e:
                    L.append(f"  {key} {mode:6s}: " + (describe(e) if isinstance(e, dict) else f"{e}"))

        per_mode("conc", lambda cc: (
            f"{cc.get('ready')}/{cc.get('n')} ready, wall to all ready "
            f"{f_ms(cc.get('wall_ready_ms'))}, upload med {f_ms(cc.get('upload_med_ms'))} max "
            f"{f_ms(cc.get('upload_max_ms'))}, MiB/inst {nz(cc.get('per_instance_mib'))} (Δ used), "
            f"per process (nvidia-smi) med {nz(cc.get('smi_per_process_mib'))}, host anon MiB/inst "
            f"med {nz(cc.get('host_anon_mib_med'))}" + (f"; {cc['error']}" if cc.get("error") else "")))
        per_mode("density", lambda d: (
            f"{f_count(d.get('count'), d.get('at_least'))} resident "
            f"(stop: {d.get('stop')}), MiB/inst {nz(d.get('per_instance_mib'))}, EXTRAPOLATED "
            f"GPU-bound {nz(d.get('extrapolated'))} (total {nz(d.get('total_mib'))} - baseline "
            f"{nz(d.get('base_mib'))} MiB), {nz(d.get('elapsed_s'))} s"))
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
    assert med(s["cfunc"]["native_upload_ms"]) == 602.0 and med(s["cfunc"]["sage_warm_upload_ms"]) == 63.0, s["cfunc"]
    assert s["cfunc"]["native_upload_ms"]["n"] == 3 and "min" in s["cfunc"]["sage_warm_upload_ms"], s["cfunc"]
    assert s["cfunc"]["sage_cold_upload_ms"]["n"] == 1, s["cfunc"]
    full = dict(doc, schema=bench_result.SCHEMA, bench="density", summary=s,
                machine=dict(doc["machine"], cuda=None, kernel="k", commit=None))
    assert bench_result.check(full) == [], bench_result.check(full)
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

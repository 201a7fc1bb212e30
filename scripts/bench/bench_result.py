"""The one result schema of SAGE's benchmarks, and the one writer.

Every benchmark of scripts/bench (suite, density, parallel-setup, startup,
launch-overhead, sharing) writes its JSON through this module, so a result
file always says what was measured, where, on which tree, and how often:

    {"schema": "sage-bench/1",
     "bench": NAME,
     "machine": {"gpu", "driver", "cuda", "cpus", "kernel", "date", "commit", ...},
     "settings": {...},             the knobs the run used
     "summary": {...},              the figures
     ... the benchmark's own details (raw records, problems, notes) ...}

A figure is a stats object, {"n", "median", "min", "max"} (more keys
allowed, p99 say): a median never travels without its n and its spread.
check() enforces that over the whole document (raw records excepted) and,
inside "summary", also refuses a bare number named like a measurement
(`*_ms`, `*_ns`, `*_s`, `*_mib`), so a writer cannot slip a lone median in.

Standard library only. The command line serves the shell benchmarks:

    bench_result.py machine [--nvcc NVCC] [--gpu-index N]   machine JSON on stdout
    bench_result.py check FILE.json ...                     exit 1 if one breaks the schema
    bench_result.py selftest
"""
import json
import os
import subprocess
import sys
import time

SCHEMA = "sage-bench/1"
MACHINE_KEYS = ("gpu", "driver", "cuda", "cpus", "kernel", "date", "commit")
STATS_KEYS = ("n", "median", "min", "max")
# Keys whose content is per-process or per-run raw data, not figures.
RAW_KEYS = ("raw", "records", "rounds_raw", "settings", "config", "machine", "merged_from")
MEASURE_SUFFIXES = ("_ms", "_ns", "_s", "_mib")
HERE = os.path.dirname(os.path.abspath(__file__))


def median(values):
    s = sorted(v for v in values if v is not None)
    n = len(s)
    if n == 0:
        return None
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0


def stats(values, ndigits=3):
    """The figure of a list of samples: n, median, min, max (None: no samples)."""
    v = [float(x) for x in values if x is not None]
    if not v:
        return None
    r = (lambda x: round(x, ndigits)) if ndigits is not None else (lambda x: x)
    return {"n": len(v), "median": r(median(v)), "min": r(min(v)), "max": r(max(v))}


def _run(cmd, timeout=30):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else None


def commit(here=HERE):
    """The tree measured: SAGE_BENCH_COMMIT where the tree's .git is not its own
    (a copied tree), else git's short hash, +dirty with uncommitted changes."""
    given = os.environ.get("SAGE_BENCH_COMMIT")
    c = _run(["git", "-C", here, "rev-parse", "--short", "HEAD"], 10)
    if c and _run(["git", "-C", here, "status", "--porcelain"], 10):
        c += "+dirty"
    if given:
        return given if not c or c == given else f"{given} (as given; git here: {c})"
    return c


def machine(gpu_index=0, nvcc=None):
    """What the run measured on; a value nobody could tell is None."""
    def smi(field):
        out = _run(["nvidia-smi", "-i", str(gpu_index), f"--query-gpu={field}", "--format=csv,noheader"])
        return out.splitlines()[0].strip() if out else None
    cuda = None
    if nvcc:
        out = _run([nvcc, "--version"]) or ""
        for line in out.splitlines():
            if "release " in line:
                cuda = line.split("release ", 1)[1].split(",")[0].strip()
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = next((int(l.split()[1]) // 1024 for l in f if l.startswith("MemTotal:")), None)
    except OSError:
        pass
    return {"gpu": smi("name"), "driver": smi("driver_version"), "gpu_memory": smi("memory.total"),
            "gpu_index": gpu_index, "cuda": cuda, "cpus": os.cpu_count(), "host_memory_mib": mem,
            "kernel": os.uname().release, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "commit": commit(), "python": sys.version.split()[0]}


def result(bench, machine, settings, summary, **details):
    """A result document: the schema's keys first, then the benchmark's own."""
    doc = {"schema": SCHEMA, "bench": bench, "machine": machine, "settings": settings, "summary": summary}
    for k, v in details.items():
        if k in doc:
            raise ValueError(f"result: {k} is a schema key")
        doc[k] = v
    return doc


def _figures(node, path, problems, in_summary):
    if isinstance(node, dict):
        if "median" in node:
            missing = [k for k in STATS_KEYS if k not in node]
            if missing:
                problems.append(f"{path}: a median without {', '.join(missing)}")
            return
        for k, v in node.items():
            if k in RAW_KEYS:
                continue
            if (in_summary and isinstance(v, (int, float)) and not isinstance(v, bool)
                    and str(k).endswith(MEASURE_SUFFIXES)):
                problems.append(f"{path}.{k}: a bare number; a figure is a stats object (n, median, min, max)")
            _figures(v, f"{path}.{k}", problems, in_summary)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _figures(v, f"{path}[{i}]", problems, in_summary)


def check(doc):
    """Problems of a result document against the schema (empty: it conforms)."""
    if not isinstance(doc, dict):
        return ["not a JSON object"]
    problems = []
    if doc.get("schema") != SCHEMA:
        problems.append(f"schema: {doc.get('schema')!r}, not {SCHEMA!r}")
    if not isinstance(doc.get("bench"), str) or not doc.get("bench"):
        problems.append("bench: missing")
    m = doc.get("machine")
    if not isinstance(m, dict):
        problems.append("machine: missing")
    else:
        problems += [f"machine.{k}: missing" for k in MACHINE_KEYS if k not in m]
    for k in ("settings", "summary"):
        if not isinstance(doc.get(k), dict):
            problems.append(f"{k}: missing")
    for k, v in doc.items():
        if k not in RAW_KEYS:
            _figures(v, k, problems, k == "summary")
    return problems


def write(out_dir, doc, text=None, name=None, text_name=None, indent=1):
    """OUT_DIR/NAME.json (NAME: the bench), and TEXT_NAME.txt (default NAME)
    when text is given. A document that breaks the schema is still written
    (an hour of GPU time is not thrown away for a writer's bug) but every
    problem is said on stderr and returned; the writers' tests call check()."""
    problems = check(doc)
    for p in problems:
        print(f"bench_result: {doc.get('bench', '?')}: schema: {p}", file=sys.stderr)
    name = name or doc["bench"]
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name + ".json")
    _replace(path, json.dumps(doc, indent=indent) + "\n")
    if text is not None:
        _replace(os.path.join(out_dir, (text_name or name) + ".txt"), text.rstrip("\n") + "\n")
    return path


def _replace(path, text):
    """PATH holds TEXT or what it held before, never a part: a run killed while
    writing (benchmarks write after every step) leaves the last whole file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def selftest():
    assert median([3, 1, 2]) == 2 and median([1, 2, 3, 4]) == 2.5 and median([None]) is None
    assert stats([]) is None and stats([None]) is None
    assert stats([4, 1, 2.5]) == {"n": 3, "median": 2.5, "min": 1.0, "max": 4.0}
    mach = {k: "x" for k in MACHINE_KEYS}
    good = result("demo", mach, {"runs": 3}, {"native": {"ms": stats([1, 2, 3])}, "speedup": 2.0,
                                               "count": 7, "note": "text"}, raw=[{"ms": 1.0}])
    assert check(good) == [], check(good)
    assert list(good)[:5] == ["schema", "bench", "machine", "settings", "summary"]
    bad = json.loads(json.dumps(good))
    bad["summary"]["native"]["ms"] = {"median": 2.0}
    bad["summary"]["upload_ms"] = 5.0
    del bad["machine"]["commit"]
    p = check(bad)
    assert any("a median without n, min, max" in x for x in p), p
    assert any("summary.upload_ms: a bare number" in x for x in p), p
    assert any("machine.commit" in x for x in p), p
    # A median outside the summary (the suite's "duration") needs n and spread too;
    # raw records may hold anything.
    outside = dict(good, duration={"cfunc": {"median": 1}}, records=[{"median": 1}])
    assert check(outside) == ["duration.cfunc: a median without n, min, max"], check(outside)
    assert check({"schema": "x"})[0].startswith("schema:")
    try:
        result("demo", mach, {}, {}, schema="x")
        raise AssertionError("a detail may not shadow a schema key")
    except ValueError:
        pass
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = write(d, good, text="table")
        assert json.load(open(path)) == good and open(os.path.join(d, "demo.txt")).read() == "table\n"
        import contextlib
        import io
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            write(d, bad, name="bad")  # written all the same, problems on stderr
        assert "summary.upload_ms: a bare number" in err.getvalue(), err.getvalue()
        assert json.load(open(os.path.join(d, "bad.json"))) == bad
    os.environ["SAGE_BENCH_COMMIT"] = "abc1234"
    try:
        assert commit().startswith("abc1234")
    finally:
        del os.environ["SAGE_BENCH_COMMIT"]
    m = machine(nvcc="/nonexistent/nvcc")
    assert all(k in m for k in MACHINE_KEYS) and m["cpus"] and m["date"], m
    print("bench_result selftest: ok")
    return 0


def main(argv):
    if len(argv) >= 2 and argv[1] == "selftest":
        return selftest()
    if len(argv) >= 2 and argv[1] == "machine":
        nvcc, gpu = None, 0
        args = argv[2:]
        while args:
            if args[0] == "--nvcc" and len(args) > 1:
                nvcc, args = args[1], args[2:]
            elif args[0] == "--gpu-index" and len(args) > 1:
                gpu, args = int(args[1]), args[2:]
            else:
                print(f"bench_result: unknown argument {args[0]}", file=sys.stderr)
                return 2
        print(json.dumps(machine(gpu, nvcc)))
        return 0
    if len(argv) >= 3 and argv[1] == "check":
        bad = 0
        for path in argv[2:]:
            try:
                with open(path) as f:
                    problems = check(json.load(f))
            except (OSError, ValueError) as e:
                problems = [str(e)]
            for p in problems:
                print(f"{path}: {p}")
            bad += bool(problems)
            if not problems:
                print(f"{path}: ok")
        return 1 if bad else 0
    print(__doc__.split("\n\n")[-1].rstrip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except BrokenPipeError:  # `bench check ... | head`
        sys.exit(1)

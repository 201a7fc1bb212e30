"""The sharing-coverage benchmark (issue 14's "Done when"): how much of each
workload's uploads sharing serves, how fast a miss uploads, and what a hit
costs, native and SAGE side by side in one run. sharing-coverage.sh builds
the programs and calls

    sharing_coverage.py run --out DIR --build DIR --data DIR --logs DIR --cfunc BIN [--fake] [--quick]
                            [--runs N] [--only LIST] [--budget SEC]
    sharing_coverage.py merge OUT_DIR A.json B.json  runs split by --only, as one document
    sharing_coverage.py check-dry-run FILE.json      the --fake flow's own check
    sharing_coverage.py selftest                     the report on fabricated runs

Per workload (jax, resnet50, bert, gpt2, cfunc, llm): cold SAGE runs, each
with a broker of its own (cfunc and llm: --runs of them, the others one),
then on the last one's broker --runs rounds of (native run, SAGE run). A
workload prints `SAGE_BENCH {json}` with upload_ms (the upload the app waits
for) and upload_cpu_ms (its process's CPU time over it, SAGE's threads
included); every SAGE run writes a trace whose `sage-trace summary --json`
gives shared_fraction ((mapped + assembled) / all upload bytes: libsage's
counters, one definition) and the bytes uploaded. Every output is compared
with native's. gpt2 also runs 16 at once, native and SAGE (warm broker).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import bench_result as br

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = ("jax", "resnet50", "bert", "gpt2", "cfunc", "llm")
COLD_KINDS = ("cfunc", "llm")
SMALL_KINDS = ("bert", "resnet50")
CONCURRENT = 16
# The targets: shared fraction on a warm broker, cold GB/s, hits no slower than native (+5%).
FRACTION_TARGETS = {"jax": 0.95, "resnet50": 0.98, "bert": 0.95, "gpt2": 0.95}
GBPS_TARGET = 25.0
# Stand-ins for the dry run (simulated driver, no torch): the C function with
# a state dict's shape (file MiB, tensors). The flow is the GPU run's.
FAKE_SHAPES = {"cfunc": (48, 1), "llm": (64, 8), "gpt2": (24, 6), "bert": (16, 4), "resnet50": (16, 8),
               "jax": (16, 2)}


def parse_record(stdout):
    for line in stdout.splitlines():
        if line.startswith("SAGE_BENCH "):
            return json.loads(line[len("SAGE_BENCH "):])
    return None


class Broker:
    def __init__(self, saged, folder, log):
        self.socket = os.path.join(folder, "saged.sock")
        self.proc = subprocess.Popen([saged, "--socket", self.socket, "--foreground"], stdout=subprocess.DEVNULL,
                                     stderr=open(log, "a"))
        for _ in range(200):
            if os.path.exists(self.socket) or self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if not os.path.exists(self.socket):
            raise RuntimeError(f"saged did not come up (see {log})")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Run:
    def __init__(self, a):
        self.a = a
        self.start = time.monotonic()
        self.raw = {k: {"runs": []} for k in KINDS}
        self.problems = []
        self.refs = {}
        self.tmp = tempfile.mkdtemp(prefix="sharing-coverage-", dir=a.logs)
        self.n = 0
        self.sockets = []

    # ---------------------------------------------------------------- processes
    def weights(self, kind):
        if self.a.fake:
            mib, _ = FAKE_SHAPES[kind]
            path = os.path.join(self.a.data, f"{kind}-fake.bin")
            if not os.path.exists(path):
                subprocess.run([self.a.cfunc, "--gen", path, str(mib << 20)], check=True)
            return path
        if kind == "cfunc":
            path = os.path.join(self.a.data, f"cfunc-{self.a.cfunc_gib}g.bin")
            if not os.path.exists(path):
                subprocess.run([self.a.cfunc, "--gen", path, str(self.a.cfunc_gib << 30)], check=True,
                               stdout=subprocess.DEVNULL)
            return path
        gib = ["--gib", str(self.a.llm_gib)] if kind == "llm" else []
        path = os.path.join(self.a.data, f"{kind}{'-%sg' % self.a.llm_gib if kind == 'llm' else ''}.safetensors")
        if not os.path.exists(path):
            p = subprocess.run([sys.executable, os.path.join(HERE, "suite_fn.py"), "gen", kind, path] + gib,
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"suite_fn.py gen {kind}: {p.stderr.strip()[-300:]}")
        return path

    def command(self, kind, path):
        if self.a.fake:
            return [self.a.cfunc, path, str(FAKE_SHAPES[kind][1])]
        if kind == "cfunc":
            return [self.a.cfunc, path]
        return [sys.executable, os.path.join(HERE, "suite_fn.py"), "run", kind, path]

    def spawn(self, kind, path, broker, tag):
        """One process of KIND, native or (broker) under SAGE with a trace: (Popen, trace path or None)."""
        self.n += 1
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        if tag == "first":  # untimed: writes Python's byte code (lib.sh's bench_bytecode)
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        trace = os.path.join(self.tmp, f"{self.n}-{kind}-{tag}.json") if broker else None
        if broker:
            env.update({"LD_PRELOAD": self.a.preload, "SAGE_SHARE": "1", "SAGE_SOCKET": broker.socket,
                        "SAGE_TRACE": trace})
        return subprocess.Popen(self.command(kind, path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True), trace

    def invoke(self, kind, path, broker=None, tag="native"):
        """One process: its record (a failure: a record with "error")."""
        proc, trace = self.spawn(kind, path, broker, tag)
        return self.collect(kind, [proc], [trace], tag)[0]

    def collect(self, kind, procs, traces, tag):
        out = []
        for p, trace in zip(procs, traces):
            try:
                stdout, stderr = p.communicate(timeout=self.a.timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                stdout, stderr = p.communicate()
            rec = parse_record(stdout) if p.returncode == 0 else None
            if rec is None:
                rec = {"error": f"exit {p.returncode}: {stderr.strip()[-300:]}"}
                self.problems.append(f"{kind} {tag}: {rec['error']}")
            summary = self.trace_summary(trace) if trace and "error" not in rec else None
            if trace and summary is None and "error" not in rec:
                self.problems.append(f"{kind} {tag}: no trace (was libsage loaded?)")
            rec["tag"] = tag
            if summary:
                rec["sharing"] = summary.get("sharing", {})
                rec["shared_fraction"] = summary.get("shared_fraction")
                rec["htod_bytes"] = summary.get("bytes", {}).get("htod")
            ref = self.refs.setdefault(kind, rec.get("checksum")) if "error" not in rec else None
            if ref is not None and rec.get("checksum") != ref:
                self.problems.append(f"{kind} {tag}: output {rec.get('checksum')} differs from native's {ref}")
            self.raw[kind]["runs"].append(rec)
            out.append(rec)
        return out

    def trace_summary(self, trace):
        if not trace or not os.path.exists(trace):
            return None
        p = subprocess.run([self.a.sage_trace, "summary", "--json", trace], capture_output=True, text=True)
        try:
            return json.loads(p.stdout) if p.returncode == 0 else None
        except ValueError:
            return None

    def broker(self):
        # A short path of its own: a UNIX socket's path has at most 107 bytes.
        folder = tempfile.mkdtemp(prefix="sage-sc-")
        self.sockets.append(folder)
        return Broker(self.a.saged, folder, os.path.join(self.a.logs, "saged.log"))

    def cleanup(self):
        for folder in self.sockets:
            shutil.rmtree(folder, ignore_errors=True)

    def over_budget(self):
        return time.monotonic() - self.start > self.a.budget

    # ---------------------------------------------------------------- the plan
    def workload(self, kind):
        if self.over_budget():
            self.raw[kind]["skipped"] = "time budget"
            return
        try:
            path = self.weights(kind)
        except (RuntimeError, subprocess.CalledProcessError, OSError) as e:
            self.raw[kind]["skipped"] = f"no weights: {e}"
            return
        first = self.invoke(kind, path, tag="first")  # native: the reference output, the page cache warm
        if "error" in first:
            self.raw[kind]["skipped"] = f"the native run fails: {first['error']}"
            return
        broker = None
        try:
            for i in range(self.a.runs if kind in COLD_KINDS else 1):  # each cold run: a broker of its own
                if broker:
                    broker.stop()
                broker = self.broker()
                self.invoke(kind, path, broker, "cold")
            for _ in range(self.a.runs):
                self.invoke(kind, path)
                self.invoke(kind, path, broker, "warm")
            if kind == "gpt2":
                self.concurrent(kind, path, broker)
        except RuntimeError as e:
            self.problems.append(f"{kind}: {e}")
        finally:
            if broker:
                broker.stop()

    def concurrent(self, kind, path, broker):
        for _ in range(self.a.concurrent_rounds):
            for sage in (False, True):
                tag = "concurrent-" + ("sage" if sage else "native")
                started = [self.spawn(kind, path, broker if sage else None, tag) for _ in range(self.a.concurrent)]
                self.collect(kind, [p for p, _ in started], [t for _, t in started], tag)


# ---------------------------------------------------------------- the figures
def values(runs, tag, key):
    return [r.get(key) for r in runs if r.get("tag") == tag and "error" not in r and r.get(key) is not None]


def report(raw, problems):
    """The issue's document: workloads, cold_upload_gbps (+ CPU), concurrent16, small_hits; targets."""
    workloads, cold, cold_cpu, cold_ms, native_gbps, concurrent, small, targets = {}, {}, {}, {}, {}, {}, {}, {}
    for kind in KINDS:
        w = raw.get(kind, {})
        runs = w.get("runs", [])
        if w.get("skipped"):
            workloads[kind] = {"skipped": w["skipped"]}
            continue
        fractions = values(runs, "warm", "shared_fraction")
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
            size = next((r.get("htod_bytes") for r in colds if r.get("htod_bytes")), None)
            native_gbps[kind] = br.stats([size / (ms * 1e6) for ms in values(runs, "native", "upload_ms")
                                          if size and ms]) if size else None
            if cold[kind]:
                targets[f"{kind} cold upload >= {GBPS_TARGET} GB/s"] = cold[kind]["median"] >= GBPS_TARGET
        if kind == "gpt2":
            n = br.stats(values(runs, "concurrent-native", "upload_ms"))
            s = br.stats(values(runs, "concurrent-sage", "upload_ms"))
            concurrent[kind] = {"native_ms": n, "sage_ms": s}
            if n and s:
                targets[f"{CONCURRENT} gpt2 at once no slower than native"] = s["median"] <= n["median"]
        if kind in SMALL_KINDS:
            n, s = workloads[kind]["native_upload_ms"], workloads[kind]["sage_upload_ms"]
            small[kind] = {"native_ms": n, "sage_ms": s}
            if n and s:
                targets[f"{kind} hit within 5% of native's copy"] = s["median"] <= 1.05 * n["median"]
    return {"workloads": workloads, "cold_upload_gbps": cold, "cold_upload_ms": cold_ms, "cold_upload_cpu": cold_cpu,
            "native_upload_gbps": native_gbps, "concurrent16": concurrent, "small_hits": small,
            "targets": targets, "outputs_identical": not any("differs" in p for p in problems)}


def table(doc):
    s, lines = doc["summary"], ["sharing-coverage (median [min-max], n)"]

    def f(st, unit=""):
        return f"{st['median']}{unit} [{st['min']}-{st['max']}] n={st['n']}" if st else "-"
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
    for kind, c in s["concurrent16"].items():
        lines.append(f"  {doc['settings'].get('concurrent', CONCURRENT)} {kind} at once: native {f(c['native_ms'], ' ms')}, SAGE {f(c['sage_ms'], ' ms')}")
    for name, met in s["targets"].items():
        lines.append(f"  target {'met ' if met else 'MISSED'}: {name}")
    return "\n".join(lines)


def document(a, raw, problems, machine):
    summary = report(raw, problems)
    settings = {k: getattr(a, k) for k in ("runs", "quick", "fake", "only", "budget", "cfunc_gib", "llm_gib",
                                           "concurrent", "concurrent_rounds")}
    settings["staging"] = getattr(a, "staging", None) or os.environ.get("SAGE_SHARE_STAGING", "default")
    return br.result("sharing-coverage", machine, settings, summary, problems=problems, raw=raw,
                     **{k: summary[k] for k in ("workloads", "cold_upload_gbps", "concurrent16", "small_hits")})


def run(argv):
    p = argparse.ArgumentParser(prog="sharing_coverage.py run")
    for k in ("out", "build", "data", "logs", "cfunc"):
        p.add_argument("--" + k, required=True)
    p.add_argument("--fake", action="store_true")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--only", default="")
    p.add_argument("--budget", type=float, default=560)
    a = p.parse_args(argv)
    a.saged = os.path.join(a.build, "daemon", "saged")
    a.sage_trace = os.path.join(a.build, "tools", "sage-trace")
    a.preload = os.environ.get("SAGE_BENCH_PRELOAD") or os.path.join(a.build, "intercept", "libsage.so")
    a.cfunc_gib, a.llm_gib = (1, 1) if a.fake else (6, 2 if a.quick else 6)
    a.concurrent = 4 if a.fake else CONCURRENT
    a.concurrent_rounds = 1 if a.quick or a.fake else 2
    a.timeout = 60 if a.fake else 180
    kinds = [k for k in KINDS if not a.only or k in a.only.split(",")]
    r = Run(a)
    try:
        for kind in KINDS:
            if kind in kinds:
                r.workload(kind)
            else:
                r.raw[kind]["skipped"] = "not asked for (--only)"
    finally:
        r.cleanup()
    machine = br.machine() if not a.fake else dict(br.machine(), gpu="simulated (tests/fakecuda)")
    doc = document(a, r.raw, r.problems, machine)
    br.write(a.out, doc, table(doc))
    print(table(doc))
    for prob in r.problems:
        print("sharing-coverage: " + prob, file=sys.stderr)
    return 0 if doc["summary"]["outputs_identical"] and not any("exit" in x for x in r.problems) else 1


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
    for b in bad:
        print("sharing-coverage dry run: " + b, file=sys.stderr)
    return 1 if bad else 0


def selftest():
    raw = {}
    for kind in KINDS:
        runs = [{"tag": "native", "upload_ms": 100.0 + i, "checksum": "1"} for i in range(3)]
        runs += [{"tag": "warm", "upload_ms": 10.0 + i, "checksum": "1",
                  "shared_fraction": 0.99} for i in range(3)]
        runs += [{"tag": "cold", "upload_ms": 200.0, "upload_cpu_ms": 900.0, "htod_bytes": 6 << 30,
                  "sharing": {"SHARE_NS_STAGE_CPU": 8e8, "SHARE_STAGED": 1}} for _ in range(3)]
        runs += [{"tag": t, "upload_ms": 50.0} for t in ("concurrent-native", "concurrent-sage") for _ in range(4)]
        raw[kind] = {"runs": runs}
    raw["jax"] = {"runs": [], "skipped": "no jax workload"}
    a = argparse.Namespace(runs=3, quick=False, fake=True, only="", budget=1, cfunc_gib=1, llm_gib=1, concurrent=4,
                           concurrent_rounds=1)
    doc = document(a, raw, [], {k: None for k in br.MACHINE_KEYS})
    assert br.check(doc) == [], br.check(doc)
    s = doc["summary"]
    assert abs(s["cold_upload_gbps"]["cfunc"]["median"] - (6 << 30) / 2e8) < 0.01
    assert s["workloads"]["resnet50"]["shared_fraction"]["median"] == 0.99
    assert s["targets"]["resnet50 shared_fraction >= 0.98"] and s["targets"]["cfunc cold upload >= 25.0 GB/s"]
    assert s["small_hits"]["bert"]["native_ms"]["median"] == 101.0 and doc["workloads"]["jax"] == {"skipped": "no jax workload"}
    assert s["concurrent16"]["gpt2"]["sage_ms"]["n"] == 4 and "cold" in table(doc)
    print("sharing_coverage selftest: ok")
    return 0


def main(argv):
    if len(argv) >= 2 and argv[1] == "run":
        return run(argv[2:])
    if len(argv) == 3 and argv[1] == "check-dry-run":
        return check_dry_run(argv[2])
    if len(argv) >= 4 and argv[1] == "merge":
        return merge(argv[2], argv[3:])
    if len(argv) == 2 and argv[1] == "selftest":
        return selftest()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

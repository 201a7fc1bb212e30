"""The processes of the suspend benchmark (scripts/bench/suspend.sh runs it;
suspend_report.py has the pure logic and the document).

    suspend_runner.py --out DIR --build DIR --logs DIR --data DIR
                      [--quick] [--only LIST] [--runs N] [--budget SEC]
                      [--module FILE] [--fake] [--resume-by auto|gate|operator]
                      [--restore-tool FILE]

Instances are long-lived function processes (suspend_fn.py serve/http: the
suite's handler unmodified) under LD_PRELOAD=libsage.so with SAGE_SUSPEND=1
and a saged of this run. They are suspended by `sagectl suspend PID` (the
operator path) and, where libsage has it, by SAGE_SUSPEND_IDLE; the first
invocation after that resumes them: through libsage's gate (resume_by
"gate": the call itself asks the broker) or, where libsage has no gate yet,
by `sagectl resume PID` right before the invocation (resume_by "operator";
its time is in resumed_ms). A gate that does not answer within WATCHDOG_S
is resumed by sagectl so that the run never hangs, and counted as a failure.
resume_ms is the broker's measure of the restore (`sagectl instances --json`),
GPU MiB per process from nvidia-smi (the simulated driver's own count with --fake).
"""
import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_result  # noqa: E402
from bench_proc import stop  # noqa: E402
import suspend_parts  # noqa: E402
import suspend_report as rep  # noqa: E402

WATCHDOG_S = 20.0
GATE_FAILURES_MAX = 2
LOAD_TIMEOUT_S = 180.0


def now():
    return time.monotonic()


class Instance:
    """One function process: suspend_fn.py serve (pipe) or http."""

    def __init__(self, run, kind, sage, extra_env=None, http=False, tag=""):
        self.run, self.kind, self.http = run, kind, http
        env = dict(run.base_env)
        if sage:
            env.update(run.sage_env)
            env.update(extra_env or {})
        mode = "http" if http else "serve"
        cmd = [run.python, os.path.join(HERE, "suspend_fn.py"), mode, kind, run.weights[kind]]
        if kind in ("cfunc", "sgemm"):
            cmd += ["--module", run.module]
        self.log = open(os.path.join(run.logs, f"{kind}.{tag or mode}.{len(run.procs)}.stderr"), "w")
        self.p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.log, text=True, bufsize=1, start_new_session=True)
        run.procs.append(self)
        self.pid = self.p.pid
        self.lines = queue.Queue()
        threading.Thread(target=self._reader, daemon=True).start()
        self.ready = None
        self.seq = 0

    def _reader(self):
        for line in self.p.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _next(self, tag, timeout, seq=None):
        """The next `TAG {json}` line (with "seq" == seq when given: an answer to an
        earlier request the watchdog gave up on is skipped), None at timeout or EOF."""
        end = now() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, end - now()))
            except queue.Empty:
                return None
            if line is None:  # the process closed its output: it is gone
                self.lines.put(None)  # every later read ends at once too
                return None
            got = rep.tagged(line, tag)
            if got and (seq is None or got[0].get("seq") == seq):
                return got[0]

    def wait_ready(self, timeout=LOAD_TIMEOUT_S):
        self.ready = self._next("SAGE_READY", timeout)
        return self.ready is not None

    def invoke(self, timeout=WATCHDOG_S):
        """(wall ms, record); the record has "error" when the call failed or timed out."""
        a = now()
        if self.http:
            import urllib.request
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ready['port']}/invoke",
                                            timeout=timeout) as r:
                    rec = json.loads(r.read())
            except Exception as e:  # noqa: BLE001 - a failed request is a result
                rec = {"error": f"{type(e).__name__}: {e}"}
            return (now() - a) * 1000.0, rec
        self.seq += 1
        try:
            self.p.stdin.write(f"{self.seq}\n")
            self.p.stdin.flush()
        except OSError as e:
            return 0.0, {"error": f"write: {e}"}
        rec = self._next("SAGE_BENCH", timeout, str(self.seq))
        return (now() - a) * 1000.0, rec if rec is not None else {"error": f"no answer in {timeout} s"}

    def stop(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except OSError:
                pass
        self.p.wait()
        self.log.close()


class Run(suspend_parts.Parts):
    def __init__(self, a):
        self.a = a
        self.t_start = now()
        self.python = os.environ.get("PYTHON", sys.executable)
        self.build = os.path.abspath(a.build)
        self.logs, self.out = a.logs, a.out
        self.fake = a.fake
        self.module = a.module
        self.plan = rep.plan(a.quick, set(filter(None, (a.only or "").split(","))), a.fake)
        self.procs = []
        self.refs = {}
        self.gate_failures = 0
        self.saged = None
        self.sock = os.path.join(a.logs, "saged.sock")
        self.sagectl_bin = os.path.join(self.build, "tools", "sagectl")
        self.base_env = {k: v for k, v in os.environ.items() if not k.startswith("SAGE_") and k != "LD_PRELOAD"}
        self.base_env["PYTHONUNBUFFERED"] = "1"
        # Named by what they hold, so that a --data folder shared by runs never serves the wrong size.
        self.cfunc_bytes = 8 << 20 if a.fake else (512 << 20 if a.quick else 1 << 30)
        names = {"cfunc": f"cfunc-{self.cfunc_bytes >> 20}M.bin", "sgemm": f"sgemm-{256 if a.fake else 4096}.bin",
                 "llm": f"llm-{self.plan['llm_gib']}G.safetensors"}
        self.weights = {k: os.path.join(a.data, names.get(k, f"{k}.safetensors")) for k in rep.WORKLOADS}
        libsage = os.path.join(self.build, "intercept", "libsage.so")
        # SAGE_BENCH_PRELOAD: what instances preload (the tests: a sanitizer's runtime first, then libsage).
        preload = os.environ.get("SAGE_BENCH_PRELOAD") or libsage
        self.rt_preload = " ".join(w for w in preload.split() if "libsage" not in w)
        self.sage_env = {"LD_PRELOAD": preload, "SAGE_SOCKET": self.sock, "SAGE_SUSPEND": "1"}
        # SAGE_BENCH_SUSPEND_SHARE=1: instances share their uploads through the broker (SAGE_SHARE=1), so
        # a suspend parks the broker's extents and a resume maps them again (issue 12's "sharing on").
        self.share = os.environ.get("SAGE_BENCH_SUSPEND_SHARE", "") == "1"
        if self.share:
            self.sage_env["SAGE_SHARE"] = "1"
        # SAGE_BENCH_SUSPEND_ENV="NAME=VALUE ...": more SAGE_* options for the instances (e.g.
        # SAGE_CTX_STACK_LIMIT=16, lean contexts), recorded in the settings beside the figures.
        self.extra_env = dict(w.split("=", 1) for w in os.environ.get("SAGE_BENCH_SUSPEND_ENV", "").split() if "=" in w)
        self.sage_env.update(self.extra_env)
        self.raw = {"workloads": {}, "concurrent": {}, "faas": {}, "oversub": {}, "problems": [],
                    "skipped": [], "parts_s": {}}
        # SAGE_BENCH_SUSPEND_ASSUME=idle,cap: take the features as there (a dry run of
        # those parts' code on a tree without them; the figures then mean nothing).
        assume = set(os.environ.get("SAGE_BENCH_SUSPEND_ASSUME", "").split(","))
        self.has_idle = "idle" in assume or rep.has_option(libsage, "SAGE_SUSPEND_IDLE")
        self.resume_by = a.resume_by if a.resume_by != "auto" else ("gate" if self.has_idle else "operator")
        help_text = subprocess.run([os.path.join(self.build, "daemon", "saged"), "--help"], capture_output=True,
                                   text=True).stdout
        self.has_cap = "--instance-memory" in help_text or "cap" in assume
        self.cap_option = "--instance-memory" in help_text
        self.evict_option = "--instance-evict" in help_text

    def left(self):
        return self.a.budget - (now() - self.t_start)

    def fits(self, what, est):
        if est <= self.left():
            return True
        self.raw["skipped"].append(f"{what}: estimated {est:.0f} s, {self.left():.0f} s of the budget left")
        print(f"suspend: SKIPPED {what} (estimated {est:.0f} s, {self.left():.0f} s left)", flush=True)
        return False

    # ------------------------------------------------------------ broker
    def start_saged(self, extra=()):
        self.stop_saged()
        log = open(os.path.join(self.logs, f"saged.{len(self.procs)}.log"), "w")
        cmd = [os.path.join(self.build, "daemon", "saged"), "--foreground", "--socket", self.sock, "-v",
               "--max-resumes", "16", *extra, *os.environ.get("SAGE_BENCH_SAGED_ARGS", "").split()]
        env = dict(self.base_env)
        self.saged = (subprocess.Popen(cmd, env=env, stderr=log, stdout=log, start_new_session=True), log)
        end = now() + 20
        while now() < end:
            if self.sagectl("ping")[0] == 0:
                return True
            if self.saged[0].poll() is not None:
                break
            time.sleep(0.05)
        self.raw["problems"].append(f"saged did not come up: {' '.join(cmd)}")
        return False

    def stop_saged(self):
        if self.saged:
            p, log = self.saged
            if p.poll() is None:
                stop(p, 30)
            log.close()
            self.saged = None

    def sagectl(self, *args, timeout=60):
        try:
            p = subprocess.run([self.sagectl_bin, "--socket", self.sock, *args], capture_output=True, text=True,
                               timeout=timeout, env=self.base_env)
        except subprocess.TimeoutExpired:
            return 124, "timeout"
        return p.returncode, p.stdout + p.stderr

    def entry(self, pid):
        rc, text = self.sagectl("instances", "--json")
        self.last_listing = (rc, text)
        return rep.instances(text).get(pid)

    def wait_state(self, pid, states, timeout):
        end = now() + timeout
        while True:
            e = self.entry(pid)
            if e and e["state"] in states:
                return e
            if now() >= end:
                return e
            time.sleep(0.02)

    # ------------------------------------------------------------ memory
    def gpu_mib(self, pids):
        """{pid: MiB} of the processes' GPU memory (absent from nvidia-smi: 0)."""
        if self.fake:
            env = dict(self.base_env)
            env.pop("LD_PRELOAD", None)
            if self.rt_preload:
                env["LD_PRELOAD"] = self.rt_preload
            p = subprocess.run([self.python, os.path.join(HERE, "suspend_fn.py"), "fakemem",
                                *[str(x) for x in pids]], capture_output=True, text=True, env=env, timeout=30)
            try:
                got = json.loads(p.stdout)
            except ValueError:
                got = {}
            return {pid: got[str(pid)] / 1048576.0 if got.get(str(pid), -1) >= 0 else None for pid in pids}
        try:
            text = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                   "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                  timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            return {pid: None for pid in pids}
        apps = rep.smi_apps(text)
        return {pid: apps.get(pid, 0.0) for pid in pids}

    def device_used_mib(self):
        """memory.used of GPU 0 (the simulated driver: None)."""
        if self.fake:
            return None
        try:
            text = subprocess.run(["nvidia-smi", "-i", "0", "--query-gpu=memory.used",
                                   "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                  timeout=20).stdout
            return float(text.split()[0])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None

    # ------------------------------------------------------------ steps
    def cold(self, kind):
        """One invocation in a new native process: (wall ms, record)."""
        cmd = [self.python, os.path.join(HERE, "suspend_fn.py"), "run", kind, self.weights[kind]]
        if kind in ("cfunc", "sgemm"):
            cmd += ["--module", self.module]
        a = now()
        p = subprocess.run(cmd, env=self.base_env, capture_output=True, text=True, timeout=LOAD_TIMEOUT_S)
        ms = (now() - a) * 1000.0
        with open(os.path.join(self.logs, f"{kind}.cold.log"), "a") as f:
            f.write(p.stdout + p.stderr)
        recs = rep.tagged(p.stdout, "SAGE_BENCH")
        return ms, recs[0] if p.returncode == 0 and recs else {"error": f"rc {p.returncode}"}

    def suspend(self, inst):
        a = now()
        rc, text = self.sagectl("suspend", str(inst.pid))
        return rc == 0 and "suspended" in text, (now() - a) * 1000.0, text.strip()

    def resumed_invoke(self, inst):
        """The first invocation of a suspended instance: (wall ms, record, resume_ms, how)."""
        how = self.resume_by
        a = now()
        if how == "operator":
            while True:
                rc, text = self.sagectl("resume", str(inst.pid))
                if rc == 0 or "busy" not in text.lower() or now() - a > WATCHDOG_S:
                    break
                time.sleep(0.01)  # the broker's resume cap said busy: try again
            if rc != 0:
                return (now() - a) * 1000.0, {"error": f"sagectl resume: {text.strip()}"}, None, how
            _, rec = inst.invoke()
        else:
            _, rec = inst.invoke()
            if "error" in rec:  # the gate did not resume it: never leave it hanging
                self.sagectl("resume", str(inst.pid))
                rec = {"error": f"gate: {rec['error']}"}
                self.gate_failures += 1
                if self.gate_failures == GATE_FAILURES_MAX:
                    # A broken gate would cost WATCHDOG_S an invocation: the budget could not hold.
                    self.resume_by = "operator"
                    self.raw["problems"].append(f"the gate did not resume {GATE_FAILURES_MAX} times: "
                                                "resumed by sagectl from here on")
        ms = (now() - a) * 1000.0
        e = self.entry(inst.pid)
        return ms, rec, (e or {}).get("resume_ms"), how

    def check(self, w, rec, ref):
        w["invocations"] = w.get("invocations", 0) + 1
        if "error" in rec:
            w["failures"] = w.get("failures", 0) + 1
            w.setdefault("problems", []).append(rec["error"])
        elif rec.get("checksum") != ref:
            w["mismatches"] = w.get("mismatches", 0) + 1

    def start_instances(self, kind, n, extra_env=None, http=False, tag="", sage=True):
        insts = [Instance(self, kind, sage, extra_env, http, tag) for _ in range(n)]
        ok = [i for i in insts if i.wait_ready()]
        for i in insts:
            if i not in ok:
                self.raw["problems"].append(f"{kind} instance {i.pid} did not come up (see its stderr log)")
                i.stop()
        for i in ok:
            if i.ready.get("sage_loaded") != sage:
                self.raw["problems"].append(f"{kind} instance {i.pid}: libsage loaded {i.ready.get('sage_loaded')}, "
                                            f"wanted {sage}")
            if sage:
                e = self.wait_state(i.pid, ("active", "idle", "suspended"), 30)
                if not e or e["state"] not in ("active", "idle", "suspended"):
                    rc, text = self.last_listing
                    self.raw["problems"].append(f"{kind} instance {i.pid}: not registered with saged in 30 s "
                                                f"(listed as {e}; sagectl instances: rc {rc}, {text[-300:]!r})")
        return ok

    def setup(self):
        """The weights of every workload the plan uses (untimed; byte code written as the suite does)."""
        kinds = set(self.plan["kinds"]) if "workloads" in self.plan["parts"] else set()
        if set(self.plan["parts"]) - {"workloads"}:
            kinds.add(self.plan["heavy"])
        env = {k: v for k, v in self.base_env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        for kind in sorted(kinds):
            path = self.weights[kind]
            if os.path.exists(path):
                continue
            if kind == "cfunc":
                cmd = [self.python, os.path.join(HERE, "suspend_fn.py"), "gen", "cfunc", path, str(self.cfunc_bytes)]
            elif kind == "sgemm":
                cmd = [self.python, os.path.join(HERE, "suspend_fn.py"), "gen", "sgemm", path]
                cmd += ["256"] if self.fake else []
            else:
                cmd = [self.python, os.path.join(HERE, "suite_fn.py"), "gen", kind, path]
                if kind == "llm":
                    cmd += ["--gib", str(self.plan["llm_gib"])]
            a = now()
            p = subprocess.run(cmd, env=env, capture_output=True, text=True)
            print(f"suspend: weights of {kind} ({now() - a:.1f} s){'' if p.returncode == 0 else ': FAILED'}",
                  flush=True)
            if p.returncode != 0:
                self.raw["problems"].append(f"weights of {kind}: {(p.stderr or p.stdout).strip()[-300:]}")

    def main(self):
        self.setup()
        if not self.start_saged():
            return 1
        parts = self.plan["parts"]
        steps = []
        if "workloads" in parts:
            steps += [(f"workload {k}", lambda k=k: self.workload(k)) for k in self.plan["kinds"]]
        if "concurrent" in parts:
            steps += [(f"concurrent {n}", lambda n=n: self.concurrent(n)) for n in self.plan["concurrency"]]
        if "oversub" in parts:
            steps.append(("oversubscription", self.oversub))
        if "faas" in parts:
            steps.append(("faas", self.faas))
        try:
            for name, step in steps:
                a = now()
                print(f"suspend: {name} ({self.left():.0f} s of the budget left)", flush=True)
                try:
                    step()
                except Exception as e:  # noqa: BLE001 - one part's bug must not lose the others
                    self.raw["problems"].append(f"{name}: {type(e).__name__}: {e}")
                self.raw["parts_s"][name] = round(now() - a, 1)
                # What is measured so far, in case the device call is cut short.
                with open(os.path.join(self.out, "suspend.partial.json"), "w") as f:
                    json.dump(self.raw, f)
        finally:
            for p in self.procs:
                p.stop()
            self.stop_saged()
        settings = {"quick": self.a.quick, "runs": self.a.runs, "budget_s": self.a.budget, "fake": self.fake,
                    "resume_by": self.resume_by, "idle_suspend": self.has_idle, "instance_memory": self.has_cap,
                    "plan": self.plan, "saged": "--max-resumes 16", "watchdog_s": WATCHDOG_S,
                    "sharing": self.share, "preload": self.sage_env["LD_PRELOAD"],
                    "instance_env": self.extra_env}
        mach = bench_result.machine()
        if self.fake:
            mach["gpu"] = "simulated (tests/fakecuda)"
        try:
            doc = rep.document(self.raw, mach, settings)
            doc["raw"] = self.raw
            text = rep.table(doc)
        except Exception as e:  # noqa: BLE001 - a writer's bug must not lose a GPU run's records
            print(f"suspend: the report failed ({type(e).__name__}: {e}): raw records only", file=sys.stderr)
            doc = bench_result.result("suspend", mach, settings, {"report_failed": str(e)}, raw=self.raw)
            bench_result.write(self.out, doc)
            return 1
        bench_result.write(self.out, doc, text=text)
        print(text, flush=True)
        bad = doc["summary"]["mismatches"] or doc["summary"]["failures"]
        return 1 if bad else 0


def main(argv):
    ap = argparse.ArgumentParser(prog="suspend_runner.py")
    ap.add_argument("--out", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--logs", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--module")
    ap.add_argument("--restore-tool", help="suspend_restore (the driver's restore alone, part concurrent)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--fake", action="store_true")
    ap.add_argument("--only")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--budget", type=float, default=540)
    ap.add_argument("--resume-by", choices=("auto", "gate", "operator"), default="auto")
    a = ap.parse_args(argv[1:])
    os.makedirs(a.logs, exist_ok=True)
    os.makedirs(a.out, exist_ok=True)
    return Run(a).main()


if __name__ == "__main__":
    sys.exit(main(sys.argv))

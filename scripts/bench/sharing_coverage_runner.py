"""The processes of the sharing-coverage benchmark (sharing_coverage.py run):
brokers, workload invocations, the plan, the time budget, and a result
document that is never lost.

Two phases. Preparation, every workload at once (untimed: nothing it runs is
a figure): its weights (generation timed and reported), a first native run
(the reference output, the page cache, Python's byte code) and, for the
workloads measured on a warm broker only, their cold SAGE run on the broker
they keep (with learned placement it learns) and one warm-up invocation
(it publishes what placement moved). Measurement, one process at a time:
passes over the workloads (sc.MEASURE_ORDER), the first one sample of each
figure (a cold run, a round of native + SAGE, a round of N processes at
once), the next ones more, so a budget that runs out costs samples, not
figures.

Time: no step starts after --budget seconds from the script's start, nor
one whose expected length (the longest of its kind so far) would cross the
deadline (budget + margin); at the deadline whatever still runs is killed.
The document is written (atomically) at the start, after every step, and on
SIGTERM/SIGINT, with "state" and "missing": a run killed even by SIGKILL
leaves the last step's document.
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import bench_result as br
import sharing_coverage as sc

HERE = os.path.dirname(os.path.abspath(__file__))


class Interrupted(Exception):
    pass


class Broker:
    def __init__(self, saged, log):
        # A short path of its own: a UNIX socket's path has at most 107 bytes.
        self.folder = tempfile.mkdtemp(prefix="sage-sc-")
        self.socket = os.path.join(self.folder, "saged.sock")
        self.place = os.path.join(self.folder, "place")  # learned placement: a folder per broker
        os.mkdir(self.place)
        self.proc = subprocess.Popen([saged, "--socket", self.socket, "--foreground"], stdout=subprocess.DEVNULL,
                                     stderr=open(log, "a"))
        for _ in range(200):
            if os.path.exists(self.socket) or self.proc.poll() is not None:
                break
            time.sleep(0.05)  # saged has no readiness signal but its socket
        if not os.path.exists(self.socket):
            self.stop()
            raise RuntimeError(f"saged did not come up (see {log})")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def broker_sched(broker):
    """saged's (CPU ns, run-queue wait ns, times scheduled) so far: /proc/PID/schedstat (None: not readable)."""
    try:
        with open(f"/proc/{broker.proc.pid}/schedstat") as f:
            return tuple(int(v) for v in f.read().split()[:3])
    except (OSError, ValueError):
        return None


def plan(a):
    """Samples wanted per workload: cold runs, warm-ups, rounds (native + SAGE), rounds of N at once."""
    want = {}
    for kind in sc.KINDS:
        cold = a.runs if kind in sc.COLD_KINDS else 1
        rounds = a.runs
        if a.quick and kind in ("jax", "cfunc", "llm"):
            rounds = 1  # their figure is the fraction or the cold run
        if a.quick and kind == "gpt2":
            rounds = 0  # its fraction comes from the N SAGE processes at once
        want[kind] = {"first": 1, "cold": cold, "warmup": 1, "rounds": rounds,
                      "concurrent": a.concurrent_rounds if kind == "gpt2" else 0}
    return want


# Expected seconds on an H100 (warm page cache and byte code), for the plan printed at the start:
# one invocation (native or SAGE), from share_hits.sh's run at 125e3da (resnet50, bert, gpt2) and
# estimates (jax, cfunc 2 GiB, llm 1 GiB); N gpt2 at once: 16 took ~35 s; the weights on a fresh
# machine (jax and cfunc measured; the others estimated: suite_gen.py's import of the model's
# libraries, their byte code compiled before, + an uninitialised build; 0.8 s for resnet50 here).
INVOKE_S = {"jax": 6.0, "resnet50": 3.7, "bert": 7.5, "gpt2": 6.2, "cfunc": 3.0, "llm": 6.0}
GEN_S = {"jax": 1.6, "resnet50": 4.0, "bert": 5.0, "gpt2": 6.0, "cfunc": 1.5, "llm": 3.0}


def expected(a, want, kinds):
    """(lines, total seconds): the plan's steps with their expected length."""
    prep, lines, total = {}, [], 0.0
    for kind in kinds:
        inv = INVOKE_S[kind]
        prep[kind] = GEN_S[kind] + (0 if kind in sc.COLD_KINDS else 2 * inv)  # + cold run + warm-up
    slow = max(prep, key=prep.get) if prep else None
    if slow:
        total = prep[slow]
        lines.append(f"preparation (every workload at once): {prep[slow]:.0f} s (slowest: {slow}: weights "
                     f"{GEN_S[slow]:.0f} s" + ("" if slow in sc.COLD_KINDS else ", a cold run and a warm-up") + ")")
    for kind in kinds:
        w, inv, parts = want[kind], INVOKE_S[kind], []
        if kind in sc.COLD_KINDS:
            parts += [(f"{w['cold']} cold", w["cold"] * inv), ("warm-up", inv)]
        if w["rounds"]:
            parts.append((f"{w['rounds']} round(s)", w["rounds"] * 2 * inv))
        if w["concurrent"]:
            at_once = max(inv, 35.0 * a.concurrent / sc.CONCURRENT)
            sides = 2 + len(getattr(a, "variants", None) or [])
            parts.append((f"{w['concurrent']} x {a.concurrent} at once, native + SAGE" +
                          (f" + {sides - 2} variant(s)" if sides > 2 else ""), w["concurrent"] * sides * at_once))
        s = sum(t for _, t in parts)
        total += s
        lines.append(f"{kind}: {s:.0f} s (" + ", ".join(f"{n} {t:.0f} s" for n, t in parts) + ")")
    return lines, total


class Run:
    def __init__(self, a, machine):
        self.a, self.machine = a, machine
        self.started = a.started or time.time()  # the script's start (wall clock: across processes)
        self.deadline = a.budget + a.margin
        self.raw = {k: {"runs": []} for k in sc.KINDS}
        self.want = plan(a)
        self.done = {k: {s: 0 for s in self.want[k]} for k in sc.KINDS}
        self.problems, self.failures = [], []
        self.brokers, self.est, self.all_brokers = {}, {}, []
        self.tmp = tempfile.mkdtemp(prefix="sharing-coverage-", dir=a.logs)
        self.n = 0
        self.batches = {}  # rounds at once run so far, per tag
        self.live = set()
        self.lock = threading.RLock()
        self.stopping = None  # why the run stops early (a signal)
        self.timeline = {}

    def elapsed(self):
        return time.time() - self.started

    # ---------------------------------------------------------------- the document
    def missing(self):
        out = []
        for kind in sc.KINDS:
            w = self.raw[kind]
            if w.get("skipped"):
                if not w["skipped"].startswith("not asked for"):
                    out.append(f"{kind}: skipped: {w['skipped']}")
                continue
            gaps = [f"{s} {self.done[kind][s]}/{n}" for s, n in self.want[kind].items() if self.done[kind][s] < n]
            if gaps:
                out.append(f"{kind}: " + ", ".join(gaps) + (f" ({w['cut']})" if w.get("cut") else ""))
        return out

    def write(self, state):
        with self.lock:  # one writer at a time (preparation runs in threads)
            raw = json.loads(json.dumps(self.raw))
            doc = sc.document(self.a, raw, list(self.problems), self.machine)
            doc.update(state=state, missing=self.missing(), plan=self.want,
                       timeline=dict(self.timeline, written_at_s=round(self.elapsed(), 1)))
            br.write(self.a.out, doc, sc.table(doc))
        return doc

    # ---------------------------------------------------------------- processes
    def weights(self, kind):
        a = self.a
        if a.fake:
            mib, _ = sc.FAKE_SHAPES[kind]
            path, cmd = os.path.join(a.data, f"{kind}-fake.bin"), [a.cfunc, "--gen", None, str(mib << 20)]
        elif kind == "cfunc":
            path = os.path.join(a.data, f"cfunc-{a.cfunc_gib}g.bin")
            cmd = [a.cfunc, "--gen", None, str(a.cfunc_gib << 30)]
        elif kind == "jax":
            for mod in ("numpy", "jax"):
                if importlib.util.find_spec(mod) is None:
                    raise sc.Skip(f"{mod} not installed")
            path, cmd = os.path.join(a.data, "jax.npy"), [sys.executable, os.path.join(HERE, "suite_jax.py"), "gen", None]
        else:
            gib = ["--gib", str(a.llm_gib)] if kind == "llm" else []
            # llm's name as suspend.sh's: one --data folder serves both in one call
            path = os.path.join(a.data, f"{kind}{'-%sG' % a.llm_gib if kind == 'llm' else ''}.safetensors")
            cmd = [sys.executable, os.path.join(HERE, "suite_fn.py"), "gen", kind, None] + gib
        t = time.time()
        generated = not os.path.exists(path)
        if generated:
            env = dict(os.environ)
            env.pop("PYTHONDONTWRITEBYTECODE", None)  # untimed: it writes the byte code the functions read
            with self.lock:
                if self.stopping:
                    raise Interrupted(self.stopping)
                p = subprocess.Popen([path if c is None else c for c in cmd], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
                self.live.add(p)
            try:
                out, err = p.communicate(timeout=max(0.1, self.deadline - self.elapsed()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                raise sc.Skip("no weights: their generation was killed at the deadline")
            finally:
                with self.lock:
                    self.live.discard(p)
            if p.returncode != 0:
                raise sc.Skip(f"no weights: generation failed: exit {p.returncode}: {err.strip()[-300:]}")
        self.raw[kind]["weights"] = {"generated": generated, "gen_s": round(time.time() - t, 2),
                                     "bytes": os.path.getsize(path)}
        if generated and '"manifest"' in out:  # suite_gen.py's line: made from the manifest, or why not
            try:
                self.raw[kind]["weights"]["manifest"] = json.loads(out.strip().splitlines()[-1]).get("manifest")
            except ValueError:
                pass
        return path

    def command(self, kind, path):
        if self.a.fake:
            return [self.a.cfunc, path, str(sc.FAKE_SHAPES[kind][1])]
        if kind == "cfunc":
            return [self.a.cfunc, path]
        if kind == "jax":
            return [sys.executable, os.path.join(HERE, "suite_jax.py"), "run", path]
        return [sys.executable, os.path.join(HERE, "suite_fn.py"), "run", kind, path]

    def spawn(self, kind, path, broker, tag, settings=None):
        """One process of KIND, native or (broker) under SAGE with a trace: (Popen, trace path or None);
        `settings` (a --variant's SAGE_ variables) go to a SAGE process's environment."""
        with self.lock:
            self.n += 1
            n = self.n
        env = dict(os.environ)
        for k in ("LD_PRELOAD", "SAGE_SHARE_PLACE"):
            env.pop(k, None)
        if tag == "first":  # untimed: writes Python's byte code (lib.sh's bench_bytecode)
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        idle = sc.idle_ms() if kind in sc.IDLE_KINDS and not self.a.fake else 0
        env["SAGE_BENCH_IDLE_MS"] = str(idle)  # native too: the same call after the same idleness
        trace = os.path.join(self.tmp, f"{n}-{kind}-{tag}.json") if broker else None
        if broker:
            env.update(settings or {})  # first: the harness's own settings below win over a variant's
            env.update({"LD_PRELOAD": self.a.preload, "SAGE_SHARE": "1", "SAGE_SOCKET": broker.socket,
                        "SAGE_TRACE": trace})
            if self.a.place:
                env["SAGE_SHARE_PLACE"] = broker.place
            if idle:  # assembly at idleness needs the suspend gate (SAGE_SHARE_ASSEMBLE_IDLE)
                env["SAGE_SUSPEND"] = "1"
            if tag == "cold":  # staged copies print their timeline (share_stage.c), kept in the record
                env["SAGE_VERBOSE"] = "3"
        with self.lock:  # started and registered at once: stop() kills every process the run started
            if self.stopping:
                raise Interrupted(self.stopping)
            env["SAGE_BENCH_T0_NS"] = str(time.monotonic_ns())
            p = subprocess.Popen(self.command(kind, path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
            self.live.add(p)
        p.sage_place = env.get("SAGE_SHARE_PLACE")  # what the process was given, for its record
        p.sage_t0_ns = int(env["SAGE_BENCH_T0_NS"])  # its phases' zero: processes at once are placed by it
        return p, trace

    def invoke(self, kind, path, broker=None, tag="native"):
        """One process: its record (a failure: a record with "error"); under SAGE with what saged's one
        thread did meanwhile (its CPU, its wait for a CPU, its wake-ups)."""
        before = broker_sched(broker) if broker else None
        rec = self.collect(kind, [self.spawn(kind, path, broker, tag)], tag)[0]
        after = broker_sched(broker) if broker else None
        if before and after:
            rec["broker"] = {"cpu_ms": round((after[0] - before[0]) / 1e6, 3),
                             "runq_ms": round((after[1] - before[1]) / 1e6, 3), "wakeups": after[2] - before[2]}
        return rec

    def collect(self, kind, started, tag):
        out = []
        for p, trace in started:
            killed = None
            try:
                stdout, stderr = p.communicate(timeout=max(0.1, min(self.a.timeout, self.deadline - self.elapsed())))
            except subprocess.TimeoutExpired:
                killed = "killed at the deadline" if self.elapsed() >= self.deadline else f"hung ({self.a.timeout} s)"
                p.kill()
                stdout, stderr = p.communicate()
            with self.lock:
                self.live.discard(p)
            rec = sc.parse_record(stdout, "SAGE_BENCH") if p.returncode == 0 else None
            skip = sc.parse_record(stdout, "SAGE_BENCH_SKIP") if p.returncode == 77 else None
            if rec is None:
                why = killed or (f"interrupted ({self.stopping})" if self.stopping else None)
                rec = {"error": why or f"exit {p.returncode}: {stderr.strip()[-300:]}"}
                if skip:
                    rec = {"error": f"skipped: {skip}", "skip": skip}
                elif why is None or why.startswith("hung"):
                    self.failures.append(f"{kind} {tag}: {rec['error']}")
                with self.lock:
                    self.problems.append(f"{kind} {tag}: {rec['error']}")
            summary = self.trace_summary(trace) if trace and "error" not in rec else None
            rec["tag"] = tag
            if trace and os.environ.get("SAGE_BENCH_KEEP_STDERR"):  # with SAGE_VERBOSE=3: the runs' shapes
                with open(trace + ".stderr", "w") as f:
                    f.write(stderr or "")
            staged = [l for l in (stderr or "").splitlines() if l.startswith("sage: ") and " staged " in l]
            if staged:
                rec["stage_timeline"] = staged[:8]
            if trace and "error" not in rec:
                if summary is None:
                    self.failures.append(f"{kind} {tag}: no trace (was libsage loaded?)")
                    self.problems.append(self.failures[-1])
                else:
                    rec["sharing"] = summary.get("sharing", {})
                    rec["shared_fraction"] = summary.get("shared_fraction")
                    rec["htod_bytes"] = summary.get("bytes", {}).get("htod")
                    rec["place"] = p.sage_place is not None
            with self.lock:  # outputs are compared with native's in the report (sc.mismatches)
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
        b = Broker(self.a.saged, os.path.join(self.a.logs, "saged.log"))
        with self.lock:  # one made while the run stops (a preparation thread) must not outlive it
            if not self.stopping:
                self.all_brokers.append(b)
                return b
        b.stop()
        raise Interrupted(self.stopping)

    # ---------------------------------------------------------------- budget
    def may_start(self, kind, what, factor=1.0):
        """Whether a step may start now (FACTOR: its length in single invocations); if not, the
        workload says why (cut)."""
        now = self.elapsed()
        est = self.est.get(kind, 0.0) * factor
        if self.stopping:
            return False
        if now <= self.a.budget and now + est <= self.deadline:
            return True
        self.raw[kind].setdefault("cut", f"time budget: {what} not started at {now:.0f} s")
        return False

    def step(self, kind, what, fn, *args):
        """Run one step of KIND, count it, learn its length (per invocation), write the document."""
        t = time.time()
        recs = fn(*args)
        if what != "concurrent":
            self.est[kind] = max(self.est.get(kind, 0.0), (time.time() - t) / (2 if what == "rounds" else 1))
        self.done[kind][what] += 1
        self.write("running")
        return recs

    # ---------------------------------------------------------------- the plan
    def prepare(self, kind, path_box):
        """Preparation of one workload (a thread each): weights, the reference, a warm broker."""
        w = self.raw[kind]
        try:
            if not self.may_start(kind, "weights"):
                w["skipped"] = w.pop("cut")
                return
            path_box[kind] = path = self.weights(kind)
            if w["weights"]["generated"]:
                self.want[kind]["first"] = 0  # the generation warmed the page cache, wrote the byte code
            elif not self.may_start(kind, "first run") or self.failed(kind, self.step(
                    kind, "first", self.invoke, kind, path, None, "first"), "native"):
                return
            if kind in sc.COLD_KINDS:
                return  # their cold runs are figures: measured, one process at a time
            self.brokers[kind] = broker = self.broker()
            for what in ("cold", "warmup"):
                if not self.may_start(kind, what):
                    return
                if self.failed(kind, self.step(kind, what, self.invoke, kind, path, broker, what), "SAGE"):
                    return
        except sc.Skip as e:
            w["skipped"] = str(e)
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            with self.lock:
                self.problems.append(f"{kind}: {e}")
                self.failures.append(self.problems[-1])
        except Interrupted:
            pass

    def failed(self, kind, rec, mode):
        """A workload whose first run fails (or cannot run here: no jax) is skipped, with the reason."""
        if "error" in rec and not self.stopping:
            self.raw[kind]["skipped"] = rec.get("skip") or f"the {mode} {rec['tag']} run fails: {rec['error']}"
        return "error" in rec

    def measure_pass(self, i, kind, path):
        """Pass I over KIND. The first pass takes one sample of each figure (cfunc/llm: their cold
        run only); their warm-up and rounds follow from the second pass on."""
        want, done = self.want[kind], self.done[kind]
        cold_kind = kind in sc.COLD_KINDS
        if cold_kind and i < want["cold"] and self.may_start(kind, "cold run"):
            if kind not in self.brokers:  # the first cold run's broker is the warm one
                self.brokers[kind] = broker = self.broker()
                self.step(kind, "cold", self.invoke, kind, path, broker, "cold")
            else:
                broker = self.broker()
                try:
                    self.step(kind, "cold", self.invoke, kind, path, broker, "cold")
                finally:
                    broker.stop()
        broker = self.brokers.get(kind)
        if broker and cold_kind and i >= 1 and not done["warmup"] and self.may_start(kind, "warm-up"):
            self.step(kind, "warmup", self.invoke, kind, path, broker, "warmup")
        r = i - 1 if cold_kind else i
        if broker and done["warmup"] and 0 <= r < want["rounds"] and self.may_start(kind, "round", 2):
            self.step(kind, "rounds", lambda: [self.invoke(kind, path), self.invoke(kind, path, broker, "warm")])
        # A native, a SAGE and each variant's round; N processes on the CPUs, each mostly one thread (imports).
        at_once = (2 + len(self.a.variants)) * max(1.2, 2.0 * self.a.concurrent / (os.cpu_count() or 1))
        if broker and done["warmup"] and i < want["concurrent"] and self.may_start(kind, "round at once", at_once):
            self.step(kind, "concurrent", self.concurrent, kind, path, broker)

    def concurrent(self, kind, path, broker):
        # Native, SAGE and each --variant's SAGE, a round each; which goes first turns with the rounds:
        # none always runs on the machine another just left (its page cache, its clocks).
        sides = [("native", None), ("sage", {})] + [("sage-" + n, env) for n, env in self.a.variants]
        turn = self.batches.get("concurrent-native", 0) % len(sides)
        for side, settings in sides[turn:] + sides[:turn]:
            sage, tag = settings is not None, "concurrent-" + side
            before = broker_sched(broker)
            started = [self.spawn(kind, path, broker if sage else None, tag, settings)
                       for _ in range(self.a.concurrent)]
            recs = self.collect(kind, started, tag)
            # Which round, and when each started in it: what the others were doing during an upload
            # (sharing_coverage.py's others_reading).
            self.batches[tag] = self.batches.get(tag, 0) + 1
            for (p, _), rec in zip(started, recs):
                rec.update(batch=self.batches[tag], start_ms=round((p.sage_t0_ns - started[0][0].sage_t0_ns) / 1e6, 3))
            after = broker_sched(broker)
            if sage and before and after:  # the one broker thread: did it run, or wait for a CPU?
                used = {"broker_cpu_ms": round((after[0] - before[0]) / 1e6, 3),
                        "broker_runq_ms": round((after[1] - before[1]) / 1e6, 3),
                        "broker_wakeups": after[2] - before[2]}
                if recs:
                    recs[0]["round"] = used  # once per round

    def main(self, kinds):
        for kind in sc.KINDS:
            if kind not in kinds:
                self.raw[kind]["skipped"] = "not asked for (--only)"
        lines, total = expected(self.a, self.want, kinds)
        self.timeline["expected_s"] = round(total, 1)
        fits = "fits" if total <= self.deadline else "does NOT fit: what runs out of time is cut (see missing)"
        print(f"sharing-coverage: expected on an H100 {total:.0f} s, deadline {self.deadline:.0f} s: the plan {fits}"
              + "".join("\n  " + ln for ln in lines), flush=True)
        self.write("running")
        paths = {}
        threads = [threading.Thread(target=self.prepare, args=(k, paths), daemon=True) for k in kinds]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)  # short joins: a signal reaches this (main) thread
        self.timeline["prepared_s"] = round(self.elapsed(), 1)
        gen = [self.raw[k]["weights"]["gen_s"] for k in kinds if self.raw[k].get("weights", {}).get("generated")]
        self.timeline["weights_generated"] = len(gen)
        passes = max([n + (s == "rounds" and k in sc.COLD_KINDS) for k in kinds for s, n in self.want[k].items()
                      if s != "first"] + [0])
        for i in range(passes):
            for kind in [k for k in (sc.MEASURE_ORDER if i == 0 else sc.LATER_ORDER) if k in kinds]:
                if self.raw[kind].get("skipped") or kind not in paths or self.stopping:
                    continue
                try:
                    self.measure_pass(i, kind, paths[kind])
                except (RuntimeError, OSError) as e:
                    with self.lock:
                        self.problems.append(f"{kind}: {e}")
                        self.failures.append(self.problems[-1])
        self.timeline["measured_s"] = round(self.elapsed(), 1)

    def stop(self, why):
        """Kill what still runs (a signal, the deadline)."""
        with self.lock:
            self.stopping = self.stopping or why
            live = list(self.live)
        for p in live:
            if p.poll() is None:
                p.kill()

    def cleanup(self):
        with self.lock:
            brokers, self.all_brokers = self.all_brokers, []
        for b in brokers:
            b.stop()
        self.brokers.clear()


def execute(a, kinds):
    machine = br.machine() if not a.fake else dict(br.machine(), gpu="simulated (tests/fakecuda)")
    r = Run(a, machine)

    def on_signal(signum, frame):
        if not r.stopping:  # the first signal only (`timeout` signals the group, the script forwards it)
            r.stopping = signal.Signals(signum).name
            raise Interrupted(r.stopping)
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, on_signal)
    state, rc = "complete", None
    try:
        r.main(kinds)
        if r.missing():
            budget = any(w.get("cut") or (w.get("skipped") or "").startswith("time budget") for w in r.raw.values())
            state = "partial: " + ("time budget" if budget else "see missing")
    except Interrupted as e:
        state, rc = f"interrupted by {e}", 128 + getattr(signal, str(e), signal.SIGTERM)
    finally:
        r.stop(r.stopping or "ending")
        r.cleanup()
        doc = r.write(state)
    print(sc.table(doc))
    for prob in r.problems:
        print("sharing-coverage: " + prob, file=sys.stderr)
    if rc is not None:
        return rc
    return 0 if doc["summary"]["outputs_identical"] and not r.failures else 1

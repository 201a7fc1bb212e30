"""Benchmark suite of SAGE: the runner of `suite.py run`.

Runner runs a plan (suite_plan.build_config or shard_config, as suite.sh
wrote it to CONFIG.json) on the GPU: every function invocation is a Proc
(its own process group, killed after its limit); only the measured mode's
own service runs (an MPS control daemon, or a saged broker: started fresh
for cold sharing, primed by an untimed invocation for warm sharing); the
parts run in order, each within its share of the time left (re-estimated
from what was measured so far), then the optional extra runs while the
budget allows. Every process becomes one record; suite_report turns the
records into the results document.
"""
import json
import os
import signal
import subprocess
import threading
import time

from bench_proc import stop
from suite_plan import (BROKER_MODES, C_KINDS, EST_BROKER_S, EST_COLD_EXTRA_S, EST_MPS_S, MODES, PY_KINDS,
                        SAGE_MODES, SHARED_MODES, conc1_rounds, conc1_schedule, est_batch, est_invocation,
                        estimate_plan)
from suite_report import density_extrapolate, median, parse_output, poisson_arrivals, poisson_summary


# ---------------------------------------------------------------- running
class Proc:
    def __init__(self, cmd, env, log_base, limit_s, keep_stdin=False):
        self.t0 = time.monotonic_ns()
        env = dict(env, SAGE_BENCH_T0_NS=str(self.t0))
        self.out_path, self.err_path = log_base + ".out", log_base + ".err"
        self.limit_s, self.t_end, self.timed_out = limit_s, None, False
        with open(self.out_path, "w") as o, open(self.err_path, "w") as e:
            self.p = subprocess.Popen(cmd, env=env, stdout=o, stderr=e,
                                      stdin=subprocess.PIPE if keep_stdin else subprocess.DEVNULL,
                                      start_new_session=True)
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self):
        # A blocking wait and a timer for the limit: Popen.wait(timeout=...)
        # polls with sleeps of up to 50 ms, which rounded every duration of
        # the 2026-11-30 shards 1-2 up to a 50 ms step.
        timer = threading.Timer(self.limit_s, self._expire)
        timer.daemon = True
        timer.start()
        self.p.wait()
        self.t_end = time.monotonic_ns()
        timer.cancel()

    def _expire(self):
        if self.p.returncode is None:
            self.timed_out = True
            self.kill()

    def kill(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except OSError:
            pass

    def join(self):
        self.thread.join()
        return self

    def stdout(self):
        try:
            with open(self.out_path) as f:
                return f.read()
        except OSError:
            return ""

    def err_tail(self):
        try:
            with open(self.err_path) as f:
                lines = [x for x in f.read().splitlines() if x.strip()]
            return " / ".join(lines[-2:])[:300]
        except OSError:
            return ""


class Runner:
    def __init__(self, cfg):
        self.cfg = cfg
        self.logs = cfg["logs"]
        self.records, self.skipped, self.trimmed, self.notes = [], [], [], []
        self.t_start = cfg["t_start"]
        self.deadline = self.t_start + cfg["budget_s"]
        self.mps_state = None  # None, "up", "down", "unavailable: ..."
        self.mps_proof = None
        self.broker = None
        self.broker_state = None
        self.broker_proof = None
        self.broker_n = 0
        self.broker_primed = set()  # workloads whose extents the running broker holds
        self.seq = 0
        self.costs = {}        # (kind, mode) -> [s]: one invocation, process start -> exit
        self.batch_costs = {}  # (kind, n) -> [s]: n started at once, first start -> last exit
        self.na, self.mode_state = {}, {}
        self.parts, self.estimate, self.part_s = [], {}, {}

    # ---- environment of one mode
    def env(self, mode, kind):
        base = {k: v for k, v in os.environ.items()
                if k not in ("LD_PRELOAD", "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")
                and not k.startswith("SAGE_BENCH")}
        if mode not in SAGE_MODES:
            base = {k: v for k, v in base.items() if not k.startswith("SAGE_")}
        for k in ("SAGE_WARMUP", "SAGE_TRACE", "SAGE_SOCKET", "SAGE_SHARE"):
            base.pop(k, None)
        base["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        if mode == "mps":
            base["CUDA_MPS_PIPE_DIRECTORY"] = self.cfg["mps_pipe"]
            base["CUDA_MPS_LOG_DIRECTORY"] = self.cfg["mps_log"]
        if mode in SAGE_MODES:
            base["LD_PRELOAD"] = self.cfg["libsage"]
            if kind in PY_KINDS:
                base["SAGE_WARMUP"] = "eager"
        if mode in BROKER_MODES:
            base["SAGE_SOCKET"] = self.cfg["socket"]
        if mode in SHARED_MODES:
            base["SAGE_SHARE"] = "1"
        return base

    def cmd(self, kind, action="run", extra=()):
        c = self.cfg
        if kind == "cfunc":
            return [c["bin"] + "/cfunc", c["data"] + "/weights.bin"]
        if kind == "sgemm":
            return [c["bin"] + "/sgemm", str(c.get("sgemm_n", 4096))]
        slow = ["--slow-build"] if kind in c.get("slow_build", []) else []
        return [c["python"], c["here"] + "/suite_fn.py", action, kind, f"{c['data']}/{kind}.safetensors",
                *extra, *slow]

    def limit(self, kind):
        return 60 if kind in C_KINDS else 180

    # ---- services
    def _ctl(self, text, timeout=10):
        env = dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=self.cfg["mps_pipe"],
                   CUDA_MPS_LOG_DIRECTORY=self.cfg["mps_log"])
        try:
            r = subprocess.run([self.cfg["mps_ctl"]] + ([] if text is not None else ["-d"]),
                               input=text, env=env, capture_output=True, text=True, timeout=timeout)
            return r.returncode, (r.stdout + r.stderr).strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            return 1, str(e)

    def _log_tail(self, path):
        try:
            with open(path) as f:
                return " / ".join(f.read().splitlines()[-2:])[:300]
        except OSError:
            return ""

    def start_mps(self):
        if self.mps_state == "up" or (self.mps_state or "").startswith("unavailable"):
            return
        if not self.cfg.get("mps_ctl"):
            self.mps_state = "unavailable: nvidia-cuda-mps-control not found"
            return
        os.makedirs(self.cfg["mps_pipe"], exist_ok=True)
        os.makedirs(self.cfg["mps_log"], exist_ok=True)
        rc, msg = self._ctl(None)
        if rc != 0:
            self.mps_state = f"unavailable: nvidia-cuda-mps-control -d failed (rc {rc}): {msg[:200]}"
            return
        self.mps_state = "up"
        # Probe (discarded, also starts the MPS server): a small cuBLAS function.
        p = Proc([self.cfg["bin"] + "/sgemm", "256"], self.env("mps", "sgemm"),
                 f"{self.logs}/mps-probe-{self.seq}", 60).join()
        self.seq += 1
        rc2, servers = self._ctl("get_server_list\n")
        if p.p.returncode != 0:
            reason = p.err_tail() or self._log_tail(self.cfg["mps_log"] + "/control.log")
            self.stop_mps()
            self.mps_state = f"unavailable: a CUDA process under MPS failed (rc {p.p.returncode}): {reason}"
            return
        if not servers.split():
            self.notes.append("MPS: get_server_list listed no server after the probe")
        self.mps_proof = f"get_server_list: {servers[:100]}"

    def stop_mps(self):
        if self.mps_state != "up":
            return
        self._ctl("quit\n")
        for _ in range(50):
            rc, _ = self._ctl("get_server_list\n", timeout=2)
            if rc != 0:
                break
            time.sleep(0.1)
        self.mps_state = "down"

    def start_broker(self):
        if self.broker or (self.broker_state or "").startswith("unavailable"):
            return
        saged, sock = self.cfg.get("saged"), self.cfg["socket"]
        if not saged or not os.path.exists(saged):
            self.broker_state = "unavailable: saged not built"
            return
        try:
            os.unlink(sock)
        except OSError:
            pass
        self.broker_n += 1
        self.broker_primed = set()
        log_path = f"{self.logs}/saged.{self.broker_n}.log"
        with open(log_path, "w") as log:
            self.broker = subprocess.Popen([saged, "--socket", sock, "--foreground"], stdout=log, stderr=log,
                                           stdin=subprocess.DEVNULL, start_new_session=True,
                                           env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})
        for _ in range(100):
            if os.path.exists(sock) or self.broker.poll() is not None:
                break
            time.sleep(0.05)
        if self.broker.poll() is not None or not os.path.exists(sock):
            self.stop_broker()
            self.broker_state = "unavailable: saged did not start: " + self._log_tail(log_path)
            return
        time.sleep(1.0)  # its cuInit + context retain (~450 ms on the H200)
        self.broker_state = "up"
        ctl = self.cfg.get("sagectl")
        if ctl and os.path.exists(ctl) and not self.broker_proof:
            try:
                r = subprocess.run([ctl, "--socket", sock, "ping"], capture_output=True, text=True, timeout=10)
                self.broker_proof = f"sagectl ping rc {r.returncode}: {(r.stdout + r.stderr).strip()[:100]}"
            except (OSError, subprocess.TimeoutExpired) as e:
                self.broker_proof = f"sagectl ping failed: {e}"

    def stop_broker(self):
        self.broker_primed = set()
        if self.broker:
            stop(self.broker, 10)
            self.broker = None
            if self.broker_state == "up":
                self.broker_state = "down"

    def broker_stats(self):
        """sagectl stats --json of the running broker, or None."""
        ctl = self.cfg.get("sagectl")
        if not self.broker or not ctl or not os.path.exists(ctl):
            return None
        try:
            r = subprocess.run([ctl, "--socket", self.cfg["socket"], "stats", "--json"], capture_output=True,
                               text=True, timeout=10)
            d = json.loads(r.stdout) if r.returncode == 0 else None
            return d if isinstance(d, dict) else None
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return None

    def services(self, mode):
        """Only the mode's own service runs while it is measured (a broker left
        up would keep the GPU initialised for the others, and MPS would take
        them in). Returns None or 'unavailable: why'."""
        if mode == "mps":
            self.stop_broker()
            self.start_mps()
            return self.mps_state if self.mps_state.startswith("unavailable") else None
        self.stop_mps()
        if mode in SAGE_MODES and not os.path.exists(self.cfg["libsage"]):
            self.stop_broker()
            return "unavailable: libsage.so not built"
        if mode in BROKER_MODES:
            self.start_broker()
            return self.broker_state if self.broker_state.startswith("unavailable") else None
        self.stop_broker()
        return None

    def prepare(self, kind, mode, part):
        """Services for running kind in mode: cold sharing gets a broker
        started fresh, warm sharing one that holds kind's extents (primed by an
        untimed invocation when it does not yet). None or 'unavailable: why'."""
        if mode == "sage_shared_cold":
            self.stop_broker()
        why = self.services(mode)
        if why or mode != "sage_shared" or kind in self.broker_primed:
            return why
        self.seq += 1
        p = Proc(self.cmd(kind), self.env("sage_shared", kind), f"{self.logs}/prime.{part}.{kind}.{self.seq}",
                 self.limit(kind)).join()
        recs = self.record(p, kind, "sage_shared", "prime", 0, {"for_part": part,
                                                                 "broker_after": self.broker_stats()})
        if all(r["ok"] for r in recs):
            self.broker_primed.add(kind)
        else:
            self.notes.append(f"priming the broker with {kind} for {part} failed ({recs[0].get('error')}): "
                              "the sage_shared runs after it may miss")
        time.sleep(self.cfg.get("gap", 0.2))
        return None

    def shutdown(self):
        self.stop_broker()
        self.stop_mps()

    # ---- measuring
    def record(self, proc, kind, mode, part, run, extra=None):
        recs = parse_output(proc.stdout(), kind)
        base = {"wl": kind, "mode": mode, "part": part, "run": run, "rc": proc.p.returncode,
                "duration_ms": round((proc.t_end - proc.t0) / 1e6, 3)}
        base.update(extra or {})
        if not recs:
            recs = [{}]
        out = []
        for d in recs:
            r = dict(d)
            r.update(base)
            r["ok"] = proc.p.returncode == 0 and bool(d) and not proc.timed_out
            if not r["ok"]:
                r["error"] = ("timed out after %d s" % proc.limit_s if proc.timed_out
                              else f"rc {proc.p.returncode}: {proc.err_tail()}" if proc.p.returncode
                              else "no SAGE_BENCH record")
            out.append(r)
        self.records.extend(out)
        return out

    def invoke(self, kind, mode, part, run):
        """One invocation alone on the GPU: its records, or None (mode unavailable)."""
        why = self.prepare(kind, mode, part)
        if why:
            self.unavailable(kind, mode, why)
            return None
        before = self.broker_stats() if mode in SHARED_MODES else None
        self.seq += 1
        p = Proc(self.cmd(kind), self.env(mode, kind), f"{self.logs}/{part}.{kind}.{mode}.{run}.{self.seq}",
                 self.limit(kind)).join()
        extra = {}
        if before is not None:
            after = self.broker_stats() or {}
            extra["broker_delta"] = {k: after[k] - before[k] for k in ("hits", "misses", "publishes", "extents",
                                                                        "bytes_resident")
                                     if isinstance(after.get(k), int) and isinstance(before.get(k), int)}
        recs = self.record(p, kind, mode, part, run, extra)
        if all(r["ok"] for r in recs):
            self.costs.setdefault((kind, mode), []).append((p.t_end - p.t0) / 1e9)
            if mode in SHARED_MODES:
                self.broker_primed.add(kind)
        return recs

    def batch(self, kind, mode, part, run, n, extra=None):
        procs = []
        for i in range(n):
            self.seq += 1
            procs.append(Proc(self.cmd(kind), self.env(mode, kind),
                              f"{self.logs}/{part}.{kind}.{mode}.{run}.{i}.{self.seq}", self.limit(kind)))
        for p in procs:
            p.join()
        wall = round((max(p.t_end for p in procs) - procs[0].t0) / 1e6, 3)
        for p in procs:
            self.record(p, kind, mode, part, run, dict(extra or {}, conc=n, batch_wall_ms=wall))
        self.batch_costs.setdefault((kind, n), []).append(wall / 1000.0)
        return wall

    # ---- the time budget
    def est(self, kind, mode="native"):
        """Seconds one invocation of kind in mode should take: measured in this
        run where it was, else the time model (EST_S)."""
        v = self.costs.get((kind, mode))
        if v:
            return median(v)
        v = [x for (k, m), xs in self.costs.items() if k == kind for x in xs]
        if v:
            return median(v) + (EST_COLD_EXTRA_S if mode == "sage_shared_cold" else 0.0)
        return est_invocation(self.cfg, kind, mode)

    def need(self, kind, mode, seconds):
        """seconds + what getting mode's services ready for kind will cost."""
        if mode == "sage_shared_cold":
            seconds += EST_BROKER_S
        elif mode == "sage_shared" and kind not in self.broker_primed:
            seconds += EST_BROKER_S + self.est(kind, mode)
        elif mode == "mps" and self.mps_state != "up":
            seconds += EST_MPS_S
        return seconds

    def batch_est(self, kind, mode, n):
        v = self.batch_costs.get((kind, n))
        return median(v) if v else est_batch(self.est(kind, mode), kind, n)

    def fits(self, seconds, deadline):
        return time.time() + seconds <= deadline

    def part_deadline(self, part):
        """When `part` must be done: the time left, shared among the parts
        still to run in proportion to their estimated cost (re-estimated with
        what was measured so far). When the plan fits, each part gets at least
        its estimate; when it does not, every part gives up a share."""
        rest = self.parts[self.parts.index(part):]
        est = estimate_plan(self.cfg, self.est)
        total = sum(est.get(p, 0.0) for p in rest)
        left = max(0.0, self.deadline - time.time())
        return time.time() + (left * est.get(part, 0.0) / total if total > 0 else left)

    # ---- parts
    def conc1(self, deadline, extra=False, rounds=None):
        c = self.cfg
        plan = c["conc1"]
        gap = c.get("gap", 0.2)
        for run in rounds or range(1, conc1_rounds(plan) + 1):
            pairs = conc1_schedule(plan, run, extra)
            if not pairs:
                continue
            for kind, mode in pairs:
                if kind in self.na and mode in self.na[kind]:
                    continue  # unavailable: said once
                if not self.fits(self.need(kind, mode, self.est(kind, mode) + gap), deadline):
                    (self.trimmed if extra else self.skipped).append(
                        f"conc1 {kind} {mode} run {run}" + ("" if extra else " (time budget)"))
                    continue
                self.invoke(kind, mode, "conc1", run)
                time.sleep(gap)
            print(f"suite: conc1 {'extra ' if extra else ''}run {run} done ({time.time() - self.t_start:.0f} s)",
                  flush=True)

    def unavailable(self, kind, mode, why):
        self.na.setdefault(kind, {})[mode] = why.split(":")[0]
        self.mode_state[mode] = why

    def warm(self, deadline, kinds, extra=False):
        for kind in kinds:
            if not self.fits(self.est(kind) * 1.1 + 1.0, deadline):
                (self.trimmed if extra else self.skipped).append(
                    f"warm_process {kind}" + ("" if extra else " (time budget)"))
                continue
            self.services("native")
            self.seq += 1
            n = self.cfg["warm_n"]
            p = Proc(self.cmd(kind, "serve", [str(n)]), self.env("warm_process", kind),
                     f"{self.logs}/warm.{kind}.{self.seq}", self.limit(kind) + 30).join()
            for r in self.record(p, kind, "warm_process", "warm", 0):
                inv = r.get("invocation")
                if inv == 0:  # the cold load: kept, but not a warm invocation
                    r["part"], r["cold_load"] = "warm_cold_load", True
                else:
                    r["part"], r["run"] = "conc1", inv
                    r["duration_ms"] = r.get("total_ms")  # in-process invocation time

    def concurrency(self, deadline):
        for kind, ns in self.cfg["concN"].items():
            for mode in self.cfg["concN_modes"].get(kind, []):  # mode-major: a primed broker serves all n
                for n in ns:
                    if not self.fits(self.need(kind, mode, self.batch_est(kind, mode, n) + 0.5), deadline):
                        self.skipped.append(f"concurrency {kind} x{n} {mode} (time budget)")
                        continue
                    why = self.prepare(kind, mode, "concN")
                    if why:
                        self.unavailable(kind, mode, why)
                        break
                    self.batch(kind, mode, "concN", 1, n)
                    time.sleep(0.5)

    def poisson(self, deadline):
        c = self.cfg
        kind, dur = c["poisson_kind"], c["poisson_window_s"]
        out = {}
        for mode in c["poisson_modes"]:  # mode-major: a primed broker serves every rate
            for ri, rate in enumerate(c["poisson_rates"]):
                arrivals = poisson_arrivals(rate, dur, seed=1000 + ri)
                if not self.fits(self.need(kind, mode, dur + 1.3 * self.est(kind, mode) + 0.5), deadline):
                    self.skipped.append(f"poisson {rate} req/s {mode} (time budget)")
                    continue
                why = self.prepare(kind, mode, "poisson")
                if why:
                    out.setdefault(str(rate), {})[mode] = why
                    continue
                start = time.monotonic()
                procs = []
                for i, off in enumerate(arrivals):
                    delay = start + off - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    self.seq += 1
                    procs.append((off, Proc(self.cmd(kind), self.env(mode, kind),
                                            f"{self.logs}/poisson.{rate}.{mode}.{i}.{self.seq}",
                                            c.get("poisson_limit_s", 90))))
                reqs = []
                start_ns = int(start * 1e9)
                for i, (off, p) in enumerate(procs):
                    p.join()
                    r = self.record(p, kind, mode, "poisson", i, {"rate": rate, "arrival_s": off})[0]
                    reqs.append({"arrival_s": off, "ok": r["ok"], "end_s": (p.t_end - start_ns) / 1e9})
                out.setdefault(str(rate), {})[mode] = poisson_summary(reqs, rate, dur)
                time.sleep(0.5)
        return {"workload": kind, "window_s": dur, "rates": out,
                "note": "each request is a new process; latency = scheduled arrival -> process exit; "
                        "every mode gets the same arrival schedule per rate"}

    def smi_used(self):
        try:
            r = subprocess.run(["nvidia-smi", "-i", str(self.cfg.get("gpu_index", 0)),
                                "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True, timeout=20)
            used, total = [int(x.strip()) for x in r.stdout.strip().splitlines()[0].split(",")]
            return used, total
        except Exception:  # noqa: BLE001
            return None, None

    def density(self, deadline):
        c = self.cfg
        kind, counts = c["density_kind"], c["density_counts"]
        out = {}
        for mode in c["density_modes"]:
            need, prev = 1.0, 0
            for n in counts:
                need, prev = need + est_batch(self.est(kind, mode), kind, n - prev) + 1.5, n
            if not self.fits(self.need(kind, mode, need), deadline):
                self.skipped.append(f"density {mode} (time budget)")
                continue
            why = self.prepare(kind, mode, "density")
            if why:
                out[mode] = why
                continue
            time.sleep(0.5)
            base, total = self.smi_used()
            procs, points, failed = [], [], None
            for n in counts:
                while len(procs) < n and not failed:
                    self.seq += 1
                    procs.append(Proc(self.cmd(kind, "hold"), self.env(mode, kind),
                                      f"{self.logs}/density.{mode}.{len(procs)}.{self.seq}", 240, keep_stdin=True))
                t_lim = time.time() + 120
                while not failed and time.time() < t_lim:
                    ready = sum("SAGE_HOLDING" in p.stdout() for p in procs)
                    dead = [p for p in procs if p.t_end is not None]
                    if dead:
                        failed = f"an instance exited early: {dead[0].err_tail()}"
                    if ready == len(procs):
                        break
                    time.sleep(0.1)
                else:
                    if not failed:
                        failed = f"{n} instances not ready within 120 s"
                if failed:
                    break
                time.sleep(0.5)
                used, _ = self.smi_used()
                points.append({"instances": n, "used_mib": used})
            for p in procs:
                try:
                    p.p.stdin.close()
                except OSError:
                    pass
            for p in procs:
                p.join()
                self.record(p, kind, mode, "density", len(procs))
            res = density_extrapolate(points, total, base) if base is not None else {"error": "nvidia-smi gave no memory figure"}
            res["points"] = points
            if failed:
                res["error"] = failed
            out[mode] = res
            time.sleep(0.5)
        return {"workload": kind, "modes": out, "method": "nvidia-smi memory.used with %s resident instances "
                "(each holds its weights on the GPU and waits); count beyond that is EXTRAPOLATED; "
                "sage_shared: measured with its warm broker up (the broker's extents are in the baseline)"
                % "/".join(str(n) for n in counts)}

    def run_all(self):
        c = self.cfg
        self.parts = [p for p in ("conc1", "warm", "concN", "poisson", "density") if p in c["parts"]]
        doc = {"poisson": {}, "density": {}}
        self.estimate = estimate_plan(c)
        self.estimate["setup"] = round(time.time() - self.t_start, 1)
        print("suite: plan estimate (s): " + ", ".join(f"{k} {v}" for k, v in self.estimate.items())
              + f"; budget {c['budget_s']:.0f} s", flush=True)
        for part in self.parts:
            if time.time() >= self.deadline:
                self.skipped.append(f"{part}: whole part (time budget of {c['budget_s']} s spent)")
                continue
            dl = self.part_deadline(part)
            print(f"suite: {part} (until +{dl - self.t_start:.0f} s)", flush=True)
            a = time.time()
            try:
                if part == "conc1":
                    self.conc1(dl)
                elif part == "warm":
                    self.warm(dl, c["warm"])
                elif part == "concN":
                    self.concurrency(dl)
                elif part == "poisson":
                    doc["poisson"] = self.poisson(dl)
                elif part == "density":
                    doc["density"] = self.density(dl)
            except Exception as e:  # noqa: BLE001 - a failing part is reported, not fatal
                self.skipped.append(f"{part}: aborted by {type(e).__name__}: {e}")
            self.part_s[part] = round(time.time() - a, 1)
        # Optional: more concurrency-1 runs of the Python workloads and warm
        # processes for the others, while the budget allows (not reported as skipped).
        a = time.time()
        try:
            rounds = conc1_rounds(c["conc1"])
            if "conc1" in self.parts:
                self.conc1(self.deadline, extra=True, rounds=range(1, min(rounds, 2) + 1))
            if "warm" in self.parts:
                self.warm(self.deadline, c.get("warm_extra", []), extra=True)
            if "conc1" in self.parts and rounds >= 3:
                self.conc1(self.deadline, extra=True, rounds=range(3, rounds + 1))
        except Exception as e:  # noqa: BLE001
            self.skipped.append(f"extra runs: aborted by {type(e).__name__}: {e}")
        self.part_s["extra"] = round(time.time() - a, 1)
        self.shutdown()
        return doc


def mode_states(cfg, runner):
    st = {}
    for m in MODES[:-1]:
        s = runner.mode_state.get(m, "ok")
        if m == "mps" and runner.mps_proof and s == "ok":
            s = "ok (" + runner.mps_proof + ")"
        if m in BROKER_MODES and runner.broker_proof and s == "ok":
            s = "ok (" + runner.broker_proof + ")"
        st[m] = s
    st["warm_process"] = "python workloads only (one process, model loaded once; C: n/a)"
    return st

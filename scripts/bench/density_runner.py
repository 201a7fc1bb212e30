"""Sharing-based memory benchmark of SAGE: the runner of `density.py run`.

Runner runs the phases (seq, conc, density: density.py's docstring says what
each does) workload by workload, each with a fresh saged broker and its
share of the time left (WEIGHTS). Every function is a Proc: its own process
group, reaped with wait4 (peak RSS), killed after its limit (holders only by
the runner). A sampler thread keeps the peak anonymous RSS of every live
process, which bounds how many instances host memory allows
(HOST_RESERVE_MIB stays free). Every finished process becomes one record;
density_report checks and summarises them.
"""
import json
import os
import re
import signal
import subprocess
import threading
import time

from bench_proc import stop
from density_report import MODES, extrapolate, f_count, f_ms, median, next_wave, parse_bench, trace_stats

# Share of the time left that each workload may use (what one leaves, the next gets).
WEIGHTS = {"cfunc": 0.22, "llm": 0.42, "resnet50": 0.13, "gpt2": 0.23}
# Guesses of one invocation's wall time before the first one is measured (s).
EST_RUN_S = {"cfunc": 2.0, "llm": 8.0, "resnet50": 7.0, "gpt2": 18.0}
# Guesses of the host memory (anonymous) one starting instance needs, MiB.
EST_ANON_MIB = {"cfunc": 512, "llm": 8192, "resnet50": 3072, "gpt2": 4096}
HOST_RESERVE_MIB = 8192


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
            stop(self.broker, 15)
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

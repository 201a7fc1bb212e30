"""The parts of the suspend benchmark, as methods of suspend_runner.Run
(a mixin: the processes, the broker and the figures' raw records are the
runner's). Each part fills self.raw[PART]; suspend_report.py turns that into
suspend.json. What each measures: docs/benchmarks.md, "Instance suspend".
"""
import json
import subprocess
import threading
import time

import suspend_report as rep


def now():
    return time.monotonic()


class Parts:
    def workload(self, kind):
        runs, w = self.a.runs, {"resume_by": self.resume_by}
        idle_too = kind in self.plan["idle_kinds"] and self.has_idle
        if not self.fits(f"workload {kind}", rep.estimate_workload(kind, runs, idle_too, self.fake)):
            self.raw["workloads"][kind] = {"skipped": "time budget"}
            return
        self.raw["workloads"][kind] = w
        ref = None
        for _ in range(runs):  # native cold
            ms, rec = self.cold(kind)
            ref = ref or rec.get("checksum")
            self.refs[kind] = ref
            w.setdefault("cold_ms", []).append(ms)
            self.check(w, rec, ref)
        if ref is None:
            w["problems"] = w.get("problems", []) + ["no native reference output"]
            return
        for sage, key in ((False, "warm_ms"), (True, "sage_warm_ms")):
            if sage:
                base = self.device_used_mib()
            inst = self.start_instances(kind, 1, sage=sage, tag="native" if not sage else "sage")
            if not inst:
                w["failures"] = w.get("failures", 0) + 1
                return
            inst = inst[0]
            self.check(w, inst.invoke()[1], ref)  # untimed: lazy first-call work
            for _ in range(runs):
                ms, rec = inst.invoke()
                w.setdefault(key, []).append(ms)
                self.check(w, rec, ref)
            mib = self.gpu_mib([inst.pid])[inst.pid]
            w.setdefault("native_gpu_mib" if not sage else "active_gpu_mib", []).append(mib)
            if not sage:
                inst.stop()
        # The SAGE instance, suspended by the operator: runs x (suspend, idle MiB, resumed invocation).
        for _ in range(runs):
            rss = rep.rss_mib(inst.pid)
            ok, ms, text = self.suspend(inst)
            if not ok:
                w["failures"] = w.get("failures", 0) + 1
                w.setdefault("problems", []).append(f"sagectl suspend: {text}")
                break
            w.setdefault("suspend_ms", []).append(ms)
            w.setdefault("idle_gpu_mib", []).append(self.gpu_mib([inst.pid])[inst.pid])
            # The checkpoint lands in the instance's own host memory: its RSS grows by it.
            after = rep.rss_mib(inst.pid)
            if rss is not None and after is not None:
                w.setdefault("idle_host_delta_mib", []).append(after - rss)
            host = (self.entry(inst.pid) or {}).get("host_bytes")
            if isinstance(host, (int, float)):  # the broker's estimate, where it has one
                w.setdefault("idle_host_mib", []).append(host / 1048576.0)
            used = self.device_used_mib()
            if used is not None and base is not None:
                # Cross-check where nvidia-smi cannot see this pid namespace's processes.
                w.setdefault("idle_device_delta_mib", []).append(used - base)
            ms, rec, resume_ms, _ = self.resumed_invoke(inst)
            w.setdefault("resumed_ms", []).append(ms)
            w.setdefault("resume_ms", []).append(resume_ms)
            self.check(w, rec, ref)
        inst.stop()
        if not idle_too:
            return
        # Another, suspended by the broker after SAGE_SUSPEND_IDLE.
        idle = self.plan["faas"]["idle"]
        inst = self.start_instances(kind, 1, {"SAGE_SUSPEND_IDLE": idle}, tag="idle")
        if not inst:
            return
        inst = inst[0]
        self.check(w, inst.invoke()[1], ref)
        for _ in range(runs):
            e = self.wait_state(inst.pid, ("suspended",), 5 if self.fake else 30)
            if not e or e["state"] != "suspended":
                w.setdefault("problems", []).append(f"not suspended by SAGE_SUSPEND_IDLE={idle} in time")
                break
            w.setdefault("idle_idle_gpu_mib", []).append(self.gpu_mib([inst.pid])[inst.pid])
            ms, rec, resume_ms, _ = self.resumed_invoke(inst)
            w.setdefault("resumed_idle_ms", []).append(ms)
            w.setdefault("resume_idle_ms", []).append(resume_ms)
            self.check(w, rec, ref)
        inst.stop()

    def reference(self, kind):
        """The native output of kind (one cold run unless the workloads part made one)."""
        if not self.refs.get(kind):
            self.refs[kind] = self.cold(kind)[1].get("checksum")
        return self.refs[kind]

    def concurrent(self, n):
        kind = self.plan["heavy"]
        c = {"kind": kind, "instances": n, "resume_by": self.resume_by, "failures": 0, "mismatches": 0}
        baseline = self.plan["driver_baseline"]
        if not self.fits(f"concurrent {n}", rep.estimate_concurrent(kind, n, self.fake, baseline)):
            self.raw["concurrent"][n] = {"skipped": "time budget"}
            return
        self.raw["concurrent"][n] = c
        ref = self.reference(kind)
        if baseline:
            self.driver_restore(c, kind, n, ref)
        insts = self.start_instances(kind, n, tag=f"conc{n}")
        c["failures"] += n - len(insts)
        for i in insts:
            self.check(c, i.invoke()[1], ref)
        results = [None] * len(insts)

        def suspend(k):
            results[k] = self.suspend(insts[k])
        self.threads(suspend, len(insts))
        down = [i for k, i in enumerate(insts) if results[k][0]]
        c["failures"] += len(insts) - len(down)
        c["suspend_ms"] = [r[1] for r in results if r[0]]
        c["idle_gpu_mib"] = sum(v or 0 for v in self.gpu_mib([i.pid for i in down]).values())
        go = threading.Barrier(len(down)) if down else None
        out = [None] * len(down)

        def resume(k):
            go.wait()
            out[k] = self.resumed_invoke(down[k])
        self.threads(resume, len(down))
        for ms, rec, resume_ms, _ in out:
            c.setdefault("resumed_ms", []).append(ms)
            c.setdefault("resume_ms", []).append(resume_ms)
            self.check(c, rec, ref)
        for i in insts:
            i.stop()

    def driver_restore(self, c, kind, n, ref):
        """The driver alone, in the same run: n native instances (no SAGE) checkpointed, then
        restored at once by suspend_restore (restore + unlock timed each, as saged times them),
        then invoked again: their outputs must still be native's."""
        tool = self.a.restore_tool
        if not tool:
            c.setdefault("problems", []).append("no suspend_restore tool: the driver's restore not measured")
            return
        insts = self.start_instances(kind, n, tag=f"driver{n}", sage=False)
        c["failures"] += n - len(insts)
        for i in insts:
            self.check(c, i.invoke()[1], ref)
        try:
            p = subprocess.run([tool, *[str(i.pid) for i in insts]], capture_output=True, text=True,
                               env=self.base_env, timeout=60 + 10 * n)
            got = json.loads(p.stdout)
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            got = {"errors": [f"suspend_restore: {type(e).__name__}: {e}"]}
        c["driver_checkpoint_ms"] = got.get("checkpoint_ms", [])
        c["driver_restore_ms"] = got.get("restore_ms", [])
        c["failures"] += len(got.get("errors", []))
        c.setdefault("problems", []).extend(got.get("errors", []))
        for i in insts:  # restored by the driver alone: still native's output
            self.check(c, i.invoke()[1], ref)
            i.stop()

    @staticmethod
    def threads(fn, n):
        ts = [threading.Thread(target=fn, args=(k,)) for k in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    def faas(self):
        f = self.plan["faas"]
        if not self.has_idle or self.resume_by != "gate":
            self.raw["faas"] = {"skipped": "libsage has no SAGE_SUSPEND_IDLE and resume gate (not built)"}
            return
        if not self.fits("faas", rep.estimate_faas(f, self.fake)):
            self.raw["faas"] = {"skipped": "time budget"}
            return
        ref = self.reference(f["kind"])
        stream = rep.poisson(f["rate"], f["duration"], f["seed"], f["instances"])
        modes = (("keepalive", {"SAGE_SUSPEND_KEEP_ALIVE": "1"}), ("suspend", {"SAGE_SUSPEND_IDLE": f["idle"]}))
        for mode, env in modes:
            m = {"instances": f["instances"], "requests": len(stream), "failures": 0, "mismatches": 0,
                 "latency_ms": [], "gpu_series": []}
            self.raw["faas"][mode] = m
            insts = self.start_instances(f["kind"], f["instances"], env, http=True, tag=f"faas-{mode}")
            if len(insts) != f["instances"]:
                m["failures"] += len(stream)
                for i in insts:
                    i.stop()
                continue
            for i in insts:  # each served once before the stream (as a platform's warm-up)
                self.check(m, i.invoke()[1], ref)
            m["invocations"] = 0
            done = threading.Event()
            t0 = now()

            def sample():
                while not done.is_set():
                    mib = self.gpu_mib([i.pid for i in insts])
                    m["gpu_series"].append((now() - t0, sum(v or 0 for v in mib.values())))
                    done.wait(0.5)
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            lock = threading.Lock()

            def request(t, k):
                delay = t0 + t - now()
                if delay > 0:
                    time.sleep(delay)  # the open-loop schedule, not a synchronisation
                start = t0 + t
                _, rec = insts[k].invoke(timeout=60)
                with lock:
                    m["latency_ms"].append((now() - start) * 1000.0)
                    self.check(m, rec, ref)
            ts = [threading.Thread(target=request, args=(t, k)) for t, k in stream]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            done.set()
            sampler.join()
            m["instances_suspended"] = sum(1 for i in insts if (self.entry(i.pid) or {}).get("suspend_ms"))
            for i in insts:
                i.stop()

    def oversub(self):
        o = self.plan["oversub"]
        kind = o["kind"]
        if not self.has_cap:
            self.raw["oversub"] = {"skipped": "broker has no --instance-memory"}
            return
        if not self.fits("oversubscription", rep.estimate_oversub(o, self.fake)):
            self.raw["oversub"] = {"skipped": "time budget"}
            return
        ref = self.reference(kind)
        # The native footprint: one warm native process of the workload.
        probe = self.start_instances(kind, 1, sage=False, tag="footprint")
        if not probe:
            self.raw["oversub"] = {"skipped": "the footprint probe did not start"}
            return
        probe[0].invoke()
        foot = self.gpu_mib([probe[0].pid])[probe[0].pid] or 0
        probe[0].stop()
        n = o["fit"] * o["factor"]
        cap_mib = int(foot * (o["fit"] + 0.5))
        r = {"kind": kind, "instances": n, "fit": o["fit"], "native_gpu_mib": foot, "cap_mib": cap_mib,
             "failures": 0, "mismatches": 0, "invocations": 0, "resume_ms": [], "resumed_ms": [],
             "max_gpu_mib": 0.0}
        self.raw["oversub"] = r
        cap = ["--instance-memory", f"{cap_mib}M"] if self.cap_option else []
        if self.evict_option:
            # Requests come one at a time: the instance used last is not idle yet
            # (libsage reports idle after 1 s) but has no call in flight.
            cap += ["--instance-evict", "any"]
        r["saged"] = " ".join(cap)
        if foot <= 0 or not self.start_saged(cap):
            r["failures"] = n
            r.setdefault("problems", []).append(f"footprint {foot} MiB, or saged refused the cap")
            return
        insts = []
        r["peak_gpu_mib"], r["unsettled"] = 0.0, 0

        def settle():
            """What the instances hold once the broker made room: a new process allocates
            before the broker hears of it, so the cap can be passed for a moment
            (peak_gpu_mib); max_gpu_mib is the most held once settled (<= SETTLE_S)."""
            end = now() + (2 if self.fake else rep.SETTLE_S)
            while True:
                held = sum(v or 0 for v in self.gpu_mib([i.pid for i in insts]).values())
                r["peak_gpu_mib"] = max(r["peak_gpu_mib"], held)
                if held <= cap_mib or now() >= end:
                    break
                time.sleep(0.2)  # polling the driver's view; the broker gives no event for it
            r["unsettled"] += held > cap_mib
            r["max_gpu_mib"] = max(r["max_gpu_mib"], held)

        for _ in range(n):  # one after another: each new one makes the broker suspend idle ones
            # No SAGE_SUSPEND_IDLE: the cap alone makes room (the broker's LRU), not idle timers.
            got = self.start_instances(kind, 1, tag="over")
            r["failures"] += 1 - len(got)
            for i in got:
                self.check(r, i.invoke()[1], ref)
                insts.append(i)
            settle()
        for _ in range(o["rounds"]):
            for i in insts:
                if (self.entry(i.pid) or {}).get("state") == "suspended":
                    ms, rec, resume_ms, _ = self.resumed_invoke(i)
                    r["resumed_ms"].append(ms)
                    r["resume_ms"].append(resume_ms)
                else:  # still resident: a plain invocation
                    _, rec = i.invoke(timeout=60)
                self.check(r, rec, ref)
                settle()
        for i in insts:
            i.stop()
        self.start_saged()


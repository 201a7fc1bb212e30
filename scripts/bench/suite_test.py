"""Unit tests of the benchmark suite's pure logic on fabricated records (no GPU, no torch):
suite_plan.py, suite_report.py and suite.py's merge.

    python3 scripts/bench/suite_test.py
"""
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_result  # noqa: E402
import suite  # noqa: E402
import suite_plan  # noqa: E402
import suite_report  # noqa: E402


def rec(wl, mode, run, dur, setup=10.0, upload=5.0, compute=2.0, ok=True, part="conc1", cs="aa", loaded=None, **kw):
    r = {"wl": wl, "mode": mode, "run": run, "part": part, "ok": ok, "duration_ms": dur, "setup_ms": setup,
         "upload_ms": upload, "compute_ms": compute, "host_ms": 1.0, "checksum": cs, "approx": "1.0e+00",
         "sage_loaded": (mode in suite_plan.SAGE_MODES) if loaded is None else loaded}
    if not ok:
        r["error"] = "rc 1: boom"
    r.update(kw)
    return r


class Stats(unittest.TestCase):
    def test_percentile_median(self):
        self.assertEqual(suite_report.median([3, 1, 2]), 2)
        self.assertEqual(suite_report.median([4, 1, 2, 3]), 2.5)
        self.assertEqual(suite_report.percentile(list(range(1, 101)), 99), 99)
        self.assertEqual(suite_report.percentile([5], 99), 5)
        s = suite_report.stats([1, 2, 3, None])
        self.assertEqual((s["n"], s["median"], s["min"], s["max"]), (3, 2, 1, 3))
        self.assertIsNone(suite_report.stats([]))

    def test_parse_output(self):
        text = ('noise\nSAGE_BENCH {"setup_ms": 1.5, "import_ms": 2, "read_ms": 3, "checksum": "x"}\n'
                '{"kernel_ms": 4, "read_ms": 1, "checksum": "y"}\nSAGE_BENCH {bad json\n')
        out = suite_report.parse_output(text, "k")
        self.assertEqual(len(out), 2)
        self.assertEqual(out[0]["host_ms"], 5.0)
        self.assertEqual(out[1]["compute_ms"], 4)
        self.assertEqual(out[1]["kind"], "k")


class Checks(unittest.TestCase):
    def test_checksum_match_and_mismatch(self):
        rs = [rec("a", "native", 1, 100), rec("a", "sage", 1, 90), rec("a", "mps", 1, 95, cs="bb")]
        probs, basis = suite_report.checksum_check(rs)
        self.assertEqual(len(probs), 1)
        self.assertIn("MISMATCH a mps", probs[0])
        self.assertIn("exact", basis["a"])

    def test_checksum_nondeterministic_native_falls_back_to_approx(self):
        rs = [rec("a", "native", 1, 100, cs="1"), rec("a", "native", 2, 100, cs="2"), rec("a", "sage", 1, 90, cs="3")]
        probs, basis = suite_report.checksum_check(rs)
        self.assertEqual(probs, [])
        self.assertIn("approximate", basis["a"])

    def test_failed_runs_not_compared(self):
        rs = [rec("a", "native", 1, 100), rec("a", "sage", 1, 90, ok=False, cs="zz")]
        self.assertEqual(suite_report.checksum_check(rs)[0], [])

    def test_preload(self):
        rs = [rec("a", "native", 1, 1), rec("a", "sage", 1, 1), rec("a", "sage_broker", 1, 1, loaded=False),
              rec("a", "warm_process", 1, 1, loaded=True), rec("a", "sage_shared", 1, 1),
              rec("a", "sage_shared_cold", 1, 1, loaded=False), rec("a", "sage_shared", 0, 1, part="prime")]
        probs, proof = suite_report.preload_check(rs)
        self.assertEqual(len(probs), 3)
        self.assertTrue(any("sage_shared_cold" in p and "NOT loaded" in p for p in probs))
        self.assertEqual(proof["sage"], {"libsage_loaded": 1, "not_loaded": 0})
        self.assertEqual(proof["sage_shared"], {"libsage_loaded": 2, "not_loaded": 0})

    def test_sharing_modes_compared_with_native(self):
        rs = [rec("a", "native", 1, 100), rec("a", "sage_shared_cold", 1, 90), rec("a", "sage_shared", 1, 50),
              rec("a", "sage_shared", 0, 60, part="prime", cs="bad"),
              rec("a", "sage_shared", 1, 60, part="concN", cs="bad2")]
        probs, _ = suite_report.checksum_check(rs)
        self.assertEqual(len(probs), 2)
        self.assertTrue(any("(prime run 0)" in p for p in probs))
        self.assertTrue(any("(concN run 1)" in p for p in probs))


class Summaries(unittest.TestCase):
    def records(self):
        rs = []
        for run in (1, 2, 3):
            rs.append(rec("cfunc", "native", run, 1000 + run, setup=240))
            rs.append(rec("cfunc", "sage", run, 800 + run, setup=0.4, loaded=True))
        rs.append(rec("cfunc", "mps", 1, 0, ok=False))
        for i in range(8):
            rs.append(rec("cfunc", "native", 1, 2000 + i, part="concN", conc=8, batch_wall_ms=2100))
        return rs

    def test_duration_and_ratios(self):
        d = suite_report.summarize_duration(self.records())
        self.assertEqual(d["cfunc"]["native"]["duration_ms"]["median"], 1002)
        self.assertEqual(d["cfunc"]["mps"]["failures"], 1)
        self.assertEqual(d["cfunc"]["mps"]["n"], 0)
        r = suite_report.ratios(d)
        self.assertAlmostEqual(r["cfunc"]["sage"], 1002 / 802, places=3)
        self.assertNotIn("mps", r["cfunc"])

    def test_concurrency(self):
        c = suite_report.summarize_concurrency(self.records())
        s = c["cfunc"]["8"]["native"]
        self.assertEqual(s["per_process_ms"]["n"], 8)
        self.assertEqual(s["per_process_ms"]["p99"], 2007)
        self.assertEqual(s["batch_wall_ms"]["median"], 2100)

    def test_poisson(self):
        a = suite_report.poisson_arrivals(2.0, 10, 7)
        self.assertEqual(a, suite_report.poisson_arrivals(2.0, 10, 7))
        self.assertTrue(all(0 < x < 10 for x in a))
        self.assertTrue(5 <= len(a) <= 40)
        reqs = [{"arrival_s": 0.5, "end_s": 1.5, "ok": True}, {"arrival_s": 1.0, "end_s": 4.0, "ok": True},
                {"arrival_s": 2.0, "end_s": None, "ok": False}]
        s = suite_report.poisson_summary(reqs, 2.0, 10)
        self.assertEqual((s["completed"], s["failed"], s["p50_ms"], s["p99_ms"]), (2, 1, 1000.0, 3000.0))
        self.assertAlmostEqual(s["throughput_rps"], 0.5)

    def test_density(self):
        pts = [{"instances": 1, "used_mib": 2000 + 1500}, {"instances": 2, "used_mib": 2000 + 2500},
               {"instances": 4, "used_mib": 2000 + 4500}]
        d = suite_report.density_extrapolate(pts, 143771, 2000)
        self.assertEqual(d["per_instance_mib_marginal"], 1000.0)
        self.assertEqual(d["first_instance_mib"], 1500.0)
        # 1 instance of 1500 then (143771-2000-1500)//1000 = 140 more
        self.assertEqual(d["extrapolated_max_instances"], 141)
        self.assertIn("EXTRAPOLATED", d["label"])
        self.assertIn("error", suite_report.density_extrapolate([], 1, 0))


class Plan(unittest.TestCase):
    ALL = {"cw": ["cfunc", "sgemm"], "pw": ["resnet50", "bert", "gpt2", "llm"]}

    def cfg(self, quick, **kw):
        s = dict(self.ALL, quick=quick, runs=None, c_mib=512 if quick else 1024, llm_gib=2 if quick else 4)
        s.update(kw)
        cfg = suite_plan.build_config(s)
        cfg["parts"] = ["conc1", "warm", "concN", "poisson", "density"]
        return cfg

    def test_schedule_rotates_and_pairs_cold_with_warm(self):
        plan = {"c": {m: [2, 2] for m in ("native", "mps", "sage", "sage_broker", "sage_shared_cold",
                                          "sage_shared")},
                "p": {"native": [1, 3], "sage_shared_cold": [1, 3], "sage_shared": [1, 3], "sage": [0, 1]}}
        r1 = suite_plan.conc1_schedule(plan, 1)
        self.assertEqual(r1[:2], [("c", "native"), ("p", "native")])
        i = r1.index(("c", "sage_shared_cold"))
        self.assertEqual(r1[i:], [("c", "sage_shared_cold"), ("c", "sage_shared"),
                                  ("p", "sage_shared_cold"), ("p", "sage_shared")])
        r2 = suite_plan.conc1_schedule(plan, 2)
        self.assertEqual(r2[0], ("c", "mps"))  # rotated by one group
        self.assertNotIn(("p", "native"), r2)  # beyond p's core runs
        self.assertEqual(suite_plan.conc1_schedule(plan, 1, extra=True), [("p", "sage")])
        self.assertEqual(sorted(suite_plan.conc1_schedule(plan, 2, extra=True)),
                         [("p", "native"), ("p", "sage_shared"), ("p", "sage_shared_cold")])
        self.assertEqual(suite_plan.conc1_schedule(plan, 3)[:0], [])
        self.assertEqual(suite_plan.conc1_rounds(plan), 3)

    def test_default_plan_fits_its_budget_and_runs_every_part(self):
        for quick, budget in ((False, 480), (True, 390)):
            cfg = self.cfg(quick)
            est = suite_plan.estimate_plan(cfg)
            core = sum(v for k, v in est.items() if k != "extra")
            self.assertLessEqual(core + suite_plan.EST_SETUP_S, budget, (quick, est))
            for part in cfg["parts"]:
                self.assertGreater(est[part], 0, part)
            self.assertGreater(est["extra"], 0)
            # every workload runs native and both sharing modes at concurrency 1
            for w, modes in cfg["conc1"].items():
                for m in ("native", "sage_shared_cold", "sage_shared"):
                    self.assertGreaterEqual(modes[m][0], 1, (w, m))
            for k in ("cfunc", "resnet50"):
                self.assertIn("sage_shared", cfg["concN_modes"][k])
            self.assertIn("sage_shared", cfg["poisson_modes"])
            self.assertIn("sage_shared", cfg["density_modes"])
        self.assertEqual(self.cfg(False)["concN"], {"cfunc": [8, 16], "resnet50": [8, 16]})

    def test_runs_option(self):
        cfg = self.cfg(False, runs=5)
        self.assertEqual(cfg["conc1"]["cfunc"]["mps"], [5, 5])
        self.assertEqual(cfg["conc1"]["gpt2"]["native"], [1, 5])
        self.assertEqual(cfg["conc1"]["gpt2"]["sage"], [0, 1])
        self.assertEqual(self.cfg(True, runs=2)["conc1"]["bert"]["native"], [1, 1])

    def test_estimate_counts_priming_and_reuse(self):
        cfg = {"parts": ["poisson", "density"], "poisson_kind": "r", "poisson_rates": [1], "poisson_window_s": 0,
               "poisson_modes": ["native", "sage_shared"], "density_kind": "r", "density_counts": [1],
               "density_modes": ["sage_shared"], "gap": 0}
        est = suite_plan.estimate_plan(cfg, lambda k, m: 10.0)
        # poisson: native 13.5, sage_shared 13.5 + prime (broker + 10); density reuses the primed broker
        self.assertAlmostEqual(est["poisson"], 27.0 + suite_plan.EST_BROKER_S + 10.0, places=1)
        self.assertAlmostEqual(est["density"], 1.0 + suite_plan.est_batch(10.0, "r", 1) + 1.5, places=1)
        cfg["poisson_modes"] = ["sage_shared", "native"]
        est2 = suite_plan.estimate_plan(cfg, lambda k, m: 10.0)
        self.assertGreater(est2["density"], est["density"])  # native in between: primed again

    def test_sharing_summary(self):
        rs = [rec("a", "sage_shared_cold", 1, 1, broker_delta={"hits": 0, "misses": 3, "publishes": 3}),
              rec("a", "sage_shared", 1, 1, broker_delta={"hits": 3, "misses": 0, "publishes": 0}),
              rec("a", "sage_shared", 2, 1, broker_delta={"hits": 2, "misses": 1}),
              rec("a", "sage_shared", 0, 1, part="prime", broker_delta={"hits": 9})]
        s = suite_report.sharing_summary(rs)
        self.assertEqual(s["a"]["sage_shared"], {"n": 2, "hits": 5, "misses": 1, "publishes": 0})
        self.assertEqual(s["a"]["sage_shared_cold"]["publishes"], 3)


class Config(unittest.TestCase):
    def test_config_from_suite_sh(self):
        # suite.sh's set-up, as it passes it, -> config.json with the plan and
        # bench_result's machine (the one result schema's keys).
        with tempfile.TemporaryDirectory() as d:
            env = {"S_QUICK": "1", "S_RUNS": "", "S_BUDGET": "480", "S_TSTART": "0", "S_PARTS": "conc1 poisson",
                   "S_CWLS": "cfunc", "S_PYWLS": "", "S_LOGS": d, "S_BIN": d, "S_DATA": d, "S_HERE": d,
                   "S_PY": sys.executable, "S_LIBSAGE": "l", "S_SAGED": "s", "S_SAGECTL": "c", "S_SOCK": "k",
                   "S_MPS_CTL": "", "S_MPS_PIPE": "", "S_MPS_LOG": "", "S_OUT": "", "S_HOOK": "", "S_GPUIDX": "0",
                   "S_NVCC": "/nonexistent/nvcc", "S_TORCH": "", "S_CMIB": "1024", "S_LLMGIB": "4", "S_SHARD": ""}
            old = dict(os.environ)
            os.environ.update(env)
            try:
                self.assertEqual(suite.config_main(os.path.join(d, "config.json")), 0)
            finally:
                os.environ.clear()
                os.environ.update(old)
            cfg = json.load(open(os.path.join(d, "config.json")))
        for k in bench_result.MACHINE_KEYS:
            self.assertIn(k, cfg["machine"])
        self.assertEqual(cfg["parts"], ["conc1"])  # no resnet50: no poisson
        self.assertTrue(cfg["quick"])


class Report(unittest.TestCase):
    def doc(self):
        rs = Summaries().records() + [rec("resnet50", "warm_process", 1, 5, setup=0, upload=0, compute=5,
                                          loaded=False),
                                      rec("cfunc", "sage_shared", 1, 300, broker_delta={"hits": 1, "misses": 0,
                                                                                        "publishes": 0})]
        extra = {"machine": {"gpu": "NVIDIA H200", "driver": "580", "cuda": "13.0", "cpus": 16, "date": "d", "kernel": "6.8",
                             "commit": "abc"}, "config": {"quick": True},
                 "modes": {"native": "ok", "mps": "unavailable: x", "sage_shared": "ok (sagectl ping rc 0)"},
                 "mode_text": dict(suite_plan.MODE_TEXT), "trimmed": ["conc1 bert sage run 1"],
                 "estimate_s": {"conc1": 100.0, "extra": 50.0}, "part_s": {"conc1": 90.0, "extra": 0.1},
                 "na": {"cfunc": {"warm_process": "n/a"}}, "skipped": ["poisson 3 req/s mps (time budget)"],
                 "hook_overhead": "not run",
                 "poisson": {"workload": "resnet50", "rates": {"1": {
                     "native": suite_report.poisson_summary([{"arrival_s": 0, "end_s": 5, "ok": True}], 1, 8),
                     "mps": "unavailable: x"}}},
                 "density": {"workload": "resnet50", "modes": {
                     "native": suite_report.density_extrapolate([{"instances": 1, "used_mib": 3000},
                                                                 {"instances": 4, "used_mib": 6000}], 143771, 500),
                     "mps": "unavailable: x"}},
                 "elapsed_s": 12}
        return suite_report.assemble(rs, extra)

    def test_table_and_json(self):
        doc = self.doc()
        t = suite_report.table(doc)
        for want in ("NVIDIA H200", "native", "sage_shared       libsage + SAGE_SHARE=1", "n/a", "EXTRAPOLATED",
                     "SKIPPED: poisson", "hook overhead: not run", "checksums vs native: OK", "x8",
                     "FAILED processes: 1", "warm 1/0/0 (n=1)", "optional extra runs not done",
                     "conc1 100.0 / 90.0", "n=3"):
            self.assertIn(want, t)
        json.dumps(doc)  # serialisable
        with tempfile.TemporaryDirectory() as d:
            suite_report.write_outputs(doc, d)
            files = os.listdir(d)
            self.assertIn("results.json", files)
            self.assertIn("table.txt", files)
            self.assertLessEqual(len(files), 8)
            back = json.load(open(os.path.join(d, "results.json")))
            self.assertEqual(back["modes"]["sage_shared"], "ok (sagectl ping rc 0)")
            self.assertEqual(back["summary"]["sharing"]["cfunc"]["sage_shared"]["hits"], 1)
            self.assertEqual(bench_result.check(back), [])  # the one result schema
            self.assertEqual(back["bench"], "suite")

    def test_reads_files_from_before_the_schema(self):
        # results.json written before bench_result: figures at the top level,
        # settings under "config" (docs/results/2026-11-30-h200/suite-full.json).
        doc = self.doc()
        old = {k: v for k, v in doc.items() if k not in ("summary", "settings", "schema", "bench")}
        old.update(doc["summary"])
        old["config"] = {"quick": True, "plan_note": "old plan"}
        t = suite_report.table(old)
        self.assertIn("old plan", t)
        self.assertIn("n=3", t)
        again = suite_report.assemble(old["records"], {k: v for k, v in old.items() if k != "records"})
        self.assertEqual(bench_result.check(again), [])
        self.assertNotIn("duration", again)  # figures once, under summary
        self.assertEqual(again["settings"]["plan_note"], "old plan")

    def test_mismatch_is_loud(self):
        doc = self.doc()
        doc["records"].append(rec("cfunc", "sage", 9, 800, cs="ff"))
        doc = suite_report.assemble(doc["records"], {k: v for k, v in doc.items() if k not in ("records",)})
        self.assertIn("*** MISMATCH ***", suite_report.table(doc))

    def test_plots_optional(self):
        with tempfile.TemporaryDirectory() as d:
            written, note = suite_report.plots(self.doc(), d)
            try:
                import matplotlib  # noqa: F401
                self.assertEqual(len(written), 3)
            except ImportError:
                self.assertEqual(written, [])
                self.assertIn("matplotlib", note)


class Shards(unittest.TestCase):
    def test_shards_cover_the_full_plan_once_within_the_budget(self):
        for budget, runs, n in ((480, None, None), (480, None, 5), (600, None, None), (480, 2, None)):
            plan = suite_plan.shard_plan(budget, runs, n)
            full = suite_plan.full_config(runs)
            want = suite_plan.plan_items(full)
            self.assertEqual(len(want), len(set(want)))
            self.assertEqual(plan["items"], want)
            got = []
            for sh in plan["shards"]:
                cfg = suite_plan.shard_config({"shard": f"{sh['k']}/{plan['n']}", "budget": budget, "runs": runs,
                                               "cw": list(suite_plan.C_KINDS), "pw": list(suite_plan.PY_KINDS),
                                               "c_mib": 1024, "llm_gib": 4})
                got += suite_plan.plan_items(cfg)
                est = suite_plan.estimate_plan(cfg)
                self.assertEqual(est["extra"], 0.0, sh)  # everything is core: nothing optional
                py = any(w in suite_plan.PY_KINDS for w in sh["workloads"])
                total = suite_plan.EST_SHARD_SETUP_S["python" if py else "c"] + sum(
                    v for k, v in est.items() if k != "extra")
                self.assertLessEqual(total, budget, sh)
                self.assertAlmostEqual(total, sh["est_s"], places=0)
                self.assertEqual(cfg["parts"], sh["parts"])
                # ratios stay within a shard: every workload measured here has its native runs here
                for wl, modes in cfg["conc1"].items():
                    self.assertEqual(set(modes), {"native", "mps", "sage", "sage_broker", "sage_shared_cold",
                                                  "sage_shared"})
                    self.assertEqual(len({tuple(v) for v in modes.values()}), 1)
                for wl in cfg["warm"]:
                    self.assertIn(wl, cfg["conc1"])
                for wl in cfg["concN"]:
                    self.assertIn("native", cfg["concN_modes"][wl])
                for part in ("poisson", "density"):
                    if part in cfg["parts"]:
                        self.assertIn("native", cfg[part + "_modes"])
            self.assertEqual(sorted(got), sorted(want), (budget, runs, n))  # union == full plan, no duplicates
        # the full default plan: every workload in every mode x3, a warm process of each Python one
        full = suite_plan.full_config()
        for wl in suite_plan.C_KINDS + suite_plan.PY_KINDS:
            for m in suite_plan.MODES[:-1]:
                self.assertIn(f"conc1 {wl} {m} run 3", full and suite_plan.plan_items(full))
        for wl in suite_plan.PY_KINDS:
            self.assertIn(f"warm_process {wl}", suite_plan.plan_items(full))

    def test_default_shard_count_and_determinism(self):
        plan = suite_plan.shard_plan()
        self.assertEqual((plan["n"], plan["min_n"]), (2, 2))  # the figure in docs/benchmarks.md and suite.sh
        self.assertEqual(plan, suite_plan.shard_plan())
        self.assertEqual(suite_plan.shard_plan(n=2)["shards"], plan["shards"])
        small = suite_plan.shard_plan(budget=200)  # bert alone overflows 200 s: cut into whole rounds
        self.assertIn("conc1 bert runs 1-2 + warm", [u["id"] for u in small["units"]])
        with self.assertRaises(ValueError):
            suite_plan.shard_plan(n=1)
        with self.assertRaises(ValueError):
            suite_plan.shard_plan(budget=100)
        for bad in ("0/4", "5/4", "x", "1/"):
            with self.assertRaises(ValueError):
                suite_plan.parse_shard(bad)

    def test_first_round_and_missing_workload(self):
        plan = {"w": {"native": [3, 3, 3], "sage": [3, 3, 3]}}
        self.assertEqual(suite_plan.conc1_schedule(plan, 1), [])
        self.assertEqual(sorted(suite_plan.conc1_schedule(plan, 3)), [("w", "native"), ("w", "sage")])
        self.assertEqual(suite_plan.conc1_schedule(plan, 3, extra=True), [])
        p = suite_plan.shard_plan()
        k = next(sh["k"] for sh in p["shards"] if "llm" in sh["workloads"])
        cfg = suite_plan.shard_config({"shard": f"{k}/{p['n']}", "cw": list(suite_plan.C_KINDS), "c_mib": 1024, "llm_gib": 4,
                                       "pw": [w for w in suite_plan.PY_KINDS if w != "llm"]})
        self.assertNotIn("llm", cfg["conc1"])
        self.assertTrue(any("llm" in u for u in cfg["shard"]["missing_here"]))
        self.assertEqual(cfg["time_model"], suite_plan.SHARD_MODEL)
        self.assertGreater(suite_plan.est_invocation(cfg, "bert"), suite_plan.est_invocation({}, "bert"))


def shard_doc(k, n, records, commit="abc", gpu="NVIDIA H200", date="2026-12-01T00:00:00Z", **kw):
    """A shard's results document as suite.py run writes it (fabricated)."""
    plan = {"n": n, "budget_s": 480, "runs": 1, "plan_note": "full plan: test",
            "units": [{"id": "u%d" % i} for i in range(1, n + 1)],
            "items": ["conc1 a native run 1", "conc1 a sage run 1", "conc1 b native run 1", "conc1 b sage run 1",
                      "conc1 c native run 1", "warm_process b", "poisson r 1 req/s native", "density r native"]}
    extra = {"machine": {"gpu": gpu, "driver": "580", "cuda": "13.0", "cpus": 16, "date": date, "commit": commit, "kernel": "6.8",
                         "gpu_memory": "143771 MiB", "torch": "2.11"},
             "config": {"quick": False, "python_env": {"torch": "2.11"}}, "modes": {"native": "ok", "sage": "ok"},
             "shard": {"k": k, "n": n, "units": ["u%d" % k], "budget_s": 480}, "full_plan": plan,
             "skipped": [], "trimmed": [], "notes": [], "hook_overhead": "not run", "poisson": {}, "density": {},
             "estimate_s": {"conc1": 10.0}, "part_s": {"conc1": 9.0}, "elapsed_s": 100.0}
    extra.update(kw)
    return json.loads(json.dumps(suite_report.assemble(records, extra)))


class Merge(unittest.TestCase):
    def shards(self, **kw2):
        s1 = shard_doc(1, 2, [rec("a", "native", 1, 100), rec("a", "sage", 1, 50),
                              rec("b", "native", 1, 200, cs="b1"), rec("b", "sage", 1, 100, cs="b1"),
                              rec("b", "warm_process", 1, 5, cs="b1", loaded=False),
                              rec("r", "native", 0, 10, part="poisson", rate=1, cs="r1")],
                       poisson={"workload": "r", "rates": {"1": {"native": suite_report.poisson_summary(
                           [{"arrival_s": 0, "end_s": 5, "ok": True}], 1, 4)}}})
        s2 = shard_doc(2, 2, [rec("b", "native", 1, 400, cs="b1"), rec("b", "sage", 1, 100, cs="b1"),
                              rec("r", "native", 1, 10, part="density", cs="r1")],
                       density={"workload": "r", "modes": {"native": suite_report.density_extrapolate(
                           [{"instances": 1, "used_mib": 1000}, {"instances": 3, "used_mib": 3000}], 143771, 0)}},
                       skipped=["conc1 c native run 1 (time budget)"], **kw2)
        return s1, s2

    def test_merge_recomputes_and_reports_what_was_not_run(self):
        s1, s2 = self.shards()
        doc = suite_report.merge_docs([s2, s1], ["B/results.json", "A/results.json"])
        self.assertEqual(doc["merge_warnings"], [])
        self.assertEqual([m["shard"] for m in doc["merged_from"]], [1, 2])
        self.assertEqual(doc["not_run"], ["conc1 c native run 1"])
        self.assertEqual(doc["checks"]["checksum_problems"], [])
        self.assertEqual(doc["checks"]["preload_problems"], [])
        self.assertEqual(doc["summary"]["duration"]["b"]["native"]["n"], 2)
        # ratios within each shard: b is 2x in shard 1 and 4x in shard 2 -> median 3x
        self.assertEqual(doc["ratios_by_shard"]["1"]["b"]["sage"], 2.0)
        self.assertEqual(doc["ratios_by_shard"]["2"]["b"]["sage"], 4.0)
        self.assertEqual(doc["summary"]["ratios"]["b"]["sage"], 3.0)
        self.assertEqual(doc["summary"]["ratios"]["a"]["sage"], 2.0)
        self.assertIn("1", doc["poisson"]["rates"])
        self.assertIn("native", doc["density"]["modes"])
        self.assertEqual(doc["skipped"], ["shard 2: conc1 c native run 1 (time budget)"])
        self.assertTrue(all("shard" in r for r in doc["records"]))
        t = suite_report.table(doc)
        for want in ("NOT RUN (1 of 8 items", "shard 1 (A/results.json)", "shard 2 (B/results.json)",
                     "checksums vs native: OK", "merged from 2 of 2 shards"):
            self.assertIn(want, t)
        with tempfile.TemporaryDirectory() as d:
            paths = []
            for i, s in enumerate((s1, s2)):
                paths.append(os.path.join(d, f"s{i}.json"))
                json.dump(s, open(paths[-1], "w"))
            self.assertEqual(suite.merge_main(os.path.join(d, "m"), paths), 3)  # incomplete
            back = json.load(open(os.path.join(d, "m", "results.json")))
            self.assertEqual(back["not_run"], ["conc1 c native run 1"])
            self.assertEqual(bench_result.check(back), [])
            self.assertTrue(os.path.exists(os.path.join(d, "m", "table.txt")))

    def test_merge_checks_within_each_shard_and_warns(self):
        s1, s2 = self.shards(commit="def", gpu="NVIDIA A100")
        s2["records"].append(rec("b", "sage", 2, 100, cs="zz"))
        s2["records"].append(rec("c", "native", 1, 1, cs="c1"))
        s1["records"].append(rec("c", "sage", 1, 1, cs="c2"))  # no native of c in shard 1: not compared
        doc = suite_report.merge_docs([s1, s2], ["A", "B"])
        w = " | ".join(doc["merge_warnings"])
        self.assertIn("DIFFERENT COMMITS", w)
        self.assertIn("DIFFERENT MACHINES (gpu)", w)
        probs = doc["checks"]["checksum_problems"]
        self.assertEqual(len(probs), 1, probs)
        self.assertTrue(probs[0].startswith("shard 2: MISMATCH b sage"))
        self.assertIn("no native", doc["checks"]["checksum_basis"]["c"])
        self.assertEqual(doc["not_run"], [])
        t = suite_report.table(doc)
        self.assertIn("*** MERGE WARNING *** shards come from DIFFERENT COMMITS", t)
        self.assertIn("*** MISMATCH ***", t)
        self.assertIn("full plan covered", t)

    def test_merge_native_across_shards_and_missing_or_duplicate_shards(self):
        s1, s2 = self.shards()
        for r in s2["records"]:
            if r["wl"] == "b":
                r["checksum"], r["approx"] = "b2", "2.0e+00"
        doc = suite_report.merge_docs([s1, s2])
        self.assertTrue(any("native differs between shards" in p for p in doc["checks"]["checksum_problems"]))
        doc = suite_report.merge_docs([s1, s1])
        w = " | ".join(doc["merge_warnings"])
        self.assertIn("shard 1 given twice", w)
        self.assertIn("shards not given: 2 of 2", w)
        self.assertEqual(doc["summary"]["duration"]["a"]["native"]["n"], 1)  # not counted twice
        self.assertIn("conc1 c native run 1", doc["not_run"])
        other = shard_doc(2, 3, [])
        self.assertTrue(any("another plan" in x for x in suite_report.merge_docs([s1, other])["merge_warnings"]))


if __name__ == "__main__":
    unittest.main()

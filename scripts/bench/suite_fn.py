"""Python functions of the benchmark suite (scripts/bench/suite.sh).

    suite_fn.py gen  KIND PATH [--gib G] [--from-model]
                                           write deterministic random weights (safetensors):
                                           from model_shapes.json (suite_gen.py: seconds), or
                                           --from-model: build the model with its random
                                           initialisation and save it (tens of seconds)
    suite_fn.py run  KIND PATH             one invocation: a whole function, start to exit
    suite_fn.py serve KIND PATH N          warm process: load once, then N timed invocations
    suite_fn.py hold KIND PATH             run once, report GPU memory, keep everything
                                           resident until stdin closes (density)

Option --slow-build (after the other arguments of run/serve/hold): build the
model with its random initialisation, as `gen --from-model` does. By default run/serve/hold
build it without (fast_build(): every parameter and persistent buffer is
overwritten by load_model(strict=True) anyway; a serverless function loading
its weights would not draw random numbers first); `gen --from-model` checks once that the
fast build plus the load gives a model bit-identical to the slow one
(parameters and every buffer) and says so in its JSON line ("fast_build").

KIND: resnet50 (torchvision, fp32), bert (transformers BertConfig(), fp16),
gpt2 (GPT2Config(n_embd=1024, n_layer=24, n_head=16) = GPT-2 medium, fp16),
llm (an LLM-shaped fp16 state dict of --gib GiB of 8192x8192 tensors + a
matmul chain through them). No network: models are built from their
configuration and their weights are loaded from the local safetensors file.

Every invocation prints one line `SAGE_BENCH {json}` on stdout with its phase
times in ms relative to SAGE_BENCH_T0_NS (CLOCK_MONOTONIC, set by the launcher
right before the process starts): import, read (host: file + model build),
setup (GPU set-up: torch.cuda.init + first tensor), upload, compute (forward +
sync), total; a checksum of the output (sum of its bit patterns, exact) and
an approximate value (float sum, 4 significant digits), and whether libsage is
mapped into the process. With SAGE_BENCH_IDLE_MS=N (> 0) `run` then idles N ms,
as a serverless instance between calls, and computes once more on the input the
first call uploaded (so the uploads, and the shared fraction, stay the first
call's): again_ms (that call's compute, any wait for SAGE's work at idleness included) and
again_checksum (its output, compared with native's).
"""
import time

T_MAIN = time.monotonic_ns()

import contextlib  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

from bench_proc import ms, sage_loaded  # noqa: E402

# Same inputs, same algorithms in every mode: deterministic cuBLAS workspace.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

KINDS = ("resnet50", "bert", "gpt2", "llm")
LLM_DIM = 8192


def emit(rec):
    print("SAGE_BENCH " + json.dumps(rec, sort_keys=True), flush=True)


def bit_checksum(t):
    import torch

    t = t.detach().contiguous()
    view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return int(t.view(view).to(torch.int64).sum().item()) & (2**64 - 1)


def import_libs(kind):
    import torch  # noqa: F401
    if kind == "resnet50":
        import torchvision  # noqa: F401
    elif kind in ("bert", "gpt2"):
        import transformers  # noqa: F401
    import safetensors.torch  # noqa: F401


# Random initialisers made no-ops by fast_build(): torch.nn.init's and the
# in-place Tensor methods they (and transformers' _init_weights) end in. The
# deterministic ones (zeros_, ones_, constant_, fill_) stay: they are cheap and
# a buffer that is not in the state dict may rely on them.
NN_INIT_RANDOM = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                  "xavier_uniform_", "xavier_normal_", "orthogonal_", "sparse_", "uniform", "normal",
                  "kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal")
TENSOR_RANDOM = ("normal_", "uniform_", "random_", "log_normal_", "exponential_", "cauchy_", "geometric_")


@contextlib.contextmanager
def fast_build():
    """Build a model without drawing its random initial weights. Yields a list
    naming what was disabled (empty: nothing could be, the slow path)."""
    import torch

    done, undo = [], []

    def skip_fn(tensor=None, *a, **k):
        return tensor

    def skip_method(self, *a, **k):
        return self

    try:
        for name in NN_INIT_RANDOM:
            orig = getattr(torch.nn.init, name, None)
            if orig is not None:
                setattr(torch.nn.init, name, skip_fn)
                undo.append(lambda n=name, o=orig: setattr(torch.nn.init, n, o))
        for name in TENSOR_RANDOM:
            if hasattr(torch.Tensor, name):
                own = name in torch.Tensor.__dict__
                orig = torch.Tensor.__dict__.get(name)
                setattr(torch.Tensor, name, skip_method)
                undo.append(lambda n=name, o=orig, own=own:
                            setattr(torch.Tensor, n, o) if own else delattr(torch.Tensor, n))
        if undo:
            done.append("torch.nn.init + Tensor random initialisers")
    except Exception as e:  # noqa: BLE001 - the slow path is always correct
        print(f"suite_fn: patching torch's initialisers failed ({e}); slow build", file=sys.stderr)
        for u in reversed(undo):
            u()
        undo, done = [], []
    hf = None
    try:
        hf = hf_no_init_weights()
        if hf is not None:
            hf.__enter__()
            done.append("transformers no_init_weights")
    except Exception as e:  # noqa: BLE001
        print(f"suite_fn: transformers no_init_weights unusable ({e})", file=sys.stderr)
        hf = None
    try:
        yield done
    finally:
        if hf is not None:
            hf.__exit__(None, None, None)
        for u in reversed(undo):
            u()


def hf_no_init_weights():
    """transformers' no_init_weights() context (where it is: modeling_utils up
    to 4.x, initialization in later versions), or None; only if transformers
    is already imported (resnet50 and llm do not import it)."""
    if "transformers" not in sys.modules:
        return None
    for mod in ("transformers.modeling_utils", "transformers.initialization"):
        try:
            m = importlib.import_module(mod)
        except Exception:  # noqa: BLE001
            continue
        f = getattr(m, "no_init_weights", None)
        if f is not None:
            return f()
    return None


def build_model(kind, fast=False):
    """The model (on the CPU, in eval mode), or None for llm. fast: without
    random initialisation (its parameters are garbage until loaded)."""
    if kind == "llm":
        return None
    if not fast:
        return _build(kind)
    with fast_build() as done:
        model = _build(kind)
    # no_init_weights also skips tie_weights() in transformers 4.x; the
    # state dict stores tied weights once, so tie them as the slow path does.
    if "transformers no_init_weights" in done and callable(getattr(model, "tie_weights", None)):
        model.tie_weights()
    model.sage_build = "fast (" + " + ".join(done) + ")" if done else "slow (nothing to disable)"
    return model


def _build(kind):
    import torch

    if kind == "resnet50":
        import torchvision
        return torchvision.models.resnet50(weights=None).eval()
    if kind == "bert":
        import transformers
        return transformers.BertModel(transformers.BertConfig()).half().eval()
    if kind == "gpt2":
        import transformers
        cfg = transformers.GPT2Config(n_embd=1024, n_layer=24, n_head=16)
        return transformers.GPT2LMHeadModel(cfg).half().eval()
    raise SystemExit(f"unknown kind {kind}")
    del torch


def make_input(kind):
    """Deterministic input, on the CPU."""
    import torch

    g = torch.Generator().manual_seed(4321)
    if kind == "resnet50":
        return torch.randn(8, 3, 224, 224, generator=g)
    if kind == "bert":
        return torch.randint(0, 30522, (8, 128), generator=g)
    if kind == "gpt2":
        return torch.randint(0, 50257, (4, 128), generator=g)
    return None  # llm: the input is part of the state dict


def generate(kind, path, gib, extra=None):
    import torch
    from safetensors.torch import save_file, save_model

    torch.manual_seed(1234)
    tmp = path + ".tmp"
    if kind == "llm":
        g = torch.Generator().manual_seed(1234)
        n = max(1, int(round(gib * 1024 / 128)))  # 128 MiB per 8192x8192 fp16 tensor
        tensors = {}
        for i in range(n):
            w = torch.randn(LLM_DIM, LLM_DIM, generator=g) * (LLM_DIM ** -0.5)
            tensors[f"layers.{i:03d}.weight"] = w.to(torch.float16)
        tensors["input"] = torch.randn(64, LLM_DIM, generator=g).to(torch.float16)
        save_file(tensors, tmp)
        info = {"tensors": n}
    else:
        a = time.monotonic_ns()
        model = build_model(kind)
        b = time.monotonic_ns()
        save_model(model, tmp)
        info = {"params": sum(p.numel() for p in model.parameters()), "build_slow_ms": ms(a, b)}
        info.update(verify_fast_build(kind, tmp, model))
    os.replace(tmp, path)
    info.update({"kind": kind, "path": path, "bytes": os.path.getsize(path)}, **(extra or {}))
    print(json.dumps(info), flush=True)


def same_bits(a, b):
    import torch

    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    a, b = a.detach().contiguous(), b.detach().contiguous()
    if a.is_floating_point():
        view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        a, b = a.view(view), b.view(view)
    return bool(torch.equal(a, b))


def model_tensors(model):
    """Every parameter (tied ones once) and every buffer, persistent or not."""
    out = {"param " + n: t for n, t in model.named_parameters()}
    out.update({"buffer " + n: t for n, t in model.named_buffers()})
    return out


def verify_fast_build(kind, path, ref):
    """Build KIND the fast way, load PATH (saved from ref, the slow build) and
    compare every parameter and buffer bit for bit: {"fast_build": "ok ..." |
    "mismatch: ..." | "failed: ..."}."""
    from safetensors.torch import load_model

    try:
        a = time.monotonic_ns()
        model = build_model(kind, fast=True)
        load_model(model, path, strict=True)
        b = time.monotonic_ns()
        want, got = model_tensors(ref), model_tensors(model)
        if set(want) != set(got):
            diff = sorted(set(want) ^ set(got))
            return {"fast_build": f"mismatch: tensors differ by name: {diff[:4]}"}
        bad = [n for n in want if not same_bits(want[n], got[n])]
        if bad:
            return {"fast_build": f"mismatch: {len(bad)} of {len(want)} tensors differ: {bad[:4]}"}
        return {"fast_build": f"ok ({len(want)} tensors bit-identical; {model.sage_build})",
                "build_fast_load_ms": ms(a, b)}
    except Exception as e:  # noqa: BLE001
        return {"fast_build": f"failed: {type(e).__name__}: {str(e)[:200]}"}


class Loaded:
    """A function's state once its weights are on the GPU."""

    def __init__(self, kind, path, slow_build=False):
        self.kind, self.path, self.slow_build = kind, path, slow_build
        self.build = None

    def read(self):
        """Host side: read the file and build the model (no CUDA)."""
        from safetensors.torch import load_file, load_model

        if self.kind == "llm":
            self.state = load_file(self.path)
            self.model = None
        elif self.slow_build:
            self.model = build_model(self.kind)
            load_model(self.model, self.path, strict=True)
            self.build = "slow (--slow-build)"
        else:
            try:
                self.model = build_model(self.kind, fast=True)
                load_model(self.model, self.path, strict=True)
                self.build = self.model.sage_build
            except Exception as e:  # noqa: BLE001 - the slow path is always correct
                print(f"suite_fn: fast build failed ({type(e).__name__}: {e}); slow build", file=sys.stderr)
                self.model = build_model(self.kind)
                load_model(self.model, self.path, strict=True)
                self.build = f"slow (fast build failed: {type(e).__name__})"
        self.inp = make_input(self.kind)

    def gpu_setup(self):
        import torch

        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.cuda.init()
        torch.zeros(1, device="cuda")
        torch.cuda.synchronize()

    def upload(self):
        import torch

        if self.kind == "llm":
            self.gpu = {k: v.to("cuda") for k, v in self.state.items()}
            del self.state
        else:
            self.model = self.model.to("cuda")
        torch.cuda.synchronize()

    def compute(self, again=False):
        """One inference; returns the output tensor (on the GPU, synchronised). again: on the input the
        last call uploaded (kept on the GPU), so that the call after the idleness uploads nothing."""
        import torch

        if not again or self.kind == "llm":
            self.last_inp = None if self.kind == "llm" else self.inp.to("cuda")
        with torch.inference_mode():
            if self.kind == "llm":
                x = self.gpu["input"]
                names = sorted(k for k in self.gpu if k.startswith("layers."))
                for k in names:
                    x = torch.tanh(x @ self.gpu[k])
                out = x
            elif self.kind == "resnet50":
                out = self.model(self.last_inp)
            elif self.kind == "bert":
                ids = self.last_inp
                out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
            else:
                out = self.model(input_ids=self.last_inp).logits
            torch.cuda.synchronize()
        return out


def summary(out):
    return {"checksum": f"{bit_checksum(out):016x}", "approx": f"{float(out.float().sum().item()):.4e}",
            "out_shape": list(out.shape)}


def gpu_memory():
    import torch

    free, total = torch.cuda.mem_get_info()
    return {"gpu_free_bytes": free, "gpu_total_bytes": total,
            "torch_reserved_bytes": torch.cuda.memory_reserved()}


def thread_sched():
    """This thread's (run-queue wait ns, voluntary switches, involuntary switches): where a
    thread's wall time went when it was not on a CPU (schedstat: waiting to run after a wake-up)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            delay = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        delay = 0
    ru = resource.getrusage(getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF))
    return delay, ru.ru_nvcsw, ru.ru_nivcsw


def cold(kind, path, slow_build=False):
    """A whole function: returns (record, loaded)."""
    t0_env = os.environ.get("SAGE_BENCH_T0_NS")
    t0 = int(t0_env) if t0_env else T_MAIN
    a = time.monotonic_ns()
    import_libs(kind)
    b = time.monotonic_ns()
    f = Loaded(kind, path, slow_build)
    f.read()
    c = time.monotonic_ns()
    f.gpu_setup()
    d, thr_d, cpu_d, sched_d = time.monotonic_ns(), time.thread_time_ns(), time.process_time_ns(), thread_sched()
    f.upload()
    thr_e, e, cpu_e, sched_e = time.thread_time_ns(), time.monotonic_ns(), time.process_time_ns(), thread_sched()
    out = f.compute()
    g = time.monotonic_ns()
    rec = {"kind": kind, "pid": os.getpid(), "sage_loaded": sage_loaded(), "t0_given": t0_env is not None,
           "main_ms": ms(t0, T_MAIN), "import_ms": ms(a, b), "read_ms": ms(b, c), "setup_ms": ms(c, d),
           "upload_ms": ms(d, e), "compute_ms": ms(e, g), "first_result_ms": ms(t0, g),
           "upload_cpu_ms": ms(cpu_d, cpu_e),  # every thread of the process (SAGE's staging too)
           # the uploading thread only: its CPU time, time runnable but waiting for a CPU, its context switches
           "upload_thread_cpu_ms": ms(thr_d, thr_e),
           "upload_runq_ms": ms(sched_d[0], sched_e[0]), "upload_switches": sched_e[1] - sched_d[1],
           "upload_preempted": sched_e[2] - sched_d[2]}
    rec.update(summary(out))
    import torch
    rec["torch"] = torch.__version__
    if f.build:
        rec["build"] = f.build
    del out
    return rec, f, t0


def main(argv):
    if len(argv) >= 4 and argv[1] == "gen" and argv[2] in KINDS:
        from_model = "--from-model" in argv
        argv = [a for a in argv if a != "--from-model"]
        gib = float(argv[5]) if len(argv) >= 6 and argv[4] == "--gib" else 6.0
        if from_model:
            generate(argv[2], argv[3], gib)
        else:
            import suite_gen
            suite_gen.generate(argv[2], argv[3], gib)
        return 0
    slow_build = "--slow-build" in argv
    argv = [a for a in argv if a != "--slow-build"]
    if len(argv) >= 4 and argv[1] in ("run", "serve", "hold") and argv[2] in KINDS:
        kind, path = argv[2], argv[3]
        rec, f, t0 = cold(kind, path, slow_build)
        if argv[1] == "run":
            rec["total_ms"] = ms(t0, time.monotonic_ns())
            idle_ms = int(os.environ.get("SAGE_BENCH_IDLE_MS") or 0)
            if idle_ms > 0:
                time.sleep(idle_ms / 1000.0)
                a = time.monotonic_ns()
                out = f.compute(again=True)
                rec["again_ms"] = ms(a, time.monotonic_ns())
                rec["again_checksum"] = summary(out)["checksum"]
                rec["idle_ms"] = idle_ms
            emit(rec)
            return 0
        if argv[1] == "hold":
            rec.update(gpu_memory())
            rec["total_ms"] = ms(t0, time.monotonic_ns())
            emit(rec)
            print("SAGE_HOLDING", flush=True)
            sys.stdin.read()  # until the harness closes our stdin
            return 0
        # serve: the cold load once, then N warm invocations (the ideal lower bound).
        n = int(argv[4]) if len(argv) >= 5 else 3
        rec["invocation"] = 0
        rec["total_ms"] = ms(t0, time.monotonic_ns())
        emit(rec)
        for i in range(1, n + 1):
            a = time.monotonic_ns()
            out = f.compute()
            b = time.monotonic_ns()
            w = {"kind": kind, "pid": os.getpid(), "sage_loaded": sage_loaded(), "invocation": i,
                 "import_ms": 0.0, "read_ms": 0.0, "setup_ms": 0.0, "upload_ms": 0.0,
                 "compute_ms": ms(a, b), "total_ms": ms(a, b)}
            w.update(summary(out))
            emit(w)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Python functions of the benchmark suite (scripts/bench/suite.sh).

    suite_fn.py gen  KIND PATH [--gib G]   write deterministic random weights (safetensors)
    suite_fn.py run  KIND PATH             one invocation: a whole function, start to exit
    suite_fn.py serve KIND PATH N          warm process: load once, then N timed invocations
    suite_fn.py hold KIND PATH             run once, report GPU memory, keep everything
                                           resident until stdin closes (density)

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
mapped into the process.
"""
import time

T_MAIN = time.monotonic_ns()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

# Same inputs, same algorithms in every mode: deterministic cuBLAS workspace.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

KINDS = ("resnet50", "bert", "gpt2", "llm")
LLM_DIM = 8192


def ms(a, b):
    return round((b - a) / 1e6, 3)


def sage_loaded():
    try:
        with open("/proc/self/maps") as f:
            return any("libsage" in line for line in f)
    except OSError:
        return False


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


def build_model(kind):
    """The model (on the CPU, in eval mode), or None for llm."""
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
    if kind == "llm":
        return None
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


def generate(kind, path, gib):
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
        model = build_model(kind)
        save_model(model, tmp)
        info = {"params": sum(p.numel() for p in model.parameters())}
    os.replace(tmp, path)
    info.update({"kind": kind, "path": path, "bytes": os.path.getsize(path)})
    print(json.dumps(info), flush=True)


class Loaded:
    """A function's state once its weights are on the GPU."""

    def __init__(self, kind, path):
        self.kind, self.path = kind, path

    def read(self):
        """Host side: read the file and build the model (no CUDA)."""
        from safetensors.torch import load_file, load_model

        if self.kind == "llm":
            self.state = load_file(self.path)
            self.model = None
        else:
            self.model = build_model(self.kind)
            load_model(self.model, self.path, strict=True)
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

    def compute(self):
        """One inference; returns the output tensor (on the GPU, synchronised)."""
        import torch

        with torch.inference_mode():
            if self.kind == "llm":
                x = self.gpu["input"]
                names = sorted(k for k in self.gpu if k.startswith("layers."))
                for k in names:
                    x = torch.tanh(x @ self.gpu[k])
                out = x
            elif self.kind == "resnet50":
                out = self.model(self.inp.to("cuda"))
            elif self.kind == "bert":
                ids = self.inp.to("cuda")
                out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
            else:
                out = self.model(input_ids=self.inp.to("cuda")).logits
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


def cold(kind, path):
    """A whole function: returns (record, loaded)."""
    t0_env = os.environ.get("SAGE_BENCH_T0_NS")
    t0 = int(t0_env) if t0_env else T_MAIN
    a = time.monotonic_ns()
    import_libs(kind)
    b = time.monotonic_ns()
    f = Loaded(kind, path)
    f.read()
    c = time.monotonic_ns()
    f.gpu_setup()
    d = time.monotonic_ns()
    f.upload()
    e = time.monotonic_ns()
    out = f.compute()
    g = time.monotonic_ns()
    rec = {"kind": kind, "pid": os.getpid(), "sage_loaded": sage_loaded(), "t0_given": t0_env is not None,
           "main_ms": ms(t0, T_MAIN), "import_ms": ms(a, b), "read_ms": ms(b, c), "setup_ms": ms(c, d),
           "upload_ms": ms(d, e), "compute_ms": ms(e, g), "first_result_ms": ms(t0, g)}
    rec.update(summary(out))
    import torch
    rec["torch"] = torch.__version__
    del out
    return rec, f, t0


def main(argv):
    if len(argv) >= 4 and argv[1] == "gen" and argv[2] in KINDS:
        gib = float(argv[5]) if len(argv) >= 6 and argv[4] == "--gib" else 6.0
        generate(argv[2], argv[3], gib)
        return 0
    if len(argv) >= 4 and argv[1] in ("run", "serve", "hold") and argv[2] in KINDS:
        kind, path = argv[2], argv[3]
        rec, f, t0 = cold(kind, path)
        if argv[1] == "run":
            rec["total_ms"] = ms(t0, time.monotonic_ns())
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

"""Parallel-setup benchmark, workload (b): a PyTorch "function".

    import torch (timed) -> load a safetensors file to host memory (timed)
    -> GPU setup: torch.cuda.init() + first torch.zeros(1, device='cuda')
    (timed) -> state dict to GPU (timed) -> one forward pass (matmul chain)
    -> print one JSON line with times relative to SAGE_BENCH_T0_NS (set by
    startup_launch right before exec; time.monotonic_ns is CLOCK_MONOTONIC).

    parallel_setup_torch.py WEIGHTS.safetensors
    parallel_setup_torch.py --gen PATH [--dim 8192 --layers 8]
        writes deterministic fp16 weights and prints their exact checksum
"""
import time

T_MAIN = time.monotonic_ns()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from bench_proc import ms, sage_loaded  # noqa: E402


def int_checksum(t):
    """Exact checksum of a fp16 tensor: sum of its bit patterns as int64."""
    import torch

    return int(t.contiguous().view(torch.int16).to(torch.int64).sum().item()) & (2**64 - 1)


def generate(path, dim, layers):
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1234)
    tensors = {}
    for i in range(layers):
        w = torch.randn(dim, dim, generator=g, dtype=torch.float32) * (dim ** -0.5)
        tensors[f"layer{i}.weight"] = w.to(torch.float16)
    tensors["input"] = torch.randn(256, dim, generator=g, dtype=torch.float32).to(torch.float16)
    weights_sum = 0
    for name in sorted(tensors):
        weights_sum = (weights_sum + int_checksum(tensors[name])) & (2**64 - 1)
    tmp = path + ".tmp"
    save_file(tensors, tmp)
    os.replace(tmp, path)
    print(json.dumps({"bytes": os.path.getsize(path), "layers": layers, "dim": dim,
                      "weights_checksum": f"{weights_sum:016x}"}), flush=True)


def run(path):
    t0_env = os.environ.get("SAGE_BENCH_T0_NS")
    t0 = int(t0_env) if t0_env else T_MAIN

    t_imp0 = time.monotonic_ns()
    import torch
    from safetensors.torch import load_file
    t_imp1 = time.monotonic_ns()

    state = load_file(path)  # to host memory
    t_read = time.monotonic_ns()

    torch.cuda.init()
    t_cuda_init = time.monotonic_ns()
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    t_setup = time.monotonic_ns()

    gpu = {k: v.to("cuda") for k, v in state.items()}
    torch.cuda.synchronize()
    t_upload = time.monotonic_ns()

    with torch.no_grad():
        x = gpu["input"]
        names = sorted((k for k in gpu if k.endswith(".weight")),
                       key=lambda k: int(k[len("layer"):-len(".weight")]))
        for k in names:
            x = torch.tanh(x @ gpu[k])
        out = x.float().sum()
        torch.cuda.synchronize()
    t_kernel = time.monotonic_ns()

    weights_sum = 0
    for name in sorted(gpu):
        weights_sum = (weights_sum + int_checksum(gpu[name])) & (2**64 - 1)
    out_sum = int_checksum(x)
    out_value = float(out.item())
    del gpu, x, state
    t_end = time.monotonic_ns()

    print(json.dumps({
        "pid": os.getpid(), "sage_loaded": sage_loaded(), "t0_given": t0_env is not None,
        "main_ms": ms(t0, T_MAIN), "import_ms": ms(t_imp0, t_imp1), "read_ms": ms(t_imp1, t_read),
        "setup_ms": ms(t_read, t_setup), "cuda_init_ms": ms(t_read, t_cuda_init),
        "first_tensor_ms": ms(t_cuda_init, t_setup), "upload_ms": ms(t_setup, t_upload),
        "kernel_ms": ms(t_upload, t_kernel), "setup_done_ms": ms(t0, t_setup),
        "first_kernel_ms": ms(t0, t_kernel), "total_ms": ms(t0, t_end),
        "torch": torch.__version__, "weights_checksum": f"{weights_sum:016x}",
        "checksum": f"{out_sum:016x}", "output_sum": out_value,
    }), flush=True)


def main(argv):
    if len(argv) >= 3 and argv[1] == "--gen":
        opts = {"--dim": 8192, "--layers": 8}
        rest = argv[3:]
        for i in range(0, len(rest) - 1, 2):
            opts[rest[i]] = int(rest[i + 1])
        generate(argv[2], opts["--dim"], opts["--layers"])
    elif len(argv) == 2:
        run(argv[1])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python3
"""Triton workload of the GPU suite: a @triton.jit vector add and a tiled
matmul on torch tensors whose inputs are uploaded from a .npy file.

What it is here for:
- Triton compiles every kernel with ptxas, a child process that inherits
  LD_PRELOAD (and a C launcher with the host compiler, another child). The
  kernel cache is a fresh folder of each run (TRITON_CACHE_DIR), so the run
  under SAGE compiles too instead of reading the native run's cubins.
- Triton's launcher calls cuPointerGetAttribute on every pointer argument
  before cuLaunchKernel and refuses one the driver does not know. `late` and
  `c` are allocated after the first launch (fresh cudaMalloc segments: larger
  than any block the caching allocator holds) and nothing touches them before
  the Triton launch that writes them: under SAGE_SHARE=1 that is memory whose
  backing SAGE defers (SAGE_SHARE_DEFER), which must answer the query as the
  driver would and be mapped before the kernel writes it.

  triton_fn.py --make PATH    write the weights file (untimed build step)
  triton_fn.py PATH           run on those weights

Results are checked against torch's (the add bit for bit, the matmul within
float32 rounding: IEEE fp32 dot, TF32 off on both sides). stdout carries
values rounded to 4 significant digits; exact bytes go to stderr as
"exact: NAME sha256" lines (as torch_model.py).
"""
import os
import shutil
import sys
import tempfile

from fn_util import main, report, save_weights

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
# A kernel cache of this run's own, named before Triton is imported: Triton
# compiles (ptxas, the launcher) under whatever preload the run has.
OWN_CACHE = None
if __name__ == "__main__" and len(sys.argv) == 2 and "TRITON_CACHE_DIR" not in os.environ:
    OWN_CACHE = tempfile.mkdtemp(prefix="sage-triton-")
    os.environ["TRITON_CACHE_DIR"] = OWN_CACHE

try:
    import triton
    import triton.language as tl
except ImportError:  # --make on a machine without Triton: the kernels stay plain functions
    triton = None

    class tl:  # what the kernels' signatures name
        constexpr = int


def jit(fn):
    return triton.jit(fn) if triton is not None else fn


DIM = 1024  # matmul operands DIM x DIM; the vector add runs over DIM * DIM floats
LATE_FLOATS = 12 << 20  # 48 MiB: larger than every allocation before it, so a new segment


@jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)


@jit
def matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, sam, sak, sbk, sbn, scm, scn,
                  BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, K, BK):
        a = tl.load(a_ptr + rm[:, None] * sam + (k + rk)[None, :] * sak,
                    mask=(rm[:, None] < M) & ((k + rk)[None, :] < K), other=0.0)
        b = tl.load(b_ptr + (k + rk)[:, None] * sbk + rn[None, :] * sbn,
                    mask=((k + rk)[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc += tl.dot(a, b, input_precision="ieee")
    tl.store(c_ptr + rm[:, None] * scm + rn[None, :] * scn, acc, mask=(rm[:, None] < M) & (rn[None, :] < N))


def make(path):
    import numpy as np

    rng = np.random.default_rng(2024)
    w = rng.standard_normal((3, DIM, DIM), dtype=np.float32) / np.float32(8)
    return save_weights(path, w.astype(np.float32))


def segments(torch):
    return torch.cuda.memory_stats().get("segment.all.allocated", 0)


def run(path):
    import numpy as np
    import torch

    if triton is None:
        print("triton: not installed", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("torch: CUDA not available", file=sys.stderr)
        return 1
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda:0")
    w = torch.from_numpy(np.load(path)).to(dev)  # the upload SAGE may share
    a, b, z = w[0], w[1], w[2]
    n = DIM * DIM

    out = torch.empty(n, device=dev)
    add_kernel[(triton.cdiv(n, 1024),)](a, z, out, n, BLOCK=1024)

    # After the first launch, never touched before the launch that writes it.
    before = segments(torch)
    late = torch.empty(LATE_FLOATS, device=dev)
    add_kernel[(triton.cdiv(n, 1024),)](out, b, late, n, BLOCK=1024)
    print(f"late: {segments(torch) - before} new segment(s)", file=sys.stderr)

    c = torch.empty((DIM, DIM), device=dev)
    grid = (triton.cdiv(DIM, 64), triton.cdiv(DIM, 64))
    matmul_kernel[grid](a, b, c, DIM, DIM, DIM, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                        c.stride(0), c.stride(1), BM=64, BN=64, BK=32)
    torch.cuda.synchronize()

    want_add = (a.reshape(-1) + z.reshape(-1)) + b.reshape(-1)
    if not torch.equal(late[:n], want_add):
        print("triton: the late add differs from torch's", file=sys.stderr)
        return 1
    ref = a.double() @ b.double()
    err = ((c.double() - ref).abs().max() / ref.abs().max()).item()
    if err > 1e-4:
        print(f"triton: matmul relative error {err:.3g} too large", file=sys.stderr)
        return 1
    for name, t in (("add", out), ("late_add", late[:n]), ("matmul", c)):
        report(name, t.cpu().numpy())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv, make, run))
    finally:
        if OWN_CACHE:
            shutil.rmtree(OWN_CACHE, ignore_errors=True)

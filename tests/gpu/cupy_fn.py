#!/usr/bin/env python3
"""CuPy workload of the GPU suite, shaped like a function a FaaS platform runs:
weights read from a .npy file and uploaded with cupy.asarray, then an
ElementwiseKernel, a RawKernel, cupy.fft (cuFFT), a ReductionKernel and a
cupy.sum. CuPy compiles its kernels in process with NVRTC; its on-disk
kernel cache is off (CUPY_CACHE_IN_MEMORY=1), so the run under SAGE compiles
and loads them too instead of reading the native run's cubins.

  cupy_fn.py --make PATH    write the weights file (untimed build step)
  cupy_fn.py PATH           run the function on those weights
  cupy_fn.py --selfcheck    run the pipeline on NumPy only (no GPU, no CuPy)

Every GPU result is checked against the same pipeline run by NumPy on the
host (tolerances: float32 tanh and FFT round differently). stdout carries
values rounded to 4 significant digits; the exact bytes of each result go to
stderr as "exact: NAME sha256" lines (as torch_model.py). All operations are
deterministic (no atomics in these kernels; cuFFT and CUB reduce in a fixed
order for a given size and GPU), so the SAGE run's bits equal native's.
"""
import os
import sys

from fn_util import main, report, save_weights

# Before cupy is imported: kernels compiled in every run, nothing read from ~/.cupy.
os.environ.setdefault("CUPY_CACHE_IN_MEMORY", "1")

ROWS, COLS = 2048, 2048  # 16 MiB of float32 weights

AFFINE_TANH = ("float32 w, float32 x, float32 b", "float32 y", "y = tanhf(w * x + b)", "sage_affine_tanh")
ROW_SCALE_NAME = "sage_row_scale"
ROW_SCALE_SRC = r"""
extern "C" __global__ void sage_row_scale(const float *y, const float *s, float *out, int rows, int cols) {
    int r = blockIdx.y;
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x)
        out[r * cols + c] = y[r * cols + c] * s[r];
}
"""
ROW_NORM = ("float32 x", "float32 y", "x * x", "a + b", "y = sqrtf(a)", "0", "sage_row_norm")


def make(path):
    import numpy as np

    rng = np.random.default_rng(4321)
    return save_weights(path, rng.standard_normal((ROWS, COLS), dtype=np.float32))


def inputs(xp):
    """The small inputs every run makes itself (on the device under CuPy)."""
    x = xp.linspace(-1, 1, COLS, dtype=xp.float32)
    b = xp.float32(0.125)
    s = (xp.arange(ROWS, dtype=xp.float32) + 1) / xp.float32(ROWS)
    return x, b, s


def host_pipeline(w):
    """The reference: what the GPU kernels compute, by NumPy."""
    import numpy as np

    x, b, s = inputs(np)
    y = np.tanh(w * x[None, :] + b)
    out = y * s[:, None]
    return {
        "affine_tanh": y,
        "row_scale": out,
        "rfft_abs": np.abs(np.fft.rfft(out, axis=1)).astype(np.float32),
        "row_norm": np.sqrt((out * out).sum(axis=1, dtype=np.float32)),
        "sum": np.float32(out.sum(dtype=np.float32)),
    }


def gpu_pipeline(cp, host_w):
    affine_tanh = cp.ElementwiseKernel(*AFFINE_TANH)
    row_scale = cp.RawKernel(ROW_SCALE_SRC, ROW_SCALE_NAME)
    row_norm = cp.ReductionKernel(*ROW_NORM)

    w = cp.asarray(host_w)  # the upload SAGE may share
    x, b, s = inputs(cp)
    y = affine_tanh(w, x[None, :], b)
    out = cp.empty_like(y)  # made after the first launch, first written by the RawKernel
    row_scale((COLS // 256, ROWS), (256,), (y, s, out, cp.int32(ROWS), cp.int32(COLS)))
    results = {
        "affine_tanh": y,
        "row_scale": out,
        "rfft_abs": cp.abs(cp.fft.rfft(out, axis=1)).astype(cp.float32),
        "row_norm": row_norm(out, axis=1),
        "sum": cp.sum(out),
    }
    cp.cuda.Device().synchronize()
    return {k: cp.asnumpy(v) for k, v in results.items()}


def compare(got, want):
    """Names whose GPU result is off the host's by more than float32 rounding."""
    import numpy as np

    bad = []
    for name, ref in want.items():
        g = np.asarray(got[name], dtype=np.float64)
        r = np.asarray(ref, dtype=np.float64)
        scale = max(float(np.abs(r).max()), 1.0)
        if g.shape != r.shape or not np.isfinite(g).all() or float(np.abs(g - r).max()) > 1e-4 * scale:
            bad.append(name)
    return bad


def run(path):
    import numpy as np
    import cupy as cp

    if cp.cuda.runtime.getDeviceCount() < 1:
        print("cupy: no GPU", file=sys.stderr)
        return 1
    host_w = np.load(path)
    got = gpu_pipeline(cp, host_w)
    bad = compare(got, host_pipeline(host_w))
    if bad:
        print(f"cupy: results differ from NumPy's: {', '.join(bad)}", file=sys.stderr)
        return 1
    for name, value in got.items():
        report(name, value)
    return 0


def selfcheck():
    """The host half alone: weights made, pipeline run, the comparison both
    accepts its own results and rejects a changed one."""
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "w.npy")
        make(path)
        want = host_pipeline(np.load(path))
    assert not compare(want, want)
    changed = dict(want, row_scale=want["row_scale"] + np.float32(1))
    assert compare(changed, want) == ["row_scale"]
    print("cupy_fn selfcheck: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv, make, run, selfcheck))

#!/usr/bin/env python3
"""JAX workload of the GPU suite, shaped like a function a FaaS platform runs:
weights read from a .npy file and uploaded with jax.device_put, a jitted MLP
(XLA compiles it, which runs ptxas as a child process on most installs), XLA's
default memory preallocation left on.

  jax_fn.py --make PATH   write the weights file (untimed build step)
  jax_fn.py PATH          run the function on those weights

stdout carries values rounded to 4 significant digits; the exact bytes of
each result go to stderr as "exact: NAME sha256" lines (as torch_model.py).
"""
import os
import sys

# Bit-reproducible reductions and GEMMs: the native and the SAGE run must
# be comparable bit for bit, whatever autotuning would have picked.
os.environ.setdefault("XLA_FLAGS", "--xla_gpu_deterministic_ops=true")

import numpy as np  # noqa: E402

from fn_util import main, report, save_weights  # noqa: E402

LAYERS, WIDTH, BATCH = 4, 1024, 64  # 16 MiB of float32 weights


def make(path):
    rng = np.random.default_rng(1234)
    w = (rng.standard_normal((LAYERS, WIDTH, WIDTH), dtype=np.float32) / np.float32(32)).astype(np.float32)
    return save_weights(path, w)


def run(path):
    import jax
    import jax.numpy as jnp

    dev = jax.devices()[0]
    if dev.platform != "gpu":
        print(f"jax: no GPU (first device: {dev})", file=sys.stderr)
        return 1
    host = np.load(path, mmap_mode="r")
    weights = jax.device_put(np.asarray(host), dev)
    x = jax.device_put(np.linspace(-1, 1, BATCH * WIDTH, dtype=np.float32).reshape(BATCH, WIDTH), dev)

    @jax.jit
    def mlp(w, x):
        for i in range(LAYERS):
            x = jnp.tanh(x @ w[i])
        return x

    y = mlp(weights, x)
    report("mlp", jax.device_get(y))
    # A second call reuses the compiled executable and the resident weights.
    report("mlp2", jax.device_get(mlp(weights, y)))
    report("weights_sum", jax.device_get(jnp.sum(weights, axis=(1, 2))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv, make, run))

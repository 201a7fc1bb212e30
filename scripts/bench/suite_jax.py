"""The JAX function of the sharing-coverage benchmark (its jax workload),
shaped like tests/gpu/jax_fn.py and sized like a small model: LAYERS float32
weight matrices (WIDTH x WIDTH, 128 MiB in all) in one .npy file, read into
host memory, uploaded with jax.device_put (one transfer per layer, as a
pytree of parameters is), a jitted MLP through them.

    suite_jax.py gen PATH     write the deterministic weights (numpy only)
    suite_jax.py run PATH     one invocation: a whole function, start to exit

`run` prints `SAGE_BENCH {json}` with suite_fn.py's keys: import, read, setup
(jax.devices(): the backend, XLA's preallocation), upload (device_put +
block_until_ready: what the function waits for), upload_cpu_ms (the
process's CPU time over it, every thread), compute, and a checksum of the
output's bit patterns (exact). Without jax it exits 77 and says why on
stdout (`SAGE_BENCH_SKIP reason`): the harness records the workload as
skipped, not failed (CI has no jax).

XLA_PYTHON_CLIENT_MEM_FRACTION defaults to 0.3 here (XLA's default, 0.75,
takes 60 GB of an H100 in one cuMemCreate, which the benchmark's other
processes running beside it cannot afford); preallocation stays on, so the
memory still comes from one app-managed VMM allocation, as by default.
"""
import time

T_MAIN = time.monotonic_ns()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from bench_proc import ms, sage_loaded  # noqa: E402

# Bit-reproducible GEMMs: the native and the SAGE output are compared bit for bit.
os.environ.setdefault("XLA_FLAGS", "--xla_gpu_deterministic_ops=true")
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.3")

LAYERS, WIDTH, BATCH = 8, 2048, 64  # 8 x 16 MiB of float32 weights


def emit(tag, rec):
    print(tag + " " + (json.dumps(rec, sort_keys=True) if isinstance(rec, dict) else rec), flush=True)


def gen(path):
    import numpy as np

    rng = np.random.default_rng(1234)
    w = (rng.standard_normal((LAYERS, WIDTH, WIDTH), dtype=np.float32) / np.float32(WIDTH ** 0.5))
    tmp = path + ".tmp.npy"
    np.save(tmp, w.astype(np.float32))
    os.replace(tmp, path)
    print(json.dumps({"kind": "jax", "path": path, "bytes": os.path.getsize(path)}), flush=True)
    return 0


def run(path):
    t0_env = os.environ.get("SAGE_BENCH_T0_NS")
    t0 = int(t0_env) if t0_env else T_MAIN
    a = time.monotonic_ns()
    try:
        import jax
        import jax.numpy as jnp
        import numpy as np
    except ImportError as e:
        emit("SAGE_BENCH_SKIP", f"jax not installed ({e})")
        return 77
    b = time.monotonic_ns()
    host = np.load(path)  # the file into host memory (as safetensors' load_file does)
    layers = [host[i] for i in range(LAYERS)]  # contiguous views: one transfer each
    x_host = np.linspace(-1, 1, BATCH * WIDTH, dtype=np.float32).reshape(BATCH, WIDTH)
    c = time.monotonic_ns()
    dev = jax.devices()[0]
    if dev.platform != "gpu":
        emit("SAGE_BENCH_SKIP", f"jax has no GPU (first device: {dev})")
        return 77
    jax.block_until_ready(jax.device_put(np.zeros(1, np.float32), dev))  # the first transfer's set-up
    d, cpu_d = time.monotonic_ns(), time.process_time_ns()
    weights = jax.block_until_ready(jax.device_put(layers, dev))
    e, cpu_e = time.monotonic_ns(), time.process_time_ns()

    @jax.jit
    def mlp(ws, x):
        for w in ws:
            x = jnp.tanh(x @ w)
        return x

    out = np.asarray(jax.device_get(mlp(weights, jax.device_put(x_host, dev))))
    g = time.monotonic_ns()
    bits = int(out.view(np.uint32).astype(np.uint64).sum()) & (2**64 - 1)
    rec = {"kind": "jax", "pid": os.getpid(), "sage_loaded": sage_loaded(), "t0_given": t0_env is not None,
           "main_ms": ms(t0, T_MAIN), "import_ms": ms(a, b), "read_ms": ms(b, c), "setup_ms": ms(c, d),
           "upload_ms": ms(d, e), "compute_ms": ms(e, g), "first_result_ms": ms(t0, g),
           "upload_cpu_ms": ms(cpu_d, cpu_e), "checksum": f"{bits:016x}", "approx": f"{float(out.sum()):.4e}",
           "out_shape": list(out.shape), "jax": jax.__version__, "bytes": int(host.nbytes)}
    rec["total_ms"] = ms(t0, time.monotonic_ns())
    emit("SAGE_BENCH", rec)
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "gen":
        return gen(argv[2])
    if len(argv) == 3 and argv[1] == "run":
        return run(argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Function processes of the suspend benchmark (scripts/bench/suspend.sh).

    suspend_fn.py run   KIND PATH              one invocation in a new process, then exit
    suspend_fn.py serve KIND PATH              a long-lived instance: invocations from stdin
    suspend_fn.py http  KIND PATH              the same as an HTTP server on 127.0.0.1
    suspend_fn.py gen   cfunc PATH BYTES       cfunc's weights (deterministic bytes; no GPU)
    suspend_fn.py gen   sgemm PATH [N]         sgemm's two N x N fp32 matrices (default 4096)
    suspend_fn.py fakemem PID...               the simulated driver's device memory of each
                                               pid, in bytes, as JSON (-1: unknown)

KIND: cfunc, sgemm (below) or a suite_fn.py kind (resnet50, bert, gpt2, llm): the
suite's handler unmodified, loaded once (suite_fn.cold()) and invoked with
Loaded.compute() per request, exactly as the suite's warm process does.

cfunc is the suite's C function shape, driven through the driver API with
ctypes so that one long-lived process can serve it: read a weight file,
upload it (cuMemAlloc + cuMemcpyHtoD), and per invocation one kernel that
sums the weights as 64-bit words (exact, order-independent) and a copy of the
sum back. The kernel comes from --module: a cubin built from
suspend_cfunc.cu by nvcc on a GPU, or for the simulated driver a shared object
built from suspend_cfunc_fake.c (the same kernel in C). Library loading goes
through dlsym, which libsage interposes, so SAGE sees every call. sgemm is
the suite's cuBLAS function (suite_sgemm.cu) the same way: two matrices of
small integers uploaded once, per invocation cublasSgemm_v2 and the kernel's
checksum of the product (exact in fp32 whatever cuBLAS's summation order).

serve: prints `SAGE_READY {json}` once loaded, then for each stdin line one
`SAGE_BENCH {json}` line (kind, pid, checksum, compute_ms, seq: the line). http: prints
`SAGE_READY {"port": P, ...}` and answers GET /invoke with that JSON.
run: one `SAGE_BENCH {json}` line, then exit. Standard library only for cfunc.
"""
import ctypes
import json
import os
import sys
import time

from bench_proc import ms, sage_loaded

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = ("cfunc", "sgemm", "resnet50", "bert", "gpt2", "llm")


def emit(tag, rec):
    print(tag + " " + json.dumps(rec, sort_keys=True), flush=True)


class CFunc:
    """The C function through the driver API (see the module's doc)."""

    def __init__(self, path, module):
        with open(path, "rb") as f:
            data = f.read()
        self.setup(module)
        self.words = len(data) // 8
        self.w = self.upload(data[: self.words * 8])

    def setup(self, module):
        """GPU set-up: the primary context, current; the checksum kernel; its result word."""
        self.cu = cu = ctypes.CDLL("libcuda.so.1")
        dev, ctx = ctypes.c_int(), ctypes.c_void_p()
        self.check("cuInit", cu.cuInit(0))
        self.check("cuDeviceGet", cu.cuDeviceGet(ctypes.byref(dev), 0))
        self.check("cuDevicePrimaryCtxRetain", cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev))
        self.check("cuCtxSetCurrent", cu.cuCtxSetCurrent(ctx))
        self.out = self.alloc(8)
        mod, fn = ctypes.c_void_p(), ctypes.c_void_p()
        self.check("cuModuleLoad", cu.cuModuleLoad(ctypes.byref(mod), module.encode()))
        self.check("cuModuleGetFunction", cu.cuModuleGetFunction(ctypes.byref(fn), mod, b"sage_wsum"))
        self.fn = fn

    def alloc(self, size):
        p = ctypes.c_uint64()
        self.check("cuMemAlloc", self.cu.cuMemAlloc_v2(ctypes.byref(p), ctypes.c_size_t(max(8, size))))
        return p

    def upload(self, data):
        host = ctypes.create_string_buffer(data, len(data))
        p = self.alloc(len(data))
        self.check("cuMemcpyHtoD", self.cu.cuMemcpyHtoD_v2(p, host, ctypes.c_size_t(len(data))))
        return p

    def check(self, what, r):
        if r != 0:
            raise RuntimeError(f"{what}: error {r}")

    def wsum(self, ptr, words):
        """The kernel's sum of `words` 64-bit words at ptr (device), as 16 hex digits."""
        cu = self.cu
        n = ctypes.c_uint64(words)
        args = (ctypes.c_void_p * 3)(ctypes.addressof(ptr), ctypes.addressof(n), ctypes.addressof(self.out))
        self.check("cuMemsetD32", cu.cuMemsetD32_v2(self.out, ctypes.c_uint(0), ctypes.c_size_t(2)))
        blocks = max(1, min(1024, (words + 255) // 256))
        self.check("cuLaunchKernel", cu.cuLaunchKernel(self.fn, blocks, 1, 1, 256, 1, 1, 0, None, args, None))
        self.check("cuCtxSynchronize", cu.cuCtxSynchronize())
        got = ctypes.c_uint64()
        self.check("cuMemcpyDtoH", cu.cuMemcpyDtoH_v2(ctypes.byref(got), self.out, ctypes.c_size_t(8)))
        return f"{got.value:016x}"

    def compute(self):
        return {"checksum": self.wsum(self.w, self.words), "words": self.words}


SGEMM_N = 4096  # the suite's size; the dry run's is smaller (the file says)


class Sgemm(CFunc):
    """The suite's sgemm (suite_sgemm.cu) through ctypes: two N x N fp32 matrices of
    small integers (every product and sum exact in fp32, whatever cuBLAS's order),
    uploaded once; per invocation cublasSgemm_v2 and the device checksum of C."""

    def __init__(self, path, module):
        with open(path, "rb") as f:
            data = f.read()
        self.n = n = int(round((len(data) // 8) ** 0.5))
        if n == 0 or len(data) != 2 * n * n * 4:
            raise RuntimeError(f"{path}: {len(data)} bytes, not two n x n fp32 matrices")
        self.setup(module)
        self.blas = load_cublas()
        self.a, self.b = self.upload(data[: n * n * 4]), self.upload(data[n * n * 4:])
        self.c = self.alloc(n * n * 4)
        self.handle = ctypes.c_void_p()
        self.check("cublasCreate_v2", self.blas.cublasCreate_v2(ctypes.byref(self.handle)))

    def compute(self):
        n, one, zero = self.n, ctypes.c_float(1.0), ctypes.c_float(0.0)
        self.check("cublasSgemm_v2", self.blas.cublasSgemm_v2(
            self.handle, 0, 0, n, n, n, ctypes.byref(one), ctypes.c_void_p(self.a.value), n,
            ctypes.c_void_p(self.b.value), n, ctypes.byref(zero), ctypes.c_void_p(self.c.value), n))
        return {"checksum": self.wsum(self.c, n * n // 2), "n": n}


def load_cublas():
    """libcublas from the loader's path, CUDA's lib64 or a pip wheel (torch's)."""
    import glob

    names = ["libcublas.so", "libcublas.so.13", "libcublas.so.12"]
    for d in ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"):
        names += sorted(glob.glob(os.path.join(d, "libcublas.so*")))
    for p in sys.path:
        names += sorted(glob.glob(os.path.join(p, "nvidia", "cublas", "lib", "libcublas.so*")))
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise RuntimeError("libcublas not found")


class Torch:
    """A suite_fn.py workload: its cold path once, then compute() per request."""

    def __init__(self, kind, path):
        sys.path.insert(0, HERE)
        import suite_fn

        self.suite_fn = suite_fn
        self.first, self.loaded, _t0 = suite_fn.cold(kind, path)

    def compute(self):
        out = self.loaded.compute()
        s = self.suite_fn.summary(out)
        del out
        return s


def load(kind, path, module):
    if kind in ("cfunc", "sgemm"):
        if not module:
            raise SystemExit(f"suspend_fn: {kind} needs --module FILE")
        return CFunc(path, module) if kind == "cfunc" else Sgemm(path, module)
    return Torch(kind, path)


def invoke(fn, kind):
    a = time.monotonic_ns()
    rec = fn.compute()
    b = time.monotonic_ns()
    rec.update({"kind": kind, "pid": os.getpid(), "compute_ms": ms(a, b)})
    return rec


def serve_http(fn, kind, ready):
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path != "/invoke":
                self.send_error(404)
                return
            try:
                body, code = json.dumps(invoke(fn, kind)).encode(), 200
            except Exception as e:  # noqa: BLE001 - the harness counts it as a failure
                body, code = json.dumps({"error": f"{type(e).__name__}: {e}"}).encode(), 500
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    ready["port"] = srv.server_address[1]
    emit("SAGE_READY", ready)
    srv.serve_forever()


def gen_cfunc(path, size, seed=b"sage-suspend-cfunc"):
    """Deterministic bytes (the same file on every machine), fast: one 1 MiB
    block from SHAKE-256, each further MiB that block rotated by 8 bytes more."""
    import hashlib

    block = hashlib.shake_256(seed).digest(1 << 20)
    tmp, left, i = path + ".tmp", size, 0
    with open(tmp, "wb") as f:
        while left > 0:
            k = (i * 8) % len(block)
            chunk = block[k:] + block[:k]
            f.write(chunk[:left])
            left -= len(chunk)
            i += 1
    os.replace(tmp, path)


def main(argv):
    args = list(argv[1:])
    if len(args) >= 1 and args[0] == "fakemem":
        # A process of its own: the runner cannot load the simulated driver
        # itself where it is built with a sanitizer (its runtime must come first).
        lib = ctypes.CDLL("libcuda.so.1")
        lib.fakecudaProcessMemUsed.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_size_t)]
        out = {}
        for pid in args[1:]:
            n = ctypes.c_size_t()
            out[pid] = n.value if lib.fakecudaProcessMemUsed(int(pid), ctypes.byref(n)) == 0 else -1
        print(json.dumps(out))
        return 0
    if len(args) == 4 and args[:2] == ["gen", "cfunc"]:
        gen_cfunc(args[2], int(args[3]))
        return 0
    if len(args) in (3, 4) and args[:2] == ["gen", "sgemm"]:
        sys.path.insert(0, HERE)
        from suspend_report import sgemm_matrix

        n = int(args[3]) if len(args) == 4 else SGEMM_N
        with open(args[2] + ".tmp", "wb") as f:
            f.write(sgemm_matrix(n, 7, 3, 17, 8))
            f.write(sgemm_matrix(n, 5, 11, 13, 6))
        os.replace(args[2] + ".tmp", args[2])
        return 0
    module = None
    if "--module" in args:
        i = args.index("--module")
        module = args[i + 1] if i + 1 < len(args) else None
        del args[i:i + 2]
    if len(args) != 3 or args[0] not in ("run", "serve", "http") or args[1] not in KINDS:
        print(__doc__, file=sys.stderr)
        return 2
    mode, kind, path = args
    t0 = time.monotonic_ns()
    fn = load(kind, path, module)
    if mode == "run":
        # A suite_fn workload's cold path already computed once: that is its invocation.
        rec = dict(fn.first, pid=os.getpid()) if isinstance(fn, Torch) else invoke(fn, kind)
        rec.update({"sage_loaded": sage_loaded(), "total_ms": ms(t0, time.monotonic_ns())})
        emit("SAGE_BENCH", rec)
        return 0
    ready = {"kind": kind, "pid": os.getpid(), "sage_loaded": sage_loaded(),
             "load_ms": ms(t0, time.monotonic_ns())}
    if mode == "http":
        serve_http(fn, kind, ready)
        return 0
    emit("SAGE_READY", ready)
    for line in sys.stdin:  # one request a line: its sequence number, echoed as "seq"
        try:
            rec = invoke(fn, kind)
        except Exception as e:  # noqa: BLE001 - one failed invocation is a result, not a crash
            rec = {"kind": kind, "pid": os.getpid(), "error": f"{type(e).__name__}: {e}"}
        rec["seq"] = line.strip()
        emit("SAGE_BENCH", rec)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

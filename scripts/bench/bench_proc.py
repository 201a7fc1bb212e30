"""What the benchmarks' Python function processes (suite_fn.py, suspend_fn.py,
parallel_setup_torch.py) share: milliseconds between two time.monotonic_ns
readings, and whether libsage is really mapped into this process (a SAGE
figure measured without it would be worse than none). Standard library
only: it is imported inside timed processes. The runners' side: stop(), how
they end a process they started."""


def ms(a, b):
    return round((b - a) / 1e6, 3)


def sage_loaded():
    try:
        with open("/proc/self/maps") as f:
            return any("libsage" in line for line in f)
    except OSError:
        return False


def stop(p, timeout):
    """SIGTERM, then SIGKILL if p is still there after timeout seconds."""
    import subprocess  # the runners' side only: timed processes never pay for it

    p.terminate()
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()

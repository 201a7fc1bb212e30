"""What the Python functions of the GPU suite (jax_fn.py, cupy_fn.py,
triton_fn.py) share: the weights file, written whole or not at all by the
untimed build step; the report of a result, stdout rounded to 4 significant
digits and the exact bytes' hash on stderr as "exact: NAME sha256" (as
torch_model.py); and their command line.
"""
import hashlib
import os
import sys


def save_weights(path, array):
    import numpy as np

    tmp = path + ".tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)
    return 0


def report(name, x):
    import numpy as np

    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    digest = hashlib.sha256(x.tobytes()).hexdigest()[:32]
    print(f"exact: {name} {digest}", file=sys.stderr)
    print(f"{name}: shape={x.shape} sum={float(x.sum()):.4e} abs_sum={float(np.abs(x).sum()):.4e} "
          f"max={float(x.max()):.4e}")


def main(argv, make, run, selfcheck=None):
    """PROGRAM --make PATH | PROGRAM PATH | PROGRAM --selfcheck (where there is one)."""
    if len(argv) == 3 and argv[1] == "--make":
        return make(argv[2])
    if len(argv) == 2 and argv[1] == "--selfcheck" and selfcheck is not None:
        return selfcheck()
    if len(argv) == 2 and not argv[1].startswith("--"):
        return run(argv[1])
    extra = " | --selfcheck" if selfcheck is not None else ""
    print(f"usage: {os.path.basename(argv[0])} [--make] WEIGHTS.npy{extra}", file=sys.stderr)
    return 2

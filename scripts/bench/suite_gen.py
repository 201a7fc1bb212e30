"""Fast weights for suite_fn.py's models (`suite_fn.py gen`): the safetensors
file a model's save_model() would write, made from model_shapes.json (every
tensor's name, shape, dtype and values: the model's own initialisation,
zeros/ones/normal(std)/uniform(bound)) with seeded random values, without
building the model: no random initialisation of 25-355 M parameters, no
second build to compare, tensors filled in parallel (torch releases the GIL).

While the values are drawn, a thread imports the model's libraries (the
byte code the timed runs then read, as the old generation wrote it) and
builds the model without initialising it (suite_fn.fast_build) to compare
its state dict, as save_model() stores it, with the manifest: a mismatch (a
transformers version that names or shapes a tensor otherwise) falls back to
the slow generation from the model, and the JSON line says so ("manifest").

    suite_gen.py check [KIND...]     the manifest against the real models (exit
                                     77: torch/transformers/torchvision missing)
    suite_gen.py manifest KIND       print KIND's entries from the real model
                                     (a slow build; to update model_shapes.json)
    suite_gen.py compile             the byte code of the libraries the functions
                                     import, on every CPU (sharing-coverage.sh)

Values: per tensor a torch.Generator seeded from the kind and the tensor's
name, so the file is the same on every run and machine of one torch version.
"""
import json
import math
import os
import sys
import threading
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST = os.path.join(HERE, "model_shapes.json")
KINDS = ("resnet50", "bert", "gpt2")
LLM_DIM = 8192
# Parameters (buffers excluded) of the models, as their model cards give them.
PARAMS = {"resnet50": 25557032, "bert": 109482240, "gpt2": 354823168}
BUFFER_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")


def manifest(kind):
    with open(MANIFEST) as f:
        return json.load(f)[kind]


def dtype_name(dt):
    import torch
    return {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
            torch.bool: "BOOL"}.get(dt, str(dt))


def make_tensor(kind, name, shape, dtype, rule):
    import torch

    dt = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}[dtype]
    if rule in ("zeros", "ones"):
        return (torch.zeros if rule == "zeros" else torch.ones)(shape, dtype=dt)
    g = torch.Generator().manual_seed(1234 + zlib.crc32(f"{kind}/{name}".encode()))
    if rule[0] == "normal":
        t = torch.randn(shape, generator=g).mul_(rule[1])
    elif rule[0] == "uniform":
        t = torch.rand(shape, generator=g).mul_(2 * rule[1]).sub_(rule[1])
    else:
        raise ValueError(f"{kind} {name}: unknown values {rule}")
    if len(rule) >= 4 and rule[2] == "zero_row":  # an embedding's padding row
        t[rule[3]] = 0
    return t.to(dt)


def fill(kind, specs):
    """{name: tensor} for specs [(name, shape, dtype, rule)], the largest first, on every CPU."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    torch.set_num_threads(1)  # parallel over tensors, not inside each
    specs = sorted(specs, key=lambda s: -math.prod(s[1]))
    with ThreadPoolExecutor(max_workers=max(1, min(16, os.cpu_count() or 1))) as pool:
        made = pool.map(lambda s: (s[0], make_tensor(kind, *s)), specs)
        return dict(made)


def saved_state(model):
    """The model's state dict as safetensors.torch.save_model stores it (tied tensors once)."""
    from safetensors.torch import _remove_duplicate_names

    state = model.state_dict()
    for names in _remove_duplicate_names(state).values():
        for n in names:
            del state[n]
    return state


def compare(kind, model):
    """'ok ...' or 'mismatch: ...': the manifest's names, shapes and dtypes against the model's."""
    want = {n: (list(s), d) for n, s, d, _ in manifest(kind)}
    got = {n: (list(t.shape), dtype_name(t.dtype)) for n, t in saved_state(model).items()}
    if set(want) != set(got):
        return (f"mismatch: only in the manifest {sorted(set(want) - set(got))[:3]}, "
                f"only in the model {sorted(set(got) - set(want))[:3]}")
    bad = [n for n in want if want[n] != got[n]]
    if bad:
        return f"mismatch: {len(bad)} tensors differ in shape or dtype: " + ", ".join(
            f"{n} {want[n]} vs {got[n]}" for n in bad[:3])
    return f"ok ({len(want)} tensors match the model)"


def check_against_model(kind, box):
    """Thread: import KIND's libraries (writes their byte code), build it uninitialised, compare."""
    try:
        import suite_fn
        suite_fn.import_libs(kind)
        box["manifest"] = compare(kind, suite_fn.build_model(kind, fast=True))
    except Exception as e:  # noqa: BLE001 - reported; generation falls back
        box["manifest"] = f"failed: {type(e).__name__}: {str(e)[:200]}"


def generate(kind, path, gib):
    from safetensors.torch import save_file

    a = time.monotonic_ns()
    tmp = path + ".tmp"
    if kind == "llm":
        n = max(1, int(round(gib * 1024 / 128)))  # 128 MiB per 8192x8192 fp16 tensor
        specs = [(f"layers.{i:03d}.weight", [LLM_DIM, LLM_DIM], "F16", ["normal", LLM_DIM ** -0.5])
                 for i in range(n)] + [("input", [64, LLM_DIM], "F16", ["normal", 1.0])]
        save_file(fill(kind, specs), tmp)
        info = {"tensors": n}
    else:
        box = {}
        checker = threading.Thread(target=check_against_model, args=(kind, box))
        checker.start()
        tensors = fill(kind, manifest(kind))
        checker.join()
        if not box["manifest"].startswith("ok"):
            print(f"suite_gen: {kind}: manifest {box['manifest']}; generating from the model", file=sys.stderr)
            import suite_fn
            suite_fn.generate(kind, path, gib, {"manifest": box["manifest"] + "; generated from the model"})
            return
        save_file(tensors, tmp)
        info = {"manifest": box["manifest"], "params": sum(t.numel() for n, t in tensors.items()
                                                          if not n.endswith(BUFFER_SUFFIXES))}
    os.replace(tmp, path)
    info.update({"kind": kind, "path": path, "bytes": os.path.getsize(path), "gen_ms": (time.monotonic_ns() - a) / 1e6})
    print(json.dumps(info), flush=True)


def check_counts():
    """Without the models: the manifest's parameter counts are the models' (their model cards)."""
    bad = []
    for kind in KINDS:
        n = sum(math.prod(s) for name, s, _, _ in manifest(kind) if not name.endswith(BUFFER_SUFFIXES))
        if n != PARAMS[kind]:
            bad.append(f"{kind}: {n} parameters in the manifest, the model has {PARAMS[kind]}")
    return bad


def check(kinds):
    bad = check_counts()
    for b in bad:
        print("suite_gen: " + b, file=sys.stderr)
    missing = []
    for mod in ("torch", "torchvision", "transformers", "safetensors"):
        try:
            __import__(mod)
        except Exception as e:  # noqa: BLE001
            missing.append(f"{mod} ({type(e).__name__})")
    if missing:
        print(f"suite_gen check: parameter counts {'wrong' if bad else 'ok'}; SKIP: cannot compare with the "
              f"real models: {', '.join(missing)} not importable")
        return 1 if bad else 77
    import suite_fn
    for kind in kinds or KINDS:
        res = compare(kind, suite_fn.build_model(kind, fast=True))
        print(f"suite_gen check: {kind}: {res}")
        bad += [] if res.startswith("ok") else [res]
    return 1 if bad else 0


def rule_of(t):
    """The values of one tensor of a randomly initialised model, as a manifest rule."""
    import torch

    if not t.is_floating_point():
        return "zeros" if not t.any() else None
    f = t.float()
    if not f.any():
        return "zeros"
    if bool((f == 1).all()):
        return "ones"
    std, top = float(f.std()), float(f.abs().max())
    rule = ["uniform", round(top, 6)] if top <= std * math.sqrt(3) * 1.1 else ["normal", round(std, 6)]
    if f.dim() == 2 and not f[0].any():
        rule += ["zero_row", 0]
    del torch
    return rule


def print_manifest(kind):
    import torch

    import suite_fn
    torch.manual_seed(1234)
    state = saved_state(suite_fn.build_model(kind))
    print(",\n".join("  " + json.dumps([n, list(t.shape), dtype_name(t.dtype), rule_of(t)]) for n, t in state.items()))
    return 0


# The libraries the benchmark's functions import (those not installed are left out).
LIBRARIES = ("torch", "torchvision", "transformers", "safetensors", "huggingface_hub", "tokenizers", "numpy",
             "jax", "jaxlib")


def compile_libraries():
    """Write the byte code of LIBRARIES on every CPU, into PYTHONPYCACHEPREFIX where set (where the
    functions read it): a fresh machine's first `import transformers` compiles on one CPU
    (BertModel: 15.7 s on the H200), here in seconds, before any of them runs (untimed)."""
    import compileall
    import importlib.util
    import re

    a, dirs = time.monotonic(), []
    for mod in LIBRARIES:
        spec = importlib.util.find_spec(mod)
        dirs += list(spec.submodule_search_locations or []) if spec else []
    ok = all([compileall.compile_dir(d, quiet=2, workers=0, rx=re.compile(r"[/\\]tests?[/\\]")) for d in dirs])
    print(json.dumps({"compiled": dirs, "all_ok": ok, "s": round(time.monotonic() - a, 1),
                      "pycache_prefix": sys.pycache_prefix}), flush=True)
    return 0


def main(argv):
    sys.path.insert(0, HERE)
    if argv[1:] == ["compile"]:
        return compile_libraries()
    if len(argv) >= 2 and argv[1] == "check":
        return check(argv[2:])
    if len(argv) == 3 and argv[1] == "manifest" and argv[2] in KINDS:
        return print_manifest(argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

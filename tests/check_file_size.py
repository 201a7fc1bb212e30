#!/usr/bin/env python3
"""Fail when a product C file is over 600 lines, naming each one.

CONVENTIONS.md: files stay small, split by responsibility before 600 lines
(issue 13). Product C is every .c under intercept/, daemon/, common/ and
tools/; tests, the simulated driver and benchmarks are not held to it.
A file at the limit passes: the rule is "over 600".
"""
import os
import sys

DIRS = ("intercept", "daemon", "common", "tools")
LIMIT = 600


def sources(root):
    for top in DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "build")))
            for name in sorted(filenames):
                if name.endswith(".c"):
                    yield os.path.join(dirpath, name)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = list(sources(root))
    if not files:
        print(f"no product C sources under {root}")
        return 1
    over = []
    for path in files:
        with open(path, "rb") as f:
            n = sum(1 for _ in f)
        if n > LIMIT:
            over.append((os.path.relpath(path, root), n))
    for path, n in over:
        print(f"{path}: {n} lines, over {LIMIT}: split it by responsibility (CONVENTIONS.md)")
    if over:
        return 1
    print(f"{len(files)} product C files, none over {LIMIT} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())

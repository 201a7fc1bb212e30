#!/usr/bin/env python3
"""Fail when a C/C++/CUDA source of the tree differs from .clang-format.

The house style is clang-format 14's reading of .clang-format (Debian 12's
clang-format; scripts/install-deps.sh installs it). Another major version
formats some constructs differently, so the check is skipped (exit 77) when
clang-format is missing or not version 14, rather than failing on a tool
difference. .def tables, assembly and build outputs are not formatted.
"""
import os
import re
import shutil
import subprocess
import sys

DIRS = ("intercept", "daemon", "common", "tools", "tests", "scripts")
EXTS = (".c", ".h", ".cu", ".cuh", ".cc", ".cpp")


def sources(root):
    for top in DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "build")))
            for name in sorted(filenames):
                if name.endswith(EXTS):
                    yield os.path.join(dirpath, name)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tool = os.environ.get("CLANG_FORMAT") or shutil.which("clang-format")
    if not tool:
        print("clang-format not found: skipped (scripts/install-deps.sh installs it)")
        return 77
    version = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
    major = re.search(r"version (\d+)", version)
    if not major or major.group(1) != "14":
        print(f"clang-format is not version 14 ({version.strip()}): skipped")
        return 77
    files = list(sources(root))
    if not files:
        print(f"no sources under {root}")
        return 1
    res = subprocess.run([tool, "--style=file", "--dry-run", "--Werror", *files], capture_output=True, text=True)
    if res.returncode != 0:
        sys.stdout.write(res.stderr[-20000:])
        print(f"not in the house style (fix with: clang-format -i FILE): see above")
        return 1
    print(f"{len(files)} sources in the house style")
    return 0


if __name__ == "__main__":
    sys.exit(main())

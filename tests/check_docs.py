#!/usr/bin/env python3
"""Fail when the documentation drifts: README.md over 350 lines (it is the
front door; details live in docs/), a relative link in README.md or docs/*.md
to a file that does not exist, or a result file that docs/figures.md or the
README cites as a figure's provenance missing from docs/results/ (the list of
removed files at the end of figures.md excepted).

    check_docs.py SOURCE_ROOT
"""
import glob
import os
import re
import sys

README_MAX_LINES = 350
root = sys.argv[1]
problems = []


def read(rel):
    with open(os.path.join(root, rel)) as f:
        return f.read()


readme = read("README.md")
n = readme.count("\n")
if n > README_MAX_LINES:
    problems.append(f"README.md: {n} lines, more than {README_MAX_LINES}: move details to docs/")

docs = ["README.md"] + sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "docs", "*.md")))
for rel in docs:
    text = read(rel)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = os.path.normpath(os.path.join(root, os.path.dirname(rel), target.split("#")[0]))
        if not os.path.exists(path):
            problems.append(f"{rel}: link to {target}: no such file")
    if rel == "docs/figures.md":
        text = text.split("## Result files removed")[0]
    # Result files cited as `YYYY-MM-DD-machine/name` (globs and {a,b} allowed).
    for cited in re.findall(r"`(?:docs/results/)?(\d{4}-\d\d-\d\d-[a-z0-9]+/[^`\s]+)`", text):
        alts = re.sub(r"\{([^}]*)\}", lambda m: "{" + m.group(1) + "}", cited)
        names = [alts]
        brace = re.search(r"\{([^}]*)\}", alts)
        if brace:
            names = [alts[:brace.start()] + x + alts[brace.end():] for x in brace.group(1).split(",")]
        for name in names:
            if not glob.glob(os.path.join(root, "docs", "results", name.rstrip("/"))):
                problems.append(f"{rel}: cites docs/results/{name}: no such result file")

for p in problems:
    print(p)
if not problems:
    print(f"docs: README {n} lines, links and cited result files of {len(docs)} files resolve")
sys.exit(1 if problems else 0)

#!/usr/bin/env python3
"""Validate a SAGE trace dump (Chrome trace-event JSON) and what it contains.

usage: check_trace.py TRACE [--expect-cat mem,copy,launch] [--expect-name NAME ...]
                            [--expect-stack] [--expect-count NAME=N ...] [--forbid-name NAME ...]
Exit 0 when valid and every expectation holds; 1 with a one-line reason otherwise.
"""
import argparse
import json
import sys

REQUIRED = {"ph", "name", "pid", "tid", "ts"}


def fail(msg):
    print(f"check_trace: FAIL: {msg}")
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--expect-cat", default="")
    ap.add_argument("--expect-name", action="append", default=[])
    ap.add_argument("--forbid-name", action="append", default=[])
    ap.add_argument("--expect-count", action="append", default=[], help="NAME=N: exactly N events named NAME")
    ap.add_argument("--expect-stack", action="store_true", help="some mem/copy/ctx event carries a non-empty stack")
    a = ap.parse_args()

    try:
        with open(a.trace) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{a.trace}: not readable JSON: {e}")
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        fail("no traceEvents list")
    events = doc["traceEvents"]
    names, cats, stacks = {}, set(), 0
    for i, e in enumerate(events):
        if not isinstance(e, dict) or not REQUIRED <= e.keys() and e.get("ph") != "M":
            fail(f"event {i} lacks {REQUIRED - set(e)}")
        ph = e.get("ph")
        if ph == "M":
            if "args" not in e or "name" not in e["args"]:
                fail(f"metadata event {i} without args.name")
            continue
        if ph != "X":
            fail(f"event {i} has unexpected phase {ph!r}")
        if not isinstance(e["ts"], (int, float)) or not isinstance(e.get("dur"), (int, float)) or e["dur"] < 0:
            fail(f"event {i} has bad ts/dur")
        args = e.get("args")
        if not isinstance(args, dict) or not isinstance(args.get("result"), int):
            fail(f"event {i} ({e['name']}) has no integer args.result")
        names[e["name"]] = names.get(e["name"], 0) + 1
        cats.add(e.get("cat"))
        if args.get("stack"):
            stacks += 1
    if not any(e.get("ph") == "M" and e.get("name") == "process_name" for e in events):
        fail("no process_name metadata")
    for c in filter(None, a.expect_cat.split(",")):
        if c not in cats:
            fail(f"no event of category {c!r} (have {sorted(x for x in cats if x)})")
    for n in a.expect_name:
        if n not in names:
            fail(f"no event named {n!r}")
    for n in a.forbid_name:
        if n in names:
            fail(f"unexpected event {n!r}")
    for spec in a.expect_count:
        n, want = spec.rsplit("=", 1)
        if names.get(n, 0) != int(want):
            fail(f"{names.get(n, 0)} events named {n!r}, expected {want}")
    if a.expect_stack and not stacks:
        fail("no event carries a stack")
    print(f"check_trace: ok: {sum(names.values())} events, categories {sorted(x for x in cats if x)}, "
          f"{stacks} with stacks")


if __name__ == "__main__":
    main()

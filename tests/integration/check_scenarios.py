#!/usr/bin/env python3
"""Every daemon-test scenario runs under meson test.

daemon_scenarios.def lists the scenarios once; daemon_test.c builds its table
from it and meson.build registers one test per entry. This catches what that
cannot: a scenario_* function written in daemon_test.c but never listed (the
.def is where it is forgotten), and a listed one meson does not register
(meson.build's parse of the .def gone wrong).
  check_scenarios.py DAEMON_TEST daemon_test.c daemon_scenarios.def intro-tests.json
"""
import json
import re
import subprocess
import sys


def main():
    binary, source, listing, intro = sys.argv[1:5]
    defined = set(re.findall(r"^static int scenario_(\w+)\(void\)", open(source).read(), re.M))
    helpers = set(re.findall(r"^HELPER\((\w+)\)", open(listing).read(), re.M))
    run = subprocess.run([binary, "--list"], capture_output=True, text=True, check=True).stdout.split()
    registered = {t["name"][len("daemon_"):] for t in json.load(open(intro)) if t["name"].startswith("daemon_")}
    problems = []
    for name in sorted(defined - helpers - set(run)):
        problems.append(f"scenario_{name} is defined in daemon_test.c but not listed in daemon_scenarios.def")
    for name in sorted(set(run) - registered):
        problems.append(f"scenario {name} is listed but meson registers no test daemon_{name}")
    for name in sorted(set(run) - defined):
        problems.append(f"scenario {name} is listed but daemon_test.c defines no scenario_{name}")
    for p in problems:
        print(p)
    if not run:
        problems.append("daemon-test --list printed nothing")
    print(f"{len(run)} scenarios, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

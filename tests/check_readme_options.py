#!/usr/bin/env python3
"""Fail when an option of common/options.def is not documented in README.md."""
import re
import sys

defs, readme = sys.argv[1], sys.argv[2]
names = re.findall(r"^SAGE_OPTION\(\w+,\s*(\w+),", open(defs).read(), re.M)
text = open(readme).read()
missing = [n for n in names if f"`SAGE_{n}`" not in text]
if missing or not names:
    print("README.md lacks options: " + ", ".join("SAGE_" + n for n in missing) if names else "no options parsed")
    sys.exit(1)
print(f"README documents all {len(names)} options")

#!/usr/bin/env python3
"""check_gates: every exported entry point of the fake passes the checkpoint
gate (FAKE_GATE() first), but the few that never reach the GPU. A new entry
point without it would run while its process is LOCKED or CHECKPOINTED.
Usage: check_gates.py FILE.c..."""
import re
import sys

UNGATED = {'cuInit', 'cuDriverGetVersion', 'cuGetErrorName', 'cuGetErrorString', 'cuGetExportTable',
           'cuGetProcAddress_v2', 'fake_cuGetProcAddress',
           'cuCheckpointProcessGetRestoreThreadId', 'cuCheckpointProcessGetState', 'cuCheckpointProcessLock',
           'cuCheckpointProcessCheckpoint', 'cuCheckpointProcessRestore', 'cuCheckpointProcessUnlock'}

bad = []
count = 0
for path in sys.argv[1:]:
    text = open(path).read()
    for m in re.finditer(r'^FAKE_EXPORT \w+ (\w+)\(', text, re.M):
        name = m.group(1)
        count += 1
        body = text.index('{', m.end())
        first = text[body + 1:body + 200].lstrip()
        if name in UNGATED or name.startswith('fakecuda'):
            continue
        if not first.startswith('FAKE_GATE();'):
            bad.append(f'{path}: {name} does not begin with FAKE_GATE()')
for b in bad:
    print(b)
print(f'check_gates: {count} exported entry points, {len(bad)} without the gate')
sys.exit(1 if bad or count == 0 else 0)

#!/usr/bin/env python3
"""check_gates: every exported entry point of the fake passes the checkpoint
gate (FAKE_GATE() first), but the few that never reach the GPU. A new entry
point without it would run while its process is LOCKED or CHECKPOINTED.
Entry points written out (`FAKE_EXPORT CUresult name(...) {`) and those a
macro generates (FAKE_ENTRY and any macro built on it) are both checked: a
macro that defines a FAKE_EXPORT function must begin its body with the gate.
Usage: check_gates.py FILE.c|FILE.h..."""
import re
import sys

UNGATED = {'cuInit', 'cuDriverGetVersion', 'cuGetErrorName', 'cuGetErrorString', 'cuGetExportTable',
           'cuGetProcAddress_v2', 'fake_cuGetProcAddress',
           'cuCheckpointProcessGetRestoreThreadId', 'cuCheckpointProcessGetState', 'cuCheckpointProcessLock',
           'cuCheckpointProcessCheckpoint', 'cuCheckpointProcessRestore', 'cuCheckpointProcessUnlock'}


def gated(body_text):
    return body_text.lstrip().startswith('FAKE_GATE();')


bad = []
count = 0
texts = {path: open(path).read() for path in sys.argv[1:]}

# Macros: name -> body (continuation lines joined).
macros = {}
for path, text in texts.items():
    for m in re.finditer(r'^#define (\w+)\(([^)]*)\)((?:.*\\\n)*.*)$', text, re.M):
        macros[m.group(1)] = (path, m.group(3).replace('\\\n', '\n'))

# Generators: macros that define an exported function, then those built on them.
generators = set()
for name, (path, body) in macros.items():
    if 'FAKE_EXPORT' not in body:
        continue
    generators.add(name)
    for e in re.finditer(r'FAKE_EXPORT[^{]*\{', body):
        if not gated(body[e.end():]):
            bad.append(f'{path}: macro {name} defines an entry point that does not begin with FAKE_GATE()')
grew = True
while grew:
    grew = False
    for name, (path, body) in macros.items():
        if name not in generators and any(re.search(r'\b' + g + r'\(', body) for g in generators):
            generators.add(name)
            grew = True

for path, text in texts.items():
    for m in re.finditer(r'^FAKE_EXPORT \w+ (\w+)\(', text, re.M):
        name = m.group(1)
        count += 1
        body = text.index('{', m.end())
        if name in UNGATED or name.startswith('fakecuda'):
            continue
        if not gated(text[body + 1:body + 200]):
            bad.append(f'{path}: {name} does not begin with FAKE_GATE()')
    for m in re.finditer(r'^(\w+)\(', text, re.M):
        if m.group(1) in generators:
            count += 1
for b in bad:
    print(b)
print(f'check_gates: {count} exported entry points or generator lines, {len(bad)} without the gate')
sys.exit(1 if bad or count == 0 else 0)

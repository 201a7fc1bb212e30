#!/usr/bin/env python3
"""The module graph of a C directory, drawn from its #include "..." lines.

A module is a .c file and the header of the same name. A header without a
.c of its own belongs to the module that defines most of what it declares
(intercept.h once declared init.c's counters), and is a node of its own
when it declares nothing (an umbrella of other headers, a generated list).
An edge A -> B means a file of A includes a header of B; .def lists are
data, not modules, and headers from outside the directory are left out.

  scripts/modgraph.py DIR            print the edges and the cycles
  scripts/modgraph.py DIR --check    the same; exit 1 if there is a cycle
  scripts/modgraph.py DIR --dot      Graphviz
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
# What a header declares: a function prototype or an extern object, at the start of a line.
DECLARED = re.compile(r'^(?:extern\s+)?[A-Za-z_][\w\s\*]*?\b([a-z_]\w*)\s*(?:\(|\[[^\]]*\]\s*;|;)', re.M)


def strip_comments(text):
    text = re.sub(r'/\*.*?\*/', '', text, flags=re.S)
    return re.sub(r'//[^\n]*', '', text)


def header_owner(directory, header, sources):
    """The module a header without a same-named .c belongs to (its own name if none)."""
    text = strip_comments(open(os.path.join(directory, header)).read())
    names = set()
    for line in text.splitlines():
        if line.startswith(('static', '#', ' ', '\t', 'typedef')):
            continue
        m = DECLARED.match(line)
        if m:
            names.add(m.group(1))
    best, best_count = None, 0
    for src, body in sources.items():
        count = sum(1 for n in names if re.search(r'^[A-Za-z_][^;{}\n]*\b%s\b\s*[\(\[=;]' % re.escape(n), body, re.M)
                    and not re.search(r'^extern\b[^\n]*\b%s\b' % re.escape(n), body, re.M))
        if count > best_count:
            best, best_count = src, count
    return best[:-2] if best else header[:-2]


def graph(directory):
    files = sorted(f for f in os.listdir(directory) if f.endswith(('.c', '.h')))
    sources = {f: strip_comments(open(os.path.join(directory, f)).read()) for f in files if f.endswith('.c')}
    owner = {}
    for f in files:
        if f.endswith('.h'):
            owner[f] = f[:-2] if f[:-2] + '.c' in sources else header_owner(directory, f, sources)
    edges = set()
    for f in files:
        src = owner.get(f, f[:-2])
        for inc in INCLUDE.findall(strip_comments(open(os.path.join(directory, f)).read())):
            if inc in owner and owner[inc] != src:
                edges.add((src, owner[inc]))
    return sorted(edges), owner


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    succ = {}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
        succ.setdefault(b, [])
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return sorted(out)


def main(argv):
    if len(argv) < 2 or argv[1] in ('-h', '--help'):
        print(__doc__.strip())
        return 0 if len(argv) >= 2 else 2
    directory = argv[1]
    edges, owner = graph(directory)
    found = cycles(edges)
    if '--dot' in argv:
        print('digraph modules {')
        for a, b in edges:
            print('  "%s" -> "%s";' % (a, b))
        print('}')
    else:
        for h, o in sorted(owner.items()):
            if o != h[:-2]:
                print('# %s belongs to %s' % (h, o))
        for a, b in edges:
            print('%s -> %s' % (a, b))
        for c in found:
            print('cycle: %s' % ' <-> '.join(c))
        print('%d modules, %d edges, %d cycle(s)' % (len({m for e in edges for m in e}), len(edges), len(found)))
    return 1 if found and '--check' in argv else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))

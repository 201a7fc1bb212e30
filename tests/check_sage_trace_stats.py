#!/usr/bin/env python3
"""sage-trace names libsage's counters from intercept/stats.def, not from a
list of its own: a dump carrying every counter (each a distinct value) must
come back with every SHARE_ counter of stats.def, and only those, under
"sharing", each with its value.

  check_sage_trace_stats.py SAGE_TRACE STATS_DEF
"""
import json
import os
import re
import subprocess
import sys
import tempfile


def main(sage_trace, stats_def):
    names = re.findall(r'^SAGE_STAT\((\w+),', open(stats_def).read(), re.M)
    values = {n: 1000 + i for i, n in enumerate(names)}
    dump = '{"traceEvents":[\n'
    dump += '{"ph":"M","name":"process_name","pid":7,"tid":7,"args":{"name":"t"}}'
    dump += ',\n{"ph":"X","name":"cuInit","cat":"init","pid":7,"tid":7,"ts":1.000,"dur":2.000,"args":{"result":0}}'
    dump += '\n],\n"displayTimeUnit":"ms",\n"otherData":{"pid":7,"stats":%s}}\n' % json.dumps(values, separators=(',', ':'))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'dump.json')
        open(path, 'w').write(dump)
        out = subprocess.run([sage_trace, 'summary', '--json', path], capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            print('sage-trace exited %d: %s' % (out.returncode, out.stderr))
            return 1
        sharing = json.loads(out.stdout.rstrip().rstrip(','))['sharing']
        want = {n: v for n, v in values.items() if n.startswith('SHARE_')}
        if sharing != want:
            print('missing: %s' % sorted(set(want) - set(sharing)))
            print('extra: %s' % sorted(set(sharing) - set(want)))
            print('wrong: %s' % sorted(n for n in want if n in sharing and sharing[n] != want[n]))
            return 1
        text = subprocess.run([sage_trace, 'summary', path], capture_output=True, text=True, timeout=30).stdout
        for n in want:
            if n not in ('SHARE_HITS', 'SHARE_MISSES', 'SHARE_BYTES_MAPPED', 'SHARE_BYTES_COPIED') and \
                    not re.search(r'^  %s +%d$' % (n, want[n]), text, re.M):
                print('the text summary lacks %s:\n%s' % (n, text))
                return 1
    print('sage-trace reports all %d sharing counters of stats.def' % len(want))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1], sys.argv[2]))

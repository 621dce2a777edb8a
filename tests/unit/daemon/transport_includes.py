#!/usr/bin/env python3
"""Transports know nothing of each other (issue 11): no file under daemon/serial/
includes a header of daemon/dfu/ and the reverse.  Shared things (the plan, mode
switches, the listening-mode query) are the core's, in daemon/.

usage: transport_includes.py SOURCE_ROOT       (TAP)
"""
import os
import re
import sys

root = os.path.join(sys.argv[1], 'daemon')
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^">]+)[">]', re.M)


def files(d):
    return sorted(f for f in os.listdir(os.path.join(root, d)) if f.endswith(('.c', '.h')))


headers = {d: {f for f in files(d) if f.endswith('.h')} for d in ('serial', 'dfu')}
checks = []
for here, other in (('serial', 'dfu'), ('dfu', 'serial')):
    for f in files(here):
        text = open(os.path.join(root, here, f), encoding='utf-8').read()
        bad = [inc for inc in INCLUDE.findall(text)
               if os.path.basename(inc) in headers[other] - headers[here]
               or re.search(r'(^|/)%s/' % other, inc)]
        checks.append(('daemon/%s/%s includes no daemon/%s header' % (here, f, other), bad))
# the meson files: no include directory of the other transport either
for here, other in (('serial', 'dfu'), ('dfu', 'serial')):
    text = open(os.path.join(root, here, 'meson.build'), encoding='utf-8').read()
    bad = re.findall(r"include_directories\([^)]*'\.\./%s'" % other, text)
    checks.append(('daemon/%s/meson.build adds no daemon/%s include directory' % (here, other), bad))

failed = 0
for i, (name, bad) in enumerate(checks, 1):
    if bad:
        failed += 1
        print('not ok %d - %s: %s' % (i, name, ', '.join(bad)))
    else:
        print('ok %d - %s' % (i, name))
print('1..%d' % len(checks))
sys.exit(1 if failed else 0)

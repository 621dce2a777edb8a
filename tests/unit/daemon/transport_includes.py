#!/usr/bin/env python3
"""Transports know nothing of each other (issue 11): no file under daemon/serial/,
daemon/dfu/ or daemon/ctrl/ includes a header of another of them.  Shared things
(mode switches, the listening-mode query) are the core's, in daemon/; so is the
order of a job: no transport includes the plan's runner (job_plan.h, job_steps.h),
switches a device into or out of DFU mode (mode_switch_dfu*(): the core's steps) or
ends a job itself (job_finish(): transports end their step with job_step_done()).

usage: transport_includes.py SOURCE_ROOT       (TAP)
"""
import os
import re
import sys

root = os.path.join(sys.argv[1], 'daemon')
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^">]+)[">]', re.M)


def files(d):
    return sorted(f for f in os.listdir(os.path.join(root, d)) if f.endswith(('.c', '.h')))


TRANSPORTS = ('serial', 'dfu', 'ctrl')
PAIRS = [(a, b) for a in TRANSPORTS for b in TRANSPORTS if a != b]
headers = {d: {f for f in files(d) if f.endswith('.h')} for d in TRANSPORTS}
checks = []
for here, other in PAIRS:
    for f in files(here):
        text = open(os.path.join(root, here, f), encoding='utf-8').read()
        bad = [inc for inc in INCLUDE.findall(text)
               if os.path.basename(inc) in headers[other] - headers[here]
               or re.search(r'(^|/)%s/' % other, inc)]
        checks.append(('daemon/%s/%s includes no daemon/%s header' % (here, f, other), bad))
# the core's order of steps is not a transport's business
CALL = re.compile(r'\b(job_finish|job_plan_make|job_handoff|mode_switch_dfu\w*)\s*\(')
for here in TRANSPORTS:
    for f in files(here):
        text = open(os.path.join(root, here, f), encoding='utf-8').read()
        bad = [inc for inc in INCLUDE.findall(text)
               if os.path.basename(inc) in ('job_plan.h', 'job_steps.h', 'jobs.h')]
        bad += sorted(set(CALL.findall(text)))
        checks.append(('daemon/%s/%s neither plans, switches to DFU mode nor ends the job'
                       % (here, f), bad))
# the meson files: no include directory of another transport either
for here, other in PAIRS:
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

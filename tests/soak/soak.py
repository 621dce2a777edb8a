#!/usr/bin/env python3
"""Soak (issue 13): N consecutive flashes through one flashd, mixed serial (a
Photon in listening mode, YMODEM) and DFU (an Argon put in DFU mode before each
of its jobs), one job in ten with an injected device fault.  Every job's outcome
is accounted for (the expected one for its fault, and one history record per
job), and flashd's RSS and open fds are measured after job --mark (default 10)
and at the end: the fds must be equal and the RSS within --rss-slack KiB
(default 256) of the mark.

usage: soak.py FLASHD_SIM FLASHD FLASHCTL [--flashes N] [--mark M] [--rss-slack KIB]
               [--sample K] [--probe] [--no-history] [--config TEXT]
       soak.py --inner PLAN.json          (runs inside flashd-sim)

--sample K also measures after every K-th job and prints the curve; --probe
attaches gdb at each measurement for SQLite's own account
(sqlite3_memory_used() and its high-water) and glibc's malloc_stats() per arena
(into flashd's log), and keeps /proc/PID/smaps as smaps-JOB in the work
directory; --mtrace traces glibc's malloc from the mark to the end
(work/mtrace.log, for `mtrace FLASHD FILE`: what was allocated then and not
freed); --no-history runs flashd without a state directory (no
history database; the history checks are skipped); --config appends TEXT (\\n
for newlines) to flashd's configuration.

RSS is meaningful on a release build only (ASan's quarantine holds freed memory);
for LeakSanitizer run it with an ASan flashd: flashd's exit status is checked
(LeakSanitizer makes leaks a non-zero one).  See tests/soak/README.md.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'integration'))
from flashd_harness import (SERIAL_TIMEOUTS, Client, Failed, SimControl,  # noqa: E402
                            run_testbed, sim_fixture)

IDS = {'serial': '3a001d000a47353138383131', 'dfu': 'e00fce68aabbccddeeff0131'}
SPECS = ['platform=photon,os=1.5.2,mode=listening,name=p1,id=' + IDS['serial'],
         'platform=argon,os=2.2.0,mode=dfu,name=a1,id=' + IDS['dfu']]
FILES = {'serial': 'photon/photon_tinker.bin', 'dfu': 'argon/tinker-0.8.0-rc.27-argon.bin'}
NAMES = {'serial': 'p1', 'dfu': 'a1'}
# The injected faults, in turn (one job in ten): (transport, fault, expected result)
FAULTS = [('serial', 'reset@50%', 'done'),            # the replug rule: resumed
          ('dfu', 'stall@chunk2:errPROG', 'transfer-failed'),
          ('serial', 'cancel@50%', 'device-rejected'),
          ('dfu', 'reset@50%', 'done'),
          ('dfu', 'error@chunk1:errWRITE', 'transfer-failed'),
          ('serial', 'nak@50%', 'transfer-failed')]


def mem(pid):
    rss = 0
    for line in open('/proc/%d/status' % pid):
        if line.startswith('VmRSS:'):
            rss = int(line.split()[1])
    return rss, len(os.listdir('/proc/%d/fd' % pid))


def probe(pid):
    """SQLite's and glibc's own accounts of flashd's heap (gdb attached for a
    moment; --probe): sqlite3_memory_used() and the page-cache high-water, and
    malloc_stats() per arena (written to flashd's stderr, the log)."""
    if not shutil.which('gdb'):
        return {'sqlite_used': 'n/a (no gdb)', 'sqlite_highwater': 'n/a'}
    p = subprocess.run(['gdb', '-p', str(pid), '-batch', '-nx',
                        '-ex', 'print (long long)sqlite3_memory_used()',
                        '-ex', 'print (long long)sqlite3_memory_highwater(0)',
                        '-ex', 'call (void)malloc_stats()',
                        '-ex', 'call (int)fflush(0)'],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=120)
    vals = [line.split('=', 1)[1].strip() for line in p.stdout.splitlines()
            if line.startswith('$')]
    return {'sqlite_used': vals[0] if vals else None,
            'sqlite_highwater': vals[1] if len(vals) > 1 else None}


def inner(plan_path):
    plan = json.load(open(plan_path))
    work = plan['work']
    sock = os.path.join(work, 'flashd.sock')
    lock = os.path.join(work, 'lock')
    os.mkdir(lock)
    cfg = os.path.join(work, 'flashd.conf')
    with open(cfg, 'w') as f:
        f.write(SERIAL_TIMEOUTS + '[limits]\njob_history = 16\n' + plan.get('config', ''))
    log = open(os.path.join(work, 'flashd.log'), 'w')
    state = [] if plan.get('no_history') else ['--state-dir', os.path.join(work, 'state')]
    env = dict(os.environ, FLASHD_LOCK_DIR=lock)
    if plan.get('mtrace'):
        # glibc's malloc trace, switched on at the mark and off at the end by gdb:
        # what is allocated in between and never freed (mtrace FLASHD FILE)
        env['MALLOC_TRACE'] = os.path.join(work, 'mtrace.log')
        env['LD_PRELOAD'] = ' '.join(x for x in (env.get('LD_PRELOAD'),
                                                 'libc_malloc_debug.so.0') if x)
    flashd = subprocess.Popen([plan['flashd'], '--foreground', '--socket', sock, *state,
                               '--config', cfg, '--log-level', 'info'], stdout=log, stderr=log,
                              env=env)

    def gdb_call(expr):
        subprocess.run(['gdb', '-p', str(flashd.pid), '-batch', '-nx', '-ex', 'call ' + expr],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    ctl = SimControl(plan['control'])
    out = {'jobs': [], 'mark': None, 'history': {}, 'samples': []}

    def sample(i):
        m = mem(flashd.pid)
        s = {'i': i, 'rss': m[0], 'fds': m[1]}
        if plan.get('probe'):
            shutil.copyfile('/proc/%d/smaps' % flashd.pid, os.path.join(work, 'smaps-%d' % i))
            log.write('soak: malloc_stats after job %d:\n' % i)
            log.flush()
            s.update(probe(flashd.pid))
        out['samples'].append(s)
        return m

    def read_history():
        if plan.get('no_history'):
            return
        # the newest 20, every 10 jobs: a reply stops at 512 KiB of records, and a
        # big reply would leave its high-water mark in the RSS measured after it
        c = Client(sock, 60)
        r = c.call({'request': 'history', 'limit': 20}, timeout=60)
        c.close()
        out['history'].update({h['job']: h['result'] for h in (r or {}).get('jobs', [])})

    def flashctl(*args, timeout=120):
        return subprocess.run([plan['flashctl'], '--socket', sock, *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout)

    try:
        deadline = time.monotonic() + 30
        while True:
            p = flashctl('--json', 'list') if os.path.exists(sock) else None
            if p and p.returncode == 0 and \
                    len([d for d in json.loads(p.stdout.splitlines()[0])['devices']
                         if d['present']]) == 2:
                break
            if time.monotonic() > deadline:
                raise Failed('flashd did not list both devices')
            time.sleep(0.1)
        nfault = 0
        for i in range(1, plan['flashes'] + 1):
            tr = 'serial' if i % 2 else 'dfu'
            fault, expect = '', 'done'
            if i % 10 == 5:
                tr, fault, expect = FAULTS[nfault % len(FAULTS)]
                nfault += 1
            name = NAMES[tr]
            if tr == 'dfu':
                ctl(cmd='mode', name=name, mode='dfu')
            ctl(cmd='wait-idle', timeout_ms=60000)
            # the device is listed again (in DFU mode for the Argon) before the job
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                p = flashctl('--json', 'list')
                devs = json.loads(p.stdout.splitlines()[0])['devices'] if p.returncode == 0 \
                    else []
                d = [x for x in devs if x.get('id', x.get('device_id')) == IDS[tr]
                     or x.get('key') == IDS[tr]]
                if d and d[0]['present'] and (tr != 'dfu' or d[0].get('mode') == 'dfu'):
                    break
                time.sleep(0.05)
            if fault:
                ctl(cmd='fault', name=name, faults=fault)
            t0 = time.monotonic()
            p = flashctl('--json', 'flash', plan['files'][tr], '--device', IDS[tr], '--force')
            ends = [json.loads(x) for x in p.stdout.splitlines() if x.startswith('{')]
            ends = [e for e in ends if e.get('event') == 'job-ended']
            end = ends[0] if ends else {}
            got = 'done' if end.get('result') == 'done' else \
                (end.get('error') or {}).get('code', 'no job-ended: rc %d %s'
                                              % (p.returncode, p.stderr[-300:]))
            notes = []
            out['jobs'].append({'i': i, 'tr': tr, 'fault': fault, 'expect': expect, 'got': got,
                                'job': end.get('job'), 's': round(time.monotonic() - t0, 2),
                                'notes': notes})
            if fault:
                ctl(cmd='wait-idle', timeout_ms=60000)
                ctl(cmd='fault', name=name, faults='')
            if i % 10 == 0:
                read_history()
            every = plan.get('sample') or plan['flashes']
            if i == plan['mark'] or (i % every == 0 and i != plan['flashes']):
                ctl(cmd='wait-idle', timeout_ms=60000)
                time.sleep(0.3)
                m = sample(i)
                if i == plan['mark']:
                    out['mark'] = m
                    if plan.get('mtrace'):
                        gdb_call('(void)mtrace()')
        ctl(cmd='wait-idle', timeout_ms=60000)
        read_history()
        time.sleep(0.3)
        out['end'] = sample(plan['flashes'])
        if plan.get('mtrace'):
            gdb_call('(void)muntrace()')
    finally:
        flashd.terminate()
        try:
            flashd.wait(60)
        except subprocess.TimeoutExpired:
            flashd.kill()
            flashd.wait()
        out['flashd_exit'] = flashd.returncode
        with open(os.path.join(work, 'results.json'), 'w') as f:
            json.dump([out], f)


def outer(argv):
    sim, flashd, flashctl = argv[:3]
    rest = argv[3:]
    flashes, mark, slack = 100, 10, 256
    opts = {}
    while rest:
        a = rest.pop(0)
        if a == '--sample':
            opts['sample'] = int(rest.pop(0))
        elif a == '--probe':
            opts['probe'] = True
        elif a == '--mtrace':
            opts['mtrace'] = True
        elif a == '--no-history':
            opts['no_history'] = True
        elif a == '--config':
            opts['config'] = rest.pop(0).replace('\\n', '\n')
        elif a == '--flashes':
            flashes = int(rest.pop(0))
        elif a == '--mark':
            mark = int(rest.pop(0))
        elif a == '--rss-slack':
            slack = int(rest.pop(0))
    files = {tr: sim_fixture(p, tap=False) for tr, p in FILES.items()}
    top = tempfile.mkdtemp(prefix='flashd-soak.')
    t0 = time.monotonic()
    try:
        results, doc, work, log = run_testbed(
            sim, flashd, flashctl, __file__, top, SPECS, [],
            sim_args=['--time-scale', '0', '--timeout-scale', '0.2'],
            command=[sys.executable, os.path.abspath(__file__), '--inner-soak',
                     json.dumps(dict(opts, flashes=flashes, mark=mark, files=files))],
            timeout=max(600, flashes * 6))
    except Failed as e:
        print('FAIL: %s' % str(e)[-4000:])
        sys.exit(1)
    r = results[0]
    probs = []
    jobs = r['jobs']
    bad = [j for j in jobs if j['got'] != j['expect']]
    for j in bad:
        probs.append('job %d (%s%s): expected %s, got %s' % (
            j['i'], j['tr'], ' ' + j['fault'] if j['fault'] else '', j['expect'], j['got']))
    missing = [j for j in jobs if not j['job'] or j['job'] not in r.get('history', {})]
    if missing and not opts.get('no_history'):
        probs.append('%d jobs not in the history (first: %s)' % (len(missing), missing[0]))
    if len(jobs) != flashes:
        probs.append('%d of %d jobs ran' % (len(jobs), flashes))
    (rss_m, fd_m), (rss_e, fd_e) = r['mark'], r['end']
    counts = {}
    for j in jobs:
        counts[j['got']] = counts.get(j['got'], 0) + 1
    print('soak: %d flashes (%d serial, %d DFU, %d with faults) in %.0f s; outcomes: %s' % (
        len(jobs), len([j for j in jobs if j['tr'] == 'serial']),
        len([j for j in jobs if j['tr'] == 'dfu']), len([j for j in jobs if j['fault']]),
        time.monotonic() - t0, ', '.join('%s %d' % kv for kv in sorted(counts.items()))))
    print('soak: flashd after job %d: RSS %d KiB, %d fds; after job %d: RSS %d KiB, %d fds'
          % (mark, rss_m, fd_m, len(jobs), rss_e, fd_e))
    if r.get('samples') and (opts.get('sample') or opts.get('probe')):
        for s in r['samples']:
            print('soak: after job %(i)d: RSS %(rss)d KiB, %(fds)d fds' % s +
                  ('; sqlite3_memory_used %s, high-water %s' % (s['sqlite_used'],
                                                                 s['sqlite_highwater'])
                   if 'sqlite_used' in s else ''))
        if opts.get('probe'):
            print('soak: malloc_stats per sample: %s (flashd.log)' % work)
    if fd_e != fd_m:
        probs.append('fd count %d -> %d' % (fd_m, fd_e))
    asan = b'__asan_init' in open(flashd, 'rb').read()
    if asan:
        print('soak: ASan build: RSS not judged (the quarantine holds freed memory); '
              'LeakSanitizer judges leaks at exit')
    elif rss_e > rss_m + slack:
        probs.append('RSS grew %d KiB (slack %d KiB)' % (rss_e - rss_m, slack))
    if r.get('flashd_exit') != 0:
        probs.append('flashd exited %s (LeakSanitizer reports leaks so)' % r.get('flashd_exit'))
    for p in probs:
        print('FAIL: ' + p)
    if probs:
        print(log[-3000:])
    sys.exit(1 if probs else 0)


if __name__ == '__main__':
    if len(sys.argv) == 4 and sys.argv[1] == '--inner-soak':
        plan = json.load(open(sys.argv[3]))
        plan.update(json.loads(sys.argv[2]))
        p2 = os.path.join(plan['work'], 'plan-soak.json')
        with open(p2, 'w') as f:
            json.dump(plan, f)
        inner(p2)
        sys.exit(0)
    outer(sys.argv[1:])

#!/usr/bin/env python3
"""Regression tests for the faults found by trying to break flashd (issue 13):
the real flashd and flashctl against devices flashd-sim plugs in, unplugs,
stalls and cancels.

usage: test_reliability.py FLASHD_SIM FLASHD FLASHCTL TEST[,TEST...]|all
       test_reliability.py --inner PLAN.json      (runs inside flashd-sim)

Each test starts one testbed; inside it this script starts flashd (short
serial timeouts unless the plan says otherwise), runs the plan's steps and
stops flashd.  Steps besides the harness's "ctl" and "sleep":
  {"bg": NAME, "flash": ARGS}     starts `flashctl --json flash ARGS`
  {"join": NAME}                  waits for it: {"rc", "lines", "stderr", "elapsed"}
  {"cancel_at": NAME, "done": N, "after_s": S}  watches the jobs until one's
                                  job-progress says writing with done >= N, then
                                  cancels it S seconds later
  {"probe_and_close": ID}         sends device-info "probe" on a raw connection and
                                  closes it at once: {"closed_at"}
  {"jobs": true}                  flashctl --json jobs: {"jobs", "t"}
TAP output.
"""
import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flashd_harness import (SERIAL_TIMEOUTS, Client, Testbed, catalogue, check,  # noqa: E402
                            expect_done, run_testbed, run_tests, sim_fixture)

TIMEOUT = 200
IDS = {
    'photon': '3a001d000a47353138383131',
    'argon': 'e00fce68aabbccddeeff0131',
}
PHOTON_APP = 'photon/photon_tinker.bin'
PHOTON_SYSTEM = 'photon/system-part1-0.5.2-photon.bin'
ARGON_APP = 'argon/tinker-0.8.0-rc.27-argon.bin'


# --- inner half ---------------------------------------------------------------------------

def inner(plan_path):
    plan = json.load(open(plan_path))
    # a {"default_timeouts": true} step: flashd keeps its own serial timeouts
    defaults = any(s.get('default_timeouts') for s in plan['steps'])
    tb = Testbed(plan_path, config=None if defaults else SERIAL_TIMEOUTS)
    bg = {}

    def read_line(name):
        line = bg[name]['p'].stdout.readline()
        if line.startswith('{'):
            bg[name]['lines'].append(json.loads(line))
        return line

    def step(s):
        if 'bg' in s:
            # with no device to wait for, flashd may still be starting
            deadline = time.monotonic() + 20
            while tb.flashctl('--json', 'list').returncode != 0:
                check(time.monotonic() < deadline, 'flashd did not start')
                time.sleep(0.1)
            p = tb.flashctl_popen('--json', 'flash', *s['flash'], stderr=subprocess.PIPE)
            bg[s['bg']] = {'p': p, 'lines': [], 't0': time.monotonic()}
            return {}
        if 'join' in s:
            b = bg.pop(s['join'])
            out, err = b['p'].communicate(timeout=150)
            b['lines'] += [json.loads(x) for x in out.splitlines() if x.startswith('{')]
            return {'rc': b['p'].returncode, 'lines': b['lines'], 'stderr': err,
                    'elapsed': time.monotonic() - b['t0']}
        if 'cancel_at' in s:
            # flashctl's piped output comes in blocks: watch the job on a connection of our own
            c = Client(tb.sock)
            c.call({'request': 'subscribe', 'jobs': True})
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                ev = c.read(max(0.1, deadline - time.monotonic()))
                if ev and ev.get('event') == 'job-progress' and ev.get('state') == 'writing' \
                        and ev.get('done', 0) >= s['done']:
                    time.sleep(s.get('after_s', 0))
                    r = c.call({'request': 'cancel', 'job': ev['job']})
                    c.close()
                    return {'cancelled': r.get('type') == 'reply', 'job': ev['job'],
                            'at': ev['done']}
            c.close()
            return {'cancelled': False}
        if 'probe_and_shut_wr' in s:
            # the request, then shutdown(SHUT_WR) as socat does: the answer must come
            c = socket.socket(socket.AF_UNIX)
            c.connect(tb.sock)
            c.sendall(json.dumps({'request': 'device-info', 'id': 2, 'probe': True,
                                  'device': s['probe_and_shut_wr']}).encode() + b'\n')
            c.shutdown(socket.SHUT_WR)
            c.settimeout(60)
            data = b''
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
            c.close()
            return {'answer': [json.loads(x) for x in data.splitlines() if x.strip()]}
        if 'probe_and_close' in s:
            c = socket.socket(socket.AF_UNIX)
            c.connect(tb.sock)
            c.sendall(json.dumps({'request': 'device-info', 'id': 1, 'probe': True,
                                  'device': s['probe_and_close']}).encode() + b'\n')
            time.sleep(0.3)  # the probe job starts
            c.close()
            return {'closed_at': time.monotonic()}
        if 'default_timeouts' in s:
            return {}
        if 'jobs' in s:
            p = tb.flashctl('--json', 'jobs')
            return {'jobs': json.loads(p.stdout.splitlines()[0])['jobs'] if p.stdout else [],
                    't': time.monotonic()}
        raise SystemExit('unknown step %s' % s)

    try:
        tb.run(step)
    finally:
        for b in bg.values():
            b['p'].kill()


if len(sys.argv) == 3 and sys.argv[1] == '--inner':
    inner(sys.argv[2])
    sys.exit(0)

# --- outer half ---------------------------------------------------------------------------

SIM, FLASHD, FLASHCTL, TEST = sys.argv[1:5]
# short: the umockdev testbed (and its sockets, at most 108 bytes) lives below it
top = tempfile.mkdtemp(prefix='flashd-rel.')
atexit.register(shutil.rmtree, top, True)  # the checks quote flashd's log
CATALOGUE = catalogue(FLASHCTL)


def run(devices, steps, time_scale='0', n_devices=None):
    results, doc, _, log = run_testbed(SIM, FLASHD, FLASHCTL, __file__, top, devices, steps,
                                       sim_args=['--time-scale', time_scale,
                                                 '--timeout-scale', '0.2'],
                                       n_devices=n_devices, timeout=TIMEOUT)
    return results, doc, log


def progress(res):
    return [l for l in res['lines'] if l.get('event') == 'job-progress']


def notes(res):
    return [l['note'] + ': ' + l.get('message', '') for l in progress(res) if 'note' in l]


def end_of(res):
    ends = [l for l in res['lines'] if l.get('event') == 'job-ended']
    check(len(ends) == 1, 'no single job-ended: %s %s' % (res['lines'], res.get('stderr')))
    return ends[0]


def spec(platform, os_, name, mode):
    return 'platform=%s,os=%s,mode=%s,name=%s,id=%s,port=1-3' % (platform, os_, mode, name,
                                                                IDS[name])


# --- tests --------------------------------------------------------------------------------

def test_wait_then_photon_plugged_in_listening_mode_is_flashed():
    """flashctl flash --wait=30, then a Photon in listening mode is plugged in: the
    job must not take the device before its tty exists (it failed at once with
    not-flashable-here "unknown mode")."""
    app = sim_fixture(PHOTON_APP)
    steps = [{'bg': 'a', 'flash': [app, '--wait=30']}, {'sleep': 0.5},
             {'ctl': {'cmd': 'plug', 'spec': spec('photon', '1.5.2', 'photon', 'listening')}},
             {'join': 'a'}]
    res, doc, log = run([], steps, n_devices=0)
    expect_done(res[3], log)


def test_argon_in_dfu_then_replugged_as_serial_device_second_wait_job_works():
    """An Argon in DFU mode serves the first --wait job; unplugged and plugged
    again it boots its firmware as a serial device, and the second --wait job
    must wait for its tty too."""
    app = sim_fixture(ARGON_APP)
    steps = [{'bg': 'a', 'flash': [app, '--wait=30']}, {'sleep': 0.5},
             {'ctl': {'cmd': 'plug', 'spec': spec('argon', '2.2.0', 'argon', 'dfu')}},
             {'join': 'a'}, {'ctl': {'cmd': 'wait-idle'}},
             {'ctl': {'cmd': 'unplug', 'name': 'argon'}}, {'sleep': 0.5},
             {'bg': 'b', 'flash': [app, '--wait=30']}, {'sleep': 0.5},
             {'ctl': {'cmd': 'plug', 'name': 'argon'}},
             {'join': 'b'}]
    res, doc, log = run([], steps, n_devices=0)
    expect_done(res[3], log)
    expect_done(res[10], log)


def test_probe_whose_client_closed_is_cancelled():
    """A device-info probe whose client closed its connection is cancelled at
    once: flashd keeps watching the client during the probe.  The device is a
    running application on 6.x (no listening mode), which a probe waits on for
    seconds with the default timeouts."""
    steps = [{'default_timeouts': True}, {'probe_and_close': IDS['argon']}, {'sleep': 1.5},
             {'jobs': True}, {'ctl': {'cmd': 'wait-idle'}}, {'jobs': True},
             {'probe_and_shut_wr': IDS['argon']}]
    res, doc, log = run([spec('argon', '6.1.0', 'argon', 'normal')], steps)
    probes = res[3]['jobs']
    check(len(probes) == 1, 'one probe job expected: %s' % probes)
    job = probes[0]
    check(job.get('result') == 'cancelled',
          'probe of a closed client: %s 1.5 s after the close, not cancelled (%s)\n%s'
          % (job.get('state'), job.get('result'), log[-3000:]))
    err = job.get('error') or {}
    check(err.get('code') == 'cancelled', 'error: %s' % err)
    # a client that only shut its sending side still gets the probe's answer
    answer = res[6]['answer']
    check(len(answer) == 1 and answer[0].get('id') == 2
          and (answer[0].get('type') == 'error' or 'probe' in answer[0]),
          'half-closed client: %s\n%s' % (answer, log[-3000:]))


def test_after_a_cancelled_transfer_the_handoff_gives_the_true_reason():
    """A Photon on 1.5.2 stops answering half-way through a serial transfer and the
    job is cancelled (flashctl cancel): the next job finds no console and hands
    over to DFU, and its note must give the true reason, not "Device OS 6.x has
    no YMODEM" (a Photon never runs 6.x, and flashd knows it runs 1.5.2)."""
    sysp = sim_fixture(PHOTON_SYSTEM)
    app = sim_fixture(PHOTON_APP)
    s = spec('photon', '1.5.2', 'photon', 'listening') + ',faults=silent@50%'
    steps = [{'bg': 'a', 'flash': [sysp, '--device', IDS['photon'], '--force']},
             {'cancel_at': 'a', 'done': 0, 'after_s': 0.5}, {'join': 'a'},
             {'bg': 'b', 'flash': [app, '--device', IDS['photon']]}, {'join': 'b'}]
    res, doc, log = run([s], steps)
    check(res[1].get('cancelled'), 'could not cancel: %s' % res[1])
    # cancelled, or timed out first (the cancel waits for the stalled block's answer)
    check(end_of(res[2])['result'] in ('cancelled', 'failed'), 'first job: %s' % end_of(res[2]))
    said = notes(res[4])
    check(not any('6.x' in n for n in said),
          'a Photon on 1.5.2 is said to run 6.x: %s\n%s' % (said, log[-3000:]))
    handed = [n for n in said if n.startswith('handed-to-dfu')]
    check(handed, 'no hand-over to DFU (the case this test is about): %s' % said)
    check('1.5.2' in handed[0], 'the hand-over does not say what is known: %s' % handed[0])


def test_stalled_transfer_reports_the_acknowledged_bytes_last():
    """The device stops answering at block 3 of 4 (photon tinker, 3952 bytes):
    the last progress event of the writing phase says 2048 bytes, not 0 %."""
    app = sim_fixture(PHOTON_APP)
    steps = [{'bg': 'a', 'flash': [app, '--device', IDS['photon']]}, {'join': 'a'}]
    s = spec('photon', '1.5.2', 'photon', 'listening') + ',faults=silent@block3'
    res, doc, log = run([s], steps)
    end = end_of(res[1])
    check(end['result'] == 'failed' and end['error']['code'] == 'timed-out',
          'expected timed-out: %s' % end)
    writing = [p for p in progress(res[1]) if p.get('state') == 'writing' and 'note' not in p]
    check(writing, 'no writing progress at all')
    last = writing[-1]
    check(last.get('done') == 2048 and last.get('percent') == 51,
          'last writing progress: %s (of %s)' % (last, writing))


TESTS = {name[5:]: fn for name, fn in list(globals().items()) if name.startswith('test_')}

if __name__ == '__main__':
    run_tests(TESTS, list(TESTS) if TEST == 'all' else TEST.split(','))

#!/usr/bin/env python3
"""Device probes (device-info "probe", flashctl info): the real flashd and flashctl
against devices simulated by flashd-sim, checked against the simulator's state.json.

usage: test_probe.py FLASHD_SIM FLASHD FLASHCTL TEST|GROUP
       test_probe.py --inner PLAN.json      (runs inside flashd-sim; see run())

Each test starts one testbed; inside it this script starts `flashd --foreground`
with short serial timeouts and a private lock directory, runs the plan's steps
(flashctl commands, raw protocol exchanges, simulator control commands) and stops
flashd.  The outer half checks the results against state.json.  TAP output.
"""
import json
import os
import re
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from flashd_harness import (SERIAL_TIMEOUTS, Testbed, check, run_testbed, run_tests,  # noqa: E402
                            sim_device, sim_fixture)

TIMEOUT = 150
IDS = {
    'photon15': '3a001d000a47353138383111',
    'argon4': 'e00fce68aabbccddeeff0041',
    'photon22': '3a001d000a47353138383122',
    'boron6': 'e00fce68aabbccddeeff0061',
    'argon401': 'e00fce68aabbccddeeff0401',
    'p2590': '0a10aced202100000000a590',
    'msom6': '0a10aced202100000000b620',
    'p26': '0a10aced202100000000a620',
    'argon6': 'e00fce68aabbccddeeff0620',
}


# --- inner half ------------------------------------------------------------------------

def inner(plan_path):
    tb = Testbed(plan_path, config=SERIAL_TIMEOUTS)

    def flashctl(*args):
        t0 = time.monotonic()
        p = tb.flashctl(*args)
        return {'rc': p.returncode, 'out': p.stdout, 'err': p.stderr,
                'elapsed': time.monotonic() - t0}

    def connect():
        s = socket.socket(socket.AF_UNIX)
        s.connect(tb.sock)
        s.settimeout(60)
        return s, s.makefile('rw')

    def exchange(requests, n_answers):
        """Sends the requests at once; returns every object read until n_answers
        replies/errors came."""
        s, f = connect()
        f.write(''.join(json.dumps(r) + '\n' for r in requests))
        f.flush()
        got, answers = [], 0
        while answers < n_answers:
            line = f.readline()
            if not line:
                break
            o = json.loads(line)
            got.append(o)
            answers += o['type'] in ('reply', 'error')
        s.close()
        return got

    def busy_probe(b):
        """A flash job holds the device; a probe of it meanwhile."""
        s, f = connect()
        f.write(json.dumps({'request': 'subscribe', 'id': 1, 'jobs': True}) + '\n')
        f.flush()
        f.readline()
        fl = tb.flashctl_popen('--json', 'flash', b['file'], '--device', b['device'])
        job = None
        while True:
            o = json.loads(f.readline())
            if o.get('event') == 'job-progress' and o.get('state') == 'writing':
                job = o['job']
                break
        probe = exchange([{'request': 'device-info', 'id': 9, 'device': b['device'],
                           'probe': True}], 1)
        info = flashctl('--json', 'info', b['device'])
        out, _ = fl.communicate(timeout=60)
        s.close()
        return {'job': job, 'probe': probe, 'info': info,
                'flash': [json.loads(l) for l in out.splitlines() if l.startswith('{')]}

    def step(step):
        if 'flashctl' in step:
            return flashctl(*step['flashctl'])
        if 'exchange' in step:
            return {'objects': exchange(step['exchange'], step['answers'])}
        if 'busy_probe' in step:
            return busy_probe(step['busy_probe'])
        raise SystemExit('unknown step %s' % step)

    tb.run(step)


if len(sys.argv) == 3 and sys.argv[1] == '--inner':
    inner(sys.argv[2])
    sys.exit(0)

# --- outer half ------------------------------------------------------------------------

SIM, FLASHD, FLASHCTL, TEST = sys.argv[1:5]
top = tempfile.mkdtemp(prefix='flashd-probe-test.')
fixture = sim_fixture


def spec(platform, os_, mode, name, extra=''):
    s = 'platform=%s,os=%s,mode=%s,name=%s,id=%s' % (platform, os_, mode, name, IDS[name])
    return s + (',' + extra if extra else '')


def run(devices, steps):
    results, doc, _, log = run_testbed(SIM, FLASHD, FLASHCTL, __file__, top, devices, steps,
                                       sim_args=['--time-scale', '0', '--timeout-scale', '0.2'],
                                       timeout=TIMEOUT)
    return results, doc, log


def json_reply(res, log):
    check(res['rc'] == 0, 'flashctl exit %d: %s %s\n%s' % (res['rc'], res['out'], res['err'], log[-3000:]))
    lines = [json.loads(l) for l in res['out'].splitlines() if l.startswith('{')]
    check(len(lines) == 1 and lines[0]['type'] == 'reply', 'output: %s' % res['out'])
    return lines[0]


def key(m):
    return (m['function'], m['index'])


def check_modules_match_sim(reply, simdev, functions):
    """Every module flashd reports is one the simulated device holds, with the same
    version and verdicts; every one of the named functions the device holds is reported."""
    dev = reply['device']
    check(dev['modules_known'], 'modules not known: %s' % dev)
    sim = {key(m): m for m in simdev['modules'] if m['store'] == 'main' and m['reported']}
    got = {key(m): m for m in dev['modules'] if m['store'] == 'main'}
    for k, m in got.items():
        s = sim.get(k)
        check(s, 'flashd reports %s, the device does not hold it: %s' % (k, sorted(sim)))
        check(m['version'] == s['version'] and m['valid'] == s['valid'] and
              sorted(m['failed_checks']) == sorted(s['failed_checks']),
              '%s: flashd %s, device %s' % (k, m, s))
    for k, s in sim.items():
        if s['function'] in functions:
            check(k in got, '%s held by the device, not reported: %s' % (k, sorted(got)))
    return got


def check_rendered(res, modules):
    check(res['rc'] == 0, 'flashctl info exit %d: %s' % (res['rc'], res['err']))
    out = res['out']
    for word in ('integrity', 'range', 'platform', 'dependencies'):
        check(word in out, '%s verdict missing:\n%s' % (word, out))
    check(out.count('valid') >= len(modules), 'not every module rendered:\n%s' % out)


# --- tests ------------------------------------------------------------------------------

def test_info_probes_listening_normal_and_dfu_devices():
    devs = [spec('photon', '1.5.2', 'listening', 'photon15'),
            spec('argon', '4.0.2', 'normal', 'argon4'),
            spec('photon', '2.2.0', 'dfu', 'photon22')]
    steps = []
    for name in ('photon15', 'argon4', 'photon22'):
        steps.append({'flashctl': ['--json', 'info', IDS[name]]})
    steps.append({'ctl': {'cmd': 'wait-idle'}})
    steps.append({'flashctl': ['--json', 'list']})
    for name in ('photon15', 'argon4', 'photon22'):
        steps.append({'flashctl': ['info', IDS[name]]})  # known now: rendered, no probe
    steps.append({'flashctl': ['info', '--no-probe', '--json', IDS['argon4']]})
    res, doc, log = run(devs, steps)
    replies = {}
    for i, (name, funcs) in enumerate((('photon15', ('system', 'user', 'bootloader')),
                                       ('argon4', ('system', 'user', 'bootloader')),
                                       ('photon22', ('system', 'user')))):
        r = json_reply(res[i], log)
        check(r['probe']['outcome'] == 'probed' and r['probe']['job'], 'probe: %s' % r.get('probe'))
        got = check_modules_match_sim(r, sim_device(doc, name), funcs)
        check(len(got) >= 2, '%s: %d modules' % (name, len(got)))
        check(r['device']['id'] == IDS[name], 'id %s' % r['device']['id'])
        replies[name] = r
        print('# %s: %s in %.1f s: %s' % (name, r['device']['mode'], res[i]['elapsed'],
              ', '.join('%s %d v%d %s' % (m['function'], m['index'], m['version'],
                                          'valid' if m['valid'] else m['failed_checks'])
                        for m in r['device']['modules'])))
    check(replies['photon15']['device']['os'] == '1.5.2', 'os %s' % replies['photon15']['device']['os'])
    check(replies['argon4']['device']['os'] == '4.0.2', 'os %s' % replies['argon4']['device']['os'])
    # each device is left as it was found: listening stays listening, the running
    # Argon got `x`, the DFU Photon stays in DFU
    modes = {n: sim_device(doc, n)['mode'] for n in IDS if n in ('photon15', 'argon4', 'photon22')}
    check(modes == {'photon15': 'listening', 'argon4': 'normal', 'photon22': 'dfu'}, 'sim modes %s' % modes)
    listed = {d['id']: d for d in json.loads(res[4]['out'].splitlines()[0])['devices']}
    check(listed[IDS['photon15']]['mode'] == 'listening' and listed[IDS['argon4']]['mode'] == 'normal'
          and listed[IDS['photon22']]['mode'] == 'dfu', 'flashd modes %s' % {k: v['mode'] for k, v in listed.items()})
    for i, name in enumerate(('photon15', 'argon4', 'photon22')):
        check_rendered(res[5 + i], replies[name]['device']['modules'])
        check('asked just now' not in res[5 + i]['out'], 'probed again:\n%s' % res[5 + i]['out'])
    for line in res[6]['out'].splitlines():
        print('#   ' + line)
    plain = json_reply(res[8], log)
    check('probe' not in plain and plain['device']['modules_known'], 'no-probe reply: %s' % plain)


def test_probe_reply_waits_and_later_requests_keep_their_order():
    devs = [spec('photon', '1.5.2', 'normal', 'photon15')]
    steps = [{'exchange': [{'request': 'device-info', 'id': 1, 'device': IDS['photon15'], 'probe': True},
                           {'request': 'list-devices', 'id': 2},
                           {'request': 'device-info', 'id': 3, 'device': 'nosuch', 'probe': True},
                           {'request': 'device-info', 'id': 4, 'device': IDS['photon15'], 'probe': 'yes'}],
              'answers': 4}]
    res, doc, log = run(devs, steps)
    objs = [o for o in res[0]['objects'] if o['type'] in ('reply', 'error')]
    check([o.get('id') for o in objs] == [1, 2, 3, 4], 'order: %s' % objs)
    check(objs[0]['type'] == 'reply' and objs[0]['device']['modules_known'], 'probe: %s' % objs[0])
    check(objs[0]['device']['mode'] == 'normal', 'mode after the probe: %s' % objs[0]['device']['mode'])
    check(objs[1]['devices'][0]['mode'] == 'normal', 'list after the probe: %s' % objs[1])
    check(objs[2]['type'] == 'error' and objs[2]['code'] == 'device-not-found', objs[2])
    check(objs[3]['type'] == 'error' and objs[3]['code'] == 'bad-request' and
          objs[3]['detail'].get('field') == 'probe', objs[3])
    check(sim_device(doc, 'photon15')['mode'] == 'normal', 'sim mode %s' % sim_device(doc, 'photon15')['mode'])


def test_probe_of_a_busy_device_is_device_busy():
    devs = [spec('photon', '1.5.2', 'listening', 'photon15', 'faults=silent@block2')]
    steps = [{'busy_probe': {'device': IDS['photon15'], 'file': fixture('photon/photon_tinker.bin')}}]
    res, doc, log = run(devs, steps)
    r = res[0]
    check(r['job'], 'the flash job never wrote')
    err = r['probe'][0]
    check(err['type'] == 'error' and err['code'] == 'device-busy' and err['id'] == 9, 'probe: %s' % err)
    check(err['detail'].get('job_id') == r['job'], 'detail %s, job %s' % (err['detail'], r['job']))
    # flashctl info does not probe a device whose modules the job has read: it shows them
    check(r['info']['rc'] == 0, 'flashctl info exit %d: %s' % (r['info']['rc'], r['info']['out']))
    line = json.loads(r['info']['out'].splitlines()[0])
    check(line['device']['busy'] and line['device']['job'] == r['job'] and
          line['device']['modules_known'] and 'probe' not in line, 'info: %s' % line)
    ends = [l for l in r['flash'] if l.get('event') == 'job-ended']
    check(ends and ends[0]['error']['code'] == 'timed-out', 'flash: %s' % ends)


def test_device_os_6_without_console_is_probed_by_control_requests():
    # Device OS 6.x has no listening-mode console: the serial probe hears nothing and
    # hands the probe to the control-request transport, which reads id, Device OS, mode
    # and module info without switching the device anywhere.
    devs = [spec('boron', '6.2.0', 'normal', 'boron6')]
    steps = [{'flashctl': ['--json', 'info', IDS['boron6']]}, {'flashctl': ['info', IDS['boron6']]},
             {'flashctl': ['--json', 'list']}]
    res, doc, log = run(devs, steps)
    r = json_reply(res[0], log)
    check(r['probe']['outcome'] == 'probed' and r['device']['mode'] == 'normal' and
          r['device']['os'] == '6.2.0', 'reply: %s' % r)
    sim = sim_device(doc, 'boron6')
    check_modules_match_sim(r, sim, ('system', 'user', 'bootloader'))
    check(sim['mode'] == 'normal' and sim['received']['dfu_bytes'] == 0, 'device switched: %s' % sim)
    check('handed-to-ctrl' in log, 'no hand-over to the control-request transport:\n%s' % log[-2000:])
    check(res[1]['rc'] == 0 and re.search(r'Device OS +6\.2\.0', res[1]['out']), 'rendered:\n%s' % res[1]['out'])
    listed = {d['id']: d for d in json.loads(res[2]['out'].splitlines()[0])['devices']}
    check(listed[IDS['boron6']]['mode'] == 'normal', 'list: %s' % res[2]['out'])


def test_m_som_p2_and_argon_on_6_are_identified_without_the_console():
    # M SoM, P2 and Argon on Device OS 6.x in normal mode: list/info show mode normal,
    # Device OS and modules, read by control requests.  The second probe goes straight
    # to the control-request transport (the registry knows the version by then).
    names = ('msom6', 'p26', 'argon6')
    devs = [spec('msom', '6.2.0', 'normal', 'msom6'), spec('p2', '6.2.0', 'normal', 'p26'),
            spec('argon', '6.2.0', 'normal', 'argon6')]
    steps = [{'flashctl': ['--json', 'info', IDS[n]]} for n in names]
    steps += [{'exchange': [{'request': 'device-info', 'id': 1, 'device': IDS[n], 'probe': True}],
               'answers': 1} for n in names]
    steps.append({'flashctl': ['--json', 'list']})
    steps += [{'flashctl': ['info', IDS[n]]} for n in names]
    res, doc, log = run(devs, steps)
    listed = {d['id']: d for d in json.loads(res[6]['out'].splitlines()[0])['devices']}
    for i, n in enumerate(names):
        again = [o for o in res[3 + i]['objects'] if o['type'] in ('reply', 'error')]
        check(again and again[0]['type'] == 'reply', '%s second probe: %s' % (n, again))
        for r in (json_reply(res[i], log), again[0]):
            check(r['probe']['outcome'] == 'probed' and r['device']['mode'] == 'normal' and
                  r['device']['os'] == '6.2.0', '%s: %s' % (n, r))
            sim = sim_device(doc, n)
            got = check_modules_match_sim(r, sim, ('system', 'user', 'bootloader'))
            check(len(got) >= 3, '%s: %d modules' % (n, len(got)))
            check(sim['mode'] == 'normal' and sim['received']['dfu_bytes'] == 0, '%s switched: %s' % (n, sim))
        check(listed[IDS[n]]['mode'] == 'normal', 'list: %s' % listed[IDS[n]])
        out = res[7 + i]['out']
        check(res[7 + i]['rc'] == 0 and re.search(r'Device OS +6\.2\.0', out) and 'system part 1' in out,
              '%s rendered:\n%s' % (n, out))
        print('# %s: %s' % (n, ', '.join('%s %d v%d' % (m['function'], m['index'], m['version'])
                                          for m in again[0]['device']['modules'])))
    check(log.count('handed-to-ctrl') == 3, 'hand-overs: %d' % log.count('handed-to-ctrl'))


def test_info_names_the_release_of_a_dfu_device_from_its_system_part():
    # In DFU mode nothing but the system part's version says which Device OS is
    # installed: flashd's release table (generated from Device OS's sources) names it.
    devs = [spec('argon', '4.0.1', 'dfu', 'argon401'), spec('p2', '5.9.0', 'dfu', 'p2590')]
    steps = [{'flashctl': ['info', IDS['argon401']]}, {'flashctl': ['info', IDS['p2590']]}]
    res, doc, log = run(devs, steps)
    for r, want, sysv in ((res[0], '4.0.1', 4005), (res[1], '5.9.0', 5901)):
        check(r['rc'] == 0, 'flashctl info exit %d: %s %s\n%s' % (r['rc'], r['out'], r['err'], log[-3000:]))
        check(re.search(r'Device OS +%s\n' % re.escape(want), r['out']) and
              re.search(r'system part 1 +v%d \(Device OS %s\)' % (sysv, re.escape(want)), r['out']),
              'release not named:\n%s' % r['out'])
    check(re.search(r'bootloader 0 +v1101 \(Device OS 4\.0\.0-4\.0\.2\) ', res[0]['out']),
          'bootloader 1101 not listed with its releases:\n%s' % res[0]['out'])


TESTS = {n[5:]: f for n, f in list(globals().items()) if n.startswith('test_')}

if __name__ == '__main__':
    run_tests(TESTS, list(TESTS) if TEST == 'all' else TEST.split(','))

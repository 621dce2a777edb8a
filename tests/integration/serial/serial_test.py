#!/usr/bin/env python3
"""Proof tests of the serial (listening-mode YMODEM) transport, issue 6: the real
flashd and flashctl against CDC devices simulated by flashd-sim, checked against
the simulator's state.json.

usage: serial_test.py FLASHD_SIM FLASHD FLASHCTL TEST
       serial_test.py --inner PLAN.json      (runs inside flashd-sim; see run())

Each test starts one flashd-sim testbed; inside it this script starts
`flashd --foreground` with short serial timeouts (a --config file) and a private
lock directory (FLASHD_LOCK_DIR: every testbed has its own /dev/ttyACM0, so the
shared /run/lock would make parallel tests see each other), waits for the
devices, runs the plan's steps and stops flashd.  The outer half checks the
step results and the simulator's state document.
"""
import ctypes
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

TIMEOUT = 150      # one testbed run
FAULT_BOUND = 15   # seconds a faulted job may take with the timeouts below

# Short per-phase timeouts (daemon/serial/serial_transport.c keys): faults end fast.
CONFIG = """[timeouts]
serial_probe_ms = 1000
serial_listen_ms = 1500
serial_reply_ms = 2000
serial_slow_reply_ms = 3000
serial_prompt_ms = 2000
serial_header_ms = 2000
serial_block_ms = 1500
serial_final_ms = 5000
serial_reenumerate_ms = 8000
"""

# Explicit ids so that plans can name devices before the testbed exists.
IDS = {
    'photon': '3a001d000a47353138383101',
    'photon2': '3a001d000a47353138383102',
    'argon': 'e00fce68aabbccddeeff0001',
    'boron': 'e00fce68aabbccddeeff0002',
}


# --- inner half: runs inside the testbed -------------------------------------------------

def set_comm(name):
    """prctl(PR_SET_NAME): what /proc/PID/comm shows."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(15, name.encode(), 0, 0, 0)


def holder_main(comm, tty, flock_it):
    """A process posing as another program that holds the port."""
    import fcntl
    set_comm(comm)
    if flock_it:
        fd = os.open(tty, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    sys.stdout.write('ready\n')
    sys.stdout.flush()
    signal.pause()


def inner(plan_path):
    plan = json.load(open(plan_path))
    work = plan['work']
    sock = os.path.join(work, 'flashd.sock')
    lock_dir = os.path.join(work, 'lock')
    os.mkdir(lock_dir)
    cfg = os.path.join(work, 'flashd.conf')
    open(cfg, 'w').write(CONFIG)
    log = open(os.path.join(work, 'flashd.log'), 'w')
    env = dict(os.environ, FLASHD_LOCK_DIR=lock_dir)
    flashd = subprocess.Popen([plan['flashd'], '--foreground', '--socket', sock, '--config', cfg,
                               '--state-dir', os.path.join(work, 'flashd-state'),
                               '--log-level', 'debug'], stdout=log, stderr=log, env=env)
    ctl_file = None
    holders = []

    def ctl(**kw):
        nonlocal ctl_file
        if ctl_file is None:
            s = socket.socket(socket.AF_UNIX)
            s.connect(plan['control'])
            ctl_file = s.makefile('rw')
        ctl_file.write(json.dumps(kw) + '\n')
        ctl_file.flush()
        return json.loads(ctl_file.readline())

    def flashctl(*args):
        return subprocess.run([plan['flashctl'], '--socket', sock] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)

    def listing():
        p = flashctl('--json', 'list')
        return json.loads(p.stdout.splitlines()[0])['devices'] if p.returncode == 0 else []

    def start_flash(args):
        return (time.monotonic(), subprocess.Popen(
            [plan['flashctl'], '--socket', sock, '--json', 'flash'] + args,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))

    def finish_flash(started):
        t0, p = started
        out, err = p.communicate(timeout=120)
        lines = [json.loads(l) for l in out.splitlines() if l.startswith('{')]
        return {'rc': p.returncode, 'lines': lines, 'stderr': err,
                'elapsed': time.monotonic() - t0}

    results = []
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            if os.path.exists(sock):
                if len([d for d in listing() if d['present']]) >= plan['n_devices']:
                    break
            time.sleep(0.1)
        else:
            raise SystemExit('flashd did not list %d devices' % plan['n_devices'])
        for step in plan['steps']:
            if 'flash' in step:
                results.append(finish_flash(start_flash(step['flash'])))
            elif 'parallel' in step:
                started = [start_flash(a) for a in step['parallel']]
                results.append({'parallel': [finish_flash(s) for s in started]})
            elif 'ctl' in step:
                results.append(ctl(**step['ctl']))
            elif 'hold' in step:
                # step['hold']: {'device': id, 'comm': name, 'flock': bool, 'lock_file': bool}
                h = step['hold']
                tty = next(d['tty'] for d in listing() if d.get('id') == h['device'])
                p = subprocess.Popen([sys.executable, os.path.abspath(__file__), '--holder',
                                      h['comm'], tty, '1' if h.get('flock') else '0'],
                                     stdout=subprocess.PIPE, text=True)
                p.stdout.readline()
                holders.append(p)
                if h.get('lock_file'):
                    with open(os.path.join(lock_dir, 'LCK..' + os.path.basename(tty)), 'w') as f:
                        f.write('%10d\n' % p.pid)
                results.append({'pid': p.pid, 'tty': tty})
            elif 'release' in step:
                for p in holders:
                    p.kill()
                    p.wait()
                holders.clear()
                for n in os.listdir(lock_dir):
                    os.unlink(os.path.join(lock_dir, n))
                results.append({})
            elif 'list' in step:
                results.append({'devices': listing()})
            elif 'alive' in step:
                p = flashctl('--json', 'list')
                results.append({'rc': p.returncode, 'alive': flashd.poll() is None})
            elif 'sleep' in step:
                time.sleep(step['sleep'])
                results.append({})
            if step.get('settle'):
                ctl(cmd='wait-idle')
    finally:
        for p in holders:
            p.kill()
        flashd.send_signal(signal.SIGTERM)
        try:
            flashd.wait(10)
        except subprocess.TimeoutExpired:
            flashd.kill()
        results.append({'flashd_exit': flashd.returncode})
        json.dump(results, open(os.path.join(work, 'results.json'), 'w'))


if len(sys.argv) == 3 and sys.argv[1] == '--inner':
    inner(sys.argv[2])
    sys.exit(0)
if len(sys.argv) == 5 and sys.argv[1] == '--holder':
    holder_main(sys.argv[2], sys.argv[3], sys.argv[4] == '1')
    sys.exit(0)

# --- outer half ------------------------------------------------------------------------

SIM, FLASHD, FLASHCTL, TEST = sys.argv[1:5]
FIX = os.environ.get('FLASHD_FIXTURES', '/work/shared/fixtures')
top = tempfile.mkdtemp(prefix='flashd-serial-test.')
CATALOGUE = {e['id']: e for e in (json.loads(l) for l in subprocess.run(
    [FLASHCTL, 'errors', '--json'], stdout=subprocess.PIPE, text=True, check=True).stdout.splitlines())}


class Failed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failed(msg)


def fixture(rel):
    path = os.path.join(FIX, 'modules', rel)
    if not os.path.exists(path):
        print('SKIP: fixture %s missing' % path)
        sys.exit(77)
    return path


def run(devices, steps, time_scale='0'):
    """One testbed: returns (step results, state document, flashd log)."""
    work = tempfile.mkdtemp(dir=top)
    sdir = os.path.join(work, 'sim-state')
    os.mkdir(sdir)
    plan = {'work': work, 'flashd': FLASHD, 'flashctl': FLASHCTL, 'steps': steps,
            'control': os.path.join(work, 'sim.sock'), 'n_devices': len(devices)}
    json.dump(plan, open(os.path.join(work, 'plan.json'), 'w'))
    argv = [SIM, '--time-scale', time_scale, '--timeout-scale', '0.2', '--state-dir', sdir,
            '--control', plan['control']]
    for d in devices:
        argv += ['--device', d]
    argv += ['--', sys.executable, os.path.abspath(__file__), '--inner',
             os.path.join(work, 'plan.json')]
    env = dict(os.environ, TMPDIR=work)  # a killed testbed leaves /tmp/umockdev.* behind
    p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=TIMEOUT)
    logpath = os.path.join(work, 'flashd.log')
    log = open(logpath).read() if os.path.exists(logpath) else ''
    check(p.returncode == 0, 'testbed exited %d:\n%s\n%s' % (p.returncode, p.stdout, log[-4000:]))
    results = json.load(open(os.path.join(work, 'results.json')))
    doc = json.load(open(os.path.join(sdir, 'state.json')))
    return results, doc, log


def device(doc, name):
    return [d for d in doc['devices'] if d['name'] == name][0]


def job_end(res):
    ends = [l for l in res['lines'] if l.get('event') == 'job-ended']
    check(len(ends) == 1, 'no job-ended event (rc %d): %s %s' % (res['rc'], res['lines'], res.get('stderr')))
    return ends[0]


def notes(res):
    return [l['note'] for l in res['lines'] if l.get('event') == 'job-progress' and 'note' in l]


def expect_done(res, log, outcome='verified'):
    end = job_end(res)
    check(end['result'] == 'done', 'job failed: %s\n%s' % (json.dumps(end.get('error')), log[-4000:]))
    check(res['rc'] == 0, 'flashctl exit %d' % res['rc'])
    check(end.get('outcome') == outcome, 'outcome %s, expected %s' % (end.get('outcome'), outcome))
    return end


def expect_error(res, code, log, bound=None):
    end = job_end(res)
    err = end.get('error') or {}
    check(end['result'] in ('failed', 'cancelled') and err.get('code') == code,
          'expected %s, got %s %s\n%s' % (code, end['result'], json.dumps(err), log[-4000:]))
    check(code in CATALOGUE, '%s is not in the catalogue' % code)
    check(res['rc'] == CATALOGUE[code]['exit'],
          'flashctl exit %d, catalogue says %d' % (res['rc'], CATALOGUE[code]['exit']))
    check(err.get('message'), 'error without a message')
    if bound is not None:
        check(res['elapsed'] < bound, '%s took %.1f s (bound %d s)' % (code, res['elapsed'], bound))
    return err


def module(dev, function, index=None):
    ms = [m for m in dev['modules'] if m['function'] == function
          and (index is None or m['index'] == index) and m.get('store', 'main') == 'main']
    return ms[0] if ms else None


def make_module(start, function, index, version, platform, deps, payload_len):
    """A valid module file (facts §7.1, §7.5): prefix, payload, 36-byte suffix, CRC-32 (BE)."""
    total = 24 + payload_len + 36 + 4
    d = list(deps) + [(0, 0, 0)] * (2 - len(deps))
    prefix = struct.pack('<IIBBHHBBBBHBBH', start, start + total - 4, 0, 0, version, platform,
                         function, index, d[0][0], d[0][1], d[0][2], d[1][0], d[1][1], d[1][2])
    body = prefix + bytes((i * 13 + 7) & 0xff for i in range(payload_len)) + b'\0\0'
    body += hashlib.sha256(body).digest() + struct.pack('<H', 36)
    return body + struct.pack('>I', zlib.crc32(body) & 0xffffffff)


def spec(platform, os_, name, extra='', mode='listening'):
    key = name if name in IDS else platform
    s = 'platform=%s,os=%s,mode=%s,name=%s,id=%s' % (platform, os_, mode, name, IDS[key])
    return s + (',' + extra if extra else '')


def flash(dev_id, *paths, extra=()):
    return {'flash': list(paths) + ['--device', dev_id] + list(extra)}


# --- tests ------------------------------------------------------------------------------

PHOTON_APP = 'photon/photon_tinker.bin'


def fault_case(fault, code, concurrent=False, mode='listening'):
    """A Photon 1.5.2 with one SPEC fault; a second Photon flashes alongside."""
    devs = [spec('photon', '1.5.2', 'photon', 'faults=' + fault, mode)]
    if concurrent:
        devs.append(spec('photon', '1.5.2', 'photon2'))
        steps = [{'parallel': [flash(IDS['photon'], fixture(PHOTON_APP))['flash'],
                               flash(IDS['photon2'], fixture(PHOTON_APP))['flash']]}]
    else:
        steps = [flash(IDS['photon'], fixture(PHOTON_APP))]
    steps += [{'ctl': {'cmd': 'wait-idle'}}, {'alive': True}]
    res, doc, log = run(devs, steps)
    first = res[0]['parallel'][0] if concurrent else res[0]
    err = expect_error(first, code, log, FAULT_BOUND) if code else expect_done(first, log)
    if concurrent:
        expect_done(res[0]['parallel'][1], log)
        check(module(device(doc, 'photon2'), 'user')['valid'], 'photon2 app not valid')
    check(res[2]['alive'] and res[2]['rc'] == 0, 'flashd stopped serving after the fault')
    return err, res, doc, log


def test_unplug_mid_transfer_is_device_gone():
    err, _, doc, _ = fault_case('unplug@50%', 'device-gone', concurrent=True)
    det = err.get('detail', {})
    check(det.get('phase') == 'data' and det.get('block', 0) >= 1, 'detail: %s' % det)
    check(0 < det.get('bytes_sent', 0) < 3952, 'bytes_sent: %s' % det)


def test_nak_storm_is_transfer_failed():
    err, _, _, _ = fault_case('nak@block3', 'transfer-failed', concurrent=True)
    det = err.get('detail', {})
    check(det.get('block') == 3 and det.get('bytes_sent') == 2048, 'detail: %s' % det)
    check('NAK' in det.get('reason', ''), 'reason: %s' % det)


def test_silence_is_timed_out():
    err, _, _, _ = fault_case('silent@block2', 'timed-out')
    det = err.get('detail', {})
    check(det.get('phase') == 'data' and det.get('block') == 2, 'detail: %s' % det)
    check(det.get('bytes_sent') == 1024 and det.get('timeout_ms') == 1500, 'detail: %s' % det)


def test_reset_mid_transfer_is_device_gone():
    err, _, doc, _ = fault_case('reset@30%', 'device-gone')
    det = err.get('detail', {})
    check(det.get('phase') == 'data' and det.get('bytes_sent', -1) < 3952, 'detail: %s' % det)


def test_stray_application_output_is_skipped():
    _, res, doc, _ = fault_case('stray@:temp=21.5\\r\\n', None)
    check(module(device(doc, 'photon'), 'user')['valid'], 'app not valid')


def test_modemmanager_probe_is_recovered():
    # the probe hit the console before flashd opened the port: the prompt
    # and its answer wait in the tty buffer
    _, res, doc, _ = fault_case('atprobe@', None)
    check(module(device(doc, 'photon'), 'user')['valid'], 'app not valid')


def test_modemmanager_probe_as_listening_starts_is_recovered():
    # a running application: flashd's 28800 starts listening mode and the
    # probe lands right then, next to flashd's `v`
    _, res, doc, _ = fault_case('atprobe@', None, mode='normal')
    check(module(device(doc, 'photon'), 'user')['valid'], 'app not valid')


def test_modemmanager_probe_cut_mid_line_is_closed_with_cr():
    # "AT+C": the claim-code line stays open and would swallow `f` (§11.3)
    _, res, doc, _ = fault_case('atprobe@:AT\\x2bC', None, mode='normal')
    check(module(device(doc, 'photon'), 'user')['valid'], 'app not valid')


def test_held_port_is_device_busy_naming_the_holder():
    devs = [spec('photon', '1.5.2', 'photon'), spec('photon', '1.5.2', 'photon2')]
    steps = [{'hold': {'device': IDS['photon'], 'comm': 'minicom', 'flock': True}},
             {'parallel': [flash(IDS['photon'], fixture(PHOTON_APP))['flash'],
                           flash(IDS['photon2'], fixture(PHOTON_APP))['flash']]},
             {'release': True},
             {'hold': {'device': IDS['photon'], 'comm': 'ModemManager', 'lock_file': True}},
             flash(IDS['photon'], fixture(PHOTON_APP)),
             {'release': True},
             flash(IDS['photon'], fixture(PHOTON_APP))]
    res, doc, log = run(devs, steps)
    minicom = res[0]['pid']
    err = expect_error(res[1]['parallel'][0], 'device-busy', log, FAULT_BOUND)
    det = err['detail']
    check(det.get('holder') == 'minicom' and det.get('holder_pid') == minicom, 'detail: %s' % det)
    check(det.get('port') == res[0]['tty'], 'port: %s' % det)
    check('close your serial monitor' in err.get('hint', ''), 'hint: %s' % err.get('hint'))
    expect_done(res[1]['parallel'][1], log)
    mm = res[3]['pid']
    err = expect_error(res[4], 'device-busy', log, FAULT_BOUND)
    det = err['detail']
    check(det.get('holder') == 'ModemManager' and det.get('holder_pid') == mm, 'detail: %s' % det)
    check('ID_MM_DEVICE_IGNORE' in err.get('hint', ''), 'hint: %s' % err.get('hint'))
    # nothing was sent while the port was held; once released the job goes through
    expect_done(res[6], log)


def test_device_os_2_refusal_is_a_negative_code_with_the_diagnosis():
    res, doc, log = run([spec('photon', '2.2.0', 'photon')],
                        [flash(IDS['photon'], fixture('electron/electron_tinker.bin'), extra=['--force'])])
    err = expect_error(res[0], 'device-rejected', log)
    det = err['detail']
    check(det.get('device_code', 0) < 0, 'device_code: %s' % det)
    check(det.get('cause') in ('wrong-platform', 'wrong-slot'), 'cause: %s' % det)
    check('Electron' in det.get('diagnosis', '') and 'Photon' in det.get('diagnosis', ''),
          'diagnosis: %s' % det)
    check(det.get('bytes_sent') == 5776, 'bytes_sent: %s' % det)
    check(device(doc, 'photon')['received']['ymodem_bytes'] >= 5776, 'the file did not go over')


def test_boron_app_on_argon_4_is_refused_then_forced_to_minus_1360():
    app = fixture('boron/tinker-0.8.0-rc.27-boron.bin')
    res, doc, log = run([spec('argon', '4.0.2', 'argon')],
                        [flash(IDS['argon'], app), {'ctl': {'cmd': 'state'}},
                         flash(IDS['argon'], app, extra=['--force'])])
    err = expect_error(res[0], 'wrong-platform', log)
    det = err['detail']
    check(det.get('image_platform') == 'boron' and det.get('device_platform') == 'argon',
          'detail: %s' % det)
    check('Boron' in err.get('hint', '') and 'Argon' in err.get('hint', ''), 'hint: %s' % err)
    before = [d for d in res[1]['state']['devices'] if d['name'] == 'argon'][0]
    check(before['received']['ymodem_bytes'] == 0, 'bytes reached the device before --force')
    err = expect_error(res[2], 'device-rejected', log)
    det = err['detail']
    check(det.get('device_code') == -1360 and det.get('cause') == 'wrong-platform', 'detail: %s' % det)
    check('Boron' in det.get('diagnosis', '') and 'Argon' in det.get('diagnosis', ''),
          'diagnosis: %s' % det)


def test_dependency_unmet_is_refused_then_a_job_with_the_system_parts_succeeds():
    # an application that needs system part 2 >= 2202 (Device OS 2.2.0), on a Photon 1.5.0
    app = os.path.join(top, 'app-needs-2.2.0.bin')
    open(app, 'wb').write(make_module(0x80A0000, 5, 1, 6, 6, [(4, 2, 2202)], 3000))
    parts = [fixture('photon/photon-system-part2@2.2.0.bin'),
             fixture('photon/photon-bootloader@2.2.0+lto.bin'),
             fixture('photon/photon-system-part1@2.2.0.bin')]
    # files in any order: the job sorts them by what their prefixes say
    res, doc, log = run([spec('photon', '1.5.0', 'photon')],
                        [flash(IDS['photon'], app), {'ctl': {'cmd': 'state'}},
                         flash(IDS['photon'], app, *parts)])
    err = expect_error(res[0], 'dependency-unmet', log)
    det = err['detail']
    check(det.get('required_version') == 2202 and det.get('installed_version') == 1502,
          'detail: %s' % det)
    check('2.2.0' in err['message'] and '1.5.0' in err['message'], 'message: %s' % err['message'])
    before = [d for d in res[1]['state']['devices'] if d['name'] == 'photon'][0]
    check(before['received']['ymodem_bytes'] == 0, 'bytes reached the device before the refusal')
    expect_done(res[2], log)
    dev = device(doc, 'photon')
    for fn, idx, ver in (('bootloader', 0, 1006), ('system', 1, 2202), ('system', 2, 2202),
                         ('user', 1, 6)):
        m = module(dev, fn, idx)
        check(m and m['version'] == ver and m['valid'], '%s %d: %s' % (fn, idx, m))
    pct = [l.get('percent') for l in res[2]['lines'] if l.get('event') == 'job-progress' and 'percent' in l]
    check(pct and pct[-1] == 100, 'progress: %s' % pct)


def test_matching_app_is_verified_and_valid_in_state_json():
    res, doc, log = run([spec('photon', '1.5.2', 'photon')],
                        [flash(IDS['photon'], fixture(PHOTON_APP)), {'list': True}])
    end = expect_done(res[0], log)
    pct = [l.get('percent') for l in res[0]['lines'] if l.get('event') == 'job-progress' and 'percent' in l]
    check(pct and pct[0] == 0 and pct[-1] == 100, 'progress: %s' % pct)
    m = module(device(doc, 'photon'), 'user', 1)
    check(m and m['valid'] and m['failed_checks'] == [] and m['version'] == 2, 'module: %s' % m)
    # the verify's `x` gave the device back to its application: flashd knows it runs normally
    mode = [d for d in res[1]['devices'] if d['id'] == IDS['photon']][0]['mode']
    check(mode == 'normal' and device(doc, 'photon')['mode'] == 'normal',
          'mode after the verified flash: flashd %s, device %s' % (mode, device(doc, 'photon')['mode']))


def test_second_job_reaches_a_port_left_at_28800():
    # The verify of the first job leaves the port at 28800 and the device running
    # (`x`); cdc-acm sends the line coding only when it changes, so the second job
    # must go through another speed to ask for listening mode again (§3).
    res, doc, log = run([spec('photon', '1.5.2', 'photon', mode='normal')],
                        [flash(IDS['photon'], fixture(PHOTON_APP)),
                         flash(IDS['photon'], fixture(PHOTON_APP))])
    for r in res[:2]:
        end = expect_done(r, log)
        check(end['record']['transport'] == 'serial' and 'handed-to-dfu' not in notes(r),
              'transport %s, notes %s' % (end['record']['transport'], notes(r)))
    check(device(doc, 'photon')['received']['dfu_requests'] == 0, 'DFU was used')


def test_failed_transfer_on_gen3_4x_resets_the_device_before_a_retry():
    # §4.5 INFERRED: after a failure past the header a 3.0-5.x Gen 3 device
    # refuses the next `f` until it resets; flashd resets it (14400 -> DFU ->
    # DFU leave), says so, waits for it to run its firmware again and ends
    # with the transfer's error; the retry then goes over serial again.
    # an application for the 256 KiB slot of Device OS >= 3.1 (user part 2 at 0xB4000)
    app = os.path.join(top, 'argon-app-4.x.bin')
    open(app, 'wb').write(make_module(0xB4000, 5, 2, 7, 12, [(4, 1, 3103)], 20000))
    res, doc, log = run([spec('argon', '4.0.2', 'argon', 'faults=nak@block3')],
                        [flash(IDS['argon'], app), {'ctl': {'cmd': 'wait-idle'}},
                         {'ctl': {'cmd': 'state'}}, {'list': True}, flash(IDS['argon'], app)])
    err = expect_error(res[0], 'transfer-failed', log, FAULT_BOUND + 10)
    check(err['detail'].get('block') == 3, 'detail: %s' % err['detail'])
    check(notes(res[0])[-2:] == ['resetting-device', 'device-reset'], 'notes: %s' % notes(res[0]))
    said = [l['message'] for l in res[0]['lines'] if l.get('note') == 'device-reset'][-1]
    check('reset it' in said and 'ready for a retry' in said, 'note: %s' % said)
    states = [l['state'] for l in res[0]['lines'] if l.get('event') == 'job-progress' and 'note' not in l]
    check(states[-2:] == ['switching-mode', 'rebooting'], 'states: %s' % states)
    sim_mode = [d for d in res[2]['state']['devices'] if d['name'] == 'argon'][0]['mode']
    check(sim_mode == 'normal', 'state.json mode after the failure: %s' % sim_mode)
    mode = [d for d in res[3]['devices'] if d['id'] == IDS['argon']][0]['mode']
    check(mode != 'dfu', 'flashd still sees the device in DFU mode')
    end = expect_done(res[4], log)
    check(end['record']['transport'] == 'serial', 'retry transport: %s' % end['record']['transport'])
    m = module(device(doc, 'argon'), 'user', 2)
    check(m and m['valid'] and m['version'] == 7, 'app after the retry: %s' % m)


TESTS = {name[5:]: fn for name, fn in list(globals().items()) if name.startswith('test_')}
GROUPS = {
    'faults': ['unplug_mid_transfer_is_device_gone', 'nak_storm_is_transfer_failed',
               'silence_is_timed_out', 'reset_mid_transfer_is_device_gone',
               'stray_application_output_is_skipped', 'modemmanager_probe_is_recovered',
               'modemmanager_probe_as_listening_starts_is_recovered',
               'modemmanager_probe_cut_mid_line_is_closed_with_cr',
               'held_port_is_device_busy_naming_the_holder'],
}
GROUPS['verdicts'] = [n for n in TESTS if n not in GROUPS['faults']]

if __name__ == '__main__':
    names = (list(TESTS) if TEST == 'all' else GROUPS[TEST] if TEST in GROUPS
             else TEST.split(','))
    failed = 0
    for i, name in enumerate(names, 1):
        t0 = time.monotonic()
        try:
            TESTS[name]()
            print('ok %d - %s (%.1f s)' % (i, name, time.monotonic() - t0), flush=True)
        except Failed as e:
            failed += 1
            print('not ok %d - %s' % (i, name), flush=True)
            for line in str(e).splitlines():
                print('#   ' + line, flush=True)
    print('1..%d' % len(names))
    sys.exit(1 if failed else 0)

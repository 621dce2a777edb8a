#!/usr/bin/env python3
"""Proof tests of the DFU transport (issue 7): the real flashd and flashctl against
DfuSe devices simulated by flashd-sim (umockdev), checked against the simulator's
state.json and flash dumps.

usage: test_dfu.py FLASHD_SIM FLASHD FLASHCTL TEST
       test_dfu.py --inner PLAN.json      (runs inside flashd-sim; see run())

Each test starts one flashd-sim testbed with --time-scale 0; inside it this script
starts `flashd --foreground`, waits for the devices, runs the plan's steps (flashctl
--json flash, dfu-util, simulator control commands) and stops flashd.  The outer half
reads the step results, state.json and the dumps.
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from flashd_harness import (Client, Failed, Testbed, catalogue, check, job_end,  # noqa: E402
                            make_module, REPLUG_SHORT,
                            run_testbed, sim_device, sim_fixture)
from flashd_harness import expect_done as harness_done, expect_error as harness_error  # noqa: E402

TIMEOUT = 120     # one testbed run, generous: every job below ends in well under 30 s
FAULT_BOUND = 20  # seconds a faulted job may take (silent device: 5 s USB timeout)


# --- inner half: runs inside the testbed -------------------------------------------------

def inner(plan_path):
    tb = Testbed(plan_path, config=REPLUG_SHORT, flashctl_timeout=90, record_exit=False)

    def step(step):
        t0 = time.monotonic()
        if 'flash' in step:
            p = tb.flashctl('--json', 'flash', *step['flash'])
            lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith('{')]
            return {'rc': p.returncode, 'lines': lines, 'stderr': p.stderr,
                    'elapsed': time.monotonic() - t0}
        if 'flash_cancel' in step:
            # Cancels the job once it reports progress in the named phase.
            p = tb.flashctl_popen('--json', 'flash', *step['flash_cancel'])
            lines, cancel = [], None
            for l in p.stdout:
                if not l.startswith('{'):
                    continue
                ev = json.loads(l)
                lines.append(ev)
                if (cancel is None and ev.get('event') == 'job-progress'
                        and ev.get('state') == step['phase'] and ev.get('done', 0) > 0):
                    t1 = time.monotonic()
                    cancel = tb.flashctl('cancel', ev['job'])
                    cancel = {'rc': cancel.returncode, 'out': cancel.stdout + cancel.stderr,
                              'at': t1 - t0}
            p.wait(90)
            return {'rc': p.returncode, 'lines': lines, 'cancel': cancel,
                    'elapsed': time.monotonic() - t0}
        if 'flashctl' in step:
            p = tb.flashctl(*step['flashctl'])
            return {'rc': p.returncode, 'out': p.stdout, 'err': p.stderr}
        if 'run' in step:
            p = subprocess.run(step['run'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, timeout=90)
            return {'rc': p.returncode, 'out': p.stdout, 'elapsed': time.monotonic() - t0}
        if 'probe' in step:
            # device-info with "probe": the daemon reads the device again (DFU read-back).
            c = Client(tb.sock, timeout=60)
            r = c.call({'request': 'device-info', 'device': step['probe'], 'probe': True},
                       timeout=60)
            c.close()
            return {'reply': r, 'elapsed': time.monotonic() - t0}
        if 'snapshot' in step:
            # The state directory as it is now, kept under a name.
            r = tb.ctl(cmd='state')
            dst = os.path.join(tb.work, step['snapshot'])
            shutil.copytree(tb.plan['state_dir'], dst)
            return {'ok': r.get('ok'), 'dir': dst}
        raise SystemExit('unknown step %s' % step)

    tb.run(step)


if len(sys.argv) == 3 and sys.argv[1] == '--inner':
    inner(sys.argv[2])
    sys.exit(0)

# --- outer half ------------------------------------------------------------------------

SIM, FLASHD, FLASHCTL, TEST = sys.argv[1:5]
GEN3_COMPAT_PAGE = 0xD4000  # erased by flashd (as particle-cli) and by the Gen 3 bootloader

top = tempfile.mkdtemp(prefix='flashd-dfu-test.')
CATALOGUE = catalogue(FLASHCTL)
device = sim_device


def fail(msg):
    raise Failed(msg)


def fixture(rel):
    return sim_fixture(rel, tap=False)


# Without flashd the testbed only runs the steps' commands (dfu-util listings).
RUN_ONLY = [sys.executable, '-c', 'import json,subprocess,sys\n'
            'r=[subprocess.run(s["run"],stdout=subprocess.PIPE,stderr=subprocess.STDOUT,text=True)'
            ' for s in json.load(open(sys.argv[1]))["steps"]]\n'
            'json.dump([{"rc":p.returncode,"out":p.stdout} for p in r],'
            'open(json.load(open(sys.argv[1]))["work"]+"/results.json","w"))']


def run(devices, steps, flashd=True, time_scale='0'):
    """One testbed: returns (step results, state document, work dir, flashd log)."""
    return run_testbed(SIM, FLASHD, FLASHCTL, __file__, top, devices, steps,
                       sim_args=['--time-scale', time_scale], n_devices=None if flashd else 0,
                       command=None if flashd else RUN_ONLY, timeout=TIMEOUT)


def dump(doc, dev, alt=0, sdir=None):
    for r in dev['regions']:
        if r['alt'] == alt:
            return r['base'], open(os.path.join(sdir or doc['_dir'], r['dump']), 'rb').read()
    fail('no alt %d region' % alt)


def module_at(dev, address):
    return next((m for m in dev['modules'] if m['address'] == address), None)


def prefix_start(data):
    for off in (0, 0x184, 0x200, 0x20):
        start, end = struct.unpack_from('<II', data, off)
        if end > start and end - start + 4 == len(data):
            return start
    fail('no module prefix')


def job_phases(res):
    """States and notes of the job's progress events, in order, without repeats."""
    seq = []
    for l in res['lines']:
        if l.get('event') != 'job-progress':
            continue
        item = 'note:' + l['note'] if 'note' in l else l['state']
        if not seq or seq[-1] != item:
            seq.append(item)
    return seq


def expect_done(res, log, outcome=None):
    return harness_done(res, log, outcome, log_tail=3000)


def expect_error(res, code, log):
    return harness_error(res, code, log, CATALOGUE, log_tail=3000)


def check_flashed(doc, name, path, mode='normal'):
    data = open(path, 'rb').read()
    dev = device(doc, name)
    addr = prefix_start(data)
    base, mem = dump(doc, dev)
    check(mem[addr - base:addr - base + len(data)] == data, '%s: dump differs from %s at 0x%x'
          % (name, os.path.basename(path), addr))
    check(dev['mode'] == mode, '%s: mode %s, expected %s' % (name, dev['mode'], mode))
    m = module_at(dev, addr)
    check(m and m['valid'] and m['failed_checks'] == [], '%s: module at 0x%x: %s' % (name, addr, m))
    return dev, addr, data


# --- tests ------------------------------------------------------------------------------

def ids(devices):
    """Device ids flashd-sim derives from the names (run a listing testbed once)."""
    res, doc, _, _ = run(devices, [], flashd=False)
    return {d['name']: d['device_id'] for d in doc['devices']}


def flash_steps(pairs, settle=True):
    return [{'flash': [path, '--device', dev_id] + list(extra), 'settle': settle}
            for path, dev_id, extra in pairs]


def test_real_user_and_system_parts_flash_byte_identically():
    specs = ['platform=photon,mode=dfu,os=2.2.0,name=p1', 'platform=argon,mode=dfu,os=2.2.0,name=a1']
    idmap = ids(specs)
    app = fixture('photon/tinker-0.4.5-photon.bin')
    sysp = fixture('argon/argon-system-part1@2.2.0.bin')
    res, doc, work, log = run(specs, flash_steps([(app, idmap['p1'], ()),
                                                  (sysp, idmap['a1'], ('--verify',))]))
    # Device OS 2.2.0 comes back as CDC: the core verifies over its console (28800 -> s -> x),
    # a step of the serial transport (handed-to-serial)
    expect_done(res[0], log, 'verified')
    expect_done(res[1], log, 'verified')
    for r in res:
        check(job_phases(r)[-4:] == ['rebooting', 'note:device-reset', 'note:handed-to-serial', 'verifying'],
              'phases %s' % job_phases(r))
    p1, _, data = check_flashed(doc, 'p1', app)
    check(p1['received']['dfu_bytes'] == len(data), 'p1 dfu_bytes %d' % p1['received']['dfu_bytes'])
    a1, _, data = check_flashed(doc, 'a1', sysp)
    check(a1['received']['dfu_bytes'] == len(data), 'a1 dfu_bytes %d' % a1['received']['dfu_bytes'])
    m = module_at(a1, 0x30000)
    check(m['function'] == 'system' and m['version'] == 2202, str(m))
    print('photon user part: %d bytes, %d control requests; argon system part: %d bytes, '
          '%d control requests (with --verify read-back)'
          % (p1['received']['dfu_bytes'], p1['received']['dfu_requests'],
             a1['received']['dfu_bytes'], a1['received']['dfu_requests']))


def test_wrong_platform_image_is_refused_without_writing():
    specs = ['platform=photon,mode=dfu,os=2.2.0,name=p1']
    idmap = ids(specs)
    img = fixture('electron/electron_tinker.bin')
    res, doc, work, log = run(specs, [{'snapshot': 'before'}] +
                              flash_steps([(img, idmap['p1'], ())]))
    err = expect_error(res[1], 'wrong-platform', log)
    dev = device(doc, 'p1')
    check(dev['received']['dfu_bytes'] == 0, 'dfu_bytes %d' % dev['received']['dfu_bytes'])
    check(dev['mode'] == 'dfu', 'mode %s' % dev['mode'])
    for alt in (0, 1):
        _, before = dump(doc, dev, alt, res[0]['dir'])
        _, after = dump(doc, dev, alt)
        check(before == after, 'alt %d dump changed' % alt)
    print('refused: %s' % err['message'])


def test_new_layout_app_on_1_5_argon_is_refused_before_erase():
    # Device OS 1.5.0 on the device: the 1.5.0 system part is no downgrade (from 1.5.2 the
    # planner refuses it: the installed application needs system part 1 >= 1512).
    specs = ['platform=argon,mode=dfu,os=1.5.0,name=a1']
    idmap = ids(specs)
    sys15 = fixture('argon/argon-system-part1@1.5.0.bin')
    # A Device OS 3.1+ application: user part 2 in the 256 KiB slot at 0xB4000, which the
    # 1.5.0 system part (0x30000-0xCAF40) still occupies.
    app = os.path.join(top, 'argon-app-3.1.bin')
    open(app, 'wb').write(make_module(0xB4000, 5, 2, 6, 12, [(4, 1, 3103)], 20000))
    # Back into DFU mode after the system part, so that DFU (not the serial transport) gets
    # the application jobs.
    res, doc, work, log = run(specs, flash_steps([(sys15, idmap['a1'], ())]) +
                              [{'ctl': {'cmd': 'mode', 'name': 'a1', 'mode': 'dfu'}, 'settle': True},
                               {'sleep': 0.5}, {'snapshot': 'before'}] +
                              flash_steps([(app, idmap['a1'], ()), (app, idmap['a1'], ('--force',)),
                                           (app, idmap['a1'], ('--force', '--dry-run'))]))
    expect_done(res[0], log)
    res = [res[0]] + res[3:]
    sysm = module_at(device(doc, 'a1'), 0x30000)
    check(sysm and sysm['version'] == 1502 and sysm['valid'], 'system part: %s' % sysm)
    err = expect_error(res[2], job_end(res[2])['error']['code'], log)
    check(err['code'] in ('dependency-unmet', 'wrong-slot'), 'refused with %s' % json.dumps(err))
    check(job_phases(res[2])[-1] == 'preflight', 'phases %s' % job_phases(res[2]))
    forced = expect_error(res[3], 'wrong-slot', log)
    # --force never bypasses the slot and overlap checks against what UPLOAD found.
    check(forced['detail'].get('device_os', '').startswith('1.5'), 'forced refusal: %s' % json.dumps(forced))
    # a dry run is refused the same way, writing nothing
    dry = expect_error(res[4], 'wrong-slot', log)
    check(dry['message'] == forced['message'], 'dry run: %s' % json.dumps(dry))
    dev = device(doc, 'a1')
    _, before = dump(doc, dev, 0, res[1]['dir'])
    _, after = dump(doc, dev, 0)
    check(before == after, 'flash changed although the job was refused')
    before_state = json.load(open(os.path.join(res[1]['dir'], 'state.json')))
    check(device(before_state, 'a1')['received']['dfu_bytes'] == dev['received']['dfu_bytes'],
          'DFU bytes were written by the refused jobs')
    print('refused: %s / forced: %s' % (err['message'], forced['message']))


def test_listening_and_normal_devices_are_switched_to_dfu_and_back():
    # Device OS 6.x: the job first asks a device it does not know yet by control request;
    # they answer in either mode and say 6.2.0, which has no listening-mode console, so
    # that READ is the job's; the plan asks for DFU mode by request (no 14400-baud
    # switch).  After the reboot the plan's verify step reads module info by control
    # request.
    specs = ['platform=boron,mode=listening,os=6.2.0,name=b1', 'platform=boron,mode=normal,os=6.2.0,name=b2']
    idmap = ids(specs)
    app = os.path.join(top, 'boron-app-6.bin')
    open(app, 'wb').write(make_module(0xB4000, 5, 2, 7, 13, [(4, 1, 6000)], 30000))
    res, doc, work, log = run(specs, flash_steps([(app, idmap['b1'], ()), (app, idmap['b2'], ())]))
    tail = ['note:switching-to-dfu', 'preflight', 'erasing', 'writing', 'rebooting',
            'note:device-reset', 'note:handed-to-ctrl', 'verifying']
    for r, name in ((res[0], 'b1'), (res[1], 'b2')):
        expect_done(r, log, 'verified')
        phases = job_phases(r)
        it = iter(phases)
        check(all(p in it for p in tail) and phases[-1] == 'verifying',
              '%s phases %s' % (name, phases))
        # neither is switched before the plan: b1 listens already, and b2's mode came
        # from its control requests (its silent console was not asked for 28800)
        check(phases[0] == 'preflight' and phases.index('switching-mode') > phases.index(
            'note:handed-to-dfu'), '%s phases %s' % (name, phases))
        how = [l.get('message') for l in r['lines'] if l.get('note') == 'switching-to-dfu']
        check(how and 'control request' in how[0], '%s switched by %s' % (name, how))
        dev, _, _ = check_flashed(doc, name, app)
        check(r['elapsed'] < 60, '%s took %.1f s' % (name, r['elapsed']))
        print('%s (%s): %s in %.1f s' % (name, specs[int(name[1]) - 1].split(',')[1],
                                        ' -> '.join(phases + ['done']), r['elapsed']))


def restamp(path, version):
    """A real module with another version: the prefix's version field, then the SHA-256
    of the suffix (over everything before it) and the CRC-32 (big-endian) recomputed."""
    import hashlib
    import zlib
    data = bytearray(open(path, 'rb').read())
    for off in (0, 0x184, 0x200, 0x20):
        start, end = struct.unpack_from('<II', data, off)
        if end > start and end - start + 4 == len(data):
            break
    else:
        fail('no module prefix in %s' % path)
    struct.pack_into('<H', data, off + 10, version)
    suffix = struct.unpack_from('<H', data, len(data) - 6)[0]
    check(suffix >= 36, 'suffix of %d bytes' % suffix)
    sha_at = len(data) - 4 - 2 - 32
    data[sha_at:sha_at + 32] = hashlib.sha256(bytes(data[:sha_at])).digest()
    struct.pack_into('>I', data, len(data) - 4, zlib.crc32(bytes(data[:-4])) & 0xffffffff)
    return bytes(data)


def steps_of(res):
    return [l.get('step_description') for l in res['lines']
            if l.get('event') == 'job-progress' and l.get('step_description')]


def test_dry_run_on_a_protected_device_in_dfu_mode_makes_the_dfu_checks():
    # Only the DFU transport can tell, from the device in DFU mode, that Device Protection
    # refuses every DFU write (and UPLOAD: the flash layout stays unknown).  A dry run (flashctl check, --dry-run) switches no mode and
    # writes nothing, but on a device already in DFU mode the core runs the DFU
    # transport's own checks as a CHECK step: refused as the real flash is.
    specs = ['platform=argon,mode=dfu,os=6.2.0,protected=1,name=a6']
    idmap = ids(specs)
    app = os.path.join(top, 'argon-app-6-protected.bin')
    open(app, 'wb').write(make_module(0xB4000, 5, 2, 7, 12, [(4, 1, 6000)], 30000))
    res, doc, work, log = run(specs, flash_steps([(app, idmap['a6'], ('--dry-run',)),
                                                  (app, idmap['a6'], ())]))
    # (UPLOAD is refused too, so the layout check may be the first to say no)
    real = expect_error(res[1], job_end(res[1])['error']['code'], log)
    check(real['code'] in ('device-protected', 'layout-unknown'), 'real flash: %s' % json.dumps(real))
    dry = expect_error(res[0], real['code'], log)
    check(dry['message'] == real['message'], 'dry %s / real %s' % (dry['message'], real['message']))
    check(device(doc, 'a6')['received']['dfu_bytes'] == 0, 'DFU bytes written')
    check(device(doc, 'a6')['mode'] == 'dfu', 'mode %s' % device(doc, 'a6')['mode'])
    print('# dry run: %s' % dry['message'])


def test_dry_run_on_a_device_not_in_dfu_mode_checks_the_platforms_memory_map():
    # A dry run switches no mode, so on a running Argon the DFU transport's checks cannot
    # ask the device.  The memory map its bootloader describes is the platform's (the same
    # string on every release): the dry run checks the write ranges against it, refuses the
    # Photon's application (forced past the platform check) with the same words as the
    # real flash does once the device is in DFU mode, and its plan says which checks ran
    # against what.
    specs = ['platform=argon,mode=normal,os=6.2.0,name=a6']
    idmap = ids(specs)
    photon_app = fixture('photon/tinker-0.4.5-photon.bin')
    app = os.path.join(top, 'argon-app-6-dry.bin')
    open(app, 'wb').write(make_module(0xB4000, 5, 2, 7, 12, [(4, 1, 6000)], 30000))
    res, doc, work, log = run(specs, flash_steps([(photon_app, idmap['a6'], ('--force', '--dry-run')),
                                                  (app, idmap['a6'], ('--dry-run',)),
                                                  (photon_app, idmap['a6'], ('--force',))]))
    dry = expect_error(res[0], 'outside-memory-map', log)
    real = expect_error(res[2], 'outside-memory-map', log)
    check(dry['message'] == real['message'], 'dry %s / real %s' % (dry['message'], real['message']))
    plan = (job_end(res[0]).get('record') or {}).get('plan') or {}
    checks = plan.get('checks') or []
    check(len(checks) == 1 and checks[0]['transport'] == 'dfu' and checks[0]['against'] == 'platform'
          and 'memory map' in checks[0]['checked'] and 'Device Protection' in checks[0]['unchecked']
          and checks[0]['files'] == [os.path.basename(photon_app)],
          'dry-run plan checks: %s' % json.dumps(checks))
    expect_done(res[1], log, "preflight-ok")
    plan = (job_end(res[1]).get('record') or {}).get('plan') or {}
    check([c['against'] for c in plan.get('checks') or []] == ['platform'],
          'the Argon application\'s dry run: %s' % json.dumps(plan.get('checks')))
    check(device(doc, 'a6')['received']['dfu_bytes'] == 0, 'DFU bytes written')
    print('# dry run: %s' % dry['message'])
    print('# checks: %s' % json.dumps(plan.get('checks')))


def test_argon_6_app_is_verified_by_module_info_and_boron_app_refused():
    # An Argon on Device OS 6.2.0 runs its application.  flashctl info reads it by control
    # request; the new application then goes: enter-DFU request -> DFU write -> leave ->
    # module info by request after the reboot -> verified.  A Boron application on it is
    # refused before any byte.
    specs = ['platform=argon,mode=normal,os=6.2.0,name=a6']
    idmap = ids(specs)
    app = os.path.join(top, 'argon-app-6.bin')
    open(app, 'wb').write(make_module(0xB4000, 5, 2, 7, 12, [(4, 1, 6000)], 30000))
    boron = os.path.join(top, 'boron-app-6.bin')
    open(boron, 'wb').write(make_module(0xB4000, 5, 2, 7, 13, [(4, 1, 6000)], 30000))
    steps = [{'flashctl': ['--json', 'info', idmap['a6']]},
             {'snapshot': 'before'}] + flash_steps([(boron, idmap['a6'], ()), (app, idmap['a6'], ())])
    res, doc, work, log = run(specs, steps)
    check(res[0]['rc'] == 0 and '"mode": "normal"' in res[0]['out'].replace('":"', '": "'),
          'info: %s %s' % (res[0]['out'][:500], res[0].get('err')))
    err = expect_error(res[2], 'wrong-platform', log)
    before = json.load(open(os.path.join(res[1]['dir'], 'state.json')))
    check(device(before, 'a6')['received']['dfu_bytes'] == 0, 'DFU bytes before the jobs')
    r = res[3]
    end = expect_done(r, log, 'verified')
    phases = job_phases(r)
    check('note:handed-to-dfu' in phases and 'note:handed-to-ctrl' in phases and
          phases[-1] == 'verifying', 'phases %s' % phases)
    verifying = [l.get('step_description', '') for l in r['lines']
                 if l.get('event') == 'job-progress' and l.get('state') == 'verifying']
    check(verifying and all('module info' in d for d in verifying), 'verify step %s' % verifying)
    notes = [l.get('message') for l in r['lines'] if l.get('note') == 'switching-to-dfu']
    check(notes and 'control request' in notes[0], 'switch: %s' % notes)
    dev, _, _ = check_flashed(doc, 'a6', app)
    check(dev['received']['ymodem_bytes'] == 0, 'YMODEM on 6.x')
    plans = [l['plan'] for l in r['lines'] if l.get('event') == 'job-plan']
    kinds = [(s['kind'], s.get('transport'), s.get('how')) for s in plans[0]['steps']]
    check(kinds[0] == ('switch-mode', 'dfu', 'enter-DFU control request') and
          kinds[-1][:2] == ('verify', 'ctrl'), 'plan %s' % kinds)
    print('# refused: %s' % err['message'])
    print('# %s: %s in %.1f s' % (end['outcome'], ' -> '.join(phases), r['elapsed']))


def test_argon_6_forced_app_needing_a_newer_system_is_booted_invalid_by_module_info():
    # --force writes an application that needs system part 1 v6300 onto an Argon running
    # 6.2.0: after the reboot module info says its dependency check failed (the device
    # runs safe mode), and the job ends booted-invalid naming the failed check.
    specs = ['platform=argon,mode=normal,os=6.2.0,name=a6']
    idmap = ids(specs)
    app = os.path.join(top, 'argon-app-needs-6.3.bin')
    open(app, 'wb').write(make_module(0xB4000, 5, 2, 8, 12, [(4, 1, 6300)], 30000))
    steps = [{'flashctl': ['--json', 'info', idmap['a6']]}] + \
        flash_steps([(app, idmap['a6'], ('--force',))])
    res, doc, work, log = run(specs, steps)
    err = expect_error(res[1], 'booted-invalid', log)
    d = err['detail']
    check('dependencies' in d.get('failed_checks', []) and d.get('mode') == 'safe' and
          any(m.get('function') == 'user' for m in d.get('invalid_modules', [])),
          'detail %s' % json.dumps(d))
    check('note:handed-to-ctrl' in job_phases(res[1]), 'phases %s' % job_phases(res[1]))
    print('# booted-invalid: %s' % err['message'])


def test_argon_6_newer_bootloader_goes_by_firmware_update_and_is_verified():
    # No YMODEM on 6.x and DFU does not reach the bootloader: a bootloader of a newer
    # release (a real Argon bootloader re-stamped, CRC and SHA-256 recomputed) is written
    # by the firmware-update control request, and verified by module info after the reset.
    specs = ['platform=argon,mode=normal,os=6.2.0,name=a6']
    idmap = ids(specs)
    bl = os.path.join(top, 'argon-bootloader@6.9.0.bin')
    open(bl, 'wb').write(restamp(fixture('argon/argon-bootloader@2.2.0.bin'), 3200))
    steps = [{'flashctl': ['--json', 'info', idmap['a6']]}] + flash_steps([(bl, idmap['a6'], ())])
    res, doc, work, log = run(specs, steps)
    r = res[1]
    end = expect_done(r, log, 'verified')
    dev = device(doc, 'a6')
    m = [m for m in dev['modules'] if m['function'] == 'bootloader' and m['index'] == 0]
    check(m and m[0]['version'] == 3200 and m[0]['valid'], 'bootloader %s' % m)
    check(dev['received']['dfu_bytes'] == 0 and dev['received']['ymodem_bytes'] == 0,
          'written another way: %s' % dev['received'])
    check(dev['mode'] == 'normal', 'mode %s' % dev['mode'])
    descr = steps_of(r)
    check(any('writing bootloader over control requests' in d for d in descr), 'steps %s' % descr)
    print('# %s: %s in %.1f s' % (end['outcome'], ' -> '.join(job_phases(r)), r['elapsed']))


def ncp_module(version, platform, payload_len=20000):
    """ESP32 NCP firmware as Particle packs it (argon-ncp-firmware-*.bin): prefix at 0, start
    0, module_info_t.reserved = 0x21 (the ESP32 as MCU target), function 7 (NCP), index 0,
    36-byte suffix, SHA-256 and CRC-32 recomputed."""
    import hashlib
    import zlib
    m = bytearray(make_module(0, 7, 0, version, platform, [], payload_len))
    m[8] = 0x21
    n = len(m)
    m[n - 38:n - 6] = hashlib.sha256(bytes(m[:n - 38])).digest()
    struct.pack_into('>I', m, n - 4, zlib.crc32(bytes(m[:n - 4])) & 0xffffffff)
    return bytes(m)


def test_argon_6_ncp_goes_by_firmware_update_and_boron_refuses_it():
    # NCP firmware (the Argon's ESP32, HAL_PLATFORM_NCP_UPDATABLE): written by the
    # firmware-update control request, the ESP32 gets the bytes after the prefix, module info
    # reports the new NCP version after the reset: verified.  On a Boron (no updatable NCP)
    # it is refused before any byte with ncp-not-updatable naming the platform and why.
    specs = ['platform=argon,mode=normal,os=6.2.0,name=a6',
             'platform=boron,mode=normal,os=6.2.0,name=b6']
    idmap = ids(specs)
    ncp = os.path.join(top, 'argon-ncp-firmware@0.0.9.bin')
    data = ncp_module(9, 12)
    open(ncp, 'wb').write(data)
    bncp = os.path.join(top, 'boron-ncp-firmware.bin')
    open(bncp, 'wb').write(ncp_module(9, 13))
    steps = [{'flashctl': ['--json', 'info', idmap['a6']]},
             {'flashctl': ['--json', 'info', idmap['b6']]},
             {'snapshot': 'before'}] + flash_steps([(ncp, idmap['a6'], ()),
                                                     (bncp, idmap['b6'], ())])
    res, doc, work, log = run(specs, steps)
    r = res[3]
    end = expect_done(r, log, 'verified')
    dev = device(doc, 'a6')
    import hashlib
    check(dev.get('ncp', {}).get('version') == 9 and
          dev['ncp']['sha256'] == hashlib.sha256(data[24:len(data) - 4]).hexdigest(),
          'ncp %s' % dev.get('ncp'))
    check(dev['received']['ctrl_update_bytes'] == len(data) and dev['received']['dfu_bytes'] == 0
          and dev['received']['ymodem_bytes'] == 0, 'received %s' % dev['received'])
    descr = steps_of(r)
    check(any('over control requests' in d for d in descr), 'steps %s' % descr)
    err = expect_error(res[4], 'ncp-not-updatable', log)
    d = err['detail']
    check(d.get('platform') == 'boron' and 'Argon' in d.get('reason', '') and
          'Boron' in err['message'], 'detail %s: %s' % (json.dumps(d), err['message']))
    before = json.load(open(os.path.join(res[2]['dir'], 'state.json')))
    bytes_of = lambda dev: {k: v for k, v in dev['received'].items() if k.endswith('_bytes')}
    check(bytes_of(device(doc, 'b6')) == bytes_of(device(before, 'b6')) and
          'ncp' not in device(doc, 'b6'), 'bytes reached the Boron: %s' % device(doc, 'b6')['received'])
    print('# %s: %s in %.1f s' % (end['outcome'], ' -> '.join(job_phases(r)), r['elapsed']))
    print('# refused: %s' % err['message'])


def test_running_p2s_without_a_tty_are_identified_and_flashed_by_control_requests():
    # Two running P2s whose CDC interface has no tty node (flashd-sim tty=0: no cdc_acm
    # binding), Device OS unknown to flashd: flashctl info identifies them by control
    # requests alone (mode, Device OS, modules), and an application goes over DFU (entered by
    # request, no 14400 baud without a tty) and is verified by module info (no console).
    specs = ['platform=p2,mode=normal,os=5.9.0,tty=0,name=p5',
             'platform=p2,mode=normal,os=6.2.0,tty=0,name=p6']
    idmap = ids(['platform=p2,mode=normal,os=5.9.0,name=p5',
                 'platform=p2,mode=normal,os=6.2.0,name=p6'])
    app = fixture('p2/tinker-5.0.0-p2.bin')
    # registry_tty_settle_ms (2 s): then flashd takes them as having no tty
    steps = [{'run': ['sleep', '2.5']},
             {'flashctl': ['--json', 'list']},
             {'flashctl': ['--json', 'info', idmap['p5']]},
             {'flashctl': ['--json', 'info', idmap['p6']]}] + \
        flash_steps([(app, idmap['p5'], ()), (app, idmap['p6'], ())])
    res, doc, work, log = run(specs, steps)
    res = res[1:]
    listing = json.loads(res[0]['out'])
    ttys = {d['key']: d.get('tty') for d in listing.get('devices', [])}
    check(ttys.get(idmap['p5'], 'x') is None and ttys.get(idmap['p6'], 'x') is None,
          'the sim gave them a tty: %s' % ttys)
    for r, os_ in ((res[1], '5.9.0'), (res[2], '6.2.0')):
        info = json.loads(r['out'] or '{}')
        info = info.get('device', info)
        check(r['rc'] == 0 and info.get('mode') == 'normal' and info.get('os') == os_ and
              any(m.get('function') == 'system' for m in info.get('modules', [])),
              'info: %s %s' % (r['out'][:600], r.get('err')))
    for r, name in ((res[3], 'p5'), (res[4], 'p6')):
        phases = job_phases(r)
        end = expect_done(r, log)
        check(end.get('outcome') == 'verified', '%s: outcome %s; phases %s; notes %s\n%s'
              % (name, end.get('outcome'), phases,
                 [(l.get('note'), l.get('message')) for l in r['lines'] if l.get('note')],
                 log[-3000:]))
        check('note:handed-to-dfu' in phases and phases[-1] == 'verifying',
              '%s phases %s' % (name, phases))
        notes = [l.get('message') for l in r['lines'] if l.get('note') == 'switching-to-dfu']
        check(notes and 'control request' in notes[0], '%s switch: %s' % (name, notes))
        verifying = [l.get('step_description', '') for l in r['lines']
                     if l.get('event') == 'job-progress' and l.get('state') == 'verifying']
        check(verifying and all('module info' in d for d in verifying),
              '%s verify step %s' % (name, verifying))
        dev, _, _ = check_flashed(doc, name, app)
        check(dev['received']['ymodem_bytes'] == 0, 'YMODEM without a tty')
        print('# %s: %s: %s in %.1f s' % (name, end['outcome'], ' -> '.join(phases), r['elapsed']))


def test_argon_6_unplug_during_the_firmware_update_is_device_gone():
    # The cable is pulled at the third data chunk of the bootloader update: device-gone
    # naming the file and the request, within bounded time.
    specs = ['platform=argon,mode=normal,os=6.2.0,name=a6,faults=ctrl-unplug@chunk3']
    idmap = ids(['platform=argon,mode=normal,os=6.2.0,name=a6'])
    bl = os.path.join(top, 'argon-bootloader@6.9.0.bin')
    open(bl, 'wb').write(restamp(fixture('argon/argon-bootloader@2.2.0.bin'), 3200))
    steps = [{'flashctl': ['--json', 'info', idmap['a6']]}] + flash_steps([(bl, idmap['a6'], ())])
    res, doc, work, log = run(specs, steps)
    err = expect_error(res[1], 'device-gone', log)
    check(err['detail'].get('file') == os.path.basename(bl), 'detail %s' % json.dumps(err['detail']))
    check(res[1]['elapsed'] < FAULT_BOUND, 'took %.1f s' % res[1]['elapsed'])
    print('# %s after %.1f s: %s' % (err['code'], res[1]['elapsed'], err['message']))


FAULT_KEYS = ('alt', 'address', 'chunk', 'dfu_state', 'dfu_status')


def fault_run(spec, path, faults):
    specs = ['%s,faults=%s,name=d1' % (spec, faults)]
    idmap = ids(['%s,name=d1' % spec])
    res, doc, work, log = run(specs, flash_steps([(path, idmap['d1'], ())]))
    return res[0], device(doc, 'd1'), log


def check_fault(res, code, log, chunk, base):
    err = expect_error(res, code, log)
    d = err.get('detail', {})
    for k in FAULT_KEYS:
        check(k in d, '%s: detail %s missing: %s' % (code, k, json.dumps(err)))
    check(d['chunk'] == chunk and d['address'] == base + chunk * 4096 and d['alt'] == 0,
          'position %s' % json.dumps(d))
    check(res['elapsed'] < FAULT_BOUND, 'took %.1f s' % res['elapsed'])
    check(isinstance(d.get('usb_trace'), list) and d['usb_trace'], 'no flight recorder')
    print('%s after %.2f s: %s (dfu_state %d, dfu_status %d, chunk %d, address 0x%x)'
          % (code, res['elapsed'], err['message'], d['dfu_state'], d['dfu_status'], d['chunk'], d['address']))
    return err


def test_faults_are_catalogue_errors_with_dfu_detail():
    sysp = fixture('argon/argon-system-part1@2.2.0.bin')
    spec = 'platform=argon,mode=dfu,os=2.2.0'
    # The fourth data DNLOAD stalls; GETSTATUS says dfuERROR/errPROG.
    res, dev, log = fault_run(spec, sysp, 'stall@chunk4:errPROG')
    err = check_fault(res, 'transfer-failed', log, 3, 0x30000)
    check(err['detail']['dfu_state'] == 10 and err['detail']['dfu_status'] == 6, json.dumps(err['detail']))
    check(dev['mode'] == 'dfu', 'mode %s' % dev['mode'])
    # dfuERROR/errTARGET on the first chunk (right after its SET_ADDRESS): the device refuses.
    res, dev, log = fault_run(spec, sysp, 'stall@chunk1:errTARGET')
    err = check_fault(res, 'device-rejected', log, 0, 0x30000)
    check(err['detail']['dfu_state'] == 10 and err['detail']['dfu_status'] == 1, json.dumps(err['detail']))
    # Cable pulled half-way.
    res, dev, log = fault_run(spec, sysp, 'unplug@50%')
    err = expect_error(res, 'device-gone', log)
    d = err['detail']
    check(all(k in d for k in FAULT_KEYS) and d['address'] == 0x30000 + d['chunk'] * 4096,
          json.dumps(d))
    check(res['elapsed'] < FAULT_BOUND, 'took %.1f s' % res['elapsed'])
    check(0 < dev['received']['dfu_bytes'] < os.path.getsize(sysp), 'dfu_bytes %d' % dev['received']['dfu_bytes'])
    print('device-gone after %.2f s: %s (chunk %d)' % (res['elapsed'], err['message'], d['chunk']))
    # The device stops answering at the fifth chunk.
    res, dev, log = fault_run(spec, sysp, 'silent@chunk5')
    err = check_fault(res, 'timed-out', log, 4, 0x30000)


def test_dfu_error_status_after_an_accepted_chunk_is_a_catalogue_error():
    # No stall: the device takes the DNLOAD, answers dfuDNBUSY, and the write fails; the
    # next GETSTATUS says dfuERROR with the status (docs/device/dfuse.md#requests-and-states; fault error@chunkN:STATUS).
    sysp = fixture('argon/argon-system-part1@2.2.0.bin')
    spec = 'platform=argon,mode=dfu,os=2.2.0'
    res, dev, log = fault_run(spec, sysp, 'error@chunk3:errWRITE')
    err = check_fault(res, 'transfer-failed', log, 2, 0x30000)
    d = err['detail']
    check(d['dfu_state'] == 10 and d['dfu_status'] == 3 and d.get('dfu_status_name') == 'errWRITE',
          json.dumps(d))
    check('could not write' in err['message'], 'message: %s' % err['message'])
    # chunks 1 and 2 written, the third accepted but not written; the device stays in DFU
    check(dev['mode'] == 'dfu' and dev['received']['dfu_bytes'] == 2 * 4096,
          'device %s %s' % (dev['mode'], dev['received']))
    # errADDRESS on the first chunk (its own SET_ADDRESS): the device refuses the address
    res, dev, log = fault_run(spec, sysp, 'error@chunk1:errADDRESS')
    err = check_fault(res, 'device-rejected', log, 0, 0x30000)
    check(err['detail']['dfu_state'] == 10 and err['detail']['dfu_status'] == 8,
          json.dumps(err['detail']))
    check(dev['received']['dfu_bytes'] == 0, 'dfu_bytes %d' % dev['received']['dfu_bytes'])


def test_refused_block_numbered_chunk_falls_back_to_set_address():
    sysp = fixture('argon/argon-system-part1@2.2.0.bin')
    # errTARGET on the third chunk (block number 4, no SET_ADDRESS of its own).
    res, dev, log = fault_run('platform=argon,mode=dfu,os=2.2.0', sysp, 'stall@chunk3:errTARGET')
    expect_done(res, log)
    check('note:retrying-set-address' in job_phases(res), 'phases %s' % job_phases(res))
    print('fallback: %s; %d control requests' % (' -> '.join(job_phases(res)), dev['received']['dfu_requests']))


def test_cancel_stops_between_erase_units():
    # Real-device flash timings (--time-scale 1): erasing 116 pages takes seconds.
    specs = ['platform=argon,mode=dfu,os=2.2.0,name=a1']
    idmap = ids(specs)
    sysp = fixture('argon/argon-system-part1@2.2.0.bin')
    res, doc, work, log = run(specs, [{'flash_cancel': [sysp, '--device', idmap['a1']],
                                       'phase': 'erasing'}], time_scale='1')
    r = res[0]
    check(r['cancel'] and r['cancel']['rc'] == 0, 'cancel: %s' % r['cancel'])
    end = job_end(r)
    err = end.get('error') or {}
    check(end['result'] == 'cancelled' and err.get('code') == 'cancelled',
          'job ended %s %s\n%s' % (end['result'], json.dumps(err), log[-2000:]))
    d = err.get('detail', {})
    check(d.get('phase') == 'erase' and d.get('alt') == 0 and 0x30000 < d.get('address', 0) < 0x30000 + os.path.getsize(sysp),
          'detail %s' % json.dumps(d))
    check(r['elapsed'] - r['cancel']['at'] < 5, 'cancel took %.1f s' % (r['elapsed'] - r['cancel']['at']))
    # the daemon says what the device holds: system part 1 partly erased, nothing written
    p = (end.get('record') or {}).get('partial') or {}
    check(p.get('state') == 'partly-erased' and p.get('module') == 'system part 1'
          and p.get('start') == 0x30000 and p.get('end') == 0x30000 + os.path.getsize(sysp)
          and ('before the erase unit at 0x%08x' % p.get('address', 0)) in err.get('message', '')
          and p.get('bytes_written') == 0
          and 'DFU mode' in p.get('next_boot', ''), 'partial %s' % json.dumps(p))
    dev = device(doc, 'a1')
    check(dev['received']['dfu_bytes'] == 0 and dev['mode'] == 'dfu', 'device %s %s' % (dev['received'], dev['mode']))
    print('cancelled %.2f s after the request, at 0x%x: %s' % (r['elapsed'] - r['cancel']['at'], d['address'], err['message']))


def test_forced_wrong_platform_system_part_is_booted_invalid_with_failed_checks():
    specs = ['platform=argon,mode=dfu,os=2.2.0,name=a1']
    idmap = ids(specs)
    sysp = fixture('boron/boron-system-part1@2.2.0.bin')
    res, doc, work, log = run(specs, flash_steps([(sysp, idmap['a1'], ('--force',))]))
    err = expect_error(res[0], 'booted-invalid', log)
    check(err['detail'].get('failed_checks') == ['platform'] and err['detail'].get('mode') == 'dfu',
          json.dumps(err))
    dev = device(doc, 'a1')
    m = module_at(dev, 0x30000)
    check(dev['mode'] == 'dfu' and m and 'platform' in m['failed_checks'], 'sim: %s %s' % (dev['mode'], m))
    print('booted-invalid: %s (failed_checks %s; the simulated device says %s)'
          % (err['message'], err['detail']['failed_checks'], m['failed_checks']))


def test_photon_2_2_0_flash_is_verified_over_serial_after_leave():
    specs = ['platform=photon,mode=dfu,os=2.2.0,name=p1']
    idmap = ids(specs)
    app = fixture('photon/tinker-0.4.5-photon.bin')
    res, doc, work, log = run(specs, flash_steps([(app, idmap['p1'], ())]) +
                              [{'flashctl': ['--json', 'info', idmap['p1']]}])
    end = expect_done(res[0], log, 'verified')
    check(job_phases(res[0])[-4:] == ['rebooting', 'note:device-reset', 'note:handed-to-serial', 'verifying'],
          'phases %s' % job_phases(res[0]))
    # the console was left: the device runs its firmware, the module is valid
    dev, addr, _ = check_flashed(doc, 'p1', app, mode='normal')
    # and flashd says so (the verify's `x`), without probing again
    info = json.loads(res[1]['out'].splitlines()[0]) if res[1]['rc'] == 0 else {}
    check(info.get('device', {}).get('mode') == 'normal' and 'probe' not in info,
          'flashctl info after the verified flash: %s %s' % (res[1]['out'], res[1]['err']))
    print('verified over serial after the DFU leave in %.1f s (%s)'
          % (res[0]['elapsed'], ' -> '.join(job_phases(res[0]) + [end['outcome']])))


def test_forced_wrong_platform_user_part_boots_safe_mode_and_is_booted_invalid():
    # A P1 application on a Photon 2.2.0 (same slot, platform check fails, docs/device/validation.md): the
    # device boots safe mode and its `s` names the failing check.
    specs = ['platform=photon,mode=dfu,os=2.2.0,name=p1']
    idmap = ids(specs)
    app = fixture('p1/tinker-0.4.5-p1.bin')
    res, doc, work, log = run(specs, flash_steps([(app, idmap['p1'], ()),
                                                  (app, idmap['p1'], ('--force',))]) +
                              [{'flashctl': ['info', idmap['p1']]}])
    expect_error(res[0], 'wrong-platform', log)
    err = expect_error(res[1], 'booted-invalid', log)
    d = err['detail']
    check(d.get('failed_checks') == ['platform'] and d.get('mode') == 'safe' and
          d.get('module_function') == 'user', json.dumps(err))
    check(job_end(res[1]).get('outcome') == 'booted-invalid', 'outcome %s' % job_end(res[1]).get('outcome'))
    dev = device(doc, 'p1')
    m = module_at(dev, prefix_start(open(app, 'rb').read()))
    check(dev['mode'] == 'safe' and m and m['failed_checks'] == ['platform'],
          'sim: %s %s' % (dev['mode'], m))
    # flashctl info shows what the verify read: the application's platform check failed
    info = res[2]
    check(info['rc'] == 0 and 'platform FAILED' in info['out'] and 'mode           safe' in info['out'],
          'flashctl info:\n%s%s' % (info['out'], info['err']))
    print('booted-invalid: %s (failed_checks %s; the simulated device says %s, mode %s)'
          % (err['message'], d['failed_checks'], m['failed_checks'], dev['mode']))


def user_parts(device_json):
    return [m for m in device_json['modules'] if m['function'] == 'user']


def test_p2_user_part_is_read_back_through_its_suffix():
    # docs/device/memory-maps.md#p2-family: the P2 user part grows downward from 0x08600000, so its start is only known
    # from the DYNAMIC_LOCATION extension of its suffix (docs/device/module-format.md#suffix-and-checksums, docs/device/module-format.md#extensions).
    specs = ['platform=p2,mode=dfu,os=5.9.0,name=p2']
    idmap = ids(specs)
    app = fixture('p2/tinker-5.0.0-p2.bin')
    data = open(app, 'rb').read()
    start = prefix_start(data)
    # The simulator's own (synthetic) user part first; then the real Tinker written by
    # dfu-util without leaving DFU, and a fresh probe.
    res, doc, work, log = run(specs, [
        {'flashctl': ['--json', 'info', idmap['p2']]},
        {'run': ['dfu-util', '-a', '0', '-s', '0x%x' % start, '-D', app]},
        {'probe': idmap['p2']},
        {'flashctl': ['info', '--no-probe', idmap['p2']]}])
    first = json.loads(res[0]['out'].splitlines()[0]) if res[0]['rc'] == 0 else {}
    check(first.get('probe', {}).get('outcome') == 'probed', 'first probe: %s %s\n%s'
          % (res[0]['out'], res[0]['err'], log[-3000:]))
    seeded = user_parts(first['device'])
    check(len(seeded) == 1 and seeded[0]['address'] == 0x08600000 - 4096 and seeded[0]['valid'],
          'synthetic user part: %s' % first['device']['modules'])
    check(res[1]['rc'] == 0, 'dfu-util: %s' % res[1]['out'])
    reply = res[2]['reply']
    check(reply and reply.get('type') == 'reply' and reply['probe']['outcome'] == 'probed',
          'probe: %s\n%s' % (reply, log[-3000:]))
    users = user_parts(reply['device'])
    check(len(users) == 1, 'user parts: %s' % reply['device']['modules'])
    u = users[0]
    check(u['address'] == start == 0x085F4000 and u['index'] == 1 and u['version'] == 6
          and u['store'] == 'main' and u['valid'], 'user part %s' % u)
    # the same module the simulated device would boot
    dev = device(doc, 'p2')
    m = module_at(dev, start)
    check(m and m['function'] == 'user' and m['version'] == u['version'] and m['valid'],
          'sim: %s' % dev['modules'])
    check(dev['mode'] == 'dfu', 'mode %s' % dev['mode'])
    out = res[3]['out']
    check(res[3]['rc'] == 0 and re.search(r'application 1 +v6 .*at 0x085f4000', out),
          'flashctl info:\n%s%s' % (out, res[3]['err']))
    print('P2 5.9.0 in DFU: user part at 0x%x v%d (%d bytes) read back in %.1f s'
          % (u['address'], u['version'], len(data), res[2]['elapsed']))
    for line in out.splitlines():
        print('  ' + line)


def test_dfu_read_back_checks_the_crc_of_small_user_parts():
    # A user part (<= 256 KiB) is read whole and its CRC-32 checked as the device does at
    # boot (docs/device/module-format.md#suffix-and-checksums, docs/device/validation.md INTEGRITY): flashd's verdict is the simulated device's own.
    specs = ['platform=photon,mode=dfu,os=2.2.0,name=p1']
    idmap = ids(specs)
    app = fixture('photon/tinker-0.4.5-photon.bin')
    data = bytearray(open(app, 'rb').read())
    start = prefix_start(data)
    data[len(data) // 2] ^= 0x40
    bad = os.path.join(top, 'tinker-corrupt.bin')
    open(bad, 'wb').write(data)
    res, doc, work, log = run(specs, [
        {'flashctl': ['--json', 'info', idmap['p1']]},
        {'run': ['dfu-util', '-a', '0', '-s', '0x%x' % start, '-D', bad]},
        {'probe': idmap['p1']},
        {'flashctl': ['info', '--no-probe', idmap['p1']]}])
    first = json.loads(res[0]['out'].splitlines()[0]) if res[0]['rc'] == 0 else {}
    check(first.get('probe', {}).get('outcome') == 'probed', 'first probe: %s %s\n%s'
          % (res[0]['out'], res[0]['err'], log[-3000:]))
    seeded = user_parts(first['device'])
    check(len(seeded) == 1 and seeded[0]['valid'] and seeded[0]['failed_checks'] == [],
          'intact user part: %s' % seeded)
    check(res[1]['rc'] == 0, 'dfu-util: %s' % res[1]['out'])
    reply = res[2]['reply']
    check(reply and reply.get('type') == 'reply', 'probe: %s\n%s' % (reply, log[-3000:]))
    users = user_parts(reply['device'])
    check(len(users) == 1 and users[0]['address'] == start and not users[0]['valid']
          and users[0]['failed_checks'] == ['integrity']
          and 'integrity' in users[0]['checked'], 'corrupt user part: %s' % users)
    sim = module_at(device(doc, 'p1'), start)
    check(sim and not sim['valid'] and 'integrity' in sim['failed_checks'],
          'the simulated device judges it: %s' % sim)
    # the system parts keep the prefix-only read: no verdict but what their prefixes say,
    # and their integrity is reported as not checked rather than ok
    for m in reply['device']['modules']:
        if m['function'] == 'system':
            check(m['valid'] and 'integrity' not in m['checked'] and 'platform' in m['checked'],
                  'system part %s' % m)
    out = res[3]['out']
    check(res[3]['rc'] == 0 and re.search(r'application 1 .*INVALID\n +integrity FAILED', out),
          'flashctl info:\n%s%s' % (out, res[3]['err']))
    check(re.search(r'system part 1 .*valid\n +integrity not checked,', out)
          and 'integrity ok' not in out, 'flashctl info: system part integrity:\n%s' % out)
    print('corrupt Photon user part at 0x%x: %s (probe %.1f s)'
          % (start, users[0]['failed_checks'], res[2]['elapsed']))
    for line in out.splitlines()[-6:]:
        print('  ' + line)


def compare(spec, path, alt_addr=None):
    data = open(path, 'rb').read()
    addr = prefix_start(data)
    idmap = ids([spec + ',name=d1'])
    _, by_util, _, _ = run([spec + ',name=d1'], [
        {'run': ['dfu-util', '-a', '0', '-s', '0x%x:leave' % addr, '-D', path]},
        {'run': ['sleep', '1']}], flashd=False)
    res, by_flashd, _, log = run([spec + ',name=d1'], flash_steps([(path, idmap['d1'], ())]))
    expect_done(res[0], log)
    du, df = device(by_util, 'd1'), device(by_flashd, 'd1')
    gen3 = 'platform=argon' in spec or 'platform=boron' in spec
    for r in du['regions']:
        _, a = dump(by_util, du, r['alt'])
        _, b = dump(by_flashd, df, r['alt'])
        check(len(a) == len(b), 'alt %d sizes differ' % r['alt'])
        if r['alt'] == 0 and gen3:
            off = GEN3_COMPAT_PAGE - r['base']
            a = a[:off] + a[off + 4096:]
            b = b[:off] + b[off + 4096:]
        check(a == b, '%s alt %d: dfu-util and flashd dumps differ' % (os.path.basename(path), r['alt']))
    check(du['mode'] == df['mode'] == 'normal', 'modes %s %s' % (du['mode'], df['mode']))
    print('%s: identical dumps; control requests dfu-util %d, flashd %d; bytes %d / %d'
          % (os.path.basename(path), du['received']['dfu_requests'], df['received']['dfu_requests'],
             du['received']['dfu_bytes'], df['received']['dfu_bytes']))


def test_dfu_util_and_flashd_give_identical_dumps():
    compare('platform=photon,mode=dfu,os=2.2.0', fixture('photon/tinker-0.4.5-photon.bin'))
    compare('platform=argon,mode=dfu,os=2.2.0', fixture('argon/argon-system-part1@2.2.0.bin'))
    compare('platform=boron,mode=dfu,os=2.2.0', fixture('boron/boron-system-part1@2.2.0.bin'))


def variant(path, offsets):
    """A real module with bytes changed at the given offsets (inside its body), its
    suffix SHA-256 and CRC-32 recomputed so that the device accepts it
    (docs/device/module-format.md#suffix-and-checksums)."""
    import hashlib
    import zlib
    data = bytearray(open(path, 'rb').read())
    for off in offsets:
        data[off] ^= 0x5a
    sha_at = len(data) - 4 - 2 - 32
    data[sha_at:sha_at + 32] = hashlib.sha256(bytes(data[:sha_at])).digest()
    struct.pack_into('>I', data, len(data) - 4, zlib.crc32(bytes(data[:-4])) & 0xffffffff)
    return bytes(data)


def units_differing(old, new, start, unit_starts):
    """Erase units (sorted start addresses, the last one's end = the image's end) whose
    bytes differ between two images of the same size at start."""
    n = 0
    end = start + len(new)
    for i, u in enumerate(unit_starts):
        ue = unit_starts[i + 1] if i + 1 < len(unit_starts) else end
        a, b = max(u, start) - start, min(ue, end) - start
        if a < b and old[a:b] != new[a:b]:
            n += 1
    return n


def notes(res, name):
    return [l.get('message', '') for l in res['lines']
            if l.get('event') == 'job-progress' and l.get('note') == name]


def received(doc_or_dir, name):
    doc = doc_or_dir if isinstance(doc_or_dir, dict) else \
        json.load(open(os.path.join(doc_or_dir, 'state.json')))
    return device(doc, name)['received']


def test_same_system_part_twice_over_dfu_writes_nothing_the_second_time():
    # issue 11: the second time the planner reads the installed system part's suffix
    # SHA-256 and CRC-32 over DFU UPLOAD (40 bytes at the end its prefix names) and skips
    # it: 0 DFU bytes, a `skipped` note naming the SHA-256, outcome already-installed.
    specs = ['platform=argon,mode=dfu,os=2.2.0,name=a1']
    idmap = ids(specs)
    sysp = fixture('argon/argon-system-part1@2.2.0.bin')
    steps = flash_steps([(sysp, idmap['a1'], ())]) + [
        {'ctl': {'cmd': 'mode', 'name': 'a1', 'mode': 'dfu'}, 'settle': True},
        {'snapshot': 'second'}] + flash_steps([(sysp, idmap['a1'], ())]) + [
        {'ctl': {'cmd': 'mode', 'name': 'a1', 'mode': 'dfu'}, 'settle': True},
        {'snapshot': 'third'}] + flash_steps([(sysp, idmap['a1'], ('--force',))])
    res, doc, work, log = run(specs, steps)
    expect_done(res[0], log, 'verified')
    end = expect_done(res[3], log, 'already-installed')
    # --force writes it anyway, all of it (no read-back diff either)
    expect_done(res[6], log, 'verified')
    forced = received(doc, 'a1')['dfu_bytes'] - received(res[5]['dir'], 'a1')['dfu_bytes']
    check(forced == os.path.getsize(sysp), '--force wrote %d bytes' % forced)
    before, after = received(res[2]['dir'], 'a1'), received(res[5]['dir'], 'a1')
    check(after['dfu_bytes'] == before['dfu_bytes'] and
          after['dfu_erased_bytes'] == before['dfu_erased_bytes'],
          'second flash wrote %d bytes, erased %d' % (after['dfu_bytes'] - before['dfu_bytes'],
                                                      after['dfu_erased_bytes'] - before['dfu_erased_bytes']))
    skipped = notes(res[3], 'skipped')
    check(skipped and 'same SHA-256' in skipped[0] and 'CRC-32' in skipped[0],
          'skipped note: %s' % skipped)
    read = after['dfu_upload_bytes'] - before['dfu_upload_bytes']
    print('# second flash: %s; %d bytes read back, 0 written; %s'
          % (end['outcome'], read, skipped[0]))


def test_same_version_with_other_bytes_is_written_where_it_differs():
    # issue 11: the same version is no proof of the same bytes: a Photon system part 2 of
    # the installed version with one byte changed near its end is written.  issue 18: the
    # Gen 2 memory map erases 128 KiB sectors; only the sector that differs (the last,
    # with the change, the SHA-256 and the CRC) is erased and written.
    specs = ['platform=photon,mode=dfu,os=2.2.0,name=p1']
    idmap = ids(specs)
    real = fixture('photon/photon-system-part2@2.2.0.bin')
    old = open(real, 'rb').read()
    new = variant(real, [len(old) - 0x1000])
    path = os.path.join(top, 'photon-system-part2@2.2.0-variant.bin')
    open(path, 'wb').write(new)
    start = prefix_start(old)
    steps = flash_steps([(real, idmap['p1'], ())]) + [
        {'ctl': {'cmd': 'mode', 'name': 'p1', 'mode': 'dfu'}, 'settle': True},
        {'snapshot': 'second'}] + flash_steps([(path, idmap['p1'], ())])
    res, doc, work, log = run(specs, steps)
    expect_done(res[0], log, 'verified')
    end = expect_done(res[3], log, 'verified')
    check(not notes(res[3], 'skipped'), 'skipped: %s' % notes(res[3], 'skipped'))
    check_flashed(doc, 'p1', path)
    sectors = [s for s in (0x08060000, 0x08080000, 0x080A0000, 0x080C0000)
               if s < start + len(new)]
    want = units_differing(old, new, start, sectors)
    check(want == 1 and len(sectors) == 2, 'the variant differs in %d of %d sectors'
          % (want, len(sectors)))
    before, after = received(res[2]['dir'], 'p1'), received(doc, 'p1')
    wrote = after['dfu_bytes'] - before['dfu_bytes']
    erased = after['dfu_erased_bytes'] - before['dfu_erased_bytes']
    diff = notes(res[3], 'diff')
    check(diff and diff[0].split(': ', 1)[1].startswith('1 of 2 sectors differ'),
          'diff note %s (want %d sectors)' % (diff, want))
    check(erased == want * 0x20000 and wrote < len(new), 'erased %d, wrote %d of %d'
          % (erased, wrote, len(new)))
    print('# %s: %s; %d of %d bytes written' % (end['outcome'], diff[0], wrote, len(new)))


def test_few_pages_changed_image_erases_and_writes_only_those_pages():
    # issue 18: an Argon system part with three bytes changed in three pages in the middle
    # (SHA-256 and CRC recomputed, so the last page differs too): flashd reads the range
    # back, erases and writes only the pages that differ, and the device ends with the new
    # image byte-identical and verified.
    specs = ['platform=argon,mode=dfu,os=2.2.0,name=a1']
    idmap = ids(specs)
    real = fixture('argon/argon-system-part1@2.2.0.bin')
    old = open(real, 'rb').read()
    mid = len(old) // 2
    new = variant(real, [mid, mid + 0x3000, mid + 0x9000])
    path = os.path.join(top, 'argon-system-part1@2.2.0-variant.bin')
    open(path, 'wb').write(new)
    start = prefix_start(old)
    steps = flash_steps([(real, idmap['a1'], ())]) + [
        {'ctl': {'cmd': 'mode', 'name': 'a1', 'mode': 'dfu'}, 'settle': True},
        {'snapshot': 'second'}] + flash_steps([(path, idmap['a1'], ())])
    res, doc, work, log = run(specs, steps)
    expect_done(res[0], log, 'verified')
    end = expect_done(res[3], log, 'verified')
    check_flashed(doc, 'a1', path)
    pages = list(range(start & ~0xfff, start + len(new), 0x1000))
    want = units_differing(old, new, start, pages)
    check(want == 4, 'the variant differs in %d pages' % want)
    before, after = received(res[2]['dir'], 'a1'), received(doc, 'a1')
    wrote = after['dfu_bytes'] - before['dfu_bytes']
    erased = after['dfu_erased_bytes'] - before['dfu_erased_bytes']
    last_page = start + len(new) - ((start + len(new)) & ~0xfff)
    check(erased == want * 4096 and wrote == 3 * 4096 + last_page,
          'erased %d, wrote %d (want %d pages)' % (erased, wrote, want))
    diff = notes(res[3], 'diff')
    check(diff and ('%d of %d pages differ' % (want, len(pages))) in diff[0],
          'diff note %s' % diff)
    print('# %s: %s; dfu bytes %d, erased %d, read back %d'
          % (end['outcome'], diff[0], wrote, erased,
             after['dfu_upload_bytes'] - before['dfu_upload_bytes']))


def test_failure_mid_diff_reports_the_pages_written():
    # issue 18: a write that runs as a diff and fails half-way says what it did: the
    # differing pages are erased first (the module's last page among them, so the device
    # does not take the module as whole), then written in ascending order; the device
    # fails the second page's write (error@chunk2, errWRITE): the job's partial object names the
    # first page written and where it stopped.
    specs = ['platform=argon,mode=dfu,os=2.2.0,name=a1']
    idmap = ids(specs)
    real = fixture('argon/argon-system-part1@2.2.0.bin')
    old = open(real, 'rb').read()
    mid = len(old) // 2
    new = variant(real, [mid, mid + 0x3000, mid + 0x9000])
    path = os.path.join(top, 'argon-system-part1@2.2.0-variant.bin')
    open(path, 'wb').write(new)
    start = prefix_start(old)
    steps = flash_steps([(real, idmap['a1'], ())]) + [
        {'ctl': {'cmd': 'mode', 'name': 'a1', 'mode': 'dfu'}, 'settle': True},
        {'ctl': {'cmd': 'fault', 'name': 'a1', 'faults': 'error@chunk2:errWRITE'}}] + \
        flash_steps([(path, idmap['a1'], ())])
    res, doc, work, log = run(specs, steps)
    expect_done(res[0], log, 'verified')
    r = res[3]
    err = expect_error(r, 'transfer-failed', log)
    end = [l for l in r['lines'] if l.get('event') == 'job-ended'][0]
    part = end.get('partial') or (end.get('record') or {}).get('partial')
    second = (start + mid + 0x3000) & ~0xfff
    check(part and part['state'] == 'partly-written' and part['bytes_written'] == 4096 and
          part['address'] == second and part['module_function'] == 'system',
          'partial %s (error %s)' % (part, err.get('message')))
    phases = job_phases(r)
    check(phases.index('preflight') < phases.index('erasing') < phases.index('writing'),
          'phases %s' % phases)
    print('# %s; partial: %s, %d bytes written, stopped at 0x%x; next boot: %s'
          % (err['code'], part['state'], part['bytes_written'], part['address'],
             part['next_boot']))



def test_write_goes_on_with_the_device_its_read_opened():
    # issue 18: a flash job in DFU mode reads the device (its open: the map and protection
    # strings, SET_INTERFACE, GETSTATUS; the serial number is udev's copy, read by the
    # kernel at enumeration; then the read-back) and its WRITE goes on with the device that
    # READ kept open and claimed: no second open, no second round of strings, SET_INTERFACE
    # and GETSTATUS before the first erase.  A dry run's CHECK does the same.
    specs = ['platform=photon,mode=dfu,os=2.2.0,name=p1', 'platform=photon,mode=dfu,os=2.2.0,name=p2']
    idmap = ids(specs)
    app = fixture('photon/tinker-0.4.5-photon.bin')
    res, doc, work, log = run(specs, flash_steps([(app, idmap['p1'], ())]) +
                              [{'flashctl': ['--json', 'flash', '--dry-run', app, '--device', idmap['p2']]}])
    expect_done(res[0], log, 'verified')
    check(res[1]['rc'] == 0, 'dry run: %s %s\n%s' % (res[1]['out'], res[1]['err'], log[-3000:]))
    n = device(doc, 'p1')['received']['dfu_requests_to_write']
    # 3 strings (alt 0, alt 1, 0xFA), SET_INTERFACE, GETSTATUS; SET_ADDRESS and its two
    # GETSTATUS, ABORT, the UPLOADs of the prefixes and of the small user part, ABORT; the
    # ERASE: 16 (22 with a second open)
    check(0 < n <= 16, 'control requests from plug-in to the first erase: %d\n%s' % (n, log[-3000:]))
    dry = device(doc, 'p2')['received']
    check(dry['dfu_bytes'] == 0 and dry['dfu_requests'] <= n - 1,
          'the dry run sent %d control requests, wrote %d bytes'
          % (dry['dfu_requests'], dry['dfu_bytes']))
    print('# %d control requests from plug-in to the first erase; the dry run: %d'
          % (n, dry['dfu_requests']))


TESTS = {n[5:]: f for n, f in list(globals().items()) if n.startswith('test_')}
if TEST not in TESTS:
    print('unknown test; known: ' + ' '.join(TESTS))
    sys.exit(2)
try:
    TESTS[TEST]()
except Failed as e:
    print('FAIL: %s' % e)
    sys.exit(1)
shutil.rmtree(top, ignore_errors=True)
print('PASS: ' + TEST)

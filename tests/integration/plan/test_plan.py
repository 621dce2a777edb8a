#!/usr/bin/env python3
"""Proof tests of the job plan (issue 11): the real flashd and flashctl against devices
simulated by flashd-sim, checked against the simulator's state.json.

usage: test_plan.py FLASHD_SIM FLASHD FLASHCTL TEST[,TEST...]|all
       test_plan.py --inner PLAN.json      (runs inside flashd-sim)

Every refusal must come before the first byte (state.json: dfu_bytes / ymodem_bytes 0);
every plan that runs must leave the whole device valid (`verified`), else booted-invalid.
The Device OS 4.0.2 Argon modules are synthetic (flashd-sim's release table has no
4.0.x Argon files): the system part lists radio stack >= 202 first and bootloader >= 1101
second, as Argon system parts do (device-os modules/shared/system_module_version.mk).
"""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from flashd_harness import (SERIAL_TIMEOUTS, Testbed, catalogue, check, job_end,  # noqa: E402
                            make_module, run_testbed, run_tests, sim_device, sim_fixture)
from flashd_harness import expect_done as harness_done, expect_error as harness_error  # noqa: E402

TIMEOUT = 240

IDS = {
    'a1': 'e00fce68aabbccddeeff0101',
    'a2': 'e00fce68aabbccddeeff0102',
    'p1': '3a001d000a47353138383201',
}


def inner(plan_path):
    tb = Testbed(plan_path, config=SERIAL_TIMEOUTS, flashctl_timeout=200)

    def step(step):
        t0 = time.monotonic()
        if 'flash' in step:
            p = tb.flashctl('--json', 'flash', *step['flash'])
            lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith('{')]
            return {'rc': p.returncode, 'lines': lines, 'stderr': p.stderr,
                    'elapsed': time.monotonic() - t0}
        if 'flash_replug' in step:
            # the job runs; when it notes device-left, the device is plugged into
            # another port (the replug rule), once
            p = tb.flashctl_popen('--json', 'flash', *step['flash_replug'])
            lines, replugged = [], None
            for line in p.stdout:
                if not line.startswith('{'):
                    continue
                ev = json.loads(line)
                lines.append(ev)
                if ev.get('note') == 'device-left' and replugged is None:
                    replugged = tb.ctl(**step['replug'])
            p.wait(200)
            return {'rc': p.returncode, 'lines': lines, 'replugged': replugged,
                    'elapsed': time.monotonic() - t0}
        if 'flashctl' in step:
            p = tb.flashctl(*step['flashctl'])
            return {'rc': p.returncode, 'out': p.stdout, 'err': p.stderr}
        raise SystemExit('unknown step %s' % step)

    tb.run(step)


if len(sys.argv) == 3 and sys.argv[1] == '--inner':
    inner(sys.argv[2])
    sys.exit(0)

SIM, FLASHD, FLASHCTL, TEST = sys.argv[1:5]
top = tempfile.mkdtemp(prefix='flashd-plan-test.')
CATALOGUE = catalogue(FLASHCTL)
device = sim_device
fixture = sim_fixture


def say(text):
    """Figures and messages for the log, as TAP comments."""
    for line in str(text).splitlines():
        print('# ' + line, flush=True)


def run(devices, steps):
    results, doc, _, log = run_testbed(SIM, FLASHD, FLASHCTL, __file__, top, devices, steps,
                                       sim_args=['--time-scale', '0', '--timeout-scale', '0.2'],
                                       timeout=TIMEOUT)
    return results, doc, log


def spec(platform, os_, name, mode):
    return 'platform=%s,os=%s,mode=%s,name=%s,id=%s' % (platform, os_, mode, name, IDS[name])


def flash(name, *paths, extra=()):
    return {'flash': list(paths) + ['--device', IDS[name]] + list(extra)}


def expect_done(res, log, outcome):
    return harness_done(res, log, outcome, log_tail=4000)


def expect_error(res, code, log):
    return harness_error(res, code, log, CATALOGUE, log_tail=4000)


def module(dev, function, index=None):
    ms = [m for m in dev['modules'] if m['function'] == function
          and (index is None or m['index'] == index) and m.get('store', 'main') == 'main']
    return ms[0] if ms else None


def plan_of(res):
    """The plan the transport ran (the last job-plan event)."""
    plans = [l['plan'] for l in res['lines'] if l.get('event') == 'job-plan']
    return plans[-1] if plans else None


def write_steps(plan):
    return [(s['file'], s['transport']) for s in plan['steps'] if s['kind'] == 'write']


def argon_402():
    sysp = os.path.join(top, 'argon-system-part1@4.0.2.bin')
    blp = os.path.join(top, 'argon-bootloader@4.0.2.bin')
    if not os.path.exists(sysp):
        # 464 KiB, like the real one; Argon: radio stack first, bootloader second
        open(sysp, 'wb').write(make_module(0x30000, 4, 1, 4006, 12, [(8, 0, 202), (2, 0, 1101)],
                                           464 * 1024 - 64))
        open(blp, 'wb').write(make_module(0xF4000, 2, 0, 1101, 12, [], 40000))
    return sysp, blp


def test_argon_system_part_without_its_bootloader_is_refused_before_any_byte():
    sysp, _ = argon_402()
    res, doc, log = run([spec('argon', '2.3.1', 'a1', 'dfu'), spec('argon', '2.3.1', 'a2', 'listening')],
                        [flash('a1', sysp), flash('a2', sysp)])
    for r, name, counter in ((res[0], 'a1', 'dfu_bytes'), (res[1], 'a2', 'ymodem_bytes')):
        err = expect_error(r, 'dependency-unmet', log)
        d = err['detail']
        check(d.get('required_function') == 'bootloader' and d.get('required_version') == 1101 and
              d.get('installed_version') == 1006, '%s: detail %s' % (name, json.dumps(d)))
        check('argon-system-part1@4.0.2.bin needs bootloader \u2265 1101 (Device OS 4.0' in err['message']
              and 'bootloader 1006' in err['message'], '%s: message %s' % (name, err['message']))
        got = device(doc, name)['received'][counter]
        check(got == 0, '%s: %s %d before the refusal' % (name, counter, got))
        say('%s (%s): %s' % (name, device(doc, name)['mode'], err['message']))


def test_argon_in_dfu_mode_gets_bootloader_and_system_part_in_one_job():
    sysp, blp = argon_402()
    res, doc, log = run([spec('argon', '2.3.1', 'a1', 'dfu')], [flash('a1', sysp, blp)])
    end = expect_done(res[0], log, 'verified')
    plan = plan_of(res[0])
    check(plan and write_steps(plan) == [(os.path.basename(blp), 'serial'),
                                         (os.path.basename(sysp), 'serial')],
          'plan %s' % json.dumps(plan))
    notes = [l.get('note') for l in res[0]['lines'] if l.get('event') == 'job-progress' and 'note' in l]
    check('handed-to-serial' in notes, 'notes %s' % notes)
    started = [l for l in res[0]['lines'] if l.get('event') == 'job-started']
    pre = started[0]['record'].get('plan') if started else None
    check(pre and pre.get('preliminary') is True and pre['writes'] == 2,
          'job-started plan %s' % json.dumps(pre))
    steps = sorted({(l['step'], l['steps'], l['step_description']) for l in res[0]['lines']
                    if l.get('event') == 'job-progress' and 'step' in l})
    check(any('writing bootloader over serial' in s[2] for s in steps) and
          any('writing system part 1 over serial' in s[2] for s in steps), 'steps %s' % steps)
    dev = device(doc, 'a1')
    bl, sp = module(dev, 'bootloader'), module(dev, 'system', 1)
    check(bl and bl['version'] == 1101 and bl['valid'], 'bootloader %s' % bl)
    check(sp and sp['version'] == 4006 and sp['valid'], 'system part %s' % sp)
    check(dev['mode'] == 'normal', 'mode %s' % dev['mode'])
    say('%s; steps: %s; %.1f s' % (end['outcome'], '; '.join('%d/%d %s' % s for s in steps),
                                     res[0]['elapsed']))


PHOTON_220 = ['photon/photon-bootloader@2.2.0+lto.bin', 'photon/photon-system-part1@2.2.0.bin',
              'photon/photon-system-part2@2.2.0.bin', 'photon/tinker-0.4.5-photon.bin']


def test_photon_2_2_0_without_its_bootloader_is_refused_then_ordered_and_verified():
    boot, p1, p2, app = [fixture(f) for f in PHOTON_220]
    res, doc, log = run([spec('photon', '1.5.2', 'p1', 'listening')],
                        [flash('p1', p1, p2), {'flashctl': ['--json', 'list']},
                         flash('p1', app, p2, p1, boot), flash('p1', app)])
    err = expect_error(res[0], 'dependency-unmet', log)
    check(err['detail'].get('required_version') == 1003 and
          err['detail'].get('required_function') == 'bootloader', json.dumps(err))
    say('refused: %s' % err['message'])
    # everything in reverse order: ordered by the dependencies, written, whole device verified
    expect_done(res[2], log, 'verified')
    plan = plan_of(res[2])
    names = [os.path.basename(f) for f in (boot, p1, p2, app)]
    check(plan and [w[0] for w in write_steps(plan)] == names, 'order %s' % json.dumps(plan))
    dev = device(doc, 'p1')
    check(module(dev, 'bootloader')['version'] == 1006, 'bootloader %s' % module(dev, 'bootloader'))
    for i in (1, 2):
        m = module(dev, 'system', i)
        check(m['version'] == 2202 and m['valid'], 'system part %d %s' % (i, m))
    check(all(m['valid'] for m in dev['modules'] if m.get('store', 'main') == 'main'),
          'modules %s' % dev['modules'])
    # the same application again: nothing written
    before = dev['received']['ymodem_bytes']
    end = expect_done(res[3], log, 'already-installed')
    skipped = [l for l in res[3]['lines'] if l.get('note') == 'skipped']
    check(skipped and 'tinker-0.4.5-photon.bin' in skipped[0]['message'], 'notes %s' % res[3]['lines'])
    check(res[3]['rc'] == 0, 'exit status %d' % res[3]['rc'])
    say('order %s; then %s (%s); YMODEM bytes in all: %d' % (
        ' -> '.join(names), end['outcome'], skipped[0]['message'], before))


def test_ymodem_bytes_of_a_second_identical_app_are_zero():
    app = fixture('photon/tinker-0.4.5-photon.bin')
    res, doc, log = run([spec('photon', '1.5.2', 'p1', 'listening')],
                        [flash('p1', app)])
    expect_done(res[0], log, 'verified')
    first = device(doc, 'p1')['received']['ymodem_bytes']
    res2, doc2, log2 = run([spec('photon', '1.5.2', 'p1', 'listening')],
                           [flash('p1', app), flash('p1', app)])
    expect_done(res2[1], log2, 'already-installed')
    second = device(doc2, 'p1')['received']['ymodem_bytes']
    check(second == first, 'the second flash wrote %d bytes' % (second - first))


def test_same_app_over_dfu_again_writes_nothing():
    # DFU reads a small user part whole (CRC and SHA-256): the same file is skipped.
    app = fixture('photon/tinker-0.4.5-photon.bin')
    res, doc, log = run([spec('photon', '2.2.0', 'p1', 'dfu')],
                        [flash('p1', app), {'flashctl': ['--json', 'list']}, flash('p1', app)])
    expect_done(res[0], log, 'verified')
    end = expect_done(res[2], log, 'already-installed')
    dev = device(doc, 'p1')
    got = dev['received']['dfu_bytes']
    check(got == os.path.getsize(app), 'DFU bytes %d: the second job wrote' % got)
    check(job_end(res[2])['record']['plan']['writes'] == 0, 'plan %s' % job_end(res[2])['record'].get('plan'))
    say('second DFU job: %s, %d DFU bytes in all (one file)' % (end['outcome'], got))


def test_downgrade_that_breaks_the_application_is_refused_and_forced_is_booted_invalid():
    p2 = fixture('photon/photon-system-part2@1.5.0.bin')
    res, doc, log = run([spec('photon', '1.5.2', 'p1', 'listening')],
                        [flash('p1', p2), {'flashctl': ['--json', 'list']},
                         flash('p1', p2, extra=('--force',))])
    err = expect_error(res[0], 'dependency-unmet', log)
    d = err['detail']
    check('application 1' in err['message'] and 'system part 2 \u2265 1512' in err['message'] and
          d.get('module_function') == 'user', json.dumps(err))
    forced = [l for l in res[2]['lines'] if l.get('note') == 'forced']
    check(forced and 'application 1' in forced[0]['message'], 'no forced note: %s' % res[2]['lines'])
    bad = expect_error(res[2], 'booted-invalid', log)
    inv = bad['detail'].get('invalid_modules', [])
    check(any(m['module'] == 'application 1' and 'dependencies' in m['failed_checks'] for m in inv),
          json.dumps(bad))
    check(job_end(res[2]).get('outcome') == 'booted-invalid', 'outcome %s' % job_end(res[2]).get('outcome'))
    say('refused: %s\nforced: %s' % (err['message'], bad['message']))


def test_plan_across_transports_serial_then_dfu():
    # A Boron on 5.9.0 in listening mode gets the Device OS 6.0.0 bootloader, system part
    # and an application that needs it.  YMODEM writes the bootloader and the system part
    # (Device OS 5.9 runs then); the application needs 6.0.0, which has no YMODEM: the
    # job goes on over DFU, which plans again without the files written already.
    sysp = os.path.join(top, 'boron-system-part1@6.0.0.bin')
    blp = os.path.join(top, 'boron-bootloader@6.0.0.bin')
    app = os.path.join(top, 'boron-app-6.bin')
    open(sysp, 'wb').write(make_module(0x30000, 4, 1, 6000, 13, [(2, 0, 3000), (8, 0, 202)], 300000))
    open(blp, 'wb').write(make_module(0xF4000, 2, 0, 3000, 13, [], 30000))
    open(app, 'wb').write(make_module(0xB4000, 5, 2, 6, 13, [(4, 1, 6000)], 20000))
    IDS['b1'] = 'e00fce68aabbccddeeff0103'
    res, doc, log = run([spec('boron', '5.9.0', 'b1', 'listening')], [flash('b1', app, sysp, blp)])
    end = job_end(res[0])
    plans = [l['plan'] for l in res[0]['lines'] if l.get('event') == 'job-plan']
    check(plans and write_steps(plans[0]) == [(os.path.basename(blp), 'serial'),
                                              (os.path.basename(sysp), 'serial'),
                                              (os.path.basename(app), 'dfu')],
          'first plan %s' % json.dumps(plans[:1]))
    notes = [l.get('note') for l in res[0]['lines'] if 'note' in l]
    check('handed-to-dfu' in notes, 'notes %s\n%s' % (notes, log[-3000:]))
    check(end['result'] == 'done', 'ended %s %s\n%s' % (end['result'], json.dumps(end.get('error')), log[-3000:]))
    dev = device(doc, 'b1')
    m = module(dev, 'user', 2)
    check(m and m['valid'] and module(dev, 'system', 1)['version'] == 6000, 'modules %s' % dev['modules'])
    say('%s: %s; plans: %s' % (end['result'], end['outcome'],
                               ' | '.join(str(write_steps(p)) for p in plans)))


def test_multi_file_plan_resumes_on_another_port_without_rewriting_a_finished_file():
    # An Argon on 2.0.1 in DFU mode gets the 2.2.0 system part and Tinker in one job.
    # After the system part is written and a few chunks of Tinker, the cable is pulled
    # (flashd-sim unplug@chunkN counts DFU data chunks since the device enumerated);
    # the board comes back on another port: the job resumes from Tinker's erase, the
    # system part is not written again (dfu_bytes: each file once, plus Tinker's
    # chunks before the pull), and the whole device ends verified.
    resume_mid_plan('unplug', 'a3', 'e00fce68aabbccddeeff0104')


def test_multi_file_plan_resumes_after_a_reset_without_rewriting_a_finished_file():
    # The same, the board resetting after Tinker's second chunk (same port).
    resume_mid_plan('reset', 'a4', 'e00fce68aabbccddeeff0106')


def resume_mid_plan(fault, name, dev_id):
    sysp = fixture('argon/argon-system-part1@2.2.0.bin')
    app = fixture('argon/tinker-0.8.0-rc.27-argon.bin')
    sys_chunks = (os.path.getsize(sysp) + 4095) // 4096
    pull_at = sys_chunks + 2  # Tinker is 3 chunks: pulled after its second
    IDS[name] = dev_id
    sp = spec('argon', '2.0.1', name, 'dfu') + ',faults=%s@chunk%d' % (fault, pull_at)
    step = {'flash_replug': [app, sysp, '--device', IDS[name]],
            'replug': {'cmd': 'replug', 'name': name, 'port': '1-6'}}
    if fault != 'unplug':
        step['replug'] = {'cmd': 'wait-idle'}  # it comes back by itself
    res, doc, log = run([sp], [step])
    r = res[0]
    end = job_end(r)
    check(r['replugged'] and r['replugged'].get('ok'), 'not replugged: %s' % r['replugged'])
    check(end and end['result'] == 'done' and end.get('outcome') == 'verified',
          'ended %s\n%s' % (json.dumps(end)[:1500], log[-4000:]))
    plans = [[w[0] for w in write_steps(l['plan'])] for l in r['lines']
             if l.get('event') == 'job-plan']
    b_sys, b_app = os.path.basename(sysp), os.path.basename(app)
    check(plans and plans[0] == [b_sys, b_app], 'first plan %s' % plans)
    check(len(plans) >= 2 and all(b_sys not in p for p in plans[1:]),
          'the plans after the pull still write the system part: %s' % plans)
    names = [' -> '.join(p) for p in plans]
    notes = [l.get('note') for l in r['lines'] if l.get('event') == 'job-progress' and l.get('note')]
    check('device-left' in notes and 'device-back' in notes, 'notes %s' % notes)
    dev = device(doc, name)
    got = dev['received']['dfu_bytes'] + dev['received']['ymodem_bytes']
    size_sys, size_app = os.path.getsize(sysp), os.path.getsize(app)
    # Tinker's chunks before the pull reached the device, then Tinker again (by any
    # transport: the board boots normally after the pull; over DFU the resumed write
    # reads back first and writes only the pages that differ, so the chunks that got
    # there before the pull may not go twice); the system part once
    partial = got - size_sys - size_app
    check(0 <= partial < size_app,
          'bytes received %d (DFU %d, YMODEM %d) = system part %d + tinker %d + %d: %s' % (
              got, dev['received']['dfu_bytes'], dev['received']['ymodem_bytes'], size_sys,
              size_app, partial,
              'the finished system part was written again' if partial >= size_sys
              else 'nothing of Tinker before the pull' if partial <= 0 else 'Tinker twice'))
    sm, um = module(dev, 'system', 1), module(dev, 'user')
    check(sm and sm['version'] == 2202 and sm['valid'], 'system part %s' % sm)
    check(um and um['valid'], 'application %s' % um)
    say('plans %s; pulled at chunk %d; bytes received %d (DFU %d, YMODEM %d) = %d + %d + %d '
        '(Tinker before the pull); %s' % (' | '.join(names), pull_at, got,
                                         dev['received']['dfu_bytes'],
                                         dev['received']['ymodem_bytes'], size_sys, size_app,
                                         partial, end['outcome']))


def test_plan_across_transports_resumes_after_a_pull_during_the_dfu_part():
    # The Boron of test_plan_across_transports_serial_then_dfu: bootloader and system
    # part over YMODEM, then the application over DFU.  The cable is pulled after the
    # application's 3rd DFU chunk and the board comes back on another port: the job
    # resumes with the application only (YMODEM bytes: each serial file once).
    sysp = os.path.join(top, 'boron-system-part1@6.0.0.bin')
    blp = os.path.join(top, 'boron-bootloader@6.0.0.bin')
    app = os.path.join(top, 'boron-app-6.bin')
    open(sysp, 'wb').write(make_module(0x30000, 4, 1, 6000, 13, [(2, 0, 3000), (8, 0, 202)], 300000))
    open(blp, 'wb').write(make_module(0xF4000, 2, 0, 3000, 13, [], 30000))
    open(app, 'wb').write(make_module(0xB4000, 5, 2, 6, 13, [(4, 1, 6000)], 20000))
    IDS['b2'] = 'e00fce68aabbccddeeff0105'
    sp = spec('boron', '5.9.0', 'b2', 'listening') + ',faults=unplug@chunk3'
    res, doc, log = run([sp], [{'flash_replug': [app, sysp, blp, '--device', IDS['b2']],
                                'replug': {'cmd': 'replug', 'name': 'b2', 'port': '1-6'}}])
    r = res[0]
    end = job_end(r)
    check(r['replugged'] and r['replugged'].get('ok'), 'not replugged: %s\n%s' % (
        r['replugged'], log[-3000:]))
    check(end and end['result'] == 'done', 'ended %s\n%s' % (json.dumps(end)[:1500], log[-4000:]))
    plans = [[w[0] for w in write_steps(l['plan'])] for l in r['lines']
             if l.get('event') == 'job-plan']
    names = [os.path.basename(f) for f in (blp, sysp, app)]
    check(plans and plans[0] == names, 'first plan %s' % plans)
    check(all(p == [names[2]] for p in plans[1:]) and len(plans) >= 2,
          'after the serial part, only the application may be planned: %s' % plans)
    dev = device(doc, 'b2')
    ym, dfu = dev['received']['ymodem_bytes'], dev['received']['dfu_bytes']
    def ymodem_len(n):  # 1024-byte blocks; a last part of up to 128 bytes goes in a 128-byte one
        full, rest = divmod(n, 1024)
        return full * 1024 + (0 if not rest else 128 if rest <= 128 else 1024)
    padded = sum(ymodem_len(os.path.getsize(f)) for f in (blp, sysp))
    size_app = os.path.getsize(app)
    check(ym == padded, 'YMODEM bytes %d, the serial files once: %d' % (ym, padded))
    # the resumed DFU write reads back first and writes only the pages that differ:
    # the chunks before the pull need not go twice
    check(size_app <= dfu < 2 * size_app, 'DFU bytes %d: the application (%d) once plus at most '
          'the chunks before the pull' % (dfu, size_app))
    m = module(dev, 'user', 2)
    check(m and m['valid'] and module(dev, 'system', 1)['version'] == 6000,
          'modules %s' % dev['modules'])
    say('%s (%s); plans %s; YMODEM %d (the serial files once), DFU %d = %d + %d before the '
        'pull' % (end['result'], end.get('outcome'), ' | '.join(' -> '.join(p) for p in plans),
                  ym, dfu, size_app, dfu - size_app))


def test_a_refused_serial_write_stops_the_job_before_the_next_with_the_devices_reason():
    # Why no `s` between two serial writes (PROTOCOL.md, "The plan"): the device checks each
    # module against what it has installed at the end of its YMODEM transfer and answers
    # with its verdict.  Forced past the planner, a system part 1 that needs a bootloader
    # the Photon (1.5.2) lacks goes first: the device refuses it with its own code, the job
    # ends there, and the system part 2 planned after it (it needs that system part 1 when
    # it is written) is never sent.
    first = os.path.join(top, 'photon-system-part1-v2300.bin')
    open(first, 'wb').write(make_module(0x8020000, 4, 1, 2300, 6, [(2, 0, 2000)], 4000))
    app = os.path.join(top, 'photon-system-part2-v2300.bin')
    open(app, 'wb').write(make_module(0x8060000, 4, 2, 2300, 6, [(4, 1, 2300)], 4000))
    res, doc, log = run([spec('photon', '1.5.2', 'p1', 'listening')],
                        [flash('p1', first, app, extra=('--force',))])
    plan = plan_of(res[0])
    order = write_steps(plan or {'steps': []})
    check(order == [(os.path.basename(first), 'serial'), (os.path.basename(app), 'serial')],
          'plan %s' % json.dumps(plan))
    err = expect_error(res[0], 'device-rejected', log)
    d = err['detail']
    # (1.5.x says the failed checks as a bit mask: 0x4 = dependencies)
    check(d.get('file') == os.path.basename(first) and d.get('phase') == 'validation'
          and d.get('device_code') == 4 and d.get('cause') == 'dependency-unmet'
          and d.get('device_text') == 'Validation failed: 0x4', 'detail %s' % json.dumps(d))
    dev = device(doc, 'p1')
    check(dev['received']['ymodem_bytes'] < os.path.getsize(first) + os.path.getsize(app)
          and module(dev, 'system', 2)['version'] != 2300, 'system part 2 went over: %s %s'
          % (dev['received'], module(dev, 'system', 2)))
    steps = [l.get('step_description') for l in res[0]['lines']
             if l.get('event') == 'job-progress' and l.get('step_description')]
    check(not any('system part 2' in (x or '') for x in steps), 'steps %s' % steps)
    say('refused at the first write (%s, device code %d): %s'
        % (d.get('cause'), d.get('device_code'), err['message']))


def test_check_prints_the_plan():
    sysp, blp = argon_402()
    res, doc, log = run([spec('argon', '2.3.1', 'a1', 'dfu')],
                        [{'flashctl': ['check', sysp, blp, '--device', IDS['a1']]}])
    out = res[0]['out']
    check(res[0]['rc'] == 0 and 'plan:' in out and 'writing bootloader over serial' in out and
          'switching to listening mode' in out, 'check:\n%s%s' % (out, res[0]['err']))
    check(device(doc, 'a1')['received']['dfu_bytes'] == 0, 'check wrote')
    say(out)


TESTS = {name[5:]: fn for name, fn in list(globals().items()) if name.startswith('test_')}

if __name__ == '__main__':
    run_tests(TESTS, list(TESTS) if TEST == 'all' else TEST.split(','))

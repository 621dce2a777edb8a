#!/usr/bin/env python3
"""Proof tests of flashd-sim (issue 3): dfu-util against simulated DFU devices,
boot checks after DFU, hot-plug seen by a libudev monitor, the state.json schema.

usage: test_sim.py FLASHD_SIM UDEV_WATCH TEST
"""
import errno
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import jsonschema

SIM, WATCH, TEST = sys.argv[1], sys.argv[2], sys.argv[3]
SRC = os.environ.get('FLASHD_SOURCE_ROOT', os.path.join(os.path.dirname(__file__), '..', '..'))
FIX = os.environ.get('FLASHD_FIXTURES', os.path.join(SRC, '..', 'shared', 'fixtures'))
SCHEMA = json.load(open(os.path.join(SRC, 'tests', 'sim', 'state.schema.json')))
TIMEOUT = 120
# `meson test --setup valgrind`: the setup's wrapper only reaches this driver; the
# simulator runs under the same valgrind command (FLASHD_VALGRIND, top meson.build).
VALGRIND = shlex.split(os.environ.get('FLASHD_VALGRIND', ''))
if VALGRIND:
    TIMEOUT *= 5

work = tempfile.mkdtemp(prefix='flashd-sim-test.')
env = dict(os.environ, TMPDIR=work)  # a killed testbed leaves /tmp/umockdev.* behind
if VALGRIND:
    # Preloaded already, so flashd-sim does not re-execute itself out of valgrind's reach.
    env['LD_PRELOAD'] = ':'.join(p for p in (env.get('LD_PRELOAD'), 'libumockdev-preload.so.0') if p)


def fail(msg):
    print('FAIL: ' + msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def run_sim(devices, command, state=True, extra=(), timeout=TIMEOUT):
    """Runs flashd-sim; returns (exit status, output, state document or None)."""
    sdir = tempfile.mkdtemp(dir=work)
    vglog = os.path.join(work, 'valgrind-%s.log' % os.path.basename(sdir))
    argv = VALGRIND + ['--log-file=' + vglog] + [SIM] if VALGRIND else [SIM]
    for d in devices:
        argv += ['--device', d]
    if state:
        argv += ['--state-dir', sdir]
    argv += list(extra) + ['--'] + command
    # Output to a file, not a pipe: nothing in the testbed can block on a full pipe,
    # and a hung run still shows what it printed (report_hang).
    with tempfile.TemporaryFile(dir=work) as log:
        group = {'process_group': 0} if sys.version_info >= (3, 11) else {'preexec_fn': os.setpgrp}
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, **group)
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            report_hang(p, log, argv, timeout)
        log.seek(0)
        out = log.read().decode('utf-8', 'replace')
    if VALGRIND and rc == 99:
        fail('valgrind found errors in flashd-sim:\n' + open(vglog).read())
    doc = None
    if state and os.path.exists(os.path.join(sdir, 'state.json')):
        doc = json.load(open(os.path.join(sdir, 'state.json')))
        jsonschema.validate(doc, SCHEMA)  # every state.json the tests produce
        doc['_dir'] = sdir
    return rc, out, doc


HANG_OUTPUT_TAIL = 16384  # bytes of the hung run's output shown


def process_tree(root):
    """root and its descendants (pids, parents first)."""
    children = {}
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            stat = open('/proc/%s/stat' % name).read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(')') + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        tree.append(pid)
        todo += sorted(children.get(pid, []))
    return tree


def describe_process(pid):
    def read(what):
        try:
            return open('/proc/%d/%s' % (pid, what), 'rb').read().decode('utf-8', 'replace')
        except OSError:
            return '?'
    stat = read('stat')
    state = stat[stat.rindex(')') + 2:].split()[0] if ')' in stat else '?'
    text = '--- pid %d state %s wchan %s: %s\n' % (pid, state, read('wchan'),
                                                   read('cmdline').replace('\0', ' ').strip())
    if shutil.which('gdb'):
        try:
            bt = subprocess.run(['gdb', '-batch', '-p', str(pid), '-ex', 'thread apply all bt'],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, timeout=30, text=True, errors='replace').stdout
            text += '\n'.join(l for l in bt.splitlines() if l.startswith(('#', 'Thread'))) + '\n'
        except subprocess.TimeoutExpired:
            text += '(gdb timed out)\n'
    return text


def report_hang(p, log, argv, timeout):
    """A run that did not end: where every process of the testbed waits, what it
    printed so far (the simulator's messages and the tool's, e.g. dfu-util's
    last lines), then the whole process group is killed and the test fails."""
    procs = ''.join(describe_process(pid) for pid in process_tree(p.pid))
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    log.seek(0, os.SEEK_END)
    size = log.tell()
    log.seek(max(0, size - HANG_OUTPUT_TAIL))
    tail = log.read().decode('utf-8', 'replace')
    fail('no exit within %d s: %s\n%s--- output so far (last %d of %d bytes):\n%s'
         % (timeout, shlex.join(argv), procs, len(tail.encode()), size, tail))


def fixture(rel):
    path = os.path.join(FIX, 'modules', rel)
    if not os.path.exists(path):
        print('SKIP: fixture %s missing' % path)
        sys.exit(77)
    return path


def dump(doc, dev, alt=0):
    for r in dev['regions']:
        if r['alt'] == alt:
            return r['base'], open(os.path.join(doc['_dir'], r['dump']), 'rb').read()
    fail('no alt %d region' % alt)


def module_at(dev, address):
    for m in dev['modules']:
        if m['address'] == address:
            return m
    return None


def prefix(path):
    """start address, function, platform of a module file (docs/device/module-format.md#prefix, docs/device/module-format.md#where-the-prefix-is)."""
    b = open(path, 'rb').read()
    for off in (0, 0x184, 0x200, 0x20):
        start, end = int.from_bytes(b[off:off + 4], 'little'), int.from_bytes(b[off + 4:off + 8], 'little')
        if end > start and end - start + 4 == len(b):
            return start, b[off + 14], int.from_bytes(b[off + 12:off + 14], 'little'), b
    fail('no prefix in ' + path)


# --- tests -------------------------------------------------------------------------------

# The exact memory maps of docs/device/dfuse.md#memory-map-strings, per platform and bootloader era.
GEN2 = ['@Internal Flash   /0x08000000/03*016Ka,01*016Kg,01*064Kg,07*128Kg', '@DCT Flash   /0x00000000/01*016Kg']
GEN3 = '@Internal Flash   /0x00000000/1*004Ka,47*004Kg,192*004Kg,4*004Kg,4*004Kg,8*004Ka'
LIST = [
    ('platform=photon,os=2.2.0', 'd006', GEN2),
    ('platform=p1,os=2.2.0', 'd008', GEN2 + ['@Serial Flash   /0x00000000/256*004Kg']),
    ('platform=electron,os=1.5.2', 'd00a', GEN2),
    ('platform=argon,os=5.9.0', 'd00c', [GEN3, '@DCT Flash   /0x00000000/1*016Ke', '@External Flash   /0x80000000/1024*004Kg']),
    ('platform=boron,os=2.2.0', 'd00d', [GEN3, '@DCD Flash   /0x00000000/1*016Ke', '@External Flash   /0x80000000/1024*004Kg']),
    ('platform=b5som,os=1.5.2', 'd019', [GEN3, '@DCD Flash   /0x00000000/1*016Ke', '@External Flash   /0x80000000/1024*008Kg']),
    ('platform=tracker,os=5.9.0', 'd01a', [GEN3, '@DCT Flash   /0x00000000/1*016Ke', '@External Flash   /0x80000000/2048*004Kg']),
    ('platform=bsom,os=4.0.1', 'd017', [GEN3, '@DCD Flash   /0x00000000/1*016Ke', '@External Flash   /0x80000000/1024*004Kg']),
    ('platform=p2,os=5.0.0', 'd020', ['@Internal Flash   /0x08000000/2048*004Kg', '@DCD Flash   /0x00000000/1*016Ke']),
    ('platform=msom,os=5.9.0', 'd023', ['@Internal Flash   /0x08000000/2048*004Kg', '@DCT Flash   /0x00000000/1*016Ke']),
]


def test_dfu_list_matches_real_devices():
    specs = ['%s,mode=dfu,name=n%d' % (s, i) for i, (s, _, _) in enumerate(LIST)]
    rc, out, doc = run_sim(specs, ['dfu-util', '-l'])
    check(rc == 0, 'dfu-util -l failed: %s' % out)
    found = re.findall(r'Found DFU: \[2b04:(d0[0-9a-f]{2})\] ver=(\d+), devnum=\d+, cfg=1, intf=0, '
                       r'path="([^"]+)", alt=(\d), name="([^"]+)", serial="([0-9a-f]{24})"', out)
    for i, (spec, pid, maps) in enumerate(LIST):
        dev = doc['devices'][i]
        rows = {int(alt): (name, serial, ver) for p, ver, path, alt, name, serial in found if p == pid}
        check(len(rows) == len(maps), '%s: %d alts listed, expected %d\n%s' % (spec, len(rows), len(maps), out))
        for alt, want in enumerate(maps):
            name, serial, ver = rows[alt]
            check(name == want, '%s alt %d: %r != %r' % (spec, alt, name, want))
            check(serial == dev['device_id'], '%s: serial %s != id %s' % (spec, serial, dev['device_id']))
            check(ver == ('0250' if pid in ('d006', 'd008', 'd00a') else '0251'), '%s: bcdDevice %s' % (spec, ver))
        prefix_ok = {'d00c': 'e00fce68', 'd00d': 'e00fce68', 'd019': 'e00fce68', 'd01a': 'e00fce68',
                     'd017': 'e00fce68', 'd020': '0a10aced2021', 'd023': '0a10aced2021'}.get(pid, '')
        check(dev['device_id'].startswith(prefix_ok), '%s: id %s lacks the platform prefix' % (spec, dev['device_id']))
        check(dev['mode'] == 'dfu', '%s: mode %s' % (spec, dev['mode']))


def flash_and_check(spec, rel, expect_mode='normal', alt_addr=None):
    path = fixture(rel)
    start, function, platform, data = prefix(path)
    addr = alt_addr if alt_addr is not None else start
    rc, out, doc = run_sim([spec + ',mode=dfu'],
                           ['sh', '-c', 'dfu-util -a 0 -s 0x%x:leave -D %s && udevadm settle 2>/dev/null; '
                            'sleep 0.2' % (addr, path)])
    check(rc == 0, '%s: dfu-util failed (exit %d):\n%s' % (rel, rc, out))
    check('File downloaded successfully' in out, out)
    dev = doc['devices'][0]
    base, mem = dump(doc, dev)
    check(mem[addr - base:addr - base + len(data)] == data, '%s: dump differs from the file at 0x%x' % (rel, addr))
    check(dev['received']['dfu_bytes'] == len(data), 'dfu_bytes %d != %d' % (dev['received']['dfu_bytes'], len(data)))
    check(dev['mode'] == expect_mode, '%s: mode %s, expected %s' % (rel, dev['mode'], expect_mode))
    return dev, addr


def test_dfu_flashes_user_parts_byte_identically():
    for spec, rel in [('platform=photon,os=2.2.0', 'photon/tinker-0.4.5-photon.bin'),
                      ('platform=argon,os=1.5.2', 'argon/tinker-0.8.0-rc.27-argon.bin'),
                      ('platform=p2,os=5.9.0', 'p2/tinker-5.0.0-p2.bin'),
                      ('platform=esomx,os=6.3.4', 'esomx/tinker-6.3.4-esomx.bin')]:
        dev, addr = flash_and_check(spec, rel)
        m = module_at(dev, addr)
        check(m and m['function'] == 'user' and m['valid'] and m['failed_checks'] == [], '%s: %s' % (rel, m))


def test_dfu_flashes_system_parts_byte_identically():
    for spec, rel in [('platform=photon,os=2.2.0', 'photon/photon-system-part1@2.2.0.bin'),
                      ('platform=electron,os=2.2.0', 'electron/electron-system-part1@2.2.0.bin'),
                      ('platform=boron,os=2.2.0', 'boron/boron-system-part1@2.2.0.bin')]:
        dev, addr = flash_and_check(spec, rel)
        m = module_at(dev, addr)
        check(m and m['function'] == 'system' and m['valid'], '%s: %s' % (rel, m))


def test_wrong_platform_image_boots_into_safe_mode():
    # A P1 application on a Photon: same slot, platform check fails (docs/device/validation.md).
    dev, addr = flash_and_check('platform=photon,os=2.2.0', 'p1/tinker-0.4.5-p1.bin', expect_mode='safe')
    m = module_at(dev, addr)
    check(m and not m['valid'] and m['failed_checks'] == ['platform'], str(m))
    # A Boron application on an Argon.
    dev, addr = flash_and_check('platform=argon,os=1.5.2', 'boron/tinker-0.8.0-rc.27-boron.bin', expect_mode='safe')
    m = module_at(dev, addr)
    check(m and 'platform' in m['failed_checks'] and not m['valid'], str(m))


def test_wrong_address_image_keeps_device_in_dfu():
    # An application written over system part 1: the bootloader finds no valid system firmware.
    dev, addr = flash_and_check('platform=photon,os=2.2.0', 'photon/tinker-0.4.5-photon.bin',
                                expect_mode='dfu', alt_addr=0x08020000)
    m = module_at(dev, 0x08020000)
    check(m and m['function'] == 'user' and 'range' in m['failed_checks'], str(m))


def test_impossible_specs_exit_125():
    for spec in ['platform=photon,os=5.9.0', 'platform=p2,os=1.5.2', 'platform=nosuch',
                 'platform=argon,mode=sleepy', 'platform=argon,faults=melt@3']:
        rc, out, _ = run_sim([spec], ['true'], state=False)
        check(rc == 125, '%s: exit %d (%s)' % (spec, rc, out))
    rc, _, _ = run_sim(['platform=argon'], ['sh', '-c', 'exit 7'], state=False)
    check(rc == 7, 'COMMAND status not propagated: %d' % rc)


HOTPLUG_DRIVER = r'''
import json, socket, subprocess, sys, time
sock_path, watch = sys.argv[1], sys.argv[2]
w = subprocess.Popen([watch], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
assert w.stdout.readline().strip() == 'ready'
s = socket.socket(socket.AF_UNIX); s.connect(sock_path); f = s.makefile('rw')
def ctl(**kw):
    f.write(json.dumps(kw) + '\n'); f.flush(); r = json.loads(f.readline()); assert r['ok'], r; return r
ctl(cmd='plug', spec='platform=boron,mode=dfu,os=5.9.0,name=b1,port=1-4')
ctl(cmd='wait-idle')
ctl(cmd='unplug', name='b1')
ctl(cmd='plug', spec='platform=argon,mode=listening,os=5.9.0,name=a1,port=1-5')
ctl(cmd='replug', name='b1', port='1-6')
ctl(cmd='wait-idle')
st = ctl(cmd='state')['state']
time.sleep(0.3)
w.stdin.close()
print(json.dumps({'events': w.stdout.read().splitlines(), 'state': st}))
'''


def test_hotplug_is_seen_by_a_libudev_monitor():
    sock = os.path.join(work, 'ctl.sock')
    drv = os.path.join(work, 'drv.py')
    open(drv, 'w').write(HOTPLUG_DRIVER)
    rc, out, doc = run_sim([], [sys.executable, drv, sock, WATCH], extra=['--control', sock])
    check(rc == 0, 'driver failed:\n' + out)
    res = json.loads(out.strip().splitlines()[-1])
    ev = [e.split() for e in res['events']]
    b1 = [d for d in res['state']['devices'] if d['name'] == 'b1'][0]
    a1 = [d for d in res['state']['devices'] if d['name'] == 'a1'][0]
    usb = [(e[0], e[3], e[4]) for e in ev if e[1] == 'usb']
    want = [('add', b1['device_id'], 'd00d'), ('remove', b1['device_id'], 'd00d'),
            ('add', a1['device_id'], 'c00c'), ('add', b1['device_id'], 'd00d')]
    check(usb == want, 'usb events %s != %s' % (usb, want))
    check(any(e[0] == 'add' and e[1] == 'tty' and e[5] == '/dev/ttyACM0' and e[3] == a1['device_id'] for e in ev),
          'no tty add for a1: %s' % res['events'])
    check(b1['port'] == '1-6' and b1['mode'] == 'dfu', 'replug: %s' % b1)
    jsonschema.validate(res['state'], SCHEMA)
    check(doc['devices'][0]['device_id'] == b1['device_id'], 'replug changed the id')


MAGIC_DRIVER = r'''
import array, fcntl, os, struct, subprocess, sys, time
watch = sys.argv[1]
w = subprocess.Popen([watch], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
assert w.stdout.readline().strip() == 'ready'
TCGETS2, TCSETS2, BOTHER, CBAUD = 0x802C542A, 0x402C542B, 0x1000, 0x100F
def set_baud(fd, baud):
    buf = bytearray(44); fcntl.ioctl(fd, TCGETS2, buf)
    iflag, oflag, cflag, lflag = struct.unpack_from('4I', buf)
    struct.pack_into('4I', buf, 0, iflag, oflag, (cflag & ~CBAUD) | BOTHER, lflag)
    struct.pack_into('2I', buf, 36, baud, baud); fcntl.ioctl(fd, TCSETS2, buf)
fd = os.open('/dev/ttyACM0', os.O_RDWR | os.O_NOCTTY)
set_baud(fd, 14400)
os.close(fd)
time.sleep(1.0)
w.stdin.close()
print('\n'.join(w.stdout.read().splitlines()))
'''


def test_14400_baud_reenumerates_as_dfu_with_the_same_id():
    drv = os.path.join(work, 'magic.py')
    open(drv, 'w').write(MAGIC_DRIVER)
    rc, out, doc = run_sim(['platform=argon,mode=normal,os=5.9.0'], [sys.executable, drv, WATCH])
    check(rc == 0, 'driver failed:\n' + out)
    dev = doc['devices'][0]
    usb = [l.split() for l in out.splitlines() if ' usb ' in l]
    want = [['remove', 'usb', 'usb_device', dev['device_id'], 'c00c'], ['add', 'usb', 'usb_device', dev['device_id'], 'd00c']]
    check([u[:5] for u in usb] == want, 'events: %s' % out)
    check(dev['mode'] == 'dfu', 'mode %s' % dev['mode'])


def test_dfu_upload_reads_memory_and_protection_refuses_it():
    out_file = os.path.join(work, 'upload.bin')
    rc, out, doc = run_sim(['platform=argon,mode=dfu,os=6.2.0'],
                           ['dfu-util', '-a', '0', '-s', '0xf4000:8192', '-U', out_file])
    check(rc == 0, 'upload failed:\n' + out)
    base, mem = dump(doc, doc['devices'][0])
    check(open(out_file, 'rb').read() == mem[0xf4000 - base:0xf4000 - base + 8192], 'upload != memory')
    os.unlink(out_file)
    rc, out, doc = run_sim(['platform=argon,mode=dfu,os=6.2.0,protected=1'],
                           ['sh', '-c', 'dfu-util -l; dfu-util -a 0 -s 0xf4000:4096 -U %s' % out_file])
    check(rc != 0, 'a protected device allowed UPLOAD:\n' + out)
    check('1*004Kb,47*004Kb,192*004Kb,4*004Kb,4*004Kb,8*004Kb' in out, 'protected map not b-only:\n' + out)


def test_dfu_stall_fault_fails_the_download():
    path = fixture('esomx/tinker-6.3.4-esomx.bin')
    rc, out, doc = run_sim(['platform=esomx,mode=dfu,os=6.3.4,faults=stall@chunk2:errTARGET'],
                           ['dfu-util', '-a', '0', '-s', '0xb4000:leave', '-D', path])
    check(rc != 0 and 'LIBUSB_ERROR_PIPE' in out, 'stall fault not seen:\n' + out)
    dev = doc['devices'][0]
    check(dev['mode'] == 'dfu' and dev['received']['dfu_bytes'] == 4096, 'after stall: %s' % dev)


def test_dfu_error_fault_reports_dfuerror_after_dnbusy_without_stall():
    path = fixture('esomx/tinker-6.3.4-esomx.bin')
    rc, out, doc = run_sim(['platform=esomx,mode=dfu,os=6.3.4,faults=error@chunk2:errPROG'],
                           ['dfu-util', '-a', '0', '-s', '0xb4000:leave', '-D', path])
    # dfu-util sees the status on a GETSTATUS, not a stalled DNLOAD
    check(rc != 0 and 'LIBUSB_ERROR_PIPE' not in out and re.search(r'dfuERROR|state\(10\)', out),
          'error fault not seen as dfuERROR:\n' + out)
    dev = doc['devices'][0]
    # the second chunk was accepted but not written
    check(dev['mode'] == 'dfu' and dev['received']['dfu_bytes'] == 4096, 'after error: %s' % dev)
    rc, out, _ = run_sim(['platform=esomx,mode=dfu,os=6.3.4,faults=error@chunk2:errWRTE'], ['true'],
                         state=False)
    check(rc == 125 and 'unknown DFU status' in out, 'misspelt status accepted:\n' + out)


# Driver prelude for tests that run inside the simulator: control socket + tty helpers.
DRIVER_PRELUDE = r"""
import json, os, select, socket, sys, termios, time
sock_path = sys.argv[1]
s = socket.socket(socket.AF_UNIX); s.connect(sock_path); f = s.makefile('rw')
def ctl(**kw):
    f.write(json.dumps(kw) + '\n'); f.flush(); return json.loads(f.readline())
def ok(**kw):
    r = ctl(**kw); assert r['ok'], (kw, r); return r
def open_tty(n):
    fd = os.open('/dev/ttyACM%d' % n, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    t = termios.tcgetattr(fd); t[3] &= ~(termios.ICANON | termios.ECHO); t[1] &= ~termios.OPOST
    t[0] &= ~(termios.ICRNL | termios.INLCR); termios.tcsetattr(fd, termios.TCSANOW, t)
    return fd
def read_until(fd, want, timeout=10.0):
    buf, end = b'', time.monotonic() + timeout
    while want not in buf and time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    return buf
def drain(fd):
    buf = b''
    while select.select([fd], [], [], 0)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
    return buf
def ymodem_block(seq, data, size=128):
    data = data.ljust(size, b'\0')
    return bytes([1 if size == 128 else 2, seq & 0xff, 0xff - (seq & 0xff)]) + data + b'\0\0'
"""


def run_driver(body, devices=(), timeout_scale=None):
    """Runs DRIVER_PRELUDE + body inside flashd-sim with a control socket; returns its
    last output line as JSON and the state document."""
    sock = os.path.join(work, 'ctl-%d.sock' % len(os.listdir(work)))
    drv = os.path.join(work, 'drv-%d.py' % len(os.listdir(work)))
    open(drv, 'w').write(DRIVER_PRELUDE + body)
    extra = ['--control', sock]
    if timeout_scale is not None:
        extra += ['--timeout-scale', str(timeout_scale)]
    rc, out, doc = run_sim(list(devices), [sys.executable, drv, sock], extra=extra)
    check(rc == 0, 'driver failed (%d):\n%s' % (rc, out))
    return json.loads(out.strip().splitlines()[-1]), doc


# Every enumeration as CDC takes the lowest ttyACM number no present device holds
# (cdc-acm); each node answers as its own device; stale openers are hung up.
TTY_DRIVER = r"""
import random
rnd = random.Random(7)
names = ['a', 'b', 'c', 'd']
ids = {}
for n in names:
    ids[n] = ok(cmd='plug', spec='platform=argon,mode=listening,os=5.9.0,name=%s' % n)['device_id']
ok(cmd='wait-idle')
held = {n: i for i, n in enumerate(names)}          # name -> ttyACM number (present CDC devices)
dfu = set()
def lowest_free():
    i = 0
    while i in held.values():
        i += 1
    return i
def check_nodes(step):
    nodes = sorted(int(x[6:]) for x in os.listdir('/dev') if x.startswith('ttyACM'))
    assert nodes == sorted(held.values()), (step, nodes, held)
    for n, num in held.items():
        fd = open_tty(num)
        drain(fd)
        os.write(fd, b'i')
        got = read_until(fd, ids[n].encode())
        os.close(fd)
        assert ids[n].encode() in got, (step, n, num, got)
# The bug of the issue: a CDC device with ttyACM0 goes away, another device
# switches into listening mode and gets ttyACM0.
stale = open_tty(0)
ok(cmd='unplug', name='a'); del held['a']
r, _, _ = select.select([stale], [], [], 5)
try:
    hung = os.read(stale, 64) == b''
except OSError:
    hung = True
assert r and hung, 'an opener of a removed tty is not hung up'
os.close(stale)
ok(cmd='mode', name='b', mode='dfu'); del held['b']; dfu.add('b')
ok(cmd='wait-idle')
ok(cmd='mode', name='b', mode='listening'); dfu.discard('b')
ok(cmd='wait-idle'); held['b'] = lowest_free()
assert held['b'] == 0, held
check_nodes('b takes ttyACM0 of a')
steps = 0
for step in range(40):
    n = rnd.choice(names)
    present = n in held or n in dfu
    op = rnd.choice(['unplug', 'plug', 'dfu', 'listening', 'replug'])
    if op == 'plug' and present or op != 'plug' and not present:
        continue
    if op == 'unplug':
        ok(cmd='unplug', name=n); held.pop(n, None); dfu.discard(n)
    elif op == 'plug':
        ok(cmd='plug', name=n)
    elif op == 'replug':
        ok(cmd='replug', name=n)
    else:
        ok(cmd='mode', name=n, mode=op)
    if op != 'unplug':
        held.pop(n, None); dfu.discard(n)
        ok(cmd='wait-idle')
        st = {d['name']: d['mode'] for d in ok(cmd='state')['state']['devices']}
        if st[n] == 'dfu':
            dfu.add(n)
        else:
            held[n] = lowest_free()
    check_nodes('step %d: %s %s' % (step, op, n))
    steps += 1
print(json.dumps({'steps': steps, 'held': held}))
"""


def test_tty_numbers_survive_any_plug_sequence():
    res, doc = run_driver(TTY_DRIVER)
    check(res['steps'] >= 15, 'too few steps ran: %s' % res)


# A `fault` sent to a device in the middle of a YMODEM transfer acts on that transfer.
LIVE_FAULT_DRIVER = r"""
fd = open_tty(0)
os.write(fd, b'f')
assert b'press' in read_until(fd, b"abort)\r\n"), 'no f prompt'
os.write(fd, ymodem_block(0, b'app.bin\0' + b'512 '))
got = read_until(fd, b'\x06\x43')
assert got.endswith(b'\x06\x43'), got
os.write(fd, ymodem_block(1, b'x' * 128))
assert read_until(fd, b'\x06') == b'\x06', 'block 1 not acked'
ok(cmd='fault', name='d1', faults='cancel@block2')
os.write(fd, ymodem_block(2, b'y' * 128))
got = read_until(fd, b'\r\n')
print(json.dumps({'after_fault': got.decode('latin-1')}))
"""


def test_fault_acts_at_once_on_a_live_serial_device():
    res, doc = run_driver(LIVE_FAULT_DRIVER, ['platform=argon,mode=listening,os=5.9.0,name=d1'])
    check(res['after_fault'].startswith('\x18\x18'), 'block 2 was not cancelled: %r' % res['after_fault'])
    # The fault fired once: the next transfer is not cancelled any more.
    check(doc['devices'][0]['received']['ymodem_bytes'] == 128, 'ymodem_bytes %s' % doc['devices'][0]['received'])


# wait-idle covers the serial engine's own timers: after `f` the receiver's byte
# timeouts run (scaled) until it gives up; wait-idle answers only after that.
WAIT_IDLE_DRIVER = r"""
fd = open_tty(0)
os.write(fd, b'f')
assert b'press' in read_until(fd, b"abort)\r\n"), 'no f prompt'
short = ctl(cmd='wait-idle', timeout_ms=50)
t0 = time.monotonic()
full = ctl(cmd='wait-idle')
waited = time.monotonic() - t0
after = drain(fd)
bad = ctl(cmd='wait-idle', timeout_ms='soon')
print(json.dumps({'short': short, 'full': full, 'waited': waited, 'after': after.decode('latin-1'), 'bad': bad}))
"""


def test_wait_idle_waits_for_the_serial_engine_timers():
    res, _ = run_driver(WAIT_IDLE_DRIVER, ['platform=argon,mode=listening,os=5.9.0,name=d1'], timeout_scale=0.05)
    check(not res['short']['ok'] and 'timer' in res['short']['error'], 'bounded wait-idle: %s' % res['short'])
    check(res['full']['ok'], 'wait-idle: %s' % res['full'])
    check('Failed to receive the file!' in res['after'],
          'wait-idle answered before the receiver gave up: %r' % res['after'])
    check(not res['bad']['ok'], 'timeout_ms "soon" accepted: %s' % res['bad'])


# docs/testing/umockdev.md#particle-cli: node-serialport writes on one thread and closes the port on
# another.  The tty must survive that (no abort of the program under test).
CLOSE_RACE_DRIVER = r"""
import threading
aborted = 0
for i in range(300):
    fd = open_tty(0)
    go = threading.Event()
    def writer(fd=fd):
        go.set()
        for _ in range(50):
            try:
                os.write(fd, b'a')
            except OSError:
                return
    t = threading.Thread(target=writer)
    t.start()
    go.wait()
    os.close(fd)
    t.join()
print(json.dumps({'rounds': 300}))
"""


def test_tty_close_while_another_thread_writes_is_safe():
    res, _ = run_driver(CLOSE_RACE_DRIVER, ['platform=photon,mode=normal,os=2.2.0,name=d1'])
    check(res['rounds'] == 300, str(res))


# Particle vendor control requests (docs/device/control-requests.md) through libusb, as particle-usb
# sends them: INIT, CHECK; DFU_MODE (50) and RESET (40) re-enumerate the device.
VENDOR_DRIVER = r"""
import ctypes, struct
lib = ctypes.CDLL('libusb-1.0.so.0')
lib.libusb_open_device_with_vid_pid.restype = ctypes.c_void_p
lib.libusb_open_device_with_vid_pid.argtypes = [ctypes.c_void_p, ctypes.c_uint16, ctypes.c_uint16]
lib.libusb_control_transfer.argtypes = [ctypes.c_void_p, ctypes.c_uint8, ctypes.c_uint8, ctypes.c_uint16,
                                        ctypes.c_uint16, ctypes.c_char_p, ctypes.c_uint16, ctypes.c_uint]
lib.libusb_close.argtypes = [ctypes.c_void_p]
ctx = ctypes.c_void_p()
assert lib.libusb_init(ctypes.byref(ctx)) == 0
def xfer(h, rt, req, value, index, length=64, data=b''):
    buf = ctypes.create_string_buffer(data, max(length, len(data), 1))
    n = lib.libusb_control_transfer(h, rt, req, value, index, buf, length if rt & 0x80 else len(data), 2000)
    return n if n < 0 else buf.raw[:n]
def parse(b):
    flags, status = struct.unpack_from('<IH', b)
    rep, off = {'status': status}, 6
    for bit, name, fmt in ((2, 'id', '<H'), (4, 'size', '<I'), (8, 'result', '<i')):
        if flags & bit:
            rep[name] = struct.unpack_from(fmt, b, off)[0]; off += struct.calcsize(fmt)
    return rep
def request(pid, rtype):
    h = lib.libusb_open_device_with_vid_pid(ctx, 0x2b04, pid)
    assert h, 'cannot open %04x' % pid
    ver = xfer(h, 0xc0, 0x50, 0, 30)
    init = xfer(h, 0xc0, 1, 0, rtype)
    res = {'version': ver if isinstance(ver, int) else ver.rstrip(b'\0').decode(), 'init': init if isinstance(init, int) else parse(init)}
    if isinstance(init, bytes):
        res['check'] = parse(xfer(h, 0xc0, 2, 0, res['init']['id']))
        if rtype not in (40, 50):  # those reset the device once the reply is out
            res['check_again'] = parse(xfer(h, 0xc0, 2, 0, res['init']['id']))
    lib.libusb_close(h)
    ok(cmd='wait-idle')
    res['mode'] = ok(cmd='state')['state']['devices'][0]['mode']
    return res
out = {'unsupported': request(0xc00c, 41), 'dfu': request(0xc00c, 50)}
ok(cmd='mode', name='d1', mode='listening'); ok(cmd='wait-idle')
out['reset'] = request(0xc00c, 40)
print(json.dumps(out))
"""


def test_vendor_requests_switch_to_dfu_and_reset():
    res, _ = run_driver(VENDOR_DRIVER, ['platform=argon,mode=normal,os=5.9.0,name=d1'])
    u, d, r = res['unsupported'], res['dfu'], res['reset']
    check(u['version'] == '5.9.0', 'SYSTEM_VERSION: %s' % u)
    check(u['init']['status'] == 0 and u['check'] == {'status': 0, 'size': 0, 'result': -120},
          'request 41 (factory reset, not simulated) is not NOT_SUPPORTED: %s' % u)
    check(u['check_again']['status'] == 5 and u['mode'] == 'normal', 'a finished request stays: %s' % u)
    check(d['check'] == {'status': 0, 'size': 0, 'result': 0} and d['mode'] == 'dfu', 'DFU_MODE: %s' % d)
    check(r['check']['result'] == 0 and r['mode'] == 'normal', 'RESET from listening mode: %s' % r)
    # Device OS before 0.8.0 (Gen 2) has no control requests: they stall.
    res, _ = run_driver(VENDOR_DRIVER.replace('0xc00c', '0xc006').split('out = ')[0] +
                        "print(json.dumps(request(0xc006, 50)))\n",
                        ['platform=photon,mode=normal,os=0.7.0,name=d1'])
    check(res['init'] < 0 and res['mode'] == 'normal', 'Photon 0.7.0 answered INIT: %s' % res)


# A reset while the host still has an answered URB to reap (dfu-util's GETSTATUS
# after the leave request, reaped after the 0 ms leave reset re-enumerated the
# device).  As with usbfs: the answered URB stays reapable on the old node, which
# then reports ENODEV and never reaches the next enumeration; an URB the device
# never answered comes back with -ESHUTDOWN at the unplug.  The old simulator
# dropped the URB and answered EAGAIN forever: dfu-util spun until the timeout.
URB_AFTER_RESET_DRIVER = r"""
import ctypes, errno, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
class Urb(ctypes.Structure):
    _fields_ = [('type', ctypes.c_ubyte), ('endpoint', ctypes.c_ubyte), ('status', ctypes.c_int),
                ('flags', ctypes.c_uint), ('buffer', ctypes.c_void_p), ('buffer_length', ctypes.c_int),
                ('actual_length', ctypes.c_int), ('start_frame', ctypes.c_int), ('packets', ctypes.c_int),
                ('error_count', ctypes.c_int), ('signr', ctypes.c_uint), ('usercontext', ctypes.c_void_p)]
class Ctrl(ctypes.Structure):
    _fields_ = [('bRequestType', ctypes.c_ubyte), ('bRequest', ctypes.c_ubyte), ('wValue', ctypes.c_ushort),
                ('wIndex', ctypes.c_ushort), ('wLength', ctypes.c_ushort), ('timeout', ctypes.c_uint),
                ('data', ctypes.c_void_p)]
CONTROL, SUBMITURB, REAPURBNDELAY, CLAIMINTERFACE = 0xc0185500, 0x8038550a, 0x4008550d, 0x8004550f
def ioctl(fd, req, arg):
    r = libc.ioctl(fd, req, ctypes.byref(arg))
    return 0 if r >= 0 else -ctypes.get_errno()
def control(fd, rt, req, length=0):
    buf = ctypes.create_string_buffer(max(length, 1))
    c = Ctrl(rt, req, 0x100 if req == 6 else 0, 0, length, 1000, ctypes.cast(buf, ctypes.c_void_p))
    r = libc.ioctl(fd, CONTROL, ctypes.byref(c))
    return (r, buf.raw[:max(r, 0)]) if r >= 0 else (-ctypes.get_errno(), b'')
def reap(fd):
    p = ctypes.c_void_p()
    return ioctl(fd, REAPURBNDELAY, p), p.value
old = os.open('/dev/bus/usb/001/001', os.O_RDWR)
assert ioctl(old, CLAIMINTERFACE, ctypes.c_uint(0)) == 0
assert control(old, 0x21, 1)[0] == 0                         # DNLOAD, 0 bytes: leave
buf = ctypes.create_string_buffer(struct.pack('<BBHHH', 0xa1, 3, 0, 0, 6) + bytes(6))
urb = Urb(type=2, buffer=ctypes.cast(buf, ctypes.c_void_p), buffer_length=14)
assert ioctl(old, SUBMITURB, urb) == 0                       # GETSTATUS: dfuMANIFEST, leave
ok(cmd='wait-idle')                                          # reset and re-enumeration done
out = {'mode': ok(cmd='state')['state']['devices'][0]['mode']}
rc, ptr = reap(old)
out['reap'] = rc
out['same_urb'] = ptr == ctypes.addressof(urb)
out['urb'] = [urb.status, urb.actual_length, buf.raw[8 + 4]]
out['reap_again'] = reap(old)[0]
out['old_control'] = control(old, 0x80, 6, 18)[0]           # GET_DESCRIPTOR on the old node
os.close(old)
new = os.open('/dev/bus/usb/001/003', os.O_RDWR)          # d1's next enumeration
n, desc = control(new, 0x80, 6, 18)
out['new_pid'] = '%04x' % struct.unpack_from('<H', desc, 10)[0] if n == 18 else n
os.close(new)
# d2 (001/002) goes silent after its first data DNLOAD; the unplug gives the
# unanswered GETSTATUS back with -ESHUTDOWN.
fd = os.open('/dev/bus/usb/001/002', os.O_RDWR)
assert ioctl(fd, CLAIMINTERFACE, ctypes.c_uint(0)) == 0
dn = ctypes.create_string_buffer(struct.pack('<BBHHH', 0x21, 1, 2, 0, 16) + bytes(16))
urb = Urb(type=2, buffer=ctypes.cast(dn, ctypes.c_void_p), buffer_length=24)
assert ioctl(fd, SUBMITURB, urb) == 0 and reap(fd)[0] == 0 and urb.status == 0
st = ctypes.create_string_buffer(struct.pack('<BBHHH', 0xa1, 3, 0, 0, 6) + bytes(6))
urb = Urb(type=2, buffer=ctypes.cast(st, ctypes.c_void_p), buffer_length=14)
assert ioctl(fd, SUBMITURB, urb) == 0
out['silent_reap'] = reap(fd)[0]
ok(cmd='unplug', name='d2')
rc, ptr = reap(fd)
out['unplugged_reap'] = [rc, ptr == ctypes.addressof(urb), urb.status, urb.actual_length]
out['unplugged_reap_again'] = reap(fd)[0]
os.close(fd)
print(json.dumps(out))
"""


def test_urb_answered_before_a_reset_is_reaped_then_the_old_node_is_gone():
    res, _ = run_driver(URB_AFTER_RESET_DRIVER, ['platform=argon,mode=dfu,os=5.9.0,name=d1',
                                                 'platform=argon,mode=dfu,os=5.9.0,name=d2,faults=silent@chunk1'])
    check(res['mode'] == 'normal', 'no re-enumeration after the leave: %s' % res)
    check(res['reap'] == 0 and res['same_urb'], 'the answered GETSTATUS was lost: %s' % res)
    check(res['urb'] == [0, 6, 7], 'GETSTATUS reply (status, length, dfuMANIFEST): %s' % res)
    check(res['reap_again'] == -errno.ENODEV, 'old node after its URBs: %s, not ENODEV' % res)
    check(res['old_control'] == -errno.ENODEV, 'the old node reached the new enumeration: %s' % res)
    check(res['new_pid'] == 'c00c', 'the new node: %s' % res)
    check(res['silent_reap'] == -errno.EAGAIN, 'a silent device answered: %s' % res)
    check(res['unplugged_reap'] == [0, True, -errno.ESHUTDOWN, 0],
          'the unanswered URB at the unplug: %s' % res)
    check(res['unplugged_reap_again'] == -errno.ENODEV, 'unplugged node: %s' % res)

PARTICLE_USB_JS = r"""
const usb = require(process.argv[2]);
(async () => {
  const out = {};
  let [d] = await usb.getDevices();
  await d.open();
  out.version = d.firmwareVersion;
  await d.reset();
  await d.close();
  await new Promise(r => setTimeout(r, 500));
  [d] = await usb.getDevices();
  out.after_reset_dfu = d.isInDfuMode;
  await d.open();
  await d.enterDfuMode();
  await d.close();
  [d] = await usb.getDevices();
  out.after_dfu_mode = d.isInDfuMode;
  console.log(JSON.stringify(out));
})().catch(e => { console.error(e); process.exit(1); });
"""


def test_particle_usb_enters_dfu_mode_and_resets():
    """particle-usb 2.10.1 (scripts/install-deps installs it with particle-cli through
    cdc/particle-cli-setup.sh)."""
    base = os.environ.get('FLASHD_PARTICLE_CLI_DIR') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache'),
        'flashd-test', 'particle-cli-3.19.0')
    pusb = os.path.join(base, 'node_modules', 'particle-usb')
    if not os.path.isdir(pusb) or not shutil.which('node'):
        why = 'particle-usb (or node) not installed at %s: run scripts/install-deps' % pusb
        # CI ran install-deps: a missing install there is a broken setup, not a reason to skip.
        check(not os.environ.get('CI'), why)
        print('SKIP: ' + why)
        sys.exit(77)
    js = os.path.join(work, 'pusb.js')
    open(js, 'w').write(PARTICLE_USB_JS)
    rc, out, doc = run_sim(['platform=boron,mode=normal,os=4.0.1,name=d1'], ['node', js, pusb])
    check(rc == 0, 'particle-usb failed:\n' + out)
    res = json.loads(out.strip().splitlines()[-1])
    check(res == {'version': '4.0.1', 'after_reset_dfu': False, 'after_dfu_mode': True}, str(res))
    check(doc['devices'][0]['mode'] == 'dfu', 'final mode %s' % doc['devices'][0]['mode'])

def ctrl_probe(spec, ops, env_extra=None):
    probe = os.path.join(os.environ.get('FLASHD_BUILD_ROOT', ''), 'tests', 'sim', 'ctrl-probe')
    rc, out, doc = run_sim([spec], [probe] + ops)
    lines = [json.loads(l) for l in out.splitlines() if l.startswith('{"op"')]
    check(len(lines) == len(ops), 'ctrl-probe (exit %d):\n%s' % (rc, out))
    return {l['op']: l for l in lines}, doc


def test_ctrl_reads_facts_busy_then_ok():
    res, doc = ctrl_probe('platform=argon,mode=normal,os=6.2.0,name=d1,faults=ctrl-busy@3',
                          ['id', 'version', 'mode', 'modules', 'listen', 'mode'])
    dev = doc['devices'][0]
    check('error' not in res['id'] and res['id']['text'] == dev['device_id'], str(res['id']))
    check(res['id']['busy_retries'] == 3 and res['version']['busy_retries'] == 0, 'BUSY x3: %s' % res)
    check(res['id']['ms'] < 1000, 'BUSY x3 then OK took %d ms' % res['id']['ms'])
    check(res['version']['text'] == '6.2.0', str(res['version']))
    mods = res['modules']['modules']
    check(any(m['function'] == 4 and m['version'] == 6200 and m['valid'] for m in mods), str(mods))
    check(res['mode']['mode'] == 1 and 'error' not in res['listen'], 'listening: %s' % res)


def test_ctrl_decodes_not_supported():
    # Gen 2 before 1.5.0 has no device-id request: -120, decoded
    res, _ = ctrl_probe('platform=photon,mode=normal,os=1.4.4,name=d1', ['id', 'modules'])
    e = res['id'].get('error', {})
    check(e.get('code') == 'request-unsupported' and e['detail'].get('system_error') == 'NOT_SUPPORTED'
          and e['detail'].get('device_code') == -120, str(res['id']))
    # module info in the format before 5.6.0 (modules_deprecated), matching the flash
    mods = res['modules'].get('modules', [])
    check(any(m['function'] == 4 and m['valid'] for m in mods) and
          any(m['function'] == 2 for m in mods) and any(m['function'] == 5 for m in mods),
          'Photon 1.4.4 modules: %s' % res['modules'])


def test_ctrl_unplug_mid_update_is_device_gone():
    path = fixture('p2/tinker-5.0.0-p2.bin')
    res, _ = ctrl_probe('platform=p2,mode=normal,os=6.2.0,name=d1,faults=ctrl-unplug@chunk2',
                        ['update=' + path])
    e = res['update=' + path].get('error', {})
    check(e.get('code') == 'device-gone', str(res))
    check(res['update=' + path]['ms'] < 3000, 'device-gone after %d ms' % res['update=' + path]['ms'])


PARTICLE_USB_4_JS = r"""
const usb = require(process.argv[2]);
const fs = require('fs');
const sleep = ms => new Promise(r => setTimeout(r, ms));
async function reopen() {
  for (let i = 0; i < 100; i++) {
    const [d] = await usb.getDevices().catch(() => []);
    if (d && !d.isInDfuMode) { try { await d.open(); return d; } catch (e) {} }
    await sleep(100);
  }
  throw new Error('the device did not come back');
}
(async () => {
  const out = {};
  let d = await reopen();
  out.id = await d.getDeviceId();
  out.serial = await d.getSerialNumber();
  out.mode = await d.getDeviceMode();
  out.version = d.firmwareVersion;
  out.modules = await d.getFirmwareModuleInfo();
  await d.enterListeningMode();
  out.mode_after_listen = await d.getDeviceMode();
  await d.leaveListeningMode();
  out.mode_after_leave = await d.getDeviceMode();
  await d.updateFirmware(fs.readFileSync(process.argv[3]));
  await d.close().catch(() => {});
  await sleep(300);
  d = await reopen();
  out.modules_after = await d.getFirmwareModuleInfo();
  await d.close();
  console.log(JSON.stringify(out));
})().catch(e => { console.error(e); process.exit(1); });
"""


def particle_usb_4():
    """particle-usb 4.1.0, installed before the tests by tests/sim/particle-usb-setup.sh
    (scripts/install-deps)."""
    base = os.environ.get('FLASHD_PARTICLE_USB_DIR') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache'),
        'flashd-test', 'particle-usb-4.1.0')
    pusb = os.path.join(base, 'node_modules', 'particle-usb')
    if not os.path.isdir(pusb) or not shutil.which('node'):
        fail('particle-usb 4.1.0 not installed at %s: scripts/install-deps runs '
             'tests/sim/particle-usb-setup.sh before the tests' % pusb)
    return pusb


def test_particle_usb_4_reads_facts_and_updates_firmware():
    pusb = particle_usb_4()
    path = fixture('p2/tinker-5.0.0-p2.bin')
    start, function, platform, data = prefix(path)
    js = os.path.join(work, 'pusb4.js')
    open(js, 'w').write(PARTICLE_USB_4_JS)
    rc, out, doc = run_sim(['platform=p2,mode=normal,os=6.2.0,name=d1'], ['node', js, pusb, path])
    check(rc == 0, 'particle-usb failed:\n' + out)
    res = json.loads(out.strip().splitlines()[-1])
    dev = doc['devices'][0]
    check(res['id'] == dev['device_id'], 'id %s != %s' % (res['id'], dev['device_id']))
    check(res['version'] == '6.2.0' and res['mode'] == 'NORMAL', str(res))
    check(res['mode_after_listen'] == 'LISTENING' and res['mode_after_leave'] == 'NORMAL', str(res))
    mods = {(m['type'], m['index']): m for m in res['modules']}
    sysm = mods.get(('SYSTEM_PART', 1))
    check(sysm and sysm['version'] == 6200 and not sysm['validityErrors'], 'system part: %s' % res['modules'])
    user = [m for m in res['modules_after'] if m['type'] == 'USER_PART']
    check(len(user) == 1 and not user[0]['validityErrors'], 'application after the update: %s' % user)
    base_, mem = dump(doc, dev)
    check(mem[start - base_:start - base_ + len(data)] == data, 'flash differs from the file at 0x%x' % start)
    check(dev['mode'] == 'normal', 'final mode %s' % dev['mode'])


def particle_cli_343():
    """particle-cli 3.43.1, installed before the tests by tests/sim/particle-cli-3.43-setup.sh
    (scripts/install-deps)."""
    base = os.environ.get('FLASHD_PARTICLE_CLI_343_DIR') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache'),
        'flashd-test', 'particle-cli-3.43.1')
    cli = os.path.join(base, 'node_modules', '.bin', 'particle')
    if not os.access(cli, os.X_OK) or not shutil.which('node'):
        fail('particle-cli 3.43.1 not installed at %s: scripts/install-deps runs '
             'tests/sim/particle-cli-3.43-setup.sh before the tests' % cli)
    home = tempfile.mkdtemp(dir=work)  # particle-cli writes ~/.particle
    return ['env', 'HOME=' + home, cli]


# Runs COMMAND, then asks the simulator (control socket) to wait until no reset or
# re-enumeration is pending; exits with COMMAND's status, or 1 if wait-idle fails.
# A host tool may exit while the device it told to reset is still re-enumerating:
# particle-cli's `flash --local` ends with the firmware-update request's reply, after
# which Device OS resets by itself to apply the update (flash-helper.js's flashFiles()
# resets only after a DFU step).  The final state.json must show the device booted.
#
# With --done-line TEXT: particle-cli 3.43.1 bundles node-usb 2.18, which about once
# in 200 runs under load either crashes after the flash while it tears down
# (Interface.refresh() reads configDescriptor of a device that is gone: "TypeError:
# ... reading 'interfaces'") or never exits (a device it closed keeps its libusb
# callback channel, so node's loop stays alive).  Both come after the tool printed
# TEXT, i.e. after it has done its work: the run then counts by what the device holds
# (the test's checks of state.json), and the note says what particle-cli did.  A
# failure before TEXT, or any other failure after it, is still the tool's.
THEN_WAIT_IDLE = r'''
import json, os, signal, socket, subprocess, sys, threading
sock, args = sys.argv[1], sys.argv[2:]
done, count = None, 1
if args[0] == '--done-line':
    done, args = args[1], args[2:]
if args[0] == '--done-count':  # the Nth such line (a script of several commands)
    count, args = int(args[1]), args[2:]
GRACE_S = 30
prog = os.path.basename(next(a for a in args if a != 'env' and '=' not in a))
p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                     errors='replace', start_new_session=True)
seen, after, hung = threading.Event(), [], []
def watchdog():
    if seen.wait() and p.poll() is None:
        try:
            p.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            hung.append(1)
            os.killpg(p.pid, signal.SIGKILL)
threading.Thread(target=watchdog, daemon=True).start()
for line in p.stdout:
    sys.stdout.write(line); sys.stdout.flush()
    if seen.is_set():
        after.append(line)
    elif done and done in line:
        count -= 1
        if count == 0:
            seen.set()
rc = p.wait()
seen.set()
NODE_USB_CRASH = "TypeError: Cannot read properties of undefined (reading 'interfaces')"
if hung:
    print('note: %s printed %r, then did not exit within %d s (node-usb 2.18: a closed '
          'device keeps its callback channel): killed; judged by the device' % (prog, done, GRACE_S), flush=True)
    rc = 0
elif rc and any(NODE_USB_CRASH in l for l in after) and any('node_modules/usb/' in l for l in after):
    print('note: %s printed %r, then crashed in node-usb 2.18 while closing the device '
          '(exit %d); judged by the device' % (prog, done, rc), flush=True)
    rc = 0
s = socket.socket(socket.AF_UNIX); s.connect(sock); f = s.makefile('rw')
f.write(json.dumps({'cmd': 'wait-idle'}) + '\n'); f.flush()
r = json.loads(f.readline() or '{}')
if not r.get('ok'):
    print('wait-idle after the command (exit %d): %s' % (rc, r), flush=True)
    sys.exit(1)
sys.exit(rc)
'''


def run_sim_then_idle(devices, command, done_line=None, done_count=1):
    """run_sim() with COMMAND followed by the simulator's wait-idle (THEN_WAIT_IDLE);
    done_line: the tool's last line of a finished job (see THEN_WAIT_IDLE), the
    done_count-th one for a script of several commands."""
    sock = os.path.join(work, 'ctl.sock')
    pre = ['--done-line', done_line, '--done-count', str(done_count)] if done_line else []
    return run_sim(devices, [sys.executable, '-c', THEN_WAIT_IDLE, sock] + pre + command,
                   extra=['--control', sock])


def test_particle_cli_343_usb_commands_switch_modes():
    cli = ' '.join(shlex.quote(a) for a in particle_cli_343())
    probe = shlex.quote(os.path.join(os.environ.get('FLASHD_BUILD_ROOT', ''), 'tests', 'sim', 'ctrl-probe'))
    opts = '--no-update-check'
    script = ('set -e; {cli} usb list --ids-only {o}; {cli} usb start-listening --all {o}; {p} mode; '
              '{cli} usb stop-listening --all {o}; {p} mode; {cli} usb dfu --all {o}').format(
                  cli=cli, o=opts, p=probe)
    # `usb dfu` is the one whose device goes away (it resets into DFU mode): its "Done.",
    # the script's third, is where node-usb 2.18 may crash or hang tearing down
    rc, out, doc = run_sim_then_idle(['platform=msom,mode=normal,os=6.2.0,name=d1'],
                                     ['sh', '-c', script], done_line='Done.', done_count=3)
    check(rc == 0, 'particle usb failed (exit %d):\n%s' % (rc, out))
    dev = doc['devices'][0]
    check(dev['device_id'] in out.split(), 'usb list --ids-only did not list %s:\n%s' % (dev['device_id'], out))
    modes = [json.loads(l)['mode'] for l in out.splitlines() if l.startswith('{"op"')]
    check(modes == [1, 0], 'device mode after start-/stop-listening: %s\n%s' % (modes, out))
    check(dev['mode'] == 'dfu', 'usb dfu: final mode %s' % dev['mode'])


def test_particle_cli_343_flash_local_is_byte_identical():
    path = fixture('p2/tinker-5.0.0-p2.bin')
    start, function, platform, data = prefix(path)
    rc, out, doc = run_sim_then_idle(['platform=p2,mode=normal,os=6.2.0,name=d1'],
                                     particle_cli_343() + ['flash', '--local', path, '--no-update-check'],
                                     done_line='Flash success!')
    check(rc == 0 and 'Flash success!' in out, 'particle flash --local failed (exit %d):\n%s' % (rc, out))
    dev = doc['devices'][0]
    base_, mem = dump(doc, dev)
    check(mem[start - base_:start - base_ + len(data)] == data, 'flash differs from the file at 0x%x' % start)
    check(dev['mode'] == 'normal', 'final mode %s' % dev['mode'])


def test_particle_cli_343_flash_local_bundle_fills_the_asset_store():
    # particle-cli's own way with a .zip from `particle compile`: the application, then each
    # asset as a compressed asset module by the firmware-update request (binary-version-
    # reader's createAssetModule()).  flashd-sim's asset store must hold the raw bytes.
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..',
                                    'integration', 'client'))
    from test_bundle import make_zip, restamp_p2
    app = open(fixture('p2/tinker-5.0.0-p2.bin'), 'rb').read()
    logo = b'\x89PNG\r\n\x1a\n' + bytes(range(256)) * 4
    sound = bytes((i * 7) & 0xff for i in range(3000))
    bundle = make_zip(os.path.join(work, 'p2-bundle.zip'),
                      [('p2_firmware_1700000000000.bin',
                        restamp_p2(app, [('logo.png', logo), ('sound.raw', sound)])),
                       ('assets/logo.png', logo), ('assets/sound.raw', sound)])
    rc, out, doc = run_sim_then_idle(['platform=p2,mode=normal,os=6.2.0,name=d1'],
                                     particle_cli_343() + ['flash', '--local', bundle, '--no-update-check'],
                                     done_line='Flash success!')
    check(rc == 0 and 'Flash success!' in out, 'particle flash --local failed (exit %d):\n%s' % (rc, out))
    dev = doc['devices'][0]
    store = {a['name']: (a['data_sha256'], a['sha256'], a['size']) for a in dev.get('assets', [])}
    want = {n: (hashlib.sha256(v).hexdigest(), hashlib.sha256(v).hexdigest(), len(v))
            for n, v in (('logo.png', logo), ('sound.raw', sound))}
    check(store == want, 'asset store %s, expected %s' % (store, want))
    check(dev['mode'] == 'normal', 'final mode %s' % dev['mode'])


def modules_by_function(dev):
    out = {}
    for m in dev['modules']:
        out.setdefault(m['function'], []).append(m)
    return out


def test_os_release_builds_the_modules_of_its_row():
    # Device OS's system_module_version.mk at v4.0.1: bootloader 1101, system 4005,
    # SoftDevice 202 (flashd's generated release table, proto/osver_table.h).
    for spec, want in [
            ('platform=argon,os=4.0.1', {'bootloader': [1101], 'system': [4005], 'radio-stack': [202]}),
            ('platform=photon,os=1.5.2', {'bootloader': [502], 'system': [1512, 1512]}),
            ('platform=electron,os=0.7.0', {'bootloader': [101], 'system': [207, 207, 207]}),
            ('platform=p2,os=5.0.0', {'bootloader': [2000, 3], 'system': [5002]}),
            ('platform=esomx,os=6.3.4', {'system': [6305], 'radio-stack': [202]})]:
        rc, out, doc = run_sim([spec], ['true'])
        check(rc == 0, '%s: exit %d\n%s' % (spec, rc, out))
        dev = doc['devices'][0]
        got = modules_by_function(dev)
        for function, versions in want.items():
            have = sorted((m['version'] for m in got.get(function, [])), reverse=True)
            check(have == sorted(versions, reverse=True), '%s: %s versions %s, expected %s' %
                  (spec, function, have, versions))
        bad = [m for m in dev['modules'] if not m['valid']]
        check(not bad and dev['mode'] == 'normal', '%s: mode %s, invalid %s' % (spec, dev['mode'], bad))
    rc, out, _ = run_sim([], [], state=False, extra=['--list-releases'])
    rows = [line.split() for line in out.splitlines()]
    check(rc == 0 and ['4.0.1', '4005', '1101', '1101', '202', '202', '0'] in [r[:7] for r in rows],
          '--list-releases (exit %d) has no 4.0.1 row:\n%s' % (rc, out[:2000]))


def test_unknown_release_exits_125_naming_the_nearest():
    rc, out, _ = run_sim(['platform=argon,os=4.0.3'], ['true'], state=False)
    check(rc == 125, 'os=4.0.3: exit %d (%s)' % (rc, out))
    check(re.search(r'nearest: 4\.0\.2, 4\.1\.0', out), 'nearest releases not named:\n' + out)
    rc, out, _ = run_sim(['platform=photon,os=4.0.1'], ['true'], state=False)
    check(rc == 125 and 'not released for the Photon' in out and '3.3.1' in out,
          'photon os=4.0.1: exit %d (%s)' % (rc, out))
    # A release between two the simulator once interpolated is a row of its own now.
    rc, out, doc = run_sim(['platform=argon,os=4.0.2'], ['true'])
    check(rc == 0, 'os=4.0.2: exit %d (%s)' % (rc, out))
    sysv = [m['version'] for m in doc['devices'][0]['modules'] if m['function'] == 'system']
    check(sysv == [4006], 'os=4.0.2: system %s, expected [4006]' % sysv)


TESTS = {n[5:]: f for n, f in globals().items() if n.startswith('test_')}
if TEST not in TESTS:
    print('unknown test; known: ' + ' '.join(TESTS))
    sys.exit(2)
TESTS[TEST]()
print('PASS: ' + TEST)

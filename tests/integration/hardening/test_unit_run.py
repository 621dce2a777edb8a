"""Issue 16 proof: flashd as flashd.service starts it, where CI has no systemd as
PID 1.  flashd runs as an unprivileged uid (setpriv) with the socket passed as
an activated fd (LISTEN_FDS / LISTEN_PID) and readiness on NOTIFY_SOCKET, next
to a simulated Photon whose nodes flashd-sim hands to that uid (--owner, as the
udev rule gives them to the flashd group); it flashes the Photon.  The whole
run is recorded with strace -f, and every system call flashd made must be one
the unit's SystemCallFilter allows (systemd-analyze syscall-filter expands the
groups), since the sandbox itself never runs here.

Runs itself inside flashd-sim (outside -> --inside).  Needs root, strace,
setpriv and systemd-analyze; without them: SKIP.
"""
import array
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from flashd_harness import Tap, fixture, run_in_sim, SERIAL_TIMEOUTS  # noqa: E402

UID = 64321
NO_ID = "ffffffffffffffffffffffff"  # no passwd entry needed: setpriv takes numbers
PHOTON_APP = fixture("photon/photon_tinker.bin")  # over serial (listening mode)
DFU_APP = fixture("photon/tinker-0.4.5-photon.bin")  # over DFU
DEVICES = ["platform=photon,os=1.5.2,mode=listening,name=d1",
           "platform=photon,mode=dfu,os=2.2.0,name=d2"]


def sanitized(path):
    """Whether the binary is built with ASan (LeakSanitizer's ptrace cannot run under
    strace)."""
    with open(path, "rb") as f:
        return b"__asan_init" in f.read()


def filter_groups():
    """{"@group": [members...]} from systemd-analyze syscall-filter."""
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True,
                         text=True, check=True).stdout
    groups, cur = {}, None
    for line in out.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if not line.startswith(" ") and s.startswith("@"):
            cur = groups.setdefault(s, [])
        elif cur is not None:
            cur.append(s)
    return groups


def expand(name, groups, seen=None):
    seen = seen or set()
    if not name.startswith("@"):
        return {name}
    if name in seen:
        return set()
    seen.add(name)
    out = set()
    for m in groups.get(name, []):
        out |= expand(m, groups, seen)
    return out


def unit_allowed(unit_path):
    """The set of system calls the unit's SystemCallFilter= lines allow."""
    groups = filter_groups()
    allowed, deny = set(), set()
    for line in open(unit_path):
        m = re.match(r"\s*SystemCallFilter=(~?)(.*)", line)
        if not m:
            continue
        names = set()
        for w in m.group(2).split():
            names |= expand(w, groups)
        (deny if m.group(1) else allowed).update(names)
    return allowed - deny


def recorded_syscalls(trace, flashd):
    """Names of the system calls in the strace -f log from flashd's execve on."""
    names, started = {}, False
    call = re.compile(r"^\d+\s+(?:<\.\.\. )?([a-z_0-9]+)(?:\(| resumed>)")
    for line in open(trace, errors="replace"):
        if not started:
            started = 'execve("%s"' % flashd in line and "= 0" in line
            continue
        m = call.match(line)
        if m:
            names[m.group(1)] = names.get(m.group(1), 0) + 1
    return started, names


def wait_ready(ns, timeout=20):
    """READY=1 on the notify socket; returns (message, sender uid, sender pid)."""
    ns.settimeout(timeout)
    while True:
        msg, anc, _, _ = ns.recvmsg(4096, socket.CMSG_SPACE(12))
        uid = pid = None
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, uid, _ = array.array("i", data[:12])
        if b"READY=1" in msg:
            return msg.decode(), uid, pid


def inside(flashd, fc, unit, tmp):
    tap = Tap()
    work = tempfile.mkdtemp(dir=tmp)
    os.chmod(work, 0o755)
    lock, state = os.path.join(work, "lock"), os.path.join(work, "state")
    for d in (lock, state):
        os.mkdir(d)
        os.chown(d, UID, UID)
    # flashd.socket: root's socket, the service's group, 0660 (SocketGroup=, SocketMode=).
    path = os.path.join(work, "flashd.sock")
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(128)
    os.chown(path, 0, UID)
    os.chmod(path, 0o660)
    ns_path = os.path.join(work, "notify.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(ns_path)
    ns.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    os.chmod(ns_path, 0o666)
    trace = os.path.join(work, "flashd.strace")
    log = open(os.path.join(work, "flashd.log"), "w+")
    n = ls.fileno()
    move = "" if n == 3 else "exec 3<&%d; exec %d<&-; " % (n, n)
    script = (move + 'export LISTEN_PID=$$ LISTEN_FDS=1 LD_PRELOAD="$FLASHD_PRELOAD"; '
              'unset FLASHD_PRELOAD; exec "$@"')
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env.update(FLASHD_PRELOAD=os.environ.get("LD_PRELOAD", ""), NOTIFY_SOCKET=ns_path,
               FLASHD_LOCK_DIR=lock)
    if sanitized(flashd):
        # LeakSanitizer stops the world with ptrace, which strace already holds
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    cfg = os.path.join(work, "flashd.conf")
    with open(cfg, "w") as f:
        f.write(SERIAL_TIMEOUTS)
    argv = [shutil.which("strace"), "-f", "-qq", "-o", trace, "--",
            shutil.which("setpriv"), "--reuid=%d" % UID, "--regid=%d" % UID, "--clear-groups",
            "--", "/bin/sh", "-c", script, "flashd-unit", flashd, "--foreground",
            "--state-dir", state, "--config", cfg, "--log-level", "debug"]
    proc = subprocess.Popen(argv, env=env, pass_fds=[n], stdout=log, stderr=log, cwd="/")
    ls.close()
    pid = None
    try:
        try:
            msg, uid, pid = wait_ready(ns)
            tap.check("READY=1 on NOTIFY_SOCKET from a process of uid %d" % UID, uid == UID,
                      (msg, uid, pid))
        except socket.timeout:
            log.seek(0)
            tap.check("READY=1 on NOTIFY_SOCKET", False, log.read()[-2000:])
            return tap
        with open("/proc/%d/status" % pid) as f:
            caps = [l for l in f if l.startswith("CapEff")]
        tap.check("flashd runs with no capability", caps and caps[0].split()[1] == "0" * 16,
                  caps)
        devs, deadline = [], time.monotonic() + 20
        while time.monotonic() < deadline and len(devs) < len(DEVICES):
            r = subprocess.run([fc, "--socket", path, "--json", "list"], capture_output=True,
                               text=True, timeout=30)
            devs = json.loads(r.stdout.splitlines()[0])["devices"] if r.returncode == 0 else []
            time.sleep(0.1)
        tap.check("the activated socket serves: both Photons are listed",
                  len(devs) == len(DEVICES), (devs, r.stderr))
        for how, image, dfu in (("serial", PHOTON_APP, False), ("DFU", DFU_APP, True)):
            dev = next((x for x in devs if (x.get("mode") == "dfu") == dfu), {})
            r = subprocess.run([fc, "--socket", path, "--json", "flash", image, "--device",
                                dev.get("id") or NO_ID], capture_output=True, text=True,
                               timeout=150)
            ends = [json.loads(l) for l in r.stdout.splitlines()
                    if l.startswith("{") and json.loads(l).get("event") == "job-ended"]
            log.seek(0)
            tap.check("the unprivileged daemon flashes the Photon over %s: verified" % how,
                      r.returncode == 0 and ends and ends[-1].get("outcome") == "verified",
                      (r.stdout[-1000:], r.stderr[-500:], log.read()[-2000:]))
    finally:
        if pid:
            os.kill(pid, 15)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    tap.check("flashd stopped on SIGTERM with status 0", proc.returncode == 0, proc.returncode)
    allowed = unit_allowed(unit)
    started, names = recorded_syscalls(trace, flashd)
    outside_filter = sorted(set(names) - allowed)
    tap.check("%d distinct system calls recorded (%d calls), all inside the unit's "
              "SystemCallFilter" % (len(names), sum(names.values())),
              started and len(names) > 20 and not outside_filter,
              "outside: %s; recorded: %s" % (outside_filter, sorted(names)))
    return tap


def outside(flashd, fc, sim, unit):
    missing = [t for t in ("strace", "setpriv", "systemd-analyze") if not shutil.which(t)]
    if os.geteuid() != 0 or missing:
        print("1..0 # SKIP needs root and %s" % (", ".join(missing) or "root"))
        sys.exit(0)
    for f in (PHOTON_APP, DFU_APP):
        if not os.path.exists(f):
            print("1..0 # SKIP fixture %s missing" % f)
            sys.exit(0)
    # The testbed lives in $TMPDIR: uid UID must get through to it.
    tmp = tempfile.mkdtemp(prefix="flashd-unit-run-", dir="/tmp")
    os.chmod(tmp, 0o755)
    try:
        r = run_in_sim(sim, DEVICES,
                       [sys.executable, os.path.abspath(__file__), "--inside", flashd, fc,
                        unit, tmp], tmp, sim_args=["--owner", "%d:%d" % (UID, UID)],
                       timeout=400)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(r.returncode)


if __name__ == "__main__":
    if sys.argv[1] == "--inside":
        inside(*[os.path.abspath(a) for a in sys.argv[2:6]]).done()
    else:
        outside(*[os.path.abspath(a) for a in sys.argv[1:5]])

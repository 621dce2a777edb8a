"""Test harness for flashd integration tests (Python 3 standard library only).

Starts the real flashd on a private socket, speaks the wire protocol
(proto/PROTOCOL.md) including fd passing, and reports TAP.
"""
import array
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

FIXTURES = os.environ.get("FLASHD_FIXTURES", "")
BUILD = os.environ.get("FLASHD_BUILD_ROOT", "")

# How long the harness waits for things that a correct run always gets (flashd's socket,
# the simulator's control socket, the devices listed): never the bound of a test, only a
# stop for a broken run.  Generous, because CI runs the suite under ASan or valgrind on
# two cores shared with other work; the meson timeout bounds the whole test anyway.
SETUP_WAIT_S = 90


MISSING_HINT = ("neither ../shared/fixtures nor the fetched set has it;"
                " scripts/fetch-fixtures fetches what it can from the npm registry")


def fixture(path):
    """A fixture module's path; a TAP driver whose input is missing skips as a whole.
    Call it before the first TAP line (at the top of the driver)."""
    full = os.path.join(FIXTURES, "modules", path)
    if not os.path.exists(full):
        print("1..0 # SKIP fixture %s missing (%s)" % (full, MISSING_HINT), flush=True)
        sys.exit(0)
    return full


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def check(self, name, cond, info=""):
        self.n += 1
        if cond:
            print(f"ok {self.n} - {name}", flush=True)
        else:
            self.failed += 1
            print(f"not ok {self.n} - {name}", flush=True)
            if info:
                for line in str(info).splitlines():
                    print(f"#   {line}", flush=True)
        return cond

    def done(self):
        print(f"1..{self.n}", flush=True)
        sys.exit(1 if self.failed else 0)


class Client:
    """One protocol connection."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # A blocking connect waits while the listen backlog is full (as
        # flashctl does); a non-blocking one would fail with EAGAIN.
        self.sock.connect(path)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.next_id = 1
        self.pending = []  # objects read while looking for a reply

    def send_raw(self, data, fds=()):
        if fds:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        array.array("i", fds))])
        else:
            self.sock.sendall(data)

    def send(self, obj, fds=()):
        if "id" not in obj:
            obj = dict(obj, id=self.next_id)
            self.next_id += 1
        self.send_raw(json.dumps(obj).encode() + b"\n", fds)
        return obj["id"]

    def read(self, timeout=10.0):
        """Next object, or None at end of stream."""
        if self.pending:
            return self.pending.pop(0)
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from flashd")
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                continue
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""  # closed with our input unread: the same as an end
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, obj, fds=(), timeout=10.0):
        """Sends a request and returns its reply or error (events are kept)."""
        rid = self.send(obj, fds)
        kept = []
        while True:
            msg = self.read(timeout)
            if msg is None:
                self.pending = kept + self.pending
                return None
            if msg.get("type") in ("reply", "error") and msg.get("id") == rid:
                self.pending = kept + self.pending
                return msg
            kept.append(msg)

    def events_until(self, pred, timeout=10.0):
        """Reads events until pred(event) is true; returns all read."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.read(max(0.01, deadline - time.monotonic()))
            if msg is None:
                return seen
            seen.append(msg)
            if pred(msg):
                return seen

    def close(self):
        self.sock.close()


class Daemon:
    """flashd --foreground on a private socket and state directory.  private_locks:
    a lock directory of its own (FLASHD_LOCK_DIR): every flashd-sim testbed has
    its own /dev/ttyACM0, and the shared /run/lock would make parallel tests see
    each other's daemons as port holders.

    Restartable: work (a directory to keep socket, state, config, locks and log
    in, instead of a new temporary one) and sockdir (the socket's directory)
    stay across stop() and start() / restart(), so a restarted flashd finds its
    state and its clients the same socket.  start=False leaves the first start
    to the caller; the log appends across restarts."""

    def __init__(self, flashd, config=None, extra_env=None, log_level="info",
                 private_locks=False, world_reachable=False, work=None, sockdir=None,
                 start=True):
        # world_reachable: under /tmp itself, not $TMPDIR (scripts/test-all makes
        # that 0700), so that unprivileged uids can reach the socket.
        self.flashd = flashd
        self.dir = work or tempfile.mkdtemp(prefix="flashd-test-",
                                            dir="/tmp" if world_reachable else None)
        self.work = self.dir
        self.sockdir = sockdir or self.dir
        self.socket = self.sock = os.path.join(self.sockdir, "flashd.sock")
        self.state = os.path.join(self.dir, "state")
        self.args = [flashd, "--foreground", "--socket", self.socket, "--log-level", log_level,
                     "--state-dir", self.state]
        self.cfg = None
        if config is not None:
            self.cfg = os.path.join(self.dir, "flashd.conf")
            with open(self.cfg, "w") as f:
                f.write(config)
            self.args += ["--config", self.cfg]
        self.env = dict(os.environ)
        self.lock = None
        if private_locks:
            self.lock = self.env["FLASHD_LOCK_DIR"] = os.path.join(self.dir, "lock")
            os.makedirs(self.lock, exist_ok=True)
        self.env.update(extra_env or {})
        self.logpath = os.path.join(self.dir, "flashd.log")
        self.logf = open(self.logpath, "a+")
        self.proc = None
        if start:
            self.start()

    def start(self):
        """Starts flashd (again) and waits for its socket."""
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        self.proc = subprocess.Popen(self.args, stdout=self.logf, stderr=self.logf,
                                     env=self.env)
        deadline = time.monotonic() + SETUP_WAIT_S
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("flashd did not start:\n" + self.log_text())
            time.sleep(0.02)

    def restart(self, sig=signal.SIGTERM):
        """stop(sig) then start(); returns the stopped flashd's exit status."""
        rc = self.stop(sig)
        self.start()
        return rc

    def client(self, timeout=10.0):
        return Client(self.socket, timeout)

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def alive(self):
        try:
            c = self.client(5)
            r = c.call({"request": "hello"}, timeout=5)
            c.close()
            return r is not None and r.get("type") == "reply"
        except OSError:
            return False

    def log_text(self):
        self.logf.flush()
        with open(self.logpath) as f:
            return f.read()

    log = log_text

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Sends sig (SIGTERM) and waits; returns the exit status (ASan makes leaks
        a non-zero one; -9 when it had to be killed), None if never started."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -9
        return self.proc.returncode


def flashctl(path, sock, *args, timeout=30, stdin=subprocess.DEVNULL, uid=None, groups=()):
    """Runs flashctl; with uid, as that user (its gid the same number, groups as
    its only supplementary groups)."""
    cred = {} if uid is None else {"user": uid, "group": uid, "extra_groups": list(groups),
                                    "cwd": "/"}
    r = subprocess.run([os.path.abspath(path), "--socket", sock, *args], capture_output=True,
                       text=True, timeout=timeout, stdin=stdin, **cred)
    return r.returncode, r.stdout, r.stderr


def catalogue(flashctl_path):
    """The error catalogue as flashctl prints it: {id: {"exit": N, ...}}."""
    out = subprocess.run([flashctl_path, "errors", "--json"], stdout=subprocess.PIPE, text=True,
                         check=True).stdout
    return {e["id"]: e for e in (json.loads(line) for line in out.splitlines())}


# --- flashd-sim testbeds ------------------------------------------------------------------
#
# flashd-sim runs a command inside its umockdev testbed.  A driver runs itself
# there: the outer half (the meson test) starts the simulator, the inner half
# starts flashd and talks to it and to the simulator's control socket.

# Short per-phase serial timeouts (daemon/serial/serial_transport.c keys): faults end fast.
# serial_listen_ms: 300 ms was too tight for listening mode after 28800 under ASan
# (the retry went to DFU).
SERIAL_TIMEOUTS = """[timeouts]
serial_probe_ms = 1000
serial_listen_ms = 1500
serial_reply_ms = 2000
serial_slow_reply_ms = 3000
serial_prompt_ms = 2000
serial_header_ms = 2000
serial_block_ms = 1500
serial_final_ms = 5000
serial_reenumerate_ms = 8000
[daemon]
replug_timeout_s = 3
"""
# A device that leaves mid-job is waited for replug_timeout_s (the replug rule,
# daemon/jobs.c); tests that unplug for good keep that wait short.
REPLUG_SHORT = """[daemon]
replug_timeout_s = 3
"""


def run_in_sim(sim, devices, command, tmp, control=None, state_dir=None, sim_args=(),
               timeout=280, **run_args):
    """Runs command inside a flashd-sim testbed with the devices (spec strings);
    returns the CompletedProcess.  TMPDIR=tmp: a killed testbed leaves its
    umockdev directory there, not in /tmp."""
    argv = [sim, *sim_args]
    if state_dir:
        argv += ["--state-dir", state_dir]
    if control:
        argv += ["--control", control]
    for d in devices:
        argv += ["--device", d]
    argv += ["--", *command]
    return subprocess.run(argv, env=dict(os.environ, TMPDIR=tmp), timeout=timeout, **run_args)


def run_self_in_sim(script, sim, devices, flashd, fc, prefix, fixtures=(), timeout=280):
    """The outer half of a driver that runs itself inside a flashd-sim testbed with the
    devices (`script --inside FLASHD FLASHCTL WORK`, the simulator's control socket and
    state directory in WORK): skips as a whole when one of the fixtures is missing,
    keeps WORK for a post-mortem when the inner half fails, exits with its status."""
    for f in fixtures:
        fixture(f)
    work = tempfile.mkdtemp(prefix=prefix)
    st = os.path.join(work, "sim-state")
    os.mkdir(st)
    r = run_in_sim(sim, devices,
                   [sys.executable, os.path.abspath(script), "--inside", flashd, fc, work],
                   work, control=os.path.join(work, "control.sock"), state_dir=st,
                   timeout=timeout)
    if r.returncode == 0:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("# work directory kept: %s" % work)
    sys.exit(r.returncode)


def modules_of(facts):
    """A device's installed modules, {(function, index): version}."""
    return {(m["function"], m["index"]): m["version"] for m in (facts or {}).get("modules", [])}


class SimControl:
    """flashd-sim's control socket: ctl(cmd="state") returns the reply object.
    Connects on first use (the simulator may still be starting)."""

    def __init__(self, path):
        self.path = path
        self.f = None

    def __call__(self, **cmd):
        if self.f is None:
            deadline = time.monotonic() + SETUP_WAIT_S
            while True:
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect(self.path)
                    break
                except OSError:
                    s.close()
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            self.f = s.makefile("rw")
        self.f.write(json.dumps(cmd) + "\n")
        self.f.flush()
        return json.loads(self.f.readline())


class Testbed:
    """The inner half of a plan-driven driver (test_serial.py, test_dfu.py,
    test_probe.py): flashd with its socket, state and a private lock directory
    in the plan's work directory (every testbed has its own /dev/ttyACM0, and the
    shared /run/lock would make parallel tests see each other's ports as held),
    the simulator's control socket, and flashctl."""

    def __init__(self, plan_path, config=None, flashctl_timeout=120, record_exit=True):
        self.plan = json.load(open(plan_path))
        self.record_exit = record_exit  # results end with {"flashd_exit": status}
        self.work = self.plan["work"]
        self.sock = os.path.join(self.work, "flashd.sock")
        self.lock_dir = os.path.join(self.work, "lock")
        self.flashctl_timeout = flashctl_timeout
        os.mkdir(self.lock_dir)
        args = [self.plan["flashd"], "--foreground", "--socket", self.sock,
                "--state-dir", os.path.join(self.work, "flashd-state"), "--log-level", "debug"]
        if config is not None:
            cfg = os.path.join(self.work, "flashd.conf")
            with open(cfg, "w") as f:
                f.write(config)
            args += ["--config", cfg]
        log = open(os.path.join(self.work, "flashd.log"), "w")
        self.flashd = subprocess.Popen(args, stdout=log, stderr=log,
                                       env=dict(os.environ, FLASHD_LOCK_DIR=self.lock_dir))
        self.ctl = SimControl(self.plan["control"])
        self.results = []

    def flashctl(self, *args, timeout=None):
        return subprocess.run([self.plan["flashctl"], "--socket", self.sock, *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout or self.flashctl_timeout)

    def flashctl_popen(self, *args, **popen_args):
        return subprocess.Popen([self.plan["flashctl"], "--socket", self.sock, *args],
                                stdout=subprocess.PIPE, text=True, **popen_args)

    def listing(self):
        """flashd's devices ([] while it is not answering yet)."""
        if not os.path.exists(self.sock):
            return []
        p = self.flashctl("--json", "list")
        return json.loads(p.stdout.splitlines()[0])["devices"] if p.returncode == 0 else []

    def wait_devices(self, timeout=SETUP_WAIT_S):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len([d for d in self.listing() if d["present"]]) >= self.plan["n_devices"]:
                return
            time.sleep(0.1)
        raise SystemExit("flashd did not list %d devices" % self.plan["n_devices"])

    def run(self, do_step):
        """Runs the plan's steps once flashd lists the devices: "ctl" (a simulator
        command) and "sleep" here, any other through do_step(step) -> result; a
        step with "settle" then waits until the simulator is idle.  Stops flashd
        and writes results.json whatever happens."""
        try:
            self.wait_devices()
            for step in self.plan["steps"]:
                if "ctl" in step:
                    self.results.append(self.ctl(**step["ctl"]))
                elif "sleep" in step:
                    time.sleep(step["sleep"])
                    self.results.append({})
                else:
                    self.results.append(do_step(step))
                if step.get("settle"):
                    self.ctl(cmd="wait-idle")
        finally:
            self.flashd.send_signal(signal.SIGTERM)
            try:
                self.flashd.wait(10)
            except subprocess.TimeoutExpired:
                self.flashd.kill()
            if self.record_exit:
                self.results.append({"flashd_exit": self.flashd.returncode})
            with open(os.path.join(self.work, "results.json"), "w") as f:
                json.dump(self.results, f)


class Failed(Exception):
    """A failed check in a plan-driven driver."""


def check(cond, msg):
    if not cond:
        raise Failed(msg)


def sim_fixture(rel, tap=True):
    """A fixture module's path; skips the whole driver when it is missing."""
    path = os.path.join(FIXTURES, "modules", rel)
    if not os.path.exists(path):
        if tap:
            print("1..0 # SKIP fixture %s missing (%s)" % (path, MISSING_HINT))
            sys.exit(0)
        print("SKIP: fixture %s missing (%s)" % (path, MISSING_HINT))
        sys.exit(77)
    return path


def run_testbed(sim, flashd, flashctl_path, script, top, devices, steps, sim_args=(),
                n_devices=None, command=None, timeout=150, log_tail=4000):
    """One testbed of a plan-driven driver: writes the plan, runs `script --inner
    PLAN` (or command + [PLAN]) inside flashd-sim and returns (step results, the
    simulator's state document, the work directory, flashd's log)."""
    work = tempfile.mkdtemp(dir=top)
    sdir = os.path.join(work, "sim-state")
    os.mkdir(sdir)
    plan = {"work": work, "flashd": flashd, "flashctl": flashctl_path, "steps": steps,
            "control": os.path.join(work, "sim.sock"), "state_dir": sdir,
            "n_devices": len(devices) if n_devices is None else n_devices}
    plan_path = os.path.join(work, "plan.json")
    with open(plan_path, "w") as f:
        json.dump(plan, f)
    cmd = (command or [sys.executable, os.path.abspath(script), "--inner"]) + [plan_path]
    p = run_in_sim(sim, devices, cmd, work, control=plan["control"], state_dir=sdir,
                   sim_args=sim_args, timeout=timeout, stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT, text=True)
    logpath = os.path.join(work, "flashd.log")
    log = open(logpath).read() if os.path.exists(logpath) else ""
    check(p.returncode == 0, "testbed exited %d:\n%s\n%s" % (p.returncode, p.stdout,
                                                             log[-log_tail:]))
    with open(os.path.join(work, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(sdir, "state.json")) as f:
        doc = json.load(f)
    doc["_dir"] = sdir
    return results, doc, work, log


def sim_device(doc, name):
    """A device of the simulator's state document, by its spec name."""
    return [d for d in doc["devices"] if d["name"] == name][0]


def job_end(res):
    """The job-ended event of a `flashctl --json flash` run ({"rc", "lines"})."""
    ends = [line for line in res["lines"] if line.get("event") == "job-ended"]
    check(len(ends) == 1, "no job-ended event (rc %d): %s %s"
          % (res["rc"], res["lines"], res.get("stderr")))
    return ends[0]


def expect_done(res, log, outcome=None, log_tail=4000):
    end = job_end(res)
    check(end["result"] == "done", "job failed: %s\n%s"
          % (json.dumps(end.get("error")), log[-log_tail:]))
    check(res["rc"] == 0, "flashctl exit %d" % res["rc"])
    if outcome:
        check(end.get("outcome") == outcome, "outcome %s, expected %s"
              % (end.get("outcome"), outcome))
    return end


def expect_error(res, code, log, errors, results=("failed",), log_tail=4000):
    """The job ended with error code (one of results), and flashctl exited
    with the status errors (the catalogue) gives it."""
    end = job_end(res)
    err = end.get("error") or {}
    check(end["result"] in results and err.get("code") == code, "expected %s, got %s %s\n%s"
          % (code, end["result"], json.dumps(err), log[-log_tail:]))
    check(code in errors, "%s is not in the catalogue" % code)
    check(res["rc"] == errors[code]["exit"], "flashctl exit %d, catalogue says %d"
          % (res["rc"], errors[code]["exit"]))
    check(err.get("message"), "error without a message")
    return err


def make_module(start, function, index, version, platform, deps, payload_len):
    """A valid module file (docs/device/module-format.md#prefix, docs/device/module-format.md#suffix-and-checksums): prefix, payload, 36-byte suffix, CRC-32 (BE)."""
    import hashlib
    import struct
    import zlib
    total = 24 + payload_len + 36 + 4
    d = list(deps) + [(0, 0, 0)] * (2 - len(deps))
    prefix = struct.pack("<IIBBHHBBBBHBBH", start, start + total - 4, 0, 0, version, platform,
                         function, index, d[0][0], d[0][1], d[0][2], d[1][0], d[1][1], d[1][2])
    body = prefix + bytes((i * 13 + 7) & 0xff for i in range(payload_len)) + b"\0\0"
    body += hashlib.sha256(body).digest() + struct.pack("<H", 36)
    return body + struct.pack(">I", zlib.crc32(body) & 0xffffffff)


def run_tests(tests, names):
    """Runs the named test functions of a plan-driven driver; TAP; exits."""
    failed = 0
    for i, name in enumerate(names, 1):
        t0 = time.monotonic()
        try:
            tests[name]()
            print("ok %d - %s (%.1f s)" % (i, name, time.monotonic() - t0), flush=True)
        except Failed as e:
            failed += 1
            print("not ok %d - %s" % (i, name), flush=True)
            for line in str(e).splitlines():
                print("#   " + line, flush=True)
    print("1..%d" % len(names))
    sys.exit(1 if failed else 0)

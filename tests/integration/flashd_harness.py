"""Test harness for flashd integration tests (Python 3 standard library only).

Starts the real flashd on a private socket, speaks the wire protocol
(proto/PROTOCOL.md) including fd passing, and reports TAP.
"""
import array
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

FIXTURES = os.environ.get("FLASHD_FIXTURES", "")
BUILD = os.environ.get("FLASHD_BUILD_ROOT", "")


def fixture(path):
    return os.path.join(FIXTURES, "modules", path)


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
    def __init__(self, flashd, config=None, extra_env=None, log_level="info"):
        self.dir = tempfile.mkdtemp(prefix="flashd-test-")
        self.socket = os.path.join(self.dir, "flashd.sock")
        args = [flashd, "--foreground", "--socket", self.socket, "--log-level", log_level,
                "--state-dir", os.path.join(self.dir, "state")]
        if config is not None:
            cfg = os.path.join(self.dir, "flashd.conf")
            with open(cfg, "w") as f:
                f.write(config)
            args += ["--config", cfg]
        env = dict(os.environ)
        env.update(extra_env or {})
        self.log = open(os.path.join(self.dir, "flashd.log"), "w+")
        self.proc = subprocess.Popen(args, stderr=self.log, env=env)
        deadline = time.monotonic() + 20
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("flashd did not start:\n" + self.log_text())
            time.sleep(0.02)

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
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        """SIGTERM; returns the exit status (ASan makes leaks a non-zero one)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
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

"""Helpers for the CDC integration tests that run under the real flashd-sim."""
import json
import os
import socket
import subprocess
import sys
import tempfile

SKIP = 77


def find_sim():
    path = os.environ.get("FLASHD_SIM") or os.path.join(
        os.environ.get("FLASHD_BUILD_ROOT", ""), "tests", "sim", "flashd-sim")
    if not os.access(path, os.X_OK):
        print(f"SKIP: flashd-sim not built ({path})")
        sys.exit(SKIP)
    return path


def fixture(rel):
    path = os.path.join(os.environ["FLASHD_FIXTURES"], "modules", rel)
    if not os.path.exists(path):
        print(f"SKIP: fixture {path} missing")
        sys.exit(SKIP)
    return path


def workdir():
    d = tempfile.mkdtemp(prefix="flashd-cdc-")
    # A killed testbed leaves /tmp/umockdev.* behind: keep them in our dir.
    os.environ["TMPDIR"] = d
    return d


def run_sim(devices, command, state_dir=None, timeout=120, extra=()):
    """Runs COMMAND in a flashd-sim testbed, then lets the simulator settle.

    flashd-sim writes state.json the moment COMMAND exits, but a device that
    ACKed a YMODEM update only applies it at its reset 1.1 s later (docs/device/ymodem.md#end-of-transfer: 1 s,
    restart line, 100 ms; the bootloader copies the module, docs/device/console.md#other-observations).  A sender
    may exit at the ACK (particle-cli does), so COMMAND runs under this module's
    --settle wrapper, which waits for the simulator's wait-idle (no reset,
    re-enumeration or console delay pending) before it exits with COMMAND's
    status."""
    args = [find_sim()]
    for spec in devices:
        args += ["--device", spec]
    args += ["--time-scale", "0"]
    if state_dir:
        args += ["--state-dir", state_dir]
    with tempfile.TemporaryDirectory(prefix="flashd-cdc-ctl-") as ctl:
        sock = os.path.join(ctl, "control")
        args += ["--control", sock]
        args += list(extra)
        args += ["--", sys.executable, os.path.abspath(__file__), "--settle", sock, "--"]
        args += list(command)
        print("+", " ".join(args), flush=True)
        return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, text=True, errors="replace")


def load_state(state_dir):
    with open(os.path.join(state_dir, "state.json")) as f:
        return json.load(f)


def read_flash(state_dir, dev, address, length):
    """Bytes at a flash address, from the region dumps of state.json."""
    for r in dev["regions"]:
        if r["base"] <= address and address + length <= r["base"] + r["size"]:
            with open(os.path.join(state_dir, r["dump"]), "rb") as f:
                f.seek(address - r["base"])
                return f.read(length)
    raise AssertionError(f"no region holds 0x{address:x}+{length}")


def check(cond, msg):
    if not cond:
        print("FAIL:", msg)
        sys.exit(1)


def settle_main(argv):
    """simlib.py --settle SOCK -- COMMAND...: COMMAND, then wait-idle on SOCK."""
    sock, command = argv[0], argv[2:]
    rc = subprocess.call(command)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock)
        s.sendall(b'{"cmd":"wait-idle"}\n')
        reply = s.makefile("rb").readline()
    if not json.loads(reply or b"{}").get("ok"):
        print(f"simlib --settle: {reply!r}", flush=True)
        return 125
    return rc


if __name__ == "__main__" and sys.argv[1:2] == ["--settle"]:
    sys.exit(settle_main(sys.argv[2:]))

"""Helpers for the CDC integration tests that run under the real flashd-sim."""
import json
import os
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
    args = [find_sim()]
    for spec in devices:
        args += ["--device", spec]
    args += ["--time-scale", "0"]
    if state_dir:
        args += ["--state-dir", state_dir]
    args += list(extra)
    args += ["--"] + list(command)
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

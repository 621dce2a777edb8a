#!/usr/bin/env python3
"""flashctl as people and IDEs meet it (issue 8), against the real flashd under
flashd-sim: the live progress display on a pseudo-terminal, plain lines without
one, NO_COLOR, Ctrl-C, rendered errors and exit statuses for every error class
we can produce, check (dry run), info, zip bundles, and the Python example client.

usage: test_client.py FLASHD_SIM FLASHD FLASHCTL GROUP     (GROUP: flashctl | example)
       test_client.py --inside GROUP FLASHD FLASHCTL       (runs inside flashd-sim)
"""
import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
import zipfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from flashd_harness import Daemon, Tap, catalogue, fixture, run_in_sim  # noqa: E402

SRC = os.environ.get("FLASHD_SOURCE_ROOT",
                     os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
EXAMPLE = os.path.join(SRC, "client", "examples", "flashd_client.py")
PHOTON_APP = fixture("photon/photon_tinker.bin")
ELECTRON_APP = fixture("electron/electron_tinker.bin")
NOT_MODULE = fixture("not-modules/ota-flag-a5.bin")
PHOTON_DOCTOR = fixture("photon/photon_doctor.bin")
ESC = "\x1b"
CATALOGUE = {}


def run(fc, sock, *args, env=None, timeout=60):
    e = dict(os.environ)
    e.pop("NO_COLOR", None)
    e.update(env or {})
    r = subprocess.run([fc, "--socket", sock, *args], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL, env=e)
    return r.returncode, r.stdout, r.stderr


class Pty:
    """flashctl on a pseudo-terminal (120 columns): stdout and stderr both go to it."""

    def __init__(self, fc, sock, *args, env=None):
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        e = dict(os.environ, TERM="xterm")
        e.pop("NO_COLOR", None)
        e.update(env or {})
        self.proc = subprocess.Popen([fc, "--socket", sock, *args], stdin=slave, stdout=slave,
                                     stderr=slave, env=e, close_fds=True)
        os.close(slave)
        self.out = b""

    def read_until(self, pattern, timeout=30):
        """Reads until pattern (regex on the text so far) matches or the end."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pattern and re.search(pattern, self.text()):
                return True
            r, _, _ = select.select([self.master], [], [], 0.1)
            if not r:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the last writer has closed the terminal
                return bool(pattern and re.search(pattern, self.text()))
            if not chunk:
                return False
            self.out += chunk
        return False

    def finish(self, timeout=60):
        self.read_until(None, timeout)
        rc = self.proc.wait(timeout)
        os.close(self.master)
        return rc, self.text()

    def text(self):
        return self.out.decode("utf-8", "replace")


def devices(fc, sock):
    rc, out, _ = run(fc, sock, "--json", "list")
    return json.loads(out)["devices"] if rc == 0 else []


def wait_devices(fc, sock, n):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        devs = [d for d in devices(fc, sock) if d["present"]]
        if len(devs) >= n:
            return {d["usb"]["port"]: d["key"] for d in devs}
        time.sleep(0.1)
    raise SystemExit("flashd did not list %d devices" % n)


def exit_of(code):
    return CATALOGUE[code]["exit"]


# --- flashctl --------------------------------------------------------------------------

def flashctl_tests(tap, fc, d, work):
    sock = d.socket
    keys = wait_devices(fc, sock, 2)
    listening, dfu = keys["1-1"], keys["1-2"]

    # Plain lines when stdout is not a terminal: a sentence per phase, no escapes.
    rc, out, err = run(fc, sock, "flash", PHOTON_APP, "--device", dfu)
    tap.check("flash without a terminal: exit 0 and done: verified or written",
              rc == 0 and re.search(dfu + r": done: (verified|written-not-verified)", out), out + err)
    tap.check("flash without a terminal: one plain line per phase with bytes, no escape codes",
              ESC not in out and re.search(dfu + r": writing +100%  \d+ B / \d+ B", out)
              and (dfu + ": checking the files against the device") in out, out)

    # The live display on a terminal: redrawn in place, bar, rate, ETA or 100 %.
    p = Pty(fc, sock, "flash", PHOTON_APP, "--device", listening)
    rc, text = p.finish()
    tap.check("flash on a pty: exit 0, redrawn in place (cursor up, clear line)",
              rc == 0 and (ESC + "[1A") in text and (ESC + "[2K") in text, repr(text[-2000:]))
    tap.check("flash on a pty: a bar with percent, bytes and rate",
              re.search(r"writing +\[#{20}\] 100%  \d+ B / \d+ B  [\d.]+ (B|KiB|MiB)/s", text),
              repr(text[-3000:]))
    tap.check("flash on a pty: the reboot shows seconds waited against the limit",
              re.search(r"waiting for the device to come back \(\d+/45 s\)", text), repr(text[-3000:]))
    tap.check("flash on a pty: the final line is green without NO_COLOR",
              re.search(re.escape(ESC + "[32m") + re.escape(listening) + r" +done: (verified|written-not-verified)", text),
              repr(text[-1000:]))

    # Errors: what failed, why (facts), what to do; colours on a terminal, none with NO_COLOR.
    p = Pty(fc, sock, "flash", ELECTRON_APP, "--device", listening)
    rc, text = p.finish()
    tap.check("wrong platform on a pty: exit 4, red error heading",
              rc == exit_of("wrong-platform") and (ESC + "[1;31merror") in text, repr(text[-2000:]))
    p = Pty(fc, sock, "flash", ELECTRON_APP, "--device", listening, env={"NO_COLOR": "1"})
    rc, text = p.finish()
    tap.check("NO_COLOR on a pty: no colour codes, the display is still live",
              rc == 4 and not re.search(re.escape(ESC) + r"\[[0-9;]*m", text)
              and "error [wrong-platform]" in text, repr(text[-2000:]))

    rc, out, err = run(fc, sock, "flash", ELECTRON_APP, "--device", listening)
    tap.check("wrong platform: facts name both platforms with ids, and a hint",
              rc == 4 and "error [wrong-platform]" in err
              and re.search(r"file built for +Electron \(platform id 10\)", err)
              and re.search(r"device is +Photon \(platform id 6\)", err) and "  hint: " in err, err)
    tap.check("wrong platform: the display says where it stopped",
              re.search(listening + r": failed while checking: wrong-platform", out), out)
    # (the device runs the application flashed above: read by control request, the
    # refusal comes with no mode switch at all)
    tap.check("plain phase lines are one sentence each; a refusal on a running device "
              "switches no mode",
              (listening + ": checking the files against the device\n") in out
              and ": switching mode" not in out
              and "right mode" not in out and "checking checking" not in out, out)

    rc, out, err = run(fc, sock, "flash", NOT_MODULE, "--device", dfu)
    tap.check("not a module: exit 3, image-not-a-module with file and hint",
              rc == exit_of("image-not-a-module") and "error [image-not-a-module]" in err
              and "ota-flag-a5.bin" in err and "hint:" in err, (rc, err))

    corrupt = os.path.join(work, "photon_tinker-corrupt.bin")
    data = bytearray(open(PHOTON_APP, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(corrupt, "wb").write(data)
    rc, out, err = run(fc, sock, "flash", corrupt, "--device", dfu)
    tap.check("corrupt: exit 3, image-corrupt with both CRCs as facts",
              rc == exit_of("image-corrupt") and "error [image-corrupt]" in err
              and "CRC-32 stored in file" in err and "CRC-32 of contents" in err, (rc, err))

    bundle = os.path.join(work, "app-with-assets.zip")
    with zipfile.ZipFile(bundle, "w") as z:
        z.write(PHOTON_APP, "photon_tinker.bin")
        z.writestr("assets/logo.png", b"\x89PNG")
    # The Photon Tinker lists no assets: the bundle's logo.png is not the application's.
    rc, out, err = run(fc, sock, "flash", bundle, "--device", dfu)
    tap.check("zip bundle with an asset its application does not list: exit 3, "
              "bundle-asset-mismatch naming the asset and the hint",
              rc == exit_of("bundle-asset-mismatch") and "error [bundle-asset-mismatch]" in err
              and "logo.png" in err and "hint:" in err, (rc, err))
    rc, out, err = run(fc, sock, "--json", "check", bundle, "--device", dfu)
    obj = json.loads(out) if out.startswith("{") else {}
    tap.check("zip bundle --json: one error object with detail.problem 'extra'",
              rc == 3 and obj.get("code") == "bundle-asset-mismatch"
              and obj.get("detail", {}).get("problem") == "extra", out)

    rc, out, err = run(fc, sock, "flash", PHOTON_APP, "--device", "0123456789abcdef01234567")
    tap.check("device not found: exit 5 with the target as a fact",
              rc == exit_of("device-not-found") and "error [device-not-found]" in err
              and re.search(r"target +0123456789abcdef01234567", err), (rc, err))

    rc, out, err = run(fc, sock, "flash", PHOTON_APP)
    tap.check("ambiguous target: exit 5, both candidates listed with platform and mode",
              rc == exit_of("ambiguous-target") and "error [ambiguous-target]" in err
              and listening in err and dfu in err and "photon, " in err and "hint:" in err, (rc, err))

    rc, out, err = run(fc, "/nonexistent/flashd.sock", "flash", PHOTON_APP)
    tap.check("daemon unreachable: exit 10, socket and system error as facts",
              rc == exit_of("daemon-unreachable") and "error [daemon-unreachable]" in err
              and "/nonexistent/flashd.sock" in err and "No such file or directory" in err, (rc, err))

    for args in (["flash"], ["nonsense-verb"], ["check"], ["info", "a", "b"],
                 ["flash", PHOTON_APP, "--all"]):
        rc, out, err = run(fc, sock, *args)
        tap.check("usage error exits 2: flashctl " + " ".join(a.split("/")[-1] for a in args),
                  rc == exit_of("usage") and "error [usage]" in err, (rc, err))

    # check: "would this flash, and if not why", for IDEs and CI.
    rc, out, err = run(fc, sock, "check", PHOTON_APP, "--device", dfu)
    tap.check("check of a fitting file: exit 0, ok line names the device, platform and OS",
              rc == 0 and re.search(r"ok: .*photon_tinker.bin would flash on " + dfu
                                    + r" \(Photon, Device OS 2\.2\.0\)", out), (rc, out, err))
    rc, out, err = run(fc, sock, "check", ELECTRON_APP, "--device", dfu)
    tap.check("check of a wrong-platform file: exit 4, 'would not flash' and the reason",
              rc == 4 and "would not flash on " + dfu in out and "error [wrong-platform]" in err,
              (rc, out, err))
    rc, out, err = run(fc, sock, "--json", "check", PHOTON_APP, "--device", dfu)
    ends = [json.loads(l) for l in out.splitlines() if '"job-ended"' in l]
    tap.check("check --json: the job ends done with outcome preflight-ok",
              rc == 0 and ends and ends[0]["outcome"] == "preflight-ok", out)

    # info: everything known about a device.
    rc, out, err = run(fc, sock, "info", dfu)
    tap.check("info: platform, id, mode, Device OS of the DFU device",
              rc == 0 and re.search(r"platform +Photon \(photon, platform id 6", out)
              and re.search(r"mode +(dfu|listening|normal)", out)
              and re.search(r"Device OS +2\.2\.0", out), out + err)
    tap.check("info: installed modules with their four verdicts",
              re.search(r"system part 1 +v\d+", out)
              and "integrity ok, range ok, platform ok, dependencies ok" in out, out)
    rc, out, err = run(fc, sock, "--json", "info", dfu)
    obj = json.loads(out) if out.startswith("{") else {}
    tap.check("info --json: the device-info reply with modules",
              rc == 0 and obj.get("request") == "device-info"
              and isinstance(obj["device"].get("modules"), list), out)
    rc, out, err = run(fc, sock, "info")
    tap.check("info without DEVICE and two devices: ambiguous-target (exit 5)",
              rc == 5 and "error [ambiguous-target]" in err, (rc, err))
    rc, out, err = run(fc, sock, "info", "nosuchdevice")
    tap.check("info of an unknown device: device-not-found (exit 5)",
              rc == 5 and "error [device-not-found]" in err, (rc, err))

    # Several devices: one line per device, each ends on its own.
    p = Pty(fc, sock, "flash", PHOTON_APP, "--platform", "photon", "--all")
    rc, text = p.finish(90)
    tap.check("--all on a pty: one final line per device",
              rc == 0 and re.search(re.escape(listening) + r" +done: ", text)
              and re.search(re.escape(dfu) + r" +done: ", text), repr(text[-3000:]))

    # Ctrl-C while waiting: the job is cancelled, the device untouched, exit 9.
    p = Pty(fc, sock, "flash", PHOTON_APP, "--device", "abcdefabcdefabcdefabcdef", "--wait=30")
    seen = p.read_until(r"waiting +for the device to appear \(\d+/30 s\)", 20)
    tap.check("waiting for a device: the pty shows seconds waited against --wait", seen,
              repr(p.text()))
    p.read_until(r"\(1/30 s\)", 5)
    tap.check("waiting for a device: the seconds move on without events",
              re.search(r"\(1/30 s\)", p.text()), repr(p.text()[-500:]))
    p.proc.send_signal(signal.SIGINT)
    rc, text = p.finish()
    text = re.sub(re.escape(ESC) + r"\[[0-9;]*m", "", text)
    tap.check("Ctrl-C: exit 9 (cancelled), the job is cancelled cleanly",
              rc == exit_of("cancelled") and "cancelling" in text and "error [cancelled]" in text,
              repr(text[-2000:]))
    tap.check("Ctrl-C: says what state the device was left in and how to recover",
              "device left:" in text and "untouched" in text and "to recover:" in text,
              repr(text[-2000:]))
    rc, out, err = run(fc, sock, "--json", "jobs")
    jobs = json.loads(out)["jobs"] if rc == 0 else []
    tap.check("Ctrl-C: the daemon ended the job as cancelled",
              jobs and jobs[-1]["result"] == "cancelled", out)


# --- Ctrl-C while writing ----------------------------------------------------------------

ARGON_SYSTEM = fixture("argon/argon-system-part1@2.2.0.bin")
SYSTEM_BASE = 0x30000  # Device OS 1.x-3.0 Gen 3 layout (docs/device/memory-maps.md#gen-3)


def ctrlc_tests(tap, fc, d, work):
    """A DFU flash of a large system part at real-device speed (--time-scale 1): Ctrl-C
    once the display shows writing."""
    dev = wait_devices(fc, d.socket, 1)["1-1"]
    # A path with a space: the advice's command must survive a copy and paste into a shell.
    path = os.path.join(work, "argon system part.bin")
    shutil.copy(ARGON_SYSTEM, path)
    size = os.path.getsize(path)
    p = Pty(fc, d.socket, "flash", path, "--device", dev)
    # the live line: "writing ... NN%  X KiB / Y KiB" with some bytes written
    seen = p.read_until(r"writing\b.*?\b(?:[1-9]\d*|0\.\d*[1-9]\d*) ?(?:B|KiB|kB|KB)\b", 90)
    t0 = time.monotonic()
    tap.check("Ctrl-C while writing: the pty shows the write under way", seen,
              repr(p.text()[-1500:]))
    p.proc.send_signal(signal.SIGINT)
    rc, text = p.finish(60)
    took = time.monotonic() - t0
    text = re.sub(re.escape(ESC) + r"\[[0-9;]*[A-Za-z]", "", text)
    tap.check("Ctrl-C while writing: exit 9 (cancelled), cancelled cleanly within 10 s",
              rc == exit_of("cancelled") and "cancelling" in text and "error [cancelled]" in text
              and took < 10, "rc %d after %.1f s: %r" % (rc, took, text[-2500:]))
    rc2, out, _ = run(fc, d.socket, "--json", "jobs")
    job = json.loads(out)["jobs"][-1] if rc2 == 0 else {}
    err = (job.get("error") or {})
    detail = err.get("detail") or {}
    chunk, address = detail.get("chunk"), detail.get("address")
    tap.check("Ctrl-C while writing: the job stopped at a chunk boundary of the download",
              job.get("result") == "cancelled" and detail.get("phase") == "download"
              and isinstance(chunk, int) and chunk > 0
              and address == SYSTEM_BASE + chunk * 4096 < SYSTEM_BASE + size
              and detail.get("bytes_sent") == chunk * 4096, json.dumps(job)[:2000])
    partial = job.get("partial") or {}
    tap.check("Ctrl-C while writing: the daemon's job record says where the write stopped",
              partial.get("state") == "partly-written" and partial.get("module") == "system part 1"
              and partial.get("file") == os.path.basename(path)
              and partial.get("start") == SYSTEM_BASE and partial.get("end") == SYSTEM_BASE + size
              and partial.get("address") == address and partial.get("chunk") == chunk
              and partial.get("bytes_written") == detail.get("bytes_sent")
              and partial.get("size") == size and "DFU mode" in partial.get("next_boot", ""),
              json.dumps(partial))
    m = re.search(r"device left: +(.*?)\n +to recover: +(.*?)\n", text, re.S)
    left, todo = (m.group(1), m.group(2)) if m else ("", "")
    tap.check("Ctrl-C while writing: the advice names the partly written module and where it stopped",
              "system part 1 partly written" in left and "0x%08x" % address in left
              and "0x%08x-0x%08x" % (SYSTEM_BASE, SYSTEM_BASE + size) in left
              and "the first %d of %d bytes" % (detail.get("bytes_sent", -1), size) in left
              and "stays in DFU mode" in left, repr(text[-2500:]))
    want = "flashctl --socket %s flash '%s' --device %s" % (d.socket, path, dev)
    tap.check("Ctrl-C while writing: the advice gives the exact command to flash again",
              want in todo, "want %r in %r" % (want, todo))
    # the device holds what the advice says: DFU mode, a partly written system part
    info = run(fc, d.socket, "--json", "list")[1]
    listed = [x for x in json.loads(info)["devices"] if x["key"] == dev]
    tap.check("Ctrl-C while writing: the device is left in DFU mode",
              listed and listed[0]["mode"] == "dfu", info)
    print("# cancelled %.2f s after Ctrl-C at chunk %s (0x%x)" % (took, chunk, address or 0))
    for line in text.strip().splitlines()[-6:]:
        print("#   " + line)


# --- the example client ------------------------------------------------------------------

def example_tests(tap, fc, d, work):
    keys = wait_devices(fc, d.socket, 1)
    dfu = keys["1-2"] if "1-2" in keys else list(keys.values())[0]
    r = subprocess.run([sys.executable, EXAMPLE, "--socket", d.socket, "--device", dfu, PHOTON_APP],
                       capture_output=True, text=True, timeout=90)
    tap.check("example client flashes a file with fd passing: exit 0, done",
              r.returncode == 0 and re.search(r"done: (verified|written-not-verified)", r.stdout),
              r.stdout + r.stderr)
    tap.check("example client shows progress per phase with percent",
              "writing" in r.stdout and "100%" in r.stdout, r.stdout)
    r = subprocess.run([sys.executable, EXAMPLE, "--socket", d.socket, "--device", dfu, ELECTRON_APP],
                       capture_output=True, text=True, timeout=90)
    tap.check("example client: a refused file exits with the catalogue status (4) and the hint",
              r.returncode == 4 and "wrong-platform" in r.stderr and "hint:" in r.stderr,
              r.stdout + r.stderr)
    # Without fd passing: the bytes go in-band (upload-begin, upload-chunk); another
    # application than the one just flashed, so that it is written, not already installed.
    r = subprocess.run([sys.executable, EXAMPLE, "--socket", d.socket, "--device", dfu, "--upload",
                        PHOTON_DOCTOR], capture_output=True, text=True, timeout=90)
    tap.check("example client --upload flashes the file sent in-band: exit 0, written, done",
              r.returncode == 0 and re.search(r"done: (verified|written-not-verified)", r.stdout)
              and re.search(r"upload photon_doctor.bin +100%", r.stdout)
              and re.search(r"writing +100%", r.stdout), r.stdout + r.stderr)
    r = subprocess.run([sys.executable, EXAMPLE, "--socket", d.socket, "--device", dfu, "--upload",
                        ELECTRON_APP], capture_output=True, text=True, timeout=90)
    tap.check("example client --upload: the Electron build exits 4 with wrong-platform",
              r.returncode == 4 and "wrong-platform" in r.stderr, r.stdout + r.stderr)


def inside(group, flashd, fc):
    tap = Tap()
    global CATALOGUE
    CATALOGUE = catalogue(fc)
    work = tempfile.mkdtemp(prefix="flashctl-test-")
    d = Daemon(flashd, private_locks=True)
    try:
        {"flashctl": flashctl_tests, "example": example_tests,
         "ctrlc-write": ctrlc_tests}[group](tap, fc, d, work)
    finally:
        rc = d.stop()
        tap.check("flashd stops cleanly", rc == 0, d.log_text()[-3000:])
        shutil.rmtree(work, ignore_errors=True)
    return tap


def outside(sim, flashd, fc, group):
    tmp = tempfile.mkdtemp(prefix="flashd-client-")
    devs = ["platform=photon,os=1.5.2,mode=listening,name=d1,port=1-1",
            "platform=photon,os=2.2.0,mode=dfu,name=d2,port=1-2"]
    sim_args = ()
    if group == "ctrlc-write":
        # real-device flash timings: writing a 460 KiB system part takes seconds
        devs = ["platform=argon,os=2.2.0,mode=dfu,name=a1,port=1-1"]
        sim_args = ("--time-scale", "1")
    r = run_in_sim(sim, devs, [sys.executable, os.path.abspath(__file__), "--inside", group,
                               flashd, fc], tmp, state_dir=os.path.join(tmp, "state"),
                   sim_args=sim_args)
    shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(r.returncode)


if __name__ == "__main__":
    if sys.argv[1] == "--inside":
        inside(*sys.argv[2:5]).done()
    else:
        outside(*sys.argv[1:5])

#!/usr/bin/env python3
"""The real flashd under flashd-sim: coldplug and hot-plug in `flashctl list`
and `flashctl watch`, replug (same port, another port, mode switch) keeps the
device's identity, and two devices with colliding serials stay two devices.

usage: test_devices.py FLASHD FLASHCTL FLASHD_SIM
(re-runs itself inside the simulator with --inside)
"""
import json
import os
import select
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flashd_harness import Daemon, SimControl, Tap, flashctl, run_in_sim  # noqa: E402

COLLIDING = "3c0021000d47353033320000"


class Watch:
    """`flashctl --json watch` as a subprocess, read line by line."""

    def __init__(self, flashctl_path, sock):
        self.p = subprocess.Popen([flashctl_path, "--socket", sock, "--json", "watch"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = b""

    def next(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.p.stdout], [], [], left)
            if r:
                chunk = os.read(self.p.stdout.fileno(), 65536)
                if not chunk:
                    return None
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def until(self, pred, timeout=15):
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.next(deadline - time.monotonic())
            if m is None:
                break
            seen.append(m)
            if pred(m):
                return m, seen
        return None, seen

    def stop(self):
        self.p.terminate()
        self.p.wait(10)


def devices(fc, sock):
    rc, out, err = flashctl(fc, sock, "--json", "list")
    return json.loads(out)["devices"] if rc == 0 else []


def wait_devices(fc, sock, pred, timeout=15):
    deadline = time.monotonic() + timeout
    devs = []
    while time.monotonic() < deadline:
        devs = devices(fc, sock)
        if pred(devs):
            return devs
        time.sleep(0.1)
    return devs


def is_event(name, key=None):
    return lambda m: (m.get("event") == name and
                      (key is None or m["device"]["key"] == key))


def inside(flashd, fc, control_path):
    tap = Tap()
    ctl = SimControl(control_path)
    d = Daemon(flashd, log_level="debug")
    try:
        devs = wait_devices(fc, d.socket, lambda x: len(x) == 1)
        ok = len(devs) == 1 and devs[0]["platform"] == "photon" and devs[0]["mode"] == "dfu"
        tap.check("coldplug: the DFU Photon present at start is listed", ok, devs)
        if not ok:
            return tap
        d1 = devs[0]
        tap.check("identity is the device id from the USB serial",
                  d1["key"] == d1["id"] and len(d1["id"]) == 24, d1)
        rc, out, _ = flashctl(fc, d.socket, "list")
        tap.check("flashctl list shows it in one line", rc == 0 and d1["key"] in out, out)

        w = Watch(fc, d.socket)
        first, _ = w.until(lambda m: m.get("request") == "list-devices")
        tap.check("watch starts with the current devices",
                  first and [x["key"] for x in first["devices"]] == [d1["key"]], first)

        r = ctl(cmd="plug", spec="platform=argon,mode=listening,os=4.0.1,name=d2,port=1-2")
        ev, seen = w.until(is_event("device-added"))
        ok = ev is not None and ev["device"]["platform"] == "argon"
        tap.check("hot-plug: watch shows device-added for the Argon", ok, (r, seen))
        d2 = ev["device"] if ok else {}
        devs = wait_devices(fc, d.socket, lambda x: len(x) == 2 and all(
            y["tty"] for y in x if y["platform"] == "argon"))
        tap.check("hot-plug: list shows both devices, the Argon with its tty", len(devs) == 2,
                  devs)
        argon = [x for x in devs if x["platform"] == "argon"]
        tap.check("a CDC device's mode stays unknown (never probed on its own)",
                  argon and argon[0]["mode"] == "unknown" and argon[0]["key"] == d2.get("key"),
                  argon)

        ctl(cmd="plug", spec="platform=photon,mode=dfu,name=d5,port=1-3")
        ev, seen = w.until(lambda m: m.get("event") == "device-added"
                           and m["device"]["usb"]["port"] == "1-3")
        d5 = ev["device"] if ev else {}
        ctl(cmd="unplug", name="d5")
        ev, seen = w.until(is_event("device-removed", d5.get("key")))
        tap.check("unplug: watch shows device-removed with the same key", ev is not None, seen)
        devs = wait_devices(fc, d.socket, lambda x: len(x) == 2)
        tap.check("unplug: list no longer shows it", len(devs) == 2, devs)

        ctl(cmd="replug", name="d1")
        ev, seen = w.until(is_event("device-added", d1["key"]))
        tap.check("replug into the same port keeps the identity",
                  ev is not None and ev["device"]["usb"]["port"] == d1["usb"]["port"], seen)

        ctl(cmd="replug", name="d1", port="1-5")
        ev, seen = w.until(is_event("device-added", d1["key"]))
        tap.check("replug into another port keeps the identity",
                  ev is not None and ev["device"]["usb"]["port"] == "1-5", seen)
        devs = wait_devices(fc, d.socket, lambda x: len(x) == 2 and any(
            y["usb"]["port"] == "1-5" for y in x))
        tap.check("... and it is still one device",
                  len([x for x in devs if x["key"] == d1["key"]]) == 1 and len(devs) == 2, devs)

        ctl(cmd="plug", spec=f"platform=photon,mode=dfu,name=d3,serial={COLLIDING},port=1-7")
        ctl(cmd="plug", spec=f"platform=photon,mode=dfu,name=d4,serial={COLLIDING},port=1-8")
        devs = wait_devices(fc, d.socket, lambda x: len(x) == 4)
        coll = [x for x in devs if x.get("id") == COLLIDING]
        tap.check("two devices with colliding serials stay two devices",
                  len(coll) == 2 and coll[0]["key"] != coll[1]["key"], devs)
        ctl(cmd="replug", name="d4")
        time.sleep(0.5)
        devs = wait_devices(fc, d.socket, lambda x: len(x) == 4)
        coll2 = sorted(x["key"] for x in devs if x.get("id") == COLLIDING)
        tap.check("... and each keeps its own key across a replug",
                  coll2 == sorted(x["key"] for x in coll), (coll, devs))

        rc, out, err = flashctl(fc, d.socket, "--json", "flash", "--platform", "photon",
                                "/dev/null")
        obj = json.loads(out) if out.strip() else {}
        tap.check("flash with an ambiguous target (no terminal) -> ambiguous-target, exit 5",
                  rc == 5 and obj.get("code") == "ambiguous-target"
                  and len(obj["detail"]["candidates"]) == 3, (rc, out, err))

        ctl(cmd="mode", name="d1", mode="listening")
        ev, seen = w.until(lambda m: m.get("event") in ("device-added", "device-changed")
                           and m["device"]["key"] == d1["key"]
                           and m["device"]["usb"]["pid"] == "c006")
        tap.check("mode switch DFU -> CDC (re-enumeration) keeps the identity",
                  ev is not None, seen)
        w.stop()
        tap.check("daemon exits cleanly", d.stop() == 0, d.log_text()[-2000:])
    finally:
        if d.proc.poll() is None:
            d.stop()
    return tap


def outside(flashd, fc, sim):
    tmp = tempfile.mkdtemp(prefix="flashd-devices-")
    control = os.path.join(tmp, "control.sock")
    r = run_in_sim(sim, ["platform=photon,mode=dfu,name=d1,port=1-1"],
                   [sys.executable, os.path.abspath(__file__), "--inside", flashd, fc, control],
                   tmp, control=control, timeout=170)
    sys.exit(r.returncode)


if __name__ == "__main__":
    if sys.argv[1] == "--inside":
        inside(*sys.argv[2:5]).done()
    else:
        outside(*sys.argv[1:4])

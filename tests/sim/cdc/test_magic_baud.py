#!/usr/bin/env python3
"""Magic bauds seen from the host (docs/device/console.md#magic-baud-rates): 14400 makes a running device reboot
into DFU — the CDC device (tty) goes away and the same device id comes back
with the DFU product id; 28800 enters listening mode without any
re-enumeration (the console then answers `v`); on 6.x 28800 does nothing."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simlib  # noqa: E402

SW = os.environ["CDC_SWITCH"]
DEV_ID = "e00fce68a1b2c3d4e5f60718"


def events(out):
    ev = []
    for line in out.splitlines():
        f = line.split()
        if len(f) == 6 and f[0] in ("add", "remove", "change", "bind", "unbind"):
            ev.append(tuple(f))
    return ev


work = simlib.workdir()

# 14400 → DFU: remove of the CDC device, add of the DFU device, same serial.
r = simlib.run_sim([f"platform=argon,mode=normal,os=4.0.1,id={DEV_ID}"],
                   [SW, "/dev/ttyACM0", "14400", "1500"])
print(r.stdout)
simlib.check(r.returncode == 0, f"14400: exit {r.returncode}")
ev = events(r.stdout)
usb = [e for e in ev if e[1] == "usb" and e[2] == "usb_device"]
removes = [e for e in usb if e[0] == "remove"]
adds = [e for e in usb if e[0] == "add"]
simlib.check(removes and removes[0][4] == "c00c" and removes[0][5] == DEV_ID,
             f"14400: no remove of the CDC device: {ev}")
simlib.check(adds and adds[-1][4] == "d00c" and adds[-1][5] == DEV_ID,
             f"14400: no add of the DFU device with the same id: {ev}")
simlib.check(ev.index(removes[0]) < ev.index(adds[-1]), f"14400: add before remove: {ev}")
tty_removed = [e for e in ev if e[0] == "remove" and e[1] == "tty"]
simlib.check(tty_removed, f"14400: the tty was not removed: {ev}")

# 28800 on 5.x → listening, no re-enumeration, the console answers.
r = simlib.run_sim([f"platform=argon,mode=normal,os=5.9.0,id={DEV_ID}"],
                   [SW, "/dev/ttyACM0", "28800", "500", "v"])
print(r.stdout)
simlib.check(r.returncode == 0, f"28800: exit {r.returncode}")
simlib.check(not [e for e in events(r.stdout) if e[0] in ("add", "remove")],
             f"28800: unexpected re-enumeration: {events(r.stdout)}")
simlib.check("reply: system firmware version: 5.9.0\\n\\r\\n" in r.stdout,
             "28800: console did not answer v")

# 28800 on 6.x: nothing happens, the application keeps the port.
r = simlib.run_sim([f"platform=argon,mode=normal,os=6.2.0,id={DEV_ID}"],
                   [SW, "/dev/ttyACM0", "28800", "500", "v"])
print(r.stdout)
simlib.check(r.returncode == 0, f"6.x 28800: exit {r.returncode}")
simlib.check("reply: \n" in r.stdout or r.stdout.rstrip().endswith("reply:"),
             "6.x: 28800 must not start the console")
print("ok")

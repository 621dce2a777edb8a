#!/usr/bin/env python3
"""lrzsz `sb --ymodem -k` (1 KiB blocks, a standard sender with real CRCs and
0x1A padding) delivers a Photon application into a listening-mode
flashd-sim device byte-identically.

lrzsz runs on pipes behind ttyrelay.py (docs/testing/umockdev.md#lrzsz).  The device never
sends 'C' on its own (docs/device/ymodem.md#block-reception): the relay sends `f`, the receiver times out
(--timeout-scale makes that 25 ms) and only then asks for CRC mode; after the
EOT it does the same before sb sends the end-of-batch header."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simlib  # noqa: E402

app = simlib.fixture("photon/photon_doctor.bin")  # user part 1 at 0x80a0000
data = open(app, "rb").read()
work = simlib.workdir()
state = os.path.join(work, "state")
log = os.path.join(work, "device.log")
os.mkdir(state)
r = simlib.run_sim(
    ["platform=photon,mode=listening,os=2.2.0,name=ph"],
    # --drain-ms: the restart line comes 1 s after sb's last ACK and the device
    # goes away 100 ms later (docs/device/ymodem.md#end-of-transfer), which ends the drain; the default 1.5 s
    # left 0.4 s of slack on a loaded machine.
    ["python3", os.environ["TTYRELAY"], "--send-f", "--log", log, "--drain-ms", "20000",
     "/dev/ttyACM0", "--",
     "sb", "--ymodem", "-k", app],
    state_dir=state, extra=["--timeout-scale", "0.005"])
print(r.stdout)
simlib.check(r.returncode == 0, f"flashd-sim/sb exit status {r.returncode}")
out = open(log, "rb").read()
name = os.path.basename(app).encode()
want = (b"\r\nDownloaded file successfully!\r\nName: " + name + b"\r\nSize: "
        + str(len(data)).encode() + b" bytes\r\n")
simlib.check(want in out, f"success text missing from device output {out[-200:]!r}")
simlib.check(b"Restarting system to apply firmware update...\r\n" in out, "no restart line")

doc = simlib.load_state(state)
dev = doc["devices"][0]
# sb sends 1 KiB blocks and finishes the tail in 128-byte blocks; the device
# counts every data byte it stored, padding included.
got_bytes = dev["received"]["ymodem_bytes"]
simlib.check(len(data) <= got_bytes < len(data) + 1024 and got_bytes % 128 == 0,
             f"ymodem_bytes {got_bytes} for a {len(data)}-byte file")
mods = [m for m in dev["modules"] if m["function"] == "user" and m["address"] == 0x80a0000]
simlib.check(mods and mods[0]["valid"], f"user module not valid at 0x80a0000: {dev['modules']}")
got = simlib.read_flash(state, dev, 0x80a0000, len(data))
simlib.check(got == data, "flash at 0x80a0000 differs from the file")
print(f"ok: {len(data)} bytes byte-identical, {got_bytes} bytes received")

#!/usr/bin/env python3
"""particle-cli 3.19.0 `flash --serial` (the real Particle YMODEM sender,
docs/device/ymodem.md#particle-cli-sender) against flashd-sim: a matching Photon application is flashed
byte-identically ("Flash success!"); an Electron application is refused by
the Photon at the end of the transfer, which the CLI reports as
"Transfer cancelled".

particle-cli is installed once into a cache outside the repository by
scripts/install-deps through particle-cli-setup.sh (npm registry); its serial library runs `udevadm`,
which must be on PATH (docs/testing/umockdev.md#particle-cli)."""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simlib  # noqa: E402

sim = simlib.find_sim()
if not shutil.which("udevadm"):
    print("SKIP: udevadm not on PATH (Debian package 'udev')")
    sys.exit(simlib.SKIP)
# scripts/install-deps has installed it; this call only finds it (or installs it when the
# tests run without install-deps).
setup = subprocess.run([os.environ["PARTICLE_CLI_SETUP"]], stdout=subprocess.PIPE, text=True)
if setup.returncode == simlib.SKIP:
    # CI ran install-deps: a missing install there is a broken setup, not a reason to skip.
    simlib.check(not os.environ.get("CI"), "particle-cli could not be installed (no npm)")
    sys.exit(simlib.SKIP)
simlib.check(setup.returncode == 0, "particle-cli installation failed")
particle = setup.stdout.strip().splitlines()[-1]
photon_app = simlib.fixture("photon/photon_doctor.bin")
electron_app = simlib.fixture("electron/electron_tinker.bin")
work = simlib.workdir()
os.environ["HOME"] = work  # particle-cli writes ~/.particle
# Before libumockdev-preload (flashd-sim appends it): see close_shim.c.
if os.path.exists(os.environ.get("CLOSE_SHIM", "")):
    os.environ["LD_PRELOAD"] = os.environ["CLOSE_SHIM"]
# No registry lookup per run: 3.19.0's cli.js overwrites PARTICLE_DISABLE_UPDATE
# with the presence of --no-update-check, and the lookup's 3 s timer kept the
# CLI alive past the device's reset, hiding that it exits at the final ACK.
CLI_OPTS = ["--no-update-check"]

for attempt_name, app, want_ok in (("photon-app", photon_app, True),
                                   ("electron-app-on-photon", electron_app, False)):
    state = os.path.join(work, attempt_name)
    os.mkdir(state)
    r = simlib.run_sim(["platform=photon,mode=normal,os=2.2.0,name=ph"],
                       [particle, "flash", "--serial", "--yes", "--port", "/dev/ttyACM0", app] + CLI_OPTS,
                       state_dir=state, timeout=240)
    print(r.stdout)
    doc = simlib.load_state(state)
    dev = doc["devices"][0]
    data = open(app, "rb").read()
    if want_ok:
        simlib.check(r.returncode == 0, f"{attempt_name}: exit {r.returncode}")
        simlib.check("Flash success!" in r.stdout, f"{attempt_name}: no 'Flash success!'")
        got = simlib.read_flash(state, dev, 0x80a0000, len(data))
        simlib.check(got == data, f"{attempt_name}: flash at 0x80a0000 differs from the file")
    else:
        simlib.check(r.returncode != 0, f"{attempt_name}: particle-cli claimed success")
        simlib.check("Transfer cancelled" in r.stdout, f"{attempt_name}: no 'Transfer cancelled'")
        got = simlib.read_flash(state, dev, 0x80a0000, len(data))
        simlib.check(got != data, f"{attempt_name}: the Electron app landed in the Photon user slot")
    print(f"ok: {attempt_name}")

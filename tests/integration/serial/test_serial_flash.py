"""Issue 6 proof under flashd-sim: the user's case (Electron app on a Photon
1.5.2 in listening mode) and a matching Photon application that flashes and
verifies.  Runs itself inside flashd-sim (outside -> --inside)."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from flashd_harness import Daemon, SimControl, Tap, fixture, run_in_sim  # noqa: E402

# Both inputs, checked before the testbed starts: a missing one skips the whole driver.
ELECTRON_APP = fixture("electron/electron_tinker.bin")
PHOTON_APP = fixture("photon/photon_tinker.bin")


def flash(fc, sock, *args):
    r = subprocess.run([fc, "--socket", sock, "--json", "flash", *args],
                       capture_output=True, text=True, timeout=150)
    objs = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    ended = [o for o in objs if o.get("event") == "job-ended"]
    return r.returncode, (ended[-1] if ended else {}), objs


def sim_state(control):
    """The simulator's one device, from its state document."""
    doc = SimControl(control)(cmd="state")
    for key in ("state", "result", "document"):
        if isinstance(doc.get(key), dict):
            doc = doc[key]
    devs = doc.get("devices") or []
    return devs[0] if devs else None


def inside(flashd, fc, state_dir, control):
    tap = Tap()
    d = Daemon(flashd, private_locks=True)
    try:
        code, end, _ = flash(fc, d.socket, ELECTRON_APP)
        err = end.get("error") or {}
        tap.check("electron app on photon 1.5.2 is wrong-platform", err.get("code") == "wrong-platform", end)
        tap.check("exit status is non-zero (4)", code == 4, code)
        tap.check("hint names both platforms",
                  "built for Electron" in err.get("hint", "") and "Photon" in err.get("hint", ""), err)
        dev = sim_state(control)
        tap.check("no YMODEM byte reached the device",
                  dev is not None and dev["received"]["ymodem_bytes"] == 0, dev)

        code, end, objs = flash(fc, d.socket, "--force", ELECTRON_APP)
        err = end.get("error") or {}
        det = err.get("detail", {})
        tap.check("--force: device-rejected", err.get("code") == "device-rejected", end)
        tap.check("--force: device code and decoded cause present",
                  det.get("device_code") == 0x18 and det.get("cause") == "wrong-platform", det)
        tap.check("--force: diagnosis names Electron vs Photon",
                  "Electron" in det.get("diagnosis", "") and "Photon" in det.get("diagnosis", ""), det)
        tap.check("--force: the whole file went over", det.get("bytes_sent") == 5776, det)
        tap.check("--force: the job ends once the device has reset and is back (facts 4.4)",
                  any(o.get("note") == "device-reset" for o in objs), objs[-3:])

        code, end, objs = flash(fc, d.socket, PHOTON_APP)
        tap.check("photon app flashes and verifies",
                  code == 0 and end.get("outcome") == "verified", end)
        pct = [o.get("percent") for o in objs if o.get("event") == "job-progress" and "percent" in o]
        tap.check("progress reaches 100 %", pct and pct[-1] == 100, pct)
    finally:
        d.stop() if hasattr(d, "stop") else None
    return tap


def outside(flashd, fc, sim):
    tmp = tempfile.mkdtemp(prefix="flashd-serial-")
    control = os.path.join(tmp, "control.sock")
    st = os.path.join(tmp, "state")
    r = run_in_sim(sim, ["platform=photon,os=1.5.2,mode=listening,name=d1"],
                   [sys.executable, os.path.abspath(__file__), "--inside", flashd, fc, st,
                    control], tmp, control=control, state_dir=st)
    sys.exit(r.returncode)


if __name__ == "__main__":
    if sys.argv[1] == "--inside":
        inside(*sys.argv[2:6]).done()
    else:
        outside(*sys.argv[1:4])

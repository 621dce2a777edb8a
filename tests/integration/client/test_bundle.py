#!/usr/bin/env python3
"""Zip bundles (`particle compile`'s .zip: the application at the top, raw assets under
assets/) through the real flashctl and flashd under flashd-sim: `flashctl inspect`
describes them; an application-only bundle flashes to a Photon and is verified like the
.bin alone; a bundle with an application and two assets flashes to a P2 on 5.9.0 (in DFU
mode), to one on 6.2.0 (running) and to one on 5.9.0 in listening mode: the application
over DFU or YMODEM (what the plan picks),
each asset as an asset module by the firmware-update control request, all verified, the
sim's asset store holding the bytes; flashed again, nothing is written; on 5.5.0 (no asset
info) the assets are written each time with a note; an auto-flash rule with the bundle
writes the assets too; a zip bomb, a `../`
entry and a zip without firmware each get their own error.

The application with assets is the real P2 Tinker re-stamped the way
binary-version-reader's updateModuleAssetDependencies() does it for a P2 user part
(no published fixture carries asset dependencies): ASSET_DEPENDENCY (0x0012) records
after the prefix, an END record padded to keep the start 8-byte aligned, the start
address and the DYNAMIC_LOCATION start moved down, SHA-256 and CRC-32 recomputed.

usage: test_bundle.py FLASHD_SIM FLASHD FLASHCTL
       test_bundle.py --inside FLASHD FLASHCTL CONTROL
"""
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from flashd_harness import Daemon, SimControl, Tap, catalogue, fixture, run_in_sim  # noqa: E402

PHOTON_APP = fixture("photon/tinker-0.4.5-photon.bin")
P2_APP = fixture("p2/tinker-5.0.0-p2.bin")
DEVICES = ["platform=photon,os=2.2.0,mode=dfu,name=photon,port=1-1",
           "platform=p2,os=5.9.0,mode=dfu,name=p2,port=1-2",
           "platform=p2,os=6.2.0,mode=normal,name=p2-6,port=1-3",
           "platform=p2,os=5.9.0,mode=listening,name=p2-l,port=1-4",
           "platform=p2,os=5.5.0,mode=normal,name=p2-55,port=1-5",
           "platform=p2,os=6.2.0,mode=normal,name=p2-auto,port=1-6"]


def restamp_p2(app, assets):
    """app (a P2 user part, prefix at 0) with one ASSET_DEPENDENCY per (name, data)."""
    exts = b""
    for name, data in assets:
        n = name.encode()
        exts += struct.pack("<HHBB", 0x0012, 4 + 2 + 32 + len(n), 0, 32)
        exts += hashlib.sha256(data).digest() + n
    end = struct.unpack_from("<I", app, 4)[0]
    size = len(app) + len(exts) + 4
    pad = (end - (size - 4)) % 8
    size += pad
    start = end - (size - 4)
    prefix = bytearray(app[:24])
    struct.pack_into("<I", prefix, 0, start)
    prefix[9] |= 0x10  # prefix extensions
    m = bytearray(bytes(prefix) + exts + struct.pack("<HH", 0, 4 + pad) + bytes(pad) + app[24:])
    assert len(m) == size
    suffix = size - 4 - 62
    assert struct.unpack_from("<H", m, suffix)[0] == 0x0002  # DYNAMIC_LOCATION
    struct.pack_into("<I", m, suffix + 4, start)
    m[size - 38:size - 6] = hashlib.sha256(m[:size - 38]).digest()
    struct.pack_into(">I", m, size - 4, zlib.crc32(m[:size - 4]) & 0xffffffff)
    return bytes(m)


def make_zip(path, entries, method=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in entries:
            z.writestr(name, data)
    return path


def run(fc, sock, *args, timeout=150):
    r = subprocess.run([fc, "--socket", sock, *args], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout, r.stderr


def json_lines(out):
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def sim_device(control, name):
    doc = SimControl(control)(cmd="state")
    for key in ("state", "result", "document"):
        if isinstance(doc.get(key), dict):
            doc = doc[key]
    return next((d for d in doc.get("devices") or [] if d["name"] == name), None)


def wait_devices(fc, sock, n):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rc, out, _ = run(fc, sock, "--json", "list")
        devs = [d for d in json.loads(out)["devices"] if d["present"]] if rc == 0 else []
        if len(devs) >= n:
            return {d["usb"]["port"]: d["key"] for d in devs}
        time.sleep(0.1)
    raise SystemExit("flashd did not list %d devices" % n)


def flash_assets(tap, fc, d, control, name, key, bundle, app, assets):
    """The bundle to one P2: application and assets written and verified, the asset store
    holds each asset's bytes; flashed again: nothing written."""
    rc, out, err = run(fc, d.socket, "--json", "flash", bundle, "--device", key)
    objs = json_lines(out)
    ends = [o for o in objs if o.get("event") == "job-ended"]
    end = ends[-1] if ends else {}
    plans = [o.get("plan") for o in objs if o.get("event") == "job-plan" and o.get("plan")]
    writes = [(s.get("transport"), s.get("module_function"), s.get("file"))
              for p in plans for s in p.get("steps", []) if s.get("kind") == "write"]
    tap.check("%s: flash zip with assets: done and verified" % name,
              rc == 0 and end.get("result") == "done" and end.get("outcome") == "verified",
              (rc, out[-3000:], err, d.log_text()[-4000:]))
    tap.check("%s: the plans write both assets by control request, after the application" % name,
              ("ctrl", "asset", "assets/logo.png") in writes
              and ("ctrl", "asset", "assets/sound.raw") in writes
              and any(w[1] == "user" for w in writes)
              and min(i for i, w in enumerate(writes) if w[1] == "asset")
              > min(i for i, w in enumerate(writes) if w[1] == "user"), writes)
    # An asset names no platform (its prefix's platform field is 0, which is not the Core):
    # the job record, the history and every module row say null, never "core"
    record = end.get("record") or {}
    asset_mods = [m for img in record.get("images", []) if img.get("name", "").startswith("assets/")
                  for m in img.get("modules", [])]
    app_mods = [m for img in record.get("images", []) if not img.get("name", "").startswith("assets/")
                for m in img.get("modules", [])]
    tap.check("%s: the job record's asset modules have no platform (null), the application's is p2"
              % name,
              len(asset_mods) == 2
              and all(m.get("function") == "asset" and m.get("platform") is None
                      and m.get("platform_id") is None and "Core" not in m.get("description", "")
                      for m in asset_mods)
              and app_mods and all(m.get("platform") == "p2" for m in app_mods), record.get("images"))
    rc, out, err = run(fc, d.socket, "--json", "history", "--device", key, "--limit", "1")
    hist = (json_lines(out) or [{}])[-1]
    tap.check("%s: the history's job names the assets and never the Core" % name,
              rc == 0 and hist.get("job") == record.get("id")
              and {"assets/logo.png", "assets/sound.raw"} <= {i.get("file") for i in hist.get("images", [])}
              and '"core"' not in json.dumps(hist) and hist.get("platform") == "p2",
              (rc, out[-2000:], err))
    dev = sim_device(control, name)
    tap.check("%s: the assets' modules crossed by firmware-update request" % name,
              dev["received"]["ctrl_update_bytes"] >= sum(len(v) for v in assets.values()),
              dev["received"])
    store = {a["name"]: a for a in (dev or {}).get("assets", [])}
    tap.check("%s: the asset store holds both assets, bytes and hash as in the bundle" % name,
              sorted(store) == sorted(assets)
              and all(store[n]["data_sha256"] == hashlib.sha256(v).hexdigest()
                      and store[n]["sha256"] == hashlib.sha256(v).hexdigest()
                      and store[n]["size"] == len(v) for n, v in assets.items()), store)
    rc, out, err = run(fc, d.socket, "--json", "info", key)
    info = (json_lines(out) or [{}])[0]
    info = info.get("device", info)
    tap.check("%s: flashctl info lists the asset store" % name,
              rc == 0 and sorted(a["name"] for a in info.get("assets", [])) == sorted(assets),
              (rc, out[-2000:], err))
    rc, out, err = run(fc, d.socket, "info", "--no-probe", key)
    tap.check("%s: flashctl info (human) shows the asset store" % name,
              rc == 0 and all(("%s, %d bytes, SHA-256 %s" % (n, len(v), hashlib.sha256(v).hexdigest()[:12]))
                              in out for n, v in assets.items()), (rc, out, err))
    before = sim_device(control, name)
    rc, out, err = run(fc, d.socket, "--json", "flash", bundle, "--device", key)
    objs = json_lines(out)
    ends = [o for o in objs if o.get("event") == "job-ended"]
    end = ends[-1] if ends else {}
    after = sim_device(control, name)
    tap.check("%s: flashed again: done, nothing written (0 bytes), the store unchanged" % name,
              rc == 0 and end.get("result") == "done"
              and end.get("outcome") == "already-installed"
              and after["received"]["ctrl_update_bytes"] == before["received"]["ctrl_update_bytes"]
              and after["received"]["dfu_bytes"] == before["received"]["dfu_bytes"]
              and after["received"]["ymodem_bytes"] == before["received"]["ymodem_bytes"]
              and after["assets"] == before["assets"],
              (rc, out[-3000:], err, before["received"], after["received"]))


def inside(flashd, fc, control):
    tap = Tap()
    cat = catalogue(fc)
    work = tempfile.mkdtemp(prefix="bundle-test-")
    d = Daemon(flashd, private_locks=True)
    try:
        keys = wait_devices(fc, d.socket, 6)
        photon, p2, p2_6, p2_l = keys["1-1"], keys["1-2"], keys["1-3"], keys["1-4"]
        p2_55 = keys["1-5"]
        photon_app = open(PHOTON_APP, "rb").read()
        p2_app = open(P2_APP, "rb").read()
        logo = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
        sound = bytes((i * 7) & 0xff for i in range(3000))
        p2_with_assets = restamp_p2(p2_app, [("logo.png", logo), ("sound.raw", sound)])

        app_only = make_zip(os.path.join(work, "photon-app.zip"),
                            [("photon_firmware_1700000000000.bin", photon_app)])
        with_assets = make_zip(os.path.join(work, "p2-app-assets.zip"),
                               [("p2_firmware_1700000000000.bin", p2_with_assets),
                                ("assets/logo.png", logo), ("assets/sound.raw", sound)])

        # inspect: human and JSON
        rc, out, err = run(fc, d.socket, "inspect", app_only)
        tap.check("inspect app-only zip: exit 0, a bundle whose application is the Photon Tinker",
                  rc == 0 and "bundle" in out and "Photon application" in out
                  and "assets      none" in out, out + err)
        rc, out, err = run(fc, d.socket, "inspect", "--json", with_assets)
        obj = (json_lines(out) or [{}])[0]
        assets = {a["name"]: a for a in obj.get("assets", [])}
        tap.check("inspect --json of the P2 bundle: valid, two assets listed by the application",
                  rc == 0 and obj.get("type") == "bundle" and obj.get("valid") is True
                  and sorted(assets) == ["logo.png", "sound.raw"]
                  and all(a["status"] == "ok" for a in assets.values())
                  and assets["sound.raw"]["sha256"] == hashlib.sha256(sound).hexdigest()
                  and assets["sound.raw"]["size"] == len(sound), out + err)
        mod = (obj.get("application") or {}).get("modules", [{}])[0]
        deps = [a["name"] for a in mod.get("asset_dependencies", [])]
        tap.check("inspect --json: the application module lists its asset dependencies",
                  deps == ["logo.png", "sound.raw"] and "prefix-extensions" in mod.get("flag_names", []),
                  mod)

        # check (dry run): both bundles would flash
        rc, out, err = run(fc, d.socket, "check", app_only, "--device", photon)
        tap.check("check app-only zip on the Photon: ok, exit 0",
                  rc == 0 and out.startswith("ok:"), (rc, out, err))
        rc, out, err = run(fc, d.socket, "check", with_assets, "--device", p2)
        tap.check("check zip with assets on the P2: ok, exit 0", rc == 0 and out.startswith("ok:"),
                  (rc, out, err))

        # flash: application-only bundle to the Photon, verified
        rc, out, err = run(fc, d.socket, "--json", "flash", app_only, "--device", photon)
        ends = [o for o in json_lines(out) if o.get("event") == "job-ended"]
        end = ends[-1] if ends else {}
        tap.check("flash app-only zip to a Photon: done and verified",
                  rc == 0 and end.get("result") == "done" and end.get("outcome") == "verified",
                  (rc, out[-2000:], err, d.log_text()[-3000:]))
        dev = sim_device(control, "photon")
        tap.check("the Photon received exactly the application's bytes over DFU",
                  dev is not None and dev["received"]["dfu_bytes"] >= len(photon_app), dev and dev["received"])

        for name, key in (("p2", p2), ("p2-6", p2_6), ("p2-l", p2_l)):
            flash_assets(tap, fc, d, control, name, key, with_assets, p2_with_assets,
                         {"logo.png": logo, "sound.raw": sound})
        # A new version of the bundle: the application lists only a changed logo.png.  Device
        # OS stores an asset after dropping those the running application does not list
        # (AssetManager::clearUnusedAssets()), so with the application written first the
        # store ends up holding the new logo alone
        logo2 = logo + b"v2"
        app2 = restamp_p2(p2_app, [("logo.png", logo2)])
        bundle2 = make_zip(os.path.join(work, "p2-app-v2.zip"),
                           [("p2_firmware_1700000000001.bin", app2), ("assets/logo.png", logo2)])
        rc, out, err = run(fc, d.socket, "--json", "flash", bundle2, "--device", p2)
        end = ([o for o in json_lines(out) if o.get("event") == "job-ended"] or [{}])[-1]
        dev = sim_device(control, "p2")
        store = {a["name"]: a["data_sha256"] for a in dev.get("assets", [])}
        tap.check("p2: the next bundle (one changed asset): verified; the store holds the new "
                  "logo.png alone (sound.raw dropped as unused, so the application went first)",
                  rc == 0 and end.get("outcome") == "verified"
                  and store == {"logo.png": hashlib.sha256(logo2).hexdigest()},
                  (rc, out[-2000:], err, store))

        # Device OS 5.5.0 has an asset store but does not report it (request 91 came with
        # 5.6.0): the assets are written every time, and the job says they were not checked
        for n in (1, 2):
            rc, out, err = run(fc, d.socket, "--json", "flash", with_assets, "--device", p2_55)
            objs = json_lines(out)
            end = ([o for o in objs if o.get("event") == "job-ended"] or [{}])[-1]
            notes = [o.get("note") for o in objs if o.get("event") == "job-progress"]
            dev = sim_device(control, "p2-55")
            tap.check("p2-55 (5.5.0), flash %d: done, the assets stored, not checked (a note)" % n,
                      rc == 0 and end.get("result") == "done" and "assets-not-verified" in notes
                      and sorted(a["name"] for a in dev.get("assets", [])) == ["logo.png", "sound.raw"]
                      and dev["received"]["ctrl_update_bytes"] >= n * (len(logo) + len(sound)),
                      (rc, out[-3000:], err, dev and dev["received"], d.log_text()[-3000:]))
        # auto-flash: a rule with the bundle for port 1-6; the P2 there plugged in again
        rc, out, err = run(fc, d.socket, "auto", "add", "--platform", "p2", "--port", "1-6",
                           with_assets)
        tap.check("auto add of the bundle: a rule", rc == 0 and out.strip(), (rc, out, err))
        SimControl(control)(cmd="replug", name="p2-auto")
        deadline = time.monotonic() + 60
        dev = {}
        while time.monotonic() < deadline:
            dev = sim_device(control, "p2-auto") or {}
            if len(dev.get("assets", [])) == 2 and dev.get("mode") == "normal":
                break
            time.sleep(0.2)
        store = {a["name"]: a["data_sha256"] for a in dev.get("assets", [])}
        tap.check("the rule's job wrote the application and both assets to the P2 on port 1-6",
                  store == {"logo.png": hashlib.sha256(logo).hexdigest(),
                            "sound.raw": hashlib.sha256(sound).hexdigest()}
                  and dev["received"]["dfu_bytes"] > 0, (dev.get("received"), store,
                                                          d.log_text()[-3000:]))
        before = sim_device(control, "p2")

        # each broken zip gets its own error, before any device is touched
        bomb = make_zip(os.path.join(work, "bomb.zip"),
                        [("p2_firmware.bin", p2_app), ("assets/big.raw", bytes(8 << 20))])
        dotdot = make_zip(os.path.join(work, "dotdot.zip"),
                          [("p2_firmware.bin", p2_app), ("assets/../../evil", b"x")])
        nofw = make_zip(os.path.join(work, "nofw.zip"),
                        [("project/p2_firmware.bin", p2_app), ("assets/logo.png", logo)])
        for path, code in ((bomb, "bundle-compression-ratio"), (dotdot, "bundle-unsafe-name"),
                           (nofw, "bundle-no-application")):
            rc, out, err = run(fc, d.socket, "--json", "flash", path, "--device", p2)
            e = next((o for o in json_lines(out) if o.get("type") == "error"), {})
            tap.check("%s: %s, exit %d" % (os.path.basename(path), code, cat[code]["exit"]),
                      rc == cat[code]["exit"] and e.get("code") == code, (rc, out, err))
            rc, out, err = run(fc, d.socket, "inspect", path)
            tap.check("inspect %s: the same %s" % (os.path.basename(path), code),
                      rc == cat[code]["exit"] and ("error [%s]" % code) in err, (rc, out, err))
        after2 = sim_device(control, "p2")
        tap.check("still no byte reached the P2", after2["received"] == before["received"],
                  after2["received"])
    finally:
        rc = d.stop()
        tap.check("flashd stops cleanly", rc == 0, d.log_text()[-3000:])
        shutil.rmtree(work, ignore_errors=True)
    return tap


def outside(sim, flashd, fc):
    tmp = tempfile.mkdtemp(prefix="flashd-bundle-")
    control = os.path.join(tmp, "control.sock")
    r = run_in_sim(sim, DEVICES, [sys.executable, os.path.abspath(__file__), "--inside",
                                  flashd, fc, control], tmp, control=control,
                   state_dir=os.path.join(tmp, "state"))
    shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(r.returncode)


if __name__ == "__main__":
    if sys.argv[1] == "--inside":
        inside(*sys.argv[2:5]).done()
    else:
        outside(*sys.argv[1:4])

#!/usr/bin/env python3
"""Zip bundles made and read by Particle's own code: binary-version-reader (the copy
particle-cli 3.19.0 installs, scripts/install-deps through particle-cli-setup.sh) builds
bundles with createApplicationAndAssetBundle(), exactly what `particle compile` and
`particle bundle` save (archiver's streamed zip, data descriptors and all);
`flashctl inspect --json` must read each one and agree with `particle binary inspect`
(application CRC, asset names and hashes), including the bundles particle-cli marks as
failed (an asset changed, an asset missing).  And the P2 application that
test_bundle.py re-stamps by hand must be byte-identical to the one binary-version-reader
makes.

usage: test_bundle_particle.py FLASHCTL          (PARTICLE_CLI_SETUP in the environment)
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from flashd_harness import Tap, fixture  # noqa: E402
from test_bundle import restamp_p2  # noqa: E402

SKIP = 77
P2_APP = fixture("p2/tinker-5.0.0-p2.bin")
BORON_APP = fixture("boron/tinker-0.8.0-rc.27-boron.bin")
PHOTON_APP = fixture("photon/tinker-0.4.5-photon.bin")

# node: argv = BVR dir, application, output zip, then name=path pairs of assets
MAKE_BUNDLE = """
const bvr = require(process.argv[1]);
const fs = require('fs');
const path = require('path');
const [app, out, ...pairs] = process.argv.slice(2);
const assets = pairs.map(p => { const i = p.indexOf('=');
  return { name: p.slice(0, i), data: fs.readFileSync(p.slice(i + 1)) }; });
bvr.createApplicationAndAssetBundle({ name: path.basename(app), data: fs.readFileSync(app) }, assets)
  .then(zip => fs.writeFileSync(out, zip))
  .catch(e => { console.error(e); process.exit(1); });
"""


def particle_cli():
    setup = subprocess.run([os.environ["PARTICLE_CLI_SETUP"]], stdout=subprocess.PIPE, text=True)
    if setup.returncode == SKIP or not shutil.which("node"):
        if os.environ.get("CI"):
            print("Bail out! particle-cli could not be installed (npm/node missing) in CI")
            sys.exit(1)
        print("1..0 # SKIP particle-cli (npm registry) is not installed: scripts/install-deps")
        sys.exit(0)
    if setup.returncode != 0:
        print("Bail out! particle-cli-setup.sh failed")
        sys.exit(1)
    return setup.stdout.strip().splitlines()[-1]


def particle_inspect(particle, path, home):
    r = subprocess.run([particle, "binary", "inspect", path], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, HOME=home), stdin=subprocess.DEVNULL)
    crc = re.search(r"CRC is ok \(([0-9a-f]{8})\)", r.stdout)
    ok = dict(re.findall(r"^ (\S+) \(hash ([0-9a-f]{64})\)$", r.stdout, re.M))
    failed = dict(re.findall(r"^ (\S+) failed \(hash should be ([0-9a-f]{64})", r.stdout, re.M))
    return {"crc": crc.group(1) if crc else None, "ok": ok, "failed": failed,
            "text": r.stdout + r.stderr}


def flashctl_inspect(fc, path):
    r = subprocess.run([fc, "inspect", "--json", path], capture_output=True, text=True,
                       timeout=60)
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return r.returncode, (lines[0] if lines else {}), r.stdout + r.stderr


def main(fc):
    particle = particle_cli()
    bvr = os.path.join(os.path.dirname(os.path.dirname(particle)), "binary-version-reader")
    tap = Tap()
    work = tempfile.mkdtemp(prefix="bundle-particle-")
    try:
        logo = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3
        sound = bytes((i * 7) & 0xff for i in range(3000))
        files = {}
        for name, data in (("logo.png", logo), ("sound.raw", sound)):
            files[name] = os.path.join(work, name)
            open(files[name], "wb").write(data)

        def make(app, out, names):
            out = os.path.join(work, out)
            r = subprocess.run(["node", "-e", MAKE_BUNDLE, bvr, app, out]
                               + ["%s=%s" % (n, files[n]) for n in names],
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise SystemExit("Bail out! createApplicationAndAssetBundle failed: " + r.stderr)
            return out

        cases = [(make(P2_APP, "p2.zip", ["logo.png", "sound.raw"]), ["logo.png", "sound.raw"]),
                 (make(BORON_APP, "boron.zip", ["sound.raw"]), ["sound.raw"]),
                 (make(PHOTON_APP, "photon.zip", []), [])]
        for path, names in cases:
            base = os.path.basename(path)
            p = particle_inspect(particle, path, work)
            rc, obj, text = flashctl_inspect(fc, path)
            mods = (obj.get("application") or {}).get("modules") or [{}]
            assets = {a["name"]: a["sha256"] for a in obj.get("assets", [])}
            tap.check("%s: flashctl reads binary-version-reader's bundle (valid, exit 0)" % base,
                      rc == 0 and obj.get("valid") is True, text)
            tap.check("%s: the application's CRC-32 is the one particle-cli shows" % base,
                      p["crc"] and "%08x" % mods[0].get("crc", {}).get("computed", -1) == p["crc"],
                      (p["text"], mods[0].get("crc")))
            tap.check("%s: assets and SHA-256s are the ones particle-cli lists" % base,
                      assets == p["ok"] and sorted(assets) == names
                      and all(a["status"] == "ok" for a in obj.get("assets", [])),
                      (assets, p["text"]))
            deps = {d["name"]: d["sha256"] for d in mods[0].get("asset_dependencies", [])}
            tap.check("%s: the application's asset dependencies as particle-cli reads them" % base,
                      deps == p["ok"], (deps, p["text"]))

        # The hand-made re-stamp (test_bundle.py, tests/unit/bundle_zip.h) is BVR's, byte for byte.
        bvr_app = zipfile.ZipFile(cases[0][0]).read(os.path.basename(P2_APP))
        mine = restamp_p2(open(P2_APP, "rb").read(), [("logo.png", logo), ("sound.raw", sound)])
        tap.check("re-stamped P2 application == binary-version-reader's, byte for byte",
                  mine == bvr_app, "%d vs %d bytes" % (len(mine), len(bvr_app)))

        # Bundles particle-cli marks as failed are refused, naming the same asset and hash.
        src = zipfile.ZipFile(cases[0][0])
        changed = os.path.join(work, "p2-changed.zip")
        missing = os.path.join(work, "p2-missing.zip")
        with zipfile.ZipFile(changed, "w", zipfile.ZIP_DEFLATED) as z:
            for i in src.infolist():
                z.writestr(i.filename, src.read(i) if i.filename != "assets/sound.raw" else sound[::-1])
        with zipfile.ZipFile(missing, "w", zipfile.ZIP_DEFLATED) as z:
            for i in src.infolist():
                if i.filename != "assets/logo.png":
                    z.writestr(i.filename, src.read(i))
        for path, asset, problem in ((changed, "sound.raw", "hash-mismatch"),
                                     (missing, "logo.png", "missing")):
            p = particle_inspect(particle, path, work)
            rc, obj, text = flashctl_inspect(fc, path)
            err = obj.get("error") or {}
            det = err.get("detail") or {}
            tap.check("%s: particle-cli marks %s failed; flashctl: bundle-asset-mismatch (%s)"
                      % (os.path.basename(path), asset, problem),
                      asset in p["failed"] and rc == 3 and err.get("code") == "bundle-asset-mismatch"
                      and det.get("asset") == asset and det.get("problem") == problem
                      and det.get("expected_sha256") == p["failed"][asset],
                      (p["text"], text))
        tap.check("the expected hash is the SHA-256 of the asset the application was built with",
                  hashlib.sha256(sound).hexdigest() == particle_inspect(particle, changed, work)["failed"].get("sound.raw"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    tap.done()


if __name__ == "__main__":
    main(sys.argv[1])

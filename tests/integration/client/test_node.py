#!/usr/bin/env python3
"""The Node.js client (client/js) against the real flashd under flashd-sim: a Photon in DFU mode gets Photon Tinker
with upload and job progress, the Electron build is refused with wrong-platform
before the first byte, a waiting job is cancelled, an upload whose bytes do not
match its SHA-256 and one over the limit get their own errors.

usage: test_node.py FLASHD_SIM FLASHD NODE                 (starts flashd-sim)
       test_node.py --inside FLASHD NODE                   (runs inside flashd-sim)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from flashd_harness import Daemon, Tap, fixture, run_in_sim  # noqa: E402

SRC = os.environ.get("FLASHD_SOURCE_ROOT",
                     os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
SESSION = os.path.join(SRC, "client", "js", "test", "sim-session.js")
PHOTON_APP = fixture("photon/photon_tinker.bin")
ELECTRON_APP = fixture("electron/electron_tinker.bin")
# Device OS 2.2.0's two system parts (500 KB in 8 chunks) onto a Photon on 2.0.1.
PARTS = [fixture("photon/photon-system-part1@2.2.0.bin"), fixture("photon/photon-system-part2@2.2.0.bin")]
DEVICES = ["platform=photon,os=2.0.1,mode=dfu,name=d1,port=1-1"]


def wait_device(d, timeout=20):
    c = d.client()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            devs = [x for x in c.call({"request": "list-devices"})["devices"] if x["present"]]
            if devs:
                return devs[0]["key"]
            time.sleep(0.1)
    finally:
        c.close()
    raise SystemExit("flashd did not list the simulated Photon")


def node_tests(tap, node, d, key):
    r = subprocess.run([node, SESSION, d.socket, key, PHOTON_APP, ELECTRON_APP, *PARTS],
                       capture_output=True, text=True, timeout=240)
    try:
        out = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        out = {}
    if not tap.check("the Node.js session runs to its end", r.returncode == 0 and "crashed" not in out,
                     r.stdout[-3000:] + r.stderr[-3000:]):
        return
    size = os.path.getsize(PHOTON_APP)
    good = out["good"]
    tap.check("list and watch see the simulated Photon",
              key in out["watchDevices"] and any(x["key"] == key and x["platform"] == "photon"
                                                 for x in out["list"]), out["list"])
    tap.check("Node flashes Photon Tinker to the Photon: done",
              good.get("ok") and good["outcomes"][0] in ("verified", "written-not-verified")
              and good["jobs"][0]["result"] == "done", good)
    tap.check("the job's image is the uploaded file (name, SHA-256)",
              good.get("ok") and good["jobs"][0]["image"] == "photon_tinker.bin"
              and good["jobs"][0]["sha256"] == __import__("hashlib").sha256(
                  open(PHOTON_APP, "rb").read()).hexdigest(), good.get("jobs"))
    ups = good["uploads"]
    tap.check("upload progress events count up to the file's size in chunks of at most 64 KiB",
              ups and ups[-1]["sent"] == size and ups[-1]["total"] == size
              and all(b["sent"] - a["sent"] <= 65536 for a, b in zip(ups, ups[1:]))
              and ups[0]["sent"] <= 65536, ups)
    writing = [p for p in good["progress"] if p["state"] == "writing" and p["total"]]
    tap.check("job progress events: writing with byte counts up to 100 %",
              writing and writing[-1]["percent"] == 100 and writing[-1]["done"] == writing[-1]["total"],
              good["progress"])
    print("# %d bytes uploaded in %d ms; the flash took %d ms in all"
          % (size, good.get("uploadMs", -1), good.get("totalMs", -1)), flush=True)
    p = out.get("parts", {})
    sizes = [os.path.getsize(f) for f in PARTS]
    tap.check("Node flashes Device OS 2.2.0's two system parts in one job: done, verified",
              p.get("ok") and p["outcomes"] == ["verified"] and len(p["jobs"]) == 1
              and p["jobs"][0]["images"] == [os.path.basename(f) for f in PARTS], p)
    last = {}
    for u in p.get("uploads", []):
        last[u["file"]] = u
    tap.check("... both uploaded whole, in chunks of at most 64 KiB (%s bytes)" % sizes,
              [last.get(os.path.basename(f), {}).get("sent") for f in PARTS] == sizes
              and p.get("chunks") == sum((s + 65535) // 65536 for s in sizes), p.get("chunks"))
    tap.check("... with byte progress up to 100 %",
              any(x["state"] == "writing" and x["total"] and x["done"] == x["total"]
                  for x in p.get("progress", [])), p.get("progress"))
    w = out["wrong"]
    tap.check("the Electron build: FlashdError wrong-platform (WrongPlatformError, exit 4)",
              w.get("code") == "wrong-platform" and w.get("class") == "WrongPlatformError"
              and w.get("exit") == 4, w)
    tap.check("wrong-platform's typed detail names both platforms",
              w.get("detail", {}).get("image_platform") == "electron"
              and w.get("detail", {}).get("device_platform") == "photon", w.get("detail"))
    tap.check("the Electron build was refused before the first byte (no writing state)",
              "writing" not in w.get("progress", ["?"]) and "erasing" not in w.get("progress", ["?"]),
              w.get("progress"))
    tap.check("info returns the device", out["info"].get("key") == key
              and out["info"].get("platform") == "photon", out["info"])
    tap.check("cancel answers for a waiting job", out["cancelReply"].get("alreadyEnded") is False,
              out["cancelReply"])
    tap.check("the cancelled flash rejects with cancelled (exit 9)",
              out["cancelled"].get("code") == "cancelled" and out["cancelled"].get("exit") == 9,
              out["cancelled"])
    m = out["mismatch"]
    tap.check("bytes that do not match the announced SHA-256: upload-checksum-mismatch",
              m.get("code") == "upload-checksum-mismatch" and m.get("class") == "UploadChecksumMismatchError"
              and m.get("detail", {}).get("size") == 3000, m)
    t = out["tooLarge"]
    tap.check("an upload over 16 MiB: upload-too-large, refused at upload-begin",
              t.get("code") == "upload-too-large" and t.get("detail", {}).get("limit") == 16 << 20, t)
    tap.check("... before any of its bytes was sent (%d bytes written)" % out["tooLargeBytesSent"],
              0 < out["tooLargeBytesSent"] < 1024, out["tooLargeBytesSent"])
    b = out["bigUpload"]
    tap.check("a 4 MiB upload goes in 64 verified chunks", b.get("id") and b.get("chunks") == 64, b)
    if b.get("ms"):
        print("# 4 MiB uploaded in %d ms (%.1f MiB/s)" % (b["ms"], 4000.0 / max(b["ms"], 1)), flush=True)
    tap.check("the connection is still usable after the refusals", out["stillUsable"] >= 1, out)
    ids = good.get("jobIds") or []
    tap.check("the watcher saw the job's events",
              any(e["event"] == "job-ended" and e["job"] in ids for e in out["watched"]), out["watched"][:20])


def mixed_test(tap, d, key):
    """One flash request with an upload and an fd (the daemon reads the fd off its
    loop, the upload is in memory): a dry run ends preflight-ok."""
    import base64
    import hashlib
    data = open(PHOTON_APP, "rb").read()
    c = d.client(30)
    try:
        up = c.call({"request": "upload-begin", "name": "a.bin", "size": len(data),
                     "sha256": hashlib.sha256(data).hexdigest()})["upload"]
        c.call({"request": "upload-chunk", "upload": up, "offset": 0,
                "data": base64.b64encode(data).decode()})
        c.call({"request": "subscribe", "jobs": True})
        with open(PHOTON_APP, "rb") as f:
            r = c.call({"request": "flash", "target": {"device": key}, "options": {"dry-run": True},
                        "images": [{"name": "uploaded.bin", "upload": up},
                                   {"name": "passed.bin", "fd": 0}]}, fds=[f.fileno()])
        end = c.events_until(lambda m: m.get("event") == "job-ended", timeout=60)[-1] \
            if r and r.get("type") == "reply" else r
        tap.check("a flash request with an upload and an fd (dry run): done",
                  end and end.get("result") == "done"
                  and end.get("outcome") in ("preflight-ok", "already-installed")
                  and [i["name"] for i in end["record"]["images"]] == ["uploaded.bin", "passed.bin"],
                  json.dumps(end)[:2000])
        r = c.call({"request": "upload-chunk", "upload": up, "offset": 0, "data": "QQ=="})
        tap.check("... and the flash request used its upload up (upload-not-found)",
                  r and r.get("code") == "upload-not-found", r)
    finally:
        c.close()


def inside(flashd, node):
    tap = Tap()
    d = Daemon(flashd, private_locks=True)
    try:
        key = wait_device(d)
        node_tests(tap, node, d, key)
        mixed_test(tap, d, key)
        tap.check("flashd is alive after the sessions", d.alive(), d.log_text()[-2000:])
    finally:
        rc = d.stop()
        tap.check("flashd stops cleanly", rc == 0, d.log_text()[-3000:])
    tap.done()


def outside(sim, flashd, node):
    if not os.access(node, os.X_OK):
        print("1..0 # SKIP node (Node.js >= 18) not found: scripts/install-deps installs it")
        sys.exit(0)
    tmp = tempfile.mkdtemp(prefix="flashd-node-")
    r = run_in_sim(sim, DEVICES, [sys.executable, os.path.abspath(__file__), "--inside", flashd, node],
                   tmp, state_dir=os.path.join(tmp, "state"))
    shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(r.returncode)


if __name__ == "__main__":
    if sys.argv[1] == "--inside":
        inside(sys.argv[2], sys.argv[3])
    else:
        outside(sys.argv[1], sys.argv[2], sys.argv[3])

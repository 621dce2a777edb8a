#!/usr/bin/env python3
"""Auto-flash latency (issue 15): from a plug event to the first image byte,
printed, not judged.

flashd runs with a rule for Photons (always write: skip_installed = no) under
flashd-sim; simulated Photons (a new board each time, listening mode) are
plugged in one after another.  For each plug the benchmark notes, on its own
clock:
  plug     the "plug" request to the simulator (it sends the udev add events
           while it handles it: an upper bound of the add),
  added    flashd's device-added event,
  writing  the job's first job-progress event in state "writing" (the
           transport is about to send the first image byte),
  first    the first job-progress event with bytes done (the first block
           acknowledged),
and prints p50 / p99 / max (all plugs; then new boards, which come up in
listening mode, and boards plugged again, which boot their application and are
switched to listening mode first) of plug -> writing and plug -> first, and the
share that is flashd's (added -> writing).  As many plugs as fit the budget;
a pool of 25 boards is plugged in turn (the simulator holds 32 devices).

usage: auto_plug_bench.py FLASHD FLASHCTL FLASHD_SIM [PLUGS [BUDGET_S]]
       (defaults: 50 plugs, 120 s; FLASHD_FIXTURES must hold photon_tinker.bin)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "integration"))
from flashd_harness import SERIAL_TIMEOUTS, Client, SimControl, run_in_sim  # noqa: E402

POOL = 25
TINKER = os.path.join(os.environ.get("FLASHD_FIXTURES", ""), "modules", "photon",
                      "photon_tinker.bin")


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def report(name, ms):
    print("%-28s n=%-3d p50 %7.1f ms   p99 %7.1f ms   max %7.1f ms"
          % (name, len(ms), pct(ms, 50), pct(ms, 99), max(ms) if ms else float("nan")))


def inside(flashd, work, plugs, budget):
    rules = os.path.join(work, "rules.d")
    os.mkdir(rules)
    with open(os.path.join(rules, "bench.conf"), "w") as f:
        f.write("[rule]\nid = bench\nplatform = photon\nskip_installed = no\nimage = %s\n"
                % TINKER)
    cfg = os.path.join(work, "flashd.conf")
    with open(cfg, "w") as f:
        f.write(SERIAL_TIMEOUTS + "[auto]\nrules_dir = %s\n" % rules)
    sock = os.path.join(work, "flashd.sock")
    lock = os.path.join(work, "lock")
    os.mkdir(lock)
    log = open(os.path.join(work, "flashd.log"), "w")
    proc = subprocess.Popen([flashd, "--foreground", "--socket", sock, "--state-dir",
                             os.path.join(work, "state"), "--config", cfg, "--log-level", "info"],
                            stdout=log, stderr=log, env=dict(os.environ, FLASHD_LOCK_DIR=lock))
    try:
        while not os.path.exists(sock):
            time.sleep(0.02)
        ev = Client(sock, timeout=60)
        ev.call({"request": "subscribe", "devices": True, "jobs": True})
        ctl = SimControl(os.path.join(work, "control.sock"))
        rows, t_end = [], time.monotonic() + budget
        for i in range(plugs):
            if time.monotonic() > t_end:
                break
            # The simulator holds 32 devices at most: a pool of boards, each
            # plugged again after the others (long after auto_settle_ms).
            k = i % POOL
            dev_id = "3a001d000a4735313839%04x" % k
            t0 = time.monotonic()
            if i < POOL:
                r = ctl(cmd="plug", spec="platform=photon,os=1.5.2,mode=listening,name=b%d,id=%s"
                        % (k, dev_id))
            else:
                r = ctl(cmd="plug", name="b%d" % k)
            t_plug = t0  # the udev add events go out while the simulator handles "plug"
            if not r.get("ok"):
                print("# plug failed: %s" % r)
                break
            t = {"plug": t_plug - t0}
            job = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                m = ev.read(max(0.01, deadline - time.monotonic()))
                now = time.monotonic()
                if m is None:
                    break
                e = m.get("event")
                if e == "device-added" and m["device"].get("key") == dev_id:
                    t.setdefault("added", now)
                rec = m.get("record") or {}
                if e == "job-queued" and rec.get("device") == dev_id:
                    job = m["job"]
                if m.get("job") != job or job is None:
                    continue
                if e == "job-progress" and m.get("state") == "writing":
                    t.setdefault("writing", now)
                    if m.get("done"):
                        t.setdefault("first", now)
                if e == "job-ended":
                    t["result"] = m.get("result")
                    break
                if os.environ.get("BENCH_DEBUG"):
                    print("# %.1f ms %s %s %s" % ((now - t_plug) * 1000, e, m.get("state"),
                                                  m.get("done")))
            ctl(cmd="unplug", name="b%d" % k)
            if "writing" in t and "first" in t:
                rows.append({"writing": (t["writing"] - t_plug) * 1000,
                             "first": (t["first"] - t_plug) * 1000,
                             "flashd": (t["writing"] - t.get("added", t_plug)) * 1000,
                             "result": t.get("result"), "new": i < POOL})
            else:
                print("# plug %d: no write seen (%s)" % (i, t))
        print("auto-flash plug latency: %d plugs, rule 'bench' (Photon, photon_tinker.bin, "
              "listening mode, serial)" % len(rows))
        report("plug -> writing (1st byte)", [r["writing"] for r in rows])
        report("plug -> first byte acked", [r["first"] for r in rows])
        report("device-added -> writing", [r["flashd"] for r in rows])
        report("  new boards (listening)", [r["writing"] for r in rows if r["new"]])
        report("  replugged (app running)", [r["writing"] for r in rows if not r["new"]])
        print("jobs done: %d of %d" % (len([r for r in rows if r["result"] == "done"]),
                                       len(rows)))
    finally:
        proc.terminate()
        proc.wait(30)


def main():
    if sys.argv[1] == "--inside":
        inside(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
        return
    flashd, _fc, sim = sys.argv[1:4]
    plugs = int(sys.argv[4]) if len(sys.argv) > 4 else 50
    budget = float(sys.argv[5]) if len(sys.argv) > 5 else 120
    if not os.path.exists(TINKER):
        print("SKIP: fixture %s missing" % TINKER)
        sys.exit(77)
    work = tempfile.mkdtemp(prefix="flashd-autobench-")
    st = os.path.join(work, "sim-state")
    os.mkdir(st)
    # One idle device to start the testbed with (an Electron: no rule matches it).
    r = run_in_sim(sim, ["platform=electron,os=1.5.2,mode=listening,name=idle"],
                   [sys.executable, os.path.abspath(__file__), "--inside", flashd, work,
                    str(plugs), str(budget)],
                   work, control=os.path.join(work, "control.sock"), state_dir=st,
                   timeout=budget + 120)
    if r.returncode == 0:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(r.returncode)


main()

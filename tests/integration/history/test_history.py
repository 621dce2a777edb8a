#!/usr/bin/env python3
"""The flash history (issue 15) under flashd-sim: a Photon flashed in listening
mode appears in `flashctl history --json` with the contract's keys, its images'
SHA-256 and the installed module versions before and after; a refused job
records its catalogue id; the filters and --stats work; a daemon killed with
SIGKILL in the middle of a job leaves a database that passes PRAGMA
integrity_check, and the restarted daemon records that job as interrupted.

usage: test_history.py FLASHD FLASHCTL FLASHD_SIM
       test_history.py --inside FLASHD FLASHCTL WORKDIR      (inside flashd-sim)
"""
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from flashd_harness import (SERIAL_TIMEOUTS, Daemon, SimControl, Tap, fixture,  # noqa: E402
                            modules_of, run_self_in_sim)

PHOTON_ID = "3a001d000a47353138383101"
ARGON_ID = "e00fce68aabbccddeeff0001"
CONTRACT = ["job", "device", "platform", "port", "rule", "result", "outcome", "error",
            "started", "ended", "bytes_written", "images", "before", "after"]
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
# A silent receiver must keep the job in "writing" until the kill, not time it out.
KILL_CONFIG = SERIAL_TIMEOUTS.replace("serial_block_ms = 1500", "serial_block_ms = 60000")
# Every fixture the test reads, resolved before the first TAP line.
FIXTURES = ["photon/photon_tinker.bin", "electron/electron_tinker.bin", "photon/photon_doctor.bin",
            "argon/argon-system-part1@2.2.0.bin"]


def Flashd(flashd, work, config):
    """flashd on a fixed socket and state directory, so that it can be restarted
    (flashd_harness.Daemon)."""
    return Daemon(flashd, config=config, log_level="debug", private_locks=True, work=work,
                  start=False)


def run(fc, sock, *args, timeout=150):
    return subprocess.run([fc, "--socket", sock, *args], capture_output=True, text=True,
                          timeout=timeout)


def flash(fc, sock, *args):
    r = run(fc, sock, "--json", "flash", *args)
    objs = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    ended = [o for o in objs if o.get("event") == "job-ended"]
    return r.returncode, (ended[-1] if ended else {})


def history(fc, sock, *args):
    r = run(fc, sock, "history", "--json", *args, timeout=30)
    if r.returncode != 0:
        return None, r
    return [json.loads(l) for l in r.stdout.splitlines()], r


def wait_devices(fc, sock, n=1, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = run(fc, sock, "--json", "list", timeout=10)
        if r.returncode == 0 and len([d for d in json.loads(r.stdout)["devices"]
                                      if d["present"]]) >= n:
            return True
        time.sleep(0.1)
    return False


def inside(flashd, fc, work):
    tinker, electron, doctor, sysp = (fixture(f) for f in FIXTURES)
    tap = Tap()
    d = Flashd(flashd, work, KILL_CONFIG)
    d.start()
    try:
        tap.check("flashd sees the simulated Photon", wait_devices(fc, d.sock), d.log()[-2000:])
        code, end = flash(fc, d.sock, tinker, "--device", PHOTON_ID)
        tap.check("photon_tinker.bin flashes and verifies",
                  code == 0 and end.get("outcome") == "verified", end)
        good_job = end.get("job")

        rows, r = history(fc, d.sock)
        tap.check("flashctl history --json: one line per job", rows is not None and len(rows) == 1,
                  r.stdout + r.stderr)
        row = rows[0] if rows else {}
        tap.check("the contract's keys are all there",
                  all(k in row for k in CONTRACT), [k for k in CONTRACT if k not in row])
        tap.check("job, device, platform and port are the job's",
                  row.get("job") == good_job and row.get("device") == PHOTON_ID and
                  row.get("platform") == "photon" and row.get("port") == "1-1", row)
        tap.check("done / verified, no error, no rule",
                  row.get("result") == "done" and row.get("outcome") == "verified" and
                  row.get("error") is None and row.get("rule") is None, row)
        tap.check("started and ended are RFC 3339",
                  all(isinstance(row.get(k), str) and RFC3339.match(row[k])
                      for k in ("started", "ended")), row)
        sha = hashlib.sha256(open(tinker, "rb").read()).hexdigest()
        tap.check("images: file name and SHA-256",
                  row.get("images") == [{"file": "photon_tinker.bin", "sha256": sha}],
                  row.get("images"))
        tap.check("bytes_written is the file's size",
                  row.get("bytes_written") == os.path.getsize(tinker), row.get("bytes_written"))
        before, after = modules_of(row.get("before")), modules_of(row.get("after"))
        tap.check("before: the installed Device OS modules (system parts)",
                  ("system", 1) in before and ("system", 2) in before, row.get("before"))
        tap.check("after: the application the job wrote (user part 1 version 2)",
                  after.get(("user", 1)) == 2 and after.get(("system", 1)) ==
                  before.get(("system", 1)), row.get("after"))
        plan = row.get("plan")
        tap.check("the job's final plan is stored (its write step, not the preliminary plan)",
                  isinstance(plan, dict) and not plan.get("preliminary")
                  and any(s.get("kind") == "write" for s in plan.get("steps", [])), plan)

        code, end = flash(fc, d.sock, electron, "--device",
                          PHOTON_ID)
        tap.check("electron_tinker.bin is refused (wrong-platform)",
                  (end.get("error") or {}).get("code") == "wrong-platform", end)
        rows, r = history(fc, d.sock)
        last = rows[-1] if rows else {}
        tap.check("the refused job is the newest line, failed with its error id and detail",
                  len(rows or []) == 2 and last.get("result") == "failed" and
                  last.get("error") == "wrong-platform" and
                  (last.get("error_detail") or {}).get("image_platform") == "electron" and
                  last.get("bytes_written") == 0, last)

        rows, _ = history(fc, d.sock, "--result", "failed")
        tap.check("--result failed: only the refused job",
                  [x["job"] for x in rows or []] == [last.get("job")], rows)
        rows, _ = history(fc, d.sock, "--result", "done")
        tap.check("--result done: only the good job", [x["job"] for x in rows or []] == [good_job],
                  rows)
        rows, _ = history(fc, d.sock, "--device", PHOTON_ID)
        tap.check("--device ID: both", len(rows or []) == 2, rows)
        rows, _ = history(fc, d.sock, "--device", "e00fce68000000000000beef")
        tap.check("--device of another device: none", rows == [], rows)
        rows, _ = history(fc, d.sock, "--limit", "1")
        tap.check("--limit 1: the newest", [x["job"] for x in rows or []] == [last.get("job")],
                  rows)
        rows, _ = history(fc, d.sock, "--since", "2999-01-01")
        tap.check("--since in the future: none", rows == [], rows)
        rows, _ = history(fc, d.sock, "--since", "1h")
        tap.check("--since 1h: both", len(rows or []) == 2, rows)
        r = run(fc, d.sock, "history", "--result", "bogus")
        tap.check("--result bogus: bad-request, exit 2",
                  r.returncode == 2 and "bad-request" in r.stderr, r.stderr)
        r = run(fc, d.sock, "history")
        tap.check("human output: a table with both jobs",
                  r.returncode == 0 and r.stdout.count(PHOTON_ID) == 2 and "RESULT" in r.stdout
                  and "wrong-platform" in r.stdout, r.stdout + r.stderr)

        r = run(fc, d.sock, "history", "--stats", "--json")
        stats = [json.loads(l) for l in r.stdout.splitlines()] if r.returncode == 0 else []
        p = stats[0] if stats else {}
        tap.check("--stats: photon, 2 jobs, 1 failed, failure rate 0.5, by error id",
                  len(stats) == 1 and p.get("platform") == "photon" and p.get("jobs") == 2 and
                  p.get("failed") == 1 and abs(p.get("failure_rate", 0) - 0.5) < 1e-9 and
                  p.get("errors") == [{"error": "wrong-platform", "count": 1, "rate": 0.5}] and
                  isinstance(p.get("median_duration_s"), float), r.stdout + r.stderr)
        r = run(fc, d.sock, "history", "--stats")
        tap.check("--stats human: a row for photon and the error",
                  r.returncode == 0 and "photon" in r.stdout and "wrong-platform" in r.stdout,
                  r.stdout + r.stderr)

        # A DFU job that fails keeps the USB flight recorder in the history.
        ctl = SimControl(os.path.join(work, "control.sock"))
        r = ctl(cmd="plug", spec="platform=argon,mode=dfu,os=2.2.0,name=d2,id=%s,"
                "faults=stall@chunk4:errPROG" % ARGON_ID)
        tap.check("an Argon in DFU mode is plugged in", r.get("ok") and
                  wait_devices(fc, d.sock, 2), r)
        code, end = flash(fc, d.sock, sysp, "--device", ARGON_ID)
        tap.check("its flash fails at the fourth chunk (transfer-failed)",
                  (end.get("error") or {}).get("code") == "transfer-failed", end)
        rows, _ = history(fc, d.sock, "--device", ARGON_ID)
        a = rows[-1] if rows else {}
        tap.check("history: argon, dfu, transfer-failed, the bytes written before the stall",
                  a.get("platform") == "argon" and a.get("transport") == "dfu" and
                  a.get("error") == "transfer-failed" and
                  0 < (a.get("bytes_written") or 0) < os.path.getsize(sysp), a)
        tap.check("history: the flight recorder (usb_trace) in trace, not in error_detail",
                  isinstance(a.get("trace"), list) and a["trace"] and
                  "usb_trace" not in (a.get("error_detail") or {}) and
                  (a.get("error_detail") or {}).get("chunk") == 3, a)

        # SIGKILL in the middle of a job: the device stops answering at block 3.
        r = ctl(cmd="fault", name="d1", faults="silent@block3")
        tap.check("fault set: the Photon stops answering at block 3", r.get("ok"), r)
        fl = subprocess.Popen([fc, "--socket", d.sock, "--json", "flash", doctor, "--device",
                               PHOTON_ID],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        killed_job, writing = None, False
        deadline = time.monotonic() + 60
        while True:
            line = fl.stdout.readline()
            if not line:
                break
            o = json.loads(line) if line.startswith("{") else {}
            if o.get("event") == "job-started":
                killed_job = o.get("job")
            if o.get("event") == "job-progress" and o.get("state") == "writing":
                writing = True
                break
            if o.get("event") == "job-ended" or time.monotonic() > deadline:
                break
        time.sleep(0.5)  # blocks 1 and 2 go over, block 3 gets no answer
        tap.check("the third job is writing", killed_job and writing, killed_job)
        started_row = None
        deadline = time.monotonic() + 10
        while started_row is None and time.monotonic() < deadline:
            rows, _ = history(fc, d.sock)
            started_row = next((x for x in rows or [] if x["job"] == killed_job), None)
            time.sleep(0.05)
        tap.check("its row exists while it runs (result null)",
                  started_row is not None and started_row.get("result") is None, started_row)
        d.stop(signal.SIGKILL)
        fl.kill()
        fl.wait()
        db = os.path.join(d.state, "history.sqlite3")
        con = sqlite3.connect(db)
        check = con.execute("PRAGMA integrity_check").fetchall()
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
        con.close()
        tap.check("after SIGKILL: PRAGMA integrity_check is ok, journal mode WAL",
                  check == [("ok",)] and mode == "wal", (check, mode))
        d.start()
        rows, r = history(fc, d.sock)
        k = next((x for x in rows or [] if x["job"] == killed_job), {})
        tap.check("after restart: the killed job is interrupted (error interrupted, ended set)",
                  k.get("result") == "interrupted" and k.get("error") == "interrupted" and
                  isinstance(k.get("ended"), str), k)
        tap.check("after restart: the earlier jobs are intact",
                  [x["result"] for x in rows or []][:3] == ["done", "failed", "failed"], rows)
        r = run(fc, d.sock, "--json", "history", "--result", "interrupted", "--limit", "5")
        tap.check("--result interrupted finds it", killed_job in r.stdout, r.stdout)

        # A database this flashd cannot use (from a newer flashd): no history, flashing goes on.
        d.stop()
        con = sqlite3.connect(db)
        con.execute("PRAGMA user_version = 99")
        con.commit()
        con.close()
        ctl(cmd="fault", name="d2", faults="")
        d.start()
        code, end = flash(fc, d.sock, sysp, "--device", ARGON_ID)
        tap.check("with an unusable database the Argon still flashes",
                  code == 0 and end.get("result") == "done", end)
        r = run(fc, d.sock, "history")
        tap.check("flashctl history then says history-unavailable (exit 10) and why",
                  r.returncode == 10 and "history-unavailable" in r.stderr and
                  "schema version 99" in r.stderr, (r.returncode, r.stderr))
        r = run(fc, d.sock, "--json", "history")
        err = json.loads(r.stdout) if r.stdout.startswith("{") else {}
        tap.check("--json: one error object", err.get("type") == "error" and
                  err.get("code") == "history-unavailable", r.stdout)
    finally:
        status = d.stop()
    tap.check("flashd exits cleanly after SIGTERM", status == 0, d.log()[-3000:])
    return tap


def outside(flashd, fc, sim):
    run_self_in_sim(__file__, sim,
                    ["platform=photon,os=1.5.2,mode=listening,name=d1,id=" + PHOTON_ID],
                    flashd, fc, "flashd-history-", fixtures=FIXTURES)


if __name__ == "__main__":
    if sys.argv[1] == "--inside":
        inside(*sys.argv[2:5]).done()
    else:
        outside(*sys.argv[1:4])

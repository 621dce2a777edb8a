#!/usr/bin/env python3
"""Auto-flash and the production station (issue 15) under flashd-sim.

A rule file for Photons with a success hook, in the rules directory the test's
config names; an Electron attached at start and 8 simulated Photons plugged in
over a few seconds: every Photon is flashed (in parallel) and verified, the
Electron is left alone with "no rule matched" in the log; plugging the Photons
again writes nothing; the hook ran 8 times; the history has every job with its
rule and the module versions before and after.  Then: two rules of the same
priority for one device (rule-conflict, nothing flashed); a socket rule with a
hook (refused); flashctl auto add/list/pause/resume/remove and the per-uid
quota; a socket rule flashes the Electron and, once it is replugged, skips it
as already installed; a rule whose images need a newer bootloader than the
device has is refused before the first byte (failure hook); SIGKILL of the daemon while a Photon is being written:
after the restart the rules and the done-set are back, the job is interrupted
and the Photon, still attached, is flashed again.

usage: test_auto.py FLASHD FLASHCTL FLASHD_SIM
       test_auto.py --inside FLASHD FLASHCTL WORKDIR      (inside flashd-sim)
"""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from flashd_harness import (SERIAL_TIMEOUTS, Client, Daemon, SimControl, Tap, fixture,  # noqa: E402
                            modules_of, run_self_in_sim)

ELECTRON_ID = "3c00289539672cca633fdd3a"
PHOTON_IDS = ["3a001d000a4735313838%04x" % (0x1000 + i) for i in range(10)]
FIXTURES = ["photon/photon_tinker.bin", "electron/electron_tinker.bin",
            "photon/photon-system-part1@2.2.0.bin", "photon/photon-system-part2@2.2.0.bin"]
NEEDS_BOOT_ID = "3a001d000a473531383820ff"
# A Photon that stops answering must keep its job in "writing" until the kill.
SOCKET_GID = 4243  # the socket's group in this test; uid 65534 joins it
CONFIG = SERIAL_TIMEOUTS.replace("serial_block_ms = 1500", "serial_block_ms = 60000")


def Flashd(flashd, work, config):
    """flashd on a fixed socket and state directory, so that it can be restarted
    (flashd_harness.Daemon); the socket in a directory every uid can reach (other
    uids' rights are tested)."""
    sockdir = tempfile.mkdtemp(prefix="flashd-auto-sock-", dir="/tmp")
    os.chmod(sockdir, 0o755)
    return Daemon(flashd, config=config, log_level="debug", private_locks=True, work=work,
                  sockdir=sockdir, start=False)


def run(fc, sock, *args, timeout=60):
    return subprocess.run([fc, "--socket", sock, *args], capture_output=True, text=True,
                          timeout=timeout)


def history(fc, sock):
    r = run(fc, sock, "history", "--json", "--limit", "1000")
    return [json.loads(line) for line in r.stdout.splitlines()] if r.returncode == 0 else []


def station(fc, sock):
    r = run(fc, sock, "station", "--json")
    return json.loads(r.stdout)["station"] if r.returncode == 0 else {}


def wait_for(pred, timeout=120, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def present(fc, sock):
    r = run(fc, sock, "--json", "list")
    return [d for d in json.loads(r.stdout)["devices"] if d["present"]] if r.returncode == 0 \
        else []


def lines_of(path):
    return open(path).read().splitlines() if os.path.exists(path) else []


def max_overlap(rows):
    """How many of the jobs ran at the same moment at most."""
    edges = sorted([(r["started"], 1) for r in rows] + [(r["ended"], -1) for r in rows],
                   key=lambda e: (e[0], e[1]))
    n = best = 0
    for _, d in edges:
        n += d
        best = max(best, n)
    return best


def inside(flashd, fc, work):
    tinker, electron_tinker, sys1, sys2 = (fixture(f) for f in FIXTURES)
    tap = Tap()
    rules = os.path.join(work, "rules.d")
    os.mkdir(rules)
    hook_log = os.path.join(work, "hook.log")
    hook = os.path.join(work, "hook")
    with open(hook, "w") as f:
        f.write("#!/bin/sh\n"
                "job=$(cat)\n"  # the job-ended event on stdin
                "case \"$job\" in *'\"event\":\"job-ended\"'*) ;; *) exit 3 ;; esac\n"
                "echo \"$FLASHD_JOB $FLASHD_RULE $FLASHD_RESULT $FLASHD_DEVICE\" >> %s\n"
                "echo lit the green light\n" % hook_log)
    os.chmod(hook, 0o755)
    fail_log = os.path.join(work, "fail.log")
    with open(os.path.join(rules, "photon.conf"), "w") as f:
        f.write("# Photons on the line: flash Tinker once per board\n"
                "[rule]\nid = photon-line\nplatform = photon\nimage = %s\nonce = yes\n"
                "on_success = %s\non_failure = /bin/sh -c \"echo $FLASHD_JOB >> %s\"\n"
                "hook_timeout_s = 10\n"
                "[labels]\n1-3 = Bench slot 1\n1-4 = Bench slot 2\n" % (tinker, hook, fail_log))
    os.chmod(os.path.join(rules, "photon.conf"), 0o644)
    # Another uid connects through the socket's group (socket_group): connecting is not administering.
    config = CONFIG + "[daemon]\nsocket_group = %d\n[auto]\nrules_dir = %s\nmax_rules_per_uid = 3\n" % (SOCKET_GID, rules)
    d = Flashd(flashd, work, config)
    ctl = SimControl(os.path.join(work, "control.sock"))
    d.start()
    try:
        tap.check("flashd sees the Electron", wait_for(lambda: present(fc, d.sock), 20),
                  d.log()[-2000:])
        r = run(fc, d.sock, "--json", "auto", "list")
        lst = json.loads(r.stdout) if r.returncode == 0 else {}
        tap.check("auto list: the rule file's rule, with its hooks and labels",
                  [x["id"] for x in lst.get("rules", [])] == ["photon-line"] and
                  lst["rules"][0]["source"] == "file" and
                  lst["rules"][0]["hooks"]["on_success"] == [hook] and
                  lst.get("labels", {}).get("1-3") == "Bench slot 1", r.stdout + r.stderr)

        # 8 Photons plugged in over a few seconds.
        names = []
        for i in range(8):
            res = ctl(cmd="plug", spec="platform=photon,os=1.5.2,mode=listening,name=p%d,id=%s"
                      % (i, PHOTON_IDS[i]))
            names.append(res.get("name"))
            time.sleep(0.4)
        tap.check("8 Photons are plugged in", all(names), names)

        def rule_rows():
            return [x for x in history(fc, d.sock) if x.get("rule") == "photon-line"]

        def flashed():
            rows = [x for x in rule_rows() if x.get("outcome") == "verified"]
            return rows if len(rows) >= 8 else None
        rows = wait_for(flashed, 150) or []
        tap.check("all 8 Photons flashed and verified by the rule",
                  sorted(x["device"] for x in rows) == sorted(PHOTON_IDS[:8]),
                  json.dumps(rule_rows(), indent=1)[-3000:] + d.log()[-3000:])
        tap.check("they were flashed in parallel (jobs overlapped)", max_overlap(rows) >= 2,
                  [(x["started"], x["ended"]) for x in rows])
        tap.check("every job: port, rule, bytes written, before and after versions",
                  all(x["port"] and x["bytes_written"] == os.path.getsize(tinker) and
                      modules_of(x["after"]).get(("user", 1)) == 2 and
                      ("system", 1) in modules_of(x["before"]) for x in rows),
                  json.dumps(rows[:1], indent=1))
        labelled = [x for x in rows if x.get("port") == "1-3"]
        tap.check("the port's label is in the history",
                  labelled and labelled[0].get("label") == "Bench slot 1", labelled)
        tap.check("the success hook ran 8 times (job JSON on stdin, env)",
                  wait_for(lambda: len(lines_of(hook_log)) >= 8, 20) and
                  len(lines_of(hook_log)) == 8 and
                  all(" photon-line done " in line for line in lines_of(hook_log)),
                  lines_of(hook_log))
        hooked = wait_for(lambda: [x for x in rule_rows() if x.get("hook")], 10) or []
        h = (hooked[0].get("hook") if hooked else None) or {}
        tap.check("the hook's exit status and output are in the history",
                  h.get("exit_status") == 0 and "green light" in h.get("output", "") and
                  h.get("hook") == "on_success", h)
        tap.check("no failure hook ran", not lines_of(fail_log), lines_of(fail_log))
        log = d.log()
        tap.check("the Electron is untouched: 'no rule matched' logged, no job",
                  "no rule matched device %s" % ELECTRON_ID in log and
                  not [x for x in history(fc, d.sock) if x.get("device") == ELECTRON_ID],
                  [line for line in log.splitlines() if "rule" in line][-10:])
        st = station(fc, d.sock)
        ports = {p.get("device"): p for p in st.get("ports", [])}
        tap.check("station: 8 flashed, 0 failed; the Electron 'no-rule'; labels",
                  st.get("counters", {}).get("flashed") == 8 and
                  st["counters"]["failed"] == 0 and
                  ports.get(ELECTRON_ID, {}).get("state") == "no-rule" and
                  any(p.get("label") == "Bench slot 2" for p in st["ports"]), st)
        r = run(fc, d.sock, "station")
        tap.check("station off a terminal: plain lines, no escape codes",
                  r.returncode == 0 and "\033" not in r.stdout and "Bench slot 1" in r.stdout
                  and "flashed 8" in r.stdout, r.stdout + r.stderr)

        # Plug the same Photons again: nothing is written.
        n_jobs = len(history(fc, d.sock))
        time.sleep(3.5)  # auto_settle_ms: a re-enumeration right after a job is the job's own
        for n in names:
            ctl(cmd="unplug", name=n)
        time.sleep(0.3)
        for n in names:
            ctl(cmd="plug", name=n)
        skipped = wait_for(lambda: station(fc, d.sock).get("counters", {}).get("skipped", 0)
                           >= 8, 60)
        time.sleep(1)
        tap.check("replugged: all 8 skipped, no new job, nothing written",
                  skipped and len(history(fc, d.sock)) == n_jobs and
                  len(lines_of(hook_log)) == 8, (station(fc, d.sock), n_jobs))

        # Two rules of the same priority for the Electron: a named error, nothing flashed.
        with open(os.path.join(rules, "electron.conf"), "w") as f:
            f.write("[rule]\nid = electron-a\nplatform = electron\npriority = 5\nimage = %s\n"
                    "[rule]\nid = electron-b\ndevice = 3c00*\npriority = 5\nimage = %s\n"
                    % (electron_tinker, electron_tinker))
        r = run(fc, d.sock, "--json", "auto", "reload")
        rel = json.loads(r.stdout).get("reload", {}) if r.returncode == 0 else {}
        tap.check("auto reload: 3 rules, no errors", rel.get("rules") == 3 and
                  rel.get("errors") == [], r.stdout + r.stderr)
        ok = wait_for(lambda: "rule-conflict" in d.log(), 10)
        time.sleep(1)
        ports = {p.get("device"): p for p in station(fc, d.sock).get("ports", [])}
        tap.check("equal priorities: rule-conflict logged and shown, nothing flashed",
                  ok and ports.get(ELECTRON_ID, {}).get("state") == "conflict" and
                  "rule-conflict" in (ports[ELECTRON_ID].get("message") or "") and
                  not [x for x in history(fc, d.sock) if x.get("device") == ELECTRON_ID],
                  ports.get(ELECTRON_ID))
        os.unlink(os.path.join(rules, "electron.conf"))
        os.kill(d.proc.pid, signal.SIGHUP)
        tap.check("SIGHUP reloads the rule files",
                  wait_for(lambda: d.log().count("1 rule(s), 1 rule file(s)") >= 2, 10),
                  d.log()[-1500:])

        # A rule over the socket may not carry a hook.
        c = Client(d.sock)
        fd = os.open(electron_tinker, os.O_RDONLY)
        reply = c.call({"request": "auto-add", "platform": "electron",
                        "images": [{"name": "electron_tinker.bin", "fd": 0}],
                        "on_success": ["/bin/touch", os.path.join(work, "pwned")]}, fds=[fd])
        os.close(fd)
        c.close()
        tap.check("a socket rule with a hook is refused (hook-not-allowed)",
                  reply.get("type") == "error" and reply.get("code") == "hook-not-allowed" and
                  not os.path.exists(os.path.join(work, "pwned")), reply)

        # flashctl auto add / list / pause / resume / remove, quota.
        r = run(fc, d.sock, "auto", "add", "--platform", "photon", "--port", "9-9", "--label",
                "Spare", "--id", "3a00*", "--os-older-than", "4.0.2", "--priority", "3", tinker)
        rid = r.stdout.strip()
        tap.check("auto add prints the new rule's id", r.returncode == 0 and rid, r.stderr)
        r = run(fc, d.sock, "--json", "auto", "add", "--platform", "photon", "--port", "9-8",
                "--once", tinker)
        rep = json.loads(r.stdout) if r.returncode == 0 else {}
        rid2 = rep.get("rule", {}).get("id")
        tap.check("auto add --json: {type: reply, rule: {id}}",
                  rep.get("type") == "reply" and rid2 and rid2 != rid, r.stdout + r.stderr)
        r = run(fc, d.sock, "--json", "auto", "list")
        byid = {x["id"]: x for x in json.loads(r.stdout)["rules"]} if r.returncode == 0 else {}
        x = byid.get(rid, {})
        tap.check("auto list shows it with its match, options and stored image",
                  x.get("source") == "socket" and x["match"] == {
                      "platform": "photon", "port": "9-9", "label": "Spare", "device": "3a00*",
                      "mode": None, "os_older_than": "4.0.2"} and
                  x["options"]["priority"] == 3 and x["hooks"]["on_success"] is None and
                  os.path.exists(os.path.join(d.state, "auto", "images",
                                              x["images"][0]["sha256"])), x)
        r1 = run(fc, d.sock, "auto", "pause", rid)
        paused = run(fc, d.sock, "--json", "auto", "list")
        r2 = run(fc, d.sock, "auto", "resume", rid)
        tap.check("auto pause / resume",
                  r1.returncode == 0 and r2.returncode == 0 and
                  [y["paused"] for y in json.loads(paused.stdout)["rules"] if y["id"] == rid]
                  == [True], r1.stderr + r2.stderr)
        # Another uid: may list, may not change root's rule or reload; may add its own.
        nobody = dict(user=65534, group=65534, extra_groups=[SOCKET_GID])
        fc_abs = os.path.abspath(fc)
        r = subprocess.run([fc_abs, "--socket", d.sock, "auto", "pause", rid], capture_output=True,
                           text=True, timeout=30, cwd="/", **nobody)
        tap.check("another uid may not pause a rule it does not own (not-allowed, exit 6)",
                  r.returncode == 6 and "not-allowed" in r.stderr, r.stderr)
        r = subprocess.run([fc_abs, "--socket", d.sock, "auto", "reload"], capture_output=True,
                           text=True, timeout=30, cwd="/", **nobody)
        tap.check("... nor reload the rule files", r.returncode == 6, r.stderr)
        r = subprocess.run([fc_abs, "--socket", d.sock, "auto", "add", "--port", "9-5", tinker],
                           capture_output=True, text=True, timeout=30, cwd="/", **nobody)
        own = r.stdout.strip()
        r2 = subprocess.run([fc_abs, "--socket", d.sock, "auto", "remove", own],
                            capture_output=True, text=True, timeout=30, cwd="/", **nobody)
        tap.check("... but may add a rule and remove its own",
                  r.returncode == 0 and own and r2.returncode == 0, r.stderr + r2.stderr)
        r = run(fc, d.sock, "auto", "add", "--port", "9-7", tinker)
        r = run(fc, d.sock, "auto", "add", "--port", "9-6", tinker)
        tap.check("a fourth rule of the same uid: rule-quota-exceeded (exit 10)",
                  r.returncode == 10 and "rule-quota-exceeded" in r.stderr, r.stderr)
        r = run(fc, d.sock, "auto", "remove", "photon-line")
        tap.check("a rule file's rule cannot be removed over the socket (not-allowed)",
                  r.returncode != 0 and "not-allowed" in r.stderr, r.stderr)
        r = run(fc, d.sock, "auto", "remove", "nosuchrule")
        tap.check("removing an unknown rule: rule-not-found", "rule-not-found" in r.stderr,
                  r.stderr)
        r = run(fc, d.sock, "--json", "auto", "list")
        for y in json.loads(r.stdout)["rules"]:
            if y["id"] not in ("photon-line", rid):
                run(fc, d.sock, "auto", "remove", y["id"])
        r = run(fc, d.sock, "--json", "auto", "list")
        tap.check("auto remove", sorted(y["id"] for y in json.loads(r.stdout)["rules"]) ==
                  sorted(["photon-line", rid]), r.stdout)

        # A socket rule for the Electron (coldplug: it is attached), then replugged: skipped.
        r = run(fc, d.sock, "auto", "add", "--platform", "electron", "--label", "E", electron_tinker)
        erule = r.stdout.strip()

        def electron_rows():
            return [x for x in history(fc, d.sock) if x.get("device") == ELECTRON_ID]
        got = wait_for(lambda: [x for x in electron_rows() if x.get("outcome") == "verified"],
                       90)
        tap.check("a rule added while the Electron is attached flashes it (coldplug)",
                  got and got[0]["rule"] == erule and got[0]["label"] == "E", electron_rows())
        time.sleep(3.5)  # auto_settle_ms
        ctl(cmd="replug", name="e1")
        got = wait_for(lambda: [x for x in electron_rows()
                                if x.get("outcome") == "already-installed"], 60)
        tap.check("replugged with the rule's images installed: done / already-installed, "
                  "0 bytes", got and got[0]["bytes_written"] == 0 and
                  got[0]["result"] == "done" and got[0]["rule"] == erule, electron_rows())
        run(fc, d.sock, "auto", "remove", erule)

        # A rule whose images need a newer bootloader than the device has and than
        # they carry: refused before the first byte, the failure hook runs.
        with open(os.path.join(rules, "upgrade.conf"), "w") as f:
            f.write("[rule]\nid = upgrade\ndevice = %s\npriority = 10\nimage = %s\nimage = %s\n"
                    "on_failure = /bin/sh -c \"echo $FLASHD_JOB >> %s; exec sleep 60\"\n"
                    "hook_timeout_s = 1\n" % (NEEDS_BOOT_ID, sys1, sys2, fail_log))
        run(fc, d.sock, "auto", "reload")
        ctl(cmd="plug", spec="platform=photon,os=1.5.2,mode=listening,name=pb,id=%s"
            % NEEDS_BOOT_ID)
        rows = wait_for(lambda: [x for x in history(fc, d.sock) if x.get("rule") == "upgrade" and
                                 x.get("result") == "failed"], 60) or []
        x = rows[0] if rows else {}
        refused = x.get("error") == "dependency-unmet" and x.get("bytes_written") == 0 and \
            x.get("error_message")
        tap.check("a rule needing a newer bootloader: refused before the first byte, the "
                  "history says why", refused, rows)
        tap.check("... and the failure hook ran for it",
                  wait_for(lambda: x.get("job") in lines_of(fail_log), 20), lines_of(fail_log))

        def hook_of_upgrade():
            return [y.get("hook") for y in history(fc, d.sock)
                    if y.get("job") == x.get("job") and y.get("hook")]
        hk = (wait_for(hook_of_upgrade, 20) or [{}])[0]
        tap.check("a hook over its timeout is killed, and the history says so",
                  hk.get("timed_out") is True and hk.get("signal") == 9 and
                  hk.get("exit_status") is None and 0.9 < hk.get("duration_s", 0) < 10, hk)
        ctl(cmd="unplug", name="pb")
        os.unlink(os.path.join(rules, "upgrade.conf"))
        run(fc, d.sock, "auto", "reload")

        # SIGKILL while a ninth Photon is being written.
        ctl(cmd="plug", spec="platform=photon,os=1.5.2,mode=listening,name=p8,id=%s,"
            "faults=silent@block3" % PHOTON_IDS[8])

        def writing():
            for p in station(fc, d.sock).get("ports", []):
                if p.get("device") == PHOTON_IDS[8] and p.get("job_state") == "writing":
                    return p["job"]
            return None
        killed = wait_for(writing, 60, 0.05)
        tap.check("the ninth Photon's job is writing", killed, station(fc, d.sock))
        time.sleep(0.5)
        d.stop(signal.SIGKILL)
        con = sqlite3.connect(os.path.join(d.state, "history.sqlite3"))
        integrity = con.execute("PRAGMA integrity_check").fetchall()
        con.close()
        tap.check("after SIGKILL the database passes integrity_check", integrity == [("ok",)],
                  integrity)
        ctl(cmd="fault", name="p8", faults="")
        ctl(cmd="mode", name="p8", mode="listening")  # the receiver gives up the transfer
        time.sleep(1.5)
        d.start()
        r = run(fc, d.sock, "--json", "auto", "list")
        byid = {x["id"]: x for x in json.loads(r.stdout)["rules"]} if r.returncode == 0 else {}
        tap.check("after restart: the socket rule and the file rule are back, the done-set "
                  "(8 boards) too", set(byid) == {"photon-line", rid} and
                  byid["photon-line"]["done"] == 8, r.stdout)
        rows = wait_for(lambda: [x for x in history(fc, d.sock)
                                 if x.get("device") == PHOTON_IDS[8] and x.get("result")], 30)
        k = [x for x in rows or [] if x["job"] == killed]
        tap.check("the killed job is recorded interrupted", k and k[0]["result"] ==
                  "interrupted" and k[0]["rule"] == "photon-line", rows)
        again = wait_for(lambda: [x for x in history(fc, d.sock)
                                  if x.get("device") == PHOTON_IDS[8] and
                                  x.get("outcome") == "verified"], 90)
        tap.check("the ninth Photon, still attached, is flashed again after the restart",
                  again and again[0]["rule"] == "photon-line", history(fc, d.sock)[-3:])
        time.sleep(1)
        ph = [x for x in history(fc, d.sock) if x.get("device") in PHOTON_IDS[:8]]
        tap.check("the 8 done Photons, still attached, are not flashed again (once)",
                  len([x for x in ph if x.get("bytes_written")]) == 8, len(ph))
        tap.check("the hook ran 9 times in all",
                  wait_for(lambda: len(lines_of(hook_log)) == 9, 20), lines_of(hook_log))

        # Unplugged mid-write and plugged back into another port: the replug rule
        # resumes the one job (auto-flash starts no second one).
        watch = Client(d.sock, 30)
        watch.call({"request": "subscribe", "jobs": True})
        ctl(cmd="plug", spec="platform=photon,os=1.5.2,mode=listening,name=p9,id=%s,"
            "faults=unplug@50%%" % PHOTON_IDS[9])
        notes, ends, replugged = [], [], None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not ends:
            try:
                ev = watch.read(1.0)
            except TimeoutError:
                continue
            if ev is None:
                break
            if ev.get("device") not in (None, PHOTON_IDS[9]):
                continue
            if ev.get("event") == "job-progress" and ev.get("note"):
                notes.append((ev["job"], ev["note"]))
                if ev["note"] == "device-left" and not replugged:
                    replugged = ctl(cmd="replug", name="p9", port="1-19")
            if ev.get("event") == "job-ended" and ev.get("record", {}).get("images"):
                ends.append(ev)
        watch.close()
        time.sleep(4)  # longer than auto_settle_ms: a second job would have started
        rows = [x for x in history(fc, d.sock) if x.get("device") == PHOTON_IDS[9]]
        # (handed-to-* notes say where the job changes transport, e.g. a device read by
        # control request before its tty appeared, then written over serial)
        tap.check("unplugged mid-write, replugged into another port: device-left, device-back",
                  [n for _, n in notes if not n.startswith("handed-to-")][:2] ==
                  ["device-left", "device-back"] and replugged,
                  (notes, replugged))
        tap.check("... one job, resumed, verified",
                  len(ends) == 1 and ends[0].get("result") == "done" and
                  ends[0].get("outcome") == "verified" and
                  {j for j, _ in notes} == {ends[0].get("job")}, ends)
        tap.check("... the history has one row for it, with the interruption (resumes: 1) "
                  "and the new port", len(rows) == 1 and rows[0].get("resumes") == 1 and
                  rows[0].get("outcome") == "verified" and rows[0].get("port") == "1-19",
                  rows)
    finally:
        status = d.stop()
        shutil.rmtree(d.sockdir, ignore_errors=True)
    tap.check("flashd exits cleanly after SIGTERM", status == 0, d.log()[-3000:])
    return tap


def outside(flashd, fc, sim):
    run_self_in_sim(__file__, sim,
                    ["platform=electron,os=1.5.2,mode=listening,name=e1,id=" + ELECTRON_ID],
                    flashd, fc, "flashd-auto-", fixtures=FIXTURES, timeout=600)


if __name__ == "__main__":
    if sys.argv[1] == "--inside":
        inside(*sys.argv[2:5]).done()
    else:
        outside(*sys.argv[1:4])

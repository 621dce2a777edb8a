#!/usr/bin/env python3
"""flashd's socket protocol against the real daemon (no devices attached):
each malformed input, 200 concurrent clients, a slow reader, every limit,
fd passing, jobs that wait for a device, flashctl's exit statuses -- and
after all of it the daemon still answers, holds no extra fds, and exits
cleanly (leaks make the ASan build exit non-zero).

usage: test_protocol.py FLASHD FLASHCTL
"""
import json
import os
import shutil
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flashd_harness import Client, Daemon, Tap, fixture, flashctl  # noqa: E402

FLASHD, FLASHCTL = sys.argv[1], sys.argv[2]
PHOTON_APP = fixture("photon/photon_tinker.bin")
tap = Tap()


def code(msg):
    return msg.get("code") if msg and msg.get("type") == "error" else None


def malformed_inputs(d):
    c = d.client()
    cases = [
        ("malformed JSON", b'{"request":"hello"', None),
        ("not an object", b"[1,2,3]", None),
        ("a bare string", b'"hello"', None),
        ("missing request", b'{"id":1}', "request"),
        ("request not a string", b'{"request":7,"id":1}', "request"),
        ("unknown request", b'{"request":"format-disk","id":1}', "request"),
        ("missing id", b'{"request":"hello"}', "id"),
        ("id of the wrong type", b'{"request":"hello","id":{"a":1}}', "id"),
        ("type other than request", b'{"type":"reply","request":"hello","id":1}', "type"),
        ("duplicate keys", b'{"request":"hello","id":1,"id":2}', None),
        ("nested too deep", b'{"request":"hello","id":1,"x":' + b"[" * 40 + b"]" * 40 + b"}",
         None),
        ("invalid UTF-8", b'{"request":"hello","id":1,"x":"\xff\xfe"}', None),
        ("subscribe with a non-boolean", b'{"request":"subscribe","id":1,"devices":"yes"}',
         "devices"),
        ("subscribe to nothing", b'{"request":"subscribe","id":1}', "devices"),
        ("cancel without job", b'{"request":"cancel","id":1}', "job"),
        ("cancel with a numeric job", b'{"request":"cancel","id":1,"job":5}', "job"),
        ("device-info without device", b'{"request":"device-info","id":1}', "device"),
        ("flash without images", b'{"request":"flash","id":1}', "images"),
        ("flash naming an fd it did not pass",
         b'{"request":"flash","id":1,"images":[{"fd":0}]}', "fd"),
        ("flash with a bad option type",
         b'{"request":"flash","id":1,"images":[{"fd":0}],"options":{"wait":"soon"}}', None),
        ("flash to an unknown platform",
         b'{"request":"flash","id":1,"images":[{"fd":0}],"target":{"platform":"toaster"}}',
         None),
    ]
    for name, line, field in cases:
        c.send_raw(line + b"\n")
        msg = c.read()
        ok = code(msg) == "bad-request" and msg.get("detail", {}).get("reason")
        if field:
            ok = ok and msg["detail"].get("field") == field
        tap.check(f"malformed: {name} -> bad-request with a reason", ok, json.dumps(msg))
    # The connection survives every one of them.
    r = c.call({"request": "hello", "protocol": 1})
    tap.check("connection still answers after malformed input",
              r and r["type"] == "reply" and r["protocol"] == 1, r)
    # Blank lines and CRLF are tolerated.
    c.send_raw(b"\n\r\n" + b'{"request":"list-devices","id":99}\r\n')
    r = c.read()
    tap.check("blank lines skipped, CRLF accepted", r and r.get("id") == 99, r)
    # A line of only spaces and tabs is a blank line too (issue 13).
    c.send_raw(b" \t  \n\t\r\n" + b'{"request":"list-devices","id":100}\n')
    r = c.read()
    tap.check("whitespace-only lines skipped like blank lines", r and r.get("id") == 100, r)
    c.close()


def oversize_message(d):
    c = d.client()
    c.send_raw(b'{"request":"hello","id":1,"pad":"' + b"x" * (70 * 1024))
    msg = c.read()
    tap.check("message over the size limit -> bad-request naming the limit",
              code(msg) == "bad-request" and msg["detail"].get("limit") == 65536, msg)
    tap.check("... and the connection is closed", c.read() is None)
    c.close()


def hello_and_lists(d):
    c = d.client()
    r = c.call({"request": "hello", "protocol": 1, "client": "test"})
    tap.check("hello: protocol version, server and capabilities",
              r["protocol"] == 1 and r["server"].startswith("flashd ")
              and "fd-passing" in r["capabilities"], r)
    r = c.call({"request": "list-devices"})
    tap.check("list-devices: empty without devices", r["devices"] == [], r)
    r = c.call({"request": "list-jobs"})
    tap.check("list-jobs: a list", isinstance(r["jobs"], list), r)
    r = c.call({"request": "device-info", "device": "e00fce68aaaaaaaaaaaaaaaa"})
    tap.check("device-info on an unknown device -> device-not-found",
              code(r) == "device-not-found", r)
    r = c.call({"request": "cancel", "job": "00000000-0000-4000-8000-000000000000"})
    tap.check("cancel an unknown job -> job-not-found", code(r) == "job-not-found", r)
    c.close()


def fd_passing(d):
    c = d.client()
    c.call({"request": "subscribe", "jobs": True})
    # A pipe is not a regular file: the daemon must not block reading it.
    rfd, wfd = os.pipe()
    r = c.call({"request": "flash", "images": [{"name": "pipe", "fd": 0}],
                "options": {"wait": 1}}, fds=[rfd])
    os.close(rfd)
    os.close(wfd)
    tap.check("a pipe as firmware -> file-unreadable (never blocks)",
              code(r) == "file-unreadable", r)
    with open(__file__, "rb") as f:
        r = c.call({"request": "flash", "images": [{"name": "test.py", "fd": 0}],
                    "options": {"wait": 1}}, fds=[f.fileno()])
    tap.check("a file that is not a module -> image-not-a-module",
              code(r) == "image-not-a-module", r)
    with open(PHOTON_APP, "rb") as f:
        r = c.call({"request": "flash", "images": [{"name": "photon_tinker.bin", "fd": 0}]},
                   fds=[f.fileno()])
    tap.check("no device attached and no wait -> device-not-found",
              code(r) == "device-not-found", r)
    fds = [os.open(PHOTON_APP, os.O_RDONLY) for _ in range(9)]
    r = c.call({"request": "flash", "images": [{"fd": 0}]}, fds=fds)
    for fd in fds:
        os.close(fd)
    tap.check("more file descriptors than images allowed -> bad-request",
              code(r) == "bad-request", r)

    # A job whose device never appears: queued, waiting, then timed-out.
    with open(PHOTON_APP, "rb") as f:
        r = c.call({"request": "flash", "images": [{"name": "photon_tinker.bin", "fd": 0}],
                    "target": {"device": "3c0021000d47353033323637"},
                    "options": {"wait": 0.3}}, fds=[f.fileno()])
    ok = r and r["type"] == "reply" and len(r["jobs"]) == 1
    tap.check("flash with --wait: a job is created for a device not yet attached", ok, r)
    if not ok:
        return
    job = r["jobs"][0]
    tap.check("job id is a UUID and images are described",
              len(job["id"]) == 36 and job["images"][0]["modules"][0]["platform"] == "photon"
              and len(job["images"][0]["sha256"]) == 64, job)
    evs = c.events_until(lambda m: m.get("event") == "job-ended" and m["job"] == job["id"])
    names = [e.get("event") for e in evs if e.get("job") == job["id"]]
    states = [e.get("state") for e in evs if e.get("event") == "job-progress"]
    end = evs[-1] if evs else {}
    tap.check("events: job-queued, waiting-for-device, then one job-ended",
              names[0] == "job-queued" and "waiting-for-device" in states
              and names.count("job-ended") == 1, names)
    tap.check("the wait runs out -> failed / timed-out",
              end.get("result") == "failed" and end.get("error", {}).get("code") == "timed-out"
              and end["error"]["detail"].get("phase") == "waiting-for-device", end)

    # Cancel a waiting job (owner may cancel).
    with open(PHOTON_APP, "rb") as f:
        r = c.call({"request": "flash", "images": [{"fd": 0}], "options": {"wait": True}},
                   fds=[f.fileno()])
    jid = r["jobs"][0]["id"]
    r = c.call({"request": "cancel", "job": jid})
    tap.check("cancel by the owner -> reply with the job", r["type"] == "reply", r)
    evs = c.events_until(lambda m: m.get("event") == "job-ended" and m["job"] == jid)
    tap.check("cancelled job ends once with result cancelled",
              evs and evs[-1]["result"] == "cancelled"
              and evs[-1]["error"]["code"] == "cancelled", evs[-1:])
    r = c.call({"request": "list-jobs"})
    tap.check("list-jobs shows ended jobs with their result",
              any(j["id"] == jid and j["result"] == "cancelled" for j in r["jobs"]), r)
    c.close()


def subscriptions_add_up(d):
    """Issue 13: "jobs":true then "job":X delivers every job's events, and
    "job":X then "job":Y delivers both (PROTOCOL.md: subscriptions add up)."""
    owner, all_then_one, one_then_other = d.client(), d.client(), d.client()
    jids = []
    for _ in range(3):
        with open(PHOTON_APP, "rb") as f:
            r = owner.call({"request": "flash", "images": [{"fd": 0}],
                            "target": {"device": "3c0021000d47353033323699"},
                            "options": {"wait": 30}}, fds=[f.fileno()])
        jids.append(r["jobs"][0]["id"])
    x, y, z = jids
    r = all_then_one.call({"request": "subscribe", "jobs": True})
    r = all_then_one.call({"request": "subscribe", "job": x})
    tap.check("subscribe jobs:true then job:X: the reply still says all jobs",
              r.get("jobs") is True, r)
    one_then_other.call({"request": "subscribe", "job": x})
    one_then_other.call({"request": "subscribe", "job": y})
    for jid in (z, y, x):
        owner.call({"request": "cancel", "job": jid})

    def ended(c, want):
        seen = set()
        try:
            c.events_until(lambda m: m.get("event") == "job-ended" and (seen.add(m["job"]) or
                                                                        seen >= want), timeout=3)
        except TimeoutError:
            pass  # checked by the caller: what arrived is what counts
        return seen
    seen = ended(all_then_one, {x, y, z})
    tap.check("... and delivers every job's events, not only X's", seen == {x, y, z},
              sorted(seen))
    seen = ended(one_then_other, {x, y})
    tap.check("subscribe job:X then job:Y delivers both jobs' events (and no other)",
              seen == {x, y}, sorted(seen))
    for c in (owner, all_then_one, one_then_other):
        c.close()


def many_clients(d):
    base_fds = d.fd_count()
    clients = []
    for i in range(200):
        clients.append(d.client())
    for i, c in enumerate(clients):
        c.send({"request": "hello"})
        c.send({"request": "subscribe", "devices": True, "jobs": True})
    ok = 0
    for c in clients:
        a, b = c.read(), c.read()
        ok += a["type"] == "reply" and b["type"] == "reply" and b["devices"] is True
    tap.check("200 concurrent clients connect, say hello and subscribe", ok == 200, ok)
    # Half leave abruptly (with requests in flight), half cleanly.
    for i, c in enumerate(clients):
        if i % 2:
            c.send({"request": "list-jobs"})
        c.close()
    time.sleep(0.3)
    tap.check("daemon answers after 200 clients left", d.alive())
    deadline = time.monotonic() + 5
    while d.fd_count() > base_fds and time.monotonic() < deadline:
        time.sleep(0.05)
    tap.check("no fd leaked after 200 clients", d.fd_count() <= base_fds,
              f"{d.fd_count()} > {base_fds}")


def slow_reader(d):
    slow = d.client()
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.call({"request": "subscribe", "devices": True, "jobs": True})
    # Ask for much more than the socket and the output limit can hold, never read.
    req = b'{"request":"list-jobs","id":1}\n' * 4000
    try:
        slow.sock.setblocking(False)
        slow.sock.send(req)
    except BlockingIOError:
        pass
    slow.sock.setblocking(True)
    time.sleep(0.5)
    tap.check("another client is served while one stops reading", d.alive())
    # Drain: the daemon must have closed the slow client at some point.
    closed = False
    slow.sock.settimeout(10)
    try:
        while True:
            chunk = slow.sock.recv(1 << 20)
            if not chunk:
                closed = True
                break
    except (socket.timeout, ConnectionResetError):
        closed = True if isinstance(sys.exc_info()[1], ConnectionResetError) else False
    tap.check("a client that stops reading is disconnected (output buffer limit)", closed)
    slow.close()
    tap.check("daemon log names the slow reader", "stopped reading" in d.log_text())


def client_limit(flashd):
    d = Daemon(flashd, config="[limits]\nclients = 8\njobs = 2\n"
                              "[timeouts]\njob_cancel_grace_ms = 100\n")
    try:
        held = [d.client() for _ in range(8)]
        for c in held:
            c.call({"request": "hello"})
        extra = d.client()
        msg = extra.read()
        tap.check("client over the limit -> too-many-clients",
                  code(msg) == "too-many-clients" and msg["detail"]["limit"] == 8, msg)
        tap.check("... and is closed", extra.read() is None)
        extra.close()
        held.pop().close()
        time.sleep(0.2)
        tap.check("a slot frees when a client leaves", d.alive())
        c = held[0]
        results = []
        for _ in range(3):
            with open(PHOTON_APP, "rb") as f:
                results.append(c.call({"request": "flash", "images": [{"fd": 0}],
                                       "options": {"wait": True}}, fds=[f.fileno()]))
        tap.check("job limit -> too-many-jobs on the third job",
                  [r["type"] for r in results] == ["reply", "reply", "error"]
                  and code(results[2]) == "too-many-jobs", results[2])
        for c in held:
            c.close()
        status = d.stop()
        tap.check("daemon with limits stops cleanly (interrupting its jobs)", status == 0,
                  d.log_text()[-3000:])
    finally:
        if d.proc.poll() is None:
            d.stop()


def flashctl_statuses(d):
    rc, out, err = flashctl(FLASHCTL, d.socket, "list")
    tap.check("flashctl list without devices", rc == 0 and "no devices" in out, out + err)
    rc, out, err = flashctl(FLASHCTL, d.socket, "--json", "list")
    tap.check("flashctl --json list prints the protocol reply",
              rc == 0 and json.loads(out)["request"] == "list-devices", out)
    rc, out, err = flashctl(FLASHCTL, d.socket, "flash", PHOTON_APP)
    tap.check("flashctl flash without a device exits 5 (device-not-found)",
              rc == 5 and "device-not-found" in err, (rc, err))
    rc, out, err = flashctl(FLASHCTL, d.socket, "--json", "flash", "--wait=0.2", PHOTON_APP)
    lines = [json.loads(x) for x in out.splitlines()]
    ended = [x for x in lines if x.get("event") == "job-ended"]
    tap.check("flashctl --json flash --wait=0.2 prints events and exits 8 (timed-out)",
              rc == 8 and ended and ended[0]["error"]["code"] == "timed-out", (rc, out, err))
    rc, out, err = flashctl(FLASHCTL, d.socket, "flash", "/nonexistent.bin")
    tap.check("flashctl flash of a missing file exits 3", rc == 3, (rc, err))
    rc, out, err = flashctl(FLASHCTL, d.socket, "cancel", "nope")
    tap.check("flashctl cancel of an unknown job exits 2 (job-not-found)",
              rc == 2 and "job-not-found" in err, (rc, err))
    rc, out, err = flashctl(FLASHCTL, d.socket, "flash", PHOTON_APP, "--all")
    tap.check("flashctl flash --all without --platform is a usage error (2)", rc == 2, err)
    rc, out, err = flashctl(FLASHCTL, d.socket, "jobs")
    tap.check("flashctl jobs lists the jobs", rc == 0 and "timed-out" in out, out)
    rc, out, err = flashctl(FLASHCTL, "/nonexistent/flashd.sock", "--json", "list")
    obj = json.loads(out) if out.strip() else {}
    tap.check("daemon unreachable -> exit 10 and one JSON error object",
              rc == 10 and obj.get("type") == "error" and obj.get("code") == "daemon-unreachable",
              (rc, out))


def cancel_permissions(flashd):
    """Issue 5: only the job's owner, root or a member of the admin group may
    cancel a job.  flashctl runs as unprivileged uids in the socket's group."""
    if os.geteuid() != 0:
        print("# skip cancel permissions: needs root to run flashctl as other uids")
        return
    import grp
    owner, other, admin = 65534, 65533, 65532
    admin_group = grp.getgrgid(100).gr_name  # "users": the configured admin group
    sock_gid = 4242  # the socket's group (socket_group): connecting is not administering
    d = Daemon(flashd, config=f"[daemon]\nadmin_group = {admin_group}\nsocket_group = {sock_gid}\n",
               world_reachable=True)
    os.chmod(d.dir, 0o755)  # let the unprivileged users reach the socket
    # ... and read the file they flash (the fixtures may sit in root's 0700 home: the cache).
    app = os.path.join(d.dir, "photon_tinker.bin")
    shutil.copyfile(PHOTON_APP, app)
    os.chmod(app, 0o644)
    exits = {e["id"]: e["exit"] for e in (json.loads(x) for x in flashctl(
        FLASHCTL, d.socket, "errors", "--json")[1].splitlines())}
    try:
        def submit():
            # waits forever for a device that never appears: the job stays alive
            rc, out, err = flashctl(FLASHCTL, d.socket, "--json", "flash", app,
                                    "--device", "ffffffffffffffffffffffff", "--wait",
                                    "--detach", uid=owner, groups=[sock_gid])
            return json.loads(out.splitlines()[0])["jobs"][0]["id"] if rc == 0 else None

        def record(jid):
            jobs = json.loads(flashctl(FLASHCTL, d.socket, "--json", "jobs")[1])["jobs"]
            return next((j for j in jobs if j["id"] == jid), {})

        def state(jid, until=None):
            """The job's result or state; with until, once it is that (10 s at most)."""
            deadline = time.monotonic() + 10
            while True:
                j = record(jid)
                now = j.get("result") or j.get("state")
                if until is None or now == until or time.monotonic() > deadline:
                    return now
                time.sleep(0.05)

        jid = submit()
        if jid is None:
            tap.check("an unprivileged uid submits a job", False, "flashctl flash as uid %d failed" % owner)
            return
        tap.check("an unprivileged uid submits a job (owner recorded)",
                  jid and record(jid)["owner"]["uid"] == owner, jid)
        rc, out, err = flashctl(FLASHCTL, d.socket, "--json", "cancel", jid, uid=other,
                                groups=[sock_gid])
        e = json.loads(out.splitlines()[0]) if out.strip() else {}
        tap.check("another uid may not cancel it: not-allowed, the catalogue's exit status",
                  rc == exits["not-allowed"] and e.get("code") == "not-allowed"
                  and e["detail"] == {"operation": "cancel", "uid": other, "owner_uid": owner,
                                      "admin_group": admin_group}, (rc, out, err))
        tap.check("... and the job lives on", state(jid) == "waiting-for-device", state(jid))
        rc, out, err = flashctl(FLASHCTL, d.socket, "cancel", jid, uid=owner, groups=[sock_gid])
        tap.check("its owner may cancel it", rc == 0 and state(jid, "cancelled") == "cancelled",
                  (rc, out, err, state(jid)))
        jid = submit()
        rc, out, err = flashctl(FLASHCTL, d.socket, "cancel", jid, uid=admin,
                                groups=[sock_gid, 100])
        tap.check(f"a member of the admin group ({admin_group}) may cancel it",
                  rc == 0 and state(jid, "cancelled") == "cancelled", (rc, out, err, state(jid)))
        jid = submit()
        rc, out, err = flashctl(FLASHCTL, d.socket, "cancel", jid)
        tap.check("root may cancel it", rc == 0 and state(jid, "cancelled") == "cancelled",
                  (rc, out, err, state(jid)))
    finally:
        d.stop()


def main():
    # 200 concurrent clients from this one uid: over the default share (32 per uid).
    d = Daemon(FLASHD, config="[limits]\nclients_per_uid = 256\n")
    try:
        hello_and_lists(d)
        malformed_inputs(d)
        oversize_message(d)
        fd_passing(d)
        subscriptions_add_up(d)
        base = d.fd_count()
        many_clients(d)
        slow_reader(d)
        flashctl_statuses(d)
        tap.check("daemon still answering after everything", d.alive())
        time.sleep(0.2)
        tap.check("fd count back to where it was", d.fd_count() <= base,
                  f"{d.fd_count()} vs {base}")
        status = d.stop()
        tap.check("daemon exits 0 on SIGTERM (no leak under ASan)", status == 0,
                  d.log_text()[-3000:])
    finally:
        if d.proc.poll() is None:
            d.stop()
    client_limit(FLASHD)
    cancel_permissions(FLASHD)
    tap.done()


main()

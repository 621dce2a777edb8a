#!/usr/bin/env python3
"""Many stations, one view (issue 17): three flashd stations, each in its own
flashd-sim testbed with two simulated Photons, publish to a real mosquitto
broker that this test starts on a free loopback port.

- Every job's events (PREFIX/STATION/jobs/JOB) and history records
  (PREFIX/STATION/history, the same object as a `flashctl history --json` line)
  reach a subscriber from all three stations; each station's status is retained;
  `flashctl fleet --json --once` shows the three stations and their devices.
- The broker is SIGKILLed while the stations flash and restarted: every job
  ends done, every station reconnects (status online, reconnects >= 1) and
  publishes again (the records of the jobs that ended while the broker was
  down, and new jobs' events).
- A station stopped cleanly says offline; a SIGKILLed one is marked offline by
  its last will.
- A broker that cannot be reached at start: flashd starts and flashes, and its
  hello reply says it is not connected and why.  A station name with '/', '+'
  or '#' is refused at start with mqtt-config.

usage: test_mqtt.py FLASHD FLASHCTL FLASHD_SIM
       test_mqtt.py --inside STATION FLASHD FLASHCTL WORK   (inside flashd-sim)
"""
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from flashd_harness import SERIAL_TIMEOUTS, Client, SimControl, Tap, fixture  # noqa: E402

STATIONS = ["line1-a", "line1-b", "line2-c"]
TINKER = "photon/photon_tinker.bin"
# Flashing the application a device has already is skipped (done: already-installed,
# nothing written): every flash alternates between these two.
DOCTOR = "photon/photon_doctor.bin"
ELECTRON = "electron/electron_tinker.bin"
# Debian installs the broker in /usr/sbin, which a test's PATH may lack.
MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def device_ids(station):
    n = STATIONS.index(station) + 1
    return ["%02x00000000000000000000%02x" % (n, i) for i in (1, 2)]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def mqtt_config(url, station, extra=""):
    return SERIAL_TIMEOUTS + "[mqtt]\nurl = %s\nstation = %s\n%s" % (url, station, extra)


# ---- inside a testbed: one station ------------------------------------------------------

class Station:
    def __init__(self, flashd, fc, work, name):
        self.flashd, self.fc, self.work, self.name = flashd, fc, work, name
        self.dir = os.path.join(work, name)
        self.sock = os.path.join(self.dir, "flashd.sock")
        self.lock = os.path.join(self.dir, "lock")
        os.makedirs(self.lock, exist_ok=True)
        self.log = open(os.path.join(self.dir, "flashd.log"), "a")
        self.proc = None
        self.apps = [fixture(TINKER), fixture(DOCTOR)]
        self.last = {}  # device -> the application it has from us

    def start(self, config):
        cfg = os.path.join(self.dir, "flashd.conf")
        with open(cfg, "w") as f:
            f.write(config)
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.proc = subprocess.Popen(
            [self.flashd, "--foreground", "--socket", self.sock, "--state-dir",
             os.path.join(self.dir, "state"), "--config", cfg, "--log-level", "debug"],
            stdout=self.log, stderr=self.log, env=dict(os.environ, FLASHD_LOCK_DIR=self.lock))
        deadline = time.monotonic() + 20
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("flashd did not start")
            time.sleep(0.02)

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode

    def run(self, *args, timeout=120):
        return subprocess.run([self.fc, "--socket", self.sock, *args], capture_output=True,
                              text=True, timeout=timeout)

    def wait_devices(self, n):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = self.run("--json", "list", timeout=10)
            if r.returncode == 0 and len([d for d in json.loads(r.stdout)["devices"]
                                          if d["present"]]) >= n:
                return True
            time.sleep(0.1)
        return False

    def hello(self):
        c = Client(self.sock)
        r = c.call({"request": "hello"})
        c.close()
        return r

    def flash(self, image, device):
        """Runs one flash (image None: the application the device does not have);
        returns {"job","device","result","started","ended"} (wall times)."""
        if image is None:
            image = self.apps[1] if self.last.get(device) == self.apps[0] else self.apps[0]
            self.last[device] = image
        p = subprocess.Popen([self.fc, "--socket", self.sock, "--json", "flash", image,
                              "--device", device], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        out = {"device": device, "job": None, "result": None, "started": None, "ended": None}
        for line in p.stdout:
            o = json.loads(line) if line.startswith("{") else {}
            if o.get("event") == "job-queued":
                out["job"] = o.get("job")
            if o.get("event") == "job-started":
                out["job"], out["started"] = o.get("job"), time.time()
            if o.get("event") == "job-ended":
                out["result"], out["ended"] = o.get("result"), time.time()
                out["error"], out["outcome"] = o.get("error"), o.get("outcome")
        p.wait()
        out["rc"] = p.returncode
        if p.returncode:
            out["stderr"] = p.stderr.read()[-2000:]
        return out

    def flash_both(self, image, ids):
        results = [None, None]

        def one(i):
            results[i] = self.flash(image, ids[i])
        threads = [threading.Thread(target=one, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results


def wait_file(path, timeout=300):
    deadline = time.monotonic() + timeout
    abort = os.path.join(os.path.dirname(path), "abort")
    while not os.path.exists(path):
        if os.path.exists(abort):
            raise RuntimeError("the outer half gave up")
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for " + path)
        time.sleep(0.05)
    return open(path).read().strip()


def put(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f)
    os.rename(path + ".tmp", path)


def inside(name, flashd, fc, work):
    url = open(os.path.join(work, "broker-url")).read().strip()
    ids = device_ids(name)
    st = Station(flashd, fc, work, name)
    res = {}
    try:
        if name == STATIONS[0]:
            # Nothing listens on this port: flashd must start, flash, and say why not.
            dead = open(os.path.join(work, "dead-url")).read().strip()
            st.start(mqtt_config(dead, name))
            res["unreachable_devices"] = st.wait_devices(2)
            res["unreachable_flash"] = st.flash(None, ids[0])
            res["unreachable_hello"] = st.hello().get("mqtt")
            st.stop()
        st.start(mqtt_config(url, name))
        res["devices"] = st.wait_devices(2)
        put(os.path.join(work, "up-" + name), res)
        wait_file(os.path.join(work, "go1"))
        res["p1"] = st.flash_both(None, ids)
        r = st.run("history", "--json", timeout=30)
        res["history"] = [json.loads(line) for line in r.stdout.splitlines()]
        put(os.path.join(work, "p1-" + name), res)

        wait_file(os.path.join(work, "go2"))
        res["p2"] = []
        while True:  # flashes until the broker is back and the test says stop
            res["p2"] += st.flash_both(None, ids)
            if os.path.exists(os.path.join(work, "stop2")) or \
                    os.path.exists(os.path.join(work, "abort")):
                break
        res["p2_hello"] = st.hello().get("mqtt")
        put(os.path.join(work, "p2-" + name), res)

        wait_file(os.path.join(work, "go3"))
        res["p3"] = [st.flash(None, ids[0])]
        if name == STATIONS[2]:
            # A failure for the fleet view: an Electron build on a Photon.
            res["p3"].append(st.flash(fixture(ELECTRON), ids[1]))
        if name == STATIONS[1]:
            # Unplugged: its retained device state must be cleared.
            ctl = SimControl(os.path.join(st.dir, "control.sock"))
            res["unplug"] = ctl(cmd="unplug", name="d2")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                r = st.run("--json", "list", timeout=10)
                present = [d["key"] for d in json.loads(r.stdout)["devices"] if d["present"]]
                if r.returncode == 0 and ids[1] not in present:
                    break
                time.sleep(0.1)
            res["after_unplug"] = present
        put(os.path.join(work, "p3-" + name), res)

        wait_file(os.path.join(work, "go4"))  # the broker is stopped (SIGSTOP)
        # (the second Photon of STATIONS[1] was unplugged in phase 3)
        res["p4"] = st.flash_both(None, ids) if name != STATIONS[1] else \
            [st.flash(None, ids[0])]
        res["p4_hello"] = st.hello().get("mqtt")
        put(os.path.join(work, "p4-" + name), res)

        how = wait_file(os.path.join(work, "end-" + name))
        res["exit"] = st.stop(signal.SIGKILL if how == "kill" else signal.SIGTERM)
    except Exception as e:  # noqa: BLE001 - reported to the outer half
        res["exception"] = repr(e)
        if st.proc and st.proc.poll() is None:
            st.stop()
    put(os.path.join(work, "done-" + name), res)


# ---- outside: the broker, the subscriber, the checks -------------------------------------

class Broker:
    def __init__(self, work, port):
        self.work, self.port = work, port
        self.conf = os.path.join(work, "mosquitto.conf")
        os.makedirs(os.path.join(work, "broker-db"), exist_ok=True)
        with open(self.conf, "w") as f:
            # Persistence (saved every second): the subscriber's session and what is
            # queued for it survive the SIGKILL below, as on a production broker.
            # user: as root, mosquitto would otherwise switch to "mosquitto", which
            # cannot write the persistence file in our private directory.
            f.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\n"
                    "persistence_location %s/\nautosave_interval 1\nuser %s\n"
                    % (port, os.path.join(work, "broker-db"), pwd.getpwuid(os.getuid()).pw_name))
        self.log = open(os.path.join(work, "mosquitto.log"), "a")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([MOSQUITTO, "-c", self.conf], stdout=self.log,
                                     stderr=self.log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen on %d" % self.port)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Subscriber:
    """mosquitto_sub on everything under flashd/#, QoS 1, with a persistent session
    (-c): what is published while it is away is kept for it by the broker."""

    def __init__(self, port, client_id="flashd-test-subscriber"):
        self.port, self.client_id = port, client_id
        self.lock = threading.Lock()
        self.msgs = []  # (time, topic, payload or None, retain)
        self.proc = None

    def connect(self):
        # -F %j: one JSON object per message (topic, retain, payload as a string).
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-t",
             "flashd/#", "-q", "1", "-c", "-i", self.client_id, "-F", "%j"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        # Subscribed once our own probe comes back.
        probe = "flashd/probe-%d" % time.monotonic_ns()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-t",
                            probe, "-m", "{}", "-q", "1"], capture_output=True, timeout=10)
            if self.select(lambda m: m[1] == probe):
                return
            time.sleep(0.2)
        raise RuntimeError("mosquitto_sub did not subscribe")

    def _read(self, proc):
        for line in proc.stdout:
            try:
                o = json.loads(line)
                payload = json.loads(o["payload"]) if o.get("payload") else None
            except ValueError:
                continue
            with self.lock:
                self.msgs.append((time.time(), o["topic"], payload, bool(o.get("retain"))))

    def drop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def select(self, pred):
        with self.lock:
            return [m for m in self.msgs if pred(m)]

    def wait(self, pred, cond, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.select(pred)
            if cond(got):
                return got
            time.sleep(0.1)
        return self.select(pred)


def retained_status(port, station, timeout=5):
    """The broker's retained status of a station, read by a fresh client:
    (payload, retained) or (None, False)."""
    r = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t",
                        "flashd/%s/status" % station, "--retained-only", "-C", "1", "-W",
                        str(timeout), "-F", "%j"], capture_output=True, text=True,
                       timeout=timeout + 5)
    for line in r.stdout.splitlines():
        o = json.loads(line)
        return (json.loads(o["payload"]) if o.get("payload") else None), bool(o.get("retain"))
    return None, False


def retained(port, pattern, timeout=2):
    """{topic: payload} of the retained messages matching pattern."""
    r = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", pattern,
                        "--retained-only", "-W", str(timeout), "-F", "%j"],
                       capture_output=True, text=True, timeout=timeout + 5)
    out = {}
    for line in r.stdout.splitlines():
        o = json.loads(line)
        out[o["topic"]] = json.loads(o["payload"]) if o.get("payload") else None
    return out


def fleet(fc, port, *args):
    r = subprocess.run([fc, "fleet", "--broker", "mqtt://127.0.0.1:%d" % port, *args],
                       capture_output=True, text=True, timeout=30)
    return r


def jobs_of(res, phase):
    return [j for j in res.get(phase, []) if j]


def outside(flashd, fc, sim):
    for f in (TINKER, DOCTOR, ELECTRON):
        fixture(f)  # skips the whole driver when one is missing
    if not MOSQUITTO:
        print("1..0 # SKIP mosquitto (the broker) is not installed: scripts/install-deps")
        sys.exit(0)
    if not shutil.which("mosquitto_sub") or not shutil.which("mosquitto_pub"):
        print("1..0 # SKIP mosquitto_sub/mosquitto_pub (mosquitto-clients) are not installed: "
              "scripts/install-deps")
        sys.exit(0)
    tap = Tap()
    work = tempfile.mkdtemp(prefix="flashd-mqtt-")
    port, dead_port = free_port(), free_port()
    with open(os.path.join(work, "broker-url"), "w") as f:
        f.write("mqtt://127.0.0.1:%d\n" % port)
    with open(os.path.join(work, "dead-url"), "w") as f:
        f.write("mqtt://127.0.0.1:%d\n" % dead_port)

    # Refused at start: station names and prefixes that would break topics.
    # ('#' starts a comment in the config file: it never reaches a value.)
    for key, value in (("station", "line/1"), ("station", "line+1"), ("station", "+"),
                       ("topic_prefix", "plant/+"), ("topic_prefix", "/plant")):
        d = tempfile.mkdtemp(dir=work)
        cfg = os.path.join(d, "flashd.conf")
        with open(cfg, "w") as f:
            f.write("[mqtt]\nurl = mqtt://127.0.0.1:%d\nstation = ok\n%s = %s\n"
                    % (port, key, value))
        r = subprocess.run([flashd, "--foreground", "--socket", os.path.join(d, "s.sock"),
                            "--config", cfg], capture_output=True, text=True, timeout=20)
        tap.check("%s = %s is refused at start (exit 2, mqtt-config, says why)" % (key, value),
                  r.returncode == 2 and "[mqtt-config]" in r.stderr and
                  '%s = "%s"' % (key, value) in r.stderr and "without" in r.stderr and
                  not os.path.exists(os.path.join(d, "s.sock")), (r.returncode, r.stderr))

    broker = Broker(work, port)
    broker.start()
    sub = Subscriber(port)
    sub.connect()
    beds = []
    for name in STATIONS:
        os.makedirs(os.path.join(work, name))
        specs = ["platform=photon,os=1.5.2,mode=listening,name=d%d,id=%s" % (i + 1, dev)
                 for i, dev in enumerate(device_ids(name))]
        sdir = os.path.join(work, name, "sim-state")
        os.mkdir(sdir)
        argv = [sim, "--state-dir", sdir, "--control", os.path.join(work, name, "control.sock")]
        for s in specs:
            argv += ["--device", s]
        argv += ["--", sys.executable, os.path.abspath(__file__), "--inside", name, flashd, fc,
                 work]
        beds.append(subprocess.Popen(argv, env=dict(os.environ, TMPDIR=os.path.join(work, name)),
                                     stdout=open(os.path.join(work, name, "sim.log"), "w"),
                                     stderr=subprocess.STDOUT))

    def wait_all(prefix, timeout=240):
        out = {}
        deadline = time.monotonic() + timeout
        for name in STATIONS:
            path = os.path.join(work, prefix + name)
            while not os.path.exists(path) and time.monotonic() < deadline:
                done = os.path.join(work, "done-" + name)
                if os.path.exists(done):
                    break
                time.sleep(0.1)
            p = path if os.path.exists(path) else os.path.join(work, "done-" + name)
            out[name] = json.load(open(p)) if os.path.exists(p) else {}
        return out

    def touch(name, text=""):
        with open(os.path.join(work, name), "w") as f:
            f.write(text)

    try:
        up = wait_all("up-")
        a = up[STATIONS[0]]
        tap.check("broker unreachable at start: flashd starts and flashes",
                  a.get("unreachable_flash", {}).get("result") == "done", a)
        h = a.get("unreachable_hello") or {}
        tap.check("... and its hello reply says MQTT is not connected, and why",
                  h.get("enabled") is True and h.get("connected") is False and
                  h.get("state") in ("connecting", "disconnected") and
                  "refused" in (h.get("last_error") or "").lower(), h)
        tap.check("three stations up, each with its two Photons",
                  all(up[n].get("devices") for n in STATIONS), up)

        # ---- phase 1: everyone up, two boards per station ------------------------------
        touch("go1")
        p1 = wait_all("p1-")
        jobs = {n: jobs_of(p1[n], "p1") for n in STATIONS}
        tap.check("phase 1: every station flashed its two boards",
                  all(len(jobs[n]) == 2 and all(j["result"] == "done" for j in jobs[n])
                      for n in STATIONS), jobs)

        def events(name, job):
            return [m[2].get("event") for m in
                    sub.select(lambda m: m[1] == "flashd/%s/jobs/%s" % (name, job))]

        def history(name):
            return [m[2] for m in sub.select(lambda m: m[1] == "flashd/%s/history" % name)]

        want = {(n, j["job"]) for n in STATIONS for j in jobs[n]}
        sub.wait(lambda m: "/history" in m[1],
                 lambda got: want <= {(m[1].split("/")[1], m[2].get("job")) for m in got}, 20)
        missing = [(n, j) for n, j in want
                   if not {"job-queued", "job-started", "job-ended"} <= set(events(n, j))]
        tap.check("the subscriber saw every job's events (queued, started, progress, ended) "
                  "from all three stations", not missing and
                  all("job-progress" in events(n, j) for n, j in want), missing)
        missing = [(n, j) for n, j in want if j not in [r["job"] for r in history(n)]]
        tap.check("... and every job's history record from all three", not missing, missing)
        diffs, compared = [], 0
        for n in STATIONS:
            local = {r["job"]: r for r in p1[n].get("history", [])}
            remote = {r["job"]: r for r in history(n)}
            for j in jobs[n]:
                a, b = remote.get(j["job"]), local.get(j["job"])
                if a is None or b is None or a != b:
                    diffs.append((n, j["job"], {k: ((a or {}).get(k), (b or {}).get(k))
                                                for k in set(a or {}) | set(b or {})
                                                if (a or {}).get(k) != (b or {}).get(k)}))
                compared += 1
        tap.check("the history payload is the same object as the station's "
                  "`flashctl history --json` line", not diffs and compared == 6, diffs)
        ok = True
        info = {}
        for n in STATIONS:
            s, is_retained = retained_status(port, n)
            info[n] = (s, is_retained)
            ok = ok and is_retained and s and s.get("state") == "online" and \
                s.get("station") == n and s.get("version", "").startswith("flashd ") and \
                s.get("rules") == [] and "dropped" in s.get("counters", {})
        tap.check("each station's status is retained: online, version, rules, counters "
                  "with dropped", ok, info)
        devs = {n: retained(port, "flashd/%s/devices/+" % n) for n in STATIONS}
        tap.check("each station's devices are retained under devices/ID (the device object)",
                  all(set(devs[n]) == {"flashd/%s/devices/%s" % (n, d) for d in device_ids(n)}
                      and all(v and v.get("platform") == "photon" and v.get("present")
                              for v in devs[n].values()) for n in STATIONS), devs)
        r = fleet(fc, port, "--json", "--once")
        lines = [json.loads(x) for x in r.stdout.splitlines()] if r.returncode == 0 else []
        view = {x["station"]: x for x in lines}
        tap.check("flashctl fleet --json --once shows the three stations, online, two devices "
                  "each", r.returncode == 0 and sorted(view) == sorted(STATIONS) and
                  all(view[n]["online"] is True and len(view[n]["devices"]) == 2
                      for n in STATIONS), r.stdout + r.stderr)
        r = fleet(fc, port, "--once")
        tap.check("flashctl fleet --once (table): a row per station",
                  r.returncode == 0 and all(n in r.stdout for n in STATIONS) and
                  "STATION" in r.stdout, r.stdout + r.stderr)

        # ---- phase 2: the broker dies mid-flash and comes back -------------------------
        t_go2 = time.time()
        touch("go2")
        writing = sub.wait(
            lambda m: m[0] > t_go2 and "/jobs/" in m[1] and m[2] and
            m[2].get("event") == "job-progress" and m[2].get("state") == "writing",
            lambda got: {m[1].split("/")[1] for m in got} >= set(STATIONS), 60)
        t_kill = time.time()
        broker.kill()
        sub.drop()
        tap.check("every station was writing when the broker was SIGKILLed",
                  {m[1].split("/")[1] for m in writing} >= set(STATIONS),
                  sorted({m[1].split("/")[1] for m in writing}))
        time.sleep(4)  # the stations keep flashing; their retries back off
        broker.start()
        t_back = time.time()
        sub.connect()  # the same session: the broker kept what was published meanwhile
        # (the status retained from before the kill says online too: reconnects tells them apart)
        back = sub.wait(lambda m: m[0] > t_back and m[1].endswith("/status") and m[2] and
                        m[2].get("state") == "online" and
                        m[2].get("counters", {}).get("reconnects", 0) >= 1,
                        lambda got: {m[2]["station"] for m in got} >= set(STATIONS), 90)
        tap.check("every station reconnects and publishes its status again (online, "
                  "reconnects 1)",
                  {m[2]["station"] for m in back} >= set(STATIONS),
                  [m[2] for m in back])
        if back:
            print("# broker down %.1f s; the stations were back %s s after its restart" % (
                t_back - t_kill, ", ".join("%.1f" % (min(m[0] for m in back if m[2]["station"] == n)
                                                      - t_back) for n in STATIONS
                                           if any(m[2]["station"] == n for m in back))))
        touch("stop2")
        p2 = wait_all("p2-")
        jobs2 = {n: jobs_of(p2[n], "p2") for n in STATIONS}
        tap.check("every station kept flashing: all its jobs of this phase are done",
                  all(jobs2[n] and all(j["result"] == "done" for j in jobs2[n])
                      for n in STATIONS), jobs2)
        tap.check("every station had a job running while the broker was down",
                  all(any(j["started"] and j["started"] < t_back and
                          j["ended"] and j["ended"] > t_kill for j in jobs2[n])
                      for n in STATIONS),
                  {n: [(j["started"], j["ended"]) for j in jobs2[n]] for n in STATIONS})
        hl = {n: p2[n].get("p2_hello") or {} for n in STATIONS}
        tap.check("hello: connected again, reconnects >= 1, nothing dropped",
                  all(hl[n].get("connected") is True and hl[n].get("reconnects", 0) >= 1 and
                      hl[n].get("dropped") == 0 for n in STATIONS), hl)
        want2 = {(n, j["job"]) for n in STATIONS for j in jobs2[n]}
        got = sub.wait(lambda m: "/history" in m[1],
                       lambda g: want2 <= {(m[1].split("/")[1], m[2].get("job")) for m in g},
                       30)
        missing = want2 - {(m[1].split("/")[1], m[2].get("job")) for m in got}
        tap.check("the history records of every job of the outage arrive (queued, then "
                  "published after the reconnect)", not missing, sorted(missing))

        # ---- phase 3: publishing goes on ---------------------------------------------
        t3 = time.time()
        live = subprocess.Popen([fc, "fleet", "--broker", "mqtt://127.0.0.1:%d" % port, "--json",
                                 "--timeout", "60"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        touch("go3")
        p3 = wait_all("p3-")
        jobs3 = {n: jobs_of(p3[n], "p3") for n in STATIONS}
        want3 = {(n, j["job"]) for n in STATIONS for j in jobs3[n]}
        got = sub.wait(lambda m: m[0] > t3 and "/history" in m[1],
                       lambda g: want3 <= {(m[1].split("/")[1], m[2].get("job")) for m in g},
                       30)
        time.sleep(0.5)
        live.terminate()
        lines = [json.loads(x) for x in live.communicate()[0].splitlines() if x.startswith("{")]
        seen = {(x["station"], j.get("state")) for x in lines for j in x.get("jobs", [])}
        tap.check("flashctl fleet --json (live): the running jobs of all three, with their state",
                  {n for n, state in seen if state} >= set(STATIONS) and
                  any(state == "writing" for _, state in seen), sorted(seen))
        tap.check("after the restart, new jobs' events and history records come from all "
                  "three", len(want3) == 4 and
                  want3 <= {(m[1].split("/")[1], m[2].get("job")) for m in got} and
                  all("job-ended" in events(n, j) for n, j in want3), (want3, jobs3))

        c = STATIONS[2]
        bad = [j for j in jobs3[c] if j["result"] == "failed"]
        fails = []
        deadline = time.monotonic() + 10  # the status follows a job's end within a second
        while time.monotonic() < deadline and not fails:
            r = fleet(fc, port, "--json", "--once")
            view = {x["station"]: x for x in (json.loads(y) for y in r.stdout.splitlines())}
            fails = [f for f in view.get(c, {}).get("failures", [])
                     if f.get("error") == "wrong-platform"]
            time.sleep(0.3)
        tap.check("the failed job (wrong-platform) is among the station's recent failures in "
                  "fleet --json --once (from the retained status)",
                  len(bad) == 1 and [f["job"] for f in fails] == [bad[0]["job"]] and
                  fails[0].get("device") == device_ids(c)[1], (bad, fails))
        r = fleet(fc, port, "--once")
        tap.check("... and in the table", r.returncode == 0 and "wrong-platform" in r.stdout,
                  r.stdout)

        b = STATIONS[1]
        time.sleep(0.5)  # the device-removed publication on its way
        devs = retained(port, "flashd/%s/devices/+" % b)
        tap.check("an unplugged device's retained state is cleared (empty retained message)",
                  (p3[b].get("unplug") or {}).get("ok") and
                  device_ids(b)[1] not in (p3[b].get("after_unplug") or [device_ids(b)[1]]) and
                  set(devs) == {"flashd/%s/devices/%s" % (b, device_ids(b)[0])},
                  (p3[b].get("unplug"), p3[b].get("after_unplug"), sorted(devs)))
        cleared = sub.select(lambda m: m[1] == "flashd/%s/devices/%s" % (b, device_ids(b)[1])
                             and m[2] is None)
        tap.check("... the subscriber saw the empty message", len(cleared) >= 1, cleared)

        # ---- phase 4: a broker that stops reading (SIGSTOP): nobody waits for it ------
        broker.proc.send_signal(signal.SIGSTOP)
        t4 = time.time()
        touch("go4")
        p4 = wait_all("p4-")
        broker.proc.send_signal(signal.SIGCONT)
        jobs4 = {n: jobs_of(p4[n], "p4") for n in STATIONS}
        tap.check("a stopped broker holds up no job: every station flashes its boards",
                  all(len(jobs4[n]) == (1 if n == STATIONS[1] else 2) and
                      all(j["result"] == "done" for j in jobs4[n]) for n in STATIONS), jobs4)
        d1 = [j["ended"] - j["started"] for n in STATIONS for j in jobs[n] if j.get("started")]
        d4 = [j["ended"] - j["started"] for n in STATIONS for j in jobs4[n] if j.get("started")]
        print("# job duration, broker up: %.2f-%.2f s; broker stopped: %.2f-%.2f s" % (
            min(d1 or [0]), max(d1 or [0]), min(d4 or [0]), max(d4 or [0])))
        hl = {n: p4[n].get("p4_hello") or {} for n in STATIONS}
        tap.check("... the hello reply answers meanwhile (messages queued, none dropped yet)",
                  all(hl[n].get("enabled") and hl[n].get("dropped") == 0 for n in STATIONS), hl)
        want4 = {(n, j["job"]) for n in STATIONS for j in jobs4[n]}
        got = sub.wait(lambda m: m[0] > t4 and "/history" in m[1],
                       lambda g: want4 <= {(m[1].split("/")[1], m[2].get("job")) for m in g},
                       60)
        tap.check("once it reads again (SIGCONT) their history records arrive",
                  want4 <= {(m[1].split("/")[1], m[2].get("job")) for m in got},
                  sorted(want4 - {(m[1].split("/")[1], m[2].get("job")) for m in got}))

        # ---- stop one cleanly, two with SIGKILL... one: the last will --------------------
        touch("end-" + STATIONS[0], "term")
        touch("end-" + STATIONS[1], "term")
        touch("end-" + STATIONS[2], "kill")
        done = wait_all("done-")
        for b in beds:
            b.wait(60)
        tap.check("the testbeds exited cleanly", all(b.returncode == 0 for b in beds) and
                  not any("exception" in done[n] for n in STATIONS),
                  [(b.returncode, done[n].get("exception")) for b, n in zip(beds, STATIONS)])
        tap.check("SIGTERM: flashd exits 0", done[STATIONS[0]].get("exit") == 0 and
                  done[STATIONS[1]].get("exit") == 0,
                  [done[n].get("exit") for n in STATIONS])
        s, is_retained = retained_status(port, STATIONS[0])
        tap.check("a station stopped cleanly says offline itself (with its counters)",
                  is_retained and s and s.get("state") == "offline" and "counters" in s, s)
        s, is_retained = retained_status(port, STATIONS[2])
        tap.check("a SIGKILLed station is marked offline by its last will",
                  is_retained and s and s.get("state") == "offline" and s.get("online") is False
                  and "counters" not in s, s)
        r = fleet(fc, port, "--json", "--once")
        lines = [json.loads(x) for x in r.stdout.splitlines()] if r.returncode == 0 else []
        tap.check("fleet then shows the three stations offline",
                  sorted(x["station"] for x in lines) == sorted(STATIONS) and
                  all(x["online"] is False for x in lines), r.stdout + r.stderr)
    finally:
        touch("abort")  # the inner halves stop their flashd and leave
        if broker.proc and broker.proc.poll() is None:
            broker.proc.send_signal(signal.SIGCONT)
        for b in beds:
            try:
                b.wait(60)
            except subprocess.TimeoutExpired:
                b.terminate()
                b.wait()
        sub.drop()
        broker.stop()
    if not tap.failed:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("# work directory kept: " + work)
    tap.done()


if __name__ == "__main__":
    if sys.argv[1] == "--inside":
        inside(*sys.argv[2:6])
    else:
        outside(*sys.argv[1:4])

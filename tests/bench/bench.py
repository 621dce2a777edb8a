#!/usr/bin/env python3
"""flashd benchmark suite (issue 18): flashd against the tools it replaces, on
identical flashd-sim devices at --time-scale 1 (real-device speed from the
datasheet constants of tests/sim/timing.c), with the same images and the same
start and end points.  Not a pass/fail test: it prints a table (median of the
interleaved runs, [min-max], comparator, ratio) and writes it as JSON.

usage: bench.py [--quick] [--runs N] [--rows ROW,...] [--devices N,...] [--dfu-platforms P,...]
                [--json PATH] [--idle S]
       bench.py --markdown RESULT.json   (the table of a result, for tests/bench/README.md)
       bench.py --inner PLAN.json        (runs inside flashd-sim)

Rows: dfu (Photon, Argon, P2 vs dfu-util 0.11), reflash (an Argon system part with a
few pages changed, vs dfu-util 0.11), serial (Photon vs particle-cli
3.19.0), refusal, parallel (1/4/16/32 devices, serial and DFU), idle, rss,
inspect (vs binary-version-reader).  --quick: 2 runs, 1/4 devices, 5 s idle,
for development; the published table is a full run.

Environment (set by meson): FLASHD_BUILD_ROOT, FLASHD_SOURCE_ROOT,
FLASHD_FIXTURES, PARTICLE_CLI_SETUP.
"""
import argparse
import glob
import json
import math
import os
import platform as pyplatform
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("FLASHD_SOURCE_ROOT") or os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("FLASHD_BUILD_ROOT") or os.path.join(SRC, "build")
FIXTURES = os.environ.get("FLASHD_FIXTURES") or os.path.join(SRC, "..", "shared", "fixtures")
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
from flashd_harness import Client, SimControl, Testbed  # noqa: E402

SIM = os.path.join(BUILD, "tests", "sim", "flashd-sim")
FLASHD = os.path.join(BUILD, "daemon", "flashd")
FLASHCTL = os.path.join(BUILD, "client", "flashctl")
CLOSE_SHIM = os.path.join(BUILD, "tests", "sim", "cdc", "libttyclose-shim.so")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# ---- the device model (the constants tests/sim/timing.c cites) ------------------------------
# STM32F205 (ST DS6329): 1 s per 128 KiB sector, 16 us per word.  nRF52840 (PS v1.7): 85 ms
# per 4 KiB page, 41 us per word.  SPI NOR (W25Q32JV/64JV): 45 ms per 4 KiB sector, 0.4 ms
# per 256-byte page.  USB 2.0 table 5-9: 19 x 64-byte bulk packets per 1 ms frame.
# Reset: DFU leave 0.5 s, Device OS boot 1 s; YMODEM success: 1 s + 0.1 s before the reset.


def erase_s(kind, size):
    if kind == "stm32":
        return math.ceil(size / 131072) * 1.0
    if kind == "nrf52":
        return math.ceil(size / 4096) * 0.085
    return math.ceil(size / 4096) * 0.045


def program_s(kind, size):
    if kind == "stm32":
        return math.ceil(size / 4) * 16e-6
    if kind == "nrf52":
        return math.ceil(size / 4) * 41e-6
    return math.ceil(size / 256) * 0.4e-3


def usb_bulk_s(n):
    return math.ceil(math.ceil(n / 64) * 1000 / 19) * 1e-6


def dfu_model_min_s(kind, size):
    """Device work of a DFU download: erase of the covering sectors + programming (USB
    control-transfer time not counted: a lower bound)."""
    return erase_s(kind, size) + program_s(kind, size)


def serial_model_min_s(kind, size):
    """YMODEM into listening mode, to the last block's ACK: the header's USB time and
    the erase over the declared size, then per 1 KiB block its USB time and programming."""
    blocks = math.ceil(size / 1024)
    return usb_bulk_s(133) + erase_s(kind, size) + blocks * (usb_bulk_s(1029) + program_s(kind, 1024))


DFU_REBOOT_S = 0.5 + 1.0
SERIAL_REBOOT_S = 1.0 + 0.1 + 1.0

# ---- cases -----------------------------------------------------------------------------------
PHOTON_ID = "3a001d000a47353138380001"
DFU_CASES = [
    # name, platform, os, image, address, dfu vid:pid, flash kind, device id
    ("Gen 2 Photon system part 2", "photon", "1.5.0", "photon/photon-system-part2@1.5.0.bin",
     0x08060000, "2b04:d006", "stm32", PHOTON_ID),
    ("Gen 3 Argon system part 1", "argon", "1.5.0", "argon/argon-system-part1@1.5.0.bin",
     0x30000, "2b04:d00c", "nrf52", "e00fce68aabbccddeeff0001"),
    ("P2 application", "p2", "5.9.0", "p2/tinker-5.0.0-p2.bin",
     0x085f4000, "2b04:d020", "spinor", "0a10aced202100000000aa01"),
]
SERIAL_IMAGE = "photon/photon-system-part2@1.5.0.bin"
SMALL_APP = "photon/photon_tinker.bin"
WRONG_APP = "electron/electron_tinker.bin"


def fixture(rel):
    return os.path.join(FIXTURES, "modules", rel)


def photon_ids(n):
    return ["3a001d000a473531383880%02x" % i for i in range(n)]


# ---- inner half: runs inside flashd-sim ---------------------------------------------------------

def proc_cpu_s(pid):
    try:
        f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / CLK_TCK
    except OSError:
        return None


def proc_status(pid, key):
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def wakeups(pid):
    n = 0
    for st in glob.glob("/proc/%d/task/*/status" % pid):
        try:
            for line in open(st):
                if "ctxt_switches" in line:
                    n += int(line.split()[1])
        except OSError:
            pass
    return n


def sim_pid():
    pid = os.getpid()
    while pid > 1:
        stat = open("/proc/%d/stat" % pid).read()
        argv0 = open("/proc/%d/cmdline" % pid, "rb").read().split(b"\0")[0]
        if os.path.basename(argv0) == b"flashd-sim":  # it re-executes itself: comm is "exe"
            return pid
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return None


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def last_write_ms(ctl):
    devs = ctl(cmd="state")["state"]["devices"]
    # (a simulator older than received.last_write_ms: no "to the last write" figure)
    return max(d["received"].get("last_write_ms", 0) for d in devs), \
        sum(d["received"]["dfu_requests"] for d in devs)


def requests_to_write(ctl):
    """Per device, the control requests from plug-in to the first erase or write."""
    return [d["received"].get("dfu_requests_to_write", 0)
            for d in ctl(cmd="state")["state"]["devices"]]


class JobWatch:
    """A subscriber to every job's events (a connection of its own, opened before the
    clients start): per device, when its job was queued, started, began writing,
    rebooted, ended, as the daemon announced it (the event's arrival here)."""

    def __init__(self, sock):
        self.c = Client(sock, timeout=5)
        self.c.call({"request": "subscribe", "jobs": True})
        self.events = []
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            try:
                m = self.c.read(timeout=0.5)
            except TimeoutError:
                continue
            except (OSError, ValueError):
                return
            if m is None:
                return
            if m.get("type") == "event":
                self.events.append((time.monotonic(), m))

    def timelines(self, t0, ctl, elapsed):
        """One entry per job: its device, result, and the seconds from t0 at which each
        state was first announced (queued, started, preflight, erasing, writing,
        rebooting, verifying, ended) plus the device's last flash write (flashd-sim)."""
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and \
                sum(1 for _, m in self.events if m["event"] == "job-ended") < \
                sum(1 for _, m in self.events if m["event"] == "job-queued"):
            time.sleep(0.02)
        self.stop = True
        self.t.join()
        self.c.close()
        devs = {d["device_id"]: d for d in ctl(cmd="state")["state"]["devices"]}
        per = {}
        for ts, m in self.events:
            job = m.get("job")
            if not job:
                continue
            rec = m.get("record") or {}
            tl = per.setdefault(job, {"device": None, "result": None, "at": {}})
            tl["device"] = tl["device"] or rec.get("device")
            key = m["event"].replace("job-", "")
            if key == "progress":
                key = m.get("state") or m.get("phase") or "progress"
            tl["at"].setdefault(key, round(ts - t0, 3))
            if key == "ended":
                tl["result"] = m.get("result")
        jobs = []
        for tl in per.values():
            d = devs.get(tl["device"]) or {}
            lw = (d.get("received") or {}).get("last_write_ms")
            if lw:
                tl["at"]["last_write"] = round(lw / 1000.0 - t0, 3)
            jobs.append(tl)
        return jobs


def inner_flashd(plan_path):
    tb = Testbed(plan_path, config=json.load(open(plan_path)).get("config"))
    spid = sim_pid()
    cpu_children0 = 0.0

    def flash(args):
        t0 = time.monotonic()
        p = subprocess.run([FLASHCTL_IN, "--socket", tb.sock, "--json", "flash", *args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t1 = time.monotonic()
        lines = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
        end = [x for x in lines if x.get("event") == "job-ended"]
        return {"rc": p.returncode, "t0": t0, "elapsed": t1 - t0,
                "outcome": end[0].get("outcome") if end else None,
                "error": (end[0].get("error") or {}).get("code") if end else None,
                "stderr": p.stderr[-400:]}

    def step(s):
        nonlocal cpu_children0
        cpu0, scpu0 = proc_cpu_s(tb.flashd.pid), proc_cpu_s(spid) if spid else None
        cpu_children0 = children_cpu_s()
        sim0 = thread_cpu_s(spid) if spid else (0, 0)
        _, req0 = last_write_ms(tb.ctl)
        if "flash" in s:
            watch = JobWatch(tb.sock)
            r = flash(s["flash"])
            r["jobs"] = watch.timelines(r["t0"], tb.ctl, r["elapsed"])
        elif "parallel" in s:
            # One command for N boards, as a station flashes them: flashctl flash APP
            # --platform P --all (one client, one request, N jobs).  t0: the command
            # starts; end: it exits, after the last job ended.  (N flashctl processes
            # started one after another measured their start-up on a loaded 2-core
            # machine: the 32nd job was queued 0.3 s after the first.)
            watch = JobWatch(tb.sock)
            t0 = time.monotonic()
            p = subprocess.run([FLASHCTL_IN, "--socket", tb.sock, "--json", "flash", *s["parallel"]],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            r = {"t0": t0, "elapsed": time.monotonic() - t0, "rc": p.returncode,
                 "stderr": (p.stderr[-400:] + p.stdout[-600:]) if p.returncode else ""}
            r["jobs"] = watch.timelines(t0, tb.ctl, r["elapsed"])
            r["clients_cpu"] = children_cpu_s() - cpu_children0
        elif "refuse" in s:
            lat = []
            for _ in range(s["n"]):
                x = flash(s["refuse"])
                lat.append(x["elapsed"])
                err = x["error"]
            r = {"latencies": lat, "error": err, "rc": 0, "t0": time.monotonic()}
        elif "idle" in s:
            w0 = wakeups(tb.flashd.pid)
            t0 = time.monotonic()
            time.sleep(s["idle"])
            r = {"t0": t0, "elapsed": time.monotonic() - t0, "rc": 0,
                 "wakeups": wakeups(tb.flashd.pid) - w0}
        else:
            raise SystemExit("unknown step %s" % s)
        lw, req1 = last_write_ms(tb.ctl)
        r["to_last_write"] = lw / 1000.0 - r["t0"] if lw else None
        r["requests"] = req1 - req0
        r["to_write_requests"] = requests_to_write(tb.ctl)
        r["cpu"] = proc_cpu_s(tb.flashd.pid) - cpu0
        r["sim_cpu"] = proc_cpu_s(spid) - scpu0 if spid else None
        if spid:
            m1, o1 = thread_cpu_s(spid)
            r["sim_threads"] = [m1 - sim0[0], o1 - sim0[1]]
        r["rss_kb"] = proc_status(tb.flashd.pid, "VmRSS")
        r["hwm_kb"] = proc_status(tb.flashd.pid, "VmHWM")
        return r

    tb.run(step)


def inner_cmd(plan_path):
    plan = json.load(open(plan_path))
    ctl = SimControl(plan["control"])
    ctl(cmd="state")  # the simulator is up and the devices plugged
    for pre in plan.get("pre", []):  # untimed set-up (the image a re-flash starts from)
        subprocess.run(pre, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ctl(cmd="wait-idle")
    _, req0 = last_write_ms(ctl)
    t0 = time.monotonic()
    p = subprocess.run(plan["command"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, errors="replace", env=dict(os.environ, **plan.get("env", {})))
    t1 = time.monotonic()
    lw, req1 = last_write_ms(ctl)
    res = [{"rc": p.returncode, "elapsed": t1 - t0, "to_last_write": lw / 1000.0 - t0 if lw else None,
            "requests": req1 - req0, "to_write_requests": requests_to_write(ctl),
            "out": p.stdout[-600:]}]
    with open(os.path.join(plan["work"], "results.json"), "w") as f:
        json.dump(res, f)


# ---- outer half ------------------------------------------------------------------------------

TOP = None


def testbed(devices, plan, env=None, timeout=900, expect_failure=False):
    """One flashd-sim testbed at --time-scale 1 running this script's inner half."""
    work = tempfile.mkdtemp(dir=TOP)
    sdir = os.path.join(work, "sim-state")
    os.mkdir(sdir)
    plan = dict(plan, work=work, control=os.path.join(work, "sim.sock"), flashd=FLASHD,
                flashctl=FLASHCTL, n_devices=len(devices), state_dir=sdir)
    plan.setdefault("steps", [])
    plan["expect_failure"] = expect_failure
    path = os.path.join(work, "plan.json")
    with open(path, "w") as f:
        json.dump(plan, f)
    argv = [SIM, "--time-scale", "1", "--state-dir", sdir, "--control", plan["control"]]
    for d in devices:
        argv += ["--device", d]
    argv += ["--", sys.executable, os.path.abspath(__file__), "--inner", path]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       errors="replace", timeout=timeout, env=dict(os.environ, TMPDIR=work, **(env or {})))
    try:
        res = json.load(open(os.path.join(work, "results.json")))
    except (OSError, ValueError):
        raise SystemExit("testbed failed (exit %d):\n%s" % (p.returncode, p.stdout[-3000:]))
    log = os.path.join(work, "flashd.log")
    bad = [r for r in res if isinstance(r, dict) and r.get("rc")]
    if bad and not plan.get("expect_failure"):
        sys.stderr.write("bench: a run failed: %s\n%s\n" % (json.dumps(bad)[:1500],
                                                          open(log).read()[-1500:] if os.path.exists(log) else p.stdout[-1500:]))
    if os.environ.get("BENCH_KEEP"):  # diagnosis: the work directory (flashd.log) stays
        sys.stderr.write("bench: kept %s\n" % work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return [r for r in res if "flashd_exit" not in r]


def flashd_run(devices, steps, config=None):
    return testbed(devices, {"kind": "flashd", "steps": steps, "config": config})


def cmd_run(devices, command, sim_env=None, pre=None):
    """A third-party command in the testbed; sim_env: environment of the simulator
    (and so of the command: LD_PRELOAD must reach flashd-sim, which appends its own);
    pre: commands run before it, not timed."""
    return testbed(devices, {"kind": "cmd", "command": command, "pre": pre or []},
                   env=sim_env)[0]


def stats(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def fmt(st, unit="s", digits=2):
    if not st:
        return "-"
    if unit == "ms":
        return "%.0f ms [%.0f-%.0f]" % (st["median"] * 1e3, st["min"] * 1e3, st["max"] * 1e3)
    f = "%%.%df" % digits
    return (f + " s [" + f + "-" + f + "]") % (st["median"], st["min"], st["max"])


ROWS = []


def row(name, flashd, comparator=None, ratio=None, note="", **extra):
    r = {"row": name, "flashd": flashd, "comparator": comparator, "ratio": ratio, "note": note}
    r.update(extra)
    ROWS.append(r)
    print("  %-58s %-26s %-34s %-7s %s" % (name, flashd_text(r), comp_text(r),
                                          "%.2f" % ratio if ratio is not None else "-", note),
          flush=True)


def flashd_text(r):
    return r["flashd"] if isinstance(r["flashd"], str) else fmt(r["flashd"], r.get("unit", "s"))


def comp_text(r):
    c = r["comparator"]
    if c is None:
        return "-"
    if isinstance(c, str):
        return c
    return "%s: %s" % (r.get("comparator_name", ""), fmt(c, r.get("unit", "s")))


def ratio(a, b):
    return a["median"] / b["median"] if a and b and b["median"] else None


def bench_dfu(runs, only=None):
    have_dfu_util = shutil.which("dfu-util")
    for name, plat, osv, img, addr, vidpid, kind, dev_id in DFU_CASES:
        if only and plat not in only:
            continue
        path = fixture(img)
        if not os.path.exists(path):
            row("DFU %s" % name, "not measured: fixture %s missing" % img)
            continue
        size = os.path.getsize(path)
        spec = "platform=%s,mode=dfu,os=%s,name=d1,id=%s" % (plat, osv, dev_id)
        fd, du = [], []
        for _ in range(runs):  # interleaved: flashd, dfu-util, flashd, ...
            fd.append(flashd_run([spec], [{"flash": [path, "--device", dev_id]}])[0])
            if have_dfu_util:
                du.append(cmd_run([spec], ["dfu-util", "-d", vidpid, "-a", "0", "-s",
                                           "0x%x:leave" % addr, "-D", path]))
        ok = [r for r in fd if not r["rc"]]
        lw, whole = stats([r["to_last_write"] for r in ok]), stats([r["elapsed"] for r in ok])
        dlw, dwhole = stats([r["to_last_write"] for r in du if not r["rc"]]), \
            stats([r["elapsed"] for r in du if not r["rc"]])
        req, dreq = stats([r["requests"] for r in ok]), stats([r["requests"] for r in du])
        mn = dfu_model_min_s(kind, size)
        label = "DFU %s (%d KB)" % (name, size // 1000)
        row(label + ", to the last write", lw, dlw, ratio(lw, dlw),
            "model minimum %.2f s (flashd %.2fx)" % (mn, lw["median"] / mn if lw else 0),
            comparator_name="dfu-util 0.11", model_min=mn,
            timelines=[r.get("jobs") for r in fd])
        goal = dwhole["median"] + DFU_REBOOT_S if dwhole else None
        row(label + ", whole command", whole, dwhole, ratio(whole, dwhole),
            "incl. reboot+verify; vs dfu-util+reboot %.2f s: %.2fx (goal <= 1.10)"
            % (goal or 0, whole["median"] / goal if whole and goal else 0),
            comparator_name="dfu-util 0.11", outcome=[r["outcome"] for r in fd])
        tw = stats([max(r.get("to_write_requests") or [0]) for r in ok])
        dtw = stats([max(r.get("to_write_requests") or [0]) for r in du if not r["rc"]])
        row(label + ", control requests", "%s" % (int(req["median"]) if req else "-"),
            "dfu-util 0.11: %s" % (int(dreq["median"]) if dreq else "-"),
            ratio(req, dreq) if req and dreq else None,
            "before the first erase or write: flashd %s, dfu-util %s"
            % (int(tw["median"]) if tw else "-", int(dtw["median"]) if dtw else "-"))


REFLASH_IMAGE = "argon/argon-system-part1@2.2.0.bin"
REFLASH_ID = "e00fce68aabbccddeeff0002"


def reflash_variant(path, out):
    """The fixture with one byte changed in each of three pages in its middle, the suffix
    SHA-256 and the CRC-32 recomputed so that the device accepts it (4 pages differ: the
    three and the last, which holds the SHA-256 and CRC)."""
    import hashlib
    import zlib
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 2
    for off in (mid, mid + 0x3000, mid + 0x9000):
        data[off] ^= 0x5a
    sha_at = len(data) - 38
    data[sha_at:sha_at + 32] = hashlib.sha256(bytes(data[:sha_at])).digest()
    data[-4:] = (zlib.crc32(bytes(data[:-4])) & 0xffffffff).to_bytes(4, "big")
    open(out, "wb").write(data)


def bench_reflash(runs):
    """An Argon in DFU mode holding the real system part 1 of its release gets the same
    part with a few pages changed: flashd reads back and writes the 4 differing pages,
    dfu-util 0.11 erases and writes all of it."""
    base = fixture(REFLASH_IMAGE)
    label = "re-flash of an image that differs in a few pages"
    if not os.path.exists(base):
        row(label, "not measured: fixture %s missing" % REFLASH_IMAGE)
        return
    var = os.path.join(TOP, "reflash-variant.bin")
    reflash_variant(base, var)
    size = os.path.getsize(base)
    spec = "platform=argon,mode=dfu,os=2.2.0,name=d1,id=%s" % REFLASH_ID
    fd, du = [], []
    have_dfu_util = shutil.which("dfu-util")
    for _ in range(runs):  # interleaved
        res = flashd_run([spec], [{"flash": [base, "--device", REFLASH_ID], "settle": True},
                                  {"ctl": {"cmd": "mode", "name": "d1", "mode": "dfu"},
                                   "settle": True},
                                  {"flash": [var, "--device", REFLASH_ID]}])
        fd.append(res[-1])
        if have_dfu_util:
            du.append(cmd_run([spec], ["dfu-util", "-d", "2b04:d00c", "-a", "0", "-s",
                                       "0x30000:leave", "-D", var],
                              pre=[["dfu-util", "-d", "2b04:d00c", "-a", "0", "-s", "0x30000",
                                    "-D", base]]))
    ok = [r for r in fd if not r["rc"]]
    lw, whole = stats([r["to_last_write"] for r in ok]), stats([r["elapsed"] for r in ok])
    dlw = stats([r["to_last_write"] for r in du if not r["rc"]])
    dwhole = stats([r["elapsed"] for r in du if not r["rc"]])
    full = dfu_model_min_s("nrf52", size)
    pages4 = erase_s("nrf52", 4 * 4096) + program_s("nrf52", 4 * 4096)
    # the read-back: 4 KiB UPLOADs at the USB full-speed rate the simulator charges
    readback = math.ceil(size / 4096) * usb_bulk_s(4096 + 128)
    name = "%s (Argon system part 1, %d KB, 4 of %d pages)" % (label, size // 1000,
                                                                math.ceil(size / 4096))
    row(name + ", to the last write", lw, dlw, ratio(lw, dlw),
        "model: full write %.2f s; read-back %.2f s + 4 pages %.2f s" % (full, readback, pages4),
        comparator_name="dfu-util 0.11 (writes all)", model_min=readback + pages4)
    row(name + ", whole command", whole, dwhole, ratio(whole, dwhole),
        "flashd incl. reboot+verify; dfu-util exits at leave",
        comparator_name="dfu-util 0.11 (writes all)", outcome=[r["outcome"] for r in fd])


def particle_cli():
    setup = os.environ.get("PARTICLE_CLI_SETUP") or os.path.join(
        SRC, "tests", "sim", "cdc", "particle-cli-setup.sh")
    p = subprocess.run([setup], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if p.returncode != 0 or not shutil.which("udevadm"):
        return None
    return p.stdout.strip().splitlines()[-1]


def cli_env(work_home):
    env = {"HOME": work_home}
    if os.path.exists(CLOSE_SHIM):
        env["LD_PRELOAD"] = CLOSE_SHIM  # before libumockdev-preload (close_shim.c)
    return env


def bench_serial(runs, particle):
    path = fixture(SERIAL_IMAGE)
    size = os.path.getsize(path)
    spec = "platform=photon,mode=normal,os=1.5.0,name=d1,id=%s" % PHOTON_ID
    fd, pc = [], []
    home = tempfile.mkdtemp(dir=TOP)
    for _ in range(runs):
        fd.append(flashd_run([spec], [{"flash": [path, "--device", PHOTON_ID]}])[0])
        if particle:
            pc.append(cmd_run([spec], [particle, "flash", "--serial", "--yes", "--port",
                                       "/dev/ttyACM0", path, "--no-update-check"], cli_env(home)))
    ok = [r for r in fd if not r["rc"]]
    lw, whole = stats([r["to_last_write"] for r in ok]), stats([r["elapsed"] for r in ok])
    plw = stats([r["to_last_write"] for r in pc if not r["rc"]])
    pwhole = stats([r["elapsed"] for r in pc if not r["rc"]])
    mn = serial_model_min_s("stm32", size)
    label = "serial Photon system part 2 (%d KB)" % (size // 1000)
    cname = "particle-cli 3.19.0" if particle else "particle-cli: not installable"
    row(label + ", to the last block", lw, plw, ratio(lw, plw),
        "model minimum %.2f s: flashd %.2fx (goal <= 1.15; <= 0.6x cli)"
        % (mn, lw["median"] / mn if lw else 0), comparator_name=cname, model_min=mn)
    row(label + ", whole command", whole, pwhole, ratio(whole, pwhole),
        "vs model min + reboot %.2f s: %.2fx (goal <= 1.15)"
        % (mn + SERIAL_REBOOT_S, whole["median"] / (mn + SERIAL_REBOOT_S) if whole else 0),
        comparator_name=cname, outcome=[r["outcome"] for r in fd])


def bench_refusal(runs, particle):
    path = fixture(WRONG_APP)
    spec = "platform=photon,mode=normal,os=1.5.0,name=d1,id=%s" % PHOTON_ID
    n = max(20, 10 * runs)
    r = flashd_run([spec], [{"refuse": [path, "--device", PHOTON_ID], "n": n}])[0]
    lat = sorted(r["latencies"])
    p50 = lat[len(lat) // 2]
    p99 = lat[min(len(lat) - 1, math.ceil(0.99 * len(lat)) - 1)]
    pc = []
    if particle:
        home = tempfile.mkdtemp(dir=TOP)
        for _ in range(min(runs, 3)):
            pc.append(testbed([spec], {"kind": "cmd", "command": [
                particle, "flash", "--serial", "--yes", "--port", "/dev/ttyACM0", path,
                "--no-update-check"]}, env=cli_env(home), expect_failure=True)[0])
    pst = stats([x["elapsed"] for x in pc])
    row("wrong-platform refusal (Electron app on a Photon), p50 / p99 of %d" % n,
        "%.0f / %.0f ms" % (p50 * 1e3, p99 * 1e3),
        "particle-cli 3.19.0: %s (writes it all)" % fmt(pst, "ms") if pst else "-",
        p99 / pst["median"] if pst else None, "flashd: %s before the first byte" % r["error"],
        p50=p50, p99=p99, particle_cli=pst)


# A station flashing 32 boards for one user: flashd's per-uid defaults (16 jobs, 32
# connections) are for a shared machine; the bench's N clients plus its event watcher
# are all one uid.
STATION_LIMITS = """[limits]
jobs_per_uid = 64
clients_per_uid = 64
"""


def thread_cpu_s(pid):
    """CPU seconds of a process's main thread and of its other threads."""
    main = other = 0.0
    for st in glob.glob("/proc/%d/task/*/stat" % pid):
        try:
            f = open(st).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        t = (int(f[11]) + int(f[12])) / CLK_TCK
        if st.split("/")[4] == str(pid):
            main += t
        else:
            other += t
    return main, other


def bench_parallel(runs, sizes, transports=("serial", "DFU")):
    app = fixture(SMALL_APP)
    single = {}
    for transport, mode in (("serial", "normal"), ("DFU", "dfu")):
        if transport.lower() not in [t.lower() for t in transports]:
            continue
        for n in sizes:
            ids = photon_ids(n)
            devs = ["platform=photon,mode=%s,os=1.5.0,name=p%d,id=%s" % (mode, i, ids[i])
                    for i in range(n)]
            res = [flashd_run(devs, [{"parallel": [app, "--platform", "photon", "--all"]}],
                              STATION_LIMITS)[0] for _ in range(runs)]
            wall = stats([r["elapsed"] for r in res])
            if n == 1:
                single[transport] = wall
            thr = n * single[transport]["median"] / wall["median"] if transport in single else None
            cpu = stats([r["cpu"] for r in res])
            sim_main = stats([r["sim_threads"][0] for r in res if r.get("sim_threads")])
            sim_usb = stats([r["sim_threads"][1] for r in res if r.get("sim_threads")])
            clients = stats([r["clients_cpu"] for r in res])
            ended = [[j["at"]["ended"] for j in r["jobs"] if "ended" in j["at"]] for r in res]
            spread = stats([max(e) - min(e) for e in ended if e])
            failed = sum(1 for r in res for j in r["jobs"] if j["result"] != "done") + \
                sum(max(0, n - len(r["jobs"])) for r in res)
            note = ("throughput %.2f x (N x single), %.2f of N; CPU s: flashd %.2f, flashctl %.2f, "
                    "flashd-sim %.2f (main loop: enumeration, ttys) + %.2f (usbfs emulation thread)"
                    % (thr or 0, (thr or 0) / n, cpu["median"], clients["median"],
                       sim_main["median"] if sim_main else 0, sim_usb["median"] if sim_usb else 0))
            tw = stats([max(r.get("to_write_requests") or [0]) for r in res])
            if transport == "DFU" and tw:
                note += "; control requests per device before its first erase: %d" % tw["median"]
            per_req = stats([r["sim_threads"][1] / r["requests"] * 1e6 for r in res
                             if r.get("sim_threads") and r.get("requests")])
            if transport == "DFU" and per_req:
                # grows with N if the emulator's cost per request does (its one thread
                # polls every client's socket each time it wakes)
                note += "; usbfs emulation CPU per control request %.0f us (%d requests)" % (
                    per_req["median"], statistics.median(r["requests"] for r in res))
            if n > 1 and spread:
                note += "; jobs ended over %.2f s" % spread["median"]
            if failed:
                note += ", %d jobs FAILED" % failed
            row("%d Photon%s at once over %s (%s), wall" % (n, "s" if n > 1 else "", transport,
                                                            os.path.basename(app)),
                wall, None, thr, note, flashd_cpu=cpu, flashctl_cpu=clients,
                sim_main_cpu=sim_main, sim_usbfs_cpu=sim_usb, end_spread=spread, raw=res,
                hwm_kb=max(r["hwm_kb"] or 0 for r in res), failed=failed)
            if transport == "DFU" and shutil.which("dfu-util"):
                dfu_util_parallel(runs, n, devs, ids, app, single)


def dfu_util_parallel(runs, n, devs, ids, app, single):
    """The same N Photons in DFU mode written by N dfu-util 0.11 processes at once (one per
    device, chosen by its serial number), as a script would: the emulator's ceiling for a
    tool that reads nothing back, waits for no reboot and verifies nothing.  Its own
    fraction of N x its single run, to set beside flashd's."""
    # each one's output in a file of the work directory ($TMPDIR; /dev/null inside the
    # testbed is not the host's), shown for the ones that fail.  Started together, some
    # fail libusb_init() under umockdev (LIBUSB_ERROR_OTHER, before any device is
    # touched): those are started again at once, and counted.
    one = ('(while dfu-util -d 2b04:d006 -S %s -a 0 -s 0x080a0000:leave -D %s '
           '>"$TMPDIR/dfu-util.%d.log" 2>&1; [ $? -ne 0 ] && grep -q "unable to initialize '
           'libusb" "$TMPDIR/dfu-util.%d.log"; do echo x >>"$TMPDIR/retries"; done; '
           'grep -q "File downloaded successfully" "$TMPDIR/dfu-util.%d.log") & p%d=$!; ')
    cmd = "".join(one % (ids[i], shlex.quote(app), i, i, i, i) for i in range(n))
    cmd += "fail=0; " + "".join('wait $p%d || { fail=1; echo "dfu-util %d:"; tail -n 4 '
                                '"$TMPDIR/dfu-util.%d.log"; }; ' % (i, i, i) for i in range(n))
    cmd += 'echo "retries: $(cat "$TMPDIR/retries" 2>/dev/null | wc -l)"; exit $fail'
    res = [cmd_run(devs, ["sh", "-c", cmd]) for _ in range(runs)]
    ok = [r for r in res if not r["rc"]]
    wall = stats([r["elapsed"] for r in ok])
    if not wall:
        row("%d Photons at once, dfu-util 0.11 x %d" % (n, n), "failed: %s" % res[0]["out"][-200:])
        return
    if n == 1:
        single["dfu-util"] = wall
    thr = n * single["dfu-util"]["median"] / wall["median"] if "dfu-util" in single else None
    retries = sum(int(r["out"].rsplit("retries: ", 1)[-1].split()[0] or 0)
                  for r in res if "retries: " in r["out"])
    row("%d Photon%s at once over DFU, dfu-util 0.11 x %d (%s), wall" % (
        n, "s" if n > 1 else "", n, os.path.basename(app)), wall, None, thr,
        "throughput %.2f x (N x its single), %.2f of N; exits at leave (no reboot, no verify)%s"
        % (thr or 0, (thr or 0) / n,
           "; %d libusb_init() failures restarted in %d runs" % (retries, len(res))
           if retries else ""), raw=res)


def bench_idle(seconds):
    spec = "platform=photon,mode=normal,os=1.5.0,name=d1,id=%s" % PHOTON_ID
    r = flashd_run([spec], [{"idle": seconds}])[0]
    row("idle %d s with a device attached" % seconds,
        "%.2f s CPU, %d wake-ups, %.1f MB RSS" % (r["cpu"], r["wakeups"], r["rss_kb"] / 1024.0),
        None, None, "wake-ups: context switches of all flashd threads",
        cpu=r["cpu"], wakeups=r["wakeups"], rss_kb=r["rss_kb"])


def bench_rss(n):
    app = fixture(SMALL_APP)
    ids = photon_ids(n)
    devs = ["platform=photon,mode=normal,os=1.5.0,name=p%d,id=%s" % (i, ids[i]) for i in range(n)]
    r = flashd_run(devs, [{"parallel": [app, "--platform", "photon", "--all"]}], STATION_LIMITS)[0]
    row("daemon peak RSS, %d jobs sharing one image (serial)" % n,
        "%.1f MB (VmHWM)" % (r["hwm_kb"] / 1024.0), None, None,
        "%d of %d jobs ok" % (sum(1 for j in r["jobs"] if j["result"] == "done"), n),
        hwm_kb=r["hwm_kb"])


def timed_rss(argv, env=None):
    """Wall time and peak RSS (KB) of one command, measured by a wrapper process."""
    code = ("import resource,subprocess,sys,time;t=time.monotonic();"
            "r=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.PIPE);"
            "print(time.monotonic()-t,resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,r.returncode)")
    out = subprocess.run([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, text=True,
                         env=env).stdout.split()
    return float(out[0]), int(out[1]), int(out[2])


BVR_SCRIPT = r"""
const {HalModuleParser} = require('binary-version-reader');
(async () => {
  for (const f of process.argv.slice(2)) {
    try { await new HalModuleParser().parseFile(f); } catch (e) {}
  }
})();
"""


def bench_inspect(runs, particle):
    files = sorted(glob.glob(os.path.join(FIXTURES, "modules", "**", "*.bin"), recursive=True))
    bvr_dir = None
    if particle:
        cand = os.path.join(os.path.dirname(os.path.dirname(particle)))
        if os.path.isdir(os.path.join(cand, "binary-version-reader")) and shutil.which("node"):
            bvr_dir = cand
    script = os.path.join(TOP, "bvr.js")
    with open(script, "w") as f:
        f.write(BVR_SCRIPT)
    fd, bv = [], []
    for _ in range(runs):
        fd.append(timed_rss([FLASHCTL, "inspect", "--json", *files]))
        if bvr_dir:
            bv.append(timed_rss(["node", script, *files], dict(os.environ, NODE_PATH=bvr_dir)))
    t, bt = stats([x[0] for x in fd]), stats([x[0] for x in bv])
    rss = max(x[1] for x in fd)
    brss = max(x[1] for x in bv) if bv else None
    version = "?"
    if bvr_dir:
        version = json.load(open(os.path.join(bvr_dir, "binary-version-reader", "package.json")))["version"]
    row("inspect of %d files, wall (peak RSS)" % len(files), t,
        bt if bvr_dir else "not measured: binary-version-reader not installable (npm, with particle-cli)",
        ratio(t, bt) if bvr_dir else None,
        "RSS flashctl %.1f MB vs binary-version-reader %s" % (rss / 1024.0, "%.1f MB" % (brss / 1024.0) if brss else "-"),
        comparator_name="binary-version-reader %s" % version, rss_kb=rss, bvr_rss_kb=brss)


def tool_versions(particle):
    def out(argv):
        try:
            return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=20).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "not available"
    commit = out(["git", "-C", SRC, "describe", "--always", "--dirty"])
    v = {"flashd": out([FLASHD, "--version"]).replace("flashd ", "") + " (" + commit + ")",
         "dfu-util": out(["dfu-util", "-V"]).replace("dfu-util ", ""),
         "particle-cli": "3.19.0 (npm)" if particle else "not installable",
         "node": out(["node", "--version"]),
         "umockdev": out(["dpkg-query", "-W", "-f", "${Version}", "umockdev"]),
         "python": pyplatform.python_version()}
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    load = open("/proc/loadavg").read().split()[:3]
    machine = {"kernel": pyplatform.release(), "cpu": cpu, "cores": os.cpu_count(),
               "load_at_start": " ".join(load),
               "testbed_fs": fs_type(tempfile.gettempdir()) +
               (" (private mount)" if os.environ.get("FLASHD_BENCH_TMPFS") else "")}
    return v, machine


def fs_type(path):
    try:
        return subprocess.run(["stat", "-f", "-c", "%T", path], stdout=subprocess.PIPE,
                              text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def in_private_tmpfs(argv):
    """The testbeds' files (umockdev's sysfs and /dev, the ptys' links, the work
    directories) on a tmpfs, as a real system's sysfs and devtmpfs are memory: run
    again in a private mount namespace with a tmpfs for TMPDIR (root, unshare(1)).
    On a disk file system every re-enumeration creates and deletes ~70 inodes, and
    ext4 without a journal skips over every inode freed in the last minutes while it
    allocates one (fs/ext4/ialloc.c recently_deleted()): the simulator's main loop spent
    1-2 s of CPU in that scan per 32-device run, all of it serialising the devices'
    re-enumerations.  Returns the exit status, or None when it cannot (then the
    testbeds stay in $TMPDIR, and the table says which file system they were on)."""
    if os.environ.get("FLASHD_BENCH_TMPFS") or os.geteuid() != 0 or not shutil.which("unshare"):
        return None
    # A short path: umockdev's ioctl sockets live under it (.../ioctl/dev/bus/usb/BBB/DDD),
    # and a Unix socket path has at most 107 bytes.
    mnt = tempfile.mkdtemp(prefix="fbt.", dir="/tmp" if os.path.isdir("/tmp") else None)
    script = ('mount -t tmpfs -o size=2g,mode=0700 flashd-bench "$FLASHD_BENCH_TMPFS" && '
              'TMPDIR="$FLASHD_BENCH_TMPFS" exec "$@"')
    try:
        probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                script.replace('exec "$@"', "true")],
                               env=dict(os.environ, FLASHD_BENCH_TMPFS=mnt),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if probe.returncode != 0:
            return None
        return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                               "sh", sys.executable, os.path.abspath(__file__), *argv],
                              env=dict(os.environ, FLASHD_BENCH_TMPFS=mnt)).returncode
    finally:
        os.rmdir(mnt)


def main():
    global TOP
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--rows", default="dfu,reflash,serial,refusal,parallel,idle,rss,inspect")
    ap.add_argument("--devices", default=None, help="device counts for the parallel rows")
    ap.add_argument("--transports", default="serial,dfu",
                    help="the parallel rows' transports, of serial,dfu (default: both)")
    ap.add_argument("--dfu-platforms", default=None,
                    help="the dfu rows' devices, of photon,argon,p2 (default: all three)")
    ap.add_argument("--idle", type=int)
    ap.add_argument("--json", default=os.path.join(BUILD, "bench", "bench.json"))
    ap.add_argument("--disk", action="store_true",
                    help="keep the testbeds in $TMPDIR (default: a private tmpfs when root)")
    a = ap.parse_args()
    if not a.disk:
        rc = in_private_tmpfs(sys.argv[1:])
        if rc is not None:
            sys.exit(rc)
    runs = a.runs or (2 if a.quick else 5)
    sizes = [int(x) for x in (a.devices or ("1,4" if a.quick else "1,4,16,32")).split(",")]
    if 1 not in sizes:
        sizes.insert(0, 1)
    idle = a.idle or (5 if a.quick else 30)
    rows = a.rows.split(",")
    for p in (SIM, FLASHD, FLASHCTL):
        if not os.access(p, os.X_OK):
            raise SystemExit("bench: %s not built" % p)
    TOP = tempfile.mkdtemp(prefix="flashd-bench.")
    particle = particle_cli() if {"serial", "refusal", "inspect"} & set(rows) else None
    versions, machine = tool_versions(particle)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    print("flashd benchmarks, %s; flashd-sim --time-scale 1; median [min-max] of %d interleaved runs"
          % (started, runs))
    print("machine: %s, %s cores, kernel %s, load %s; testbeds on %s"
          % (machine["cpu"], machine["cores"], machine["kernel"], machine["load_at_start"],
             machine["testbed_fs"]))
    print("tools: " + "; ".join("%s %s" % kv for kv in versions.items()))
    print("  %-58s %-26s %-34s %-7s %s" % ("row", "flashd", "comparator", "ratio", "notes"))
    try:
        if "dfu" in rows:
            bench_dfu(runs, a.dfu_platforms.split(",") if a.dfu_platforms else None)
        if "serial" in rows:
            bench_serial(runs, particle)
        if "refusal" in rows:
            bench_refusal(runs, particle)
        if "parallel" in rows:
            bench_parallel(runs, sizes, a.transports.split(","))
        if "idle" in rows:
            bench_idle(idle)
        if "rss" in rows:
            bench_rss(max(sizes) if max(sizes) > 1 else 32)
        if "inspect" in rows:
            bench_inspect(runs, particle)
        row("auto-flash latency (udev add -> first byte)",
            "in its own benchmark: meson test -C build --benchmark auto-plug", None, None, "")
        if "reflash" in rows:
            bench_reflash(runs)
    finally:
        machine["load_at_end"] = " ".join(open("/proc/loadavg").read().split()[:3])
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump({"started": started, "runs": runs, "time_scale": 1, "machine": machine,
                       "tools": versions, "rows": ROWS}, f, indent=1)
        print("json: %s" % a.json)
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(TOP, ignore_errors=True)


def markdown(path):
    """The table of a JSON result as Markdown (for tests/bench/README.md)."""
    doc = json.load(open(path))
    m = doc["machine"]
    out = ["Run %s, median [min-max] of %d interleaved runs at --time-scale 1; %s, %s cores, "
           "load average %s at the start%s; testbeds on %s; %s."
           % (doc["started"], doc["runs"], m["cpu"], m["cores"], m["load_at_start"],
              ", %s at the end" % m["load_at_end"] if m.get("load_at_end") else "",
              m.get("testbed_fs", "?"), "; ".join("%s %s" % kv for kv in doc["tools"].items())),
           "",
           "| row | flashd | comparator | ratio | notes |", "|---|---|---|---|---|"]
    for r in doc["rows"]:
        ratio_ = "%.2f" % r["ratio"] if r.get("ratio") is not None else "-"
        out.append("| %s | %s | %s | %s | %s |" % (r["row"], flashd_text(r), comp_text(r), ratio_,
                                                  r.get("note", "")))
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--markdown":
        print(markdown(sys.argv[2]))
        sys.exit(0)
    if len(sys.argv) == 3 and sys.argv[1] == "--inner":
        FLASHCTL_IN = json.load(open(sys.argv[2]))["flashctl"]
        kind = json.load(open(sys.argv[2]))["kind"]
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        (inner_flashd if kind == "flashd" else inner_cmd)(sys.argv[2])
        sys.exit(0)
    main()

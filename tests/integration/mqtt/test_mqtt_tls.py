#!/usr/bin/env python3
"""The MQTT publisher's security (issue 17) against a real mosquitto: TLS with
certificate verification (a broker whose certificate the CA in ca_file signed,
for the name in the URL, is accepted; another CA, the system's CAs, or a name
the certificate does not carry are refused and the hello reply says why), a
client certificate, and user name + password from password_file (a wrong
password is refused by the broker; a file other users may read is refused at
start).  No devices needed: the station's status is what is published.

usage: test_mqtt_tls.py FLASHD FLASHCTL
"""
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from flashd_harness import Daemon, Tap  # noqa: E402

MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d):
    """ca (good), rogue (another CA), server (localhost, signed by ca), client (signed by ca)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "rogue"):
        openssl("req", "-x509", *ec, "-keyout", ca + ".key", "-out", ca + ".pem", "-days", "2",
                "-subj", "/CN=flashd test %s" % ca, cwd=d)
    for name, cn, ext in (("server", "localhost", "subjectAltName=DNS:localhost"),
                          ("client", "line1-a", "extendedKeyUsage=clientAuth")):
        openssl("req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn,
                cwd=d)
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write(ext + "\n")
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext",
                cwd=d)
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o600)


def hello_mqtt(d):
    c = d.client()
    r = c.call({"request": "hello"})
    c.close()
    return (r or {}).get("mqtt") or {}


def wait_mqtt(d, pred, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        m = hello_mqtt(d)
        if pred(m) or time.monotonic() > deadline:
            return m
        time.sleep(0.1)


def main():
    flashd, fc = sys.argv[1:3]
    if not MOSQUITTO or not shutil.which("mosquitto_sub") or not shutil.which("openssl") or \
            not shutil.which("mosquitto_passwd"):
        print("1..0 # SKIP mosquitto, mosquitto-clients or openssl missing: scripts/install-deps")
        sys.exit(0)
    tap = Tap()
    work = tempfile.mkdtemp(prefix="flashd-mqtt-tls-")
    pki = os.path.join(work, "pki")
    os.mkdir(pki)
    make_pki(pki)
    p = lambda name: os.path.join(pki, name)  # noqa: E731
    subprocess.run(["mosquitto_passwd", "-c", "-b", p("broker.passwd"), "line1-a", "s3cret"],
                   check=True, capture_output=True)
    tls, mutual, plain = free_port(), free_port(), free_port()
    conf = os.path.join(work, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write("per_listener_settings true\nuser %s\n" % pwd.getpwuid(os.getuid()).pw_name)
        f.write("listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nallow_anonymous true\n"
                % (tls, p("ca.pem"), p("server.pem"), p("server.key")))
        f.write("listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n"
                "require_certificate true\nallow_anonymous true\n"
                % (mutual, p("ca.pem"), p("server.pem"), p("server.key")))
        f.write("listener %d 127.0.0.1\nallow_anonymous false\npassword_file %s\n"
                % (plain, p("broker.passwd")))
    log = open(os.path.join(work, "mosquitto.log"), "w")
    broker = subprocess.Popen([MOSQUITTO, "-c", conf], stdout=log, stderr=log)
    daemons = []

    def station(mqtt_lines):
        d = Daemon(flashd, config="[mqtt]\nstation = line1-a\n" + mqtt_lines)
        daemons.append(d)
        return d

    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", plain), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)

        d = station("url = mqtts://localhost:%d\nca_file = %s\n" % (tls, p("ca.pem")))
        m = wait_mqtt(d, lambda m: m.get("connected"))
        tap.check("mqtts:// with the CA that signed the broker's certificate: connected",
                  m.get("connected") is True and m.get("state") == "connected", m)
        r = subprocess.run(["mosquitto_sub", "-h", "localhost", "-p", str(tls), "--cafile",
                            p("ca.pem"), "-t", "flashd/line1-a/status", "-C", "1", "-W", "5"],
                           capture_output=True, text=True, timeout=15)
        st = json.loads(r.stdout) if r.stdout.startswith("{") else {}
        tap.check("... and its status arrived over TLS (retained, online)",
                  st.get("state") == "online" and st.get("station") == "line1-a", r.stdout)

        r = subprocess.run([fc, "fleet", "--broker", "mqtts://localhost:%d" % tls, "--ca-file",
                            p("ca.pem"), "--json", "--once"], capture_output=True, text=True,
                           timeout=30)
        view = [json.loads(x) for x in r.stdout.splitlines()] if r.returncode == 0 else []
        tap.check("flashctl fleet over mqtts:// (--ca-file) shows the station online",
                  [(x["station"], x["online"]) for x in view] == [("line1-a", True)],
                  r.stdout + r.stderr)
        r = subprocess.run([fc, "fleet", "--broker", "mqtts://localhost:%d" % tls, "--ca-file",
                            p("rogue.pem"), "--once"], capture_output=True, text=True, timeout=30)
        tap.check("... and refuses a broker its CA did not sign: broker-unreachable, exit 10",
                  r.returncode == 10 and "broker-unreachable" in r.stderr, r.stderr)

        for what, lines in (
                ("a CA that did not sign it", "url = mqtts://localhost:%d\nca_file = %s\n"
                 % (tls, p("rogue.pem"))),
                ("the system's CAs (no ca_file)", "url = mqtts://localhost:%d\n" % tls),
                ("a name the certificate does not carry (127.0.0.1)",
                 "url = mqtts://127.0.0.1:%d\nca_file = %s\n" % (tls, p("ca.pem")))):
            d = station(lines)
            m = wait_mqtt(d, lambda m: m.get("last_error"), 10)
            time.sleep(0.3)
            m = hello_mqtt(d)
            tap.check("mqtts:// verified against %s: refused, the hello reply says a TLS error"
                      % what, m.get("connected") is False and m.get("published") == 0 and
                      "TLS" in (m.get("last_error") or ""), m)

        d = station("url = mqtts://localhost:%d\nca_file = %s\ncert_file = %s\nkey_file = %s\n"
                    % (mutual, p("ca.pem"), p("client.pem"), p("client.key")))
        m = wait_mqtt(d, lambda m: m.get("connected"))
        tap.check("a listener that requires a client certificate accepts cert_file/key_file",
                  m.get("connected") is True, m)
        d = station("url = mqtts://localhost:%d\nca_file = %s\n" % (mutual, p("ca.pem")))
        m = wait_mqtt(d, lambda m: m.get("last_error"), 10)
        tap.check("... and refuses a station without one", m.get("connected") is False, m)

        pw = os.path.join(work, "station.pass")
        with open(pw, "w") as f:
            f.write("line1-a\ns3cret\n")
        os.chmod(pw, 0o600)
        # A device state retained from an earlier run of this station (killed with a
        # board attached): the station has no such device now and clears it.
        ghost = "flashd/line1-a/devices/3a001d000a47353138383101"
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(plain), "-u", "line1-a",
                        "-P", "s3cret", "-r", "-q", "1", "-t", ghost, "-m",
                        '{"key":"3a001d000a47353138383101","present":true}'],
                       check=True, capture_output=True, timeout=10)
        d = station("url = mqtt://127.0.0.1:%d\npassword_file = %s\n" % (plain, pw))
        m = wait_mqtt(d, lambda m: m.get("connected"))
        tap.check("user name and password from password_file: connected", m.get("connected"), m)
        left = ["x"]
        deadline = time.monotonic() + 10
        while left and time.monotonic() < deadline:
            r = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(plain), "-u",
                                "line1-a", "-P", "s3cret", "-t", "flashd/line1-a/devices/+",
                                "--retained-only", "-W", "1", "-v"],
                               capture_output=True, text=True, timeout=10)
            left = r.stdout.split()
            time.sleep(0.2)
        r = subprocess.run([fc, "fleet", "--broker", "mqtt://127.0.0.1:%d" % plain,
                            "--password-file", pw, "--json", "--once"], capture_output=True,
                           text=True, timeout=30)
        tap.check("flashctl fleet --password-file subscribes where anonymous clients may not",
                  r.returncode == 0 and '"station":"line1-a"' in r.stdout, r.stdout + r.stderr)
        r = subprocess.run([fc, "fleet", "--broker", "mqtt://127.0.0.1:%d" % plain, "--once"],
                           capture_output=True, text=True, timeout=30)
        tap.check("... without it: broker-unreachable (the broker's refusal), exit 10",
                  r.returncode == 10 and "not authorised" in r.stderr.lower(), r.stderr)
        tap.check("a device state retained from an earlier run is cleared when the station "
                  "connects without that device", not left, left)
        bad = os.path.join(work, "wrong.pass")
        with open(bad, "w") as f:
            f.write("line1-a\nguess\n")
        os.chmod(bad, 0o600)
        d = station("url = mqtt://127.0.0.1:%d\npassword_file = %s\n" % (plain, bad))
        m = wait_mqtt(d, lambda m: "refused" in (m.get("last_error") or ""), 10)
        tap.check("a wrong password: the broker refuses, the hello reply says so",
                  m.get("connected") is False and "not authorised" in
                  (m.get("last_error") or "").lower(), m)

        os.chmod(pw, 0o644)
        cfg = os.path.join(work, "open.conf")
        with open(cfg, "w") as f:
            f.write("[mqtt]\nurl = mqtt://127.0.0.1:%d\nstation = x\npassword_file = %s\n"
                    % (plain, pw))
        r = subprocess.run([flashd, "--foreground", "--socket", os.path.join(work, "x.sock"),
                            "--config", cfg], capture_output=True, text=True, timeout=20)
        tap.check("a password_file other users may read: refused at start (mqtt-config)",
                  r.returncode == 2 and "[mqtt-config]" in r.stderr and
                  "readable by other users" in r.stderr, (r.returncode, r.stderr))
        cfg2 = os.path.join(work, "missing.conf")
        with open(cfg2, "w") as f:
            f.write("[mqtt]\nurl = mqtts://localhost:%d\nstation = x\nca_file = %s\n"
                    % (tls, os.path.join(work, "nonexistent.pem")))
        r = subprocess.run([flashd, "--foreground", "--socket", os.path.join(work, "y.sock"),
                            "--config", cfg2], capture_output=True, text=True, timeout=20)
        tap.check("a ca_file that does not exist: refused at start (mqtt-config)",
                  r.returncode == 2 and "[mqtt-config]" in r.stderr, (r.returncode, r.stderr))
    finally:
        statuses = [d.stop() for d in daemons]
        broker.terminate()
        broker.wait(10)
    tap.check("every flashd exits 0 after SIGTERM (connected or not; no leak under ASan)",
              statuses and all(s == 0 for s in statuses), statuses)
    if not tap.failed:
        shutil.rmtree(work, ignore_errors=True)
        for d in daemons:
            shutil.rmtree(d.dir, ignore_errors=True)
    else:
        print("# work directory kept: " + work)
    tap.done()


if __name__ == "__main__":
    main()

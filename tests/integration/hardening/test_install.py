"""Issue 16 proof: flashd as a distribution would install it.

  - `meson install --destdir` puts every file where the build's options say
    (meson introspect --installed; the unit, udev, sysusers and tmpfiles
    directories from the options or else systemd.pc / udev.pc), with sane modes
  - systemd-sysusers and systemd-tmpfiles, rooted in the DESTDIR, create the
    flashd user and group and its state directory (0700, flashd's)
  - systemd-analyze verify accepts flashd.service and flashd.socket
  - systemd-analyze security --offline=true: the service's exposure is 2.0 or
    lower and not above the value recorded in systemd/exposure-ceiling
  - the udev rules never make a device world-writable, tag it for uaccess and
    ask systemd for flashd.service

    test_install.py BUILD_ROOT SOURCE_ROOT
"""
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from flashd_harness import Tap  # noqa: E402

UNIT_FILES = {"flashd.service": "systemdsystemunitdir", "flashd.socket": "systemdsystemunitdir",
              "70-flashd.rules": "udevrulesdir", "flashd.sysusers": "sysusersdir",
              "flashd.tmpfiles": "tmpfilesdir"}


def pc_default(opt):
    """Where an empty option points: systemd.pc / udev.pc, as systemd/meson.build does."""
    if opt == "udevrulesdir":
        r = subprocess.run(["pkg-config", "--variable=udevdir", "udev"], capture_output=True,
                           text=True)
        return r.stdout.strip() + "/rules.d" if r.stdout.strip() else None
    r = subprocess.run(["pkg-config", "--variable=" + opt, "systemd"], capture_output=True,
                       text=True)
    return r.stdout.strip() or None


def main():
    build, source = sys.argv[1], sys.argv[2]
    if not shutil.which("systemd-analyze"):
        print("1..0 # SKIP systemd-analyze not installed (scripts/install-deps)")
        return 0
    tap = Tap()
    dest = tempfile.mkdtemp(prefix="flashd-destdir-")
    try:
        r = subprocess.run(["meson", "install", "-C", build, "--destdir", dest, "--no-rebuild",
                            "--quiet"], capture_output=True, text=True, timeout=120)
        tap.check("meson install --destdir", r.returncode == 0, r.stdout + r.stderr)
        installed = json.loads(subprocess.run(["meson", "introspect", build, "--installed"],
                                              capture_output=True, text=True,
                                              check=True).stdout)
        options = {o["name"]: o["value"] for o in json.loads(subprocess.run(
            ["meson", "introspect", build, "--buildoptions"], capture_output=True, text=True,
            check=True).stdout)}
        bad = []
        for src, dst in installed.items():
            path = dest + dst
            if not os.path.isfile(path):
                bad.append((dst, "missing"))
                continue
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            with open(path, "rb") as f:
                script = f.read(2) == b"#!"  # an example script may be executable
            exe = "/bin/" in dst or "/sbin/" in dst or script
            want = 0o755 if exe else 0o644
            if mode != want and not (not exe and mode == 0o444):
                bad.append((dst, oct(mode), "want", oct(want)))
            if mode & 0o002:
                bad.append((dst, "world-writable"))
        tap.check("every installed file (%d) is in the DESTDIR with mode 0755 (programs) or "
                  "0644 (data)" % len(installed), installed and not bad, bad)
        placed = []
        for name, opt in UNIT_FILES.items():
            dst = next((d for s, d in installed.items() if os.path.basename(s) == name), None)
            want = options.get(opt) or pc_default(opt)
            if not dst or os.path.dirname(dst) != want:
                placed.append((name, opt, dst, want))
        tap.check("units, udev rules, sysusers and tmpfiles land in the directories the options "
                  "(or systemd.pc / udev.pc) name", not placed, placed)
        unit_dir = dest + os.path.dirname(next(d for s, d in installed.items()
                                               if s.endswith("flashd.service")))

        # sysusers and tmpfiles, rooted in the DESTDIR
        sysusers = next(dest + d for s, d in installed.items() if s.endswith("flashd.sysusers"))
        tmpfiles = next(dest + d for s, d in installed.items() if s.endswith("flashd.tmpfiles"))
        os.makedirs(os.path.join(dest, "etc"), exist_ok=True)
        r = subprocess.run(["systemd-sysusers", "--root", dest, sysusers], capture_output=True,
                           text=True)
        passwd = open(os.path.join(dest, "etc/passwd")).read() if r.returncode == 0 else ""
        group = open(os.path.join(dest, "etc/group")).read() if r.returncode == 0 else ""
        user = re.search(r"^flashd:x:(\d+):(\d+):", passwd, re.M)
        grp = re.search(r"^flashd:x:(\d+):", group, re.M)
        tap.check("systemd-sysusers creates the flashd user and its flashd group",
                  user and grp and user.group(2) == grp.group(1) and int(user.group(1)) < 1000,
                  (r.stderr, passwd, group))
        r = subprocess.run(["systemd-tmpfiles", "--create", "--root", dest, tmpfiles],
                           capture_output=True, text=True)
        st = os.stat(os.path.join(dest, "var/lib/flashd")) if user else None
        tap.check("systemd-tmpfiles makes /var/lib/flashd 0700, the flashd user's",
                  st and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == int(user.group(1)),
                  (r.returncode, r.stderr, st))

        # systemd-analyze verify: the units as installed, ExecStart inside the DESTDIR
        vdir = tempfile.mkdtemp(dir=dest)
        for name in ("flashd.service", "flashd.socket"):
            text = open(os.path.join(unit_dir, name)).read()
            text = re.sub(r"^ExecStart=/", "ExecStart=" + dest + "/", text, flags=re.M)
            with open(os.path.join(vdir, name), "w") as f:
                f.write(text)
        r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                            os.path.join(vdir, "flashd.service"),
                            os.path.join(vdir, "flashd.socket")],
                           capture_output=True, text=True, env=dict(os.environ,
                                                                    SYSTEMD_UNIT_PATH=vdir + ":"))
        tap.check("systemd-analyze verify flashd.service flashd.socket: no complaint",
                  r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(),
                  r.stdout + r.stderr)

        # systemd-analyze security, offline, on the unit as installed
        r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                            "--root", dest, "flashd.service"], capture_output=True, text=True)
        m = re.search(r"Overall exposure level for flashd.service: ([0-9.]+)", r.stdout + r.stderr)
        ceiling = float(open(os.path.join(source, "systemd", "exposure-ceiling")).read().split()[0])
        score = float(m.group(1)) if m else None
        print("# exposure %s (ceiling %.1f)" % (score, ceiling))
        tap.check("systemd-analyze security --offline=true: exposure %s <= 2.0 and <= the "
                  "recorded %.1f" % (score, ceiling),
                  score is not None and score <= 2.0 and score <= ceiling + 1e-9,
                  r.stdout[-3000:] + r.stderr[-1000:])

        rules = open(dest + next(d for s, d in installed.items()
                                 if s.endswith("70-flashd.rules"))).read()
        rules = "\n".join(l for l in rules.replace("\\\n", " ").splitlines()
                           if not l.lstrip().startswith("#"))
        devices = [l for l in rules.splitlines() if "ATTRS{idVendor}" in l]
        tap.check("udev rules: every Particle device is flashd's 0660, uaccess, ModemManager "
                  "ignores it, flashd.service is wanted",
                  len(devices) == 2 and "0666" not in rules and all(
                      'GROUP="flashd"' in l and 'MODE="0660"' in l and 'TAG+="uaccess"' in l
                      and 'ENV{ID_MM_DEVICE_IGNORE}="1"' in l and 'TAG+="systemd"' in l
                      and 'ENV{SYSTEMD_WANTS}+="flashd.service"' in l for l in devices), devices)
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    tap.done()


if __name__ == "__main__":
    sys.exit(main())

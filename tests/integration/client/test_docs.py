#!/usr/bin/env python3
"""The documentation matches the code (issue 8): man pages render without
warnings, flashctl(1) and the bash completion know every verb, PROTOCOL.md and
flashd-protocol(7) name every request and every error id of the catalogue, and
the completion completes verbs, options and files.

usage: test_docs.py FLASHCTL
"""
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from flashd_harness import Tap  # noqa: E402

SRC = os.environ.get("FLASHD_SOURCE_ROOT",
                     os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
FC = sys.argv[1]
REQUESTS = ["hello", "list-devices", "device-info", "flash", "list-jobs", "cancel", "subscribe",
            "history", "upload-begin", "upload-chunk"]
EVENTS = ["device-added", "device-changed", "device-removed", "job-queued", "job-started",
          "job-plan", "job-progress", "job-ended"]
COMPLETION = os.path.join(SRC, "client", "flashctl.bash-completion")


def read(*parts):
    return open(os.path.join(SRC, *parts)).read()


def complete(*words):
    script = ('source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _flashctl; '
              'printf "%s\\n" "${COMPREPLY[@]}"')
    r = subprocess.run(["bash", "-c", script, "bash", COMPLETION, *words], capture_output=True,
                       text=True, timeout=20, cwd=os.path.join(SRC, "client"),
                       env=dict(os.environ, PATH=os.path.dirname(FC) + ":" + os.environ["PATH"],
                                FLASHD_SOCKET="/nonexistent"))
    return r.stdout.split()


def main():
    tap = Tap()
    catalogue = [json.loads(l)["id"] for l in subprocess.run(
        [FC, "errors", "--json"], capture_output=True, text=True, check=True).stdout.splitlines()]
    usage = subprocess.run([FC, "--help"], capture_output=True, text=True).stdout
    verbs = re.findall(r"^  ([a-z]+)", usage, re.M)
    tap.check("flashctl --help lists check and info", "check" in verbs and "info" in verbs, usage)

    for page in (("client", "flashctl.1"), ("client", "flashd-protocol.7"), ("daemon", "flashd.8")):
        r = subprocess.run(["man", "--warnings", "-l", os.path.join(SRC, *page)],
                           capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, MANWIDTH="100", LC_ALL="C.UTF-8"))
        tap.check("%s renders without warnings" % page[1],
                  r.returncode == 0 and r.stderr.strip() == "" and len(r.stdout) > 1000, r.stderr)

    # Issue 13: the page promises only what is kept: the SQLite history survives a
    # restart (interrupted jobs recorded, not resumed); `flashctl jobs` is memory only.
    man8 = read("daemon", "flashd.8").replace("\\-", "-")
    tap.check("flashd(8) says what survives a restart and what does not",
              "history.sqlite3" in man8 and "in memory only" in man8
              and "not resumed" in man8,
              [l for l in man8.splitlines() if "history" in l])

    man1 = read("client", "flashctl.1")
    missing = [v for v in verbs if not re.search(r"^\.B %s\b" % v, man1, re.M)]
    tap.check("flashctl(1) documents every verb", not missing, missing)
    comp = read("client", "flashctl.bash-completion")
    tap.check("the completion knows every verb", all(v in comp for v in verbs), verbs)

    proto = read("proto", "PROTOCOL.md")
    man7 = read("client", "flashd-protocol.7").replace("\\-", "-")
    tap.check("PROTOCOL.md has a section with an example for every request",
              all(("### `%s`" % r) in proto and ('"request":"%s"' % r) in proto for r in REQUESTS),
              [r for r in REQUESTS if ("### `%s`" % r) not in proto])
    tap.check("PROTOCOL.md and flashd-protocol(7) show every event",
              all(('"event":"%s"' % e) in proto and e in man7 for e in EVENTS))
    errs = proto[proto.index("## Errors by id"):]
    tap.check("PROTOCOL.md lists every error id with an example detail",
              all(re.search(r"^\| `%s` \| \d+ \| .* \| `\{" % i, errs, re.M) for i in catalogue),
              [i for i in catalogue if ("| `%s` |" % i) not in errs])
    tap.check("flashd-protocol(7) names every error id",
              all(i in man7 for i in catalogue), [i for i in catalogue if i not in man7])

    tap.check("completion: 'flashctl ch' -> check", complete("flashctl", "ch") == ["check"],
              complete("flashctl", "ch"))
    tap.check("completion: flash options", "--verify" in complete("flashctl", "flash", "--ve"),
              complete("flashctl", "flash", "--ve"))
    tap.check("completion: files after flash",
              "flashctl.1" in complete("flashctl", "flash", "flashctl."))
    tap.check("completion: history options", "--stats" in complete("flashctl", "history", "--st"),
              complete("flashctl", "history", "--st"))
    tap.check("completion: results after history --result",
              complete("flashctl", "history", "--result", "int") == ["interrupted"],
              complete("flashctl", "history", "--result", "int"))
    tap.check("completion: platforms after --platform",
              complete("flashctl", "check", "x.bin", "--platform", "bo") == ["boron"])
    path = os.path.join(SRC, "client", "examples", "flashd_client.py")
    try:  # in memory: nothing is written into the source tree
        compile(open(path).read(), path, "exec")
        ok = True
    except SyntaxError as e:
        ok = e
    tap.check("the example client compiles", ok is True, ok)
    tap.done()


main()

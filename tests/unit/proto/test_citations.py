#!/usr/bin/env python3
"""The device knowledge is cited inside the repository (issue 12).

1. No tracked file outside docs/ cites a section ("§") of a document, names the
   old outside reference (docs/device, docs/testing/umockdev.md,
   ../shared/reference) or points at any file under ../shared except the
   shared fixture directory ("../shared/fixtures"), a data location that stays
   the first choice when present (naming the directory itself is fine: the
   fresh-clone check proves it absent).
2. Every pointer "docs/.../FILE.md#anchor" anywhere in the tree, and every
   relative markdown link inside docs/, names a file that exists and, when it
   has one, a heading of that file (GitHub's anchor rules).

usage: test_citations.py SOURCE_ROOT
"""
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                       os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
SELF = os.path.relpath(os.path.abspath(__file__), ROOT)

FORBIDDEN = [
    (re.compile(r"§|\\\(sc|\\\[sc\]"), "a section citation (§, or roff's \\(sc)"),
    (re.compile(r"particle\\?-device\\?-facts"), "the outside facts reference"),
    (re.compile(r"test\\?-bench\.md"), "the outside test-bench notes"),
    (re.compile(r"\.\./shared/(?!fixtures)"), "a path into ../shared other than the fixtures"),
]
POINTER = re.compile(r"(?<![\w./-])(docs/[\w./-]+?\.md)(?:#([\w-]+))?")
MD_LINK = re.compile(r"\]\(([^)\s]+?\.md)(?:#([\w-]+))?\)")


def tracked_files():
    try:
        out = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], capture_output=True,
                             check=True).stdout.decode()
        files = [f for f in out.split("\0") if f]
        if files:
            return files
    except (OSError, subprocess.CalledProcessError):
        pass
    files = []  # not a git checkout (a release tarball): walk the source tree
    for top, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith((".", "build")) and d != "subprojects"]
        files += [os.path.relpath(os.path.join(top, n), ROOT) for n in names]
    return files


def read(rel):
    try:
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            return f.read()
    except (UnicodeDecodeError, OSError):
        return None


def slug(heading):
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


ANCHORS = {}


def anchors(rel):
    if rel not in ANCHORS:
        text = read(rel) or ""
        seen, out = {}, set()
        fence = False
        for line in text.splitlines():
            if line.startswith("```"):
                fence = not fence
            m = None if fence else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
            if m:
                a = slug(m.group(1))
                n = seen.get(a, 0)
                seen[a] = n + 1
                out.add(a if n == 0 else "%s-%d" % (a, n))
        ANCHORS[rel] = out
    return ANCHORS[rel]


def line_of(text, pos):
    return text.count("\n", 0, pos) + 1


def main():
    files = tracked_files()
    texts = {rel: read(rel) for rel in files}
    checks = []

    bad = []
    for rel, text in sorted(texts.items()):
        if text is None or rel == SELF or rel.startswith("docs/"):
            continue
        for rx, what in FORBIDDEN:
            for m in rx.finditer(text):
                bad.append("%s:%d: %s" % (rel, line_of(text, m.start()), what))
    checks.append(("no citation of a document outside the repository", bad))

    bad, seen = [], 0
    for rel, text in sorted(texts.items()):
        if text is None or rel == SELF:
            continue
        found = [(m.start(), m.group(1), m.group(2)) for m in POINTER.finditer(text)]
        if rel.startswith("docs/") and rel.endswith(".md"):
            base = os.path.dirname(rel)
            for m in MD_LINK.finditer(text):
                if re.match(r"[a-z]+:", m.group(1)):
                    continue
                target = os.path.normpath(os.path.join(base, m.group(1)))
                found.append((m.start(), target, m.group(2)))
        for pos, target, anchor in found:
            seen += 1
            where = "%s:%d" % (rel, line_of(text, pos))
            if not os.path.isfile(os.path.join(ROOT, target)):
                bad.append("%s: %s does not exist" % (where, target))
            elif anchor and anchor not in anchors(target):
                bad.append("%s: %s has no heading #%s" % (where, target, anchor))
    if seen == 0:
        bad.append("no pointer into docs/ found at all: the check would prove nothing")
    checks.append(("every docs/ pointer (%d) names an existing file and heading" % seen, bad))

    print("TAP version 13")
    print("1..%d" % len(checks))
    failed = 0
    for i, (name, problems) in enumerate(checks, 1):
        if problems:
            failed += 1
            print("not ok %d - %s" % (i, name))
            for p in problems[:200]:
                print("# " + p)
            if len(problems) > 200:
                print("# ... and %d more" % (len(problems) - 200))
        else:
            print("ok %d - %s" % (i, name))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Regenerates (or with --check, verifies) the README's error catalogue table.

    tests/unit/proto/update-readme-errors.py [--check] FLASHCTL README.md

The section under "## Error catalogue" (up to the next "## " heading) is one
intro line and the table `flashctl errors --markdown` prints from
proto/errors.def.  --check exits 1 and shows a diff when they differ.
"""
import difflib
import subprocess
import sys

HEADING = "## Error catalogue"
INTRO = ("Generated from `proto/errors.def` by `flashctl errors --markdown`; regenerate with\n"
         "`tests/unit/proto/update-readme-errors.py build/client/flashctl README.md`.\n")


def section(flashctl):
    table = subprocess.run([flashctl, "errors", "--markdown"], check=True,
                           capture_output=True, text=True).stdout
    return f"{HEADING}\n\n{INTRO}\n{table}\n"


def split(readme):
    start = readme.find(HEADING + "\n")
    if start < 0:
        sys.exit(f"README has no '{HEADING}' heading")
    end = readme.find("\n## ", start + len(HEADING))
    end = len(readme) if end < 0 else end + 1
    return readme[:start], readme[start:end], readme[end:]


def main():
    args = sys.argv[1:]
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    if len(args) != 2:
        sys.exit(__doc__)
    flashctl, path = args
    with open(path) as f:
        readme = f.read()
    before, current, after = split(readme)
    wanted = section(flashctl)
    if current == wanted:
        return 0
    if check:
        sys.stdout.writelines(difflib.unified_diff(
            current.splitlines(True), wanted.splitlines(True), "README.md", "flashctl errors"))
        print("README's error catalogue is stale: run " + sys.argv[0] + " FLASHCTL README.md")
        return 1
    with open(path, "w") as f:
        f.write(before + wanted + after)
    return 0


if __name__ == "__main__":
    sys.exit(main())

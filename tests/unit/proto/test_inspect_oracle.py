#!/usr/bin/env python3
"""flashctl inspect --json against Particle's own parser, on every fixture.

Runs `flashctl inspect --json` once over every file under
$FLASHD_FIXTURES/modules and checks each result field by field against
oracle.jsonl (binary-version-reader 3.1.3).  TAP output.

Where flashd deliberately differs from the oracle:

* not-modules/: the oracle scans up to 8 KiB for anything that looks like a
  prefix and reports what it found there (prefixOffset 6088, 6800, 3048, 360
  and so on, none at a place a device looks).  flashd only looks where
  devices look (docs/device/module-format.md#where-the-prefix-is) and must call these files
  "not a module" (image-not-a-module).  Only that verdict is compared.
* not-modules/boron-tinker-corrupt.bin is a real Boron Tinker with one byte
  flipped: its prefix sits at offset 0 where a Boron looks, size and addresses
  agree, only the CRC fails.  The right verdict is image-corrupt (the device
  would reject it with "integrity" -1330, docs/device/validation.md), not "not a module".  Its
  fields are compared in full, as for a valid module, plus the CRC values.
* Product id/version: the oracle reports -1/-1 when the suffix is 36 bytes
  (no product data); flashd reports null, since there are no such bytes.
* Empty dependencies: the oracle reports function/index/version 0/0/0;
  flashd reports null for that dependency.
"""
import json
import os
import subprocess
import sys

FIXTURES = os.environ.get("FLASHD_FIXTURES", "")
MODULES = os.path.join(FIXTURES, "modules")

# Verdicts flashd must give on the files the oracle parses by scanning.
NOT_MODULE_VERDICT = {
    "not-modules/km4_image2_all.bin": "image-not-a-module",
    "not-modules/cc3000-patch-programmer.bin": "image-not-a-module",
    "not-modules/cc3000-patch-programmer_1_14.bin": "image-not-a-module",
    "not-modules/deep_update_2014_06.bin": "image-not-a-module",
    "not-modules/ota-flag-a5.bin": "image-not-a-module",
    "not-modules/boron-tinker-corrupt.bin": "image-corrupt",
}


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def check(self, ok, name, diag=None):
        self.n += 1
        if not ok:
            self.failed += 1
        print(f"{'ok' if ok else 'not ok'} {self.n} - {name}")
        if not ok and diag:
            for line in str(diag).splitlines():
                print(f"# {line}")

    def done(self):
        print(f"1..{self.n}")
        return 1 if self.failed else 0


def dep(oracle_prefix, which):
    key = "depModule" if which == 1 else "dep2Module"
    f = oracle_prefix[key + "Function"]
    if f == 0:
        return None
    return {"function_id": f, "index": oracle_prefix[key + "Index"],
            "version": oracle_prefix[key + "Version"]}


def product(value):
    return None if value == -1 else value


def expected_module(o):
    """The fields of an oracle entry, in flashd's names and types."""
    p, s, c, d = o["prefixInfo"], o["suffixInfo"], o["crc"], o["derived"]
    return {
        "platform_id": p["platformID"],
        "function_id": p["moduleFunction"],
        "index": p["moduleIndex"],
        "version": p["moduleVersion"],
        "start": int(p["moduleStartAddy"], 16),
        "end": int(p["moduleEndAddy"], 16),
        "prefix_offset": p["prefixOffset"],
        "mcu_target": p["reserved"],
        "flags": p["moduleFlags"],
        "dep1": dep(p, 1),
        "dep2": dep(p, 2),
        "suffix_size": s["suffixSize"],
        "product_id": product(s["productId"]),
        "product_version": product(s["productVersion"]),
        "sha256_stored": s["fwUniqueId"],
        "sha256_computed": d["sha256Calc"],
        "sha256_ok": d["sha256Ok"],
        "crc_ok": c["ok"],
        "crc_stored": int(c["storedCrc"], 16),
        "crc_computed": int(c["actualCrc"], 16),
        "size": o["size"],
    }


def got_dep(d):
    if d is None:
        return None
    return {"function_id": d["function_id"], "index": d["index"], "version": d["version"]}


def actual_module(m):
    return {
        "platform_id": m["platform_id"],
        "function_id": m["function_id"],
        "index": m["index"],
        "version": m["version"],
        "start": m["start"],
        "end": m["end"],
        "prefix_offset": m["prefix_offset"],
        "mcu_target": m["mcu_target"],
        "flags": m["flags"],
        "dep1": got_dep(m["dependencies"][0]),
        "dep2": got_dep(m["dependencies"][1]),
        "suffix_size": m["suffix_size"],
        "product_id": m["product_id"],
        "product_version": m["product_version"],
        "sha256_stored": m["sha256"].get("stored"),
        "sha256_computed": m["sha256"].get("computed"),
        "sha256_ok": m["sha256"]["verdict"] == "ok",
        "crc_ok": m["crc"]["ok"],
        "crc_stored": m["crc"]["stored"],
        "crc_computed": m["crc"]["computed"],
        "size": m["size"],
    }


def compare(tap, name, want, got):
    for key in want:
        tap.check(want[key] == got.get(key), f"{name}: {key}",
                  f"oracle {want[key]!r}, flashd {got.get(key)!r}")


def main():
    if len(sys.argv) != 2 or not os.path.isdir(MODULES):
        print("1..0 # SKIP usage: test_inspect_oracle.py FLASHCTL (with FLASHD_FIXTURES set)")
        return 0
    if not os.path.exists(os.path.join(MODULES, "oracle.jsonl")):
        # The set scripts/fetch-fixtures fetches has no oracle: it lives with the full set.
        print(f"1..0 # SKIP needs the full fixture set (oracle.jsonl and all its files);"
              f" {MODULES} has no oracle.jsonl")
        return 0
    flashctl = os.path.abspath(sys.argv[1])
    oracle = {}
    with open(os.path.join(MODULES, "oracle.jsonl")) as f:
        for line in f:
            o = json.loads(line)
            oracle[o["file"]] = o
    files = sorted(os.path.relpath(os.path.join(d, n), MODULES)
                   for d, _, names in os.walk(MODULES) for n in names
                   if n.endswith(".bin"))

    tap = Tap()
    tap.check(set(files) == set(oracle), "every fixture has an oracle entry and vice versa",
              f"only on disk: {set(files) - set(oracle)}; only in oracle: {set(oracle) - set(files)}")

    proc = subprocess.run([flashctl, "inspect", "--json"] + files, cwd=MODULES,
                          capture_output=True, text=True, timeout=120)
    tap.check(proc.returncode == 3, "exit status is 3 (worst: unusable image)",
              f"status {proc.returncode}, stderr {proc.stderr}")
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    tap.check(len(results) == len(files), "one JSON object per file",
              f"{len(results)} objects for {len(files)} files")

    for r in results:
        name = r["file"]
        o = oracle.get(name)
        if o is None:
            continue
        verdict = NOT_MODULE_VERDICT.get(name)
        if verdict:
            tap.check(not r["valid"] and r.get("error", {}).get("code") == verdict,
                      f"{name}: flashd says {verdict}", json.dumps(r.get("error")))
            tap.check(r.get("error", {}).get("detail", {}).get("file") == name,
                      f"{name}: the error names the file", json.dumps(r.get("error")))
            if verdict != "image-corrupt":
                continue
        else:
            tap.check(r["valid"] and not r.get("error"), f"{name}: valid module",
                      json.dumps(r.get("error")))
        tap.check(r.get("sha256") == o["sha256"] and r.get("size") == o["size"],
                  f"{name}: file SHA-256 and size")
        if len(r["modules"]) != 1:
            tap.check(False, f"{name}: one module", f"{len(r['modules'])} modules")
            continue
        m = r["modules"][0]
        compare(tap, name, expected_module(o), actual_module(m))
        # SHA-256 mismatch is a warning, never an error (docs/device/module-format.md#suffix-and-checksums).
        if not o["derived"]["sha256Ok"] and verdict is None:
            tap.check(any("SHA-256" in w for w in r["warnings"]),
                      f"{name}: SHA-256 mismatch reported as a warning", r["warnings"])
        if "decompressed" in o:
            inner = m.get("inner")
            tap.check(inner is not None, f"{name}: compressed module has an inner module")
            if inner is not None:
                dec = dict(o["decompressed"])
                compare(tap, name + " (inner)", expected_module(dec), actual_module(inner))
                tap.check(m["compression"]["inflated_size"] == dec["size"],
                          f"{name}: declared inflated size", m["compression"])
    check_schema(tap, results)
    check_human(tap, flashctl)
    return tap.done()


MODULE_TYPES = {
    "position": int, "offset": int, "size": int, "description": str, "platform_id": int,
    "function": str, "function_id": int, "index": int, "version": int, "start": int,
    "end": int, "prefix_offset": int, "prefix_rule": str, "mcu_target": int, "flags": int,
    "flag_names": list, "dependencies": list, "crc": dict, "sha256": dict, "slots": list,
    "prefix_extensions": list, "suffix_extensions": list,
}


def check_schema(tap, results):
    """proto/IMAGE.md: numbers for ids, versions and addresses; every field present."""
    bad = []
    for r in results:
        for key, typ in (("type", str), ("file", str), ("valid", bool), ("modules", list),
                         ("warnings", list)):
            if not isinstance(r.get(key), typ):
                bad.append(f"{r.get('file')}: {key}")
        for m in r["modules"]:
            for key, typ in MODULE_TYPES.items():
                if not isinstance(m.get(key), typ) or isinstance(m.get(key), bool) != (typ is bool):
                    bad.append(f"{r['file']}: {key}={m.get(key)!r}")
            if len(m["dependencies"]) != 2:
                bad.append(f"{r['file']}: dependencies")
            for key in ("platform", "release", "suffix_size", "product_id", "product_version",
                        "dynamic_location", "name", "compression", "inner"):
                if key not in m:
                    bad.append(f"{r['file']}: missing {key}")
    tap.check(not bad, "every JSON object follows the documented schema", "\n".join(bad[:20]))
    valid_with_slot = [r for r in results if r["valid"] and r["modules"][0]["slots"]]
    tap.check(len(valid_with_slot) == sum(1 for r in results if r["valid"]),
              "every valid fixture lands in a slot of its platform",
              [r["file"] for r in results if r["valid"] and not r["modules"][0]["slots"]])


def check_human(tap, flashctl):
    def run(*args):
        return subprocess.run([flashctl, "inspect", *args], cwd=MODULES, capture_output=True,
                              text=True, timeout=60)

    p = run("p2/tinker-5.0.0-p2.bin")
    tap.check(p.returncode == 0 and "P2 / Photon 2 application (user part 1), v6" in p.stdout
              and "Device OS 5.0.0 or later (system part 1 >= 5002)" in p.stdout
              and "product    id 32, version 4" in p.stdout and "user part" in p.stdout,
              "human output says what the file is, what it needs and where it goes", p.stdout)
    p = run("tracker/tracker-tinker@1.5.4-rc.1.bin")
    tap.check("Device OS 3.0 and earlier layout" in p.stdout and "compat" in p.stdout,
              "a Gen 3 user part names the layouts it fits", p.stdout)
    p = run("not-modules/ota-flag-a5.bin")
    tap.check(p.returncode == 3 and "error [image-not-a-module]" in p.stderr
              and "hint:" in p.stderr and "ota-flag-a5.bin" in p.stderr,
              "a non-module is an error with a hint naming the file", p.stderr)
    p = run(".")
    tap.check(p.returncode == 3 and "[file-unreadable]" in p.stderr and "directory" in p.stderr,
              "a directory is file-unreadable", p.stderr)
    p = subprocess.run([flashctl, "--json", "inspect", "photon/photon_tinker.bin"], cwd=MODULES,
                       capture_output=True, text=True, timeout=60)
    tap.check(p.returncode == 0 and json.loads(p.stdout)["valid"],
              "the global --json option is honoured", p.stdout)
    p = run()
    tap.check(p.returncode == 2, "inspect without a file is a usage error", p.stderr)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Seed corpora for the libFuzzer harnesses of tests/fuzz, written to
OUT/<harness>/ (nothing is written into the source tree or the fixtures):

  fuzz_image    every fixture module
  fuzz_wire     the requests of proto/PROTOCOL.md, one per file and all together
  fuzz_console  the device side of every listening-mode transcript
                (tests/sim/cdc/transcripts), for the console (selector 4..127),
                the YMODEM sender (128+) and the pure parsers (0), one line each
  fuzz_memmap   every DfuSe memory-map string in the sources, with ranges at
                the map's start, its end and across the top of the address space
  fuzz_dfuse    well-behaved sessions (open, upload, erase, download, leave), and
                the first with a long dfuDNBUSY on open or after a command, waited
                out or timed out
  fuzz_ctrl     well-behaved control-request exchanges for every typed request
                (protobuf replies as Device OS encodes them), a firmware update,
                and the same with BUSY, PENDING and error results on the way
  and tests/fuzz/regressions/<harness>/*: inputs that once failed

usage: seeds.py SOURCE_ROOT FIXTURES OUT
"""
import glob
import os
import re
import shutil
import struct
import sys

SRC, FIXTURES, OUT = sys.argv[1:4]


def put(harness, name, data):
    d = os.path.join(OUT, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, re.sub(r"[^A-Za-z0-9_.-]", "_", name)), "wb") as f:
        f.write(data)


def unescape(s):
    """The C escapes of the transcripts: \\r \\n \\t \\\\ \\" \\xNN \\0."""
    out, i = bytearray(), 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            if n == "x":
                out.append(int(s[i + 2:i + 4], 16))
                i += 4
                continue
            out += {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0"}.get(n, n.encode())
            i += 2
            continue
        out += c.encode()
        i += 1
    return bytes(out)


def image():
    for path in glob.glob(os.path.join(FIXTURES, "modules", "**", "*.bin"), recursive=True):
        put("fuzz_image", os.path.basename(os.path.dirname(path)) + "-" + os.path.basename(path),
            open(path, "rb").read())


def wire():
    lines = []
    for doc in ("proto/PROTOCOL.md", "client/flashd-protocol.7"):
        text = open(os.path.join(SRC, doc), encoding="utf-8").read().replace("\\-", "-")
        lines += [m.group(1) for m in re.finditer(r"^(?:→|\\->) (\{.*\})\s*$", text, re.M)]
    lines += [
        '{"request":"flash","id":3,"images":[{"name":"a.bin","fd":0},{"name":"b.bin","fd":1}],'
        '"target":{"device":"e00fce68aabbccddeeff0011"},"all":true,"options":{"force":true,'
        '"verify":true,"dry-run":false,"detach":true,"wait":12.5,"cancel_on_disconnect":true}}',
        '{"request":"flash","id":"x","images":[{"fd":0}],"target":{"platform":"argon"},'
        '"options":{"wait":true}}',
        '{"request":"flash","id":4,"images":[{"fd":0}],"target":{"usb":"1-1.2"}}',
        '{"request":"flash","id":5,"images":[{"fd":0}],"target":{"port":"/dev/ttyACM0"}}',
        '{"request":"subscribe","id":7,"job":"0b8a1f7e-3c2d-4e5f-9a1b-2c3d4e5f6a7b"}',
        '{"request":"device-info","id":8,"device":"1-1.2","probe":true}',
        '{"type":"request","request":"cancel","id":9,"job":"0b8a1f7e"}',
    ]
    for i, line in enumerate(sorted(set(lines))):
        put("fuzz_wire", "protocol-%02d" % i, b"\x02" + line.encode() + b"\n")
    put("fuzz_wire", "protocol-all", b"\x08" + "\r\n \n".join(lines).encode() + b"\n")


def console():
    for path in sorted(glob.glob(os.path.join(SRC, "tests/sim/cdc/transcripts/*.txt"))):
        dev = bytearray()
        for line in open(path, encoding="utf-8"):
            m = re.match(r'^dev "(.*)"\s*$', line)
            if m:
                chunk = unescape(m.group(1))
                dev += chunk
                put("fuzz_console", "parse-%s-%d" % (os.path.basename(path), len(dev)),
                    b"\x00" + chunk)
            m = re.match(r"^dev-hex ((?:[0-9a-fA-F]{2} ?)+)$", line)
            if m:
                dev += bytes.fromhex(m.group(1).replace(" ", ""))
        if not dev:
            continue
        name = os.path.basename(path)
        for sel in (0x0f, 0x07, 0x04):
            put("fuzz_console", "console-%02x-%s" % (sel, name), bytes([sel]) + bytes(dev))
        for sel in (0x80, 0x81, 0x82, 0x84):
            put("fuzz_console", "ymodem-%02x-%s" % (sel, name), bytes([sel]) + bytes(dev))


def memmap():
    maps = set()
    for pattern in ("tests/sim/*.c", "tests/unit/dfu/*.c", "daemon/dfu/*.c", "tests/sim/*.h"):
        for path in glob.glob(os.path.join(SRC, pattern)):
            maps |= set(re.findall(r'"(@[^"\n]*/0x[^"\n]*)"', open(path, encoding="utf-8",
                                                                     errors="replace").read()))
    for i, s in enumerate(sorted(maps)):
        m = re.search(r"/0x([0-9A-Fa-f]+)/", s)
        start = int(m.group(1), 16) if m else 0
        for j, (a, n, attrs) in enumerate([(start, 0x4000, 0x82),
                                           ((start + 0x100) & 0xffffffff, 0x30000, 0x06),
                                           (0xfffff000, 0x2000, 0x02),
                                           ((start - 0x1000) & 0xffffffff, 0x3000, 0x84)]):
            put("fuzz_memmap", "map-%02d-%d" % (i, j), struct.pack("<IIB", a & 0xffffffff, n, attrs)
                + s.encode())
    # A map that reaches the top of the address space, and one that starts at 0.
    top = "@Top   /0xFFFF0000/16*004Kg"
    put("fuzz_memmap", "map-top", struct.pack("<IIB", 0xffff8000, 0x10000, 0x02) + top.encode())
    wrap = "@Wrap   /0x00000000/4*004Kg/0xFFFFC000/4*004Kg"
    put("fuzz_memmap", "map-wrap", struct.pack("<IIB", 0xffffe000, 0x4000, 0x06) + wrap.encode())


def dfuse():
    functional = bytes([9, 0x21, 0x0b, 0xff, 0x00, 0x00, 0x10, 0x1a, 0x01])
    for i, (alts, strings, ops, cancel, addr, length) in enumerate([
            (3, 0, 0x87, 0, 0x000d4000, 0x1000),   # Argon-like: everything, then leave
            (2, 0, 0x07, 0, 0x080a0000, 0x800),    # Photon-like
            (3, 2, 0x82, 0x02, 0x000d4000, 0x3000),  # erase, cancelled
            (1, 0, 0x81, 0, 0x08000000, 0x2000),   # upload then leave
    ]):
        h = bytearray(24)
        h[0] = 9
        h[1] = (alts << 1) | 1
        h[2] = strings
        h[3:12] = functional
        h[12:16] = struct.pack("<I", addr)
        h[16:20] = struct.pack("<I", length)
        h[20] = 0
        h[21] = 0
        h[22] = ops
        h[23] = cancel
        put("fuzz_dfuse", "session-%d" % i, bytes(h) + bytes(600))
        if i == 0:
            first = bytes(h)
        # the same with a raw GETSTATUS saying dfuERROR/errWRITE somewhere in it
        put("fuzz_dfuse", "session-%d-error" % i,
            bytes(h) + bytes(40) + bytes([0x01, 6, 3, 0, 0, 0, 10, 0]) + bytes(200))
    # dfuDNBUSY with bwPollTimeout 10000 ms (time is virtual in the harness): on open
    # (after SET_INTERFACE, a dead host's erase) and after the first SET_ADDRESS (record 7
    # of session 0: SET_INTERFACE, GETSTATUS, five strings); header byte 21 = 2k: time
    # runs out from the k-th timer on (the busy wait's deadline, then timed-out)
    busy = bytes([0x07, 6, 0, 0x10, 0x27, 0, 4, 0])
    h = bytearray(first)
    for late in (0, 2, 6):
        h[21] = late
        put("fuzz_dfuse", "busy-open-%d" % late, bytes(h) + bytes(1) + busy * 4 + bytes(600))
        put("fuzz_dfuse", "busy-command-%d" % late,
            bytes(h) + bytes(8) + busy * 4 + bytes(600))


def pb_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7f
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_field(num, wire, value):
    """One protobuf field: varint (0), length-delimited bytes (2) or fixed32 (5)."""
    if wire == 0:
        return pb_varint(num << 3) + pb_varint(value)
    if wire == 5:
        return pb_varint(num << 3 | 5) + struct.pack("<I", value)
    return pb_varint(num << 3 | 2) + pb_varint(len(value)) + value


def ctrl():
    """fuzz_ctrl records: selector 0 = a service reply (size, result: two le16 each)
    for INIT/CHECK, the payload's bytes for RECV, an OUT transfer's acknowledgement."""
    def svc(size=0, result=0, status=None):
        sel = 0 if status is None else 7 | status << 3
        return bytes([sel]) + struct.pack("<Hh", size, result)

    def exchange(reply=b"", payload=False, result=0):
        r = svc() + (b"\0" if payload else b"") + svc(len(reply), result)
        return r + (b"\0" + reply if reply else b"")

    new_module = (pb_field(1, 0, 4) + pb_field(2, 0, 1) + pb_field(3, 0, 6200) + pb_field(5, 0, 0xf0000)
                  + pb_field(6, 5, 0x1e) + pb_field(7, 5, 0x1e) + pb_field(8, 2, bytes(range(32)))
                  + pb_field(9, 2, pb_field(1, 0, 4) + pb_field(2, 0, 1) + pb_field(3, 0, 6200))
                  + pb_field(11, 0, 0x9000))
    old_module = (pb_field(1, 0, 2) + pb_field(2, 0, 1) + pb_field(3, 0, 1101) + pb_field(4, 0, 0xc000)
                  + pb_field(5, 0, 4) + pb_field(6, 2, pb_field(1, 0, 2) + pb_field(3, 0, 1100)))
    replies = {
        0: pb_field(1, 2, b"e00fce68ffffffffffff0001"),   # device id
        1: pb_field(1, 2, b"P046AF1234567890"),           # serial number
        2: pb_field(1, 2, b"6.2.0"),                      # system version
        3: pb_field(1, 0, 1),                             # device mode: listening
        4: pb_field(2, 2, new_module) * 3,                # module info, 5.6.0 and later
        5: b"", 6: b"", 7: b"", 8: b"", 9: b"",
    }
    for op, reply in replies.items():
        put("fuzz_ctrl", "op-%d" % op, bytes([op, 0, 0, 0]) + exchange(reply))
        put("fuzz_ctrl", "op-%d-busy-pending" % op, bytes([op, 0, 0, 0]) + svc(status=3)
            + svc(status=3) + svc() + svc(status=2) + svc(len(reply)) + (b"\0" + reply if reply else b""))
        put("fuzz_ctrl", "op-%d-not-supported" % op, bytes([op, 0, 0, 0]) + exchange(result=-120))
    put("fuzz_ctrl", "op-4-deprecated", bytes([4, 0, 0, 0]) + exchange(pb_field(1, 2, old_module) * 4))
    # the legacy 'P' version request after NOT_SUPPORTED (Device OS before control requests)
    put("fuzz_ctrl", "op-2-legacy", bytes([2, 0, 0, 0x80]) + exchange(result=-120) + b"\x01\x06" + b"5.9.0\0")
    # firmware updates of 3000 and 10000 bytes in 1000-byte chunks
    for size in (3000, 10000):
        s = struct.pack("<H", size)
        fw = bytes([10]) + s + b"\0" + exchange(pb_field(1, 0, 1000), payload=True)
        for _ in range(size // 1000):
            fw += exchange(payload=True)
        put("fuzz_ctrl", "fw-%d" % size, fw + exchange(payload=True))
        put("fuzz_ctrl", "fw-%d-integrity" % size, fw + exchange(payload=True, result=-1100))
    put("fuzz_ctrl", "raw-request", bytes([11, 30, 0, 0]) + exchange(b"x" * 5000, payload=True))


def regressions():
    for path in glob.glob(os.path.join(SRC, "tests/fuzz/regressions/*/*")):
        harness = os.path.basename(os.path.dirname(path))
        os.makedirs(os.path.join(OUT, harness), exist_ok=True)
        shutil.copy(path, os.path.join(OUT, harness, "regression-" + os.path.basename(path)))


image()
wire()
console()
memmap()
dfuse()
ctrl()
regressions()
for h in sorted(os.listdir(OUT)):
    print("%s: %d seeds" % (h, len(os.listdir(os.path.join(OUT, h)))))

#!/usr/bin/env python3
"""In-band uploads (upload-begin / upload-chunk, proto/PROTOCOL.md "Uploads") against
the real flashd, no devices needed: a verified upload, a SHA-256 mismatch, an upload
over the limit refused before any byte, malformed chunks (bad base64, over 64 KiB,
out of order, past the end, after completion), too many uploads per connection, per
uid and in bytes, abandoned uploads and closed connections freeing theirs, flash
requests naming uploads; the daemon answers each with its own error and survives.

usage: test_upload.py FLASHD
"""
import base64
import hashlib
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flashd_harness import Daemon, Tap  # noqa: E402

CHUNK = 65536
# Long enough that a chunk sent a moment after the last one is always in time, even on a
# loaded machine; the test waits for the abandonment itself (the daemon's log), not a time.
IDLE_MS = 3000
# A small per-uid byte budget, so that freeing is observable.
CONFIG = """[timeouts]
upload_idle_ms = %d
[limits]
uploads_per_uid = 12
upload_bytes_per_uid = 1048576
""" % IDLE_MS


def b64(data):
    return base64.b64encode(data).decode()


def begin(c, data, sha=None, name="app.bin", size=None):
    return c.call({"request": "upload-begin", "name": name,
                   "size": len(data) if size is None else size,
                   "sha256": sha or hashlib.sha256(data).hexdigest()})


def chunk(c, upload, offset, data, raw=None):
    return c.call({"request": "upload-chunk", "upload": upload, "offset": offset,
                   "data": raw if raw is not None else b64(data)})


def send_all(c, upload, data):
    last = None
    for off in range(0, len(data), CHUNK):
        last = chunk(c, upload, off, data[off:off + CHUNK])
        if last.get("type") != "reply":
            return last
    return last


def code(msg):
    return msg.get("code") if msg else None


def begin_when_freed(c, data, name, timeout=30.0):
    """upload-begin, asked again while the answer is too-many-uploads: the daemon frees a
    closed connection's uploads when its loop sees the hang-up, which a loaded machine
    delays.  A refused begin changes nothing, so asking again is a wait, not a retry."""
    deadline = time.monotonic() + timeout
    while True:
        r = begin(c, data, name=name)
        if code(r) != "too-many-uploads" or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def wait_log(d, text, timeout=30.0):
    """Waits until the daemon's log holds text; returns whether it did."""
    deadline = time.monotonic() + timeout
    while text not in d.log_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def reason(msg):
    return (msg or {}).get("detail", {}).get("reason")


def main():
    flashd = sys.argv[1]
    tap = Tap()
    d = Daemon(flashd, config=CONFIG)
    rnd = random.Random(17)
    try:
        c = d.client()
        hello = c.call({"request": "hello"})
        lim = hello.get("limits", {})
        tap.check("hello names the upload capability and its limits",
                  "upload" in hello.get("capabilities", []) and lim.get("upload_chunk_bytes") == CHUNK
                  and lim.get("upload_bytes") == 16 * 1024 * 1024
                  and lim.get("upload_message_bytes", 0) > 4 * CHUNK // 3, hello)

        # A verified upload: chunks of 64 KiB, replies with the running count.
        data = bytes(rnd.getrandbits(8) for _ in range(150000))
        r = begin(c, data)
        up = r.get("upload")
        tap.check("upload-begin answers with an id, the chunk size and the idle timeout",
                  r.get("type") == "reply" and up and r.get("chunk_bytes") == CHUNK
                  and r.get("idle_timeout_s") == IDLE_MS / 1000, r)
        replies = [chunk(c, up, off, data[off:off + CHUNK]) for off in range(0, len(data), CHUNK)]
        tap.check("each chunk is acknowledged with the bytes received so far",
                  [x.get("received") for x in replies] == [65536, 131072, 150000]
                  and [x.get("complete") for x in replies] == [False, False, True], replies)
        tap.check("the last chunk's reply carries the verified SHA-256",
                  replies[-1].get("sha256") == hashlib.sha256(data).hexdigest(), replies[-1])

        # Chunks after completion.
        r = chunk(c, up, len(data), b"x")
        tap.check("a chunk after the last byte: upload-invalid already-complete",
                  code(r) == "upload-invalid" and reason(r) == "already-complete", r)

        # A flash request naming the upload, with no device attached: device-not-found,
        # and the upload stays for the next try.
        r = c.call({"request": "flash", "images": [{"name": "app.bin", "upload": up}]})
        r2 = c.call({"request": "flash", "images": [{"name": "app.bin", "upload": up}]})
        tap.check("a flash request that fails keeps its upload (device-not-found twice)",
                  code(r) == "device-not-found" and code(r2) == "device-not-found", [r, r2])
        r = c.call({"request": "flash", "images": [{"name": "a.bin", "upload": up, "fd": 0}]})
        tap.check("an image with both fd and upload: bad-request",
                  code(r) == "bad-request" and r["detail"].get("field") == "upload", r)
        r = c.call({"request": "flash", "images": [{"name": "a.bin", "upload": "upload-999"}]})
        tap.check("a flash request naming an unknown upload: upload-not-found",
                  code(r) == "upload-not-found", r)

        # SHA-256 mismatch: its own error, and the upload is freed.
        other = bytes(rnd.getrandbits(8) for _ in range(70000))
        r = begin(c, other, sha=hashlib.sha256(b"something else").hexdigest(), name="bad.bin")
        bad = r.get("upload")
        r = send_all(c, bad, other)
        det = (r or {}).get("detail", {})
        tap.check("bytes that do not match the announced SHA-256: upload-checksum-mismatch",
                  code(r) == "upload-checksum-mismatch"
                  and det.get("expected_sha256") == hashlib.sha256(b"something else").hexdigest()
                  and det.get("computed_sha256") == hashlib.sha256(other).hexdigest()
                  and det.get("size") == len(other) and det.get("file") == "bad.bin", r)
        r = chunk(c, bad, 0, b"x")
        tap.check("a mismatched upload is gone: upload-not-found", code(r) == "upload-not-found", r)

        # Over the limit: refused at upload-begin, before any byte is sent.
        t0 = time.monotonic()
        r = begin(c, b"", sha="0" * 64, size=16 * 1024 * 1024 + 1, name="huge.bin")
        tap.check("an upload over 16 MiB: upload-too-large at upload-begin, with size and limit",
                  code(r) == "upload-too-large" and r["detail"].get("size") == 16 * 1024 * 1024 + 1
                  and r["detail"].get("limit") == 16 * 1024 * 1024 and "upload" not in r, r)
        print("# upload-too-large answered in %.1f ms, nothing sent" % ((time.monotonic() - t0) * 1000))
        r = begin(c, b"", sha="0" * 64, size=1 << 60)
        tap.check("an absurd size: upload-too-large", code(r) == "upload-too-large", r)

        # Malformed chunks, each with its own reason; the upload survives them.
        small = bytes(range(256)) * 4
        up2 = begin(c, small, name="small.bin")["upload"]
        cases = [
            ("bad base64 (not a multiple of 4)", chunk(c, up2, 0, None, raw="QUJD" + "QQ"), "bad-base64"),
            ("bad base64 (a character outside the alphabet)", chunk(c, up2, 0, None, raw="QU*D"), "bad-base64"),
            ("bad base64 (padding in the middle)", chunk(c, up2, 0, None, raw="QQ==QUJD"), "bad-base64"),
            ("bad base64 (non-canonical padding bits)", chunk(c, up2, 0, None, raw="QR=="), "bad-base64"),
            ("an empty chunk", chunk(c, up2, 0, None, raw=""), "empty-chunk"),
            ("a chunk of 64 KiB + 1", chunk(c, up2, 0, bytes(CHUNK + 1)), "chunk-too-large"),
            ("a chunk whose base64 is longer than any 64 KiB chunk", chunk(c, up2, 0, None, raw="A" * 90000), "chunk-too-large"),
            ("a chunk out of order", chunk(c, up2, 512, small[512:]), "wrong-offset"),
            ("a chunk past the announced size", chunk(c, up2, 0, small + b"extra"), "past-end"),
        ]
        for name, r, why in cases:
            tap.check("%s: upload-invalid %s" % (name, why),
                      code(r) == "upload-invalid" and reason(r) == why, r)
        r = chunk(c, up2, 0, small[:100])
        r = c.call({"request": "flash", "images": [{"name": "small.bin", "upload": up2}]})
        tap.check("a flash request naming an incomplete upload: upload-invalid incomplete",
                  code(r) == "upload-invalid" and reason(r) == "incomplete"
                  and r["detail"].get("offset") == 100, r)
        wrong = r["detail"].get("expected_offset") if r else None
        r = chunk(c, up2, 100, small[100:])
        tap.check("after the refused chunks the upload still completes",
                  r.get("complete") is True and r.get("sha256") == hashlib.sha256(small).hexdigest()
                  and wrong == 100, r)
        for req, field in [({"request": "upload-begin", "sha256": "0" * 64}, "size"),
                           ({"request": "upload-begin", "size": 0, "sha256": "0" * 64}, "size"),
                           ({"request": "upload-begin", "size": 5, "sha256": "xyz"}, "sha256"),
                           ({"request": "upload-begin", "size": 5, "sha256": "g" * 64}, "sha256"),
                           ({"request": "upload-chunk", "offset": 0, "data": "QQ=="}, "upload"),
                           ({"request": "upload-chunk", "upload": up2, "offset": -1, "data": "QQ=="}, "offset"),
                           ({"request": "upload-chunk", "upload": up2, "offset": 0, "data": 5}, "data")]:
            r = c.call(req)
            tap.check("%s without a valid %s: bad-request naming it" % (req["request"], field),
                      code(r) == "bad-request" and r["detail"].get("field") == field, r)

        # Line limits: an upload chunk may be longer than a request, nothing else may.
        r = c.call({"request": "list-devices", "pad": "x" * 80000})
        tap.check("another request over 64 KiB: bad-request with the 64 KiB limit, connection open",
                  code(r) == "bad-request" and r["detail"].get("limit") == 65536
                  and c.call({"request": "hello"}).get("type") == "reply", r)
        c.close()

        # Too many uploads: per connection (8), per uid (12), bytes per uid (1 MiB).
        a, b = d.client(), d.client()
        one = b"\x01" * 1000
        ra = [begin(a, one) for _ in range(9)]
        tap.check("a 9th upload open on one connection: too-many-uploads (connection, limit 8)",
                  all(x.get("type") == "reply" for x in ra[:8]) and code(ra[8]) == "too-many-uploads"
                  and ra[8]["detail"].get("kind") == "connection" and ra[8]["detail"].get("limit") == 8,
                  ra[8])
        rb = [begin(b, one) for _ in range(5)]
        tap.check("a 13th upload of one uid over two connections: too-many-uploads (uid, limit 12)",
                  all(x.get("type") == "reply" for x in rb[:4]) and code(rb[4]) == "too-many-uploads"
                  and rb[4]["detail"].get("kind") == "uid" and rb[4]["detail"].get("limit") == 12, rb[4])
        a.close()
        b.close()

        c = d.client()
        big = bytes(600 * 1024)
        r1 = begin_when_freed(c, big, "first.bin")  # the daemon reaps the closed connections
        r2 = begin(c, big, name="second.bin")
        tap.check("uploads that would hold more than the uid's bytes: too-many-uploads (uid-bytes)",
                  r1.get("type") == "reply" and code(r2) == "too-many-uploads"
                  and r2["detail"].get("kind") == "uid-bytes", [r1, r2])
        tap.check("closed connections freed their uploads (12 were open before)", r1.get("type") == "reply", r1)

        # Abandoned: no chunk for upload_idle_ms -> freed, and its bytes count no more.
        chunk(c, r1["upload"], 0, big[:CHUNK])
        time.sleep(0.3)
        t_last = time.monotonic()  # the daemon restarts the idle timer after this
        r = chunk(c, r1["upload"], CHUNK, big[CHUNK:2 * CHUNK])
        tap.check("a chunk within the idle time keeps the upload", r.get("type") == "reply", r)
        freed = wait_log(d, "upload %s (first.bin" % r1["upload"], timeout=IDLE_MS / 1000 + 30)
        tap.check("the daemon frees it (and logs it) no earlier than upload_idle_ms after the last chunk",
                  freed and time.monotonic() - t_last >= IDLE_MS / 1000 * 0.99, d.log_text()[-2000:])
        r = chunk(c, r1["upload"], 2 * CHUNK, big[2 * CHUNK:3 * CHUNK])
        tap.check("an abandoned upload is freed after upload_idle_ms: upload-not-found",
                  code(r) == "upload-not-found" and r["detail"].get("idle_timeout_ms") == IDLE_MS, r)
        r = begin(c, big, name="third.bin")
        tap.check("its bytes no longer count against the uid", r.get("type") == "reply", r)
        tap.check("the daemon logs the abandoned upload", "abandoned" in d.log_text(),
                  d.log_text()[-2000:])

        # Garbage of every kind: named errors, never a crash.
        junk = [{"request": "upload-chunk", "upload": r["upload"], "offset": rnd.randrange(0, 1 << 20),
                 "data": "".join(rnd.choice("AB+/=*\n\u00e9") for _ in range(rnd.randrange(0, 64)))}
                for _ in range(200)]
        codes = set()
        for j in junk:
            m = c.call(j)
            codes.add(code(m) if m else "closed")
        tap.check("200 random chunks get named errors and the daemon lives",
                  codes <= {"upload-invalid", "bad-request", "upload-not-found"} and d.alive(), codes)
        c.close()

        # Framing: lines up to 96 KiB only on a connection that has begun an upload.
        fresh = d.client()
        fresh.send_raw(b'{"request":"upload-chunk","id":1,"data":"' + b"A" * (70 * 1024))
        r = fresh.read()
        tap.check("a 70 KiB line on a connection without uploads: bad-request (limit 65536), closed",
                  code(r) == "bad-request" and r["detail"].get("limit") == 65536
                  and fresh.read() is None, r)
        fresh.close()
        c = d.client()
        begin(c, b"abc")
        c.send_raw(b'{"request":"upload-chunk","id":1,"data":"' + b"A" * (100 * 1024))
        r = c.read()
        tap.check("over 96 KiB on an uploading connection: bad-request (limit 98304), closed",
                  code(r) == "bad-request" and r["detail"].get("limit") == 98304
                  and c.read() is None, r)
        c.close()
    finally:
        rc = d.stop()
        tap.check("flashd stops cleanly", rc == 0, d.log_text()[-3000:])

    # The daemon's memory for firmware (image_memory_bytes) bounds all uploads together.
    d = Daemon(flashd, config="[limits]\nimage_memory_bytes = 100000\n")
    try:
        a, b = d.client(), d.client()
        r1 = begin(a, bytes(60000))
        r2 = begin(b, bytes(60000))
        tap.check("uploads over image_memory_bytes together: too-many-uploads (memory)",
                  r1.get("type") == "reply" and code(r2) == "too-many-uploads"
                  and r2["detail"].get("kind") == "memory" and r2["detail"].get("limit") == 100000,
                  [r1, r2])
        a.close()
        r3 = begin_when_freed(b, bytes(60000), "app.bin")
        tap.check("... and a closed connection's upload no longer counts", r3.get("type") == "reply", r3)
        b.close()
    finally:
        rc = d.stop()
        tap.check("flashd stops cleanly (memory limit)", rc == 0, d.log_text()[-3000:])
    tap.done()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A minimal flashd client in Python 3 (standard library only): flashes firmware
files and shows the job's progress.  It is written from proto/PROTOCOL.md
(flashd-protocol(7)) alone, as an IDE plugin would be.

    flashd_client.py [--socket PATH] [--device KEY] [--dry-run] [--upload] FILE...

The files go to the daemon as open file descriptors; with --upload their bytes
go in-band instead (upload-begin, then base64 chunks of at most 64 KiB), as a
client that cannot pass descriptors (Node.js, a remote shell) has to send them.

Exit status: 0 when the job ends "done", else the error's exit status from the
catalogue (the same as flashctl's), 10 when flashd cannot be reached.
"""
import argparse
import base64
import hashlib
import json
import os
import socket
import sys


def socket_path(arg):
    """The documented search order: --socket, $FLASHD_SOCKET, the system socket,
    then $XDG_RUNTIME_DIR/flashd.sock."""
    if arg:
        return arg
    if os.environ.get("FLASHD_SOCKET"):
        return os.environ["FLASHD_SOCKET"]
    if os.path.exists("/run/flashd/flashd.sock"):
        return "/run/flashd/flashd.sock"
    return os.path.join(os.environ.get("XDG_RUNTIME_DIR", "/run/flashd"), "flashd.sock")


class Connection:
    """Newline-delimited JSON over a Unix stream socket."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""
        self.next_id = 1

    def send(self, request, fds=()):
        request["id"] = self.next_id
        self.next_id += 1
        data = json.dumps(request).encode() + b"\n"
        if fds:
            # The descriptors travel with the first byte of the request line.
            sent = socket.send_fds(self.sock, [data], list(fds))
            self.sock.sendall(data[sent:])
        else:
            self.sock.sendall(data)
        return request["id"]

    def read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("flashd closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, request, fds=(), on_event=None):
        """Sends a request; returns its reply, raises FlashdError on an error."""
        rid = self.send(request, fds)
        while True:
            msg = self.read()
            if msg["type"] == "event":
                if on_event:
                    on_event(msg)
            elif msg.get("id") == rid:
                if msg["type"] == "error":
                    raise FlashdError(msg)
                return msg


class FlashdError(Exception):
    def __init__(self, obj):
        super().__init__(obj["message"])
        self.obj = obj


# Exit statuses per error id, as in the catalogue (flashctl errors --json).
EXIT = {"usage": 2, "bad-request": 2, "job-not-found": 2, "file-unreadable": 3,
        "image-not-a-module": 3, "image-corrupt": 3, "image-truncated": 3,
        "image-unsupported": 3, "wrong-platform": 4, "wrong-slot": 4, "image-too-large": 4,
        "dependency-unmet": 4, "not-flashable-here": 4, "device-protected": 4,
        "outside-memory-map": 4, "layout-unknown": 4, "device-not-found": 5, "ambiguous-target": 5,
        "device-gone": 6, "device-busy": 6, "permission-denied": 6, "not-allowed": 6,
        "device-rejected": 7, "booted-invalid": 7, "dfu-descriptor-invalid": 7,
        "timed-out": 8, "transfer-failed": 8, "cancelled": 9, "interrupted": 9,
        "too-many-jobs": 10, "too-many-clients": 10, "daemon-unreachable": 10, "internal": 1,
        "upload-checksum-mismatch": 3, "upload-too-large": 3, "upload-invalid": 2,
        "upload-not-found": 2, "too-many-uploads": 10}
CHUNK = 64 * 1024  # the largest upload chunk (decoded bytes)
BYTE_STATES = ("erasing", "writing", "verifying")


def show_error(err):
    print("error [%s]: %s" % (err["code"], err["message"]), file=sys.stderr)
    for key, value in sorted(err.get("detail", {}).items()):
        if isinstance(value, int) and ("address" in key or key.endswith(("start", "end"))):
            value = "0x%08x" % value
        print("  %-20s %s" % (key.replace("_", " "), value), file=sys.stderr)
    print("  hint: " + err["hint"], file=sys.stderr)
    return EXIT.get(err["code"], 1)


def show_progress(ev):
    if "note" in ev:
        print("note: %s" % ev.get("message", ev["note"]), flush=True)
    elif ev["total"]:
        eta = ev.get("eta_s")
        print("%-15s %3d%%  %d/%d bytes  %d B/s%s" % (
            ev["state"], ev["percent"], ev["done"], ev["total"], ev.get("rate") or 0,
            "  ETA %.0f s" % eta if eta is not None and ev["done"] < ev["total"] else ""),
            flush=True)
    elif ev["state"] in ("rebooting", "waiting-for-device"):
        limit = " (up to %.0f s)" % ev["timeout_s"] if ev.get("timeout_s") else ""
        print("%-15s waiting for the device%s" % (ev["state"], limit), flush=True)
    else:
        print(ev["state"], flush=True)


def upload(conn, path):
    """Sends a file's bytes in-band; returns the upload id once flashd has verified
    them against the SHA-256 announced first.  The daemon refuses an upload over
    its limit at upload-begin, before any byte is sent."""
    with open(path, "rb") as f:
        data = f.read()
    name = os.path.basename(path)
    begun = conn.call({"request": "upload-begin", "name": name, "size": len(data),
                       "sha256": hashlib.sha256(data).hexdigest()})
    step = min(CHUNK, begun.get("chunk_bytes", CHUNK))
    for offset in range(0, len(data), step):
        reply = conn.call({"request": "upload-chunk", "upload": begun["upload"], "offset": offset,
                           "data": base64.b64encode(data[offset:offset + step]).decode()})
        print("upload %-15s %3d%%  %d/%d bytes" % (name, 100 * reply["received"] // len(data),
                                                 reply["received"], len(data)), flush=True)
    return begun["upload"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket")
    ap.add_argument("--device", help="device key or id (default: the only device)")
    ap.add_argument("--dry-run", action="store_true", help="preflight only")
    ap.add_argument("--upload", action="store_true",
                    help="send the files' bytes in-band instead of passing descriptors")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    try:
        conn = Connection(socket_path(args.socket))
    except OSError as e:
        return show_error({"code": "daemon-unreachable", "message": str(e), "detail": {},
                           "hint": "start flashd or pass --socket PATH"})
    files = [open(f, "rb") for f in args.files]
    try:
        conn.call({"request": "hello", "protocol": 1, "client": "flashd_client.py"})
        # Subscribe first: the job's first event cannot be missed.
        conn.call({"request": "subscribe", "jobs": True})
        if args.upload:
            images = [{"name": os.path.basename(f.name), "upload": upload(conn, f.name)}
                      for f in files]
        else:
            images = [{"name": os.path.basename(f.name), "fd": i} for i, f in enumerate(files)]
        request = {"request": "flash",
                   "images": images,
                   "target": {"device": args.device} if args.device else {},
                   "options": {"dry-run": args.dry_run, "detach": False,
                               "cancel-on-disconnect": True}}
        reply = conn.call(request, fds=[] if args.upload else [f.fileno() for f in files])
    except FlashdError as e:
        return show_error(e.obj)
    finally:
        for f in files:
            f.close()
    job = reply["jobs"][0]
    print("job %s on %s" % (job["id"], job["device"] or "(waiting for a device)"), flush=True)
    while True:
        ev = conn.read()
        if ev.get("type") != "event" or ev.get("job") != job["id"]:
            continue
        if ev["event"] == "job-progress":
            show_progress(ev)
        elif ev["event"] == "job-ended":
            if ev["result"] == "done":
                print("done: %s" % ev["outcome"], flush=True)
                return 0
            return show_error(ev["error"])


if __name__ == "__main__":
    sys.exit(main())

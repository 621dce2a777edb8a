#!/usr/bin/env python3
"""Relay an emulated serial port to a program on pipes.

lrzsz hangs intermittently when it talks to a pty directly (its exit-time
tcflush drops the last ACK, docs/testing/umockdev.md#lrzsz), so it runs on pipes and this
relay copies bytes between the pipes and the tty (e.g. /dev/ttyACM0 inside a
flashd-sim testbed).

    ttyrelay.py [--send-f] [--log FILE] [--drain-ms N] [--timeout S] TTY -- CMD [ARG...]

--send-f    write 'f' first and wait for the listening-mode prompt line, as a
            flasher does (the device never sends 'C' before that, docs/device/ymodem.md#block-reception)
--log FILE  every byte the device sent, raw
--drain-ms  keep reading the device this long after CMD exits (final texts)
Exit status: CMD's, or 124 on --timeout, or 2 on relay errors.
"""
import argparse
import os
import select
import subprocess
import sys
import termios
import time
import tty

PROMPT = b"Waiting for the binary file to be sent ... (press 'a' to abort)\r\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--send-f", action="store_true")
    ap.add_argument("--log")
    ap.add_argument("--drain-ms", type=int, default=1500)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("tty")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        ap.error("missing command")

    deadline = time.monotonic() + a.timeout
    fd = os.open(a.tty, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        tty.setraw(fd)
    except termios.error as e:
        print(f"ttyrelay: {a.tty}: raw mode: {e}", file=sys.stderr)
    log = open(a.log, "wb") if a.log else None
    seen = bytearray()

    def device_read():
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return b""
        except OSError:
            return None  # EIO: the device went away (reset, re-enumeration)
        if not data:
            return None
        if log:
            log.write(data)
            log.flush()
        return data

    if a.send_f:
        os.write(fd, b"f")
        while PROMPT not in seen:
            if time.monotonic() > deadline:
                print(f"ttyrelay: no prompt, got {bytes(seen)!r}", file=sys.stderr)
                return 124
            select.select([fd], [], [], 0.1)
            data = device_read()
            if data is None:
                print("ttyrelay: device gone before the prompt", file=sys.stderr)
                return 2
            seen += data
        # Whatever followed the prompt belongs to the transfer.
        pending = bytes(seen[seen.index(PROMPT) + len(PROMPT):])
    else:
        pending = b""

    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    p_in, p_out = proc.stdin.fileno(), proc.stdout.fileno()
    os.set_blocking(p_out, False)
    if pending:
        os.write(p_in, pending)
    gone = False
    to_device = bytearray()
    while True:
        if time.monotonic() > deadline:
            proc.kill()
            print("ttyrelay: timeout", file=sys.stderr)
            return 124
        rl = [p_out] + ([] if gone else [fd])
        wl = [fd] if to_device and not gone else []
        r, w, _ = select.select(rl, wl, [], 0.1)
        if fd in r:
            data = device_read()
            if data is None:
                gone = True
            elif data:
                try:
                    os.write(p_in, data)
                except BrokenPipeError:
                    pass
        if p_out in r:
            try:
                data = os.read(p_out, 65536)
            except BlockingIOError:
                data = b"x"[:0]
            if not data:
                break
            to_device += data
        if fd in w:
            try:
                n = os.write(fd, to_device)
                del to_device[:n]
            except BlockingIOError:
                pass
            except OSError:
                gone = True
    rc = proc.wait()
    # The device's last words (success text, restart line) come after the
    # sender is done.
    end = time.monotonic() + a.drain_ms / 1000.0
    while not gone and time.monotonic() < end:
        select.select([fd], [], [], 0.05)
        if device_read() is None:
            gone = True
    if log:
        log.close()
    try:
        os.close(fd)
    except OSError:
        pass
    return rc


if __name__ == "__main__":
    sys.exit(main())

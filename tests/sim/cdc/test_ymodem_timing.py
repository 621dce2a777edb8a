#!/usr/bin/env python3
"""The serial timing model of flashd-sim: at --time-scale 1 a YMODEM transfer
into a listening Photon cannot finish before the device's own work (erase of
the receiving region over the declared size when the header arrives, then per
block its USB full-speed transfer and programming) -- and at --time-scale 0 it
costs none of that.  The minimum is computed here from the datasheet figures
that tests/sim/timing.c cites (STM32F205: 1 s per 128 KiB sector, 16 us per
word; USB 2.0 table 5-9: 19 x 64-byte bulk packets per 1 ms frame)."""
import math
import os
import sys
import termios
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simlib  # noqa: E402

IMAGE = "photon/photon-system-part2@1.5.0.bin"


def usb_us(n):
    return math.ceil(math.ceil(n / 64) * 1000 / 19)


def model_minimum_s(size):
    blocks = math.ceil(size / 1024)
    erase = math.ceil(size / (128 * 1024)) * 1_000_000
    per_block = usb_us(1029) + 1024 // 4 * 16
    return (usb_us(133) + erase + blocks * per_block) / 1e6


def block(seq, data, stx=True):
    size = 1024 if stx else 128
    data = data.ljust(size, b"\0")
    return bytes([2 if stx else 1, seq & 0xff, 0xff - (seq & 0xff)]) + data + b"\0\0"


def read_until(fd, want, timeout):
    got = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            b = os.read(fd, 256)
        except BlockingIOError:
            b = b""
        if b:
            got += b
            if want in got:
                return got
        else:
            time.sleep(0.0005)
    raise SystemExit(f"timeout waiting for {want!r}, got {got[-80:]!r}")


def inner(path):
    """Runs inside the testbed: 'f', header, every block; prints the time
    from the header to the last block's ACK."""
    data = open(path, "rb").read()
    fd = os.open("/dev/ttyACM0", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    attrs = termios.tcgetattr(fd)
    attrs[0] = attrs[1] = attrs[3] = 0
    attrs[2] = termios.CS8 | termios.CREAD | termios.CLOCAL
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    os.write(fd, b"f")
    read_until(fd, b"abort)\r\n", 5)
    t0 = time.monotonic()
    os.write(fd, block(0, b"binary\0%d \0" % len(data), stx=False))
    read_until(fd, b"\x06C", 30)
    for i in range(0, len(data), 1024):
        os.write(fd, block(i // 1024 + 1, data[i:i + 1024]))
        read_until(fd, b"\x06", 30)
    print(f"elapsed {time.monotonic() - t0:.4f}", flush=True)
    os.write(fd, b"\x04")
    read_until(fd, b"\x06", 5)
    os.write(fd, block(0, b"", stx=False))
    read_until(fd, b"\x06", 30)
    os.close(fd)


def elapsed(out):
    for line in out.splitlines():
        if line.startswith("elapsed "):
            return float(line.split()[1])
    return None


if __name__ == "__main__" and sys.argv[1:2] == ["--inner"]:
    inner(sys.argv[2])
    sys.exit(0)

simlib.workdir()
image = simlib.fixture(IMAGE)
size = os.path.getsize(image)
minimum = model_minimum_s(size)
spec = "platform=photon,mode=listening,os=1.5.2"
cmd = [sys.executable, os.path.abspath(__file__), "--inner", image]

r = simlib.run_sim([spec], cmd, extra=["--time-scale", "1"], timeout=120)
print(r.stdout)
t1 = elapsed(r.stdout)
simlib.check(r.returncode == 0 and t1 is not None, f"time-scale 1: exit {r.returncode}")
print(f"time-scale 1: header to last ACK {t1:.3f} s, model minimum {minimum:.3f} s")
simlib.check(t1 >= minimum, f"faster than the device could be: {t1:.3f} < {minimum:.3f}")
# Not a performance bound: only that nothing else (a lost timer, a 5 s
# timeout) hides in the transfer.  Generous for a loaded 2-core machine.
simlib.check(t1 < minimum + 3.0, f"far slower than the model: {t1:.3f} vs {minimum:.3f}")

r = simlib.run_sim([spec], cmd, timeout=120)
print(r.stdout)
t0 = elapsed(r.stdout)
simlib.check(r.returncode == 0 and t0 is not None, f"time-scale 0: exit {r.returncode}")
print(f"time-scale 0: {t0:.3f} s")
simlib.check(t0 < minimum / 2, f"time-scale 0 still charges device work: {t0:.3f} s")
print("ok")

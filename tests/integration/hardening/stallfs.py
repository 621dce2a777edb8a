"""A file system whose one file never delivers its bytes (a stalled network
mount, a hung FUSE daemon), for the "never block the loop on a client's file"
proof.  Speaks the kernel's FUSE protocol on /dev/fuse itself (standard
library only; needs root for mount(2)):

    stallfs.py MOUNTPOINT SIZE

mounts, creates MOUNTPOINT/stalled.bin (SIZE bytes, mode 0444), answers
lookup/getattr/open/release, and never answers a read.  Prints "ready" once
mounted; on SIGTERM or end of standard input it stops answering, which aborts
the connection (pending reads fail with ENOTCONN), and unmounts lazily.

FUSE protocol: linux/include/uapi/linux/fuse.h (fuse_in_header,
fuse_out_header, fuse_init_out, fuse_attr, fuse_entry_out, fuse_open_out).
"""
import ctypes
import errno
import os
import signal
import struct
import sys
import threading

FUSE_LOOKUP, FUSE_FORGET, FUSE_GETATTR, FUSE_OPEN, FUSE_READ = 1, 2, 3, 14, 15
FUSE_RELEASE, FUSE_FLUSH, FUSE_INIT, FUSE_INTERRUPT, FUSE_DESTROY = 18, 25, 26, 36, 38
FUSE_BATCH_FORGET = 42
NO_REPLY = (FUSE_FORGET, FUSE_INTERRUPT, FUSE_BATCH_FORGET)
FOPEN_DIRECT_IO = 1
ROOT, FILE = 1, 2
NAME = b"stalled.bin"
IN_HEADER = struct.Struct("<IIQQIIII")  # len opcode unique nodeid uid gid pid padding
OUT_HEADER = struct.Struct("<IiQ")      # len error unique


def attr(node, size):
    # ino size blocks atime mtime ctime atimensec mtimensec ctimensec mode nlink
    # uid gid rdev blksize flags
    mode = 0o40755 if node == ROOT else 0o100444
    return struct.pack("<QQQQQQIIIIIIIIII", node, size if node == FILE else 0,
                       (size + 511) // 512, 0, 0, 0, 0, 0, 0, mode, 1, 0, 0, 0, 4096, 0)


def main():
    mnt, size = sys.argv[1], int(sys.argv[2])
    fd = os.open("/dev/fuse", os.O_RDWR)
    libc = ctypes.CDLL(None, use_errno=True)
    opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
    if libc.mount(b"stallfs", mnt.encode(), b"fuse.stallfs", 0x2 | 0x4, opts) != 0:
        e = ctypes.get_errno()
        print(f"mount failed: {os.strerror(e)}", flush=True)
        sys.exit(77 if e in (errno.EPERM, errno.ENODEV, errno.EACCES) else 1)
    stop = threading.Event()

    def reply(unique, err=0, body=b""):
        try:
            os.write(fd, OUT_HEADER.pack(OUT_HEADER.size + len(body), -err, unique) + body)
        except OSError:
            pass  # the request was interrupted or the connection aborted

    def serve():
        while not stop.is_set():
            try:
                req = os.read(fd, 1 << 17)
            except OSError as e:
                if e.errno in (errno.EINTR, errno.ENOENT, errno.EAGAIN):
                    continue
                return  # ENODEV: unmounted
            length, op, unique, node, _, _, _, _ = IN_HEADER.unpack_from(req)
            body = req[IN_HEADER.size:length]
            if op in NO_REPLY:
                continue
            if op == FUSE_INIT:
                major, minor, readahead, flags = struct.unpack_from("<IIII", body)
                # major minor max_readahead flags max_background congestion_threshold
                # max_write time_gran max_pages map_alignment flags2 unused[7]
                reply(unique, body=struct.pack("<IIIIHHIIHHI7I", 7, min(minor, 31), readahead,
                                               0, 16, 12, 65536, 1, 16, 0, 0, *[0] * 7))
            elif op == FUSE_LOOKUP:
                if node == ROOT and body.rstrip(b"\0") == NAME:
                    # nodeid generation entry_valid attr_valid entry_nsec attr_nsec attr
                    reply(unique, body=struct.pack("<QQQQII", FILE, 0, 1, 1, 0, 0) +
                          attr(FILE, size))
                else:
                    reply(unique, errno.ENOENT)
            elif op == FUSE_GETATTR:
                reply(unique, body=struct.pack("<QII", 1, 0, 0) + attr(node, size))
            elif op == FUSE_OPEN:
                reply(unique, body=struct.pack("<QII", 0, FOPEN_DIRECT_IO, 0))
            elif op == FUSE_READ:
                pass  # the stall: this read is never answered
            elif op in (FUSE_RELEASE, FUSE_FLUSH, FUSE_DESTROY):
                reply(unique)
            else:
                reply(unique, errno.ENOSYS)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    print("ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    # Detach first (new opens fail), then drop the connection: pending reads end with ENOTCONN.
    libc.umount2(mnt.encode(), 2)  # MNT_DETACH
    os.close(fd)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A FUSE file system holding one file, disk.raw, that shrinks while it is read.

usage: shrinking-image.py MOUNTPOINT SOURCE SHRINK_AT

disk.raw has SOURCE's size and bytes, except that every read at or past byte SHRINK_AT
finds the end of the file, as a read does after another program truncated the image:
a backup that planned its reads from the file's size runs out of bytes part way.
Every read goes to this process (direct I/O), so where the file ends is exact.

Speaks the kernel's FUSE protocol on /dev/fuse itself (root only), so it needs nothing
but Python. Prints "ready" once mounted; serves until unmounted.
"""

import ctypes
import ctypes.util
import errno
import os
import stat
import struct
import sys

FUSE_LOOKUP = 1
FUSE_FORGET = 2
FUSE_GETATTR = 3
FUSE_OPEN = 14
FUSE_READ = 15
FUSE_RELEASE = 18
FUSE_FLUSH = 25
FUSE_INIT = 26
FUSE_OPENDIR = 27
FUSE_READDIR = 28
FUSE_RELEASEDIR = 29
FUSE_ACCESS = 34
FUSE_INTERRUPT = 36
FUSE_DESTROY = 38
FUSE_BATCH_FORGET = 42

NO_REPLY = {FUSE_FORGET, FUSE_BATCH_FORGET, FUSE_INTERRUPT}
FOPEN_DIRECT_IO = 1
FUSE_MAX_PAGES = 1 << 22

ROOT = 1
FILE = 2
NAME = b"disk.raw"

IN_HEADER = struct.Struct("<IIQQIIIHH")
OUT_HEADER = struct.Struct("<IiQ")
# fuse_attr: ino size blocks atime mtime ctime, three nsec, mode nlink uid gid rdev
# blksize flags.
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")


def attr(node, size):
    if node == ROOT:
        return ATTR.pack(ROOT, 0, 0, 0, 0, 0, 0, 0, 0, stat.S_IFDIR | 0o755, 2, 0, 0, 0, 4096, 0)
    return ATTR.pack(FILE, size, (size + 511) // 512, 0, 0, 0, 0, 0, 0,
                     stat.S_IFREG | 0o444, 1, 0, 0, 0, 4096, 0)


def mount(mountpoint):
    fd = os.open("/dev/fuse", os.O_RDWR)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    options = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
    ms_nosuid, ms_nodev = 2, 4
    if libc.mount(b"shrinking", mountpoint.encode(), b"fuse.shrinking",
                  ms_nosuid | ms_nodev, options) != 0:
        err = ctypes.get_errno()
        sys.exit(f"cannot mount a FUSE file system on {mountpoint}: {os.strerror(err)}")
    return fd


def serve(fd, source, shrink_at):
    size = os.fstat(source).st_size
    while True:
        try:
            request = os.read(fd, (1 << 20) + 4096)
        except OSError as e:
            if e.errno == errno.ENODEV:  # unmounted
                return
            if e.errno in (errno.EINTR, errno.ENOENT):
                continue
            raise
        _, opcode, unique, node, _, _, _, _, _ = IN_HEADER.unpack_from(request)
        body = request[IN_HEADER.size:]
        error, payload = 0, b""
        if opcode in NO_REPLY:
            continue
        if opcode == FUSE_INIT:
            (flags,) = struct.unpack_from("<I", body, 12)
            # Protocol 7.31: fuse_init_out is 64 bytes.
            payload = struct.pack("<IIIIHHIIHHI", 7, 31, 0, FUSE_MAX_PAGES & flags,
                                  16, 12, 1 << 20, 1, 256, 0, 0) + bytes(28)
        elif opcode == FUSE_LOOKUP:
            if node == ROOT and body.rstrip(b"\0") == NAME:
                payload = struct.pack("<QQQQII", FILE, 0, 0, 0, 0, 0) + attr(FILE, size)
            else:
                error = -errno.ENOENT
        elif opcode == FUSE_GETATTR:
            payload = struct.pack("<QII", 0, 0, 0) + attr(node, size)
        elif opcode in (FUSE_OPEN, FUSE_OPENDIR):
            payload = struct.pack("<QIi", 0, FOPEN_DIRECT_IO if opcode == FUSE_OPEN else 0, 0)
        elif opcode == FUSE_READ:
            _, offset, length = struct.unpack_from("<QQI", body)
            end = min(offset + length, size, shrink_at)
            payload = os.pread(source, end - offset, offset) if end > offset else b""
        elif opcode == FUSE_READDIR:
            payload = b""  # the file is reached by name; the listing stays empty
        elif opcode in (FUSE_RELEASE, FUSE_RELEASEDIR, FUSE_FLUSH, FUSE_ACCESS):
            pass
        elif opcode == FUSE_DESTROY:
            return
        else:
            error = -errno.ENOSYS
        reply = OUT_HEADER.pack(OUT_HEADER.size + len(payload), error, unique) + payload
        try:
            os.write(fd, reply)
        except OSError as e:
            # The request was interrupted and is gone.
            if e.errno != errno.ENOENT:
                raise


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.split("\n\n")[1])
    mountpoint, source_path, shrink_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    source = os.open(source_path, os.O_RDONLY)
    fd = mount(mountpoint)
    print("ready", flush=True)
    serve(fd, source, shrink_at)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Makes a differencing VDI, as VirtualBox writes a snapshot (Snapshots/{UUID}.vdi).

usage: vdi-differencing.py DYNAMIC PARENT OUT [options]

DYNAMIC is a dynamic VDI of PARENT's size (as `qemu-img create -f vdi` makes, then written
with `qemu-io`) whose allocated blocks hold the snapshot's blocks, each whole; PARENT is
the VDI the snapshot was taken over. OUT is DYNAMIC made a differencing disk over PARENT:
  - the image type is 4 (differencing);
  - the parent UUID is PARENT's own UUID (or --parent-uuid, 32 hex digits as stored);
  - the parent modification UUID is PARENT's modification UUID (or --parent-modify);
  - the blocks --zero lists (block numbers, comma separated) read as zeros, whatever the
    parent holds there.
Blocks DYNAMIC never allocated are the parent's. QEMU cannot write such a disk.
"""

import argparse
import struct

TYPE = 76
BLOCK_MAP = 340
BLOCKS = 384
UUID_CREATE = 392
UUID_MODIFY = 408
UUID_LINKAGE = 424
UUID_PARENT_MODIFY = 440
BLOCK_ZERO = 0xFFFFFFFE


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dynamic")
    parser.add_argument("parent")
    parser.add_argument("out")
    parser.add_argument("--parent-uuid")
    parser.add_argument("--parent-modify")
    parser.add_argument("--zero", default="")
    args = parser.parse_args()

    with open(args.parent, "rb") as f:
        parent = f.read(512)
    with open(args.dynamic, "rb") as f:
        data = bytearray(f.read())

    def uuid(given, at):
        return bytes.fromhex(given) if given else parent[at:at + 16]

    data[TYPE:TYPE + 4] = struct.pack("<I", 4)
    data[UUID_LINKAGE:UUID_LINKAGE + 16] = uuid(args.parent_uuid, UUID_CREATE)
    data[UUID_PARENT_MODIFY:UUID_PARENT_MODIFY + 16] = uuid(args.parent_modify, UUID_MODIFY)
    (table,) = struct.unpack("<I", data[BLOCK_MAP:BLOCK_MAP + 4])
    (count,) = struct.unpack("<I", data[BLOCKS:BLOCKS + 4])
    for block in filter(None, args.zero.split(",")):
        block = int(block)
        assert block < count, f"block {block} is past the disk's {count}"
        data[table + 4 * block:table + 4 * block + 4] = struct.pack("<I", BLOCK_ZERO)

    with open(args.out, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    main()

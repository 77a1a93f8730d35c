#!/usr/bin/env python3
"""Makes a differencing VHD, as Hyper-V and Virtual PC write their snapshots (.avhd).

usage: vhd-differencing.py DYNAMIC PARENT OUT [options]

DYNAMIC is a dynamic VHD (as `qemu-img create -f vpc -o subformat=dynamic` makes, then
written with `qemu-io`) whose allocated blocks hold the snapshot's writes; PARENT is the
VHD the snapshot was taken over. OUT is DYNAMIC made a differencing disk over PARENT:
  - both footers (the copy at the start and the one at the end) say disk type 4;
  - the header names the parent by the unique id of PARENT's footer (or --parent-id),
    by --name (UTF-16 big-endian) and by each --locator CODE:PATH, the path stored in
    sectors of its own after the blocks (UTF-16 little-endian);
  - in each allocated block, the sector bitmap marks present exactly the sectors of the
    disk that --present lists (ranges FIRST-LAST of 512-byte sectors, comma separated);
    the others read from the parent.
QEMU cannot write such a disk. Checksums are made right after every change.
"""

import struct

import differencing_args


def checksum(data, field):
    """The one's complement of the byte sum, the four bytes at `field` counted as zeros."""
    total = sum(data) - sum(data[field:field + 4])
    return (~total) & 0xFFFFFFFF


def fix(data, at, length, field):
    data[at + field:at + field + 4] = b"\0\0\0\0"
    data[at + field:at + field + 4] = struct.pack(">I", checksum(data[at:at + length], field))


def main():
    parser = differencing_args.parser(__doc__)
    parser.add_argument("--name", default="")
    parser.add_argument("--parent-id")
    args = parser.parse_args()

    with open(args.parent, "rb") as f:
        parent = f.read()
    parent_id = bytes.fromhex(args.parent_id) if args.parent_id else parent[-512 + 68:-512 + 84]
    with open(args.dynamic, "rb") as f:
        data = bytearray(f.read())
    footer = data[-512:]
    del data[-512:]

    header_at = struct.unpack(">Q", data[16:24])[0]
    header = header_at
    data[header + 40:header + 56] = parent_id
    name = args.name.encode("utf-16-be")[:512]
    data[header + 64:header + 576] = name + bytes(512 - len(name))
    table = struct.unpack(">Q", data[header + 16:header + 24])[0]
    entries = struct.unpack(">I", data[header + 28:header + 32])[0]
    block_size = struct.unpack(">I", data[header + 32:header + 36])[0]

    for i, locator in enumerate(args.locator):
        code, _, path = locator.partition(":")
        encoded = path.encode("utf-16-le")
        at = len(data)
        data += encoded
        data += bytes(-len(data) % 512)
        entry = header + 576 + 24 * i
        data[entry:entry + 24] = struct.pack(">4sIIIQ", code.encode(), 1, len(encoded), 0, at)
    fix(data, header, 1024, 36)

    listed = differencing_args.listed(args.present)
    sectors_per_block = block_size // 512
    for block in range(entries):
        (sector,) = struct.unpack(">I", data[table + 4 * block:table + 4 * block + 4])
        if sector == 0xFFFFFFFF:
            continue
        bitmap = bytearray(sectors_per_block // 8)
        for s in range(sectors_per_block):
            disk_sector = block * sectors_per_block + s
            if listed(disk_sector):
                bitmap[s // 8] |= 0x80 >> (s % 8)
        data[sector * 512:sector * 512 + len(bitmap)] = bitmap

    data += footer
    for at in (0, len(data) - 512):
        data[at + 60:at + 64] = struct.pack(">I", 4)
        fix(data, at, 512, 64)
    with open(args.out, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    main()

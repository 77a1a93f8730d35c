#!/usr/bin/env python3
"""Makes a differencing VHDX, as Hyper-V writes its checkpoints (.avhdx).

usage: vhdx-differencing.py DYNAMIC PARENT OUT [options]

DYNAMIC is a dynamic VHDX (as `qemu-img create -f vhdx` makes, then written with
`qemu-io`) whose present blocks hold the checkpoint's writes; PARENT is the VHDX the
checkpoint was taken over. OUT is DYNAMIC made a differencing disk over PARENT:
  - the file parameters' HasParent bit is set;
  - a parent locator (a required metadata item, after the others in the metadata
    region) holds parent_linkage, the DataWriteGuid of PARENT's current header (or
    --linkage), and each --locator KEY=VALUE (relative_path, absolute_win32_path, ...);
  - of each present block, only the sectors --present lists (ranges FIRST-LAST of
    logical sectors, comma separated) stay the checkpoint's: a block with all of its
    sectors listed stays fully present, one with some becomes partially present with
    its chunk's sector bitmap block (1 MiB, appended to the file) marking them, and one
    with none, like every block the checkpoint did not write, becomes not present: the
    parent's.
QEMU cannot write such a disk.
"""

import struct

import differencing_args
import uuid

MIB = 1 << 20


def vhdx_guid(text):
    """A GUID as VHDX stores it: the first three fields little-endian."""
    return uuid.UUID(text).bytes_le


FILE_PARAMETERS = vhdx_guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE = vhdx_guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
LOGICAL_SECTOR_SIZE = vhdx_guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PARENT_LOCATOR = vhdx_guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
VHDX_PARENT = vhdx_guid("B04AEFB7-D19E-4A81-B789-25B8E9445913")
BAT_REGION = vhdx_guid("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_REGION = vhdx_guid("8B7CA206-4790-4B9A-B8FE-575F050F886E")


def current_header(data):
    headers = [data[at:at + 4096] for at in (64 << 10, 128 << 10)]
    valid = [h for h in headers if h[:4] == b"head"]
    return max(valid, key=lambda h: struct.unpack_from("<Q", h, 8)[0])


def regions(data):
    table = data[192 << 10:(192 << 10) + (64 << 10)]
    count = struct.unpack_from("<I", table, 8)[0]
    found = {}
    for i in range(count):
        entry = table[16 + 32 * i:48 + 32 * i]
        offset, length = struct.unpack_from("<QI", entry, 16)
        found[bytes(entry[:16])] = (offset, length)
    return found[BAT_REGION], found[METADATA_REGION]


def main():
    parser = differencing_args.parser(__doc__)
    parser.add_argument("--linkage")
    args = parser.parse_args()

    with open(args.parent, "rb") as f:
        parent = f.read()
    linkage = args.linkage or "{%s}" % uuid.UUID(bytes_le=bytes(current_header(parent)[32:48]))
    with open(args.dynamic, "rb") as f:
        data = bytearray(f.read())
    (bat, bat_length), (metadata, metadata_length) = regions(data)

    # The metadata: HasParent, and the parent locator after the last item.
    count = struct.unpack_from("<H", data, metadata + 10)[0]
    items = {}
    end = 64 << 10
    for i in range(count):
        entry = metadata + 32 + 32 * i
        offset, length = struct.unpack_from("<II", data, entry + 16)
        items[bytes(data[entry:entry + 16])] = metadata + offset
        end = max(end, offset + length)
    params = items[FILE_PARAMETERS]
    block_size, flags = struct.unpack_from("<II", data, params)
    struct.pack_into("<I", data, params + 4, flags | 2)
    size = struct.unpack_from("<Q", data, items[VIRTUAL_DISK_SIZE])[0]
    sector = struct.unpack_from("<I", data, items[LOGICAL_SECTOR_SIZE])[0]

    pairs = [("parent_linkage", linkage)] + [tuple(l.split("=", 1)) for l in args.locator]
    strings = bytearray()
    entries = bytearray()
    base = 20 + 12 * len(pairs)
    for key, value in pairs:
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
        entries += struct.pack("<IIHH", base + len(strings), base + len(strings) + len(k), len(k), len(v))
        strings += k + v
    locator = VHDX_PARENT + struct.pack("<HH", 0, len(pairs)) + entries + strings
    item = (end + 7) // 8 * 8
    assert item + len(locator) <= metadata_length
    data[metadata + item:metadata + item + len(locator)] = locator
    entry = metadata + 32 + 32 * count
    data[entry:entry + 32] = PARENT_LOCATOR + struct.pack("<IIII", item, len(locator), 4, 0)
    struct.pack_into("<H", data, metadata + 10, count + 1)

    # The blocks: what of each stays the checkpoint's.
    listed = differencing_args.listed(args.present)
    chunk_ratio = (1 << 23) * sector // block_size
    per_block = block_size // sector
    blocks = -(-size // block_size)
    bitmaps = {}
    for block in range(blocks):
        index = block + block // chunk_ratio
        (value,) = struct.unpack_from("<Q", data, bat + 8 * index)
        if value & 7 != 6:
            # Not written by the checkpoint (`qemu-img` marks new blocks zero): the parent's.
            struct.pack_into("<Q", data, bat + 8 * index, 0)
            continue
        first = block * per_block
        mine = [s for s in range(first, min(first + per_block, -(-size // sector))) if listed(s)]
        if len(mine) == min(per_block, -(-size // sector) - first):
            continue
        if not mine:
            struct.pack_into("<Q", data, bat + 8 * index, 0)
            continue
        struct.pack_into("<Q", data, bat + 8 * index, (value & ~7) | 7)
        chunk = block // chunk_ratio
        bitmap = bitmaps.setdefault(chunk, bytearray(MIB))
        for s in mine:
            within = s - chunk * chunk_ratio * per_block
            bitmap[within // 8] |= 1 << (within % 8)
    for chunk, bitmap in sorted(bitmaps.items()):
        data += bytes(-len(data) % MIB)
        at = len(data)
        data += bitmap
        index = (chunk + 1) * (chunk_ratio + 1) - 1
        assert 8 * (index + 1) <= bat_length
        struct.pack_into("<Q", data, bat + 8 * index, (at // MIB) << 20 | 6)
    with open(args.out, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    main()

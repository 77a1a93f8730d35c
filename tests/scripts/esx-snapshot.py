#!/usr/bin/env python3
"""Makes an ESXi snapshot of a VMDK disk: a delta descriptor and its extent file, as
ESXi writes them for a `vmfsSparse` (`NAME-delta.vmdk`, a COWD file) or a `seSparse`
(`NAME-sesparse.vmdk`) snapshot.

usage: esx-snapshot.py FORMAT PARENT RAW OUT [options]

FORMAT is vmfsSparse or seSparse. PARENT is the descriptor (or sparse file) of the disk
the snapshot is taken over, named in OUT by its file name and its CID (or --parent-cid).
RAW is a raw file of the disk's size holding what the snapshot's grains hold. OUT is the
delta's descriptor; its extent file is written beside it.
  --written RANGES  byte ranges (OFFSET+LENGTH, comma separated) written in the snapshot:
                    each grain they touch is stored, its bytes taken from RAW;
  --zero RANGES     seSparse: grains that read as zeros (type 2 entries);
  --unmapped RANGES seSparse: grains unmapped by the guest (type 1 entries);
  --grain SECTORS   vmfsSparse: the grain size in sectors (default 1, as ESXi's).
Grains not listed are the parent's. QEMU reads such disks but cannot write them.
"""

import argparse
import os
import random
import re
import struct

SECTOR = 512
ENTRIES = 4096


def grains_of(text, grain):
    """The grain numbers the byte ranges in `text` touch."""
    grains = set()
    for part in filter(None, text.split(",")):
        offset, _, length = part.partition("+")
        offset, length = int(offset), int(length)
        grains.update(range(offset // grain, (offset + length + grain - 1) // grain))
    return grains


def parent_cid(path):
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    found = re.search(rb"(?m)^CID=([0-9a-fA-F]{1,8})", head)
    assert found, f"no CID in {path}"
    return found.group(1).decode()


def pad(data):
    data += bytes(-len(data) % SECTOR)
    return data


def cowd(size, stored, raw, grain_sectors):
    """A COWD file: header, directory, the tables in use, then the grains."""
    sectors = size // SECTOR
    grain = grain_sectors * SECTOR
    tables = -(-(-(-sectors // grain_sectors)) // ENTRIES)
    directory_at = 4
    directory_sectors = -(-tables * 4 // SECTOR)
    used = sorted({g // ENTRIES for g in stored})
    table_at = {t: directory_at + directory_sectors + i * (ENTRIES * 4 // SECTOR) for i, t in enumerate(used)}
    grain_at = directory_at + directory_sectors + len(used) * (ENTRIES * 4 // SECTOR)
    entries = {}
    body = bytearray()
    for g in sorted(stored):
        entries[g] = grain_at + len(body) // SECTOR
        body += raw[g * grain:(g + 1) * grain].ljust(grain, b"\0")
    file_sectors = grain_at + len(body) // SECTOR
    header = struct.pack("<4sIIIIIIIIII", b"COWD", 1, 3, sectors, grain_sectors, directory_at,
                         tables, file_sectors, 0, 0, 0)
    out = pad(bytearray(header))
    out += bytes(directory_at * SECTOR - len(out))
    directory = bytearray(tables * 4)
    for t, at in table_at.items():
        directory[t * 4:t * 4 + 4] = struct.pack("<I", at)
    out += pad(directory)
    for t in used:
        table = bytearray(ENTRIES * 4)
        for g, at in entries.items():
            if g // ENTRIES == t:
                table[(g % ENTRIES) * 4:(g % ENTRIES) * 4 + 4] = struct.pack("<I", at)
        out += table
    out += body
    return out


def sesparse(size, stored, zero, unmapped, raw):
    """A seSparse file: the two headers, an empty journal, directory, tables, grains."""
    sectors = size // SECTOR
    grain = 8 * SECTOR
    grains = -(-sectors // 8)
    tables = -(-grains // ENTRIES)
    directory_sectors = -(-tables * 8 // SECTOR)
    listed = stored | zero | unmapped
    used = sorted({g // ENTRIES for g in listed})
    # Tables are numbered in the order they are used, backwards, to show that the
    # directory, not the order, places them.
    number = {t: len(used) - 1 - i for i, t in enumerate(used)}
    directory_at = 4
    tables_at = directory_at + directory_sectors
    tables_sectors = len(used) * 64
    bitmap_at = tables_at + tables_sectors
    backmap_at = bitmap_at + 1
    grains_at = backmap_at + 1
    order = sorted(stored, reverse=True)
    slot = {g: i for i, g in enumerate(order)}
    header = struct.pack(
        "<26Q", 0xcafebabe, 0x200000001, sectors, 8, 64, 0, 0, 0, 0, 0,
        1, 1, 2, 1, 3, 1, directory_at, directory_sectors, tables_at, tables_sectors,
        bitmap_at, 1, backmap_at, 1, grains_at, len(order) * 8)
    out = pad(bytearray(header))
    out += pad(bytearray(struct.pack("<4Q", 0xcafecafe, len(used), 1, 0)))
    out += bytes(2 * SECTOR)
    directory = bytearray(tables * 8)
    for t in used:
        directory[t * 8:t * 8 + 8] = struct.pack("<Q", 0x1000000000000000 | number[t])
    out += pad(directory)
    table_bytes = [bytearray(ENTRIES * 8) for _ in used]
    for g in listed:
        if g in stored:
            i = slot[g]
            entry = (0x3 << 60) | ((i & 0xFFF) << 48) | (i >> 12)
        elif g in zero:
            entry = 0x2 << 60
        else:
            entry = 0x1 << 60
        t = number[g // ENTRIES]
        table_bytes[t][(g % ENTRIES) * 8:(g % ENTRIES) * 8 + 8] = struct.pack("<Q", entry)
    for table in table_bytes:
        out += table
    out += bytes(2 * SECTOR)
    for g in order:
        out += raw[g * grain:(g + 1) * grain].ljust(grain, b"\0")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("format", choices=["vmfsSparse", "seSparse"])
    parser.add_argument("parent")
    parser.add_argument("raw")
    parser.add_argument("out")
    parser.add_argument("--written", default="")
    parser.add_argument("--zero", default="")
    parser.add_argument("--unmapped", default="")
    parser.add_argument("--grain", type=int, default=1)
    parser.add_argument("--parent-cid")
    args = parser.parse_args()

    with open(args.raw, "rb") as f:
        raw = f.read()
    size = len(raw)
    stem = os.path.splitext(os.path.basename(args.out))[0]
    if args.format == "vmfsSparse":
        grain = args.grain * SECTOR
        extent = cowd(size, grains_of(args.written, grain), raw, args.grain)
        extent_name, kind = f"{stem}-delta.vmdk", "VMFSSPARSE"
    else:
        grain = 8 * SECTOR
        extent = sesparse(size, grains_of(args.written, grain), grains_of(args.zero, grain),
                          grains_of(args.unmapped, grain), raw)
        extent_name, kind = f"{stem}-sesparse.vmdk", "SESPARSE"
    with open(os.path.join(os.path.dirname(args.out), extent_name), "wb") as f:
        f.write(extent)
    descriptor = "\n".join([
        "# Disk DescriptorFile",
        "version=1",
        'encoding="UTF-8"',
        f"CID={random.getrandbits(32):08x}",
        f"parentCID={args.parent_cid or parent_cid(args.parent)}",
        f'createType="{args.format}"',
        f'parentFileNameHint="{os.path.basename(args.parent)}"',
        "# Extent description",
        f'RW {size // SECTOR} {kind} "{extent_name}"',
        "",
        "# The Disk Data Base",
        "#DDB",
        "",
        'ddb.virtualHWVersion = "14"',
        "",
    ])
    with open(args.out, "w") as f:
        f.write(descriptor)


if __name__ == "__main__":
    main()

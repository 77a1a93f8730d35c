#!/usr/bin/env python3
"""Makes a member of a Linux software RAID (MD) array with version 1 metadata, as
`mdadm --create --metadata=1.2` (or 1.1) lays one out: the superblock, then the array's
data from the data offset on.

usage: md-member.py DATA OUT [options]

DATA is the array's content (a file system image, or an LVM2 physical volume); OUT gets
the member: its superblock at byte 4096 (metadata 1.2) or 0 (1.1), its share of DATA at
--data-offset sectors (default 2048, mdadm's 1 MiB), and --spare sectors after it. A
RAID1 member holds all of DATA; a RAID0 member the chunks its role is dealt (chunk k to
role k mod the members); a linear member its role's slice of DATA cut in equal parts.
A RAID4, 5 or 6 member holds, stripe by stripe, the data chunk or the parity its role is
given by --layout, as md(4) describes the layouts: parity rotating from the last member
down (left) or from the first up (right), the data in member order skipping the parity
(asymmetric) or starting after it and wrapping round (symmetric); or parity on the first
or last members; RAID6's layouts 16 to 20 are RAID5's over all members but the last,
which holds Q. P is the XOR of the stripe's data; Q the sum of g^i times each data chunk
in GF(2^8) (polynomial 0x11d, g = 2), i counting the data members from the one after Q,
wrapping round, as md(4) computes it (for the DDF layouts 8 to 10, every member counted
in order, P's and Q's as zeros). A RAID10 member holds its share of each chunk's near
copies (on neighbouring members) and far copies (in later bands, or in the next rows
with the offset bit).
  --level N        the RAID level (default 1; -1 is linear)
  --disks N        members in the array (default 2)
  --role N         this member's role in it (default 0)
  --metadata V     1.2 (default), 1.1, 1.0 (the superblock 8 KiB before the end, on a
                   4 KiB boundary, the data from byte 0) or 0.90 (the superblock in the
                   last 64 KiB-aligned 64 KiB, the data from byte 0)
  --name NAME      the array's name (default "host:md0")
  --uuid HEX       the array's UUID, 32 hex digits (default random; the members of one
                   array share it)
  --chunk SECTORS  a striped array's chunk (default 1024, mdadm's 512 KiB)
  --sizes N,N...   RAID0: each member's size in chunks, for members of unequal sizes
                   (zones); --layout 1 (original) or 2 (alternate) picks the layout
  --layout N       RAID4/5/6 layout (default 2, left-symmetric, mdadm's) or RAID10 layout
                   (default 0x102: two near copies)
  --recovering     mark the member as being rebuilt
The checksum is the kernel's. `mdadm --examine OUT` reads the result.
"""

import argparse
import os
import struct
import time

SECTOR = 512
MAX_DEV = 128


def checksum(sb):
    words = struct.unpack(f"<{len(sb) // 4}I", sb[:len(sb) // 4 * 4])
    total = sum(w for i, w in enumerate(words) if i != 0xD8 // 4)
    if len(sb) % 4 == 2:
        total += struct.unpack("<H", sb[-2:])[0]
    return ((total & 0xFFFFFFFF) + (total >> 32)) & 0xFFFFFFFF


def stripe_roles(level, layout, n, stripe):
    """The roles holding a stripe's data chunks in order, its P and its Q (or None)."""
    if level == 4:
        return list(range(n - 1)), n - 1, None
    if level == 6 and layout >= 16:
        base = 4 if layout == 20 else layout - 16
        data, p, _ = stripe_roles(5, base, n - 1, stripe)
        return data, p, n - 1
    if level == 5:
        if layout in (0, 2):
            p = n - 1 - stripe % n
        elif layout in (1, 3):
            p = stripe % n
        else:
            p = 0 if layout == 4 else n - 1
        if layout in (2, 3):
            return [(p + 1 + j) % n for j in range(n - 1)], p, None
        return [r for r in range(n) if r != p], p, None
    # RAID6
    if layout in (0, 1, 2, 3):
        p = n - 1 - stripe % n if layout in (0, 2) else stripe % n
        if layout in (2, 3):
            q = (p + 1) % n
            return [(p + 2 + j) % n for j in range(n - 2)], p, q
        q = 0 if p == n - 1 else p + 1
        return [r for r in range(n) if r not in (p, q)], p, q
    if layout in (8, 9):
        # DDF: P rotating from the first member up (8), or from the last down one
        # stripe on (9), Q after it; the data in member order.
        p = stripe % n if layout == 8 else n - 1 - (stripe + 1) % n
        q = 0 if p == n - 1 else p + 1
        return [r for r in range(n) if r not in (p, q)], p, q
    if layout == 10:
        # DDF: P rotating from the last member down, Q before it, the data wrapping
        # round after P.
        p = n - 1 - stripe % n
        return [(p + 1 + j) % n for j in range(n - 2)], p, (p + n - 1) % n
    p, q = (0, 1) if layout == 4 else (n - 2, n - 1)
    return [r for r in range(n) if r not in (p, q)], p, q


def parity_member(data, level, layout, n, role, chunk):
    """The chunks of a RAID4/5/6 array holding `data` that lie on member `role`."""
    data_disks = n - (2 if level == 6 else 1)
    assert len(data) % (chunk * data_disks) == 0, "DATA must be whole stripes"
    out = []
    for stripe in range(len(data) // (chunk * data_disks)):
        chunks = [data[(stripe * data_disks + k) * chunk:(stripe * data_disks + k + 1) * chunk]
                  for k in range(data_disks)]
        roles, p, q = stripe_roles(level, layout, n, stripe)
        if role in roles:
            out.append(chunks[roles.index(role)])
        elif role == p:
            parity = 0
            for c in chunks:
                parity ^= int.from_bytes(c, "little")
            out.append(parity.to_bytes(chunk, "little"))
        else:
            # Q by Horner's rule over the data in syndrome order, the last first: md
            # counts the data from the member after Q; DDF (layouts 8 to 10) counts every
            # member, P and Q as zeros.
            if layout in (8, 9, 10):
                syndrome = [chunks[roles.index(r)] if r in roles else bytes(chunk)
                            for r in range(n)]
            else:
                order = [(q + 1 + j) % n for j in range(n)]
                syndrome = [chunks[roles.index(r)] for r in order if r not in (p, q)]
            high = int.from_bytes(b"\x80" * chunk, "little")
            acc = 0
            for d in reversed(syndrome):
                # Doubles every byte at once: shift, and fold 0x1d into those that overflowed.
                top = acc & high
                acc = ((acc & ~high) << 1) ^ ((top >> 7) * 0x1D) ^ int.from_bytes(d, "little")
            out.append(acc.to_bytes(chunk, "little"))
    return b"".join(out)


def raid0_zoned_member(data, sizes, layout, role, chunk):
    """The share of member `role` of a RAID0 array of members of `sizes` chunks: zones
    over the members larger than the zone before reached, the member of each chunk
    counted by its number in the array (layout 1, original) or in its zone (2,
    alternate)."""
    zones, start, dev_start = [], 0, 0
    while True:
        members = [r for r in range(len(sizes)) if sizes[r] > dev_start]
        if not members:
            break
        smallest = min(sizes[r] for r in members)
        zones.append((start, dev_start, members))
        start += (smallest - dev_start) * len(members)
        dev_start = smallest
    assert len(data) == start * chunk, "DATA must fill the zones"
    out = bytearray(sizes[role] * chunk)
    for c in range(start):
        zone_start, dev_start, members = max(z for z in zones if z[0] <= c)
        in_zone = c - zone_start
        index = (in_zone if layout == 2 else c) % len(members)
        if members[index] == role:
            at = (dev_start + in_zone // len(members)) * chunk
            out[at:at + chunk] = data[c * chunk:(c + 1) * chunk]
    return bytes(out)


def raid10_member(data, layout, n, role, chunk):
    """The copies of the chunks of a RAID10 array holding `data` that lie on `role`."""
    near, far, offset = layout & 0xFF, (layout >> 8) & 0xFF, bool(layout & (1 << 16))
    chunks = len(data) // chunk
    assert chunks * chunk == len(data) and chunks * near % n == 0, "DATA must fill the rows"
    rows = chunks * near // n
    member = bytearray(rows * far * chunk)
    for c in range(chunks):
        for d in range(near):
            slot = c * near + d
            for f in range(far):
                dev = (slot % n + f * near) % n
                row = slot // n * far + f if offset else f * rows + slot // n
                if dev == role:
                    member[row * chunk:(row + 1) * chunk] = data[c * chunk:(c + 1) * chunk]
    return bytes(member)


def write_v090(args, data, sectors):
    """Writes a member with a version 0.90 superblock: 1,024 32-bit words in the last
    64 KiB-aligned 64 KiB, the array's data from byte 0."""
    reserved = 128
    sb_start = -(-sectors // reserved) * reserved
    total = sb_start + reserved
    words = [0] * 1024
    uuid = bytes.fromhex(args.uuid) if args.uuid else os.urandom(16)
    u = struct.unpack("<4I", uuid)
    now = int(time.time())
    chunk = args.chunk * SECTOR if args.level in (0, 4, 5, 6, 10) else 0
    layout = args.layout if args.layout is not None else (2 if args.level in (5, 6) else 0)
    words[0:16] = [0xA92B4EFC, 0, 90, 0, 0, u[0], now, args.level & 0xFFFFFFFF,
                   sectors // 2, args.disks, args.disks, 0, 0, u[1], u[2], u[3]]
    words[32:41] = [now, 1, args.disks, args.disks, 0, 0, 0, 0, 1]
    words[64:66] = [layout, chunk]
    state = 0 if args.recovering else 6
    for i in range(args.disks):
        words[128 + 32 * i:128 + 32 * i + 5] = [i, 0, 0, i, 6]
    words[992:997] = [args.role, 0, 0, args.role, state]
    total_sum = sum(words)
    words[38] = ((total_sum & 0xFFFFFFFF) + (total_sum >> 32)) & 0xFFFFFFFF
    member = bytearray(total * SECTOR)
    member[:len(data)] = data
    member[sb_start * SECTOR:sb_start * SECTOR + 4096] = struct.pack("<1024I", *words)
    with open(args.out, "wb") as f:
        f.write(member)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--level", type=int, default=1)
    parser.add_argument("--disks", type=int, default=2)
    parser.add_argument("--role", type=int, default=0)
    parser.add_argument("--metadata", choices=["0.90", "1.0", "1.1", "1.2"], default="1.2")
    parser.add_argument("--name", default="host:md0")
    parser.add_argument("--uuid")
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--data-offset", type=int, default=2048)
    parser.add_argument("--spare", type=int, default=8)
    parser.add_argument("--layout", type=lambda v: int(v, 0))
    parser.add_argument("--sizes", help="RAID0: each member's size in chunks, comma-separated")
    parser.add_argument("--recovering", action="store_true")
    args = parser.parse_args()

    with open(args.data, "rb") as f:
        data = f.read()
    data += bytes(-len(data) % SECTOR)
    if args.level == 0 and args.sizes:
        data = raid0_zoned_member(data, [int(n) for n in args.sizes.split(",")], args.layout or 0,
                                  args.role, args.chunk * SECTOR)
    elif args.level == 0:
        chunk = args.chunk * SECTOR
        assert len(data) % (chunk * args.disks) == 0, "DATA must be whole stripes"
        data = b"".join(data[k * chunk:(k + 1) * chunk]
                        for k in range(args.role, len(data) // chunk, args.disks))
    elif args.level in (4, 5, 6):
        layout = 2 if args.layout is None else args.layout
        data = parity_member(data, args.level, layout, args.disks, args.role, args.chunk * SECTOR)
    elif args.level == 10:
        layout = 0x102 if args.layout is None else args.layout
        args.layout = layout
        data = raid10_member(data, layout, args.disks, args.role, args.chunk * SECTOR)
    elif args.level == -1 and args.disks > 1:
        part = len(data) // args.disks
        assert part % SECTOR == 0 and part * args.disks == len(data), "DATA must split evenly"
        data = data[args.role * part:(args.role + 1) * part]
    sectors = len(data) // SECTOR
    if args.metadata == "0.90":
        write_v090(args, data, sectors)
        return
    now = int(time.time())
    if args.metadata == "1.0":
        args.data_offset = 0
        total = sectors + max(args.spare, 24)
        super_offset = (total - 16) & ~7
    else:
        total = args.data_offset + sectors + args.spare
        super_offset = 8 if args.metadata == "1.2" else 0
    sb = bytearray(256 + 2 * MAX_DEV)
    features = 2 if args.recovering else 0
    struct.pack_into("<III", sb, 0, 0xA92B4EFC, 1, features)
    sb[0x10:0x20] = bytes.fromhex(args.uuid) if args.uuid else os.urandom(16)
    name = args.name.encode()[:32]
    sb[0x20:0x20 + len(name)] = name
    chunk_sectors = args.chunk if args.level in (0, 4, 5, 6, 10) else 0
    layout = args.layout if args.layout is not None else (2 if args.level in (5, 6) else 0)
    struct.pack_into("<QiIQII", sb, 0x40, now, args.level, layout, sectors, chunk_sectors, args.disks)
    # The data area: all the space after the data offset (before the superblock for 1.0),
    # but for RAID0 and linear, whose members give the array all of it, just the data.
    data_size = (super_offset if args.metadata == "1.0" else total) - args.data_offset
    if args.level in (0, -1):
        data_size = sectors
    struct.pack_into("<QQQQ", sb, 0x80, args.data_offset, data_size, super_offset,
                     sectors if args.recovering else 0)
    struct.pack_into("<I", sb, 0xA0, args.role)
    sb[0xA8:0xB8] = os.urandom(16)
    struct.pack_into("<QQQ", sb, 0xC0, now, 20, 0xFFFFFFFFFFFFFFFF)
    struct.pack_into("<I", sb, 0xDC, MAX_DEV)
    for i in range(MAX_DEV):
        role = i if i < args.disks else 0xFFFF
        struct.pack_into("<H", sb, 0x100 + 2 * i, role)
    struct.pack_into("<I", sb, 0xD8, checksum(sb))

    member = bytearray(total * SECTOR)
    at = super_offset * SECTOR
    member[at:at + len(sb)] = sb
    member[args.data_offset * SECTOR:args.data_offset * SECTOR + len(data)] = data
    with open(args.out, "wb") as f:
        f.write(member)


if __name__ == "__main__":
    main()

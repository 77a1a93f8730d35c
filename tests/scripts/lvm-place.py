#!/usr/bin/env python3
"""Writes file-system images into the logical volumes of an LVM2 volume group made
without device-mapper (`--driverloaded n`, the volumes never activated): each volume's
bytes go where `lvs` reports its extents to lie on the physical volumes, spread over the
stripes of a striped segment in round robin, as device-mapper's striped target lays
them out.

usage: lvm-place.py GROUP DEVICE=FILE... -- VOLUME=IMAGE...

DEVICE is a physical volume as LVM names it (a loop device) and FILE the file behind it,
written in place. Prints one line per segment: the volume, its first extent, its extent
count and the devices of its stripes (comma-separated).
"""

import os
import subprocess
import sys

ENV = dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1")


def lvm(*args):
    out = subprocess.run(
        [args[0], "--driverloaded", "n", *args[1:]],
        env=ENV,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


def main(argv):
    split = argv.index("--")
    group, devices, volumes = argv[0], argv[1:split], argv[split + 1 :]
    files = dict(d.split("=", 1) for d in devices)
    images = dict(v.split("=", 1) for v in volumes)
    size = {}
    for device in files:
        fields = lvm(
            "pvs", "--noheadings", "--units", "b", "--nosuffix",
            "--separator", ",", "-o", "pe_start,vg_extent_size", device,
        ).split(",")
        size[device] = (int(fields[0]), int(fields[1]))
    out = lvm(
        "lvs", "--noheadings", "--units", "b", "--nosuffix", "--separator", ",",
        "-o", "lv_name,seg_start_pe,seg_size_pe,stripe_size,seg_pe_ranges", group,
    )
    for line in out.splitlines():
        name, start, count, stripe_size, ranges = line.strip().split(",")
        if name not in images:
            continue
        stripes = []
        for r in ranges.split():
            device, extents = r.rsplit(":", 1)
            stripes.append((device, int(extents.split("-")[0])))
        start, count = int(start), int(count)
        extent = size[stripes[0][0]][1]
        with open(images[name], "rb") as f:
            f.seek(start * extent)
            data = f.read(count * extent)
        chunk = len(data) if len(stripes) == 1 else int(stripe_size)
        for i in range(0, len(data), chunk):
            n = i // chunk
            device, first = stripes[n % len(stripes)]
            pe_start = size[device][0]
            at = pe_start + first * extent + n // len(stripes) * chunk
            with open(files[device], "r+b") as f:
                f.seek(at)
                f.write(data[i : i + chunk])
        print(name, start, count, ",".join(d for d, _ in stripes))


if __name__ == "__main__":
    main(sys.argv[1:])

"""What the scripts making differencing disks (vhd-differencing.py and
vhdx-differencing.py) share: their command line, and the sectors it says stay the new
disk's own."""

import argparse


def parser(doc):
    """The arguments every such script takes: DYNAMIC PARENT OUT, --locator (repeated)
    and --present."""
    result = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    result.add_argument("dynamic")
    result.add_argument("parent")
    result.add_argument("out")
    result.add_argument("--locator", action="append", default=[])
    result.add_argument("--present", default="")
    return result


def listed(text):
    """A test for sector numbers in `text`'s ranges (FIRST-LAST, comma separated)."""
    ranges = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        ranges.append((int(first), int(last or first)))
    return lambda sector: any(first <= sector <= last for first, last in ranges)

#!/usr/bin/env python3
"""Rewrites the encapsulated Pixel Data of a single-frame Part-10 file the loose ways some
modalities and converters write it, for Strata's tests: the data set is whole, only the
encapsulation departs from PS3.5 A.4.

Usage: loose_encaps.py IN OUT MODE
  no-bot    no Basic Offset Table item: the first item is already a fragment
  odd       an empty Basic Offset Table, the frame split into two fragments, the first of odd
            length and not padded
  padded    an empty Basic Offset Table, the frame split into two fragments, the first of odd
            length padded with one zero byte after the codestream's first part (a length
            that is even, as the standard asks)
Everything before Pixel Data is copied byte for byte.
"""

import struct
import sys

from pydicom import dcmread
from pydicom.encaps import generate_fragmented_frames


def item(data):
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(data)) + data


def main():
    src, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    raw = open(src, "rb").read()
    ds = dcmread(src)
    assert int(getattr(ds, "NumberOfFrames", 1)) == 1, "single-frame files only"
    frames = list(generate_fragmented_frames(ds.PixelData, number_of_frames=1))
    frame = b"".join(frames[0])
    header = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"
    at = raw.rfind(header)
    assert at > 0, "no encapsulated Pixel Data in Explicit VR Little Endian"
    cut = len(frame) // 2 | 1  # odd
    if mode == "no-bot":
        items = item(frame[:cut] + b"\x00") + item(frame[cut:] + b"\x00" * (len(frame[cut:]) % 2))
    elif mode == "odd":
        items = item(b"") + item(frame[:cut]) + item(frame[cut:])
    elif mode == "padded":
        # A decoder skips the pad byte: it falls between JPEG marker segments only if the
        # cut is at one, so pad at the end of the frame instead and keep the cut even.
        even = cut - 1
        rest = frame[even:]
        items = item(b"") + item(frame[:even]) + item(rest + b"\x00" * (len(rest) % 2))
    else:
        sys.exit(f"unknown mode {mode}")
    delimiter = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    open(out, "wb").write(raw[:at] + header + items + delimiter)


main()

#!/usr/bin/env python3
"""Makes and checks one very large multi-frame instance for Strata's memory tests, in
constant memory whatever its size (frames are written and compared one at a time).

Usage:
  big_instance.py make OUT --mb N [--syntax explicit|implicit] [--pattern ramp|rows]
      A 16-bit CT of 512 x 512 frames, N MiB of pixel data, in Explicit (default) or
      Implicit VR Little Endian, with Data Set Trailing Padding after its Pixel Data (so
      something follows it, as some modalities write). `rows` gives each row of a frame one
      value, so that RLE (DCMTK's dcmcrle) makes it small. Prints its SOP Instance UID and
      Study Instance UID.
  big_instance.py check FILE --mb N --syntax explicit|implicit|big [--pattern ramp|rows]
      FILE holds the instance as received (a bare data set or a Part-10 file) in the given
      syntax. Checks that its top-level Pixel Data has every frame's pixel values (the bytes
      swapped to big endian for `big`) and that the trailing padding follows it; prints a
      JSON report and exits 1 if anything differs.
"""

import argparse
import json
import mmap
import struct
import sys

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

SIDE = 512
FRAME_BYTES = SIDE * SIDE * 2
PADDING = 16


def frame(f, pattern="ramp"):
    """Frame f's pixels, distinct per frame: `ramp` uses every byte value (incompressible by
    RLE), `rows` gives each row one value (RLE makes it small)."""
    if pattern == "rows":
        return np.repeat((np.arange(SIDE, dtype=np.uint32) * 3 + f * 7).astype(np.uint16), SIDE)
    return (np.arange(SIDE * SIDE, dtype=np.uint32) * 3 + f * 7).astype(np.uint16)


def frames_for(mb):
    return max(1, mb * 1024 * 1024 // FRAME_BYTES)


def header(syntax, tag, vr, length):
    group, element = tag
    if syntax == "implicit":
        return struct.pack("<HHI", group, element, length)
    order = ">" if syntax == "big" else "<"
    return struct.pack(order + "HH", group, element) + vr + b"\0\0" + struct.pack(order + "I", length)


def make(args):
    frames = frames_for(args.mb)
    ts = ImplicitVRLittleEndian if args.syntax == "implicit" else ExplicitVRLittleEndian
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "BIG^INSTANCE"
    ds.PatientID = "BIG-1"
    ds.StudyDate = "20261204"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.Rows = SIDE
    ds.Columns = SIDE
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    ds.file_meta = meta
    dcmwrite(args.out, ds, enforce_file_format=True)
    with open(args.out, "ab") as out:
        out.write(header(args.syntax, (0x7FE0, 0x0010), b"OW", frames * FRAME_BYTES))
        for f in range(frames):
            out.write(frame(f, args.pattern).tobytes())
        out.write(header(args.syntax, (0xFFFC, 0xFFFC), b"OB", PADDING) + b"\0" * PADDING)
    print(ds.SOPInstanceUID, ds.StudyInstanceUID)


def check(args):
    frames = frames_for(args.mb)
    length = frames * FRAME_BYTES
    report = {"frames": frames, "problems": []}
    with open(args.file, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        pixel = header(args.syntax, (0x7FE0, 0x0010), b"OW", length)
        padding = header(args.syntax, (0xFFFC, 0xFFFC), b"OB", PADDING)
        value_at = len(data) - len(padding) - PADDING - length
        at = value_at - len(pixel)
        if at < 0 or data[at:value_at] != pixel:
            found = data.find(pixel, 0, 1 << 20)
            after = data[found + len(pixel) + length:] if found >= 0 else b""
            report["problems"].append(
                f"no Pixel Data header {pixel.hex()} at {at} of {len(data)} bytes; found at "
                f"{found}, followed after its value by {after[:64].hex()}")
        elif data[value_at + length:] != padding + b"\0" * PADDING:
            report["problems"].append("the trailing padding does not follow the pixel data")
        else:
            for f in range(frames):
                want = frame(f, args.pattern)
                if args.syntax == "big":
                    want = want.byteswap()
                got = data[value_at + f * FRAME_BYTES:value_at + (f + 1) * FRAME_BYTES]
                if got != want.tobytes():
                    report["problems"].append(f"frame {f} differs")
                    break
    report["identical"] = not report["problems"]
    print(json.dumps(report))
    sys.exit(0 if report["identical"] else 1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("out")
    m.add_argument("--mb", type=int, required=True)
    m.add_argument("--syntax", choices=["explicit", "implicit"], default="explicit")
    m.add_argument("--pattern", choices=["ramp", "rows"], default="ramp")
    c = sub.add_parser("check")
    c.add_argument("file")
    c.add_argument("--mb", type=int, required=True)
    c.add_argument("--syntax", choices=["explicit", "implicit", "big"], required=True)
    c.add_argument("--pattern", choices=["ramp", "rows"], default="ramp")
    args = p.parse_args()
    make(args) if args.command == "make" else check(args)


if __name__ == "__main__":
    main()

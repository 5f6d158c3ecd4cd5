#!/usr/bin/env python3
"""Compares the pixels of two DICOM files with independent decoders, for Strata's JPEG 2000
tests: pydicom reads both; JPEG 2000 fragments are decoded with pylibjpeg-openjpeg (OpenJPEG),
uncompressed pixel data is read as is. Prints one JSON object:

  {"transfer_syntax": UID, "frames": N, "identical": bool, "roi_identical": bool|null,
   "background_psnr": dB|null, "lossy": "01"|null, "ratio": [..], "method": [..],
   "derivation": str|null}

Usage: compare_pixels.py ORIGINAL OTHER [--roi x,y,w,h]   (OTHER may be a Part-10 file or a
bare data set written by a storage SCP, with --ts naming its transfer syntax)
"""
import argparse
import json
import math
import sys

import numpy as np
import pydicom
from pydicom.encaps import generate_frames
from openjpeg import decode

J2K = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}


def read(path, ts):
    if ts:
        with open(path, "rb") as f:
            raw = f.read()
        from pydicom.filebase import DicomBytesIO
        from pydicom.filereader import read_dataset
        buf = DicomBytesIO(raw)
        implicit = ts == "1.2.840.10008.1.2"
        ds = read_dataset(buf, is_implicit_VR=implicit, is_little_endian=True)
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ts
        return ds
    return pydicom.dcmread(path)


def frames(ds):
    ts = str(ds.file_meta.TransferSyntaxUID)
    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    rows, cols, spp = ds.Rows, ds.Columns, ds.SamplesPerPixel
    if ts in J2K:
        out = [np.asarray(decode(f)).astype(np.int64) for f in generate_frames(ds.PixelData, number_of_frames=n)]
        return [f.reshape(rows, cols, spp) if spp > 1 else f.reshape(rows, cols) for f in out]
    signed = ds.PixelRepresentation == 1
    dtype = np.dtype({8: np.uint8, 16: np.int16 if signed else np.uint16}[ds.BitsAllocated])
    if ts == "1.2.840.10008.1.2.2":  # Explicit VR Big Endian: 16-bit words high byte first
        dtype = dtype.newbyteorder(">")
    arr = np.frombuffer(ds.PixelData, dtype=dtype).astype(np.int64)
    per = rows * cols * spp
    out = []
    for i in range(n):
        f = arr[i * per:(i + 1) * per]
        out.append(f.reshape(rows, cols, spp) if spp > 1 else f.reshape(rows, cols))
    return out


def masked(a, bits, signed):
    a = a & ((1 << bits) - 1)
    if signed:
        a = np.where(a >> (bits - 1) & 1, a - (1 << bits), a)
    return a


def main():
    p = argparse.ArgumentParser()
    p.add_argument("original")
    p.add_argument("other")
    p.add_argument("--ts", help="transfer syntax of OTHER when it is a bare data set")
    p.add_argument("--roi")
    args = p.parse_args()
    a_ds, b_ds = read(args.original, None), read(args.other, args.ts)
    bits, signed = a_ds.BitsStored, a_ds.PixelRepresentation == 1
    # Each image at its own declared depth: bits the other sets above the original's depth
    # count as differences, not clipped away.
    fa = [masked(f, bits, signed) for f in frames(a_ds)]
    fb = [masked(f, b_ds.BitsStored, b_ds.PixelRepresentation == 1) for f in frames(b_ds)]
    same_frames = len(fa) == len(fb) and all(x.shape == y.shape for x, y in zip(fa, fb))
    identical = same_frames and all((x == y).all() for x, y in zip(fa, fb))
    roi_identical = psnr = None
    if args.roi and not same_frames:
        # A missing or misshapen frame is a difference, whatever the others hold.
        roi_identical, psnr = False, 0.0
    elif args.roi:
        x, y, w, h = map(int, args.roi.split(","))
        roi_identical = all((p[y:y + h, x:x + w] == q[y:y + h, x:x + w]).all() for p, q in zip(fa, fb))
        se, n = 0.0, 0
        for p, q in zip(fa, fb):
            m = np.ones(p.shape[:2], bool)
            m[y:y + h, x:x + w] = False
            d = (p - q)[m].astype(np.float64)
            se += float((d * d).sum())
            n += d.size
        peak = (1 << bits) - 1
        psnr = float("inf") if se == 0 else 10 * math.log10(peak * peak / (se / n))

    def multi(name):
        v = b_ds.get(name)
        if v is None:
            return None
        return [str(x) for x in v] if isinstance(v, pydicom.multival.MultiValue) else [str(v)]

    print(json.dumps({
        "transfer_syntax": str(b_ds.file_meta.TransferSyntaxUID),
        "frames": len(fb),
        "original_frames": len(fa),
        "bits_stored": int(b_ds.BitsStored),
        "identical": bool(identical),
        "roi_identical": roi_identical,
        "background_psnr": psnr if psnr is None or math.isfinite(psnr) else 999.0,
        "lossy": b_ds.get("LossyImageCompression"),
        "ratio": multi("LossyImageCompressionRatio"),
        "method": multi("LossyImageCompressionMethod"),
        "derivation": b_ds.get("DerivationDescription"),
        "sop_instance_uid": b_ds.get("SOPInstanceUID"),
    }))


if __name__ == "__main__":
    sys.exit(main())

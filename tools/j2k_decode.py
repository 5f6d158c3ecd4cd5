#!/usr/bin/env python3
"""Decodes a JPEG 2000 codestream with pylibjpeg-openjpeg (OpenJPEG via Cython) for the
j2k integration tests: writes the samples as little-endian int32, interleaved for colour,
to OUT and prints "width height components" on stdout.

Usage: j2k_decode.py IN.j2c OUT.i32
"""
import sys

import numpy as np
from openjpeg import decode


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, "rb") as f:
        arr = decode(f.read())
    arr = np.asarray(arr)
    h, w = arr.shape[0], arr.shape[1]
    comps = 1 if arr.ndim == 2 else arr.shape[2]
    arr.astype("<i4").tofile(dst)
    print(w, h, comps)


if __name__ == "__main__":
    main()

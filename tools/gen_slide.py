#!/usr/bin/env python3
"""A synthetic slide-like RGB image for the whole-slide benchmark (tools/bench.sh, wsi section).

    gen_slide.py --out PATH.png --width W --height H [--seed 1]
    gen_slide.py --out PATH.tif --width W --height H [--seed 1] [--tile 0|T]
                 [--compression none|deflate|jpeg] [--icc PROFILE.icc]

Writes an 8-bit RGB PNG, or (by the extension .tif/.tiff) a baseline TIFF: strips of 64 rows
(--tile 0) or T x T tiles, uncompressed, Deflate (zlib) or JPEG (each strip or tile a whole
JFIF stream, quality 95, 4:4:4, Photometric YCbCr, as scanners write them), with the ICC profile
of --icc in tag 34675. Either is: a near-white background with pink (eosin) tissue blobs dotted with
purple (haematoxylin) nuclei and a fine fibre-like texture, so that JPEG tiles look like a
real slide's rather than flat colour. Prints `slide W H bytes seconds` (bytes of the PNG).

The same (width, height, seed) always gives the same pixels, and any rectangle of them can be
computed on its own: `Slide(width, height, seed).region(x, y, w, h)` (importable; used by
tools/wsi_check.py) returns exactly what the PNG holds there, without reading it. Every value
comes from integer arithmetic and table look-ups, so it does not depend on how the image is cut
into pieces. The PNG is written band by band (64 rows), each band compressed (zlib level 1) on
its own raw deflate stream ending in a sync flush, as pigz does, so two threads can make and
compress bands at once while memory stays a few bands whatever the image size.
"""
import argparse
import collections
import struct
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

BAND = 64  # rows per band
NUCLEI_PERIOD = (1031, 1021)  # (rows, columns) of the repeating nuclei table
TEXTURE_PERIOD = (521, 509)  # of the repeating texture table (prime-ish, unlike any tile size)


class Slide:
    """The pixels of one synthetic slide, computed for any rectangle."""

    def __init__(self, width, height, seed=1):
        self.width, self.height = width, height
        rng = np.random.default_rng(seed)
        # Tissue: two octaves of value noise (random values on a coarse grid, bilinearly
        # interpolated in integers); cells are powers of two so the division is a shift.
        self.shift = max(5, int(np.log2(max(width, height) / 12)))
        self.grids = []
        for shift in (self.shift, self.shift - 2):
            cells = ((height >> shift) + 2, (width >> shift) + 2)
            self.grids.append((shift, rng.integers(0, 256, size=cells, dtype=np.int32)))
        # Texture: random values smoothed twice over 3x3 (fibres of a few pixels, as a scanner's
        # optics leave them), 0..31 around 16.
        t = rng.integers(0, 32, size=TEXTURE_PERIOD).astype(np.int32)
        for _ in range(2):
            t = sum(np.roll(np.roll(t, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        self.texture = np.clip((t - 1256) * 6 // 175 + 16, 0, 31).astype(np.uint16)
        # Nuclei: disks of radius 6-14 (3-7 um across at 0.25 um a pixel) with edges blurred
        # over ~3 pixels, on a periodic table; strength 0..31, put in bits 5-9.
        n = np.zeros(NUCLEI_PERIOD, dtype=np.int32)
        count = NUCLEI_PERIOD[0] * NUCLEI_PERIOD[1] // 1500
        for cy, cx, r in zip(rng.integers(0, NUCLEI_PERIOD[0], count),
                             rng.integers(0, NUCLEI_PERIOD[1], count), rng.integers(6, 15, count)):
            ys, xs = np.ogrid[-r - 1:r + 2, -r - 1:r + 2]
            disk = np.clip((r * r - (ys * ys + xs * xs)) * 31 // (6 * r), 0, 31)
            rows = (cy + np.arange(-r - 1, r + 2)) % NUCLEI_PERIOD[0]
            cols = (cx + np.arange(-r - 1, r + 2)) % NUCLEI_PERIOD[1]
            n[np.ix_(rows, cols)] = np.maximum(n[np.ix_(rows, cols)], disk)
        self.nuclei = (n << 5).astype(np.uint16)
        self.lut = self._colours()

    @staticmethod
    def _colours():
        """RGB for every (tissue level 0..63, nucleus 0..31, texture 0..31): index t<<10|n<<5|x."""
        t, n, x = (a[..., None] for a in np.meshgrid(
            np.arange(64) * 4 + 2, np.arange(32), np.arange(32) - 16, indexing="ij"))
        mask = np.clip((t - 136) * 8, 0, 255)  # 0 outside tissue, 255 inside, soft edge
        depth = np.clip(t - 136, 0, 119)  # denser pink deeper inside a blob
        eosin = np.array([236, 150, 196]) - depth * np.array([20, 45, 25]) // 119 + x * 2
        haem = np.array([92, 58, 150]) + x
        tissue = (eosin * (31 - n) + haem * n) // 31
        background = 252 + x // 6
        rgb = (background * (255 - mask) + tissue * mask + 127) // 255
        return np.clip(rgb, 0, 255).astype(np.uint8).reshape(-1, 3)

    def tissue(self, xs, ys):
        """Tissue level 0..255 at the grid of xs (columns) and ys (rows), int32 arrays; above 136
        is tissue."""
        total = 0
        for weight, (shift, grid) in zip((3, 1), self.grids):
            c = 1 << shift
            gx, fx = xs >> shift, xs & (c - 1)
            gy, fy = ys >> shift, ys & (c - 1)
            g0 = gy[0]
            rows = grid[g0:gy[-1] + 2]
            # Along x, for each grid row the band needs, then along y per pixel.
            along = (rows[:, gx] * (c - fx) + rows[:, gx + 1] * fx) >> shift
            a = along[gy - g0]
            b = along[gy - g0 + 1]
            total = total + weight * (a + (((b - a) * fy[:, None]) >> shift))
        return total >> 2

    def region(self, x, y, w, h):
        """The pixels of columns x..x+w-1 and rows y..y+h-1, (h, w, 3) uint8."""
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > self.width or y + h > self.height:
            raise ValueError(f"region {x},{y} {w}x{h} outside {self.width}x{self.height}")
        xs = np.arange(x, x + w, dtype=np.int32)
        ys = np.arange(y, y + h, dtype=np.int32)
        index = (self.tissue(xs, ys) >> 2).astype(np.uint16) << 10
        nuclei = self.nuclei[ys % NUCLEI_PERIOD[0]]
        index |= np.take(nuclei, xs % NUCLEI_PERIOD[1], axis=1)
        texture = self.texture[ys % TEXTURE_PERIOD[0]]
        index |= np.take(texture, xs % TEXTURE_PERIOD[1], axis=1)
        return self.lut[index]


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path, slide):
    w, h = slide.width, slide.height
    bands = range(0, h, BAND)

    def band(y):
        rows = min(BAND, h - y)
        raw = np.zeros((rows, 1 + 3 * w), dtype=np.uint8)  # filter byte 0 (None) per row
        raw[:, 1:] = slide.region(0, y, w, rows).reshape(rows, 3 * w)
        raw = raw.tobytes()
        z = zlib.compressobj(1, zlib.DEFLATED, -15)  # raw deflate: one stream per band
        last = y + BAND >= h
        return raw, z.compress(raw) + z.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)

    with open(path, "wb") as out, ThreadPoolExecutor(2) as pool:
        out.write(b"\x89PNG\r\n\x1a\n")
        out.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)))
        out.write(chunk(b"IDAT", b"\x78\x01"))  # zlib header: deflate, 32K window, level 1
        adler = 1  # of the whole uncompressed stream, for the zlib trailer
        pending = collections.deque()
        for y in list(bands) + [None]:
            if y is not None:
                pending.append(pool.submit(band, y))
            # In order, keeping at most 4 bands in flight (all at the end).
            while pending and (len(pending) >= 4 or y is None):
                raw, packed = pending.popleft().result()
                adler = zlib.adler32(raw, adler)
                out.write(chunk(b"IDAT", packed))
        out.write(chunk(b"IDAT", struct.pack(">I", adler)))
        out.write(chunk(b"IEND", b""))
        return out.tell()


TIFF_TYPES = {"SHORT": (3, "H"), "LONG": (4, "I"), "UNDEFINED": (7, "B"), "RATIONAL": (5, "II")}


def encode_chunk(pixels, compression):
    """One strip or tile's bytes as stored."""
    if compression == "deflate":
        return zlib.compress(pixels.tobytes(), 1)
    if compression == "jpeg":
        import io
        from PIL import Image
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "JPEG", quality=95, subsampling=0)
        return out.getvalue()
    return pixels.tobytes()


def write_tiff(path, slide, tile, compression, icc):
    """A little-endian classic TIFF, written chunk by chunk (two threads encode); the IFD and
    the offset tables at the end."""
    w, h = slide.width, slide.height
    if tile:
        if tile % 16:
            sys.exit("--tile: a multiple of 16")
        # Tiles are whole: the right and bottom ones padded with black.
        boxes = [(x, y, tile, tile) for y in range(0, h, tile) for x in range(0, w, tile)]
    else:
        boxes = [(0, y, w, min(BAND, h - y)) for y in range(0, h, BAND)]

    def chunk_bytes(box):
        x, y, cw, ch = box
        pixels = np.zeros((ch, cw, 3), dtype=np.uint8)
        rw, rh = min(cw, w - x), min(ch, h - y)
        pixels[:rh, :rw] = slide.region(x, y, rw, rh)
        return encode_chunk(pixels, compression)

    offsets, lengths = [], []
    with open(path, "wb") as out, ThreadPoolExecutor(2) as pool:
        out.write(b"II*\0" + struct.pack("<I", 0))  # IFD offset patched at the end
        pending = collections.deque()
        for box in boxes + [None]:
            if box is not None:
                pending.append(pool.submit(chunk_bytes, box))
            while pending and (len(pending) >= 4 or box is None):
                data = pending.popleft().result()
                offsets.append(out.tell())
                lengths.append(len(data))
                out.write(data)
                if out.tell() % 2:
                    out.write(b"\0")
        entries = [
            (256, "LONG", [w]), (257, "LONG", [h]), (258, "SHORT", [8, 8, 8]),
            (259, "SHORT", [{"none": 1, "deflate": 8, "jpeg": 7}[compression]]),
            (262, "SHORT", [6 if compression == "jpeg" else 2]),
            (277, "SHORT", [3]), (284, "SHORT", [1]),
        ]
        if tile:
            entries += [(322, "LONG", [tile]), (323, "LONG", [tile]),
                        (324, "LONG", offsets), (325, "LONG", lengths)]
        else:
            entries += [(273, "LONG", offsets), (278, "LONG", [BAND]), (279, "LONG", lengths)]
        if compression == "jpeg":
            entries.append((530, "SHORT", [1, 1]))  # YCbCr subsampling as the JPEG has it: none
        if icc:
            entries.append((34675, "UNDEFINED", list(icc)))
        entries.sort()
        # Values too long for the entry go before the IFD.
        placed = []
        for tag, kind, values in entries:
            code, fmt = TIFF_TYPES[kind]
            data = struct.pack("<%d%s" % (len(values), fmt), *values)
            if len(data) > 4:
                if out.tell() % 2:
                    out.write(b"\0")
                at = out.tell()
                out.write(data)
                data = struct.pack("<I", at)
            placed.append(struct.pack("<HHI", tag, code, len(values)) + data.ljust(4, b"\0"))
        if out.tell() % 2:
            out.write(b"\0")
        ifd = out.tell()
        out.write(struct.pack("<H", len(placed)) + b"".join(placed) + struct.pack("<I", 0))
        size = out.tell()
        out.seek(4)
        out.write(struct.pack("<I", ifd))
        return size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tile", type=int, default=0, help="TIFF: tile side, 0 for strips")
    ap.add_argument("--compression", choices=["none", "deflate", "jpeg"], default="deflate",
                    help="TIFF: how strips or tiles are compressed")
    ap.add_argument("--icc", help="TIFF: an ICC profile file to embed")
    args = ap.parse_args()
    if args.width < 1 or args.height < 1:
        sys.exit("width and height must be positive")
    t0 = time.perf_counter()
    slide = Slide(args.width, args.height, args.seed)
    if args.out.lower().endswith((".tif", ".tiff")):
        icc = open(args.icc, "rb").read() if args.icc else None
        size = write_tiff(args.out, slide, args.tile, args.compression, icc)
    else:
        size = write_png(args.out, slide)
    print(f"slide {args.width} {args.height} {size} {time.perf_counter() - t0:.2f}")


if __name__ == "__main__":
    main()

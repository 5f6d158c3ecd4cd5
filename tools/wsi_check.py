#!/usr/bin/env python3
"""Checks a whole-slide series made by `strata wsi import` from a tools/gen_slide.py image, read
back over DICOMweb by wsidicom, against the pixels the pyramid rule gives.

    wsi_check.py --url URL --study UID --series UID --source-width W --source-height H
                 --seed N --tile T [--codec jpeg|j2k] [--mpp 0.25] [--max-mad 6.0]
    wsi_check.py --dcmdump DIR [--series UID] [--icc PROFILE.icc]

The pyramid rule: level 0 is the source; level k+1 is ceil(w/2) x ceil(h/2), each pixel the
(sum + 2) // 4 of its 2x2 level-k pixels (coordinates clamped to the level), channel by channel;
the last level is the first that fits one tile. The check opens the series with wsidicom
(`WsiDicom.open_web`, asking for the codec's transfer syntax: JPEG baseline or JPEG 2000
lossless), requires exactly those levels (wsidicom numbers levels by pixel spacing, so level k
must state 2^k times level 0's; with --mpp, level 0's must be that), then at every level reads 3
regions (the most tissue of 16 seeded positions, one off the centre across tile edges, one
touching the right and bottom edges; 512 pixels a side at most, less from level 4 up so that a
region needs at most 4096 x 4096 source pixels) and compares them with the exact pixels,
computed procedurally from the seed (gen_slide.Slide) band by band in bounded memory. Prints per level:
    level k WxH regions n mean_abs_diff d
(d the largest per-channel mean absolute difference of its regions) and exits 1 on any
failure: JPEG when d > --max-mad, JPEG 2000 lossless when any pixel differs.

The default bound, 6.0 of 255, was measured on gen_slide.py images (2000x1500 to 20000x20000,
seeds 1-7) with these regions, tiles encoded by libjpeg-turbo at quality 90 and 4:2:2 chroma
subsampling (what `strata wsi import` writes; its own output measured within 0.05 of that): the
worst region is 1.3-2.0 at level 0, up to 4.1 at the middle levels and up to 4.9 at a small top
level (every pixel the mean of 16 x 16 source pixels or more: the densest detail); 4:4:4 stays
under 4.0 and 4:2:0 under 5.6. A mislabelled colour space or a tile out of place gives 30-85, a
level made from the next one up 7-11; smaller pyramid mistakes are left to JPEG 2000 lossless,
which must be exact.

--dcmdump DIR checks every .dcm under DIR (of series --series, if given): DCMTK's `dcmdump -q` parses it (exit 0); dicom3tools'
`dciodvfy` (the IOD validator) reports no error against the VL Whole Slide Microscopy Image IOD
(warnings are printed, not failed); and its Optical Path carries an ICC profile that littleCMS
(Pillow's ImageCms) opens, byte for byte the file of --icc when given.
"""
import argparse
import math
import os
import subprocess
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_slide import Slide  # noqa: E402

TRANSFER_SYNTAX = {"jpeg": "1.2.840.10008.1.2.4.50", "j2k": "1.2.840.10008.1.2.4.90"}
BUDGET = 1 << 20  # pixels of the level below computed at once, per level of recursion


def level_sizes(width, height, tile):
    """(w, h) of every level, finest first, by the pyramid rule."""
    sizes = [(width, height)]
    while width > tile or height > tile:
        width, height = (width + 1) // 2, (height + 1) // 2
        sizes.append((width, height))
    return sizes


def expected(slide, sizes, k, x, y, w, h):
    """The exact pixels of level k at columns x..x+w-1, rows y..y+h-1: (h, w, 3) uint8.

    Level k-1 is computed for a band of rows at a time (at most BUDGET pixels), recursively,
    so memory stays bounded whatever k."""
    if k == 0:
        return slide.region(x, y, w, h)
    below_w, below_h = sizes[k - 1]
    xs = np.minimum(2 * x + np.arange(2 * w), below_w - 1)  # clamped columns below
    x0 = int(xs[0])
    xs -= x0
    out = np.empty((h, w, 3), dtype=np.uint8)
    band = max(1, BUDGET // (4 * w))
    for r in range(0, h, band):
        n = min(band, h - r)
        ys = np.minimum(2 * (y + r) + np.arange(2 * n), below_h - 1)
        y0 = int(ys[0])
        below = expected(slide, sizes, k - 1, x0, y0, int(xs[-1]) + 1, int(ys[-1]) - y0 + 1)
        q = below[ys - y0][:, xs].astype(np.uint16)
        out[r:r + n] = (q[0::2, 0::2] + q[0::2, 1::2] + q[1::2, 0::2] + q[1::2, 1::2] + 2) >> 2
    return out


def tissue_share(slide, k, x, y, w, h):
    """Roughly how much of a level-k region is tissue (sampled every 8 pixels)."""
    xs = np.minimum((x + np.arange(0, w, 8)) << k, slide.width - 1).astype(np.int32)
    ys = np.minimum((y + np.arange(0, h, 8)) << k, slide.height - 1).astype(np.int32)
    return float((slide.tissue(xs, ys) > 140).mean())


def regions(slide, k, size, seed):
    """The (x, y, w, h) regions read at level k of `size`, deterministic: the most tissue of 16
    seeded positions (background alone would hide most mistakes), one off the centre across
    tile edges, one touching the right and bottom edges; fewer if they coincide."""
    lw, lh = size
    side = min(512, max(16, 4096 >> k))
    w, h = min(side, lw), min(side, lh)
    rng = np.random.default_rng([seed, k])
    picks = [(int(rng.integers(0, lw - w + 1)), int(rng.integers(0, lh - h + 1))) for _ in range(16)]
    x, y = max(picks, key=lambda p: tissue_share(slide, k, p[0], p[1], w, h))
    cx = max(0, min(lw - w, lw // 2 - w // 2 + 37))
    cy = max(0, min(lh - h, lh // 2 - h // 2 + 61))
    return list(dict.fromkeys([(x, y, w, h), (cx, cy, w, h), (lw - w, lh - h, w, h)]))


def dcmdump_all(folder, series, icc):
    for tool in ("/usr/bin/dcmdump", "/usr/bin/dciodvfy"):
        if not os.path.exists(tool):
            sys.exit(f"--dcmdump: {tool} (DCMTK, dicom3tools) is not installed")
    import pydicom
    files = sorted(os.path.join(d, f) for d, _, names in os.walk(folder)
                   for f in names if f.endswith(".dcm"))
    if series:
        files = [f for f in files
                 if pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID == series]
    if not files:
        sys.exit(f"--dcmdump: no .dcm file under {folder}")
    for path in files:
        run = subprocess.run(["/usr/bin/dcmdump", "-q", path], capture_output=True, text=True)
        if run.returncode != 0:  # -q says nothing: the reason, from a run without it
            why = subprocess.run(["/usr/bin/dcmdump", path], capture_output=True, text=True)
            sys.exit(f"dcmdump -q {path} exited {run.returncode}: {why.stderr.strip()[-500:]}")
        run = subprocess.run(["/usr/bin/dciodvfy", path], capture_output=True, text=True)
        report = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
        errors = [line for line in report if line.startswith("Error")]
        for line in report:
            if line.startswith("Warning"):
                print(f"dciodvfy {os.path.basename(path)}: {line}")
        if errors or "WholeSlideMicroscopy" not in "".join(report):
            sys.exit(f"dciodvfy {path}:\n  " + "\n  ".join(errors or report[-20:]))
        check_icc(path, icc)
    print(f"dcmdump and dciodvfy {len(files)} files ok")


def check_icc(path, icc):
    """The Optical Path's ICC profile opens with littleCMS (and is --icc's, given)."""
    import io
    import pydicom
    from PIL import ImageCms
    paths = pydicom.dcmread(path, stop_before_pixels=True).get("OpticalPathSequence") or []
    profile = paths[0].get("ICCProfile") if paths else None
    if not profile:
        sys.exit(f"{path}: no ICC Profile in the Optical Path Sequence")
    try:
        ImageCms.ImageCmsProfile(io.BytesIO(profile))
    except (OSError, ImageCms.PyCMSError) as e:
        sys.exit(f"{path}: littleCMS cannot open its ICC profile: {e}")
    if icc is not None and bytes(profile) != icc:
        sys.exit(f"{path}: ICC profile of {len(profile)} bytes is not the source's ({len(icc)})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("--study")
    ap.add_argument("--series")
    ap.add_argument("--source-width", type=int)
    ap.add_argument("--source-height", type=int)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--codec", choices=sorted(TRANSFER_SYNTAX), default="jpeg")
    ap.add_argument("--mpp", type=float, help="level 0's pixel spacing, micrometres (checked if given)")
    ap.add_argument("--max-mad", type=float, default=6.0,
                    help="JPEG: largest per-channel mean absolute difference allowed (of 255)")
    ap.add_argument("--dcmdump", metavar="DIR")
    ap.add_argument("--icc", help="--dcmdump: the ICC profile every instance must carry")
    args = ap.parse_args()
    if args.dcmdump:
        dcmdump_all(args.dcmdump, args.series, open(args.icc, "rb").read() if args.icc else None)
        if not args.url:
            return
    needed = ("url", "study", "series", "source_width", "source_height")
    missing = [o for o in needed if getattr(args, o) is None]
    if missing:
        ap.error("missing " + ", ".join("--" + m.replace("_", "-") for m in missing))

    from wsidicom import WsiDicom, WsiDicomWebClient  # slow to import: only when used

    # The metadata names Pixel Data by a BulkDataURI, which wsidicom does not need.
    warnings.filterwarnings("ignore", message="No bulk data URI handler")

    client = WsiDicomWebClient.create_client(args.url)
    wsi = WsiDicom.open_web(client, args.study, args.series,
                            requested_transfer_syntax=TRANSFER_SYNTAX[args.codec])
    failures = []
    if len(wsi.pyramids) != 1:  # levels disagreeing on origin or orientation split the pyramid
        sys.exit(f"{len(wsi.pyramids)} pyramids, want 1: {[p.size for p in wsi.pyramids]}")
    sizes = level_sizes(args.source_width, args.source_height, args.tile)
    got = [(lv.level, lv.size.width, lv.size.height) for lv in wsi.levels.levels]
    want = [(k, w, h) for k, (w, h) in enumerate(sizes)]
    if got != want:
        sys.exit(f"levels (index, width, height): got {got}, want {want}")
    if (wsi.tile_size.width, wsi.tile_size.height) != (args.tile, args.tile):
        sys.exit(f"tile size {wsi.tile_size}, want {args.tile}")
    if args.mpp is not None:
        for lv in wsi.levels.levels:
            want_mpp = args.mpp * 2 ** lv.level
            if not math.isclose(lv.mpp.width, want_mpp, rel_tol=1e-3) or not math.isclose(
                    lv.mpp.height, want_mpp, rel_tol=1e-3):
                failures.append(f"level {lv.level}: mpp {lv.mpp}, want {want_mpp}")

    slide = Slide(args.source_width, args.source_height, args.seed)
    for k, size in enumerate(sizes):
        worst = 0.0
        rs = regions(slide, k, size, args.seed)
        for x, y, w, h in rs:
            read = np.asarray(wsi.read_region((x, y), k, (w, h)).convert("RGB"))
            diff = np.abs(read.astype(np.int16) - expected(slide, sizes, k, x, y, w, h))
            mad = float(diff.mean(axis=(0, 1)).max())
            worst = max(worst, mad)
            if args.codec == "j2k" and diff.max() != 0:
                failures.append(f"level {k} region {x},{y} {w}x{h}: "
                                f"{np.count_nonzero(diff.any(axis=2))} pixels differ (max "
                                f"{diff.max()}), JPEG 2000 lossless must be exact")
            elif args.codec == "jpeg" and mad > args.max_mad:
                per_channel = np.round(diff.mean(axis=(0, 1)), 3)
                failures.append(f"level {k} region {x},{y} {w}x{h}: mean absolute difference "
                                f"{mad:.3f} > {args.max_mad} (per channel {per_channel})")
        print(f"level {k} {size[0]}x{size[1]} regions {len(rs)} mean_abs_diff {worst:.3f}", flush=True)
    wsi.close()
    if failures:
        sys.exit("FAILED:\n  " + "\n  ".join(failures))


if __name__ == "__main__":
    main()

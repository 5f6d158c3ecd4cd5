#!/usr/bin/env python3
"""Tile fetch latency of a whole-slide instance over WADO-RS, for tools/bench.sh (wsi section).

    bench_tiles.py --url http://127.0.0.1:PORT/dicom-web --study UID --series UID --instance UID
                   --frames N [--requests 200] [--seed 1] [--codec jpeg|j2k]

Fetches random frames (seeded, uniform over 1..N), one frame a request, one after another on
one keep-alive session, as a viewer panning over a slide does, asking for the frames as stored:
`multipart/related; type="image/jpeg"` (JPEG baseline) or `type="image/jp2"` (JPEG 2000
lossless). Every answer must be a 200 multipart whose one part is a JPEG or J2K codestream.
5 frames fetched first are not counted. Prints one line:
    tiles p50_ms p95_ms requests
"""
import argparse
import random
import sys
import time

import requests

# Accept header, and the signatures a part may start with: JPEG SOI; J2K codestream SOC+SIZ or
# a JP2 file's signature box.
ACCEPT = {
    "jpeg": ('multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50',
             (b"\xff\xd8\xff",)),
    "j2k": ('multipart/related; type="image/jp2"; transfer-syntax=1.2.840.10008.1.2.4.90',
            (b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")),
}


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def fetch(session, url, accept, signatures):
    r = session.get(url, headers={"Accept": accept})
    if r.status_code != 200:
        sys.exit(f"{url}: {r.status_code} {r.text[:200]}")
    if not r.headers.get("Content-Type", "").startswith("multipart/related"):
        sys.exit(f"{url}: Content-Type {r.headers.get('Content-Type')!r}, not multipart/related")
    # The part's body starts after its headers' blank line.
    at = r.content.find(b"\r\n\r\n")
    if at < 0 or not r.content[at + 4:].startswith(signatures):
        sys.exit(f"{url}: the part does not start as {accept.split(';')[1].strip()} should")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--study", required=True)
    ap.add_argument("--series", required=True)
    ap.add_argument("--instance", required=True)
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--codec", choices=sorted(ACCEPT), default="jpeg")
    args = ap.parse_args()
    base = f"{args.url}/studies/{args.study}/series/{args.series}/instances/{args.instance}/frames/"
    accept, signatures = ACCEPT[args.codec]
    pick = random.Random(args.seed)
    times = []
    with requests.Session() as s:
        for i in range(5 + args.requests):
            url = base + str(pick.randint(1, args.frames))
            t0 = time.perf_counter()
            fetch(s, url, accept, signatures)
            if i >= 5:
                times.append((time.perf_counter() - t0) * 1000)
    print(f"tiles {percentile(times, 50):.3f} {percentile(times, 95):.3f} {len(times)}")


if __name__ == "__main__":
    main()

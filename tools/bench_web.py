#!/usr/bin/env python3
"""DICOMweb timings of one server, for tools/bench.sh (Strata and Orthanc's DICOMweb plugin
with the same client, one keep-alive connection, Nagle off on both ends by default in
requests/urllib3).

    bench_web.py --url http://127.0.0.1:PORT/dicom-web --study UID [--patient-id ID] [--runs N]
        [--only metadata|rendered|thumbnail|viewport] [--stow DIR]

Prints one line per measure, `name value...`:
  qido-<query> p50_ms p95_ms matches     study searches (PatientID, name prefix, date range)
  metadata p50_ms p95_ms instances      /studies/{study}/metadata
  wado-study mb_s bytes                 the study as multipart/related, median of 3
  rendered images_s                     /rendered of the study's middle instance, sequential
  stow mb_s bytes                       --stow DIR: every .dcm file there in one STOW-RS request
  thumbnail p50_ms p95_ms images        --only thumbnail: /thumbnail (PNG) of every instance of
                                          the study, once each
  viewport-256 p50_ms p95_ms images     --only viewport: /rendered?viewport=256,256 (PNG), the same
"""
import argparse
import glob
import os
import statistics
import subprocess
import sys
import time
import urllib.parse

import requests


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def timed(session, url, runs, **kwargs):
    times, last = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        last = session.get(url, **kwargs)
        last.content
        times.append((time.perf_counter() - t0) * 1000)
        if last.status_code != 200:
            sys.exit(f"{url}: {last.status_code} {last.text[:200]}")
    return percentile(times, 50), percentile(times, 95), last


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--study", required=True)
    ap.add_argument("--patient-id")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--only", choices=["metadata", "rendered", "thumbnail", "viewport"])
    ap.add_argument("--stow")
    args = ap.parse_args()
    s = requests.Session()
    json_accept = {"Accept": "application/dicom+json"}

    if args.stow:
        files = sorted(glob.glob(os.path.join(args.stow, "*.dcm")))
        boundary = "bench-boundary-5e1c"
        body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                        + open(f, "rb").read() + b"\r\n" for f in files) + f"--{boundary}--\r\n".encode()
        t0 = time.perf_counter()
        r = s.post(f"{args.url}/studies", data=body, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            **json_accept})
        elapsed = time.perf_counter() - t0
        if r.status_code != 200:
            sys.exit(f"STOW-RS: {r.status_code} {r.text[:300]}")
        print(f"stow {len(body) / elapsed / 1048576:.1f} {len(body)}")
        return

    if args.only in ("thumbnail", "viewport"):
        reduced(s, args)
        return

    if args.only is None:
        # Query strings as viewers send them (JavaScript's encodeURIComponent leaves `*`
        # alone): requests would send M%2A, which Orthanc does not decode to a wildcard.
        queries = [("patient-id", f"PatientID={urllib.parse.quote(args.patient_id)}"),
                   ("name-M*", "PatientName=M*"),
                   ("year", "StudyDate=20200101-20201231")]
        for name, params in queries:
            p50, p95, last = timed(s, f"{args.url}/studies", args.runs, params=params, headers=json_accept)
            print(f"qido-{name} {p50:.2f} {p95:.2f} {len(last.json())}")

    if args.only != "rendered":
        p50, p95, last = timed(s, f"{args.url}/studies/{args.study}/metadata", min(args.runs, 20),
                               headers=json_accept)
        print(f"metadata {p50:.2f} {p95:.2f} {len(last.json())}")
    if args.only == "metadata":
        return

    # curl, not requests: Python's reading of a 1.5 GB/s body would be what is measured.
    rates, size = [], 0
    for _ in range(0 if args.only == "rendered" else 3):
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}",
                              "-H", 'Accept: multipart/related; type="application/dicom"',
                              f"{args.url}/studies/{args.study}"], capture_output=True, text=True, check=True)
        code, size, seconds = out.stdout.split()
        if code != "200":
            sys.exit(f"WADO-RS: {code}")
        size = int(size)
        rates.append(size / float(seconds) / 1048576)
    if rates:
        print(f"wado-study {statistics.median(rates):.1f} {size}")

    instances = s.get(f"{args.url}/studies/{args.study}/instances", headers=json_accept).json()
    instances.sort(key=lambda i: int((i.get("00200013", {}).get("Value") or [0])[0]))
    middle = instances[len(instances) // 2]
    uid = lambda obj, tag: obj[tag]["Value"][0]
    url = (f"{args.url}/studies/{args.study}/series/{uid(middle, '0020000E')}"
           f"/instances/{uid(middle, '00080018')}/rendered")
    runs = max(args.runs, 20)
    t0 = time.perf_counter()
    for _ in range(runs):
        r = s.get(url, headers={"Accept": "image/jpeg"})
        if r.status_code != 200 or r.content[:2] != b"\xff\xd8":
            sys.exit(f"/rendered: {r.status_code} {r.headers.get('Content-Type')}")
    print(f"rendered {runs / (time.perf_counter() - t0):.1f}")


def reduced(s, args):
    """Thumbnails, or 256-pixel viewport renders, of every instance of the study, each once
    (a viewer's first look: nothing cached)."""
    json_accept = {"Accept": "application/dicom+json"}
    instances = s.get(f"{args.url}/studies/{args.study}/instances", headers=json_accept).json()
    uid = lambda obj, tag: obj[tag]["Value"][0]
    urls = [f"{args.url}/studies/{args.study}/series/{uid(i, '0020000E')}/instances/{uid(i, '00080018')}"
            for i in instances]
    name, what = {"thumbnail": ("thumbnail", "thumbnail"),
                  "viewport": ("viewport-256", "rendered?viewport=256,256")}[args.only]
    times = []
    for url in urls:
        t0 = time.perf_counter()
        r = s.get(f"{url}/{what}", headers={"Accept": "image/png"})
        r.content
        times.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200 or r.content[:4] != b"\x89PNG":
            sys.exit(f"{url}/{what}: {r.status_code} {r.headers.get('Content-Type')}")
    print(f"{name} {percentile(times, 50):.2f} {percentile(times, 95):.2f} {len(times)}")


if __name__ == "__main__":
    main()

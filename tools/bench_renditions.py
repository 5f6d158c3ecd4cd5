#!/usr/bin/env python3
"""A replay of rendered-image requests for the rendition cache, for tools/bench.sh.

    bench_renditions.py --url http://127.0.0.1:PORT/dicom-web --manifest CORPUS/manifest.json
        [--instances 2000] [--requests 20000] [--zipf 1.0] [--clients 2] [--seed 1] [--sizes]

The first N instances of the corpus manifest, shuffled (seeded), are ranked by popularity;
requests pick a rank with probability proportional to 1/rank^s (Zipf). Each instance has one
rendition: the 128-pixel /thumbnail at even ranks, the full-size /rendered at odd ranks (JPEG),
so the renditions differ in size and in cost. The same seed gives the same sequence.

Prints one line:
  sizes total_bytes renditions          --sizes: every rendition fetched once
  replay mean_ms p50_ms p95_ms requests the sequence, sent by C clients at once (each the
                                          next request not yet sent)
  bound mean_ms hit_ratio               --bound FILE --budget BYTES --hit-ms H: the lowest mean
                                          latency any cache of BYTES could give this sequence
                                          (knowing it in advance: the renditions saving the
                                          most time per byte kept from the start), from the
                                          per-rendition latencies and sizes --record FILE
                                          wrote during a replay without cache, a hit costing H
"""
import argparse
import bisect
import itertools
import json
import random
import sys
import threading
import time

import requests


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def renditions(manifest, count, seed):
    with open(manifest, encoding="utf-8") as f:
        instances = json.load(f)[:count]
    random.Random(seed).shuffle(instances)
    urls = []
    for rank, i in enumerate(instances):
        what = "thumbnail" if rank % 2 == 0 else "rendered"
        urls.append(
            f"/studies/{i['study_instance_uid']}/series/{i['series_instance_uid']}"
            f"/instances/{i['sop_instance_uid']}/{what}"
        )
    return urls


def fetch(session, url):
    r = session.get(url, headers={"Accept": "image/jpeg"})
    if r.status_code != 200:
        sys.exit(f"{url}: {r.status_code} {r.text[:200]}")
    return len(r.content)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--instances", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sizes", action="store_true")
    ap.add_argument("--record", help="write per-rendition latency and size here (JSON)")
    ap.add_argument("--bound", help="a --record file: print the best any cache could do")
    ap.add_argument("--budget", type=int)
    ap.add_argument("--hit-ms", type=float)
    args = ap.parse_args()
    if args.bound:
        bound(args)
        return
    urls = [args.url + u for u in renditions(args.manifest, args.instances, args.seed)]

    if args.sizes:
        with requests.Session() as s:
            total = sum(fetch(s, u) for u in urls)
        print(f"sizes {total} {len(urls)}")
        return

    weights = list(itertools.accumulate(1 / (rank + 1) ** args.zipf for rank in range(len(urls))))
    pick = random.Random(args.seed + 1)
    sequence = [
        urls[bisect.bisect(weights, pick.random() * weights[-1])] for _ in range(args.requests)
    ]
    times, lock, next_at = [], threading.Lock(), iter(range(len(sequence)))
    seen = {}  # url -> [requests, total ms, bytes]

    def client():
        with requests.Session() as s:
            while True:
                with lock:
                    at = next(next_at, None)
                if at is None:
                    return
                t0 = time.perf_counter()
                size = fetch(s, sequence[at])
                elapsed = (time.perf_counter() - t0) * 1000
                with lock:
                    times.append(elapsed)
                    entry = seen.setdefault(sequence[at], [0, 0.0, size])
                    entry[0] += 1
                    entry[1] += elapsed

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(times) != len(sequence):
        sys.exit(f"{len(times)} of {len(sequence)} requests answered")
    if args.record:
        with open(args.record, "w", encoding="utf-8") as f:
            json.dump(seen, f)
    mean = sum(times) / len(times)
    print(f"replay {mean:.3f} {percentile(times, 50):.3f} {percentile(times, 95):.3f} {len(times)}")


def bound(args):
    """Static optimum: renditions by time saved per byte, kept while they fit the budget."""
    with open(args.bound, encoding="utf-8") as f:
        seen = json.load(f)
    total = sum(n for n, _, _ in seen.values())
    ranked = sorted(
        seen.values(), key=lambda e: (e[1] - e[0] * args.hit_ms) / max(e[2], 1), reverse=True
    )
    used, saved, hits = 0, 0.0, 0
    for n, ms, size in ranked:
        # The first request computes it; the others hit.
        if used + size > args.budget or n < 2:
            continue
        used += size
        saved += (ms / n - args.hit_ms) * (n - 1)
        hits += n - 1
    mean = (sum(ms for _, ms, _ in seen.values()) - saved) / total
    print(f"bound {mean:.3f} {hits / total:.3f}")


if __name__ == "__main__":
    main()

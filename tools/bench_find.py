#!/usr/bin/env python3
"""C-FIND latency inside one association: runs each query N times and prints percentiles.

  bench_find.py HOST PORT --aec AET [--aet MODALITY] [--runs 50] --query NAME:KEY=VALUE,KEY=VALUE ...

Each query is STUDY level, Study Root, and asks for the usual worklist columns. Prints one
line per query: `NAME p50_ms p95_ms matches`.
"""

import argparse
import statistics
import sys
import time

import nodelay  # noqa: F401  (TCP_NODELAY on pynetdicom sockets)
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as StudyRoot

RETURN_KEYS = ["PatientName", "PatientID", "StudyDate", "StudyTime", "AccessionNumber",
               "StudyDescription", "StudyInstanceUID", "ModalitiesInStudy"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--aec", required=True)
    p.add_argument("--aet", default="MODALITY")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--query", action="append", required=True)
    args = p.parse_args()

    ae = AE(ae_title=args.aet)
    ae.add_requested_context(StudyRoot)
    assoc = ae.associate(args.host, args.port, ae_title=args.aec)
    if not assoc.is_established:
        sys.exit("association failed")
    for spec in args.query:
        name, keys = spec.split(":", 1)
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        for k in RETURN_KEYS:
            setattr(ds, k, "")
        for kv in keys.split(","):
            k, v = kv.split("=", 1)
            setattr(ds, k, v)
        times, matches = [], 0
        for _ in range(args.runs):
            t0 = time.perf_counter()
            n = 0
            for status, ident in assoc.send_c_find(ds, StudyRoot):
                if status and status.Status in (0xFF00, 0xFF01):
                    n += 1
            times.append((time.perf_counter() - t0) * 1000)
            matches = n
        times.sort()
        p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
        print(f"{name} {statistics.median(times):.2f} {p95:.2f} {matches}", flush=True)
    assoc.release()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Time to the first instance of a C-GET and of a C-MOVE: from the request leaving this
process to the first C-STORE arriving (C-GET: on the same association; C-MOVE: at a
destination served by this process). Runs each N times and prints percentiles.

  bench_retrieve.py HOST PORT --aec AET --study UID --dest-aet PYDEST --dest-port P [--runs 5]

Prints `first-get p50_ms p95_ms` and `first-move p50_ms p95_ms`. The rest of each transfer is
received and discarded; throughput is measured with DCMTK in tools/bench.sh.
"""

import argparse
import statistics
import sys
import time

import nodelay  # noqa: F401  (TCP_NODELAY on pynetdicom sockets)
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelGet as GetModel,
    StudyRootQueryRetrieveInformationModelMove as MoveModel,
)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--aec", required=True)
    p.add_argument("--aet", default="MODALITY")
    p.add_argument("--study", required=True)
    p.add_argument("--dest-aet", default="PYDEST")
    p.add_argument("--dest-port", type=int, required=True)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()

    first = {}

    def on_store(event):
        first.setdefault("t", time.perf_counter())
        return 0x0000

    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = args.study

    # C-GET
    ae = AE(ae_title=args.aet)
    ae.add_requested_context(GetModel)
    for cls in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(cls)
    roles = [build_role(CTImageStorage, scp_role=True), build_role(MRImageStorage, scp_role=True)]
    get_ms = []
    for _ in range(args.runs):
        assoc = ae.associate(args.host, args.port, ae_title=args.aec, ext_neg=roles,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
        if not assoc.is_established:
            sys.exit("C-GET association failed")
        first.clear()
        t0 = time.perf_counter()
        for _status, _ in assoc.send_c_get(ds, GetModel):
            pass
        get_ms.append((first["t"] - t0) * 1000)
        assoc.release()

    # C-MOVE to a destination served here.
    scp = AE(ae_title=args.dest_aet)
    scp.supported_contexts = StoragePresentationContexts
    server = scp.start_server(("127.0.0.1", args.dest_port), block=False,
                              evt_handlers=[(evt.EVT_C_STORE, on_store)])
    mover = AE(ae_title=args.aet)
    mover.add_requested_context(MoveModel)
    move_ms = []
    try:
        for _ in range(args.runs):
            assoc = mover.associate(args.host, args.port, ae_title=args.aec)
            if not assoc.is_established:
                sys.exit("C-MOVE association failed")
            first.clear()
            t0 = time.perf_counter()
            for _status, _ in assoc.send_c_move(ds, args.dest_aet, MoveModel):
                pass
            move_ms.append((first["t"] - t0) * 1000)
            assoc.release()
    finally:
        server.shutdown()

    def pct(values, q):
        values = sorted(values)
        return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]

    print(f"first-get {statistics.median(get_ms):.1f} {pct(get_ms, 0.95):.1f}")
    print(f"first-move {statistics.median(move_ms):.1f} {pct(move_ms, 0.95):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

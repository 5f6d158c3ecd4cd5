#!/usr/bin/env python3
"""A pynetdicom Storage SCP for Strata's tests: a C-MOVE destination that accepts only some
SOP classes, so tests can see a destination refuse part of a study.

  scp.py PORT --aet DEST --out DIR [--accept CT,MR] [--implicit-only | --compressed]
         [--context SOP_CLASS_UID:TRANSFER_SYNTAX_UID[,TS...]]... [--abort-after N]

PORT 0 binds a free port. Prints `LISTENING <port>` once it accepts associations. Each
--context accepts that SOP class in exactly those syntaxes (instead of --accept's). Each data set is written exactly as received to DIR/<SOP Instance UID>.<transfer syntax UID>.
"""

import argparse
import logging
import os
import sys

from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification
from pydicom.uid import (ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLosslessSV1,
                         JPEGLSLossless, RLELossless, JPEG2000Lossless, JPEG2000)

CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("port", type=int)
    p.add_argument("--aet", default="DEST")
    p.add_argument("--out", required=True)
    p.add_argument("--accept", default="CT,MR")
    p.add_argument("--implicit-only", action="store_true")
    p.add_argument("--compressed", action="store_true",
                   help="also accept JPEG Lossless, JPEG-LS Lossless, RLE and JPEG 2000")
    p.add_argument("--context", action="append", default=[], metavar="SOP:TS[,TS...]")
    p.add_argument("--abort-after", type=int, default=0, help="A-ABORT after receiving N instances")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)

    received = [0]

    def on_store(event):
        uid = event.request.AffectedSOPInstanceUID
        path = os.path.join(args.out, f"{uid}.{event.context.transfer_syntax}")
        with open(path, "wb") as f:
            f.write(event.request.DataSet.getvalue())
        received[0] += 1
        if args.abort_after and received[0] == args.abort_after:
            event.assoc.abort()
        return 0x0000

    ae = AE(ae_title=args.aet)
    syntaxes = [ImplicitVRLittleEndian] if args.implicit_only else [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    if args.compressed:
        syntaxes = [JPEGLosslessSV1, JPEGLSLossless, RLELossless, JPEG2000Lossless, JPEG2000] + syntaxes
    if args.context:
        for context in args.context:
            sop_class, ts = context.split(":", 1)
            ae.add_supported_context(sop_class, ts.split(","))
    else:
        for name in args.accept.split(","):
            ae.add_supported_context(CLASSES[name], syntaxes)
    ae.add_supported_context(Verification)
    server = ae.start_server(("127.0.0.1", args.port), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        sys.stdin.read()  # runs until the test closes our stdin or kills us
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""pynetdicom as a Storage Commitment SCU for Strata's tests (PS3.4 Annex J, Push Model).

  commit.py request HOST PORT --aet A --aec B [--wait SECS] [--transaction UID]
                    [--ref CLASS:INSTANCE]... [FILE...]
      One association: N-ACTION (Request Storage Commitment) for the instances of FILEs and
      each --ref, prints `ACTION 0xSTATUS <Transaction UID>`; with --wait, waits up to SECS
      on the same association for the N-EVENT-REPORT and prints `REPORT {json}` and
      `REPORT_AFTER_MS <ms>` (from sending the N-ACTION-RQ to receiving the report); releases.
  commit.py listen PORT --aet A [--tls-cert FILE --tls-key FILE --tls-ca FILE]
      A server that accepts Storage Commitment with the caller in the SCP role (role
      selection), as a modality does for reports on a new association. PORT 0 binds a free
      port; prints `LISTENING <port>`, then `REPORT {json}` for each N-EVENT-REPORT.

REPORT's json: {"transaction_uid", "event_type", "committed": [uid...],
"failed": [[uid, reason]...], "calling_ae"}. Both take --tls-ca/--tls-cert/--tls-key
(request) as scu.py does.
"""

import argparse
import json
import logging
import sys
import threading
import time

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from scu import tls_args  # tools/ is on sys.path as this script's folder

WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"

_printing = threading.Lock()


def say(line):
    """Prints one whole line: reports arrive on pynetdicom's thread, possibly while the main
    thread prints ACTION, and print() writes the text and its newline separately."""
    with _printing:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def report_json(event):
    info = event.event_information
    failed = [[item.ReferencedSOPInstanceUID, int(item.FailureReason)]
              for item in info.get("FailedSOPSequence", [])]
    return json.dumps({
        "transaction_uid": str(info.TransactionUID),
        "event_type": int(event.event_type),
        "committed": [str(item.ReferencedSOPInstanceUID)
                      for item in info.get("ReferencedSOPSequence", [])],
        "failed": failed,
        "calling_ae": event.assoc.requestor.ae_title.strip()
        if not event.assoc.is_requestor else event.assoc.acceptor.ae_title.strip(),
    })


def cmd_request(args):
    refs = []
    for path in args.files:
        ds = dcmread(path, stop_before_pixels=True)
        refs.append((str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
    for ref in args.ref:
        sop_class, instance = ref.split(":", 1)
        refs.append((sop_class, instance))
    info = Dataset()
    info.TransactionUID = args.transaction or generate_uid()
    info.ReferencedSOPSequence = []
    for sop_class, instance in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = instance
        info.ReferencedSOPSequence.append(item)

    got = threading.Event()
    sent = [0.0]

    def on_report(event):
        elapsed = (time.monotonic() - sent[0]) * 1000
        say(f"REPORT {report_json(event)}")
        say(f"REPORT_AFTER_MS {elapsed:.1f}")
        got.set()
        # Processing Failure: the report is not taken on this association, so the SCP must
        # deliver it on one of its own.
        return (0x0110 if args.refuse_reports else 0x0000), None

    ae = AE(ae_title=args.aet)
    ae.acse_timeout = 10
    ae.dimse_timeout = 30
    ae.network_timeout = 60
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(args.host, args.port, ae_title=args.aec, tls_args=tls_args(args),
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    if not assoc.is_established:
        say("NOT_ESTABLISHED")
        return 2
    sent[0] = time.monotonic()
    status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
    code = int(status.Status) if status is not None and "Status" in status else 0xFFFF
    say(f"ACTION 0x{code:04X} {info.TransactionUID}")
    if args.wait > 0 and code == 0 and not got.wait(args.wait):
        say("NO_REPORT")
    assoc.release()
    return 0


def cmd_listen(args):
    def on_report(event):
        say(f"REPORT {report_json(event)}")
        return 0x0000, None

    ae = AE(ae_title=args.aet)
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    ssl_context = None
    if args.tls_cert:
        import ssl
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=args.tls_ca)
        ssl_context.verify_mode = ssl.CERT_REQUIRED
        ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
    server = ae.start_server(("127.0.0.1", args.port), block=False, ssl_context=ssl_context,
                             evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    say(f"LISTENING {server.server_address[1]}")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    server.shutdown()
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("request")
    r.add_argument("host")
    r.add_argument("port", type=int)
    r.add_argument("--aet", default="MODALITY")
    r.add_argument("--aec", default="STRATA")
    r.add_argument("--wait", type=float, default=0)
    r.add_argument("--transaction", default="")
    r.add_argument("--refuse-reports", action="store_true",
                   help="answer a report sent on this association with 0x0110")
    r.add_argument("--ref", action="append", default=[], metavar="CLASS:INSTANCE")
    r.add_argument("--tls-ca", default="")
    r.add_argument("--tls-cert", default="")
    r.add_argument("--tls-key", default="")
    r.add_argument("files", nargs="*")
    listen = sub.add_parser("listen")
    listen.add_argument("port", type=int)
    listen.add_argument("--aet", default="MODALITY")
    listen.add_argument("--tls-cert", default="")
    listen.add_argument("--tls-key", default="")
    listen.add_argument("--tls-ca", default="")
    # FILEs may follow --ref options (argparse would refuse them there).
    args, rest = p.parse_known_args()
    if rest and (args.cmd != "request" or any(r.startswith("-") for r in rest)):
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    if rest:
        args.files += rest
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    return {"request": cmd_request, "listen": cmd_listen}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A pynetdicom client for Strata's tests: one association per call.

  scu.py store  HOST PORT --aet A --aec B FILE...   send files as stored (dataset bytes unchanged)
  scu.py propose HOST PORT --aet A --aec B UID...   propose these abstract syntaxes, print results
  scu.py echo   HOST PORT --aet A --aec B
  scu.py move   HOST PORT --dest AE --level STUDY -k KEY=VALUE... [--cancel-after N]
  scu.py get    HOST PORT --out DIR --level STUDY -k KEY=VALUE... [--cancel-after N]
                [--abort-after N] [--implicit-only] [--context SOP:TS[,TS...]]...
                move/get print `PENDING|FINAL 0xSTATUS remaining= completed= failed= warning=`
                and `FAILED_UIDS ...` for a Failed SOP Instance UID List
  scu.py find   HOST PORT --level STUDY [--model study|patient] [--charset CS]
                [--cancel-after N] [--combined-datetime] -k KEY=VALUE...     one `MATCH {json}` line per match

Every subcommand takes --tls-ca FILE (DICOM over TLS, the server checked against that CA) and
--tls-cert FILE --tls-key FILE (a client certificate).

store prints one line per file, flushed at once, so a caller killing the server mid-way
knows exactly which instances were acknowledged:  `STATUS 0x0000 <SOP Instance UID>`.
It ends with `DONE ok=N failed=M` or `ABORTED ok=N` when the association broke.
"""

import argparse
import json
import sys

from pydicom.dataset import Dataset

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, build_context
from pynetdicom.sop_class import Verification


def tls_args(args):
    """pynetdicom's tls_args for --tls-ca (and a client certificate), or None."""
    if not args.tls_ca:
        return None
    import ssl
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.tls_ca)
    context.check_hostname = False
    if args.tls_cert:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    return (context, None)


def connect(args, contexts, ext_neg=None):
    ae = AE(ae_title=args.aet)
    ae.acse_timeout = 10
    ae.dimse_timeout = 30
    ae.network_timeout = 30
    for ctx in contexts:
        ae.add_requested_context(*ctx)
    return ae.associate(args.host, args.port, ae_title=args.aec, ext_neg=ext_neg,
                        tls_args=tls_args(args))


def cmd_store(args):
    # Without this pynetdicom decodes each file with pydicom and sends it re-encoded: a
    # malformed data set would arrive repaired and a test of the server's parser would test
    # pydicom's instead. With it, the data set's bytes go out exactly as stored.
    from pynetdicom import _config
    _config.STORE_SEND_CHUNKED_DATASET = True
    metas = []
    for path in args.files:
        # File meta only: the data set is sent as stored, never parsed here.
        meta = read_file_meta_info(path)
        metas.append((path, meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID))
    contexts = sorted({(m[1], m[3]) for m in metas})
    assoc = connect(args, [(c, [t]) for c, t in contexts])
    if not assoc.is_established:
        print("NOT_ESTABLISHED", flush=True)
        return 2
    ok = failed = 0
    for path, _, uid, _ in metas:
        if not assoc.is_established:
            print(f"ABORTED ok={ok}", flush=True)
            return 3
        status = assoc.send_c_store(path)
        if status is None or "Status" not in status:
            print(f"ABORTED ok={ok}", flush=True)
            return 3
        code = int(status.Status)
        print(f"STATUS 0x{code:04X} {uid}", flush=True)
        if code == 0:
            ok += 1
        else:
            failed += 1
    assoc.release()
    print(f"DONE ok={ok} failed={failed}", flush=True)
    return 0


def cmd_propose(args):
    assoc = connect(args, [(Verification,)] + [(uid,) for uid in args.uids])
    if not assoc.is_established:
        print("NOT_ESTABLISHED", flush=True)
        return 2
    for cx in assoc.accepted_contexts:
        print(f"ACCEPTED {cx.abstract_syntax}", flush=True)
    for cx in assoc.rejected_contexts:
        print(f"REJECTED {cx.abstract_syntax} {cx.result} {cx.reason if hasattr(cx, 'reason') else ''}".strip(), flush=True)
    status = assoc.send_c_echo()
    print(f"ECHO 0x{int(status.Status):04X}" if status and "Status" in status else "ECHO none", flush=True)
    assoc.release()
    return 0


def cmd_find(args):
    from pynetdicom.sop_class import (
        PatientRootQueryRetrieveInformationModelFind as PatientRoot,
        StudyRootQueryRetrieveInformationModelFind as StudyRoot,
    )
    model = PatientRoot if args.model == "patient" else StudyRoot
    ds = Dataset()
    if args.charset:
        ds.SpecificCharacterSet = args.charset
    ds.QueryRetrieveLevel = args.level
    for kv in args.keys:
        key, value = kv.split("=", 1)
        setattr(ds, key, value)
    ext_neg = None
    if args.combined_datetime:
        from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = model
        # PS3.4 Table C.5-2: byte 1 relational queries, byte 2 combined date-time matching.
        item.service_class_application_information = b"\x00\x01"
        ext_neg = [item]
    assoc = connect(args, [(model,)], ext_neg)
    if not assoc.is_established:
        print("NOT_ESTABLISHED", flush=True)
        return 2
    context_id = assoc.accepted_contexts[0].context_id
    for repeat in range(args.repeat):
        matches = 0
        msg_id = 7 + repeat
        for status, identifier in assoc.send_c_find(ds, model, msg_id=msg_id):
            if status is None or "Status" not in status:
                print("ABORTED", flush=True)
                return 3
            code = int(status.Status)
            if code in (0xFF00, 0xFF01):
                identifier.decode()
                values = {e.keyword: ("\\".join(str(v) for v in e.value) if e.VM > 1 else str(e.value))
                          for e in identifier if e.keyword and e.VR != "SQ"}
                print("MATCH " + json.dumps(values, ensure_ascii=False), flush=True)
                matches += 1
                if args.cancel_after and matches == args.cancel_after:
                    assoc.send_c_cancel(msg_id, context_id)
            else:
                comment = str(status.get("ErrorComment", ""))
                print(f"FINAL 0x{code:04X} {comment}".strip(), flush=True)
    assoc.release()
    return 0


def retrieve_identifier(args):
    ds = Dataset()
    ds.QueryRetrieveLevel = args.level
    for kv in args.keys:
        key, value = kv.split("=", 1)
        setattr(ds, key, value)
    return ds


def print_retrieve_status(status):
    """One line per response: PENDING/FINAL with the sub-operation counts."""
    code = int(status.Status)
    counts = " ".join(
        f"{name}={int(status.get(kw, -1)) if status.get(kw) is not None else '-'}"
        for name, kw in (("remaining", "NumberOfRemainingSuboperations"),
                         ("completed", "NumberOfCompletedSuboperations"),
                         ("failed", "NumberOfFailedSuboperations"),
                         ("warning", "NumberOfWarningSuboperations")))
    kind = "PENDING" if code in (0xFF00, 0xFF01) else "FINAL"
    comment = str(status.get("ErrorComment", ""))
    print(f"{kind} 0x{code:04X} {counts} {comment}".strip(), flush=True)
    return kind == "FINAL"


def print_failed_list(identifier):
    if identifier is not None and "FailedSOPInstanceUIDList" in identifier:
        value = identifier.FailedSOPInstanceUIDList
        uids = list(value) if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, str) else [value]
        print("FAILED_UIDS " + " ".join(str(u) for u in uids), flush=True)


def cmd_move(args):
    from pynetdicom.sop_class import (
        PatientRootQueryRetrieveInformationModelMove as PatientRoot,
        StudyRootQueryRetrieveInformationModelMove as StudyRoot,
    )
    model = PatientRoot if args.model == "patient" else StudyRoot
    assoc = connect(args, [(model,)])
    if not assoc.is_established:
        print("NOT_ESTABLISHED", flush=True)
        return 2
    context_id = assoc.accepted_contexts[0].context_id
    pending = 0
    for status, identifier in assoc.send_c_move(retrieve_identifier(args), args.dest, model, msg_id=9):
        if status is None or "Status" not in status:
            print("ABORTED", flush=True)
            return 3
        if print_retrieve_status(status):
            print_failed_list(identifier)
        else:
            pending += 1
            if args.cancel_after and pending == args.cancel_after:
                assoc.send_c_cancel(9, context_id)
    assoc.release()
    return 0


def cmd_get(args):
    import os
    from pynetdicom import build_role, evt
    from pynetdicom.sop_class import (
        CTImageStorage,
        MRImageStorage,
        PatientRootQueryRetrieveInformationModelGet as PatientRoot,
        StudyRootQueryRetrieveInformationModelGet as StudyRoot,
    )
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    model = PatientRoot if args.model == "patient" else StudyRoot
    syntaxes = [ImplicitVRLittleEndian] if args.implicit_only else [ExplicitVRLittleEndian]
    received = [0]
    state = {"assoc": None}

    def on_store(event):
        # The data set exactly as it came off the wire, in the negotiated syntax.
        raw = event.request.DataSet.getvalue()
        uid = event.request.AffectedSOPInstanceUID
        with open(os.path.join(args.out, f"{uid}.{event.context.transfer_syntax}"), "wb") as f:
            f.write(raw)
        received[0] += 1
        print(f"RECEIVED {uid}", flush=True)
        if args.abort_after and received[0] == args.abort_after:
            state["assoc"].abort()
        return 0x0000

    ae = AE(ae_title=args.aet)
    ae.acse_timeout = 10
    # After our own A-ABORT there is nothing left to wait for.
    ae.dimse_timeout = 3 if args.abort_after else args.dimse_timeout
    ae.network_timeout = 3 if args.abort_after else args.dimse_timeout
    ae.add_requested_context(model)
    # Each --context is a presentation context of its own; without any, CT and MR.
    contexts = [(c.split(":", 1)[0], c.split(":", 1)[1].split(",")) for c in args.context]
    contexts = contexts or [(cls, syntaxes) for cls in (CTImageStorage, MRImageStorage)]
    for cls, ts in contexts:
        ae.add_requested_context(cls, ts)
    roles = [build_role(cls, scp_role=True) for cls in dict.fromkeys(c for c, _ in contexts)]
    assoc = ae.associate(args.host, args.port, ae_title=args.aec, ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)], tls_args=tls_args(args))
    state["assoc"] = assoc
    if not assoc.is_established:
        print("NOT_ESTABLISHED", flush=True)
        return 2
    context_id = [c for c in assoc.accepted_contexts if c.abstract_syntax == model][0].context_id
    pending = 0
    for status, identifier in assoc.send_c_get(retrieve_identifier(args), model, msg_id=11):
        if status is None or "Status" not in status:
            print("ABORTED", flush=True)
            return 3
        if print_retrieve_status(status):
            print_failed_list(identifier)
        else:
            pending += 1
            if args.cancel_after and pending == args.cancel_after:
                assoc.send_c_cancel(11, context_id)
    if assoc.is_established:
        assoc.release()
    return 0


def cmd_echo(args):
    assoc = connect(args, [(Verification,)])
    if not assoc.is_established:
        print("NOT_ESTABLISHED", flush=True)
        return 2
    status = assoc.send_c_echo()
    print(f"ECHO 0x{int(status.Status):04X}", flush=True)
    assoc.release()
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("store", "propose", "echo", "find", "move", "get"):
        s = sub.add_parser(name)
        s.add_argument("host")
        s.add_argument("port", type=int)
        s.add_argument("--aet", default="PYNETDICOM")
        s.add_argument("--aec", default="STRATA")
        s.add_argument("--tls-ca", default="")
        s.add_argument("--tls-cert", default="")
        s.add_argument("--tls-key", default="")
        if name == "store":
            s.add_argument("files", nargs="+")
        if name == "propose":
            s.add_argument("uids", nargs="+")
        if name == "find":
            s.add_argument("--level", default="STUDY")
            s.add_argument("--model", choices=["study", "patient"], default="study")
            s.add_argument("--charset", default="")
            s.add_argument("--cancel-after", type=int, default=0)
            s.add_argument("--repeat", type=int, default=1, help="send the query N times on the association")
            s.add_argument("--combined-datetime", action="store_true",
                           help="ask for combined StudyDate+StudyTime range matching")
            s.add_argument("-k", dest="keys", action="append", default=[], metavar="KEY=VALUE")
        if name in ("move", "get"):
            s.add_argument("--level", default="STUDY")
            s.add_argument("--model", choices=["study", "patient"], default="study")
            s.add_argument("--cancel-after", type=int, default=0, help="C-CANCEL after N pending responses")
            s.add_argument("-k", dest="keys", action="append", default=[], metavar="KEY=VALUE")
        if name == "move":
            s.add_argument("--dest", required=True)
        if name == "get":
            s.add_argument("--out", required=True)
            s.add_argument("--implicit-only", action="store_true")
            s.add_argument("--context", action="append", default=[], metavar="SOP:TS[,TS...]",
                           help="propose this SOP class in these syntaxes (repeatable)")
            s.add_argument("--abort-after", type=int, default=0, help="A-ABORT after N instances")
            s.add_argument("--dimse-timeout", type=float, default=30,
                           help="seconds to wait for a message, including taking in a whole instance")
    args = p.parse_args()
    return {"store": cmd_store, "propose": cmd_propose, "echo": cmd_echo, "find": cmd_find,
            "move": cmd_move, "get": cmd_get}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())

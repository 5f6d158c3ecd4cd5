#!/usr/bin/env python3
"""A syslog collector for audit tests: receives RFC 5424 lines over UDP on 127.0.0.1,
parses each one's DICOM audit message (PS3.15 A.5) with Python's XML parser, and prints
one JSON object per message (flushed). The first line is {"port": N}.

usage: audit_listen.py
"""
import json
import re
import socket
import sys
import xml.etree.ElementTree as ET

HEADER = re.compile(r"^<(\d+)>1 (\S+) (\S+) (\S+) (\S+) (\S+) - \ufeff(.*)$", re.S)


def describe(line):
    m = HEADER.match(line)
    if not m:
        return {"error": "not an RFC 5424 line with a BOM", "line": line[:200]}
    pri, ts, host, app, pid, msgid, xml = m.groups()
    root = ET.fromstring(xml.encode("utf-8"))
    ident = root.find("EventIdentification")
    event = ident.find("EventID")
    etype = ident.find("EventTypeCode")
    return {
        "priority": int(pri),
        "timestamp": ts,
        "host": host,
        "app": app,
        "msgid": msgid,
        "root": root.tag,
        "event_id": event.get("csd-code"),
        "event_type": etype.get("csd-code") if etype is not None else None,
        "action": ident.get("EventActionCode"),
        "outcome": ident.get("EventOutcomeIndicator"),
        "participants": [
            {
                "user": p.get("UserID"),
                "requestor": p.get("UserIsRequestor") == "true",
                "address": p.get("NetworkAccessPointID"),
            }
            for p in root.findall("ActiveParticipant")
        ],
        "source": root.find("AuditSourceIdentification").get("AuditSourceID"),
        "objects": [o.get("ParticipantObjectID") for o in root.findall("ParticipantObjectIdentification")],
    }


def main():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    print(json.dumps({"port": s.getsockname()[1]}), flush=True)
    while True:
        data, _ = s.recvfrom(65535)
        try:
            out = describe(data.decode("utf-8"))
        except Exception as e:  # a message that does not parse is reported, not fatal
            out = {"error": str(e), "line": data[:200].decode("utf-8", "replace")}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())

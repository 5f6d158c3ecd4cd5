#!/usr/bin/env python3
"""Interoperability check of Strata's C-MOVE against Orthanc (Debian package), run inside a
private network namespace (`unshare -n`): Orthanc cannot bind to 127.0.0.1 alone, so it must
be reachable from nothing else.

  unshare -n tools/interop_orthanc.py --strata target/release/strata --corpus DIR --work DIR

1. Orthanc pulls a study from Strata through its REST API (/modalities/strata/move, Orthanc is
   both the C-MOVE requestor and the destination).
2. DCMTK movescu asks Strata to send another study to Orthanc (Orthanc as a destination).
3. Orthanc asks Strata for Storage Commitment through its REST API
   (/modalities/strata/storage-commitment): Strata answers the N-ACTION, then sends the
   N-EVENT-REPORT on a new association to Orthanc (Strata in the SCP role).
Each time every instance Orthanc holds is compared, data set byte for byte, with the file
that was stored. Orthanc 1.10 has no C-GET SCU, so C-GET is covered by DCMTK and pynetdicom.
Prints `OK ...` lines; exits non-zero on the first mismatch.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

STRATA_PORT, ORTHANC_PORT, HTTP_PORT = 11112, 4242, 8042


def data_set(raw):
    """Bytes after the Part-10 file meta group."""
    assert raw[128:132] == b"DICM"
    group_len = int.from_bytes(raw[140:144], "little")
    return raw[144 + group_len:]


def rest(method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{HTTP_PORT}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=120) as r:
        data = r.read()
    return data


def wait_echo(aet, port):
    for _ in range(200):
        if subprocess.run(["/usr/bin/echoscu", "-aet", "VIEWER", "-aec", aet, "127.0.0.1", str(port)],
                          capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    sys.exit(f"{aet} did not come up")


def orthanc_instances():
    """SOP Instance UID -> data set bytes of everything Orthanc holds."""
    out = {}
    for oid in json.loads(rest("GET", "/instances")):
        tags = json.loads(rest("GET", f"/instances/{oid}/simplified-tags"))
        out[tags["SOPInstanceUID"]] = data_set(rest("GET", f"/instances/{oid}/file"))
    return out


def check(label, got, want):
    if sorted(got) != sorted(want):
        sys.exit(f"FAIL {label}: Orthanc holds {len(got)} instances, expected {len(want)}")
    for uid, ds in want.items():
        if got[uid] != ds:
            sys.exit(f"FAIL {label}: {uid} differs from what was stored")
    print(f"OK {label}: {len(want)} instances bit-identical", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strata", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--work", required=True)
    args = p.parse_args()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.environ["TCP_NODELAY"] = "1"
    manifest = json.load(open(os.path.join(args.corpus, "manifest.json")))
    studies = []
    for m in manifest:
        if m["study_instance_uid"] not in studies:
            studies.append(m["study_instance_uid"])
    originals = {m["sop_instance_uid"]: (m["study_instance_uid"], data_set(open(os.path.join(args.corpus, m["path"]), "rb").read()))
                 for m in manifest}

    os.makedirs(args.work, exist_ok=True)
    with open(os.path.join(args.work, "strata.toml"), "w") as f:
        f.write(f"""[dicom]
aet = "STRATA"
listen = "127.0.0.1:{STRATA_PORT}"
[[dicom.peers]]
aet = "ORTHANC"
host = "127.0.0.1"
port = {ORTHANC_PORT}
[[dicom.peers]]
aet = "VIEWER"
host = "127.0.0.1"
port = 1
[storage]
online_dir = "online"
[locator]
url = "sqlite://locator.db"
""")
    with open(os.path.join(args.work, "orthanc.json"), "w") as f:
        json.dump({
            "Name": "interop", "StorageDirectory": os.path.join(args.work, "orthanc-storage"),
            "IndexDirectory": os.path.join(args.work, "orthanc-index"),
            "DicomAet": "ORTHANC", "DicomPort": ORTHANC_PORT, "HttpPort": HTTP_PORT,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomModalities": {"strata": ["STRATA", "127.0.0.1", STRATA_PORT],
                                "viewer": ["VIEWER", "127.0.0.1", 1]},
            "StorageCompression": False, "Plugins": [],
        }, f)
    logs = [open(os.path.join(args.work, n), "w") for n in ("strata.log", "orthanc.log")]
    procs = [
        subprocess.Popen([args.strata, "serve", "--config", os.path.join(args.work, "strata.toml")],
                         cwd=args.work, stdout=logs[0], stderr=logs[0]),
        subprocess.Popen(["Orthanc", os.path.join(args.work, "orthanc.json")], stdout=logs[1], stderr=logs[1]),
    ]
    try:
        wait_echo("STRATA", STRATA_PORT)
        wait_echo("ORTHANC", ORTHANC_PORT)
        files = [os.path.join(args.corpus, m["path"]) for m in manifest]
        subprocess.run(["/usr/bin/storescu", "-aet", "VIEWER", "-aec", "STRATA", "127.0.0.1",
                        str(STRATA_PORT)] + files, check=True, capture_output=True)

        # 1. Orthanc pulls from us: it is the C-MOVE requestor and the destination.
        rest("POST", "/modalities/strata/move",
             {"Level": "Study", "Resources": [{"StudyInstanceUID": studies[0]}], "TargetAet": "ORTHANC"})
        want = {uid: ds for uid, (study, ds) in originals.items() if study == studies[0]}
        check("Orthanc C-MOVE from Strata", orthanc_instances(), want)

        # 2. Orthanc as the destination of someone else's C-MOVE.
        out = subprocess.run(["/usr/bin/movescu", "-v", "-S", "-aet", "VIEWER", "-aec", "STRATA", "-aem", "ORTHANC",
                              "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={studies[1]}",
                              "127.0.0.1", str(STRATA_PORT)], capture_output=True, text=True)
        if "Received Final Move Response (Success)" not in out.stdout + out.stderr:
            sys.exit(f"FAIL movescu to ORTHANC: {out.stdout}{out.stderr}")
        want.update({uid: ds for uid, (study, ds) in originals.items() if study == studies[1]})
        check("movescu from Strata to Orthanc", orthanc_instances(), want)

        # 3. Orthanc as the Storage Commitment SCU: two stored instances and an unknown one.
        known = [m for m in manifest if m["study_instance_uid"] == studies[0]][:2]
        unknown = "1.2.826.0.1.3680043.8.498.999999"
        refs = [{"SOPClassUID": m["sop_class_uid"], "SOPInstanceUID": m["sop_instance_uid"]} for m in known]
        refs.append({"SOPClassUID": known[0]["sop_class_uid"], "SOPInstanceUID": unknown})
        job = json.loads(rest("POST", "/modalities/strata/storage-commitment",
                              {"DicomInstances": refs, "Timeout": 30}))
        for _ in range(300):
            report = json.loads(rest("GET", job["Path"]))
            if report.get("Status") != "Pending":
                break
            time.sleep(0.1)
        text = json.dumps(report)
        failures = report.get("Failures", [])
        ok = (report.get("Status") == "Failure" and len(failures) == 1 and unknown in text
              and all(m["sop_instance_uid"] in json.dumps(report.get("Success", [])) for m in known)
              and "274" in json.dumps(failures) + str([f.get("FailureReason") for f in failures if isinstance(f, dict)]))
        if not ok:
            sys.exit(f"FAIL storage commitment from Orthanc: {text}")
        print(f"OK storage commitment from Orthanc: {len(known)} committed, the unknown one failed (0x0112)", flush=True)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

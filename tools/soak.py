#!/usr/bin/env python3
"""Soak: a real `strata serve` under concurrent load, with or without faults, on loopback
only, for a bounded time. Run through tools/soak.sh.

Load (all at once, each worker looping until the deadline): STORES associations storing
small CT instances with fresh UIDs (each file written first and sent byte for byte),
QUERIES C-FIND clients, MOVES C-MOVE clients (to an in-process pynetdicom destination),
GETS C-GET clients, and one C-ECHO probe every 100 ms.

The server's backup worker copies every study to near-line as it arrives (all-day window).

With --hdfs DIR (a cluster of tools/hdfs-dev.sh), the server's tiering worker also moves
every study into S-DICOM containers on that HDFS as it goes (all-day window, studies of any
age, polled every 5 s), so stores, queries and retrieves meet studies being archived.

Faults (--faults): kill -9 and restart of the server every --kill-every seconds (also in
the middle of tier moves); a query client that stops reading (SIGSTOP) for 10 s every 20 s;
the online tier (a 1 GiB tmpfs of its own, when run as root) filled to the last byte for
3 s every 30 s, then freed; a byte flipped in a near-line container every 10 s; with
--hdfs, the DataNode killed -9 every 40 s and started again 5 s later.

At the end: every acknowledged instance is retrieved by C-GET, exactly once and bit-identical
to what was sent; `strata verify --repair` mends the near-line damage and `strata verify` is
then clean; after SIGTERM nothing is left in online/tmp.
Printed: a summary table (instances/s stored, queries/s, p50/p99 of C-STORE, C-FIND and
C-ECHO), failures by status or exception, the server's RSS curve (every 10 s, or sixty
points over a longer run; every second in WORK/samples.csv) and its file descriptors. Exit status 0 only when every
check holds.
"""

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind as FIND,
    StudyRootQueryRetrieveInformationModelGet as GET,
    StudyRootQueryRetrieveInformationModelMove as MOVE,
    Verification,
)

import free_ports  # tools/, beside this script

_config.STORE_SEND_CHUNKED_DATASET = True
ROOT = "1.2.826.0.1.3680043.10.511.77."


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency = defaultdict(list)
        self.counts = defaultdict(int)
        self.failures = defaultdict(int)  # (operation, kind) -> count

    def record(self, what, seconds=None, ok=True, kind=None):
        """`kind` says why a failed operation failed: its final status, or the exception."""
        with self.lock:
            self.counts[(what, ok)] += 1
            if ok and seconds is not None:
                self.latency[what].append(seconds)
            if not ok:
                self.failures[(what, kind or "no response")] += 1

    def pct(self, what, p):
        values = sorted(self.latency.get(what, []))
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(len(values) * p))] * 1000


class Server:
    """strata serve, restartable on the same port."""

    def __init__(self, strata, config, log, port):
        self.strata, self.config, self.log, self.port = strata, config, log, port
        self.proc = None
        self.lock = threading.Lock()

    def start(self):
        with self.lock:
            free_ports.renew([self.port])  # still ours for the next 30 minutes
            self.proc = subprocess.Popen(
                [self.strata, "serve", "--config", self.config],
                stdout=subprocess.PIPE, stderr=open(self.log, "ab"), text=True)
            line = self.proc.stdout.readline()
            if not line.startswith("listening on"):
                raise SystemExit(f"server did not start: {line!r}")
            # Whatever else it prints must not fill the pipe and stall it.
            threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def pid(self):
        with self.lock:
            return self.proc.pid if self.proc else None

    def kill9(self):
        with self.lock:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def terminate(self):
        with self.lock:
            self.proc.terminate()
            code = self.proc.wait(timeout=60)
            self.proc = None
            return code


def write_config(work, port, dest_port, hdfs_url=None, hdfs_path=None, log_level="warn",
                 locator_url="sqlite://locator.db", sqlite_cache_mib=None):
    cache = "" if sqlite_cache_mib is None else f"sqlite_cache_mib = {sqlite_cache_mib}\n"
    archive = "" if not hdfs_url else f"""
[archive]
backend = "hdfs"
hdfs_url = "{hdfs_url}"
path = "{hdfs_path}"

[tiering]
min_age_days = 0
window = "00:00-00:00"
poll_secs = 5
"""
    text = f"""[dicom]
aet = "STRATA"
listen = "127.0.0.1:{port}"
max_associations = 96
artim_timeout_secs = 5
dimse_timeout_secs = 20
idle_timeout_secs = 60

[[dicom.peers]]
aet = "SOAK"
host = "127.0.0.1"
port = {dest_port}

[storage]
online_dir = "online"

[backup]
nearline_dir = "nearline"
enqueue_on_receive = true
window = "00:00-00:00"
poll_secs = 2

[locator]
url = "{locator_url}"
{cache}
[log]
level = "{log_level}"
{archive}"""
    path = os.path.join(work, "strata.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def ct_file(folder, patient, study, series, number):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(prefix=ROOT)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = f"SOAK^{patient}"
    ds.PatientID = f"SOAK{patient}"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.StudyDate = "20261203"
    ds.Modality = "CT"
    ds.InstanceNumber = number
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = random.randbytes(64 * 64 * 2)
    path = os.path.join(folder, f"{ds.SOPInstanceUID}.dcm")
    ds.save_as(path, enforce_file_format=True)
    return ds.SOPInstanceUID, path


def failure_kind(status=None, error=None):
    """A failed operation's reason for the summary: a status code or an exception's class."""
    if error is not None:
        return type(error).__name__
    if status is None:
        return "no response"
    return f"0x{status:04X}"


def data_set_bytes(path):
    """The data set of a Part-10 file (after its meta group)."""
    raw = open(path, "rb").read()
    group_len = int.from_bytes(raw[140:144], "little")
    return raw[144 + group_len:]


class Soak:
    def __init__(self, args):
        self.args = args
        self.stats = Stats()
        self.deadline = time.monotonic() + args.seconds
        self.acked = {}  # SOP Instance UID -> (study, path)
        self.acked_lock = threading.Lock()
        self.studies = []
        self.samples = []  # (t, pid, rss MiB, fds, temps)
        self.kills = 0
        self.fills = 0
        self.damaged = 0
        self.datanode_kills = 0
        self.start = time.monotonic()

    def running(self):
        return time.monotonic() < self.deadline

    def ae(self, *contexts):
        ae = AE(ae_title="SOAK")
        ae.acse_timeout = 10
        ae.dimse_timeout = 30
        ae.network_timeout = 30
        for c in contexts:
            ae.add_requested_context(c)
        return ae

    def associate(self, ae, **kw):
        while self.running():
            assoc = ae.associate("127.0.0.1", self.args.port, ae_title="STRATA", **kw)
            if assoc.is_established:
                return assoc
            time.sleep(0.2)
        return None

    def store_worker(self, n):
        folder = os.path.join(self.args.work, "sent", str(n))
        os.makedirs(folder, exist_ok=True)
        ae = self.ae()
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        number = 0
        while self.running():
            study = generate_uid(prefix=ROOT)
            series = generate_uid(prefix=ROOT)
            assoc = self.associate(ae)
            if assoc is None:
                return
            for _ in range(10):
                if not assoc.is_established or not self.running():
                    break
                number += 1
                uid, path = ct_file(folder, n, study, series, number)
                t = time.monotonic()
                error = None
                try:
                    status = assoc.send_c_store(path)
                except Exception as e:
                    status, error = None, e
                code = int(status.Status) if status is not None and "Status" in status else None
                ok = code == 0
                self.stats.record("C-STORE", time.monotonic() - t, ok, failure_kind(code, error))
                if ok:
                    with self.acked_lock:
                        self.acked[uid] = (study, path)
                        if study not in self.studies:
                            self.studies.append(study)
            if assoc.is_established:
                assoc.release()

    def some_study(self):
        with self.acked_lock:
            return random.choice(self.studies) if self.studies else None

    def find_worker(self, n):
        ae = self.ae(FIND)
        while self.running():
            assoc = self.associate(ae)
            if assoc is None:
                return
            for _ in range(20):
                if not assoc.is_established or not self.running():
                    break
                q = Dataset()
                q.QueryRetrieveLevel = "STUDY"
                q.PatientID = f"SOAK{random.randrange(self.args.stores)}"
                q.StudyInstanceUID = ""
                q.NumberOfStudyRelatedInstances = ""
                t = time.monotonic()
                final, error = None, None
                try:
                    for status, _ in assoc.send_c_find(q, FIND):
                        if status is not None and "Status" in status and int(status.Status) not in (0xFF00, 0xFF01):
                            final = int(status.Status)
                except Exception as e:
                    final, error = None, e
                self.stats.record("C-FIND", time.monotonic() - t, final == 0, failure_kind(final, error))
            if assoc.is_established:
                assoc.release()

    def retrieve_worker(self, n, move):
        ae = self.ae(MOVE if move else GET)
        handlers = []
        kw = {}
        if not move:
            ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
            kw["ext_neg"] = [build_role(CTImageStorage, scp_role=True)]
            handlers = [(evt.EVT_C_STORE, lambda event: 0x0000)]
        what = "C-MOVE" if move else "C-GET"
        while self.running():
            study = self.some_study()
            if study is None:
                time.sleep(0.5)
                continue
            assoc = self.associate(ae, evt_handlers=handlers, **kw)
            if assoc is None:
                return
            q = Dataset()
            q.QueryRetrieveLevel = "STUDY"
            q.StudyInstanceUID = study
            t = time.monotonic()
            final, error = None, None
            try:
                responses = assoc.send_c_move(q, "SOAK", MOVE) if move else assoc.send_c_get(q, GET)
                for status, _ in responses:
                    if status is not None and "Status" in status and int(status.Status) not in (0xFF00, 0xFF01):
                        final = int(status.Status)
            except Exception as e:
                final, error = None, e
            self.stats.record(what, time.monotonic() - t, final == 0, failure_kind(final, error))
            if assoc.is_established:
                assoc.release()

    def echo_worker(self):
        """The C-ECHO probe runs in a process of its own, so that its latency is the server's
        and not this process's 46 busy threads' (Python's GIL)."""
        probe = subprocess.run(
            [sys.executable, __file__, "--echo-probe", str(self.args.port),
             "--seconds", str(self.deadline - time.monotonic())],
            capture_output=True, text=True)
        for line in probe.stdout.splitlines():
            ok, seconds = line.split()
            self.stats.record("C-ECHO", float(seconds), ok == "1")


    def kill_worker(self, server):
        while True:
            wake = time.monotonic() + self.args.kill_every
            while time.monotonic() < wake:
                if not self.running():
                    return
                time.sleep(0.2)
            server.kill9()
            self.kills += 1
            server.start()

    def stall_worker(self):
        """A C-FIND client that stops reading for 10 s, every 20 s."""
        while self.running():
            proc = subprocess.Popen(
                [sys.executable, os.path.join(os.path.dirname(__file__), "scu.py"), "find",
                 "127.0.0.1", str(self.args.port), "--aet", "SOAK", "--repeat", "1000",
                 "-k", "PatientID=SOAK*"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            proc.send_signal(signal.SIGSTOP)
            time.sleep(10)
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
            time.sleep(10)

    def fill_worker(self):
        """Fills the online tier's file system for 3 s every 30 s (15 s after each kill)."""
        path = os.path.join(self.args.work, "online", "soak-fill")
        time.sleep(15)
        while self.running():
            try:
                with open(path, "wb") as f:
                    block = b"\0" * (1 << 20)
                    while True:
                        f.write(block)
            except OSError:
                pass  # ENOSPC: full
            self.fills += 1
            time.sleep(3)
            os.unlink(path)
            for _ in range(135):
                if not self.running():
                    return
                time.sleep(0.2)

    def datanode_worker(self):
        """Kills the HDFS DataNode (-9) every 40 s and starts it again 5 s later."""
        hdfs_dev = os.path.join(os.path.dirname(__file__), "hdfs-dev.sh")
        time.sleep(20)
        while self.running():
            subprocess.run([hdfs_dev, "kill-datanode", self.args.hdfs], check=True)
            self.datanode_kills += 1
            time.sleep(5)
            subprocess.run([hdfs_dev, "start-datanode", self.args.hdfs], check=True)
            for _ in range(175):
                if not self.running():
                    return
                time.sleep(0.2)

    def damage_worker(self):
        """Flips one byte in the middle of a random near-line container every 10 s."""
        folder = os.path.join(self.args.work, "nearline")
        while self.running():
            time.sleep(10)
            files = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs
                     if not f.startswith(".") and "tmp" not in os.path.relpath(d, folder)]
            if not files:
                continue
            victim = random.choice(files)
            try:
                with open(victim, "r+b") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size < 1024:
                        continue
                    f.seek(size // 2)
                    byte = f.read(1)
                    f.seek(size // 2)
                    f.write(bytes([byte[0] ^ 0xFF]))
                self.damaged += 1
            except OSError:
                pass  # rewritten meanwhile

    def sample_worker(self, server):
        """RSS, descriptors and temporaries every second; also appended to WORK/samples.csv
        as they are taken, so that the curve of a run cut short is kept."""
        csv = open(os.path.join(self.args.work, "samples.csv"), "a", buffering=1)
        # RSS split as the kernel counts it (anonymous: heap and arenas; file: the mapped
        # binary and libraries) and the thread count (glibc gives threads arenas of their own).
        csv.write("t_s,pid,rss_mib,fds,temps,rss_anon_mib,rss_file_mib,threads\n")
        while self.running():
            pid = server.pid()
            try:
                status = {}
                for line in open(f"/proc/{pid}/status"):
                    key, _, value = line.partition(":")
                    status[key] = value.split()
                mib = lambda key: int(status.get(key, ["0"])[0]) / 1024
                rss = mib("VmRSS")
                fds = len(os.listdir(f"/proc/{pid}/fd"))
                temps = len(os.listdir(os.path.join(self.args.work, "online", "tmp")))
                sample = (time.monotonic() - self.start, pid, rss, fds, temps)
                self.samples.append(sample)
                csv.write("%.0f,%d,%.1f,%d,%d,%.1f,%.1f,%s\n" % (
                    sample + (mib("RssAnon"), mib("RssFile"), status.get("Threads", ["?"])[0])))
            except (OSError, TypeError):
                pass
            time.sleep(1)

    def verify(self, server, parallel=4):
        """Every acknowledged instance served by C-GET exactly once, bit-identical (compared
        by SHA-256, so that an hour's instances need not be held); `parallel` associations."""
        got = defaultdict(list)
        got_lock = threading.Lock()
        problems = []
        studies = list(self.studies)

        def on_store(event):
            digest = hashlib.sha256(event.request.DataSet.getvalue()).digest()
            with got_lock:
                got[event.request.AffectedSOPInstanceUID].append(digest)
            return 0x0000

        def worker():
            ae = AE(ae_title="SOAK")
            ae.add_requested_context(GET)
            ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
            ae.dimse_timeout = 60
            while True:
                with got_lock:
                    if not studies:
                        return
                    study = studies.pop()
                assoc = ae.associate("127.0.0.1", self.args.port, ae_title="STRATA",
                                     ext_neg=[build_role(CTImageStorage, scp_role=True)],
                                     evt_handlers=[(evt.EVT_C_STORE, on_store)])
                if not assoc.is_established:
                    with got_lock:
                        problems.append(f"C-GET association for {study} refused")
                    continue
                q = Dataset()
                q.QueryRetrieveLevel = "STUDY"
                q.StudyInstanceUID = study
                for status, _ in assoc.send_c_get(q, GET):
                    if status is not None and "Status" in status and int(status.Status) not in (0xFF00, 0xFF01, 0):
                        with got_lock:
                            problems.append(f"C-GET of {study} ended 0x{int(status.Status):04X}")
                assoc.release()

        threads = [threading.Thread(target=worker) for _ in range(parallel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for uid, (_, path) in self.acked.items():
            copies = got.get(uid, [])
            if len(copies) != 1:
                problems.append(f"{uid} acknowledged, served {len(copies)} times")
            elif copies[0] != hashlib.sha256(data_set_bytes(path)).digest():
                problems.append(f"{uid} served with other bytes than were sent")
        return problems


def echo_probe(port, seconds):
    """One C-ECHO every 100 ms for `seconds`, reconnecting after failures; prints
    `OK SECONDS` per echo."""
    deadline = time.monotonic() + seconds
    ae = AE(ae_title="SOAK")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = None
    while time.monotonic() < deadline:
        if assoc is None or not assoc.is_established:
            assoc = ae.associate("127.0.0.1", port, ae_title="STRATA")
            if not assoc.is_established:
                time.sleep(0.2)
                continue
        t = time.monotonic()
        try:
            status = assoc.send_c_echo()
            ok = status is not None and "Status" in status and int(status.Status) == 0
        except Exception:
            ok = False
        print(f"{int(ok)} {time.monotonic() - t:.6f}", flush=True)
        time.sleep(0.1)
    if assoc is not None and assoc.is_established:
        assoc.release()



def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strata")
    p.add_argument("--work")
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--faults", action="store_true")
    p.add_argument("--kill-every", type=float, default=30)
    p.add_argument("--stores", type=int, default=32)
    p.add_argument("--queries", type=int, default=8)
    p.add_argument("--moves", type=int, default=4)
    p.add_argument("--gets", type=int, default=2)
    p.add_argument("--log-level", default="warn", help="the server's [log] level")
    p.add_argument("--hdfs", metavar="DIR", help="a tools/hdfs-dev.sh cluster to archive into")
    p.add_argument("--locator-url", default="sqlite://locator.db",
                   help="the server's [locator] url (an empty PostgreSQL database, or SQLite)")
    p.add_argument("--sqlite-cache-mib", type=int,
                   help="the server's [locator] sqlite_cache_mib (default: the server's own)")
    p.add_argument("--echo-probe", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.echo_probe:
        echo_probe(args.echo_probe, args.seconds)
        return 0
    random.seed(7)
    # Reserved below the ephemeral range: the server binds it again after each kill -9.
    (args.port,) = free_ports.reserve(1)

    # The C-MOVE destination: counts what arrives.
    dest = AE(ae_title="SOAK")
    dest.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    moved = [0]

    def on_moved(event):
        moved[0] += 1
        return 0x0000

    dest_server = dest.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_moved)])
    hdfs_url = None
    if args.hdfs:
        with open(os.path.join(args.hdfs, "env")) as f:
            env = dict(line.strip().split("=", 1) for line in f if "=" in line)
        hdfs_url = env["HDFS_URL"]
    hdfs_path = "/soak-" + ("faults" if args.faults else "clean")
    config = write_config(args.work, args.port, dest_server.server_address[1], hdfs_url, hdfs_path,
                          args.log_level, args.locator_url, args.sqlite_cache_mib)
    online = os.path.join(args.work, "online")
    os.makedirs(online, exist_ok=True)
    mounted = args.faults and os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1g", "tmpfs", online]).returncode == 0
    if args.faults and not mounted:
        print("note: not root, so the online tier is not filled (it needs a tmpfs of its own)")
    try:
        return run(args, config, dest_server, moved, mounted)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", online])


def run(args, config, dest_server, moved, mounted):
    server = Server(args.strata, config, os.path.join(args.work, "server.log"), args.port)
    server.start()

    soak = Soak(args)
    threads = [threading.Thread(target=soak.store_worker, args=(i,)) for i in range(args.stores)]
    threads += [threading.Thread(target=soak.find_worker, args=(i,)) for i in range(args.queries)]
    threads += [threading.Thread(target=soak.retrieve_worker, args=(i, True)) for i in range(args.moves)]
    threads += [threading.Thread(target=soak.retrieve_worker, args=(i, False)) for i in range(args.gets)]
    threads += [threading.Thread(target=soak.echo_worker), threading.Thread(target=soak.sample_worker, args=(server,))]
    if args.faults:
        threads += [threading.Thread(target=soak.kill_worker, args=(server,)),
                    threading.Thread(target=soak.stall_worker, daemon=True),
                    threading.Thread(target=soak.damage_worker, daemon=True)]
        if mounted:
            threads.append(threading.Thread(target=soak.fill_worker))
        if args.hdfs:
            threads.append(threading.Thread(target=soak.datanode_worker))
    for t in threads:
        t.start()
    for t in threads:
        if not t.daemon:
            t.join()
    elapsed = time.monotonic() - soak.start

    datanode_problem = wait_for_datanode(args.hdfs) if args.hdfs else ""
    archived = archived_instances(args.strata, config) if args.hdfs else None
    problems = soak.verify(server)
    if datanode_problem:
        problems.append(datanode_problem)
    final_pid = server.pid()
    fds_end = len(os.listdir(f"/proc/{final_pid}/fd"))
    repair = subprocess.run([args.strata, "verify", "--config", config, "--repair", "--json"],
                            capture_output=True, text=True)
    out = subprocess.run([args.strata, "verify", "--config", config, "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        problems.append(f"strata verify after --repair: {out.stdout}{out.stderr}")
    code = server.terminate()
    if code != 0:
        problems.append(f"the server exited {code} on SIGTERM")
    temps = os.listdir(os.path.join(args.work, "online", "tmp"))
    if temps:
        problems.append(f"{len(temps)} temporaries left in online/tmp after SIGTERM")
    dest_server.shutdown()

    s = soak.stats
    mode = "with faults" if args.faults else "without faults"
    print(f"\nsoak {mode}: {args.seconds:.0f} s of load ({elapsed:.0f} s with the wind-down), {args.stores} store, {args.queries} query, "
          f"{args.moves} move, {args.gets} get associations; {soak.kills} kill -9")
    print(f"| operation | ok | failed | per s | p50 ms | p99 ms |")
    print(f"|---|---|---|---|---|---|")
    for what in ("C-STORE", "C-FIND", "C-MOVE", "C-GET", "C-ECHO"):
        ok, bad = s.counts[(what, True)], s.counts[(what, False)]
        print(f"| {what} | {ok} | {bad} | {ok / args.seconds:.1f} | {s.pct(what, 0.5):.1f} | {s.pct(what, 0.99):.1f} |")
    for (what, kind), count in sorted(s.failures.items()):
        print(f"failed {what}: {count} x {kind}")
    print(f"acknowledged {len(soak.acked)} instances in {len(soak.studies)} studies; "
          f"{moved[0]} instances arrived by C-MOVE; online tier filled {soak.fills} times; "
          f"{soak.damaged} near-line containers damaged")
    if archived is not None:
        print(f"archived into HDFS containers meanwhile: {archived} instances; "
              f"DataNode killed {soak.datanode_kills} times")
        if archived == 0:
            problems.append("the tiering worker archived nothing")
    print(f"strata verify --repair: {repair.stdout.strip()[:400]}")
    last = {}
    every = max(10, int(args.seconds) // 60)  # about sixty lines whatever the duration
    for t, pid, rss, fds, tmp in soak.samples:
        if int(t) // every != last.get("slot"):
            last["slot"] = int(t) // every
            print(f"  t={t:5.0f}s pid={pid} rss={rss:6.1f} MiB fds={fds} temps={tmp}")
    final = [x for x in soak.samples if x[1] == final_pid]
    if final:
        print(f"last process: rss {final[0][2]:.1f} -> {final[-1][2]:.1f} MiB (max {max(x[2] for x in final):.1f}), "
              f"fds {final[0][3]} -> {fds_end} at the end")
    echo_p99 = s.pct("C-ECHO", 0.99)
    print(f"C-ECHO p99 {echo_p99:.1f} ms (target < 50)")
    for problem in problems[:20]:
        print("PROBLEM " + problem)
    print(f"soak: {1 if not problems else 0} passed, {1 if problems else 0} failed")
    return 1 if problems else 0


def wait_for_datanode(hdfs):
    """Starts the DataNode if a kill left it down and waits until the NameNode counts it."""
    hdfs_dev = os.path.join(os.path.dirname(__file__), "hdfs-dev.sh")
    subprocess.run([hdfs_dev, "start-datanode", hdfs], check=True)
    for _ in range(300):
        state = subprocess.run([hdfs_dev, "status", hdfs], capture_output=True, text=True).stdout
        if '"NumLiveDataNodes": 1' in state:
            return ""
        time.sleep(0.2)
    return "the DataNode did not come back within 60 s"


def archived_instances(strata, config):
    """Instances on the archive tier now (`strata status`)."""
    out = subprocess.run([strata, "status", "--config", config, "--json"], capture_output=True, text=True)
    try:
        return json.loads(out.stdout)["tiers"]["archive"]["instances"]
    except (ValueError, KeyError):
        return 0


if __name__ == "__main__":
    sys.exit(main())

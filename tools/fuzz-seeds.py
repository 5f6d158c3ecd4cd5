#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target (fuzz/seeds/<target>/) from scratch: small,
valid inputs of each format that the fuzzer then mutates. The seeds are committed (a few KiB
in all); run this again after a format changes. Deterministic: the same script gives the
same bytes.

Usage: tools/fuzz-seeds.py [OUT]   (default fuzz/seeds)
"""

import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import tarfile
import zlib

import numpy
import openjpeg

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                         JPEG2000Lossless, RLELossless)

OUT = sys.argv[1] if len(sys.argv) > 1 else "fuzz/seeds"
IMPLICIT, EXPLICIT, BIG, DEFLATED = 0, 1, 2, 3
SOP_INSTANCE = "1.2.826.0.1.3680043.10.511.1.1.1"
STUDY = "1.2.826.0.1.3680043.10.511.1"
SERIES = "1.2.826.0.1.3680043.10.511.1.1"


def put(target, name, data):
    folder = os.path.join(OUT, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def encode(ds, syntax):
    """The data set's bytes in one of the four syntaxes (no file meta)."""
    fp = DicomBytesIO()
    fp.is_little_endian = syntax != BIG
    fp.is_implicit_VR = syntax == IMPLICIT
    write_dataset(fp, ds)
    data = fp.getvalue()
    if syntax == DEFLATED:
        c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = c.compress(data) + c.flush()
    return data


def ct(encapsulated=False):
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = SOP_INSTANCE
    ds.StudyDate = "20260102"
    ds.Modality = "CT"
    ds.PatientName = "Müller^Jürgen"
    ds.PatientID = "FUZZ-1"
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.InstanceNumber = 1
    item = Dataset()
    item.CodeValue = "113691"
    item.CodingSchemeDesignator = "DCM"
    ds.ProcedureCodeSequence = Sequence([item])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 4
    ds.Columns = 4
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if encapsulated:
        ds.PixelData = encapsulate([b"\xff\xd8\x00\x01", b"\x02\x03\xff\xd9"])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = bytes(range(32))
    return ds


def command(**fields):
    """A command set as DIMSE sends it: Implicit VR Little Endian with its group length."""
    ds = Dataset()
    for k, v in fields.items():
        setattr(ds, k, v)
    body = encode(ds, IMPLICIT)
    return struct.pack("<HHIII", 0, 0, 4, 4, len(body)) + body


def pdu(kind, body):
    return struct.pack(">BBI", kind, 0, len(body)) + body


def item(kind, body):
    return struct.pack(">BBH", kind, 0, len(body)) + body


def associate_rq():
    ae = lambda s: s.encode().ljust(16)
    ctx = item(0x20, bytes([1, 0, 0, 0]) + item(0x30, CTImageStorage.encode())
               + item(0x40, ExplicitVRLittleEndian.encode())
               + item(0x40, ImplicitVRLittleEndian.encode()))
    user = item(0x50, item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.3.4")
                + item(0x54, struct.pack(">H", len(CTImageStorage)) + CTImageStorage.encode() + b"\x01\x00"))
    body = (struct.pack(">HH", 1, 0) + ae("STRATA") + ae("FUZZSCU") + bytes(32)
            + item(0x10, b"1.2.840.10008.3.1.1.1") + ctx + user)
    return pdu(0x01, body)


def p_data(context, control, data):
    pdv = struct.pack(">IBB", len(data) + 2, context, control) + data
    return pdu(0x04, pdv)


def commands():
    store = command(AffectedSOPClassUID=CTImageStorage, CommandField=0x0001, MessageID=7,
                    Priority=0, CommandDataSetType=0x0000, AffectedSOPInstanceUID=SOP_INSTANCE)
    return {
        "echo": command(AffectedSOPClassUID="1.2.840.10008.1.1", CommandField=0x0030,
                        MessageID=1, CommandDataSetType=0x0101),
        "store": store,
        "find": command(AffectedSOPClassUID="1.2.840.10008.5.1.4.1.2.2.1", CommandField=0x0020,
                        MessageID=2, Priority=0, CommandDataSetType=0x0000),
        "move": command(AffectedSOPClassUID="1.2.840.10008.5.1.4.1.2.2.2", CommandField=0x0021,
                        MessageID=3, Priority=0, CommandDataSetType=0x0000,
                        MoveDestination="DEST"),
        "action": command(RequestedSOPClassUID="1.2.840.10008.1.20.1", CommandField=0x0130,
                          MessageID=4, CommandDataSetType=0x0000, ActionTypeID=1,
                          RequestedSOPInstanceUID="1.2.840.10008.1.20.1.1"),
        "store-rsp": command(AffectedSOPClassUID=CTImageStorage, CommandField=0x8001,
                             MessageIDBeingRespondedTo=7, CommandDataSetType=0x0101, Status=0,
                             AffectedSOPInstanceUID=SOP_INSTANCE),
    }


def identifiers():
    study = Dataset()
    study.QueryRetrieveLevel = "STUDY"
    study.PatientName = "Mü*"
    study.StudyDate = "20250101-20261231"
    study.StudyInstanceUID = ""
    study.ModalitiesInStudy = ["CT", "MR"]
    series = Dataset()
    series.QueryRetrieveLevel = "SERIES"
    series.StudyInstanceUID = STUDY
    series.SeriesInstanceUID = ""
    series.Modality = "CT"
    action = Dataset()
    action.TransactionUID = "1.2.826.0.1.3680043.10.511.9"
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = SOP_INSTANCE
    action.ReferencedSOPSequence = Sequence([ref])
    return {"study": study, "series": series, "action": action}


def part10(ds, syntax_uid, implicit):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax_uid
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.511.0"
    ds.file_meta = meta
    fp = io.BytesIO()
    ds.save_as(fp, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
    return fp.getvalue()


def rejection_note():
    """An IOCM rejection note (Key Object Selection, CID 7011 title) naming the CT seed."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.59"
    ds.SOPInstanceUID = SOP_INSTANCE + ".99"
    ds.Modality = "KO"
    ds.PatientID = "FUZZ-1"
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES + ".99"
    ds.ValueType = "CONTAINER"
    title = Dataset()
    title.CodeValue = "113001"
    title.CodingSchemeDesignator = "DCM"
    title.CodeMeaning = "Rejected for Quality Reasons"
    ds.ConceptNameCodeSequence = Sequence([title])
    sop = Dataset()
    sop.ReferencedSOPClassUID = CTImageStorage
    sop.ReferencedSOPInstanceUID = SOP_INSTANCE
    series = Dataset()
    series.SeriesInstanceUID = SERIES
    series.ReferencedSOPSequence = Sequence([sop])
    study = Dataset()
    study.StudyInstanceUID = STUDY
    study.ReferencedSeriesSequence = Sequence([series])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([study])
    return ds


def multipart(parts):
    """A STOW-RS request: its Content-Type line, then the multipart/related body."""
    out = b'multipart/related; type="application/dicom"; boundary=fuzz-boundary\n'
    for part in parts:
        out += b"--fuzz-boundary\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n"
    return out + b"--fuzz-boundary--\r\n"


def vint(n):
    """Hadoop's zero-compressed vint, for the small non-negative lengths used here."""
    assert 0 <= n < 128 or n < 256
    return bytes([n]) if n < 128 else bytes([0x8F, n])


def text(s):
    b = s.encode()
    return vint(len(b)) + b


def seqfile(records):
    sync = bytes(range(16))
    meta = [("strata.format", "S-DICOM 1"), ("strata.study_instance_uid", STUDY),
            ("strata.instance_count", str(len(records)))]
    out = b"SEQ\x06" + text("org.apache.hadoop.io.Text") + text("org.apache.hadoop.io.BytesWritable")
    out += b"\x00\x00" + struct.pack(">i", len(meta))
    for k, v in meta:
        out += text(k) + text(v)
    out += sync
    for i, (key, value) in enumerate(records):
        if i == 1:
            out += struct.pack(">i", -1) + sync
        k = text(key)
        v = struct.pack(">i", len(value)) + value
        out += struct.pack(">ii", len(k) + len(v), len(k)) + k + v
    return out


def volume(members):
    import hashlib

    fp = io.BytesIO()
    with tarfile.open(fileobj=fp, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        listed = []
        offset = 0
        for path, data in members:
            offset += 512
            listed.append({
                "path": path, "sop_instance_uid": SOP_INSTANCE, "series_instance_uid": SERIES,
                "study_instance_uid": STUDY, "transfer_syntax_uid": ExplicitVRLittleEndian,
                "offset": offset, "length": len(data),
                "sha256": hashlib.sha256(data).hexdigest(), "crc32c": 0,
            })
            offset += (len(data) + 511) // 512 * 512
        for path, data in members:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = 1767225600
            tar.addfile(info, io.BytesIO(data))
        manifest = json.dumps({"format": "strata-volume/1", "volume": "V0001",
                               "created_at": 1767225600000, "strata_version": "0.1.0",
                               "members": listed}).encode()
        info = tarfile.TarInfo("MANIFEST.json")
        info.size = len(manifest)
        info.mtime = 1767225600
        tar.addfile(info, io.BytesIO(manifest))
    return fp.getvalue()


def main():
    cmds = commands()
    for name, data in cmds.items():
        put("command", name, data)

    native, encaps = ct(), ct(encapsulated=True)
    for syntax, name in [(IMPLICIT, "implicit"), (EXPLICIT, "explicit"), (BIG, "big"),
                         (DEFLATED, "deflated")]:
        # The first byte selects the syntax (and, for the walk, the fragment size).
        put("dataset", name, bytes([syntax | 0x10]) + encode(native, syntax))
    put("dataset", "encapsulated", bytes([EXPLICIT | 0x04]) + encode(encaps, EXPLICIT))

    for name, ds in identifiers().items():
        put("identifier", name + "-implicit", bytes([0]) + encode(ds, IMPLICIT))
        put("identifier", name + "-explicit", bytes([1]) + encode(ds, EXPLICIT))

    explicit_file = part10(ct(), ExplicitVRLittleEndian, False)
    note_file = part10(rejection_note(), ExplicitVRLittleEndian, False)
    put("stow", "one-image", multipart([explicit_file]))
    put("stow", "image-and-rejection", multipart([explicit_file, note_file]))
    put("part10", "explicit", bytes([1]) + explicit_file)
    put("part10", "implicit", bytes([0]) + part10(ct(), ImplicitVRLittleEndian, True))
    put("part10", "encapsulated",
        bytes([0]) + part10(ct(encapsulated=True), "1.2.840.10008.1.2.4.50", False))

    # The first byte selects: 0 JPEG 2000 lossless, 1 JPEG 2000 ROI, 2 decode.
    image = ct()
    image.Rows = image.Columns = 8
    image.PixelData = b"".join(struct.pack("<H", (i * 37) % 4096) for i in range(64))
    put("transcode", "to-lossless", bytes([0]) + part10(image, ExplicitVRLittleEndian, False))
    put("transcode", "to-roi", bytes([1]) + part10(image, ExplicitVRLittleEndian, False))
    rle = ct()
    rle.Rows = rle.Columns = 8
    rle.PixelData = image.PixelData
    rle.file_meta = FileMetaDataset()
    rle.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    rle.compress(RLELossless, generate_instance_uid=False)
    put("transcode", "from-rle", bytes([2]) + part10(rle, RLELossless, False))
    # OpenJPEG uses six resolution levels: 32 x 32 is the smallest image it encodes.
    j2k = ct(encapsulated=True)
    j2k.Rows = j2k.Columns = 32
    pixels = numpy.array([(i * 37) % 4096 for i in range(32 * 32)], dtype="<u2").reshape(32, 32)
    j2k.PixelData = encapsulate([openjpeg.encode(pixels, bits_stored=12)])
    put("transcode", "from-j2k", bytes([2]) + part10(j2k, JPEG2000Lossless, False))

    # A resolution-major codestream with packet lengths, as OpenJPEG writes one (ours are
    # alike); the first byte is how many resolutions to keep.
    with tempfile.TemporaryDirectory() as tmp:
        pgm, j2c = os.path.join(tmp, "seed.pgm"), os.path.join(tmp, "seed.j2k")
        with open(pgm, "wb") as f:
            f.write(b"P5\n32 32\n255\n" +
                    bytes((x * 37 + y * 11) % 256 for y in range(32) for x in range(32)))
        subprocess.run(["/usr/bin/opj_compress", "-i", pgm, "-o", j2c, "-p", "RPCL", "-PLT",
                        "-TLM", "-n", "3"], check=True, stdout=subprocess.DEVNULL)
        with open(j2c, "rb") as f:
            put("j2k_prefix", "openjpeg-rpcl-plt", bytes([2]) + f.read())

    data_set = encode(native, EXPLICIT)
    stream = associate_rq()
    stream += p_data(1, 0x03, cmds["store"])
    stream += p_data(1, 0x00, data_set[:40]) + p_data(1, 0x02, data_set[40:])
    stream += pdu(0x05, bytes(4))
    put("pdu", "store", stream)
    put("pdu", "echo", associate_rq() + p_data(1, 0x03, cmds["echo"]) + pdu(0x07, bytes(4)))

    put("seqfile", "two-records", seqfile([(SOP_INSTANCE, explicit_file),
                                           (SOP_INSTANCE + ".2", b"DICM")]))
    put("volume", "one-member",
        volume([(f"{STUDY}/{SERIES}/{SOP_INSTANCE}.dcm", explicit_file)]))

    with open("config/strata.toml", "rb") as f:
        put("config", "documented", f.read())
    put("config", "minimal", b'[dicom]\naet = "STRATA"\nport = 11112\n[storage]\n'
        b'online_dir = "online"\n[locator]\nurl = "sqlite://strata.db"\n')


main()

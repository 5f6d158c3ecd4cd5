#!/usr/bin/env python3
"""Drives Strata's DICOMweb endpoints with dicomweb-client (the PyPI client viewers' tools
use) and compares every answer with the files that were stored.

    dicomweb_check.py --url http://127.0.0.1:PORT/dicom-web --user U --password P \
        --corpus DIR [--archived STUDY_UID]

DIR holds the corpus that was stored (tools/gen_corpus.py output, with manifest.json).
Checks QIDO-RS at every level (all results, PatientID, name prefix, date range, UID list,
limit/offset, includefield), WADO-RS study/series/instance retrieval as stored (data sets
byte for byte, parsed from the raw multipart body) and in Explicit and Implicit VR Little
Endian (every element equal, pixels equal). --archived names a study that has been moved
to the archive tier: it must be found with InstanceAvailability NEARLINE and retrieved the
same. Prints one line per check and "dicomweb: N checks passed"; exits 1 on the first
failure.
"""

import argparse
import io
import json
import os
import sys
import urllib.parse

import numpy as np
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset, dcmread

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
checks = 0


def check(condition, what):
    global checks
    if not condition:
        print(f"FAIL {what}", flush=True)
        sys.exit(1)
    checks += 1
    print(f"ok {what}", flush=True)


def value(obj, tag):
    """The first value of a DICOM JSON attribute, or None."""
    values = obj.get(tag, {}).get("Value") or [None]
    return values[0]


def person_name(pn):
    """A DICOM JSON person name back in its DICOM form (groups joined with '=')."""
    groups = [pn.get("Alphabetic", ""), pn.get("Ideographic", ""), pn.get("Phonetic", "")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def data_set_bytes(part10):
    """The bytes after the file meta group of a Part-10 file."""
    assert part10[128:132] == b"DICM", "not Part-10"
    group_len = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_len:]


def multipart_parts(response):
    """The parts of a multipart/related body: (headers dict, body bytes)."""
    content_type = response.headers["Content-Type"]
    boundary = [p.split("=", 1)[1].strip().strip('"') for p in content_type.split(";")
                if p.strip().startswith("boundary=")][0].encode()
    parts = []
    for chunk in response.content.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, body = chunk.split(b"\r\n\r\n", 1)
        headers = dict(line.split(": ", 1) for line in head.decode().strip().split("\r\n"))
        parts.append((headers, body[:-2] if body.endswith(b"\r\n") else body))
    return parts


def expected_grey(ds, frame=0, window=None):
    """What PS3.3 C.11 says a grey frame looks like in 8 bits: Modality LUT (rescale), VOI
    window (given, else the data set's, else the frame's range with LINEAR_EXACT),
    MONOCHROME1 inverted. Computed here, independently of the server."""
    pixels = ds.pixel_array
    if getattr(ds, "NumberOfFrames", 1) > 1:
        pixels = pixels[frame]
    x = pixels.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1)) \
        + float(getattr(ds, "RescaleIntercept", 0))
    if window is None and "WindowCenter" in ds:
        window = (float(ds.WindowCenter), float(ds.WindowWidth), "linear")
    if window is None:
        window = ((x.min() + x.max()) / 2, max(x.max() - x.min(), 1), "linear-exact")
    c, w, function = window
    if function == "linear":
        y = np.where(x <= c - 0.5 - (w - 1) / 2, 0.0,
                     np.where(x > c - 0.5 + (w - 1) / 2, 1.0, (x - (c - 0.5)) / (w - 1) + 0.5))
    elif function == "linear-exact":
        y = np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 1.0, (x - c) / w + 0.5))
    else:
        y = 1 / (1 + np.exp(-4 * (x - c) / w))
    y = np.round(np.clip(y, 0, 1) * 255)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        y = 255 - y
    return y.astype(np.uint8)


def image_of(body):
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(body)))


def synthetic_images(base):
    """Instances the corpus lacks, for rendering: signed 16-bit with rescale and no window,
    8-bit MONOCHROME1 multi-frame, RGB with planar configuration 1. Part-10 bytes."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import generate_uid, ExplicitVRLittleEndian
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:96, 0:160]
    made = []

    def make(pixels, **attrs):
        ds = Dataset()
        for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate"):
            setattr(ds, keyword, getattr(base, keyword))
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
        ds.Modality = "OT"
        ds.Rows, ds.Columns = pixels.shape[-3:-1] if attrs.get("SamplesPerPixel") == 3 else pixels.shape[-2:]
        ds.SamplesPerPixel = 1
        for k, v in attrs.items():
            setattr(ds, k, v)
        ds.PixelData = pixels.tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        made.append(out.getvalue())
        return ds

    signed = ((x * 40 - 3000) + rng.integers(-50, 50, x.shape)).astype(np.int16)
    # With a long top-level binary value: its metadata gives a BulkDataURI for it.
    make(signed, BitsAllocated=16, BitsStored=16, HighBit=15, PixelRepresentation=1,
         PhotometricInterpretation="MONOCHROME2", RescaleSlope="0.5", RescaleIntercept="100",
         EncapsulatedDocument=bytes(range(256)) * 8)
    frames = np.stack([((x + 20 * i) % 256) for i in range(3)]).astype(np.uint8)
    make(frames, BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0,
         PhotometricInterpretation="MONOCHROME1", NumberOfFrames=3)
    rgb = np.stack([x % 256, y * 2, 255 - x % 256], axis=-1).astype(np.uint8)
    make(np.ascontiguousarray(rgb.transpose(2, 0, 1)), BitsAllocated=8, BitsStored=8, HighBit=7,
         PixelRepresentation=0, PhotometricInterpretation="RGB", PlanarConfiguration=1,
         SamplesPerPixel=3, Rows=96, Columns=160)
    return made


def rendered(args, session, client, f):
    """/rendered and /thumbnail: a corpus CT (stored window), synthetic signed, MONOCHROME1
    multi-frame and planar RGB images, each compared with the pixels computed here."""
    uid, se, sop = f["study_instance_uid"], f["series_instance_uid"], f["sop_instance_uid"]
    original = dcmread(ORIGINALS[sop])
    png = client.retrieve_instance_rendered(uid, se, sop, media_types=("image/png",))
    got = image_of(png)
    check(png[:8] == b"\x89PNG\r\n\x1a\n" and np.abs(got.astype(int) - expected_grey(original)).max() <= 1,
          f"rendered PNG of {sop}: the stored window applied, pixel for pixel")
    jpeg = client.retrieve_instance_rendered(uid, se, sop, media_types=("image/jpeg",),
                                             params={"window": "-600,1500,linear", "quality": "95"})
    got = image_of(jpeg).astype(int)
    expected = expected_grey(original, window=(-600.0, 1500.0, "linear")).astype(int)
    check(jpeg[:2] == b"\xff\xd8" and got.shape == expected.shape
          and np.abs(got - expected).mean() < 2.0,
          f"rendered JPEG of {sop} with window=-600,1500: within JPEG error "
          f"(mean {np.abs(got - expected).mean():.2f})")
    framed = client.retrieve_instance_frames_rendered(uid, se, sop, [1], media_types=("image/png",))
    check(framed == png, f"frames/1/rendered of {sop}: the instance's rendering")
    for url, what in ((f"{args.url}/studies/{uid}/thumbnail", "study"),
                      (f"{args.url}/studies/{uid}/series/{se}/thumbnail", "series"),
                      (f"{args.url}/studies/{uid}/series/{se}/instances/{sop}/thumbnail", "instance")):
        response = session.get(url, headers={"Accept": "image/png"})
        got = image_of(response.content)
        check(response.status_code == 200 and response.headers["Content-Type"] == "image/png"
              and max(got.shape) == 128 and got.std() > 5,
              f"{what} thumbnail: 128 pixels on the long side, not uniform")
    response = session.get(f"{args.url}/studies/{uid}/series/{se}/instances/{sop}/rendered",
                           params={"viewport": "100,60"}, headers={"Accept": "image/png"})
    check(image_of(response.content).shape == (60, 60), "viewport=100,60 of a square image: 60x60")

    # Study and series /rendered: every image of it, one part each, each part the instance's
    # own rendering (parts compared as a multiset: their order is the server's).
    instances = client.search_for_instances(study_instance_uid=uid)
    own = {value(i, "00080018"): client.retrieve_instance_rendered(
        uid, value(i, "0020000E"), value(i, "00080018"), media_types=("image/png",))
        for i in instances}
    response = session.get(f"{args.url}/studies/{uid}/rendered",
                           headers={"Accept": 'multipart/related; type="image/png"'})
    parts = multipart_parts(response) if response.status_code == 200 else []
    check(response.headers.get("Content-Type", "").startswith('multipart/related; type="image/png"')
          and len(parts) == len(instances) and all(h["Content-Type"] == "image/png" for h, _ in parts)
          and sorted(b for _, b in parts) == sorted(own.values()),
          f"study rendered: {len(parts)} PNG parts, the {len(instances)} instances' renderings")
    in_series = [value(i, "00080018") for i in instances if value(i, "0020000E") == se]
    body = client.retrieve_series_rendered(uid, se, media_types=("image/jpeg",),
                                           params={"viewport": "64,64"})
    first = body.lstrip(b"\r\n")  # the body as sent: its first line is --boundary
    boundary = first[2:first.index(b"\r\n")]
    jpegs = [chunk.split(b"\r\n\r\n", 1)[1][:-2] for chunk in body.split(b"--" + boundary)[1:-1]]
    check(len(jpegs) == len(in_series)
          and all(j[:2] == b"\xff\xd8" and max(image_of(j).shape) == 64 for j in jpegs),
          f"series rendered by dicomweb-client, viewport=64,64: {len(jpegs)} JPEG parts of 64 pixels "
          f"for {len(in_series)} instances")

    bodies = synthetic_images(original)
    response = post_files(session, f"{args.url}/studies", bodies)
    check(response.status_code == 200, "STOW-RS of the synthetic images for rendering")
    for body in bodies:
        ds = dcmread(io.BytesIO(body))
        base = f"{args.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        kind = f"{ds.PhotometricInterpretation} {ds.BitsStored}-bit{' signed' if ds.PixelRepresentation else ''}"
        if ds.PhotometricInterpretation == "RGB":
            got = image_of(session.get(base + "/rendered", headers={"Accept": "image/png"}).content)
            check(np.array_equal(got, ds.pixel_array), f"rendered {kind} planar: the RGB pixels")
            continue
        # /metadata names Pixel Data (and a long binary value) by BulkDataURI, and
        # /bulkdata serves those values.
        meta = client.retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                                 ds.SOPInstanceUID)
        # dicomweb-client sends a Host header without the port, and the server builds its
        # URIs from that Host (no public_url here): compare paths, fetch from our netloc.
        ours = lambda uri: args.url.split("/dicom-web")[0] + urllib.parse.urlparse(uri).path
        pixel_uri = meta["7FE00010"]["BulkDataURI"]
        [pixels] = client.retrieve_bulkdata(ours(pixel_uri))
        check(ours(pixel_uri) == base + "/bulkdata/7FE00010" and pixels == ds.PixelData,
              f"{kind}: Pixel Data by its BulkDataURI, byte for byte")
        if "EncapsulatedDocument" in ds:
            [document] = client.retrieve_bulkdata(ours(meta["00420011"]["BulkDataURI"]))
            check(document == ds.EncapsulatedDocument,
                  f"{kind}: a 2 KiB binary attribute by its BulkDataURI")
        frames = int(getattr(ds, "NumberOfFrames", 1))
        for frame in range(frames):
            got = image_of(session.get(f"{base}/frames/{frame + 1}/rendered",
                                       headers={"Accept": "image/png"}).content)
            check(np.abs(got.astype(int) - expected_grey(ds, frame)).max() <= 1,
                  f"rendered {kind} frame {frame + 1} of {frames}: pixel for pixel")
        response = session.get(f"{base}/frames/{frames + 1}/rendered")
        check(response.status_code == 404, f"rendered {kind}: frame {frames + 1} is 404")


def compressed_instances(base):
    """Encapsulated multi-frame instances, as (label, Part-10 bytes, transfer syntax, frame
    bitstreams, decoded frames or None): RLE, one fragment per frame and no offset table;
    HTJ2K (OpenJPH), two fragments per frame with a Basic Offset Table, and the same without
    one (frames then begin where a codestream does)."""
    import subprocess
    import tempfile
    from pydicom.dataset import FileMetaDataset
    from pydicom.encaps import encapsulate, generate_frames
    from pydicom.uid import generate_uid, RLELossless
    HTJ2K = "1.2.840.10008.1.2.4.201"
    y, x = np.mgrid[0:64, 0:80]
    pixels = np.stack([((x * 7 + y * 3 + 40 * i) % 4096) for i in range(3)]).astype(np.uint16)

    def dataset():
        ds = Dataset()
        for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate"):
            setattr(ds, keyword, getattr(base, keyword))
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word SC
        ds.Modality = "OT"
        ds.Rows, ds.Columns = pixels.shape[1:]
        ds.NumberOfFrames = pixels.shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        return ds

    def part10(ds, syntax, fragments_or_frames, **encapsulation):
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = encapsulate(fragments_or_frames, **encapsulation)
        ds["PixelData"].VR = "OB"
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()

    made = []
    rle = dataset()
    rle.PixelData = pixels.tobytes()
    rle.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    rle.compress(RLELossless, encoding_plugin="pydicom")
    frames = list(generate_frames(rle.PixelData, number_of_frames=3))
    made.append(("RLE", part10(rle, RLELossless, frames, has_bot=False), RLELossless, frames, pixels))
    codestreams = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, frame in enumerate(pixels):
            pgm, j2c = os.path.join(tmp, f"{i}.pgm"), os.path.join(tmp, f"{i}.j2c")
            with open(pgm, "wb") as f:
                f.write(b"P5\n80 64\n4095\n" + frame.astype(">u2").tobytes())
            subprocess.run(["ojph_compress", "-i", pgm, "-o", j2c, "-reversible", "true"],
                           check=True, stdout=subprocess.DEVNULL)
            codestream = open(j2c, "rb").read()
            # Fragments are of even length: the last one of an odd frame ends with a pad byte.
            codestreams.append(codestream + b"\0" * (len(codestream) % 2))
    made.append(("HTJ2K with offsets", part10(dataset(), HTJ2K, codestreams, has_bot=True,
                                              fragments_per_frame=2), HTJ2K, codestreams, pixels))
    made.append(("HTJ2K without offsets", part10(dataset(), HTJ2K, codestreams, has_bot=False,
                                                 fragments_per_frame=2), HTJ2K, codestreams, pixels))
    return made


def compressed_frames(args, session, client, base):
    """WADO-RS frames of encapsulated instances: as stored when asked for (the syntax's own
    media type, or octet-stream with transfer-syntax=*, as OHIF asks), each the frame's
    bitstream byte for byte; decoded when asked for uncompressed; 406 for another codec."""
    from pydicom.uid import RLELossless
    made = compressed_instances(base)
    response = post_files(session, f"{args.url}/studies", [body for _, body, _, _, _ in made])
    check(response.status_code == 200, f"STOW of encapsulated multi-frame instances: {response.status_code}")
    media = {"1.2.840.10008.1.2.5": "image/dicom-rle", "1.2.840.10008.1.2.4.201": "image/jphc"}
    for label, body, syntax, frames, decoded in made:
        ds = dcmread(io.BytesIO(body))
        url = (f"{args.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
               f"/instances/{ds.SOPInstanceUID}/frames/3,1")
        for accept, part_type in (
                (f'multipart/related; type="{media[syntax]}"', media[syntax]),
                ("multipart/related; type=application/octet-stream; transfer-syntax=*",
                 "application/octet-stream")):
            response = session.get(url, headers={"Accept": accept})
            parts = multipart_parts(response) if response.status_code == 200 else []
            check(len(parts) == 2
                  and all(h["Content-Type"] == f"{part_type}; transfer-syntax={syntax}" for h, _ in parts)
                  and [b for _, b in parts] == [frames[2], frames[0]],
                  f"{label}: frames 3,1 as stored for {accept!r}: {response.status_code}")
        response = session.get(url, headers={"Accept": 'multipart/related; type="image/jp2"'})
        check(response.status_code == 406, f"{label}: frames as JPEG 2000 (not stored so): 406")
        if decoded is not None:
            got = client.retrieve_instance_frames(ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                                  ds.SOPInstanceUID, [2])
            check(got == [decoded[1].astype("<u2").tobytes()], f"{label}: frame 2 decoded")
        if syntax == RLELossless:
            got = client.retrieve_instance_frames(ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                                  ds.SOPInstanceUID, [2, 3],
                                                  media_types=(("image/x-dicom-rle", syntax),))
            check(got == frames[1:], f"{label}: dicomweb-client's RLE frames as stored")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--archived")
    ap.add_argument("--stow", help="a corpus not yet stored: STOW-RS it, then check it")
    args = ap.parse_args()

    manifest = json.load(open(os.path.join(args.corpus, "manifest.json")))
    files = {f["sop_instance_uid"]: os.path.join(args.corpus, f["path"]) for f in manifest}
    ORIGINALS.update(files)
    originals = {uid: dcmread(path) for uid, path in files.items()}
    studies = {}
    for f in manifest:
        studies.setdefault(f["study_instance_uid"], []).append(f)

    session = requests.Session()
    session.auth = (args.user, args.password)
    client = DICOMwebClient(url=args.url, session=session)

    # QIDO-RS, study level.
    found = client.search_for_studies()
    by_uid = {value(s, "0020000D"): s for s in found}
    check(set(by_uid) == set(studies), f"search_for_studies finds the {len(studies)} studies")
    for uid, study_files in studies.items():
        ds = originals[study_files[0]["sop_instance_uid"]]
        s = by_uid[uid]
        check(value(s, "00100020") == ds.PatientID
              and person_name(value(s, "00100010")) == str(ds.PatientName)
              and value(s, "00080020") == ds.StudyDate
              and value(s, "00201208") == len(study_files)
              and (value(s, "00080056") == "ONLINE" or uid == args.archived),
              f"study {uid}: patient, date, instance count, availability")
        # dicomweb-client sends a Host header without the port: only the path can be checked.
        check(value(s, "00081190").endswith(f"/dicom-web/studies/{uid}"),
              f"study {uid}: RetrieveURL {value(s, '00081190')}")
        modalities = set(s["00080061"]["Value"])
        check(modalities == {f["modality"] for f in study_files}, f"study {uid}: ModalitiesInStudy")

    some = originals[manifest[0]["sop_instance_uid"]]
    same_patient = {u for u, fs in studies.items()
                    if originals[fs[0]["sop_instance_uid"]].PatientID == some.PatientID}
    found = client.search_for_studies(search_filters={"PatientID": some.PatientID})
    check({value(s, "0020000D") for s in found} == same_patient, "search by PatientID")
    prefix = str(some.PatientName)[:3]
    expected = {u for u, fs in studies.items()
                if str(originals[fs[0]["sop_instance_uid"]].PatientName).startswith(prefix)}
    check(len(expected) < len(studies), "the name prefix does not match everything")
    found = client.search_for_studies(search_filters={"PatientName": prefix + "*"})
    check({value(s, "0020000D") for s in found} == expected, f"search by name prefix {prefix}*")
    date = some.StudyDate
    year = f"{date[:4]}0101-{date[:4]}1231"
    expected = {u for u, fs in studies.items()
                if originals[fs[0]["sop_instance_uid"]].StudyDate[:4] == date[:4]}
    found = client.search_for_studies(search_filters={"StudyDate": year})
    check({value(s, "0020000D") for s in found} == expected, f"search by date range {year}")
    two = sorted(studies)[:2]
    found = client.search_for_studies(search_filters={"StudyInstanceUID": ",".join(two)})
    check({value(s, "0020000D") for s in found} == set(two), "search by a list of UIDs")
    first = client.search_for_studies(limit=1, offset=0)
    second = client.search_for_studies(limit=1, offset=1)
    check(len(first) == 1 and len(second) == 1
          and value(first[0], "0020000D") != value(second[0], "0020000D"), "limit and offset")
    found = client.search_for_studies(fields=["all"], limit=1)
    check("00080060" not in found[0] and "00100030" in found[0], "includefield=all at study level")

    # Series and instance levels.
    for uid, study_files in studies.items():
        series = client.search_for_series(study_instance_uid=uid)
        expected = {f["series_instance_uid"] for f in study_files}
        check({value(s, "0020000E") for s in series} == expected, f"series of study {uid}")
        for s in series:
            se = value(s, "0020000E")
            instances = client.search_for_instances(study_instance_uid=uid, series_instance_uid=se)
            expected = {f["sop_instance_uid"] for f in study_files if f["series_instance_uid"] == se}
            check({value(i, "00080018") for i in instances} == expected
                  and value(s, "00201209") == len(expected), f"instances of series {se}")
    check(len(client.search_for_series()) == len({f["series_instance_uid"] for f in manifest}),
          "search_for_series across studies")
    check(len(client.search_for_instances()) == len(manifest), "search_for_instances across studies")

    # WADO-RS, as stored: data sets byte for byte.
    for uid, study_files in studies.items():
        response = session.get(f"{args.url}/studies/{uid}", headers={
            "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        check(response.status_code == 200, f"retrieve study {uid} as stored: 200")
        parts = multipart_parts(response)
        got = {}
        for headers, body in parts:
            check(int(headers["Content-Length"]) == len(body), "part length")
            ds = dcmread(io.BytesIO(body))
            got[ds.SOPInstanceUID] = body
        check(set(got) == {f["sop_instance_uid"] for f in study_files},
              f"study {uid}: every instance")
        for sop, body in got.items():
            with open(files[sop], "rb") as original:
                check(data_set_bytes(body) == data_set_bytes(original.read()),
                      f"instance {sop}: data set bit-identical")

    # dicomweb-client's own retrieval, series and instance, in both uncompressed syntaxes.
    for f in manifest[:3]:
        uid, se, sop = f["study_instance_uid"], f["series_instance_uid"], f["sop_instance_uid"]
        original = originals[sop]
        for syntax in (EXPLICIT, "*"):
            ds = client.retrieve_instance(uid, se, sop, media_types=(("application/dicom", syntax),))
            check(ds.file_meta.TransferSyntaxUID == (syntax if syntax != "*" else f["transfer_syntax_uid"])
                  and ds.SOPInstanceUID == sop
                  and ds.PatientName == original.PatientName
                  and np.array_equal(ds.pixel_array, original.pixel_array),
                  f"retrieve_instance {sop} in {syntax}: elements and pixels")
        # Implicit VR (dicomweb-client does not ask for it, older toolkits do).
        response = session.get(f"{args.url}/studies/{uid}/series/{se}/instances/{sop}", headers={
            "Accept": f"multipart/related; type=application/dicom; transfer-syntax={IMPLICIT}"})
        [(headers, body)] = multipart_parts(response)
        ds = dcmread(io.BytesIO(body))
        check(headers["Content-Type"].endswith(f"transfer-syntax={IMPLICIT}")
              and ds.file_meta.TransferSyntaxUID == IMPLICIT
              and ds.PatientName == original.PatientName
              and np.array_equal(ds.pixel_array, original.pixel_array),
              f"instance {sop} in Implicit VR Little Endian: elements and pixels")
        frames = client.retrieve_instance_frames(uid, se, sop, [1])
        expected = original.pixel_array.astype(original.pixel_array.dtype.newbyteorder("<")).tobytes()
        check(len(frames) == 1 and frames[0] == expected,
              f"frame 1 of {sop}: the decoded pixels, little endian")
        response = session.get(f"{args.url}/studies/{uid}/series/{se}/instances/{sop}/frames/2")
        check(response.status_code == 404, f"frame 2 of single-frame {sop}: 404")
        series = client.retrieve_series(uid, se)
        expected = {g["sop_instance_uid"] for g in manifest if g["series_instance_uid"] == se}
        check({ds.SOPInstanceUID for ds in series} == expected, f"retrieve_series {se}")
        study = client.retrieve_study(uid)
        check(len(study) == len(studies[uid]), f"retrieve_study {uid}")

    # WADO-RS /metadata at every level, compared element by element with the files.
    for uid, study_files in studies.items():
        metadata = client.retrieve_study_metadata(uid)
        check(len(metadata) == len(study_files), f"study {uid} metadata: one object per instance")
        for obj in metadata:
            same_as_file(Dataset.from_json(obj), f"metadata of study {uid}")
        f = study_files[0]
        series = client.retrieve_series_metadata(uid, f["series_instance_uid"])
        expected = [g for g in study_files if g["series_instance_uid"] == f["series_instance_uid"]]
        check(len(series) == len(expected), f"series {f['series_instance_uid']} metadata")
        one = client.retrieve_instance_metadata(uid, f["series_instance_uid"], f["sop_instance_uid"])
        same_as_file(Dataset.from_json(one), "instance metadata")

    if args.archived:
        found = client.search_for_studies(search_filters={"StudyInstanceUID": args.archived})
        check(len(found) == 1 and value(found[0], "00080056") == "NEARLINE",
              "archived study found, NEARLINE")
        instances = client.search_for_instances(study_instance_uid=args.archived)
        check(len(instances) == len(studies[args.archived])
              and all(value(i, "00080056") == "NEARLINE" for i in instances),
              "archived study's instances, NEARLINE")

    if args.stow:
        stow(args, session, client)

    rendered(args, session, client, manifest[0])
    compressed_frames(args, session, client, originals[manifest[0]["sop_instance_uid"]])

    print(f"dicomweb: {checks} checks passed", flush=True)


def same_as_file(ds, what):
    """Every element of the stored file below Pixel Data (long binary values aside) is in
    the metadata `ds` with the same value; sequences with the same number of items."""
    original = dcmread(ORIGINALS[ds.SOPInstanceUID], stop_before_pixels=True)
    for element in original:
        if element.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
            continue
        got = ds.get(element.tag)
        if element.VR == "SQ":
            ok = got is not None and len(got.value) == len(element.value)
        elif element.tag == 0x00080005:
            ok = got is not None and got.value == "ISO_IR 192"
        else:
            ok = got is not None and (got.value == element.value
                                      or (not element.value and not got.value))
        if not ok:
            check(False, f"{what}: {ds.SOPInstanceUID} {element.tag} {element.keyword}: "
                         f"{element.value!r} != {got.value if got is not None else None!r}")
    check(True, f"{what}: {ds.SOPInstanceUID} every element as in the file")


ORIGINALS = {}


def post_files(session, url, bodies, content_type="application/dicom"):
    """POSTs Part-10 bodies as one multipart/related request, bytes as they are."""
    boundary = "check-boundary-7d3f"
    payload = b"".join(
        f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + body + b"\r\n"
        for body in bodies) + f"--{boundary}--\r\n".encode()
    return session.post(url, data=payload, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})


def sequence_uids(answer, tag):
    return [value(item, "00081155") for item in answer.get(tag, {}).get("Value", [])]


def stow(args, session, client):
    """STOW-RS: raw bodies (stored and served byte for byte), dicomweb-client's own store,
    a study mismatch (409, 0xA900), a mix (202) and a part that is not DICOM (0xC000)."""
    manifest = json.load(open(os.path.join(args.stow, "manifest.json")))
    studies = {}
    for f in manifest:
        studies.setdefault(f["study_instance_uid"], []).append(f)
    (first, first_files), (second, second_files) = list(studies.items())[:2]
    read = lambda f: open(os.path.join(args.stow, f["path"]), "rb").read()

    # The second study's first instance, sent to the first study's URL: refused, nothing kept.
    stray = second_files[0]
    response = post_files(session, f"{args.url}/studies/{first}", [read(stray)])
    answer = response.json()
    check(response.status_code == 409
          and sequence_uids(answer, "00081198") == [stray["sop_instance_uid"]]
          and value(answer["00081198"]["Value"][0], "00081197") == 0xA900,
          "STOW-RS of another study's instance to /studies/{study}: 409, 0xA900")

    response = post_files(session, f"{args.url}/studies", [read(f) for f in first_files])
    answer = response.json()
    check(response.status_code == 200
          and sorted(sequence_uids(answer, "00081199")) == sorted(f["sop_instance_uid"] for f in first_files)
          and "00081198" not in answer, f"STOW-RS of study {first}: 200, every instance referenced")
    response = session.get(f"{args.url}/studies/{first}", headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    got = {dcmread(io.BytesIO(body)).SOPInstanceUID: body for _, body in multipart_parts(response)}
    for f in first_files:
        check(data_set_bytes(got[f["sop_instance_uid"]]) == data_set_bytes(read(f)),
              f"STOW-RS instance {f['sop_instance_uid']} served bit-identical")

    # dicomweb-client's store, and a mix of one good part and one that is not DICOM.
    datasets = [dcmread(os.path.join(args.stow, f["path"])) for f in second_files[1:]]
    result = client.store_instances(datasets)
    referenced = [item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence]
    check(sorted(referenced) == sorted(ds.SOPInstanceUID for ds in datasets),
          "dicomweb-client store_instances: every instance referenced")
    response = post_files(session, f"{args.url}/studies", [read(stray), b"not DICOM at all" * 20])
    answer = response.json()
    check(response.status_code == 202
          and sequence_uids(answer, "00081199") == [stray["sop_instance_uid"]]
          and value(answer["00081198"]["Value"][0], "00081197") == 0xC000,
          "STOW-RS of a good and a bad part: 202, the bad one failed with 0xC000")
    for ds in client.retrieve_study(second):
        original = next(d for d in datasets + [dcmread(os.path.join(args.stow, stray["path"]))]
                        if d.SOPInstanceUID == ds.SOPInstanceUID)
        check(ds.PatientName == original.PatientName
              and np.array_equal(ds.pixel_array, original.pixel_array),
              f"stored by dicomweb-client, retrieved: {ds.SOPInstanceUID}")
    found = client.search_for_studies(search_filters={"StudyInstanceUID": f"{first},{second}"})
    check(len(found) == 2, "STOW-RS studies found by QIDO-RS")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Generates a synthetic DICOM corpus for Strata's tests and benchmarks.

CT studies: 512x512, 16-bit (12 stored), a body-like phantom (soft tissue, lungs, spine,
table) that changes along the slices, plus noise. MR studies: 256x256, 16-bit, a head-like
phantom. Patients carry names in several character sets (ASCII, ISO_IR 100 accents,
ISO_IR 192 with Chinese, Greek and Cyrillic, GB18030), studies spread over several years.

With --zoo, one more study holds one instance of each of several other SOP classes, each in
another transfer syntax, as modalities send them: CR (Explicit VR), DX (HTJ2K lossless, by
OpenJPH's ojph_compress), US multi-frame (Deflated), SC RGB (JPEG baseline, by DCMTK's
dcmcjpeg, marked lossy), Basic Text SR (Implicit VR) and an RT Structure Set (Explicit VR).

Output: OUT/<study index>/<instance index>.dcm, and OUT/manifest.json listing every file
with its UIDs, transfer syntax, patient and study attributes. The same --seed gives the same
corpus.
"""

import argparse
import copy
import datetime
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    BasicTextSRStorage,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
    RTStructureSetStorage,
    SecondaryCaptureImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)
from pydicom.filewriter import dcmwrite

# (family^given, character set, patient sex): a mix a regional hospital really sees.
PATIENTS = [
    ("DOE^JANE", "", "F"),
    ("SMITH^JOHN^A", "", "M"),
    ("Müller^Jürgen", "ISO_IR 100", "M"),
    ("Lefèvre^Hélène", "ISO_IR 100", "F"),
    ("张^伟", "ISO_IR 192", "M"),
    ("Παπαδόπουλος^Γιώργος", "ISO_IR 192", "M"),
    ("Иванова^Мария", "ISO_IR 192", "F"),
    ("王^小明", "GB18030", "M"),
    ("MARTIN^MARIE", "", "F"),
    ("GARCÍA^JOSÉ", "ISO_IR 100", "M"),
]

# With --extra-patients: names that exercise component groups and empty components.
EXTRA_PATIENTS = [
    ("Yamada^Tarou=山田^太郎=やまだ^たろう", "ISO_IR 192", "M"),
    ("WHITE^^^DR^", "", "F"),
]

TRANSFER_SYNTAXES = {"explicit": ExplicitVRLittleEndian, "implicit": ImplicitVRLittleEndian}


def uid(args, *parts):
    # One separated string: pydicom concatenates entropy sources as they are, so ["1", "10"]
    # and ["11", "0"] would give the same UID.
    return generate_uid(entropy_srcs=["|".join([str(args.seed)] + [str(p) for p in parts])])


def ellipse(shape, cy, cx, ry, rx):
    y, x = np.ogrid[: shape[0], : shape[1]]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def ct_slice(rng, z, n):
    """Hounsfield-like values stored as unsigned with intercept -1024."""
    shape = (512, 512)
    t = z / max(n - 1, 1)
    img = np.full(shape, -1000.0)
    body_ry, body_rx = 170 + 20 * np.sin(np.pi * t), 230 - 10 * t
    img[ellipse(shape, 256, 256, body_ry, body_rx)] = 40.0  # soft tissue
    img[ellipse(shape, 256, 256, body_ry - 12, body_rx - 12)] = 30.0
    lung = 0.5 + 0.5 * np.sin(np.pi * min(1.0, t * 1.5))
    img[ellipse(shape, 240, 170, 95 * lung + 5, 60 * lung + 5)] = -820.0
    img[ellipse(shape, 240, 342, 95 * lung + 5, 60 * lung + 5)] = -820.0
    img[ellipse(shape, 350, 256, 22, 22)] = 700.0  # vertebra
    img[ellipse(shape, 350, 256, 10, 10)] = 60.0  # canal
    img[ellipse(shape, 200, 300, 30 * (1 - t) + 5, 35 * (1 - t) + 5)] = 55.0  # heart / liver
    img[440:452, 60:452] = 300.0  # table
    img += rng.normal(0.0, 12.0, shape)
    return np.clip(img + 1024.0, 0, 4095).astype(np.uint16)


def mr_slice(rng, z, n):
    shape = (256, 256)
    t = z / max(n - 1, 1)
    img = np.zeros(shape)
    r = 100 * np.sqrt(max(0.05, 1 - (2 * t - 1) ** 2))
    img[ellipse(shape, 128, 128, r * 1.15, r)] = 900.0  # scalp
    img[ellipse(shape, 128, 128, r * 1.05, r * 0.9)] = 600.0  # grey matter
    img[ellipse(shape, 128, 128, r * 0.8, r * 0.65)] = 800.0  # white matter
    img[ellipse(shape, 120, 115, r * 0.2, r * 0.08)] = 1800.0  # ventricles
    img[ellipse(shape, 120, 141, r * 0.2, r * 0.08)] = 1800.0
    img += np.abs(rng.normal(0.0, 25.0, shape))
    return np.clip(img, 0, 4095).astype(np.uint16)


def base_dataset(args, study_no, patient, modality, study_date):
    name, charset, sex = patient
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.PatientID = f"PID{args.patients.index(patient):04d}"
    ds.IssuerOfPatientID = "STRATA-TEST"
    ds.PatientBirthDate = f"{1940 + 5 * args.patients.index(patient)}0{1 + study_no % 9}15"
    ds.PatientSex = sex
    ds.StudyInstanceUID = uid(args, "study", study_no)
    ds.StudyDate = study_date.strftime("%Y%m%d")
    ds.StudyTime = f"{8 + study_no % 10:02d}{(study_no * 7) % 60:02d}00"
    ds.AccessionNumber = f"ACC{study_no:06d}"
    ds.StudyID = str(study_no)
    ds.StudyDescription = f"{modality} {'CHEST' if modality == 'CT' else 'HEAD'} {study_no}"
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    ds.Modality = modality
    ds.SeriesInstanceUID = uid(args, "series", study_no)
    ds.SeriesNumber = 1
    ds.SeriesDescription = "AXIAL"
    ds.BodyPartExamined = "CHEST" if modality == "CT" else "HEAD"
    ds.Manufacturer = "STRATA SYNTHETIC"
    ds.FrameOfReferenceUID = uid(args, "for", study_no)
    return ds


def write_file(ds, sop_class, sop_uid, transfer_syntax, path, extra):
    """A copy of `ds` with `extra`, as a Part-10 file in `transfer_syntax`."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    ds = ds.copy()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    for k, v in extra.items():
        setattr(ds, k, v)
    dcmwrite(path, ds, enforce_file_format=True)


def write_instance(args, ds, sop_class, sop_uid, path, pixels, extra):
    extra = dict(extra)
    extra.update(pixel_attributes(pixels, bits_stored=12))
    write_file(ds, sop_class, sop_uid, TRANSFER_SYNTAXES[args.transfer_syntax], path, extra)


def pixel_attributes(pixels, bits_stored, photometric="MONOCHROME2"):
    """Image Pixel module attributes for `pixels` (rows x columns, frames x rows x columns, or
    rows x columns x 3 for RGB)."""
    rgb = photometric == "RGB"
    shape = pixels.shape[:-1] if rgb else pixels.shape
    attrs = {"SamplesPerPixel": 3 if rgb else 1, "PhotometricInterpretation": photometric,
             "Rows": shape[-2], "Columns": shape[-1], "BitsAllocated": pixels.itemsize * 8,
             "BitsStored": bits_stored, "HighBit": bits_stored - 1, "PixelRepresentation": 0,
             "PixelData": pixels.tobytes()}
    if rgb:
        attrs["PlanarConfiguration"] = 0
    if len(shape) == 3:
        attrs["NumberOfFrames"] = shape[0]
    return attrs


def zoo(args, study_no, patient, study_date, folder):
    """One instance of each of several SOP classes, each in another transfer syntax.
    Yields (path, SOP Class UID, SOP Instance UID, transfer syntax, modality, data set)."""
    rng = np.random.default_rng(args.seed + 1000)
    y, x = np.mgrid[0:256, 0:256]
    ramp = ((x * 3 + y * 5) % 1024).astype(np.uint16)

    def instance(kind, modality, sop_class, ts, extra):
        ds = base_dataset(args, study_no, patient, modality, study_date)
        ds.SeriesInstanceUID = uid(args, "series", study_no, kind)
        ds.SeriesNumber = len(made) + 1
        ds.SeriesDescription = kind
        ds.InstanceNumber = 1
        ds.StudyDescription = "ZOO"
        sop_uid = uid(args, "instance", study_no, kind)
        path = os.path.join(folder, f"{len(made):04d}.dcm")
        write_file(ds, sop_class, sop_uid, ts, path, extra)
        made.append((path, sop_class, sop_uid, ts, modality, ds))
        return path

    made = []
    # CR, MONOCHROME1, 10 bits stored, Explicit VR.
    cr = np.clip(ramp + rng.integers(0, 20, ramp.shape), 0, 1023).astype(np.uint16)
    instance("CR", "CR", ComputedRadiographyImageStorage, ExplicitVRLittleEndian,
             {"ViewPosition": "PA", **pixel_attributes(cr, 10, "MONOCHROME1")})

    # DX for presentation, 12 bits, HTJ2K lossless: OpenJPH encodes a 16-bit PGM.
    dx = (ramp * 4 + rng.integers(0, 50, ramp.shape)).clip(0, 4095).astype(np.uint16)
    with tempfile.TemporaryDirectory() as tmp:
        pgm = os.path.join(tmp, "dx.pgm")
        with open(pgm, "wb") as f:
            f.write(b"P5\n256 256\n4095\n" + dx.astype(">u2").tobytes())
        j2c = os.path.join(tmp, "dx.j2c")
        subprocess.run(["ojph_compress", "-i", pgm, "-o", j2c, "-reversible", "true"],
                       check=True, stdout=subprocess.DEVNULL)
        codestream = open(j2c, "rb").read()
    attrs = pixel_attributes(dx, 12)
    attrs["PixelData"] = encapsulate([codestream])
    instance("DX", "DX", DigitalXRayImageStorageForPresentation, HTJ2KLossless,
             {"PresentationIntentType": "FOR PRESENTATION", "ImageType": ["ORIGINAL", "PRIMARY"],
              **attrs})

    # US multi-frame: 8 frames of 8 bits, Deflated Explicit VR.
    frames = np.stack([np.roll(ramp, 16 * i, axis=1) % 256 for i in range(8)]).astype(np.uint8)
    instance("US", "US", UltrasoundMultiFrameImageStorage, DeflatedExplicitVRLittleEndian,
             {"FrameTime": "40", "FrameIncrementPointer": 0x00181063,
              **pixel_attributes(frames, 8)})

    # SC RGB, JPEG baseline: written Explicit, then compressed by DCMTK (which marks it lossy
    # and keeps its SOP Instance UID with +un).
    rgb = np.stack([ramp % 256, (ramp * 2) % 256, 255 - ramp % 256], axis=-1).astype(np.uint8)
    path = instance("SC", "OT", SecondaryCaptureImageStorage, ExplicitVRLittleEndian,
                    {"ConversionType": "WSD", **pixel_attributes(rgb, 8, "RGB")})
    subprocess.run(["dcmcjpeg", "+eb", "+un", path, path + ".jpg"], check=True)
    os.replace(path + ".jpg", path)
    made[-1] = made[-1][:3] + (JPEGBaseline8Bit,) + made[-1][4:]

    # Basic Text SR, Implicit VR.
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([code("121071", "DCM", "Finding")])
    item.TextValue = "No acute findings."
    instance("SR", "SR", BasicTextSRStorage, ImplicitVRLittleEndian,
             {"ValueType": "CONTAINER", "ContinuityOfContent": "SEPARATE",
              "ConceptNameCodeSequence": Sequence([code("18748-4", "LN", "Diagnostic Imaging Report")]),
              "CompletionFlag": "COMPLETE", "VerificationFlag": "UNVERIFIED",
              "ContentDate": study_date.strftime("%Y%m%d"), "ContentTime": "120000",
              "ContentSequence": Sequence([item])})

    # RT Structure Set: one closed planar contour, Explicit VR.
    for_uid = uid(args, "for", study_no)
    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = for_uid
    roi.ROIName = "BODY"
    roi.ROIGenerationAlgorithm = "MANUAL"
    contour = Dataset()
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.NumberOfContourPoints = 4
    contour.ContourData = ["0", "0", "0", "10", "0", "0", "10", "10", "0", "0", "10", "0"]
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = 1
    roi_contour.ROIDisplayColor = [255, 0, 0]
    roi_contour.ContourSequence = Sequence([contour])
    observation = Dataset()
    observation.ObservationNumber = 1
    observation.ReferencedROINumber = 1
    observation.RTROIInterpretedType = "EXTERNAL"
    observation.ROIInterpreter = ""
    reference = Dataset()
    reference.FrameOfReferenceUID = for_uid
    instance("RT", "RTSTRUCT", RTStructureSetStorage, ExplicitVRLittleEndian,
             {"StructureSetLabel": "ZOO", "StructureSetDate": study_date.strftime("%Y%m%d"),
              "StructureSetTime": "120000",
              "ReferencedFrameOfReferenceSequence": Sequence([reference]),
              "StructureSetROISequence": Sequence([roi]),
              "ROIContourSequence": Sequence([roi_contour]),
              "RTROIObservationsSequence": Sequence([observation])})
    for path, _, sop_uid, ts, _, _ in made:
        meta = dcmread(path, stop_before_pixels=True).file_meta
        assert meta.TransferSyntaxUID == ts and meta.MediaStorageSOPInstanceUID == sop_uid, path
    return made


def code(value, scheme, meaning):
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--ct-studies", type=int, default=1)
    p.add_argument("--ct-images", type=int, default=10)
    p.add_argument("--mr-studies", type=int, default=1)
    p.add_argument("--mr-images", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ct-scale", type=int, default=1,
                   help="CT slices are 512*N pixels square (N=5: 2560x2560, 12.5 MiB; N=9: 42 MB, "
                        "beyond Strata's 32 MiB whole-read limit)")
    p.add_argument("--series-per-study", type=int, default=1,
                   help="spread each study's images over N series (image i in series i mod N)")
    p.add_argument("--transfer-syntax", choices=sorted(TRANSFER_SYNTAXES), default="explicit")
    p.add_argument("--extra-patients", action="store_true",
                   help="add patients with multi-group and sparse names")
    p.add_argument("--zoo", action="store_true",
                   help="add a study of CR, DX, US, SC, SR and RT instances in other transfer syntaxes")
    args = p.parse_args()
    args.patients = PATIENTS + (EXTRA_PATIENTS if args.extra_patients else [])

    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    manifest = []
    made = []
    total = 0
    plan = [("CT", args.ct_images)] * args.ct_studies + [("MR", args.mr_images)] * args.mr_studies
    for study_no, (modality, n) in enumerate(plan):
        patient = args.patients[(study_no + args.seed) % len(args.patients)]
        study_date = datetime.date(2019, 1, 1) + datetime.timedelta(days=(study_no * 137 + args.seed * 11) % 2000)
        ds = base_dataset(args, study_no, patient, modality, study_date)
        folder = os.path.join(args.out, f"{study_no:03d}")
        os.makedirs(folder, exist_ok=True)
        study_ds = ds
        for i in range(n):
            if args.series_per_study > 1 and i % args.series_per_study > 0:
                ds = copy.deepcopy(study_ds)
                ds.SeriesInstanceUID = uid(args, "series", study_no, i % args.series_per_study)
                ds.SeriesNumber = 1 + i % args.series_per_study
            else:
                ds = study_ds
            sop_uid = uid(args, "instance", study_no, i)
            path = os.path.join(folder, f"{i:04d}.dcm")
            if modality == "CT":
                pixels = ct_slice(rng, i, n)
                if args.ct_scale > 1:
                    pixels = np.kron(pixels, np.ones((args.ct_scale, args.ct_scale), np.uint16))
                extra = {"InstanceNumber": i + 1, "SliceThickness": "1.25", "SliceLocation": f"{-i * 1.25:.2f}",
                         "ImagePositionPatient": ["-250", "-250", f"{-i * 1.25:.2f}"],
                         "ImageOrientationPatient": ["1", "0", "0", "0", "1", "0"],
                         "PixelSpacing": ["0.976562", "0.976562"], "KVP": "120",
                         "RescaleIntercept": "-1024", "RescaleSlope": "1", "RescaleType": "HU",
                         "WindowCenter": "40", "WindowWidth": "400"}
                sop_class = CTImageStorage
            else:
                pixels = mr_slice(rng, i, n)
                extra = {"InstanceNumber": i + 1, "SliceThickness": "5", "SliceLocation": f"{i * 5.0:.1f}",
                         "ImagePositionPatient": ["-120", "-120", f"{i * 5.0:.1f}"],
                         "ImageOrientationPatient": ["1", "0", "0", "0", "1", "0"],
                         "PixelSpacing": ["0.9375", "0.9375"], "MagneticFieldStrength": "1.5",
                         "EchoTime": "90", "RepetitionTime": "4000", "ScanningSequence": "SE",
                         "SequenceVariant": "NONE", "ScanOptions": "", "MRAcquisitionType": "2D"}
                sop_class = MRImageStorage
            write_instance(args, ds, sop_class, sop_uid, path, pixels, extra)
            made.append((path, sop_class, sop_uid, TRANSFER_SYNTAXES[args.transfer_syntax], modality, ds))
    if args.zoo:
        study_no = len(plan)
        patient = args.patients[(study_no + args.seed) % len(args.patients)]
        folder = os.path.join(args.out, f"{study_no:03d}")
        os.makedirs(folder, exist_ok=True)
        made += zoo(args, study_no, patient, datetime.date(2024, 6, 1), folder)
    for path, sop_class, sop_uid, ts, modality, ds in made:
        size = os.path.getsize(path)
        total += size
        manifest.append({
            "path": os.path.relpath(path, args.out),
            "sop_instance_uid": sop_uid,
            "sop_class_uid": sop_class,
            "transfer_syntax_uid": ts,
            "study_instance_uid": ds.StudyInstanceUID,
            "series_instance_uid": ds.SeriesInstanceUID,
            "patient_id": ds.PatientID,
            "patient_name": str(ds.PatientName),
            "specific_character_set": ds.get("SpecificCharacterSet", ""),
            "modality": modality,
            "study_date": ds.StudyDate,
            "size": size,
        })
    uids = [m["sop_instance_uid"] for m in manifest]
    if len(set(uids)) != len(uids):
        sys.exit("generated duplicate SOP Instance UIDs")
    with open(os.path.join(args.out, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, ensure_ascii=False, indent=1)
    print(f"generated {len(manifest)} instances in {len(plan) + args.zoo} studies, {total} bytes, in {args.out}")


if __name__ == "__main__":
    sys.exit(main())

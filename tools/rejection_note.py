#!/usr/bin/env python3
"""Builds an IOCM rejection note: a Key Object Selection document (PS3.3 A.35.4) titled with
a code of PS3.16 CID 7011 that names the instances of the given DICOM files, as a modality or
a viewer sends one to reject images (IHE RAD Imaging Object Change Management).

The note belongs to the first file's patient and study, in a new series. Its Current
Requested Procedure Evidence Sequence lists every file's instance by study and series; its
content tree holds one IMAGE item per instance.

usage: rejection_note.py --code 113001 --out NOTE.dcm FILE...
"""

import argparse
import datetime

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
TITLES = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
    # Not a rejection: a note with this title is an ordinary Key Object Selection document.
    "113000": "Of Interest",
}


def code_item(value, meaning):
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", default="113001", choices=sorted(TITLES))
    parser.add_argument("--out", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    referenced = [dcmread(f, stop_before_pixels=True) for f in args.files]
    first = referenced[0]

    ds = Dataset()
    ds.SOPClassUID = KEY_OBJECT_SELECTION
    ds.SOPInstanceUID = generate_uid()
    for keyword in ("SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate",
                    "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
                    "AccessionNumber", "StudyID", "ReferringPhysicianName"):
        if keyword in first:
            setattr(ds, keyword, first.data_element(keyword).value)
    now = datetime.datetime.now(datetime.timezone.utc)
    ds.Modality = "KO"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 999
    ds.InstanceNumber = 1
    ds.Manufacturer = "Strata tests"
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [code_item(args.code, TITLES[args.code])]
    ds.ContinuityOfContent = "SEPARATE"

    studies = {}
    content = []
    for r in referenced:
        sop = Dataset()
        sop.ReferencedSOPClassUID = r.SOPClassUID
        sop.ReferencedSOPInstanceUID = r.SOPInstanceUID
        studies.setdefault(r.StudyInstanceUID, {}).setdefault(r.SeriesInstanceUID, []).append(sop)
        image = Dataset()
        image.RelationshipType = "CONTAINS"
        image.ValueType = "IMAGE"
        image.ReferencedSOPSequence = [sop]
        content.append(image)
    evidence = []
    for study_uid, series in studies.items():
        study = Dataset()
        study.StudyInstanceUID = study_uid
        study.ReferencedSeriesSequence = []
        for series_uid, sops in series.items():
            item = Dataset()
            item.SeriesInstanceUID = series_uid
            item.ReferencedSOPSequence = sops
            study.ReferencedSeriesSequence.append(item)
        evidence.append(study)
    ds.CurrentRequestedProcedureEvidenceSequence = evidence
    ds.ContentTemplateSequence = [Dataset()]
    ds.ContentTemplateSequence[0].MappingResource = "DCMR"
    ds.ContentTemplateSequence[0].TemplateIdentifier = "2010"
    ds.ContentSequence = content

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(args.out, enforce_file_format=True)
    print(ds.SOPInstanceUID)


if __name__ == "__main__":
    main()

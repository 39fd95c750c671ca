"""Builders: Secondary Capture Image and VL Photographic Image objects around one frame.

The builder writes the real context (patient, dates, site) and keyed UIDs; `deid.deidentify`
then applies PS3.15 Annex E to the whole object, so one table governs every object that leaves.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    VLPhotographicImageStorage,
)

from dicom_mapping import bodysite, uids
from dicom_mapping.metadata import PhotoMetadata

Iod = Literal["sc", "vl-photo"]
SOP_CLASS: dict[str, str] = {"sc": SecondaryCaptureImageStorage, "vl-photo": VLPhotographicImageStorage}
IMPLEMENTATION_VERSION = "PHOTOGW_010"
ENCAPSULATED = {
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.70",
}


@dataclass(frozen=True)
class PixelFrame:
    """One image frame ready to be stored: a JPEG bitstream or native 8-bit pixels."""

    data: bytes
    transfer_syntax: str
    rows: int
    columns: int
    samples_per_pixel: int
    photometric: str
    bits_stored: int = 8
    lossy: bool = True  # was lossy compression ever applied (a camera JPEG: yes)
    lossy_ratio: float | None = None
    lossy_method: str | None = None  # PS3.3 C.7.6.1.1.5.1 defined terms, e.g. ISO_10918_1
    icc_profile: bytes | None = None
    derivation: str | None = None  # why the pixels differ from what the camera stored
    burned_in_annotation: bool = False


@dataclass(frozen=True)
class Capture:
    """What the builder needs besides the frame."""

    meta: PhotoMetadata
    content_datetime: dt.datetime  # EXIF DateTimeOriginal, else the time of receipt
    input_sha256: bytes
    iod: Iod = "sc"
    route: str = ""
    study_uid_source: str | None = None  # the order's Study Instance UID (worklist), mapped


def patient_key(meta: PhotoMetadata) -> tuple[str, str]:
    if meta.patient is None:
        raise ValueError("the patient is resolved (sidecar or worklist) before building")
    return meta.patient.issuer, meta.patient.id


def study_uid(secret: bytes, meta: PhotoMetadata, capture_date: dt.date) -> str:
    """HMAC(patient + accession), or patient + capture date when there is no accession."""
    issuer, pid = patient_key(meta)
    if meta.accession_number:
        return uids.keyed_uid(secret, "study", issuer, pid, "acc", meta.accession_number)
    return uids.keyed_uid(secret, "study", issuer, pid, "day", capture_date.isoformat())


def build(frame: PixelFrame, capture: Capture, secret: bytes) -> Dataset:
    """The object as it would be with the real patient context (de-identified next)."""
    meta = capture.meta
    assert meta.patient is not None
    when = capture.content_datetime
    if capture.study_uid_source:
        study = uids.map_uid(secret, capture.study_uid_source)
    else:
        study = study_uid(secret, meta, when.date())
    series = uids.keyed_uid(secret, "series", study, when.date().isoformat(), capture.iod, capture.route)
    sop = uids.sop_instance_uid_for_bytes(secret, capture.input_sha256, f"{capture.iod}/{capture.route}")
    sop_class = SOP_CLASS[capture.iod]

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    derived = frame.derivation is not None
    ds.ImageType = ["DERIVED" if derived else "ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")

    # Patient (PS3.3 C.7.1.1): real values here; deidentify replaces them.
    ds.PatientName = meta.patient.name
    ds.PatientID = meta.patient.id
    ds.IssuerOfPatientID = meta.patient.issuer
    ds.PatientBirthDate = meta.patient.birth_date.strftime("%Y%m%d") if meta.patient.birth_date else ""
    ds.PatientSex = meta.patient.sex or ""

    # General Study (C.7.2.1)
    ds.StudyInstanceUID = study
    ds.StudyDate, ds.StudyTime = date, time
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = meta.accession_number or ""
    ds.StudyDescription = "Clinical photography"

    # General Series (C.7.3.1); VL Photographic Series (C.8.12.x): Modality XC.
    # XC ("External-camera Photography", PS3.3 C.7.3.1.1.1) is used for SC too, so that a
    # clinician can filter photos by modality whatever the IOD.
    ds.Modality = "XC"
    ds.SeriesInstanceUID = series
    ds.SeriesNumber = 1
    ds.SeriesDate, ds.SeriesTime = date, time
    site, implied_laterality = (None, None)
    if meta.body_site:
        site, implied_laterality = bodysite.lookup(meta.body_site)
    laterality = meta.laterality or implied_laterality
    # PS3.3 C.7.3.1 / C.7.6.1: Laterality (Type 2C) is required for a paired part unless Image
    # Laterality is present. A known side (L, R, B) or an unpaired site (U) goes in Image
    # Laterality; a paired site of unknown side, or no site, leaves Laterality empty (unknown).
    image_laterality = laterality or (None if site is None or site.paired else "U")
    if image_laterality is None:
        ds.Laterality = ""
    ds.SeriesDescription = f"Photo {site.meaning}" if site else "Clinical photo"

    # Equipment: SC Equipment (C.8.6.1) Conversion Type DI (digital interface); General Equipment
    ds.Manufacturer = ""
    if capture.iod == "sc":
        ds.ConversionType = "DI"

    # General Image (C.7.6.1)
    ds.InstanceNumber = int(time)  # orders photos of a series by capture time
    ds.PatientOrientation = ""
    ds.ContentDate, ds.ContentTime = date, time
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S")
    if capture.iod == "vl-photo":
        ds.AcquisitionDate, ds.AcquisitionTime = date, time
    if image_laterality is not None:
        ds.ImageLaterality = image_laterality
    # PS3.3 C.7.6.1.1.5: once lossy, always flagged lossy.
    ds.LossyImageCompression = "01" if frame.lossy else "00"
    if frame.lossy and frame.lossy_ratio:
        ds.LossyImageCompressionRatio = f"{frame.lossy_ratio:.2f}"[:16]
        ds.LossyImageCompressionMethod = frame.lossy_method or "ISO_10918_1"
    if frame.derivation:
        ds.DerivationDescription = frame.derivation[:1024]
    ds.BurnedInAnnotation = "YES" if frame.burned_in_annotation else "NO"
    ds.RecognizableVisualFeatures = "YES" if meta.recognizable else "NO"

    # Anatomy: Anatomic Region Sequence from the coded site (PS3.3 10.5 General Anatomy macros).
    if site:
        code = Dataset()
        code.CodeValue = site.code
        code.CodingSchemeDesignator = "SCT"
        code.CodeMeaning = site.meaning
        ds.AnatomicRegionSequence = Sequence([code])
    if capture.iod == "vl-photo":
        ds.AcquisitionContextSequence = Sequence()  # Type 2 (C.7.6.14)

    # Image Pixel (C.7.6.3)
    ds.SamplesPerPixel = frame.samples_per_pixel
    ds.PhotometricInterpretation = frame.photometric
    ds.Rows, ds.Columns = frame.rows, frame.columns
    ds.BitsAllocated = 8 if frame.bits_stored <= 8 else 16
    ds.BitsStored = frame.bits_stored
    ds.HighBit = frame.bits_stored - 1
    ds.PixelRepresentation = 0
    if frame.samples_per_pixel > 1:
        ds.PlanarConfiguration = 0
    if frame.icc_profile and frame.samples_per_pixel == 3:
        ds.ICCProfile = frame.icc_profile  # ICC Profile module (C.11.15)
    if frame.transfer_syntax in ENCAPSULATED:
        ds.PixelData = encapsulate([frame.data])
        ds["PixelData"].VR = "OB"
        # PS3.5 A.4: encapsulated Pixel Data has undefined length. dcmwrite fixes this itself,
        # but pynetdicom encodes the dataset as it is, and Orthanc cannot parse a defined length.
        ds["PixelData"].is_undefined_length = True
    else:
        data = frame.data if len(frame.data) % 2 == 0 else frame.data + b"\x00"
        ds.PixelData = data
        ds["PixelData"].VR = "OB" if ds.BitsAllocated == 8 else "OW"

    meta_ds = FileMetaDataset()
    meta_ds.MediaStorageSOPClassUID = UID(sop_class)
    meta_ds.MediaStorageSOPInstanceUID = UID(sop)
    meta_ds.TransferSyntaxUID = UID(frame.transfer_syntax)
    meta_ds.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta_ds.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds.file_meta = meta_ds
    return ds


def native_transfer_syntax() -> str:
    return str(ExplicitVRLittleEndian)

"""Synthetic DICOM objects for the tests: a plain Secondary Capture, JPEG-framed objects, and the
"careless DICOM photo" a device might send (markers in every identifying place, private data,
overlay, curve, icon, and a JPEG frame carrying EXIF, XMP, IPTC, ICC, COM and a thumbnail).
One builder each, shared by the mapping, door, hostile-input and end-to-end tests."""

from __future__ import annotations

from photo_factory import JPEG_MARKER_FIELDS, MARKERS, make_jpeg
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from dicom_mapping import jpeg

VL_PHOTO = "1.2.840.10008.5.1.4.1.1.77.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"


def secondary_capture(side: int, *, patient_id: str, patient_name: str, pixels: bytes | None = None,
                      consent: str | None = None) -> Dataset:
    """A small native RGB Secondary Capture, Explicit VR LE, new UIDs; with `consent`, a
    Consent for Clinical Trial Use item with that flag."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName = patient_id, patient_name
    ds.Modality, ds.ConversionType = "XC", "DI"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels if pixels is not None else bytes(side * side * 3)
    ds["PixelData"].VR = "OB"
    if consent is not None:
        item = Dataset()
        item.ConsentForDistributionFlag = consent
        item.DistributionType = "NAMED_PROTOCOL"
        ds.ConsentForClinicalTrialUseSequence = [item]
    return ds


def base(sop_class: str, ts: str, *, patient_id: str = "PID-0001") -> Dataset:
    """The header of a valid SC or VL Photographic object (no pixels yet)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.1137.1.1"
    ds.StudyDate, ds.StudyTime = "20260312", "101500"
    ds.SeriesDate, ds.SeriesTime = "20260312", "101500"
    ds.ContentDate, ds.ContentTime = "20260312", "101502"
    ds.AccessionNumber = ""
    ds.Modality = "XC" if sop_class == VL_PHOTO else "OT"
    ds.ReferringPhysicianName = ""
    ds.PatientName = "TEST^PATIENT"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.1137.2.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.1137.3.1"
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.Manufacturer = ""
    if sop_class == SC:
        ds.ConversionType = "DI"
    if sop_class == VL_PHOTO:
        ds.AcquisitionContextSequence = Sequence()
        ds.ImageLaterality = "U"
    ds.BurnedInAnnotation = "NO"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = UID(ts)
    return ds


def with_jpeg(ds: Dataset, frames: list[bytes], *, photometric: str) -> Dataset:
    """`ds` with encapsulated JPEG frames and the Image Pixel attributes read from the first."""
    info = jpeg.read_info(frames[0])
    ds.SamplesPerPixel = len(info.components)
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = info.height, info.width
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


# -- the careless DICOM photo ----------------------------------------------------------------

#: attribute -> marker: every identifying place a careless device may fill.
DICOM_MARKERS = {
    "PatientName": "DMPATFAMQ1^DMPATGIVW2",
    "PatientID": "DMPATIDE3",
    "OtherPatientIDs": "DMOTHERIDR4",
    "PatientAddress": "DMADDRESST5",
    "InstitutionName": "DMINSTNAMY6",
    "InstitutionAddress": "DMINSTADRU7",
    "ReferringPhysicianName": "DMREFPHYSI8",
    "OperatorsName": "DMOPERATRO9",
    "PerformingPhysicianName": "DMPERFPHYP1",
    "StationName": "DMSTATIONA2",
    "DeviceSerialNumber": "DMDEVSERS3",
    "AccessionNumber": "DMACCNOD4",
    "StudyDescription": "DMSTUDYDSF5",
    "SeriesDescription": "DMSERIESDG6",
    "ImageComments": "DMIMGCOMMH7",
    "StudyID": "DMSTUDYIDJ8",
    "PatientComments": "DMPATCOMMK9",
}
NESTED_MARKERS = {
    "RequestedProcedureID": "DMREQPRIDL1",  # in Request Attributes Sequence
    "ScheduledProcedureStepDescription": "DMSPSDESCZ2",  # in Request Attributes Sequence
    "CodeMeaning": "DMCODEMEANV7",  # two levels down: Request Attributes > Procedure Code
    "RequestedProcedureDescription": "DMREQDESCX3",  # in Referenced Study Sequence
    "private": "DMPRIVATEC4",  # (0009,1001) under an unknown creator
    "private UT": "DMPRIVUTV5",
    "OverlayComments": "DMOVLCOMMB6",
    "OverlayLabel": "DMOVLLABN7",
    "OverlayData": "DMOVLDATAM8",  # bytes of (6000,3000)
    "CurveData": "DMCURVEQ9",  # bytes of (5000,3000)
    "CurveDescription": "DMCURVDESW1",
    "IconImage": "DMICONPIXE2",  # bytes of the icon's Pixel Data
}
BIRTH_DATE = "19710203"
INPUT_UIDS = {
    "SOPInstanceUID": "1.2.826.0.1.3680043.10.1137.9.101",
    "StudyInstanceUID": "1.2.826.0.1.3680043.10.1137.9.102",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.10.1137.9.103",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.10.1137.9.104",
    "ReferencedSOPInstanceUID": "1.2.826.0.1.3680043.10.1137.9.105",
}


def _padded(marker: str, size: int) -> bytes:
    raw = marker.encode()
    return (raw * (size // len(raw) + 1))[:size]


def careless_markers() -> list[str]:
    """Every marker the careless photo carries (names split at ^), its frame's included."""
    out = [part for marker in DICOM_MARKERS.values() for part in marker.split("^")]
    return [*out, *NESTED_MARKERS.values(), *(MARKERS[f] for f in JPEG_MARKER_FIELDS)]


def careless_photo() -> Dataset:
    """A VL Photographic object as a careless device sends it: markers in every identifying
    attribute (nested two levels too), private data, overlay, curve and icon, and a JPEG frame
    with EXIF (Artist, Make, serials, GPS text), XMP, IPTC, ICC, a COM and an EXIF thumbnail."""
    frame = make_jpeg(width=64, height=48, icc=True)
    ds = with_jpeg(base(VL_PHOTO, jpeg.JPEG_BASELINE), [frame], photometric="YBR_FULL_422")
    for keyword, marker in DICOM_MARKERS.items():
        setattr(ds, keyword, marker)
    ds.PatientBirthDate = BIRTH_DATE
    ds.SOPInstanceUID = INPUT_UIDS["SOPInstanceUID"]
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = INPUT_UIDS["StudyInstanceUID"]
    ds.SeriesInstanceUID = INPUT_UIDS["SeriesInstanceUID"]
    ds.FrameOfReferenceUID = INPUT_UIDS["FrameOfReferenceUID"]

    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "DMX1", "99LOCAL"
    code.CodeMeaning = NESTED_MARKERS["CodeMeaning"]
    request = Dataset()
    request.RequestedProcedureID = NESTED_MARKERS["RequestedProcedureID"]
    request.ScheduledProcedureStepDescription = NESTED_MARKERS["ScheduledProcedureStepDescription"]
    request.RequestedProcedureCodeSequence = Sequence([code])
    ds.RequestAttributesSequence = Sequence([request])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management
    study_ref.ReferencedSOPInstanceUID = INPUT_UIDS["ReferencedSOPInstanceUID"]
    study_ref.RequestedProcedureDescription = NESTED_MARKERS["RequestedProcedureDescription"]
    ds.ReferencedStudySequence = Sequence([study_ref])

    block = ds.private_block(0x0009, "ACME PHOTO DEVICE 1", create=True)
    block.add_new(0x01, "LO", NESTED_MARKERS["private"])
    block.add_new(0x02, "UT", f"owner {NESTED_MARKERS['private UT']}")

    ds.add_new(0x60000010, "US", 48)  # Overlay Rows
    ds.add_new(0x60000011, "US", 64)  # Overlay Columns
    ds.add_new(0x60000040, "CS", "G")  # Overlay Type
    ds.add_new(0x60000050, "SS", [1, 1])  # Overlay Origin
    ds.add_new(0x60000100, "US", 1)  # Overlay Bits Allocated
    ds.add_new(0x60000102, "US", 0)  # Overlay Bit Position
    ds.add_new(0x60001500, "LO", NESTED_MARKERS["OverlayLabel"])
    ds.add_new(0x60003000, "OW", _padded(NESTED_MARKERS["OverlayData"], 48 * 64 // 8))
    ds.add_new(0x60004000, "LT", NESTED_MARKERS["OverlayComments"])
    ds.add_new(0x50000005, "US", 1)  # Curve Dimensions (retired)
    ds.add_new(0x50000010, "US", 10)  # Number of Points
    ds.add_new(0x50000020, "CS", "POLY")  # Type of Data
    ds.add_new(0x50000022, "LO", NESTED_MARKERS["CurveDescription"])
    ds.add_new(0x50000103, "US", 0)  # Data Value Representation
    ds.add_new(0x50003000, "OB", _padded(NESTED_MARKERS["CurveData"], 20))

    icon = Dataset()
    icon.SamplesPerPixel = 1
    icon.PhotometricInterpretation = "MONOCHROME2"
    icon.Rows, icon.Columns = 4, 8
    icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 8, 7, 0
    icon.PixelData = _padded(NESTED_MARKERS["IconImage"], 32)
    ds.IconImageSequence = Sequence([icon])
    return ds

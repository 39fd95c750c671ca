"""DICOM inputs: photo objects received from devices, de-identified (bitstream included) and
forwarded under their own SOP class (contract: "DICOM output", bullet "DICOM inputs").

`read_dicom` parses the bytes (a Part 10 file, or a bare dataset as received over DIMSE with
its presentation context's transfer syntax) and checks that nothing is truncated or missing;
`convert_dicom` applies the gateway's rules and returns the object that may leave:

- SOP class: only the photo storage classes (and any the config adds); others 0x0122.
- Burned In Annotation (0028,0301) YES: refused, 0x0124. Text in the pixels may identify the
  patient and cannot be removed here (PS3.15 E.3.1, Clean Pixel Data, is not something we can
  do reliably); refusing is the only safe answer, and "not authorized" says it is policy, not
  a broken object. An absent value is left absent (we do not know; we do not claim NO).
- Consent: the object's own Consent for Clinical Trial Use Sequence (0012,0083) (PS3.3
  C.7.2.3), else the source's default consent, recorded as assumed; none, refused or withdrawn
  is refused with 0x0124.
- Patient: the pseudonym is keyed from Issuer of Patient ID + Patient ID. An empty Patient ID
  is refused (0xC000): every such object would share one pseudonym and unrelated patients
  would be filed together in the PACS; a Study UID is no patient identity.
- De-identification: PS3.15 Annex E by the profile table (`deid.deidentify`); every UID is
  mapped by its U action from the input's own UID, so the same object always gives the same
  output UIDs. All private data of the input goes, including a block that carries our own
  consent creator: the consent block is written again from the parsed record, so nothing a
  sender put in private elements survives (PS3.15 E.3.10 would let us keep "safe" blocks; we
  cannot vouch for a sender's).
- Pixel data (PS3.5 8.2 and Annex A.4): JPEG frames (.50 .51 .57 .70) go through
  `jpeg.sanitize` (APPn, COM, trailing data dropped; ICC to (0028,2000) when the object has
  none) and are re-encapsulated. JPEG 2000 (.90 .91 and HTJ2K .201-.203) codestreams lose
  their COM (0xFF64) marker segments, which encoders fill with free text (ISO/IEC 15444-1
  A.9.2); a JP2 file-format wrapper (boxes may carry XML/UUID metadata) is refused. JPEG-LS
  (.80 .81) frames lose APPn and COM segments, which ISO/IEC 14495-1 allows as in JPEG.
  RLE (.5) frames are checked and passed through: the RLE format (PS3.5 G.3) has a 64-byte
  header of offsets and no metadata. Native pixel data passes unchanged. Other transfer
  syntaxes (video, JPEG XL, ...) are refused: we cannot inspect their bitstreams.
- Photometric Interpretation: kept, unless the bitstream states another colour space
  explicitly (JFIF or Adobe APP14 transform, component ids 'R','G','B'; the same rule as
  `jpeg.py`), in which case it is relabelled as the contract says (YCbCr -> YBR_FULL_422,
  Adobe transform 0 -> RGB) and a note says so. A stream without such a marker is read as
  its DICOM label says (PS3.5 8.2.1: the attribute describes the compressed data).
- Last check: `verify.check` with the input's identifiers, built here from the profile: a
  value the profile keeps (action K, or an attribute the table does not list) is not an
  identifier, a value it removes, empties, replaces or maps is. Every UID of the input other
  than well-known ones (SOP classes, transfer syntaxes, coding schemes) is.

Pure: bytes and datasets in, a dataset out; no I/O. Every failure is an `InputError` with the
DICOM status a C-STORE SCP answers (PS3.4 Annex B.2.3) and a reason that quotes no value of
the object other than UIDs of SOP classes and transfer syntaxes.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import struct
import zlib
from collections import Counter
from dataclasses import dataclass, field

from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.pixels.utils import get_expected_length
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from dicom_mapping import consent as consent_attrs
from dicom_mapping import deid, jpeg, uids, verify, wrap
from dicom_mapping.convert import Converted, exif_identifiers
from dicom_mapping.errors import InputError
from dicom_mapping.metadata import Consent

__all__ = [
    "ACCEPTED_TRANSFER_SYNTAXES",
    "PHOTO_SOP_CLASSES",
    "DicomParams",
    "check_input",
    "consent_for",
    "convert_dicom",
    "read_dicom",
]

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MULTIFRAME_TRUE_COLOR_SC = "1.2.840.10008.5.1.4.1.1.7.4"
VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
#: The photo storage classes of the contract; the config may allow more.
PHOTO_SOP_CLASSES: frozenset[str] = frozenset(
    {SECONDARY_CAPTURE, MULTIFRAME_TRUE_COLOR_SC, VL_PHOTOGRAPHIC}
)

# Transfer syntaxes (PS3.5 Annex A, PS3.6 Annex A).
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"  # retired
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
# JPEG: the SOF markers each transfer syntax admits. Baseline (Process 1) is SOF0 only;
# Extended (Processes 2 & 4) admits baseline streams too; lossless is SOF3 (.70: predictor 1).
_JPEG_SOF: dict[str, frozenset[int]] = {
    jpeg.JPEG_BASELINE: frozenset({0xC0}),
    jpeg.JPEG_EXTENDED: frozenset({0xC0, 0xC1}),
    jpeg.JPEG_LOSSLESS: frozenset({0xC3}),
    jpeg.JPEG_LOSSLESS_SV1: frozenset({0xC3}),
}
_JPEG_LS = frozenset({"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"})
_JPEG_2000 = frozenset(
    {
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.201",  # HTJ2K (same codestream syntax, ISO/IEC 15444-15)
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    }
)
_NATIVE = frozenset({IMPLICIT_LE, EXPLICIT_LE, DEFLATED_LE})
ACCEPTED_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    {*_NATIVE, RLE_LOSSLESS, *_JPEG_SOF, *_JPEG_LS, *_JPEG_2000}
)

NOT_SUPPORTED = 0x0122  # PS3.7 C.4.2: Refused: SOP Class not supported
NOT_AUTHORIZED = 0x0124  # Refused: not authorized
CANNOT_UNDERSTAND = 0xC000  # Error: cannot understand

_UNDEFINED_LENGTH = 0xFFFFFFFF
_CONSENT_FLAGS = frozenset({"YES", "NO", "WITHDRAWN"})
# Our consent block's elements (consent.py) and their VRs, to read them from implicit VR data.
_CONSENT_BLOCK_VRS = {0x01: "LO", 0x02: "DA", 0x03: "LO", 0x04: "CS", 0x05: "CS"}
# Values `deid` writes as dummies (action D): an input that already held them (a re-sent,
# already de-identified object) must not be refused because the dummy reappears.
_DEID_CONSTANTS = frozenset(
    {"anonymized", "19000101", "19000101000000", "000000", "about:blank", "000d"}
)
_FREE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UC", "PN"})  # as deid cleans them inside C
_TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC", "AE", "DA", "DT"})
# verify.Identifiers.add_dataset skips CS and TM too: coded terms and times of day identify
# nobody on their own.


@dataclass(frozen=True)
class DicomParams:
    """What one conversion of a DICOM input needs (from the settings and the source)."""

    secret: bytes
    options: frozenset[str] = frozenset({deid.MODIFIED_DATES})
    allowed_sop_classes: frozenset[str] = PHOTO_SOP_CLASSES
    default_consent: Consent | None = None  # used when the object carries no (0012,0083)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", frozenset(self.options))
        object.__setattr__(self, "allowed_sop_classes", frozenset(self.allowed_sop_classes))
        # Unknown options and an empty secret are configuration faults: ValueError here, once,
        # not an InputError for every object later.
        deid.DeidContext(secret=self.secret, patient_pseudonym="-", options=self.options)


# =============================================================================================
# Reading


def read_dicom(data: bytes, transfer_syntax: str | None = None) -> Dataset:
    """Parse `data` as a DICOM Part 10 file, or, with `transfer_syntax`, as a bare dataset
    encoded in it (what a C-STORE carries, PS3.7 9.1.1; the syntax is the presentation
    context's). The dataset is read completely, and its Pixel Data checked for length (native)
    or frame structure (encapsulated). Any failure is an InputError (0xC000)."""
    data = bytes(data)  # a bytearray or memoryview is copied once
    if transfer_syntax is not None:
        ts = _transfer_syntax_uid(str(transfer_syntax), "the given transfer syntax")
        data = _as_part10(data, ts)
    else:
        _check_part10_prefix(data)
    try:
        ds = dcmread(io.BytesIO(data), force=False)
    except Exception as exc:  # noqa: BLE001 - any parser failure is bad input, named by class
        raise InputError(f"not readable as DICOM ({type(exc).__name__})") from None
    meta = ds.file_meta
    ts_value = str(meta.get("TransferSyntaxUID", "") or "").strip("\x00 ")
    if not ts_value:
        raise InputError(
            "the File Meta Information has no Transfer Syntax UID (0002,0010) (PS3.10 7.1): "
            "the dataset's encoding is unknown"
        )
    _transfer_syntax_uid(ts_value, "Transfer Syntax UID (0002,0010)")
    _check_meta_end(data)
    if ts_value != DEFLATED_LE:  # offsets of a deflated file are in the inflated stream
        _check_sequence_delimiter(ds, data)
        _check_encoding(ds, ts_value)
    _read_every_element(ds)
    if transfer_syntax is not None:
        # The meta we wrapped the bare dataset in: complete it from the dataset (PS3.10 7.1).
        for source, target in (
            ("SOPClassUID", "MediaStorageSOPClassUID"),
            ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
        ):
            if source in ds:
                setattr(meta, target, ds[source].value)
    if "PixelData" in ds:
        _frames_of(ds, ts_value)  # raises if truncated or malformed
    return ds


def _transfer_syntax_uid(value: str, what: str) -> str:
    uid = UID(value.strip("\x00 "))
    if not uid.is_valid or not uid.is_transfer_syntax:
        raise InputError(f"{what} {uid} is not a known transfer syntax")
    return str(uid)


def _looks_like_dataset(data: bytes) -> bool:
    """The first bytes read as an explicit VR little endian element of an even group: a bare
    dataset where a preamble should be."""
    if len(data) < 8:
        return False
    group = int.from_bytes(data[:2], "little")
    return (
        group % 2 == 0 and 0x0002 <= group <= 0x7FE0 and data[4:6].isalpha() and data[4:6].isupper()
    )


def _check_part10_prefix(data: bytes) -> None:
    """PS3.10 7.1: a 128-byte preamble, "DICM", then the File Meta Information (group 0002)."""
    bare = _looks_like_dataset(data)
    hint = (
        ": the data starts with a bare dataset (no preamble, no File Meta Information)"
        if bare
        else ""
    )
    if len(data) < 132:
        raise InputError(
            f"{len(data)} bytes: too short for a DICOM Part 10 file (PS3.10 7.1){hint}"
        )
    if data[128:132] != b"DICM":
        raise InputError(f"no 'DICM' prefix at byte offset 128: not a DICOM Part 10 file{hint}")
    if data[132:134] != b"\x02\x00":
        extra = "; the bytes 'DICM' at offset 128 are part of an element value" if bare else ""
        raise InputError(
            f"no File Meta Information (group 0002) after 'DICM' at offset 128{hint}{extra}"
        )


def _as_part10(data: bytes, ts: str) -> bytes:
    """A bare dataset wrapped as a Part 10 file, so that one reader (and its checks) serves."""
    if ts == DEFLATED_LE:
        try:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # PS3.5 A.5: raw deflate, no header
            plain = inflater.decompress(data) + inflater.flush()
        except zlib.error:
            raise InputError("deflated dataset cannot be inflated (PS3.5 A.5)") from None
        if not inflater.eof:
            raise InputError("deflated dataset ends before its deflate stream: truncated")
        data, ts = plain, EXPLICIT_LE
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.TransferSyntaxUID = UID(ts)
    buf = DicomBytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=False)
    return bytes(buf.getvalue()) + data


_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # (FFFE,E0DD), length 0
_GROUP_LENGTH = b"\x02\x00\x00\x00UL\x04\x00"  # (0002,0000) UL, 4 bytes


def _check_meta_end(data: bytes) -> None:
    """PS3.10 7.1: the File Meta Information ends where its group length says. A group 0002
    element right after it came inside the data set (a C-STORE carries none, PS3.7 9.3.1.1),
    and pydicom would read it into the File Meta Information, over the request's values."""
    if data[132:140] != _GROUP_LENGTH:
        return
    end = 144 + int.from_bytes(data[140:144], "little")
    if data[end : end + 2] == b"\x02\x00":
        raise InputError(
            "File Meta Information elements (group 0002) inside the data set (PS3.10 7.1)"
        )


def _check_encoding(ds: Dataset, ts: str) -> None:
    """pydicom reads explicit VR data under an implicit VR syntax (or the reverse) by guessing,
    with a warning. The sender broke the negotiated encoding (PS3.5 A.1, A.2): refused."""
    implicit = UID(ts).is_implicit_VR
    for tag in ds.keys():
        raw = ds.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement):
            if raw.is_implicit_VR != implicit:
                found = "implicit" if raw.is_implicit_VR else "explicit"
                raise InputError(
                    f"the data set is in {found} VR, not as transfer syntax {ts} says"
                )
            return


def _check_sequence_delimiter(ds: Dataset, data: bytes) -> None:
    """PS3.5 A.4: encapsulated Pixel Data ends with a Sequence Delimitation Item. pydicom only
    warns when the data ends before it; a missing one means the object was cut short."""
    raw = ds.get_item(0x7FE00010, keep_deferred=True) if "PixelData" in ds else None
    if not isinstance(raw, RawDataElement) or raw.length != _UNDEFINED_LENGTH:
        return
    end = raw.value_tell + len(raw.value or b"")
    if data[end : end + 8] != _SEQUENCE_DELIMITER:
        raise InputError(
            "encapsulated Pixel Data (7FE0,0010) ends without its Sequence Delimitation Item "
            "(PS3.5 A.4): truncated"
        )


def _read_every_element(ds: Dataset) -> None:
    """Convert every element (nested too) now, so that a broken value fails here, and find an
    element whose value is shorter than its declared length (the data ended inside it)."""
    for tag in list(ds.keys()):
        if BaseTag(tag).group == 0x0002:  # PS3.10 7.1: File Meta Information only
            raise InputError(
                f"element {BaseTag(tag)} of the File Meta Information group is inside the dataset"
            )
        raw = ds.get_item(tag, keep_deferred=True)
        if (
            isinstance(raw, RawDataElement)
            and raw.length != _UNDEFINED_LENGTH
            and raw.value is not None
            and len(raw.value) < raw.length
        ):
            raise InputError(
                f"element {BaseTag(tag)} declares {raw.length} bytes but the data ends after "
                f"{len(raw.value)}: truncated"
            )
        try:
            elem = ds[tag]
        except Exception as exc:  # noqa: BLE001 - a value pydicom cannot convert
            raise InputError(
                f"element {BaseTag(tag)} cannot be read ({type(exc).__name__})"
            ) from None
        if elem.VR == "SQ":
            for item in elem.value:
                _read_every_element(item)


def _number_of_frames(ds: Dataset) -> int:
    value = ds.get("NumberOfFrames", 1)
    try:
        n = int(value if value not in (None, "") else 1)
    except (TypeError, ValueError):
        raise InputError("Number of Frames (0028,0008) is not an integer") from None
    if n < 1:
        raise InputError(f"Number of Frames (0028,0008) is {n}")
    return n


def _frames_of(ds: Dataset, ts: str) -> list[bytes] | None:
    """The encapsulated frames (PS3.5 A.4), or None for native pixel data, whose length is
    checked against Rows, Columns, Samples, Bits Allocated and Number of Frames."""
    if "PixelData" not in ds:
        raise InputError("no Pixel Data (7FE0,0010): not an image", status=CANNOT_UNDERSTAND)
    elem = ds["PixelData"]
    value = elem.value
    if not isinstance(value, (bytes, bytearray)):
        raise InputError("Pixel Data (7FE0,0010) has no value")
    frames = _number_of_frames(ds)
    if ts in _NATIVE or ts == EXPLICIT_BE:
        missing = [
            k
            for k in (
                "Rows",
                "Columns",
                "SamplesPerPixel",
                "BitsAllocated",
                "PhotometricInterpretation",
            )
            if ds.get(k) in (None, "")
        ]
        if missing:
            raise InputError(f"{', '.join(missing)} missing: the Pixel Data cannot be checked")
        try:
            expected = int(get_expected_length(ds, "bytes"))
        except Exception as exc:  # noqa: BLE001 - inconsistent pixel description
            raise InputError(
                f"the Image Pixel attributes are inconsistent ({type(exc).__name__})"
            ) from None
        if len(value) < expected:
            raise InputError(
                f"Pixel Data holds {len(value)} bytes, {expected} expected for {frames} frame(s): "
                "truncated"
            )
        if len(value) > expected + expected % 2:  # PS3.5 7.1.1: one pad byte to an even length
            raise InputError(
                f"Pixel Data holds {len(value)} bytes, more than the {expected} its attributes "
                "describe: the extra bytes would travel unchecked"
            )
        return None
    if not elem.is_undefined_length:
        raise InputError(f"Pixel Data of transfer syntax {ts} is not encapsulated (PS3.5 A.4)")
    offsets = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        out = list(generate_frames(bytes(value), number_of_frames=frames, extended_offsets=offsets))
    except Exception as exc:  # noqa: BLE001 - malformed items or offset tables
        raise InputError(
            f"encapsulated Pixel Data cannot be split into {frames} frame(s) ({type(exc).__name__})"
        ) from None
    if len(out) != frames or not all(out):
        raise InputError(
            f"encapsulated Pixel Data has {len(out)} frame(s), Number of Frames says {frames}"
        )
    return out


# =============================================================================================
# Converting


@dataclass
class _Pixels:
    """What happens to the Pixel Data: re-encapsulated `frames` (None: the input's element is
    kept as it is), the output transfer syntax, a new label, an ICC profile to add."""

    transfer_syntax: str
    frames: list[bytes] | None = None
    photometric: str | None = None
    icc_profile: bytes | None = None
    exif: list[bytes] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def convert_dicom(ds: Dataset, params: DicomParams) -> Converted:
    """The de-identified object to forward for a DICOM input; InputError if it may not leave."""
    ts = _input_transfer_syntax(ds)
    sop_class = str(ds.get("SOPClassUID", "") or "").strip("\x00 ")
    if not sop_class:
        raise InputError("no SOP Class UID (0008,0016)", status=CANNOT_UNDERSTAND)
    if sop_class not in params.allowed_sop_classes:
        raise InputError(
            f"SOP class {sop_class} ({UID(sop_class).name}) is not a photo storage class",
            status=NOT_SUPPORTED,
        )
    if not str(ds.get("SOPInstanceUID", "") or "").strip("\x00 "):
        raise InputError("no SOP Instance UID (0008,0018)")
    _refuse_burned_in_annotation(ds)
    consent = consent_for(ds, params.default_consent)
    pseudonym = _pseudonym(ds, params.secret)
    _refuse_embedded_overlays(ds)
    pixels = _pixels(ds, ts)

    shift = uids.date_shift_days(params.secret, pseudonym)
    ctx = deid.DeidContext(
        secret=params.secret,
        patient_pseudonym=pseudonym,
        options=params.options,
        date_shift_days=shift,
        # Empty on purpose (see the module docstring): our consent block is written afresh.
        safe_private_creators=frozenset(),
    )
    out = deid.deidentify(_without_pixel_data(ds), ctx)
    # PS3.3 C.12.1.1.7: the input's declarations describe private blocks that are gone.
    if "PrivateDataElementCharacteristicsSequence" in out:
        del out.PrivateDataElementCharacteristicsSequence
    consent_attrs.add_consent(out, consent, _deidentified_date(consent.date, params.options, shift))
    deid.mark_deidentified(out, params.options)
    _drop_emptied_sequences(out, ds, params.options)
    _set_pixel_data(out, ds, pixels)
    out.file_meta = _file_meta(out, pixels.transfer_syntax)
    _check_encodable(out)

    notes = list(pixels.notes)
    if consent.assumed:
        notes.append("consent: the source's default consent, recorded as assumed")
    if "BurnedInAnnotation" not in ds:
        notes.append("Burned In Annotation (0028,0301) absent on input: left absent (unknown)")

    ids = _identifiers(ds, params.options)
    for exif in pixels.exif:
        # Text of the ICC profile the object keeps (its own or the frame's) is not looked for:
        # an iPhone's EXIF Make "Apple" is in the copyright of Apple's Display P3 profile.
        exif_identifiers(exif, ids, out.get("ICCProfile"))
    _last_check(out, ids, pixels.transfer_syntax)
    return Converted(out, tuple(notes))


def _input_transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    value = str(meta.get("TransferSyntaxUID", "") or "").strip("\x00 ") if meta is not None else ""
    if not value:
        raise InputError("no Transfer Syntax UID (0002,0010): the dataset's encoding is unknown")
    ts = _transfer_syntax_uid(value, "Transfer Syntax UID (0002,0010)")
    if ts == EXPLICIT_BE:
        raise InputError(
            "Explicit VR Big Endian (retired, PS3.5 A.3) is not forwarded: send the object as "
            "Little Endian"
        )
    if ts not in ACCEPTED_TRANSFER_SYNTAXES:
        raise InputError(
            f"transfer syntax {ts} ({UID(ts).name}) is not accepted: its bitstream cannot be "
            "inspected for metadata"
        )
    return ts


def consent_for(ds: Dataset, default: Consent | None) -> Consent:
    """The granted consent under which the object may leave, or InputError (0x0124): the
    object's own Consent for Clinical Trial Use Sequence, else `default` marked assumed. The
    same gate `convert_dicom` applies, for a door that refuses before staging.

    PS3.3 C.7.2.3: any item that says NO or WITHDRAWN wins over one that says YES; an item
    without a known flag is no consent at all (and no reason to fall back to the default)."""
    seq = ds.get("ConsentForClinicalTrialUseSequence")
    if seq:
        flags = [
            str(item.get("ConsentForDistributionFlag", "") or "").strip().upper() for item in seq
        ]
        if any(f not in _CONSENT_FLAGS for f in flags):
            raise InputError(
                "Consent for Clinical Trial Use Sequence (0012,0083) has an item without a valid "
                "Consent for Distribution Flag (0012,0085): the consent cannot be read",
                status=NOT_AUTHORIZED,
            )
        try:
            found = consent_attrs.read_consent(_consent_view(ds))
        except (ValueError, TypeError):  # pydantic's ValidationError is a ValueError
            raise InputError(
                "the object's consent record (private block "
                f"'{consent_attrs.PRIVATE_CREATOR}') cannot be read",
                status=NOT_AUTHORIZED,
            ) from None
        if found is None:  # cannot happen after the flag check; no silent default either
            raise InputError("the object's consent cannot be read", status=NOT_AUTHORIZED)
        if "WITHDRAWN" in flags:
            found = found.model_copy(update={"status": "withdrawn"})
        elif "NO" in flags:
            found = found.model_copy(update={"status": "refused"})
        consent = found
    elif default is not None:
        consent = default.model_copy(update={"assumed": True})
    else:
        raise InputError(
            "no consent: the object has no Consent for Clinical Trial Use Sequence (0012,0083) "
            "and its source has no default consent",
            status=NOT_AUTHORIZED,
        )
    if consent.status != "granted":
        raise InputError(
            f"consent {consent.status}: the object cannot be forwarded", status=NOT_AUTHORIZED
        )
    return consent


def _consent_view(ds: Dataset) -> Dataset:
    """The consent sequence and our private block with their VRs (an implicit VR input gives
    the private values as bytes), for `consent.read_consent`."""
    view = Dataset()
    view.ConsentForClinicalTrialUseSequence = ds.ConsentForClinicalTrialUseSequence
    try:
        block = ds.private_block(consent_attrs.PRIVATE_GROUP, consent_attrs.PRIVATE_CREATOR)
    except KeyError:
        return view
    mine = view.private_block(
        consent_attrs.PRIVATE_GROUP, consent_attrs.PRIVATE_CREATOR, create=True
    )
    for offset, vr in _CONSENT_BLOCK_VRS.items():
        if offset not in block:
            continue
        value = block[offset].value
        if isinstance(value, bytes):
            text = value.decode("latin-1").strip(" \x00")
            value = text.split("\\") if "\\" in text else text
        mine.add_new(offset, vr, value)
    return view


def _pseudonym(ds: Dataset, secret: bytes) -> str:
    patient_id = str(ds.get("PatientID", "") or "").strip("\x00 ")
    if not patient_id:
        # An empty ID would file every such object, of any patient, under one pseudonym.
        raise InputError(
            "no Patient ID (0010,0020): the object cannot be filed under a pseudonym "
            "(an empty ID would put unrelated patients under one)"
        )
    issuer = str(ds.get("IssuerOfPatientID", "") or "").strip("\x00 ")
    return uids.patient_pseudonym(secret, issuer, patient_id)


def check_input(ds: Dataset) -> None:
    """What `convert_dicom` refuses about the object itself (Burned In Annotation, overlays in
    the pixel bits, Pixel Data and every frame's bitstream), found without de-identifying, so
    that a door refuses it before staging rather than accepting an object that can only be
    quarantined (contract: "Strictness"). Consent and the patient are the door's own checks."""
    _refuse_burned_in_annotation(ds)
    _refuse_embedded_overlays(ds)
    _pixels(ds, _input_transfer_syntax(ds))


def _refuse_burned_in_annotation(ds: Dataset) -> None:
    if str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
        # PS3.3 C.7.6.1 (General Image) / PS3.15 E.3.1 (Clean Pixel Data): burned-in text goes
        # only by cleaning the pixels, which we cannot do with confidence. A policy refusal of
        # a well-formed object, hence "not authorized" rather than "cannot understand".
        raise InputError(
            "Burned In Annotation (0028,0301) is YES: text burned into the pixels may identify "
            "the patient and cannot be removed",
            status=NOT_AUTHORIZED,
        )


def _refuse_embedded_overlays(ds: Dataset) -> None:
    """PS3.5 8.1.2 (retired): an overlay without Overlay Data (60xx,3000) lives in the unused
    high bits of Pixel Data. Dropping the 60xx group (as deid does) would leave those bits."""
    allocated, stored = ds.get("BitsAllocated"), ds.get("BitsStored")
    if allocated is None or stored is None or int(allocated) <= int(stored):
        return
    for group in range(0x6000, 0x6020, 2):
        if (group, 0x0010) in ds and (group, 0x3000) not in ds:
            raise InputError(
                f"overlay group {group:04X} has no Overlay Data: it is embedded in the Pixel "
                "Data's unused bits (retired, PS3.5 8.1.2) and cannot be removed"
            )


def _without_pixel_data(ds: Dataset) -> Dataset:
    """A dataset sharing `ds`'s elements except Pixel Data (deidentify deep-copies it)."""
    out = Dataset()
    for elem in ds:
        if elem.tag != 0x7FE00010:
            out.add(elem)
    return out


# PS3.15 E.1.1: "X/Z: X unless Z is required to maintain IOD conformance (Type 3 versus Type
# 2)", likewise X/D and X/Z/D. deid resolves them to Z or D for every IOD, which leaves a
# sequence with zero items; a Type 3 sequence must then have one or more (PS3.3 module tables),
# so dciodvfy reports a new error. In the photo IODs these sequences (Institution Code, Operator
# Identification, Referenced Study, Referenced Performed Procedure Step) are Type 3 and X is the
# conformant choice; Acquisition Context is Type 2 in VL Photographic (PS3.3 A.33.4, C.7.6.14).
_TYPE2_SEQUENCES = frozenset({"AcquisitionContextSequence"})


def _drop_emptied_sequences(out: Dataset, source: Dataset, options: frozenset[str]) -> None:
    rows = _rows_by_tag()
    for elem in list(out):
        if elem.VR != "SQ" or len(elem.value) or elem.keyword in _TYPE2_SEQUENCES:
            continue
        row = rows.get(int(elem.tag))
        if (
            row is None
            or not row.basic.startswith("X/")
            or deid.action_for(row, options) not in ("Z", "D")
        ):
            continue
        if source.get(elem.tag) is not None and len(source[elem.tag].value):
            del out[elem.tag]


def _check_encodable(out: Dataset) -> None:
    """The object must encode before it can be checked or sent; a value pydicom read from a
    damaged input may not (say, an invalid character for the character set)."""
    try:
        dcmwrite(io.BytesIO(), out, enforce_file_format=True)
    except Exception as exc:  # noqa: BLE001 - whatever pydicom raises for an unwritable value
        raise InputError(
            f"the de-identified object cannot be encoded ({type(exc).__name__})"
        ) from None


def _deidentified_date(date: dt.date | None, options: frozenset[str], shift: int) -> dt.date | None:
    """The consent date as the profile treats dates (PS3.15 E.3.6)."""
    if date is None:
        return None
    if deid.FULL_DATES in options:
        return date
    if deid.MODIFIED_DATES in options:
        return date + dt.timedelta(days=shift)
    return None


def _set_pixel_data(out: Dataset, source: Dataset, pixels: _Pixels) -> None:
    if pixels.frames is None:
        elem = source["PixelData"]
        new = DataElement(
            elem.tag, elem.VR, elem.value, is_undefined_length=elem.is_undefined_length
        )
        out.add(new)
    else:
        # PS3.5 A.4: one fragment per frame, Basic Offset Table filled, undefined length (which
        # pynetdicom encodes as it finds it; Orthanc cannot parse a defined length here).
        out.PixelData = encapsulate(pixels.frames)
        out["PixelData"].VR = "OB"
        out["PixelData"].is_undefined_length = True
        for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
            if keyword in out:  # they describe the input's fragments (PS3.3 C.7.6.3.1.8)
                delattr(out, keyword)
    if pixels.photometric is not None:
        out.PhotometricInterpretation = pixels.photometric
    if pixels.icc_profile is not None:
        out.ICCProfile = pixels.icc_profile  # ICC Profile module (PS3.3 C.11.15)


def _file_meta(out: Dataset, ts: str) -> FileMetaDataset:
    """New File Meta Information (PS3.10 7.1; PS3.15 E.1.1: it is replaced, not cleaned)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = out.SOPClassUID
    meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    meta.TransferSyntaxUID = UID(ts)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = wrap.IMPLEMENTATION_VERSION
    return meta


# --- pixel data ------------------------------------------------------------------------------


def _pixels(ds: Dataset, ts: str) -> _Pixels:
    frames = _frames_of(ds, ts)
    if frames is None:
        if ts == DEFLATED_LE:
            # The dataset is native once inflated; Explicit VR Little Endian carries it as is.
            return _Pixels(
                EXPLICIT_LE, notes=["deflated dataset forwarded as Explicit VR Little Endian"]
            )
        return _Pixels(ts, notes=["native pixel data passed through unchanged"])
    rows, columns, samples = _geometry(ds)
    if ts in _JPEG_SOF:
        return _jpeg_pixels(ds, ts, frames, rows, columns, samples)
    if ts in _JPEG_2000:
        new, removed = [], 0
        for i, frame in enumerate(frames, 1):
            clean, n = _strip_j2k(frame, i, rows, columns, samples)
            new.append(clean)
            removed += n
        if removed:
            return _Pixels(
                ts, frames=new, notes=[f"JPEG 2000: {removed} COM marker segment(s) removed"]
            )
        return _Pixels(ts, notes=["JPEG 2000 codestreams carry no COM: passed through unchanged"])
    if ts in _JPEG_LS:
        new, dropped = [], Counter[str]()
        for i, frame in enumerate(frames, 1):
            clean, kinds = _strip_jpeg_ls(frame, i, rows, columns, samples)
            new.append(clean)
            dropped.update(kinds)
        if dropped:
            kinds_text = ", ".join(f"{k} x{n}" for k, n in dropped.items())
            return _Pixels(ts, frames=new, notes=[f"JPEG-LS: removed {kinds_text}"])
        return _Pixels(ts, notes=["JPEG-LS frames carry no APPn/COM: passed through unchanged"])
    assert ts == RLE_LOSSLESS
    bits = int(ds.get("BitsAllocated", 8) or 8)
    for i, frame in enumerate(frames, 1):
        _check_rle(frame, i, samples * -(-bits // 8))
    return _Pixels(ts, notes=["RLE Lossless frames passed through unchanged (no metadata in RLE)"])


def _geometry(ds: Dataset) -> tuple[int, int, int]:
    try:
        return int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel)
    except (AttributeError, TypeError, ValueError):
        raise InputError(
            "Rows, Columns or Samples per Pixel missing: the frames cannot be checked"
        ) from None


def _photometric_family(label: str) -> str | None:
    if label in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"):
        return "one component"
    if label == "RGB":
        return "RGB"
    if label in ("YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420"):
        return "YCbCr"
    return None


def _colour_signal(info: jpeg.JpegInfo) -> tuple[str, str] | None:
    """The colour space a 3-component stream states explicitly, and by which marker (the rule
    of jpeg._photometric, less its default: without a marker the DICOM label decides)."""
    if len(info.components) != 3:
        return None
    if info.adobe_transform == 0:
        return "RGB", "Adobe APP14 transform 0"
    if info.adobe_transform == 1:
        return "YCbCr", "Adobe APP14 transform 1"
    if info.jfif:
        return "YCbCr", "JFIF APP0"
    if tuple(c.id for c in info.components) == (ord("R"), ord("G"), ord("B")):
        return "RGB", "component ids R, G, B"
    return None


def _jpeg_pixels(
    ds: Dataset, ts: str, frames: list[bytes], rows: int, columns: int, samples: int
) -> _Pixels:
    pixels = _Pixels(ts, frames=[])
    dropped: Counter[str] = Counter()
    signals: set[tuple[str, str] | None] = set()
    icc: bytes | None = None
    for i, frame in enumerate(frames, 1):
        if frame.endswith(b"\xff\xd9\x00"):
            frame = frame[:-1]  # the fragment's pad to an even length (PS3.5 A.4), not data
        try:
            clean = jpeg.sanitize(frame)
        except InputError as exc:
            raise InputError(f"frame {i}: {exc.reason}") from None
        info = clean.info
        if (
            info.sof not in _JPEG_SOF[ts]
            or (ts == jpeg.JPEG_LOSSLESS_SV1 and info.transfer_syntax != ts)
            or (ts == jpeg.JPEG_BASELINE and info.precision != 8)
        ):
            raise InputError(
                f"frame {i}: a SOF 0x{info.sof:02X} {info.precision}-bit stream does not match "
                f"transfer syntax {ts} ({UID(ts).name})"
            )
        if (info.width, info.height, len(info.components)) != (columns, rows, samples):
            raise InputError(
                f"frame {i}: the JPEG frame is {info.width} x {info.height} with "
                f"{len(info.components)} component(s); the dataset says {columns} x {rows} with "
                f"{samples} sample(s) per pixel"
            )
        signals.add(_colour_signal(info))
        dropped.update(clean.dropped)
        if clean.icc_profile is not None and icc is None:
            icc = clean.icc_profile
        if clean.exif:
            pixels.exif.append(clean.exif)
        assert pixels.frames is not None
        pixels.frames.append(clean.bitstream)
    if dropped:
        pixels.notes.append(
            f"JPEG: removed from {len(frames)} frame(s): "
            + ", ".join(f"{kind} x{n}" for kind, n in dropped.items())
        )
    else:
        pixels.notes.append(f"JPEG: {len(frames)} frame(s) checked, nothing to remove")
    _decide_photometric(ds, pixels, signals, dropped, samples)
    if icc is not None:
        if samples == 3 and "ICCProfile" not in ds:
            pixels.icc_profile = icc
            pixels.notes.append("ICC profile from the JPEG frame moved to ICC Profile (0028,2000)")
        else:
            pixels.notes.append(
                "ICC profile in the JPEG frame dropped: the object has its own or is grey"
            )
    return pixels


def _decide_photometric(
    ds: Dataset,
    pixels: _Pixels,
    signals: set[tuple[str, str] | None],
    dropped: Counter[str],
    samples: int,
) -> None:
    """Keep the label unless the bitstream explicitly contradicts it (contract: never RGB for
    YCbCr data); say what was decided whenever sanitizing touched the colour markers."""
    label = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    family = _photometric_family(label)
    if len({s[0] if s else None for s in signals}) > 1:
        raise InputError("the JPEG frames state different colour spaces")
    signal = next(iter(signals))
    expected_family = "one component" if samples == 1 else None
    if expected_family and family != expected_family:
        raise InputError(
            f"Photometric Interpretation {label or '(empty)'} does not describe one-component data"
        )
    if samples == 3 and family not in ("RGB", "YCbCr") and signal is None:
        raise InputError(
            f"Photometric Interpretation {label or '(empty)'} does not describe 3-component JPEG "
            "data, and the stream states no colour space"
        )
    jfif_dropped = "APP0/JFIF-contradicts-Adobe" in dropped
    if signal is not None and signal[0] != family:
        pixels.photometric = "YBR_FULL_422" if signal[0] == "YCbCr" else "RGB"
        after = ", after a contradicting JFIF APP0 was dropped" if jfif_dropped else ""
        pixels.notes.append(
            f"Photometric Interpretation {label or '(empty)'} contradicted the bitstream "
            f"({signal[1]}{after}): relabelled {pixels.photometric}"
        )
    elif jfif_dropped:
        pixels.notes.append(
            f"a JFIF APP0 contradicting Adobe APP14 transform 0 was dropped; Photometric "
            f"Interpretation {label} kept (it agrees with the Adobe marker)"
        )


# --- JPEG 2000 ---------------------------------------------------------------------------

_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_J2K_SOC, _J2K_SIZ, _J2K_TLM, _J2K_COM = 0xFF4F, 0xFF51, 0xFF55, 0xFF64
_J2K_SOT, _J2K_SOD, _J2K_EOC = 0xFF90, 0xFF93, 0xFFD9


def _strip_j2k(
    frame: bytes, index: int, rows: int, columns: int, samples: int
) -> tuple[bytes, int]:
    """ISO/IEC 15444-1 Annex A: SOC, SIZ, main header segments, tile-parts (SOT, header
    segments, SOD, data; Psot is the tile-part's length from SOT, 0 for "up to EOC"), EOC.
    COM segments (A.9.2) are removed from the main and tile-part headers; Psot is adjusted.
    Returns the codestream and how many COM segments went."""
    where = f"frame {index}: JPEG 2000"
    if frame.startswith(_JP2_SIGNATURE):
        raise InputError(
            f"{where} is wrapped in the JP2 file format, whose boxes can carry "
            "metadata; PS3.5 A.4.4 requires a bare codestream"
        )
    end = len(frame)
    if end and frame[end - 1] == 0 and frame[end - 3 : end - 1] == b"\xff\xd9":
        end -= 1  # the fragment's pad to an even length
    if frame[:2] != b"\xff\x4f":
        raise InputError(f"{where} codestream does not start with SOC (0xFF4F)")
    if frame[end - 2 : end] != b"\xff\xd9":
        raise InputError(f"{where} codestream does not end with EOC (0xFFD9): truncated")

    def marker_at(pos: int, limit: int) -> tuple[int, int]:
        if pos + 4 > limit:
            raise InputError(
                f"{where}: byte offset {pos}: marker segment runs past the end: truncated"
            )
        marker, length = struct.unpack(">HH", frame[pos : pos + 4])
        if marker >> 8 != 0xFF or marker < 0xFF30:
            raise InputError(f"{where}: byte offset {pos}: 0x{marker:04X} is not a marker")
        if length < 2 or pos + 2 + length > limit:
            raise InputError(
                f"{where}: byte offset {pos}: marker 0x{marker:04X} length {length} "
                "runs past the end: truncated"
            )
        return marker, length

    out = bytearray(frame[:2])
    removed = 0
    tlm = False
    pos = 2
    first = True
    while True:  # main header
        if frame[pos : pos + 2] == b"\xff\x90":
            break
        marker, length = marker_at(pos, end)
        if first:
            if marker != _J2K_SIZ:
                raise InputError(f"{where}: SIZ (0xFF51) does not follow SOC")
            _check_siz(frame[pos : pos + 2 + length], where, rows, columns, samples)
            first = False
        tlm = tlm or marker == _J2K_TLM
        if marker == _J2K_COM:
            removed += 1
        else:
            out += frame[pos : pos + 2 + length]
        pos += 2 + length
    while True:  # tile-parts
        if frame[pos : pos + 2] == b"\xff\xd9":
            if pos + 2 != end:
                raise InputError(
                    f"{where}: byte offset {pos}: EOC before the end of the codestream"
                )
            out += b"\xff\xd9"
            break
        marker, length = marker_at(pos, end)
        if marker != _J2K_SOT or length != 10:
            raise InputError(f"{where}: byte offset {pos}: expected SOT (0xFF90) or EOC")
        psot = int.from_bytes(frame[pos + 6 : pos + 10], "big")
        part_end = end - 2 if psot == 0 else pos + psot
        if psot != 0 and (psot < 14 or part_end > end - 2):
            raise InputError(
                f"{where}: byte offset {pos}: tile-part length {psot} runs past the "
                "codestream: truncated"
            )
        header = bytearray(frame[pos : pos + 12])
        q = pos + 12
        cut = 0
        while frame[q : q + 2] != b"\xff\x93":  # tile-part header up to SOD
            marker, length = marker_at(q, part_end)
            if marker == _J2K_COM:
                cut += 2 + length
                removed += 1
            else:
                header += frame[q : q + 2 + length]
            q += 2 + length
        if cut and psot:  # Psot 0 ("up to EOC") needs no change
            if tlm:
                raise InputError(
                    f"{where}: COM in a tile-part header with a TLM marker: the "
                    "tile-part lengths cannot be kept consistent"
                )
            header[6:10] = (psot - cut).to_bytes(4, "big")
        out += header + frame[q:part_end]
        pos = part_end
    if removed and _strip_j2k(bytes(out), index, rows, columns, samples)[1]:
        raise AssertionError("a COM segment survived JPEG 2000 stripping")  # parses again, clean
    return bytes(out), removed


def _check_siz(siz: bytes, where: str, rows: int, columns: int, samples: int) -> None:
    """A.5.1: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz (Ssiz XRsiz YRsiz)*."""
    if len(siz) < 40:
        raise InputError(f"{where}: SIZ segment of {len(siz)} bytes is too short")
    _, lsiz, _, xsiz, ysiz, xo, yo = struct.unpack(">HHHIIII", siz[:22])
    csiz = int.from_bytes(siz[38:40], "big")
    if lsiz != 38 + 3 * csiz:
        raise InputError(f"{where}: SIZ length {lsiz} does not match {csiz} components")
    width, height = xsiz - xo, ysiz - yo
    if (width, height, csiz) != (columns, rows, samples):
        raise InputError(
            f"{where}: SIZ declares {width} x {height} with {csiz} component(s); the dataset says "
            f"{columns} x {rows} with {samples}: the codestream is corrupt or not this image's"
        )


# --- JPEG-LS -----------------------------------------------------------------------------

_LS_KEEP = {0xD8: "SOI", 0xF7: "SOF55", 0xF8: "LSE", 0xDD: "DRI", 0xDA: "SOS", 0xD9: "EOI"}
# T.87 A.1: in JPEG-LS scan data a 0xFF byte is followed by a byte whose high bit is 0 (bit
# stuffing), so 0xFF followed by 0x80-0xFF is a marker.
_LS_MARKER = re.compile(rb"\xff[\x80-\xff]")


def _strip_jpeg_ls(
    frame: bytes, index: int, rows: int, columns: int, samples: int
) -> tuple[bytes, list[str]]:
    """ISO/IEC 14495-1 (T.87) Annex D syntax: keep SOI, SOF55, LSE, DRI, SOS + scan data, RSTn,
    EOI; drop APPn and COM (C.2.4, as in JPEG); refuse anything else or data after EOI."""
    where = f"frame {index}: JPEG-LS"
    n = len(frame)
    if frame[:2] != b"\xff\xd8":
        raise InputError(f"{where} bitstream does not start with SOI")
    out = bytearray(b"\xff\xd8")
    dropped: list[str] = []
    pos = 2
    sof = False
    while True:
        if pos + 2 > n:
            raise InputError(f"{where}: byte offset {n}: no EOI: truncated")
        if frame[pos] != 0xFF:
            raise InputError(f"{where}: byte offset {pos}: expected a marker")
        while pos + 1 < n and frame[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker
        code = frame[pos + 1] if pos + 1 < n else -1
        if code == 0xD9:
            tail = frame[pos + 2 :]
            if tail.strip(b"\x00"):
                raise InputError(f"{where}: data after EOI")
            out += b"\xff\xd9"
            return bytes(out), dropped
        if pos + 4 > n:
            raise InputError(f"{where}: byte offset {pos}: truncated")
        length = int.from_bytes(frame[pos + 2 : pos + 4], "big")
        seg_end = pos + 2 + length
        if length < 2 or seg_end > n:
            raise InputError(
                f"{where}: byte offset {pos}: marker 0xFF{code:02X} length {length} "
                "runs past the end: truncated"
            )
        if 0xE0 <= code <= 0xEF or code == 0xFE:
            dropped.append(f"APP{code - 0xE0}" if code != 0xFE else "COM")
            pos = seg_end
            continue
        if code not in _LS_KEEP:
            raise InputError(f"{where}: byte offset {pos}: marker 0xFF{code:02X} is not allowed")
        if code == 0xF7:
            if sof or length < 6:
                raise InputError(f"{where}: byte offset {pos}: second or short SOF55")
            _, height, width, nf = struct.unpack(">BHHB", frame[pos + 4 : pos + 10])
            if (width, height, nf) != (columns, rows, samples):
                raise InputError(
                    f"{where}: SOF55 declares {width} x {height} with {nf} "
                    f"component(s); the dataset says {columns} x {rows} with {samples}"
                )
            sof = True
        out += frame[pos:seg_end]
        pos = seg_end
        if code != 0xDA:
            continue
        if not sof:
            raise InputError(f"{where}: SOS before SOF55")
        scan = pos
        while True:  # scan data, RSTn included
            m = _LS_MARKER.search(frame, scan)
            if m is None:
                raise InputError(f"{where}: scan data runs to the end: no EOI: truncated")
            mark = m.start()
            while frame[mark + 1] == 0xFF and mark + 2 < n:
                mark += 1
            if 0xD0 <= frame[mark + 1] <= 0xD7:
                scan = mark + 2
                continue
            out += frame[pos:mark]
            pos = mark
            break


# --- RLE ---------------------------------------------------------------------------------


def _check_rle(frame: bytes, index: int, segments_expected: int) -> None:
    """PS3.5 G.5: a 64-byte header (number of segments, 15 offsets), then the segments."""
    where = f"frame {index}: RLE"
    if len(frame) < 64:
        raise InputError(f"{where} header is {len(frame)} bytes, less than 64: truncated")
    header = struct.unpack("<16L", frame[:64])
    count, offsets = header[0], header[1 : 1 + header[0]]
    if count != segments_expected:
        raise InputError(
            f"{where} has {count} segment(s); the pixel description needs {segments_expected}"
        )
    if (
        offsets[0] != 64
        or list(offsets) != sorted(offsets)
        or offsets[-1] >= len(frame)
        or any(header[1 + count :])
    ):
        raise InputError(f"{where} segment offsets are inconsistent")


# --- last check --------------------------------------------------------------------------


def _last_check(out: Dataset, ids: verify.Identifiers, ts: str) -> None:
    """verify.check parses every encapsulated frame as JPEG (its contract); the other
    encapsulated formats have been walked and stripped above, so their frames are left out."""
    if ts in _JPEG_SOF or ts in _NATIVE:
        verify.check(out, ids)
        return
    shown = _without_pixel_data(out)
    shown.file_meta = out.file_meta
    verify.check(shown, ids)


def _identifiers(ds: Dataset, options: frozenset[str]) -> verify.Identifiers:
    """What of the input must not leave: every text value the profile removes, empties,
    replaces or maps (actions X, Z, D, U, C; private and overlay/curve data), not what it keeps
    (K, or attributes the table does not list, outside cleaned sequences). UIDs: every UID of
    the input but well-known ones, whatever the profile does with it."""
    ids = verify.Identifiers()
    _collect(ds, ids, _rows_by_tag(), options, gone=False, in_clean=False)
    return ids


def _rows_by_tag() -> dict[int, deid.ProfileRow]:
    """Rows of the profile with one concrete tag (the class rows are handled by group)."""
    return {int(r.tag, 16): r for r in deid.profile_rows() if re.fullmatch(r"[0-9A-F]{8}", r.tag)}


def _collect(
    ds: Dataset,
    ids: verify.Identifiers,
    rows: dict[int, deid.ProfileRow],
    options: frozenset[str],
    *,
    gone: bool,
    in_clean: bool,
) -> None:
    ours = _our_consent_elements(ds)
    for elem in ds:
        tag = elem.tag
        removed, clean = gone, in_clean
        if tag.is_private:
            if int(tag) in ours:
                continue  # written again from the parsed consent record
            removed = True
        elif tag.element == 0 or tag.group == 0x0002:
            continue
        elif 0x5000 <= tag.group <= 0x501E or 0x6000 <= tag.group <= 0x601E:
            removed = True
        else:
            row = rows.get(int(tag))
            if row is None:
                removed = gone or (in_clean and elem.VR in _FREE_TEXT_VRS)
            else:
                action = deid.action_for(row, options)
                if action in ("X", "Z", "D"):
                    removed = True
                elif action == "C":
                    removed, clean = (gone, True) if elem.VR == "SQ" else (True, in_clean)
                elif action == "U":
                    removed = gone if elem.VR == "SQ" else True
        if elem.VR == "SQ":
            for item in elem.value or []:
                _collect(item, ids, rows, options, gone=removed, in_clean=clean)
            continue
        if elem.VR == "UI":
            for value in _values(elem.value):
                uid = UID(str(value).strip("\x00 "))
                if uid and not (uid.is_transfer_syntax or uid.name != uid):
                    ids.uids.add(str(uid))
            continue
        unknown_vr_text = elem.VR == "UN" and isinstance(elem.value, bytes)  # implicit VR private
        if not removed or (elem.VR not in _TEXT_VRS and not unknown_vr_text):
            continue
        kind = elem.keyword or ("private attribute" if tag.is_private else f"attribute {tag}")
        for value in _values(elem.value):
            if isinstance(value, bytes):
                value = value.decode("latin-1").strip(" \x00")
            text = str(value).strip(" \x00")
            if not text or text.lower() in _DEID_CONSTANTS or not text.isprintable():
                continue
            if elem.VR == "PN":
                ids.add_name(kind, text)
            else:
                ids.add(kind, text)
            if elem.keyword == "PatientBirthDate":
                try:
                    ids.add_date(kind, dt.datetime.strptime(text, "%Y%m%d").date())
                except ValueError:
                    pass


def _our_consent_elements(ds: Dataset) -> frozenset[int]:
    try:
        block = ds.private_block(consent_attrs.PRIVATE_GROUP, consent_attrs.PRIVATE_CREATOR)
    except KeyError:
        return frozenset()
    creator = (consent_attrs.PRIVATE_GROUP << 16) | (block.block_start >> 8)
    return frozenset({creator, *(int(block.get_tag(o)) for o in _CONSENT_BLOCK_VRS)})


def _values(value: object) -> list[object]:
    if isinstance(value, (list, tuple, MultiValue)):
        return list(value)
    return [value]

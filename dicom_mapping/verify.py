"""The last check before an object leaves (contract: "DICOM output", last bullet).

1. Every encapsulated frame's JPEG segments are whitelist-only.
2. No identifying string of the input (values of four characters or more) appears, case-
   insensitively, in any byte outside the scan data: every attribute value (nested, private),
   the file meta, and every JPEG segment payload.
3. No UID of the input appears, other than well-known SOP Class and Transfer Syntax UIDs.
Scan data is excluded: it holds no text, and short strings would match it by chance.
A hit raises InputError naming the class of what leaked, never the value.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.filewriter import dcmwrite
from pydicom.multival import MultiValue
from pydicom.uid import UID

from dicom_mapping import jpeg
from dicom_mapping.errors import InputError

# ITU T.81 B.1.1.3 / contract: SOI, APP0 (JFIF only), APP14 (Adobe), DQT, SOF0-3, DHT, DRI, SOS, RSTn, EOI
ALLOWED_MARKERS = {0xD8, 0xE0, 0xEE, 0xDB, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xDD, 0xDA, 0xD9}
MIN_LENGTH = 4
# A value without letters (a number, a version, a date or time) is looked for as a whole number:
# EXIF Software "14.6" is not in a Lossy Image Compression Ratio "14.62", nor a patient ID
# "4711" in a time "104711".
_NUMERIC = re.compile(r"[0-9 .,:/+-]+")


@dataclass
class Identifiers:
    """Strings and UIDs of the input that must not leave, each with its class (for the reason)."""

    strings: dict[str, str] = field(default_factory=dict)  # lower-cased value -> class
    uids: set[str] = field(default_factory=set)

    def add(self, kind: str, value: object) -> None:
        if value is None:
            return
        text = str(value).strip().strip("\x00").strip()
        if len(text) >= MIN_LENGTH:
            self.strings.setdefault(text.lower(), kind)

    def add_name(self, kind: str, name: str | None) -> None:
        if not name:
            return
        self.add(kind, name)
        for part in name.replace("^", " ").replace(",", " ").split():
            self.add(kind, part)

    def add_date(self, kind: str, date: dt.date | None) -> None:
        if date is None:
            return
        for fmt in ("%Y%m%d", "%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y:%m:%d", "%d-%m-%Y"):
            self.add(kind, date.strftime(fmt))

    def add_dataset(self, ds: Dataset) -> None:
        """Every text value and UID of a DICOM input (nested and private included)."""
        for elem in _walk(ds):
            if elem.VR == "UI":
                for v in _values(elem.value):
                    uid = UID(str(v))
                    if uid and not (uid.is_transfer_syntax or uid.name != uid):
                        self.uids.add(str(uid))
            elif elem.VR in ("PN", "LO", "SH", "LT", "ST", "UT", "UC", "AE", "CS", "DA", "DT", "TM"):
                if elem.VR in ("CS", "TM"):
                    continue  # coded terms and times are not identifying on their own
                for v in _values(elem.value):
                    if elem.VR == "PN":
                        self.add_name(elem.keyword or "private name", str(v))
                    else:
                        self.add(elem.keyword or "private attribute", v)


def _values(value: object) -> list[object]:
    if isinstance(value, (list, tuple, MultiValue)):
        return list(value)
    return [value]


def _walk(ds: Dataset) -> Iterable[DataElement]:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _walk(item)
        else:
            yield elem


# PS3.5 A.4.1-A.4.3: the transfer syntaxes whose frames are JPEG (T.81) bitstreams.
JPEG_TRANSFER_SYNTAXES = frozenset({jpeg.JPEG_BASELINE, jpeg.JPEG_EXTENDED, jpeg.JPEG_LOSSLESS,
                                    jpeg.JPEG_LOSSLESS_SV1})
# Encapsulations without T.81 segments; their converter walks and strips them (dicom_input).
OTHER_CHECKED_SYNTAXES = frozenset({"1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80",
                                    "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90",
                                    "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
                                    "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"})


def _frames(ds: Dataset) -> list[bytes]:
    """The encapsulated JPEG frames of the object (none for native pixel data, nor for the other
    encapsulations, which are not T.81 streams); InputError for a syntax not known here."""
    meta = getattr(ds, "file_meta", None)
    if "PixelData" not in ds or meta is None or not meta.TransferSyntaxUID.is_compressed:
        return []
    if str(meta.TransferSyntaxUID) in OTHER_CHECKED_SYNTAXES:
        return []
    if str(meta.TransferSyntaxUID) not in JPEG_TRANSFER_SYNTAXES:
        raise InputError(f"last check: frames of transfer syntax {meta.TransferSyntaxUID} cannot be checked")
    n = int(ds.get("NumberOfFrames", 1) or 1)
    return list(generate_frames(ds["PixelData"].value, number_of_frames=n))


def _non_scan_bytes(ds: Dataset) -> tuple[bytes, list[bytes]]:
    """The encoded object without its frames' scan data, and each frame's segment bytes."""
    frames = _frames(ds)
    without = Dataset()  # a new dataset: Dataset(ds) would share (and lose) ds's elements
    for elem in ds:
        if elem.keyword != "PixelData":
            without.add(elem)
    without.file_meta = ds.file_meta
    buf = io.BytesIO()
    dcmwrite(buf, without, enforce_file_format=False)
    segments = []
    for frame in frames:
        scan = jpeg.scan_data(frame)
        start = frame.find(scan) if scan else -1
        segments.append(frame[:start] if start >= 0 else frame)
    return buf.getvalue(), segments


def _blank_uids(ds: Dataset) -> Dataset:
    """A copy with every UI value blanked (nested too) and no Pixel Data."""
    out = Dataset()
    for elem in ds:
        if elem.keyword == "PixelData":
            continue
        if elem.VR == "UI":
            out.add_new(elem.tag, "UI", "")
        elif elem.VR == "SQ":
            out.add_new(elem.tag, "SQ", [_blank_uids(item) for item in elem.value])
        else:
            out.add(elem)
    return out


def _text_haystack(ds: Dataset) -> bytes:
    """The encoding searched for identifying strings. UI values are blanked: the object's UIDs are
    keyed HMAC digits (the UID check below covers them), and a short numeric value such as a
    patient ID would otherwise match their digits by chance. File meta holds only UIDs and
    constants of ours."""
    buf = io.BytesIO()
    dcmwrite(buf, _blank_uids(ds), enforce_file_format=False, implicit_vr=False, little_endian=True)
    return buf.getvalue()


def check(ds: Dataset, identifiers: Identifiers) -> None:
    """Raise InputError if the object would leak; return None if it may leave."""
    header, frame_headers = _non_scan_bytes(ds)
    for frame in _frames(ds):
        for seg in jpeg.segments(frame):
            if seg.marker not in ALLOWED_MARKERS and not 0xD0 <= seg.marker <= 0xD7:
                raise InputError(f"last check: JPEG segment 0xFF{seg.marker:02X} is not allowed")
    haystacks = [_text_haystack(ds).lower(), *(f.lower() for f in frame_headers)]
    for value, kind in identifiers.strings.items():
        needle = value.encode("utf-8", "ignore")
        if _NUMERIC.fullmatch(value):
            whole = re.compile(rb"(?<![0-9])" + re.escape(needle) + rb"(?![0-9])")
            found = any(whole.search(hay) for hay in haystacks)
        else:
            found = any(needle in hay for hay in haystacks)
        if found:
            raise InputError(f"last check: an identifying value ({kind}) is still in the object")
    for uid in identifiers.uids:
        if uid.encode() in header:
            raise InputError("last check: an instance UID of the input is still in the object")

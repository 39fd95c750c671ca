"""Photo → DICOM: the whole mapping composed (sniff, sanitize, orient, wrap, de-identify,
consent, last check). Pure: bytes and metadata in, a dataset out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

from PIL import Image
from pydicom.dataset import Dataset

from dicom_mapping import consent as consent_attrs
from dicom_mapping import deid, jpeg, orient, photo, uids, verify, wrap
from dicom_mapping.errors import InputError
from dicom_mapping.metadata import PhotoMetadata

DEFAULT_OPTIONS = frozenset({"retain-longitudinal-modified-dates"})
# Attributes the builder sets from coded values or keyed UIDs on purpose (not from the input):
# the profile must not map the keyed UIDs a second time or drop coded descriptions.
BUILDER_KEEPS = frozenset(
    {
        "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "MediaStorageSOPInstanceUID",
        "StudyDescription", "SeriesDescription", "DerivationDescription",
    }
)


@dataclass(frozen=True)
class ConvertParams:
    secret: bytes
    received_at: dt.datetime
    iod: wrap.Iod = "sc"
    route: str = ""
    options: frozenset[str] = DEFAULT_OPTIONS
    lossless: bool = False  # PNG/HEIC as Explicit VR Little Endian instead of JPEG
    quality: int = 95
    study_uid_source: str | None = None  # a worklist's Study Instance UID: mapped, not derived


@dataclass(frozen=True)
class Converted:
    dataset: Dataset
    notes: tuple[str, ...] = field(default=())  # what was removed, moved or changed; no PHI

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


def _frame_from_jpeg(clean: jpeg.Sanitized, *, lossy: bool = True, derivation: str | None = None,
                     ratio: float | None = None, method: str | None = None) -> wrap.PixelFrame:
    info = clean.info
    samples = len(info.components)
    if ratio is None and info.sof != 0xC3:
        raw = info.width * info.height * samples * (1 if info.precision <= 8 else 2)
        ratio = raw / max(1, len(clean.bitstream))
    return wrap.PixelFrame(
        data=clean.bitstream,
        transfer_syntax=info.transfer_syntax,
        rows=info.height,
        columns=info.width,
        samples_per_pixel=samples,
        photometric=info.photometric,
        bits_stored=info.precision,
        lossy=lossy and info.sof != 0xC3,
        lossy_ratio=ratio if info.sof != 0xC3 else None,
        lossy_method=method or "ISO_10918_1",
        icc_profile=clean.icc_profile,
        derivation=derivation,
    )


def exif_identifiers(exif_tiff: bytes | None, ids: verify.Identifiers,
                      kept_icc: bytes | None = None) -> None:
    """Every text value in the EXIF (IFD0, Exif, GPS, Interop): none may leave.

    A value that is also text of the ICC profile the object keeps on purpose ((0028,2000)) is not
    looked for: EXIF Make "Apple" is in the copyright of Apple's Display P3 profile, which every
    iPhone photo carries; there it is the profile's text, not the patient's or the device's.
    """
    if not exif_tiff:
        return
    icc_text = kept_icc.lower() if kept_icc else b""
    try:
        exif = Image.Exif()
        exif.load(exif_tiff)
        values = list(exif.values())
        for ifd in (0x8769, 0x8825, 0xA005):
            try:
                values.extend(exif.get_ifd(ifd).values())
            except Exception:  # noqa: BLE001 - a broken sub-IFD is skipped, not fatal
                continue
    except Exception:  # noqa: BLE001 - unreadable EXIF: nothing of it is emitted anyway
        return
    for value in values:
        # ASCII tags come as str. Of the UNDEFINED (bytes) tags only those with a character-code
        # prefix hold text (UserComment, GPSProcessingMethod, GPSAreaInformation, EXIF 2.32
        # 4.6.5); the rest (versions, MakerNote, tables) are binary and would match by chance.
        if isinstance(value, bytes):
            if not value.startswith((b"ASCII\x00\x00\x00", b"UNICODE\x00", b"JIS\x00\x00\x00\x00\x00")):
                continue
            codec = "utf-16" if value.startswith(b"UNICODE") else "latin-1"
            value = value[8:].decode(codec, "ignore")
        if isinstance(value, str) and len(value.strip("\x00 ")) >= verify.MIN_LENGTH:
            text = value.strip("\x00 ")
            if icc_text and text.lower().encode("utf-8", "ignore") in icc_text:
                continue
            ids.add("EXIF text", text)


def _identifiers(meta: PhotoMetadata) -> verify.Identifiers:
    ids = verify.Identifiers()
    if meta.patient:
        ids.add("patient ID", meta.patient.id)
        ids.add_name("patient name", meta.patient.name)
        ids.add_date("birth date", meta.patient.birth_date)
    ids.add("accession number", meta.accession_number)
    ids.add("description", meta.description)
    return ids


def _date_for(date: dt.date | None, options: frozenset[str], shift: int) -> dt.date | None:
    if date is None:
        return None
    if "retain-longitudinal-full-dates" in options:
        return date
    if "retain-longitudinal-modified-dates" in options:
        return date + dt.timedelta(days=shift)
    return None


def frame_for_photo(data: bytes, params: ConvertParams) -> tuple[wrap.PixelFrame, bytes | None, tuple[str, ...]]:
    """The upright, metadata-free frame of a JPEG/PNG/HEIC photo, its EXIF (for dates) and notes."""
    kind = photo.sniff(data)
    if kind == "jpeg":
        clean = jpeg.sanitize(data)
        notes = tuple(f"dropped {name}" for name in clean.dropped)
        orientation = orient.exif_orientation(clean.exif)
        if orientation == 1:
            frame = _frame_from_jpeg(clean)
        else:
            oriented = orient.apply_orientation(clean.bitstream, orientation, quality=params.quality)
            upright = jpeg.sanitize(oriented.jpeg)
            upright = jpeg.Sanitized(upright.bitstream, upright.info, clean.icc_profile, None, upright.dropped)
            frame = _frame_from_jpeg(
                upright, derivation=oriented.derivation,
                ratio=None if oriented.lossless else oriented.ratio,
            )
            notes = (*notes, oriented.derivation)
        if params.iod == "vl-photo" and frame.photometric == "RGB" and frame.lossy:
            # PS3.3 C.8.12.1 (VL Image): a lossy JPEG frame must be YBR_FULL_422; an RGB-coded
            # (Adobe transform 0) JPEG cannot be relabelled, so it is re-encoded once, as YCbCr.
            frame = _reencode_as_ycbcr(frame, params.quality)
            notes = (*notes, frame.derivation or "")
        return frame, clean.exif, notes
    if kind in ("png", "heic"):
        decoded = photo.decode_photo(data, kind)
        if params.lossless:
            img = decoded.image
            samples = 1 if img.mode == "L" else 3
            frame = wrap.PixelFrame(
                data=img.tobytes(), transfer_syntax=wrap.native_transfer_syntax(),
                rows=img.height, columns=img.width, samples_per_pixel=samples,
                photometric="MONOCHROME2" if samples == 1 else "RGB",
                lossy=kind == "heic", icc_profile=decoded.icc_profile,
                derivation="; ".join(decoded.notes) or None,
                lossy_ratio=None, lossy_method="ISO_23008_12" if kind == "heic" else None,
            )
            return frame, decoded.exif_tiff, decoded.notes
        encoded = photo.encode_jpeg(decoded, quality=params.quality)
        clean = jpeg.sanitize(encoded.jpeg)
        clean = jpeg.Sanitized(clean.bitstream, clean.info, decoded.icc_profile, None, clean.dropped)
        encoded_as = f"{kind.upper()} encoded as JPEG quality {encoded.quality}"
        derivation = "; ".join((*decoded.notes, *encoded.notes, encoded_as))
        frame = _frame_from_jpeg(clean, derivation=derivation, ratio=encoded.ratio)
        return frame, decoded.exif_tiff, (*decoded.notes, *encoded.notes)
    raise InputError(f"{kind} input is converted by the DICOM path, not as a photo")


def _reencode_as_ycbcr(frame: wrap.PixelFrame, quality: int) -> wrap.PixelFrame:
    decoded = photo.decode_photo(frame.data, "jpeg")
    encoded = photo.encode_jpeg(decoded, quality=quality)
    clean = jpeg.sanitize(encoded.jpeg)
    clean = jpeg.Sanitized(clean.bitstream, clean.info, frame.icc_profile, None, clean.dropped)
    reason = f"RGB-coded JPEG re-encoded as YCbCr JPEG quality {encoded.quality} for VL Photographic"
    derivation = "; ".join(d for d in (frame.derivation, reason) if d)
    return _frame_from_jpeg(clean, derivation=derivation, ratio=encoded.ratio)


def convert_photo(data: bytes, meta: PhotoMetadata, params: ConvertParams) -> Converted:
    """The de-identified object for one photo; InputError if it cannot be made safely."""
    if meta.patient is None:
        raise InputError("metadata has no patient (and no worklist entry filled it in)")
    if meta.consent is None or meta.consent.status != "granted":
        raise InputError("no granted consent: the photo cannot be shared", status=0x0124)
    frame, exif_tiff, notes = frame_for_photo(data, params)
    taken = orient.exif_datetime_original(exif_tiff)
    capture = wrap.Capture(
        meta=meta,
        content_datetime=taken or params.received_at,
        input_sha256=hashlib.sha256(data).digest(),
        iod=params.iod,
        route=params.route,
        study_uid_source=params.study_uid_source,
    )
    built = wrap.build(frame, capture, params.secret)

    pseudonym = uids.patient_pseudonym(params.secret, meta.patient.issuer, meta.patient.id)
    shift = uids.date_shift_days(params.secret, pseudonym)
    ctx = deid.DeidContext(
        secret=params.secret,
        patient_pseudonym=pseudonym,
        options=params.options,
        date_shift_days=shift,
        safe_private_creators=frozenset({consent_attrs.PRIVATE_CREATOR}),
        keep_keywords=BUILDER_KEEPS,
    )
    out = deid.deidentify(built, ctx)
    consent_attrs.add_consent(out, meta.consent, _date_for(meta.consent.date, params.options, shift))
    deid.mark_deidentified(out, params.options)

    ids = _identifiers(meta)
    exif_identifiers(exif_tiff, ids, out.get("ICCProfile"))
    verify.check(out, ids)
    return Converted(out, notes)

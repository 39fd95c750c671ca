"""Acceptance on real files: every third-party photo in tests/data converts cleanly or is refused
with a specific reason, and what the camera wrote about itself stays behind.

The files are third-party test files copied into tests/data (rows and licences in
tests/data/SOURCES.md and tests/data/LICENSES/); this module reads nothing outside the repo. DICOM files are another
module's subject: only JPEG, PNG and HEIC are taken here.

For each photo that converts, for both IODs: dciodvfy passes; the frame holds only whitelisted
segments; no EXIF text value of six characters or more (Make, Model, serials, software, GPS
text ...), no IPTC value, no COM or PNG text, no XMP/IPTC/EXIF structure, no GPS position bytes,
no byte of the EXIF thumbnail or the MakerNote appears anywhere in the written file; the ICC
profile, when the input had one, is (0028,2000); the capture date is not there in any spelling.
The one exemption: a value that is also text inside the input's own ICC profile (for example the
PNG tEXt "icc:description" copy of the profile's name) may be found inside that profile, which
the contract keeps on purpose.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pillow_heif
import pydicom
import pytest
from PIL import ExifTags, Image, ImageOps, IptcImagePlugin
from pydicom.encaps import generate_frames

from conftest import assert_dciodvfy_clean
from dicom_mapping import jpeg, uids
from dicom_mapping.convert import ConvertParams, convert_photo
from dicom_mapping.errors import InputError
from dicom_mapping.metadata import parse_metadata

DATA = Path(__file__).resolve().parents[1] / "data"
KINDS = ("jpeg", "orientation", "png", "heic", "broken")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".heic")
# Copies expected in tests/data, per folder (a missing copy fails test_every_shared_photo_is_here).
# Left out of the copy: jpeg/apple_iphone6_gps_thumb_makernote.jpg (1.9 MB; with it tests/data
# would pass 10 MB; GPS, IFD1 thumbnail and MakerNote are covered by the Nikon and Canon files).
EXPECTED_COUNTS = {"jpeg": 6, "orientation": 9, "png": 17, "heic": 3, "broken": 13}

# broken/: refused, with a word of the reason that names the defect ...
REFUSED = {
    "bad_marker_after_soi.jpg": "0xFF52",
    "corrupt_jfif_app13_fuzz.jpg": "expected a marker",
    "corrupted.heic": "HEIC",
    "png_bad_idat_crc.png": "CRC",
    "png_bad_ihdr_crc.png": "CRC",
    "png_bad_signature.png": "not a JPEG, PNG",
    "png_missing_idat.png": "IDAT",
    "truncated.heic": "truncated",
    "truncated_app14_segment.jpg": "APP14",
    "truncated_scan_data.jpg": "truncated",
    "zero_bytes.heic": "empty",
}
# ... except two whose damage is confined to EXIF, which is dropped anyway: the image data is
# sound, so they convert (orientation read as 1 where unreadable) - without hanging on the loop.
METADATA_ONLY_DAMAGE = {"exif_bad_gps_ifd.jpg", "exif_ifd_loop.jpg"}

SECRET = b"testdata-acceptance-secret-32by!"
RECEIVED = dt.datetime(2026, 12, 1, 9, 0, 0)
META = parse_metadata({
    "patient": {"id": "TD-445566", "issuer": "HOSP-MRN", "name": "REALFILE^TESTER"},
    "body_site": "left forearm",
    "consent": {"status": "granted", "scope": ["clinical-care"], "date": "2026-11-20"},
})
WHITELIST = {0xD8, 0xE0, 0xEE, 0xDB, 0xC0, 0xC1, 0xC3, 0xC4, 0xDD, 0xDA, *range(0xD0, 0xD8), 0xD9}
# Structures that must not be in the output at all (lower case; the search is case-insensitive).
STRUCTURES = {
    b"exif\x00\x00": "EXIF APP1 header",
    b"http://ns.adobe.com/xap/1.0/": "XMP APP1 header",
    b"<x:xmpmeta": "XMP packet",
    b"w5m0mpcehihzreszntczkc9d": "XMP packet id",
    b"photoshop 3.0\x00": "IPTC APP13 header",
    b"8bim\x04\x04": "IPTC-NAA resource",
    b"xml:com.adobe.xmp": "PNG iTXt XMP keyword",
    b"raw profile type exif": "ImageMagick EXIF text chunk",
    b"icc_profile\x00": "APP2 ICC header",
}
TEXT_PREFIXES = (b"ASCII\x00\x00\x00", b"UNICODE\x00", b"JIS\x00\x00\x00\x00\x00")
# IPTC dates and times (the date rule below covers dates; the time of day is kept by design).
IPTC_DATES_TIMES = {(2, 55), (2, 60), (2, 62), (2, 63), (1, 70), (1, 80)}


def _photos() -> list[Path]:
    return sorted(
        p for kind in KINDS if (DATA / kind).is_dir()
        for p in (DATA / kind).iterdir() if p.suffix.lower() in PHOTO_SUFFIXES
    )


PHOTOS = _photos()


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


# ----------------------------------------------------------------------- what the input holds


@dataclass
class Inside:
    """Identifying content of an input, as its own readers (Pillow, pillow-heif) see it."""

    texts: set[str] = field(default_factory=set)  # values of 6+ characters
    needles: dict[bytes, str] = field(default_factory=dict)  # binary needle -> what it is
    icc: bytes | None = None
    taken: dt.date | None = None  # DateTimeOriginal
    orientation: int = 1


def _add_text(inside: Inside, value: object) -> None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        text = value.strip("\x00 \n\t")
        if len(text) >= 6:
            inside.texts.add(text)


def _read_exif(inside: Inside, raw: bytes | None) -> None:
    if not raw:
        return
    tiff = raw[6:] if raw.startswith(b"Exif\x00\x00") else raw
    exif = Image.Exif()
    try:
        exif.load(tiff)
    except Exception:  # noqa: BLE001 - an unreadable EXIF has nothing Pillow could show either
        return
    ifds = {"IFD0": dict(exif)}
    for name, tag in (("Exif", ExifTags.IFD.Exif), ("GPS", ExifTags.IFD.GPSInfo),
                      ("Interop", ExifTags.IFD.Interop), ("IFD1", ExifTags.IFD.IFD1)):
        try:
            ifds[name] = dict(exif.get_ifd(tag))
        except Exception:  # noqa: BLE001 - broken sub-IFD (exif_bad_gps_ifd.jpg): skipped
            ifds[name] = {}
    for ifd in ifds.values():
        for tag, value in ifd.items():
            if isinstance(value, str):
                _add_text(inside, value)
            elif isinstance(value, bytes) and value.startswith(TEXT_PREFIXES):
                codec = "utf-16" if value.startswith(b"UNICODE") else "latin-1"
                _add_text(inside, value[8:].decode(codec, "ignore"))
            elif isinstance(value, bytes) and tag == 0x927C and len(set(value[:32])) >= 8:
                inside.needles[value[:32]] = "MakerNote"
    little = tiff.startswith(b"II")
    for tag, name in ((2, "GPSLatitude"), (4, "GPSLongitude")):
        value = ifds["GPS"].get(tag)
        if isinstance(value, tuple) and len(value) == 3:
            nums = [n for r in value for n in (r.numerator, r.denominator)]
            try:
                inside.needles[struct.pack(("<" if little else ">") + "6I", *nums)] = name
            except struct.error:
                pass
    ifd1 = ifds["IFD1"]
    start, length = ifd1.get(0x0201), ifd1.get(0x0202)
    if isinstance(start, int) and isinstance(length, int) and length >= 256:
        thumb = tiff[start : start + length]
        inside.needles[thumb[length // 2 : length // 2 + 32]] = "EXIF thumbnail"
    taken = ifds["Exif"].get(0x9003)
    if isinstance(taken, str) and re.match(r"\d{4}:\d\d:\d\d", taken):
        try:
            inside.taken = dt.datetime.strptime(taken[:10], "%Y:%m:%d").date()
        except ValueError:
            pass
    orientation = ifds["IFD0"].get(0x0112)
    legal = isinstance(orientation, int) and 1 <= orientation <= 8
    inside.orientation = orientation if legal else 1  # type: ignore[assignment]


def _inside(path: Path, data: bytes) -> Inside:
    inside = Inside()
    if path.suffix.lower() == ".heic":
        heif = pillow_heif.open_heif(io.BytesIO(data))
        info = heif.info
        _read_exif(inside, info.get("exif"))
        if info.get("icc_profile") and str(info.get("icc_profile_type")) in ("prof", "rICC"):
            inside.icc = bytes(info["icc_profile"])
        return inside
    image = Image.open(io.BytesIO(data))
    image.load()
    _read_exif(inside, image.info.get("exif"))
    inside.icc = image.info.get("icc_profile") or None
    if image.format == "JPEG":
        for values in (IptcImagePlugin.getiptcinfo(image) or {}).items():
            key, value = values
            if key in IPTC_DATES_TIMES:
                continue
            for item in value if isinstance(value, list) else [value]:
                _add_text(inside, item)
        _add_text(inside, image.info.get("comment"))
    else:  # PNG tEXt, zTXt, iTXt values (XMP as a structure, above)
        for key, value in image.info.items():
            if key not in ("xmp", "XML:com.adobe.xmp", "icc_profile", "exif"):
                _add_text(inside, value)
    return inside


# ------------------------------------------------------------------------------------- tests


def test_every_shared_photo_is_here():
    found = {kind: sorted(p.name for p in PHOTOS if p.parent.name == kind) for kind in KINDS}
    assert {kind: len(names) for kind, names in found.items()} == EXPECTED_COUNTS
    assert set(found["broken"]) == set(REFUSED) | METADATA_ONLY_DAMAGE


def _params(iod: str) -> ConvertParams:
    return ConvertParams(secret=SECRET, received_at=RECEIVED, iod=iod)  # type: ignore[arg-type]


def _frame(ds: pydicom.Dataset) -> bytes:
    (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
    return frame


def _spellings(day: dt.date) -> list[bytes]:
    formats = ("%Y%m%d", "%Y-%m-%d", "%Y:%m:%d", "%Y/%m/%d", "%d.%m.%Y", "%d/%m/%Y", "%m/%d/%Y")
    return [day.strftime(f).encode() for f in formats]


def _assert_refused(path: Path, data: bytes) -> None:
    for iod in ("sc", "vl-photo"):
        with pytest.raises(InputError) as caught:
            convert_photo(data, META, _params(iod))
        reason = caught.value.reason
        assert reason.strip(), "empty reason"
        for boilerplate in ("Traceback", "Error:", "object at 0x", str(DATA)):
            assert boilerplate not in reason, f"reason has boilerplate: {reason!r}"
        assert REFUSED[path.name].lower() in reason.lower(), reason


@pytest.mark.parametrize("path", PHOTOS, ids=_id)
def test_photo_converts_cleanly_or_is_refused_with_a_reason(tmp_path, path):
    data = path.read_bytes()
    if path.parent.name == "broken" and path.name not in METADATA_ONLY_DAMAGE:
        _assert_refused(path, data)
        return
    inside = _inside(path, data)
    if path.parent.name in ("jpeg", "heic"):
        assert inside.texts, "no EXIF text read from a camera file: the check below would be empty"
    for iod in ("sc", "vl-photo"):
        converted = convert_photo(data, META, _params(iod))
        out = tmp_path / f"{iod}.dcm"
        converted.dataset.save_as(out, enforce_file_format=True)
        assert_dciodvfy_clean(out)
        written = out.read_bytes()
        ds = pydicom.dcmread(io.BytesIO(written))
        frame = _frame(ds)

        markers = {s.marker for s in jpeg.segments(frame)}
        assert markers <= WHITELIST, sorted(hex(m) for m in markers - WHITELIST)
        for seg in jpeg.segments(frame):
            if seg.marker == 0xE0:  # JFIF, and no thumbnail
                body = frame[seg.offset + 4 : seg.offset + seg.length]
                assert body.startswith(b"JFIF\x00")
                assert len(body) == 14 and body[12:14] == b"\x00\x00"

        kept_icc = bytes(ds.ICCProfile).lower() if "ICCProfile" in ds else b""
        lower = written.lower()
        for needle, what in STRUCTURES.items():
            assert needle not in lower, f"{what} is in the output"
        leaked = sorted(
            text for text in inside.texts
            if (t := text.lower().encode("utf-8", "ignore")) in lower and t not in kept_icc
        )
        assert leaked == [], f"input text in the output: {leaked}"
        for needle, what in inside.needles.items():
            assert needle not in written, f"{what} bytes are in the output"

        if inside.icc is not None and ds.SamplesPerPixel == 3:
            assert bytes(ds.ICCProfile) == inside.icc
        if inside.taken is not None:
            pseudonym = uids.patient_pseudonym(SECRET, "HOSP-MRN", "TD-445566")
            shift = uids.date_shift_days(SECRET, pseudonym)
            assert ds.ContentDate == (inside.taken + dt.timedelta(days=shift)).strftime("%Y%m%d")
            for spelling in _spellings(inside.taken):
                assert spelling not in written, f"capture date {spelling!r} is in the output"
        if path.parent.name == "orientation":
            assert (ds.Columns, ds.Rows) == (1800, 1200)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse) if mse else float("inf")


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_the_orientation_set_shows_one_upright_picture():
    """Landscape_0..8 are one photograph stored in the eight orientations (and an illegal 0, read
    as 1). Each output is what Pillow shows for its input (ImageOps.exif_transpose) to JPEG
    precision, and the same picture as orientation 1: each file was compressed on its own, so
    they agree at 25-31 dB, while a wrongly turned or mirrored picture scores under 10 dB."""
    files = sorted((DATA / "orientation").glob("landscape_orientation*.jpg"))
    assert len(files) == 9
    outputs = {}
    for path in files:
        ds = convert_photo(path.read_bytes(), META, _params("sc")).dataset
        outputs[path.name] = _rgb(Image.open(io.BytesIO(_frame(ds))))
        shown = _rgb(ImageOps.exif_transpose(Image.open(path)))
        assert outputs[path.name].shape == shown.shape == (1200, 1800, 3)
        assert _psnr(outputs[path.name], shown) >= 40, path.name
    reference = outputs["landscape_orientation1.jpg"]
    for name, picture in outputs.items():
        assert _psnr(picture, reference) >= 20, name
    for wrong in (Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM,
                  Image.Transpose.ROTATE_180):
        assert _psnr(_rgb(Image.fromarray(reference).transpose(wrong)), reference) < 20


@pytest.mark.parametrize("path", [p for p in PHOTOS if p.parent.name == "jpeg"], ids=_id)
def test_an_upright_camera_jpeg_keeps_its_scan_data_byte_for_byte(path):
    data = path.read_bytes()
    inside = _inside(path, data)
    ds = convert_photo(data, META, _params("sc")).dataset
    if inside.orientation == 1 and jpeg.read_info(data).sof == 0xC0:
        assert jpeg.scan_data(_frame(ds)) == jpeg.scan_data(data)
        assert ds.ImageType[0] == "ORIGINAL" and "DerivationDescription" not in ds
    else:  # turned: the derivation says how
        assert f"orientation {inside.orientation}" in ds.DerivationDescription


def test_the_iphone_heic_arrow_points_up():
    """apple_iphone8plus_makernote_icc.heic (pillow_heif's arrow.heic) stores its pixels turned,
    with HEIF irot and EXIF Orientation 6 both saying so. libheif applies irot; the EXIF tag must
    not be applied a second time: a portrait 3024x4032 picture whose arrow points up (the base of
    the arrowhead, the widest dark row, is in the upper half)."""
    path = DATA / "heic" / "apple_iphone8plus_makernote_icc.heic"
    assert _inside(path, path.read_bytes()).orientation == 6
    ds = convert_photo(path.read_bytes(), META, _params("sc")).dataset
    assert (ds.Columns, ds.Rows) == (3024, 4032)
    picture = Image.open(io.BytesIO(_frame(ds))).convert("L")
    picture.thumbnail((300, 400))
    dark = np.asarray(picture) < 80
    extent = [int(np.ptp(np.nonzero(row)[0])) if row.any() else 0 for row in dark]
    assert int(np.argmax(extent)) < dark.shape[0] / 2


def test_an_iphone_style_jpeg_with_apple_s_colour_profile_converts(tmp_path):
    """iPhones write EXIF Make "Apple" and embed Apple's Display P3 profile, whose copyright
    text says "Apple". The profile is kept on purpose ((0028,2000)); the photo must not be
    refused for it. Same ICC as heic/apple_iphonexs_gps_empty_icc.heic."""
    heic = (DATA / "heic" / "apple_iphonexs_gps_empty_icc.heic").read_bytes()
    heif = pillow_heif.open_heif(io.BytesIO(heic))
    icc = bytes(heif.info["icc_profile"])
    assert b"apple" in icc.lower()
    exif = Image.Exif()
    exif[0x010F] = "Apple"  # Make
    exif[0x0110] = "iPhone XS"  # Model
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (200, 150, 120)).save(buffer, "JPEG", quality=90, icc_profile=icc,
                                                       exif=exif.tobytes())
    ds = convert_photo(buffer.getvalue(), META, _params("sc")).dataset
    assert bytes(ds.ICCProfile) == icc
    out = tmp_path / "iphone.dcm"
    ds.save_as(out, enforce_file_format=True)
    assert_dciodvfy_clean(out)
    assert b"iphone xs" not in out.read_bytes().lower()

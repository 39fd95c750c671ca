"""Acceptance: what a camera, phone or editor hid in a photo never reaches the PACS.

Every generated photo carries a distinct marker in each metadata field (tests/photo_factory.py):
EXIF text (Artist, ImageDescription, UserComment, Make/Model, serials, ImageUniqueID, MakerNote,
GPS text) and the GPS position's own RATIONAL bytes, XMP, IPTC, COM, the EXIF IFD1 thumbnail,
JFIF and JFXX thumbnails, bytes after EOI, PNG tEXt/iTXt/zTXt/eXIf, HEIC EXIF/XMP. Each is
converted for both IODs (`convert_photo`) and through the real command line, the WHOLE written
file is read back, and no marker may be found in it: case-insensitively, as ASCII or UTF-16,
and inside any zlib stream (`markers_present`). Every object must also pass dciodvfy, and its
frame must hold only the whitelisted JPEG segments (README "DICOM output").

The same file holds the other acceptance rules of the photo mapping that are best seen on
generated input: orientation (lossless where jpegtran -perfect can, else one recorded
re-encode), keyed pseudonyms across processes and secrets, and shifted dates.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageOps
from pydicom.encaps import generate_frames

from conftest import assert_dciodvfy_clean, run_cli
from dicom_mapping import jpeg, uids
from dicom_mapping.convert import ConvertParams, convert_photo
from dicom_mapping.metadata import parse_metadata
from gateway.settings import write_key_file
from photo_factory import (
    BINARY_MARKERS,
    HEIC_MARKER_FIELDS,
    JPEG_MARKER_FIELDS,
    MARKERS,
    PNG_MARKER_FIELDS,
    UPRIGHT_QUADRANTS,
    asymmetric_pattern,
    binary_markers_present,
    fields_present,
    make_heic,
    make_jpeg,
    make_png,
    markers_present,
    png_chunks,
    quadrant_colours,
)

SECRET = b"no-leaks-acceptance-secret-32by!"
RECEIVED = dt.datetime(2026, 12, 1, 9, 0, 0)
IODS = ("sc", "vl-photo")
SOP_CLASSES = {"sc": "1.2.840.10008.5.1.4.1.1.7", "vl-photo": "1.2.840.10008.5.1.4.1.1.77.1.4"}
JPEGTRAN = "/usr/bin/jpegtran"

# The sidecar is PHI as well: none of it may be in the object either.
META = {
    "patient": {"id": "PID778899", "issuer": "HOSP-MRN", "name": "LEAKTEST^PAULINE",
                "birth_date": "1971-02-03", "sex": "F"},
    "accession_number": "ACC55501",
    "body_site": "left forearm",
    "description": "wound day three MKSIDECARDESC",
    "consent": {"status": "granted", "scope": ["clinical-care", "teaching"], "date": "2026-11-18",
                "obtained_by_role": "nurse"},
}
SIDECAR_PHI = ("PID778899", "LEAKTEST", "PAULINE", "19710203", "1971-02-03", "03.02.1971",
               "ACC55501", "MKSIDECARDESC", "wound day three")

# A marker of our own for APPn segments the factory has no field for (APP4, APP15, APP2 MPF).
APPN_MARKER = "MKAPPNSEG5W"

# README "DICOM output": SOI, APP0 JFIF, APP14 Adobe, DQT, SOF0/1/3, DHT, DRI, SOS, RSTn, EOI.
# (No SOF2: a progressive input leaves as a sequential stream.)
WHITELIST = {0xD8, 0xE0, 0xEE, 0xDB, 0xC0, 0xC1, 0xC3, 0xC4, 0xDD, 0xDA, *range(0xD0, 0xD8), 0xD9}


# ------------------------------------------------------------------------------------ inputs


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_with_trns(data: bytes) -> bytes:
    """A palette PNG of the factory with a tRNS chunk after PLTE: palette entry 0 transparent,
    entry 1 half transparent (PNG 3rd ed. 11.3.2.1)."""
    out = [data[:8]]
    for kind, body in png_chunks(data):
        out.append(_png_chunk(kind, body))
        if kind == b"PLTE":
            out.append(_png_chunk(b"tRNS", bytes([0, 128] + [255] * (len(body) // 3 - 2))))
    return b"".join(out)


_TRAILER = (b"\xff\xd8\xff\xfe\x00\x0f" + MARKERS["Trailer"].encode() + b"\xff\xd9"
            + MARKERS["Trailer"].encode("utf-16-le"))
_APPN = [(0xE4, APPN_MARKER.encode()), (0xEF, APPN_MARKER.encode()),
         (0xE2, b"MPF\x00" + APPN_MARKER.encode())]
# Every JPEG metadata place the factory knows, and ours: JFIF and JFXX thumbnails, APPn, trailer.
EVERYWHERE = {"jfif_thumbnail": True, "jfxx_thumbnail": True, "trailing_bytes": _TRAILER,
              "extra_segments": _APPN}
JPEG_ALL = (*JPEG_MARKER_FIELDS, "JFIF_Thumbnail", "JFXX_Thumbnail", "Trailer")
# 320x240 fills whole MCUs for every sampling; 330x250 does not (a turn then needs the
# re-encode path, except a transpose).
ALIGNED_SIZE = {"width": 320, "height": 240}
UNALIGNED_SIZE = {"width": 330, "height": 250}
PNG_SIZE = {"width": 200, "height": 150}


def _jpeg(**kwargs: object) -> Callable[[], bytes]:
    return lambda: make_jpeg(**kwargs)  # type: ignore[arg-type]


def _png(**kwargs: object) -> Callable[[], bytes]:
    return lambda: make_png(**PNG_SIZE, **kwargs)  # type: ignore[arg-type]


# name -> (builder, the marker fields the input must carry)
CASES: dict[str, tuple[Callable[[], bytes], tuple[str, ...]]] = {
    "jpeg-420-all-segments": (_jpeg(**ALIGNED_SIZE, icc=True, **EVERYWHERE), JPEG_ALL),
    "jpeg-orientation6-aligned": (_jpeg(**ALIGNED_SIZE, orientation=6, **EVERYWHERE), JPEG_ALL),
    "jpeg-orientation6-not-aligned": (
        _jpeg(**UNALIGNED_SIZE, orientation=6, **EVERYWHERE), JPEG_ALL),
    "jpeg-orientation3-not-aligned-422": (
        _jpeg(**UNALIGNED_SIZE, orientation=3, subsampling="4:2:2"), JPEG_MARKER_FIELDS),
    "jpeg-progressive": (_jpeg(**ALIGNED_SIZE, progressive=True, **EVERYWHERE), JPEG_ALL),
    "jpeg-progressive-orientation8-not-aligned": (
        _jpeg(**UNALIGNED_SIZE, progressive=True, orientation=8), JPEG_MARKER_FIELDS),
    "jpeg-444": (_jpeg(**ALIGNED_SIZE, subsampling="4:4:4"), JPEG_MARKER_FIELDS),
    "jpeg-422-big-endian-exif-restart": (
        _jpeg(**ALIGNED_SIZE, subsampling="4:2:2", exif_byte_order="MM", restart_interval=3),
        JPEG_MARKER_FIELDS),
    "jpeg-grayscale": (_jpeg(**ALIGNED_SIZE, mode="L", **EVERYWHERE), JPEG_ALL),
    "jpeg-grayscale-orientation6-not-aligned": (
        _jpeg(**UNALIGNED_SIZE, mode="L", orientation=6), JPEG_MARKER_FIELDS),
    "jpeg-adobe-rgb": (_jpeg(**ALIGNED_SIZE, adobe_rgb=True, icc=True), JPEG_MARKER_FIELDS),
    "jpeg-adobe-rgb-orientation6-not-aligned": (
        _jpeg(**UNALIGNED_SIZE, adobe_rgb=True, orientation=6), JPEG_MARKER_FIELDS),
    "jpeg-adobe-ycbcr-no-jfif": (
        _jpeg(**ALIGNED_SIZE, adobe_ycbcr=True, jfif=False), JPEG_MARKER_FIELDS),
    "png-rgb": (_png(), PNG_MARKER_FIELDS),
    "png-rgb-16bit": (_png(mode="RGB16"), PNG_MARKER_FIELDS),
    "png-grey-16bit-orientation6": (_png(mode="I;16", orientation=6), PNG_MARKER_FIELDS),
    "png-palette-trns": (lambda: _png_with_trns(make_png(**PNG_SIZE, mode="P")), PNG_MARKER_FIELDS),
    "png-rgba": (_png(mode="RGBA"), PNG_MARKER_FIELDS),
    "png-rgba-16bit-interlaced": (_png(mode="RGBA16", interlaced=True), PNG_MARKER_FIELDS),
    "heic": (lambda: make_heic(**PNG_SIZE), HEIC_MARKER_FIELDS),
    "heic-orientation6": (lambda: make_heic(**PNG_SIZE, orientation=6), HEIC_MARKER_FIELDS),
}
_INPUTS: dict[str, bytes] = {}


def _input(name: str) -> bytes:
    if name not in _INPUTS:
        _INPUTS[name] = CASES[name][0]()
    return _INPUTS[name]


def _params(iod: str) -> ConvertParams:
    return ConvertParams(secret=SECRET, received_at=RECEIVED, iod=iod)  # type: ignore[arg-type]


def _suffix(name: str) -> str:
    return ".jpg" if name.startswith("jpeg") else ".png" if name.startswith("png") else ".heic"


# ------------------------------------------------------------------------------------ checks


def _frame(ds: pydicom.Dataset) -> bytes:
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1))))
    assert len(frames) == 1
    return frames[0]


def _assert_frame_is_whitelist_only(frame: bytes) -> None:
    segments = jpeg.segments(frame)
    markers = {s.marker for s in segments}
    outside = sorted(hex(m) for m in markers - WHITELIST)
    assert not outside, f"segments outside the whitelist: {outside}"
    for seg in segments:
        if seg.marker == 0xE0:
            payload = frame[seg.offset + 4 : seg.offset + seg.length]
            assert payload.startswith(b"JFIF\x00"), "an APP0 that is not JFIF"
            assert len(payload) == 14 and payload[12:14] == b"\x00\x00", "JFIF with a thumbnail"
    # Nothing after EOI either.
    assert frame.rstrip(b"\x00").endswith(b"\xff\xd9")


def _assert_nothing_leaked(written: bytes) -> None:
    """The whole written file: markers (ASCII, UTF-16, inflated), GPS bytes, sidecar PHI."""
    assert markers_present(written) == [], f"fields leaked: {fields_present(written)}"
    assert binary_markers_present(written) == []
    lower = written.lower()
    for text in (APPN_MARKER, *SIDECAR_PHI):
        for needle in (text.lower().encode(), text.lower().encode("utf-16-le")):
            assert needle not in lower, f"{text!r} is in the output"


def _assert_input_carries(data: bytes, fields: tuple[str, ...], name: str) -> None:
    """Guard against a vacuous pass: the input really has what the output must not."""
    missing = set(fields) - set(fields_present(data))
    assert not missing, f"{name}: factory input lacks {sorted(missing)}"
    assert sorted(binary_markers_present(data)) == sorted(BINARY_MARKERS)
    if name.startswith("jpeg") and "all-segments" in name:
        assert APPN_MARKER.encode() in data
    if name.endswith("trns"):
        assert "transparency" in Image.open(io.BytesIO(data)).info


def _check_output(path: Path) -> pydicom.Dataset:
    written = path.read_bytes()
    _assert_nothing_leaked(written)
    assert_dciodvfy_clean(path)
    ds = pydicom.dcmread(io.BytesIO(written))
    _assert_frame_is_whitelist_only(_frame(ds))
    return ds


# ------------------------------------------------------------------------------ convert_photo


@pytest.mark.parametrize("iod", IODS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_no_metadata_marker_survives_convert_photo(tmp_path, name, iod):
    data = _input(name)
    _assert_input_carries(data, CASES[name][1], name)
    converted = convert_photo(data, parse_metadata(META), _params(iod))
    path = tmp_path / "out.dcm"
    converted.dataset.save_as(path, enforce_file_format=True)
    ds = _check_output(path)
    assert ds.SOPClassUID == SOP_CLASSES[iod]
    # No orientation may be left behind: the frame has no EXIF, and the object none either.
    assert b"exif\x00\x00" not in path.read_bytes().lower()


@pytest.mark.parametrize("iod", IODS)
def test_no_metadata_marker_survives_the_command_line(tmp_path, cli_env, iod):
    inputs = tmp_path / "in"
    inputs.mkdir()
    photos = []
    for name in sorted(CASES):
        photo = inputs / f"{name}{_suffix(name)}"
        photo.write_bytes(_input(name))
        photos.append(photo)
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps(META))
    out = tmp_path / "out"
    result = run_cli("convert", *map(str, photos), "--meta", str(meta), "--iod", iod,
                     "--out", str(out), env=cli_env)
    assert result.returncode == 0, result.stderr
    written = {Path(line.split(" -> ")[0]).name: Path(line.split(" -> ")[1])
               for line in result.stdout.splitlines() if " -> " in line}
    assert sorted(written) == sorted(p.name for p in photos)
    assert len(set(written.values())) == len(photos)
    for name, path in written.items():
        assert path.parent == out and path.name.endswith(".dcm"), name
        _check_output(path)
    # Nothing the CLI says names what it removed by value.
    assert markers_present((result.stdout + result.stderr).encode()) == []


# -------------------------------------------------------------------------------- orientation

# Inverse of each EXIF orientation as a jpegtran operation (what turns the upright image back
# into the stored one), written from EXIF 2.32 4.6.4 A; independent of dicom_mapping.orient.
INVERSE_JPEGTRAN = {
    2: ("-flip", "horizontal"), 3: ("-rotate", "180"), 4: ("-flip", "vertical"), 5: ("-transpose",),
    6: ("-rotate", "270"), 7: ("-transverse",), 8: ("-rotate", "90"),
}
ALIGNED, NOT_ALIGNED = (320, 240), (330, 250)  # 4:2:0 MCU is 16x16


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _quantizers(data: bytes) -> list[list[int]]:
    """Each DQT table's values as a sorted list: a transposing turn transposes the table (the
    coefficients turn with the image), a re-encode at another quality changes the values."""
    tables = []
    for seg in jpeg.segments(data):
        if seg.marker != 0xDB:
            continue
        p, end = seg.offset + 4, seg.offset + seg.length
        while p < end:  # T.81 B.2.4.1: Pq/Tq, then 64 values of 1 (Pq=0) or 2 bytes
            size = 64 * (1 + (data[p] >> 4))
            tables.append(sorted(data[p + 1 : p + 1 + size]))
            p += 1 + size
    return tables


@pytest.mark.parametrize("aligned", [True, False], ids=["mcu-aligned", "not-aligned"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_applied_upright(tmp_path, orientation, aligned):
    width, height = ALIGNED if aligned else NOT_ALIGNED
    data = make_jpeg(asymmetric_pattern(width, height), orientation=orientation, quality=90)
    ds = convert_photo(data, parse_metadata(META), _params("sc")).dataset
    frame = _frame(ds)

    out = _decode(frame)
    assert out.size == (width, height) == (ds.Columns, ds.Rows)
    assert quadrant_colours(out) == UPRIGHT_QUADRANTS
    expected = ImageOps.exif_transpose(_decode(data))  # Pillow's own reading of the EXIF tag
    assert expected.size == (width, height)
    psnr = _psnr(np.asarray(out.convert("RGB")), np.asarray(expected.convert("RGB")))
    assert psnr >= 40, f"PSNR {psnr:.1f} dB against the input turned upright"
    assert ds.LossyImageCompression == "01"  # a camera JPEG was lossy before we saw it

    # Transpose (5) never moves a partial MCU edge, so jpegtran -perfect always accepts it.
    lossless = aligned or orientation == 5
    if orientation == 1:
        assert "DerivationDescription" not in ds and ds.ImageType[0] == "ORIGINAL"
        assert jpeg.scan_data(frame) == jpeg.scan_data(data)
        return
    assert f"orientation {orientation}" in ds.DerivationDescription
    assert ds.ImageType[0] == "DERIVED"
    if lossless:
        # The DCT coefficients moved unchanged: the inverse transform gives the input's decode
        # back exactly, and the quantization tables are the camera's (nothing re-encoded).
        inverse = [JPEGTRAN, "-perfect", "-copy", "none", *INVERSE_JPEGTRAN[orientation]]
        back = subprocess.run(inverse, input=frame, capture_output=True, timeout=60, check=True)
        assert np.array_equal(np.asarray(_decode(back.stdout)), np.asarray(_decode(data)))
        assert _quantizers(frame) == _quantizers(data)
        assert "losslessly" in ds.DerivationDescription
    else:
        assert "re-encod" in ds.DerivationDescription
        assert float(ds.LossyImageCompressionRatio) > 1
        assert ds.LossyImageCompressionMethod == "ISO_10918_1"
        assert _quantizers(frame) != _quantizers(data)


# --------------------------------------------------------------------------------- pseudonyms

BASE32 = re.compile(r"[A-Z2-7]{16}")


def _env_with_new_secret(root: Path) -> dict[str, str]:
    """Like the cli_env fixture, with a state directory (and so a secret) of its own."""
    state = root / "state" / "photo-gateway"
    state.mkdir(parents=True, mode=0o700)
    write_key_file(state / "pseudonym.key")
    env = dict(os.environ, XDG_DATA_HOME=str(root / "state"))
    env.pop("PHOTO_GATEWAY_CONFIG", None)
    return env


def _identity_via_cli(
    tmp_path: Path, env: dict[str, str], photos: list[Path], run: str
) -> list[tuple[str, ...]]:
    out = tmp_path / f"out-{run}"
    result = run_cli("convert", *map(str, photos), "--out", str(out), env=env)
    assert result.returncode == 0, result.stderr
    lines = (line.split(" -> ") for line in result.stdout.splitlines())
    paths = {Path(photo).name: Path(dcm) for photo, dcm in lines}
    found = []
    for photo in photos:
        ds = pydicom.dcmread(paths[photo.name])
        found.append((ds.PatientID, str(ds.PatientName), ds.StudyInstanceUID, ds.SeriesInstanceUID,
                      ds.SOPInstanceUID))
    return found


def test_pseudonyms_are_stable_across_processes_and_change_with_the_secret(tmp_path, cli_env):
    photos = []
    for i, meta in enumerate([META, {**META, "accession_number": None}]):  # accession, capture date
        photo = tmp_path / f"p{i}.jpg"
        photo.write_bytes(make_jpeg(width=96, height=64, seed=i))
        Path(f"{photo}.json").write_text(json.dumps(meta))
        photos.append(photo)

    first = _identity_via_cli(tmp_path, cli_env, photos, "first")
    second = _identity_via_cli(tmp_path, cli_env, photos, "second")
    other = _identity_via_cli(tmp_path, _env_with_new_secret(tmp_path / "other"), photos, "other")

    assert first == second  # two processes, same secret: the same identities and UIDs
    for one, two in zip(first, other):
        patient_id, name, study, series, sop = one
        assert BASE32.fullmatch(patient_id) and name == patient_id
        assert BASE32.fullmatch(two[0]) and two[1] == two[0]
        for mine, theirs in zip(one, two):
            assert mine != theirs  # another secret: nothing in common
        for uid in (study, series, sop):
            assert uid.startswith("2.25.") and len(uid) <= 64
    assert first[0][0] == first[1][0]  # one patient, one pseudonym
    assert first[0][4] != first[1][4]  # two photos, two instances


# -------------------------------------------------------------------------------------- dates


def _date(value: str) -> dt.date:
    return dt.datetime.strptime(value, "%Y%m%d").date()


def _spellings(day: dt.date) -> list[str]:
    formats = ("%Y%m%d", "%Y-%m-%d", "%Y:%m:%d", "%Y/%m/%d", "%Y.%m.%d", "%d.%m.%Y", "%d/%m/%Y",
               "%m/%d/%Y", "%d-%m-%Y", "%d%m%Y", "%m%d%Y", "%y%m%d", "%d %b %Y", "%b %d, %Y")
    return [day.strftime(f) for f in formats]


def _consent_date(ds: pydicom.Dataset) -> str:
    block = ds.private_block(0x0013, "PHOTO_GATEWAY CONSENT 1")
    return str(block[0x02].value)


def test_dates_are_shifted_by_one_per_patient_amount_and_the_originals_are_gone(tmp_path):
    taken = {"a": ("2026:11:20 10:31:02", dt.date(2026, 11, 20)),
             "b": ("2025:03:04 08:15:00", dt.date(2025, 3, 4))}
    consent_day = dt.date(2026, 11, 18)
    meta = parse_metadata(META)
    pseudonym = uids.patient_pseudonym(SECRET, "HOSP-MRN", "PID778899")
    expected_shift = uids.date_shift_days(SECRET, pseudonym)
    shifts = {}
    for key, (exif_date, day) in taken.items():
        data = make_jpeg(width=96, height=64, date_time_original=exif_date, seed=ord(key))
        ds = convert_photo(data, meta, _params("sc")).dataset
        shift = (_date(ds.ContentDate) - day).days
        shifts[key] = shift
        assert ds.StudyDate == ds.SeriesDate == ds.ContentDate
        assert ds.AcquisitionDateTime == ds.ContentDate + exif_date[11:].replace(":", "")
        assert ds.ContentTime == exif_date[11:].replace(":", "")  # time of day kept (PS3.15 E.3.6)
        assert _date(_consent_date(ds)) == consent_day + dt.timedelta(days=shift)
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"

        path = tmp_path / f"{key}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written = path.read_bytes().lower()
        for original in (day, consent_day, dt.date(1971, 2, 3)):
            for spelling in _spellings(original):
                for needle in (spelling.lower().encode(), spelling.lower().encode("utf-16-le")):
                    assert needle not in written, f"{spelling!r} ({original}) is in the output"
        assert exif_date.encode() not in written

    assert shifts["a"] == shifts["b"] == expected_shift  # the same shift for the same patient
    assert -365 <= expected_shift <= -1

    # Without DateTimeOriginal the time of receipt is the content date, shifted the same way.
    undated = make_jpeg(width=96, height=64, date_time_original=None)
    ds = convert_photo(undated, meta, _params("sc")).dataset
    assert _date(ds.ContentDate) == RECEIVED.date() + dt.timedelta(days=expected_shift)
    assert ds.ContentTime == RECEIVED.strftime("%H%M%S")


# ------------------------------------------------------ the last check refuses leaks, not photos


def _with_exif_app1(data: bytes, exif: Image.Exif) -> bytes:
    """`data` with an APP1 EXIF segment right after SOI."""
    payload = exif.tobytes()  # starts with b"Exif\0\0"
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def test_a_version_number_in_exif_does_not_get_the_photo_refused(tmp_path):
    """A phone writes its OS version as EXIF Software ("14.6", "16.1"). That is not identifying
    and must not stop the photo because the same digits start another number of the object
    (here Lossy Image Compression Ratio, which depends only on the scan data)."""
    plain = make_jpeg(width=320, height=240, exif_markers=False, gps=False, thumbnail=False,
                      xmp=False, iptc=False, comment=False, date_time_original=None)
    first = convert_photo(plain, parse_metadata(META), _params("sc")).dataset
    ratio = str(first.LossyImageCompressionRatio)
    assert re.fullmatch(r"\d\d\.\d\d", ratio)  # so that its first four characters are a version
    exif = Image.Exif()
    exif[0x0131] = ratio[:4]  # Software, e.g. "14.6" when the ratio is "14.62"
    exif[0x010F] = "MKCAMMAKE4R"  # Make: real EXIF text is still looked for
    photo = _with_exif_app1(plain, exif)
    converted = convert_photo(photo, parse_metadata(META), _params("sc"))
    path = tmp_path / "o.dcm"
    converted.dataset.save_as(path, enforce_file_format=True)
    assert markers_present(path.read_bytes()) == []
    assert str(converted.dataset.LossyImageCompressionRatio) == ratio

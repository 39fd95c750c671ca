"""The photo factory really embeds what it claims: the leak tests built on it depend on that.

If one of these fails, a leak test using the factory could pass while the gateway leaks.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from photo_factory import (
    DATE_TIME_ORIGINAL,
    GPS_LATITUDE,
    GPS_LONGITUDE,
    HEIC_MARKER_FIELDS,
    JPEG_MARKER_FIELDS,
    MARKERS,
    PNG_MARKER_FIELDS,
    UPRIGHT_QUADRANTS,
    asymmetric_pattern,
    binary_markers_present,
    fields_present,
    jpeg_segments,
    jpeg_sof,
    make_exif,
    make_heic,
    make_jpeg,
    make_png,
    markers_present,
    png_chunks,
    quadrant_colours,
    skin_image,
    stored_for_orientation,
)
from PIL import ExifTags, Image, ImageOps, PngImagePlugin

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_data"

EXIF_FIELDS = {
    "Artist",
    "ImageDescription",
    "Copyright",
    "Make",
    "Model",
    "Software",
    "UserComment",
    "BodySerialNumber",
    "LensSerialNumber",
    "CameraOwnerName",
    "ImageUniqueID",
    "MakerNote",
}
GPS_FIELDS = {"GPSProcessingMethod", "GPSAreaInformation", "GPSMapDatum"}
APP0, APP1, APP2, APP13, APP14, COM, DRI = 0xE0, 0xE1, 0xE2, 0xED, 0xEE, 0xFE, 0xDD
NOTHING: dict[str, Any] = {  # every metadata switch off
    "exif_markers": False,
    "gps": False,
    "thumbnail": False,
    "xmp": False,
    "iptc": False,
    "comment": False,
    "date_time_original": None,
}


def open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def segments(data: bytes, marker: int) -> list[bytes]:
    return [payload for m, payload in jpeg_segments(data) if m == marker]


def exif_tiff(data: bytes) -> bytes:
    (app1,) = [p for p in segments(data, APP1) if p.startswith(b"Exif\x00\x00")]
    return app1[6:]


def adobe_transform(data: bytes) -> int | None:
    app14 = [p for p in segments(data, APP14) if p.startswith(b"Adobe")]
    return app14[0][11] if app14 else None


# --- markers ----------------------------------------------------------------------------------


def test_markers_are_distinct_uppercase_tokens_none_inside_another() -> None:
    values = list(MARKERS.values())
    assert len(set(values)) == len(values)
    for field, marker in MARKERS.items():
        assert re.fullmatch(r"[A-Z0-9]{8,}", marker), field
        others = [v for v in values if v != marker]
        assert not any(marker in other for other in others), f"{marker} inside another marker"


def test_marker_lists_name_real_fields() -> None:
    for fields in (JPEG_MARKER_FIELDS, PNG_MARKER_FIELDS, HEIC_MARKER_FIELDS):
        assert set(fields) <= set(MARKERS)


@pytest.mark.parametrize(
    "encode",
    [
        lambda m: m.encode(),
        lambda m: m.lower().encode(),
        lambda m: m.title().encode(),
        lambda m: m.encode("utf-16-le"),
        lambda m: m.encode("utf-16-be"),
        lambda m: zlib.compress(b"text " + m.encode()),
    ],
    ids=["ascii", "lower", "mixed-case", "utf-16-le", "utf-16-be", "deflated"],
)
def test_markers_present_finds_a_marker_however_it_is_spelled(encode: Any) -> None:
    data = b"\x00garbage\xff" + encode(MARKERS["Artist"]) + b"\x00more\xff\xd9"
    assert markers_present(data) == [MARKERS["Artist"]]
    assert fields_present(data) == ["Artist"]


def test_markers_present_finds_nothing_in_clean_bytes() -> None:
    assert markers_present(bytes(range(256)) * 64) == []
    assert binary_markers_present(bytes(range(256)) * 64) == []


def test_bare_jpeg_has_no_marker_and_no_metadata_segment() -> None:
    data = make_jpeg(**NOTHING)
    assert markers_present(data) == []
    assert binary_markers_present(data) == []
    app_or_com = [m for m, _ in jpeg_segments(data) if 0xE0 <= m <= 0xEF or m == COM]
    assert app_or_com == [APP0]  # JFIF only
    assert segments(data, APP0)[0].startswith(b"JFIF\x00")


# --- JPEG: markers where they are claimed -------------------------------------------------------


def test_default_jpeg_carries_every_jpeg_marker() -> None:
    data = make_jpeg()
    assert set(fields_present(data)) == set(JPEG_MARKER_FIELDS)
    assert binary_markers_present(data) == ["GPSLatitude", "GPSLongitude"]


def test_each_jpeg_marker_sits_in_the_segment_it_claims() -> None:
    data = make_jpeg()
    tiff = exif_tiff(data)
    assert set(fields_present(tiff)) == EXIF_FIELDS | GPS_FIELDS | {"Thumbnail"}
    (xmp,) = [p for p in segments(data, APP1) if p.startswith(b"http://ns.adobe.com/xap/1.0/\x00")]
    assert fields_present(xmp) == ["XMP"]
    assert b"<dc:creator>" in xmp
    (iptc,) = segments(data, APP13)
    assert iptc.startswith(b"Photoshop 3.0\x008BIM\x04\x04")
    assert (
        b"\x1c\x02\x50" + struct.pack(">H", len(MARKERS["IPTC"])) + MARKERS["IPTC"].encode() in iptc
    )
    assert segments(data, COM) == [MARKERS["COM"].encode()]


@pytest.mark.parametrize(
    ("switch", "removed"),
    [
        ("exif_markers", EXIF_FIELDS),
        ("gps", GPS_FIELDS),
        ("thumbnail", {"Thumbnail"}),
        ("xmp", {"XMP"}),
        ("iptc", {"IPTC"}),
        ("comment", {"COM"}),
    ],
)
def test_each_jpeg_switch_removes_exactly_its_markers(switch: str, removed: set[str]) -> None:
    switch_off: dict[str, Any] = {switch: False}
    data = make_jpeg(**switch_off)
    assert set(fields_present(data)) == set(JPEG_MARKER_FIELDS) - removed
    assert bool(binary_markers_present(data)) == (switch != "gps")


# --- JPEG: EXIF structure, read back by Pillow and exiftool (installed by scripts/install.sh) --------------------


def test_pillow_reads_every_exif_field_back() -> None:
    exif = open_image(make_jpeg(orientation=3)).getexif()
    assert exif[ExifTags.Base.Artist] == MARKERS["Artist"]
    assert exif[ExifTags.Base.ImageDescription] == MARKERS["ImageDescription"]
    assert exif[ExifTags.Base.Make] == MARKERS["Make"]
    assert exif[ExifTags.Base.Model] == MARKERS["Model"]
    assert exif[ExifTags.Base.Copyright] == MARKERS["Copyright"]
    assert exif[ExifTags.Base.Software] == MARKERS["Software"]
    assert exif[ExifTags.Base.Orientation] == 3
    assert exif[ExifTags.Base.DateTime] == DATE_TIME_ORIGINAL

    sub = exif.get_ifd(ExifTags.IFD.Exif)
    assert sub[ExifTags.Base.DateTimeOriginal] == DATE_TIME_ORIGINAL
    assert sub[ExifTags.Base.UserComment] == b"ASCII\x00\x00\x00" + MARKERS["UserComment"].encode()
    assert sub[ExifTags.Base.BodySerialNumber] == MARKERS["BodySerialNumber"]
    assert sub[ExifTags.Base.LensSerialNumber] == MARKERS["LensSerialNumber"]
    assert sub[ExifTags.Base.CameraOwnerName] == MARKERS["CameraOwnerName"]
    assert sub[ExifTags.Base.ImageUniqueID] == MARKERS["ImageUniqueID"]
    assert sub[ExifTags.Base.MakerNote].startswith(MARKERS["MakerNote"].encode())

    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    assert gps[ExifTags.GPS.GPSLatitudeRef] == "N"
    assert gps[ExifTags.GPS.GPSLongitudeRef] == "E"
    assert [float(v) for v in gps[ExifTags.GPS.GPSLatitude]] == [n / d for n, d in GPS_LATITUDE]
    assert [float(v) for v in gps[ExifTags.GPS.GPSLongitude]] == [n / d for n, d in GPS_LONGITUDE]
    method = gps[ExifTags.GPS.GPSProcessingMethod]
    assert method == b"ASCII\x00\x00\x00" + MARKERS["GPSProcessingMethod"].encode()
    assert gps[ExifTags.GPS.GPSAreaInformation].endswith(MARKERS["GPSAreaInformation"].encode())
    assert gps[ExifTags.GPS.GPSMapDatum] == MARKERS["GPSMapDatum"]


@pytest.mark.parametrize("byte_order", ["II", "MM"])
def test_ifd1_thumbnail_is_a_jpeg_carrying_its_marker(byte_order: str) -> None:
    data = make_jpeg(exif_byte_order=byte_order)  # type: ignore[arg-type]
    tiff = exif_tiff(data)
    assert tiff[:2] == byte_order.encode()
    ifd1 = open_image(data).getexif().get_ifd(ExifTags.IFD.IFD1)
    assert ifd1[ExifTags.Base.Compression] == 6
    start, length = ifd1[ExifTags.Base.JpegIFOffset], ifd1[ExifTags.Base.JpegIFByteCount]
    thumb = tiff[start : start + length]
    assert thumb[:2] == b"\xff\xd8" and thumb[-2:] == b"\xff\xd9"
    assert segments(thumb, COM) == [MARKERS["Thumbnail"].encode()]
    assert max(open_image(thumb).size) == 160


def test_no_thumbnail_means_no_ifd1() -> None:
    exif = open_image(make_jpeg(thumbnail=False)).getexif()
    assert exif.get_ifd(ExifTags.IFD.IFD1) == {}


def test_date_time_original_is_optional() -> None:
    with_date = open_image(make_jpeg(date_time_original="2025:01:02 03:04:05")).getexif()
    assert with_date.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] == (
        "2025:01:02 03:04:05"
    )
    data = make_jpeg(date_time_original=None)
    without = open_image(data).getexif()
    assert ExifTags.Base.DateTimeOriginal not in without.get_ifd(ExifTags.IFD.Exif)
    assert ExifTags.Base.DateTime not in without
    assert b"2026:11:20" not in data


def test_make_exif_alone_is_a_tiff_structure_pillow_parses() -> None:
    tiff = make_exif(markers=False, gps=False, orientation=8, date_time_original=None)
    exif = Image.Exif()
    exif.load(b"Exif\x00\x00" + tiff)
    assert exif[ExifTags.Base.Orientation] == 8
    assert markers_present(tiff) == []


def test_exiftool_sees_every_field_and_the_thumbnail(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(make_jpeg(orientation=6, icc=True))
    out = subprocess.run(
        ["exiftool", "-j", "-a", "-G1", "-n", str(path)], capture_output=True, check=True
    )
    (tags,) = json.loads(out.stdout)
    expected = {
        "IFD0:Artist": MARKERS["Artist"],
        "IFD0:ImageDescription": MARKERS["ImageDescription"],
        "IFD0:Make": MARKERS["Make"],
        "IFD0:Model": MARKERS["Model"],
        "IFD0:Copyright": MARKERS["Copyright"],
        "IFD0:Orientation": 6,
        "ExifIFD:UserComment": MARKERS["UserComment"],
        "ExifIFD:SerialNumber": MARKERS["BodySerialNumber"],
        "ExifIFD:LensSerialNumber": MARKERS["LensSerialNumber"],
        "ExifIFD:OwnerName": MARKERS["CameraOwnerName"],
        "ExifIFD:ImageUniqueID": MARKERS["ImageUniqueID"],
        "ExifIFD:DateTimeOriginal": DATE_TIME_ORIGINAL,
        "GPS:GPSLatitudeRef": "N",
        "GPS:GPSProcessingMethod": MARKERS["GPSProcessingMethod"],
        "GPS:GPSAreaInformation": MARKERS["GPSAreaInformation"],
        "XMP-dc:Creator": MARKERS["XMP"],
        "IPTC:By-line": MARKERS["IPTC"],
        "File:Comment": MARKERS["COM"],
        "IFD1:Compression": 6,
    }
    assert {k: tags.get(k) for k in expected} == expected
    assert tags["GPS:GPSLatitude"] == pytest.approx(47 + 22 / 60 + 12.34567 / 3600)
    assert tags["IFD1:ThumbnailLength"] > 0
    assert "ICC_Profile:ProfileDescription" in tags


# --- JPEG: orientation -----------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_tagged_and_shows_the_pattern_upright(orientation: int) -> None:
    data = make_jpeg(asymmetric_pattern(64, 48), orientation=orientation, quality=95)
    stored = open_image(data)
    assert stored.getexif()[ExifTags.Base.Orientation] == orientation
    assert stored.size == ((48, 64) if orientation >= 5 else (64, 48))
    shown = ImageOps.exif_transpose(stored)
    assert shown.size == (64, 48)
    assert quadrant_colours(shown) == UPRIGHT_QUADRANTS
    if orientation != 1:
        assert quadrant_colours(stored) != UPRIGHT_QUADRANTS


def test_no_orientation_tag_unless_asked() -> None:
    assert ExifTags.Base.Orientation not in open_image(make_jpeg()).getexif()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_stored_for_orientation_is_undone_exactly_by_exif_transpose(orientation: int) -> None:
    upright = skin_image(33, 20, seed=4)
    stored = stored_for_orientation(upright, orientation)
    stored.getexif()[ExifTags.Base.Orientation] = orientation
    assert np.array_equal(np.asarray(ImageOps.exif_transpose(stored)), np.asarray(upright))


# --- JPEG: frame header, colour transform, odd segments --------------------------------------


@pytest.mark.parametrize(
    ("subsampling", "luma"),
    [("4:4:4", (1, 1)), ("4:2:2", (2, 1)), ("4:2:0", (2, 2)), (None, (2, 2))],
)
def test_sof_sampling_factors_are_as_asked(subsampling: Any, luma: tuple[int, int]) -> None:
    marker, precision, width, height, comps = jpeg_sof(make_jpeg(subsampling=subsampling))
    assert (marker, precision, width, height) == (0xC0, 8, 640, 480)
    assert [(h, v) for _, h, v in comps] == [luma, (1, 1), (1, 1)]


def test_grayscale_is_one_component_jfif() -> None:
    data = make_jpeg(mode="L")
    _, _, _, _, comps = jpeg_sof(data)
    assert len(comps) == 1
    assert open_image(data).mode == "L"
    assert segments(data, APP0)[0].startswith(b"JFIF\x00")
    assert adobe_transform(data) is None


def test_progressive_is_sof2_and_default_is_baseline() -> None:
    assert jpeg_sof(make_jpeg(progressive=True))[0] == 0xC2
    assert jpeg_sof(make_jpeg())[0] == 0xC0


def test_restart_interval_writes_dri() -> None:
    (dri,) = segments(make_jpeg(restart_interval=4), DRI)
    assert struct.unpack(">H", dri) == (4,)
    assert segments(make_jpeg(), DRI) == []


def test_adobe_rgb_is_rgb_components_with_app14_transform_0_and_decodes_right() -> None:
    data = make_jpeg(asymmetric_pattern(64, 48), adobe_rgb=True, quality=95)
    assert adobe_transform(data) == 0
    assert segments(data, APP0) == []  # JFIF would make decoders assume YCbCr
    _, _, _, _, comps = jpeg_sof(data)
    assert [(cid, h, v) for cid, h, v in comps] == [(ord("R"), 1, 1), (ord("G"), 1, 1),
                                                     (ord("B"), 1, 1)]  # fmt: skip
    image = open_image(data)
    assert image.mode == "RGB"
    assert quadrant_colours(image) == UPRIGHT_QUADRANTS
    red = np.asarray(image)[6, 6].astype(int)
    assert np.abs(red - [255, 0, 0]).max() <= 4
    assert set(fields_present(data)) == set(JPEG_MARKER_FIELDS)


def test_adobe_rgb_refuses_subsampled_chroma() -> None:
    with pytest.raises(ValueError, match="4:4:4"):
        make_jpeg(adobe_rgb=True, subsampling="4:2:0")


def test_adobe_ycbcr_is_app14_transform_1() -> None:
    data = make_jpeg(asymmetric_pattern(64, 48), adobe_ycbcr=True)
    assert adobe_transform(data) == 1
    assert quadrant_colours(open_image(data)) == UPRIGHT_QUADRANTS
    assert adobe_transform(make_jpeg()) is None


def test_jfif_can_be_left_out_as_phones_do() -> None:
    data = make_jpeg(jfif=False)
    assert segments(data, APP0) == []
    assert jpeg_segments(data)[1][0] == APP1  # EXIF right after SOI


def test_jfif_thumbnail_pixels_spell_their_marker() -> None:
    data = make_jpeg(jfif_thumbnail=True, **NOTHING)
    (app0,) = segments(data, APP0)
    x_thumb, y_thumb = app0[12], app0[13]
    pixels = app0[14:]
    assert len(pixels) == 3 * x_thumb * y_thumb > 0
    assert pixels.rstrip(b"\x00") == MARKERS["JFIF_Thumbnail"].encode()
    assert fields_present(data) == ["JFIF_Thumbnail"]


def test_jfxx_thumbnail_is_a_jpeg_carrying_its_marker() -> None:
    data = make_jpeg(jfxx_thumbnail=True, **NOTHING)
    jfif, jfxx = segments(data, APP0)
    assert jfif.startswith(b"JFIF\x00") and jfxx.startswith(b"JFXX\x00\x10")
    assert segments(jfxx[6:], COM) == [MARKERS["JFXX_Thumbnail"].encode()]
    assert fields_present(data) == ["JFXX_Thumbnail"]


def test_trailing_bytes_follow_eoi_and_extra_segments_are_kept() -> None:
    trailer = MARKERS["Trailer"].encode()
    data = make_jpeg(trailing_bytes=trailer, extra_segments=[(0xE4, b"vendor blob")], **NOTHING)
    assert data.endswith(b"\xff\xd9" + trailer)
    assert segments(data, 0xE4) == [b"vendor blob"]
    assert fields_present(data) == ["Trailer"]
    assert open_image(data).size == (640, 480)


def test_icc_profile_is_embedded_whole_and_carries_no_marker() -> None:
    data = make_jpeg(icc=True, **NOTHING)
    (app2,) = segments(data, APP2)
    assert app2.startswith(b"ICC_PROFILE\x00\x01\x01")
    assert open_image(data).info["icc_profile"] == app2[14:]
    assert markers_present(data) == []


def test_an_opened_image_comment_is_not_written_back() -> None:
    source = open_image(make_jpeg())
    assert "comment" in source.info  # Pillow kept the COM of the source...
    data = make_jpeg(source, comment=False)
    assert segments(data, COM) == []  # ...but the factory does not write it back


def test_jpeg_is_deterministic() -> None:
    assert make_jpeg(seed=5, icc=True) == make_jpeg(seed=5, icc=True)
    assert make_jpeg(seed=5) != make_jpeg(seed=6)


# --- PNG ---------------------------------------------------------------------------------------


def test_default_png_carries_every_png_marker() -> None:
    data = make_png()
    assert set(fields_present(data)) == set(PNG_MARKER_FIELDS)
    assert binary_markers_present(data) == ["GPSLatitude", "GPSLongitude"]


def test_png_ztxt_marker_is_only_visible_once_inflated() -> None:
    data = make_png(exif_chunk=False, xmp=False, time_chunk=False)
    assert MARKERS["PNG_zTXt"].encode() not in data
    assert "PNG_zTXt" in fields_present(data)


def test_png_chunks_are_where_claimed_and_pillow_reads_them() -> None:
    data = make_png(mode="P")
    kinds = [kind for kind, _ in png_chunks(data)]  # raises on a bad CRC
    first_idat = kinds.index(b"IDAT")
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    assert kinds.index(b"eXIf") < first_idat and kinds.index(b"PLTE") < first_idat
    assert kinds.index(b"tEXt") < first_idat and kinds.index(b"zTXt") < first_idat
    assert min(i for i, k in enumerate(kinds) if k == b"iTXt") > first_idat
    assert kinds.index(b"tIME") > first_idat
    time_chunk = dict(png_chunks(data))[b"tIME"]
    assert struct.unpack(">HBBBBB", time_chunk) == (2026, 11, 20, 10, 31, 2)

    image = open_image(data)
    assert isinstance(image, PngImagePlugin.PngImageFile)
    assert image.text["Author"] == MARKERS["PNG_tEXt"]
    assert MARKERS["PNG_zTXt"] in image.text["Comment"]
    assert image.text["Description"] == MARKERS["PNG_iTXt"]
    assert MARKERS["XMP"] in image.text["XML:com.adobe.xmp"]
    exif = image.getexif()
    assert exif[ExifTags.Base.DocumentName] == MARKERS["PNG_eXIf"]
    assert exif[ExifTags.Base.Artist] == MARKERS["Artist"]
    assert exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] == "N"


@pytest.mark.parametrize(
    ("switch", "chunks", "removed"),
    [
        ("text_chunks", {b"tEXt", b"zTXt"}, {"PNG_tEXt", "PNG_zTXt", "PNG_iTXt"}),
        ("exif_chunk", {b"eXIf"}, EXIF_FIELDS | GPS_FIELDS | {"PNG_eXIf"}),
        ("time_chunk", {b"tIME"}, set()),
        ("xmp", set(), {"XMP"}),
    ],
)
def test_each_png_switch_removes_its_chunks(
    switch: str, chunks: set[bytes], removed: set[str]
) -> None:
    switch_off: dict[str, Any] = {switch: False}
    data = make_png(**switch_off)
    kinds = {kind for kind, _ in png_chunks(data)}
    assert not chunks & kinds
    assert set(fields_present(data)) == set(PNG_MARKER_FIELDS) - removed


def test_bare_png_has_only_image_chunks() -> None:
    data = make_png(text_chunks=False, exif_chunk=False, time_chunk=False, xmp=False)
    assert {kind for kind, _ in png_chunks(data)} == {b"IHDR", b"IDAT", b"IEND"}
    assert markers_present(data) == [] and binary_markers_present(data) == []


PNG_MODES = {  # mode -> (IHDR colour type, bit depth, Pillow mode when read)
    "L": (0, 8, "L"),
    "LA": (4, 8, "LA"),
    "RGB": (2, 8, "RGB"),
    "RGBA": (6, 8, "RGBA"),
    "P": (3, 8, "P"),
    "I;16": (0, 16, "I;16"),
    "LA16": (4, 16, "RGBA"),
    "RGB16": (2, 16, "RGB"),
    "RGBA16": (6, 16, "RGBA"),
}


@pytest.mark.parametrize("interlaced", [False, True], ids=["plain", "adam7"])
@pytest.mark.parametrize("mode", list(PNG_MODES))
def test_png_modes_decode_to_the_image(mode: str, interlaced: bool) -> None:
    picture = skin_image(37, 23, seed=9)  # odd sizes: Adam7 passes of uneven width
    data = make_png(picture, mode=mode, interlaced=interlaced)
    ihdr = png_chunks(data)[0][1]
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    expected_colour, expected_depth, pillow_mode = PNG_MODES[mode]
    assert (width, height, depth, colour, interlace) == (
        37, 23, expected_depth, expected_colour, int(interlaced)
    )  # fmt: skip
    image = open_image(data)
    assert image.mode == pillow_mode
    pixels = np.asarray(image)
    grey = np.asarray(picture.convert("L"))
    if mode == "P":
        assert np.array_equal(
            np.asarray(image.convert("RGB")), np.asarray(picture.quantize(256).convert("RGB"))
        )
    elif mode == "I;16":
        assert np.array_equal(pixels >> 8, grey)  # high byte = the 8-bit image
        assert not np.array_equal(pixels & 0xFF, pixels >> 8)  # real 16-bit, not v * 257
    elif mode.startswith("LA"):
        assert np.array_equal(pixels[..., 0], grey)
    else:
        assert np.array_equal(pixels[..., :3] if pixels.ndim == 3 else pixels,
                              np.asarray(picture.convert("RGB" if "RGB" in mode else "L")))  # fmt: skip
    if "A" in mode:
        alpha = pixels[..., -1]
        assert alpha[0, -1] == 0 and alpha[-1, 0] == 255  # transparent top-right corner only


def test_png_16_bit_samples_are_big_endian_with_a_used_low_byte() -> None:
    picture = skin_image(8, 4, seed=2)
    data = make_png(picture, mode="RGB16", interlaced=False, text_chunks=False, exif_chunk=False)
    raw = zlib.decompress(b"".join(body for kind, body in png_chunks(data) if kind == b"IDAT"))
    stride = 1 + 8 * 6
    assert len(raw) == 4 * stride
    # first row, Paeth filter: the first pixel's predictor is 0, so its bytes are the samples
    assert raw[0] == 4
    r16 = struct.unpack(">H", raw[1:3])[0]
    assert r16 >> 8 == picture.getpixel((0, 0))[0]  # type: ignore[index]


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_png_orientation_is_tagged_and_shows_upright(orientation: int) -> None:
    data = make_png(asymmetric_pattern(40, 30), orientation=orientation, exif_chunk=False)
    stored = open_image(data)
    assert stored.getexif()[ExifTags.Base.Orientation] == orientation
    assert markers_present(data) != []  # text chunks still on
    assert not set(fields_present(data)) & EXIF_FIELDS
    assert quadrant_colours(ImageOps.exif_transpose(stored)) == UPRIGHT_QUADRANTS


def test_png_is_deterministic() -> None:
    assert make_png(mode="RGB16", seed=3) == make_png(mode="RGB16", seed=3)


# --- HEIC ------------------------------------------------------------------------------------


def test_heic_carries_markers_and_decodes_upright() -> None:
    import pillow_heif  # a dependency of the package: its HEVC encoder must be there

    assert pillow_heif.libheif_info().get("HEIF"), "pillow-heif has no HEVC encoder"
    pillow_heif.register_heif_opener()
    data = make_heic(asymmetric_pattern(64, 48), orientation=6)
    assert data[4:12] == b"ftypheic"
    assert set(fields_present(data)) == set(HEIC_MARKER_FIELDS)
    image = open_image(data)  # libheif applies the irot transform itself
    assert image.size == (64, 48)
    assert quadrant_colours(image) == UPRIGHT_QUADRANTS


# --- images ----------------------------------------------------------------------------------


def test_skin_image_is_deterministic_per_seed() -> None:
    a = np.asarray(skin_image(120, 90, seed=1))
    assert np.array_equal(a, np.asarray(skin_image(120, 90, seed=1)))
    assert not np.array_equal(a, np.asarray(skin_image(120, 90, seed=2)))


def test_skin_image_has_a_darker_lesion_and_a_ruler_along_the_bottom() -> None:
    plain = np.asarray(skin_image(320, 240, seed=7, lesion=False, ruler=False).convert("L"))
    full = np.asarray(skin_image(320, 240, seed=7).convert("L"))
    body = slice(0, 240 - 240 // 12)
    assert plain[body].min() > 120  # skin only
    assert (full[body] < 100).sum() > 0.01 * full[body].size  # a dark lesion, not a few pixels
    strip = full[240 - 240 // 12 + 1 :]
    assert np.median(strip) > 220  # a light ruler...
    assert (strip < 60).sum() > 100  # ...with dark tick marks
    assert np.median(plain[240 - 240 // 12 + 1 :]) < 220


def test_asymmetric_pattern_quadrants_read_back_in_colour_and_grey() -> None:
    pattern = asymmetric_pattern(50, 40)
    assert quadrant_colours(pattern) == UPRIGHT_QUADRANTS
    assert quadrant_colours(pattern.convert("L")) == UPRIGHT_QUADRANTS
    assert quadrant_colours(pattern.transpose(Image.Transpose.ROTATE_90)) != UPRIGHT_QUADRANTS


# --- committed samples -----------------------------------------------------------------------

BODY_SITES = {"left forearm": "L", "right hand": "R", "abdomen": None, "left lower leg": "L",
              "chest": None}  # fmt: skip
SIDECAR_KEYS = {"patient", "accession_number", "body_site", "laterality", "description",
                "consent", "operator_role", "recognizable"}  # fmt: skip
SAMPLE_NAMES = ["wound_phone_orient6.jpg", "rash_444.jpg", "ulcer_gray.jpg", "burn.png",
                "lesion_adobe_rgb.jpg"]  # fmt: skip


def load_make_samples(monkeypatch: pytest.MonkeyPatch) -> Any:
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_sample_sidecar_follows_the_contract(name: str) -> None:
    meta = json.loads((SAMPLES / f"{name}.json").read_text())
    assert set(meta) <= SIDECAR_KEYS
    assert set(meta["patient"]) == {"id", "issuer", "name", "birth_date", "sex"}
    assert re.fullmatch(r"SYN\d{4}", meta["patient"]["id"])
    assert meta["patient"]["issuer"] == "SYNTH-MRN"
    assert meta["patient"]["name"].startswith("TEST^SAMPLE ")
    assert re.fullmatch(r"SYNACC\d{4}", meta["accession_number"])
    assert meta["body_site"] in BODY_SITES
    assert meta.get("laterality") == BODY_SITES[meta["body_site"]]
    consent = meta["consent"]
    assert consent["status"] == "granted" and consent["scope"]
    assert set(consent["scope"]) <= {"clinical-care", "second-opinion", "teaching", "research",
                                     "publication"}  # fmt: skip


def test_samples_are_what_the_readme_says() -> None:
    wound = (SAMPLES / "wound_phone_orient6.jpg").read_bytes()
    image = open_image(wound)
    assert image.size == (1600, 1200)
    assert image.getexif()[ExifTags.Base.Orientation] == 6
    assert [(h, v) for _, h, v in jpeg_sof(wound)[4]] == [(2, 2), (1, 1), (1, 1)]
    assert segments(wound, APP0) == []
    assert set(fields_present(wound)) == set(JPEG_MARKER_FIELDS)

    rash = (SAMPLES / "rash_444.jpg").read_bytes()
    assert [(h, v) for _, h, v in jpeg_sof(rash)[4]] == [(1, 1)] * 3
    assert ExifTags.Base.Orientation not in open_image(rash).getexif()

    assert len(jpeg_sof((SAMPLES / "ulcer_gray.jpg").read_bytes())[4]) == 1
    assert adobe_transform((SAMPLES / "lesion_adobe_rgb.jpg").read_bytes()) == 0
    burn = (SAMPLES / "burn.png").read_bytes()
    assert open_image(burn).mode == "RGB"
    assert set(fields_present(burn)) == set(PNG_MARKER_FIELDS)

    total = sum(p.stat().st_size for p in SAMPLES.iterdir() if p.is_file())
    assert total < 5 * 1024 * 1024


def test_make_samples_is_deterministic_and_matches_the_committed_sidecars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_samples = load_make_samples(monkeypatch)
    for run in ("a", "b"):
        assert make_samples.main(["--out", str(tmp_path / run)]) == 0
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(SAMPLE_NAMES + [f"{n}.json" for n in SAMPLE_NAMES])
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        if name.endswith(".json"):
            assert (tmp_path / "a" / name).read_bytes() == (SAMPLES / name).read_bytes()

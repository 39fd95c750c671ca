"""Sniffing, PNG/HEIC decoding to upright 8-bit pixels, and the metadata-free JPEG they become.

README "DICOM output": PNG and HEIC become one JPEG at a recorded quality; 16-bit input is reduced
to 8 bits (recorded); PNG text, eXIf and time chunks are dropped; orientation is applied once.
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
from PIL import Image, ImageOps, JpegImagePlugin, PngImagePlugin

from dicom_mapping.errors import InputError
from dicom_mapping.orient import exif_datetime_original
from dicom_mapping.photo import (
    MAX_PIXELS,
    Decoded,
    Encoded,
    decode_photo,
    encode_jpeg,
    sniff,
)

DATA = Path(__file__).resolve().parents[1] / "data"
REDUCED = "16-bit samples reduced to 8 bits"
FLATTENED = "alpha channel dropped (flattened on white)"

# Every PNG copied for these tests: (mode, size, notes) after decode_photo.
PNG_EXPECTED: dict[str, tuple[str, tuple[int, int], tuple[str, ...]]] = {
    "rgb8.png": ("RGB", (32, 32), ()),
    "rgb16.png": ("RGB", (32, 32), (REDUCED,)),
    "gray16.png": ("L", (32, 32), (REDUCED,)),
    "palette8.png": ("RGB", (32, 32), ()),
    "palette8_trns.png": ("RGB", (32, 32), (FLATTENED,)),
    "rgba8.png": ("RGB", (32, 32), (FLATTENED,)),
    "rgba16.png": ("RGB", (32, 32), (REDUCED, FLATTENED)),
    "rgb8_interlaced.png": ("RGB", (32, 32), ()),
    "rgba8_interlaced.png": ("RGB", (32, 32), (FLATTENED,)),
    "text_tEXt.png": ("L", (32, 32), ()),
    "text_zTXt.png": ("L", (32, 32), ()),
    "text_iTXt_en.png": ("L", (32, 32), ()),
    "text_iTXt_ja.png": ("L", (32, 32), ()),
    "exif_chunk_small.png": ("RGB", (32, 32), ()),
    "xmp_itxt_orientation3.png": (
        "RGB",
        (326, 268),
        ("alpha channel dropped (fully opaque)", "XMP tiff:Orientation 3 applied"),
    ),
}


def png_chunk(name: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + name + body + struct.pack(">I", zlib.crc32(name + body))


def png_bytes(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def jpeg_markers(jpeg: bytes) -> list[int]:
    """Test's own walk of the marker segments up to SOS (ITU-T T.81 B.1.1.4)."""
    assert jpeg[:2] == b"\xff\xd8"
    markers, position = [], 2
    while True:
        marker = jpeg[position + 1]
        markers.append(marker)
        if marker == 0xDA:
            return markers
        (length,) = struct.unpack_from(">H", jpeg, position + 2)
        position += 2 + length


def assert_clean_jpeg(encoded: Encoded) -> None:
    """Baseline, JFIF, nothing else: no EXIF, ICC, XMP, COM, IPTC, thumbnail."""
    markers = jpeg_markers(encoded.jpeg)
    assert set(markers) <= {0xE0, 0xDB, 0xC0, 0xC4, 0xDA}, [hex(m) for m in markers]
    assert markers.count(0xE0) == 1 and 0xC0 in markers
    jfif = encoded.jpeg[4 + 2 : 4 + 16]
    assert jfif[:5] == b"JFIF\x00" and jfif[-2:] == b"\x00\x00"  # no JFIF thumbnail
    assert b"Exif" not in encoded.jpeg and b"ICC_PROFILE" not in encoded.jpeg
    assert encoded.jpeg.endswith(b"\xff\xd9")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def corners_pattern(width: int, height: int) -> Image.Image:
    """Upright: red top-left, green top-right, blue bottom-left, white bottom-right."""
    array = np.zeros((height, width, 3), np.uint8)
    array[: height // 2, : width // 2] = (255, 0, 0)
    array[: height // 2, width // 2 :] = (0, 255, 0)
    array[height // 2 :, : width // 2] = (0, 0, 255)
    array[height // 2 :, width // 2 :] = (255, 255, 255)
    return Image.fromarray(array)


def assert_corners(image: Image.Image) -> None:
    array = np.asarray(image.convert("RGB")).astype(int)
    h, w = array.shape[:2]
    for (y, x), colour in {
        (2, 2): (255, 0, 0),
        (2, w - 3): (0, 255, 0),
        (h - 3, 2): (0, 0, 255),
        (h - 3, w - 3): (255, 255, 255),
    }.items():
        assert np.all(np.abs(array[y, x] - colour) <= 40), ((y, x), array[y, x])


# ----------------------------------------------------------------------------------- sniff


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("png/rgb8.png", "png"),
        ("orientation/landscape_orientation1.jpg", "jpeg"),
        ("heic/apple_iphonexs_gps_empty_icc.heic", "heic"),
        ("heic/sony_ilce7sm3_mono_exif_xmp_iptc.heic", "heic"),
        ("broken/truncated.heic", "heic"),
        ("broken/png_bad_idat_crc.png", "png"),
        # No preamble; the bytes "DICM" sit at offset 128 inside Station Name: still DICOM, by
        # its first elements (0008,0005) CS and (0008,0020) DA — not by a fake prefix.
        ("broken/dicom_no_preamble_dicm_in_data.dcm", "dicom"),
    ],
)
def test_sniff_recognises_the_four_kinds(path: str, kind: str) -> None:
    assert sniff((DATA / path).read_bytes()) == kind


def test_sniff_recognises_a_part10_file_by_preamble_prefix_and_meta_group() -> None:
    meta = b"\x02\x00\x00\x00UL\x04\x00" + struct.pack("<I", 0)
    assert sniff(b"\x00" * 128 + b"DICM" + meta) == "dicom"


def test_sniff_empty_file() -> None:
    with pytest.raises(InputError, match="^empty file$"):
        sniff(b"")
    with pytest.raises(InputError, match="^empty file$"):
        sniff((DATA / "broken" / "zero_bytes.heic").read_bytes())


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        (b"GIF89a" + b"\x00" * 40, "47 49 46 38"),
        ((DATA / "broken" / "png_bad_signature.png").read_bytes(), "09 50 4e 47"),
        (b"II*\x00" + b"\x00" * 200, "49 49 2a 00"),  # TIFF
        (b"\x00" * 128 + b"DICM" + b"garbage!" * 4, "00 00 00 00"),  # "DICM" not followed by 0002
        (b"\x00\x00\x00\x18ftypavif\x00\x00\x00\x00mif1avif" + b"\x00" * 16, "00 00 00 18"),  # AVIF
        (b"\x08\x00\x05\x00XX\x0a\x00ISO_IR 100", "08 00 05 00"),
    ],  # not a VR
)
def test_sniff_refuses_anything_else_naming_the_first_bytes(data: bytes, shown: str) -> None:
    with pytest.raises(
        InputError, match=f"not a JPEG, PNG, HEIC or DICOM file \\(starts with {shown}\\)"
    ):
        sniff(data)


# ------------------------------------------------------------------------------------- PNG


@pytest.mark.parametrize("name", sorted(PNG_EXPECTED))
def test_every_png_decodes_to_8_bit_rgb_or_l_with_its_notes(name: str) -> None:
    mode, size, notes = PNG_EXPECTED[name]
    decoded = decode_photo((DATA / "png" / name).read_bytes(), "png")
    assert isinstance(decoded, Decoded)
    assert decoded.image.mode == mode and decoded.image.size == size
    assert np.asarray(decoded.image).dtype == np.uint8
    assert decoded.notes == notes
    assert decoded.image.info == {}
    encoded = encode_jpeg(decoded)
    assert_clean_jpeg(encoded)
    assert Image.open(io.BytesIO(encoded.jpeg)).mode == mode


def test_interlaced_png_decodes_like_the_plain_one() -> None:
    for plain, interlaced in [
        ("rgb8.png", "rgb8_interlaced.png"),
        ("rgba8.png", "rgba8_interlaced.png"),
    ]:
        a = decode_photo((DATA / "png" / plain).read_bytes(), "png").image
        b = decode_photo((DATA / "png" / interlaced).read_bytes(), "png").image
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_16_bit_grey_keeps_the_most_significant_byte() -> None:
    values = np.array([[0, 255, 256, 32767], [32768, 40000, 65280, 65535]], np.uint16)
    image = Image.frombytes("I;16", (4, 2), values.astype("<u2").tobytes())
    decoded = decode_photo(png_bytes(image), "png")
    assert decoded.image.mode == "L" and decoded.notes == (REDUCED,)
    assert np.array_equal(np.asarray(decoded.image), (values >> 8).astype(np.uint8))


def raw_png_samples(data: bytes) -> np.ndarray:
    """Independent reading of a non-interlaced 16-bit PNG: inflate IDAT, undo the row filters
    (ISO/IEC 15948 9.2), return the samples as uint16 (height, width, channels)."""
    position, idat = 8, b""
    width = height = channels = 0
    while position < len(data):
        length, name = struct.unpack_from(">I4s", data, position)
        body = data[position + 8 : position + 8 + length]
        if name == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 16 and interlace == 0
            channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
        elif name == b"IDAT":
            idat += body
        position += 12 + length
    raw = zlib.decompress(idat)
    bpp, stride = 2 * channels, 2 * channels * width
    rows, previous = [], bytearray(stride)
    for r in range(height):
        kind, line = (
            raw[r * (stride + 1)],
            bytearray(raw[r * (stride + 1) + 1 : (r + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        previous = line
    return np.frombuffer(b"".join(rows), ">u2").reshape(height, width, channels)


@pytest.mark.parametrize("name", ["rgb16.png", "gray16.png"])
def test_pngsuite_16_bit_samples_keep_their_most_significant_byte(name: str) -> None:
    data = (DATA / "png" / name).read_bytes()
    expected = (raw_png_samples(data) >> 8).astype(np.uint8)
    decoded = np.asarray(decode_photo(data, "png").image)
    assert np.array_equal(decoded.reshape(expected.shape), expected)


def test_alpha_is_flattened_on_white() -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (200, 10, 10, 255)  # opaque: unchanged
    rgba[0, 1] = (200, 10, 10, 0)  # transparent: white
    rgba[0, 2] = (0, 0, 0, 128)  # half black on white: 127
    rgba[1, :] = (0, 100, 200, 64)
    decoded = decode_photo(png_bytes(Image.fromarray(rgba)), "png")
    out = np.asarray(decoded.image)
    assert decoded.image.mode == "RGB" and decoded.notes == (FLATTENED,)
    assert tuple(out[0, 0]) == (200, 10, 10)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert tuple(out[0, 2]) == (127, 127, 127)
    expected = np.round((np.array([0, 100, 200]) * 64 + 255 * (255 - 64)) / 255)
    assert np.array_equal(out[1, 0], expected.astype(np.uint8))


def test_grey_with_alpha_stays_grey() -> None:
    la = Image.fromarray(np.array([[[10, 255], [10, 0]]], np.uint8))
    assert la.mode == "LA"
    decoded = decode_photo(png_bytes(la), "png")
    assert decoded.image.mode == "L"
    assert np.asarray(decoded.image).tolist() == [[10, 255]]


def test_palette_transparency_becomes_white() -> None:
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    decoded = decode_photo(png_bytes(palette, transparency=0), "png")
    assert decoded.notes == (FLATTENED,)
    assert np.asarray(decoded.image).tolist() == [[[255, 255, 255], [0, 0, 255]]]


def test_palette_trns_file_matches_pillow_compositing() -> None:
    data = (DATA / "png" / "palette8_trns.png").read_bytes()
    rgba = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA")).astype(np.uint32)
    alpha = rgba[..., 3:]
    expected = (rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
    assert np.array_equal(np.asarray(decode_photo(data, "png").image), expected.astype(np.uint8))


def test_xmp_orientation_is_applied_once() -> None:
    data = (DATA / "png" / "xmp_itxt_orientation3.png").read_bytes()
    decoded = decode_photo(data, "png")
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    assert np.array_equal(np.asarray(decoded.image), np.asarray(expected))
    assert decoded.icc_profile is not None and len(decoded.icc_profile) == 544


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_png_exif_chunk_orientation_is_applied(orientation: int) -> None:
    stored = corners_pattern(40, 30).transpose(
        {
            3: Image.Transpose.ROTATE_180,
            6: Image.Transpose.ROTATE_90,
            8: Image.Transpose.ROTATE_270,
        }[orientation]
    )
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode_photo(png_bytes(stored, exif=exif.tobytes()), "png")
    assert decoded.image.size == (40, 30)
    assert decoded.notes == (f"EXIF orientation {orientation} applied",)
    assert_corners(decoded.image)
    assert decoded.exif_tiff is not None and decoded.exif_tiff[:2] in (b"II", b"MM")


def test_imagemagick_raw_profile_exif_is_read() -> None:
    stored = corners_pattern(40, 30).transpose(Image.Transpose.ROTATE_90)  # shows upright at 6
    exif = Image.Exif()
    exif[0x0112] = 6
    exif.get_ifd(0x8769)[0x9003] = "2023:02:03 04:05:06"
    payload = b"Exif\x00\x00" + exif.tobytes()
    text = f"\nexif\n{len(payload):8d}\n" + payload.hex()
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", text, zip=True)
    decoded = decode_photo(png_bytes(stored, pnginfo=info), "png")
    assert decoded.image.size == (40, 30)
    assert_corners(decoded.image)
    assert exif_datetime_original(decoded.exif_tiff) is not None


def test_png_text_never_reaches_the_jpeg() -> None:
    for name in (
        "text_tEXt.png",
        "text_zTXt.png",
        "text_iTXt_en.png",
        "text_iTXt_ja.png",
        "exif_chunk_small.png",
    ):
        encoded = encode_jpeg(decode_photo((DATA / "png" / name).read_bytes(), "png"))
        for token in (b"Willem", b"Schaik", b"PngSuite", b"Freeware", "著作権".encode()):
            assert token not in encoded.jpeg, (name, token)


# ----------------------------------------------------------------------------- broken input


@pytest.mark.parametrize(
    ("path", "kind", "reason"),
    [
        ("broken/png_bad_idat_crc.png", "png", "PNG chunk IDAT at offset 49 has a bad CRC"),
        ("broken/png_bad_ihdr_crc.png", "png", "PNG chunk IHDR at offset 8 has a bad CRC"),
        ("broken/png_bad_signature.png", "png", "PNG signature is wrong"),
        ("broken/png_missing_idat.png", "png", "PNG has no IDAT chunk"),
        ("broken/truncated.heic", "heic", "HEIC truncated: box mdat at offset 607"),
        ("broken/corrupted.heic", "heic", "HEIC"),
        ("broken/zero_bytes.heic", "heic", "^empty file$"),
        ("broken/truncated_scan_data.jpg", "jpeg", "JPEG could not be decoded .*truncated"),
    ],
)
def test_broken_files_raise_input_error_with_a_reason(path: str, kind: str, reason: str) -> None:
    with pytest.raises(InputError, match=reason):
        decode_photo((DATA / path).read_bytes(), kind)


def test_truncated_png_names_the_chunk() -> None:
    data = (DATA / "png" / "rgb8.png").read_bytes()
    with pytest.raises(InputError, match="PNG truncated in chunk IDAT"):
        decode_photo(data[:80], "png")
    with pytest.raises(InputError, match="no IEND"):
        decode_photo(data[:-12], "png")


def test_png_with_valid_crcs_but_corrupt_zlib_is_an_input_error() -> None:
    header = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"\x78\x9c" + b"\xff" * 40)
        + png_chunk(b"IEND", b"")
    )
    with pytest.raises(InputError, match="PNG could not be decoded"):
        decode_photo(data, "png")


@pytest.mark.parametrize(
    "path",
    [
        "png/rgb8.png",
        "png/rgba16.png",
        "png/exif_chunk_small.png",
        "heic/sony_ilce7sm3_mono_exif_xmp_iptc.heic",
        "heic/apple_iphonexs_gps_empty_icc.heic",
    ],
)
def test_damaged_copies_give_pixels_or_input_error_never_another_exception(path: str) -> None:
    data = (DATA / path).read_bytes()
    kind = sniff(data)
    rng = np.random.default_rng(7)
    damaged = [data[:cut] for cut in (1, 8, 20, 33, len(data) // 3, len(data) // 2, len(data) - 1)]
    for _ in range(12):
        copy = bytearray(data)
        for position in rng.integers(0, len(data), size=4):
            copy[position] ^= 0xFF
        damaged.append(bytes(copy))
    for sample in damaged:
        try:
            decoded = decode_photo(sample, kind)
        except InputError as error:
            assert str(error)
        else:
            assert decoded.image.mode in ("RGB", "L")


def test_a_60000_square_png_is_refused_before_decoding() -> None:
    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + png_chunk(b"IEND", b"")
    )
    start = time.perf_counter()
    with pytest.raises(
        InputError, match="60000x60000 = 3600 megapixels, more than the 100 allowed"
    ):
        decode_photo(data, "png")
    assert time.perf_counter() - start < 0.5


def test_a_huge_jpeg_header_is_refused_before_decoding() -> None:
    sof = (
        b"\xff\xc0"
        + struct.pack(">HBHHB", 17, 8, 20000, 20000, 3)
        + b"\x01\x22\x00\x02\x11\x00\x03\x11\x00"
    )
    data = (
        b"\xff\xd8"
        + sof
        + b"\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
        + b"\x00" * 64
    )
    assert 20000 * 20000 > MAX_PIXELS
    start = time.perf_counter()
    with pytest.raises(InputError, match="more than the 100 allowed|too many pixels"):
        decode_photo(data, "jpeg")
    assert time.perf_counter() - start < 0.5


def test_decode_photo_does_not_take_dicom() -> None:
    with pytest.raises(ValueError):
        decode_photo(b"\x00" * 132, "dicom")


# ------------------------------------------------------------------------------------ HEIC


def test_iphone_heic_decodes_with_icc_exif_and_date() -> None:
    decoded = decode_photo(
        (DATA / "heic" / "apple_iphonexs_gps_empty_icc.heic").read_bytes(), "heic"
    )
    assert decoded.image.mode == "RGB" and decoded.image.size == (1025, 900)
    assert decoded.notes == ()
    assert decoded.icc_profile is not None and len(decoded.icc_profile) == 548
    assert decoded.exif_tiff is not None and decoded.exif_tiff[:2] in (b"II", b"MM")
    taken = exif_datetime_original(decoded.exif_tiff)
    assert taken is not None and (taken.year, taken.month, taken.day) == (2021, 7, 6)
    encoded = encode_jpeg(decoded)
    assert_clean_jpeg(encoded)
    assert b"iPhone" not in encoded.jpeg and b"Apple" not in encoded.jpeg


def test_monochrome_heic_stays_grey() -> None:
    decoded = decode_photo(
        (DATA / "heic" / "sony_ilce7sm3_mono_exif_xmp_iptc.heic").read_bytes(), "heic"
    )
    assert decoded.image.mode == "L" and decoded.image.size == (64, 64)
    encoded = encode_jpeg(decoded)
    assert Image.open(io.BytesIO(encoded.jpeg)).getbands() == ("L",)
    assert b"SONY" not in encoded.jpeg and b"ILCE" not in encoded.jpeg


def test_heic_rotation_is_applied_once_not_again_from_exif() -> None:
    # As an iPhone writes it: pixels stored sideways, HEIF irot 270 AND EXIF Orientation 6.
    stored = corners_pattern(64, 48).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    pillow_heif.from_pillow(stored).save(buffer, exif=exif.tobytes(), quality=90)
    data = buffer.getvalue()
    assert sniff(data) == "heic"
    decoded = decode_photo(data, "heic")
    assert decoded.image.size == (64, 48)
    assert_corners(decoded.image)
    assert decoded.notes == (
        "HEIF transforms applied by the decoder; EXIF orientation 6 not applied again",
    )


# ---------------------------------------------------------------------------------- encode


def test_encode_is_baseline_444_quality_95_without_any_metadata() -> None:
    data = (DATA / "png" / "xmp_itxt_orientation3.png").read_bytes()
    decoded = decode_photo(data, "png")
    encoded = encode_jpeg(decoded)
    assert_clean_jpeg(encoded)
    output = Image.open(io.BytesIO(encoded.jpeg))
    assert JpegImagePlugin.get_sampling(output) == 0 and output.info.get("progressive") is None
    assert encoded.quality == 95
    assert encoded.ratio == pytest.approx(326 * 268 * 3 / len(encoded.jpeg))
    assert encoded.notes == (
        f"encoded as baseline JPEG (Pillow, quality 95, 4:4:4), ratio {encoded.ratio:.1f}:1",
    )
    assert psnr(np.asarray(output), np.asarray(decoded.image)) >= 38
    assert b"xmp" not in encoded.jpeg.lower() and b"adobe" not in encoded.jpeg.lower()


def test_encode_drops_a_comment_left_in_the_image_info() -> None:
    image = corners_pattern(32, 32)
    image.info["comment"] = b"DOE^JANE"
    image.info["exif"] = b"Exif\x00\x00II*\x00"
    image.info["icc_profile"] = b"fake icc"
    encoded = encode_jpeg(
        Decoded(image=image, notes=(), exif_tiff=None, icc_profile=None), quality=80
    )
    assert_clean_jpeg(encoded)
    assert b"DOE^JANE" not in encoded.jpeg and encoded.quality == 80


def test_12_megapixel_png_to_jpeg_timing_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:3000, 0:4000]
    base = np.stack([x * 255 // 4000, y * 255 // 3000, (x + y) * 255 // 7000], -1).astype(np.int16)
    base += rng.integers(-6, 7, size=base.shape, dtype=np.int16)
    data = png_bytes(Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)), compress_level=1)
    start = time.perf_counter()
    decoded = decode_photo(data, "png")
    middle = time.perf_counter()
    encoded = encode_jpeg(decoded)
    end = time.perf_counter()
    assert decoded.image.size == (4000, 3000)
    with capsys.disabled():
        print(
            f"\n12 MP PNG ({len(data) / 1e6:.0f} MB): decode {middle - start:.2f} s,"
            f" JPEG encode {end - middle:.2f} s ({len(encoded.jpeg) / 1e6:.1f} MB,"
            f" ratio {encoded.ratio:.1f}:1)"
        )


def test_validate_enforces_the_pixel_limit_on_heic_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """The door's check reads the HEIC's declared size (no decode) against MAX_PIXELS."""
    import dicom_mapping.photo as photo_module

    data = (DATA / "heic" / "apple_iphonexs_gps_empty_icc.heic").read_bytes()  # 1025x900
    assert photo_module.validate(data) == "heic"
    monkeypatch.setattr(photo_module, "MAX_PIXELS", 1025 * 900 - 1)
    with pytest.raises(InputError, match="megapixels"):
        photo_module.validate(data)

"""Synthetic clinical-like photos, built in memory, carrying known metadata markers.

The leak tests rest on this module: every identifying field a camera, phone or editor may leave
in a photo is filled here with a distinct marker string (``MARKERS``), so a test can build a photo,
push it through the gateway and assert with ``markers_present`` that none of them survives
outside the scan data. Everything is synthetic and deterministic (fixed seeds, no clock).

What is built by hand rather than by Pillow, and why:

- The EXIF block is a small TIFF writer (``make_exif``): Pillow's ``Image.Exif`` cannot write
  IFD1 with a JPEG thumbnail, and we want exact control of every tag and of the byte order.
- JPEG metadata segments (APP0 JFIF/JFXX, APP1 EXIF/XMP, APP2 ICC, APP13 IPTC, APP14 Adobe,
  COM) are assembled around the DQT..EOI stream that Pillow encodes; Pillow decides only the
  entropy-coded image.
- PNG is written chunk by chunk (Adam7 interlacing, 16-bit RGB and text chunks after IDAT are
  beyond Pillow's writer). Pillow reads all of it back in the tests.

Orientation: every builder takes the image *as it should be seen* (upright). With
``orientation=o`` the pixels are stored transformed so that applying EXIF orientation ``o``
(``PIL.ImageOps.exif_transpose``) gives the upright image back, as a phone held sideways does:
``make_jpeg(skin_image(1200, 1600), orientation=6)`` stores 1600x1200 pixels tagged 6.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import Final, Literal

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "BINARY_MARKERS",
    "DATE_TIME_ORIGINAL",
    "GPS_LATITUDE",
    "GPS_LATITUDE_REF",
    "GPS_LONGITUDE",
    "GPS_LONGITUDE_REF",
    "HEIC_MARKER_FIELDS",
    "JPEG_MARKER_FIELDS",
    "MARKERS",
    "PNG_MARKER_FIELDS",
    "UPRIGHT_QUADRANTS",
    "asymmetric_pattern",
    "binary_markers_present",
    "fields_present",
    "jpeg_segments",
    "jpeg_sof",
    "make_exif",
    "make_heic",
    "make_jpeg",
    "make_png",
    "markers_present",
    "png_chunks",
    "quadrant_colours",
    "skin_image",
    "stored_for_orientation",
]

# --------------------------------------------------------------------------------------------
# Markers
# --------------------------------------------------------------------------------------------

#: field name -> marker. Upper-case letters and digits, at least 8 characters, unique, and none
#: a substring of another (checked by the tests), so a hit names exactly one field.
MARKERS: Final[dict[str, str]] = {
    # EXIF IFD0
    "Artist": "MKARTIST7Q",
    "ImageDescription": "MKIMGDESC3Z",
    "Copyright": "MKCOPYRT5A",
    "Make": "MKCAMMAKE4R",
    "Model": "MKCAMMODEL8T",
    "Software": "MKSOFTW3U",
    # EXIF Exif IFD
    "UserComment": "MKUSERCMT5K",
    "BodySerialNumber": "MKBODYSN2W",
    "LensSerialNumber": "MKLENSSN6P",
    "CameraOwnerName": "MKOWNER8E",
    "ImageUniqueID": "MKIMGUID9X",
    "MakerNote": "MKMKRNOTE3H",
    # EXIF GPS IFD (text fields; latitude/longitude are rationals: see BINARY_MARKERS)
    "GPSProcessingMethod": "MKGPSPROC7D",
    "GPSAreaInformation": "MKGPSAREA5M",
    "GPSMapDatum": "MKGPSDATUM2C",
    # other JPEG metadata
    "XMP": "MKXMPDC4V",  # XMP dc:creator
    "IPTC": "MKIPTCBY8L",  # IPTC 2:80 By-line in APP13 Photoshop 8BIM 0x0404
    "COM": "MKCOMSEG6J",  # COM segment of the main image
    "Thumbnail": "MKTHUMBCOM3B",  # COM segment inside the EXIF IFD1 thumbnail JPEG
    "JFIF_Thumbnail": "MKJFIFTHB7Y",  # the RGB pixel bytes of an APP0 JFIF thumbnail
    "JFXX_Thumbnail": "MKJFXXTHB4Q",  # COM inside the JPEG of an APP0 JFXX extension
    "Trailer": "MKTRAILER6V",  # for trailing_bytes after EOI (not written by default)
    # PNG
    "PNG_tEXt": "MKPNGTEXT7G",
    "PNG_iTXt": "MKPNGITXT4N",
    "PNG_zTXt": "MKPNGZTXT9S",  # deflated in the file: markers_present inflates to find it
    "PNG_eXIf": "MKPNGEXIF2F",  # DocumentName in the eXIf chunk's IFD0 (with the EXIF markers)
}

_EXIF_FIELDS: Final = (
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
)
_GPS_FIELDS: Final = ("GPSProcessingMethod", "GPSAreaInformation", "GPSMapDatum")

#: fields whose markers ``make_jpeg()`` writes with its defaults.
JPEG_MARKER_FIELDS: Final[tuple[str, ...]] = (
    *_EXIF_FIELDS,
    *_GPS_FIELDS,
    "XMP",
    "IPTC",
    "COM",
    "Thumbnail",
)
#: fields whose markers ``make_png()`` writes with its defaults.
PNG_MARKER_FIELDS: Final[tuple[str, ...]] = (
    *_EXIF_FIELDS,
    *_GPS_FIELDS,
    "XMP",
    "PNG_tEXt",
    "PNG_iTXt",
    "PNG_zTXt",
    "PNG_eXIf",
)
#: fields whose markers ``make_heic()`` writes with its defaults.
HEIC_MARKER_FIELDS: Final[tuple[str, ...]] = (*_EXIF_FIELDS, *_GPS_FIELDS, "XMP")

#: GPS position written by default: degrees, minutes, seconds as (numerator, denominator).
#: 47°22'12.34567" N, 8°32'54.32109" E: the seconds' numerators make the binary form distinctive.
GPS_LATITUDE_REF: Final = "N"
GPS_LATITUDE: Final[tuple[tuple[int, int], ...]] = ((47, 1), (22, 1), (1234567, 100000))
GPS_LONGITUDE_REF: Final = "E"
GPS_LONGITUDE: Final[tuple[tuple[int, int], ...]] = ((8, 1), (32, 1), (5432109, 100000))

#: field name -> the three packed RATIONALs as written, little-endian and big-endian.
BINARY_MARKERS: Final[dict[str, tuple[bytes, bytes]]] = {
    name: tuple(  # type: ignore[misc]
        struct.pack(order + "6I", *(n for pair in value for n in pair)) for order in "<>"
    )
    for name, value in (("GPSLatitude", GPS_LATITUDE), ("GPSLongitude", GPS_LONGITUDE))
}

#: EXIF DateTimeOriginal written by default (and IFD0 DateTime, DateTimeDigitized).
DATE_TIME_ORIGINAL: Final = "2026:11:20 10:31:02"

# --------------------------------------------------------------------------------------------
# Finding markers
# --------------------------------------------------------------------------------------------

# zlib header: CMF with CM=8 (deflate) and CINFO<=7; FCHECK makes CMF*256+FLG a multiple of 31.
_ZLIB_HEADER = re.compile(rb"(?=[\x08\x18\x28\x38\x48\x58\x68\x78][\x00-\xff])", re.DOTALL)
_MAX_INFLATE = 64 * 1024 * 1024


def _inflated_streams(data: bytes) -> Iterator[bytes]:
    """Every zlib stream that decodes from some offset of data (PNG zTXt, iCCP, compressed iTXt
    or a PNG smuggled into anything). Random bytes fail within a few bytes, so this is cheap."""
    view = memoryview(data)
    for match in _ZLIB_HEADER.finditer(data):
        i = match.start()
        if i + 2 > len(data):
            continue
        cmf, flg = data[i], data[i + 1]
        if (cmf * 256 + flg) % 31 or flg & 0x20:  # bad check bits, or a preset dictionary
            continue
        inflater = zlib.decompressobj()
        try:
            out = inflater.decompress(view[i:], _MAX_INFLATE)
        except zlib.error:
            continue
        if out:
            yield out


def _haystacks(data: bytes | bytearray | memoryview) -> list[bytes]:
    raw = bytes(data)
    return [raw.lower(), *(s.lower() for s in _inflated_streams(raw))]


def _needles(marker: str) -> tuple[bytes, ...]:
    m = marker.lower()
    return (m.encode("ascii"), m.encode("utf-16-le"), m.encode("utf-16-be"))


def markers_present(data: bytes | bytearray | memoryview) -> list[str]:
    """The MARKERS values found in data, in MARKERS order.

    Case-insensitive; found as ASCII/UTF-8 or UTF-16 (either byte order), in the bytes as they
    are or inside any zlib stream in them (a PNG zTXt is deflated).
    """
    return [MARKERS[field] for field in fields_present(data)]


def fields_present(data: bytes | bytearray | memoryview) -> list[str]:
    """Like markers_present, but the MARKERS keys (field names) of the markers found."""
    hay = _haystacks(data)
    return [
        field
        for field, marker in MARKERS.items()
        if any(n in h for h in hay for n in _needles(marker))
    ]


def binary_markers_present(data: bytes | bytearray | memoryview) -> list[str]:
    """Names of BINARY_MARKERS ("GPSLatitude", "GPSLongitude") whose packed rationals occur in
    data in either byte order."""
    raw = bytes(data)
    return [name for name, packed in BINARY_MARKERS.items() if any(p in raw for p in packed)]


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cell: int) -> np.ndarray:
    """Gaussian noise on a coarse grid of `cell` pixels, bicubically upsampled: blotches."""
    gw, gh = max(2, width // cell + 2), max(2, height // cell + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    up = Image.fromarray(grid, mode="F").resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(up, dtype=np.float32)


def skin_image(
    width: int, height: int, *, seed: int = 0, lesion: bool = True, ruler: bool = True
) -> Image.Image:
    """An RGB close-up of skin: tone with lighting gradient and blotchy texture, a darker
    irregular lesion with a reddish halo, and a millimetre ruler along the bottom edge.

    No text anywhere (nothing that would be a burned-in annotation). Same seed, same pixels.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yn, xn = yy / max(1, height - 1), xx / max(1, width - 1)

    tone = np.array([222.0, 174.0, 146.0], dtype=np.float32) * (1 + rng.uniform(-0.08, 0.05))
    light = 1.06 - 0.16 * yn + 0.06 * (xn - 0.5)  # lit from the top, a little from the right
    scale = max(width, height)
    texture = (
        1
        + 0.035 * _smooth_noise(rng, width, height, max(4, scale // 10))
        + 0.015 * _smooth_noise(rng, width, height, max(2, scale // 60))
    )
    img = tone[None, None, :] * (light * texture)[..., None]
    img += rng.normal(0.0, 1.6, (height, width, 1)).astype(np.float32)  # pores / sensor grain

    if lesion:
        cx = width * rng.uniform(0.38, 0.58)
        cy = height * rng.uniform(0.35, 0.55)
        radius = 0.14 * min(width, height) + 1
        theta = np.arctan2(yy - cy, xx - cx)
        wobble = np.ones_like(theta)
        for k in range(2, 7):  # irregular border: a few random harmonics
            wobble += rng.uniform(0.02, 0.09) * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
        dist = np.hypot(yy - cy, xx - cx) / (radius * wobble)
        edge = 0.12
        core = np.clip((1 + edge - dist) / (2 * edge), 0, 1)
        halo = np.clip((1.6 - dist) / 0.6, 0, 1) * (1 - core)
        mottle = 1 + 0.18 * _smooth_noise(rng, width, height, max(3, int(radius) // 4))
        lesion_rgb = (
            np.array([118.0, 66.0, 52.0], dtype=np.float32)[None, None, :] * mottle[..., None]
        )
        erythema = np.array([0.02, -0.10, -0.08], dtype=np.float32)[None, None, :]
        img = img * (1 + erythema * halo[..., None])
        img = img * (1 - core[..., None]) + lesion_rgb * core[..., None]

    out = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), mode="RGB")
    if ruler:
        _draw_ruler(out)
    return out


def _draw_ruler(image: Image.Image) -> None:
    width, height = image.size
    strip = max(6, height // 12)
    if strip >= height:
        return
    top = height - strip
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, top, width - 1, height - 1), fill=(238, 236, 226))
    draw.line((0, top, width - 1, top), fill=(60, 60, 60))
    mm = max(3, width // 150)  # one tick per "millimetre"
    for i, x in enumerate(range(mm, width - 1, mm), start=1):
        length = strip * (0.75 if i % 10 == 0 else 0.5 if i % 5 == 0 else 0.3)
        draw.line((x, height - 1, x, height - 1 - int(length)), fill=(20, 20, 20))


#: quadrant_colours() of an asymmetric_pattern() seen upright: top-left, top-right,
#: bottom-left, bottom-right.
UPRIGHT_QUADRANTS: Final = ("red", "green", "blue", "white")
_QUADRANT_RGB: Final = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "white": (255, 255, 255),
}


def asymmetric_pattern(width: int, height: int) -> Image.Image:
    """Four quadrants, red top-left, green top-right, blue bottom-left, white bottom-right.

    Four distinct corners: each of the eight EXIF orientations gives a different arrangement,
    and the four stay distinct in grey (luma 76, 150, 29, 255).
    """
    if width < 2 or height < 2:
        raise ValueError(f"pattern needs at least 2x2 pixels, got {width}x{height}")
    img = Image.new("RGB", (width, height), _QUADRANT_RGB["white"])
    mx, my = width // 2, height // 2
    img.paste(_QUADRANT_RGB["red"], (0, 0, mx, my))
    img.paste(_QUADRANT_RGB["green"], (mx, 0, width, my))
    img.paste(_QUADRANT_RGB["blue"], (0, my, mx, height))
    return img


def quadrant_colours(image: Image.Image) -> tuple[str, str, str, str]:
    """Nearest quadrant colour name at the centre of each quadrant of a (decoded, possibly
    transformed) asymmetric_pattern: (top-left, top-right, bottom-left, bottom-right).
    A grey image is matched by luma."""
    grey = image.mode in ("L", "I", "I;16", "F", "LA")
    img = image.convert("L" if grey else "RGB")
    w, h = img.size
    names: list[str] = []
    for fx, fy in ((0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)):
        box = (
            int(w * fx) - max(1, w // 16),
            int(h * fy) - max(1, h // 16),
            int(w * fx) + max(1, w // 16),
            int(h * fy) + max(1, h // 16),
        )
        sample = np.asarray(img.crop(box), dtype=np.float64).reshape(-1, 1 if grey else 3)
        mean = sample.mean(axis=0)
        refs = {
            name: np.array(
                [0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]] if grey else rgb, np.float64
            )
            for name, rgb in _QUADRANT_RGB.items()
        }
        names.append(min(refs, key=lambda n: float(np.abs(refs[n] - mean).sum())))
    return (names[0], names[1], names[2], names[3])


# EXIF orientation -> the transpose that displays the stored pixels (as ImageOps.exif_transpose).
_DISPLAY: Final[dict[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_INVERSE: Final[dict[Image.Transpose, Image.Transpose]] = {
    Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
}


def stored_for_orientation(upright: Image.Image, orientation: int | None) -> Image.Image:
    """The pixels to store with EXIF `orientation` so that a viewer honouring it shows `upright`."""
    if orientation is None or orientation == 1:
        return upright.copy()
    if orientation not in _DISPLAY:
        raise ValueError(f"EXIF orientation must be 1..8, got {orientation}")
    display = _DISPLAY[orientation]
    return upright.transpose(_INVERSE.get(display, display))


def _default_image(image: Image.Image | None, width: int, height: int, seed: int) -> Image.Image:
    if image is not None:
        out = image.copy()
        out.info = {}  # Pillow writes info["comment"] back as a COM: never let it in by accident
        return out
    return skin_image(width, height, seed=seed)


# --------------------------------------------------------------------------------------------
# EXIF (TIFF) writer
# --------------------------------------------------------------------------------------------

_ASCII, _SHORT, _LONG, _RATIONAL, _UNDEFINED, _BYTE = 2, 3, 4, 5, 7, 1
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_JPEG_IF, _JPEG_IF_LENGTH = 0x0201, 0x0202
_ASCII_CHARSET = b"ASCII\x00\x00\x00"  # EXIF character code prefix for UNDEFINED text


class _Ifd:
    """One TIFF IFD: tag -> (type, count, value bytes in the file's byte order)."""

    def __init__(self, order: str) -> None:
        self.order = order
        self.entries: dict[int, tuple[int, int, bytes]] = {}

    def ascii(self, tag: int, text: str) -> None:
        raw = text.encode("ascii") + b"\x00"
        self.entries[tag] = (_ASCII, len(raw), raw)

    def undefined(self, tag: int, raw: bytes) -> None:
        self.entries[tag] = (_UNDEFINED, len(raw), raw)

    def byte(self, tag: int, *values: int) -> None:
        self.entries[tag] = (_BYTE, len(values), bytes(values))

    def short(self, tag: int, *values: int) -> None:
        self.entries[tag] = (
            _SHORT,
            len(values),
            struct.pack(f"{self.order}{len(values)}H", *values),
        )

    def long(self, tag: int, *values: int) -> None:
        self.entries[tag] = (
            _LONG,
            len(values),
            struct.pack(f"{self.order}{len(values)}I", *values),
        )

    def rational(self, tag: int, *pairs: tuple[int, int]) -> None:
        flat = [n for pair in pairs for n in pair]
        self.entries[tag] = (_RATIONAL, len(pairs), struct.pack(f"{self.order}{len(flat)}I", *flat))

    def size(self) -> int:
        data = sum(len(v) + len(v) % 2 for _, _, v in self.entries.values() if len(v) > 4)
        return 2 + 12 * len(self.entries) + 4 + data

    def serialize(self, offset: int, next_ifd: int) -> bytes:
        o = self.order
        head = [struct.pack(f"{o}H", len(self.entries))]
        data: list[bytes] = []
        data_at = offset + 2 + 12 * len(self.entries) + 4
        for tag in sorted(self.entries):
            kind, count, value = self.entries[tag]
            if len(value) <= 4:
                field = value.ljust(4, b"\x00")
            else:
                field = struct.pack(f"{o}I", data_at)
                padded = value + b"\x00" * (len(value) % 2)
                data.append(padded)
                data_at += len(padded)
            head.append(struct.pack(f"{o}HHI", tag, kind, count) + field)
        head.append(struct.pack(f"{o}I", next_ifd))
        out = b"".join(head + data)
        assert len(out) == self.size()
        return out


def make_exif(
    *,
    markers: bool = True,
    gps: bool = True,
    orientation: int | None = None,
    date_time_original: str | None = DATE_TIME_ORIGINAL,
    thumbnail: bytes | None = None,
    pixel_size: tuple[int, int] | None = None,
    document_name: str | None = None,
    byte_order: Literal["II", "MM"] = "II",
) -> bytes:
    """A TIFF/EXIF structure (starts "II*\\0" or "MM\\0*"; no "Exif\\0\\0" prefix).

    IFD0: resolution, Make, Model, Artist, ImageDescription, Copyright, Software, DateTime,
    Orientation, Exif and GPS IFD pointers. Exif IFD: ExifVersion, DateTimeOriginal,
    DateTimeDigitized, UserComment, MakerNote, ImageUniqueID, CameraOwnerName, BodySerialNumber,
    LensSerialNumber, PixelX/YDimension. GPS IFD: version, latitude/longitude with refs,
    altitude, GPSMapDatum, GPSProcessingMethod, GPSAreaInformation, GPSDateStamp. IFD1 (when a
    thumbnail is given): Compression 6 and JPEGInterchangeFormat/-Length, thumbnail after it.
    Marker fields only with markers=True; dates only with date_time_original.
    """
    if byte_order not in ("II", "MM"):
        raise ValueError(f"byte order must be II or MM, got {byte_order!r}")
    if orientation is not None and not 1 <= orientation <= 8:
        raise ValueError(f"EXIF orientation must be 1..8, got {orientation}")
    o = "<" if byte_order == "II" else ">"
    m = MARKERS

    ifd0 = _Ifd(o)
    ifd0.rational(0x011A, (72, 1))  # XResolution
    ifd0.rational(0x011B, (72, 1))  # YResolution
    ifd0.short(0x0128, 2)  # ResolutionUnit: inch
    if orientation is not None:
        ifd0.short(0x0112, orientation)
    if document_name is not None:
        ifd0.ascii(0x010D, document_name)
    if markers:
        ifd0.ascii(0x010E, m["ImageDescription"])
        ifd0.ascii(0x010F, m["Make"])
        ifd0.ascii(0x0110, m["Model"])
        ifd0.ascii(0x0131, m["Software"])
        ifd0.ascii(0x013B, m["Artist"])
        ifd0.ascii(0x8298, m["Copyright"])
        ifd0.short(0x0213, 1)  # YCbCrPositioning: centred
    if date_time_original is not None:
        ifd0.ascii(0x0132, date_time_original)  # DateTime

    exif = _Ifd(o)
    if markers or date_time_original is not None:
        exif.undefined(0x9000, b"0232")  # ExifVersion
        exif.undefined(0x9101, b"\x01\x02\x03\x00")  # ComponentsConfiguration: Y Cb Cr
        exif.undefined(0xA000, b"0100")  # FlashpixVersion
        exif.short(0xA001, 1)  # ColorSpace: sRGB
        if pixel_size is not None:
            exif.long(0xA002, pixel_size[0])  # PixelXDimension
            exif.long(0xA003, pixel_size[1])  # PixelYDimension
    if date_time_original is not None:
        exif.ascii(0x9003, date_time_original)  # DateTimeOriginal
        exif.ascii(0x9004, date_time_original)  # DateTimeDigitized
    if markers:
        exif.undefined(0x9286, _ASCII_CHARSET + m["UserComment"].encode())
        # A MakerNote is an opaque vendor blob; this one starts with the marker.
        exif.undefined(0x927C, m["MakerNote"].encode() + b"\x00\x01\x02\x03\xfe\xff" * 4)
        exif.ascii(0xA420, m["ImageUniqueID"])
        exif.ascii(0xA430, m["CameraOwnerName"])
        exif.ascii(0xA431, m["BodySerialNumber"])
        exif.ascii(0xA435, m["LensSerialNumber"])

    gps_ifd = _Ifd(o)
    if gps:
        gps_ifd.byte(0x0000, 2, 3, 0, 0)  # GPSVersionID
        gps_ifd.ascii(0x0001, GPS_LATITUDE_REF)
        gps_ifd.rational(0x0002, *GPS_LATITUDE)
        gps_ifd.ascii(0x0003, GPS_LONGITUDE_REF)
        gps_ifd.rational(0x0004, *GPS_LONGITUDE)
        gps_ifd.byte(0x0005, 0)  # GPSAltitudeRef: above sea level
        gps_ifd.rational(0x0006, (40817, 100))  # GPSAltitude 408.17 m
        gps_ifd.ascii(0x0012, m["GPSMapDatum"])
        gps_ifd.undefined(0x001B, _ASCII_CHARSET + m["GPSProcessingMethod"].encode())
        gps_ifd.undefined(0x001C, _ASCII_CHARSET + m["GPSAreaInformation"].encode())
        if date_time_original is not None:
            gps_ifd.ascii(0x001D, date_time_original[:10])  # GPSDateStamp

    ifd1 = _Ifd(o)
    if thumbnail is not None:
        ifd1.short(0x0103, 6)  # Compression: JPEG (old-style, i.e. the EXIF thumbnail)
        ifd1.rational(0x011A, (72, 1))
        ifd1.rational(0x011B, (72, 1))
        ifd1.short(0x0128, 2)
        ifd1.long(_JPEG_IF, 0)  # patched below
        ifd1.long(_JPEG_IF_LENGTH, len(thumbnail))

    # Pointers take 4 bytes inline, so sizes are known before the offsets are.
    if exif.entries:
        ifd0.long(_EXIF_IFD, 0)
    if gps_ifd.entries:
        ifd0.long(_GPS_IFD, 0)
    off0 = 8
    off_exif = off0 + ifd0.size()
    off_gps = off_exif + (exif.size() if exif.entries else 0)
    off_ifd1 = off_gps + (gps_ifd.size() if gps_ifd.entries else 0)
    off_thumb = off_ifd1 + (ifd1.size() if ifd1.entries else 0)
    if exif.entries:
        ifd0.long(_EXIF_IFD, off_exif)
    if gps_ifd.entries:
        ifd0.long(_GPS_IFD, off_gps)
    if thumbnail is not None:
        ifd1.long(_JPEG_IF, off_thumb)

    parts = [
        byte_order.encode() + struct.pack(f"{o}HI", 42, off0),
        ifd0.serialize(off0, off_ifd1 if ifd1.entries else 0),
    ]
    if exif.entries:
        parts.append(exif.serialize(off_exif, 0))
    if gps_ifd.entries:
        parts.append(gps_ifd.serialize(off_gps, 0))
    if ifd1.entries:
        parts.append(ifd1.serialize(off_ifd1, 0))
        parts.append(thumbnail or b"")
    return b"".join(parts)


# --------------------------------------------------------------------------------------------
# JPEG
# --------------------------------------------------------------------------------------------

_SOI, _EOI, _SOS, _COM = 0xD8, 0xD9, 0xDA, 0xFE
_APP0, _APP1, _APP2, _APP13, _APP14 = 0xE0, 0xE1, 0xE2, 0xED, 0xEE
_SOF_MARKERS: Final = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB})
_SUBSAMPLINGS: Final = ("4:4:4", "4:2:2", "4:2:0")
_XMP_HEADER: Final = b"http://ns.adobe.com/xap/1.0/\x00"


def _segment(marker: int, payload: bytes) -> bytes:
    if len(payload) + 2 > 0xFFFF:
        raise ValueError(f"JPEG segment 0x{marker:02X} too long: {len(payload)} bytes")
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) of each segment from SOI to the first SOS included (SOI with b"").

    A test helper, independent of the gateway's own parser.
    """
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG: no SOI")
    out: list[tuple[int, bytes]] = [(_SOI, b"")]
    i = 2
    while i < len(data):
        if data[i] != 0xFF:
            raise ValueError(f"JPEG: expected a marker at offset {i}, found 0x{data[i]:02X}")
        while data[i + 1] == 0xFF:  # fill bytes
            i += 1
        marker = data[i + 1]
        if marker == _EOI:
            out.append((marker, b""))
            break
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        out.append((marker, data[i + 4 : i + 2 + length]))
        i += 2 + length
        if marker == _SOS:
            break
    return out


def jpeg_sof(data: bytes) -> tuple[int, int, int, int, list[tuple[int, int, int]]]:
    """(SOF marker, precision, width, height, [(component id, h, v), ...]) from the frame header."""
    for marker, payload in jpeg_segments(data):
        if marker in _SOF_MARKERS:
            precision, height, width, n = struct.unpack(">BHHB", payload[:6])
            comps = [
                (payload[6 + 3 * k], payload[7 + 3 * k] >> 4, payload[7 + 3 * k] & 0x0F)
                for k in range(n)
            ]
            return marker, precision, width, height, comps
    raise ValueError("JPEG: no SOF segment")


def _encode_core(
    image: Image.Image,
    *,
    quality: int,
    subsampling: str | None,
    progressive: bool,
    keep_rgb: bool,
    restart_interval: int | None,
) -> tuple[dict[int, bytes], bytes]:
    """Pillow encodes the image; returns its APP0/APP14 payloads and the stream from the first
    table segment (DQT...) to EOI. Any other APPn/COM Pillow wrote is dropped."""
    params: dict[str, object] = {"quality": quality, "progressive": progressive}
    if subsampling is not None and image.mode != "L":
        params["subsampling"] = subsampling
    if keep_rgb:
        params["keep_rgb"] = True
    if restart_interval:
        params["restart_marker_blocks"] = restart_interval
    clean = image.copy()
    clean.info = {}
    buf = io.BytesIO()
    clean.save(buf, "JPEG", **params)
    data = buf.getvalue()
    kept: dict[int, bytes] = {}
    i = 2
    while True:
        marker = data[i + 1]
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if not (0xE0 <= marker <= 0xEF or marker == _COM):
            return kept, data[i:]
        if marker in (_APP0, _APP14):
            kept[marker] = data[i + 4 : i + 2 + length]
        i += 2 + length


def _small_jpeg(image: Image.Image, comment: str) -> bytes:
    """A thumbnail-sized baseline JPEG (no JFIF) with a COM holding `comment`."""
    thumb = image.convert("RGB")
    thumb.thumbnail((160, 160), Image.Resampling.LANCZOS)
    _, core = _encode_core(
        thumb,
        quality=75,
        subsampling="4:2:0",
        progressive=False,
        keep_rgb=False,
        restart_interval=None,
    )
    return b"\xff\xd8" + _segment(_COM, comment.encode()) + core


def _xmp_packet(creator: str) -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">\n'
        f"   <dc:creator><rdf:Seq><rdf:li>{creator}</rdf:li></rdf:Seq></dc:creator>\n"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode()


def _iptc_app13(by_line: str) -> bytes:
    """APP13 "Photoshop 3.0" with one 8BIM 0x0404 (IPTC-NAA) resource: 2:00, 2:80 By-line."""
    value = by_line.encode()
    iptc = (
        b"\x1c\x02\x00" + struct.pack(">H", 2) + struct.pack(">H", 4)  # record version 4
        + b"\x1c\x02\x50" + struct.pack(">H", len(value)) + value  # 2:80 By-line
    )  # fmt: skip
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(iptc))
    resource += iptc + b"\x00" * (len(iptc) % 2)
    return b"Photoshop 3.0\x00" + resource


def _adobe_app14(transform: int) -> bytes:
    # "Adobe", DCTEncodeVersion 100, APP14Flags0, APP14Flags1, ColorTransform
    return b"Adobe" + struct.pack(">HHHB", 100, 0, 0, transform)


def _srgb_icc() -> bytes:
    """LittleCMS's built-in sRGB profile, with its creation date (header bytes 24..35) fixed so
    the output is deterministic; its profile ID is zero, so no checksum to update. It carries no
    marker: the gateway keeps an ICC profile as (0028,2000) ICC Profile on purpose."""
    from PIL import ImageCms

    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    icc[24:36] = struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
    return bytes(icc)


def make_jpeg(
    image: Image.Image | None = None,
    *,
    width: int = 640,
    height: int = 480,
    quality: int = 90,
    subsampling: Literal["4:4:4", "4:2:2", "4:2:0"] | None = None,
    mode: Literal["RGB", "L"] = "RGB",
    progressive: bool = False,
    orientation: int | None = None,
    exif_markers: bool = True,
    gps: bool = True,
    thumbnail: bool = True,
    xmp: bool = True,
    iptc: bool = True,
    comment: bool = True,
    icc: bool = False,
    date_time_original: str | None = DATE_TIME_ORIGINAL,
    adobe_rgb: bool = False,
    trailing_bytes: bytes = b"",
    jfif: bool | None = None,
    adobe_ycbcr: bool = False,
    jfif_thumbnail: bool = False,
    jfxx_thumbnail: bool = False,
    restart_interval: int | None = None,
    exif_byte_order: Literal["II", "MM"] = "II",
    extra_segments: Sequence[tuple[int, bytes]] = (),
    seed: int = 0,
) -> bytes:
    """A JPEG of `image` (default: skin_image(width, height, seed=seed)) with metadata.

    Segment order: SOI, APP0 JFIF, APP0 JFXX, APP1 EXIF, APP1 XMP, APP2 ICC, APP13 IPTC,
    APP14 Adobe, extra_segments, COM, then Pillow's DQT/SOF/DHT/[DRI]/SOS...EOI, trailing_bytes.

    - image is the upright picture; with `orientation` the stored pixels are transformed so that
      EXIF orientation shows it upright (see stored_for_orientation). width/height are ignored
      when an image is given.
    - subsampling: None means 4:2:0 for YCbCr and 4:4:4 for adobe_rgb (the only one libjpeg
      accepts for RGB); read it back from the SOF with jpeg_sof.
    - mode "L": one component (SOF with one component, JFIF, no APP14).
    - The EXIF APP1 is written when any of exif_markers, gps, thumbnail, orientation or
      date_time_original asks for something in it; all off gives no EXIF at all.
    - adobe_rgb: components stored as R, G, B (no YCbCr transform) with APP14 Adobe transform 0
      and no JFIF (JFIF would make decoders assume YCbCr). Nothing to do with the Adobe RGB
      colour space. adobe_ycbcr: a YCbCr JPEG that also carries APP14 Adobe transform 1.
    - jfif: None = a JFIF APP0 unless adobe_rgb; False drops it, as phone cameras write.
    - jfif_thumbnail: the JFIF APP0 carries an uncompressed RGB thumbnail whose pixel bytes
      are the JFIF_Thumbnail marker. jfxx_thumbnail: an APP0 JFXX extension with a JPEG
      thumbnail whose COM holds the JFXX_Thumbnail marker.
    - restart_interval: DRI with that many MCUs between RST markers.
    - extra_segments: (marker, payload) pairs inserted before COM, e.g. (0xE4, b"...").
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"JPEG mode must be RGB or L, got {mode!r}")
    if subsampling is not None and subsampling not in _SUBSAMPLINGS:
        raise ValueError(f"subsampling must be one of {_SUBSAMPLINGS}, got {subsampling!r}")
    if adobe_rgb and (mode == "L" or adobe_ycbcr):
        raise ValueError("adobe_rgb needs mode RGB and excludes adobe_ycbcr")
    if adobe_rgb and subsampling not in (None, "4:4:4"):
        raise ValueError(f"adobe_rgb is 4:4:4 only (libjpeg refuses {subsampling} for RGB)")
    if adobe_ycbcr and mode == "L":
        raise ValueError("adobe_ycbcr needs mode RGB")
    if icc and mode == "L":
        raise ValueError("icc=True embeds an sRGB profile: needs mode RGB")

    upright = _default_image(image, width, height, seed).convert(mode)
    stored = stored_for_orientation(upright, orientation)
    if subsampling is None:
        subsampling = "4:4:4" if adobe_rgb else "4:2:0"
    kept, core = _encode_core(
        stored,
        quality=quality,
        subsampling=subsampling,
        progressive=progressive,
        keep_rgb=adobe_rgb,
        restart_interval=restart_interval,
    )

    segments: list[bytes] = []
    write_jfif = not adobe_rgb if jfif is None else jfif
    if write_jfif:
        if jfif_thumbnail:
            pixels = MARKERS["JFIF_Thumbnail"].encode()
            pixels += b"\x00" * (-len(pixels) % 3)
            # JFIF 1.02: version, units 0 (aspect ratio), density 1:1, Xthumb, Ythumb, RGB bytes
            payload = b"JFIF\x00" + struct.pack(">BBBHHBB", 1, 2, 0, 1, 1, len(pixels) // 3, 1)
            segments.append(_segment(_APP0, payload + pixels))
        else:
            segments.append(_segment(_APP0, kept.get(_APP0) or _jfif_payload()))
    if jfxx_thumbnail:
        jfxx = _small_jpeg(stored, MARKERS["JFXX_Thumbnail"])
        segments.append(_segment(_APP0, b"JFXX\x00\x10" + jfxx))  # 0x10: JPEG-coded thumbnail

    thumb = _small_jpeg(stored, MARKERS["Thumbnail"]) if thumbnail else None
    if exif_markers or gps or thumb or orientation is not None or date_time_original:
        tiff = make_exif(
            markers=exif_markers,
            gps=gps,
            orientation=orientation,
            date_time_original=date_time_original,
            thumbnail=thumb,
            pixel_size=stored.size,
            byte_order=exif_byte_order,
        )
        segments.append(_segment(_APP1, b"Exif\x00\x00" + tiff))
    if xmp:
        segments.append(_segment(_APP1, _XMP_HEADER + _xmp_packet(MARKERS["XMP"])))
    if icc:
        segments.append(_segment(_APP2, b"ICC_PROFILE\x00\x01\x01" + _srgb_icc()))
    if iptc:
        segments.append(_segment(_APP13, _iptc_app13(MARKERS["IPTC"])))
    if adobe_rgb:
        segments.append(_segment(_APP14, kept.get(_APP14) or _adobe_app14(0)))
    elif adobe_ycbcr:
        segments.append(_segment(_APP14, _adobe_app14(1)))
    segments.extend(_segment(marker, payload) for marker, payload in extra_segments)
    if comment:
        segments.append(_segment(_COM, MARKERS["COM"].encode()))
    return b"\xff\xd8" + b"".join(segments) + core + trailing_bytes


def _jfif_payload() -> bytes:
    return b"JFIF\x00" + struct.pack(">BBBHHBB", 1, 1, 0, 1, 1, 0, 0)


# --------------------------------------------------------------------------------------------
# PNG
# --------------------------------------------------------------------------------------------

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
# mode -> (colour type, bit depth, channels)
_PNG_MODES: Final[dict[str, tuple[int, int, int]]] = {
    "L": (0, 8, 1),
    "LA": (4, 8, 2),
    "RGB": (2, 8, 3),
    "RGBA": (6, 8, 4),
    "P": (3, 8, 1),
    "I;16": (0, 16, 1),
    "LA16": (4, 16, 2),
    "RGB16": (2, 16, 3),
    "RGBA16": (6, 16, 4),
}
_ADAM7: Final = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                 (0, 1, 1, 2))  # fmt: skip


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of each chunk; raises ValueError on a bad signature or CRC."""
    if data[:8] != _PNG_SIGNATURE:
        raise ValueError("not a PNG: bad signature")
    out: list[tuple[bytes, bytes]] = []
    i = 8
    while i < len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        kind, body = data[i + 4 : i + 8], data[i + 8 : i + 8 + length]
        (crc,) = struct.unpack(">I", data[i + 8 + length : i + 12 + length])
        if crc != zlib.crc32(kind + body):
            raise ValueError(f"PNG chunk {kind!r} at offset {i}: bad CRC")
        out.append((kind, body))
        i += 12 + length
        if kind == b"IEND":
            break
    return out


def _filter_rows(rows: np.ndarray, bpp: int, paeth: bool) -> bytes:
    """Prefix each row of a (h, rowbytes) uint8 array with its PNG filter (0 None or 4 Paeth)."""
    h = rows.shape[0]
    if not paeth:
        return np.hstack([np.zeros((h, 1), np.uint8), rows]).tobytes()
    x = rows.astype(np.int16)
    a = np.zeros_like(x)
    a[:, bpp:] = x[:, :-bpp]
    b = np.zeros_like(x)
    b[1:] = x[:-1]
    c = np.zeros_like(x)
    c[1:, bpp:] = x[:-1, :-bpp]
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    filtered = ((x - pred) & 0xFF).astype(np.uint8)
    return np.hstack([np.full((h, 1), 4, np.uint8), filtered]).tobytes()


def _png_pixels(image: Image.Image, mode: str, seed: int) -> tuple[np.ndarray, bytes | None]:
    """(h, w, channels) array of uint8 or big-endian uint16, and PLTE data for mode P.

    16-bit modes: the high byte of each sample is the 8-bit image, the low byte seeded noise, so
    a correct reduction to 8 bits (v >> 8) gives the 8-bit image back exactly.
    """
    _, depth, channels = _PNG_MODES[mode]
    base = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    if mode == "P":
        pal = image if image.mode == "P" else image.convert("RGB").quantize(256)
        palette = pal.getpalette() or []
        used = int(np.asarray(pal).max()) + 1
        return np.asarray(pal, np.uint8)[..., None], bytes(palette[: 3 * used])
    if channels in (2, 4) and image.mode not in ("LA", "RGBA", "PA"):
        # no alpha given: opaque, with a transparent square in the top-right corner
        alpha = Image.new("L", image.size, 255)
        w, h = image.size
        alpha.paste(0, (w - max(1, w // 8), 0, w, max(1, h // 8)))
        img = image.convert(base[:-1])
        img.putalpha(alpha)
    else:
        img = image.convert(base)
    arr = np.asarray(img, np.uint8).reshape(img.height, img.width, channels)
    if depth == 8:
        return arr, None
    low = np.random.default_rng(seed + 16).integers(0, 256, arr.shape, dtype=np.uint16)
    wide = arr.astype(np.uint16) << 8 | low
    if channels in (2, 4):
        wide[..., -1] = arr[..., -1].astype(np.uint16) * 257  # opaque stays 65535
    return wide.astype(">u2"), None


def make_png(
    image: Image.Image | None = None,
    *,
    width: int = 640,
    height: int = 480,
    mode: str = "RGB",
    interlaced: bool = False,
    text_chunks: bool = True,
    exif_chunk: bool = True,
    time_chunk: bool = True,
    xmp: bool = True,
    gps: bool = True,
    orientation: int | None = None,
    date_time_original: str | None = DATE_TIME_ORIGINAL,
    seed: int = 0,
) -> bytes:
    """A PNG of `image` (default: skin_image(width, height, seed=seed)), written chunk by chunk.

    mode: L, LA, RGB, RGBA, P (PLTE), I;16, LA16, RGB16, RGBA16 (16-bit: high byte = the 8-bit
    image). Alpha, when the image has none: opaque but a transparent top-right square.
    interlaced: Adam7. Rows are Paeth-filtered (None for P).

    Chunks: IHDR, [eXIf], [tEXt Author], [zTXt Comment], [PLTE], IDAT..., [iTXt Description],
    [iTXt XML:com.adobe.xmp], [tIME], IEND: two text chunks and tIME come after IDAT on purpose,
    where a sanitizer that stops at the image data would miss them.
    - exif_chunk: eXIf with the EXIF markers, GPS (if gps), DateTimeOriginal and DocumentName =
      the PNG_eXIf marker. With exif_chunk=False an orientation still gets an eXIf of its own.
    - orientation: as make_jpeg (image is upright; stored pixels transformed).
    - text_chunks: tEXt, zTXt (deflated) and iTXt with the PNG_* markers. xmp: iTXt
      "XML:com.adobe.xmp" with the XMP marker.
    - time_chunk: tIME 2026-11-20 10:31:02.
    """
    if mode not in _PNG_MODES:
        raise ValueError(f"PNG mode must be one of {sorted(_PNG_MODES)}, got {mode!r}")
    upright = _default_image(image, width, height, seed)
    stored = stored_for_orientation(upright, orientation)
    pixels, palette = _png_pixels(stored, mode, seed)
    colour, depth, channels = _PNG_MODES[mode]
    h, w = pixels.shape[:2]
    bpp = channels * depth // 8

    if interlaced:
        raw = b""
        for x0, y0, dx, dy in _ADAM7:
            sub = pixels[y0::dy, x0::dx]
            if sub.size:
                rows = np.ascontiguousarray(sub).view(np.uint8).reshape(sub.shape[0], -1)
                raw += _filter_rows(rows, bpp, paeth=mode != "P")
    else:
        rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(h, -1)
        raw = _filter_rows(rows, bpp, paeth=mode != "P")
    compressed = zlib.compress(raw, 9)

    before: list[bytes] = []
    after: list[bytes] = []
    if exif_chunk or orientation is not None:
        tiff = make_exif(
            markers=exif_chunk,
            gps=gps and exif_chunk,
            orientation=orientation,
            date_time_original=date_time_original if exif_chunk else None,
            pixel_size=(w, h),
            document_name=MARKERS["PNG_eXIf"] if exif_chunk else None,
        )
        before.append(_chunk(b"eXIf", tiff))
    if text_chunks:
        before.append(_chunk(b"tEXt", b"Author\x00" + MARKERS["PNG_tEXt"].encode("latin-1")))
        ztxt = f"synthetic photo {MARKERS['PNG_zTXt']}".encode("latin-1")
        before.append(_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(ztxt, 9)))
        # keyword, compression flag 0, method 0, language tag, translated keyword, UTF-8 text
        itxt = b"Description\x00\x00\x00en\x00Beschreibung\x00" + MARKERS["PNG_iTXt"].encode()
        after.append(_chunk(b"iTXt", itxt))
    if xmp:
        after.append(
            _chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + _xmp_packet(MARKERS["XMP"]))
        )
    if time_chunk:
        after.append(_chunk(b"tIME", struct.pack(">HBBBBB", 2026, 11, 20, 10, 31, 2)))

    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 1 if interlaced else 0)
    idat = [_chunk(b"IDAT", compressed[i : i + 65536]) for i in range(0, len(compressed), 65536)]
    plte = [_chunk(b"PLTE", palette)] if palette is not None else []
    return b"".join(
        [_PNG_SIGNATURE, _chunk(b"IHDR", ihdr), *before, *plte, *idat, *after, _chunk(b"IEND", b"")]
    )


# --------------------------------------------------------------------------------------------
# HEIC
# --------------------------------------------------------------------------------------------


def make_heic(
    image: Image.Image | None = None,
    *,
    width: int = 640,
    height: int = 480,
    quality: int = 80,
    orientation: int | None = None,
    exif_markers: bool = True,
    gps: bool = True,
    xmp: bool = True,
    date_time_original: str | None = DATE_TIME_ORIGINAL,
    seed: int = 0,
) -> bytes:
    """A HEIC (HEVC, via pillow-heif) of `image` with EXIF (markers, GPS, dates) and XMP.

    With `orientation`, pixels are stored transformed as in make_jpeg and pillow-heif writes both
    the EXIF Orientation tag and the matching HEIF `irot`/`imir` transform: libheif applies the
    transform on decode, so honouring the EXIF tag as well would turn the photo twice.
    """
    import pillow_heif

    upright = _default_image(image, width, height, seed).convert("RGB")
    stored = stored_for_orientation(upright, orientation)
    params: dict[str, object] = {"quality": quality}
    if exif_markers or gps or orientation is not None or date_time_original:
        params["exif"] = b"Exif\x00\x00" + make_exif(
            markers=exif_markers,
            gps=gps,
            orientation=orientation,
            date_time_original=date_time_original,
            pixel_size=stored.size,
        )
    if xmp:
        params["xmp"] = _xmp_packet(MARKERS["XMP"])
    heif = pillow_heif.from_pillow(stored)
    buf = io.BytesIO()
    heif.save(buf, **params)
    return buf.getvalue()


def huge_jpeg(jpeg_bytes: bytes, width: int = 60000, height: int = 60000) -> bytes:
    """The JPEG with its SOF rewritten to declare width x height (the scan data is unchanged)."""
    data = bytearray(jpeg_bytes)
    i = 2
    while i < len(data):
        marker = data[i + 1]
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", data, i + 5, height, width)
            return bytes(data)
        i += 2 + length
    raise AssertionError("no SOF")

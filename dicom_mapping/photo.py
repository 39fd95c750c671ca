"""What a photo is (sniffing), and PNG/HEIC (or JPEG) → upright 8-bit pixels → one clean JPEG.

README "DICOM output": PNG and HEIC become one JPEG at a recorded quality; 16-bit input is reduced
to 8 bits (recorded), because Secondary Capture and VL Photographic colour images are 8-bit
(PS3.3 A.8.1.3 / A.32.4.3.2: Bits Allocated 8). The JPEG written here carries no metadata at all:
the ICC profile goes to (0028,2000) through the caller, EXIF and PNG text never travel.

Choices, so that the same input always gives the same output:
- Alpha is flattened onto WHITE: a transparent background shows as white in the browsers and
  document viewers the photo came from (and as the paper it is printed on); black would hide
  dark edges of a lesion. It is recorded in the notes.
- The JPEG is 4:4:4 (no chroma subsampling) at quality 95. 4:2:0 is the camera default, but it
  halves colour resolution; colour detail is clinically relevant (erythema margins, wound
  edges) and PNG sources are often screenshots with sharp colour edges. It costs ~30 % more bytes.
- 16-bit samples keep their most significant byte (v >> 8), which is what Pillow's PNG decoder
  already does for 16-bit colour; greyscale is reduced the same way here.

Pure: bytes in, image and bytes out.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import Image

from .errors import InputError
from .orient import UPRIGHT_TRANSPOSE, exif_orientation, markers_before_scan

MAX_PIXELS = 100_000_000  # README "Strictness": more than 100 megapixels declared is refused

# Pillow's own guard (DecompressionBombError at twice this, a warning above it) only backs up the
# check made here before every decode; set it to our limit so that it never fires on an image we
# accept. This is process-wide, and it is the same limit the whole gateway applies.
if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# ISOBMFF/HEIF brands of HEVC-coded images (ISO/IEC 23008-12 Annex B) and of the generic image
# brands that libheif reads when the file carries HEVC items.
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_HEIF_GENERIC_BRANDS = frozenset({b"mif1", b"msf1"})
_DICOM_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN"
    b" UR US UT UV".split()
)
# PS3.5 7.1.2: explicit VRs with two reserved bytes and a 32-bit length.
_DICOM_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())


def sniff(data: bytes) -> str:
    """Say "jpeg", "png", "heic" or "dicom" from the first bytes; InputError for anything else."""
    if not data:
        raise InputError("empty file")
    if data.startswith(b"\xff\xd8\xff"):  # SOI followed by a marker (ITU-T T.81 B.1.1.2)
        return "jpeg"
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if _is_heic(data):
        return "heic"
    if _is_dicom(data):
        return "dicom"
    raise InputError(
        f"not a JPEG, PNG, HEIC or DICOM file (starts with {data[:4].hex(' ') or 'nothing'})"
    )


def _is_heic(data: bytes) -> bool:
    if len(data) < 16 or data[4:8] != b"ftyp":
        return False
    size = int.from_bytes(data[0:4], "big")
    if size < 16 or size > len(data) or size % 4:
        return False
    major = data[8:12]
    compatible = {data[i : i + 4] for i in range(16, size, 4)}
    brands = {major} | compatible
    if brands & _HEIC_BRANDS:
        return True
    # "mif1" alone may also be AVIF; we only read HEVC, so AVIF is not claimed.
    return major in _HEIF_GENERIC_BRANDS and not brands & {b"avif", b"avis"}


def _is_dicom(data: bytes) -> bool:
    """PS3.10 7.1: 128-byte preamble, "DICM", then the File Meta group (0002). Without a
    preamble, accept only a dataset that plainly starts with two group-0002 or group-0008
    elements in ascending order (explicit or implicit VR little endian). The bytes "DICM" at 128
    followed by anything but group 0002 are data, not a prefix."""
    if len(data) >= 140 and data[128:132] == b"DICM" and data[132:134] == b"\x02\x00":
        return data[136:138] in _DICOM_VRS
    return _starts_like_dataset(data)


def _starts_like_dataset(data: bytes) -> bool:
    previous: tuple[int, int] | None = None
    position = 0
    for _ in range(2):
        if position + 8 > len(data):
            return False
        group, element = struct.unpack_from("<HH", data, position)
        if group not in (0x0002, 0x0008) or (previous and (group, element) <= previous):
            return False
        vr = data[position + 4 : position + 6]
        if vr in _DICOM_VRS:
            if vr in _DICOM_LONG_VRS:
                if data[position + 6 : position + 8] != b"\x00\x00" or position + 12 > len(data):
                    return False
                length = struct.unpack_from("<I", data, position + 8)[0]
                position += 12
            else:
                length = struct.unpack_from("<H", data, position + 6)[0]
                position += 8
        else:  # implicit VR little endian: a 4-byte length
            length = struct.unpack_from("<I", data, position + 4)[0]
            position += 8
        if length % 2 or length > 1024 or position + length > len(data):
            return False
        position += length
        previous = (group, element)
    return True


@dataclass(frozen=True)
class Decoded:
    """Upright 8-bit pixels of a photo and what was done to get them.

    `image` is mode "RGB" or "L", 8 bits per sample, orientation applied, palette expanded,
    alpha flattened onto white, with an empty `info` (no metadata rides along).
    """

    image: Image.Image
    notes: tuple[str, ...]  # e.g. "16-bit samples reduced to 8 bits", "EXIF orientation 3 applied"
    exif_tiff: bytes | None  # raw TIFF payload, for DateTimeOriginal only
    icc_profile: bytes | None  # for (0028,2000) ICC Profile


def decode_photo(data: bytes, kind: str) -> Decoded:
    """Decode a "png", "heic" or "jpeg" photo into upright 8-bit RGB or L pixels.

    The declared pixel count is checked against MAX_PIXELS before anything is decoded. Any broken
    input (bad signature, bad CRC, truncation, missing data, undecodable stream) raises
    InputError with the reason; nothing else escapes. `kind` is what `sniff` said.
    """
    if not data:
        raise InputError("empty file")
    if kind == "png":
        return _decode_png(data)
    if kind == "heic":
        return _decode_heic(data)
    if kind == "jpeg":
        return _decode_jpeg(data)
    raise ValueError(f"decode_photo handles png, heic and jpeg, not {kind!r}")


def _check_pixels(width: int, height: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise InputError(f"{what} declares an empty image ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise InputError(
            f"{what} declares {width}x{height} = {width * height / 1e6:.0f} megapixels,"
            f" more than the {MAX_PIXELS // 1_000_000} allowed"
        )


def _open(data: bytes, fmt: str, what: str) -> Image.Image:
    """Image.open restricted to one format, with every failure made an InputError. Lazy: the
    caller checks the size before load()."""
    try:
        image = Image.open(io.BytesIO(data), formats=(fmt,))
    except Image.DecompressionBombError:
        raise InputError(f"{what} has too many pixels to decode") from None
    except Exception as exc:  # noqa: BLE001 — UnidentifiedImageError, SyntaxError, OSError…
        raise InputError(f"{what} could not be read ({_reason(exc)})") from None
    return image


def _load(image: Image.Image, what: str) -> None:
    try:
        image.load()
    except Image.DecompressionBombError:
        raise InputError(f"{what} has too many pixels to decode") from None
    except Exception as exc:  # noqa: BLE001 — OSError "image file is truncated", zlib errors…
        raise InputError(f"{what} could not be decoded ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    """A short reason from a decoder exception, without echoing file content or object reprs."""
    text = str(exc).split("\n", 1)[0]
    text = re.sub(r"<[^>]*>", "input", text)  # "cannot identify image file <_io.BytesIO …>"
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------- PNG


@dataclass(frozen=True)
class _PngHeader:
    width: int
    height: int
    bit_depth: int
    colour_type: int
    animated: bool


def _check_png(data: bytes) -> _PngHeader:
    """Walk the chunks (PNG 3rd ed. / ISO/IEC 15948 5.3): signature, IHDR first, every CRC,
    no truncation, at least one IDAT, IEND. Pillow does not check IDAT CRCs itself."""
    if not data.startswith(_PNG_SIGNATURE):
        raise InputError("PNG signature is wrong (damaged or not a PNG)")
    position = len(_PNG_SIGNATURE)
    header: _PngHeader | None = None
    seen_idat = False
    animated = False
    while True:
        if position + 8 > len(data):
            raise InputError(f"PNG truncated at offset {position}: no IEND chunk")
        length, name = struct.unpack_from(">I4s", data, position)
        label = name.decode("ascii") if name.isalpha() else f"0x{name.hex()}"
        if not name.isalpha():
            raise InputError(f"PNG chunk at offset {position} has an invalid type {label}")
        if length > 0x7FFFFFFF:
            raise InputError(f"PNG chunk {label} at offset {position} has an invalid length")
        end = position + 12 + length
        if end > len(data):
            raise InputError(
                f"PNG truncated in chunk {label} at offset {position}"
                f" ({length} data bytes declared, {max(len(data) - position - 12, 0)} present)"
            )
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack_from(">I", data, position + 8 + length)
        if zlib.crc32(name + body) != crc:
            raise InputError(f"PNG chunk {label} at offset {position} has a bad CRC")
        if header is None:
            if name != b"IHDR" or length != 13:
                raise InputError("PNG does not start with a 13-byte IHDR chunk")
            width, height, depth, colour = struct.unpack_from(">IIBB", body)
            if (colour, depth) not in _PNG_DEPTHS:
                raise InputError(f"PNG IHDR has colour type {colour} with bit depth {depth}")
            header = _PngHeader(width, height, depth, colour, False)
            _check_pixels(width, height, "PNG")
        elif name == b"IDAT":
            seen_idat = True
        elif name == b"acTL":
            animated = True
        elif name == b"IEND":
            break
        position = end
    if not seen_idat:
        raise InputError("PNG has no IDAT chunk (no image data)")
    return _PngHeader(header.width, header.height, header.bit_depth, header.colour_type, animated)


# ISO/IEC 15948 Table 11.1: allowed bit depths per colour type.
_PNG_DEPTHS = frozenset(
    [(0, d) for d in (1, 2, 4, 8, 16)]
    + [(2, 8), (2, 16), (3, 1), (3, 2), (3, 4), (3, 8), (4, 8), (4, 16), (6, 8), (6, 16)]
)

_XMP_ORIENTATION = re.compile(rb"tiff:Orientation(?:\s*=\s*[\"']|>)\s*([1-8])\b")


def _decode_png(data: bytes) -> Decoded:
    header = _check_png(data)
    image = _open(data, "PNG", "PNG")
    _check_pixels(*image.size, "PNG")
    _load(image, "PNG")
    notes: list[str] = []
    if header.bit_depth == 16:
        notes.append("16-bit samples reduced to 8 bits")
    if header.animated:
        notes.append("animated PNG: only the default image is used")

    # EXIF: an eXIf chunk (Pillow puts "Exif\0\0" in front; read after load(), because the
    # chunk may follow IDAT), else ImageMagick's hex "Raw profile type exif" text chunk.
    exif_tiff = _png_exif(image.info)
    orientation = exif_orientation(exif_tiff)
    source = "EXIF orientation"
    if orientation == 1:
        xmp = image.info.get("xmp")
        if isinstance(xmp, bytes) and (match := _XMP_ORIENTATION.search(xmp)):
            orientation, source = int(match[1]), "XMP tiff:Orientation"
    icc = image.info.get("icc_profile") or None
    pixels, more = _to_8bit(image)
    notes.extend(more)
    if orientation != 1:
        pixels = pixels.transpose(UPRIGHT_TRANSPOSE[orientation])
        notes.append(f"{source} {orientation} applied")
    pixels.info = {}
    return Decoded(image=pixels, notes=tuple(notes), exif_tiff=exif_tiff, icc_profile=icc)


def _png_exif(info: Mapping[str | tuple[int, int], object]) -> bytes | None:
    raw = info.get("exif")
    if not isinstance(raw, bytes):
        text = info.get("Raw profile type exif")
        if not isinstance(text, str):
            return None
        try:  # "\nexif\n     <length>\n<hex lines>" — same reading as Pillow's getexif()
            raw = bytes.fromhex("".join(text.split("\n")[3:]))
        except ValueError:
            return None
    if raw.startswith(b"Exif\x00\x00"):
        raw = raw[6:]
    return raw or None


# -------------------------------------------------------------------------------------- HEIC


def _check_boxes(data: bytes) -> None:
    """Top-level ISOBMFF boxes (ISO/IEC 14496-12 4.2) must tile the file exactly: a box that
    runs past the end means the file was truncated (libheif may still show part of it)."""
    position = 0
    while position < len(data):
        if position + 8 > len(data):
            raise InputError(f"HEIC truncated at offset {position}: incomplete box header")
        size = int.from_bytes(data[position : position + 4], "big")
        name = data[position + 4 : position + 8]
        label = name.decode("ascii") if name.isascii() and name.isalnum() else f"0x{name.hex()}"
        header = 8
        if size == 1:  # 64-bit largesize follows
            if position + 16 > len(data):
                raise InputError(f"HEIC truncated in the header of box {label}")
            size = int.from_bytes(data[position + 8 : position + 16], "big")
            header = 16
        elif size == 0:  # box extends to the end of the file
            size = len(data) - position
        if size < header:
            raise InputError(f"HEIC box {label} at offset {position} has an invalid size {size}")
        if position + size > len(data):
            raise InputError(
                f"HEIC truncated: box {label} at offset {position} declares {size} bytes,"
                f" {len(data) - position} present"
            )
        position += size


def _decode_heic(data: bytes) -> Decoded:
    if not _is_heic(data):
        raise InputError("HEIC has no HEVC ftyp brand (damaged or not a HEIC)")
    _check_boxes(data)
    try:
        heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
        primary = heif[heif.primary_index]
    except Exception as exc:  # noqa: BLE001 — ValueError, EOFError, SyntaxError, RuntimeError
        raise InputError(f"HEIC could not be read ({_reason(exc)})") from None
    _check_pixels(*primary.size, "HEIC")
    info = primary.info
    try:
        # libheif applies the HEIF transformative properties (irot, imir, clap) while decoding,
        # so this image is already upright. The EXIF Orientation of a HEIC repeats what irot and
        # imir say (Apple writes both): applying it again would turn the image twice. pillow-heif
        # resets it to 1 only in its Pillow plugin and to_pillow(); we ignore it explicitly.
        image = primary.to_pillow()
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"HEIC could not be decoded ({_reason(exc)})") from None
    notes: list[str] = []
    depth = info.get("bit_depth")
    if isinstance(depth, int) and depth > 8:
        notes.append(f"{depth}-bit samples reduced to 8 bits")
    raw = info.get("exif")
    exif_tiff = None
    if isinstance(raw, bytes) and raw:
        exif_tiff = raw[6:] if raw.startswith(b"Exif\x00\x00") else raw
    stated = exif_orientation(exif_tiff)
    if stated != 1:
        notes.append(
            f"HEIF transforms applied by the decoder; EXIF orientation {stated} not applied again"
        )
    icc = info.get("icc_profile")
    is_icc = str(info.get("icc_profile_type")) in ("prof", "rICC")  # "nclx" is not an ICC
    if not (is_icc and isinstance(icc, bytes) and icc):
        icc = None
    pixels, more = _to_8bit(image)
    notes.extend(more)
    pixels.info = {}
    return Decoded(image=pixels, notes=tuple(notes), exif_tiff=exif_tiff, icc_profile=icc)


# -------------------------------------------------------------------------------------- JPEG


def _decode_jpeg(data: bytes) -> Decoded:
    image = _open(data, "JPEG", "JPEG")
    _check_pixels(*image.size, "JPEG")
    _load(image, "JPEG")
    raw = image.info.get("exif")
    exif_tiff = None
    if isinstance(raw, bytes) and raw:
        exif_tiff = raw[6:] if raw.startswith(b"Exif\x00\x00") else raw
    icc = image.info.get("icc_profile") or None
    orientation = exif_orientation(exif_tiff)
    notes: list[str] = []
    pixels, more = _to_8bit(image)
    notes.extend(more)
    if orientation != 1:
        pixels = pixels.transpose(UPRIGHT_TRANSPOSE[orientation])
        notes.append(f"EXIF orientation {orientation} applied")
    pixels.info = {}
    return Decoded(image=pixels, notes=tuple(notes), exif_tiff=exif_tiff, icc_profile=icc)


# ------------------------------------------------------------------------------------- pixels


def _to_8bit(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """Any decoded mode → 8-bit "RGB" or "L"; palette expanded; alpha flattened onto white."""
    mode = image.mode
    notes: list[str] = []
    transparency = image.info.get("transparency")
    if mode in ("RGB", "L") and transparency is None:
        return image, notes
    if mode == "1":
        return image.convert("L"), notes
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
        return image.convert("RGB"), notes
    if mode.startswith("I"):  # "I;16", "I;16B", "I;16L", "I" (16-bit greyscale)
        samples = np.asarray(image).astype(np.int64)
        grey = (np.clip(samples, 0, 65535) >> 8).astype(np.uint8)
        if isinstance(transparency, int):  # tRNS colour key on 16-bit grey
            alpha = np.where(samples == transparency, 0, 255).astype(np.uint8)
            return _flatten(grey, alpha, notes), notes
        return Image.fromarray(grey), notes  # 2-D uint8 → "L"
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or transparency is not None
        image = image.convert("RGBA" if has_alpha else "RGB")
        if not has_alpha:
            return image, notes
        mode = "RGBA"
    elif mode in ("RGB", "L") and transparency is not None:  # tRNS colour key
        image = image.convert("RGBA" if mode == "RGB" else "LA")
        mode = image.mode
    elif mode in ("RGBa", "La"):  # premultiplied alpha
        image = image.convert("RGBA" if mode == "RGBa" else "LA")
        mode = image.mode
    if mode in ("RGBA", "LA"):
        array = np.asarray(image)
        return _flatten(array[..., :-1], array[..., -1], notes), notes
    raise InputError(f"unsupported pixel format {mode}")


def _flatten(colour: np.ndarray, alpha: np.ndarray, notes: list[str]) -> Image.Image:
    """Composite onto white: out = c·a + 255·(1 − a), a in 0..255, rounded."""
    if alpha.min() == 255:
        notes.append("alpha channel dropped (fully opaque)")
    else:
        notes.append("alpha channel dropped (flattened on white)")
    if colour.ndim == 3 and colour.shape[-1] == 1:
        colour = colour[..., 0]
    a = alpha.astype(np.uint32)
    if colour.ndim == 3:
        a = a[..., None]
    out = (colour.astype(np.uint32) * a + 255 * (255 - a) + 127) // 255
    return Image.fromarray(out.astype(np.uint8))  # (h, w, 3) → "RGB", (h, w) → "L"


# ------------------------------------------------------------------------------------ encoding


@dataclass(frozen=True)
class Encoded:
    """A baseline JPEG of a decoded photo, with no metadata segment of any kind."""

    jpeg: bytes
    quality: int
    ratio: float  # uncompressed bytes / encoded bytes: Lossy Image Compression Ratio (0028,2112)
    notes: tuple[str, ...]  # how it was encoded (one line); the decode notes stay in Decoded.notes


def encode_jpeg(decoded: Decoded, quality: int = 95) -> Encoded:
    """Encode upright 8-bit pixels as one baseline JPEG (SOF0, Huffman, 4:4:4 or greyscale).

    Only SOI, APP0 JFIF (no thumbnail), DQT, SOF0, DHT, SOS, scan, EOI are written: no EXIF, no
    ICC (it goes to (0028,2000) through the caller), no COM. The result is lossy: the caller sets
    Lossy Image Compression "01", Ratio and Method "ISO_10918_1" (PS3.3 C.7.6.1.1.5).
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 1..100, not {quality!r}")
    image = decoded.image
    if image.mode not in ("RGB", "L"):
        raise ValueError(f"encode_jpeg needs an RGB or L image from decode_photo, not {image.mode}")
    if image.info:
        image = image.copy()
        image.info = {}  # Pillow would write info["comment"] as COM
    options: dict[str, object] = {"quality": quality, "exif": b"", "optimize": True}
    if image.mode == "RGB":
        options["subsampling"] = 0  # 4:4:4, see the module docstring
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    jpeg = buffer.getvalue()
    leaked = markers_before_scan(jpeg) - {0xE0, 0xDB, 0xC0, 0xC4, 0xDA}
    if leaked:  # cannot happen with the options above; never let metadata through if it does
        raise RuntimeError(f"JPEG encoder wrote unexpected segments {sorted(leaked)}")
    width, height = image.size
    ratio = width * height * len(image.getbands()) / len(jpeg)
    how = "4:4:4" if image.mode == "RGB" else "greyscale"
    note = f"encoded as baseline JPEG (Pillow, quality {quality}, {how}), ratio {ratio:.1f}:1"
    return Encoded(jpeg=jpeg, quality=quality, ratio=ratio, notes=(note,))


def validate(data: bytes) -> str:
    """The door's check, without decoding pixels: the kind, a sound structure and the pixel limit.

    JPEG: the whole segment structure (EOI present, a supported SOF, at most MAX_PIXELS declared);
    PNG: signature, every chunk CRC, IHDR size; HEIC: the top-level boxes and the declared size.
    Returns the kind ("jpeg", "png", "heic" or "dicom"); InputError with the reason otherwise.
    """
    kind = sniff(data)
    if kind == "jpeg":
        from dicom_mapping import (
            jpeg,  # local: jpeg does not need photo, photo needs jpeg only here
        )

        jpeg.read_info(data)
    elif kind == "png":
        header = _check_png(data)
        _check_pixels(header.width, header.height, "PNG")
    elif kind == "heic":
        _check_boxes(data)
        width, height = _heic_size(data)
        _check_pixels(width, height, "HEIC")
    return kind


def _heic_size(data: bytes) -> tuple[int, int]:
    """The primary image's declared size; open_heif is lazy, nothing is decoded here."""
    try:
        heif = pillow_heif.open_heif(io.BytesIO(data))
        width, height = heif.size
    except Exception as exc:  # noqa: BLE001 - libheif's errors vary; each is bad input here
        raise InputError(f"HEIC could not be read ({_reason(exc)})") from None
    return int(width), int(height)

"""JPEG segment parser and sanitizer: the bitstream that leaves carries pixels and nothing else.

A JPEG (ITU-T T.81 | ISO/IEC 10918-1) is a sequence of marker segments (Annex B.1.1.2-B.1.1.4):
0xFF, a marker code, and for most markers a two-byte length that counts itself. Between the
SOS header and the next marker lies entropy-coded data, in which a data byte 0xFF is followed by
a stuffed 0x00 (B.1.1.5) and RSTn markers may appear (B.2.1). Any marker may be preceded by fill
bytes 0xFF (B.1.1.2).

`sanitize` keeps only the segments a decoder needs (SOI, APP0 JFIF without thumbnail, APP14
Adobe, DQT, SOF, DHT, DRI, SOS + scan data, RSTn, EOI), copies the scan data byte for byte,
and transcodes a progressive stream losslessly to a sequential one with `jpegtran` over pipes.
Everything is pure: bytes in, bytes out, no file I/O. Every malformed input raises `InputError`
naming the byte offset and the marker; the caller prefixes the file name. Messages never quote
the content of a metadata segment.
"""

from __future__ import annotations

import re
import struct
import subprocess
from dataclasses import dataclass, field

from dicom_mapping.errors import InputError

__all__ = [
    "MAX_PIXELS",
    "Component",
    "JpegInfo",
    "Sanitized",
    "Segment",
    "read_info",
    "sanitize",
    "scan_data",
    "segments",
]

MAX_PIXELS = 100_000_000
# Real files have tens of segments (a few hundred with ICC/XMP chunks); a stream of millions of
# empty segments is a memory attack, not a photo. RSTn are bounded by the frame's MCU count.
_MAX_SEGMENTS = 10_000

# PS3.5 Table A-1 / PS3.6 Annex A: the transfer syntaxes a JPEG bitstream is sent under.
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"  # Process 1 (SOF0)
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"  # Processes 2 & 4 (SOF1, 8 or 12 bit)
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"  # Process 14, any predictor (SOF3)
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"  # Process 14, selection value 1 only (SOF3)

# `jpegtran` transcodes progressive to sequential without touching the DCT coefficients.
# -copy none: no APPn/COM is copied (we take ICC and EXIF from the input ourselves);
# -strict: a warning (corrupt data) is an error; -maxscans: a scan-bomb is refused.
JPEGTRAN = ("jpegtran", "-copy", "none", "-strict", "-maxscans", "100")
JPEGTRAN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Segment:
    marker: int  # the marker code, the byte after 0xFF (0xE1 for APP1)
    offset: int  # of the 0xFF directly before the marker code (after any fill bytes)
    length: int  # total bytes incl. marker and length field (for SOS: the header only)


@dataclass(frozen=True)
class Component:
    id: int
    h: int
    v: int
    tq: int


@dataclass(frozen=True)
class JpegInfo:
    sof: int  # 0xC0, 0xC1, 0xC2 or 0xC3
    precision: int  # 8 or 12 (or 2..16 for lossless)
    width: int
    height: int
    components: tuple[Component, ...]
    adobe_transform: int | None  # from APP14 "Adobe", None if absent
    jfif: bool
    photometric: str  # "YBR_FULL_422" | "RGB" | "MONOCHROME2"
    transfer_syntax: str  # UID for the (sanitized) stream
    mcu_aligned: bool  # width and height are multiples of the MCU size


@dataclass(frozen=True)
class Sanitized:
    bitstream: bytes  # whitelist-only JPEG, sequential if the input was progressive
    info: JpegInfo  # info of `bitstream`
    icc_profile: bytes | None  # reassembled from APP2 ICC_PROFILE chunks, for (0028,2000)
    exif: bytes | None  # TIFF payload of APP1 "Exif\0\0": to read orientation/date, never emitted
    dropped: tuple[str, ...] = field(default=())  # kinds of segments removed, first-seen order


# --------------------------------------------------------------------------------------------
# Marker table (T.81 Table B.1)

_SOI, _EOI, _SOS, _DQT, _DHT, _DRI, _DNL, _COM, _TEM = 0xD8, 0xD9, 0xDA, 0xDB, 0xC4, 0xDD, 0xDC, 0xFE, 0x01
_APP0, _APP1, _APP2, _APP13, _APP14 = 0xE0, 0xE1, 0xE2, 0xED, 0xEE
_SUPPORTED_SOF = {0xC0: "SOF0", 0xC1: "SOF1", 0xC2: "SOF2", 0xC3: "SOF3"}
_UNSUPPORTED = {
    0xC5: "SOF5, hierarchical differential sequential",
    0xC6: "SOF6, hierarchical differential progressive",
    0xC7: "SOF7, hierarchical differential lossless",
    0xC8: "JPG, reserved for JPEG extensions",
    0xC9: "SOF9, arithmetic coding",
    0xCA: "SOF10, progressive arithmetic coding",
    0xCB: "SOF11, lossless arithmetic coding",
    0xCC: "DAC, arithmetic coding conditioning",
    0xCD: "SOF13, hierarchical arithmetic coding",
    0xCE: "SOF14, hierarchical progressive arithmetic coding",
    0xCF: "SOF15, hierarchical lossless arithmetic coding",
    0xDE: "DHP, hierarchical progression",
    0xDF: "EXP, hierarchical expansion",
    0xF7: "SOF55, JPEG-LS",
    0xF8: "LSE, JPEG-LS",
}


def _name(marker: int) -> str:
    if marker in _SUPPORTED_SOF:
        return _SUPPORTED_SOF[marker]
    if marker in _UNSUPPORTED:
        return _UNSUPPORTED[marker].split(",")[0]
    if 0xD0 <= marker <= 0xD7:
        return f"RST{marker - 0xD0}"
    if 0xE0 <= marker <= 0xEF:
        return f"APP{marker - 0xE0}"
    if 0xF0 <= marker <= 0xFD:
        return f"JPG{marker - 0xF0}"
    return {
        _SOI: "SOI", _EOI: "EOI", _SOS: "SOS", _DQT: "DQT", _DHT: "DHT", _DRI: "DRI",
        _DNL: "DNL", _COM: "COM", _TEM: "TEM", 0x00: "stuffed byte",
    }.get(marker, "reserved")


def _at(offset: int, marker: int, what: str) -> InputError:
    return InputError(f"byte offset {offset}: marker 0xFF{marker:02X} ({_name(marker)}) {what}")


# In entropy-coded data, 0xFF is followed by 0x00 (stuffing), 0xD0-0xD7 (RSTn) or 0xFF (fill);
# anything else ends the scan (T.81 B.1.1.5, B.2.1). Fixed-width patterns: linear time.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_RST = re.compile(rb"\xff[\xd0-\xd7]")
_FILL = re.compile(rb"\xff+")


# --------------------------------------------------------------------------------------------
# Structural walk


@dataclass
class _Scan:
    header: Segment
    start: int  # first byte of entropy-coded data
    end: int  # one past its last byte (fill bytes before the next marker excluded)
    ss: int


@dataclass
class _Walk:
    segments: list[Segment]
    scans: list[_Scan]
    eoi: int
    sof: int = 0
    precision: int = 0
    width: int = 0
    height: int = 0
    components: tuple[Component, ...] = ()
    sof_offset: int = 0
    max_quant: int = 0  # largest quantizer value in any DQT (predicts SOF0 vs SOF1 after transcode)


def _fill_run_start(data: bytes, lo: int, end: int) -> int:
    """First index of the run of 0xFF bytes that ends at `end`, not before `lo` (linear)."""
    step = 64
    while True:
        a = max(lo, end - step)
        kept = data[a:end].rstrip(b"\xff")
        if kept or a == lo:
            return a + len(kept)
        end, step = a, step * 2


def _parse_sof(data: bytes, off: int, marker: int, end: int, walk: _Walk) -> None:
    """T.81 B.2.2 frame header; size limits checked here, before any scan data is looked at."""
    if walk.sof:
        raise _at(off, marker, "is a second frame header: hierarchical or multi-frame JPEG is not supported")
    body = data[off + 4 : end]
    if len(body) < 6:
        raise _at(off, marker, f"frame header is {len(body) + 2} bytes, too short")
    precision, height, width, nf = struct.unpack(">BHHB", body[:6])
    if len(body) != 6 + 3 * nf:
        raise _at(off, marker, f"length {len(body) + 2} does not match {nf} components")
    allowed = range(2, 17) if marker == 0xC3 else (8,) if marker == 0xC0 else (8, 12)
    if precision not in allowed:
        raise _at(off, marker, f"sample precision {precision} bits is not valid for this process")
    if width == 0 or height == 0:
        # Height 0 means "defined later by DNL" (T.81 B.2.5); we refuse it before decoding.
        raise _at(off, marker, f"declares {width} x {height} pixels: a zero dimension is not supported")
    if width * height > MAX_PIXELS:
        raise _at(off, marker, f"declares {width} x {height} = {width * height} pixels, more than {MAX_PIXELS}")
    if nf == 4:
        raise _at(off, marker, "declares 4 components: 4-component (CMYK) JPEG is not supported")
    if nf not in (1, 3):
        raise _at(off, marker, f"declares {nf} components: {nf}-component JPEG is not supported")
    comps: list[Component] = []
    for i in range(nf):
        cid, hv, tq = body[6 + 3 * i : 9 + 3 * i]
        h, v = hv >> 4, hv & 0x0F
        if not (1 <= h <= 4 and 1 <= v <= 4) or tq > 3:
            raise _at(off, marker, f"component {i + 1} has invalid sampling {h}x{v} or table {tq}")
        if any(c.id == cid for c in comps):
            raise _at(off, marker, f"component id {cid} appears twice")
        comps.append(Component(cid, h, v, tq))
    walk.sof, walk.precision, walk.width, walk.height = marker, precision, width, height
    walk.sof_offset = off
    walk.components = tuple(comps)


def _parse_dqt(data: bytes, off: int, end: int, defined: set[int], walk: _Walk) -> None:
    """T.81 B.2.4.1: one or more tables of 64 8-bit (Pq=0) or 16-bit (Pq=1) values."""
    p = off + 4
    if p == end:
        raise _at(off, _DQT, "defines no table")
    while p < end:
        pq, tq = data[p] >> 4, data[p] & 0x0F
        if pq > 1 or tq > 3:
            raise _at(off, _DQT, f"table {tq} has invalid precision code {pq}")
        size = 64 * (pq + 1)
        if p + 1 + size > end:
            raise _at(off, _DQT, f"table {tq} runs past the end of the segment")
        values = data[p + 1 : p + 1 + size]
        top = max(values) if pq == 0 else max(struct.unpack(">64H", values))
        walk.max_quant = max(walk.max_quant, top)
        defined.add(tq)
        p += 1 + size


def _parse_dht(data: bytes, off: int, end: int, defined: set[tuple[int, int]]) -> None:
    """T.81 B.2.4.2 (and the code-space check of C.2 that libjpeg applies)."""
    p = off + 4
    if p == end:
        raise _at(off, _DHT, "defines no table")
    while p < end:
        tc, th = data[p] >> 4, data[p] & 0x0F
        if tc > 1 or th > 3:
            raise _at(off, _DHT, f"table class {tc} / id {th} is invalid")
        if p + 17 > end:
            raise _at(off, _DHT, "table runs past the end of the segment")
        counts = data[p + 1 : p + 17]
        total = sum(counts)
        if total > 256 or p + 17 + total > end:
            raise _at(off, _DHT, f"table with {total} codes does not fit the segment")
        code = 0
        for bits, n in enumerate(counts, start=1):
            code += n
            if code >= 1 << bits:  # more codes than the code space (all-ones codes are reserved)
                raise _at(off, _DHT, "table assigns more codes than fit their lengths")
            code <<= 1
        if tc == 0 and max(data[p + 17 : p + 17 + total], default=0) > 16:
            raise _at(off, _DHT, "DC table has a symbol above 16")
        defined.add((tc, th))
        p += 17 + total


def _parse_sos(
    data: bytes, off: int, end: int, walk: _Walk,
    quant: set[int], huff: set[tuple[int, int]], scanned: dict[int, int],
) -> tuple[int, int]:
    """T.81 B.2.3 scan header; returns Ss (the predictor, for lossless) and the scan's MCU count."""
    if not walk.sof:
        raise _at(off, _SOS, "comes before any frame header (SOF)")
    body = data[off + 4 : end]
    ns = body[0] if body else 0
    if not 1 <= ns <= 4 or len(body) != 4 + 2 * ns:
        raise _at(off, _SOS, f"scan header with {ns} components has the wrong length {len(body) + 2}")
    ss, se, ahal = body[1 + 2 * ns : 4 + 2 * ns]
    ah, al = ahal >> 4, ahal & 0x0F
    by_id = {c.id: c for c in walk.components}
    comps: list[Component] = []
    for i in range(ns):
        cs, tdta = body[1 + 2 * i], body[2 + 2 * i]
        td, ta = tdta >> 4, tdta & 0x0F
        comp = by_id.get(cs)
        if comp is None or comp in comps:
            raise _at(off, _SOS, f"scan component {i + 1} (id {cs}) is not in the frame or repeated")
        if td > 3 or ta > 3:
            raise _at(off, _SOS, f"scan component id {cs} selects Huffman table {td}/{ta}")
        comps.append(comp)
        progressive_dc_refine = walk.sof == 0xC2 and ss == 0 and ah > 0
        needs_dc = (walk.sof != 0xC2 or ss == 0) and not progressive_dc_refine
        needs_ac = walk.sof in (0xC0, 0xC1) or (walk.sof == 0xC2 and ss > 0)
        if needs_dc and (0, td) not in huff or needs_ac and (1, ta) not in huff:
            raise _at(off, _SOS, f"scan component id {cs} uses a Huffman table that was never defined")
        if walk.sof != 0xC3 and comp.tq not in quant:
            raise _at(off, _SOS, f"component id {cs} uses quantization table {comp.tq}, never defined")
    if ns > 1 and sum(c.h * c.v for c in comps) > 10:  # B.2.3: at most 10 blocks per MCU
        raise _at(off, _SOS, "interleaved scan has more than 10 data units per MCU")
    if walk.sof in (0xC0, 0xC1):
        ok = ss == 0 and se == 63 and ah == 0 and al == 0
    elif walk.sof == 0xC2:  # G.1.1.1.1: DC scans may interleave, AC scans have one component
        ok = (ss == 0 and se == 0 or 0 < ss <= se <= 63 and ns == 1) and ah <= 13 and al <= 13
    else:  # H.1.2.1 / Table H.1: Ss is the predictor 1..7, Se = 0, Ah = 0, Al the point transform
        ok = 1 <= ss <= 7 and se == 0 and ah == 0 and al < walk.precision
    if not ok:
        raise _at(off, _SOS, f"spectral selection {ss}..{se} / approximation {ah},{al} is invalid here")
    for comp in comps:
        if walk.sof != 0xC2:
            if comp.id in scanned:
                raise _at(off, _SOS, f"component id {comp.id} is coded in two scans")
            scanned[comp.id] = 1
        elif ss == 0 and ah == 0:
            scanned[comp.id] = 1  # progressive: a DC first scan exists for this component
    return ss, _mcu_count(walk, comps)


def _mcu_count(walk: _Walk, comps: list[Component]) -> int:
    """A.2.2 / A.2.3 (and H.1 for lossless, where the data unit is one sample)."""
    unit = 1 if walk.sof == 0xC3 else 8
    hmax = max(c.h for c in walk.components)
    vmax = max(c.v for c in walk.components)
    if len(comps) == 1:  # non-interleaved: one data unit per MCU, over the component's own size
        c = comps[0]
        width = -(-walk.width * c.h // hmax)
        height = -(-walk.height * c.v // vmax)
        return -(-width // unit) * -(-height // unit)
    return -(-walk.width // (unit * hmax)) * -(-walk.height // (unit * vmax))


def _walk(data: bytes) -> _Walk:
    """Parse every marker from SOI to EOI (T.81 B.2.1 syntax); raise InputError on anything else."""
    n = len(data)
    if n < 2 or data[0] != 0xFF or data[1] != _SOI:
        raise InputError("byte offset 0: no SOI marker (0xFFD8): not a JPEG")
    walk = _Walk(segments=[Segment(_SOI, 0, 2)], scans=[], eoi=-1)
    quant: set[int] = set()
    huff: set[tuple[int, int]] = set()
    scanned: dict[int, int] = {}
    restart_interval = 0
    pos = 2
    previous = _SOI
    while True:
        if pos >= n:
            raise InputError(f"byte offset {n}: no EOI marker: truncated")
        if data[pos] != 0xFF:
            raise InputError(
                f"byte offset {pos}: expected a marker after {_name(previous)}, found byte 0x{data[pos]:02X}"
            )
        fill = _FILL.match(data, pos)
        assert fill is not None
        q = fill.end()  # the marker code, after any fill bytes (B.1.1.2)
        if q >= n:
            raise InputError(f"byte offset {n}: no EOI marker: truncated")
        marker, off = data[q], q - 1
        if marker == _EOI:
            if not walk.scans:
                raise _at(off, marker, "comes before any scan: no image data")
            missing = [c.id for c in walk.components if c.id not in scanned]
            if missing:
                raise _at(off, marker, f"comes before component id {missing[0]} was coded")
            walk.segments.append(Segment(marker, off, 2))
            walk.eoi = off
            return walk
        if marker in _UNSUPPORTED:
            raise InputError(
                f"byte offset {off}: marker 0xFF{marker:02X} ({_UNSUPPORTED[marker]}) is not supported"
            )
        if marker == 0x00 or marker == _SOI or 0xD0 <= marker <= 0xD7:
            raise _at(off, marker, "is not allowed outside scan data")
        if marker == _TEM:  # standalone, no length (B.1.1.3)
            walk.segments.append(Segment(marker, off, 2))
            pos, previous = q + 1, marker
            continue
        if 0x02 <= marker <= 0xBF or 0xF0 <= marker <= 0xFD:
            raise _at(off, marker, "is not supported")
        if q + 3 > n:
            raise _at(off, marker, "has no length field: truncated")
        length = (data[q + 1] << 8) | data[q + 2]
        end = off + 2 + length
        if length < 2:
            raise _at(off, marker, f"has an invalid length {length}")
        if end > n:
            raise _at(off, marker, f"length {length} runs past the end of the data: truncated")
        seg = Segment(marker, off, 2 + length)
        if marker in _SUPPORTED_SOF:
            _parse_sof(data, off, marker, end, walk)
        elif marker == _DQT:
            _parse_dqt(data, off, end, quant, walk)
        elif marker == _DHT:
            _parse_dht(data, off, end, huff)
        elif marker == _DRI:  # B.2.4.4
            if length != 4:
                raise _at(off, marker, f"has length {length}, not 4")
            restart_interval = (data[off + 4] << 8) | data[off + 5]
        elif marker == _DNL:  # B.2.5: only directly after the first scan; length 4
            if length != 4 or len(walk.scans) != 1:
                raise _at(off, marker, "is misplaced or has the wrong length")
        walk.segments.append(seg)
        if len(walk.segments) > _MAX_SEGMENTS:
            raise _at(off, marker, f"is one segment too many: more than {_MAX_SEGMENTS} before EOI")
        pos, previous = end, marker
        if marker != _SOS:
            continue
        ss, mcus = _parse_sos(data, off, end, walk, quant, huff, scanned)
        stop = _SCAN_END.search(data, end)
        if stop is None:
            raise InputError(f"byte offset {n}: scan data runs to the end: no EOI marker: truncated")
        scan_end = _fill_run_start(data, end, stop.start())
        if scan_end == end:
            raise _at(off, marker, "is followed by no scan data")
        expected, count = 0, 0
        for rst in _RST.finditer(data, end, scan_end):
            code = data[rst.start() + 1]
            if restart_interval == 0:
                raise _at(rst.start(), code, "appears in scan data without a restart interval (DRI)")
            count += 1
            if count * restart_interval >= mcus + restart_interval:  # more intervals than MCUs
                raise _at(rst.start(), code, f"is one restart marker too many for {mcus} MCUs")
            if code != 0xD0 + expected:  # RSTm counts modulo 8 (B.2.1)
                raise _at(rst.start(), code, f"is out of sequence: expected RST{expected}")
            expected = (expected + 1) % 8
            walk.segments.append(Segment(code, rst.start(), 2))
        walk.scans.append(_Scan(seg, end, scan_end, ss))
        pos = scan_end


# --------------------------------------------------------------------------------------------
# Interpretation: APPn, colour, transfer syntax


@dataclass
class _Meta:
    jfif: Segment | None = None  # the one JFIF APP0 kept
    jfif_thumbnail: bool = False  # it carried a thumbnail (or bytes past it)
    adobe: Segment | None = None  # the one Adobe APP14 kept
    adobe_transform: int | None = None
    icc_chunks: dict[int, bytes] = field(default_factory=dict)
    icc_count: int = 0
    icc_bad: bool = False
    exif: bytes | None = None
    drop: dict[int, str] = field(default_factory=dict)  # segment offset -> dropped kind


def _payload(data: bytes, seg: Segment) -> bytes:
    return data[seg.offset + 4 : seg.offset + seg.length]


def _classify(data: bytes, walk: _Walk) -> _Meta:
    meta = _Meta()
    for seg in walk.segments:
        m = seg.marker
        if not (0xE0 <= m <= 0xEF or m in (_COM, _TEM, _DNL)):
            continue
        body = _payload(data, seg)
        kind = _name(m)
        if m == _APP0 and body.startswith(b"JFIF\x00"):
            # JFIF 1.02: identifier(5) version(2) units(1) Xdensity(2) Ydensity(2) Xthumb Ythumb
            if len(body) < 14:
                raise _at(seg.offset, m, f"JFIF segment length {seg.length - 2} is less than 16")
            if meta.jfif is None:
                meta.jfif = seg
                meta.jfif_thumbnail = bool(body[12] or body[13] or len(body) > 14)
                continue
            kind = "APP0/JFIF-duplicate"
        elif m == _APP0 and body.startswith(b"JFXX\x00"):
            kind = "APP0/JFXX"
        elif m == _APP14 and body.startswith(b"Adobe"):
            # Adobe TN 5116: "Adobe" version(2) flags0(2) flags1(2) transform(1)
            if len(body) < 12:
                raise _at(seg.offset, m, f"Adobe segment length {seg.length - 2} is less than 14")
            transform = body[11]
            if meta.adobe is None:
                meta.adobe, meta.adobe_transform = seg, transform
                continue
            if transform != meta.adobe_transform:
                raise _at(seg.offset, m, "is a second Adobe segment with a different colour transform")
            kind = "APP14/Adobe-duplicate"
        elif m == _APP1 and body.startswith(b"Exif\x00\x00"):
            kind = "APP1/Exif"
            if meta.exif is None and len(body) > 6:
                meta.exif = body[6:]
        elif m == _APP1 and body.startswith(b"http://ns.adobe.com/xap/1.0/\x00"):
            kind = "APP1/XMP"
        elif m == _APP1 and body.startswith(b"http://ns.adobe.com/xmp/extension/\x00"):
            kind = "APP1/XMP-extension"
        elif m == _APP2 and body.startswith(b"ICC_PROFILE\x00"):
            kind = "APP2/ICC_PROFILE"
            _icc_chunk(body, meta)
        elif m == _APP2 and body.startswith(b"MPF\x00"):
            kind = "APP2/MPF"  # multi-picture index: the pictures it points to are after EOI
        meta.drop[seg.offset] = kind
    return meta


def _icc_chunk(body: bytes, meta: _Meta) -> None:
    """ICC.1 Annex B.4: "ICC_PROFILE\\0", sequence number (1-based), chunk count, data."""
    if len(body) < 14:
        meta.icc_bad = True
        return
    seq, count = body[12], body[13]
    if count == 0 or seq == 0 or seq > count or seq in meta.icc_chunks or meta.icc_count and count != meta.icc_count:
        meta.icc_bad = True
    else:
        meta.icc_count = count
        meta.icc_chunks[seq] = body[14:]


def _icc_profile(meta: _Meta) -> bytes | None:
    """The profile in sequence order, or None if chunks are missing or it is no ICC profile."""
    if not meta.icc_chunks or meta.icc_bad or len(meta.icc_chunks) != meta.icc_count:
        return None
    profile = b"".join(meta.icc_chunks[i] for i in range(1, meta.icc_count + 1))
    # ICC.1 7.2: the header is 128 bytes; bytes 0-3 the profile size, 36-39 the signature "acsp".
    if len(profile) < 128 or profile[36:40] != b"acsp":
        return None
    size = int.from_bytes(profile[:4], "big")
    if not 128 <= size <= len(profile):
        return None
    return profile[:size]


def _photometric(walk: _Walk, meta: _Meta, jfif: bool) -> str:
    """PS3.3 C.7.6.3.1.2 and PS3.5 8.2.1; the colour space as libjpeg determines it.

    One component is MONOCHROME2. Three components: an Adobe APP14 says it outright (transform 0
    = RGB, 1 = YCbCr); else JFIF means YCbCr; else component ids 'R','G','B' mean RGB; else
    YCbCr (libjpeg jdapimin.c default_decompress_parms). YCbCr is YBR_FULL_422 whatever the
    sampling (the contract: dciodvfy refuses YBR_FULL in a Secondary Capture).
    """
    if len(walk.components) == 1:
        return "MONOCHROME2"
    if meta.adobe_transform is not None:
        if meta.adobe_transform == 0:
            return "RGB"
        if meta.adobe_transform == 1:
            return "YBR_FULL_422"
        assert meta.adobe is not None
        raise _at(meta.adobe.offset, _APP14,
                  f"colour transform {meta.adobe_transform} is not valid for 3 components")
    if jfif:
        return "YBR_FULL_422"
    if tuple(c.id for c in walk.components) == (ord("R"), ord("G"), ord("B")):
        return "RGB"
    return "YBR_FULL_422"


def _transfer_syntax(walk: _Walk) -> str:
    if walk.sof == 0xC0:
        return JPEG_BASELINE
    if walk.sof == 0xC1:
        return JPEG_EXTENDED
    if walk.sof == 0xC2:
        # What the sequential transcode will be: libjpeg writes SOF0 when the precision is 8 and
        # every quantizer fits in 8 bits (jcmarker.c write_frame_header), else SOF1.
        return JPEG_BASELINE if walk.precision == 8 and walk.max_quant <= 255 else JPEG_EXTENDED
    # PS3.5 A.4.1: ".70" is only for selection value 1 (first-order prediction).
    return JPEG_LOSSLESS_SV1 if all(s.ss == 1 for s in walk.scans) else JPEG_LOSSLESS


def _info(walk: _Walk, meta: _Meta, jfif: bool) -> JpegInfo:
    comps = walk.components
    if walk.sof == 0xC3:  # H.1: the lossless data unit is one sample
        unit_w, unit_h = max(c.h for c in comps), max(c.v for c in comps)
    else:
        unit_w, unit_h = 8 * max(c.h for c in comps), 8 * max(c.v for c in comps)
    if len(comps) == 1:  # A.2.2: a single-component scan's MCU is one data unit
        unit_w = unit_h = 1 if walk.sof == 0xC3 else 8
    return JpegInfo(
        sof=walk.sof,
        precision=walk.precision,
        width=walk.width,
        height=walk.height,
        components=comps,
        adobe_transform=meta.adobe_transform,
        jfif=jfif,
        photometric=_photometric(walk, meta, jfif),
        transfer_syntax=_transfer_syntax(walk),
        mcu_aligned=walk.width % unit_w == 0 and walk.height % unit_h == 0,
    )


def _jfif_contradicts_adobe(walk: _Walk, meta: _Meta) -> bool:
    # JFIF implies YCbCr; Adobe transform 0 says RGB. libjpeg lets JFIF win (and shows such a
    # file in the wrong colours); we believe the explicit transform and drop the JFIF segment,
    # so that every decoder reads the stream as we label it.
    return meta.jfif is not None and meta.adobe_transform == 0 and len(walk.components) == 3


# --------------------------------------------------------------------------------------------
# Public API


def segments(data: bytes) -> list[Segment]:
    """Every marker from SOI to EOI, RSTn included, in file order; InputError if malformed.

    Also refuses what cannot be parsed reliably (unsupported SOF, more than MAX_PIXELS) at the
    frame header, before the scan data is looked at.
    """
    data = bytes(data)  # a bytearray or memoryview is copied once
    return list(_walk(data).segments)


def read_info(data: bytes) -> JpegInfo:
    """Frame, colour and transfer syntax of `data` without sanitizing or decoding it.

    For a progressive input, `sof` is 0xC2 and `transfer_syntax` is that of the sequential
    stream `sanitize` will produce.
    """
    data = bytes(data)  # a bytearray or memoryview is copied once
    walk = _walk(data)
    meta = _classify(data, walk)
    return _info(walk, meta, meta.jfif is not None)


def scan_data(bitstream: bytes) -> bytes:
    """The entropy-coded bytes: from the end of the first SOS header to the end of the last scan
    (the EOI, less any fill bytes before it), RSTn included; for several scans, the tables and
    headers between them too."""
    bitstream = bytes(bitstream)  # a bytearray or memoryview is copied once
    walk = _walk(bitstream)
    return bitstream[walk.scans[0].start : walk.scans[-1].end]


def sanitize(data: bytes) -> Sanitized:
    """The whitelist-only bitstream, its info, the ICC profile and the EXIF payload (see module doc)."""
    data = bytes(data)  # a bytearray or memoryview is copied once
    return _sanitize(data, transcode=True)


def _sanitize(data: bytes, *, transcode: bool) -> Sanitized:
    walk = _walk(data)
    meta = _classify(data, walk)
    bitstream, dropped = _rebuild(data, walk, meta)
    icc = _icc_profile(meta)
    if meta.icc_chunks and icc is None:
        dropped = [("APP2/ICC_PROFILE-invalid" if d == "APP2/ICC_PROFILE" else d) for d in dropped]
    jfif = meta.jfif is not None and not _jfif_contradicts_adobe(walk, meta)
    info = _info(walk, meta, jfif)
    if walk.sof == 0xC2:
        again = _sanitize(_transcode(bitstream, walk.sof_offset), transcode=False) if transcode else None
        if again is None or again.info.sof not in (0xC0, 0xC1) or again.info.photometric != info.photometric:
            raise _at(walk.sof_offset, walk.sof, "progressive stream did not transcode to a sequential one "
                      f"of the same colour space ({info.photometric})")
        bitstream, info = again.bitstream, again.info
        dropped.extend(d for d in again.dropped if d not in dropped)
    return Sanitized(bitstream, info, icc, meta.exif, tuple(dropped))


def _rebuild(data: bytes, walk: _Walk, meta: _Meta) -> tuple[bytes, list[str]]:
    out: list[bytes] = []
    dropped: list[str] = []

    def note(kind: str) -> None:
        if kind not in dropped:
            dropped.append(kind)

    drop_jfif = _jfif_contradicts_adobe(walk, meta)
    scans = iter(walk.scans)
    for seg in walk.segments:
        m = seg.marker
        if 0xD0 <= m <= 0xD7:
            continue  # copied with their scan
        if seg.offset in meta.drop:
            note(meta.drop[seg.offset])
            continue
        if seg is meta.jfif:
            if drop_jfif:
                note("APP0/JFIF-contradicts-Adobe")
                continue
            if meta.jfif_thumbnail:
                note("APP0/JFIF-thumbnail")
            body = _payload(data, seg)
            # Keep identifier, version, units and densities; no thumbnail (Xthumb = Ythumb = 0).
            out.append(b"\xff\xe0\x00\x10" + body[:12] + b"\x00\x00")
        elif seg is meta.adobe:
            out.append(b"\xff\xee\x00\x0e" + _payload(data, seg)[:12])  # no bytes past the transform
        elif m == _SOS:
            scan = next(scans)
            out.append(data[seg.offset : scan.end])
        else:
            out.append(data[seg.offset : seg.offset + seg.length])
    if len(data) > walk.eoi + 2:
        note("trailing-data")
    return b"".join(out), dropped


def _transcode(progressive: bytes, sof_offset: int) -> bytes:
    """Progressive → sequential Huffman, the DCT coefficients unchanged (jpegtran, over pipes)."""
    try:
        done = subprocess.run(
            JPEGTRAN, input=progressive, capture_output=True, timeout=JPEGTRAN_TIMEOUT_S, check=False
        )
    except FileNotFoundError as exc:  # a deployment fault, not bad input
        raise RuntimeError("jpegtran (libjpeg-turbo) is needed to transcode progressive JPEG") from exc
    except subprocess.TimeoutExpired as exc:
        raise _at(sof_offset, 0xC2, f"progressive stream took longer than {JPEGTRAN_TIMEOUT_S:.0f} s "
                  "to transcode") from exc
    if done.returncode != 0 or not done.stdout:
        # libjpeg's messages are generic ("Corrupt JPEG data: ..."): they quote no content.
        lines = done.stderr.decode("ascii", "replace").strip().splitlines()
        why = lines[-1][:200] if lines else f"exit status {done.returncode}"
        raise _at(sof_offset, 0xC2, f"progressive scan data is corrupt (jpegtran: {why})")
    return done.stdout

"""De-identification by PS3.15 Annex E, driven by the profile table in `data/`.

The table (`data/confidentiality_profile.json`, made by `scripts/convert_profile_table.py` from
PS3.15 Table E.1-1) gives, per attribute, the Basic Profile action and the action under each
option. `action_for` resolves a row to one action; `deidentify` applies the actions to every
element of the table found at any depth, handles what the table only names by class (private
attributes, overlay and curve groups), then writes the pseudonym and the PS3.15 E.1.1 markers.

Actions (PS3.15 E.1.1) and what they do here:
    X  remove the element.
    Z  empty value (an empty sequence for SQ).
    D  a dummy value valid for the VR: "ANONYMIZED" for text, names, codes (CS) and AE titles,
       19000101 / 19000101000000 / 000000 for DA / DT / TM (under the modified-dates option a
       readable date is shifted instead), "000D" for AS, 0 for numbers, eight zero bytes for
       binary VRs, "about:blank" for UR, the mapped UID for UI; an empty sequence for SQ (we
       cannot invent valid items for an arbitrary sequence; a Type 1 sequence may then be
       empty, which we accept rather than keep identifying content). Patient ID and Patient's
       Name get the pseudonym afterwards, whatever the table did.
    K  keep; a sequence is kept and its items de-identified with the same table ("keep ...
       cleaned for sequences", E.1.1).
    C  clean: dates/datetimes shifted by `DeidContext.date_shift_days` under the
       retain-longitudinal-modified-dates option (times of day unchanged); a sequence is kept,
       its items de-identified with the table and free text in them (LT, ST, UT, UC, PN not
       listed in the table) emptied; any other value is emptied, or given a dummy where the
       Basic Profile asks for D (a value must stay present).
    U  UIDs replaced by `uids.map_uid(secret, uid)`: the same input UID gives the same output
       UID everywhere (in sequences, across instances), and nothing reverses without the secret.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from dicom_mapping.uids import keyed_uid, map_uid

# Our option names (config `deid.options`) -> the column of PS3.15 Table E.1-1 (E.3.x).
OPTIONS: dict[str, str] = {
    "retain-safe-private": "rtnSafePrivOpt",  # E.3.10
    "retain-uids": "rtnUIDsOpt",  # E.3.9
    "retain-device-identity": "rtnDevIdOpt",  # E.3.8
    "retain-institution-identity": "rtnInstIdOpt",  # E.3.11
    "retain-patient-characteristics": "rtnPatCharsOpt",  # E.3.7
    "retain-longitudinal-full-dates": "rtnLongFullDatesOpt",  # E.3.6
    "retain-longitudinal-modified-dates": "rtnLongModifDatesOpt",  # E.3.6
    "clean-descriptors": "cleanDescOpt",  # E.3.5
    "clean-structured-content": "cleanStructContOpt",  # E.3.4
    "clean-graphics": "cleanGraphOpt",  # E.3.3
}

FULL_DATES = "retain-longitudinal-full-dates"
MODIFIED_DATES = "retain-longitudinal-modified-dates"

# PS3.16 CID 7050 De-identification Method (scheme DCM): code value and meaning per option.
_BASIC_CODE = ("113100", "Basic Application Confidentiality Profile")
_OPTION_CODES: dict[str, tuple[str, str]] = {
    "retain-safe-private": ("113111", "Retain Safe Private Option"),
    "retain-uids": ("113110", "Retain UIDs Option"),
    "retain-device-identity": ("113109", "Retain Device Identity Option"),
    "retain-institution-identity": ("113112", "Retain Institution Identity Option"),
    "retain-patient-characteristics": ("113108", "Retain Patient Characteristics Option"),
    FULL_DATES: ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    MODIFIED_DATES: ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "clean-descriptors": ("113105", "Clean Descriptors Option"),
    "clean-structured-content": ("113104", "Clean Structured Content Option"),
    "clean-graphics": ("113103", "Clean Graphics Option"),
}

# PS3.15 E.1.1: a combined Basic Profile action picks its branch by the attribute's Type in the
# IOD ("X/Z: X unless Z is required to maintain IOD conformance (Type 3 versus Type 2)", and so
# on). We de-identify objects of several IODs and do not look the Type up per IOD, so we take
# the branch that conforms whatever the Type: an empty value is allowed for Type 2 and 3, a
# dummy for Type 1, 2 and 3, so X/Z -> Z, X/D -> D, Z/D -> D, X/Z/D -> D. X/Z/U* (sequences of
# references) -> U: the sequence stays, the instance UIDs inside it are replaced (by their own
# U rows, applied inside the items). None of these keeps an identifying value.
_COMBINED: dict[str, str] = {
    "X/Z": "Z",
    "X/D": "D",
    "Z/D": "D",
    "X/Z/D": "D",
    "X/Z/U*": "U",
    "X/Z/U": "U",
}
# When several chosen options name an action for one row (say a calibration date under both
# retain-device-identity, K, and retain-longitudinal-modified-dates, C), the more protective
# action wins: first in this order.
_PROTECTIVE_ORDER = "XZDUCK"

_FREE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UC", "PN"})
_STRING_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"})
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_INT_VRS = frozenset({"SL", "SS", "SV", "UL", "US", "UV"})
_DUMMY_TEXT = "ANONYMIZED"  # valid in AE, CS, SH, LO, ST, LT, UC, UT and PN

# File Meta Information (PS3.10 7.1) elements that name the sending or receiving station
# (Type 3). PS3.15 E.3.8 leaves them out of the table because the File Meta Information is
# replaced when a de-identified file is written (E.1.1); we remove them here so that a copy
# that keeps `file_meta` does not carry them either.
_FILE_META_STATION_KEYWORDS = (
    "SourceApplicationEntityTitle",
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
    "SourcePresentationAddress",
    "SendingPresentationAddress",
    "ReceivingPresentationAddress",
    "PrivateInformationCreatorUID",
    "PrivateInformation",
)


@dataclass(frozen=True)
class ProfileRow:
    """One row of PS3.15 Table E.1-1: tag as 8 hex digits ("0010 0010" -> "00100010"; "x" for
    a repeating-group digit; "ggggeeee" for all private attributes)."""

    tag: str
    name: str
    keyword: str | None
    basic: str
    options: Mapping[str, str]


def _package_data(name: str) -> str:
    """A file of `dicom_mapping/data`, read through importlib.resources.

    When `dicom_mapping` was imported as a namespace package (pytest with `tests/` on sys.path
    sees the directory tests/dicom_mapping as a portion of it), importlib.resources cannot open
    the package; the file beside this module is then the same file.
    """
    try:
        return resources.files(__package__).joinpath(f"data/{name}").read_text(encoding="utf-8")
    except (NotADirectoryError, FileNotFoundError, TypeError):
        return (Path(__file__).resolve().parent / "data" / name).read_text(encoding="utf-8")


@functools.cache
def profile_rows() -> tuple[ProfileRow, ...]:
    """The profile table, read once from the package data."""
    table = json.loads(_package_data("confidentiality_profile.json"))
    return tuple(
        ProfileRow(
            tag=r["tag"],
            name=r["name"],
            keyword=r["keyword"],
            basic=r["basic"],
            options=MappingProxyType(dict(r["options"])),
        )
        for r in table["rows"]
    )


@functools.cache
def _rows_by_tag() -> dict[int, ProfileRow]:
    """Rows with one concrete tag; the class rows (private, 50xx, 60xx) are handled by group."""
    return {int(r.tag, 16): r for r in profile_rows() if re.fullmatch(r"[0-9A-F]{8}", r.tag)}


def _check_options(options: frozenset[str]) -> None:
    unknown = sorted(set(options) - OPTIONS.keys())
    if unknown:
        raise ValueError(
            f"unknown de-identification option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}"
        )
    if FULL_DATES in options and MODIFIED_DATES in options:
        # PS3.15 E.3.6: full dates are retained, or modified; not both.
        raise ValueError(f"options {FULL_DATES} and {MODIFIED_DATES} exclude each other")


def _resolve(action: str) -> str:
    return _COMBINED.get(action, action)


def action_for(row: ProfileRow, options: frozenset[str]) -> str:
    """The one action (D, Z, X, K, C or U) for `row` under the chosen options.

    An option's action replaces the Basic Profile action (PS3.15 E.3); combined actions are
    resolved as `_COMBINED` explains.
    """
    _check_options(options)
    chosen = {row.options[o] for o in options if o in row.options}
    if chosen:
        return _resolve(min(chosen, key=lambda a: _PROTECTIVE_ORDER.index(_resolve(a))))
    return _resolve(row.basic)


@dataclass(frozen=True)
class DeidContext:
    """What one de-identification needs. `keep_keywords` are top-level attributes the builder
    set on purpose after checking them (e.g. ContentDate already shifted): not touched."""

    secret: bytes
    patient_pseudonym: str  # replaces PatientID and PatientName
    options: frozenset[str]
    date_shift_days: int = 0  # used by C on dates with retain-longitudinal-modified-dates
    safe_private_creators: frozenset[str] = frozenset()  # these private blocks survive
    keep_keywords: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", frozenset(self.options))
        object.__setattr__(self, "safe_private_creators", frozenset(self.safe_private_creators))
        object.__setattr__(self, "keep_keywords", frozenset(self.keep_keywords))
        _check_options(self.options)
        if not self.secret:
            raise ValueError("de-identification needs a non-empty secret")
        if not self.patient_pseudonym:
            raise ValueError("de-identification needs a patient pseudonym")
        unknown = sorted(k for k in self.keep_keywords if tag_for_keyword(k) is None)
        if unknown:
            raise ValueError(f"keep_keywords: not DICOM keywords: {', '.join(unknown)}")


def deidentify(ds: Dataset, ctx: DeidContext) -> Dataset:
    """A de-identified copy of `ds` (deep copy; `ds` is left untouched), file meta included."""
    out = copy.deepcopy(ds)
    keep_tags = frozenset(int(tag_for_keyword(k) or 0) for k in ctx.keep_keywords)  # checked
    _clean_dataset(out, ctx, keep_tags=keep_tags, in_clean=False)
    _clean_file_meta(ds, out, ctx)

    # The pseudonym is the patient's identity in the output (README "Pseudonyms and UIDs").
    if "PatientID" not in ctx.keep_keywords:
        out.PatientID = ctx.patient_pseudonym
    if "PatientName" not in ctx.keep_keywords:
        out.PatientName = ctx.patient_pseudonym
    # PS3.15 E.3.6: Longitudinal Temporal Information Modified (0028,0303) says what happened
    # to dates and times.
    if MODIFIED_DATES in ctx.options:
        out.LongitudinalTemporalInformationModified = "MODIFIED"
    elif FULL_DATES in ctx.options:
        out.LongitudinalTemporalInformationModified = "UNMODIFIED"
    else:
        out.LongitudinalTemporalInformationModified = "REMOVED"
    # Burned In Annotation (0028,0301) is not in the table: left as the builder or the
    # input set it; the caller decides whether to refuse an input that says YES.
    mark_deidentified(out, ctx.options)
    return out


def mark_deidentified(ds: Dataset, options: frozenset[str]) -> None:
    """Set (0012,0062) Patient Identity Removed, (0012,0063) De-identification Method and
    (0012,0064) De-identification Method Code Sequence (PS3.15 E.1.1; codes from CID 7050).

    Retain Safe Private (113111) is listed when chosen, and also when private attributes are
    present: after `deidentify` only blocks of safe creators can remain, and retaining them is
    what that option means (E.3.10).
    """
    _check_options(options)
    chosen = [o for o in OPTIONS if o in options]
    if "retain-safe-private" not in chosen and any(e.tag.is_private for e in ds):
        chosen.insert(0, "retain-safe-private")
    codes = [_BASIC_CODE, *(_OPTION_CODES[o] for o in chosen)]
    ds.PatientIdentityRemoved = "YES"
    # LO, at most 64 characters a value: one value per profile or option meaning.
    ds.DeidentificationMethod = [meaning for _, meaning in codes]
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)


# --- the walk ----------------------------------------------------------------------------


def _clean_dataset(
    ds: Dataset, ctx: DeidContext, *, keep_tags: frozenset[int], in_clean: bool
) -> None:
    """Apply the table to every element of `ds`, recursing into the sequences that stay.

    `keep_tags` applies to this level only (the top level); `in_clean` is set inside a
    sequence being cleaned (C), where free text the table does not list is emptied too.
    """
    safe_blocks = _safe_private_blocks(ds, ctx.safe_private_creators)
    rows = _rows_by_tag()
    for tag in list(ds.keys()):
        if tag in keep_tags:
            continue
        elem = ds[tag]
        group = tag.group
        if tag.is_private:
            # PS3.15 E.1-1 "(gggg,eeee) where gggg is odd": X; only blocks whose Private
            # Creator we know to be safe (E.3.10; our own consent block) are kept.
            if _private_is_safe(tag, safe_blocks):
                _recurse(elem, ctx, in_clean=in_clean)
            else:
                del ds[tag]
            continue
        if tag.element == 0x0000:
            del ds[tag]  # group length (PS3.5 7.2): retired, and wrong once elements go
            continue
        if 0x5000 <= group <= 0x501E or 0x6000 <= group <= 0x601E:
            # Curve groups (50xx,xxxx) and overlay groups (60xx): Table E.1-1 removes curve
            # data, overlay data and overlay comments (X; C under clean-graphics). We cannot
            # clean a bitmap, so the whole group goes, with or without that option; the
            # remaining overlay attributes would describe nothing.
            del ds[tag]
            continue
        row = rows.get(int(tag))
        if row is None:
            if in_clean and elem.VR in _FREE_TEXT_VRS:
                elem.value = _empty_value(elem.VR)
            else:
                _recurse(elem, ctx, in_clean=in_clean)
            continue
        _apply(ds, elem, row, action_for(row, ctx.options), ctx, in_clean=in_clean)


def _recurse(elem: DataElement, ctx: DeidContext, *, in_clean: bool) -> None:
    if elem.VR == "SQ":
        for item in elem.value:
            _clean_dataset(item, ctx, keep_tags=frozenset(), in_clean=in_clean)


def _apply(
    ds: Dataset,
    elem: DataElement,
    row: ProfileRow,
    action: str,
    ctx: DeidContext,
    *,
    in_clean: bool,
) -> None:
    vr = elem.VR
    if action == "X":
        del ds[elem.tag]
    elif action == "K":
        _recurse(elem, ctx, in_clean=in_clean)
    elif action == "Z":
        elem.value = _empty_value(vr)
    elif action == "D":
        elem.value = _dummy(elem, ctx)
    elif action == "U":
        if vr == "SQ":
            _recurse(elem, ctx, in_clean=in_clean)
        elif vr == "UI":
            elem.value = _map_values(elem.value, ctx.secret)
        else:
            elem.value = _dummy(elem, ctx)
    elif action == "C":
        _clean_value(elem, row, ctx)
    else:  # the converter admits no other action
        raise ValueError(f"({row.tag}) {row.name}: unknown action {action!r}")


def _clean_value(elem: DataElement, row: ProfileRow, ctx: DeidContext) -> None:
    vr = elem.VR
    if vr == "SQ":
        _recurse(elem, ctx, in_clean=True)
        return
    if MODIFIED_DATES in ctx.options and vr in ("DA", "DT", "TM"):
        # PS3.15 E.3.6 Modified Dates: every date moves by the same per-patient shift, so
        # intervals survive. A shift by whole days leaves a time of day (TM) as it was.
        if vr == "TM":
            return
        shifted = _shift_values(elem.value, vr, ctx.date_shift_days)
        if shifted is not None:
            elem.value = shifted
            return
    # Anything we do not know how to clean is removed from the value: emptied, or a dummy
    # where the Basic Profile needs a value to stay (D).
    if _resolve(row.basic) == "D":
        elem.value = _dummy(elem, ctx)
    else:
        elem.value = _empty_value(vr)


def _empty_value(vr: str) -> Any:
    if vr == "SQ":
        return Sequence()
    if vr in _BINARY_VRS:
        return b""
    if vr in _STRING_VRS or vr in ("DA", "DT", "TM", "UI", "AS", "DS", "IS"):
        return ""
    return None


def _dummy(elem: DataElement, ctx: DeidContext) -> Any:
    """A non-empty value valid for the VR that says nothing about anyone (action D)."""
    vr = elem.VR
    if vr == "SQ":
        return Sequence()  # see the module docstring
    if vr == "UI":
        if _has_value(elem.value):
            return _map_values(elem.value, ctx.secret)
        return keyed_uid(ctx.secret, "dummy", f"{int(elem.tag):08X}")
    if vr in ("DA", "DT"):
        if MODIFIED_DATES in ctx.options and _has_value(elem.value):
            shifted = _shift_values(elem.value, vr, ctx.date_shift_days)
            if shifted is not None:
                return shifted
        return "19000101" if vr == "DA" else "19000101000000"
    if vr == "TM":
        return "000000"
    if vr == "AS":
        return "000D"
    if vr in ("DS", "IS"):
        return "0"
    if vr in _INT_VRS:
        return 0
    if vr in ("FL", "FD"):
        return 0.0
    if vr == "AT":
        return 0
    if vr == "UR":
        return "about:blank"
    if vr in _BINARY_VRS:
        return b"\x00" * 8  # a multiple of every binary VR's unit
    return _DUMMY_TEXT


def _has_value(value: Any) -> bool:
    if isinstance(value, (list, MultiValue)):
        return any(str(v).strip() for v in value)
    return value is not None and str(value).strip() != ""


def _map_values(value: Any, secret: bytes) -> Any:
    """U: each UID replaced by its keyed mapping; empty values stay empty (there is nothing
    to link, and a constant would falsely link unrelated instances)."""
    if isinstance(value, (list, MultiValue)):
        return [map_uid(secret, str(v)) if str(v).strip() else "" for v in value]
    if value is None or str(value).strip() == "":
        return value
    return map_uid(secret, str(value))


# --- dates ---------------------------------------------------------------------------------

_DT_RE = re.compile(r"(\d{4})(\d{2})?(\d{2})?(.*)", re.DOTALL)


def _shift_values(value: Any, vr: str, days: int) -> Any:
    """`value` (one or more DA or DT values) moved by `days`; None when one cannot be read."""
    values = list(value) if isinstance(value, (list, MultiValue)) else [value]
    out: list[str] = []
    for v in values:
        text = str(v).strip() if v is not None else ""
        if not text:
            out.append("")
            continue
        shifted = _shift_da(text, days) if vr == "DA" else _shift_dt(text, days)
        if shifted is None:
            return None
        out.append(shifted)
    return out if isinstance(value, (list, MultiValue)) else out[0]


def _shift_da(text: str, days: int) -> str | None:
    digits = text.replace(".", "")  # ACR-NEMA "YYYY.MM.DD" (PS3.5 6.2, retired form)
    if not re.fullmatch(r"\d{8}", digits):
        return None
    try:
        day = dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
        return (day + dt.timedelta(days=days)).strftime("%Y%m%d")
    except (ValueError, OverflowError):
        return None


def _shift_dt(text: str, days: int) -> str | None:
    """PS3.5 6.2 DT "YYYYMMDDHHMMSS.FFFFFF&ZZXX": the date part moves, the time and the UTC
    offset stay; a value of lower precision (YYYY, YYYYMM) keeps its precision."""
    m = _DT_RE.fullmatch(text)
    if not m:
        return None
    year, month, dday, rest = m.group(1), m.group(2), m.group(3), m.group(4)
    if dday is None and rest:
        return None  # a time without a full date: not a DT we can read
    try:
        day = dt.date(int(year), int(month or 1), int(dday or 1)) + dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    shifted = f"{day.year:04d}" + (f"{day.month:02d}" if month else "")
    return shifted + (f"{day.day:02d}" if dday else "") + rest


# --- private blocks and file meta ------------------------------------------------------------


def _safe_private_blocks(ds: Dataset, creators: frozenset[str]) -> frozenset[tuple[int, int]]:
    """(group, block) of every private block in `ds` whose creator is in `creators`."""
    if not creators:
        return frozenset()
    blocks = set()
    for elem in ds:
        tag = elem.tag
        if tag.is_private and 0x0010 <= tag.element <= 0x00FF:
            value = elem.value
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            if isinstance(value, str) and value.strip(" \x00") in creators:
                blocks.add((tag.group, tag.element))
    return frozenset(blocks)


def _private_is_safe(tag: BaseTag, safe_blocks: frozenset[tuple[int, int]]) -> bool:
    if 0x0010 <= tag.element <= 0x00FF:  # a Private Creator element itself
        return (tag.group, tag.element) in safe_blocks
    if tag.element >= 0x1000:  # (gggg,xxyy): block xx
        return (tag.group, tag.element >> 8) in safe_blocks
    return False  # (gggg,0001-000F), (gggg,0100-0FFF): not in any block


def _clean_file_meta(source: Dataset, out: Dataset, ctx: DeidContext) -> None:
    meta = getattr(out, "file_meta", None)
    if meta is None:
        return
    # PS3.10 7.1: Media Storage SOP Instance UID equals the SOP Instance UID; Table E.1-1 maps
    # it (U) like the SOP Instance UID, so both give the same output UID.
    if "MediaStorageSOPInstanceUID" in meta:
        original = meta.MediaStorageSOPInstanceUID
        if (
            "SOPInstanceUID" in out
            and "SOPInstanceUID" in source
            and original == source.SOPInstanceUID
        ):
            meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
        else:
            row = _rows_by_tag()[0x00020003]
            if action_for(row, ctx.options) != "K":
                meta.MediaStorageSOPInstanceUID = _map_values(original, ctx.secret)
    for keyword in _FILE_META_STATION_KEYWORDS:
        if keyword in meta:
            delattr(meta, keyword)

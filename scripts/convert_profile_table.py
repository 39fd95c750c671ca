"""Convert the innolitics parse of PS3.15 Table E.1-1 into the repo's own profile table.

Kept for provenance: the output, `dicom_mapping/data/confidentiality_profile.json`, is committed
and is what the code reads. Run it again only when the source table is updated:

    .venv/bin/python scripts/convert_profile_table.py SOURCE_JSON

SOURCE_JSON is the innolitics parse of the table (innolitics
dicom-standard, `standard/confidentiality_profile_attributes.json`, commit
7f4749d09ed3ef2fa70637d376d423a4b13523cd, MIT). The licence file beside it is copied next to the
output. Where the parse disagrees with the standard, CORRECTIONS below says so and why; the
standard (PS3.15 Annex E) wins.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from pydicom.datadict import keyword_for_tag

REPO = Path(__file__).resolve().parent.parent
LICENSE_NAME = "LICENSE-innolitics-dicom-standard.txt"
OUT_DIR = REPO / "dicom_mapping" / "data"
OUT = OUT_DIR / "confidentiality_profile.json"

SOURCE_COMMIT = "7f4749d09ed3ef2fa70637d376d423a4b13523cd"
EXPECTED_ROWS = 621

# Our option names (config `deid.options`) -> the table's column names. Same order as the
# option columns of PS3.15 Table E.1-1; dicom_mapping.deid.OPTIONS is the same mapping.
OPTIONS: dict[str, str] = {
    "retain-safe-private": "rtnSafePrivOpt",
    "retain-uids": "rtnUIDsOpt",
    "retain-device-identity": "rtnDevIdOpt",
    "retain-institution-identity": "rtnInstIdOpt",
    "retain-patient-characteristics": "rtnPatCharsOpt",
    "retain-longitudinal-full-dates": "rtnLongFullDatesOpt",
    "retain-longitudinal-modified-dates": "rtnLongModifDatesOpt",
    "clean-descriptors": "cleanDescOpt",
    "clean-structured-content": "cleanStructContOpt",
    "clean-graphics": "cleanGraphOpt",
}

# The private-attributes row, "(GGGG,EEEE) where GGGG is odd", is written with this tag.
PRIVATE_TAG = "ggggeeee"

# Rows where the parse disagrees with the standard. Each: tag -> (field, parsed, corrected, why).
CORRECTIONS: dict[str, tuple[str, str, str, str]] = {
    "00100020": (
        "basic",
        "Z/D",
        "Z",
        (
            "Patient ID (0010,0020): the standard's table gives Basic Profile Z (so does the "
            "2023 edition, and so did earlier innolitics parses); Patient ID is Type 2 in the "
            "Patient Module, so the D branch of a Z/D could never apply there"
        ),
    ),
    "00880200": (
        "name",
        "Icon Image Sequence\n\n(see Note 11)",
        "Icon Image Sequence",
        (
            "the parse kept the table's note reference in the name (the note: an icon may show "
            "the burned-in identity, so it is removed)"
        ),
    ),
}

_VALID_ACTIONS = {"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}


def _tag(source_row: dict[str, str]) -> str:
    raw = source_row["tag"]
    if raw.upper().startswith("(GGGG,EEEE)"):
        return PRIVATE_TAG
    m = re.fullmatch(r"\(([0-9A-Fa-fXx]{4}),([0-9A-Fa-fXx]{4})\)", raw.strip())
    if not m:
        raise ValueError(f"unexpected tag {raw!r} in row {source_row['name']!r}")
    tag = (m.group(1) + m.group(2)).upper().replace("X", "x")
    if tag.lower() != source_row["id"].lower():
        raise ValueError(f"tag {raw!r} and id {source_row['id']!r} disagree")
    return tag


def _keyword(tag: str) -> str | None:
    if tag == PRIVATE_TAG or tag == "50xxxxxx":
        return None  # a whole class of elements, not one dictionary entry
    # pydicom knows the repeating overlay elements (60xx,3000) under their 6000 form
    return keyword_for_tag(int(tag.replace("x", "0"), 16)) or None


def convert(source: Path) -> dict[str, object]:
    rows_in = json.loads(source.read_text(encoding="utf-8"))
    if len(rows_in) != EXPECTED_ROWS:
        raise ValueError(f"{source}: {len(rows_in)} rows, expected {EXPECTED_ROWS}")
    rows: list[dict[str, object]] = []
    applied: list[str] = []
    for src in rows_in:
        tag = _tag(src)
        row: dict[str, object] = {
            "tag": tag,
            "name": src["name"],
            "keyword": _keyword(tag),
            "basic": src["basicProfile"],
            "options": {ours: src[col] for ours, col in OPTIONS.items() if src.get(col)},
        }
        if tag in CORRECTIONS:
            field, parsed, corrected, why = CORRECTIONS[tag]
            if row[field] != parsed:
                raise ValueError(f"{tag}: expected parsed {field} {parsed!r}, got {row[field]!r}")
            row[field] = corrected
            applied.append(f"({tag[:4]},{tag[4:]}) {field} {parsed!r} -> {corrected!r}: {why}")
        actions = [row["basic"], *row["options"].values()]  # type: ignore[attr-defined]
        if any(a not in _VALID_ACTIONS for a in actions):
            raise ValueError(f"{tag}: unexpected action in {actions}")
        rows.append(row)
    if len(applied) != len(CORRECTIONS):
        raise ValueError("a correction did not find its row")
    tags = [r["tag"] for r in rows]
    if len(set(tags)) != len(tags):
        raise ValueError("duplicate tags")
    rows.sort(key=lambda r: str(r["tag"]))
    source_text = (
        "PS3.15 Table E.1-1 (Application Level Confidentiality Profile Attributes), as parsed by "
        "innolitics/dicom-standard, path standard/confidentiality_profile_attributes.json, "
        f"commit {SOURCE_COMMIT}, MIT licence ({LICENSE_NAME}); the standard wins where they "
        "differ. Converted by scripts/convert_profile_table.py: tags as 8 hex digits, x for a "
        f"repeating-group digit, {PRIVATE_TAG!r} for (gggg,eeee) with gggg odd (all private "
        "attributes); keyword from pydicom's dictionary; option columns under our option names "
        "(config deid.options). Corrected against the standard: " + "; ".join(applied) + "."
    )
    return {"source": source_text, "options": OPTIONS, "rows": rows}


def _dumps(table: dict[str, object]) -> str:
    """JSON with one row per line, so that a change to the table reads as a one-line diff."""
    head = {k: v for k, v in table.items() if k != "rows"}
    text = json.dumps(head, indent=1, ensure_ascii=False)[:-2]  # drop the closing "\n}"
    rows_in: list[dict[str, object]] = table["rows"]  # type: ignore[assignment]
    rows = ",\n".join("  " + json.dumps(r, ensure_ascii=False) for r in rows_in)
    return text + ',\n "rows": [\n' + rows + "\n ]\n}\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: convert_profile_table.py SOURCE_JSON (the innolitics parse of PS3.15 "
              "Table E.1-1, with its licence file beside it)", file=sys.stderr)
        return 2
    source = Path(argv[1])
    table = convert(source)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    OUT.write_text(_dumps(table), encoding="utf-8")
    shutil.copyfile(source.parent / LICENSE_NAME, OUT_DIR / LICENSE_NAME)
    print(f"{OUT.relative_to(REPO)}: {len(table['rows'])} rows")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

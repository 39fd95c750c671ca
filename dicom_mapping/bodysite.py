"""Coded body sites: the sidecar's `body_site` → Anatomic Region Sequence (0008,2218) + Laterality.

Codes are SNOMED CT (coding scheme designator "SCT"), the concepts DICOM uses in CID 4031 "Common
Anatomic Regions" (PS3.16). Paired sites take a "left"/"right" prefix that becomes Image Laterality
/ Laterality (L/R), as PS3.3 C.7.3.1 and C.8.19.x.x expect, not a lateralized concept code. Free
text is never accepted: an unknown site is an input error, because free text may identify.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Site:
    code: str
    meaning: str
    paired: bool


_SITES: dict[str, Site] = {
    "abdomen": Site("818983003", "Abdomen", False),
    "ankle": Site("344001", "Ankle", True),
    "back": Site("77568009", "Back", False),
    "breast": Site("76752008", "Breast", True),
    "buttock": Site("46862004", "Buttock", True),
    "chest": Site("51185008", "Chest", False),
    "elbow": Site("127949000", "Elbow", True),
    "face": Site("89545001", "Face", False),
    "foot": Site("56459004", "Foot", True),
    "forearm": Site("14975008", "Forearm", True),
    "hand": Site("85562004", "Hand", True),
    "head": Site("69536005", "Head", False),
    "heel": Site("76853006", "Heel", True),
    "hip": Site("29836001", "Hip", True),
    "knee": Site("72696002", "Knee", True),
    "lower leg": Site("30021000", "Lower leg", True),
    "neck": Site("45048000", "Neck", False),
    "perineum": Site("38864007", "Perineum", False),
    "sacrum": Site("54735007", "Sacrum", False),
    "scalp": Site("41695006", "Scalp", False),
    "shoulder": Site("16982005", "Shoulder", True),
    "thigh": Site("68367000", "Thigh", True),
    "upper arm": Site("40983000", "Upper arm", True),
    "wrist": Site("8205005", "Wrist", True),
}


def _vocabulary() -> dict[str, tuple[Site, str | None]]:
    vocab: dict[str, tuple[Site, str | None]] = {}
    for name, site in _SITES.items():
        vocab[name] = (site, None)
        if site.paired:
            vocab[f"left {name}"] = (site, "L")
            vocab[f"right {name}"] = (site, "R")
    return vocab


# The accepted `body_site` values, lower case, each with its concept and implied laterality.
BODY_SITES: dict[str, tuple[Site, str | None]] = _vocabulary()


def lookup(body_site: str) -> tuple[Site, str | None]:
    """The concept and implied laterality (L, R or None) of a validated body site."""
    return BODY_SITES[body_site.strip().lower()]

"""Consent → attributes, and back.

PS3.3 C.7.2.3 Clinical Trial Study module: Consent for Clinical Trial Use Sequence (0012,0083)
with Consent for Distribution Flag (0012,0085) YES/NO/WITHDRAWN and, when YES, Distribution Type
(0012,0084); Clinical Trial Time Point ID (0012,0050) is Type 2. What the module cannot say (scope
list, date, role, identifiable permitted, assumed) goes in our own private block, declared safe in
the Private Data Element Characteristics Sequence (0008,0300) (PS3.3 C.12.1.1.7, PS3.15 E.3.10).
"""

from __future__ import annotations

import datetime as dt

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_mapping.metadata import Consent

PRIVATE_GROUP = 0x0013
PRIVATE_CREATOR = "PHOTO_GATEWAY CONSENT 1"
_SCOPE, _DATE, _ROLE, _IDENTIFIABLE, _ASSUMED = 0x01, 0x02, 0x03, 0x04, 0x05

_FLAG = {"granted": "YES", "refused": "NO", "withdrawn": "WITHDRAWN"}
_STATUS = {v: k for k, v in _FLAG.items()}


def distribution_type(consent: Consent) -> str:
    """PS3.3 C.7.2.3: NAMED_PROTOCOL, RESTRICTED_REUSE or PUBLIC_RELEASE (Type 1C when YES)."""
    return "PUBLIC_RELEASE" if "publication" in consent.scope else "RESTRICTED_REUSE"


def add_consent(ds: Dataset, consent: Consent, consent_date: dt.date | None) -> None:
    """Write the consent into `ds`. `consent_date` is the date after de-identification (shifted,
    kept or None), so the consent block never carries a date the profile would have removed."""
    item = Dataset()
    item.ConsentForDistributionFlag = _FLAG[consent.status]
    if consent.status == "granted":
        item.DistributionType = distribution_type(consent)
    ds.ConsentForClinicalTrialUseSequence = Sequence([item])
    if "ClinicalTrialTimePointID" not in ds:
        ds.ClinicalTrialTimePointID = ""  # Type 2

    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(_SCOPE, "LO", [s.upper() for s in consent.scope] or "")
    block.add_new(_DATE, "DA", consent_date.strftime("%Y%m%d") if consent_date else "")
    block.add_new(_ROLE, "LO", (consent.obtained_by_role or "").upper()[:64])
    block.add_new(_IDENTIFIABLE, "CS", "YES" if consent.identifiable_permitted else "NO")
    block.add_new(_ASSUMED, "CS", "YES" if consent.assumed else "NO")

    # Declare the block safe: it holds only coded values and a (de-identified) date.
    decl = Dataset()
    decl.PrivateGroupReference = PRIVATE_GROUP
    decl.PrivateCreatorReference = PRIVATE_CREATOR
    decl.BlockIdentifyingInformationStatus = "SAFE"
    existing = [
        d
        for d in ds.get("PrivateDataElementCharacteristicsSequence", [])
        if d.get("PrivateCreatorReference") != PRIVATE_CREATOR
    ]
    ds.PrivateDataElementCharacteristicsSequence = Sequence([*existing, decl])


def read_consent(ds: Dataset) -> Consent | None:
    """The consent recorded in a dataset (ours or a sender's), or None if there is none."""
    seq = ds.get("ConsentForClinicalTrialUseSequence")
    if not seq:
        return None
    flag = str(seq[0].get("ConsentForDistributionFlag", "")).strip().upper()
    if flag not in _STATUS:
        return None
    scope: tuple[str, ...] = ()
    date = None
    role = None
    identifiable = False
    assumed = False
    try:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    except KeyError:
        block = None
    if block is not None:
        def value(offset: int) -> object:
            return block[offset].value if offset in block else None

        raw_scope = value(_SCOPE)
        if raw_scope:
            items = [raw_scope] if isinstance(raw_scope, str) else list(raw_scope)  # type: ignore[call-overload]
            scope = tuple(str(s).lower() for s in items if s)
        raw_date = value(_DATE)
        if raw_date:
            date = dt.datetime.strptime(str(raw_date), "%Y%m%d").date()
        role = (str(value(_ROLE) or "").lower()) or None
        identifiable = value(_IDENTIFIABLE) == "YES"
        assumed = value(_ASSUMED) == "YES"
    elif flag == "YES" and str(seq[0].get("DistributionType", "")) == "PUBLIC_RELEASE":
        scope = ("publication",)
    return Consent.model_validate(
        {
            "status": _STATUS[flag],
            "scope": scope,
            "date": date,
            "obtained_by_role": role,
            "identifiable_permitted": identifiable,
            "assumed": assumed,
        }
    )

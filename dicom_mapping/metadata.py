"""The photo metadata contract (sidecar `x.jpg.json`, `--meta`, HTTP field `metadata`).

Validated strictly: unknown keys are an error, not ignored. The metadata is PHI: it is used to
build the object and then de-identified; `description` and other free text never reach the object.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dicom_mapping.bodysite import BODY_SITES
from dicom_mapping.errors import InputError

ConsentStatus = Literal["granted", "refused", "withdrawn"]
ConsentScope = Literal["clinical-care", "second-opinion", "teaching", "research", "publication"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Patient(_Strict):
    id: str = Field(min_length=1, max_length=64)
    issuer: str = Field(default="", max_length=64)
    name: str = Field(default="", max_length=320)
    birth_date: dt.date | None = None
    sex: Literal["F", "M", "O"] | None = None


class Consent(_Strict):
    status: ConsentStatus
    scope: tuple[ConsentScope, ...] = ()
    date: dt.date | None = None
    obtained_by_role: str | None = Field(default=None, max_length=64)
    identifiable_permitted: bool = False
    # Set by the gateway, never by a sender: the record came from a source's default_consent.
    assumed: bool = False

    @field_validator("scope")
    @classmethod
    def _no_duplicates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))


class PhotoMetadata(_Strict):
    patient: Patient | None = None
    accession_number: str | None = Field(default=None, max_length=16)
    body_site: str | None = None
    laterality: Literal["L", "R", "B", "U"] | None = None
    description: str | None = None  # free text: never copied into the object
    consent: Consent | None = None
    operator_role: str | None = Field(default=None, max_length=64)
    recognizable: bool = True

    @field_validator("body_site")
    @classmethod
    def _known_site(cls, value: str | None) -> str | None:
        if value is None:
            return None
        key = value.strip().lower()
        if key not in BODY_SITES:
            raise ValueError(
                "unknown body site; use one of the coded sites: " + ", ".join(sorted(BODY_SITES))
            )
        return key


def _describe(error: ValidationError) -> str:
    parts = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{where}'")
        else:
            parts.append(f"'{where}': {err['msg']}")
    return "; ".join(parts)


def parse_metadata(raw: bytes | str | dict[str, object]) -> PhotoMetadata:
    """Parse and validate metadata; InputError names the offending field (never its value)."""
    if isinstance(raw, (bytes, str)):
        try:
            data = json.loads(raw)
        except RecursionError:
            raise InputError("metadata is nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"metadata is not valid JSON ({exc.__class__.__name__})") from None
    else:
        data = raw
    if not isinstance(data, dict):
        raise InputError("metadata must be a JSON object")
    try:
        return PhotoMetadata.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"bad metadata: {_describe(exc)}") from None


def require_consent(meta: PhotoMetadata, default: Consent | None = None) -> PhotoMetadata:
    """The consent gate: granted consent, or the source's default (recorded as assumed).

    Medico-legal guidance: record the patient's consent before sharing a clinical photo.
    """
    consent = meta.consent
    if consent is None:
        if default is None:
            raise InputError("no consent record: the photo cannot be shared", status=0x0124)
        consent = default.model_copy(update={"assumed": True})
        meta = meta.model_copy(update={"consent": consent})
    if consent.status != "granted":
        raise InputError(f"consent {consent.status}: the photo cannot be shared", status=0x0124)
    return meta

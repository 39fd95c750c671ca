"""Keyed pseudonyms and UIDs (HMAC-SHA256 with the site secret).

The same input and secret always give the same output; nothing reverses without the secret.
A new secret is a new pseudonym space.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

_SEP = b"\x1f"  # unit separator: joins parts so that ("ab", "c") and ("a", "bc") differ


def _mac(secret: bytes, *parts: str | bytes) -> bytes:
    encoded = [p.encode("utf-8") if isinstance(p, str) else p for p in parts]
    return hmac.new(secret, _SEP.join(encoded), hashlib.sha256).digest()


def patient_pseudonym(secret: bytes, issuer: str, patient_id: str) -> str:
    """16 characters of base32 (A-Z, 2-7) of HMAC(issuer + "/" + ID): Patient ID and Name."""
    mac = hmac.new(secret, f"{issuer.strip()}/{patient_id.strip()}".encode(), hashlib.sha256)
    return base64.b32encode(mac.digest()).decode("ascii")[:16]


def keyed_uid(secret: bytes, kind: str, *parts: str | bytes) -> str:
    """`2.25.` + the integer of an RFC 9562 version-8 UUID built from HMAC(kind, parts).

    PS3.5 B.2: a UID derived from a UUID is "2.25." followed by the UUID as one decimal integer;
    at most 44 characters, well under the 64 of the UI VR.
    """
    raw = bytearray(_mac(secret, kind, *parts)[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80  # version 8: custom
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
    return "2.25." + str(uuid.UUID(bytes=bytes(raw)).int)


def map_uid(secret: bytes, uid: str) -> str:
    """An input object's UID mapped to its keyed replacement (same UID in, same UID out)."""
    return keyed_uid(secret, "uid", uid.strip().rstrip("\x00"))


def sop_instance_uid_for_bytes(secret: bytes, data_sha256: bytes, variant: str = "") -> str:
    """SOP Instance UID from HMAC(SHA-256 of the input bytes): a resend gets the same UID."""
    return keyed_uid(secret, "sop", data_sha256, variant)


def date_shift_days(secret: bytes, patient_pseudonym_value: str, max_days: int = 365) -> int:
    """One stable shift per patient for the modified-dates option (PS3.15 E.3.6): -max..-1 days."""
    mac = _mac(secret, "dateshift", patient_pseudonym_value)
    return -(int.from_bytes(mac[:4], "big") % max_days) - 1

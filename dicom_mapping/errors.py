"""The one error the mapping raises: the input is not acceptable and retrying will not help."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: refused at the door, or quarantined if found after staging. Never retried.

    The message names what was wrong (and where: byte offset, marker, field) but never quotes a
    value that could identify a patient.
    """

    def __init__(self, reason: str, *, status: int = 0xC000) -> None:
        super().__init__(reason)
        self.reason = reason
        # The DICOM status a C-STORE SCP answers for this input (PS3.4 Annex B.2.3):
        # 0xA900 dataset does not match SOP class, 0xC000 cannot understand, 0x0124 not authorized.
        self.status = status

    def __str__(self) -> str:
        return self.reason

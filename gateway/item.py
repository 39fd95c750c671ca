"""The one small record that flows through the stages: immutable; a stage returns a new one.

An item is one input going to one destination (routing fans an input out into one item per
destination). It carries ids, UIDs of the output, states and operator-readable reasons only: the
journal stores it as it is, and the journal holds no PHI. The photo and its metadata live in the
encrypted staging under the item's id.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["FINISHED", "KINDS", "SOURCES", "Item", "State", "new_id"]

ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
SOURCES = frozenset({"cli", "dimse", "folder", "http"})
KINDS = frozenset({"photo", "dicom"})


class State(StrEnum):
    """Where an item is: received → converted → sent → committed → purged, or a side exit."""

    RECEIVED = "received"  # staged and journalled: the door answered success
    CONVERTED = "converted"  # the output object is staged
    SENT = "sent"  # C-STORE success; waiting for storage commitment where configured
    COMMITTED = "committed"  # the PACS confirmed; staged files may go
    PURGED = "purged"  # staged files removed
    WAITING = "waiting"  # transient failure; retried at next_attempt_at
    QUARANTINED = "quarantined"  # permanent failure; kept encrypted until an operator acts
    REJECTED = "rejected"  # refused at ingest; nothing staged

    def __str__(self) -> str:
        return self.value


FINISHED = frozenset({State.PURGED, State.REJECTED})


@dataclass(frozen=True)
class Item:
    id: str  # new_id(): 32 hex characters from secrets; never derived from PHI
    source: str  # "cli" | "dimse" | "folder" | "http"
    state: State
    destination: str | None = None  # a destination name (one item per destination)
    calling_ae: str | None = None
    kind: str = "photo"  # "photo" | "dicom"
    sop_instance_uid: str | None = None  # of the output, once converted
    attempts: int = 0
    next_attempt_at: float | None = None  # epoch seconds
    reason: str | None = None  # operator-readable, no PHI
    created: float = 0.0
    updated: float = 0.0

    def __post_init__(self) -> None:
        # A wrong value here is a bug in the caller, not bad input: ValueError, quoted.
        if not isinstance(self.id, str) or not ID_PATTERN.match(self.id):
            raise ValueError(f"item id {self.id!r} is not 32 lowercase hexadecimal characters")
        if self.source not in SOURCES:
            raise ValueError(f"item source {self.source!r} is not one of {sorted(SOURCES)}")
        if self.kind not in KINDS:
            raise ValueError(f"item kind {self.kind!r} is not one of {sorted(KINDS)}")
        if not isinstance(self.state, State):
            # Accept the stored string ("received") and keep the field typed.
            object.__setattr__(self, "state", State(self.state))
        if self.attempts < 0:
            raise ValueError(f"item attempts {self.attempts!r} is negative")

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def replace(self, **changes: Any) -> Item:
        """A new item with `changes` applied (validated like a new one)."""
        return dataclasses.replace(self, **changes)


def new_id() -> str:
    """A fresh item id: 128 random bits as 32 hex characters, so it says nothing about the input."""
    return secrets.token_hex(16)

"""The item record: ids that say nothing about the input, immutability, validation."""

from __future__ import annotations

import dataclasses
import re

import pytest

from gateway.item import FINISHED, Item, State, new_id


def test_new_id_is_32_hex_characters_and_never_repeats() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_item_is_frozen_and_replace_returns_a_new_item() -> None:
    item = Item(id=new_id(), source="cli", state=State.RECEIVED)
    moved = item.replace(state=State.CONVERTED, sop_instance_uid="2.25.1", attempts=1)
    assert item.state is State.RECEIVED and item.sop_instance_uid is None
    assert (moved.id, moved.state, moved.sop_instance_uid, moved.attempts) == (
        item.id, State.CONVERTED, "2.25.1", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.state = State.SENT  # type: ignore[misc]


def test_state_from_its_stored_string() -> None:
    item = Item(id=new_id(), source="dimse", state="waiting")  # type: ignore[arg-type]
    assert item.state is State.WAITING
    assert State("purged") is State.PURGED and str(State.SENT) == "sent"


@pytest.mark.parametrize("changes", [
    {"id": "PATIENT-DOE-JANE"}, {"id": "A" * 32}, {"source": "email"}, {"kind": "video"},
    {"attempts": -1}, {"state": "lost"},
])
def test_invalid_fields_are_refused(changes: dict[str, object]) -> None:
    item = Item(id=new_id(), source="http", state=State.RECEIVED)
    with pytest.raises(ValueError):
        item.replace(**changes)


def test_finished_states_are_purged_and_rejected_only() -> None:
    assert {State.PURGED, State.REJECTED} == FINISHED
    assert Item(id=new_id(), source="folder", state=State.PURGED).finished
    assert not Item(id=new_id(), source="folder", state=State.QUARANTINED).finished

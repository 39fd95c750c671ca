"""The journal: durable, transactional item states that survive a crash and a race."""

from __future__ import annotations

import dataclasses
import os
import selectors
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.errors import GatewayError
from gateway.item import Item, State, new_id
from gateway.journal import Journal, JournalError, StateConflict

REPO = Path(__file__).resolve().parents[2]


def item(state: State = State.RECEIVED, **fields: object) -> Item:
    return Item(id=new_id(), source="cli", state=state, destination="pacs", **fields)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


@pytest.fixture
def journal(tmp_path: Path, clock: FakeClock) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.sqlite", clock)
    yield j
    j.close()


def test_database_is_wal_with_full_sync_and_private(journal: Journal) -> None:
    with sqlite3.connect(journal.path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert stat.S_IMODE(os.stat(journal.path).st_mode) == 0o600


def test_columns_mirror_the_item_and_nothing_else(journal: Journal) -> None:
    with sqlite3.connect(journal.path) as other:
        columns = [row[1] for row in other.execute("PRAGMA table_info(items)")]
    assert columns == [f.name for f in dataclasses.fields(Item)]


def test_add_sets_timestamps_and_get_returns_the_item(journal: Journal, clock: FakeClock) -> None:
    added = journal.add(item(calling_ae="CAMERA1", kind="photo"))
    assert (added.created, added.updated) == (1000.0, 1000.0)
    assert journal.get(added.id) == added
    assert journal.get(new_id()) is None
    with pytest.raises(JournalError, match="already in the journal"):
        journal.add(added)


def test_transition_moves_state_sets_fields_and_keeps_created(
        journal: Journal, clock: FakeClock) -> None:
    added = journal.add(item())
    clock.advance(7)
    moved = journal.transition(added.id, State.CONVERTED, expect=State.RECEIVED,
                               sop_instance_uid="2.25.42", attempts=1)
    assert moved.state is State.CONVERTED and moved.sop_instance_uid == "2.25.42"
    assert (moved.created, moved.updated, moved.attempts) == (1000.0, 1007.0, 1)
    assert journal.get(added.id) == moved
    # Without a guard any move is allowed; a guard may name several states.
    waiting = journal.transition(added.id, State.WAITING, reason="PACS unreachable",
                                 next_attempt_at=1100.0)
    assert journal.get(added.id) == waiting
    sent = journal.transition(added.id, State.SENT, expect={State.CONVERTED, State.WAITING},
                              reason=None, next_attempt_at=None)
    assert sent.reason is None and sent.state is State.SENT


def test_expect_guard_refuses_and_leaves_the_row_untouched(journal: Journal) -> None:
    added = journal.add(item())
    journal.transition(added.id, State.CONVERTED, expect=State.RECEIVED)
    before = journal.get(added.id)
    with pytest.raises(StateConflict, match="is converted, expected received") as refused:
        journal.transition(added.id, State.CONVERTED, expect=State.RECEIVED, attempts=5)
    assert isinstance(refused.value, JournalError) and isinstance(refused.value, GatewayError)
    assert journal.get(added.id) == before


def test_transition_refuses_unknown_items_and_fields(journal: Journal) -> None:
    with pytest.raises(JournalError, match="not in the journal"):
        journal.transition(new_id(), State.SENT)
    added = journal.add(item())
    for field in ("id", "created", "updated", "source", "patient_name"):
        with pytest.raises(TypeError):
            journal.transition(added.id, State.SENT, **{field: "x"})  # type: ignore[arg-type]
    assert journal.get(added.id) == added


def test_list_is_ordered_by_creation_and_hides_finished_items(
        journal: Journal, clock: FakeClock) -> None:
    ids = []
    for state in (State.RECEIVED, State.PURGED, State.QUARANTINED, State.REJECTED, State.WAITING):
        ids.append(journal.add(item(state)).id)
        clock.advance(1)
    assert [i.id for i in journal.list()] == [ids[0], ids[2], ids[4]]
    assert [i.id for i in journal.list(unfinished_only=False)] == ids
    assert [i.id for i in journal.list(states={State.QUARANTINED, State.PURGED})] == [ids[2]]
    assert [i.id for i in journal.list(unfinished_only=False, states={State.PURGED})] == [ids[1]]


def test_due_picks_workable_items_whose_time_has_come(journal: Journal) -> None:
    now = 2000.0
    due_now = [
        journal.add(item(State.RECEIVED)),
        journal.add(item(State.CONVERTED, next_attempt_at=now)),
        journal.add(item(State.WAITING, next_attempt_at=now - 1)),
        journal.add(item(State.SENT)),
    ]
    journal.add(item(State.WAITING, next_attempt_at=now + 1))  # not yet
    for state in (State.COMMITTED, State.PURGED, State.QUARANTINED, State.REJECTED):
        journal.add(item(state))
    assert [i.id for i in journal.due(now)] == [i.id for i in due_now]
    assert len(journal.due(now + 1)) == 5


def test_counts_every_state(journal: Journal) -> None:
    for state in (State.RECEIVED, State.RECEIVED, State.SENT, State.QUARANTINED):
        journal.add(item(state))
    counts = journal.counts()
    assert set(counts) == set(State)
    assert counts[State.RECEIVED] == 2 and counts[State.SENT] == 1
    assert counts[State.QUARANTINED] == 1 and counts[State.PURGED] == 0


def test_rows_survive_close_and_reopen(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path, clock) as first:
        added = first.add(item())
        moved = first.transition(added.id, State.WAITING, reason="timeout", attempts=2)
    with pytest.raises(JournalError, match="closed"):
        first.get(added.id)
    first.close()  # idempotent
    with Journal(path, clock) as second:
        assert second.get(added.id) == moved


@pytest.mark.parametrize("shared", [True, False], ids=["one-journal", "two-journals"])
def test_two_threads_racing_for_an_item_exactly_one_wins(tmp_path: Path, shared: bool) -> None:
    """With one Journal the lock decides; with two (two connections) SQLite's write lock does."""
    path = tmp_path / "race.sqlite"
    journals = [Journal(path)] if shared else [Journal(path), Journal(path)]
    items = [journals[0].add(item()) for _ in range(25)]
    for it in items:
        barrier = threading.Barrier(2)
        outcomes: dict[str, str] = {}

        def take(worker: str, j: Journal, it: Item = it, barrier: threading.Barrier = barrier,
                 outcomes: dict[str, str] = outcomes) -> None:
            barrier.wait()
            try:
                j.transition(it.id, State.CONVERTED, expect=State.RECEIVED, reason=worker)
                outcomes[worker] = "won"
            except StateConflict:
                outcomes[worker] = "lost"

        threads = [threading.Thread(target=take, args=(w, journals[n % len(journals)]))
                   for n, w in enumerate(("a", "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert sorted(outcomes.values()) == ["lost", "won"]
        winner = next(w for w, o in outcomes.items() if o == "won")
        assert journals[0].get(it.id).reason == winner  # type: ignore[union-attr]
    for j in journals:
        j.close()


CHILD = """
import sys
from pathlib import Path
from gateway.item import Item, State, new_id
from gateway.journal import Journal
journal = Journal(Path(sys.argv[1]))
n = 0
while True:
    it = journal.add(Item(id=new_id(), source="cli", state=State.RECEIVED, destination="pacs"))
    print("added", it.id, flush=True)
    journal.transition(it.id, State.CONVERTED, expect=State.RECEIVED, attempts=1,
                       sop_instance_uid=f"2.25.{n}", reason=f"step {n}", next_attempt_at=float(n))
    print("converted", it.id, n, flush=True)
    n += 1
"""


def test_sigkill_mid_way_loses_no_committed_row_and_half_writes_none(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite"
    errors = tmp_path / "child.err"
    with open(errors, "w") as err:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=REPO, text=True,
                                 stdout=subprocess.PIPE, stderr=err,
                                 env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.stdout is not None
    lines: list[str] = []
    try:
        selector = selectors.DefaultSelector()
        selector.register(child.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 15
        while sum(ln.startswith("converted") for ln in lines) < 60:
            assert time.monotonic() < deadline, f"child too slow: {errors.read_text()}"
            if selector.select(timeout=0.5):
                line = child.stdout.readline()
                assert line, f"child exited: {errors.read_text()}"
                lines.append(line)
        # Killed while it keeps adding and moving items: mid-way through some transaction.
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    lines += child.stdout.read().splitlines()  # acknowledged before the kill
    child.stdout.close()
    added = [ln.split()[1] for ln in lines if ln.startswith("added")]
    converted = {ln.split()[1]: int(ln.split()[2]) for ln in lines if ln.startswith("converted")}

    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Journal(path) as journal:
        rows = {i.id: i for i in journal.list(unfinished_only=False)}
    # Every acknowledged add and transition is there; at most the one in flight is extra.
    assert set(added) <= set(rows) and len(rows) - len(added) in (0, 1)
    for item_id, n in converted.items():
        assert rows[item_id].state is State.CONVERTED and rows[item_id].attempts == 1
        assert rows[item_id].sop_instance_uid == f"2.25.{n}"
    # No row is half-written: a transition's fields are all there or none of them are.
    for row in rows.values():
        if row.state is State.RECEIVED:
            assert (row.attempts, row.sop_instance_uid, row.reason, row.next_attempt_at) == (
                0, None, None, None)
        else:
            assert row.state is State.CONVERTED
            n = int(row.sop_instance_uid.rsplit(".", 1)[1])  # type: ignore[union-attr]
            assert (row.attempts, row.reason, row.next_attempt_at) == (1, f"step {n}", float(n))

"""The state of every item, in SQLite (WAL): one row per item, each state change one transaction.

A restart resumes from here, so every write is durable before it returns: WAL mode with
`synchronous=FULL` fsyncs the log at each commit, and a process killed at any instant leaves each
row either as it was before a transaction or as it is after it, never in between.

Concurrency, chosen and why:
  * Within a process, one connection shared by all threads and serialized by a lock. The journal's
    statements are tiny; SQLite admits one writer at a time anyway, and a single connection needs
    no per-thread bookkeeping (connections of finished threads would otherwise leak until close()).
  * Every change runs in `BEGIN IMMEDIATE`, which takes SQLite's write lock before the row is read.
    The `expect=` guard of `transition()` reads the current state and updates it inside that one
    transaction, so two workers (threads here, or two processes or Journal objects on the same
    file) can never both take an item: the second sees the first's state and gets StateConflict.
    Another process holding the write lock is waited for up to `busy_timeout_s`.

The journal holds no PHI: ids, UIDs of outputs, destination names, states and reasons only (the
caller keeps reasons free of PHI, as everywhere). The file is created mode 0600; SQLite gives its
-wal and -shm files the same mode.
"""

from __future__ import annotations

import builtins
import dataclasses
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from gateway.clock import SYSTEM, Clock
from gateway.errors import GatewayError
from gateway.item import FINISHED, Item, State

__all__ = ["DUE_STATES", "Journal", "JournalError", "StateConflict"]

# Items the scheduler picks up when their next_attempt_at has come (or was never set).
DUE_STATES = frozenset({State.RECEIVED, State.CONVERTED, State.WAITING, State.SENT})

_COLUMNS = tuple(f.name for f in dataclasses.fields(Item))
# What transition() may change besides the state; id, source and the timestamps are the journal's.
_MUTABLE = frozenset(_COLUMNS) - {"id", "state", "source", "created", "updated"}
_SQL_TYPES = {"attempts": "INTEGER NOT NULL", "next_attempt_at": "REAL", "created": "REAL NOT NULL",
              "updated": "REAL NOT NULL", "id": "TEXT PRIMARY KEY", "source": "TEXT NOT NULL",
              "state": "TEXT NOT NULL", "kind": "TEXT NOT NULL"}
_SCHEMA_VERSION = 1


class JournalError(GatewayError):
    """The journal cannot do what was asked (unknown item, duplicate id, unusable database)."""


class StateConflict(JournalError):
    """The item is not in the state the caller expected: another worker got there first."""


def _states(expect: State | Iterable[State] | None) -> frozenset[State] | None:
    if expect is None:
        return None
    if isinstance(expect, State):
        return frozenset({expect})
    return frozenset(State(s) for s in expect)


class Journal:
    """One SQLite file of items. Thread-safe; see the module docstring for how."""

    def __init__(self, path: Path, clock: Clock = SYSTEM, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            # isolation_level=None: no implicit transactions; we issue BEGIN IMMEDIATE ourselves.
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise JournalError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); "
                                   "put the journal on a local filesystem")
            self._db.execute("PRAGMA synchronous=FULL")
            self._create_schema()
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot open the journal ({exc})") from exc
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot open the journal ({exc.strerror})") from exc

    # -- plumbing ------------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise JournalError(f"{self.path}: the journal is closed")
        return self._db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the thread lock: committed on success, else rolled back."""
        with self._lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise JournalError(f"{self.path}: cannot start a transaction ({exc})") from exc
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                    db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: Iterable[Any] = ()) -> builtins.list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn().execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"{self.path}: cannot read the journal ({exc})") from exc

    def _create_schema(self) -> None:
        columns = ",\n  ".join(f"{c} {_SQL_TYPES.get(c, 'TEXT')}" for c in _COLUMNS)
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise JournalError(f"{self.path}: journal schema {version} is newer than this "
                                   f"gateway understands ({_SCHEMA_VERSION}); upgrade the gateway")
            db.execute(f"CREATE TABLE IF NOT EXISTS items (\n  {columns}\n)")
            db.execute("CREATE INDEX IF NOT EXISTS items_state ON items (state, next_attempt_at)")
            db.execute("CREATE INDEX IF NOT EXISTS items_created ON items (created)")
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    @staticmethod
    def _item(row: tuple[Any, ...]) -> Item:
        return Item(**dict(zip(_COLUMNS, row, strict=True)))

    @staticmethod
    def _row(item: Item) -> tuple[Any, ...]:
        values = dataclasses.asdict(item)
        values["state"] = item.state.value
        return tuple(values[c] for c in _COLUMNS)

    # -- API -----------------------------------------------------------------------------------

    def add(self, item: Item) -> Item:
        """Journal a new item; sets created and updated to now. JournalError if the id exists."""
        now = self._clock.now()
        item = item.replace(created=now, updated=now)
        marks = ", ".join("?" for _ in _COLUMNS)
        try:
            with self._write() as db:
                db.execute(f"INSERT INTO items ({', '.join(_COLUMNS)}) VALUES ({marks})",
                           self._row(item))
        except sqlite3.IntegrityError:
            raise JournalError(f"item {item.id} is already in the journal") from None
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot add item {item.id} ({exc})") from exc
        return item

    def transition(self, item_id: str, state: State, *,
                   expect: State | Iterable[State] | None = None, **fields: Any) -> Item:
        """Move an item to `state` (and set `fields`) in one transaction; returns the new item.

        With `expect`, raises StateConflict unless the item is currently in one of those states:
        the guard that lets two workers race for an item and exactly one win.
        """
        unknown = set(fields) - _MUTABLE
        if unknown:
            raise TypeError(f"transition() cannot set {sorted(unknown)}; "
                            f"settable fields are {sorted(_MUTABLE)}")
        state = State(state)
        wanted = _states(expect)
        try:
            with self._write() as db:
                row = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM items WHERE id = ?",
                                 (item_id,)).fetchone()
                if row is None:
                    raise JournalError(f"item {item_id} is not in the journal")
                current = self._item(row)
                if wanted is not None and current.state not in wanted:
                    expected = " or ".join(sorted(s.value for s in wanted))
                    raise StateConflict(f"item {item_id} is {current.state.value}, expected "
                                        f"{expected}; not moved to {state.value}")
                new = current.replace(state=state, updated=self._clock.now(), **fields)
                sets = ", ".join(f"{c} = ?" for c in _COLUMNS if c != "id")
                db.execute(f"UPDATE items SET {sets} WHERE id = ?",
                           (*self._row(new)[1:], item_id))
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot move item {item_id} ({exc})") from exc
        return new

    def get(self, item_id: str) -> Item | None:
        rows = self._read(f"SELECT {', '.join(_COLUMNS)} FROM items WHERE id = ?", (item_id,))
        return self._item(rows[0]) if rows else None

    def list(self, *, unfinished_only: bool = True,
             states: set[State] | frozenset[State] | None = None) -> builtins.list[Item]:
        """Items ordered by creation; unfinished ones only by default, optionally of `states`."""
        wanted = set(State) if states is None else {State(s) for s in states}
        if unfinished_only:
            wanted -= FINISHED
        if not wanted:
            return []
        marks = ", ".join("?" for _ in wanted)
        rows = self._read(f"SELECT {', '.join(_COLUMNS)} FROM items WHERE state IN ({marks}) "
                          "ORDER BY created, rowid", [s.value for s in wanted])
        return [self._item(r) for r in rows]

    def due(self, now: float) -> builtins.list[Item]:
        """Items to work on now: in a due state, with next attempt unset or not in the future."""
        marks = ", ".join("?" for _ in DUE_STATES)
        rows = self._read(
            f"SELECT {', '.join(_COLUMNS)} FROM items WHERE state IN ({marks}) "
            "AND (next_attempt_at IS NULL OR next_attempt_at <= ?) ORDER BY created, rowid",
            [*(s.value for s in DUE_STATES), now])
        return [self._item(r) for r in rows]

    def counts(self) -> dict[State, int]:
        """Number of items in every state (zero included), for metrics and `queue list`."""
        result = {s: 0 for s in State}
        for state, n in self._read("SELECT state, COUNT(*) FROM items GROUP BY state"):
            result[State(state)] = n
        return result

    def close(self) -> None:
        """Close the connection (idempotent); later calls raise JournalError."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

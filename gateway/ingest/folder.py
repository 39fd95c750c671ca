"""The hot folder: camera software drops a photo and its sidecar; the gateway takes them.

What is taken, and when:
  * Photos are `.jpg .jpeg .png .heic .heif` (any case). The sidecar of `x.jpg` is `x.jpg.json`;
    `x.json` serves only when one photo has the stem `x` (`gateway.photos.sidecar_for`).
  * A file is taken only when it is complete: its size and mtime (and inode) have not changed
    for `stable_s` seconds, seen across polls and events, or it was renamed into the folder from
    `<name>.part` (writers that use the `.part` convention are taken at once). `*.part` files
    themselves are never looked at; nor are dotfiles (editors' and rsync's temporary files),
    symbolic links and subdirectories (`rejected/` and `.photo-gateway/` in particular).
  * The sidecar is complete by the same rule. With `require_sidecar` true a photo without one
    waits (the sidecar may come later) and a sidecar waits for its photo; with it false, a photo
    without a sidecar is rejected ("no metadata": the patient must come from somewhere).
  * Any other file (not a photo, not a `.json`) is rejected once complete, so that nothing sits in
    the folder unexplained.

What happens to it (`scan_once`):
  * `Intake.accept_photo` succeeded (staged and journalled): the photo, then the sidecar, are
    unlinked and the folder is fsynced.
  * InputError: the photo, then its sidecar, move to `rejected/` beside `<name>.reason.txt` (the
    reason; the only name in it is the one the user gave the file) and are never tried again. Their
    mtime is set to the time of rejection: `purge_rejected` deletes entries older than
    `rejected_retention_days`.
  * TransientError (staging full, worklist down) or a fault of the gateway's own: the files stay
    where they are and are tried again later, with a growing pause (2 s doubling to 60 s).

No double take across a crash - the ledger, chosen and why: a photo is deleted only after it is
staged, so a crash between the two would find the same file again at the next start. Before the
delete, the door records in `.photo-gateway/taken.sqlite` (SQLite, synchronous=FULL) the identity
of each taken file (device, inode, size, mtime in ns) and the SHA-256 of its content; a file whose
identity and hash are in the ledger is only deleted, not taken again. The ledger holds no names
and no PHI, and rows are pruned after 30 days (by then the file is long gone).
  The record is written after the staging, not before: recording first would lose the photo if the
gateway crashed before the staging finished (the file would be deleted as "taken"). So one window
remains, between Intake's journal commit and the ledger's commit (two consecutive SQLite commits):
a crash exactly there stages the photo twice. That is harmless by the contract: the SOP Instance
UID is keyed from the input bytes, so both items become the same instance in the PACS ("a resend
under the same SOP Instance UID is allowed and counted").

The same content dropped again (a new file with the same bytes) is taken again, deliberately: the
ledger recognizes files, not contents. A user who drops a photo a second time asks for it to be
sent; it becomes the same SOP Instance UID, so the PACS still holds one instance (Orthanc keeps
the first), and a resend after the PACS lost a study remains possible.

Logs name no file (file names may hold PHI): they carry item ids, reasons and a short reference
(the first 12 hex digits of the photo's SHA-256) that is also written in the reason file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from dicom_mapping.errors import InputError
from gateway.clock import SYSTEM, Clock
from gateway.errors import ConfigError, TransientError
from gateway.intake import Intake
from gateway.photos import MAX_INPUT_BYTES, sidecar_for
from gateway.settings import FolderSource
from gateway.staging import fsync_dir

__all__ = ["PHOTO_SUFFIXES", "FolderDoor"]

log = logging.getLogger(__name__)

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".heic", ".heif"})
PART_SUFFIX = ".part"
REJECTED_DIR = "rejected"
STATE_DIR = ".photo-gateway"
LEDGER_FILE = "taken.sqlite"
REASON_SUFFIX = ".reason.txt"
MAX_SIDECAR_BYTES = 1 << 20
LEDGER_KEEP_S = 30 * 86400
RETRY_FIRST_S, RETRY_MAX_S = 2.0, 60.0
PURGE_EVERY_S = 3600.0
DAY_S = 86400


def _one_line(name: str) -> str:
    """A file name for one line of a reason file: control characters as escapes, so that a
    name cannot start lines of its own (a newline and "reason: ..." in a name)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


@dataclass(frozen=True)
class _Ident:
    """What makes a file this file in this state: replaced or rewritten, it changes."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> _Ident:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class _Retry:
    ident: _Ident
    next_at: float
    failures: int


class _Ledger:
    """Identities and hashes of taken files, so a crash between staging and delete is finished by
    deleting, not by taking the file again."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        # The default rollback journal (not WAL): it works on any filesystem SQLite works on,
        # including shares a hot folder may live on. FULL: a recorded take survives a power cut.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS taken (dev INTEGER NOT NULL, ino INTEGER NOT NULL, "
            "size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, "
            "taken_at REAL NOT NULL, PRIMARY KEY (dev, ino, size, mtime_ns))")
        self._lock = threading.Lock()

    def record(self, files: Sequence[tuple[_Ident, str]], now: float) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO taken VALUES (?, ?, ?, ?, ?, ?)",
                    [(i.dev, i.ino, i.size, i.mtime_ns, sha, now) for i, sha in files])
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def hash_of(self, ident: _Ident) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT sha256 FROM taken WHERE dev = ? AND ino = ? AND size = ? AND mtime_ns = ?",
                (ident.dev, ident.ino, ident.size, ident.mtime_ns)).fetchone()
        return None if row is None else str(row[0])

    def prune(self, before: float) -> None:
        with self._lock:
            self._db.execute("DELETE FROM taken WHERE taken_at < ?", (before,))

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Events(FileSystemEventHandler):
    def __init__(self, door: FolderDoor) -> None:
        self.door = door

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.door._on_event(event)


class FolderDoor:
    """The hot-folder door. `start()` watches the folder; `scan_once()` does one pass by hand."""

    def __init__(self, cfg: FolderSource, intake: Intake, clock: Clock = SYSTEM, *,
                 stable_s: float = 1.0, sweep_s: float = 5.0) -> None:
        self.cfg = cfg
        self.intake = intake
        self.clock = clock
        self.stable_s = stable_s
        self.sweep_s = sweep_s  # a full pass at least this often, events or not (shares, NFS)
        self.folder = Path(cfg.path)
        self.rejected_dir = self.folder / REJECTED_DIR
        self.state_dir = self.folder / STATE_DIR
        self._lock = threading.RLock()  # one pass at a time
        self._events_lock = threading.Lock()
        self._seen: dict[str, tuple[_Ident, float]] = {}  # name -> (identity, since when)
        self._renamed: dict[str, _Ident] = {}  # name -> identity when renamed from .part
        self._retry: dict[str, _Retry] = {}
        self._waiting: set[str] = set()  # photos said to wait for a sidecar (logged once)
        self._ledger: _Ledger | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._observer: Any = None
        self._worker: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Watch the folder and take what is already there (it arrived while we were down)."""
        if self._worker is not None:
            return
        self._prepare()
        self._stopping.clear()
        observer = Observer()
        observer.schedule(_Events(self), str(self.folder), recursive=False)
        observer.start()  # before the first pass, so nothing arriving meanwhile goes unnoticed
        self._observer = observer
        self._worker = threading.Thread(target=self._run, name="folder-door", daemon=True)
        self._worker.start()
        log.info("folder door: watching (stable after %.1f s, sidecar %s)", self.stable_s,
                 "required" if self.cfg.require_sidecar else "optional")

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=10)
        worker, self._worker = self._worker, None
        if worker is not None:
            self._stopping.set()
            self._wake.set()
            worker.join(timeout=60)
        with self._lock:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None

    def _run(self) -> None:
        next_purge = 0.0
        while not self._stopping.is_set():
            try:
                self.scan_once()
            except Exception:  # never let the door die; the next pass tries again
                log.exception("folder door: pass failed")
            if self.clock.now() >= next_purge:
                try:
                    self.purge_rejected()
                except Exception:
                    log.exception("folder door: purge of rejected/ failed")
                next_purge = self.clock.now() + PURGE_EVERY_S
            self._wake.wait(self._wait_s())
            self._wake.clear()

    def _wait_s(self) -> float:
        """Until the next file could become complete or due for a retry; else the sweep."""
        now = self.clock.now()
        waits = [self.sweep_s]
        with self._lock:
            waits += [since + self.stable_s - now for _, since in self._seen.values()
                      if since + self.stable_s > now]
            waits += [r.next_at - now for r in self._retry.values() if r.next_at > now]
        return max(0.05, min(waits) + 0.01)

    def _on_event(self, event: FileSystemEvent) -> None:
        if event.event_type == "moved" and not event.is_directory:
            src, dest = Path(os.fsdecode(event.src_path)), Path(os.fsdecode(event.dest_path))
            if (src.name.lower().endswith(PART_SUFFIX) and dest.parent == self.folder
                    and not dest.name.lower().endswith(PART_SUFFIX)):
                try:
                    ident = _Ident.of(os.lstat(dest))
                except OSError:
                    ident = None
                if ident is not None:
                    with self._events_lock:
                        self._renamed[dest.name] = ident
        self._wake.set()

    def _prepare(self) -> None:
        if not self.folder.is_dir():
            raise ConfigError(f"{self.folder}: the hot folder does not exist or is not a folder")
        self.rejected_dir.mkdir(exist_ok=True)
        self.state_dir.mkdir(exist_ok=True, mode=0o700)
        if self._ledger is None:
            self._ledger = _Ledger(self.state_dir / LEDGER_FILE)

    # -- one pass ------------------------------------------------------------------------------

    def scan_once(self) -> int:
        """Process every complete, paired file now; how many were taken or rejected."""
        with self._lock:
            self._prepare()
            now = self.clock.now()
            photos: list[str] = []
            sidecars: list[str] = []
            others: list[str] = []
            for entry in os.scandir(self.folder):
                name = entry.name
                if name.startswith(".") or name.lower().endswith(PART_SUFFIX):
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue  # subdirectories (rejected/, .photo-gateway/), links, devices
                suffix = Path(name).suffix.lower()
                if suffix in PHOTO_SUFFIXES:
                    photos.append(name)
                elif suffix == ".json":
                    sidecars.append(name)
                else:
                    others.append(name)
            present = set(photos) | set(sidecars) | set(others)
            self._forget(present)
            photo_paths = [self.folder / n for n in photos]
            count = 0
            claimed: set[str] = set()
            for name in sorted(photos):
                side = sidecar_for(self.folder / name, photo_paths)
                if side is not None:
                    claimed.add(side.name)
                count += self._photo(self.folder / name, side, now)
            for name in sorted(set(sidecars) - claimed):
                count += self._orphan_sidecar(self.folder / name)
            for name in sorted(others):
                count += self._other(self.folder / name, now)
            return count

    def _forget(self, present: set[str]) -> None:
        for table in (self._seen, self._retry):
            for name in [n for n in table if n not in present]:
                del table[name]
        self._waiting &= present
        with self._events_lock:
            for name in [n for n in self._renamed if n not in present]:
                del self._renamed[name]

    def _complete(self, path: Path, now: float) -> _Ident | None:
        """The file's identity if it is complete (stable, or renamed from .part); else None."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        ident = _Ident.of(st)
        with self._events_lock:
            renamed = self._renamed.get(path.name)
        if renamed == ident:
            return ident
        seen = self._seen.get(path.name)
        if seen is None or seen[0] != ident:
            self._seen[path.name] = (ident, now)
            return ident if self.stable_s <= 0 else None
        return ident if now - seen[1] >= self.stable_s else None

    def _read(self, path: Path, expect: _Ident, limit: int, what: str) -> bytes | None:
        """The file's bytes if it is still exactly the file judged complete; else None."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as fh:
            if _Ident.of(os.fstat(fd)) != expect:
                return None
            if expect.size > limit:
                raise InputError(f"the {what} is {expect.size} bytes, over the limit of "
                                 f"{limit} bytes")
            data = fh.read(limit + 1)
            if len(data) != expect.size or _Ident.of(os.fstat(fd)) != expect:
                return None
        return data

    def _not_yet(self, name: str) -> int:
        """A file changed under us: start its stability wait again."""
        self._seen.pop(name, None)
        with self._events_lock:
            self._renamed.pop(name, None)
        return 0

    def _photo(self, path: Path, side: Path | None, now: float) -> int:
        ident = self._complete(path, now)
        side_ident = self._complete(side, now) if side is not None else None  # observe both
        if ident is None:
            return 0
        retry = self._retry.get(path.name)
        if retry is not None and retry.ident == ident and now < retry.next_at:
            return 0
        if side is None and self.cfg.require_sidecar:
            if path.name not in self._waiting:
                self._waiting.add(path.name)
                log.info("folder door: a photo waits for its sidecar")
            return 0
        if side is not None and side_ident is None:
            return 0
        self._waiting.discard(path.name)
        try:
            data = self._read(path, ident, MAX_INPUT_BYTES, "photo")
            if data is None:
                return self._not_yet(path.name)
            sha = hashlib.sha256(data).hexdigest()
            assert self._ledger is not None
            if self._ledger.hash_of(ident) == sha:
                # Taken before a crash (or a failed delete): finish the take, do not stage again.
                self._remove([path] + ([side] if side is not None and side_ident is not None
                                       and self._ledger.hash_of(side_ident) else []))
                log.info("folder door: removed an input taken before (ref %s)", sha[:12])
                return 1
            meta: bytes | None = None
            side_sha = ""
            if side is not None and side_ident is not None:
                meta = self._read(side, side_ident, MAX_SIDECAR_BYTES, "sidecar")
                if meta is None:
                    return self._not_yet(side.name)
                side_sha = hashlib.sha256(meta).hexdigest()
        except InputError as exc:
            self._reject(path, side, exc.reason, "")
            return 1
        except OSError as exc:
            self._backoff(path.name, ident, now, f"cannot read the input ({exc.strerror})")
            return 0
        try:
            items = self.intake.accept_photo(data, meta, source="folder",
                                             default_consent=self.cfg.default_consent)
        except InputError as exc:
            self._reject(path, side, exc.reason, sha[:12])
            return 1
        except TransientError as exc:
            self._backoff(path.name, ident, now, str(exc))
            return 0
        except Exception as exc:  # the gateway's own fault (journal, staging): keep the input
            log.exception("folder door: could not take an input (ref %s)", sha[:12])
            self._backoff(path.name, ident, now, f"{exc.__class__.__name__}")
            return 0
        taken = [(ident, sha)] + ([(side_ident, side_sha)] if side_ident is not None else [])
        try:
            assert self._ledger is not None
            self._ledger.record(taken, self.clock.now())
            self._remove([path] + ([side] if side is not None else []))
        except (OSError, sqlite3.Error) as exc:
            # Staged already; the ledger (if written) makes the next pass only delete. If the
            # ledger itself failed, the next pass stages again: same bytes, same SOP Instance UID.
            log.error("folder door: staged item(s) %s but could not remove the input (ref %s): %s",
                      " ".join(i.id for i in items), sha[:12], exc)
            self._backoff(path.name, ident, now, "removal failed")
            return 1
        self._retry.pop(path.name, None)
        log.info("folder door: took an input (ref %s) as item(s) %s", sha[:12],
                 " ".join(i.id for i in items))
        return 1

    def _orphan_sidecar(self, path: Path) -> int:
        """A sidecar without its photo: waits, unless it is left over from a take (crash)."""
        assert self._ledger is not None
        try:
            ident = _Ident.of(os.lstat(path))
        except FileNotFoundError:
            return 0
        sha = self._ledger.hash_of(ident)
        if sha is None:
            return 0
        data = self._read(path, ident, MAX_SIDECAR_BYTES, "sidecar")
        if data is None or hashlib.sha256(data).hexdigest() != sha:
            return 0
        self._remove([path])
        log.info("folder door: removed a sidecar left over from a take")
        return 1

    def _other(self, path: Path, now: float) -> int:
        if self._complete(path, now) is None:
            return 0
        suffix = path.suffix.lower() or "(no extension)"
        self._reject(path, None, f"not a photo: '{suffix}' files are not taken (photos are "
                     f"{', '.join(sorted(PHOTO_SUFFIXES))}, each with a .json sidecar)", "")
        return 1

    def _backoff(self, name: str, ident: _Ident, now: float, reason: str) -> None:
        previous = self._retry.get(name)
        failures = previous.failures + 1 if previous is not None and previous.ident == ident else 1
        delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (failures - 1))
        self._retry[name] = _Retry(ident, now + delay, failures)
        log.warning("folder door: an input stays in the folder, retried in %.0f s: %s", delay,
                    reason)

    # -- file operations -----------------------------------------------------------------------

    def _remove(self, paths: Sequence[Path]) -> None:
        """Unlink in order (photo, then sidecar), then make the removal durable."""
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        fsync_dir(self.folder)

    def _target(self, name: str) -> str:
        """A name in rejected/ not used yet by an entry (photo, sidecar or reason)."""
        base, suffix = Path(name).stem, Path(name).suffix
        candidate, n = name, 1
        while any((self.rejected_dir / f).exists()
                  for f in (candidate, candidate + ".json", candidate + REASON_SUFFIX)):
            n += 1
            candidate = f"{base}-{n}{suffix}"
        return candidate

    def _reject(self, path: Path, side: Path | None, reason: str, ref: str) -> None:
        """Reason file first, then the photo, then the sidecar into rejected/; never retried."""
        target = self._target(path.name)
        now = self.clock.now()
        when = dt.datetime.fromtimestamp(now).astimezone().replace(microsecond=0).isoformat()
        lines = [f"reason: {reason}", f"file: {_one_line(path.name)}"]
        if side is not None:
            lines.append(f"sidecar: {_one_line(side.name)}")
        lines.append(f"rejected at: {when}")
        if ref:
            lines.append(f"ref: {ref}")
        lines.append(f"deleted after: {self.cfg.rejected_retention_days} day(s)")
        reason_path = self.rejected_dir / (target + REASON_SUFFIX)
        tmp = self.rejected_dir / f".tmp-{os.getpid()}-{threading.get_ident()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, reason_path)
        moved = [(path, self.rejected_dir / target)]
        if side is not None:
            moved.append((side, self.rejected_dir / (target + ".json")))
        for src, dst in moved:
            with contextlib.suppress(FileNotFoundError):
                os.rename(src, dst)  # rejected/ is inside the folder: same filesystem, atomic
        # Retention counts from the rejection, not from when the camera wrote the file.
        for p in [reason_path, *(dst for _, dst in moved)]:
            with contextlib.suppress(FileNotFoundError):
                os.utime(p, (now, now))
        fsync_dir(self.rejected_dir)
        fsync_dir(self.folder)
        self._seen.pop(path.name, None)
        self._retry.pop(path.name, None)
        log.warning("folder door: rejected an input%s: %s", f" (ref {ref})" if ref else "", reason)

    # -- retention -----------------------------------------------------------------------------

    def purge_rejected(self) -> int:
        """Delete rejected/ entries older than rejected_retention_days; how many files went."""
        with self._lock:
            self._prepare()
            now = self.clock.now()
            cutoff = now - self.cfg.rejected_retention_days * DAY_S
            removed = 0
            for entry in os.scandir(self.rejected_dir):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(st.st_mode) or st.st_mtime >= cutoff:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
            if removed:
                fsync_dir(self.rejected_dir)
                log.info("folder door: deleted %d file(s) from rejected/ after %d day(s)",
                         removed, self.cfg.rejected_retention_days)
            assert self._ledger is not None
            self._ledger.prune(now - LEDGER_KEEP_S)
            return removed

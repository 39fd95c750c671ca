"""The stages after a door: convert → deliver → confirm → purge, one journal transition each.

    received ──convert──▶ converted ──C-STORE──▶ sent ──commitment──▶ committed ──▶ purged
        │                     │  ▲                 │  (or committed directly on C-STORE success
        ▼                     ▼  │                 ▼   when the destination has no commitment)
    quarantined          waiting (backoff)     waiting (commitment failed: store again)

`step()` does whatever is due and returns how much it did; the scheduler calls it often and the
CLI's `send` calls it in a loop. A restart resumes from the journal: every stage is idempotent
(a conversion is deterministic, a resend reuses the same SOP Instance UID, a purge is an unlink).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import random
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_mapping.convert import ConvertParams, convert_photo
from dicom_mapping.errors import InputError
from dicom_mapping.metadata import Consent, parse_metadata
from gateway import deliver
from gateway.clock import Clock
from gateway.errors import TransientError
from gateway.faults import crashpoint
from gateway.intake import INPUT, JOB, OUTPUT, Job
from gateway.item import Item, State
from gateway.journal import Journal, StateConflict
from gateway.settings import Destination, Settings
from gateway.staging import Staging, StagingError

log = logging.getLogger(__name__)

BATCH = 20  # objects per association
COMMITMENT_TIMEOUT_S = 60.0
COMMIT_FAILED = "storage commitment failed"  # a commitment request unanswered this long is asked again


@dataclass
class Counters:
    """What metrics and notes report; no PHI."""

    stored: int = 0
    resent: int = 0  # C-STOREs after an unclear outcome (no answer), under the same SOP Instance UID
    committed: int = 0
    purged: int = 0
    quarantined: int = 0
    retries: int = 0
    by_status: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Pipeline:
    def __init__(self, cfg: Settings, journal: Journal, staging: Staging, secret: bytes, clock: Clock,
                 *, options: frozenset[str], commitment_timeout_s: float = COMMITMENT_TIMEOUT_S,
                 same_association_wait_s: float = 0.5, store_timeout_s: float = 30.0) -> None:
        self.cfg = cfg
        self.journal = journal
        self.staging = staging
        self.secret = secret
        self.clock = clock
        self.options = options
        self.commitment_timeout_s = commitment_timeout_s
        self.same_association_wait_s = same_association_wait_s
        self.store_timeout_s = store_timeout_s
        self.counters = Counters()
        self._unclear: set[str] = set()  # items whose last C-STORE had no answer
        self._lock = threading.Lock()  # one step at a time (scheduler thread or CLI loop)
        self._random = random.Random()

    # -- the loop ---------------------------------------------------------------------------------
    def step(self) -> int:
        """Do everything that is due now; the number of items moved."""
        if not self._lock.acquire(blocking=False):
            return 0
        try:
            moved = 0
            due = self.journal.due(self.clock.now())
            for item in (i for i in due if i.state == State.RECEIVED):
                moved += self._convert(item) is not None
            due = self.journal.due(self.clock.now())
            by_destination: dict[str, list[Item]] = defaultdict(list)
            for item in due:
                if item.state in (State.CONVERTED, State.WAITING):
                    by_destination[item.destination or ""].append(item)
            for name, items in by_destination.items():
                for start in range(0, len(items), BATCH):
                    delivered = self._deliver(name, items[start:start + BATCH])
                    if delivered is None:
                        # No association: the other batches wait for the next step rather than
                        # each spending a connection timeout on a PACS that is down.
                        break
                    moved += delivered
            sent = [i for i in self.journal.due(self.clock.now()) if i.state == State.SENT]
            moved += self._request_commitments(sent)
            for item in self.journal.list(states={State.COMMITTED}):
                moved += self._purge(item)
            return moved
        finally:
            self._lock.release()

    def unfinished(self) -> list[Item]:
        return self.journal.list(unfinished_only=True)

    def sweep_orphans(self) -> int:
        """Staged files with no journal row: staged, then a crash before the journal and the
        acknowledgement. The sender was never told "success", so they are removed."""
        known = {i.id for i in self.journal.list(unfinished_only=False)}
        orphans = [i for i in self.staging.item_ids() if i not in known]
        for item_id in orphans:
            self.staging.remove(item_id)
        return len(orphans)

    # -- convert ----------------------------------------------------------------------------------
    def _convert(self, item: Item) -> Item | None:
        try:
            job = Job.decode(self.staging.read(item.id, JOB))
            data = self.staging.read(item.id, INPUT)
            out = self._build(job, data)
            buf = io.BytesIO()
            out.save_as(buf, enforce_file_format=True)
            self.staging.put(item.id, OUTPUT, buf.getvalue())
        except InputError as exc:
            return self._quarantine(item, f"conversion refused: {exc.reason}", expect=State.RECEIVED)
        except (StagingError, ValueError, KeyError, OSError) as exc:
            log.exception("item %s: conversion failed", item.id)
            return self._quarantine(item, f"conversion failed: {type(exc).__name__}", expect=State.RECEIVED)
        try:
            moved = self.journal.transition(item.id, State.CONVERTED, expect=State.RECEIVED,
                                            sop_instance_uid=str(out.SOPInstanceUID), reason=None)
        except StateConflict:
            return None
        crashpoint("after-conversion")
        return moved

    def _build(self, job: Job, data: bytes) -> Dataset:
        received = dt.datetime.fromisoformat(job.received_at)
        if job.kind == "photo":
            assert job.meta is not None
            params = ConvertParams(secret=self.secret, received_at=received, iod=job.iod,  # type: ignore[arg-type]
                                   options=self.options, study_uid_source=job.study_uid_source)
            return convert_photo(data, parse_metadata(job.meta), params).dataset
        from dicom_mapping import dicom_input

        default = Consent.model_validate(job.default_consent) if job.default_consent else None
        params_d = dicom_input.DicomParams(
            secret=self.secret, options=self.options, default_consent=default,
            allowed_sop_classes=dicom_input.PHOTO_SOP_CLASSES | frozenset(self.cfg.node.extra_sop_classes))
        return dicom_input.convert_dicom(dicom_input.read_dicom(data), params_d).dataset

    # -- deliver ----------------------------------------------------------------------------------
    def _destination(self, name: str) -> Destination:
        return self.cfg.destinations[name]

    def _deliver(self, name: str, items: list[Item]) -> int | None:
        """C-STORE one batch; the number moved, or None when no association could be made."""
        dest = self._destination(name)
        outgoing = [self._outgoing(item) for item in items]
        try:
            outcomes = deliver.store(outgoing, dest.address, self.cfg.node.ae_title, self.store_timeout_s,
                                     after_each=lambda: crashpoint("during-store"))
        except TransientError as exc:
            for item in items:
                self._retry(item, str(exc), dest)
            return None
        moved = 0
        for item, outcome in zip(items, outcomes, strict=True):
            if item.id in self._unclear:  # the last attempt may have reached the PACS
                self.counters.resent += 1
                self._unclear.discard(item.id)
            if outcome.status is None:
                self._unclear.add(item.id)
            self.counters.by_status[f"0x{outcome.status:04X}" if outcome.status is not None else "none"] += 1
            if outcome.ok:
                self.counters.stored += 1
                state = State.SENT if dest.storage_commitment else State.COMMITTED
                # A store after a failed commitment keeps counting: a PACS that accepts every
                # C-STORE but never commits the object must end in quarantine, not loop forever.
                keep = (item.reason or "").startswith(COMMIT_FAILED)
                try:
                    self.journal.transition(item.id, state, expect={State.CONVERTED, State.WAITING},
                                            next_attempt_at=None, reason=item.reason if keep else None,
                                            attempts=item.attempts if keep else 0)
                    moved += 1
                except StateConflict:
                    continue
                crashpoint("after-store" if dest.storage_commitment else "after-commit")
            elif outcome.transient:
                self._retry(item, outcome.reason, dest)
            else:
                self._quarantine(item, outcome.reason, expect={State.CONVERTED, State.WAITING})
        return moved

    def _retry(self, item: Item, reason: str, dest: Destination, expect: Iterable[State] | None = None) -> None:
        attempts = item.attempts + 1
        if attempts >= dest.retry.attempts:
            self._quarantine(item, f"gave up after {attempts} attempts: {reason}",
                             expect=expect or {State.CONVERTED, State.WAITING, State.SENT})
            return
        delay = deliver.backoff_s(dest.retry.initial_s, dest.retry.max_s, attempts, self._random.random())
        self.counters.retries += 1
        try:
            self.journal.transition(item.id, State.WAITING, expect=expect or {State.CONVERTED, State.WAITING},
                                    attempts=attempts, next_attempt_at=self.clock.now() + delay, reason=reason)
        except StateConflict:
            pass

    def _quarantine(self, item: Item, reason: str, *, expect: State | Iterable[State]) -> Item | None:
        """Kept encrypted until an operator acts: never dropped, never purged."""
        try:
            moved = self.journal.transition(item.id, State.QUARANTINED, expect=expect, reason=reason,
                                            next_attempt_at=None)
        except StateConflict:
            return None
        self.counters.quarantined += 1
        log.warning("item %s quarantined: %s", item.id, reason)
        return moved

    # -- storage commitment -------------------------------------------------------------------------
    def _request_commitments(self, items: list[Item]) -> int:
        by_destination: dict[str, list[Item]] = defaultdict(list)
        for item in items:
            by_destination[item.destination or ""].append(item)
        asked = 0
        for name, group in by_destination.items():
            dest = self._destination(name)
            fresh = [i for i in group if i.next_attempt_at is None]
            overdue = [i for i in group if i.next_attempt_at is not None]
            for item in overdue:  # asked before and no answer within the timeout
                attempts = item.attempts + 1
                if attempts >= dest.retry.attempts:
                    self._quarantine(item, "storage commitment never answered", expect=State.SENT)
                    group.remove(item)
                else:
                    self._still_sent(item, attempts=attempts,
                                     reason="storage commitment not answered yet; asked again")
            if not group:
                continue
            refs = [(self._sop_class(i), str(i.sop_instance_uid)) for i in group]
            try:
                # The result may also come back on this association (PS3.4 J.3.3): wait briefly.
                deliver.request_commitment(dest.address, refs, "2.25." + str(uuid.uuid4().int),
                                           self.cfg.node.ae_title,
                                           evt_handlers=deliver.commitment_handlers(self.on_commitment),
                                           wait_s=self.same_association_wait_s)
            except TransientError as exc:
                for item in group:
                    self._still_sent(item, reason=str(exc),
                                     next_attempt_at=self.clock.now() + self.commitment_timeout_s)
                continue
            for item in group:
                self._still_sent(item, next_attempt_at=self.clock.now() + self.commitment_timeout_s)
            asked += len(fresh)
        return asked

    def _still_sent(self, item: Item, **fields: object) -> None:
        """Update a SENT item unless a commitment report moved it meanwhile (it may arrive on the
        N-ACTION's own association, before the request call has even returned)."""
        try:
            self.journal.transition(item.id, State.SENT, expect=State.SENT, **fields)
        except StateConflict:
            pass

    def _header(self, item: Item) -> Dataset:
        """The staged output's header from its first decrypted chunk (a full read only when the
        header is longer than a chunk)."""
        first = next(iter(self.staging.open(item.id, OUTPUT)), b"")
        try:
            return dcmread(io.BytesIO(first), stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - header longer than one chunk: read it all
            return dcmread(io.BytesIO(self.staging.read(item.id, OUTPUT)), stop_before_pixels=True)

    def _outgoing(self, item: Item) -> deliver.Outgoing:
        head = self._header(item)
        return deliver.Outgoing(
            str(head.SOPClassUID), str(head.file_meta.TransferSyntaxUID), str(head.SOPInstanceUID),
            lambda: dcmread(io.BytesIO(self.staging.read(item.id, OUTPUT))))

    def _sop_class(self, item: Item) -> str:
        return str(self._header(item).SOPClassUID)

    def on_commitment(self, calling_ae: str, transaction_uid: str, succeeded: list[str],
                      failed: list[tuple[str, int]]) -> None:
        """An N-EVENT-REPORT from a destination (on any association): commit or store again."""
        names = [n for n, d in self.cfg.destinations.items() if d.address.ae_title == calling_ae]
        ok, bad = set(succeeded), dict(failed)
        for item in self.journal.list(states={State.SENT}):
            if item.destination not in names or item.sop_instance_uid is None:
                continue
            if item.sop_instance_uid in ok:
                try:
                    self.journal.transition(item.id, State.COMMITTED, expect=State.SENT, reason=None,
                                            next_attempt_at=None)
                    self.counters.committed += 1
                except StateConflict:
                    continue
                crashpoint("after-commit")
            elif item.sop_instance_uid in bad:
                reason = f"{COMMIT_FAILED} (0x{bad[item.sop_instance_uid]:04X}); storing again"
                self._retry(item, reason, self._destination(item.destination or ""), expect={State.SENT})

    # -- purge ----------------------------------------------------------------------------------------
    def _purge(self, item: Item) -> int:
        """The PACS confirmed: the staged input, metadata and output go (see staging.py on why an
        unlink of encrypted files is enough)."""
        self.staging.remove(item.id)
        try:
            self.journal.transition(item.id, State.PURGED, expect=State.COMMITTED)
        except StateConflict:
            return 0
        self.counters.purged += 1
        return 1

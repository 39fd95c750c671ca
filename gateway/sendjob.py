"""`photo-gateway send`: the node's own path (stage → convert → deliver → confirm → purge) run
in the foreground for a few photos, in a private staging area that is removed whatever happens:
the user still has the files, so nothing may stay behind (not even ciphertext).
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from dicom_mapping.metadata import PhotoMetadata
from gateway import settings as settings_mod
from gateway.clock import SYSTEM
from gateway.intake import Intake
from gateway.item import State
from gateway.journal import Journal
from gateway.pipeline import Pipeline
from gateway.settings import Destination, Settings
from gateway.staging import Staging

if TYPE_CHECKING:
    from gateway.ingest.dimse import DimseDoor


class SendJob:
    def __init__(self, cfg: Settings, workdir: Path, secret: bytes, options: frozenset[str]) -> None:
        self.cfg = cfg
        self.workdir = workdir
        # An ephemeral staging key, never written down: a crash leaves only undecryptable bytes.
        self.journal = Journal(workdir / "journal.sqlite", SYSTEM)
        self.staging = Staging(workdir / "items", [secrets.token_bytes(32)])
        self.pipeline = Pipeline(cfg, self.journal, self.staging, secret, SYSTEM, options=options,
                                 commitment_timeout_s=10)
        worklist = None
        if cfg.worklist is not None:
            from gateway.worklist import make_lookup

            worklist = make_lookup(cfg.worklist.address, cfg.node.ae_title, 10)
        self.intake = Intake(cfg, self.journal, self.staging, SYSTEM, worklist=worklist)
        self.door: DimseDoor | None = None

    @classmethod
    def create(cls, cfg: Settings | None, name: str, dest: Destination, secret: bytes,
               options: frozenset[str], our_ae: str, iod: str | None) -> SendJob:
        base = (cfg.staging.directory if cfg and cfg.staging else settings_mod.local_state_dir())
        workdir = Path(base) / f"send-{os.getpid()}-{secrets.token_hex(4)}"
        workdir.mkdir(parents=True, mode=0o700)
        node = cfg.node.model_dump() if cfg else {}
        node["ae_title"] = our_ae
        one = Settings.model_validate({
            "node": node,
            "destinations": {name: dest},
            "routes": [{"to": [name], "iod": iod or dest.iod or "sc"}],
            "worklist": cfg.worklist if cfg else None,
        })
        job = cls(one, workdir, secret, options)
        if dest.storage_commitment and one.node.port is not None:
            # The PACS sends the commitment result on a new association to our DICOM port.
            from gateway.ingest.dimse import DimseDoor

            job.door = DimseDoor(one, job.intake, on_commitment=job.pipeline.on_commitment)
            job.door.start()
        return job

    def stage(self, data: bytes, meta: PhotoMetadata) -> list[str]:
        items = self.intake.accept_photo(data, meta.model_dump(mode="json"), source="cli")
        return [i.id for i in items]

    def run(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            moved = self.pipeline.step()
            pending = self.pipeline.unfinished()
            if not [i for i in pending if i.state != State.QUARANTINED]:
                return
            if not moved:
                time.sleep(0.05)

    def report(self, ids: list[str]) -> list[tuple[str, bool, bool]]:
        """(text, delivered?, was it the input's fault?) per item."""
        lines = []
        for item_id in ids:
            item = self.journal.get(item_id)
            assert item is not None
            address = self.cfg.destinations[item.destination or ""].address
            if item.state == State.PURGED:
                lines.append((f"{address} {item.sop_instance_uid}", True, False))
            elif item.state == State.QUARANTINED:
                reason = item.reason or "failed"
                lines.append((f"{address}: {reason}", False, reason.startswith("conversion refused")))
            else:
                why = f": {item.reason}" if item.reason else ""
                lines.append((f"{address}: not confirmed before the timeout{why}", False, False))
        return lines

    def __enter__(self) -> SendJob:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.door is not None:
            self.door.stop()
        self.journal.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

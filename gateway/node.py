"""The running node (`photo-gateway serve`): journal, staging, pipeline, doors and scheduler,
composed from one Settings object. Side effects live here and in the doors."""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from gateway import settings as settings_mod
from gateway.clock import SYSTEM, Clock
from gateway.errors import ConfigError
from gateway.intake import Intake
from gateway.journal import Journal
from gateway.pipeline import Pipeline
from gateway.settings import Settings
from gateway.staging import Staging

log = logging.getLogger(__name__)
# A pipeline step that outlasts the tick is normal during an outage: not a warning every 0.25 s.
logging.getLogger("apscheduler").setLevel(logging.ERROR)


def quiet_pydicom() -> None:
    """pydicom's reading warnings quote element values (names, UIDs, whole byte runs of a broken
    input): the node never lets them reach a log or a warning stream."""
    import pydicom.config

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")  # they go to stderr, the log


def journal_path(cfg: Settings) -> Path:
    assert cfg.staging is not None
    return cfg.staging.directory / "journal.sqlite"


def open_store(cfg: Settings, clock: Clock = SYSTEM) -> tuple[Journal, Staging]:
    """The journal and the encrypted staging of a configured node."""
    if cfg.staging is None:
        raise ConfigError("the config has no staging section (staging.directory, staging.key_file)")
    keys = settings_mod.read_keys(cfg.staging.key_file)
    cfg.staging.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Journal(journal_path(cfg), clock), Staging(cfg.staging.directory / "items", keys)


class Node:
    def __init__(self, cfg: Settings, clock: Clock = SYSTEM, *, step_interval_s: float = 0.25) -> None:
        if cfg.deid is None:
            raise ConfigError("the config has no deid section (deid.secret_file)")
        quiet_pydicom()
        self.cfg = cfg
        self.clock = clock
        self.journal, self.staging = open_store(cfg, clock)
        secret = settings_mod.read_keys(cfg.deid.secret_file)[0]
        self.pipeline = Pipeline(cfg, self.journal, self.staging, secret, clock,
                                 options=frozenset(cfg.deid.options))
        self.scheduler = BackgroundScheduler(daemon=True)
        worklist = None
        if cfg.worklist is not None:
            from gateway.worklist import make_lookup

            worklist = make_lookup(cfg.worklist.address, cfg.node.ae_title, 10)
        self.intake = Intake(cfg, self.journal, self.staging, clock, worklist=worklist, wake=self.kick)
        self.doors: list[Any] = []
        self.step_interval_s = step_interval_s

    def kick(self) -> None:
        """A door staged something: run the pipeline now rather than at the next tick. (The
        pipeline's own lock makes an overlapping step a no-op.) Only once the node runs."""
        if self.scheduler.running:
            threading.Thread(target=self._step, daemon=True).start()

    def _step(self) -> None:
        try:
            self.pipeline.step()
        except Exception:
            log.exception("pipeline step failed; will retry on the next tick")

    def start(self) -> None:
        swept = self.pipeline.sweep_orphans()
        if swept:
            log.warning("removed %d staged item(s) that were never acknowledged", swept)
        cfg = self.cfg
        if cfg.node.port is not None:
            from gateway.ingest.dimse import DimseDoor

            self.doors.append(DimseDoor(cfg, self.intake, on_commitment=self.pipeline.on_commitment))
        if cfg.sources.folder is not None:
            from gateway.ingest.folder import FolderDoor

            self.doors.append(FolderDoor(cfg.sources.folder, self.intake, self.clock))
        if cfg.sources.http is not None:
            from gateway.ingest.http import HttpDoor

            self.doors.append(HttpDoor(cfg.sources.http, self.intake, self.journal,
                                       ready=self.ready, metrics=self.metrics_text))
        elif cfg.metrics.port is not None:
            from gateway.metrics import MetricsServer

            self.doors.append(MetricsServer(cfg.node.host, cfg.metrics.port, self.ready, self.metrics_text))
        for door in self.doors:
            door.start()
        self.scheduler.add_job(self._step, "interval", seconds=self.step_interval_s, id="pipeline",
                               max_instances=1, coalesce=True)
        self.scheduler.add_job(self._alert_quarantine, "interval", seconds=60, id="quarantine-alert")
        self.scheduler.start()
        log.info("node started: %d door(s)", len(self.doors))

    def ready(self) -> bool:
        """Ready when the journal answers and staging is writable."""
        try:
            self.journal.counts()
            self.staging.check_writable()
        except Exception:  # noqa: BLE001 - any failure means "not ready", said by /readyz
            return False
        return True

    def metrics_text(self) -> str:
        from gateway.metrics import render

        return render(self.journal.counts(), self.pipeline.counters)

    def _alert_quarantine(self) -> None:
        waiting = self.journal.counts()
        from gateway.item import State

        if waiting[State.QUARANTINED]:
            log.warning("%d item(s) quarantined and waiting for an operator (photo-gateway queue list)",
                        waiting[State.QUARANTINED])

    def stop(self) -> None:
        for door in reversed(self.doors):
            try:
                door.stop()
            except Exception:
                log.exception("stopping a door failed")
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.journal.close()

"""The hot folder: complete, paired files are staged once and removed; bad ones go to rejected/
with a reason; nothing is taken twice, not even across a crash; transient trouble leaves the files.

Most tests drive `scan_once()` with a fake clock (stability is "unchanged across passes for
stable_s", so advancing the clock between two passes makes a file complete). The tests that need
the real watcher (slow writer, `.part` rename, restart) start the door and poll with deadlines.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from photo_factory import make_jpeg

from gateway.clock import SYSTEM, Clock, FakeClock
from gateway.ingest.folder import FolderDoor
from gateway.intake import Intake, Job
from gateway.item import Item, State
from gateway.journal import Journal
from gateway.settings import FolderSource, Settings
from gateway.staging import Staging, StagingFull

DAY = 86400


def sidecar(**changes: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "patient": {"id": "SYN0002", "issuer": "SYNTH-MRN", "name": "TEST^SAMPLE TWO",
                    "birth_date": "1984-06-15", "sex": "M"},
        "accession_number": "SYNACC0002",
        "body_site": "chest",
        "description": "SYNTHETIC rash, 2 days",
        "consent": {"status": "granted", "scope": ["clinical-care"], "date": "2026-11-18",
                    "obtained_by_role": "physician", "identifiable_permitted": False},
        "operator_role": "physician",
        "recognizable": False,
    }
    meta.update(changes)
    return {k: v for k, v in meta.items() if v is not None}


PHOTO = make_jpeg(width=160, height=120, seed=1)


@dataclass
class Rig:
    tmp: Path
    clock: Clock
    folder: Path
    journal: Journal
    staging: Staging
    intake: Intake
    doors: list[FolderDoor] = field(default_factory=list)

    def door(self, *, require_sidecar: bool = True, default_consent: dict[str, Any] | None = None,
             retention_days: int = 7, stable_s: float = 1.0) -> FolderDoor:
        cfg = FolderSource.model_validate({
            "path": str(self.folder), "require_sidecar": require_sidecar,
            "default_consent": default_consent, "rejected_retention_days": retention_days})
        door = FolderDoor(cfg, self.intake, self.clock, stable_s=stable_s)
        self.doors.append(door)
        return door

    def items(self) -> list[Item]:
        return self.journal.list(unfinished_only=False)

    def rejected(self) -> list[str]:
        path = self.folder / "rejected"
        return sorted(p.name for p in path.iterdir()) if path.exists() else []

    def remaining(self) -> list[str]:
        """What is left in the hot folder itself (files only, dotfiles included)."""
        return sorted(p.name for p in self.folder.iterdir() if p.is_file())


def make_rig(tmp_path: Path, clock: Clock) -> Rig:
    settings = Settings.model_validate({
        "destinations": {"pacs": {"address": "PACS@127.0.0.1:11112"}},
        "routes": [{"match": {}, "to": ["pacs"]}],
    })
    journal = Journal(tmp_path / "journal.sqlite", clock)
    staging = Staging(tmp_path / "staging", [os.urandom(32)])
    folder = tmp_path / "inbox"
    folder.mkdir()
    return Rig(tmp_path, clock, folder, journal, staging, Intake(settings, journal, staging, clock))


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rig(tmp_path: Path, fake: FakeClock) -> Iterator[Rig]:
    r = make_rig(tmp_path, fake)
    yield r
    for door in r.doors:
        door.stop()
    r.journal.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Rig]:
    """A rig on the real clock, for doors that are started (watchdog + worker thread)."""
    r = make_rig(tmp_path, SYSTEM)
    yield r
    for door in r.doors:
        door.stop()
    r.journal.close()


def drop(folder: Path, name: str, data: bytes | dict[str, Any] | str) -> Path:
    path = folder / name
    if isinstance(data, dict):
        data = json.dumps(data)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def settle(rig: Rig, door: FolderDoor, passes: int = 2) -> int:
    """Passes of the door with the fake clock moved past stable_s in between; total taken."""
    assert isinstance(rig.clock, FakeClock)
    total = 0
    for _ in range(passes):
        total += door.scan_once()
        rig.clock.advance(door.stable_s + 0.5)
    return total


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def reason_of(rig: Rig, name: str) -> str:
    return (rig.folder / "rejected" / f"{name}.reason.txt").read_text()


# -- taken ------------------------------------------------------------------------------------

def test_photo_with_sidecar_is_staged_once_then_removed(rig: Rig) -> None:
    door = rig.door()
    drop(rig.folder, "wound.jpg", PHOTO)
    drop(rig.folder, "wound.jpg.json", sidecar())

    assert door.scan_once() == 0  # first sight: not known to be complete yet
    assert rig.items() == []
    rig.clock.advance(1.5)  # type: ignore[attr-defined]
    assert door.scan_once() == 1

    (item,) = rig.items()
    assert item.state is State.RECEIVED and item.source == "folder"
    assert rig.staging.read(item.id, "input") == PHOTO
    job = Job.decode(rig.staging.read(item.id, "job"))
    assert job.meta is not None and job.meta["patient"]["id"] == "SYN0002"
    assert rig.remaining() == [] and rig.rejected() == []
    assert settle(rig, door) == 0
    assert len(rig.items()) == 1


def test_slowly_written_file_is_taken_once_and_complete(live: Rig) -> None:
    data = make_jpeg(width=640, height=480, seed=7)
    drop(live.folder, "slow.jpg.json", sidecar())
    door = live.door(stable_s=1.0)
    door.start()

    pieces = [data[i:i + len(data) // 8 + 1] for i in range(0, len(data), len(data) // 8 + 1)]

    def writer() -> None:  # a camera writing over ~2 s, 0.25 s between chunks
        with open(live.folder / "slow.jpg", "wb") as fh:
            for piece in pieces:
                fh.write(piece)
                fh.flush()
                time.sleep(0.25)

    thread = threading.Thread(target=writer)
    thread.start()
    thread.join()
    wait_for(lambda: not (live.folder / "slow.jpg").exists(), what="the photo to be taken")
    assert live.rejected() == []  # a partial JPEG (no EOI) would have been rejected
    (item,) = live.items()
    assert live.staging.read(item.id, "input") == data
    assert live.remaining() == []


def test_part_rename_is_taken_at_once_and_part_files_are_ignored(live: Rig) -> None:
    door = live.door(stable_s=60.0)  # stability alone would take a minute
    door.start()
    drop(live.folder, "burn.png.json.part", sidecar())
    drop(live.folder, "burn.jpg.part", PHOTO)
    assert door.scan_once() == 0
    assert sorted(live.remaining()) == ["burn.jpg.part", "burn.png.json.part"]

    os.rename(live.folder / "burn.png.json.part", live.folder / "burn.jpg.json")
    os.rename(live.folder / "burn.jpg.part", live.folder / "burn.jpg")
    started = time.monotonic()
    wait_for(lambda: live.items(), timeout=10, what="the renamed photo to be staged")
    assert time.monotonic() - started < 10
    wait_for(lambda: live.remaining() == [], timeout=5, what="the inputs to be removed")
    (item,) = live.items()
    assert live.staging.read(item.id, "input") == PHOTO


def test_photo_waits_for_its_sidecar_then_goes(rig: Rig) -> None:
    door = rig.door(require_sidecar=True)
    drop(rig.folder, "ulcer.jpg", PHOTO)
    assert settle(rig, door, passes=3) == 0
    assert rig.remaining() == ["ulcer.jpg"] and rig.rejected() == [] and rig.items() == []

    drop(rig.folder, "ulcer.json", sidecar())  # the stem form: one photo has the stem "ulcer"
    assert settle(rig, door) == 1
    assert len(rig.items()) == 1
    assert rig.remaining() == []


def test_sidecar_waits_for_its_photo(rig: Rig) -> None:
    door = rig.door()
    drop(rig.folder, "late.jpg.json", sidecar())
    assert settle(rig, door, passes=3) == 0
    assert rig.remaining() == ["late.jpg.json"] and rig.rejected() == []
    drop(rig.folder, "late.jpg", PHOTO)
    assert settle(rig, door) == 1
    assert rig.remaining() == []


def test_restart_takes_what_arrived_while_stopped(live: Rig) -> None:
    first = live.door(stable_s=0.3)
    first.start()
    first.stop()
    drop(live.folder, "night.jpg", PHOTO)
    drop(live.folder, "night.jpg.json", sidecar())

    second = live.door(stable_s=0.3)
    second.start()
    wait_for(lambda: live.items(), what="the start-up scan to take the photo")
    wait_for(lambda: live.remaining() == [], timeout=5, what="the inputs to be removed")
    assert len(live.items()) == 1


def test_crash_between_staging_and_delete_does_not_stage_twice(rig: Rig,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    door = rig.door()
    drop(rig.folder, "crash.jpg", PHOTO)
    drop(rig.folder, "crash.jpg.json", sidecar())

    def power_cut(paths: object) -> None:
        raise OSError(5, "simulated crash before the delete")

    monkeypatch.setattr(door, "_remove", power_cut)
    assert settle(rig, door) == 1
    assert len(rig.items()) == 1
    assert rig.remaining() == ["crash.jpg", "crash.jpg.json"]  # staged, not yet deleted

    restarted = rig.door()  # a new process: only the ledger on disk remembers
    assert settle(rig, restarted) == 1
    assert rig.remaining() == []
    assert len(rig.items()) == 1


def test_same_content_dropped_again_is_taken_again_as_the_same_input(rig: Rig) -> None:
    """A second drop is a request to send again; the staged bytes are the same, so conversion
    gives the same SOP Instance UID (keyed from the input bytes) and the PACS one instance."""
    door = rig.door()
    for _ in range(2):
        drop(rig.folder, "twice.jpg", PHOTO)
        drop(rig.folder, "twice.jpg.json", sidecar())
        assert settle(rig, door) == 1
    first, second = rig.items()
    assert rig.staging.read(first.id, "input") == rig.staging.read(second.id, "input") == PHOTO


# -- rejected ---------------------------------------------------------------------------------

def test_text_file_named_jpg_is_rejected_with_its_reason(rig: Rig) -> None:
    door = rig.door()
    drop(rig.folder, "notes.jpg", "this is not a photo\n")
    drop(rig.folder, "notes.jpg.json", sidecar())
    assert settle(rig, door) == 1
    assert rig.rejected() == ["notes.jpg", "notes.jpg.json", "notes.jpg.reason.txt"]
    assert "not a JPEG, PNG, HEIC or DICOM file" in reason_of(rig, "notes.jpg")
    assert rig.remaining() == [] and rig.items() == []
    assert settle(rig, door) == 0  # never tried again
    assert rig.rejected() == ["notes.jpg", "notes.jpg.json", "notes.jpg.reason.txt"]


@pytest.mark.parametrize(("meta", "expected"), [
    ('{"patient": {"id": "SYN0002"', "metadata is not valid JSON"),
    (sidecar(colour="red"), "unknown key 'colour'"),
    (sidecar(consent=None), "no consent record"),
    (sidecar(consent={"status": "refused"}), "consent refused"),
], ids=["bad-json", "unknown-key", "no-consent", "consent-refused"])
def test_bad_sidecar_is_rejected_naming_the_problem(rig: Rig, meta: Any, expected: str) -> None:
    door = rig.door()
    drop(rig.folder, "bad.jpg", PHOTO)
    drop(rig.folder, "bad.jpg.json", meta)
    assert settle(rig, door) == 1
    assert expected in reason_of(rig, "bad.jpg")
    assert rig.rejected() == ["bad.jpg", "bad.jpg.json", "bad.jpg.reason.txt"]
    assert rig.items() == []
    assert (rig.folder / "rejected" / "bad.jpg").read_bytes() == PHOTO


def test_default_consent_of_the_folder_is_applied_as_assumed(rig: Rig) -> None:
    door = rig.door(default_consent={"status": "granted", "scope": ["clinical-care"]})
    drop(rig.folder, "assumed.jpg", PHOTO)
    drop(rig.folder, "assumed.jpg.json", sidecar(consent=None))
    assert settle(rig, door) == 1
    (item,) = rig.items()
    job = Job.decode(rig.staging.read(item.id, "job"))
    assert job.meta is not None and job.meta["consent"]["assumed"] is True


def test_photo_without_sidecar_is_rejected_when_sidecars_are_optional(rig: Rig) -> None:
    door = rig.door(require_sidecar=False)
    drop(rig.folder, "alone.jpg", PHOTO)
    assert settle(rig, door) == 1
    assert "no metadata" in reason_of(rig, "alone.jpg")
    assert rig.rejected() == ["alone.jpg", "alone.jpg.reason.txt"]


def test_other_files_are_rejected_and_dotfiles_ignored(rig: Rig) -> None:
    door = rig.door()
    drop(rig.folder, "scan.pdf", b"%PDF-1.4\n")
    drop(rig.folder, ".hidden.jpg", PHOTO)
    assert settle(rig, door) == 1
    assert "not a photo: '.pdf'" in reason_of(rig, "scan.pdf")
    assert rig.remaining() == [".hidden.jpg"]


def test_a_second_rejection_of_the_same_name_keeps_both(rig: Rig) -> None:
    door = rig.door()
    for _ in range(2):
        drop(rig.folder, "same.jpg", "text")
        drop(rig.folder, "same.jpg.json", sidecar())
        assert settle(rig, door) == 1
    assert rig.rejected() == ["same-2.jpg", "same-2.jpg.json", "same-2.jpg.reason.txt",
                              "same.jpg", "same.jpg.json", "same.jpg.reason.txt"]


def test_purge_rejected_deletes_entries_older_than_retention(rig: Rig) -> None:
    door = rig.door(retention_days=7)
    for name in ("old.jpg", "new.jpg"):
        drop(rig.folder, name, "text")
        drop(rig.folder, name + ".json", sidecar())
    assert settle(rig, door) == 2
    now = rig.clock.now()
    for name in ("old.jpg", "old.jpg.json", "old.jpg.reason.txt"):
        os.utime(rig.folder / "rejected" / name, (now - 8 * DAY, now - 8 * DAY))
    for name in ("new.jpg", "new.jpg.json", "new.jpg.reason.txt"):
        os.utime(rig.folder / "rejected" / name, (now - 6 * DAY, now - 6 * DAY))

    assert door.purge_rejected() == 3
    assert rig.rejected() == ["new.jpg", "new.jpg.json", "new.jpg.reason.txt"]


def test_retention_counts_from_the_rejection_not_from_the_file(rig: Rig) -> None:
    door = rig.door(retention_days=7)
    photo = drop(rig.folder, "ancient.jpg", "text")
    drop(rig.folder, "ancient.jpg.json", sidecar())
    then = rig.clock.now() - 30 * DAY
    os.utime(photo, (then, then))  # written a month ago, rejected now
    assert settle(rig, door) == 1
    assert door.purge_rejected() == 0
    assert rig.rejected() == ["ancient.jpg", "ancient.jpg.json", "ancient.jpg.reason.txt"]


# -- transient --------------------------------------------------------------------------------

def test_staging_full_leaves_the_files_and_retries_later(rig: Rig,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    door = rig.door()
    drop(rig.folder, "full.jpg", PHOTO)
    drop(rig.folder, "full.jpg.json", sidecar())

    def full(needed_bytes: int = 0) -> None:
        raise StagingFull("staging directory: 0 bytes free")

    monkeypatch.setattr(rig.staging, "check_writable", full)
    assert settle(rig, door, passes=3) == 0
    assert rig.remaining() == ["full.jpg", "full.jpg.json"]
    assert rig.rejected() == [] and rig.items() == []

    monkeypatch.undo()
    rig.clock.advance(120)  # type: ignore[attr-defined]  # past the retry pause
    assert door.scan_once() == 1
    assert len(rig.items()) == 1 and rig.remaining() == []

"""What every door calls: validate, consent-gate, route, stage durably, journal. Only then may a
door answer "success". Bad input raises InputError here, before anything is staged; a full or
unwritable staging area raises StagingFull (a TransientError) and nothing is half-staged.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dicom_mapping import photo
from dicom_mapping.errors import InputError
from dicom_mapping.metadata import Consent, PhotoMetadata, parse_metadata, require_consent
from gateway import route
from gateway.clock import Clock
from gateway.faults import crashpoint
from gateway.item import Item, State, new_id
from gateway.journal import Journal
from gateway.settings import Settings
from gateway.staging import Staging

log = logging.getLogger(__name__)

INPUT, JOB, OUTPUT = "input", "job", "output"
# PS3.5 9.1 UIDs: digits and dots, at most 64 characters. Leading zeros in a component are
# invalid too, but some devices write them and they are harmless once the UID is remapped.
_UID = re.compile(r"(?=.{1,64}$)[0-9]+(\.[0-9]+)*")

# A worklist lookup: (accession, patient id or None) -> metadata patient fields + study UID.
WorklistLookup = Callable[[str, "str | None"], dict[str, Any]]


@dataclass(frozen=True)
class Job:
    """The staged envelope beside an input (encrypted: it holds the metadata, which is PHI)."""

    kind: str  # "photo" | "dicom"
    iod: str
    received_at: str  # ISO time of receipt: the content date when EXIF has none
    meta: dict[str, Any] | None = None  # validated PhotoMetadata (photos)
    default_consent: dict[str, Any] | None = None  # the source's, for DICOM without (0012,0083)
    study_uid_source: str | None = None  # the worklist's Study Instance UID, mapped at conversion

    def encode(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Job:
        return cls(**json.loads(data))


def from_worklist(meta: PhotoMetadata, worklist: WorklistLookup | None) -> tuple[PhotoMetadata, str | None]:
    """Metadata without a patient: the order's patient by accession number, and the order's
    Study Instance UID (mapped at conversion). InputError if there is no entry."""
    if not meta.accession_number:
        raise InputError("metadata has no patient and no accession_number")
    if worklist is None:
        raise InputError("metadata has no patient, and no worklist is configured to find one")
    entry = worklist(meta.accession_number, None)
    study = entry.pop("study_instance_uid", None)
    patient = PhotoMetadata.model_validate({"patient": entry}).patient
    return meta.model_copy(update={"patient": patient}), study


def _same_as_requested(ds: Any, keyword: str, meta_keyword: str, name: str) -> None:
    """PS3.7 9.1.1 / PS3.4 B.2.3: the data set is the instance the request names (the C-STORE's
    Affected SOP Class/Instance UID, which the door writes into the File Meta Information);
    otherwise 0xA900, as DCMTK's storescp answers."""
    requested = str(ds.file_meta.get(meta_keyword, "") or "").strip("\x00 ")
    if requested and requested != str(ds.get(keyword, "") or "").strip("\x00 "):
        raise InputError(f"the data set's {name} is not the one of the request", status=0xA900)


class Intake:
    def __init__(self, cfg: Settings, journal: Journal, staging: Staging, clock: Clock,
                 worklist: WorklistLookup | None = None, wake: Callable[[], None] | None = None) -> None:
        self.cfg = cfg
        self.journal = journal
        self.staging = staging
        self.clock = clock
        self.worklist = worklist
        self.wake = wake or (lambda: None)

    # -- photos -------------------------------------------------------------------------------
    def accept_photo(self, data: bytes, meta_raw: bytes | str | dict[str, Any] | None, *, source: str,
                     default_consent: Consent | None = None, calling_ae: str | None = None) -> list[Item]:
        """Validate and stage one photo; the items made (one per destination)."""
        if photo.validate(data) == "dicom":  # kind, structure, pixel limit: refused at the door
            raise InputError("a DICOM file, not a photo: send it to the DICOM port")
        if meta_raw is None:
            raise InputError("no metadata for the photo")
        meta = parse_metadata(meta_raw)
        meta = require_consent(meta, default_consent)
        study_source = None
        if meta.patient is None:
            meta, study_source = from_worklist(meta, self.worklist)
        assert meta.consent is not None
        facts = route.Facts(source=source, calling_ae=calling_ae, body_site=meta.body_site,
                            modality="XC", consent_scope=tuple(meta.consent.scope))
        received = dt.datetime.fromtimestamp(self.clock.now()).replace(microsecond=0).isoformat()

        def job(iod: str) -> Job:
            return Job("photo", iod, received, json.loads(meta.model_dump_json()), None, study_source)

        return self._stage(data, job, facts, source, calling_ae, "photo")

    # -- DICOM objects ------------------------------------------------------------------------
    def accept_dicom(self, data: bytes, *, source: str, calling_ae: str | None = None,
                     default_consent: Consent | None = None,
                     extra_sop_classes: frozenset[str] = frozenset()) -> list[Item]:
        """Validate and stage one DICOM object (Part 10 bytes); consent from the object or default."""
        from dicom_mapping import dicom_input

        ds = dicom_input.read_dicom(data)
        sop_class = str(ds.get("SOPClassUID", "") or "")
        if not sop_class:
            raise InputError("no SOP Class UID (0008,0016): an empty, truncated or unreadable data set",
                             status=0xC000)
        _same_as_requested(ds, "SOPClassUID", "MediaStorageSOPClassUID", "SOP Class UID")
        extra = extra_sop_classes | frozenset(self.cfg.node.extra_sop_classes)
        if sop_class not in dicom_input.PHOTO_SOP_CLASSES | extra:
            raise InputError(f"SOP class {sop_class} is not a photo storage class", status=0x0122)
        for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            value = str(ds.get(keyword, "") or "")
            if not _UID.fullmatch(value):
                raise InputError(f"{keyword} is not a valid UID (PS3.5 9.1)", status=0xC000)
        _same_as_requested(ds, "SOPInstanceUID", "MediaStorageSOPInstanceUID", "SOP Instance UID")
        if not str(ds.get("PatientID", "") or "").strip():
            # Every such object would share one pseudonym: refused here, not quarantined later.
            raise InputError("no Patient ID: the object cannot be filed under a pseudonym", status=0xC000)
        consent = dicom_input.consent_for(ds, default_consent)  # InputError 0x0124 unless granted
        dicom_input.check_input(ds)  # what conversion would refuse: refused here, not quarantined
        facts = route.Facts(source=source, calling_ae=calling_ae, modality=str(ds.get("Modality", "")) or None,
                            consent_scope=tuple(consent.scope))
        received = dt.datetime.fromtimestamp(self.clock.now()).replace(microsecond=0).isoformat()
        default = json.loads(default_consent.model_dump_json()) if default_consent else None

        def job(iod: str) -> Job:
            return Job("dicom", iod, received, None, default, None)

        return self._stage(data, job, facts, source, calling_ae, "dicom")

    # -- common ---------------------------------------------------------------------------------
    def _stage(self, data: bytes, job: Callable[[str], Job], facts: route.Facts, source: str,
               calling_ae: str | None, kind: str) -> list[Item]:
        targets = route.targets(self.cfg.routes, self.cfg.destinations, facts)
        if not targets:
            raise InputError("no route matches this input (source, site, consent scope)", status=0x0124)
        self.staging.check_writable(len(data) * len(targets) * 2)
        items = []
        for target in targets:
            item_id = new_id()
            try:
                self.staging.put(item_id, INPUT, data)
                self.staging.put(item_id, JOB, job(target.iod).encode())
            except BaseException:
                self.staging.remove(item_id)
                raise
            items.append(Item(id=item_id, source=source, state=State.RECEIVED, destination=target.destination,
                              calling_ae=calling_ae, kind=kind))
        # One journal row per destination; an item not journalled is an orphan file set that the
        # node's start-up sweep removes (it was never acknowledged).
        added = [self.journal.add(item) for item in items]
        crashpoint("after-staging")
        log.info("staged %s", " ".join(f"{i.id}->{i.destination}" for i in added))
        self.wake()
        return added

"""Modality worklist lookup: who is the patient of an accession number (MWL C-FIND).

A sidecar may omit `patient` when it has `accession_number` and a worklist is configured (README,
"Pinned details: Worklist"). The gateway then asks the worklist (Modality Worklist Information
Model - FIND, PS3.4 Annex K.6, SOP Class 1.2.840.10008.5.1.4.31) by Accession Number, and by
Patient ID too when one is given, and takes the patient's ID, issuer, name, birth date and sex and
the Study Instance UID of the requested procedure.

Answers, chosen and why:
  * No entry with exactly that accession number: InputError (the input names an order that does
    not exist; retrying will not create it).
  * Entries of more than one patient (ID + issuer): InputError; the gateway never guesses whose
    photo it is.
  * One patient, several entries (several scheduled steps): fine; if they name different Study
    Instance UIDs, InputError too (the study is ambiguous).
  * Worklist unreachable, association refused, timeout, or a failure status: TransientError naming
    the address (the photo waits and is tried again; it is not the input's fault).

Matching: DICOM C-FIND treats `*` and `?` in a value as wildcards and has no escape for them
(PS3.4 C.2.2.2.4), so an accession number or patient ID holding one is refused before asking, and
every answer is checked to carry exactly the accession number asked for (a server doing fuzzy or
case-insensitive matching cannot attach the photo to another order).

PHI: the answer is PHI and goes only into the metadata the caller stages encrypted; nothing of it is
logged (the log says how many entries matched, never which).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from dicom_mapping.errors import InputError
from gateway.deliver import why_not_established
from gateway.errors import TransientError
from gateway.network import NODELAY_HANDLERS, Address

__all__ = ["MWL_FIND", "WorklistFn", "lookup", "make_lookup"]

log = logging.getLogger(__name__)

MWL_FIND = "1.2.840.10008.5.1.4.31"  # Modality Worklist Information Model - FIND
_PENDING = {0xFF00, 0xFF01}  # PS3.4 K.4.1.1.4: pending, matches are continuing
_WILDCARDS = ("*", "?", "\\")  # wildcard matching characters, and the VM separator

# What Intake takes (its WorklistLookup): (accession, patient id or None) -> entry.
WorklistFn = Callable[[str, "str | None"], dict[str, Any]]


def _query(accession: str, patient_id: str | None) -> Dataset:
    """The identifier: the keys we match on, and the universal keys we want returned."""
    ds = Dataset()
    if not (accession + (patient_id or "")).isascii():
        ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8 for the query values; answers may use any
    ds.AccessionNumber = accession
    ds.PatientID = patient_id or ""
    ds.IssuerOfPatientID = ""
    ds.PatientName = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = ""
    # PS3.4 K.6.1.2.2: the Scheduled Procedure Step Sequence is a required matching key; one empty
    # item asks for the steps without restricting them.
    step = Dataset()
    step.Modality = ""
    step.ScheduledStationAETitle = ""
    step.ScheduledProcedureStepStartDate = ""
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _birth_date(text: str) -> str | None:
    # DA is YYYYMMDD (PS3.5 6.2); an empty or malformed value is treated as unknown.
    try:
        return dt.datetime.strptime(text.strip(), "%Y%m%d").date().isoformat()
    except ValueError:
        return None


def _entry(ds: Dataset) -> dict[str, Any]:
    sex = _text(ds, "PatientSex").upper()
    return {
        "id": _text(ds, "PatientID"),
        "issuer": _text(ds, "IssuerOfPatientID"),
        "name": _text(ds, "PatientName"),
        "birth_date": _birth_date(_text(ds, "PatientBirthDate")),
        "sex": sex if sex in ("F", "M", "O") else None,
        "study_instance_uid": _text(ds, "StudyInstanceUID") or None,
    }


def lookup(address: Address, accession: str, patient_id: str | None = None, *,
           calling_ae: str = "PHOTOGW", timeout: float = 10) -> dict[str, Any]:
    """The patient (and study) of an accession number, from the worklist at `address`.

    Returns {"id", "issuer", "name", "birth_date" ("YYYY-MM-DD" or None), "sex" ("F"/"M"/"O" or
    None), "study_instance_uid" (or None)}, patient fields trimmed. InputError when there is no
    entry or the entries name several patients; TransientError naming the address when the worklist
    cannot answer.
    """
    accession = (accession or "").strip()
    if not accession:
        raise InputError("no accession number to look up in the worklist")
    for what, value in (("accession number", accession), ("patient ID", patient_id or "")):
        if any(c in value for c in _WILDCARDS):
            raise InputError(f"the {what} contains a wildcard character (* ? \\): "
                             "the worklist cannot be asked for it exactly")
    patient_id = patient_id.strip() if patient_id else None

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    ae.add_requested_context(ModalityWorklistInformationFind)
    handlers: list[Any] = list(NODELAY_HANDLERS)
    assoc = ae.associate(address.host, address.port, ae_title=address.ae_title,
                         evt_handlers=handlers)
    if not assoc.is_established:
        raise TransientError(f"worklist {address}: {why_not_established(assoc)}")
    answers: list[Dataset] = []
    final: int | None = None
    try:
        for status, identifier in assoc.send_c_find(_query(accession, patient_id),
                                                    ModalityWorklistInformationFind):
            if not status or "Status" not in status:
                break  # association lost or DIMSE timeout: no final status
            code = int(status.Status)
            if code in _PENDING:
                if identifier is not None:
                    answers.append(identifier)
                continue
            final = code
    finally:
        if assoc.is_established:
            assoc.release()
    if final is None:
        raise TransientError(f"worklist {address}: no complete answer to the C-FIND "
                             "(association lost or timed out)")
    if final != 0x0000:
        raise TransientError(f"worklist {address}: C-FIND failed with status 0x{final:04X}")

    entries = [_entry(a) for a in answers if _text(a, "AccessionNumber") == accession]
    if patient_id is not None:
        entries = [e for e in entries if e["id"] == patient_id]
    log.info("worklist %s: %d matching entr%s", address, len(entries),
             "y" if len(entries) == 1 else "ies")
    if not entries:
        raise InputError("no worklist entry for the accession number")
    if len({(e["id"], e["issuer"]) for e in entries}) > 1:
        raise InputError("the accession number matches several patients")
    if not entries[0]["id"]:
        raise InputError("the worklist entry for the accession number has no Patient ID")
    studies = {e["study_instance_uid"] for e in entries if e["study_instance_uid"]}
    if len(studies) > 1:
        raise InputError("the accession number matches several studies in the worklist")
    first = dict(entries[0])
    first["study_instance_uid"] = next(iter(studies), None)
    return first


def make_lookup(address: Address, calling_ae: str = "PHOTOGW",
                timeout: float = 10) -> WorklistFn:
    """The worklist lookup Intake takes: (accession, patient id or None) -> entry."""

    def find(accession: str, patient_id: str | None = None) -> dict[str, Any]:
        return lookup(address, accession, patient_id, calling_ae=calling_ae, timeout=timeout)

    return find

"""C-STORE SCU: one association for a batch, one transfer syntax per presentation context.

Status classes (PS3.4 Annex B.2.3 and PS3.7 C.4.2): 0x0000 and the warnings 0xB000, 0xB006,
0xB007 are success; 0xA7xx (out of resources), a rejected or aborted association and timeouts are
transient (retry); 0xA9xx, 0xCxxx and other failures are permanent (quarantine with the reason).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_context, build_role
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from gateway.errors import TransientError
from gateway.network import NODELAY_HANDLERS, Address

log = logging.getLogger(__name__)

SUCCESS_WARNINGS = {0xB000, 0xB006, 0xB007}


@dataclass(frozen=True)
class StoreOutcome:
    sop_instance_uid: str
    status: int | None  # None: no response (association lost)
    comment: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 0x0000 or self.status in SUCCESS_WARNINGS

    @property
    def transient(self) -> bool:
        return self.status is None or (self.status & 0xFF00) == 0xA700

    @property
    def reason(self) -> str:
        if self.ok:
            return "stored"
        if self.status is None:
            return "no response from the PACS (association lost or timed out)"
        text = f"PACS answered status 0x{self.status:04X}"
        return f"{text}: {self.comment}" if self.comment else text


def _ae(calling_ae: str, timeout: float) -> AE:
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = timeout
    return ae


def echo(address: Address, calling_ae: str = "PHOTOGW", timeout: float = 10) -> None:
    """C-ECHO; TransientError naming the address and the reason if it does not answer 0x0000."""
    ae = _ae(calling_ae, timeout)
    ae.add_requested_context(Verification)
    assoc = ae.associate(address.host, address.port, ae_title=address.ae_title,
                         evt_handlers=NODELAY_HANDLERS)
    if not assoc.is_established:
        raise TransientError(f"{address}: {why_not_established(assoc)}")
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if not status or status.Status != 0x0000:
        raise TransientError(f"{address}: C-ECHO failed")


def why_not_established(assoc: object) -> str:
    if getattr(assoc, "is_rejected", False):
        return "association rejected (check the called AE title and that this gateway is allowed)"
    if getattr(assoc, "is_aborted", False):
        return "association aborted by the peer"
    return "no DICOM answer (connection refused or timed out)"


@dataclass(frozen=True)
class Outgoing:
    """An object to send, loaded only when its turn comes: a batch of large objects is never all
    in memory at once (an object may be up to max_object_mb)."""

    sop_class_uid: str
    transfer_syntax: str
    sop_instance_uid: str
    load: Callable[[], Dataset]

    @classmethod
    def of(cls, ds: Dataset) -> Outgoing:
        return cls(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID), str(ds.SOPInstanceUID),
                   lambda: ds)


def store(
    objects: Sequence[Dataset | Outgoing],
    address: Address,
    calling_ae: str = "PHOTOGW",
    timeout: float = 30,
    after_each: Callable[[], None] | None = None,
) -> list[StoreOutcome]:
    """C-STORE every object on one association; one outcome per object, in order.

    Raises TransientError when no association can be established at all.
    """
    if not objects:
        return []
    outgoing = [o if isinstance(o, Outgoing) else Outgoing.of(o) for o in objects]
    ae = _ae(calling_ae, timeout)
    contexts = sorted({(o.sop_class_uid, o.transfer_syntax) for o in outgoing})
    if len(contexts) > 128:  # PS3.8 9.3.2.2: at most 128 presentation contexts
        raise ValueError("more than 128 (SOP class, transfer syntax) pairs in one batch")
    # One transfer syntax per context, so the PACS cannot pick Explicit VR and force a decode.
    ae.requested_contexts = [build_context(sop, [ts]) for sop, ts in contexts]
    assoc = ae.associate(address.host, address.port, ae_title=address.ae_title,
                         evt_handlers=NODELAY_HANDLERS)
    if not assoc.is_established:
        raise TransientError(f"{address}: {why_not_established(assoc)}")
    outcomes: list[StoreOutcome] = []
    try:
        for item in outgoing:
            uid = item.sop_instance_uid
            if not assoc.is_established:
                outcomes.append(StoreOutcome(uid, None))
                continue
            try:
                rsp = assoc.send_c_store(item.load())
            except ValueError as exc:  # no accepted context for this SOP class / syntax
                outcomes.append(StoreOutcome(uid, 0xA900, f"not accepted by the PACS: {exc}"))
                continue
            if not rsp or "Status" not in rsp:
                outcomes.append(StoreOutcome(uid, None))
            else:
                outcomes.append(StoreOutcome(uid, int(rsp.Status), str(rsp.get("ErrorComment", ""))))
            if after_each is not None:
                after_each()
    finally:
        if assoc.is_established:
            assoc.release()
    for o in outcomes:
        log.info("c-store %s %s", o.sop_instance_uid, o.reason)
    return outcomes


# -- retry policy (data in, one function) ------------------------------------------------------

def backoff_s(initial_s: float, max_s: float, attempts: int, rand: float) -> float:
    """Seconds before attempt `attempts + 1`: exponential, capped, with "equal jitter" (half the
    delay fixed, half random), so retries of many items spread out but never hammer the PACS."""
    base = min(max_s, initial_s * 2 ** max(0, attempts - 1))
    return float(base / 2 + rand * base / 2)


# -- storage commitment (PS3.4 Annex J, Storage Commitment Push Model) ------------------------

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # the well-known SOP Instance (J.3.1)


def request_commitment(
    address: Address,
    references: Sequence[tuple[str, str]],
    transaction_uid: str,
    calling_ae: str = "PHOTOGW",
    timeout: float = 30,
    evt_handlers: list[tuple[Any, Any]] | None = None,
    wait_s: float = 0.0,
) -> None:
    """N-ACTION Request Storage Commitment for (SOP Class UID, SOP Instance UID) pairs.

    The result arrives as an N-EVENT-REPORT, usually on a new association the PACS opens to our
    DICOM door (Orthanc does that), or on this one: `evt_handlers` may take it here, and `wait_s`
    keeps the association open that long for it. TransientError if the request is not accepted.
    """
    ae = _ae(calling_ae, timeout)
    ae.add_requested_context(STORAGE_COMMITMENT)
    # We may receive the N-EVENT-REPORT on this association: propose the SCU and SCP roles.
    role = build_role(STORAGE_COMMITMENT, scu_role=True, scp_role=True)
    assoc = ae.associate(address.host, address.port, ae_title=address.ae_title, ext_neg=[role],
                         evt_handlers=[*NODELAY_HANDLERS, *(evt_handlers or [])])
    if not assoc.is_established:
        raise TransientError(f"{address}: storage commitment: {why_not_established(assoc)}")
    try:
        request = Dataset()
        request.TransactionUID = transaction_uid
        refs = []
        for sop_class, sop_instance in references:
            ref = Dataset()
            ref.ReferencedSOPClassUID = sop_class
            ref.ReferencedSOPInstanceUID = sop_instance
            refs.append(ref)
        request.ReferencedSOPSequence = refs
        status, _ = assoc.send_n_action(request, 1, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE)
        if not status or status.Status != 0x0000:
            code = f"0x{status.Status:04X}" if status and "Status" in status else "no response"
            raise TransientError(f"{address}: storage commitment request refused ({code})")
        if wait_s > 0:
            import time

            time.sleep(wait_s)
    finally:
        if assoc.is_established:
            assoc.release()


CommitmentCallback = Callable[[str, str, list[str], list[tuple[str, int]]], None]


def commitment_handlers(callback: CommitmentCallback) -> list[tuple[Any, ...]]:
    """Handlers that take a storage commitment result on the N-ACTION's own association: the
    DICOM door's, so one parser (with its checks of event type and transaction) serves both."""
    from gateway.ingest.dimse import DimseDoor

    return DimseDoor.commitment_handlers(callback)

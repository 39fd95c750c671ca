"""A small pynetdicom SCP that plays a faulty PACS: it answers C-STORE with the statuses it is
told to, and storage commitment with success, failure or silence. DCMTK's storescp cannot answer
A7xx, Cxxx or B0xx statuses, hence this peer (it is a real DICOM peer on loopback, not a mock)."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from gateway.deliver import STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
from gateway.orthanc import free_port


class FaultyPacs:
    def __init__(self, ae_title: str = "FAULTY", statuses: list[int] | None = None,
                 commitment: str = "success") -> None:
        self.ae_title = ae_title
        self.port = free_port()
        self.statuses: deque[int] = deque(statuses or [])  # consumed one per C-STORE; then 0x0000
        self.commitment = commitment  # "success" | "failure" | "silent"
        self.stored: list[str] = []  # SOP Instance UIDs of every C-STORE received (repeats kept)
        self.ae = AE(ae_title=ae_title)
        ts = ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
        for ctx in AllStoragePresentationContexts:
            self.ae.add_supported_context(ctx.abstract_syntax, ts)
        self.ae.add_supported_context(Verification)
        self.ae.add_supported_context(STORAGE_COMMITMENT, scu_role=True, scp_role=True)
        self.server: Any = None

    @property
    def address(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def _on_store(self, event: Any) -> Any:
        ds = event.dataset
        self.stored.append(str(ds.SOPInstanceUID))
        status = self.statuses.popleft() if self.statuses else 0x0000
        if status == 0xFFFF:  # "vanish": abort the association instead of answering
            event.assoc.abort()
            return 0x0000
        rsp = Dataset()
        rsp.Status = status
        if status not in (0x0000,):
            rsp.ErrorComment = f"faulty pacs says 0x{status:04X}"
        return rsp

    def _on_action(self, event: Any) -> Any:
        request = event.action_information
        refs = [(str(r.ReferencedSOPClassUID), str(r.ReferencedSOPInstanceUID))
                for r in request.ReferencedSOPSequence]
        txn = str(request.TransactionUID)
        assoc = event.assoc
        if self.commitment != "silent":
            threading.Thread(target=self._report, args=(assoc, txn, refs), daemon=True).start()
        return 0x0000, None

    def _report(self, assoc: Any, txn: str, refs: list[tuple[str, str]]) -> None:
        time.sleep(0.1)  # after the N-ACTION response, on the same association (PS3.4 J.3.3)
        info = Dataset()
        info.TransactionUID = txn
        items = []
        for sop_class, sop_instance in refs:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_instance
            if self.commitment == "failure":
                item.FailureReason = 0x0110
            items.append(item)
        if self.commitment == "failure":
            info.FailedSOPSequence = items
            event_type = 2
        else:
            info.ReferencedSOPSequence = items
            event_type = 1
        if assoc.is_established:
            assoc.send_n_event_report(info, event_type, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE)

    def __enter__(self) -> FaultyPacs:
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_N_ACTION, self._on_action)]
        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


_ = build_role  # re-exported for tests that negotiate roles themselves

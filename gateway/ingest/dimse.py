"""The DICOM door: a pynetdicom SCP whose handlers hand each object to the Intake and answer.

What it answers (PS3.4 Annexes A, B and J; PS3.7 Annex C):
  * C-ECHO from every accepted calling AE.
  * C-STORE of the photo storage classes (`dicom_input.PHOTO_SOP_CLASSES`: Secondary Capture,
    Multi-frame True Color SC, VL Photographic) and of `node.extra_sop_classes`, in the transfer
    syntaxes of TRANSFER_SYNTAXES. Any other SOP class or syntax: its presentation context is
    rejected at association, so the sender learns it before sending a byte of pixel data.
    (The mapping also reads RLE, JPEG-LS and JPEG 2000; the door does not offer them yet. Never
    Deflated: the size cap counts bytes on the wire, which inflating may multiply.)
    Success (0x0000) only after `Intake.accept_dicom` returned, that is once the object is
    encrypted, fsynced and journalled; the Intake's InputError answers its own `.status` (0x0124
    no consent or no route, 0x0122 class, 0xA900 mismatch, 0xC000 cannot understand); a full or
    failing staging area or journal 0xA700 (our trouble: the sender tries again later); anything
    unexpected 0xC000 (logged with its traceback).
  * N-EVENT-REPORT of Storage Commitment Push Model (PS3.4 J.3.3) from a destination's AE, on a
    new association the PACS opens (as Orthanc does, proposing the SCP role for itself: accepted).
    The result goes to `on_commitment`; the same handler can be bound on the delivery side's own
    N-ACTION association (`DimseDoor.commitment_handlers`).

Who may associate: a calling AE title listed in `node.allowed_calling_aes` (its `default_consent`
goes to the Intake), or the AE title of a destination, which may deliver commitment results and
echo, nothing else (its C-STORE is refused 0x0124). Anybody else: A-ASSOCIATE-RJ, rejected
permanent, service user, "calling AE title not recognised" (PS3.8 9.3.4). The called AE title
must be `node.ae_title` ("called AE title not recognised" otherwise).

Limits, enforced while receiving, before an object is all in memory: the reader of every accepted
connection sees each PDU header before pynetdicom reads the PDU; a P-DATA-TF PDU longer than
the maximum we announced (MAX_PDU_BYTES), any other PDU over MAX_OTHER_PDU_BYTES, or a data set
whose fragments add up to more than `node.max_object_mb` MiB, ends the association with an
A-ABORT (pynetdicom's reactor sends it when the reader raises). `node.max_associations` caps the
concurrent associations (beyond: A-ASSOCIATE-RJ, transient, local limit exceeded).

TLS (`node.tls`): the port speaks TLS only (1.2 at least); with `ca_file`, a client certificate
signed by it is required. Certificates and key are read at start. The handshake runs in the
connection's own thread with a time limit, not in the accept loop where one silent client would
hold up every other.

Logs carry AE titles, hosts, item ids, statuses and reasons; never an input's UIDs or attributes.
"""

from __future__ import annotations

import logging
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, Self

from pydicom import uid
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
    Verification,
)

from dicom_mapping.dicom_input import PHOTO_SOP_CLASSES
from dicom_mapping.metadata import Consent
from gateway.errors import ConfigError, InputError, TransientError
from gateway.intake import Intake
from gateway.journal import JournalError
from gateway.network import NODELAY_HANDLERS
from gateway.settings import Settings, Tls
from gateway.staging import StagingError, StagingFull

__all__ = ["MAX_PDU_BYTES", "TRANSFER_SYNTAXES", "CommitmentCallback", "DimseDoor"]

log = logging.getLogger(__name__)

CommitmentCallback = Callable[[str, str, list[str], list[tuple[str, int]]], None]
"""(calling AE, Transaction UID, succeeded SOP Instance UIDs, [(failed UID, Failure Reason)])"""

# Accepted for storage, in our order of preference: a requestor that offers a JPEG syntax holds
# the JPEG bitstream, which passes through untouched; the uncompressed ones come last.
TRANSFER_SYNTAXES = (
    uid.JPEGBaseline8Bit,  # 1.2.840.10008.1.2.4.50
    uid.JPEGExtended12Bit,  # .51
    uid.JPEGLosslessSV1,  # .70
    uid.JPEGLossless,  # .57
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    # dicom_input checks and strips these too (RLE headers; JPEG-LS and JPEG 2000 comments).
    uid.RLELossless,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
)
COMMITMENT_TRANSFER_SYNTAXES = (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian)

MAX_PDU_BYTES = 64 * 1024  # what we announce (Maximum Length Received, PS3.8 D.1) and enforce
MAX_OTHER_PDU_BYTES = 1 << 20  # association request, release, abort: far smaller in practice
MAX_COMMAND_BYTES = 64 * 1024  # one DIMSE command set (a few hundred bytes in practice)
HANDSHAKE_TIMEOUT_S = 10.0
STOP_GRACE_S = 10.0

_P_DATA_TF = 0x04
_EVENT_TYPES = {1: "all committed", 2: "failures exist"}  # PS3.4 J.3.3: Event Type ID


# -- answers ----------------------------------------------------------------------------------

def _status(code: int, comment: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        # Error Comment is LO: at most 64 characters of the default repertoire, no backslash.
        text = "".join(c if " " <= c <= "~" and c != "\\" else " " for c in comment)
        ds.ErrorComment = text[:64]
    return ds


def _peer_ae(event: evt.Event) -> str:
    """The other side's AE title: the calling AE on associations the door accepted."""
    assoc = event.assoc
    user = assoc.requestor if assoc.is_acceptor else assoc.acceptor
    return str(user.ae_title).strip()


def _report(event: evt.Event, on_commitment: CommitmentCallback | None,
            allowed: frozenset[str] | None) -> tuple[Dataset, None]:
    """N-EVENT-REPORT of Storage Commitment: parse, hand over, answer (PS3.4 J.3.3)."""
    peer = _peer_ae(event)
    try:
        if allowed is not None and peer not in allowed:
            log.warning("storage commitment report from %s refused: not a destination's AE", peer)
            return _status(0x0124, "only a destination may report storage commitment"), None
        event_type = int(getattr(event.request, "EventTypeID", 0) or 0)
        if event_type not in _EVENT_TYPES:
            return _status(0x0113, f"event type {event_type} is not a commitment result"), None
        info = event.event_information
        transaction = str(info.get("TransactionUID", "")).strip()
        if not transaction:
            return _status(0x0115, "no Transaction UID"), None
        succeeded = [str(r.ReferencedSOPInstanceUID)
                     for r in info.get("ReferencedSOPSequence", None) or []]
        failed = [(str(r.ReferencedSOPInstanceUID), int(r.get("FailureReason", 0x0110)))
                  for r in info.get("FailedSOPSequence", None) or []]
        if on_commitment is None:
            log.error("storage commitment report from %s: nobody here takes the results", peer)
            return _status(0x0110, "commitment results are not taken here"), None
        on_commitment(peer, transaction, succeeded, failed)
    except Exception:  # nothing may escape a handler: the PACS is told, we log
        log.exception("storage commitment report from %s could not be processed", peer)
        return _status(0x0110, "processing failure"), None
    log.info("storage commitment report from %s: transaction %s, %d committed, %d failed",
             peer, transaction, len(succeeded), len(failed))
    return _status(0x0000), None


# -- the receive guard ------------------------------------------------------------------------

def _end_unassociated(assoc: Any) -> None:
    """The connection is over (the peer hung up, the guard refused a PDU, or the state machine
    aborted and closed it) before any A-ASSOCIATE-RQ. pynetdicom's acceptor would still wait
    acse_timeout for one, holding one of node.max_associations all that time: a client that
    connects and hangs up, again and again, would keep the door full. Wake it now; None reads
    as "nothing came" (it kills the association and closes the socket)."""
    if assoc.requestor.primitive is None:
        assoc.dul.to_user_queue.put(None)


class _Refused(Exception):  # not an OSError: pynetdicom's reactor aborts on any other
    """Raised inside pynetdicom's PDU reader: its reactor answers with an A-ABORT and stops."""


class _ReceiveGuard:
    """Wraps an accepted AssociationSocket's `recv`, which the DUL calls twice per PDU: 6 bytes of
    header (type, reserved, length), then the length it read there. The header is checked before
    the body is read; a P-DATA body's PDV items are counted before pynetdicom sees them."""

    def __init__(self, recv: Callable[[int], bytearray], describe: Callable[[], str],
                 max_object_bytes: int, on_end: Callable[[], None] = lambda: None) -> None:
        self._recv = recv
        self._describe = describe
        self._on_end = on_end  # the connection is over: closed by the peer, or refused here
        self._max_object = max_object_bytes
        self._pending: int | None = None  # type of the PDU whose body comes next
        self._dataset = 0  # data set bytes of the message being received
        self._command = 0

    def __call__(self, nr_bytes: int) -> bytearray:
        if self._pending is None and nr_bytes == 6:
            head = self._recv(6)
            if len(head) < 6:
                self._on_end()  # the peer hung up (pynetdicom reads that as Evt17)
            if len(head) == 6:
                pdu_type, _, length = struct.unpack(">BBL", head)
                limit = MAX_PDU_BYTES if pdu_type == _P_DATA_TF else MAX_OTHER_PDU_BYTES
                if length > limit:
                    what = "announced maximum" if pdu_type == _P_DATA_TF else "limit"
                    self._refuse(f"PDU of {length} bytes (type 0x{pdu_type:02X}) is over the "
                                 f"{what} of {limit}")
                self._pending = pdu_type
            return head
        body = self._recv(nr_bytes)
        if self._pending == _P_DATA_TF:
            self._count(bytes(body))
        self._pending = None
        return body

    def _count(self, body: bytes) -> None:
        """PS3.8 9.3.5.1: PDV item = length (4) + context id (1) + message control header (1) +
        fragment; header bit 0 set: command, bit 1 set: last fragment of the message."""
        pos = 0
        while pos + 6 <= len(body):
            item_length = int.from_bytes(body[pos:pos + 4], "big")
            header = body[pos + 5]
            fragment = max(item_length - 2, 0)
            if header & 0x01:
                self._command += fragment
                if self._command > MAX_COMMAND_BYTES:
                    self._refuse(f"command set over {MAX_COMMAND_BYTES} bytes")
                if header & 0x02:
                    self._command = 0
            else:
                self._dataset += fragment
                if self._dataset > self._max_object:
                    self._refuse(f"object over node.max_object_mb ({self._max_object >> 20} MiB; "
                                 f"{self._dataset} bytes received)")
                if header & 0x02:
                    self._dataset = 0
            pos += 4 + item_length

    def _refuse(self, why: str) -> None:
        log.warning("aborting the association with %s: %s", self._describe(), why)
        self._on_end()
        raise _Refused(why)


# -- TLS ----------------------------------------------------------------------------------------

class _DeferredHandshakeContext(ssl.SSLContext):
    """pynetdicom wraps accepted sockets in its accept loop, where the default handshake-on-wrap
    would let one silent client stall the door; we shake hands in the connection's thread."""

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["do_handshake_on_connect"] = False
        return super().wrap_socket(*args, **kwargs)


def _tls_context(tls: Tls) -> ssl.SSLContext:
    context = _DeferredHandshakeContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=str(tls.cert_file), keyfile=str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"node.tls: cannot load certificate {tls.cert_file} with key "
                          f"{tls.key_file}: {getattr(exc, 'strerror', None) or exc}") from None
    if tls.ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(tls.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"node.tls.ca_file {tls.ca_file}: cannot load "
                              f"({getattr(exc, 'strerror', None) or exc})") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


# -- the door -----------------------------------------------------------------------------------

class DimseDoor:
    """The DICOM SCP of the node. `start()` returns at once; associations run in their threads."""

    def __init__(self, cfg: Settings, intake: Intake,
                 on_commitment: CommitmentCallback | None = None, *,
                 extra_sop_classes: frozenset[str] = frozenset()) -> None:
        self.cfg = cfg
        self.intake = intake
        self.on_commitment = on_commitment
        # node.extra_sop_classes (config) and any the caller adds: offered at association too.
        self.extra_sop_classes = frozenset(extra_sop_classes) | frozenset(
            cfg.node.extra_sop_classes)
        node = cfg.node
        self._consent: dict[str, Consent | None] = {
            ae.strip(): (entry.default_consent if entry is not None else None)
            for ae, entry in node.allowed_calling_aes.items()
        }
        self._destination_aes = frozenset(dest.address.ae_title.strip()
                                          for dest in cfg.destinations.values())
        self._max_object_bytes = node.max_object_mb << 20
        self._server: Any = None
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        node = self.cfg.node
        if node.port is None:
            raise ConfigError("node.port is not set: the DICOM door has nowhere to listen")
        context = _tls_context(node.tls) if node.tls is not None else None  # keys read now
        ae = AE(ae_title=node.ae_title)
        ae.maximum_pdu_size = MAX_PDU_BYTES
        ae.maximum_associations = node.max_associations
        ae.require_called_aet = True
        for sop_class in sorted(PHOTO_SOP_CLASSES | self.extra_sop_classes):
            ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
        ae.add_supported_context(Verification)
        # Orthanc proposes itself as SCP of Storage Commitment on the association it opens to
        # deliver the N-EVENT-REPORT (we are the SCU there): accept whichever roles are proposed.
        ae.add_supported_context(StorageCommitmentPushModel, list(COMMITMENT_TRANSFER_SYNTAXES),
                                 scu_role=True, scp_role=True)
        handlers: list[Any] = [
            *NODELAY_HANDLERS,
            (evt.EVT_CONN_OPEN, self._on_connection),
            (evt.EVT_CONN_CLOSE, lambda event: _end_unassociated(event.assoc)),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_N_EVENT_REPORT, _report, [self.on_commitment, self._destination_aes]),
        ]
        with self._lock:
            if self._server is not None:
                raise RuntimeError("the DICOM door is already started")
            try:
                self._server = ae.start_server((node.host, node.port), block=False,
                                               ssl_context=context, evt_handlers=handlers)
            except OSError as exc:
                raise ConfigError(f"node: cannot listen on {node.host}:{node.port} "
                                  f"({exc.strerror or exc})") from None
        log.info("DICOM door %s listening on %s:%d%s", node.ae_title, node.host, self.port,
                 " (TLS)" if context else "")

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop accepting; let running associations finish for `grace_s`, then abort them."""
        with self._lock:
            server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        deadline = time.monotonic() + grace_s
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in server.active_associations:
            assoc.abort()
        log.info("DICOM door stopped")

    @property
    def port(self) -> int:
        server = self._server
        if server is None:
            raise RuntimeError("the DICOM door is not started")
        return int(server.server_address[1])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def commitment_handlers(on_commitment: CommitmentCallback) -> list[Any]:
        """evt handlers taking an N-EVENT-REPORT on any association, e.g. the delivery side's own
        N-ACTION association (propose the SCU and SCP roles of Storage Commitment there)."""
        return [(evt.EVT_N_EVENT_REPORT, _report, [on_commitment, None])]

    # -- association handlers -------------------------------------------------------------------
    def _on_connection(self, event: evt.Event) -> None:
        """A connection was accepted: finish the TLS handshake, then guard what is received."""
        assoc_socket = event.assoc.dul.socket
        if assoc_socket is None:
            return
        sock = assoc_socket.socket
        address = getattr(event, "address", None)
        host = str(address[0]) if address else "?"
        if isinstance(sock, ssl.SSLSocket):
            previous = sock.gettimeout()
            try:
                sock.settimeout(HANDSHAKE_TIMEOUT_S)
                sock.do_handshake()
                sock.settimeout(previous)
            except (OSError, ValueError) as exc:
                log.warning("TLS handshake with %s failed: %s", host,
                            getattr(exc, "reason", None) or exc.__class__.__name__)
                event.assoc.acse_timeout = 0  # no A-ASSOCIATE-RQ will come: end at once
                assoc_socket.close()
                return
        assoc = event.assoc

        def describe() -> str:
            calling = str(assoc.requestor.ae_title or "").strip()
            return f"{calling or '(before association)'} at {host}"

        guard = _ReceiveGuard(assoc_socket.recv, describe, self._max_object_bytes,
                              lambda: _end_unassociated(assoc))
        setattr(assoc_socket, "recv", guard)  # noqa: B010 - shadows the method on this instance

    def _on_requested(self, event: evt.Event) -> None:
        """A-ASSOCIATE-RQ received: refuse a calling AE neither allowed nor a destination's."""
        assoc = event.assoc
        request = assoc.requestor.primitive
        calling = str(request.calling_ae_title if request is not None else "").strip()
        if calling in self._consent or calling in self._destination_aes:
            return
        host = assoc.requestor.address
        log.warning("association from %s at %s rejected: calling AE title not recognised",
                    calling, host)
        # PS3.8 9.3.4: rejected-permanent, DICOM UL service-user, calling-AE-title-not-recognized
        assoc.acse.send_reject(0x01, 0x01, 0x03)
        assoc.kill()

    def _on_echo(self, event: evt.Event) -> int:
        return 0x0000

    def _on_store(self, event: evt.Event) -> Dataset:
        """Thin: Part 10 bytes to the Intake; success only once it returned (durably staged)."""
        calling = _peer_ae(event)
        if calling not in self._consent:
            log.warning("C-STORE from %s refused: a destination may only report commitment",
                        calling)
            return _status(0x0124, "this AE may only deliver storage commitment results")
        try:
            data = event.encoded_dataset()  # preamble + file meta + the data set as received
            items = self.intake.accept_dicom(data, source="dimse", calling_ae=calling,
                                             default_consent=self._consent[calling],
                                             extra_sop_classes=self.extra_sop_classes)
        except InputError as exc:
            log.info("C-STORE from %s refused 0x%04X: %s", calling, exc.status, exc.reason)
            return _status(exc.status, exc.reason)
        except StagingFull as exc:
            log.warning("C-STORE from %s answered 0xA700: %s", calling, exc)
            return _status(0xA700, "staging full: try again later")
        except TransientError as exc:
            log.warning("C-STORE from %s answered 0xA700: %s", calling, exc)
            return _status(0xA700, "out of resources: try again later")
        except (StagingError, JournalError):  # our disk or database failed, not the object
            log.exception("C-STORE from %s answered 0xA700: staging failed", calling)
            return _status(0xA700, "the gateway cannot store now: try again later")
        except Exception:  # nothing escapes a handler: the sender gets a failure
            log.exception("C-STORE from %s failed unexpectedly", calling)
            return _status(0xC000, "the gateway could not process the object")
        log.info("C-STORE from %s: staged %s", calling, " ".join(i.id for i in items))
        return _status(0x0000)

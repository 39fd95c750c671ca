"""Hostile inputs at the DICOM door and at the hot folder: each gets its specific answer, the door
stays up (an echo and a good input afterwards still work), and nothing is ever half-staged
(journal items == staged item ids, and every staged item is a complete set: input + job).

The HTTP door has its own 59-case hostile-request test (test_http_door.py); this file covers the
other two doors. Every case is bounded in time: it runs in a thread joined with a deadline (a
hang fails the case, naming it), DICOM peers have short timeouts, and a watchdog dumps tracebacks
and ends the run if something hangs all the same.

DICOM door: pynetdicom as the client (one presentation context per transfer syntax for Secondary
Capture, Multi-frame True Color SC and VL Photographic in JPEG Baseline, Explicit and Implicit VR
Little Endian), datasets built with pydicom, raw data sets sent as bytes whose encoding the test
controls (pynetdicom's chunked sending of a file: the file meta chooses the context, the rest goes
on the wire as it is; or a request handed to pynetdicom's DIMSE layer), raw sockets for PDU-level
abuse, and DCMTK's /usr/bin/storescu for files written here. The cases share one node (module
scope), so the door survives all of them in a row; a case that abuses connections or needs other
settings gets a node of its own, where what it leaves behind is measured.

A success (0x0000) is expected for one case only, a well-formed object with an overlong name:
it is staged and must convert (the name becomes the pseudonym), so it cannot turn into a
quarantine later. Every other case is refused at the door, as the contract's "Strictness" and
CONVENTIONS (an InputError found at a door: refused there, nothing staged) ask.

Hot folder: a FolderDoor with a real Intake, Journal and Staging in tmp_path, driven by
`scan_once()` with a small stable_s on the real clock, polled with deadlines.

Unreadable files (chmod 000) are not a case here: the tests run as root, for whom a mode-000
file stays readable, so the case would test nothing. A file removed while it is being read is
tested instead (on Linux an open descriptor still reads the whole file).
"""

from __future__ import annotations

import faulthandler
import io
import json
import logging
import os
import re
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import dcmtk, wait_until
from dicom_factory import secondary_capture as synthetic_sc
from photo_factory import huge_jpeg, make_heic, make_jpeg, make_png
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    Verification,
    VLPhotographicImageStorage,
)

from gateway.clock import SYSTEM
from gateway.ingest.dimse import DimseDoor
from gateway.ingest.folder import FolderDoor
from gateway.intake import INPUT, JOB, Intake, Job
from gateway.journal import Journal
from gateway.orthanc import free_port
from gateway.settings import FolderSource, Settings, read_keys, write_key_file
from gateway.staging import Staging

GRANTED = {"status": "granted", "scope": ["clinical-care"]}
TIMEOUT_S = 10  # every DICOM timeout and subprocess here
CASE_S = 20  # a case that has not answered by then hangs
PHOTO_CLASSES = (SecondaryCaptureImageStorage, MultiFrameTrueColorSecondaryCaptureImageStorage,
                 VLPhotographicImageStorage)
SYNTAXES = (JPEGBaseline8Bit, ExplicitVRLittleEndian, ImplicitVRLittleEndian)
PASSWD = Path("/etc/passwd").read_bytes()


@pytest.fixture(autouse=True)
def _watchdog() -> Iterator[None]:
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def bounded(fn: Callable[[], Any], seconds: float, what: str) -> Any:
    """fn() in a thread joined with a deadline: a hang fails, naming the case."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"case {what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AssertionError(f"{what}: no answer within {seconds} s (hangs)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def assert_complete_sets(staging: Staging, journal: Journal) -> list[str]:
    """Journal items == staged item ids, each staged as input + job and nothing else."""
    ids = sorted(i.id for i in journal.list(unfinished_only=False))
    assert staging.item_ids() == ids, "staged files without a journal item, or the reverse"
    names = sorted(p.name for p in staging.directory.iterdir())
    assert names == sorted(f"{i}.{n}" for i in ids for n in (INPUT, JOB)), names
    return ids


# == the DICOM door ==================================================================================

@dataclass
class Node:
    door: DimseDoor
    journal: Journal
    staging: Staging

    @property
    def port(self) -> int:
        return self.door.port

    def item_ids(self) -> list[str]:
        return assert_complete_sets(self.staging, self.journal)

    def active(self) -> int:
        return len(self.door._server.active_associations)


def settings(tmp_path: Path, **node: Any) -> Settings:
    keys = tmp_path / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    for name in ("staging.key", "pseudonym.key"):
        if not (keys / name).exists():
            write_key_file(keys / name)
    return Settings.model_validate({
        "node": {"ae_title": "PHOTOGW", "host": "127.0.0.1", "port": free_port(),
                 "allowed_calling_aes": {"STORESCU": {"default_consent": GRANTED}, "NOCONSENT": {}},
                 **node},
        "staging": {"directory": str(tmp_path / "staging"), "key_file": str(keys / "staging.key")},
        "deid": {"secret_file": str(keys / "pseudonym.key")},
        "destinations": {"pacs": {"address": "ORTHANC@127.0.0.1:9", "storage_commitment": True}},
        "routes": [{"match": {}, "to": ["pacs"]}],
    })


def start_node(tmp_path: Path, **node: Any) -> Node:
    cfg = settings(tmp_path, **node)
    assert cfg.staging is not None
    journal = Journal(tmp_path / "journal.db")
    staging = Staging(cfg.staging.directory, read_keys(cfg.staging.key_file))
    door = DimseDoor(cfg, Intake(cfg, journal, staging, SYSTEM))
    door.start()
    return Node(door, journal, staging)


def stop_node(node: Node) -> None:
    node.door.stop(grace_s=2)
    node.journal.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One node for every case: it must survive all of them in a row."""
    node = start_node(tmp_path_factory.mktemp("dimse"))
    yield node
    stop_node(node)


def client(aet: str = "STORESCU") -> AE:
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = TIMEOUT_S
    for sop_class in PHOTO_CLASSES:
        for syntax in SYNTAXES:  # one syntax per context: the test chooses the encoding
            ae.add_requested_context(sop_class, syntax)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)  # refused by the door
    ae.add_requested_context(Verification)
    return ae


@contextmanager
def associated(port: int, aet: str = "STORESCU") -> Iterator[Association]:
    assoc = client(aet).associate("127.0.0.1", port, ae_title="PHOTOGW")
    assert assoc.is_established, "the door refused a good association"
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


Answer = tuple[int | str, str]  # a DIMSE status and its Error Comment, or what the peer saw


def answer_of(rsp: Dataset | None) -> Answer:
    if rsp is None or "Status" not in rsp:
        return "no response", ""
    return int(rsp.Status), str(rsp.get("ErrorComment", "") or "")


# -- objects -------------------------------------------------------------------------------------

SIDE = 16  # a 16 x 16 RGB image: 768 bytes of native pixel data


def sc(consent: str | None = "YES", **attrs: Any) -> Dataset:
    """A small, valid RGB Secondary Capture (synthetic), Explicit VR LE, with its own consent."""
    ds = synthetic_sc(SIDE, patient_id="SYN-HOSTILE-1", patient_name="TEST^HOSTILE",
                      pixels=bytes(range(256)) * (SIDE * SIDE * 3 // 256), consent=consent)
    for keyword, value in attrs.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def small_jpeg(width: int = SIDE, height: int = SIDE, seed: int = 3) -> bytes:
    return bytes(make_jpeg(width=width, height=height, seed=seed, exif_markers=False, gps=False,
                           thumbnail=False, xmp=False, iptc=False, comment=False,
                           date_time_original=None))


def with_sof(jpeg_bytes: bytes, new_marker: int) -> bytes:
    """The JPEG with its SOF0 marker byte replaced (e.g. 0xC9: arithmetic, unsupported)."""
    data = bytearray(jpeg_bytes)
    i = data.index(b"\xff\xc0")
    data[i + 1] = new_marker
    return bytes(data)


def jpeg_sc(frames: list[bytes], *, rows: int = SIDE, columns: int = SIDE,
            number_of_frames: int | None = None, **attrs: Any) -> Dataset:
    """A Secondary Capture whose Pixel Data is these JPEG frames, encapsulated (PS3.5 A.4)."""
    ds = sc(**attrs)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.Rows, ds.Columns = rows, columns
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if number_of_frames is not None:
        ds.NumberOfFrames = number_of_frames
    return ds


def body_of(ds: Dataset, implicit: bool = False) -> bytes:
    data = encode(ds, implicit, True)
    assert data is not None
    return data


def element(group: int, elem: int, vr: str, value: bytes, length: int | None = None) -> bytes:
    """One Explicit VR Little Endian element; `length` may lie about len(value)."""
    n = len(value) if length is None else length
    if vr in ("OB", "OW", "OF", "SQ", "UT", "UN", "UC", "UR", "OD", "OL", "OV", "SV", "UV"):
        return struct.pack("<HH2sHL", group, elem, vr.encode(), 0, n) + value
    return struct.pack("<HH2sH", group, elem, vr.encode(), n) + value


def spliced(ds: Dataset, tag: int, raw: bytes, drop: bool = False) -> bytes:
    """The encoded data set with `raw` inserted where `tag` belongs (replacing it with `drop`)."""
    before, after = Dataset(), Dataset()
    for elem in ds:
        if elem.tag < tag:
            before.add(elem)
        elif elem.tag > tag or not drop:
            after.add(elem)
    return body_of(before) + raw + body_of(after)


def nested_sequences(depth: int) -> bytes:
    """A Content Sequence nested `depth` deep, all undefined lengths (each item holds the next)."""
    head = struct.pack("<HH2sHL", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    seq_end = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return (head + item) * depth + (item_end + seq_end) * depth


# -- sending ---------------------------------------------------------------------------------------

def _instance_in(body: bytes) -> str | None:
    """The data set's own SOP Instance UID (0008,0018), when it is a valid one, so that the
    request names the instance it carries."""
    at = body.find(b"\x08\x00\x18\x00")
    if at < 0:
        return None
    try:
        if body[at + 4:at + 6] == b"UI":
            value = body[at + 8:at + 8 + struct.unpack_from("<H", body, at + 6)[0]]
        else:
            value = body[at + 8:at + 8 + struct.unpack_from("<L", body, at + 4)[0]]
    except struct.error:
        return None
    found = value.decode("ascii", "replace").strip("\x00 ")
    return found if UID(found).is_valid else None


@dataclass
class Peer:
    """What a case may use: its node and a scratch directory."""

    node: Node
    tmp: Path

    def store(self, ds: Dataset, aet: str = "STORESCU") -> Answer:
        with associated(self.node.port, aet) as assoc:
            return answer_of(assoc.send_c_store(ds))

    def store_raw(self, body: bytes, *, sop_class: str = SecondaryCaptureImageStorage,
                  syntax: str = ExplicitVRLittleEndian, instance: str | None = None) -> Answer:
        """Send `body` as the data set, byte for byte: the file meta written here chooses the
        presentation context and the command's Affected SOP Class/Instance UIDs."""
        meta = FileMetaDataset()
        meta.FileMetaInformationVersion = b"\x00\x01"
        meta.MediaStorageSOPClassUID = UID(sop_class)
        meta.MediaStorageSOPInstanceUID = UID(instance or _instance_in(body) or generate_uid())
        meta.TransferSyntaxUID = UID(syntax)
        buf = DicomBytesIO()
        buf.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(buf, meta, enforce_standard=False)
        path = self.tmp / f"raw-{time.monotonic_ns()}.dcm"
        path.write_bytes(bytes(buf.getvalue()) + body)
        previous = _config.STORE_SEND_CHUNKED_DATASET
        _config.STORE_SEND_CHUNKED_DATASET = True
        try:
            with associated(self.node.port) as assoc:
                return answer_of(assoc.send_c_store(path))
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = previous

    def store_wire(self, body: bytes, instance: str, *,
                   sop_class: str = SecondaryCaptureImageStorage,
                   syntax: str = ExplicitVRLittleEndian) -> Answer:
        """A C-STORE request built here and handed to pynetdicom's DIMSE layer, its data set
        bytes untouched (a file would be parsed on the way: its meta absorbs group 0002)."""
        with associated(self.node.port) as assoc:
            context = next(c for c in assoc.accepted_contexts
                           if c.abstract_syntax == sop_class and c.transfer_syntax[0] == syntax)
            request = C_STORE()
            request.MessageID, request.Priority = 1, 2
            request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = sop_class, instance
            request.DataSet = io.BytesIO(body)
            # As send_c_store does: the association's reactor pauses, the reply is ours.
            assoc._reactor_checkpoint.clear()
            while not assoc._is_paused:
                time.sleep(0.001)
            try:
                assert context.context_id is not None
                assoc.dimse.send_msg(request, context.context_id)
                _, rsp = assoc.dimse.get_msg(block=True)
            finally:
                assoc._reactor_checkpoint.set()
        status = getattr(rsp, "Status", None)
        if status is None:
            return "no response", ""
        return int(status), str(getattr(rsp, "ErrorComment", "") or "")

    def storescu(self, ds: Dataset) -> Answer:
        """DCMTK's storescu sends a file written here; its debug output gives the status."""
        path = self.tmp / f"dcmtk-{time.monotonic_ns()}.dcm"
        ds.save_as(path, enforce_file_format=True)
        syntax = ["-xy"] if ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit else []
        run = dcmtk("storescu", "-d", "-R", *syntax, "-to", str(TIMEOUT_S), "-aet", "STORESCU",
                    "-aec", "PHOTOGW", "127.0.0.1", str(self.node.port), str(path),
                    timeout=TIMEOUT_S * 3)
        out = run.stdout + run.stderr
        found = re.search(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", out)
        if not found:
            return f"storescu exit {run.returncode}", out[-2000:]
        comment = re.search(r"\(0000,0902\) LO \[([^\]]*)\]", out)
        return int(found[1], 16), comment[1] if comment else ""


def association_answer(port: int, aet: str = "STORESCU", aec: str = "PHOTOGW") -> Answer:
    """Associate and say how the door answered: established, or A-ASSOCIATE-RJ result/source/reason."""
    seen: list[Any] = []
    ae = client(aet)
    assoc = ae.associate("127.0.0.1", port, ae_title=aec,
                         evt_handlers=[(evt.EVT_ACSE_RECV, lambda e: seen.append(e.primitive))])
    if assoc.is_established:
        assoc.release()
        return "established", ""
    if assoc.is_rejected:
        rj = next(p for p in seen if getattr(p, "result", None) not in (None, 0))
        return f"A-ASSOCIATE-RJ {rj.result}/{rj.result_source}/{rj.diagnostic}", ""
    return "aborted" if assoc.is_aborted else "no association", ""


def pdu_answer(data: bytes) -> str:
    """What a raw peer received: an A-ABORT (with its source and reason), an A-ASSOCIATE-RJ,
    or the connection closed."""
    if not data:
        return "closed"
    if data[0] == 0x07 and len(data) >= 10:
        return f"A-ABORT {data[8]}/{data[9]}"
    if data[0] == 0x03 and len(data) >= 10:
        return f"A-ASSOCIATE-RJ {data[7]}/{data[8]}/{data[9]}"
    return f"PDU 0x{data[0]:02X}"


def raw_exchange(port: int, payload: bytes, timeout: float = 5.0) -> str:
    """Send raw bytes on a fresh connection; what the door sends back before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
        except OSError:
            return "closed"
        data = b""
        deadline = time.monotonic() + timeout
        while len(data) < 10 and time.monotonic() < deadline:
            try:
                chunk = sock.recv(64)
            except TimeoutError as exc:
                raise AssertionError("the door neither answered nor closed the connection") from exc
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return pdu_answer(data)


def a_associate_rq(calling: str = "STORESCU", called: str = "PHOTOGW", extra: bytes = b"") -> bytes:
    """A minimal A-ASSOCIATE-RQ (PS3.8 9.3.2): application context, one Verification context."""
    app = b"\x10\x00" + struct.pack(">H", 21) + b"1.2.840.10008.3.1.1.1"
    abstract = b"\x30\x00" + struct.pack(">H", 17) + b"1.2.840.10008.1.1"
    syntax = b"\x40\x00" + struct.pack(">H", 17) + b"1.2.840.10008.1.2"
    pres_body = b"\x01\x00\x00\x00" + abstract + syntax
    pres = b"\x20\x00" + struct.pack(">H", len(pres_body)) + pres_body
    max_len = b"\x51\x00\x00\x04" + struct.pack(">L", 16384)
    user = b"\x50\x00" + struct.pack(">H", len(max_len)) + max_len
    body = (struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode()
            + bytes(32) + app + pres + user + extra)
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


# -- the cases -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DicomCase:
    id: str
    send: Callable[[Peer], Answer]
    status: int | str  # the exact answer expected
    comment: str = ""  # a regex the Error Comment must match (the refusal names its reason)
    own: dict[str, Any] | None = None  # node settings: the case gets a node of its own
    accepted: bool = False  # the one kind of success here: staged once, and it converts


def _truncated(cut: Callable[[int], int]) -> Callable[[Peer], Answer]:
    def send(p: Peer) -> Answer:
        body = body_of(sc())
        return p.store_raw(body[:cut(len(body))])
    return send


def _offset_in(keyword_tag: int, inside: int) -> Callable[[Peer], Answer]:
    """Cut inside the value of an element (`inside` bytes after its header)."""
    def send(p: Peer) -> Answer:
        body = body_of(sc())
        header = struct.pack("<HH", keyword_tag >> 16, keyword_tag & 0xFFFF)
        at = body.index(header)
        return p.store_raw(body[:at + 8 + inside])
    return send


def _mismatched_instance(p: Peer) -> Answer:
    ds = sc()
    return p.store_raw(body_of(ds), instance=generate_uid())  # command says another instance


def _send_half_an_object(assoc: Association) -> None:
    """The C-STORE command and half the P-DATA-TF PDUs of a 270 kB object, then nothing more."""
    ds = sc()
    ds.PixelData = bytes(300 * 300 * 3)
    ds.Rows = ds.Columns = 300
    request = C_STORE()
    request.MessageID, request.Priority = 1, 2
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    request.DataSet = io.BytesIO(body_of(ds))
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    context = next(c for c in assoc.accepted_contexts
                   if c.abstract_syntax == SecondaryCaptureImageStorage
                   and c.transfer_syntax[0] == ExplicitVRLittleEndian)
    assert context.context_id is not None and assoc.acceptor.maximum_length is not None
    fragments = list(message.encode_msg(context.context_id, assoc.acceptor.maximum_length))
    assert len(fragments) > 4
    for fragment in fragments[:len(fragments) // 2]:
        assoc.dul.send_pdu(fragment)


def _abort_half_way(p: Peer) -> Answer:
    with associated(p.node.port) as assoc:
        _send_half_an_object(assoc)
        assoc.abort()
    return "aborted by the peer", ""


def _release_half_way(p: Peer) -> Answer:
    """Half an object, then an A-RELEASE-RQ as if the object were done: the door may release
    (PS3.8 allows it at any time), but the half object is dropped."""
    seen: list[str] = []
    assoc = client().associate("127.0.0.1", p.node.port, ae_title="PHOTOGW",
                               evt_handlers=[(evt.EVT_ABORTED, lambda e: seen.append("aborted")),
                                             (evt.EVT_RELEASED, lambda e: seen.append("released"))])
    assert assoc.is_established
    _send_half_an_object(assoc)
    assoc.release()
    wait_until(lambda: not assoc.is_alive(), TIMEOUT_S, what="the association to end")
    return (seen[0] if seen else "ended"), ""


def _silent_client(p: Peer) -> Answer:
    """Connect and say nothing: another association must be served meanwhile."""
    with socket.create_connection(("127.0.0.1", p.node.port), timeout=TIMEOUT_S):
        started = time.monotonic()
        with associated(p.node.port) as assoc:
            status = answer_of(assoc.send_c_echo())
        assert time.monotonic() - started < 3, "a silent client held up another association"
    return status


def _half_header_then_silent(p: Peer) -> Answer:
    """Three bytes of a PDU header, then nothing: the others are still served."""
    with socket.create_connection(("127.0.0.1", p.node.port), timeout=TIMEOUT_S) as sock:
        sock.sendall(b"\x01\x00\x00")
        with associated(p.node.port) as assoc:
            return answer_of(assoc.send_c_echo())


def _pdata_lies_about_pdv_length(p: Peer) -> Answer:
    """On an established association: a P-DATA-TF whose PDV item claims 1 MiB inside a PDU of 20."""
    with associated(p.node.port) as assoc:
        pdv = struct.pack(">L", 1 << 20) + b"\x01\x03" + bytes(14)
        assert assoc.dul.socket is not None
        assoc.dul.socket.send(struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv)
        wait_until(lambda: assoc.is_aborted or not assoc.is_alive(), TIMEOUT_S,
                   what="the door to end the association")
        return ("aborted" if assoc.is_aborted else "ended"), ""


def _pdu_over_announced_on_association(p: Peer) -> Answer:
    with associated(p.node.port) as assoc:
        assert assoc.dul.socket is not None
        assoc.dul.socket.send(b"\x04\x00\xff\xff\xff\xff" + bytes(64))
        wait_until(lambda: assoc.is_aborted, TIMEOUT_S, what="the door's A-ABORT")
        return "aborted", ""


def _many_associations(p: Peer) -> Answer:
    """max_associations 2: two held, then six at once; each of the six is rejected (transient,
    local limit exceeded), and once the two are released the door takes new ones."""
    held = [client().associate("127.0.0.1", p.node.port, ae_title="PHOTOGW") for _ in range(2)]
    answers: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        answer = association_answer(p.node.port)[0]
        with lock:
            answers.append(str(answer))

    try:
        assert all(a.is_established for a in held)
        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT_S * 2)
    finally:
        for assoc in held:
            if assoc.is_established:
                assoc.release()
    assert answers == ["A-ASSOCIATE-RJ 2/3/2"] * 6, answers
    wait_until(lambda: association_answer(p.node.port)[0] == "established", TIMEOUT_S,
               what="the door to take associations again")
    return "2 held, 6 more A-ASSOCIATE-RJ 2/3/2, then recovered", ""


def _closed_connections(p: Peer) -> Answer:
    """max_associations 2: two clients connect and hang up at once. The next association must
    be taken (promptly), not refused for as long as the door keeps the dead ones."""
    for _ in range(2):
        socket.create_connection(("127.0.0.1", p.node.port), timeout=TIMEOUT_S).close()
    deadline = time.monotonic() + 3
    answer = association_answer(p.node.port)
    while answer[0] != "established" and time.monotonic() < deadline:
        time.sleep(0.1)
        answer = association_answer(p.node.port)
    return answer


def _smuggled_meta(p: Peer) -> Answer:
    """A data set that starts with a File Meta element (0002,0002) naming another class: read
    as a Part 10 file, it would land in the File Meta Information, over the request's."""
    ds = sc()
    smuggled = element(0x0002, 0x0002, "UI", VLPhotographicImageStorage.encode())
    return p.store_wire(smuggled + body_of(ds), ds.SOPInstanceUID)


def _private_huge() -> bytes:
    ds = sc()
    creator = element(0x0009, 0x0010, "LO", b"HOSTILE ")
    huge = element(0x0009, 0x1001, "OB", b"\x00" * 16, length=0x7FFFFFF0)
    return spliced(ds, 0x00091001, creator + huge)


# What a refusal of an empty or cut data set may say: pydicom reads a data set cut a few bytes
# after an element, or inside an undefined-length value, as a shorter (or empty) one.
TRUNCATED = r"truncated|empty|no SOP Class UID"
DECLARES = r"element \(\w{4},\w{4}\) declares \d+ bytes but the data ends"


DICOM_CASES: list[DicomCase] = [
    # -- truncated and empty data sets (cut at element boundaries + a few bytes, pydicom reads
    #    a shorter data set: what it lacks then names the refusal)
    DicomCase("truncated-after-1-byte", _truncated(lambda n: 1), 0xC000, TRUNCATED),
    DicomCase("truncated-inside-first-element-header", _truncated(lambda n: 6), 0xC000, TRUNCATED),
    DicomCase("truncated-inside-sop-class-uid", _offset_in(0x00080016, 5), 0xC000,
              r"element \(0008,0016\) declares 26 bytes but the data ends after 5"),
    DicomCase("truncated-inside-patient-name", _offset_in(0x00100010, 3), 0xC000,
              r"element \(0010,0010\) declares \d+ bytes but the data ends after 3"),
    DicomCase("truncated-at-a-quarter", _truncated(lambda n: n // 4), 0xC000, DECLARES),
    DicomCase("truncated-at-half", _truncated(lambda n: n // 2), 0xC000, DECLARES),
    DicomCase("truncated-inside-pixel-data", _truncated(lambda n: n - 300), 0xC000,
              r"element \(7FE0,0010\) declares 768 bytes but the data ends"),
    DicomCase("truncated-last-byte-missing", _truncated(lambda n: n - 1), 0xC000,
              r"element \(7FE0,0010\) declares 768 bytes but the data ends after 7"),
    DicomCase("truncated-encapsulated-before-delimiter",
              lambda p: p.store_raw(body_of(jpeg_sc([small_jpeg()]))[:-8], syntax=JPEGBaseline8Bit),
              0xC000, TRUNCATED),
    DicomCase("truncated-inside-jpeg-fragment",
              lambda p: p.store_raw(body_of(jpeg_sc([small_jpeg()]))[:-60], syntax=JPEGBaseline8Bit),
              0xC000, TRUNCATED),
    DicomCase("zero-length-dataset", lambda p: p.store_raw(b""), 0xC000, TRUNCATED),
    DicomCase("random-garbage-dataset",
              lambda p: p.store_raw(bytes((i * 37 + 11) % 256 for i in range(997))), 0xC000,
              DECLARES + r"|implicit VR"),
    DicomCase("file-meta-group-smuggled-into-dataset", _smuggled_meta, 0xC000,
              r"File Meta Information"),
    # -- identity: UIDs and classes
    DicomCase("sop-instance-uid-path-traversal",
              lambda p: p.store_raw(body_of(sc(SOPInstanceUID="../../etc/passwd"))), 0xC000,
              r"SOPInstanceUID is not a valid UID"),
    DicomCase("sop-instance-uid-65-characters",
              lambda p: p.store_raw(body_of(sc(SOPInstanceUID="1." + "2" * 63))), 0xC000,
              r"SOPInstanceUID is not a valid UID"),
    DicomCase("sop-instance-uid-with-letters",
              lambda p: p.store_raw(body_of(sc(SOPInstanceUID="1.2.3.abc.4"))), 0xC000,
              r"SOPInstanceUID is not a valid UID"),
    DicomCase("sop-instance-uid-empty",
              lambda p: p.store_raw(body_of(sc(SOPInstanceUID=""))), 0xC000,
              r"SOPInstanceUID is not a valid UID"),
    DicomCase("sop-instance-uid-missing",
              lambda p: p.store_raw(body_of(sc(SOPInstanceUID=None))), 0xC000,
              r"SOPInstanceUID is not a valid UID"),
    DicomCase("study-instance-uid-with-letters",
              lambda p: p.store_raw(body_of(sc(StudyInstanceUID="1.2.x"))), 0xC000,
              r"StudyInstanceUID is not a valid UID"),
    DicomCase("series-instance-uid-missing",
              lambda p: p.store_raw(body_of(sc(SeriesInstanceUID=None))), 0xC000,
              r"SeriesInstanceUID is not a valid UID"),
    DicomCase("sop-class-uid-missing",
              lambda p: p.store_raw(body_of(sc(SOPClassUID=None))), 0xC000, r"no SOP Class UID"),
    # PS3.4 B.2.3 0xA900 "data set does not match SOP class"; DCMTK's storescp answers it
    # when the data set's SOP Class or Instance UID differs from the command's.
    DicomCase("dataset-vl-photo-under-sc-context",
              lambda p: p.store_raw(body_of(sc(SOPClassUID=VLPhotographicImageStorage))),
              0xA900, r"SOP Class"),
    DicomCase("dataset-ct-under-sc-context",
              lambda p: p.store_raw(body_of(sc(SOPClassUID=CTImageStorage))), 0xA900, r"SOP Class"),
    DicomCase("command-instance-uid-differs-from-dataset", _mismatched_instance, 0xA900,
              r"SOP Instance"),
    # -- patient
    DicomCase("patient-id-empty", lambda p: p.store(sc(PatientID="")), 0xC000, r"no Patient ID"),
    DicomCase("patient-id-missing", lambda p: p.store(sc(PatientID=None)), 0xC000,
              r"no Patient ID"),
    DicomCase("patient-id-only-spaces", lambda p: p.store_raw(
        spliced(sc(), 0x00100020, element(0x0010, 0x0020, "LO", b"        "), drop=True)),
        0xC000, r"no Patient ID"),
    # Over PN's 64 characters, but well-formed; de-identification replaces the name with the
    # pseudonym: taken, and it converts (it will not turn into a quarantine later).
    DicomCase("patient-name-10-kB", lambda p: p.store(sc(PatientName="A" * 10240)), 0x0000,
              accepted=True),
    # -- malformed elements
    DicomCase("element-with-bogus-length", lambda p: p.store_raw(
        spliced(sc(), 0x00100010, element(0x0010, 0x0010, "PN", b"TEST^HOSTILE", length=0xFFF0),
                drop=True)), 0xC000, r"element \(0010,0010\) declares 65520 bytes"),
    DicomCase("element-with-odd-length-uid", lambda p: p.store_raw(
        spliced(sc(), 0x00080016, element(0x0008, 0x0016, "UI", SecondaryCaptureImageStorage.encode(),
                                          length=len(SecondaryCaptureImageStorage) - 3), drop=True)),
        0xC000, DECLARES),
    DicomCase("private-tag-with-huge-length", lambda p: p.store_raw(_private_huge()), 0xC000,
              r"element \(0009,1001\) declares 2147483632 bytes"),
    DicomCase("ob-undefined-length-without-delimiter", lambda p: p.store_raw(
        spliced(sc(), 0x00091001, element(0x0009, 0x0010, "LO", b"HOSTILE ")
                + element(0x0009, 0x1001, "OB", b"\x01\x02\x03\x04", length=0xFFFFFFFF))),
        0xC000, TRUNCATED),
    DicomCase("sequence-nested-200-deep", lambda p: p.store_raw(
        spliced(sc(), 0x0040A730, nested_sequences(200))), 0xC000, r"not readable as DICOM"),
    # -- pixel data
    DicomCase("pixel-data-declares-more-than-present", lambda p: p.store_raw(
        spliced(sc(), 0x7FE00010, element(0x7FE0, 0x0010, "OB", bytes(768), length=0x100000),
                drop=True)), 0xC000, r"element \(7FE0,0010\) declares 1048576 bytes"),
    DicomCase("pixel-data-shorter-than-rows-columns",
              lambda p: p.store(sc(PixelData=bytes(100))), 0xC000,
              r"Pixel Data holds 100 bytes, 768 expected"),
    DicomCase("pixel-data-longer-than-rows-columns",
              lambda p: p.store(sc(PixelData=bytes(768 + 64))), 0xC000,
              r"Pixel Data holds 832 bytes, more than the 768"),
    DicomCase("no-pixel-data", lambda p: p.store(sc(PixelData=None)), 0xC000, r"no Pixel Data"),
    DicomCase("rows-missing", lambda p: p.store(sc(Rows=None)), 0xC000, r"Rows missing"),
    DicomCase("frames-count-says-3-native-holds-1", lambda p: p.store(sc(NumberOfFrames=3)),
              0xC000, r"Pixel Data holds 768 bytes, 2304 expected for 3 frame"),
    DicomCase("frames-count-says-2-encapsulated-holds-1",
              lambda p: p.store(jpeg_sc([small_jpeg()], number_of_frames=2)), 0xC000,
              r"encapsulated Pixel Data has 1 frame\(s\), Number of Frames says 2"),
    DicomCase("frames-count-zero", lambda p: p.store(sc(NumberOfFrames=0)), 0xC000,
              r"Number of Frames \(0028,0008\) is 0"),
    # README "Strictness": refused at the door, not accepted and quarantined later.
    DicomCase("jpeg-frame-is-a-text-file",
              lambda p: p.store(jpeg_sc([b"this is not a JPEG, just a text file\n"])), 0xC000,
              r"frame 1: .*no SOI"),
    DicomCase("jpeg-frame-declares-60000x60000",
              lambda p: p.store(jpeg_sc([huge_jpeg(small_jpeg())], rows=60000, columns=60000)),
              0xC000, r"frame 1: .*declares 60000 x"),
    DicomCase("jpeg-frame-without-eoi",
              lambda p: p.store(jpeg_sc([small_jpeg()[:-2] + b"\x00\x00"])), 0xC000,
              r"frame 1: .*EOI"),
    DicomCase("jpeg-frame-unsupported-sof-arithmetic",
              lambda p: p.store(jpeg_sc([with_sof(small_jpeg(), 0xC9)])), 0xC000,
              r"frame 1: .*(SOF|0xC9)"),
    DicomCase("jpeg-frame-size-differs-from-rows-columns",
              lambda p: p.store(jpeg_sc([small_jpeg(32, 24)])), 0xC000, r"frame 1: the JPEG frame is 32 x 24"),
    # -- consent and policy
    DicomCase("consent-withdrawn", lambda p: p.store(sc(consent="WITHDRAWN")), 0x0124,
              r"consent withdrawn"),
    DicomCase("consent-refused", lambda p: p.store(sc(consent="NO")), 0x0124, r"consent refused"),
    DicomCase("consent-flag-garbage", lambda p: p.store(sc(consent="MAYBE")), 0x0124,
              r"Consent for Clinical Trial Use Sequence \(0012,0083\)"),
    DicomCase("consent-absent-and-no-default", lambda p: p.store(sc(consent=None), aet="NOCONSENT"),
              0x0124, r"no consent"),
    DicomCase("burned-in-annotation-yes", lambda p: p.store(sc(BurnedInAnnotation="YES")), 0x0124,
              r"Burned In Annotation"),
    # -- encodings
    DicomCase("explicit-vr-bytes-under-implicit-context",
              lambda p: p.store_raw(body_of(sc()), syntax=ImplicitVRLittleEndian), 0xC000,
              r"explicit VR"),
    DicomCase("implicit-vr-bytes-under-explicit-context",
              lambda p: p.store_raw(body_of(sc(), implicit=True)), 0xC000, r"implicit VR"),
    DicomCase("native-pixels-under-jpeg-baseline-context",
              lambda p: p.store_raw(body_of(sc()), syntax=JPEGBaseline8Bit), 0xC000,
              r"Pixel Data of transfer syntax 1.2.840.10008.1.2.4.50 is not enca"),
    # -- DCMTK storescu with files written here
    DicomCase("storescu-uid-path-traversal",
              lambda p: p.storescu(sc(SOPInstanceUID="../../etc/passwd")), 0xC000,
              r"SOPInstanceUID is not a valid UID"),
    DicomCase("storescu-consent-withdrawn", lambda p: p.storescu(sc(consent="WITHDRAWN")), 0x0124,
              r"consent withdrawn"),
    DicomCase("storescu-jpeg-frame-is-a-text-file",
              lambda p: p.storescu(jpeg_sc([b"this is not a JPEG, just a text file\n"])), 0xC000,
              r"frame 1: .*no SOI"),
    DicomCase("storescu-burned-in-annotation-yes",
              lambda p: p.storescu(sc(BurnedInAnnotation="YES")), 0x0124, r"Burned In Annotation"),
    # -- associations (PS3.8 9.3.4: result/source/reason; 9.3.8 A-ABORT source/reason)
    DicomCase("unknown-calling-ae", lambda p: association_answer(p.node.port, aet="INTRUDER"),
              "A-ASSOCIATE-RJ 1/1/3"),
    DicomCase("wrong-called-ae", lambda p: association_answer(p.node.port, aec="NOTPHOTOGW"),
              "A-ASSOCIATE-RJ 1/1/7"),
    DicomCase("destination-ae-may-not-store", lambda p: p.store(sc(), aet="ORTHANC"), 0x0124,
              r"commitment"),
    DicomCase("abort-after-half-an-object", _abort_half_way, "aborted by the peer"),
    DicomCase("release-after-half-an-object", _release_half_way, "released"),
    DicomCase("pdv-item-longer-than-its-pdu", _pdata_lies_about_pdv_length, "aborted"),
    DicomCase("pdu-over-announced-maximum-on-association", _pdu_over_announced_on_association,
              "aborted"),
    # Raw sockets, each on a node of its own: what they leave behind is measured there.
    DicomCase("silent-client-does-not-hold-up-others", _silent_client, 0x0000, own={}),
    DicomCase("half-a-pdu-header-then-silence", _half_header_then_silent, 0x0000, own={}),
    DicomCase("garbage-pdu-raw-socket",
              lambda p: (raw_exchange(p.node.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ""),
              "A-ABORT 2/0", own={}),
    DicomCase("pdata-header-0xffffffff-before-association",
              lambda p: (raw_exchange(p.node.port, b"\x04\x00\xff\xff\xff\xff" + bytes(64)), ""),
              "A-ABORT 2/0", own={}),
    DicomCase("associate-rq-header-0xffffffff",
              lambda p: (raw_exchange(p.node.port, b"\x01\x00\xff\xff\xff\xff" + bytes(64)), ""),
              "A-ABORT 2/0", own={}),
    DicomCase("pdata-before-association",  # PS3.8 9.2 state table: Sta2 + Evt10 -> AA-1
              lambda p: (raw_exchange(p.node.port, b"\x04\x00\x00\x00\x00\x08"
                                      + struct.pack(">L", 4) + b"\x01\x03\x00\x00"), ""),
              "A-ABORT 0/0", own={}),
    DicomCase("raw-associate-rq-from-unknown-ae",
              lambda p: (raw_exchange(p.node.port, a_associate_rq(calling="INTRUDER")), ""),
              "A-ASSOCIATE-RJ 1/1/3", own={}),
    DicomCase("closed-connections-do-not-use-up-max-associations", _closed_connections,
              "established", own={"max_associations": 2}),
    DicomCase("associations-beyond-max-associations", _many_associations,
              "2 held, 6 more A-ASSOCIATE-RJ 2/3/2, then recovered", own={"max_associations": 2}),
]


def door_still_works(node: Node, before: list[str]) -> None:
    """An echo and a good object afterwards; the good object is staged once, completely."""
    with associated(node.port) as assoc:
        assert answer_of(assoc.send_c_echo())[0] == 0x0000
        assert answer_of(assoc.send_c_store(sc()))[0] == 0x0000
    after = node.item_ids()
    assert len(after) == len(before) + 1 and set(before) <= set(after)


def converts(node: Node, item_id: str) -> None:
    """The staged input decrypts, reads and converts: a success that stays one."""
    from dicom_mapping import dicom_input

    data = node.staging.read(item_id, INPUT)
    cfg = node.door.cfg
    assert cfg.deid is not None
    secret = read_keys(cfg.deid.secret_file)[0]
    dicom_input.convert_dicom(dicom_input.read_dicom(data), dicom_input.DicomParams(secret=secret))


def _show(status: int | str) -> str:
    return status if isinstance(status, str) else f"0x{status:04X}"


@pytest.mark.parametrize("case", DICOM_CASES, ids=lambda c: c.id)
def test_hostile_dicom_input_gets_its_answer_and_the_door_stays_up(
        shared: Node, tmp_path: Path, case: DicomCase) -> None:
    node = start_node(tmp_path / "own", **case.own) if case.own is not None else shared
    try:
        peer = Peer(node, tmp_path)
        before = node.item_ids()
        status, comment = bounded(lambda: case.send(peer), CASE_S, case.id)
        print(f"{case.id}: {_show(status)} {comment}")
        assert _show(status) == _show(case.status), \
            f"{case.id}: answered {_show(status)} ({comment!r}), expected {_show(case.status)}"
        if case.comment:
            assert re.search(case.comment, comment), f"{case.id}: the reason {comment!r} is not it"
        if case.accepted:  # staged once, completely, and it converts
            [new] = sorted(set(node.item_ids()) - set(before))
            converts(node, new)
            before = node.item_ids()
        else:  # nothing of the case was staged, nothing half-staged
            assert node.item_ids() == before, f"{case.id}: staged something"
        # The case's associations are over: a dead or refused connection holds no slot.
        wait_until(lambda: node.active() == 0, 3,
                   what=f"the door to end the associations of {case.id} (a dead connection holds a slot)")
        door_still_works(node, before)
    finally:
        if node is not shared:
            node.door.stop(grace_s=0.5)
            node.journal.close()


def test_dicom_cases_are_at_least_45() -> None:
    assert len(DICOM_CASES) >= 45
    assert len({c.id for c in DICOM_CASES}) == len(DICOM_CASES)


# == the hot folder ==================================================================================

def sidecar(**changes: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "patient": {"id": "SYN0007", "issuer": "SYNTH-MRN", "name": "TEST^HOSTILE FOLDER",
                    "birth_date": "1984-06-15", "sex": "F"},
        "accession_number": "SYNACC0007",
        "body_site": "chest",
        "consent": {"status": "granted", "scope": ["clinical-care"], "date": "2026-11-18"},
        "recognizable": False,
    }
    meta.update(changes)
    return {k: v for k, v in meta.items() if v is not None}


def patient(**changes: Any) -> dict[str, Any]:
    return {**sidecar()["patient"], **changes}


PHOTO = small_jpeg(64, 48, seed=5)


@dataclass
class Rig:
    folder: Path
    journal: Journal
    staging: Staging
    intake: Intake

    def door(self, stable_s: float = 0.05) -> FolderDoor:
        cfg = FolderSource.model_validate({"path": str(self.folder), "require_sidecar": True,
                                           "rejected_retention_days": 7})
        return FolderDoor(cfg, self.intake, SYSTEM, stable_s=stable_s)

    def items(self) -> list[str]:
        return assert_complete_sets(self.staging, self.journal)

    def rejected(self) -> list[str]:
        path = self.folder / "rejected"
        return sorted(p.name for p in path.iterdir()) if path.exists() else []

    def remaining(self) -> list[str]:
        """Everything left in the folder itself except the door's own rejected/ and state."""
        return sorted(p.name for p in self.folder.iterdir()
                      if p.name not in ("rejected", ".photo-gateway"))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    cfg = Settings.model_validate({"destinations": {"pacs": {"address": "PACS@127.0.0.1:11112"}},
                                   "routes": [{"match": {}, "to": ["pacs"]}]})
    journal = Journal(tmp_path / "journal.sqlite")
    staging = Staging(tmp_path / "staging", [os.urandom(32)])
    folder = tmp_path / "inbox"
    folder.mkdir()
    yield Rig(folder, journal, staging, Intake(cfg, journal, staging, SYSTEM))
    journal.close()


def drop(folder: Path, name: str, data: bytes | dict[str, Any] | list[Any] | str) -> Path:
    path = folder / name
    if isinstance(data, (dict, list)):
        data = json.dumps(data)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def drive(door: FolderDoor, until: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Passes of the door until `until()` holds or the time is up; whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        door.scan_once()
        if until():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def png_bad_crc() -> bytes:
    data = bytearray(make_png(width=32, height=24))
    data[8 + 8 + 13] ^= 0xFF  # the IHDR chunk's CRC
    return bytes(data)


def png_huge() -> bytes:
    """A PNG whose IHDR declares 60000 x 60000 (CRC recomputed: the structure is sound)."""
    import zlib
    data = bytearray(make_png(width=32, height=24))
    struct.pack_into(">LL", data, 16, 60000, 60000)
    struct.pack_into(">L", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def heic_corrupt() -> bytes:
    data = bytearray(make_heic(width=64, height=48))
    middle = len(data) // 2
    data[middle:middle + 64] = b"\xff" * 64
    return bytes(data[: len(data) * 3 // 4])


def dicom_file() -> bytes:
    buf = io.BytesIO()
    sc().save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def nested_json(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@dataclass(frozen=True)
class FolderCase:
    id: str
    files: Callable[[Path], object]
    outcome: str  # "rejected", "waiting", "ignored" or "taken"
    reason: str = ""  # rejected: a regex the reason line must match
    rejected: tuple[str, ...] = ()  # rejected: what is in rejected/
    remaining: tuple[str, ...] = ()  # what stays in the folder
    during: Callable[[FolderDoor, pytest.MonkeyPatch, Path], None] | None = None


def photo_and_sidecar(name: str, data: bytes | str, meta: Any = None,
                      side_name: str | None = None) -> Callable[[Path], None]:
    def files(folder: Path) -> None:
        drop(folder, name, data)
        drop(folder, side_name or name + ".json", sidecar() if meta is None else meta)
    return files


def rejected_pair(name: str, reason: str, case_id: str, data: bytes | str = PHOTO,
                  meta: Any = None) -> FolderCase:
    return FolderCase(case_id, photo_and_sidecar(name, data, meta), "rejected", reason,
                      (name, name + ".json", name + ".reason.txt"))


def _symlink_photo(target: str) -> Callable[[Path], None]:
    def files(folder: Path) -> None:
        (folder / "x.jpg").symlink_to(target)
        drop(folder, "x.jpg.json", sidecar())
    return files


def _fifo_photo(folder: Path) -> None:
    os.mkfifo(folder / "x.jpg")
    drop(folder, "x.jpg.json", sidecar())


def _fifo_sidecar(folder: Path) -> None:
    drop(folder, "x.jpg", PHOTO)
    os.mkfifo(folder / "x.jpg.json")


def _directory_photo(folder: Path) -> None:
    (folder / "x.jpg").mkdir()
    (folder / "x.jpg" / "inner.jpg").write_bytes(PHOTO)
    drop(folder, "x.jpg.json", sidecar())


def _sidecar_symlink_to_passwd(folder: Path) -> None:
    drop(folder, "x.jpg", PHOTO)
    (folder / "x.jpg.json").symlink_to("/etc/passwd")


def _two_sidecars(folder: Path) -> None:
    drop(folder, "x.jpg", PHOTO)
    drop(folder, "x.jpg.json", sidecar(patient=patient(id="SYNEXACT")))
    drop(folder, "x.json", sidecar(patient=patient(id="SYNSTEM")))


def _sparse_photo_over_limit(folder: Path) -> None:
    path = drop(folder, "big.jpg", PHOTO)
    os.truncate(path, (512 << 20) + 4096)  # sparse: no disk used
    drop(folder, "big.jpg.json", sidecar())


def _vanishes_before_read(door: FolderDoor, mp: pytest.MonkeyPatch, folder: Path) -> None:
    real = door._read

    def read(path: Path, *args: Any) -> bytes | None:
        if path.name == "x.jpg":
            path.unlink(missing_ok=True)  # gone between the scan and the read
        return real(path, *args)
    mp.setattr(door, "_read", read)


def _swapped_before_read(door: FolderDoor, mp: pytest.MonkeyPatch, folder: Path) -> None:
    real = door._read

    def read(path: Path, *args: Any) -> bytes | None:
        if path.name == "x.jpg" and not getattr(read, "done", False):
            read.done = True  # type: ignore[attr-defined]
            tmp = path.with_name(".swap")
            tmp.write_bytes(PASSWD)
            os.replace(tmp, path)  # another file under the same name, judged complete before
        return real(path, *args)
    mp.setattr(door, "_read", read)


def _removed_while_read(door: FolderDoor, mp: pytest.MonkeyPatch, folder: Path) -> None:
    real = os.fdopen

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        target = folder / "x.jpg"
        if target.exists() and os.path.samestat(os.fstat(fd), os.stat(target)):
            target.unlink()  # removed while the door holds it open
        return real(fd, *args, **kwargs)
    mp.setattr(os, "fdopen", fdopen)


def _shrunk_while_read(door: FolderDoor, mp: pytest.MonkeyPatch, folder: Path) -> None:
    real = os.fdopen

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        target = folder / "x.jpg"
        if (not getattr(fdopen, "done", False) and target.exists()
                and os.path.samestat(os.fstat(fd), os.stat(target))):
            fdopen.done = True  # type: ignore[attr-defined]
            os.truncate(target, 100)  # a writer truncates the file under the door, once
        return real(fd, *args, **kwargs)
    mp.setattr(os, "fdopen", fdopen)


NEWLINE_NAME = "a\nreason: accepted\n.jpg"

FOLDER_CASES: list[FolderCase] = [
    # -- photos that are not what they say
    rejected_pair("x.jpg", r"empty file", "zero-byte-jpg", b""),
    rejected_pair("x.jpg", r"not a JPEG, PNG, HEIC or DICOM file", "text-named-jpg", "just text\n"),
    rejected_pair("x.png", r"not a JPEG, PNG, HEIC or DICOM file", "text-named-png", "just text\n"),
    rejected_pair("x.heic", r"not a JPEG, PNG, HEIC or DICOM file", "text-named-heic",
                  "just text\n"),
    rejected_pair("x.jpg", r"60000 x 60000 = 3600000000 pixels, more than 100000000",
                  "jpeg-declares-60000x60000", huge_jpeg(PHOTO)),
    rejected_pair("x.jpg", r"no EOI marker: truncated", "jpeg-truncated-no-eoi", PHOTO[:-40]),
    rejected_pair("x.jpg", r"SOF", "jpeg-unsupported-sof-arithmetic", with_sof(PHOTO, 0xC9)),
    rejected_pair("x.png", r"PNG chunk IHDR .* bad CRC", "png-bad-crc", png_bad_crc()),
    rejected_pair("x.png", r"no IEND", "png-truncated", make_png(width=32, height=24)[:-30]),
    rejected_pair("x.png", r"60000x60000 = 3600 megapixels", "png-declares-60000x60000",
                  png_huge()),
    rejected_pair("x.heic", r"HEIC", "heic-corrupt", heic_corrupt()),
    rejected_pair("x.jpg", r"a DICOM file, not a photo", "dicom-file-named-jpg", dicom_file()),
    FolderCase("photo-over-512-MiB-sparse", _sparse_photo_over_limit, "rejected",
               r"the photo is \d+ bytes, over the limit",
               ("big.jpg", "big.jpg.json", "big.jpg.reason.txt")),
    # -- sidecars
    rejected_pair("x.jpg", r"metadata is not valid JSON", "sidecar-invalid-json",
                  meta='{"patient": {"id": '),
    rejected_pair("x.jpg", r"metadata is not valid JSON", "sidecar-invalid-utf8",
                  meta=b'{"patient": {"id": "\xff\xfe"}}'),
    rejected_pair("x.jpg", r"unknown key 'colour'", "sidecar-unknown-key", meta=sidecar(colour="red")),
    rejected_pair("x.jpg", r"metadata is nested too deeply", "sidecar-nested-100000-deep",
                  meta=nested_json(100_000)),
    rejected_pair("x.jpg", r"metadata must be a JSON object", "sidecar-is-a-json-array",
                  meta=[sidecar()]),
    rejected_pair("x.jpg", r"the sidecar is \d+ bytes, over the limit", "sidecar-10-MB-string",
                  meta=sidecar(description="A" * (10 << 20))),
    rejected_pair("x.jpg", r"no consent record", "sidecar-without-consent", meta=sidecar(consent=None)),
    rejected_pair("x.jpg", r"consent withdrawn", "consent-withdrawn",
                  meta=sidecar(consent={"status": "withdrawn"})),
    rejected_pair("x.jpg", r"'consent.status'", "consent-status-garbage",
                  meta=sidecar(consent={"status": "maybe"})),
    rejected_pair("x.jpg", r"'body_site'.*unknown body site", "unknown-body-site",
                  meta=sidecar(body_site="left elbow of the soul")),
    rejected_pair("x.jpg", r"'patient.birth_date'", "birth-date-1970-13-45",
                  meta=sidecar(patient=patient(birth_date="1970-13-45"))),
    rejected_pair("x.jpg", r"'patient.id'", "patient-id-10000-characters",
                  meta=sidecar(patient=patient(id="9" * 10000))),
    rejected_pair("x.jpg", r"no patient", "no-patient-and-no-worklist", meta=sidecar(patient=None)),
    # -- names
    FolderCase("unicode-and-space-name", photo_and_sidecar("Wunde ü 日本 #1.jpg", PHOTO), "taken"),
    FolderCase("name-starting-with-dash", photo_and_sidecar("-rf --all.jpg", PHOTO), "taken"),
    FolderCase("newline-in-name-cannot-forge-reason-lines",
               photo_and_sidecar(NEWLINE_NAME, "just text\n"), "rejected",
               r"not a JPEG, PNG, HEIC or DICOM file",
               (NEWLINE_NAME, NEWLINE_NAME + ".json", NEWLINE_NAME + ".reason.txt")),
    FolderCase("other-file-type", lambda f: drop(f, "x.exe", b"MZ\x90\x00"), "rejected",
               r"not a photo: '\.exe'", ("x.exe", "x.exe.reason.txt")),
    # -- things that are not regular files
    FolderCase("directory-named-jpg", _directory_photo, "ignored", remaining=("x.jpg", "x.jpg.json")),
    FolderCase("symlink-to-etc-passwd-named-jpg", _symlink_photo("/etc/passwd"), "ignored",
               remaining=("x.jpg", "x.jpg.json")),
    FolderCase("fifo-named-jpg", _fifo_photo, "ignored", remaining=("x.jpg", "x.jpg.json")),
    FolderCase("sidecar-is-a-fifo", _fifo_sidecar, "waiting", remaining=("x.jpg", "x.jpg.json")),
    FolderCase("sidecar-symlink-to-etc-passwd", _sidecar_symlink_to_passwd, "waiting",
               remaining=("x.jpg", "x.jpg.json")),
    # -- pairing and waiting
    FolderCase("photo-without-sidecar-waits", lambda f: drop(f, "x.jpg", PHOTO), "waiting",
               remaining=("x.jpg",)),
    FolderCase("sidecar-without-photo-waits", lambda f: drop(f, "x.jpg.json", sidecar()),
               "waiting", remaining=("x.jpg.json",)),
    FolderCase("two-sidecars-exact-one-wins", _two_sidecars, "taken", remaining=("x.json",)),
    # -- races
    FolderCase("photo-vanishes-between-scan-and-read", photo_and_sidecar("x.jpg", PHOTO), "waiting",
               remaining=("x.jpg.json",), during=_vanishes_before_read),
    FolderCase("photo-swapped-for-passwd-before-read", photo_and_sidecar("x.jpg", PHOTO),
               "rejected", r"not a JPEG, PNG, HEIC or DICOM file",
               ("x.jpg", "x.jpg.json", "x.jpg.reason.txt"), during=_swapped_before_read),
    FolderCase("photo-removed-while-read", photo_and_sidecar("x.jpg", PHOTO), "taken",
               during=_removed_while_read),
    FolderCase("photo-shrinks-while-read", photo_and_sidecar("x.jpg", PHOTO), "rejected",
               r"no EOI|truncated|not a JPEG", ("x.jpg", "x.jpg.json", "x.jpg.reason.txt"),
               during=_shrunk_while_read),
]


def staged_inputs(rig: Rig) -> list[bytes]:
    return [rig.staging.read(i, INPUT) for i in rig.items()]


@pytest.mark.parametrize("case", FOLDER_CASES, ids=lambda c: c.id)
def test_hostile_folder_input_gets_its_answer_and_the_door_stays_up(
        rig: Rig, case: FolderCase, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.ingest.folder")
    case.files(rig.folder)
    door = rig.door()
    if case.during is not None:
        case.during(door, monkeypatch, rig.folder)
    reason_file = rig.folder / "rejected" / (case.rejected[-1] if case.rejected else "-")

    if case.outcome == "rejected":
        done = bounded(lambda: drive(door, reason_file.exists), CASE_S, case.id)
        assert done, f"{case.id}: not rejected; folder {rig.remaining()}, rejected {rig.rejected()}"
    elif case.outcome == "taken":
        done = bounded(lambda: drive(door, lambda: bool(rig.items())), CASE_S, case.id)
        assert done, f"{case.id}: not taken; folder {rig.remaining()}, rejected {rig.rejected()}"
    else:  # waiting or ignored: nothing may happen over a dozen passes past stable_s
        held = bounded(lambda: drive(door, lambda: bool(rig.rejected() or rig.items()), 0.5),
                       CASE_S, case.id)
        assert not held, f"{case.id}: acted on; rejected {rig.rejected()}"
    monkeypatch.undo()

    assert rig.remaining() == sorted(case.remaining)
    assert rig.rejected() == sorted(case.rejected)
    items = rig.items()
    assert len(items) == (1 if case.outcome == "taken" else 0)
    if case.outcome == "rejected":
        lines = reason_file.read_text(encoding="utf-8").splitlines()
        print(f"{case.id}: {lines[0]}")
        assert re.fullmatch(r"reason: .*(?:" + case.reason + ").*", lines[0]), lines[0]
        assert sum(ln.startswith("reason:") for ln in lines) == 1, lines  # names cannot forge one
    elif case.outcome == "taken":
        print(f"{case.id}: taken as {items[0]}")
        assert staged_inputs(rig) == [PHOTO]
        job = Job.decode(rig.staging.read(items[0], JOB))
        assert job.meta is not None
        if case.id == "two-sidecars-exact-one-wins":
            assert job.meta["patient"]["id"] == "SYNEXACT"  # x.jpg.json is x.jpg's sidecar
    else:
        print(f"{case.id}: {case.outcome}")
        # Waiting is not failing: no "retried in" warning, no error (a link is not an input).
        trouble = [r.getMessage() for r in caplog.records
                   if r.name == "gateway.ingest.folder" and r.levelno >= logging.WARNING]
        assert trouble == [], trouble
    assert all(PASSWD not in data for data in staged_inputs(rig)), "/etc/passwd was staged"

    # The door stays up: a good photo afterwards is taken, once and completely.
    drop(rig.folder, "after.jpg", PHOTO)
    drop(rig.folder, "after.jpg.json", sidecar())
    before = len(items)
    assert bounded(lambda: drive(door, lambda: len(rig.items()) == before + 1), CASE_S, "good photo")
    assert "after.jpg" not in rig.remaining() and "after.jpg.json" not in rig.remaining()
    assert all(PASSWD not in data for data in staged_inputs(rig)), "/etc/passwd was staged"
    for special in (rig.folder / "x.jpg", rig.folder / "x.jpg.json"):
        if special.is_symlink():
            assert os.readlink(special) == "/etc/passwd"  # left alone, not followed nor moved
        elif special.exists() and stat.S_ISFIFO(os.lstat(special).st_mode):
            assert case.id in ("fifo-named-jpg", "sidecar-is-a-fifo")


def test_folder_cases_are_at_least_25() -> None:
    assert len(FOLDER_CASES) >= 25
    assert len({c.id for c in FOLDER_CASES}) == len(FOLDER_CASES)

"""The DICOM door, driven by real peers: DCMTK's storescu and echoscu, pynetdicom clients, and a
real Orthanc that sends its storage commitment result on a new association.

No mock of an association or of the PACS. The one test double is our own disk: a Staging whose
check_writable says "full" (root ignores chmod, so an unwritable directory cannot be staged here).
Every test is bounded: subprocesses and DICOM timeouts are short, waits poll with deadlines, and
a watchdog ends the run with tracebacks if a test hangs all the same.
"""

from __future__ import annotations

import datetime as dt
import faulthandler
import gc
import io
import logging
import re
import socket
import ssl
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from conftest import dcmtk, wait_until
from dicom_factory import secondary_capture as synthetic_sc
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config, build_role
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    SecondaryCaptureImageStorage,
    StorageCommitmentPushModel,
    Verification,
)

from dicom_mapping.dicom_input import ACCEPTED_TRANSFER_SYNTAXES, PHOTO_SOP_CLASSES
from gateway.clock import SYSTEM
from gateway.ingest.dimse import MAX_PDU_BYTES, TRANSFER_SYNTAXES, DimseDoor
from gateway.intake import Intake
from gateway.item import State
from gateway.journal import Journal
from gateway.network import Address
from gateway.orthanc import EmbeddedOrthanc, free_port
from gateway.settings import Settings, read_keys, write_key_file
from gateway.staging import Staging, StagingError, StagingFull

DICOM_DIR = Path(__file__).resolve().parents[1] / "data" / "dicom"
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # the well-known SOP Instance (PS3.4 J.3.5)
GRANTED = {"status": "granted", "scope": ["clinical-care"]}
TIMEOUT_S = 10  # every DICOM wait and subprocess here

# storescu proposes only uncompressed syntaxes unless told; -R: only the files' SOP classes.
STORESCU_TS_OPTION = {
    "1.2.840.10008.1.2.4.50": ["-xy"],
    "1.2.840.10008.1.2.4.51": ["-xx"],
    "1.2.840.10008.1.2.4.70": ["-xs"],
    "1.2.840.10008.1.2.5": ["-xr"],
}


@pytest.fixture(autouse=True)
def _watchdog() -> Iterator[None]:
    faulthandler.dump_traceback_later(90, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# -- the rig --------------------------------------------------------------------------------------

class FullStaging(Staging):
    """Our own disk, full: what `check_writable` says when there is no room."""

    def check_writable(self, needed_bytes: int = 0) -> None:
        raise StagingFull("staging directory: 0 bytes free (test)")


class FailingStaging(Staging):
    """Our own disk, failing as it writes (an I/O error: not the sender's fault)."""

    def put(self, item_id: str, name: str, chunks: Any) -> int:
        raise StagingError(f"staging {name} of item {item_id}: Input/output error (test)")


@dataclass
class Node:
    door: DimseDoor
    journal: Journal
    staging: Staging
    commitments: list[tuple[str, str, list[str], list[tuple[str, int]]]] = field(
        default_factory=list)

    @property
    def port(self) -> int:
        return self.door.port

    def items(self) -> list[Any]:
        return self.journal.list(unfinished_only=False)

    def assert_nothing_staged(self) -> None:
        assert self.items() == []
        assert self.staging.item_ids() == []
        assert [p.name for p in self.staging.directory.iterdir()] == []  # no temporary leftovers


def settings(tmp_path: Path, *, port: int | None = None, destination: str = "ORTHANC@127.0.0.1:9",
             **node: Any) -> Settings:
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    for name in ("staging.key", "pseudonym.key"):
        if not (keys / name).exists():
            write_key_file(keys / name)
    return Settings.model_validate({
        "node": {"ae_title": "PHOTOGW", "host": "127.0.0.1", "port": port or free_port(),
                 "allowed_calling_aes": {"STORESCU": {"default_consent": GRANTED}, "NOCONSENT": {}},
                 **node},
        "staging": {"directory": str(tmp_path / "staging"), "key_file": str(keys / "staging.key")},
        "deid": {"secret_file": str(keys / "pseudonym.key")},
        "destinations": {"pacs": {"address": destination, "storage_commitment": True}},
        "routes": [{"match": {}, "to": ["pacs"]}],
    })


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def make(cfg: Settings | None = None, staging_class: type[Staging] = Staging,
             **node: Any) -> Node:
        cfg = cfg or settings(tmp_path, **node)
        assert cfg.staging is not None
        journal = Journal(tmp_path / f"journal-{len(nodes)}.db")
        staging = staging_class(cfg.staging.directory, read_keys(cfg.staging.key_file))
        box: list[Any] = []
        door = DimseDoor(cfg, Intake(cfg, journal, staging, SYSTEM),
                         on_commitment=lambda *args: box.append(args))
        made = Node(door, journal, staging, box)
        nodes.append(made)
        door.start()
        return made

    yield make
    for made in nodes:
        made.door.stop(grace_s=2)
        made.journal.close()


def storescu(node: Node, path: Path, aet: str = "STORESCU", debug: bool = False) -> tuple[int, str]:
    """storescu's exit code and output; with `debug`, the response's status code and comment."""
    ts = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    run = dcmtk("storescu", "-d" if debug else "-v", "-R", *STORESCU_TS_OPTION.get(ts, []),
                "-to", str(TIMEOUT_S), "-aet", aet, "-aec", "PHOTOGW",
                "127.0.0.1", str(node.port), str(path),
                timeout=TIMEOUT_S * 3)
    return run.returncode, run.stdout + run.stderr


def echoscu(node: Node, aet: str = "STORESCU", aec: str = "PHOTOGW") -> tuple[int, str]:
    run = dcmtk("echoscu", "-to", str(TIMEOUT_S), "-aet", aet, "-aec", aec, "127.0.0.1",
                str(node.port), timeout=TIMEOUT_S * 3)
    return run.returncode, run.stdout + run.stderr


def client(aet: str = "STORESCU") -> AE:
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = TIMEOUT_S
    return ae


def dicom_files() -> list[tuple[Path, bool]]:
    """(file, photo class) for every object in tests/data/dicom."""
    found = []
    for path in sorted(DICOM_DIR.glob("*.dcm")):
        meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        found.append((path, str(meta.MediaStorageSOPClassUID) in PHOTO_SOP_CLASSES))
    return found


def syntax_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def _has_patient_id(path: Path) -> bool:
    return bool(str(pydicom.dcmread(path, stop_before_pixels=True).get("PatientID", "") or "").strip())


ALL_PHOTOS = [p for p, photo in dicom_files() if photo]
assert all(syntax_of(p) in TRANSFER_SYNTAXES for p in ALL_PHOTOS)  # every test photo's syntax is offered
PHOTOS = [p for p in ALL_PHOTOS if _has_patient_id(p)]
NO_PATIENT_ID = [p for p in ALL_PHOTOS if not _has_patient_id(p)]
NOT_PHOTOS = [p for p, photo in dicom_files() if not photo]


def secondary_capture(pixel_bytes: int = 64 * 64 * 3, consent: bool = False) -> Dataset:
    """A small RGB Secondary Capture made with pydicom (synthetic, no real patient)."""
    side = int((pixel_bytes // 3) ** 0.5)
    return synthetic_sc(side, patient_id="SYN-DOOR-1", patient_name="TEST^DOOR",
                        consent="YES" if consent else None)


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def split_part10(data: bytes) -> tuple[bytes, bytes]:
    """(preamble + prefix + file meta, data set): the meta ends where (0002,0000) says."""
    meta_end = 144 + struct.unpack("<L", data[140:144])[0]  # after the 12-byte group length element
    return data[:meta_end], data[meta_end:]


def status_of(rsp: Dataset) -> int:
    assert rsp is not None and "Status" in rsp, "no response"
    return int(rsp.Status)


# -- who may associate ----------------------------------------------------------------------------

def test_echo_answers_and_unknown_calling_or_called_ae_is_rejected(
        make_node: Callable[..., Node]) -> None:
    node = make_node()
    assert echoscu(node) == (0, "")
    rc, out = echoscu(node, aet="UNKNOWN")
    assert rc != 0 and "Calling AE Title Not Recognized" in out, out
    rc, out = echoscu(node, aec="NOTPHOTOGW")
    assert rc != 0 and "Called AE Title Not Recognized" in out, out
    node.assert_nothing_staged()


def test_door_syntaxes_are_ones_the_mapping_reads() -> None:
    assert set(TRANSFER_SYNTAXES) <= ACCEPTED_TRANSFER_SYNTAXES
    assert "1.2.840.10008.1.2.1.99" not in TRANSFER_SYNTAXES  # deflate would defeat the size cap


def test_associations_beyond_max_associations_are_rejected(make_node: Callable[..., Node]) -> None:
    node = make_node(max_associations=1)
    ae = client()
    ae.add_requested_context(Verification)
    held = ae.associate("127.0.0.1", node.port, ae_title="PHOTOGW")
    assert held.is_established
    try:
        rc, out = echoscu(node)
        assert rc != 0 and "Local Limit Exceeded" in out, out
    finally:
        held.release()
    wait_until(lambda: echoscu(node)[0] == 0, TIMEOUT_S, what="echo after the first one ended")


def test_accepted_connections_have_tcp_nodelay(make_node: Callable[..., Node]) -> None:
    node = make_node()
    ae = client()
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="PHOTOGW")
    assert assoc.is_established
    try:
        [accepted] = node.door._server.active_associations
        sock = accepted.dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        assoc.release()


# -- C-STORE --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.name)
def test_photo_object_is_staged_once_and_answered_success(
        make_node: Callable[..., Node], path: Path, caplog: pytest.LogCaptureFixture) -> None:
    node = make_node()
    with caplog.at_level(logging.INFO):
        rc, out = storescu(node, path)
    assert rc == 0 and "Received Store Response (Success)" in out, out
    [item] = node.items()
    assert (item.state, item.source, item.kind, item.calling_ae, item.destination) == \
        (State.RECEIVED, "dimse", "dicom", "STORESCU", "pacs")
    staged = pydicom.dcmread(io.BytesIO(node.staging.read(item.id, "input")))
    original = pydicom.dcmread(path)
    assert staged.SOPInstanceUID == original.SOPInstanceUID
    assert staged.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID  # as sent
    assert staged.PixelData == original.PixelData
    # The logs name AEs, item ids and statuses; never the input's UIDs or identifiers.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert item.id in logged
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID",
                    "PatientName"):
        value = str(original.get(keyword, "") or "")
        assert len(value) < 4 or value not in logged, f"{keyword} of the input is in the log"


def test_an_object_without_patient_id_is_refused_c000_at_the_door(make_node: Callable[..., Node]) -> None:
    assert [p.name for p in NO_PATIENT_ID] == ["sc_jpeg_baseline_rgb_no_transform.dcm"]
    node = make_node()
    rc, out = storescu(node, NO_PATIENT_ID[0], debug=True)
    assert "0xc000" in out.lower() and "no Patient ID" in out, out
    node.assert_nothing_staged()


@pytest.mark.parametrize("path", NOT_PHOTOS, ids=lambda p: p.name)
def test_other_classes_and_syntaxes_are_refused_at_association(make_node: Callable[..., Node],
                                                               path: Path) -> None:
    node = make_node()
    rc, out = storescu(node, path)
    assert rc != 0, out
    # storescu either finds no accepted context for the class, or none in the file's syntax
    refused = r"no (acceptable )?presentation context|unable to convert"
    assert re.search(refused, out, re.IGNORECASE), out
    node.assert_nothing_staged()


def test_storage_class_the_config_adds_is_accepted(make_node: Callable[..., Node]) -> None:
    path = DICOM_DIR / "us_multiframe_jpeg_baseline_ybr422.dcm"
    us_multiframe = str(pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID)
    node = make_node(extra_sop_classes=[us_multiframe])
    rc, out = storescu(node, path)
    assert rc == 0 and "Received Store Response (Success)" in out, out
    assert [i.state for i in node.items()] == [State.RECEIVED]


def test_object_without_consent_from_ae_without_default_is_refused_0124(
        make_node: Callable[..., Node]) -> None:
    node = make_node()
    path = DICOM_DIR / "sc_rgb_explicit_le.dcm"
    assert "ConsentForClinicalTrialUseSequence" not in pydicom.dcmread(path)
    _, out = storescu(node, path, aet="NOCONSENT", debug=True)
    assert re.search(r"DIMSE Status *: 0x0124\b", out), out
    assert re.search(r"\[[^\]]*consent[^\]]*\].*ErrorComment", out, re.IGNORECASE), out
    node.assert_nothing_staged()


@pytest.mark.parametrize("staging_class", [FullStaging, FailingStaging], ids=["full", "failing"])
def test_staging_full_or_failing_answers_a700(make_node: Callable[..., Node],
                                              staging_class: type[Staging]) -> None:
    node = make_node(staging_class=staging_class)
    _, out = storescu(node, DICOM_DIR / "sc_rgb_explicit_le.dcm", debug=True)
    assert re.search(r"DIMSE Status *: 0xa700\b", out, re.IGNORECASE), out
    node.assert_nothing_staged()


def test_destination_may_echo_but_not_store(make_node: Callable[..., Node], tmp_path: Path) -> None:
    node = make_node()
    assert echoscu(node, aet="ORTHANC")[0] == 0
    ae = client("ORTHANC")
    ae.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="PHOTOGW")
    assert assoc.is_established
    try:
        rsp = assoc.send_c_store(secondary_capture(consent=True))
    finally:
        assoc.release()
    assert status_of(rsp) == 0x0124 and "commitment" in str(rsp.ErrorComment)
    node.assert_nothing_staged()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_dataset_fails_and_the_door_stays_up(
        make_node: Callable[..., Node], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        damage: str) -> None:
    node = make_node()
    good = save(secondary_capture(consent=True), tmp_path / "good.dcm")
    meta, body = split_part10(good.read_bytes())
    if damage == "garbage":  # a SOP Class UID element declaring 65535 bytes, then noise
        body = b"\x08\x00\x16\x00UI\xff\xff" + bytes(range(256)) * 4
    else:  # the Pixel Data cut short
        body = body[:-500]
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(meta + body)
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send the bytes as they are
    ae = client()
    ae.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="PHOTOGW")
    assert assoc.is_established
    try:
        rsp = assoc.send_c_store(broken)
    finally:
        assoc.release()
    assert status_of(rsp) in (0xC000, 0xA900), rsp
    assert rsp.get("ErrorComment"), "the refusal names its reason"
    node.assert_nothing_staged()
    assert echoscu(node)[0] == 0


def test_abort_in_the_middle_of_an_object_stages_nothing(make_node: Callable[..., Node],
                                                        tmp_path: Path) -> None:
    node = make_node()
    ds = secondary_capture(pixel_bytes=600_000, consent=True)
    ae = client()
    ae.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="PHOTOGW")
    assert assoc.is_established
    _, body = split_part10(save(ds, tmp_path / "whole.dcm").read_bytes())
    request = C_STORE()
    request.MessageID, request.Priority = 1, 2
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    request.DataSet = io.BytesIO(body)
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    context_id = assoc.accepted_contexts[0].context_id
    max_pdu = assoc.acceptor.maximum_length
    assert context_id is not None and max_pdu is not None
    fragments = list(message.encode_msg(context_id, max_pdu))
    assert len(fragments) > 4
    for fragment in fragments[:len(fragments) // 2]:  # the command and half of the data set
        assoc.dul.send_pdu(fragment)
    assoc.abort()
    wait_until(lambda: not node.door._server.active_associations, TIMEOUT_S,
               what="the door to end the aborted association")
    node.assert_nothing_staged()
    assert echoscu(node)[0] == 0


# -- limits while receiving ---------------------------------------------------------------------

def _memory_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field_name} not in /proc/self/status")


def test_object_over_max_object_mb_is_aborted_while_received(
        make_node: Callable[..., Node], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """32 MiB against a 1 MiB cap: a door that buffered the object would hold it at least twice
    (the DIMSE buffer and the Part 10 bytes), 64 MiB, and fail the memory bound below."""
    node = make_node(max_object_mb=1)
    big = save(secondary_capture(pixel_bytes=32 << 20, consent=True), tmp_path / "big.dcm")
    gc.collect()
    rss_before = _memory_kib("VmRSS")
    try:  # reset the peak (VmHWM) so that it measures this transfer only
        Path("/proc/self/clear_refs").write_text("5")
        peak_field = "VmHWM"
    except OSError:
        peak_field = "VmRSS"
    with caplog.at_level(logging.WARNING, logger="gateway.ingest.dimse"):
        rc, out = storescu(node, big)
    growth_kib = _memory_kib(peak_field) - rss_before
    print(f"{peak_field} growth while refusing a 32 MiB object at a 1 MiB cap: {growth_kib} KiB")
    assert rc != 0 and re.search(r"abort", out, re.IGNORECASE), out
    node.assert_nothing_staged()
    [record] = [r for r in caplog.records
                if r.name == "gateway.ingest.dimse" and "max_object_mb" in r.getMessage()]
    found = re.search(r"(\d+) bytes received", record.getMessage())
    assert found, record.getMessage()
    # stopped at the first PDU past the cap
    assert (1 << 20) < int(found[1]) <= (1 << 20) + MAX_PDU_BYTES
    margin_kib = 40 << 10
    assert growth_kib < (1 << 10) + margin_kib, f"{peak_field} grew {growth_kib} KiB"
    assert echoscu(node)[0] == 0


def test_pdu_longer_than_announced_is_aborted(make_node: Callable[..., Node]) -> None:
    node = make_node()
    ae = client()
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="PHOTOGW")
    assert assoc.is_established
    assert assoc.acceptor.maximum_length == MAX_PDU_BYTES  # what the door announced
    # A P-DATA-TF header declaring 1 GiB: the door must not start reading it.
    assert assoc.dul.socket is not None
    assoc.dul.socket.send(b"\x04\x00" + struct.pack(">L", 1 << 30) + bytes(64))
    wait_until(lambda: assoc.is_aborted, TIMEOUT_S, what="the door's A-ABORT")
    node.assert_nothing_staged()
    assert echoscu(node)[0] == 0


# -- storage commitment --------------------------------------------------------------------------

def _report(transaction: str, ok: list[str], failed: list[tuple[str, int]]) -> Dataset:
    info = Dataset()
    info.TransactionUID = transaction
    refs = []
    for sop in ok:
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = SecondaryCaptureImageStorage, sop
        refs.append(ref)
    if refs:
        info.ReferencedSOPSequence = refs
    bad = []
    for sop, reason in failed:
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = SecondaryCaptureImageStorage, sop
        ref.FailureReason = reason
        bad.append(ref)
    if bad:
        info.FailedSOPSequence = bad
    return info


def _send_report(port: int, aet: str, info: Dataset, event_type: int) -> int:
    ae = client(aet)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", port, ae_title="PHOTOGW",
                         ext_neg=[build_role(StorageCommitmentPushModel, scp_role=True)])
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_event_report(info, event_type, StorageCommitmentPushModel,
                                              COMMITMENT_INSTANCE)
    finally:
        assoc.release()
    return status_of(status)


def test_commitment_report_is_taken_from_destinations_only(make_node: Callable[..., Node]) -> None:
    node = make_node()
    ok, bad = generate_uid(), generate_uid()
    info = _report("2.25.1", [ok], [(bad, 0x0112)])
    assert _send_report(node.port, "STORESCU", info, 2) == 0x0124  # allowed to store, not to report
    assert node.commitments == []
    assert _send_report(node.port, "ORTHANC", info, 2) == 0x0000
    assert node.commitments == [("ORTHANC", "2.25.1", [ok], [(bad, 0x0112)])]
    assert _send_report(node.port, "ORTHANC", info, 7) == 0x0113  # not a commitment event type


def test_commitment_handlers_work_on_any_association() -> None:
    """What the delivery side binds on its own N-ACTION association; here on a bare acceptor."""
    got: list[Any] = []
    scp = AE(ae_title="DELIVERY")
    scp.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = scp.start_server(("127.0.0.1", 0), block=False,
                              evt_handlers=DimseDoor.commitment_handlers(lambda *a: got.append(a)))
    assert server is not None
    try:
        ae = client("ANYPACS")
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="DELIVERY",
                             ext_neg=[build_role(StorageCommitmentPushModel, scp_role=True)])
        assert assoc.is_established
        try:
            status, _ = assoc.send_n_event_report(_report("2.25.7", ["2.25.8"], []), 1,
                                                  StorageCommitmentPushModel, COMMITMENT_INSTANCE)
        finally:
            assoc.release()
    finally:
        server.shutdown()
    assert status_of(status) == 0x0000
    assert got == [("ANYPACS", "2.25.7", ["2.25.8"], [])]


@pytest.mark.e2e
def test_orthanc_reports_commitment_on_a_new_association(make_node: Callable[..., Node],
                                                         tmp_path: Path) -> None:
    door_port = free_port()
    pacs = EmbeddedOrthanc(tmp_path / "orthanc",
                           modalities={"PHOTOGW": Address("PHOTOGW", "127.0.0.1", door_port)})
    pacs.start()
    try:
        node = make_node(settings(tmp_path, port=door_port, destination=str(pacs.address)))
        ds = secondary_capture(consent=True)
        ae = client("PHOTOGW")
        ae.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate("127.0.0.1", pacs.dicom_port, ae_title=pacs.ae_title)
        assert assoc.is_established
        stored_tx, unknown_tx, unknown = (f"2.25.{uuid.uuid4().int}" for _ in range(3))
        try:
            assert status_of(assoc.send_c_store(ds)) == 0x0000
            for tx, sop in ((stored_tx, ds.SOPInstanceUID), (unknown_tx, unknown)):
                request = _report(tx, [sop], [])
                status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel,
                                                COMMITMENT_INSTANCE)
                assert status_of(status) == 0x0000
        finally:
            assoc.release()
        wait_until(lambda: len(node.commitments) == 2, 20, what="Orthanc's two N-EVENT-REPORTs")
        by_tx = {c[1]: c for c in node.commitments}
        assert by_tx[stored_tx] == ("ORTHANC", stored_tx, [ds.SOPInstanceUID], [])
        aet, _, ok, failed = by_tx[unknown_tx]
        assert (aet, ok, [sop for sop, _ in failed]) == ("ORTHANC", [], [unknown])
        assert failed[0][1] != 0  # Orthanc says why (0x0112 no such object instance)
        node.assert_nothing_staged()
    finally:
        pacs.stop()


# -- TLS ------------------------------------------------------------------------------------------

@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _make_pki(directory: Path) -> Pki:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)
        return path

    def issue(cn: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
              signer: ec.EllipticCurvePrivateKey, ca: bool,
              san: list[x509.GeneralName] | None = None) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = issue("test CA", ca_key, name("test CA"), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    server_cert = issue("localhost", server_key, ca_cert.subject, ca_key, ca=False,
                        san=[x509.DNSName("localhost"), loopback])
    client_cert = issue("STORESCU", client_key, ca_cert.subject, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (directory / "server.pem").write_bytes(server_cert.public_bytes(pem))
    (directory / "client.pem").write_bytes(client_cert.public_bytes(pem))
    return Pki(directory / "ca.pem",
               directory / "server.pem", write_key(server_key, directory / "server.key"),
               directory / "client.pem", write_key(client_key, directory / "client.key"))


def _tls_echo(port: int, pki: Pki, with_cert: bool) -> bool:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    if with_cert:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    ae = client()
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="PHOTOGW", tls_args=(context, "localhost"))
    if not assoc.is_established:
        return False
    try:
        return status_of(assoc.send_c_echo()) == 0x0000
    finally:
        assoc.release()


def test_tls_port_speaks_tls_only_and_requires_client_certificates(
        make_node: Callable[..., Node], tmp_path: Path) -> None:
    pki = _make_pki(tmp_path)
    node = make_node(tls={"cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
                          "ca_file": str(pki.ca)})
    # A client that connects and says nothing must not hold up the others (no handshake in the
    # accept loop).
    with socket.create_connection(("127.0.0.1", node.port), timeout=TIMEOUT_S):
        assert _tls_echo(node.port, pki, with_cert=True)
    assert not _tls_echo(node.port, pki, with_cert=False)
    rc, out = echoscu(node)  # plain TCP
    assert rc != 0, out
    ae = client()
    ae.add_requested_context(Verification)
    assert not ae.associate("127.0.0.1", node.port, ae_title="PHOTOGW").is_established
    assert _tls_echo(node.port, pki, with_cert=True)  # and still up
    node.assert_nothing_staged()

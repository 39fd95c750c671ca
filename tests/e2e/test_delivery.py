"""Nothing lost, nothing left: delivery to a real Orthanc and to faulty peers, retry, storage
commitment, purge, key rotation, and what the staging directory holds while photos are in flight."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pydicom
import pytest

from conftest import dcmtk, node_settings, wait_until  # noqa: F401
from faulty_pacs import FaultyPacs
from gateway.clock import FakeClock
from gateway.item import State
from gateway.node import Node
from gateway.orthanc import EmbeddedOrthanc, free_port
from gateway.settings import write_key_file
from photo_factory import MARKERS, make_jpeg, markers_present

FAST_RETRY = {"attempts": 50, "initial_s": 0.1, "max_s": 1.0}


def _meta(n: int) -> dict:
    return {
        "patient": {"id": f"DLV{n:05d}", "issuer": "HOSP", "name": f"DELIVERY^PATIENT{n}"},
        "body_site": "left forearm",
        "consent": {"status": "granted", "scope": ["clinical-care"]},
    }


def _photos(n: int) -> list[bytes]:
    return [make_jpeg(width=64, height=48, seed=i, quality=80 + i % 10) for i in range(n)]


def _drain(node: Node, timeout: float = 30) -> None:
    def done() -> bool:
        node.pipeline.step()
        return not [i for i in node.pipeline.unfinished() if i.state != State.QUARANTINED]
    wait_until(done, timeout, what="the pipeline to drain")


def test_photos_reach_orthanc_once_and_staging_is_empty_after(tmp_path, orthanc):
    cfg = node_settings(tmp_path, {"pacs": {"address": str(orthanc.address)}})
    node = Node(cfg)
    items = [node.intake.accept_photo(p, _meta(i), source="cli")[0] for i, p in enumerate(_photos(5))]
    _drain(node)
    assert orthanc.instance_count() == 5
    assert node.staging.item_ids() == []
    assert {node.journal.get(i.id).state for i in items} == {State.PURGED}
    for item in items:
        assert orthanc.find_instance(node.journal.get(item.id).sop_instance_uid)


def test_outage_of_orthanc_loses_nothing_and_duplicates_nothing(tmp_path):
    """50 photos arrive while the PACS is down for 10 s; all end in Orthanc exactly once."""
    pacs = EmbeddedOrthanc(tmp_path / "orthanc")
    pacs.start()
    try:
        cfg = node_settings(tmp_path, {"pacs": {"address": str(pacs.address), "retry": FAST_RETRY}})
        node = Node(cfg, step_interval_s=0.2)
        node.start()
        pacs.stop()
        down_at = time.monotonic()
        photos = _photos(50)
        for i, photo in enumerate(photos):
            node.intake.accept_photo(photo, _meta(i), source="cli")
        wait_until(lambda: node.journal.counts()[State.WAITING] > 0, 10, what="retries to start")
        time.sleep(max(0.0, 10 - (time.monotonic() - down_at)))  # the outage itself: 10 s
        pacs.start()
        up_at = time.monotonic()
        wait_until(lambda: node.journal.counts()[State.PURGED] == 50, 60, interval=0.2,
                   what="all 50 photos to be confirmed and purged")
        drained_s = time.monotonic() - up_at
        node.stop()
        assert pacs.instance_count() == 50
        assert node.staging.item_ids() == []
        print(f"outage 10 s, 50 photos, drained {drained_s:.1f} s after restart, "
              f"resent {node.pipeline.counters.resent}, retries {node.pipeline.counters.retries}")
    finally:
        pacs.stop()


@pytest.mark.parametrize(
    ("statuses", "final", "reason_part"),
    [
        ([0xB000], State.PURGED, None),            # warning: coercion of data elements = success
        ([0xB007], State.PURGED, None),
        ([0xA700, 0xA701], State.PURGED, None),    # out of resources: retried, then stored
        ([0xC000], State.QUARANTINED, "0xC000"),  # cannot understand: never retried
        ([0xA900], State.QUARANTINED, "0xA900"),  # data set does not match SOP class
        ([0xFFFF], State.PURGED, None),            # association aborted mid-store: resent
    ],
)
def test_each_status_class_is_handled_as_the_contract_says(tmp_path, statuses, final, reason_part):
    with FaultyPacs(statuses=list(statuses)) as pacs:
        cfg = node_settings(tmp_path, {"pacs": {"address": pacs.address, "retry": FAST_RETRY}})
        node = Node(cfg)
        (item,) = node.intake.accept_photo(_photos(1)[0], _meta(1), source="cli")
        _drain(node, 20)
        got = node.journal.get(item.id)
        assert got.state == final, got.reason
        if reason_part:
            assert reason_part in (got.reason or "")
            assert len(pacs.stored) == 1  # a permanent failure is not retried
            assert node.staging.item_ids() == [item.id]  # quarantined: kept, encrypted
        else:
            assert node.staging.item_ids() == []
            assert len(set(pacs.stored)) == 1  # resends reuse the same SOP Instance UID


def test_a_refused_association_is_retried_until_the_peer_accepts(tmp_path):
    port = free_port()
    store_dir = tmp_path / "received"
    store_dir.mkdir()
    cfg = node_settings(tmp_path, {"pacs": {"address": f"STORESCP@127.0.0.1:{port}", "retry": FAST_RETRY}})
    node = Node(cfg)
    (item,) = node.intake.accept_photo(_photos(1)[0], _meta(2), source="cli")
    import subprocess

    refusing = subprocess.Popen(["/usr/bin/storescp", "--refuse", str(port)])
    try:
        # DCMTK's --refuse answers the association request with a refusal (pynetdicom sees the
        # association rejected or aborted); either way: transient, so the item waits and retries.
        def refused() -> bool:
            node.pipeline.step()
            got = node.journal.get(item.id)
            return got.attempts >= 2 and any(w in (got.reason or "") for w in ("rejected", "aborted"))
        wait_until(refused, 15, what="refused attempts")
        assert node.journal.get(item.id).state == State.WAITING
    finally:
        refusing.kill()
        refusing.wait()
    accepting = subprocess.Popen(["/usr/bin/storescp", "+xa", "-od", str(store_dir), str(port)])
    try:
        _drain(node, 20)
        assert node.journal.get(item.id).state == State.PURGED
        assert len(list(store_dir.iterdir())) == 1
    finally:
        accepting.kill()
        accepting.wait()


def test_storage_commitment_success_on_the_same_association_purges(tmp_path):
    with FaultyPacs(commitment="success") as pacs:
        cfg = node_settings(tmp_path, {"pacs": {"address": pacs.address, "storage_commitment": True,
                                                "retry": FAST_RETRY}})
        node = Node(cfg)
        (item,) = node.intake.accept_photo(_photos(1)[0], _meta(3), source="cli")
        _drain(node, 20)
        assert node.journal.get(item.id).state == State.PURGED
        assert node.staging.item_ids() == []


def test_storage_commitment_failure_stores_again_and_never_purges_before_success(tmp_path):
    with FaultyPacs(commitment="failure") as pacs:
        cfg = node_settings(tmp_path, {"pacs": {"address": pacs.address, "storage_commitment": True,
                                                "retry": {"attempts": 3, "initial_s": 0.05, "max_s": 0.1}}})
        node = Node(cfg)
        (item,) = node.intake.accept_photo(_photos(1)[0], _meta(4), source="cli")
        _drain(node, 20)
        got = node.journal.get(item.id)
        assert got.state == State.QUARANTINED and "storage commitment failed" in got.reason
        assert node.staging.item_ids() == [item.id]
        assert len(pacs.stored) >= 2  # stored again after the failure report


def test_a_commitment_that_never_answers_is_quarantined_not_purged_and_listed(tmp_path, cli_env):
    clock = FakeClock()
    with FaultyPacs(commitment="silent") as pacs:
        cfg = node_settings(tmp_path, {"pacs": {"address": pacs.address, "storage_commitment": True,
                                                "retry": {"attempts": 3, "initial_s": 1, "max_s": 1}}})
        node = Node(cfg, clock)
        node.pipeline.same_association_wait_s = 0.0
        (item,) = node.intake.accept_photo(_photos(1)[0], _meta(5), source="cli")
        for _ in range(6):
            node.pipeline.step()
            clock.advance(node.pipeline.commitment_timeout_s + 1)
        got = node.journal.get(item.id)
        assert got.state == State.QUARANTINED and got.reason == "storage commitment never answered"
        assert node.staging.item_ids() == [item.id]
        node.journal.close()
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps(json.loads(cfg.model_dump_json())))
    from conftest import run_cli

    listed = run_cli("queue", "list", "--json", "--config", str(config), env=cli_env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert rows == [{"id": item.id, "state": "quarantined", "destination": "pacs",
                     "reason": "storage commitment never answered", "updated": rows[0]["updated"]}]


def test_items_staged_under_the_old_key_are_delivered_after_rotation(tmp_path, orthanc):
    cfg = node_settings(tmp_path, {"pacs": {"address": str(orthanc.address)}})
    node = Node(cfg)
    staged = [node.intake.accept_photo(p, _meta(10 + i), source="cli")[0] for i, p in enumerate(_photos(3))]
    node.journal.close()
    key_file = Path(cfg.staging.key_file)
    old = key_file.read_text()
    key_file.unlink()
    write_key_file(key_file)
    key_file.write_text(key_file.read_text() + old)  # new key on top: encrypts; old still decrypts
    rotated = Node(cfg)
    new = rotated.intake.accept_photo(_photos(4)[3], _meta(20), source="cli")[0]
    _drain(rotated)
    assert orthanc.instance_count() == 4
    assert {rotated.journal.get(i.id).state for i in [*staged, new]} == {State.PURGED}


def test_staging_holds_no_plaintext_while_photos_are_in_flight(tmp_path):
    """PACS down: photos wait in staging; no JPEG signature, DICM preamble or marker on disk."""
    cfg = node_settings(tmp_path, {"pacs": {"address": f"DOWN@127.0.0.1:{free_port()}",
                                            "retry": FAST_RETRY}})
    node = Node(cfg)
    for i in range(5):
        photo = make_jpeg(width=96, height=64, seed=i)
        assert markers_present(photo)  # the input really carries the markers
        node.intake.accept_photo(photo, _meta(30 + i), source="cli")
    for _ in range(3):
        node.pipeline.step()  # converted (output staged) and waiting for the PACS
    assert node.journal.counts()[State.WAITING] == 5
    files = [p for p in (tmp_path / "staging").rglob("*") if p.is_file() and p.name != "journal.sqlite"
             and not p.name.startswith("journal.sqlite")]
    assert len(files) == 15  # input, job and output of each
    needles = [b"\xff\xd8\xff", b"DICM", b"JFIF", b"Exif", b"DLV000", b"DELIVERY",
               *(m.encode() for m in MARKERS.values())]
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, (path.name, needle)
    journal_bytes = b"".join(p.read_bytes() for p in (tmp_path / "staging").glob("journal.sqlite*"))
    for needle in (b"DLV000", b"DELIVERY", b"forearm"):
        assert needle not in journal_bytes


def test_a_pacs_that_accepts_tcp_but_never_answers_costs_one_timeout_per_step(tmp_path):
    """A silent PACS (a firewall, a hung server): one association attempt per step, not one per
    batch, so new photos keep being converted and staged meanwhile."""
    import socket
    import threading

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    connections: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                connections.append(silent.accept()[0])  # never answers the A-ASSOCIATE-RQ
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        port = silent.getsockname()[1]
        cfg = node_settings(tmp_path, {"pacs": {"address": f"SILENT@127.0.0.1:{port}", "retry": FAST_RETRY}})
        node = Node(cfg)
        node.pipeline.store_timeout_s = 1.0
        for i, photo in enumerate(_photos(45)):  # three batches of at most 20
            node.intake.accept_photo(photo, _meta(100 + i), source="cli")
        started = time.monotonic()
        node.pipeline.step()
        assert time.monotonic() - started < 10
        assert len(connections) == 1
        counts = node.journal.counts()
        assert counts[State.WAITING] == 20 and counts[State.CONVERTED] == 25
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in connections:
            conn.close()
        silent.close()

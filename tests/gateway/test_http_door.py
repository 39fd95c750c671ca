"""The HTTP door: a real uvicorn server on a loopback port, a real Intake, Journal and Staging.

Every answer of the contract (README "Pinned details": 202/401/403/413/415/422, STOW-RS
200/202/409, livez/readyz/metrics) is asked for by a request that would get another one if the
door were wrong; hostile requests each get a specific 4xx, the server stays up, and nothing is
ever half-staged (staged files == journal items × 2).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from photo_factory import huge_jpeg, make_jpeg, make_png

from gateway.clock import SYSTEM
from gateway.ingest.http import HttpDoor
from gateway.intake import INPUT, JOB, Intake
from gateway.item import State
from gateway.journal import Journal
from gateway.orthanc import free_port
from gateway.settings import HttpSource, Settings
from gateway.staging import Staging, StagingFull

REPO = Path(__file__).resolve().parents[2]
DICOM = REPO / "tests" / "data" / "dicom"
MiB = 1 << 20
CAP_MB = 5

TOKEN = "tok-" + "7f3a" * 12
PASSWORD = "correct horse battery staple"
# Cheap argon2id parameters keep the test quick; the hash carries them, the door reads them.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
PASSWORD_HASH = FAST_HASHER.hash(PASSWORD)
PHI = ("ZZPATIENTIDQ7", "ZZDOEQ7^JANE", "ZZACCQ7", "ZZFILENAMEQ7")

META: dict[str, Any] = {
    "patient": {"id": PHI[0], "issuer": "HOSP-MRN", "name": PHI[1], "birth_date": "1970-01-31", "sex": "F"},
    "accession_number": PHI[2],
    "laterality": "L",
    "consent": {"status": "granted", "scope": ["clinical-care"], "date": "2026-11-20"},
}
GRANTED = {"status": "granted", "scope": ["clinical-care"]}


# -- the door under test ---------------------------------------------------------------------------

@dataclass
class Gate:
    url: str
    port: int
    door: HttpDoor
    journal: Journal
    staging: Staging
    tmp: Path

    def client(self, auth: bool = True, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {TOKEN}"} if auth else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=20, **kw)

    def staged_files(self) -> int:
        return sum(1 for p in self.staging.directory.iterdir() if not p.name.startswith(".tmp-"))

    def items(self) -> list[Any]:
        return self.journal.list(unfinished_only=False)

    def assert_nothing_half_staged(self) -> None:
        assert self.staged_files() == 2 * len(self.items())


class FullStaging(Staging):
    """Our own disk as a test double: always full."""

    def check_writable(self, needed_bytes: int = 0) -> None:
        raise StagingFull("test double: no space left")


def http_source(port: int, **overrides: Any) -> HttpSource:
    raw: dict[str, Any] = {
        "port": port, "max_upload_mb": CAP_MB,
        "tokens": [{"name": "camera-app", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}],
        "users": [{"name": "nurse1", "password_hash": PASSWORD_HASH}],
    }
    raw.update(overrides)
    return HttpSource.model_validate(raw)


def open_gate(tmp: Path, *, staging_class: type[Staging] = Staging, scheme: str = "http",
              **overrides: Any) -> Gate:
    port = free_port()
    source = http_source(port, **overrides)
    cfg = Settings.model_validate({
        "destinations": {"pacs": {"address": "PACS@127.0.0.1:11112"}},
        "routes": [{"match": {}, "to": ["pacs"]}],
    })
    tmp.mkdir(parents=True, exist_ok=True)
    journal = Journal(tmp / "journal.sqlite")
    staging = staging_class(tmp / "staging", [os.urandom(32)])
    intake = Intake(cfg, journal, staging, SYSTEM)
    door = HttpDoor(source, intake, journal, ready=lambda: (tmp / "ready").exists(),
                    metrics=lambda: "# TYPE photo_gateway_items gauge\nphoto_gateway_items 3\n")
    door.start()
    return Gate(f"{scheme}://127.0.0.1:{port}", port, door, journal, staging, tmp)


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    g = open_gate(tmp_path_factory.mktemp("door"))
    yield g
    g.door.stop()
    g.journal.close()


@pytest.fixture
def gates(tmp_path: Path) -> Iterator[Callable[..., Gate]]:
    opened: list[Gate] = []

    def make(name: str = "g", **kw: Any) -> Gate:
        g = open_gate(tmp_path / name, **kw)
        opened.append(g)
        return g

    yield make
    for g in opened:
        g.door.stop()
        g.journal.close()


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return make_jpeg(width=320, height=240)


@pytest.fixture(scope="module")
def png() -> bytes:
    return make_png(width=96, height=64)


# -- request helpers -------------------------------------------------------------------------------

def upload(client: httpx.Client, *photos: bytes, meta: Any = META, names: Iterable[str] | None = None,
           **kw: Any) -> httpx.Response:
    names = list(names) if names is not None else [f"p{i}.jpg" for i in range(len(photos))]
    files = [("photos", (n, p, "application/octet-stream")) for n, p in zip(names, photos, strict=True)]
    data = {"metadata": meta if isinstance(meta, str) else json.dumps(meta)}
    return client.post("/photos", files=files, data=data, **kw)


def multipart(parts: list[tuple[str, bytes]], boundary: str = "XbOuNdArY") -> tuple[bytes, str]:
    """(body, Content-Type) of a hand-made multipart/form-data body; each part is (headers, data)."""
    body = b"".join(f"--{boundary}\r\n{headers}\r\n\r\n".encode() + data + b"\r\n" for headers, data in parts)
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def photo_part(data: bytes, filename: str = "a.jpg") -> tuple[str, bytes]:
    headers = (f'Content-Disposition: form-data; name="photos"; filename="{filename}"\r\n'
               "Content-Type: image/jpeg")
    return headers, data


def meta_part(meta: Any = META) -> tuple[str, bytes]:
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return 'Content-Disposition: form-data; name="metadata"', raw


def post_raw(client: httpx.Client, path: str, body: bytes, content_type: str | None) -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return client.post(path, content=body, headers=headers)


def stow_body(parts: list[bytes], part_type: str = "application/dicom",
              boundary: str = "DiCoMbOuNdArY") -> tuple[bytes, str]:
    body = b"".join(f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + p + b"\r\n"
                    for p in parts) + f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def raw_exchange(port: int, head: bytes, body: Iterable[bytes] = (), timeout: float = 15) -> tuple[int, bytes, int]:
    """Send `head`, then `body` piece by piece for as long as the server has not answered.

    Returns (status, response bytes, body bytes sent): a server that answers early is seen doing
    so, because the client stops sending as soon as there is something to read.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sent = 0
    response = b""
    deadline = time.monotonic() + timeout
    try:
        sock.sendall(head)
        sock.setblocking(False)
        pending = b""
        pieces = iter(body)
        while time.monotonic() < deadline:
            if not pending:
                pending = next(pieces, b"")
                if not pending:
                    break
            readable, writable, _ = select.select([sock], [sock], [], 1)
            if readable:
                break
            if writable:
                try:
                    n = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += n
                pending = pending[n:]
        sock.setblocking(True)
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            response += chunk
    finally:
        sock.close()
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0
    return status, response, sent


def auth_head(method: str, path: str, extra: str = "", token: str = TOKEN) -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Connection: close\r\n{extra}\r\n").encode()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# -- POST /photos: success ------------------------------------------------------------------------

def test_upload_answers_202_after_staging_and_staged_input_decrypts_to_the_upload(
        gate: Gate, jpeg: bytes, png: bytes) -> None:
    with gate.client() as c:
        r = upload(c, jpeg, png, names=["a.jpg", "b.png"])
    assert r.status_code == 202, r.text
    items = r.json()["items"]
    assert set(r.json()) == {"items"}
    assert len(items) == 2 and all(i["state"] == "received" for i in items)
    for item, sent in zip(items, (jpeg, png), strict=True):
        journalled = gate.journal.get(item["id"])
        assert journalled is not None and journalled.state is State.RECEIVED
        assert journalled.source == "http" and journalled.destination == "pacs"
        assert gate.staging.read(item["id"], INPUT) == sent
        job = json.loads(gate.staging.read(item["id"], JOB))
        assert job["meta"]["patient"]["id"] == META["patient"]["id"]
        # Encrypted at rest: the plaintext is nowhere in the staged file.
        assert sent[:64] not in (gate.staging.directory / f"{item['id']}.input").read_bytes()
    gate.assert_nothing_half_staged()


def test_get_photo_gives_the_state_of_an_item_and_404_for_unknown_ids(gate: Gate, jpeg: bytes) -> None:
    with gate.client() as c:
        item_id = upload(c, jpeg).json()["items"][0]["id"]
        r = c.get(f"/photos/{item_id}")
        assert r.status_code == 200
        body = r.json()
        assert set(body) == {"id", "state", "reason", "updated"}
        assert body["id"] == item_id and body["state"] == "received" and body["reason"] is None
        assert abs(dt.datetime.fromisoformat(body["updated"]).timestamp() - time.time()) < 60
        gate.journal.transition(item_id, State.QUARANTINED, reason="PACS refused (0xC000)")
        assert c.get(f"/photos/{item_id}").json()["state"] == "quarantined"
        assert c.get(f"/photos/{item_id}").json()["reason"] == "PACS refused (0xC000)"
        assert c.get(f"/photos/{'0' * 32}").status_code == 404
        assert c.get("/photos/not-an-id").status_code == 404
    with gate.client(auth=False) as c:
        assert c.get(f"/photos/{item_id}").status_code == 401


def test_basic_auth_with_an_argon2id_hash_works(gate: Gate, jpeg: bytes) -> None:
    assert PASSWORD_HASH.startswith("$argon2id$")
    with gate.client(auth=False) as c:
        r = upload(c, jpeg, headers=basic("nurse1", PASSWORD))
        assert r.status_code == 202, r.text
        assert c.get(f"/photos/{r.json()['items'][0]['id']}", headers=basic("nurse1", PASSWORD)).status_code == 200


# -- POST /photos: every refusal --------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Bearer {TOKEN}x"},
    basic("nurse1", "wrong password"),
    basic("nobody", PASSWORD),
    {"Authorization": "Basic !!!not-base64"},
    {"Authorization": "Digest username=nurse1"},
], ids=["none", "wrong-token", "token-prefix", "wrong-password", "unknown-user", "bad-base64", "digest"])
def test_401_without_valid_credentials(gate: Gate, jpeg: bytes, headers: dict[str, str]) -> None:
    before = len(gate.items())
    with gate.client(auth=False) as c:
        r = upload(c, jpeg, headers=headers)
    assert r.status_code == 401
    assert "error" in r.json()
    challenges = r.headers.get_list("www-authenticate")
    assert any(ch.startswith("Bearer") for ch in challenges) and any(ch.startswith("Basic") for ch in challenges)
    assert len(gate.items()) == before


@pytest.mark.parametrize("consent", [None, {"status": "refused"}, {"status": "withdrawn"}])
def test_403_without_consent(gate: Gate, jpeg: bytes, consent: dict[str, str] | None) -> None:
    meta = {k: v for k, v in META.items() if k != "consent"}
    if consent is not None:
        meta["consent"] = consent
    before = len(gate.items())
    with gate.client() as c:
        r = upload(c, jpeg, meta=meta)
    assert r.status_code == 403, r.text
    assert "consent" in r.json()["error"]
    assert len(gate.items()) == before
    gate.assert_nothing_half_staged()


def test_default_consent_of_the_source_lets_a_photo_without_consent_in(gates: Callable[..., Gate],
                                                                       jpeg: bytes) -> None:
    g = gates(default_consent=GRANTED)
    meta = {k: v for k, v in META.items() if k != "consent"}
    with g.client() as c:
        r = upload(c, jpeg, meta=meta)
    assert r.status_code == 202, r.text
    job = json.loads(g.staging.read(r.json()["items"][0]["id"], JOB))
    assert job["meta"]["consent"]["assumed"] is True


def test_415_for_a_text_file_named_jpg(gate: Gate) -> None:
    with gate.client() as c:
        r = upload(c, b"just some text, not a photo\n", names=["photo.jpg"])
    assert r.status_code == 415
    assert r.json()["error"].startswith("photos[0]: unsupported type")


def test_422_names_the_unknown_metadata_key(gate: Gate, jpeg: bytes) -> None:
    with gate.client() as c:
        r = upload(c, jpeg, meta={**META, "favourite_colour": "blue"})
        assert r.status_code == 422
        assert "favourite_colour" in r.json()["error"]
        r = upload(c, jpeg, meta={**META, "patient": {**META["patient"], "shoe_size": 9}})
        assert r.status_code == 422
        assert "patient.shoe_size" in r.json()["error"]


def test_400_for_a_broken_multipart_body(gate: Gate, jpeg: bytes) -> None:
    body, ctype = multipart([photo_part(jpeg), meta_part()])
    with gate.client() as c:
        r = post_raw(c, "/photos", body[: len(body) // 2], ctype)  # cut before the closing boundary
    assert r.status_code == 400
    assert "multipart" in r.json()["error"]
    gate.assert_nothing_half_staged()


def test_507_when_staging_is_full(gates: Callable[..., Gate], jpeg: bytes) -> None:
    g = gates(staging_class=FullStaging)
    with g.client() as c:
        r = upload(c, jpeg)
    assert r.status_code == 507
    assert "full" in r.json()["error"]
    assert g.items() == [] and g.staged_files() == 0


def test_several_photos_some_refused_answer_the_first_error_and_list_what_was_staged(
        gate: Gate, jpeg: bytes, png: bytes) -> None:
    with gate.client() as c:
        r = upload(c, jpeg, b"not a photo", png, huge_jpeg(jpeg))
    assert r.status_code == 415
    body = r.json()
    assert body["error"].startswith("photos[1]")
    assert [p.get("status") for p in body["photos"]] == [None, 415, None, 422]
    staged = [i["id"] for i in body["items"]]
    assert staged == [i["id"] for p in body["photos"] for i in p.get("items", [])]
    assert len(staged) == 2
    assert gate.staging.read(staged[0], INPUT) == jpeg and gate.staging.read(staged[1], INPUT) == png
    gate.assert_nothing_half_staged()


# -- the size cap ---------------------------------------------------------------------------------

def test_413_for_a_declared_too_large_body_before_any_of_it_is_sent(gate: Gate) -> None:
    head = auth_head("POST", "/photos", "Content-Type: multipart/form-data; boundary=B\r\n"
                     f"Content-Length: {50 * MiB}\r\nExpect: 100-continue\r\n")
    started = time.monotonic()
    status, response, sent = raw_exchange(gate.port, head)  # headers only: the body is never sent
    assert status == 413, response[:200]
    assert b"100 Continue" not in response  # the server never asked for the body
    assert b'"error"' in response and b"limit" in response
    assert time.monotonic() - started < 5
    # A client that sends anyway is answered while it is still sending (what it got out is socket
    # buffers, not the server reading), and the connection is closed.
    status, response, sent = raw_exchange(gate.port, head, [b"x" * 65536] * 800)
    assert status == 413 and b"connection: close" in response.lower()
    assert sent < 16 * MiB
    with gate.client() as c:
        assert c.get("/livez").status_code == 200


def test_408_for_a_body_that_stalls(gate: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.ingest.http as door_module

    monkeypatch.setattr(door_module, "BODY_IDLE_TIMEOUT_S", 0.3)
    head = auth_head("POST", "/photos", "Content-Type: multipart/form-data; boundary=B\r\n"
                     "Content-Length: 1000\r\n")
    started = time.monotonic()
    status, response, _ = raw_exchange(gate.port, head + b"--B\r\n")  # then nothing more
    assert status == 408, response[:200]
    assert time.monotonic() - started < 5
    gate.assert_nothing_half_staged()


CHILD = r"""
import os, sys, hashlib, json
sys.path[:0] = [sys.argv[1], os.path.join(sys.argv[1], "tests")]
from pathlib import Path
from gateway.clock import SYSTEM
from gateway.ingest.http import HttpDoor
from gateway.intake import Intake
from gateway.journal import Journal
from gateway.settings import HttpSource, Settings
from gateway.staging import Staging
tmp, port, token = Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cfg = Settings.model_validate({"destinations": {"pacs": {"address": "PACS@127.0.0.1:11112"}},
                               "routes": [{"match": {}, "to": ["pacs"]}]})
journal = Journal(tmp / "journal.sqlite")
intake = Intake(cfg, journal, Staging(tmp / "staging", [os.urandom(32)]), SYSTEM)
source = HttpSource.model_validate({"port": port, "max_upload_mb": 5,
                                    "tokens": [{"name": "t", "sha256": hashlib.sha256(token.encode()).hexdigest()}]})
door = HttpDoor(source, intake, journal)
door.start()
print("ready", flush=True)
sys.stdin.read()
door.stop()
"""


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_413_for_a_chunked_body_over_the_cap_without_buffering_it(tmp_path: Path, jpeg: bytes) -> None:
    """50 MiB sent chunked (no Content-Length) to a door capped at 5 MiB, served by its own process
    so that its memory can be measured: 413 comes while the client is still sending, and the
    server's peak RSS grows by far less than the body."""
    port = free_port()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(REPO), str(tmp_path), str(port), TOKEN],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"},
                          timeout=20) as c:  # warm up every code path of an upload
            assert upload(c, jpeg).status_code == 202
        baseline = _status_kib(child.pid, "VmRSS")
        try:  # reset the peak (VmHWM) to the current RSS; else sample it
            Path(f"/proc/{child.pid}/clear_refs").write_text("5")
            hwm_reset = True
        except OSError:
            hwm_reset = False
        peak = [baseline]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _status_kib(child.pid, "VmRSS"))
                time.sleep(0.002)

        sampler = threading.Thread(target=sample)
        sampler.start()
        total = 50 * MiB
        piece = os.urandom(64 * 1024)

        def chunks() -> Iterator[bytes]:  # chunked transfer coding, made as it is sent
            head = (b"--B\r\nContent-Disposition: form-data; name=\"photos\"; filename=\"a.jpg\"\r\n"
                    b"Content-Type: image/jpeg\r\n\r\n")
            yield b"%x\r\n%s\r\n" % (len(head), head)
            for _ in range(total // len(piece)):
                yield b"%x\r\n%s\r\n" % (len(piece), piece)
            yield b"0\r\n\r\n"

        head = auth_head("POST", "/photos", "Content-Type: multipart/form-data; boundary=B\r\n"
                         "Transfer-Encoding: chunked\r\n")
        started = time.monotonic()
        status, response, sent = raw_exchange(port, head, chunks())
        elapsed = time.monotonic() - started
        done.set()
        sampler.join()
        if hwm_reset:
            peak[0] = max(peak[0], _status_kib(child.pid, "VmHWM"))
        growth_mib = (peak[0] - baseline) / 1024
        print(f"chunked 50 MiB upload, cap 5 MiB: answered {status} after {sent / MiB:.1f} MiB sent "
              f"in {elapsed:.2f} s; server RSS {baseline / 1024:.1f} MiB -> peak {peak[0] / 1024:.1f} MiB "
              f"(+{growth_mib:.1f} MiB; peak {'from VmHWM' if hwm_reset else 'sampled'})")
        assert status == 413, response[:300]
        assert sent < 25 * MiB, "the server read (nearly) everything before answering"
        assert growth_mib < 20, f"server memory grew by {growth_mib:.1f} MiB for a 50 MiB body"
        assert elapsed < 15
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
            assert c.get("/livez").status_code == 200
    finally:
        if child.poll() is None:
            assert child.stdin is not None
            child.stdin.close()
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


# -- STOW-RS --------------------------------------------------------------------------------------

def _dicom(name: str) -> bytes:
    deadline = time.monotonic() + 600  # copied into the tree by another engineer
    while not (DICOM / name).exists() or not (REPO / "dicom_mapping" / "dicom_input.py").exists():
        if time.monotonic() > deadline:
            pytest.fail(f"tests/data/dicom/{name} or dicom_mapping/dicom_input.py never appeared")
        time.sleep(1)
    return (DICOM / name).read_bytes()


def _uid(ds_bytes: bytes, keyword: str) -> str:
    import io

    import pydicom

    return str(pydicom.dcmread(io.BytesIO(ds_bytes), stop_before_pixels=True)[keyword].value)


def _failed(body: dict[str, Any]) -> list[tuple[str | None, int]]:
    return [(f.get("00081155", {}).get("Value", [None])[0], f["00081197"]["Value"][0])
            for f in body.get("00081198", {}).get("Value", [])]


def _stored(body: dict[str, Any]) -> list[str]:
    return [r["00081155"]["Value"][0] for r in body.get("00081199", {}).get("Value", [])]


def test_stow_200_when_every_instance_is_stored(gates: Callable[..., Gate]) -> None:
    sc, vl = _dicom("sc_rgb_explicit_le.dcm"), _dicom("vl_photo_xc_mono_explicit_le.dcm")
    g = gates(default_consent=GRANTED)
    body, ctype = stow_body([sc, vl])
    with g.client() as c:
        r = post_raw(c, "/studies", body, ctype)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/dicom+json")
    answer = r.json()
    assert "00081198" not in answer
    assert _stored(answer) == [_uid(sc, "SOPInstanceUID"), _uid(vl, "SOPInstanceUID")]
    assert answer["00081199"]["Value"][0]["00081150"]["Value"] == [_uid(sc, "SOPClassUID")]
    assert all("00081190" not in ref for ref in answer["00081199"]["Value"])  # no RetrieveURL
    items = g.items()
    assert len(items) == 2 and {i.kind for i in items} == {"dicom"} and {i.source for i in items} == {"http"}
    assert g.staging.read(items[0].id, INPUT) == sc
    g.assert_nothing_half_staged()


def test_stow_202_when_some_fail_with_their_reasons(gates: Callable[..., Gate]) -> None:
    sc, ct = _dicom("sc_rgb_explicit_le.dcm"), _dicom("ct_small_non_photo_patient_tags.dcm")
    g = gates(default_consent=GRANTED)
    body, ctype = stow_body([sc, ct, b"not dicom at all"])
    with g.client() as c:
        r = post_raw(c, "/studies", body, ctype)
    assert r.status_code == 202, r.text
    answer = r.json()
    assert _stored(answer) == [_uid(sc, "SOPInstanceUID")]
    assert _failed(answer) == [(_uid(ct, "SOPInstanceUID"), 0x0122), (None, 0xC000)]
    assert answer["00081198"]["Value"][0]["00081150"]["Value"] == [_uid(ct, "SOPClassUID")]
    assert len(g.items()) == 1
    g.assert_nothing_half_staged()


def test_stow_409_when_none_is_stored_no_consent(gates: Callable[..., Gate]) -> None:
    sc = _dicom("sc_rgb_explicit_le.dcm")
    g = gates()  # no default_consent, and the object has no consent sequence
    body, ctype = stow_body([sc])
    with g.client() as c:
        r = post_raw(c, "/studies", body, ctype)
    assert r.status_code == 409, r.text
    assert _failed(r.json()) == [(_uid(sc, "SOPInstanceUID"), 0x0124)]
    assert g.items() == [] and g.staged_files() == 0


def test_stow_409_out_of_resources_when_staging_is_full(gates: Callable[..., Gate]) -> None:
    sc = _dicom("sc_rgb_explicit_le.dcm")
    g = gates(staging_class=FullStaging, default_consent=GRANTED)
    body, ctype = stow_body([sc])
    with g.client() as c:
        r = post_raw(c, "/studies", body, ctype)
    assert r.status_code == 409
    assert _failed(r.json()) == [(_uid(sc, "SOPInstanceUID"), 0xA700)]


def test_stow_refuses_other_content_types_and_wants_credentials(gate: Gate) -> None:
    with gate.client() as c:
        assert post_raw(c, "/studies", b"x", "application/dicom").status_code == 415
        assert post_raw(c, "/studies", b"x", 'multipart/related; type="application/dicom+json"; '
                                             "boundary=B").status_code == 415
    with gate.client(auth=False) as c:
        body, ctype = stow_body([b"whatever"])
        assert post_raw(c, "/studies", body, ctype).status_code == 401


# -- health and metrics -----------------------------------------------------------------------------

def test_livez_readyz_metrics_need_no_credentials(gate: Gate) -> None:
    with gate.client(auth=False) as c:
        assert c.get("/livez").status_code == 200
        (gate.tmp / "ready").unlink(missing_ok=True)
        assert c.get("/readyz").status_code == 503
        (gate.tmp / "ready").touch()
        assert c.get("/readyz").status_code == 200
        r = c.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "photo_gateway_items 3" in r.text


# -- hostile requests -------------------------------------------------------------------------------

def _hostile_cases(jpeg: bytes, png: bytes) -> list[tuple[str, int, Callable[[httpx.Client, int], int]]]:
    def form(*parts: tuple[str, bytes], boundary: str = "XbOuNdArY") -> Callable[[httpx.Client, int], int]:
        body, ctype = multipart(list(parts), boundary)
        return lambda c, port: post_raw(c, "/photos", body, ctype).status_code

    def raw(path: str, ctype: str | None, body: bytes) -> Callable[[httpx.Client, int], int]:
        return lambda c, port: post_raw(c, path, body, ctype).status_code

    def wire(request: bytes) -> Callable[[httpx.Client, int], int]:
        return lambda c, port: raw_exchange(port, request)[0]

    def get(path: str, **kw: Any) -> Callable[[httpx.Client, int], int]:
        return lambda c, port: c.get(path, **kw).status_code

    no_consent = {k: v for k, v in META.items() if k != "consent"}
    broken_png = bytearray(png)
    broken_png[20] ^= 0xFF  # IHDR CRC no longer matches
    no_eoi = jpeg[:-2]
    deep = b"[" * 100_000 + b"]" * 100_000
    many_parts = [photo_part(jpeg[:10])] * 1001
    dicom_file = bytes(128) + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00" + b"\x00" * 4 + b"\x02\x00\x01\x00OB\x00\x00"
    return [
        ("random bytes as a multipart body", 400, raw("/photos", "multipart/form-data; boundary=XbOuNdArY", os.urandom(4096))),
        ("random bytes, no content type", 415, raw("/photos", None, os.urandom(4096))),
        ("json body", 415, raw("/photos", "application/json", json.dumps(META).encode())),
        ("text/plain body", 415, raw("/photos", "text/plain", b"hello")),
        ("multipart/mixed", 415, raw("/photos", "multipart/mixed; boundary=B", b"--B--\r\n")),
        ("urlencoded form", 415, raw("/photos", "application/x-www-form-urlencoded", b"metadata=%7B%7D")),
        ("multipart without boundary", 400, raw("/photos", "multipart/form-data", b"--B--\r\n")),
        ("boundary longer than 70", 400, raw("/photos", "multipart/form-data; boundary=" + "b" * 200, b"")),
        ("empty body", 400, raw("/photos", "multipart/form-data; boundary=B", b"")),
        ("only the closing boundary", 400, raw("/photos", "multipart/form-data; boundary=B", b"--B--\r\n")),
        ("metadata but no photos", 400, form(meta_part())),
        ("photos but no metadata", 422, form(photo_part(jpeg))),
        ("empty photos part", 400, form(photo_part(b""), meta_part())),
        ("empty metadata", 422, form(photo_part(jpeg), meta_part(b""))),
        ("metadata a JSON array", 422, form(photo_part(jpeg), meta_part([META]))),
        ("metadata a JSON string", 422, form(photo_part(jpeg), meta_part("granted"))),
        ("metadata null", 422, form(photo_part(jpeg), meta_part(b"null"))),
        ("metadata not JSON", 422, form(photo_part(jpeg), meta_part(b"{patient: 1"))),
        ("metadata not UTF-8", 422, form(photo_part(jpeg), meta_part(b"\xff\xfe\xfa{"))),
        ("metadata nested 100000 deep", 422, form(photo_part(jpeg), meta_part(deep))),
        ("unknown metadata key", 422, form(photo_part(jpeg), meta_part({**META, "x_extra": 1}))),
        ("unknown nested key", 422, form(photo_part(jpeg), meta_part({**META, "consent": {**GRANTED, "x": 1}}))),
        ("metadata wrong type", 422, form(photo_part(jpeg), meta_part({**META, "recognizable": [1, 2]}))),
        ("unknown body site", 422, form(photo_part(jpeg), meta_part({**META, "body_site": "left elbow of mars"}))),
        ("duplicate metadata fields", 422, form(photo_part(jpeg), meta_part(), meta_part())),
        ("path traversal in the file name", 400, form(photo_part(jpeg, "../../x.jpg"), meta_part())),
        ("absolute path as the file name", 400, form(photo_part(jpeg, "/etc/cron.d/x.jpg"), meta_part())),
        ("backslash path as the file name", 400, form(photo_part(jpeg, "..\\..\\x.jpg"), meta_part())),
        ("text file named .jpg", 415, form(photo_part(b"GIF89a not really", "x.jpg"), meta_part())),
        ("a DICOM file as a photo", 415, form(photo_part(dicom_file), meta_part())),
        ("JPEG declaring 60000x60000", 422, form(photo_part(huge_jpeg(jpeg)), meta_part())),
        ("JPEG without EOI", 422, form(photo_part(no_eoi), meta_part())),
        ("PNG with a bad CRC", 422, form(photo_part(bytes(broken_png), "x.png"), meta_part())),
        ("no consent", 403, form(photo_part(jpeg), meta_part(no_consent))),
        ("consent refused", 403, form(photo_part(jpeg), meta_part({**META, "consent": {"status": "refused"}}))),
        ("unexpected form field", 400, form(photo_part(jpeg), meta_part(),
                                            ('Content-Disposition: form-data; name="other"', b"1"))),
        ("part without Content-Disposition", 400, form(("Content-Type: image/jpeg", jpeg), meta_part())),
        ("more than 1000 parts", 400, form(*many_parts, meta_part())),
        ("part header too long", 400, form(("X-Junk: " + "a" * 20000, jpeg), meta_part())),
        ("wrong bearer token", 401, lambda c, port: upload(c, jpeg, headers={"Authorization": "Bearer nope"}).status_code),
        ("huge Authorization header", 401, lambda c, port: upload(
            c, jpeg, headers={"Authorization": "Bearer " + "a" * 12000}).status_code),
        ("Basic without a colon", 401, lambda c, port: upload(c, jpeg, headers={
            "Authorization": "Basic " + base64.b64encode(b"nurse1").decode()}).status_code),
        ("huge request header", 431, wire(auth_head("GET", "/livez", "X-Junk: " + "j" * 100_000 + "\r\n"))),
        ("huge request header, over 256 KiB", 400, wire(auth_head("GET", "/livez", "X-Junk: " + "j" * 600_000 + "\r\n"))),
        ("garbage request line", 400, wire(b"\x16\x03\x01 hello there\r\n\r\n")),
        ("invalid chunk size", 400, wire(auth_head("POST", "/photos", "Content-Type: multipart/form-data; "
                                                   "boundary=B\r\nTransfer-Encoding: chunked\r\n") + b"zz\r\n")),
        ("non-numeric Content-Length", 400, wire(auth_head("POST", "/photos", "Content-Length: 12abc\r\n"))),
        ("path traversal in the item id", 404, get("/photos/..%2F..%2Fetc%2Fpasswd")),
        ("item id not hex", 404, get("/photos/" + "z" * 32)),
        ("unknown item id", 404, get("/photos/" + "f" * 32)),
        ("unknown route", 404, get("/admin")),
        ("PUT on /photos", 405, lambda c, port: c.put("/photos", content=b"x").status_code),
        ("STOW as form-data", 415, raw("/studies", "multipart/form-data; boundary=B", b"--B--\r\n")),
        ("STOW declared too large", 413, wire(auth_head("POST", "/studies", 'Content-Type: multipart/related; '
                                                        'type="application/dicom"; boundary=B\r\n'
                                                        f"Content-Length: {CAP_MB * MiB + 1}\r\n"))),
        ("STOW random bytes", 400, raw("/studies", 'multipart/related; type="application/dicom"; boundary=B',
                                       os.urandom(2048))),
        ("STOW no parts", 400, raw("/studies", 'multipart/related; type="application/dicom"; boundary=B',
                                   b"--B--\r\n")),
        ("STOW a part that is not DICOM", 409, lambda c, port: post_raw(c, "/studies", *stow_body([b"hello"])).status_code),
        ("STOW a JPEG part", 409, lambda c, port: post_raw(c, "/studies", *stow_body([jpeg], "image/jpeg")).status_code),
    ]


def test_hostile_requests_get_a_specific_4xx_and_the_server_stays_up(
        gate: Gate, jpeg: bytes, png: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cases = _hostile_cases(jpeg, png)
    assert len(cases) >= 40
    before_items = len(gate.items())
    wrong = []
    with gate.client() as c:
        for name, expected, send in cases:
            got = send(c, gate.port)
            if got != expected:
                wrong.append(f"{name}: expected {expected}, got {got}")
            assert c.get("/livez").status_code == 200, f"server down after {name!r}"
    assert wrong == []
    assert len(gate.items()) == before_items  # nothing staged ...
    gate.assert_nothing_half_staged()  # ... and nothing half-staged
    assert "Traceback" not in caplog.text and "internal error" not in caplog.text


def test_error_bodies_are_json_and_never_a_traceback(gate: Gate, jpeg: bytes) -> None:
    with gate.client() as c:
        for r in (upload(c, jpeg, meta="[1"), c.get("/nowhere"), post_raw(c, "/photos", b"x", "text/plain")):
            assert r.headers["content-type"].startswith("application/json")
            assert set(r.json()) >= {"error"} and "Traceback" not in r.text


def test_no_phi_in_logs(gate: Gate, jpeg: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with gate.client() as c:
        assert upload(c, jpeg, names=[PHI[3] + ".jpg"]).status_code == 202
        assert upload(c, jpeg, meta={**META, "consent": {"status": "refused"}}, names=[PHI[3] + ".jpg"]).status_code == 403
        assert upload(c, b"text " + PHI[0].encode(), names=[PHI[3] + ".jpg"]).status_code == 415
    with gate.client(auth=False) as c:
        assert upload(c, jpeg, headers=basic(PHI[1], PASSWORD)).status_code == 401
    text = caplog.text
    assert "POST /photos" in text  # the door does log ...
    for marker in PHI:
        assert marker not in text  # ... but no PHI


# -- TLS ------------------------------------------------------------------------------------------

def _certificates(directory: Path) -> dict[str, Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def make(name: str, issuer: tuple[x509.Name, Any] | None, *, ca: bool = False,
             server: bool = False) -> tuple[x509.Name, Any, Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer_name, issuer_key = issuer or (subject, key)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        elif not ca:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        cert = builder.sign(issuer_key, hashes.SHA256())
        cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
        return subject, key, cert_path, key_path

    directory.mkdir(parents=True, exist_ok=True)
    ca_name, ca_key, ca_crt, _ = make("ca", None, ca=True)
    _, _, server_crt, server_key = make("server", (ca_name, ca_key), server=True)
    _, _, client_crt, client_key = make("client", (ca_name, ca_key))
    return {"ca": ca_crt, "server_crt": server_crt, "server_key": server_key,
            "client_crt": client_crt, "client_key": client_key}


def test_tls_and_client_certificates(gates: Callable[..., Gate], tmp_path: Path, jpeg: bytes) -> None:
    pem = _certificates(tmp_path / "pki")
    trust = ssl.create_default_context(cafile=str(pem["ca"]))
    g = gates("tls", scheme="https", tls={"cert_file": str(pem["server_crt"]), "key_file": str(pem["server_key"])})
    with g.client(verify=trust) as c:
        assert c.get("/livez").status_code == 200
        assert upload(c, jpeg).status_code == 202
    with pytest.raises(httpx.TransportError):  # plain HTTP to the TLS port gets nothing useful
        httpx.get(f"http://127.0.0.1:{g.port}/livez", timeout=5).raise_for_status()

    m = gates("mtls", scheme="https", tls={"cert_file": str(pem["server_crt"]), "key_file": str(pem["server_key"]),
                                           "ca_file": str(pem["ca"])})
    with pytest.raises(httpx.TransportError), m.client(verify=trust) as c:  # no client certificate
        c.get("/livez")
    with_cert = ssl.create_default_context(cafile=str(pem["ca"]))
    with_cert.load_cert_chain(str(pem["client_crt"]), str(pem["client_key"]))
    with m.client(verify=with_cert) as c:
        assert c.get("/livez").status_code == 200
        assert upload(c, jpeg).status_code == 202


def test_door_start_fails_clearly_when_the_port_is_taken(gate: Gate, tmp_path: Path) -> None:
    from gateway.errors import ConfigError

    cfg = Settings.model_validate({"destinations": {"pacs": {"address": "PACS@127.0.0.1:11112"}},
                                   "routes": [{"match": {}, "to": ["pacs"]}]})
    journal = Journal(tmp_path / "j.sqlite")
    intake = Intake(cfg, journal, Staging(tmp_path / "s", [os.urandom(32)]), SYSTEM)
    door = HttpDoor(http_source(gate.port), intake, journal)
    with pytest.raises(ConfigError, match="cannot listen"):
        door.start()
    journal.close()

"""Staging: encrypted, authenticated, durable files that leak no plaintext and no names."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import ConfigError, TransientError
from gateway.item import new_id
from gateway.staging import (
    BLOCK_SIZE,
    CHUNK_SIZE,
    HEADER_SIZE,
    MAGIC,
    RESERVE_BYTES,
    TAG_SIZE,
    Staging,
    StagingError,
    StagingFull,
)

REPO = Path(__file__).resolve().parents[2]
MiB = 1 << 20


@pytest.fixture
def key_a() -> bytes:
    return os.urandom(32)


@pytest.fixture
def key_b() -> bytes:
    return os.urandom(32)


@pytest.fixture
def staging(tmp_path: Path, key_a: bytes) -> Staging:
    return Staging(tmp_path / "staging", [key_a])


def data(size: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible-looking test bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest() * 64
        counter += 1
    return bytes(out[:size])


def file_of(staging: Staging, item_id: str, name: str) -> Path:
    return staging.directory / f"{item_id}.{name}"


@pytest.mark.parametrize("size", [0, 1, 100, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1,
                                  3 * CHUNK_SIZE + 12345])
def test_roundtrip_of_any_size(staging: Staging, size: int) -> None:
    item_id, payload = new_id(), data(size)
    assert staging.put(item_id, "input", payload) == size
    assert staging.read(item_id, "input") == payload
    chunks = -(-size // CHUNK_SIZE) or 1  # an empty object is one empty last chunk
    on_disk = file_of(staging, item_id, "input").stat().st_size
    assert on_disk == HEADER_SIZE + size + chunks * TAG_SIZE


def test_roundtrip_from_irregular_chunks_and_a_reused_buffer(staging: Staging) -> None:
    payload = data(3 * CHUNK_SIZE + 999)

    def reader() -> Iterator[bytes]:
        buffer = bytearray(65536 + 7)  # one buffer refilled for every chunk, like readinto()
        for start in range(0, len(payload), len(buffer)):
            piece = payload[start:start + len(buffer)]
            buffer[:len(piece)] = piece
            yield memoryview(buffer)[:len(piece)]  # type: ignore[misc]

    item_id = new_id()
    assert staging.put(item_id, "input", reader()) == len(payload)
    assert staging.read(item_id, "input") == payload
    assert staging.put(item_id, "meta", iter([b"", b"{}", b"", b""])) == 2
    assert staging.read(item_id, "meta") == b"{}"


def test_open_streams_chunks_of_at_most_one_mib(staging: Staging) -> None:
    item_id, payload = new_id(), data(3 * CHUNK_SIZE + CHUNK_SIZE // 2)
    staging.put(item_id, "output", payload)
    stream = staging.open(item_id, "output")
    first = next(stream)
    assert first == payload[:CHUNK_SIZE]
    rest = list(stream)
    assert [len(c) for c in [first, *rest]] == [CHUNK_SIZE] * 3 + [CHUNK_SIZE // 2]
    assert b"".join([first, *rest]) == payload


def test_header_names_the_key_by_hash_and_files_are_private(staging: Staging, key_a: bytes) -> None:
    item_id = new_id()
    staging.put(item_id, "input", b"x")
    raw = file_of(staging, item_id, "input").read_bytes()
    assert raw[:8] == MAGIC and raw[8:16] == hashlib.sha256(key_a).digest()[:8]
    assert stat.S_IMODE(staging.directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(file_of(staging, item_id, "input").stat().st_mode) == 0o600
    # A second write of the same plaintext uses a fresh nonce prefix: different ciphertext.
    staging.put(item_id, "meta", b"x")
    assert file_of(staging, item_id, "meta").read_bytes()[16:] != raw[16:]


def test_existing_wide_open_directory_is_made_private(tmp_path: Path, key_a: bytes) -> None:
    directory = tmp_path / "wide"
    directory.mkdir(mode=0o777)
    os.chmod(directory, 0o777)
    Staging(directory, [key_a])
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_flipped_byte_anywhere_is_detected(staging: Staging) -> None:
    small = new_id()
    staging.put(small, "meta", b'{"patient": {"id": "123456"}}')
    path = file_of(staging, small, "meta")
    original = path.read_bytes()
    for pos in range(len(original)):  # every byte of a small file
        for bit in (0x01, 0x80):
            path.write_bytes(original[:pos] + bytes([original[pos] ^ bit]) + original[pos + 1:])
            with pytest.raises(StagingError):
                staging.read(small, "meta")
    path.write_bytes(original)
    assert staging.read(small, "meta") == b'{"patient": {"id": "123456"}}'


def test_a_flipped_byte_in_any_chunk_of_a_large_file_is_detected(staging: Staging) -> None:
    item_id = new_id()
    staging.put(item_id, "input", data(2 * CHUNK_SIZE + 10))
    path = file_of(staging, item_id, "input")
    original = path.read_bytes()
    positions = [0, 9, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + CHUNK_SIZE // 2,
                 HEADER_SIZE + BLOCK_SIZE - 1, HEADER_SIZE + BLOCK_SIZE,
                 HEADER_SIZE + 2 * BLOCK_SIZE - 1, HEADER_SIZE + 2 * BLOCK_SIZE + 3,
                 len(original) - 1]
    for pos in positions:
        path.write_bytes(original[:pos] + bytes([original[pos] ^ 0x04]) + original[pos + 1:])
        with pytest.raises(StagingError):
            staging.read(item_id, "input")


def test_truncation_and_appended_bytes_are_detected(staging: Staging) -> None:
    item_id = new_id()
    staging.put(item_id, "input", data(2 * CHUNK_SIZE + 10))
    path = file_of(staging, item_id, "input")
    original = path.read_bytes()
    cuts = [0, 5, HEADER_SIZE, HEADER_SIZE + 10, HEADER_SIZE + BLOCK_SIZE,  # whole chunks kept
            HEADER_SIZE + 2 * BLOCK_SIZE,  # only the last (short) chunk missing
            HEADER_SIZE + 2 * BLOCK_SIZE + TAG_SIZE, len(original) - 1]
    for cut in cuts:
        path.write_bytes(original[:cut])
        with pytest.raises(StagingError):
            staging.read(item_id, "input")
    path.write_bytes(original + b"\0")
    with pytest.raises(StagingError):
        staging.read(item_id, "input")


def test_a_chunk_boundary_cut_of_an_exact_multiple_is_detected(staging: Staging) -> None:
    """Two full chunks: cutting the second leaves a valid-looking full chunk, flagged not-last."""
    item_id = new_id()
    staging.put(item_id, "input", data(2 * CHUNK_SIZE))
    path = file_of(staging, item_id, "input")
    with open(path, "r+b") as f:
        f.truncate(HEADER_SIZE + BLOCK_SIZE)
    stream = staging.open(item_id, "input")
    with pytest.raises(StagingError, match="chunk 0"):
        list(stream)


def test_reordered_chunks_are_detected(staging: Staging) -> None:
    item_id = new_id()
    staging.put(item_id, "input", data(3 * CHUNK_SIZE))
    path = file_of(staging, item_id, "input")
    raw = path.read_bytes()
    header, blocks = raw[:HEADER_SIZE], raw[HEADER_SIZE:]
    one, two, three = (blocks[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE] for i in range(3))
    path.write_bytes(header + two + one + three)
    with pytest.raises(StagingError):
        staging.read(item_id, "input")


def test_a_file_swapped_to_another_item_or_name_is_detected(staging: Staging) -> None:
    first, second = new_id(), new_id()
    staging.put(first, "input", b"photo of the first patient")
    staging.put(second, "input", b"photo of the second patient")
    os.replace(file_of(staging, first, "input"), file_of(staging, second, "input"))
    with pytest.raises(StagingError):
        staging.read(second, "input")
    staging.put(first, "meta", b"{}")
    os.replace(file_of(staging, first, "meta"), file_of(staging, first, "output"))
    with pytest.raises(StagingError):
        staging.read(first, "output")


def test_key_rotation_reads_old_files_and_writes_with_the_new_key(
        tmp_path: Path, key_a: bytes, key_b: bytes) -> None:
    directory = tmp_path / "staging"
    old = new_id()
    Staging(directory, [key_a]).put(old, "input", b"staged under A")
    rotated = Staging(directory, [key_b, key_a])
    assert rotated.read(old, "input") == b"staged under A"
    new = new_id()
    rotated.put(new, "input", b"staged under B")
    assert file_of(rotated, new, "input").read_bytes()[8:16] == hashlib.sha256(key_b).digest()[:8]
    assert Staging(directory, [key_b]).read(new, "input") == b"staged under B"
    with pytest.raises(StagingError, match="staged with a key that is no longer in the key file"):
        Staging(directory, [key_a]).read(new, "input")
    with pytest.raises(StagingError, match="staged with a key that is no longer in the key file"):
        Staging(directory, [key_b]).open(old, "input")  # raised at open(), before iterating


def test_a_header_edited_to_name_another_key_fails(
        staging: Staging, key_a: bytes) -> None:
    item_id = new_id()
    staging.put(item_id, "input", b"abc")
    path = file_of(staging, item_id, "input")
    raw = bytearray(path.read_bytes())
    other = os.urandom(32)
    raw[8:16] = hashlib.sha256(other).digest()[:8]  # header claims another key
    path.write_bytes(bytes(raw))
    with pytest.raises(StagingError):  # the header is authenticated: swapping the id fails too
        Staging(staging.directory, [other]).read(item_id, "input")


def test_no_plaintext_marker_or_key_reaches_the_staging_disk(
        staging: Staging, key_a: bytes) -> None:
    """Every marker is in the plaintext hundreds of times; none may come through.

    Ciphertext is random bytes, and a given 3-byte string turns up in random bytes once per 16 MiB
    on average (4 bytes: once per 4 GiB): for markers shorter than 8 bytes, up to 3 chance hits in
    the ~0.5 MB staged here are allowed (a real leak shows hundreds); longer ones must be absent.
    """
    markers = [b"\xff\xd8\xff", b"DICM", b"Exif", b"JFIF", b"123456", b"DOE^JANE", b"HOSP-MRN",
               b"left forearm", b"1970-01-31", b"A2026-000123"]
    tags = b"".join(markers)
    app1 = b"\xff\xe1\x00\x20Exif\x00" + tags
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + app1 * 3000 + b"\xff\xd9"
    dicom = b"\0" * 128 + b"DICM" + (b"\x10\x00\x10\x00PN" + tags) * 3000
    meta = (b'{"patient": {"id": "123456", "issuer": "HOSP-MRN", "name": "DOE^JANE", '
            b'"birth_date": "1970-01-31"}, "accession_number": "A2026-000123", '
            b'"body_site": "left forearm", "note": "\xff\xd8\xff DICM Exif JFIF"}')
    item_id = new_id()
    staging.put(item_id, "input", jpeg)
    staging.put(item_id, "meta", meta)
    staging.put(item_id, "output", iter([dicom[i:i + 4096] for i in range(0, len(dicom), 4096)]))
    assert staging.read(item_id, "input") == jpeg
    assert all(len(blob) > 200_000 for blob in (jpeg, dicom))  # several hundred copies each
    files = list(staging.directory.iterdir())
    assert len(files) == 3
    content = b"".join(path.read_bytes() for path in files)
    for marker in [*markers, key_a, key_a.hex().encode()]:
        allowed = 3 if len(marker) < 8 else 0
        assert content.count(marker) <= allowed, f"{marker!r} found {content.count(marker)} times"
    for path in files:
        assert re.fullmatch(r"[0-9a-f]{32}\.(input|meta|output)", path.name)


def test_leftover_temporary_files_are_removed_on_start(staging: Staging, key_a: bytes) -> None:
    item_id = new_id()
    staging.put(item_id, "input", b"kept")
    (staging.directory / ".tmp-0123abcd").write_bytes(b"half a write")
    (staging.directory / ".tmp-probe-ff").write_bytes(b"")
    restarted = Staging(staging.directory, [key_a])
    assert sorted(p.name for p in staging.directory.iterdir()) == [f"{item_id}.input"]
    assert restarted.read(item_id, "input") == b"kept"


def test_a_failed_write_leaves_nothing_and_keeps_the_previous_version(staging: Staging) -> None:
    item_id = new_id()
    staging.put(item_id, "input", b"first version")

    class SenderGone(Exception):
        pass

    def broken() -> Iterator[bytes]:
        yield data(2 * CHUNK_SIZE)
        raise SenderGone

    with pytest.raises(SenderGone):
        staging.put(item_id, "input", broken())
    assert [p.name for p in staging.directory.iterdir()] == [f"{item_id}.input"]
    assert staging.read(item_id, "input") == b"first version"


def test_remove_is_idempotent_and_leaves_no_file(staging: Staging) -> None:
    gone, kept = new_id(), new_id()
    for name in ("input", "meta", "output"):
        staging.put(gone, name, b"phi")
    staging.put(kept, "input", b"other")
    assert staging.item_ids() == sorted([gone, kept])
    assert staging.exists(gone, "meta")
    staging.remove(gone)
    staging.remove(gone)
    assert not staging.exists(gone, "meta")
    assert [p.name for p in staging.directory.iterdir()] == [f"{kept}.input"]
    assert staging.item_ids() == [kept]
    with pytest.raises(StagingError, match="has no staged input"):
        staging.open(gone, "input")


@pytest.mark.parametrize("item_id,name", [
    ("../../etc/passwd", "input"), ("ABCDEF" * 6, "input"), ("0" * 31, "input"),
    ("0" * 32, "Input"), ("0" * 32, "in.put"), ("0" * 32, "../x"), ("0" * 32, ""),
    ("0" * 32, "x" * 33), ("0" * 32, "DOE^JANE"),
])
def test_ids_and_names_outside_the_vocabulary_are_refused(
        staging: Staging, item_id: str, name: str) -> None:
    with pytest.raises(ValueError):
        staging.put(item_id, name, b"x")
    with pytest.raises(ValueError):
        staging.exists(item_id, name)
    assert list(staging.directory.iterdir()) == []


def test_check_writable_keeps_a_reserve_and_notices_a_lost_directory(staging: Staging) -> None:
    staging.check_writable()
    free = shutil.disk_usage(staging.directory).free
    with pytest.raises(StagingFull, match="bytes free") as full:
        staging.check_writable(free + 1)
    assert isinstance(full.value, TransientError)
    assert list(staging.directory.iterdir()) == []  # the write probe leaves nothing
    shutil.rmtree(staging.directory)
    with pytest.raises(StagingFull):
        staging.check_writable()


def test_check_writable_keeps_64_mib_in_reserve(
        staging: Staging, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = shutil.disk_usage(staging.directory)._replace(free=100 * MiB)
    monkeypatch.setattr("gateway.staging.shutil.disk_usage", lambda path: usage)
    staging.check_writable(100 * MiB - RESERVE_BYTES)
    with pytest.raises(StagingFull, match="reserve of 64 MiB"):
        staging.check_writable(100 * MiB - RESERVE_BYTES + 1)  # fits the disk, not the reserve


@pytest.mark.parametrize("keys", [[], [b"short"], [os.urandom(32), os.urandom(16)]])
def test_keys_must_be_32_bytes(tmp_path: Path, keys: list[bytes]) -> None:
    with pytest.raises(ConfigError):
        Staging(tmp_path / "s", keys)


def test_large_objects_are_never_whole_in_memory(staging: Staging) -> None:
    size = 24 * MiB
    block = data(64 * 1024)

    def source() -> Iterator[bytes]:
        for _ in range(size // len(block)):
            yield block

    item_id = new_id()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        assert staging.put(item_id, "input", source()) == size
        put_peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        total = sum(len(chunk) for chunk in staging.open(item_id, "input"))
        read_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert total == size
    assert put_peak < 6 * MiB, put_peak
    assert read_peak < 6 * MiB, read_peak


def test_staging_is_the_only_module_that_imports_cryptography() -> None:
    users = [p.relative_to(REPO).as_posix()
             for folder in ("gateway", "dicom_mapping") for p in (REPO / folder).rglob("*.py")
             if re.search(r"^\s*(from|import)\s+cryptography", p.read_text(), re.MULTILINE)]
    assert users == ["gateway/staging.py"]

"""Encrypted, fsynced staging files: where PHI waits between the door and the PACS's confirmation.

The only module that imports `cryptography`.

Layout: one flat directory (mode 0700) of files named `<item id>.<name>`: the item id is 32 random
hex characters and `name` a word from the caller's fixed vocabulary ("input", "meta", "output"),
so no file name carries PHI. Files are mode 0600.

File format (version 1), chunked AES-256-GCM after the STREAM construction (Hoang, Reyhanitabar,
Rogaway, Vizár 2015), so an object of any size is encrypted and decrypted in 1 MiB pieces and is
never whole in memory:

    header  = b"PGWSTG1\\0" (8) || key id (8) || nonce prefix (7, random per file)
    chunk i = AES-256-GCM(key, nonce = prefix || uint32_be(i) || last flag (1 byte: 0 or 1),
                          plaintext ≤ 1 MiB, associated data = header || 0 || item id || 0 || name)
              = ciphertext || 16-byte tag

Every chunk is exactly 1 MiB of plaintext except the last, which has the flag 1 (an empty object is
one empty last chunk). So every change is detected when reading: a flipped byte fails its chunk's
tag; a chunk dropped, repeated or moved fails (the counter is in the nonce); a file cut at a chunk
boundary fails (its new last chunk was encrypted with flag 0); a file renamed to another item or
name fails (both are in the associated data); a header edit fails (the header is too). The key id
is the first 8 bytes of SHA-256 of the key: it names the key without revealing it. Nonces never
repeat under one key: 56 random bits per file plus the counter. (Per key, the birthday bound on the
prefix is reached after ~2^28 files; rotate long before.)

Writes: a temporary file `.tmp-<random>` in the same directory, written, flushed, fsynced, renamed
over the final name, then the directory is fsynced: after `put` returns, the file survives a power
cut; before, there is only a temporary file, which the next `Staging()` deletes (it was never
acknowledged to anybody, so the sender still has the data).

Why unlinking is enough at purge: the key never sits on the staging disk (it is read from the key
file, kept elsewhere, mode 0600, and lives only in this process's memory), and without the key the
ciphertext is indistinguishable from noise. `remove()` unlinks the item's files and fsyncs the
directory so the names are gone for good. What remains: the freed blocks still hold the ciphertext
until they are reused, and SSD wear-levelling or filesystem snapshots may keep older copies - but
only ciphertext, never plaintext, because plaintext is never written to this disk (not even in a
temporary file). Destroying the key (a new key on top, the old line removed once nothing is staged
under it) makes all such remnants unreadable; overwriting files in place would not reliably reach
those copies anyway.

Keys: `keys[0]` encrypts, every key decrypts; rotation is a new key on top of the key file. A file
whose key id matches no key raises StagingError("... staged with a key that is no longer in the key
file").
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import stat
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import ConfigError, GatewayError, TransientError

__all__ = ["CHUNK_SIZE", "RESERVE_BYTES", "Staging", "StagingError", "StagingFull", "key_id"]

log = logging.getLogger(__name__)

MAGIC = b"PGWSTG1\0"
KEY_ID_SIZE = 8
PREFIX_SIZE = 7
HEADER_SIZE = len(MAGIC) + KEY_ID_SIZE + PREFIX_SIZE  # 23
TAG_SIZE = 16
CHUNK_SIZE = 1 << 20  # plaintext bytes per chunk
BLOCK_SIZE = CHUNK_SIZE + TAG_SIZE  # ciphertext bytes per full chunk
MAX_CHUNKS = 1 << 32  # the counter is 4 bytes
RESERVE_BYTES = 64 << 20  # check_writable keeps this much free for the journal and the system
TMP_PREFIX = ".tmp-"

_ITEM_ID = re.compile(r"[0-9a-f]{32}")
_NAME = re.compile(r"[a-z0-9-]{1,32}")
_FILE = re.compile(r"([0-9a-f]{32})\.([a-z0-9-]{1,32})")
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


class StagingError(GatewayError):
    """A staged file is missing, unreadable, altered, truncated or under an unknown key."""


class StagingFull(TransientError):
    """Staging cannot take more now (disk full, below the reserve, or not writable): retry later."""


def key_id(key: bytes) -> bytes:
    """The 8-byte id of a key stored in each file's header: first 8 bytes of SHA-256 of the key."""
    return hashlib.sha256(key).digest()[:KEY_ID_SIZE]


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", counter, 1 if last else 0)


def _aad(header: bytes, item_id: str, name: str) -> bytes:
    # item id and name cannot contain a NUL (validated), so the encoding is unambiguous.
    return header + b"\0" + item_id.encode("ascii") + b"\0" + name.encode("ascii")


_Chunks = bytes | bytearray | memoryview | Iterable[bytes]


def _pieces(chunks: _Chunks) -> Iterator[bytes | memoryview]:
    """Re-cut the caller's chunks into CHUNK_SIZE pieces, then one final remainder (maybe empty).

    Slices of the caller's data are passed on without copying where the data cannot change
    under us; anything but `bytes` coming from an iterable is copied first, since a reader may
    refill the same buffer for its next chunk.
    """
    parts: Iterable[bytes | bytearray | memoryview]
    whole = isinstance(chunks, (bytes, bytearray, memoryview))
    parts = (chunks,) if whole else chunks  # type: ignore[assignment]
    pending = bytearray()
    for part in parts:
        if not whole and not isinstance(part, bytes):
            part = bytes(part)
        view = memoryview(part).cast("B")
        pos = 0
        if pending:
            take = min(CHUNK_SIZE - len(pending), len(view))
            pending += view[:take]
            pos = take
            if len(pending) < CHUNK_SIZE:
                continue
            yield bytes(pending)
            pending = bytearray()
        while len(view) - pos >= CHUNK_SIZE:
            yield view[pos:pos + CHUNK_SIZE]
            pos += CHUNK_SIZE
        pending += view[pos:]
    yield bytes(pending)


def _framed(chunks: _Chunks) -> Iterator[tuple[bytes | memoryview, bool]]:
    """(piece, is_last) for every chunk to encrypt; one piece of lookahead finds the last."""
    pieces = _pieces(chunks)
    previous = next(pieces)  # there is always at least the final remainder
    for piece in pieces:
        if not piece:  # only the final remainder can be empty: `previous` was the last
            break
        yield previous, False
        previous = piece
    yield previous, True


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_error(exc: OSError, what: str) -> GatewayError:
    if exc.errno in _NO_SPACE:
        return StagingFull(f"{what}: {exc.strerror}")
    return StagingError(f"{what}: {exc.strerror or exc}")


class Staging:
    """Encrypted staged files of items, in one directory. Safe to use from several threads."""

    def __init__(self, directory: Path, keys: list[bytes]) -> None:
        if not keys:
            raise ConfigError("staging needs at least one key")
        self._decrypt_keys: dict[bytes, AESGCM] = {}
        for number, key in enumerate(keys, 1):
            if not isinstance(key, (bytes, bytearray)) or len(key) != 32:
                raise ConfigError(f"staging key {number} is not 32 bytes (AES-256)")
            self._decrypt_keys.setdefault(key_id(bytes(key)), AESGCM(bytes(key)))
        self._encrypt_id = key_id(bytes(keys[0]))
        self._encrypt = self._decrypt_keys[self._encrypt_id]
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            if stat.S_IMODE(self.directory.stat().st_mode) != 0o700:
                os.chmod(self.directory, 0o700)
            self._remove_leftovers()
        except OSError as exc:
            raise StagingError(f"staging directory {self.directory}: {exc.strerror}") from exc

    def _remove_leftovers(self) -> None:
        """Delete temporary files of writes a crash interrupted: they were never acknowledged."""
        removed = 0
        for entry in os.scandir(self.directory):
            if entry.name.startswith(TMP_PREFIX):
                try:
                    os.unlink(entry.path)
                    removed += 1
                except FileNotFoundError:
                    pass
        if removed:
            fsync_dir(self.directory)
            log.info("staging: removed %d unfinished temporary file(s)", removed)

    def _path(self, item_id: str, name: str) -> Path:
        if not isinstance(item_id, str) or not _ITEM_ID.fullmatch(item_id):
            raise ValueError(f"staging item id {item_id!r} is not 32 lowercase hex characters")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"staging name {name!r} does not match [a-z0-9-]{{1,32}}")
        return self.directory / f"{item_id}.{name}"

    # -- writing -------------------------------------------------------------------------------

    def put(self, item_id: str, name: str, chunks: bytes | Iterable[bytes]) -> int:
        """Encrypt and store `chunks` durably as the item's `name`; returns plaintext bytes written.

        Replaces an earlier file of the same item and name atomically. When this returns, the file
        and its directory entry are on disk. If it raises, nothing is left behind (the exception of
        the caller's iterable, StagingFull when the disk is full, else StagingError).
        """
        final = self._path(item_id, name)
        prefix = secrets.token_bytes(PREFIX_SIZE)
        header = MAGIC + self._encrypt_id + prefix
        aad = _aad(header, item_id, name)
        tmp = self.directory / f"{TMP_PREFIX}{secrets.token_hex(8)}"
        what = f"staging {name} of item {item_id}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _os_error(exc, what) from exc
        total = 0
        try:
            try:
                self._write_all(fd, header, what)
                # The caller's iterable runs inside this loop: its own exceptions (OSError
                # included) pass through unchanged; only our writes are mapped to staging errors.
                for counter, (piece, last) in enumerate(_framed(chunks)):
                    if counter >= MAX_CHUNKS:
                        raise StagingError(f"{what}: object too large for one staged file")
                    sealed = self._encrypt.encrypt(_nonce(prefix, counter, last), piece, aad)
                    self._write_all(fd, sealed, what)
                    total += len(piece)
                try:
                    os.fsync(fd)
                except OSError as exc:
                    raise _os_error(exc, what) from exc
            finally:
                os.close(fd)
            try:
                os.rename(tmp, final)
                fsync_dir(self.directory)
            except OSError as exc:
                raise _os_error(exc, what) from exc
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return total

    @staticmethod
    def _write_all(fd: int, data: bytes, what: str) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            raise _os_error(exc, what) from exc

    # -- reading -------------------------------------------------------------------------------

    def _header(self, item_id: str, name: str, head: bytes) -> AESGCM:
        """The key for a file's header, or StagingError."""
        if len(head) < HEADER_SIZE or not head.startswith(MAGIC):
            raise StagingError(f"staged {name} of item {item_id}: not a staging file "
                               "(bad header or truncated)")
        aead = self._decrypt_keys.get(head[len(MAGIC):len(MAGIC) + KEY_ID_SIZE])
        if aead is None:
            raise StagingError(f"staged {name} of item {item_id}: staged with a key that is no "
                               "longer in the key file")
        return aead

    def open(self, item_id: str, name: str) -> Iterator[bytes]:
        """The decrypted content as a stream of chunks (≤ 1 MiB each).

        The header is checked now (missing file, unknown key: StagingError at once); each chunk is
        authenticated before it is yielded, and a file cut short raises StagingError when the
        stream reaches the cut. So a consumer must treat what it has read as unconfirmed until the
        iterator is exhausted (e.g. not answer success to anyone before that).
        """
        path = self._path(item_id, name)
        try:
            with open(path, "rb") as f:
                head = f.read(HEADER_SIZE)
        except FileNotFoundError:
            raise StagingError(f"item {item_id} has no staged {name}") from None
        except OSError as exc:
            raise _os_error(exc, f"reading staged {name} of item {item_id}") from exc
        self._header(item_id, name, head)
        return self._stream(item_id, name, path, head)

    def _stream(self, item_id: str, name: str, path: Path, expected: bytes) -> Iterator[bytes]:
        what = f"staged {name} of item {item_id}"
        try:
            with open(path, "rb") as f:
                head = f.read(HEADER_SIZE)
                if head != expected:
                    raise StagingError(f"{what}: replaced while being read")
                aead = self._header(item_id, name, head)
                prefix = head[-PREFIX_SIZE:]
                aad = _aad(head, item_id, name)
                counter = 0
                block = f.read(BLOCK_SIZE)
                while True:
                    # A full block may be followed by more; a short one must be the last.
                    following = f.read(BLOCK_SIZE) if len(block) == BLOCK_SIZE else b""
                    last = not following
                    if len(block) < TAG_SIZE:
                        raise StagingError(f"{what}: truncated at chunk {counter}")
                    try:
                        plain = aead.decrypt(_nonce(prefix, counter, last), block, aad)
                    except InvalidTag:
                        raise StagingError(
                            f"{what}: chunk {counter} fails authentication (altered, truncated, "
                            "or the file of another item)") from None
                    yield plain
                    if last:
                        return
                    block = following
                    counter += 1
        except OSError as exc:
            raise _os_error(exc, f"reading {what}") from exc

    def read(self, item_id: str, name: str) -> bytes:
        """The whole decrypted content, for small files (metadata); stream large ones: open()."""
        return b"".join(self.open(item_id, name))

    def exists(self, item_id: str, name: str) -> bool:
        return self._path(item_id, name).exists()

    # -- housekeeping --------------------------------------------------------------------------

    def remove(self, item_id: str) -> None:
        """Unlink every file of the item, then fsync the directory. Idempotent."""
        self._path(item_id, "x")  # validates the id
        prefix = f"{item_id}."
        try:
            for entry in os.scandir(self.directory):
                if entry.name.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
            fsync_dir(self.directory)
        except OSError as exc:
            raise _os_error(exc, f"removing staged files of item {item_id}") from exc

    def item_ids(self) -> list[str]:
        """Ids of every item with at least one staged file, sorted."""
        ids = {m.group(1) for entry in os.scandir(self.directory)
               if (m := _FILE.fullmatch(entry.name))}
        return sorted(ids)

    def check_writable(self, needed_bytes: int = 0) -> None:
        """StagingFull unless the directory is writable and has needed_bytes + 64 MiB free."""
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError as exc:
            raise StagingFull(f"staging directory {self.directory}: {exc.strerror}") from exc
        if free < needed_bytes + RESERVE_BYTES:
            raise StagingFull(
                f"staging directory {self.directory}: {free} bytes free, {needed_bytes} needed "
                f"plus a reserve of {RESERVE_BYTES // (1 << 20)} MiB")
        probe = self.directory / f"{TMP_PREFIX}probe-{secrets.token_hex(8)}"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            os.unlink(probe)
        except OSError as exc:
            raise StagingFull(f"staging directory {self.directory} is not writable: "
                              f"{exc.strerror}") from exc

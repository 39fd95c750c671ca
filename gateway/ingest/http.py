"""The HTTP door: photo upload, STOW-RS, item state, health and metrics (README "Pinned details").

    POST /photos         multipart/form-data: one or more file parts `photos`, one field `metadata`
    GET  /photos/{id}    {"id", "state", "reason", "updated"} of an item this door staged
    POST /studies        STOW-RS (PS3.18 10.5): multipart/related; type="application/dicom"
    GET  /livez          200 while the process runs        (no authentication)
    GET  /readyz         200 when ready() says so, else 503 (no authentication)
    GET  /metrics        Prometheus text from metrics()     (no authentication)

Authentication (every other route): `Authorization: Bearer <token>` whose SHA-256 matches a
configured token, or HTTP Basic with a configured user whose password verifies against its argon2
hash. With neither configured, every upload is refused (401): the door is closed, not open.

Answers of POST /photos, each error body `{"error": "<reason>"}` (never a traceback):
    202  every photo staged durably: {"items": [{"id", "state": "received"}, ...]}
    400  not multipart, broken multipart, no `photos` part, an empty part, a part that is neither
         `photos` nor `metadata`, a file name with a path in it (`../x.jpg`: the name is never
         used, but a sender that puts a path there is not one we understand)
    401  no or wrong credentials (with WWW-Authenticate)
    403  no consent (refused or withdrawn, no record and no default_consent, no route)
    408  the body stalled: nothing received for BODY_IDLE_TIMEOUT_S (connection closed)
    413  the body is larger than max_upload_mb (connection closed)
    415  Content-Type not multipart/form-data, or a photo that is not JPEG, PNG or HEIC
    422  bad metadata, naming the field ("bad metadata: unknown key 'x'"); or a photo of a
         supported type the gateway refuses (no EOI, > 100 megapixels, unsupported SOF),
         named by its index ("photos[1]: ...")
    431  request headers over MAX_HEADER_BYTES (any route)
    503  a transient failure other than disk (e.g. the worklist is down): try again later
    507  the staging area is full: try again later
The same metadata applies to every photo. Photos are staged one by one, not all-or-nothing: 202
only if every one was staged; otherwise the status of the first refused photo, with
{"error": <its reason>, "items": [what was staged], "photos": [per photo, in order: {"index",
"items"} or {"index", "status", "error"}]}, so the sender knows what it must not send again.

POST /studies answers application/dicom+json, a Store Instances Response (PS3.18 10.5.3): 200
every instance staged, 202 some failed, 409 none; Referenced SOP Sequence (0008,1199) for the
stored, Failed SOP Sequence (0008,1198) with Failure Reason (0008,1197) for the others (0x0124 no
consent, 0x0122 not a photo storage class, 0xC000 not understood, 0xA700 staging full, 0x0110
anything else), both naming the UIDs of the instance as sent when they can be read; no Retrieve
URL (the gateway serves no WADO). 400, 401, 408, 413 and 415 as for photos.

Memory: the size cap is enforced while the body streams in (Content-Length first, then a byte
count of what arrives, chunked or not), and the multipart body is parsed by python-multipart's
streaming parser into memory only; Starlette's form parser is not used, because it spools large
parts to a plaintext temporary file, and plaintext PHI never touches a disk here. So one request
holds at most max_upload_mb (plus one copy of the photo being staged); concurrent uploads each
hold their own.

Logging: item ids, sizes, counts and status codes only; never metadata, file names, user names or
exception messages from unknown errors (they could quote a value).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import io
import logging
import re
import secrets
import socket
import ssl
import threading
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

import anyio
import pydicom
import uvicorn
from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import Argon2Error, InvalidHashError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from dicom_mapping import photo
from dicom_mapping.errors import InputError
from gateway.errors import ConfigError, TransientError
from gateway.intake import Intake
from gateway.item import ID_PATTERN, Item
from gateway.journal import Journal
from gateway.settings import HttpSource
from gateway.staging import StagingFull

__all__ = ["HttpDoor", "create_app"]

log = logging.getLogger(__name__)

SOURCE = "http"
REALM = "photo-gateway"
PHOTO_KINDS = frozenset({"jpeg", "png", "heic"})
MAX_PARTS = 1000  # a multipart body of more parts than this is refused (400)
MAX_PART_HEADERS = 16
MAX_PART_HEADER_BYTES = 8192
MAX_BOUNDARY = 70  # RFC 2046 5.1.1
MAX_METADATA_BYTES = 1 << 20
BODY_IDLE_TIMEOUT_S = 60.0  # a body that sends nothing for this long is refused (408)
MAX_HEADER_BYTES = 16 * 1024  # all request headers together; more is 431
MAX_CONCURRENT_PASSWORD_CHECKS = 2  # argon2 takes tens of MiB and ms per check: bound them
DICOM_JSON = "application/dicom+json"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")

# PS3.4 Annex B.2.3 / PS3.18 Table 10.5.3-1 failure reasons used in a Store Instances Response.
REFUSED_NOT_AUTHORIZED = 0x0124
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700
PROCESSING_FAILURE = 0x0110


class Refused(Exception):
    """An HTTP error answer: status, a reason without PHI, optional extra headers and body."""

    def __init__(self, status: int, reason: str, *, headers: list[tuple[str, str]] | None = None,
                 close: bool = False, extra: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = list(headers or [])
        if close:
            self.headers.append(("connection", "close"))
        self.extra = extra or {}


def _answer(status: int, body: dict[str, Any], headers: list[tuple[str, str]] | None = None,
            media_type: str = "application/json") -> JSONResponse:
    response = JSONResponse(body, status_code=status, media_type=media_type)
    for name, value in headers or ():  # raw, so that two WWW-Authenticate challenges stay two lines
        response.raw_headers.append((name.encode("latin-1"), value.encode("latin-1")))
    return response


def _refusal(exc: Refused) -> JSONResponse:
    return _answer(exc.status, {"error": exc.reason, **exc.extra}, exc.headers)


Handler = Callable[..., Awaitable[Response]]


def _guarded(name: str) -> Callable[[Handler], Handler]:
    """Refused → its answer; anything else → 500 {"error": "internal error"}, logged by type and
    frames only (an unknown exception's message could quote a value)."""

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def run(*args: Any, **kwargs: Any) -> Response:
            try:
                return await handler(*args, **kwargs)
            except Refused as exc:
                log.info("%s: %d", name, exc.status)
                return _refusal(exc)
            except ClientDisconnect:
                log.info("%s: client went away", name)
                return _answer(400, {"error": "client disconnected"})
            except Exception as exc:  # noqa: BLE001 - the door answers; it never dies
                log.error("%s: internal error %s at\n%s", name, type(exc).__name__,
                          "".join(traceback.format_tb(exc.__traceback__)))
                return _answer(500, {"error": "internal error"})
        return run
    return decorate


class _HeaderLimit:
    """ASGI middleware: 431 for a request whose headers together exceed MAX_HEADER_BYTES (h11 alone
    bounds only headers that arrive in pieces)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and sum(len(k) + len(v) for k, v in scope["headers"]) > MAX_HEADER_BYTES:
            response = _answer(431, {"error": f"request headers larger than {MAX_HEADER_BYTES} bytes"},
                               [("connection", "close")])
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


# -- authentication ------------------------------------------------------------------------------

class _Authenticator:
    def __init__(self, cfg: HttpSource) -> None:
        self._tokens = [bytes.fromhex(t.sha256) for t in cfg.tokens]
        self._users = [(u.name.encode(), u.password_hash) for u in cfg.users]
        self._hasher = PasswordHasher()
        # Unknown users are checked against this hash (made with the first user's parameters), so
        # that their answer takes as long as a known user's.
        self._dummy = ""
        if self._users:
            try:
                dummy_hasher = PasswordHasher.from_parameters(extract_parameters(self._users[0][1]))
            except (InvalidHashError, ValueError):
                dummy_hasher = self._hasher
            self._dummy = dummy_hasher.hash(secrets.token_hex(16))
        self._limiter = anyio.CapacityLimiter(MAX_CONCURRENT_PASSWORD_CHECKS)
        schemes = (["Bearer"] if self._tokens else []) + (["Basic"] if self._users else [])
        self._challenges = [("www-authenticate", f'{s} realm="{REALM}"')
                            for s in (schemes or ["Bearer"])]

    def _refuse(self, why: str) -> Refused:
        return Refused(401, why, headers=self._challenges)

    async def check(self, request: Request) -> str:
        """The name of the configured token or user; Refused(401) otherwise."""
        header = request.headers.get("authorization")
        if not header:
            raise self._refuse("authentication required (Bearer token or Basic)")
        scheme, _, credentials = header.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and credentials:
            digest = hashlib.sha256(credentials.encode("latin-1", "replace")).digest()
            found = False
            for token in self._tokens:  # all compared, constant time each: no early exit
                found |= hmac.compare_digest(digest, token)
            if found:
                return "token"
            raise self._refuse("unknown token")
        if scheme.lower() == "basic" and credentials:
            try:
                user, sep, password = base64.b64decode(credentials, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise self._refuse("malformed Basic credentials") from None
            verified: bool = sep == ":" and await anyio.to_thread.run_sync(
                self._verify, user.encode(), password, limiter=self._limiter)
            if verified:
                return user
            raise self._refuse("wrong user name or password")
        raise self._refuse("unsupported authentication scheme (use Bearer or Basic)")

    def _verify(self, user: bytes, password: str) -> bool:
        stored = self._dummy
        known = False
        for name, password_hash in self._users:
            if hmac.compare_digest(name, user):
                stored, known = password_hash, True
        if not stored:
            return False
        try:
            return self._hasher.verify(stored, password) and known
        except InvalidHashError:
            log.error("a configured password hash is not an argon2 hash")
            return False
        except Argon2Error:
            return False


# -- bodies ---------------------------------------------------------------------------------------

async def _body(request: Request, cap: int) -> AsyncIterator[bytes]:
    """The request body as it arrives, refused (413, connection closed) as soon as it is known to
    exceed `cap`: by its Content-Length before reading anything, else by counting."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Refused(400, "Content-Length is not a number", close=True)
        if int(declared) > cap:
            raise Refused(413, f"request body larger than the limit of {cap} bytes", close=True)
    received = 0
    chunks = request.stream().__aiter__()
    while True:
        try:
            with anyio.fail_after(BODY_IDLE_TIMEOUT_S):  # a body that stalls holds no slot forever
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise Refused(408, f"no request body bytes for {BODY_IDLE_TIMEOUT_S:g} s", close=True) from None
        received += len(chunk)
        if received > cap:
            raise Refused(413, f"request body larger than the limit of {cap} bytes", close=True)
        if chunk:
            yield chunk


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)

    def option_header(self, name: str) -> tuple[str, dict[str, str]]:
        value, options = parse_options_header(self.headers.get(name, ""))
        return value.decode("latin-1"), {k.decode("latin-1").lower(): v.decode("latin-1")
                                         for k, v in options.items()}


def _boundary(request: Request, expected: str, *, dicom: bool = False) -> bytes:
    """The multipart boundary of the request's Content-Type; 415 if it is not `expected`."""
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    params = {k.decode("latin-1").lower(): v for k, v in options.items()}
    if ctype.decode("latin-1") != expected:
        want = f'{expected}; type="application/dicom"' if dicom else expected
        raise Refused(415, f"Content-Type must be {want}")
    if dicom:
        kind = params.get("type", b"").decode("latin-1").strip().lower()
        if kind != "application/dicom":
            raise Refused(415, 'Content-Type must be multipart/related; type="application/dicom" '
                               "(only Part 10 instances are accepted)")
    boundary = params.get("boundary", b"")
    if not boundary or len(boundary) > MAX_BOUNDARY:
        raise Refused(400, f"multipart Content-Type needs a boundary of 1 to {MAX_BOUNDARY} characters")
    return boundary


async def _multipart(request: Request, boundary: bytes, cap: int) -> list[_Part]:
    """Every part of a multipart body, parsed as it streams in; 400 if it is not well formed."""
    parts: list[_Part] = []
    name, value = bytearray(), bytearray()
    ended = False

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise Refused(400, f"more than {MAX_PARTS} parts in the multipart body")
        parts.append(_Part())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        value.extend(data[start:end])

    def on_header_end() -> None:
        parts[-1].headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
        name.clear()
        value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data.extend(data[start:end])

    def on_end() -> None:
        nonlocal ended
        ended = True

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_part_data": on_part_data, "on_end": on_end,
    }, max_header_count=MAX_PART_HEADERS, max_header_size=MAX_PART_HEADER_BYTES)
    try:
        async for chunk in _body(request, cap):
            if not ended:  # anything after the closing boundary is the epilogue: ignored
                parser.write(chunk)
    except FormParserError:
        raise Refused(400, "broken multipart body") from None
    if not ended:
        raise Refused(400, "broken multipart body: it ends before its closing boundary")
    return parts


def _plain_name(filename: str) -> bool:
    return not (any(c in filename for c in "/\\\0") or filename in (".", "..")
                or any(ord(c) < 0x20 for c in filename))


# -- photos ---------------------------------------------------------------------------------------

@dataclass
class _Upload:
    photos: list[bytes]
    metadata: bytes


def _upload(parts: list[_Part]) -> _Upload:
    photos: list[bytes] = []
    metadata: bytes | None = None
    for part in parts:
        disposition, options = part.option_header("content-disposition")
        if disposition.lower() != "form-data" or not options.get("name"):
            raise Refused(400, "every part needs Content-Disposition: form-data with a name")
        name = options["name"]
        if name == "photos":
            index = len(photos)
            filename = options.get("filename")
            if filename is not None and not _plain_name(filename):
                raise Refused(400, f"photos[{index}]: the file name must be a plain name, without a path")
            if not part.data:
                raise Refused(400, f"photos[{index}] is empty")
            photos.append(bytes(part.data))
        elif name == "metadata":
            if metadata is not None:
                raise Refused(422, "bad metadata: the field 'metadata' is given more than once")
            if len(part.data) > MAX_METADATA_BYTES:
                raise Refused(422, f"bad metadata: larger than {MAX_METADATA_BYTES} bytes")
            metadata = bytes(part.data)
        else:
            raise Refused(400, "unexpected form field: only 'photos' and 'metadata' are accepted")
        part.data = bytearray()  # the copy above is the one kept
    if not photos:
        raise Refused(400, "no 'photos' part in the form")
    if metadata is None:
        raise Refused(422, "bad metadata: the form field 'metadata' is missing")
    return _Upload(photos, metadata)


def _is_metadata_reason(reason: str) -> bool:
    """InputErrors of parse_metadata and the worklist lookup name the metadata; the others come
    from the photo's own checks."""
    return reason.startswith(("bad metadata", "metadata", "no metadata"))


@dataclass
class _Outcome:
    index: int
    items: list[Item] = field(default_factory=list)
    status: int = 0
    error: str = ""

    def body(self) -> dict[str, Any]:
        if self.status:
            return {"index": self.index, "status": self.status, "error": self.error}
        return {"index": self.index, "items": [_item_ref(i) for i in self.items]}


def _item_ref(item: Item) -> dict[str, str]:
    return {"id": item.id, "state": item.state.value}


def _stage_photo(intake: Intake, cfg: HttpSource, index: int, data: bytes, metadata: bytes) -> _Outcome:
    """One photo through intake (in a worker thread): its items, or the status that refuses it."""
    try:
        kind = photo.sniff(data)
    except InputError as exc:
        return _Outcome(index, status=415, error=f"photos[{index}]: unsupported type: {exc.reason}")
    if kind not in PHOTO_KINDS:
        return _Outcome(index, status=415, error=f"photos[{index}]: a DICOM file; send DICOM "
                                                  "instances to POST /studies (STOW-RS)")
    try:
        return _Outcome(index, intake.accept_photo(data, metadata, source=SOURCE,
                                                   default_consent=cfg.default_consent))
    except InputError as exc:
        if exc.status == REFUSED_NOT_AUTHORIZED:
            return _Outcome(index, status=403, error=exc.reason)
        if _is_metadata_reason(exc.reason):
            return _Outcome(index, status=422, error=exc.reason)
        return _Outcome(index, status=422, error=f"photos[{index}]: {exc.reason}")
    except RecursionError:  # json.loads of a deeply nested document
        return _Outcome(index, status=422, error="bad metadata: nested too deeply")
    except StagingFull:
        return _Outcome(index, status=507, error="the staging area is full; try again later")
    except TransientError:
        return _Outcome(index, status=503, error="temporarily unavailable; try again later")


# -- STOW-RS ---------------------------------------------------------------------------------------

def _input_uids(data: bytes) -> tuple[str | None, str | None]:
    """SOP Class and Instance UID of a Part 10 input, if it can be read; None each otherwise."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True,
                             specific_tags=["SOPClassUID", "SOPInstanceUID"])
        meta = getattr(ds, "file_meta", None)
        sop_class = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
        sop_instance = str(ds.get("SOPInstanceUID", "")
                           or (meta.get("MediaStorageSOPInstanceUID", "") if meta else ""))
    except Exception:  # noqa: BLE001 - unreadable: the response just cannot name it
        return None, None

    def uid(value: str) -> str | None:
        value = value.strip("\0 ")
        return value if len(value) <= 64 and _UID.fullmatch(value) else None

    return uid(sop_class), uid(sop_instance)


def _stow_one(intake: Intake, cfg: HttpSource, part: _Part) -> tuple[str | None, str | None, int, list[Item]]:
    """(SOP class, SOP instance, failure reason or 0, items) of one part."""
    data = bytes(part.data)
    part.data = bytearray()
    sop_class, sop_instance = _input_uids(data)
    ctype, _ = part.option_header("content-type")
    if ctype and ctype.lower() != "application/dicom":
        return sop_class, sop_instance, CANNOT_UNDERSTAND, []
    try:
        items = intake.accept_dicom(data, source=SOURCE, default_consent=cfg.default_consent)
    except InputError as exc:
        return sop_class, sop_instance, exc.status or CANNOT_UNDERSTAND, []
    except StagingFull:
        return sop_class, sop_instance, OUT_OF_RESOURCES, []
    except TransientError:
        return sop_class, sop_instance, OUT_OF_RESOURCES, []
    except Exception as exc:  # noqa: BLE001 - one bad instance must not fail the others
        log.error("STOW-RS: instance failed with %s at\n%s", type(exc).__name__,
                  "".join(traceback.format_tb(exc.__traceback__)))
        return sop_class, sop_instance, PROCESSING_FAILURE, []
    return sop_class, sop_instance, 0, items


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]}


def _reference(sop_class: str | None, sop_instance: str | None) -> dict[str, Any]:
    ref: dict[str, Any] = {}
    if sop_class:
        ref["00081150"] = _ui(sop_class)  # Referenced SOP Class UID
    if sop_instance:
        ref["00081155"] = _ui(sop_instance)  # Referenced SOP Instance UID
    return ref


# -- the app --------------------------------------------------------------------------------------

def create_app(cfg: HttpSource, intake: Intake, journal: Journal, *,
               ready: Callable[[], bool] = lambda: True,
               metrics: Callable[[], str] = lambda: "") -> FastAPI:
    """The door's ASGI app. Handlers are thin: authenticate, parse, call intake, map errors."""
    app = FastAPI(title="photo gateway", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_HeaderLimit)
    auth = _Authenticator(cfg)
    cap = cfg.max_upload_mb * 1024 * 1024

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _answer(exc.status_code, {"error": str(exc.detail).lower()}, list((exc.headers or {}).items()))

    @app.post("/photos")
    @_guarded("POST /photos")
    async def post_photos(request: Request) -> Response:
        await auth.check(request)
        boundary = _boundary(request, "multipart/form-data")
        upload = _upload(await _multipart(request, boundary, cap))
        outcomes = []
        size = sum(len(p) for p in upload.photos)
        for index, data in enumerate(upload.photos):
            outcomes.append(await anyio.to_thread.run_sync(
                _stage_photo, intake, cfg, index, data, upload.metadata))
            upload.photos[index] = b""
        items = [_item_ref(i) for o in outcomes for i in o.items]
        refused = [o for o in outcomes if o.status]
        status = refused[0].status if refused else 202
        log.info("POST /photos: %d photo(s), %d byte(s), status %d, staged %s", len(outcomes),
                 size, status, " ".join(i["id"] for i in items) or "-")
        if not refused:
            return _answer(202, {"items": items})
        return _answer(status, {"error": refused[0].error, "items": items,
                                "photos": [o.body() for o in outcomes]})

    @app.get("/photos/{item_id}")
    @_guarded("GET /photos/{id}")
    async def get_photo(request: Request, item_id: str) -> Response:
        await auth.check(request)
        item = await anyio.to_thread.run_sync(journal.get, item_id) if ID_PATTERN.match(item_id) else None
        if item is None or item.source != SOURCE:
            raise Refused(404, "no such item")
        updated = dt.datetime.fromtimestamp(item.updated, dt.UTC).isoformat()
        return _answer(200, {"id": item.id, "state": item.state.value, "reason": item.reason,
                             "updated": updated})

    @app.post("/studies")
    @_guarded("POST /studies")
    async def post_studies(request: Request) -> Response:
        await auth.check(request)
        boundary = _boundary(request, "multipart/related", dicom=True)
        parts = await _multipart(request, boundary, cap)
        if not parts:
            raise Refused(400, "no instances in the request")
        stored, failed = [], []
        staged: list[str] = []
        for part in parts:
            sop_class, sop_instance, reason, items = await anyio.to_thread.run_sync(
                _stow_one, intake, cfg, part)
            ref = _reference(sop_class, sop_instance)
            if reason:
                failed.append({**ref, "00081197": {"vr": "US", "Value": [reason]}})  # Failure Reason
            else:
                stored.append(ref)
                staged.extend(i.id for i in items)
        body: dict[str, Any] = {}
        if failed:
            body["00081198"] = {"vr": "SQ", "Value": failed}  # Failed SOP Sequence
        if stored:
            body["00081199"] = {"vr": "SQ", "Value": stored}  # Referenced SOP Sequence
        # PS3.18 10.5.3: 200 all stored, 202 some failed, 409 none stored.
        status = 200 if not failed else 202 if stored else 409
        log.info("POST /studies: %d instance(s), %d failed, status %d, staged %s", len(parts),
                 len(failed), status, " ".join(staged) or "-")
        return _answer(status, body, media_type=DICOM_JSON)

    @app.get("/livez")
    async def livez() -> Response:
        return _answer(200, {"status": "alive"})

    @app.get("/readyz")
    async def readyz() -> Response:
        try:
            ok = await anyio.to_thread.run_sync(ready)
        except Exception as exc:  # noqa: BLE001 - a failing probe means not ready
            log.warning("readyz: the readiness check failed (%s)", type(exc).__name__)
            ok = False
        return _answer(200 if ok else 503, {"status": "ready" if ok else "not ready"})

    @app.get("/metrics")
    async def get_metrics() -> Response:
        return Response(await anyio.to_thread.run_sync(metrics), media_type=METRICS_TYPE)

    return app


# -- the server -----------------------------------------------------------------------------------

class HttpDoor:
    """The app served by uvicorn in a background thread. start() returns once it accepts
    connections (or raises ConfigError: port taken, unreadable certificate); stop() ends it."""

    START_TIMEOUT_S = 15.0

    def __init__(self, cfg: HttpSource, intake: Intake, journal: Journal, **kw: Any) -> None:
        self.cfg = cfg
        self.port = cfg.port
        self.app = create_app(cfg, intake, journal, **kw)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._failure: BaseException | None = None

    def _config(self) -> uvicorn.Config:
        tls: dict[str, Any] = {}
        if self.cfg.tls is not None:
            tls = {"ssl_certfile": str(self.cfg.tls.cert_file), "ssl_keyfile": str(self.cfg.tls.key_file),
                   "ssl_context_factory": _tls12}
            if self.cfg.tls.ca_file is not None:  # client certificates required and verified
                tls |= {"ssl_ca_certs": str(self.cfg.tls.ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        # log_config=None: the CLI configures logging once; access_log off: paths are not logged.
        return uvicorn.Config(self.app, host=self.cfg.host, port=self.cfg.port, log_level="warning",
                              log_config=None, access_log=False, http="h11", ws="none",
                              lifespan="off", server_header=False, timeout_graceful_shutdown=5, **tls)

    def _bind(self) -> socket.socket:
        where = f"{self.cfg.host}:{self.cfg.port}"
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                self.cfg.host, self.cfg.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise ConfigError(f"sources.http: cannot listen on {where} ({exc.strerror or exc})") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"sources.http: cannot listen on {where} ({exc.strerror or exc})") from None
        return sock

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the HTTP door is already started")
        config = self._config()
        try:
            config.load()  # reads certificate and key now, so that a bad one fails start()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"sources.http.tls: cannot load the certificate or key ({exc})") from None
        self._socket = self._bind()
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="http-door", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"sources.http: the server on {self.cfg.host}:{self.cfg.port} did not "
                                  f"start ({type(self._failure).__name__ if self._failure else 'timeout'})")
            time.sleep(0.01)
        log.info("HTTP door listening on %s:%d%s", self.cfg.host, self.cfg.port,
                 " (TLS)" if self.cfg.tls else "")

    def _run(self) -> None:
        assert self._server is not None and self._socket is not None
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # noqa: BLE001 - reported by start()/stop()
            self._failure = exc
            log.error("HTTP door stopped: %s", type(exc).__name__)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(timeout=5)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None


def _tls12(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    context = default()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context

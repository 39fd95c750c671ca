"""The one place configuration is read and validated. Returns a frozen Settings object.

Secrets are never in the YAML: key files hold them (`staging.key_file`, `deid.secret_file`),
one 32-byte key per line as 64 hexadecimal characters, mode 0600.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dicom_mapping.deid import OPTIONS as DEID_OPTIONS
from dicom_mapping.metadata import Consent
from gateway.errors import ConfigError
from gateway.network import Address, parse_address


def _relative_to_config(value: Path, info: ValidationInfo) -> Path:
    """A relative path in a config file is relative to that file's directory, not to the cwd."""
    base = (info.context or {}).get("base") if info.context else None
    return value if value.is_absolute() or base is None else Path(base) / value


ConfigPath = Annotated[Path, AfterValidator(_relative_to_config)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tls(_Model):
    cert_file: ConfigPath
    key_file: ConfigPath
    ca_file: ConfigPath | None = None


class CallingAe(_Model):
    default_consent: Consent | None = None


class Node(_Model):
    ae_title: str = Field(default="PHOTOGW", min_length=1, max_length=16)
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535)
    max_object_mb: int = Field(default=200, ge=1)
    max_associations: int = Field(default=10, ge=1)
    # The contract's liveness bound: a connection that sends no A-ASSOCIATE-RQ within this is closed,
    # and until it sends one it does not hold one of max_associations.
    pre_association_timeout_s: float = Field(default=5, gt=0)
    tls: Tls | None = None
    allowed_calling_aes: dict[str, CallingAe | None] = Field(default_factory=dict)
    # Storage SOP classes accepted besides SC, Multi-frame True Color SC and VL Photographic.
    extra_sop_classes: tuple[str, ...] = ()


class Staging(_Model):
    directory: ConfigPath
    key_file: ConfigPath


class Deid(_Model):
    secret_file: ConfigPath
    options: tuple[str, ...] = ("retain-longitudinal-modified-dates",)

    @field_validator("options")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [o for o in value if o not in DEID_OPTIONS]
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}; known: {sorted(DEID_OPTIONS)}")
        if {"retain-longitudinal-full-dates", "retain-longitudinal-modified-dates"} <= set(value):
            raise ValueError("choose one of retain-longitudinal-full-dates and -modified-dates")
        return value


class Worklist(_Model):
    address: Address

    @field_validator("address", mode="before")
    @classmethod
    def _addr(cls, value: Any) -> Any:
        return _address(value)


class FolderSource(_Model):
    path: ConfigPath
    require_sidecar: bool = True
    default_consent: Consent | None = None
    rejected_retention_days: int = Field(default=7, ge=0)
    stable_s: float = Field(default=2, gt=0)  # fallback when no close-after-write/rename event comes
    sidecar_wait_s: float = Field(default=3600, gt=0)  # a photo still without a sidecar then is rejected


class Token(_Model):
    name: str
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


class User(_Model):
    name: str
    password_hash: str


class HttpSource(_Model):
    port: int = Field(ge=1, le=65535)
    host: str = "127.0.0.1"
    max_upload_mb: int = Field(default=100, ge=1)
    default_consent: Consent | None = None
    tls: Tls | None = None
    tokens: tuple[Token, ...] = ()
    users: tuple[User, ...] = ()
    header_timeout_s: float = Field(default=10, gt=0)  # the contract's bound for a request's headers
    max_connections: int = Field(default=64, ge=1)  # concurrent connections; more are refused with 503


class Sources(_Model):
    folder: FolderSource | None = None
    http: HttpSource | None = None


class Retry(_Model):
    attempts: int = Field(default=20, ge=1)
    initial_s: float = Field(default=1, gt=0)
    max_s: float = Field(default=300, gt=0)


class Destination(_Model):
    address: Address
    storage_commitment: bool = False
    retry: Retry = Retry()
    iod: Literal["sc", "vl-photo"] | None = None
    lossless: bool = False

    @field_validator("address", mode="before")
    @classmethod
    def _addr(cls, value: Any) -> Any:
        return _address(value)


class Match(_Model):
    source: str | None = None
    calling_ae: str | None = None
    body_site: str | None = None
    modality: str | None = None
    consent_scope: str | None = None


class Route(_Model):
    match: Match = Match()
    to: tuple[str, ...] = Field(min_length=1)
    iod: Literal["sc", "vl-photo"] | None = None


class Logging(_Model):
    audit_file: ConfigPath | None = None


class Metrics(_Model):
    port: int | None = Field(default=None, ge=1, le=65535)


class Settings(_Model):
    node: Node = Node()
    staging: Staging | None = None
    deid: Deid | None = None
    worklist: Worklist | None = None
    sources: Sources = Sources()
    destinations: dict[str, Destination] = Field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    logging: Logging = Logging()
    metrics: Metrics = Metrics()

    @model_validator(mode="after")
    def _routes_name_destinations(self) -> Settings:
        for i, route in enumerate(self.routes):
            for name in route.to:
                if name not in self.destinations:
                    raise ValueError(f"routes[{i}].to names '{name}', which is not in destinations")
        return self


def _address(value: Any) -> Any:
    if isinstance(value, str):
        return parse_address(value)
    return value


def _describe(error: ValidationError) -> str:
    parts = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def load(path: Path) -> Settings:
    """Read and validate a YAML config; ConfigError naming the file and the key."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections")
    try:
        return Settings.model_validate(raw, context={"base": Path(path).resolve().parent})
    except (ValidationError, ConfigError) as exc:
        text = _describe(exc) if isinstance(exc, ValidationError) else str(exc)
        raise ConfigError(f"{path}: {text}") from None


# Key files -------------------------------------------------------------------------------------

def read_keys(path: Path) -> list[bytes]:
    """All keys of a key file, first one first; ConfigError naming the file and the line."""
    try:
        mode = os.stat(path).st_mode
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read key file ({exc.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: key file must not be readable by group or others (chmod 600)")
    keys = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise ConfigError(f"{path}: line {number} is not 64 hexadecimal characters (32 bytes)")
        keys.append(key)
    if not keys:
        raise ConfigError(f"{path}: no key in the file")
    return keys


def write_key_file(path: Path) -> None:
    """A new key file (mode 0600); refuses to overwrite an existing one."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path}: exists; refusing to overwrite a key file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create ({exc.strerror})") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def local_state_dir() -> Path:
    """`$XDG_DATA_HOME/photo-gateway` (mode 0700), with a pseudonym secret made on first use."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    state = base / "photo-gateway"
    if not state.exists():
        state.mkdir(parents=True, mode=0o700)
    secret = state / "pseudonym.key"
    if not secret.exists():
        write_key_file(secret)
        print(
            f"photo-gateway: no config; made a new pseudonym secret in {secret} "
            "(keep it: the same secret gives the same pseudonyms)",
            file=sys.stderr,
        )
    return state

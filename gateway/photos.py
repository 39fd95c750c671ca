"""Reading the photos and sidecars a user names on the command line (or a folder door finds).

The sidecar of `x.jpg` is `x.jpg.json`; `x.json` serves only when one photo has the stem `x`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dicom_mapping.errors import InputError
from dicom_mapping.metadata import PhotoMetadata, parse_metadata

MAX_INPUT_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class PhotoInput:
    path: Path
    data: bytes
    meta: PhotoMetadata


def sidecar_for(photo: Path, photos: Sequence[Path]) -> Path | None:
    exact = photo.with_name(photo.name + ".json")
    if exact.is_file():
        return exact
    stems = Counter(p.with_suffix("").name for p in photos)
    by_stem = photo.with_suffix(".json")
    if stems[photo.with_suffix("").name] == 1 and by_stem.is_file() and by_stem != photo:
        return by_stem
    return None


def read_bytes(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_INPUT_BYTES:
            raise InputError(f"{size} bytes is over the {MAX_INPUT_BYTES // 2**20} MiB limit")
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError("no such file") from None
    except IsADirectoryError:
        raise InputError("is a directory, not a photo") from None
    except PermissionError:
        raise InputError("permission denied") from None
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror})") from None


def load_photo(path: Path, photos: Sequence[Path], meta_file: Path | None) -> PhotoInput:
    """The photo's bytes and validated metadata; InputError with the file named by the caller."""
    data = read_bytes(path)
    side = meta_file or sidecar_for(path, photos)
    if side is None:
        raise InputError(f"no metadata: expected a sidecar {path.name}.json or --meta FILE")
    try:
        raw = read_bytes(side)
    except InputError as exc:
        raise InputError(f"metadata {side}: {exc.reason}") from None
    try:
        meta = parse_metadata(raw)
    except InputError as exc:
        raise InputError(f"metadata {side}: {exc.reason}") from None
    return PhotoInput(path, data, meta)

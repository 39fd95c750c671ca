"""Audit lines: one JSON object per line in `logging.audit_file`, fsynced. Ids, pseudonyms,
states and reasons only: never a name, a patient ID, a date of birth or an input file name."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from typing import Any

from gateway.settings import Settings


def audit(cfg: Settings | None, event: str, **fields: Any) -> None:
    if cfg is None or cfg.logging.audit_file is None:
        return
    line = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "event": event,
            "user": getpass.getuser(), **fields}
    path = cfg.logging.audit_file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(line, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)

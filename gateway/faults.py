"""Crash points for the durability tests: `PHOTO_GATEWAY_CRASH_AT=NAME[:N]` kills the process with
SIGKILL the N-th time (default 1st) execution reaches `crashpoint(NAME)`. Unset in production,
where `crashpoint` is one dictionary lookup."""

from __future__ import annotations

import os
import signal
import threading

NAMES = ("after-staging", "after-conversion", "during-store", "after-store", "after-commit")
_hits: dict[str, int] = {}
_lock = threading.Lock()


def crashpoint(name: str) -> None:
    spec = os.environ.get("PHOTO_GATEWAY_CRASH_AT")
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        if _hits[name] >= int(count or 1):
            os.kill(os.getpid(), signal.SIGKILL)

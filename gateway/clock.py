"""Time behind one seam: `now()` and `sleep()`, so retry and backoff tests need no real waiting.

Production code takes a `Clock` (default `SYSTEM`) and never calls `time.time`/`time.sleep`
itself; tests pass a `FakeClock` and move it with `advance()`.
"""

from __future__ import annotations

import threading
import time

__all__ = ["SYSTEM", "Clock", "FakeClock"]


class Clock:
    """Wall-clock time in epoch seconds (what the journal stores) and a blocking sleep."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        """Sleep; a negative time (a deadline already past) returns at once."""
        if seconds > 0:
            time.sleep(seconds)


SYSTEM = Clock()


class FakeClock(Clock):
    """A clock that only moves when told: `advance(s)`, or `sleep(s)`, which returns at once.

    Safe to share between threads (a worker may sleep while the test advances).
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self.slept: list[float] = []  # every sleep() asked for, in order: for backoff tests

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock does not go back ({seconds!r} s)")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)  # like Clock.sleep: a deadline already past sleeps 0
        with self._lock:
            self.slept.append(seconds)
            self._now += seconds

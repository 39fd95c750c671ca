"""The clock seam: a fake clock moves only when told, and sleeping on it costs no real time."""

from __future__ import annotations

import time

import pytest

from gateway.clock import SYSTEM, Clock, FakeClock


def test_fake_clock_sleep_advances_instantly() -> None:
    clock = FakeClock(start=1000.0)
    started = time.monotonic()
    clock.sleep(3600)
    clock.sleep(0.5)
    assert time.monotonic() - started < 0.5  # an hour of fake sleep, no real waiting
    assert clock.now() == 4600.5
    assert clock.slept == [3600, 0.5]


def test_fake_clock_advance_and_never_backwards() -> None:
    clock = FakeClock(start=10.0)
    clock.advance(5)
    assert clock.now() == 15.0
    assert clock.now() == 15.0  # does not move by itself
    with pytest.raises(ValueError):
        clock.advance(-1)
    clock.sleep(-3)  # a deadline already past: sleeps nothing
    assert clock.now() == 15.0


def test_system_clock_is_wall_time() -> None:
    assert isinstance(SYSTEM, Clock)
    assert abs(SYSTEM.now() - time.time()) < 5
    started = time.monotonic()
    SYSTEM.sleep(-1)
    SYSTEM.sleep(0.01)
    assert 0.005 < time.monotonic() - started < 2

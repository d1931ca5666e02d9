"""Clocks: only drivers and adapters hold one; models get `now_ms`."""
from __future__ import annotations

import threading
import time


class Clock:
    def monotonic_ms(self) -> int:
        raise NotImplementedError

    def wall_ms(self) -> int:
        raise NotImplementedError

    def sleep_ms(self, ms: float) -> None:
        raise NotImplementedError


class SystemClock(Clock):
    def monotonic_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def sleep_ms(self, ms: float) -> None:
        if ms > 0:
            time.sleep(ms / 1000.0)


class ManualClock(Clock):
    """For tests: time moves only when told to."""

    def __init__(self, start_ms: int = 0, wall_start_ms: int = 1_700_000_000_000):
        self._now = start_ms
        self._wall_offset = wall_start_ms - start_ms
        self._lock = threading.Lock()

    def monotonic_ms(self) -> int:
        return self._now

    def wall_ms(self) -> int:
        return self._now + self._wall_offset

    def sleep_ms(self, ms: float) -> None:
        self.advance(int(ms))

    def advance(self, ms: int) -> None:
        with self._lock:
            self._now += ms


class SkewedClock(Clock):
    """The clock fault: a fixed offset, or a strobe that flips between two offsets.

    Only wall time is skewed (record and marker timestamps, commit times, transaction start
    times: what the node reports), as when NTP steps a host's CLOCK_REALTIME. The monotonic
    clock that every timer runs on (sessions, ISR lag, transaction timeouts) is the base
    clock's, so a deadline taken under a skew is still right after the skew changes or heals.
    """

    def __init__(self, base: Clock | None = None):
        self.base = base or SystemClock()
        self.offset_ms = 0  # written by the fault service thread, read by everyone: an int swap is atomic
        self.strobe_ms = 0
        self.strobe_period_ms = 0

    def _skew(self) -> int:
        if self.strobe_period_ms > 0 and self.strobe_ms:
            phase = (self.base.monotonic_ms() // self.strobe_period_ms) % 2
            return self.offset_ms + (self.strobe_ms if phase else 0)
        return self.offset_ms

    def monotonic_ms(self) -> int:
        return self.base.monotonic_ms()

    def wall_ms(self) -> int:
        return self.base.wall_ms() + self._skew()

    def sleep_ms(self, ms: float) -> None:
        self.base.sleep_ms(ms)

    def set(self, offset_ms: int = 0, strobe_ms: int = 0, strobe_period_ms: int = 0) -> None:
        self.offset_ms, self.strobe_ms, self.strobe_period_ms = offset_ms, strobe_ms, strobe_period_ms

"""Shared test helpers: bounded polling, never fixed sleeps."""
from __future__ import annotations

import time


def wait_until(cond, timeout_s: float = 20.0, interval_s: float = 0.05, what: str = "condition"):
    """Polls cond() until it returns a truthy value; fails the test after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - conditions may fail while a cluster settles
            last_exc = e
        time.sleep(interval_s)
        interval_s = min(interval_s * 1.5, 0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))

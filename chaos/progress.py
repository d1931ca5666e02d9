"""The live progress of `brokerlab chaos run`: time left, ops ok / fail / info per second, the fault
in force. `ProgressModel` turns the runner's snapshots into one `ProgressLine` (a pure function of
the snapshots and the times they were taken); chaos.run renders it as a rich panel on a terminal
and as a plain line every few seconds when the output is piped.
"""
from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass

TYPES = ("ok", "fail", "info")
RATE_WINDOW_S = 2.0  # rates over the last two seconds: steady to read, quick to show a fault


@dataclass(frozen=True, slots=True)
class ProgressLine:
    elapsed_s: float
    left_s: float
    totals: dict[str, int]  # by type, every f
    per_s: dict[str, float]  # by type, over the last RATE_WINDOW_S
    by_f: dict[str, dict[str, int]]  # f -> type -> count
    faults: str  # the faults in force, "none" when none

    def plain(self) -> str:
        rates = " ".join(f"{ty} {self.per_s[ty]:.0f}/s" for ty in TYPES)
        totals = "/".join(str(self.totals[ty]) for ty in TYPES)
        return (f"[{self.elapsed_s:5.1f} s, {self.left_s:4.0f} s left] {rates} (ok/fail/info so far {totals}); "
                f"faults: {self.faults}")


class ProgressModel:
    def __init__(self, time_limit_s: float):
        self.time_limit_s = time_limit_s
        self._samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=64)

    def update(self, snap: dict) -> ProgressLine:
        """`snap`: Runner.snapshot() ({"elapsed_s", "counts": {(f, type): n}, "faults": {f: value}})."""
        now = float(snap["elapsed_s"])
        by_f: dict[str, dict[str, int]] = {}
        totals = dict.fromkeys(TYPES, 0)
        for (f, ty), n in snap["counts"].items():
            if ty in totals:
                totals[ty] += n
                by_f.setdefault(f, dict.fromkeys(TYPES, 0))[ty] = n
        self._samples.append((now, totals))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()
        t0, old = self._samples[0]
        dt = now - t0
        per_s = {ty: (totals[ty] - old[ty]) / dt if dt > 0 else 0.0 for ty in TYPES}
        faults = ", ".join(f"{f} {short(v)}".strip() for f, v in snap["faults"].items()) or "none"
        return ProgressLine(now, max(0.0, self.time_limit_s - now), totals, per_s, dict(sorted(by_f.items())), faults)


def short(v) -> str:
    if isinstance(v, dict):
        if "nodes" in v:
            return ",".join(v["nodes"])
        if "groups" in v:
            return " | ".join(",".join(g) for g in v["groups"])
    return "" if v is None else json.dumps(v)[:40]

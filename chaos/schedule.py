"""The nemesis schedule: pure, seeded. Same spec and seed -> same timed ops.

A spec (an experiment's `nemesis:` section) names the faults to draw from, how often one starts
(`interval_s`) and how long it lasts (`duration_s`). Each cycle draws one fault with the seeded rng,
emits its op at `t`, and its recovery op (start / resume / heal) at `t + duration`. Ops are
HISTORY.md nemesis ops still to be completed: the Nemesis picks the concrete nodes when it runs them.
A recovery op names its fault (`recovers` = the fault op's `fault_id`), so the Nemesis undoes exactly
what that fault did: several schedules can overlap (an experiment's `nemesis:` may be a list).

    nemesis:
      seed: 7
      interval_s: 10
      duration_s: 5
      start_after_s: 2
      # or interval_s: [1, 2]: each gap drawn from the range with the seed
      faults:
        - kill                                   # default target: one node
        - {f: pause, target: leader-of, topic: t0, partition: 0}
        - {f: partition, shape: halves, weight: 2}
        - {f: delay, target: one, ms: 200, jitter_ms: 50}
        - {f: heartbeat-delay, target: broker, ms: 5000}
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from chaos.targets import NODE_TARGETS, SHAPES

# fault -> (its recovery op's f, or None; default params)
FAULTS: dict[str, tuple[str | None, dict]] = {
    "kill": ("start", {"target": "one"}),
    "stop": ("start", {"target": "one"}),
    "pause": ("resume", {"target": "one"}),
    "restart": (None, {"target": "one"}),
    "partition": ("heal", {"shape": "isolate-one"}),
    "delay": ("heal", {"target": "one", "ms": 200, "jitter_ms": 0}),
    "loss": ("heal", {"target": "one", "p": 0.2}),
    "heartbeat-delay": ("heal", {"target": "broker", "ms": 5000}),
    "heartbeat-drop": ("heal", {"target": "broker"}),
    "clock": ("heal", {"target": "one", "offset_ms": 60000}),
    "kill-member": (None, {}),  # a workload's fault: SIGKILL a consumer-group member process
}
PARAMS = {"target", "shape", "topic", "partition", "ms", "jitter_ms", "p", "offset_ms", "strobe_ms",
          "period_ms", "groups", "nodes", "links"}


class SpecError(ValueError):
    """A bad experiment / nemesis field; the message starts with the field's path."""


@dataclass(frozen=True, slots=True)
class FaultSpec:
    f: str
    params: dict = field(default_factory=dict)
    weight: int = 1


@dataclass(frozen=True, slots=True)
class NemesisSpec:
    faults: tuple[FaultSpec, ...]
    interval_ms: int = 10_000
    duration_ms: int = 5_000
    start_after_ms: int = 0
    seed: int = 0
    interval_max_ms: int = 0  # > interval_ms: each gap drawn from [interval_ms, interval_max_ms]


@dataclass(frozen=True, slots=True)
class TimedOp:
    at_ms: int  # since the start of the run
    op: dict


def _num(d: dict, key: str, path: str, default, lo: float = 0) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < lo:
        raise SpecError(f"{path}.{key}: expected a number >= {lo}, got {v!r}")
    return v


def parse_fault(raw, path: str) -> FaultSpec:
    if isinstance(raw, str):
        raw = {"f": raw}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a fault name or a mapping with 'f', got {raw!r}")
    f = raw.get("f")
    if f not in FAULTS:
        raise SpecError(f"{path}.f: unknown fault {f!r} (one of {', '.join(FAULTS)})")
    unknown = set(raw) - PARAMS - {"f", "weight"}
    if unknown:
        raise SpecError(f"{path}.{min(unknown)}: unknown field for fault '{f}'")
    params = {**FAULTS[f][1], **{k: v for k, v in raw.items() if k in PARAMS}}
    target = params.get("target")
    if target is not None and (not isinstance(target, str) or not target):
        raise SpecError(f"{path}.target: expected one of {', '.join(NODE_TARGETS)} or node names")
    if f == "partition" and "groups" not in params and params.get("shape") not in SHAPES:
        raise SpecError(f"{path}.shape: unknown partition shape {params.get('shape')!r} "
                        f"(one of {', '.join(SHAPES)})")
    for k in ("ms", "jitter_ms", "period_ms"):
        if k in params:
            _num(params, k, path, 0)
    if "p" in params and not 0 < _num(params, "p", path, 0) <= 1:
        raise SpecError(f"{path}.p: a loss probability in (0, 1], got {params['p']!r}")
    weight = int(_num(raw, "weight", path, 1, 1))
    return FaultSpec(f, params, weight)


def parse_nemesis(raw: dict | None, seed: int = 0, path: str = "nemesis") -> NemesisSpec:
    if raw is None:
        return NemesisSpec(faults=(), seed=seed)
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping, got {type(raw).__name__}")
    known = {"faults", "interval_s", "duration_s", "start_after_s", "seed"}
    unknown = set(raw) - known
    if unknown:
        raise SpecError(f"{path}.{min(unknown)}: unknown field (known: {', '.join(sorted(known))})")
    faults = raw.get("faults", [])
    if not isinstance(faults, list):
        raise SpecError(f"{path}.faults: expected a list of faults")
    specs = tuple(parse_fault(x, f"{path}.faults[{i}]") for i, x in enumerate(faults))
    interval, interval_max = _interval(raw, path)
    duration = _num(raw, "duration_s", path, min(5, interval), 0)
    if duration > interval:
        raise SpecError(f"{path}.duration_s: {duration} is longer than interval_s {interval}; faults would overlap")
    s = raw.get("seed", seed)
    if isinstance(s, bool) or not isinstance(s, int):
        raise SpecError(f"{path}.seed: expected an integer, got {s!r}")
    return NemesisSpec(specs, int(interval * 1000), int(duration * 1000),
                       int(_num(raw, "start_after_s", path, 0) * 1000), s,
                       int(interval_max * 1000) if interval_max > interval else 0)


def _interval(raw: dict, path: str) -> tuple[float, float]:
    """interval_s: a number, or [low, high] seconds (each gap drawn from the range)."""
    v = raw.get("interval_s", 10)
    if isinstance(v, list):
        if len(v) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) \
                or not 0.001 <= v[0] <= v[1]:
            raise SpecError(f"{path}.interval_s: expected seconds or [low, high] with 0 < low <= high, got {v!r}")
        return float(v[0]), float(v[1])
    x = _num(raw, "interval_s", path, 10, 0.001)
    return x, x


def nemesis_op(f: str, value=None) -> dict:
    return {"process": "nemesis", "type": "info", "f": f, "value": value}


def schedule(spec: NemesisSpec, time_limit_ms: int, name: str = "") -> Iterator[TimedOp]:
    """Timed ops in time order, every fault recovered before `time_limit_ms`; then one final heal.
    Fault ops carry `fault_id` (name + cycle number), their recovery ops `recovers`."""
    rng = random.Random(spec.seed)
    weights = [fs.weight for fs in spec.faults]
    t, last, cycle = spec.start_after_ms, None, 0
    while spec.faults and t + spec.duration_ms < time_limit_ms:
        fs = rng.choices(spec.faults, weights)[0]
        fault_id = f"{name}{cycle}"
        yield TimedOp(t, {**nemesis_op(fs.f, dict(fs.params)), "fault_id": fault_id})
        recovery = FAULTS[fs.f][0]
        if recovery is not None:
            yield TimedOp(t + spec.duration_ms, {**nemesis_op(recovery), "recovers": fault_id})
        last = t
        t += rng.randint(spec.interval_ms, spec.interval_max_ms) if spec.interval_max_ms else spec.interval_ms
        cycle += 1
    yield TimedOp(last + spec.duration_ms if last is not None else 0, nemesis_op("heal"))


def final_ops() -> list[dict]:
    """What a runner applies at the end, also on Ctrl-C or error: heal everything."""
    return [nemesis_op("heal")]

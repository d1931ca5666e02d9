"""Workloads: Jepsen's Kafka workload shapes over brokerlab's clients.

A workload bundles (STYLE.md §8):
- a pure generator: `next_op(process) -> (f, value, extra)`, seeded rng in;
- a client per worker: `invoke(f, value, extra) -> Outcome`, does the I/O;
- the final reads after heal (every key from the beginning to the end).

Keys are `"topic/partition"` strings (HISTORY.md); `key_tp` / `tp_key`
convert. Only the runner (chaos/runner.py) owns threads and the history.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WORKLOADS", "WORKLOAD_ANOMALIES", "Outcome", "key_tp", "make_keys", "make_workload", "op_weights",
           "pick_op", "send_op", "tp_key"]


@dataclass(slots=True)
class Outcome:
    """What a client says about one op: type ok/fail/info, the completed value, the error name."""
    type: str
    value: Any = None
    error: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def of_error(cls, e, value: Any) -> Outcome:
        """A KafkaError's outcome: `fail` only when it surely did not take effect, else `info`."""
        return cls("fail" if e.definite else "info", value, e.name)


def op_weights(weights: dict[str, float] | None, defaults: dict[str, float]) -> dict[str, float]:
    """The generator's op weights: the defaults, or the given ones if every op is known."""
    out = dict(defaults if weights is None else weights)
    unknown = set(out) - set(defaults)
    if unknown:
        raise ValueError(f"unknown op weight(s) {sorted(unknown)} (known: {', '.join(defaults)})")
    return out


def pick_op(rng: random.Random, weights: dict[str, float]) -> str:
    fs = list(weights)
    return rng.choices(fs, weights=[weights[x] for x in fs])[0]


def send_op(rng: random.Random, keys: list[str], max_sends: int, next_value: dict[str, int]) -> tuple[str, Any, dict]:
    """1..max_sends sends of fresh values (next_value advances) to random keys."""
    mops = []
    for _ in range(rng.randint(1, max_sends)):
        k = rng.choice(keys)
        v = next_value[k]
        next_value[k] = v + 1
        mops.append(["send", k, v])
    return "send", mops, {}


def make_keys(topics: list[tuple[str, int]]) -> list[str]:
    """One key per topic-partition."""
    keys = [tp_key(t, p) for t, n in topics for p in range(n)]
    if not keys:
        raise ValueError("a workload needs at least one topic with at least one partition")
    return keys


def key_tp(key: str) -> tuple[str, int]:
    topic, _, part = key.rpartition("/")
    if not topic or not part.isdigit():
        raise ValueError(f"key '{key}' is not 'topic/partition'")
    return topic, int(part)


def tp_key(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


def make_workload(name: str, spec: dict, topics: list[tuple[str, int]], concurrency: int = 4):
    """The workload called `name`, configured by the experiment's `workload:` section, on these topics,
    for `concurrency` workers (worker = process % concurrency, as the runner numbers processes)."""
    try:
        factory = WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload '{name}' (one of {', '.join(sorted(WORKLOADS))})") from None
    module_name, _, cls_name = factory.partition(":")
    module = __import__(module_name, fromlist=[cls_name])
    return getattr(module, cls_name)(spec, topics, concurrency=concurrency)


WORKLOADS = {
    "log": "chaos.workloads.log:LogWorkload",
    "txn": "chaos.workloads.txn:TxnWorkload",
    "group": "chaos.workloads.group:GroupWorkload",
    "group-members": "chaos.workloads.group_members:GroupMembersWorkload",
    "eos": "chaos.workloads.eos:EosWorkload",
}

# Anomalies that workloads' own checks name, beyond HISTORY.md's (docs/checks.md).
WORKLOAD_ANOMALIES = {
    "eos-missing": "an input below the group's committed offset never reached the output",
    "eos-duplicate": "one input at two or more output offsets",
    "eos-beyond-committed": "an input at or past the committed offset is in the output",
    "group-skip": "the group committed past offsets of a key that no member of it had read",
    "not-reassigned": "a SIGKILLed member's partition was not owned and polled by another member within "
                      "session.timeout.ms plus a rebalance",
}

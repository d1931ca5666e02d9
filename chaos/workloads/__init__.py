"""Workloads: Jepsen's Kafka workload shapes over brokerlab's clients.

A workload bundles (STYLE.md §8):
- a pure generator: `next_op(process) -> (f, value, extra)`, seeded rng in;
- a client per worker: `invoke(f, value, extra) -> Outcome`, does the I/O;
- the final reads after heal (every key from the beginning to the end).

Keys are `"topic/partition"` strings (HISTORY.md); `key_tp` / `tp_key`
convert. Only the runner (chaos/runner.py) owns threads and the history.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Outcome", "WORKLOADS", "key_tp", "make_keys", "make_workload", "tp_key"]


@dataclass(slots=True)
class Outcome:
    """What a client says about one op: type ok/fail/info, the completed value, the error name."""
    type: str
    value: Any = None
    error: str | None = None
    extra: dict = field(default_factory=dict)


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
    "eos": "chaos.workloads.eos:EosWorkload",
}

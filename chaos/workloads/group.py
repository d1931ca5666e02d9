"""The `group` workload: consumers in subscribe mode with offset commits and `committed` reads.

Every worker sends unique integers (as `log` does) and consumes as a member
of one consumer group: `subscribe` (the topics of its keys), `poll`, `commit`
of the positions it has reached ({key: next offset}, Kafka's convention) and
`committed` reads back from the group coordinator. `commit` and `committed`
carry the `"group"` field (HISTORY.md). Rebalances legitimately move a
member's position, so the checker allows poll-skip / nonmonotonic-poll under
subscribe; what it checks here is offset-regression and the log anomalies.

A commit's offsets are the consumer's positions when the op starts: the
runner asks the client (`prepare`) before recording the invoke.
"""
from __future__ import annotations

import random
from typing import Any

from chaos.workloads import Outcome, key_tp, op_weights, pick_op, send_op, tp_key
from chaos.workloads.log import LogClient, LogWorkload
from client.common import errors

__all__ = ["DEFAULT_GROUP_WEIGHTS", "GroupClient", "GroupGenerator", "GroupWorkload"]

DEFAULT_GROUP_WEIGHTS = {"send": 5.0, "poll": 4.0, "commit": 1.5, "committed": 0.7, "subscribe": 0.2,
                         "crash": 0.1}


class GroupGenerator:
    """Pure: a new process subscribes first; then sends, polls, commits and committed reads."""

    def __init__(self, keys: list[str], rng: random.Random, group: str, *,
                 weights: dict[str, float] | None = None, max_sends: int = 2) -> None:
        if not keys:
            raise ValueError("the group workload needs at least one key")
        if not group:
            raise ValueError("workload.group must name a consumer group")
        self.keys = list(keys)
        self.rng = rng
        self.group = group
        self.weights = op_weights(weights, DEFAULT_GROUP_WEIGHTS)
        self.max_sends = max(1, max_sends)
        self.next_value = {k: 1 for k in self.keys}
        self._started: set[Any] = set()

    def next_op(self, process: Any) -> tuple[str, Any, dict]:
        if process not in self._started:
            self._started.add(process)
            return "subscribe", list(self.keys), {}
        f = pick_op(self.rng, self.weights)
        if f == "send":
            return send_op(self.rng, self.keys, self.max_sends, self.next_value)
        if f == "poll":
            return "poll", [["poll"]], {}
        if f == "commit":
            return "commit", {}, {"group": self.group}  # the client fills in its positions
        if f == "committed":
            keys = sorted(self.rng.sample(self.keys, self.rng.randint(1, len(self.keys))))
            return "committed", keys, {"group": self.group}
        if f == "subscribe":
            return "subscribe", list(self.keys), {}
        return "crash", None, {}


class GroupClient(LogClient):
    """A producer and a group member (subscribe mode); `assign` (the final read) drops the
    membership and reads with a plain consumer."""

    def __init__(self, bootstrap: str, producer_props: dict, consumer_props: dict, *, group: str,
                 poll_ms: int = 300, client_id: str = "group") -> None:
        super().__init__(bootstrap, producer_props, consumer_props, poll_ms=poll_ms, client_id=client_id)
        self.group = group
        self.group_props = {**self.consumer_props, "group.id": group}

    def open(self) -> GroupClient:
        from client import Consumer, Producer
        self.producer = Producer(dict(self.producer_props))
        self.consumer = Consumer(dict(self.group_props))
        return self

    def _swap_consumer(self, props: dict) -> None:
        from client import Consumer
        old, self.consumer = self.consumer, None
        if old is not None:
            try:
                old.close()
            except Exception:  # noqa: BLE001 -- replaced either way
                pass
        self.consumer = Consumer(dict(props))

    def prepare(self, f: str, value: Any, extra: dict) -> Any:
        if f != "commit" or self.consumer is None:
            return value
        # Positions of what this member holds and has read (no I/O).
        return {tp_key(tp.topic, tp.partition): off for tp, off in sorted(self.consumer._positions.items())
                if tp in self.consumer.assignment()}

    def invoke(self, f: str, value: Any, extra: dict) -> Outcome:
        if f == "subscribe":
            return self.subscribe(value)
        if f == "commit":
            return self.commit(value)
        if f == "committed":
            return self.committed(value)
        if f == "assign":
            if self.consumer is not None and self.consumer.group is not None:
                self._swap_consumer(self.consumer_props)
            return super().invoke(f, value, extra)
        if f == "poll":
            return self.poll(value)
        return super().invoke(f, value, extra)

    def subscribe(self, keys: list[str]) -> Outcome:
        topics = sorted({key_tp(k)[0] for k in keys})
        try:
            if self.consumer is None or self.consumer.group is None or self.consumer.subscription():
                self._swap_consumer(self.group_props)
            self.consumer.subscribe(topics)
        except errors.KafkaError as e:
            return Outcome.of_error(e, keys)
        return Outcome("ok", keys)

    def commit(self, offsets: dict[str, int]) -> Outcome:
        from client import TopicPartition
        from client.common.types import OffsetAndMetadata
        if not offsets:
            return Outcome("ok", offsets)
        try:
            self.consumer.commit_sync({TopicPartition(*key_tp(k)): OffsetAndMetadata(o) for k, o in offsets.items()},
                                      timeout=10.0)
        except errors.KafkaError as e:
            return Outcome.of_error(e, offsets)
        return Outcome("ok", offsets)

    def committed(self, keys: list[str]) -> Outcome:
        from client import Consumer, TopicPartition
        tps = [TopicPartition(*key_tp(k)) for k in keys]
        # A group consumer answers whether or not it is subscribed; a plain one (final read) borrows one.
        reader = self.consumer if self.consumer is not None and self.consumer.group is not None \
            else Consumer(dict(self.group_props))
        try:
            got = reader.committed(tps, timeout=10.0)
        except errors.KafkaError as e:
            return Outcome.of_error(e, keys)
        finally:
            if reader is not self.consumer:
                reader.close()
        return Outcome("ok", {tp_key(tp.topic, tp.partition): (om.offset if om is not None else None)
                              for tp, om in got.items()})


class GroupWorkload(LogWorkload):
    """Experiment section `workload: {name: group, concurrency, group, weights, max_sends, poll_ms}`."""

    name = "group"
    _FIELDS = {"group", "weights", "max_sends", "poll_ms", "ops_limit"}

    def __init__(self, spec: dict, topics: list[tuple[str, int]], **kw) -> None:
        spec = dict(spec or {})
        self.group = str(spec.pop("group", "chaos-group"))
        super().__init__(spec, topics, **kw)

    def generator(self, rng: random.Random) -> GroupGenerator:
        return GroupGenerator(self.keys, rng, self.group, weights=self.weights, max_sends=self.max_sends)

    def client(self, bootstrap: str, producer_props: dict, consumer_props: dict, worker: int) -> GroupClient:
        return GroupClient(bootstrap, producer_props, consumer_props, group=self.group, poll_ms=self.poll_ms,
                           client_id=f"{self.name}-{worker}").open()

    def final_ops(self) -> list[tuple[str, Any, dict]]:
        return [("committed", list(self.keys), {"group": self.group})]

"""The `log` workload: producers send unique integers per key, consumers poll with assign.

Jepsen's Kafka queue workload without transactions. Each key is one
topic-partition; every value sent to a key is new (1, 2, 3, ...), so the
checker can tell lost, duplicated and reordered records apart. Now and then
a worker crashes its clients (`crash`, always `info`), which also exercises
the producer's in-flight sends being abandoned.
"""
from __future__ import annotations

import random
import time
from typing import Any, ClassVar

from chaos.workloads import Outcome, key_tp, make_keys, op_weights, pick_op, send_op, tp_key
from client.common import errors

__all__ = ["DEFAULT_WEIGHTS", "LogClient", "LogGenerator", "LogWorkload"]

DEFAULT_WEIGHTS = {"send": 6.0, "poll": 3.0, "assign": 0.5, "crash": 0.1}


class LogGenerator:
    """Pure: which op each process does next. The runner calls it under its lock."""

    def __init__(self, keys: list[str], rng: random.Random, *, weights: dict[str, float] | None = None,
                 max_sends: int = 2, seek_probability: float = 0.5) -> None:
        if not keys:
            raise ValueError("the log workload needs at least one key")
        self.keys = list(keys)
        self.rng = rng
        self.weights = op_weights(weights, DEFAULT_WEIGHTS)
        self.max_sends = max(1, max_sends)
        self.seek_probability = seek_probability
        self.next_value = {k: 1 for k in self.keys}
        self._started: set[Any] = set()  # processes that have done their first assign

    def assign_op(self) -> tuple[str, Any, dict]:
        n = self.rng.randint(1, len(self.keys))
        keys = sorted(self.rng.sample(self.keys, n))
        extra = {"seek_to_beginning": True} if self.rng.random() < self.seek_probability else {}
        return "assign", keys, extra

    def send_op(self) -> tuple[str, Any, dict]:
        return send_op(self.rng, self.keys, self.max_sends, self.next_value)

    def next_op(self, process: Any) -> tuple[str, Any, dict]:
        if process not in self._started:
            # A new process (first op, or after an info) has fresh clients: assign before polling.
            self._started.add(process)
            return self.assign_op()
        f = pick_op(self.rng, self.weights)
        if f == "send":
            return self.send_op()
        if f == "poll":
            return "poll", [["poll"]], {}
        if f == "assign":
            return self.assign_op()
        return "crash", None, {}


def records_by_key(records) -> dict[str, list[list[int]]]:
    """A ConsumerRecords as HISTORY.md's poll result: {key: [[offset, v], ...]}."""
    out: dict[str, list[list[int]]] = {}
    for tp, recs in records.items():
        out[tp_key(tp.topic, tp.partition)] = [[r.offset, _decode(r.value)] for r in recs]
    return out


def _decode(value: bytes | None):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None if value is None else value.decode("utf-8", "replace")


def error_name(e: BaseException) -> str:
    if isinstance(e, errors.KafkaError):
        return e.name
    if isinstance(e, TimeoutError):
        return "timeout"
    return type(e).__name__


class LogClient:
    """One worker's producer and consumer. Called by one runner thread at a time."""

    def __init__(self, bootstrap: str, producer_props: dict, consumer_props: dict, *,
                 poll_ms: int = 500, client_id: str = "log") -> None:
        self.bootstrap = bootstrap
        self.producer_props = {"bootstrap.servers": bootstrap, "client.id": client_id, **producer_props}
        self.consumer_props = {"bootstrap.servers": bootstrap, "client.id": client_id,
                               "auto.offset.reset": "earliest", "enable.auto.commit": False, **consumer_props}
        self.poll_ms = poll_ms
        # How long a send may take before its outcome is called unknown.
        self.send_wait_s = int(self.producer_props.get("delivery.timeout.ms", 120000)) / 1000.0 + 2.0
        self.producer = None
        self.consumer = None
        self._hw_reader = None  # a read_uncommitted consumer for high_watermarks, made when first asked

    def open(self) -> LogClient:
        from client import Consumer, Producer
        self.producer = Producer(dict(self.producer_props))
        self.consumer = Consumer(dict(self.consumer_props))
        return self

    def close(self) -> None:
        for c in (self.producer, self.consumer, self._hw_reader):
            if c is None:
                continue
            try:
                c.close(0) if c is self.producer else c.close()
            except Exception:  # noqa: BLE001, S110 -- closing a client under faults may fail; it is gone either way
                pass
        self.producer = self.consumer = self._hw_reader = None

    def invoke(self, f: str, value: Any, extra: dict) -> Outcome:
        if f == "send":
            return self.send(value)
        if f == "poll":
            return self.poll(value)
        if f == "assign":
            return self.assign(value, bool(extra.get("seek_to_beginning")))
        if f == "crash":
            self.close()
            self.open()
            return Outcome("info", None, "crash")
        raise ValueError(f"the log workload has no op '{f}'")

    def assign(self, keys: list[str], seek: bool) -> Outcome:
        from client import TopicPartition
        tps = [TopicPartition(*key_tp(k)) for k in keys]
        try:
            self.consumer.assign(tps)
            if seek:
                self.consumer.seek_to_beginning(tps)
        except errors.KafkaError as e:
            return Outcome.of_error(e, keys)
        return Outcome("ok", keys)

    def send(self, mops: list) -> Outcome:
        futures = []
        for _, key, v in mops:
            topic, partition = key_tp(key)
            try:
                futures.append(self.producer.send(topic, value=str(v), partition=partition))
            except errors.KafkaError as e:
                # Refused before anything left for the broker: certainly not appended.
                if not futures and e.definite:
                    return Outcome("fail", mops, e.name)
                return Outcome("info", mops, e.name)
        deadline = time.monotonic() + self.send_wait_s
        done, first_error = [], None
        for (_, key, v), fut in zip(mops, futures):
            try:
                md = fut.get(max(0.0, deadline - time.monotonic()))
            except Exception as e:  # noqa: BLE001 -- any failure of an in-flight send has an unknown outcome
                first_error = first_error or error_name(e)
                continue
            done.append(["send", key, [md.offset if md.offset >= 0 else None, v]])
        if first_error is not None:
            # A batch that was retried may have been appended by an earlier
            # attempt even when the last one failed definitely: unknown.
            return Outcome("info", mops, first_error)
        return Outcome("ok", done)

    def poll(self, value: Any) -> Outcome:
        try:
            records = self.consumer.poll(self.poll_ms)
        except errors.KafkaError as e:
            return Outcome.of_error(e, value)
        return Outcome("ok", [["poll", records_by_key(records)]])

    def end_offsets(self, keys: list[str]) -> dict[str, int]:
        from client import TopicPartition
        tps = [TopicPartition(*key_tp(k)) for k in keys]
        ends = self.consumer.end_offsets(tps)
        return {tp_key(tp.topic, tp.partition): off for tp, off in ends.items()}

    def high_watermarks(self, keys: list[str]) -> dict[str, int]:
        """Each key's high watermark (its read_uncommitted end): where a final read is done, past
        every committed transaction's records and markers, whatever this client's isolation level."""
        from client import Consumer, TopicPartition
        if self._hw_reader is None:
            self._hw_reader = Consumer({**self.consumer_props, "isolation.level": "read_uncommitted"})
        ends = self._hw_reader.end_offsets([TopicPartition(*key_tp(k)) for k in keys])
        return {tp_key(tp.topic, tp.partition): off for tp, off in ends.items()}

    def positions(self, keys: list[str]) -> dict[str, int]:
        from client import TopicPartition
        return {k: self.consumer.position(TopicPartition(*key_tp(k)), timeout=5) for k in keys}


class LogWorkload:
    """Experiment section `workload: {name: log, concurrency, weights, max_sends, poll_ms}`."""

    name = "log"
    _FIELDS: ClassVar[set[str]] = {"weights", "max_sends", "poll_ms", "ops_limit"}
    adapter = None  # a chaos.clients adapter module for another client library; None: brokerlab's own

    def __init__(self, spec: dict, topics: list[tuple[str, int]], concurrency: int = 4) -> None:
        spec = dict(spec or {})
        self.concurrency = concurrency
        unknown = set(spec) - self._FIELDS
        if unknown:
            raise ValueError(f"workload.{min(unknown)}: unknown field for the {self.name} workload "
                             f"(known: name, concurrency, final_read_s, {', '.join(sorted(self._FIELDS))})")
        self.topics = list(topics)
        self.keys = make_keys(self.topics)
        self.weights = spec.get("weights")
        self.max_sends = int(spec.get("max_sends", 2))
        self.poll_ms = int(spec.get("poll_ms", 300))

    def generator(self, rng: random.Random) -> LogGenerator:
        return LogGenerator(self.keys, rng, weights=self.weights, max_sends=self.max_sends)

    def client(self, bootstrap: str, producer_props: dict, consumer_props: dict, worker: int) -> LogClient:
        cls = LogClient if self.adapter is None else self.adapter.LogClient
        return cls(bootstrap, producer_props, consumer_props, poll_ms=self.poll_ms,
                   client_id=f"{self.name}-{worker}").open()

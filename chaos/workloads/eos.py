"""The `eos` workload: a consume-transform-produce pipeline that must copy every input exactly once.

Workers 0 .. producers-1 send unique integers to the input topic (as `log`
does, idempotent). The other workers are pipeline instances, members of one
consumer group subscribed to the input (read_committed), each with its own
transactional.id: one `txn` op polls the input, sends each record to the
same partition of the output topic, adds the consumed positions with
send_offsets_to_transaction and commits. The invoke is `[["poll"]]`; the
completion lists the poll and the sends it made. Output value =
input value * STRIDE + attempt, so every attempt writes values of its own
(HISTORY.md: unique per key) and the input value is `out // STRIDE`.

`crash` on a pipeline process kills it mid-transaction: it polls, sends and
adds offsets, then drops its clients without commit or abort, as a SIGKILL
would; the next instance's init_transactions fences it and aborts.

The exactly-once check (`check`, beyond HISTORY.md's list, run on the
history after the standard checker) compares the final read of the output
with the group's committed input offsets (read last, `committed`):

- `eos-missing`: an input below the committed offset never reached the output;
- `eos-duplicate`: one input at two or more output offsets;
- `eos-beyond-committed`: an input at or past the committed offset is in the
  output, so the offsets and the output were not committed together.
"""
from __future__ import annotations

import itertools
import random
from typing import Any, ClassVar

from chaos.workloads import Outcome, key_tp, make_keys, op_weights, pick_op, send_op, tp_key
from chaos.workloads.log import LogClient, LogWorkload, error_name, records_by_key
from client.common import errors

__all__ = ["EOS_ANOMALIES", "STRIDE", "EosClient", "EosGenerator", "EosWorkload", "check_exactly_once"]

STRIDE = 1_000_000
EOS_ANOMALIES = ("eos-missing", "eos-duplicate", "eos-beyond-committed")
DEFAULT_EOS_WEIGHTS = {"pipeline": 10.0, "crash": 0.4}


class EosGenerator:
    """Pure. Producer processes send to the input keys; pipeline processes run `txn` steps or crash."""

    def __init__(self, input_keys: list[str], rng: random.Random, *, concurrency: int, producers: int,
                 weights: dict[str, float] | None = None, max_sends: int = 3) -> None:
        if not input_keys:
            raise ValueError("the eos workload needs at least one input key")
        if not 1 <= producers < concurrency:
            raise ValueError(f"workload.producers must be at least 1 and below concurrency ({concurrency}), "
                             f"so that some workers run the pipeline (got {producers})")
        self.keys = list(input_keys)
        self.rng = rng
        self.concurrency = concurrency
        self.producers = producers
        self.weights = op_weights(weights, DEFAULT_EOS_WEIGHTS)
        self.max_sends = max(1, max_sends)
        self.next_value = {k: 1 for k in self.keys}
        self._started: set[Any] = set()

    def is_pipeline(self, process: int) -> bool:
        return process % self.concurrency >= self.producers

    def next_op(self, process: Any) -> tuple[str, Any, dict]:
        if not self.is_pipeline(process):
            return send_op(self.rng, self.keys, self.max_sends, self.next_value)
        if process not in self._started:
            # A new pipeline instance joins the group first (the checker then knows it reads under subscribe).
            self._started.add(process)
            return "subscribe", list(self.keys), {}
        f = pick_op(self.rng, self.weights)
        return ("txn", [["poll"]], {}) if f == "pipeline" else ("crash", None, {})


class EosClient(LogClient):
    """Input producer, or pipeline instance (group member + transactional producer), by worker."""

    def __init__(self, bootstrap: str, producer_props: dict, consumer_props: dict, *, pipeline: bool,
                 group: str, transactional_id: str, input_keys: list[str], output_topic: str, attempts,
                 poll_ms: int = 300,
                 client_id: str = "eos") -> None:
        consumer_props = {**consumer_props, "isolation.level": "read_committed"}
        if pipeline:
            producer_props = {"enable.idempotence": True, "acks": "all", **producer_props,
                              "transactional.id": transactional_id}
        super().__init__(bootstrap, producer_props, consumer_props, poll_ms=poll_ms, client_id=client_id)
        self.pipeline = pipeline
        self.group = group
        self.input_keys = list(input_keys)
        self.output_topic = output_topic
        self.attempts = attempts  # the workload's shared counter: next() is atomic

    def open(self) -> EosClient:
        from client import Consumer, Producer
        self.producer = Producer(dict(self.producer_props))
        if not self.pipeline:
            self.consumer = Consumer(dict(self.consumer_props))
            return self
        try:
            self.producer.init_transactions()  # fences the crashed instance, aborts its transaction
            self.consumer = Consumer({**self.consumer_props, "group.id": self.group})
        except BaseException:
            self.close()
            raise
        return self

    def subscribe(self, keys: list[str]) -> Outcome:
        try:
            self.consumer.subscribe(sorted({key_tp(k)[0] for k in keys}))
        except errors.KafkaError as e:
            return Outcome.of_error(e, keys)
        return Outcome("ok", keys)

    def invoke(self, f: str, value: Any, extra: dict) -> Outcome:
        if f == "txn":
            return self.step(value)
        if f == "subscribe":
            return self.subscribe(value)
        if f == "crash" and self.pipeline:
            if self.consumer.subscription():
                self.step([["poll"]], crash=True)
            self.close()
            self.open()
            return Outcome("info", None, "crash")
        if f == "committed":
            return self.committed(value)
        return super().invoke(f, value, extra)

    def step(self, mops: list, crash: bool = False) -> Outcome:
        """One pipeline transaction: poll the input, send the output, commit offsets with it."""
        from client.common.types import OffsetAndMetadata
        try:
            records = self.consumer.poll(self.poll_ms)
        except errors.KafkaError as e:
            return Outcome.of_error(e, mops)
        polled = records_by_key(records)
        done: list[list] = [["poll", polled]]
        if not records:
            return Outcome("ok", done)
        p = self.producer
        futures = []
        try:
            p.begin_transaction()
            attempt = next(self.attempts)
            for tp, recs in records.items():
                out_key = tp_key(self.output_topic, tp.partition)
                for r in recs:
                    v = int(r.value) * STRIDE + attempt
                    futures.append((len(done), p.send(self.output_topic, value=str(v), partition=tp.partition)))
                    done.append(["send", out_key, v])
            offsets = {tp: OffsetAndMetadata(self.consumer.position(tp, timeout=5)) for tp in records.partitions()}
            p.send_offsets_to_transaction(offsets, self.consumer.group_metadata())
            if crash:
                return Outcome("info", done, "crash")  # dropped as it is: never committed nor aborted
            p.flush(self.send_wait_s)
            for i, fut in futures:
                md = fut.get(0)
                done[i] = ["send", done[i][1], [md.offset if md.offset >= 0 else None, done[i][2]]]
        except Exception as e:  # noqa: BLE001 -- not committed: abort and rewind, a definite failure
            self._abort_and_rewind(records)
            return Outcome("fail", [m if m[0] == "poll" else ["send", m[1], _v(m[2])] for m in done],
                           error_name(e))
        try:
            p.commit_transaction()
        except Exception as e:  # noqa: BLE001 -- the commit may or may not have landed
            return Outcome("info", [m if m[0] == "poll" else ["send", m[1], _v(m[2])] for m in done],
                           error_name(e))
        return Outcome("ok", done)

    def _abort_and_rewind(self, records) -> None:
        try:
            self.producer.abort_transaction()
        except Exception:  # noqa: BLE001 -- a new producer fences this one and aborts for it
            from client import Producer
            try:
                self.producer.close(0)
            except Exception:  # noqa: BLE001, S110
                pass
            self.producer = Producer(dict(self.producer_props))
            self.producer.init_transactions()
        # Process the batch again from the last committed offsets (as the patterns document's loop).
        tps = sorted(records.partitions())
        committed = self.consumer.committed(tps, timeout=10.0)
        for tp in tps:
            om = committed.get(tp)
            if om is not None:
                self.consumer.seek(tp, om.offset)
            else:
                self.consumer.seek_to_beginning([tp])

    def committed(self, keys: list[str]) -> Outcome:
        from client import Consumer, TopicPartition
        reader = Consumer({**self.consumer_props, "group.id": self.group})
        try:
            got = reader.committed([TopicPartition(*key_tp(k)) for k in keys], timeout=10.0)
        except errors.KafkaError as e:
            return Outcome.of_error(e, keys)
        finally:
            reader.close()
        return Outcome("ok", {tp_key(tp.topic, tp.partition): (om.offset if om is not None else None)
                              for tp, om in got.items()})


def _v(x):
    return x[1] if isinstance(x, list) else x


class EosWorkload(LogWorkload):
    """Experiment section `workload: {name: eos, concurrency, producers, input, output, group,
    weights, max_sends, poll_ms}`; `input` and `output` are topics with the same partition count."""

    name = "eos"
    _FIELDS: ClassVar[set[str]] = {"producers", "input", "output", "group", "weights", "max_sends", "poll_ms", "ops_limit"}

    def __init__(self, spec: dict, topics: list[tuple[str, int]], concurrency: int = 4) -> None:
        spec = dict(spec or {})
        self.producers = int(spec.pop("producers", 1))
        self.input = str(spec.pop("input", "in"))
        self.output = str(spec.pop("output", "out"))
        self.group = str(spec.pop("group", "eos-pipeline"))
        super().__init__(spec, topics, concurrency=concurrency)
        parts = dict(self.topics)
        for field, t in (("input", self.input), ("output", self.output)):
            if t not in parts:
                raise ValueError(f"workload.{field}: topic '{t}' is not among the experiment's topics "
                                 f"({', '.join(parts)})")
        if parts[self.input] != parts[self.output]:
            raise ValueError(f"workload.output: topic '{self.output}' needs as many partitions as "
                             f"'{self.input}' ({parts[self.input]}, got {parts[self.output]})")
        self.input_keys = make_keys([(self.input, parts[self.input])])
        self.output_keys = make_keys([(self.output, parts[self.output])])
        self.keys = self.input_keys + self.output_keys
        self.attempts = itertools.count(1)
        EosGenerator(self.input_keys, random.Random(0), concurrency=concurrency, producers=self.producers)

    def generator(self, rng: random.Random) -> EosGenerator:
        return EosGenerator(self.input_keys, rng, concurrency=self.concurrency, producers=self.producers,
                            weights=self.weights, max_sends=self.max_sends)

    def client(self, bootstrap: str, producer_props: dict, consumer_props: dict, worker: int) -> EosClient:
        pipeline = self.producers <= worker < self.concurrency
        cls = EosClient if self.adapter is None else self.adapter.EosClient
        c = cls(bootstrap, producer_props, consumer_props, pipeline=pipeline, group=self.group,
                      transactional_id=f"eos-pipeline-{worker}", input_keys=self.input_keys,
                      output_topic=self.output, attempts=self.attempts, poll_ms=self.poll_ms,
                      client_id=f"{self.name}-{worker}")
        return c.open()

    def final_ops(self) -> list[tuple[str, Any, dict]]:
        return [("committed", list(self.input_keys), {"group": self.group})]

    def check(self, history: list[dict]) -> tuple[dict[str, list[dict]], dict]:
        return check_exactly_once(history, self.input, self.output, self.group)


def check_exactly_once(history: list[dict], input_topic: str, output_topic: str,
                       group: str) -> tuple[dict[str, list[dict]], dict]:
    """(the eos anomalies {name: [evidence]}, stats); reads only the history.

    Inputs: every (offset, value) an ok op read from the input topic. Output: every (offset, value)
    an ok op read from the output topic (read_committed). Committed: the last ok `committed` read
    of `group`; without one the check says nothing (no anomalies, `unknown` in its stats)."""
    inputs: dict[str, dict[int, int]] = {}   # input key -> offset -> value
    outputs: dict[str, dict[int, int]] = {}  # output key -> offset -> value
    committed: dict[str, int | None] | None = None
    committed_idx = None
    for pos, op in enumerate(history):
        if op.get("type") != "ok" or op.get("process") == "nemesis":
            continue
        f, value = op.get("f"), op.get("value")
        if f == "committed" and op.get("group") == group and isinstance(value, dict):
            committed, committed_idx = value, op.get("index", pos)
        elif f in ("poll", "txn") and isinstance(value, list):
            for mop in value:
                if isinstance(mop, list) and len(mop) > 1 and mop[0] == "poll" and isinstance(mop[1], dict):
                    for k, pairs in mop[1].items():
                        topic = k.rpartition("/")[0]
                        target = inputs if topic == input_topic else outputs if topic == output_topic else None
                        if target is not None:
                            log = target.setdefault(k, {})
                            for off, v in pairs:
                                log[off] = v
    out: dict[str, list[dict]] = {}
    stats = {"inputs_read": sum(len(v) for v in inputs.values()), "inputs_below_committed": 0,
             "outputs_read": sum(len(v) for v in outputs.values()), "committed": committed}
    if committed is None:
        return out, stats
    for in_key, log in sorted(inputs.items()):
        part = in_key.rpartition("/")[2]
        out_key = f"{output_topic}/{part}"
        copies: dict[int, list[int]] = {}
        for off, v in outputs.get(out_key, {}).items():
            if isinstance(v, int):
                copies.setdefault(v // STRIDE, []).append(off)
        end = committed.get(in_key)
        end = 0 if end is None else end
        for off, v in sorted(log.items()):
            got = sorted(copies.get(v, []))
            ev = {"key": in_key, "value": v, "offset": off, "output_key": out_key, "output_offsets": got,
                  "committed_offset": end, "indexes": [committed_idx]}
            stats["inputs_below_committed"] += off < end
            if off < end and not got:
                out.setdefault("eos-missing", []).append(ev)
            elif len(got) > 1:
                out.setdefault("eos-duplicate", []).append(ev)
            elif off >= end and got:
                out.setdefault("eos-beyond-committed", []).append(ev)
    return out, stats

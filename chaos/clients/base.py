"""What every Kafka-library adapter shares: the ops of the log and txn workloads, and their outcomes.

A library adapter supplies a few primitives (produce one record, wait for acknowledgements, poll,
assign, the transaction calls, and `classify(exc) -> (name, definite)`); this class turns them into
HISTORY.md outcomes with the rules brokerlab's own client follows (chaos/workloads/log.py, txn.py):

- a send is `ok` only when the library acknowledged every record of the op (with its offset);
  `fail` only when the first record was refused before anything was handed to the library's
  sender and the library calls that refusal definite; anything else is `info`: a record the
  sender took may have been appended by an earlier attempt even when the last one failed;
- a transaction is `ok` when commit returned; `fail` when it was aborted before commit was asked
  for (on purpose, or after any error: EndTxn(commit) was never sent, so its sends can only end
  aborted); `info` when the commit call itself failed or timed out.
"""
from __future__ import annotations

import time
from typing import Any

from chaos.workloads import Outcome, key_tp, tp_key

__all__ = ["AdapterClient", "EosAdapter", "GroupAdapter", "Refused", "TxnAdapter", "decode_value", "error_name"]


class Refused(Exception):
    """A library refused a record before its sender took it; `definite` as the library documents it."""

    def __init__(self, name: str, definite: bool) -> None:
        super().__init__(name)
        self.name = name
        self.definite = definite


def decode_value(value: bytes | None):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None if value is None else value.decode("utf-8", "replace")


class AdapterClient:
    """One worker's producer and consumer through a Kafka client library. One runner thread at a time.

    Subclasses implement the primitives below; `transactional_id` makes the producer transactional
    and the op `txn` available."""

    LIBRARY = "?"

    def __init__(self, bootstrap: str, producer_props: dict, consumer_props: dict, *, poll_ms: int = 300,
                 client_id: str = "log", transactional_id: str | None = None) -> None:
        self.bootstrap = bootstrap
        self.producer_props = dict(producer_props)
        self.consumer_props = dict(consumer_props)
        self.poll_ms = poll_ms
        self.client_id = client_id
        self.transactional_id = transactional_id
        self.send_wait_s = self.delivery_timeout_s() + 2.0
        self.producer_broken = False  # an abort failed: a new transactional producer before the next txn
        self.producer = None  # the library's producer; None until open() and after close()
        self.consumer = None

    # -- primitives (per library) ---------------------------------------------
    def delivery_timeout_s(self) -> float:
        """How long the library may take to settle a record (its delivery timeout)."""
        raise NotImplementedError

    def open(self):
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def produce(self, topic: str, partition: int, value: bytes):
        """Hands one record to the library; returns a handle for `wait`. Raises if refused at once."""
        raise NotImplementedError

    def wait(self, handles: list, timeout_s: float) -> list[tuple[int | None, BaseException | None]]:
        """Per handle, (offset, None) once acknowledged, or (None, error): failed or not settled in time."""
        raise NotImplementedError

    def poll_records(self) -> dict[tuple[str, int], list[tuple[int, bytes | None]]]:
        raise NotImplementedError

    def assign_tps(self, tps: list[tuple[str, int]], seek_to_beginning: bool) -> None:
        raise NotImplementedError

    def classify(self, e: BaseException) -> tuple[str, bool]:
        """(error name, definite: the library says the operation surely did not take effect)."""
        raise NotImplementedError

    def begin(self) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def reopen_producer(self) -> None:
        """A new transactional producer (and init_transactions) after the old one became unusable."""
        raise NotImplementedError

    def high_watermarks(self, keys: list[str]) -> dict[str, int]:
        raise NotImplementedError

    def positions(self, keys: list[str]) -> dict[str, int]:
        raise NotImplementedError

    # -- the workloads' ops -----------------------------------------------------
    def invoke(self, f: str, value: Any, extra: dict) -> Outcome:
        if f != "crash" and self.producer is None:
            self.open()  # a crash whose reopen failed: opened again here (an error is the op's info)
        if f == "send":
            return self.send(value)
        if f == "poll":
            return self.poll(value)
        if f == "assign":
            return self.assign(value, bool(extra.get("seek_to_beginning")))
        if f == "txn" and self.transactional_id is not None:
            return self.txn(value, bool(extra.get("abort")))
        if f == "crash":
            return self.crash()
        raise ValueError(f"the {self.LIBRARY} adapter has no op '{f}' here")

    def crash(self) -> Outcome:
        """The op `crash`: the worker's clients are dropped and opened afresh."""
        self.close()
        try:
            self.open()
        except Exception:  # noqa: BLE001 -- the cluster may be down: the next op opens again
            self.close()
        return Outcome("info", None, "crash")

    def _error(self, e: BaseException, value: Any) -> Outcome:
        name, definite = self.classify(e)
        return Outcome("fail" if definite else "info", value, name)

    def assign(self, keys: list[str], seek: bool) -> Outcome:
        try:
            self.assign_tps([key_tp(k) for k in keys], seek)
        except Exception as e:  # noqa: BLE001 -- each library raises its own classes; classify decides
            return self._error(e, keys)
        return Outcome("ok", keys)

    def poll(self, value: Any) -> Outcome:
        try:
            records = self.poll_records()
        except Exception as e:  # noqa: BLE001 -- see assign
            return self._error(e, value)
        return Outcome("ok", [["poll", _by_key(records)]])

    def send(self, mops: list) -> Outcome:
        handles = []
        for _, key, v in mops:
            topic, partition = key_tp(key)
            try:
                handles.append(self.produce(topic, partition, str(v).encode()))
            except Exception as e:  # noqa: BLE001 -- refused before the sender took it: classify decides
                name, definite = self.classify(e)
                return Outcome("fail" if not handles and definite else "info", mops, name)
        done, first_error = [], None
        for (_, key, v), (offset, err) in zip(mops, self.wait(handles, self.send_wait_s)):
            if err is not None:
                first_error = first_error or self.classify(err)[0]
                continue
            done.append(["send", key, [offset if offset is not None and offset >= 0 else None, v]])
        if first_error is not None:
            # Once the sender has a record, a later definite error does not undo an earlier attempt.
            return Outcome("info", mops, first_error)
        return Outcome("ok", done)

    def txn(self, mops: list, abort: bool) -> Outcome:
        try:
            if self.producer_broken:
                self.reopen_producer()  # init_transactions fences the old one and aborts what it left
                self.producer_broken = False
            self.begin()
        except Exception as e:  # noqa: BLE001 -- no transaction began: nothing to commit
            return self._abort(mops, None, self.classify(e)[0])
        done: list[list] = []
        sends: list[tuple[int, Any]] = []
        try:
            for mop in mops:
                if mop[0] == "send":
                    topic, partition = key_tp(mop[1])
                    sends.append((len(done), self.produce(topic, partition, str(mop[2]).encode())))
                    done.append(list(mop))
                else:
                    done.append(["poll", _by_key(self.poll_records())])
            if abort:
                return self._abort(mops, done, "aborted")
            results = self.wait([h for _, h in sends], self.send_wait_s)
            for (i, _), (offset, err) in zip(sends, results):
                if err is not None:
                    raise err
                done[i] = ["send", done[i][1], [offset if offset is not None and offset >= 0 else None, done[i][2]]]
        except Exception as e:  # noqa: BLE001 -- nothing was committed yet: abort, a definite failure
            return self._abort(mops, done, self.classify(e)[0])
        try:
            self.commit()
        except Exception as e:  # noqa: BLE001 -- the commit may or may not have landed
            return Outcome("info", mops, self.classify(e)[0])
        return Outcome("ok", done)

    def _abort(self, mops: list, done: list | None, why: str) -> Outcome:
        """`fail` even when the abort call errs: commit was never asked for. Polls that ran stay in
        the value (they are evidence); sends keep their invoke form."""
        if not self.producer_broken:
            try:
                self.abort()
            except Exception:  # noqa: BLE001 -- the next init_transactions (fencing) or the timeout aborts it
                # Replaced at the next txn, not now: the op's outcome is already known.
                self.producer_broken = True
        value = [m if m[0] == "poll" else list(m) for m in (done or [])] + \
            [list(m) for m in mops[len(done or []):] if m[0] == "send"]
        return Outcome("fail", value, why)


def _by_key(records: dict[tuple[str, int], list[tuple[int, bytes | None]]]) -> dict[str, list[list]]:
    return {tp_key(t, p): [[off, decode_value(v)] for off, v in recs] for (t, p), recs in records.items() if recs}


def error_name(e: BaseException) -> str:
    """Kafka's error name for a broker error (its class's `message`, as kafka-python's and aiokafka's
    errors carry it), else the class name."""
    msg = getattr(type(e), "message", None)
    if isinstance(msg, str) and msg.isupper():
        return msg
    if isinstance(e, TimeoutError):  # asyncio.TimeoutError is TimeoutError since 3.11
        return "timeout"
    return type(e).__name__


class TxnAdapter:
    """A transactional producer (transactional_id per worker) and a read_committed consumer; mixed in
    before a library's LogClient, whose IDEMPOTENCE_KEY and ISOLATION_KEY name the two settings."""

    def __init__(self, bootstrap: str, producer_props: dict, consumer_props: dict, *, transactional_id: str,
                 **kw) -> None:
        producer_props = {self.IDEMPOTENCE_KEY: True, "acks": "all", **producer_props}
        consumer_props = {**consumer_props, self.ISOLATION_KEY: "read_committed"}
        super().__init__(bootstrap, producer_props, consumer_props, transactional_id=transactional_id, **kw)


def deadline_left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


class GroupAdapter:
    """The group workload's ops (chaos/workloads/group.py) over a library adapter: a producer and a
    group member (subscribe mode, manual commits of its positions, committed reads); `assign` (the
    final read) leaves the group and reads with a plain consumer. Mixed in before a library's
    LogClient, which supplies `new_consumer(group_id)`, `subscribe_topics`, `consumed_positions`
    (local state, no I/O), `commit_offsets` and `committed_offsets`.

    Outcomes: subscribe / commit / committed errors are `info`. A commit rejected by the coordinator
    (rebalance, unknown member) did not move the offsets — but the libraries retry commits inside
    the call, so an earlier attempt of unknown outcome may have landed: never definite."""

    def __init__(self, bootstrap: str, producer_props: dict, consumer_props: dict, *, group: str, **kw) -> None:
        super().__init__(bootstrap, producer_props, consumer_props, **kw)
        self.group = group
        self.in_group = False  # the consumer is a member of `group` (else a plain one)
        self.subscribed = False

    def open(self):
        super().open()
        self._swap_consumer(True)
        return self

    def _swap_consumer(self, member: bool) -> None:
        old, self.consumer = self.consumer, None
        if old is not None:
            self.close_consumer(old)
        self.consumer = self.new_consumer(self.group if member else None)
        self.in_group, self.subscribed = member, False

    def prepare(self, f: str, value: Any, extra: dict) -> Any:
        if f != "commit" or self.consumer is None or not self.in_group:
            return value
        return {tp_key(t, p): off for (t, p), off in sorted(self.consumed_positions().items())}

    def invoke(self, f: str, value: Any, extra: dict) -> Outcome:
        if f == "subscribe":
            try:
                if not self.in_group or self.subscribed:
                    self._swap_consumer(True)
                self.subscribe_topics(sorted({key_tp(k)[0] for k in value}))
                self.subscribed = True
            except Exception as e:  # noqa: BLE001 -- each library raises its own classes
                return Outcome("info", value, self.classify(e)[0])
            return Outcome("ok", value)
        if f == "commit":
            if not value:
                return Outcome("ok", value)
            try:
                self.commit_offsets({key_tp(k): o for k, o in value.items()})
            except Exception as e:  # noqa: BLE001 -- see the class: never definite
                return Outcome("info", value, self.classify(e)[0])
            return Outcome("ok", value)
        if f == "committed":
            reader = self.consumer if self.in_group else self.new_consumer(self.group)
            try:
                got = self.committed_offsets(reader, [key_tp(k) for k in value])
            except Exception as e:  # noqa: BLE001 -- a read: nothing to undo
                return Outcome("info", value, self.classify(e)[0])
            finally:
                if reader is not self.consumer:
                    self.close_consumer(reader)
            return Outcome("ok", {tp_key(t, p): off for (t, p), off in got.items()})
        if f == "assign" and self.in_group:
            self._swap_consumer(False)
        return super().invoke(f, value, extra)


class EosAdapter:
    """The eos workload (chaos/workloads/eos.py) over a library adapter: an input producer, or a
    pipeline instance — a read_committed group member and a transactional producer — whose `txn` op
    polls the input, sends each record to the same partition of the output (value * STRIDE +
    attempt), adds the consumed positions with send_offsets_to_transaction and commits. Outcomes as
    brokerlab's EosClient: a commit error is `info`; anything before it aborts, rewinds the member to
    its committed offsets and is `fail`; `crash` drops the instance mid-transaction.

    A library's LogClient supplies, beyond GroupAdapter's primitives, `send_offsets(offsets)` (with
    its member's group metadata) and `seek_to(tp, offset or None for the beginning)`."""

    def __init__(self, bootstrap: str, producer_props: dict, consumer_props: dict, *, pipeline: bool, group: str,
                 transactional_id: str, input_keys: list[str], output_topic: str, attempts, **kw) -> None:
        self.pipeline = pipeline
        self.group = group
        self.output_topic = output_topic
        self.attempts = attempts  # the workload's shared counter: next() is atomic
        self.input_keys = list(input_keys)
        self.subscribed = False
        consumer_props = {**consumer_props, self.ISOLATION_KEY: "read_committed"}
        super().__init__(bootstrap, producer_props, consumer_props,
                         transactional_id=transactional_id if pipeline else None, **kw)

    def open(self):
        super().open()
        if self.pipeline:
            old, self.consumer = self.consumer, self.new_consumer(self.group)
            self.close_consumer(old)
            self.subscribed = False
        return self

    def invoke(self, f: str, value: Any, extra: dict) -> Outcome:
        if f == "txn":
            return self.step(value)
        if f == "subscribe":
            try:
                self.subscribe_topics(sorted({key_tp(k)[0] for k in value}))
                self.subscribed = True
            except Exception as e:  # noqa: BLE001 -- each library raises its own classes
                return Outcome("info", value, self.classify(e)[0])
            return Outcome("ok", value)
        if f == "crash" and self.pipeline:
            if self.subscribed and self.producer is not None:
                self.step([["poll"]], crash=True)
            return self.crash()
        if f != "crash" and self.producer is None:
            self.open()
        if f == "committed":
            reader = self.new_consumer(self.group)
            try:
                got = self.committed_offsets(reader, [key_tp(k) for k in value])
            except Exception as e:  # noqa: BLE001 -- a read: nothing to undo
                return Outcome("info", value, self.classify(e)[0])
            finally:
                self.close_consumer(reader)
            return Outcome("ok", {tp_key(t, p): off for (t, p), off in got.items()})
        return super().invoke(f, value, extra)

    def step(self, mops: list, crash: bool = False) -> Outcome:
        from chaos.workloads.eos import STRIDE
        try:
            records = {tp: recs for tp, recs in self.poll_records().items() if recs}
        except Exception as e:  # noqa: BLE001 -- a read: nothing to undo
            return Outcome("info", mops, self.classify(e)[0])
        done: list[list] = [["poll", _by_key(records)]]
        if not records:
            return Outcome("ok", done)
        sends: list[tuple[int, Any]] = []
        try:
            if self.producer_broken:
                self.reopen_producer()
                self.producer_broken = False
            self.begin()
            attempt = next(self.attempts)
            for (_, partition), recs in sorted(records.items()):
                for _, raw in recs:
                    v = int(raw) * STRIDE + attempt
                    sends.append((len(done), self.produce(self.output_topic, partition, str(v).encode())))
                    done.append(["send", tp_key(self.output_topic, partition), v])
            # The next offset to read of each partition polled: what the transaction commits for the group.
            self.send_offsets({tp: recs[-1][0] + 1 for tp, recs in records.items()})
            if crash:
                return Outcome("info", done, "crash")  # dropped as it is: never committed nor aborted
            for (i, _), (offset, err) in zip(sends, self.wait([h for _, h in sends], self.send_wait_s)):
                if err is not None:
                    raise err
                done[i] = ["send", done[i][1], [offset if offset is not None and offset >= 0 else None, done[i][2]]]
        except Exception as e:  # noqa: BLE001 -- not committed: abort and rewind, a definite failure
            self._abort_and_rewind(list(records))
            return Outcome("fail", _plain(done), self.classify(e)[0])
        try:
            self.commit()
        except Exception as e:  # noqa: BLE001 -- the commit may or may not have landed
            return Outcome("info", _plain(done), self.classify(e)[0])
        return Outcome("ok", done)

    def _abort_and_rewind(self, tps: list[tuple[str, int]]) -> None:
        if not self.producer_broken:
            try:
                self.abort()
            except Exception:  # noqa: BLE001 -- a new producer fences this one and aborts for it
                self.producer_broken = True
        # Process the batch again from the last committed offsets (as the patterns document's loop).
        for tp, off in self.committed_offsets(self.consumer, sorted(tps)).items():
            self.seek_to(tp, off)


def _plain(done: list) -> list:
    """A failed or unknown step's value: polls as read, sends in their invoke form."""
    return [m if m[0] == "poll" else ["send", m[1], m[2][1] if isinstance(m[2], list) else m[2]] for m in done]

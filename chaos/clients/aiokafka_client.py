"""aiokafka behind the workloads' client interface.

aiokafka is asyncio: each client runs its own event loop on a thread of its own (as an application's
loop keeps the producer's sender and the consumer's fetcher running between calls); the worker
thread hands it coroutines and waits, bounded. Settings are spelled with underscores; Kafka's
`retries`, `delivery.timeout.ms` and `max.block.ms` have no aiokafka setting (see `translate`).
Which errors count as definite: docs/clients.md.
"""
from __future__ import annotations

import asyncio
import threading

import aiokafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from chaos.clients import ClientUnsupported, dotted_to_underscore
from chaos.clients.base import AdapterClient, EosAdapter, GroupAdapter, Refused, TxnAdapter, error_name
from chaos.workloads import key_tp

__all__ = ["LIBRARY", "WORKLOADS", "EosClient", "GroupClient", "LogClient", "TxnClient", "translate", "version"]

LIBRARY = "aiokafka"
WORKLOADS = frozenset({"log", "txn", "group", "eos"})
MISSING = {"group-members": "members run brokerlab's client in their own processes (chaos/workloads/member.py)"}
ADAPTER_KEYS = {"max_block_ms"}  # bounds the adapter's waits on start and transaction calls
DEFAULT_REQUEST_TIMEOUT_MS = 40000


def version() -> str:
    return aiokafka.__version__


def delivery_timeout_s(producer_props: dict) -> float:
    # A batch not delivered request_timeout_ms after it was made expires (aiokafka's batch ttl).
    return int(producer_props.get("request_timeout_ms", DEFAULT_REQUEST_TIMEOUT_MS)) / 1000.0 * 2


def _retries(value):
    if int(value) == 0:
        raise ClientUnsupported("aiokafka cannot turn retries off (retries: 0): its sender retries a retriable "
                                "produce error until the batch expires")
    return None, None, (f"retries={value} left out: aiokafka retries retriable produce errors until the batch "
                        "expires (request_timeout_ms after it was made)")


def _signature_keys(cls) -> set[str]:
    import inspect
    return {n for n, p in inspect.signature(cls.__init__).parameters.items() if p.kind is p.KEYWORD_ONLY}


def translate(kind: str, props: dict) -> tuple[dict, list[str]]:
    cls = AIOKafkaProducer if kind == "producer" else AIOKafkaConsumer
    known = _signature_keys(cls) - {"loop", "bootstrap_servers", "client_id"}
    special = {}
    if kind == "producer":
        special = {
            "acks": lambda v: ("acks", v if v == "all" else int(v), None),
            "retries": _retries,
            "delivery.timeout.ms": lambda v: (None, None, (f"delivery.timeout.ms={v} left out: aiokafka has none; a "
                                                           "batch expires request_timeout_ms after it was made")),
            "max.block.ms": lambda v: ("max_block_ms", int(v), ("max.block.ms: aiokafka has none; the adapter bounds "
                                                                "its waits on start and transaction calls with it")),
        }
    return dotted_to_underscore(kind, props, known, special, LIBRARY)


class _LoopThread:
    """One asyncio loop on its own thread; `run(coro, timeout_s)` from any other thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"aiokafka-{name}", daemon=True)
        self.thread.start()

    def run(self, coro, timeout_s: float):
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout_s)
        except TimeoutError:
            fut.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5.0)
        if not self.thread.is_alive():
            self.loop.close()


class LogClient(AdapterClient):
    LIBRARY = LIBRARY
    ISOLATION_KEY = "isolation_level"
    IDEMPOTENCE_KEY = "enable_idempotence"

    def __init__(self, bootstrap: str, producer_props: dict, consumer_props: dict, **kw) -> None:
        super().__init__(bootstrap, producer_props, consumer_props, **kw)
        self.call_s = int(self.producer_props.get("max_block_ms", 60000)) / 1000.0
        # Other calls (assign, poll, positions) are bounded by the request timeout, plus slack.
        request_timeout_s = int(self.consumer_props.get("request_timeout_ms", DEFAULT_REQUEST_TIMEOUT_MS)) / 1000.0
        self.op_s = request_timeout_s + 5.0
        self.max_records = self.consumer_props.get("max_poll_records")
        self._hw_reader = None
        self.io: _LoopThread | None = None

    def delivery_timeout_s(self) -> float:
        return delivery_timeout_s(self.producer_props)

    def _run(self, coro, timeout_s: float | None = None):
        return self.io.run(coro, self.call_s if timeout_s is None else timeout_s)

    async def _start_producer(self) -> AIOKafkaProducer:
        extra = {"transactional_id": self.transactional_id} if self.transactional_id is not None else {}
        p = AIOKafkaProducer(bootstrap_servers=self.bootstrap.split(","), client_id=self.client_id,
                             **{k: v for k, v in self.producer_props.items() if k not in ADAPTER_KEYS}, **extra)
        try:
            await p.start()  # a transactional producer's InitProducerId fences an older incarnation
        except BaseException:
            await p.stop()
            raise
        return p

    async def _start_consumer(self, **over) -> AIOKafkaConsumer:
        conf = {"enable_auto_commit": False, "auto_offset_reset": "earliest", **self.consumer_props, **over}
        c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap.split(","), client_id=self.client_id, **conf)
        try:
            await c.start()
        except BaseException:
            await c.stop()
            raise
        return c

    def open(self):
        self.io = _LoopThread(self.client_id)
        try:
            self.producer = self._run(self._start_producer())
            self.consumer = self.new_consumer(None)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self.io is None:
            return
        for c in (self.producer, self.consumer, self._hw_reader):
            if c is not None:
                try:
                    self._run(c.stop(), 5.0)
                except BaseException:  # noqa: BLE001, S110 -- closing under faults may fail or hang; gone either way
                    pass
        self.producer = self.consumer = self._hw_reader = None
        self.io.stop()
        self.io = None

    def new_consumer(self, group_id: str | None) -> AIOKafkaConsumer:
        return self._run(self._start_consumer(**({"group_id": group_id} if group_id else {})))

    def close_consumer(self, c) -> None:
        try:
            self._run(c.stop(), 5.0)
        except BaseException:  # noqa: BLE001, S110 -- gone either way
            pass

    def subscribe_topics(self, topics: list[str]) -> None:
        async def subscribe():
            self.consumer.subscribe(topics=topics)
        self._run(subscribe(), self.op_s)

    def consumed_positions(self) -> dict[tuple[str, int], int]:
        async def positions():
            # What aiokafka's own auto-commit takes: positions of the assigned partitions (no I/O).
            sub = self.consumer._subscription.subscription
            if sub is None or sub.assignment is None:
                return {}
            return {(tp.topic, tp.partition): om.offset for tp, om in sub.assignment.all_consumed_offsets().items()}
        return self._run(positions(), 5.0)

    def commit_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        self._run(self.consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()}), self.op_s)

    def committed_offsets(self, reader, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        async def committed():
            return {(t, p): await reader.committed(TopicPartition(t, p)) for t, p in tps}
        return self._run(committed(), self.op_s)

    def send_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        # aiokafka's TxnOffsetCommit names the group only (no member id or generation: before KIP-447).
        self._run(self.producer.send_offsets_to_transaction(
            {TopicPartition(t, p): o for (t, p), o in offsets.items()}, self.consumer._group_id))

    def seek_to(self, tp: tuple[str, int], offset: int | None) -> None:
        async def seek():
            if offset is None:
                await self.consumer.seek_to_beginning(TopicPartition(*tp))
            else:
                self.consumer.seek(TopicPartition(*tp), offset)
        self._run(seek(), self.op_s)

    def produce(self, topic: str, partition: int, value: bytes):
        try:
            return self._run(self.producer.send(topic, value=value, partition=partition))
        except Exception as e:  # send() raised: the record never reached the accumulator
            raise Refused(error_name(e), True) from e

    def wait(self, handles: list, timeout_s: float) -> list[tuple[int | None, BaseException | None]]:
        async def settle():
            if handles:
                await asyncio.wait(handles, timeout=timeout_s)
            out = []
            for f in handles:
                if not f.done():
                    out.append((None, TimeoutError("not settled in time")))
                elif f.cancelled():
                    out.append((None, asyncio.CancelledError()))
                elif f.exception() is not None:
                    out.append((None, f.exception()))
                else:
                    out.append((f.result().offset, None))
            return out
        return self._run(settle(), timeout_s + 5.0)

    def poll_records(self) -> dict:
        got = self._run(self.consumer.getmany(timeout_ms=self.poll_ms, max_records=self.max_records),
                        self.poll_ms / 1000.0 + self.op_s)
        return {(tp.topic, tp.partition): [(r.offset, r.value) for r in recs] for tp, recs in got.items()}

    def assign_tps(self, tps: list[tuple[str, int]], seek_to_beginning: bool) -> None:
        async def assign():
            parts = [TopicPartition(t, p) for t, p in tps]
            self.consumer.assign(parts)
            if seek_to_beginning:
                await self.consumer.seek_to_beginning(*parts)
        self._run(assign(), self.op_s)

    def classify(self, e: BaseException) -> tuple[str, bool]:
        if isinstance(e, Refused):
            return e.name, e.definite
        return error_name(e), False

    def begin(self) -> None:
        async def begin():
            await self.producer.begin_transaction()
        self._run(begin())

    def commit(self) -> None:
        self._run(self.producer.commit_transaction())

    def abort(self) -> None:
        self._run(self.producer.abort_transaction())

    def reopen_producer(self) -> None:
        old, self.producer = self.producer, None
        if old is not None:
            try:
                self._run(old.stop(), 5.0)
            except BaseException:  # noqa: BLE001, S110 -- replaced either way
                pass
        self.producer = self._run(self._start_producer())

    def high_watermarks(self, keys: list[str]) -> dict[str, int]:
        if self._hw_reader is None:
            self._hw_reader = self._run(self._start_consumer(isolation_level="read_uncommitted"))
        ends = self._run(self._hw_reader.end_offsets([TopicPartition(*key_tp(k)) for k in keys]), 10.0)
        return {f"{tp.topic}/{tp.partition}": off for tp, off in ends.items()}

    def positions(self, keys: list[str]) -> dict[str, int]:
        async def positions():
            return {k: await self.consumer.position(TopicPartition(*key_tp(k))) for k in keys}
        return self._run(positions(), self.op_s)


class TxnClient(TxnAdapter, LogClient):
    """A transactional producer and a read_committed consumer (chaos/clients/base.py TxnAdapter)."""


class GroupClient(GroupAdapter, LogClient):
    """A producer and a member of the workload's consumer group (chaos/clients/base.py GroupAdapter)."""


class EosClient(EosAdapter, LogClient):
    """An eos input producer, or a pipeline instance (chaos/clients/base.py EosAdapter)."""

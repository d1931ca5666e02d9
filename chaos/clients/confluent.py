"""confluent-kafka (librdkafka) behind the workloads' client interface.

librdkafka spells its settings as Kafka does (dotted keys), so the named experiments' configs pass
through, except two Java-client keys librdkafka lacks, which the adapter itself honours:
`max.block.ms` (the timeout of its init/commit/abort_transaction calls) and `max.poll.records`
(how many messages one consume() returns). Which errors count as definite: docs/clients.md.
"""
from __future__ import annotations

import logging
import time

import confluent_kafka as ck

from chaos.clients import ClientUnsupported
from chaos.clients.base import AdapterClient, EosAdapter, GroupAdapter, Refused, TxnAdapter
from chaos.workloads import key_tp, tp_key

__all__ = ["LIBRARY", "WORKLOADS", "EosClient", "GroupClient", "LogClient", "TxnClient", "translate", "version"]

LIBRARY = "confluent-kafka"
LOG = logging.getLogger("chaos.clients.librdkafka")  # librdkafka's log lines (chaos run: logs/client.log)
WORKLOADS = frozenset({"log", "txn", "group", "eos"})
MISSING = {"group-members": "members run brokerlab's client in their own processes (chaos/workloads/member.py)"}
ADAPTER_KEYS = {"max.block.ms": "librdkafka has no max.block.ms: the adapter times its transaction calls with it",
                "max.poll.records": "librdkafka has no max.poll.records: the adapter's consume() takes at most that many"}


def version() -> str:
    return f"{ck.__version__} (librdkafka {ck.libversion()[0]})"


def delivery_timeout_s(producer_props: dict) -> float:
    """librdkafka settles every record within delivery.timeout.ms (alias message.timeout.ms)."""
    p = producer_props
    return int(p.get("delivery.timeout.ms", p.get("message.timeout.ms", 300000))) / 1000.0


def translate(kind: str, props: dict) -> tuple[dict, list[str]]:
    notes = [f"confluent-kafka {kind}: {ADAPTER_KEYS[k]}" for k in props if k in ADAPTER_KEYS]
    return dict(props), notes


TRANSACTIONAL_WORKLOADS = frozenset({"txn", "eos"})


def check_settings(workload: str, producer: dict, consumer: dict) -> None:
    """librdkafka refuses a transactional producer whose messages may outlive the transaction."""
    delivery = producer.get("delivery.timeout.ms", producer.get("message.timeout.ms"))
    if workload not in TRANSACTIONAL_WORKLOADS or delivery is None:
        return  # left unset, librdkafka lowers it to transaction.timeout.ms itself
    txn = producer.get("transaction.timeout.ms", 60000)
    if int(delivery) > int(txn):
        raise ClientUnsupported(
            f"confluent-kafka (librdkafka) refuses a transactional producer whose delivery.timeout.ms ({delivery}) "
            f"exceeds transaction.timeout.ms ({txn}); lower the one or raise the other")


class _Delivery:
    __slots__ = ("done", "error", "offset")

    def __init__(self) -> None:
        self.done = False
        self.offset: int | None = None
        self.error: BaseException | None = None

    def __call__(self, err, msg) -> None:
        self.done = True
        if err is not None:
            self.error = ck.KafkaException(err)
        else:
            self.offset = msg.offset()


class LogClient(AdapterClient):
    LIBRARY = LIBRARY
    ISOLATION_KEY = "isolation.level"
    IDEMPOTENCE_KEY = "enable.idempotence"

    def __init__(self, bootstrap: str, producer_props: dict, consumer_props: dict, **kw) -> None:
        super().__init__(bootstrap, producer_props, consumer_props, **kw)
        self.txn_timeout_s = int(self.producer_props.get("max.block.ms", 60000)) / 1000.0
        self.max_records = int(self.consumer_props.get("max.poll.records", 500))
        self._hw_reader = None

    def delivery_timeout_s(self) -> float:
        return delivery_timeout_s(self.producer_props)

    def _pconf(self) -> dict:
        conf = {"bootstrap.servers": self.bootstrap, "client.id": self.client_id, "logger": LOG,
                **{k: v for k, v in self.producer_props.items() if k not in ADAPTER_KEYS}}
        if self.transactional_id is not None:
            conf["transactional.id"] = self.transactional_id
        return conf

    def _cconf(self, **over) -> dict:
        # librdkafka wants a group.id even for assign(); this one never joins (no subscribe, no commits).
        return {"bootstrap.servers": self.bootstrap, "client.id": self.client_id, "logger": LOG,
                "group.id": f"{self.client_id}-reader",
                "enable.auto.commit": False, "auto.offset.reset": "earliest",
                **{k: v for k, v in self.consumer_props.items() if k not in ADAPTER_KEYS}, **over}

    def open(self):
        self.producer = ck.Producer(self._pconf())
        self.consumer = self.new_consumer(None)
        if self.transactional_id is not None:
            try:
                self.producer.init_transactions(self.txn_timeout_s)  # fences an older incarnation
            except BaseException:
                self.close()
                raise
        return self

    def close(self) -> None:
        if self.producer is not None:
            try:  # drop what is queued or in flight, as a crash would; no flush
                self.producer.purge(in_queue=True, in_flight=True, blocking=False)
                self.producer.poll(0)
            except Exception:  # noqa: BLE001, S110 -- gone either way
                pass
        for c in (self.consumer, self._hw_reader):
            if c is not None:
                self.close_consumer(c)
        self.producer = self.consumer = self._hw_reader = None

    def new_consumer(self, group_id: str | None):
        return ck.Consumer(self._cconf(**({"group.id": group_id} if group_id else {})))

    @staticmethod
    def close_consumer(c) -> None:
        try:
            c.close()
        except Exception:  # noqa: BLE001, S110 -- gone either way
            pass

    def subscribe_topics(self, topics: list[str]) -> None:
        self.consumer.subscribe(topics)

    def consumed_positions(self) -> dict[tuple[str, int], int]:
        return {(tp.topic, tp.partition): tp.offset for tp in self.consumer.position(self.consumer.assignment())
                if tp.offset >= 0}

    def commit_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        self.consumer.commit(offsets=[ck.TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)

    def committed_offsets(self, reader, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        out = {}
        for tp in reader.committed([ck.TopicPartition(t, p) for t, p in tps], timeout=10):
            if tp.error is not None:
                raise ck.KafkaException(tp.error)
            out[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
        return out

    def send_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        self.producer.send_offsets_to_transaction([ck.TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                                  self.consumer.consumer_group_metadata(), self.txn_timeout_s)

    def seek_to(self, tp: tuple[str, int], offset: int | None) -> None:
        self.consumer.seek(ck.TopicPartition(*tp, ck.OFFSET_BEGINNING if offset is None else offset))

    def produce(self, topic: str, partition: int, value: bytes):
        d = _Delivery()
        try:
            self.producer.produce(topic, value=value, partition=partition, on_delivery=d)
        except BufferError as e:
            raise Refused("_QUEUE_FULL", True) from e
        except ck.KafkaException as e:
            # produce() raised: the record never reached librdkafka's queue.
            raise Refused(e.args[0].name(), True) from e
        return d

    def wait(self, handles: list, timeout_s: float) -> list[tuple[int | None, BaseException | None]]:
        deadline = time.monotonic() + timeout_s
        while any(not d.done for d in handles) and time.monotonic() < deadline:
            self.producer.poll(min(0.1, max(0.0, deadline - time.monotonic())))
        return [(d.offset, d.error) if d.done else (None, TimeoutError("not settled in time")) for d in handles]

    def poll_records(self) -> dict:
        # As Kafka's poll: return what is there at once, else wait up to poll_ms for the first message
        # (consume(n, timeout) alone waits for n messages or the whole timeout).
        msgs = self.consumer.consume(self.max_records, 0)
        if not msgs:
            first = self.consumer.poll(self.poll_ms / 1000.0)
            msgs = [] if first is None else [first]
            if msgs and self.max_records > 1:
                msgs += self.consumer.consume(self.max_records - 1, 0)
        out: dict = {}
        for m in msgs:
            if m.error() is not None:
                if m.error().fatal():
                    raise ck.KafkaException(m.error())
                # Informational (transport errors, offset resets, log truncation): the consumer carries on;
                # kept in logs/client.log, since a reset moves its position.
                LOG.warning("consumer event on %s [%s] at offset %s: %s", m.topic(), m.partition(), m.offset(),
                            m.error())
                continue
            out.setdefault((m.topic(), m.partition()), []).append((m.offset(), m.value()))
        return out

    def assign_tps(self, tps: list[tuple[str, int]], seek_to_beginning: bool) -> None:
        # Kafka's assign(): a partition that stays assigned keeps fetching from its position, a new one
        # starts at the reset position a consumer without a group gets (earliest here). Done with
        # incremental_unassign/incremental_assign of the difference only, with explicit offsets:
        # re-assigning the whole set made librdkafka, under quick re-assigns, fetch a kept partition
        # again from an older assignment's start (OFFSET_INVALID's committed-offset answer, or an
        # earlier OFFSET_BEGINNING): offsets already returned came back within one assignment.
        want = list(dict.fromkeys(tps))
        current = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        drop = sorted(current - set(want)) + (sorted(current & set(want)) if seek_to_beginning else [])
        if drop:
            self.consumer.incremental_unassign([ck.TopicPartition(t, p) for t, p in drop])
        reset = str(self.consumer_props.get("auto.offset.reset", "earliest"))
        start = ck.OFFSET_BEGINNING if seek_to_beginning or reset not in ("latest", "largest", "end") else ck.OFFSET_END
        add = [tp for tp in want if tp not in current or seek_to_beginning]
        if add:
            self.consumer.incremental_assign([ck.TopicPartition(t, p, start) for t, p in add])

    def classify(self, e: BaseException) -> tuple[str, bool]:
        if isinstance(e, Refused):
            return e.name, e.definite
        if isinstance(e, ck.KafkaException) and e.args and isinstance(e.args[0], ck.KafkaError):
            # Never definite: the Python binding does not expose librdkafka's per-message persistence
            # status (rd_kafka_message_status), so a delivery error may follow an attempt that landed.
            return e.args[0].name(), False
        if isinstance(e, TimeoutError):
            return "timeout", False
        return type(e).__name__, False

    def begin(self) -> None:
        self.producer.begin_transaction()

    def commit(self) -> None:
        self.producer.commit_transaction(self.txn_timeout_s)

    def abort(self) -> None:
        self.producer.abort_transaction(self.txn_timeout_s)

    def reopen_producer(self) -> None:
        if self.producer is not None:
            try:
                self.producer.purge(in_queue=True, in_flight=True, blocking=False)
            except Exception:  # noqa: BLE001, S110 -- replaced either way
                pass
        self.producer = ck.Producer(self._pconf())
        self.producer.init_transactions(self.txn_timeout_s)

    def high_watermarks(self, keys: list[str]) -> dict[str, int]:
        if self._hw_reader is None:
            self._hw_reader = ck.Consumer(self._cconf(**{"isolation.level": "read_uncommitted"}))
        out = {}
        for k in keys:
            _, high = self._hw_reader.get_watermark_offsets(ck.TopicPartition(*key_tp(k)), timeout=5, cached=False)
            out[k] = high
        return out

    def positions(self, keys: list[str]) -> dict[str, int]:
        out = {}
        for tp in self.consumer.position([ck.TopicPartition(*key_tp(k)) for k in keys]):
            off = tp.offset
            if off < 0:
                # Nothing returned since the assign: the next offset is the log start.
                off, _ = self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            out[tp_key(tp.topic, tp.partition)] = off
        return out


class TxnClient(TxnAdapter, LogClient):
    """A transactional producer (transactional.id per worker) and a read_committed consumer
    (chaos/clients/base.py TxnAdapter)."""


class GroupClient(GroupAdapter, LogClient):
    """A producer and a member of the workload's consumer group (chaos/clients/base.py GroupAdapter)."""


class EosClient(EosAdapter, LogClient):
    """An eos input producer, or a pipeline instance (chaos/clients/base.py EosAdapter)."""

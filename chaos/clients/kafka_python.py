"""kafka-python behind the workloads' client interface.

kafka-python spells Kafka's settings with underscores (`linger.ms` -> `linger_ms`); the named
experiments' dotted keys are translated, and a key it has no setting for is refused, naming it.
Which errors count as definite: docs/clients.md.
"""
from __future__ import annotations

import time

import kafka
import kafka.errors as ke
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition

from chaos.clients import dotted_to_underscore
from chaos.clients.base import AdapterClient, EosAdapter, GroupAdapter, Refused, TxnAdapter, error_name
from chaos.workloads import key_tp

__all__ = ["LIBRARY", "WORKLOADS", "EosClient", "GroupClient", "LogClient", "TxnClient", "translate", "version"]

LIBRARY = "kafka-python"
WORKLOADS = frozenset({"log", "txn", "group", "eos"})
MISSING = {"group-members": "members run brokerlab's client in their own processes (chaos/workloads/member.py)"}


def version() -> str:
    return kafka.__version__


def delivery_timeout_s(producer_props: dict) -> float:
    return int(producer_props.get("delivery_timeout_ms", KafkaProducer.DEFAULT_CONFIG["delivery_timeout_ms"])) / 1000.0


def translate(kind: str, props: dict) -> tuple[dict, list[str]]:
    known = set(KafkaProducer.DEFAULT_CONFIG if kind == "producer" else KafkaConsumer.DEFAULT_CONFIG)
    special = {"acks": lambda v: ("acks", v if v == "all" else int(v), None)} if kind == "producer" else {}
    return dotted_to_underscore(kind, props, known, special, LIBRARY)


class LogClient(AdapterClient):
    LIBRARY = LIBRARY
    ISOLATION_KEY = "isolation_level"
    IDEMPOTENCE_KEY = "enable_idempotence"

    def __init__(self, bootstrap: str, producer_props: dict, consumer_props: dict, **kw) -> None:
        super().__init__(bootstrap, producer_props, consumer_props, **kw)
        self.max_block_ms = int(self.producer_props.get("max_block_ms", KafkaProducer.DEFAULT_CONFIG["max_block_ms"]))
        self._hw_reader = None

    def delivery_timeout_s(self) -> float:
        return delivery_timeout_s(self.producer_props)

    def _producer(self) -> KafkaProducer:
        extra = {"transactional_id": self.transactional_id} if self.transactional_id is not None else {}
        return KafkaProducer(bootstrap_servers=self.bootstrap.split(","), client_id=self.client_id,
                             **self.producer_props, **extra)

    def _consumer(self, **over) -> KafkaConsumer:
        conf = {"enable_auto_commit": False, "auto_offset_reset": "earliest", **self.consumer_props, **over}
        return KafkaConsumer(bootstrap_servers=self.bootstrap.split(","), client_id=self.client_id, **conf)

    def open(self):
        try:
            self.producer = self._producer()
            self.consumer = self.new_consumer(None)
            if self.transactional_id is not None:
                self.producer.init_transactions()  # fences an older incarnation; bounded by max_block_ms
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for c in (self.producer, self.consumer, self._hw_reader):
            if c is None:
                continue
            try:
                c.close(timeout=0) if c is self.producer else c.close(autocommit=False)
            except Exception:  # noqa: BLE001, S110 -- closing a client under faults may fail; it is gone either way
                pass
        self.producer = self.consumer = self._hw_reader = None

    def new_consumer(self, group_id: str | None) -> KafkaConsumer:
        return self._consumer(**({"group_id": group_id} if group_id else {}))

    @staticmethod
    def close_consumer(c) -> None:
        try:
            c.close(autocommit=False)
        except Exception:  # noqa: BLE001, S110 -- gone either way
            pass

    def subscribe_topics(self, topics: list[str]) -> None:
        self.consumer.subscribe(topics)

    def consumed_positions(self) -> dict[tuple[str, int], int]:
        # What kafka-python's own auto-commit takes: positions of the assigned partitions (no I/O).
        return {(tp.topic, tp.partition): om.offset
                for tp, om in self.consumer._subscription.all_consumed_offsets().items()}

    def commit_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        self.consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()})

    def committed_offsets(self, reader, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        return {(t, p): reader.committed(TopicPartition(t, p)) for t, p in tps}

    def send_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        tm = self.producer._transaction_manager
        metadata = self.consumer.group_metadata()
        self._txn_call(lambda: tm.send_offsets_to_transaction(
            {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}, metadata))

    def seek_to(self, tp: tuple[str, int], offset: int | None) -> None:
        if offset is None:
            self.consumer.seek_to_beginning(TopicPartition(*tp))
        else:
            self.consumer.seek(TopicPartition(*tp), offset)

    def produce(self, topic: str, partition: int, value: bytes):
        try:
            return self.producer.send(topic, value=value, partition=partition)
        except Exception as e:  # send() raised: the record never reached the accumulator
            raise Refused(error_name(e), True) from e

    def wait(self, handles: list, timeout_s: float) -> list[tuple[int | None, BaseException | None]]:
        deadline = time.monotonic() + timeout_s
        out = []
        for fut in handles:
            try:
                md = fut.get(timeout=max(0.0, deadline - time.monotonic()))
            except Exception as e:  # noqa: BLE001 -- classify names it; an in-flight failure is never definite
                out.append((None, e))
                continue
            out.append((md.offset, None))
        return out

    def poll_records(self) -> dict:
        got = self.consumer.poll(timeout_ms=self.poll_ms)
        return {(tp.topic, tp.partition): [(r.offset, r.value) for r in recs] for tp, recs in got.items()}

    def assign_tps(self, tps: list[tuple[str, int]], seek_to_beginning: bool) -> None:
        parts = [TopicPartition(t, p) for t, p in tps]
        self.consumer.assign(parts)
        if seek_to_beginning:
            self.consumer.seek_to_beginning(*parts)

    def classify(self, e: BaseException) -> tuple[str, bool]:
        if isinstance(e, Refused):
            return e.name, e.definite
        return error_name(e), False

    def _txn_call(self, begin) -> None:
        # commit/abort_transaction() wait without a bound; the adapter waits max_block_ms, as init does.
        result = begin()
        self.producer._sender.wakeup()
        if not result.wait(timeout_ms=self.max_block_ms):
            raise ke.KafkaTimeoutError(f"transaction call not answered within {self.max_block_ms} ms")

    def begin(self) -> None:
        self.producer.begin_transaction()

    def commit(self) -> None:
        self._txn_call(self.producer._transaction_manager.begin_commit)

    def abort(self) -> None:
        self._txn_call(self.producer._transaction_manager.begin_abort)

    def reopen_producer(self) -> None:
        old, self.producer = self.producer, None
        if old is not None:
            try:
                old.close(timeout=0)
            except Exception:  # noqa: BLE001, S110 -- replaced either way
                pass
        self.producer = self._producer()
        self.producer.init_transactions()

    def high_watermarks(self, keys: list[str]) -> dict[str, int]:
        if self._hw_reader is None:
            self._hw_reader = self._consumer(isolation_level="read_uncommitted")
        tps = [TopicPartition(*key_tp(k)) for k in keys]
        ends = self._hw_reader.end_offsets(tps)
        return {f"{tp.topic}/{tp.partition}": off for tp, off in ends.items()}

    def positions(self, keys: list[str]) -> dict[str, int]:
        return {k: self.consumer.position(TopicPartition(*key_tp(k)), timeout_ms=5000) for k in keys}


class TxnClient(TxnAdapter, LogClient):
    """A transactional producer and a read_committed consumer (chaos/clients/base.py TxnAdapter)."""


class GroupClient(GroupAdapter, LogClient):
    """A producer and a member of the workload's consumer group (chaos/clients/base.py GroupAdapter)."""


class EosClient(EosAdapter, LogClient):
    """An eos input producer, or a pipeline instance (chaos/clients/base.py EosAdapter)."""

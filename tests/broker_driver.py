"""An in-process Broker driven by hand: no threads, no sockets.

Tests build the interleavings the issue names by calling the real driver code
(`Broker`, `FetcherThread`, the servicer) and stepping in at hooks: metadata is
applied by the test, fetcher threads are recorded instead of started, ISR
changes wait in a `DeferredExecutor` until the test runs them, and the
controller is a real `Coordinator` model reached without gRPC.
"""
from __future__ import annotations

import threading

from client.common import records
from client.common.clock import ManualClock
from client.common.config import BrokerConfig
from client.common.pb import metadata_pb2 as mpb
from node.broker import Broker
from node.cluster import FAST_CONFIGS
from node.coordinator import Coordinator

TOPIC = "t"


class RecordingFetchers:
    """Stands in for FetcherManager: records roles instead of starting fetcher threads."""

    def __init__(self):
        self.following: dict[tuple[str, int], tuple[int, int]] = {}  # (topic, partition) -> (leader, epoch)

    def add(self, replica, leader_id: int, address: str, leader_epoch: int) -> None:
        self.following[(replica.topic, replica.partition)] = (leader_id, leader_epoch)

    def remove(self, replica) -> None:
        self.following.pop((replica.topic, replica.partition), None)

    def has(self, replica) -> bool:
        return (replica.topic, replica.partition) in self.following

    def shutdown(self) -> None:
        pass


class DeferredExecutor:
    """Holds submitted calls until the test runs them (an AlterPartition delayed in flight)."""

    def __init__(self):
        self.calls: list = []

    def submit(self, fn, *args):
        self.calls.append((fn, args))

    def run_all(self) -> None:
        calls, self.calls = self.calls, []
        for fn, args in calls:
            fn(*args)

    def shutdown(self, wait=True, cancel_futures=False) -> None:
        self.calls.clear()


class Context:
    """A gRPC servicer context whose caller is still waiting."""

    def is_active(self) -> bool:
        return True


class ServicerStub:
    """Calls a servicer as a gRPC stub would (request, timeout=...), without a channel."""

    def __init__(self, servicer):
        self._svc = servicer

    def __getattr__(self, name):
        method = getattr(self._svc, name)
        return lambda request, timeout=None, metadata=None: method(request, Context())


class RecordingCondition(threading.Condition):
    """A Replica's hw_cond that counts its waiters, so a test sees that a request is parked on it
    (`on_wait` may also fail a test that must not wait)."""

    def __init__(self, on_wait=None):
        super().__init__(threading.Lock())
        self.waits = 0
        self.on_wait = on_wait

    def wait(self, timeout=None):
        self.waits += 1  # under the condition's lock
        if self.on_wait is not None:
            self.on_wait()
        return super().wait(timeout)


def make_broker(tmp_path, broker_id: int = 1, configs: dict | None = None) -> Broker:
    cfg = BrokerConfig.from_props({**FAST_CONFIGS, **(configs or {})})
    b = Broker(str(tmp_path / f"broker-{broker_id}"), "127.0.0.1", 0, broker_id, "127.0.0.1:1", cfg,
               clock=ManualClock(1_000))
    b.fetchers = RecordingFetchers()
    b.isr_executor = DeferredExecutor()
    return b


def metadata(leader: int, leader_epoch: int, isr, replicas=(1, 2, 3), *, partition_epoch: int | None = None,
             broker_epochs: dict[int, int] | None = None, metadata_epoch: int = 1,
             configs: dict | None = None) -> mpb.MetadataResponse:
    """Metadata for one topic `t` with one partition; brokers 1..3 on unused addresses."""
    epochs = broker_epochs or {}
    md = mpb.MetadataResponse(metadata_epoch=metadata_epoch)
    for bid in sorted(set(replicas) | set(epochs)):
        md.brokers.add(node_id=bid, host="127.0.0.1", port=1, broker_epoch=epochs.get(bid, 10 + bid))
    t = md.topics.add(name=TOPIC)
    t.configs.update(configs or {})
    t.partitions.add(partition=0, leader=leader, leader_epoch=leader_epoch,
                     partition_epoch=leader_epoch if partition_epoch is None else partition_epoch,
                     replicas=list(replicas), isr=list(isr))
    return md


def batch(n: int = 1, *, value: bytes = b"v", producer_id: int = -1, producer_epoch: int = -1,
          base_sequence: int = -1, transactional: bool = False) -> bytes:
    return records.build_batch([(1_000 + i, None, value + str(i).encode()) for i in range(n)],
                               producer_id=producer_id, producer_epoch=producer_epoch,
                               base_sequence=base_sequence, is_transactional=transactional)


def stored_values(b: Broker, topic: str = TOPIC, partition: int = 0) -> list[tuple[int, bytes]]:
    """(offset, value) of every record in the broker's RocksDB log."""
    out = []
    for raw in b.store.iter_batches(topic, partition):
        out.extend((rec.offset, rec.value) for rec in records.decode_records(raw))
    return out


def manual_coordinator(tmp_path) -> Coordinator:
    """A real Coordinator on a ManualClock (1 s broker sessions), reached without gRPC."""
    cfg = BrokerConfig.from_props({"broker.session.timeout.ms": 1000, "broker.heartbeat.interval.ms": 100})
    return Coordinator(str(tmp_path / "coordinator"), "127.0.0.1", 0, cfg, clock=ManualClock(0))


def partition_with_lagging_follower(coord: Coordinator) -> tuple[dict[int, int], int, int, int]:
    """Brokers 1-3 registered and TOPIC (1 partition, RF 3) created with its ISR shrunk to {leader, y}
    at partition epoch 1 (x fell behind). Returns (broker epochs, leader, x, y)."""
    epochs = {bid: coord.mutate(lambda s, now, bid=bid: s.register_broker(bid, "127.0.0.1", bid, "", now))
              for bid in (1, 2, 3)}
    coord.mutate(lambda s, now: s.create_topic(TOPIC, 1, 3, {}))
    p = coord.state.topics[TOPIC].partitions[0]
    leader, x, y = p.leader, *[r for r in p.replicas if r != p.leader]
    coord.mutate(lambda s, now: s.alter_partition(leader, epochs[leader], TOPIC, 0, 0, 0, [leader, y]))
    return epochs, leader, x, y

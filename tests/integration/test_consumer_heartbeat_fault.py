"""Issue F, consumer half: heartbeats of one group member dropped or delayed beyond its session timeout.

The coordinator removes the member from its group (the other member takes every partition) while the
member's data traffic still flows; after the heal it finds out (its partitions are lost) and rejoins.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading

import pytest

from chaos.controller import ChaosController
from client import Admin, Consumer, Producer, TopicPartition
from client.common import errors
from client.common.pb import agent_pb2 as apb
from client.common.pb import agent_pb2_grpc as agrpc
from node.cluster import FAST_CONFIGS, Cluster
from tests.helpers import wait_until

PARTITIONS = 4
SESSION_MS = 2000


@pytest.fixture(scope="module")
def chaos_cluster():
    tmp = tempfile.mkdtemp(prefix="brokerlab-hbfault-")
    c = Cluster(tmp, brokers=3, port=0, configs=dict(FAST_CONFIGS)).start()
    ctl = ChaosController(c.bootstrap_servers, state_path=os.path.join(tmp, "chaos-agents.json"),
                          control_token=c.control_token)
    try:
        ctl.discover()
        yield c, ctl
    finally:
        ctl.close()
        c.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def env(chaos_cluster):
    c, ctl = chaos_cluster
    yield c, ctl
    ctl.heal()
    assert ctl.wait_healthy(60), "the cluster did not heal"


class Member:
    """One group consumer with a recording listener; a Poller thread polls it."""

    def __init__(self, bs: str, group: str, topic: str, client_id: str):
        self.client_id = client_id
        # No auto-commit: a rejected commit would tell c2 of its removal, and it would rejoin under the fault.
        self.consumer = Consumer({"bootstrap.servers": bs, "group.id": group, "client.id": client_id,
                                  "session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": 300,
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.lock = threading.Lock()
        self.events: list[tuple[str, frozenset]] = []  # listener calls, in order
        self.values: list[bytes] = []
        self.errors: list[Exception] = []
        self.owned: frozenset = frozenset()  # as the listener left it
        self.consumer.subscribe([topic], listener=self)

    # ConsumerRebalanceListener
    def on_partitions_assigned(self, tps):
        self._event("assigned", tps)

    def on_partitions_revoked(self, tps):
        self._event("revoked", tps)

    def on_partitions_lost(self, tps):
        self._event("lost", tps)

    def _event(self, kind, tps):
        with self.lock:
            self.events.append((kind, frozenset(tps)))
            self.owned = self.owned | frozenset(tps) if kind == "assigned" else self.owned - frozenset(tps)

    def poll_once(self):
        try:
            got = [r.value for r in self.consumer.poll(200)]
        except errors.KafkaError as e:  # recorded; the test asserts on them
            with self.lock:
                self.errors.append(e)
            return
        with self.lock:
            self.values.extend(got)

    def got(self, values) -> bool:
        with self.lock:
            return set(values) <= set(self.values)

    def event_count(self) -> int:
        with self.lock:
            return len(self.events)

    def events_since(self, n: int) -> list[tuple[str, frozenset]]:
        with self.lock:
            return self.events[n:]

    def close(self, timeout_s: float = 10.0) -> None:
        """close(timeout) must return (Kafka bounds close by its timeout); checked from another thread."""
        closer = threading.Thread(target=self.consumer.close, args=(timeout_s,), daemon=True)
        closer.start()
        closer.join(timeout_s + 20)
        assert not closer.is_alive(), f"{self.client_id}: close({timeout_s}) did not return"


class Poller:
    """Polls members in turn: one thread for all (as one application thread may own several consumers,
    which only works because poll(timeout) returns while a rebalance waits for the others), or one each."""

    def __init__(self, members: list[Member], one_thread: bool):
        self._stop = threading.Event()
        groups = [members] if one_thread else [[m] for m in members]
        self.threads = [threading.Thread(target=self._run, args=(g,), daemon=True) for g in groups]
        for t in self.threads:
            t.start()

    def _run(self, members):
        while not self._stop.is_set():
            for m in members:
                m.poll_once()

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads), "poll() did not return within 30 s"


def members_of(bs: str, group: str) -> dict[str, frozenset]:
    """The coordinator's view: {client_id: assigned partitions}."""
    with Admin({"bootstrap.servers": bs}) as a:
        d = a.describe_consumer_groups([group])[group]
    if d.state != "Stable":
        return {}
    return {m.client_id: frozenset(m.assignment) for m in d.members}


def produce(bs: str, topic: str, prefix: str, n: int, client_id: str = "hb-producer",
            partitions: int = PARTITIONS) -> list[bytes]:
    """Value i goes to partition i % partitions."""
    values = [f"{prefix}-{i}".encode() for i in range(n)]
    with Producer({"bootstrap.servers": bs, "acks": "all", "client.id": client_id}) as p:
        futs = [p.send(topic, v, partition=i % partitions) for i, v in enumerate(values)]
        p.flush()
        assert all(f.exception() is None for f in futs)
    return values


def only_c2_heartbeats_faulted(ctl, fault: str) -> None:
    if fault == "drop":
        ctl.heartbeat_drop(["client:c2"])
    else:
        ctl.heartbeat_delay(["client:c2"], 3 * SESSION_MS)
    rules = ctl.faults("coordinator").rules
    assert [(r.kind, r.src, r.method) for r in rules] == [(fault, "client:c2", "BrokerHeartbeat|Heartbeat")]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault,one_thread", [("drop", True), ("delay", False)], ids=["drop", "delay"])
def test_consumer_heartbeat_fault_removes_it_from_group_while_data_flows(env, fault, one_thread):
    c, ctl = env
    bs = c.bootstrap_servers
    topic, group = f"hbc-{fault}", f"hbc-group-{fault}"
    everything = frozenset(TopicPartition(topic, p) for p in range(PARTITIONS))
    with Admin({"bootstrap.servers": bs}) as a:
        a.create_topic(topic, PARTITIONS, 3)
    wait_until(ctl.healthy, 30, what=f"{topic} fully replicated")

    c1 = Member(bs, group, topic, "c1")
    c2 = Member(bs, group, topic, "c2")
    poller = Poller([c1, c2], one_thread)
    try:
        # Stable: both members, each owning half.
        wait_until(lambda: (m := members_of(bs, group)).keys() == {"c1", "c2"} and all(m.values())
                   and c1.owned == m["c1"] and c2.owned == m["c2"], 30, what="two members, stable assignment")
        assert c1.owned | c2.owned == everything and not c1.owned & c2.owned
        c2_before = c2.owned
        warm = produce(bs, topic, "warm", 20)
        wait_until(lambda: c1.got([v for i, v in enumerate(warm) if TopicPartition(topic, i % PARTITIONS)
                                   in c1.owned]) and c2.got([v for i, v in enumerate(warm)
                                                             if TopicPartition(topic, i % PARTITIONS)
                                                             in c2_before]), 30, what="both members consume")
        c1_mark = c1.event_count()

        only_c2_heartbeats_faulted(ctl, fault)

        # The coordinator expires c2's session: c1 alone owns every partition, and c1's listener saw it.
        wait_until(lambda: members_of(bs, group) == {"c1": everything}, 30, what="c2 removed, c1 owns all")
        wait_until(lambda: c1.owned == everything, 30, what="c1's listener got every partition")
        assert any(kind == "assigned" for kind, _ in c1.events_since(c1_mark))

        # c2's data traffic still flows: it never heard of its removal and keeps fetching its old partitions,
        # including records produced under its own client id.
        assert c2.owned == c2_before and c2.consumer.assignment() == c2_before
        mine = [v for i, v in enumerate(produce(bs, topic, "during", 20, client_id="c2"))
                if TopicPartition(topic, i % PARTITIONS) in c2_before]
        wait_until(lambda: c2.got(mine), 30, what="c2 fetches records while out of the group")
        assert members_of(bs, group) == {"c1": everything}  # still out: only heartbeats carry membership
        # The node's own fault service counts what its interceptor did (the agent only keeps the rules).
        spec = agrpc.FaultsStub(ctl.pool.get(ctl.node("coordinator").address)).GetFaults(apb.Empty(), timeout=5)
        assert (spec.refused if fault == "drop" else spec.delayed) > 0

        # Heal: c2's next heartbeat learns it is unknown, its partitions are lost, and it rejoins.
        c2_mark = c2.event_count()
        ctl.heal_network("heartbeat")
        wait_until(lambda: (m := members_of(bs, group)).keys() == {"c1", "c2"} and all(m.values())
                   and c1.owned == m["c1"] and c2.owned == m["c2"], 30, what="c2 rejoined, stable again")
        assert c1.owned | c2.owned == everything and not c1.owned & c2.owned
        assert [k for k, _ in c2.events_since(c2_mark)][:1] == ["lost"]
        after = produce(bs, topic, "after", 20)
        wait_until(lambda: c1.got([v for i, v in enumerate(after) if TopicPartition(topic, i % PARTITIONS)
                                   in c1.owned]) and c2.got([v for i, v in enumerate(after)
                                                             if TopicPartition(topic, i % PARTITIONS)
                                                             in c2.owned]), 30, what="both consume after heal")
        assert not c1.errors and not c2.errors, (c1.errors, c2.errors)
    finally:
        poller.stop()
        c2.close()
        c1.close()


@pytest.mark.timeout(120)
def test_close_is_bounded_when_the_coordinator_does_not_answer(env):
    """Kafka bounds close(timeout): pending async commits, the auto-commit and LeaveGroup give up in time."""
    c, ctl = env
    bs = c.bootstrap_servers
    topic, group = "hbc-close", "hbc-group-close"
    with Admin({"bootstrap.servers": bs}) as a:
        a.create_topic(topic, 2, 3)
    wait_until(ctl.healthy, 30, what=f"{topic} fully replicated")
    produce(bs, topic, "x", 10, partitions=2)
    c3 = Consumer({"bootstrap.servers": bs, "group.id": group, "client.id": "c3", "auto.offset.reset": "earliest",
                   "session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": 300})  # auto-commit on
    closed = False
    try:
        c3.subscribe([topic])
        got: list = []
        wait_until(lambda: got.extend(c3.poll(200)) or len(got) == 10, 30, what="c3 consumed")
        # Every call from c3 to the coordinator now waits far past any deadline: no answer, no refusal.
        ctl.delay(["client:c3:coordinator"], 30_000)
        c3.commit_async()  # still pending when close starts
        done = threading.Event()

        def close():
            c3.close(2)
            done.set()
        threading.Thread(target=close, daemon=True).start()
        assert done.wait(12), "close(2) did not return while the coordinator did not answer"
        closed = True
    finally:
        ctl.heal_network("delay")
        if not closed:
            c3.close(5)

"""A GroupCoordinator over a fake `__consumer_offsets` and a manual clock, for driver tests.

The driver is the real one (its writer thread included); only the log and
the clock are fakes. The fake log can fail or hold appends, and the lock can
run a hook right after a chosen release, so tests force an interleaving
instead of waiting for one.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import SimpleNamespace

from client.common import errors as E
from client.common.clock import ManualClock
from client.common.config import BrokerConfig
from client.common.murmur2 import default_partition
from client.common.pb import group_pb2 as gpb
from node import group as G
from node.group_coordinator import GroupCoordinator

WAIT_S = 10.0  # bound on every wait for a condition; never reached when the code is right


class FakeOffsetsTopic:
    """InternalTopic's interface over in-memory partitions. `fail(partition)` may return an exception
    to raise instead of appending; `hold` (an Event) parks appends until set."""

    def __init__(self, partitions: int = 3):
        self.partitions = partitions
        self.log: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(partitions)}
        self.fail: Callable[[int], Exception | None] = lambda _p: None
        self.hold: threading.Event | None = None
        self.appending = threading.Event()  # set when an append has started
        self.unavailable = None  # InternalTopic's: why the coordinator cannot serve yet

    def ensure(self) -> bool:
        return True

    def partition_for(self, key: str) -> int:
        return default_partition(key.encode(), self.partitions)

    def append(self, partition: int, entries: list[tuple[bytes, bytes]]) -> int:
        self.appending.set()
        if self.hold is not None:
            assert self.hold.wait(WAIT_S), "append held too long"
        err = self.fail(partition)
        if err is not None:
            raise err
        base = len(self.log[partition])
        self.log[partition].extend(entries)
        return base

    def read_all(self, partition: int) -> list[tuple[int, bytes, bytes]]:
        return [(i, k, v) for i, (k, v) in enumerate(self.log[partition])]

    def records(self) -> list[dict]:
        return [json.loads(v) for p in range(self.partitions) for _, v in self.log[p]]


def unknown_partitions(topics: dict[str, int], tps) -> set:
    """Coordinator.unknown_partitions over a fake cluster's {topic: partition count}."""
    return {(t, p) for t, p in tps if not 0 <= p < topics.get(t, 0)}


class HookedLock:
    """The coordinator's lock; `after_next_release(fn)` runs fn in the arming thread right after that
    thread next releases the lock (other threads' releases do not count)."""

    def __init__(self) -> None:
        self._inner = threading.Lock()
        self._hook: Callable[[], None] | None = None
        self._owner: int | None = None

    def after_next_release(self, fn: Callable[[], None]) -> None:
        self._owner, self._hook = threading.get_ident(), fn

    def acquire(self, *args, **kwargs) -> bool:
        return self._inner.acquire(*args, **kwargs)

    def release(self) -> None:
        self._inner.release()
        if self._hook is not None and threading.get_ident() == self._owner:
            hook, self._hook = self._hook, None
            hook()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class Harness:
    """One coordinator (started: loads the fake log, runs its writer) and helpers to drive it."""

    def __init__(self, topic: FakeOffsetsTopic | None = None, clock: ManualClock | None = None):
        self.clock = clock or ManualClock(start_ms=1_000)
        cfg = BrokerConfig.from_props({"group.initial.rebalance.delay.ms": 0,
                                       "group.min.session.timeout.ms": 100,
                                       "offsets.topic.num.partitions": 3})
        self.topics = {"t": 3}  # the cluster's topics: {name: partition count}
        self.node = SimpleNamespace(config=cfg, clock=self.clock,
                                    unknown_partitions=lambda tps: unknown_partitions(self.topics, tps))
        self.gc = GroupCoordinator(self.node)
        self.topic = topic or FakeOffsetsTopic()
        self.gc.topic = self.topic
        self.gc.lock = HookedLock()
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="member")
        self.gc.start()
        assert self.gc.loaded.wait(WAIT_S)

    def close(self) -> None:
        self.gc.stop()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def restarted(self) -> Harness:
        """A new coordinator over the same log (a coordinator restart)."""
        self.close()
        return Harness(self.topic, self.clock)

    def in_thread(self, fn, *args) -> Future:
        return self.pool.submit(fn, *args)

    def wait_parked(self, group_id: str, member_id: str | None, kind: str) -> None:
        """Until a JoinGroup / SyncGroup call of the member (None: of anyone) is parked."""
        for _ in range(int(WAIT_S * 100)):
            with self.gc.lock:
                if any(k[0] == group_id and k[2] == kind and member_id in (None, k[1]) for k in self.gc.parked):
                    return
            threading.Event().wait(0.01)
        raise AssertionError(f"{kind} of {member_id} never parked")

    # ---------------------------------------------------------- requests

    def join(self, group_id: str, member_id: str = "", *, instance: str | None = None,
             session_ms: int = 10_000, protocols=(("range", b"sub"),)):
        r = gpb.JoinGroupRequest(group_id=group_id, member_id=member_id, session_timeout_ms=session_ms,
                                 rebalance_timeout_ms=30_000, protocol_type="consumer", client_id="c")
        if instance is not None:
            r.group_instance_id = instance
        for name, meta in protocols:
            r.protocols.add(name=name, metadata=meta)
        return self.gc.join_group(r, "/127.0.0.1")

    def join_new(self, group_id: str, **kw):
        """A new member: the MEMBER_ID_REQUIRED round trip (dynamic members), then the join."""
        resp = self.join(group_id, **kw)
        if resp.error_code == E.MemberIdRequiredError.code:
            resp = self.join(group_id, resp.member_id, **kw)
        return resp

    def sync(self, group_id: str, member_id: str, generation_id: int, assignments: dict | None = None,
             instance: str | None = None):
        r = gpb.SyncGroupRequest(group_id=group_id, member_id=member_id, generation_id=generation_id,
                                 protocol_type="consumer", protocol_name="range")
        if instance is not None:
            r.group_instance_id = instance
        for mid, blob in (assignments or {}).items():
            r.assignments.add(member_id=mid, assignment=blob)
        return self.gc.sync_group(r)

    def stable_member(self, group_id: str, **kw) -> tuple[str, int]:
        """A member that is alone in the group, joined and synced (its assignment written)."""
        j = self.join_new(group_id, **kw)
        assert j.error_code == 0 and j.leader == j.member_id, j
        s = self.sync(group_id, j.member_id, j.generation_id, {j.member_id: b"all"}, kw.get("instance"))
        assert s.error_code == 0 and s.assignment == b"all", s
        return j.member_id, j.generation_id

    def commit(self, group_id: str, offsets: dict, member_id: str = "", generation_id: int = -1,
               instance: str | None = None):
        """OffsetCommit of {(topic, partition): offset or (offset, leader_epoch)}; standalone (assign mode)
        by default."""
        return self.gc.commit(self.commit_request(group_id, offsets, member_id, generation_id, instance))

    @staticmethod
    def commit_request(group_id: str, offsets: dict, member_id: str = "", generation_id: int = -1,
                       instance: str | None = None) -> gpb.OffsetCommitRequest:
        r = gpb.OffsetCommitRequest(group_id=group_id, member_id=member_id, generation_id=generation_id)
        if instance is not None:
            r.group_instance_id = instance
        for (topic, partition), offset in offsets.items():
            offset, *epoch = offset if isinstance(offset, tuple) else (offset,)
            p = r.partitions.add(topic=topic, partition=partition, committed_offset=offset)
            if epoch:
                p.committed_leader_epoch = epoch[0]
        return r

    def leave(self, group_id: str, member_id: str = "", instance: str | None = None):
        r = gpb.LeaveGroupRequest(group_id=group_id)
        m = r.members.add(member_id=member_id)
        if instance is not None:
            m.group_instance_id = instance
        return self.gc.leave_group(r)

    def committed(self, group_id: str) -> dict:
        return {tuple(tp): om.offset for tp, om in self.gc.fetch_offsets(group_id, None).items()
                if om is not None}


def snapshot(g: G.GroupMetadata | None):
    """What a restart must bring back of a group: state, generation, members, offsets."""
    if g is None or g.state is G.GroupState.DEAD:
        return None
    offsets = {tuple(tp): om.offset for tp, om in g.offsets.items()}
    if g.state is G.GroupState.EMPTY and not offsets and g.generation_id == 0:
        return None
    return g.state, g.generation_id, sorted(g.members), offsets


def replayed(topic: FakeOffsetsTopic, group_id: str):
    return snapshot(G.GroupMetadata.from_records(group_id, topic.records(), 0))

"""Leader side of a follower's replica fetch stream: a fetch session (Kafka's KIP-227, kept per stream).

The session remembers the follower's partitions and fetch offsets, so a message on the stream names
only what changed, and an answer carries only partitions with news. Each message is handled in two
steps: first the follower's reported positions are applied (the high watermark moves and acks=all
waiters wake before any read), then the session waits until one of its partitions changed (an append,
a high-watermark move or a role change marks it dirty through `Broker.wake`) or max_wait_ms passes.
Work per message is proportional to the partitions that changed, not to the session's size, so an
idle follower of a thousand partitions costs one empty answer per max_wait_ms.
"""
from __future__ import annotations

import threading
import time

from node import limits


class _SessionPartition:
    __slots__ = ("current_leader_epoch", "fetch_offset", "partition_max_bytes", "replica", "sent_hw")

    def __init__(self, fetch_offset: int, current_leader_epoch: int, partition_max_bytes: int):
        self.fetch_offset = fetch_offset
        self.current_leader_epoch = current_leader_epoch
        self.partition_max_bytes = partition_max_bytes
        self.sent_hw = -2  # never sent: the first evaluation answers
        self.replica = None  # the Replica whose listeners hold this session


class ReplicaFetchSession:
    """One follower stream's state. Only the stream's server thread calls `handle` and `close`;
    `on_change` comes from any thread (appends, HW moves, metadata)."""

    def __init__(self, broker, replica_id: int):
        self.b = broker
        self.replica_id = replica_id
        self.parts: dict[tuple[str, int], _SessionPartition] = {}  # owned by the stream thread
        self.cond = threading.Condition(threading.Lock())
        self.dirty: dict[tuple[str, int], None] = {}  # guarded by cond; insertion-ordered set
        # Partitions where the follower is out of the ISR: every message re-applies their position,
        # as every fetch does in Kafka, so a refused expansion (e.g. while the follower was still
        # fenced) is proposed again although an idle, caught-up follower reports nothing new.
        self.out_of_isr: set[tuple[str, int]] = set()  # owned by the stream thread
        # Partitions whose only news is a higher HW: that alone does not end the wait (it would double
        # the rounds under load); it goes with the next answer, at the latest after max_wait_ms.
        self.hw_only: set[tuple[str, int]] = set()  # owned by the stream thread

    def on_change(self, key: tuple[str, int]) -> None:
        with self.cond:
            if not self.dirty:
                self.cond.notify()
            self.dirty[key] = None

    def close(self) -> None:
        for sp in self.parts.values():
            if sp.replica is not None:
                sp.replica.remove_listener(self)
        self.parts.clear()

    def _listen(self, key, sp: _SessionPartition, r=None) -> None:
        r = self.b.replicas.get(key) if r is None else r
        if r is not sp.replica:  # first time, or the replica was made (again) since
            if sp.replica is not None:
                sp.replica.remove_listener(self)
            sp.replica = r
            if r is not None:
                r.add_listener(self)

    def handle(self, req, is_active=lambda: True):
        """One ReplicaFetchRequest: apply it, then wait for news. Returns FetchedPartition results."""
        from node.broker import FetchedPartition  # the broker module imports this one

        b = self.b
        lim = limits.fetch_limits(b.config, replica=True, max_wait_ms=req.max_wait_ms, max_bytes=req.max_bytes)
        errors_out: dict[tuple[str, int], FetchedPartition] = {}
        for p in req.forgotten:
            self.out_of_isr.discard((p.topic, p.partition))
            sp = self.parts.pop((p.topic, p.partition), None)
            if sp is not None and sp.replica is not None:
                sp.replica.remove_listener(self)
        changed = []
        for p in req.partitions:
            key = (p.topic, p.partition)
            sp = self.parts.get(key)
            if sp is None:
                sp = self.parts[key] = _SessionPartition(p.fetch_offset, p.current_leader_epoch,
                                                         p.partition_max_bytes)
            else:
                sp.fetch_offset, sp.current_leader_epoch = p.fetch_offset, p.current_leader_epoch
                sp.partition_max_bytes = p.partition_max_bytes
            self._listen(key, sp)
            changed.append(key)
        # Positions first: the follower's log end moves the high watermark now, not after a read.
        for key in dict.fromkeys([*changed, *self.out_of_isr]):  # each once
            sp = self.parts[key]
            try:
                in_isr = b.on_replica_position(key[0], key[1], self.replica_id, req.replica_epoch,
                                               sp.fetch_offset, sp.current_leader_epoch)
            except Exception as e:  # noqa: BLE001 - an error is this partition's answer
                errors_out[key] = FetchedPartition(key[0], key[1], aborted=[], error=e)
                in_isr = True  # the follower asks again after its back-off
            if in_isr:
                self.out_of_isr.discard(key)
            else:
                self.out_of_isr.add(key)
        with self.cond:
            for key in changed:
                self.dirty[key] = None
        deadline = time.monotonic() + lim.max_wait_ms / 1000.0
        while True:
            out = list(errors_out.values())
            errors_out.clear()
            out.extend(self._news(req.replica_epoch, lim, {(f.topic, f.partition) for f in out}))
            if out or b._stop.is_set() or not is_active():
                if out and self.hw_only:
                    out.extend(self._news(req.replica_epoch, lim, {(f.topic, f.partition) for f in out},
                                          self._take_hw_only()))
                return out
            with self.cond:
                while not self.dirty and not b._stop.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.cond.wait(min(left, 1.0))
            if deadline - time.monotonic() <= 0:
                return self._news(req.replica_epoch, lim, set(), self._take_hw_only())

    def _take_hw_only(self) -> dict:
        keys, self.hw_only = self.hw_only, set()
        return dict.fromkeys(keys)

    def _news(self, replica_epoch: int, lim, skip, keys: dict | None = None) -> list:
        """Reads the dirty partitions (or `keys`) that have something for the follower; the rest stay
        quiet, and those with only a new HW wait in `hw_only` unless `keys` names them."""
        from node.broker import FetchedPartition

        if keys is None:
            with self.cond:
                dirty, self.dirty = self.dirty, {}
        else:
            dirty = keys
        out = []
        total = 0
        for key in dirty:
            sp = self.parts.get(key)
            if sp is None or key in skip:
                continue
            budget = limits.partition_budget(lim, sp.partition_max_bytes, max(lim.max_bytes - total, 0))
            if budget <= 0 and total > 0:
                with self.cond:
                    self.dirty[key] = None  # no room in this answer: the next one
                continue
            r = self.b.replicas.get(key)
            if r is not sp.replica:
                # The replica appeared (or was made again) after the session first named it: listen
                # before reading, or its appends would never wake this session.
                self._listen(key, sp, r)
            if r is not None:
                m = r.model  # a torn read only costs one read that finds nothing new
                if (m.is_leader and m.leader_epoch == sp.current_leader_epoch
                        and m.log_end_offset == sp.fetch_offset):
                    if m.high_watermark == sp.sent_hw:
                        continue
                    if keys is None and sp.sent_hw != -2:
                        self.hw_only.add(key)
                        continue
            res = FetchedPartition(key[0], key[1], aborted=[])
            try:
                (res.records, res.high_watermark, res.last_stable_offset, res.log_start_offset,
                 res.log_end_offset, res.leader_epoch, res.aborted) = self.b.read_partition(
                    key[0], key[1], sp.fetch_offset, max(budget, 1), self.replica_id, 0,
                    sp.current_leader_epoch, replica_epoch=replica_epoch, report=False)
                sp.sent_hw = res.high_watermark
                total += len(res.records)
            except Exception as e:  # noqa: BLE001
                res.error = e
                sp.sent_hw = -2
            out.append(res)
        return out

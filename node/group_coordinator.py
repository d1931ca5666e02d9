"""Group coordinator driver: GroupMetadata models behind gRPC, state in `__consumer_offsets`.

Driver per STYLE.md: one lock for every group model (groups are small and
the handlers are short); no I/O under it. A handler changes a model and
queues the model's effects as one job in the same critical section, so the
log order is the order of the changes. One writer thread appends the jobs'
records with acks=all, in queue order, and only then, per job: applies what
waits for durability (a commit's offsets, the leader's assignment; a failed
write applies nothing and rolls an assignment back into a rebalance),
answers parked JoinGroup / SyncGroup calls and releases the caller.

On start a loader thread creates the topic if needed and replays it;
until it is done every group RPC answers COORDINATOR_LOAD_IN_PROGRESS.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import queue
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from client.common import errors as E
from client.common.pb import group_pb2 as gpb
from client.common.pb import group_pb2_grpc as ggrpc
from client.common.types import TopicPartition
from node import group as G
from node.internal_log import OFFSETS_TOPIC, TXN_TOPIC, InternalTopic, coordinator_not_available

log = logging.getLogger(__name__)

NONE = 0
MAX_QUEUED_JOBS = 10000
# Errors about the records themselves: the append surely wrote nothing (Kafka: INVALID_COMMIT_OFFSET_SIZE).
_RECORD_ERRORS = (E.MessageTooLargeError, E.RecordListTooLargeError, E.InvalidFetchSizeError)


class _Parked:
    """One delayed JoinGroup / SyncGroup call waiting for its response."""
    __slots__ = ("event", "response")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.response = None

    def complete(self, response) -> None:
        self.response = response
        self.event.set()


@dataclass(slots=True)
class _Job:
    group: G.GroupMetadata | None  # the model the effects came from (None: records only)
    effects: list
    done: threading.Event = field(default_factory=threading.Event)
    error: E.KafkaError | None = None


def _records(fx) -> tuple:
    if isinstance(fx, (G.PersistGroup, G.PersistAssignment)):
        return (fx.record,)
    if isinstance(fx, G.PersistOffsets):
        return fx.records
    return ()


def _write_error(e: Exception, offsets: bool) -> E.KafkaError:
    """What a caller is told about a failed append, as Kafka's storeOffsets / storeGroup map it.

    Offsets: only an error about the records themselves says they were not written; after anything
    else (a timeout, a lost leader) an attempt may have been appended, so the outcome is unknown:
    REQUEST_TIMED_OUT, as Kafka answers a timed-out acks=all append, never a definite error the
    client would record as `fail`. Group records (JoinGroup, SyncGroup, LeaveGroup, DeleteGroups):
    COORDINATOR_NOT_AVAILABLE, which Kafka's clients answer by finding the coordinator and rejoining.
    """
    if isinstance(e, _RECORD_ERRORS):
        return E.InvalidCommitOffsetSizeError(str(e)) if offsets else E.UnknownServerError(str(e))
    if offsets:
        return E.RequestTimedOutError(f"the write to {OFFSETS_TOPIC} failed, its outcome is unknown: {e}")
    return E.CoordinatorNotAvailableError(f"the write to {OFFSETS_TOPIC} failed: {e}")


class GroupCoordinator:
    def __init__(self, node):
        self.node = node
        c = node.config
        self.clock = node.clock
        self.topic = InternalTopic(node, OFFSETS_TOPIC, c.offsets_topic_num_partitions,
                                   c.offsets_topic_replication_factor, c.min_insync_replicas)
        self.lock = threading.Lock()
        self.groups: dict[str, G.GroupMetadata] = {}  # guarded by lock
        self.parked: dict[tuple[str, str, str], _Parked] = {}  # (group, member, "join"|"sync"); lock
        self.rng = random.Random()
        self.loaded = threading.Event()
        # Put only under lock (so queue order is model order); bounded by _check_backlog.
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self._stop = threading.Event()
        # Set by the transaction coordinator: (group_id, [(topic, partition)]) -> the partitions a pending
        # transaction holds offsets for (KIP-447's UNSTABLE_OFFSET_COMMIT).
        self.pending_txn_offsets: Callable[[str, list], set] | None = None
        # (group_id, transactional_id) -> the last transaction of that id whose offsets this group has
        # (commit_txn_offsets); guarded by lock, rebuilt from the log on load.
        self.txn_handed_over: dict[tuple[str, str], str] = {}

    # ------------------------------------------------------------ lifecycle

    def register(self, server) -> None:
        ggrpc.add_GroupCoordinatorServicer_to_server(GroupServicer(self), server)

    def start(self) -> None:
        threading.Thread(target=self._load, name="group-load", daemon=True).start()
        threading.Thread(target=self._write_loop, name="group-writer", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.jobs.put_nowait(None)

    def tick(self) -> None:
        if not self.loaded.is_set():
            return
        now = self.clock.monotonic_ms()
        with self.lock:
            if self.jobs.qsize() >= MAX_QUEUED_JOBS:
                return  # the timers fire on a later tick
            for g in list(self.groups.values()):
                deadline = g.next_deadline_ms()
                if deadline is not None and deadline <= now:
                    fx = g.tick(now)
                    if fx:
                        self._submit(g, fx)

    def _group_kwargs(self) -> dict:
        c = self.node.config
        return {"member_id_generator": G.rng_member_ids(self.rng),
                "initial_rebalance_delay_ms": c.group_initial_rebalance_delay_ms,
                "min_session_timeout_ms": c.group_min_session_timeout_ms,
                "max_session_timeout_ms": c.group_max_session_timeout_ms}

    def _new_group(self, group_id: str) -> G.GroupMetadata:
        return G.GroupMetadata(group_id, **self._group_kwargs())

    def _load(self) -> None:
        """Replays `__consumer_offsets` into fresh models (Kafka's loadGroupsAndOffsets)."""
        while not self._stop.is_set():
            try:
                if self.topic.ensure():
                    break
            except Exception:  # the controller may still be settling
                log.exception("creating %s failed", OFFSETS_TOPIC)
            self._stop.wait(0.2)
        while not self._stop.is_set():
            try:
                recs: list[dict] = []
                for p in range(self.topic.partitions):
                    for _, _key, value in self.topic.read_all(p):
                        if value:
                            recs.append(json.loads(value))
                break
            except E.KafkaError as e:
                log.warning("loading %s: %s; retrying", OFFSETS_TOPIC, e)
        else:
            return
        now = self.clock.monotonic_ms()
        kwargs = self._group_kwargs()
        with self.lock:
            for gid in dict.fromkeys(r.get("group_id") for r in recs):
                g = G.GroupMetadata.from_records(gid, recs, now, **kwargs)
                if g is not None:
                    self.groups[gid] = g
            self.txn_handed_over = G.txn_handed_over_from_records(recs)
        log.info("Finished loading %d records of %s: %d groups", len(recs), OFFSETS_TOPIC, len(self.groups))
        self.loaded.set()

    # --------------------------------------------------------------- writer

    def _check_backlog(self) -> None:
        """Caller holds the lock, before changing a model: refuse while the writer is far behind."""
        if self.jobs.qsize() >= MAX_QUEUED_JOBS:
            raise E.CoordinatorNotAvailableError(f"{MAX_QUEUED_JOBS} writes to {OFFSETS_TOPIC} are queued")

    def _submit(self, group: G.GroupMetadata | None, effects) -> _Job:
        """Caller holds the lock, in the critical section that produced the effects."""
        job = _Job(group, list(effects))
        self.jobs.put_nowait(job)
        return job

    def _wait(self, job: _Job, timeout_s: float = 30.0) -> None:
        """Until the job's records are replicated; raises what the append raised."""
        if not job.done.wait(timeout_s):
            raise E.RequestTimedOutError(f"writing {OFFSETS_TOPIC} timed out")
        if job.error is not None:
            raise job.error

    def _write_loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            batch = [job]
            while len(batch) < 256:
                try:
                    nxt = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._stop.set()
                    break
                batch.append(nxt)
            self._write(batch)
            if self._stop.is_set():
                return

    def _write(self, batch: list[_Job]) -> None:
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        touched: list[set[int]] = []
        for job in batch:
            parts: set[int] = set()
            for fx in job.effects:
                for rec in _records(fx):
                    part = self.topic.partition_for(rec["group_id"])
                    parts.add(part)
                    by_partition.setdefault(part, []).append(
                        (G.record_key(rec).encode(), json.dumps(rec, sort_keys=True).encode()))
            touched.append(parts)
        failed: dict[int, Exception] = {}
        for part, entries in by_partition.items():
            try:
                self.topic.append(part, entries)
            except Exception as e:  # noqa: BLE001 - reported to every job that wrote to the partition
                log.error("could not write group state to %s-%d: %s", OFFSETS_TOPIC, part, e)
                failed[part] = e
        for job, parts in zip(batch, touched):
            cause = next((failed[p] for p in sorted(parts) if p in failed), None)
            if cause is not None:
                job.error = _write_error(cause, any(isinstance(fx, G.PersistOffsets) for fx in job.effects))
            self._after_write(job)

    def _after_write(self, job: _Job) -> None:
        """Applies what waited for the write (nothing if it failed), then answers."""
        g = job.group
        if g is not None:
            now = self.clock.monotonic_ms()
            with self.lock:
                follow: list = []
                for fx in job.effects:
                    if isinstance(fx, G.PersistOffsets) and job.error is None:
                        g.on_offsets_stored(fx.records)
                    elif isinstance(fx, G.PersistAssignment):
                        # As Kafka's storeGroup: a failed write reaches the members as COORDINATOR_NOT_AVAILABLE.
                        code = NONE if job.error is None else E.CoordinatorNotAvailableError.code
                        follow += g.on_assignment_stored(fx.generation_id, fx.assignments, code, now)
                if follow:
                    self._submit(g, follow)
        self._complete_parked(job.effects)
        job.done.set()

    def _complete_parked(self, effects: list) -> None:
        for fx in effects:
            if isinstance(fx, G.JoinComplete):
                kind, responses = "join", fx.responses
            elif isinstance(fx, G.SyncComplete):
                kind, responses = "sync", fx.responses
            else:
                if isinstance(fx, (G.MemberRemoved, G.RebalanceStarted)):
                    log.info("%s", fx)
                continue
            for resp in responses:
                with self.lock:
                    # The group id is not in the response: find the parked call by member.
                    keys = [k for k in self.parked if k[1] == resp.member_id and k[2] == kind]
                    waiters = [self.parked.pop(k) for k in keys]
                for w in waiters:
                    w.complete(resp)

    # ------------------------------------------------------------- handlers

    def _check_loaded(self) -> None:
        """COORDINATOR_NOT_AVAILABLE while the topic cannot be created (too few brokers) or has no leader,
        then COORDINATOR_LOAD_IN_PROGRESS until it is read back, as Kafka."""
        if not self.loaded.is_set():
            raise self.topic.unavailable or E.CoordinatorLoadInProgressError(f"{OFFSETS_TOPIC} is still loading")

    def _group(self, group_id: str, create: bool) -> G.GroupMetadata | None:
        """Caller holds the lock. A Dead group is replaced by a fresh one on create."""
        g = self.groups.get(group_id)
        if (g is None or g.state is G.GroupState.DEAD) and create:
            g = self.groups[group_id] = self._new_group(group_id)
        return g

    def _park(self, group_id: str, member_id: str, kind: str) -> _Parked:
        p = _Parked()
        old = self.parked.get((group_id, member_id, kind))
        if old is not None:
            old.complete(None)  # superseded by the member's retry
        self.parked[(group_id, member_id, kind)] = p
        return p

    def join_group(self, r: gpb.JoinGroupRequest, client_host: str = "", *,
                   require_known_member_id: bool = True) -> G.JoinGroupResponse:
        """require_known_member_id: KIP-394 (JoinGroup v4+, and every gRPC client)."""
        self._check_loaded()
        if not r.group_id:
            raise E.InvalidGroupIdError("group.id must not be empty")
        now = self.clock.monotonic_ms()
        inst = r.group_instance_id if r.HasField("group_instance_id") else None
        with self.lock:
            self._check_backlog()
            g = self._group(r.group_id, create=True)
            res = g.handle_join_group(r.member_id, inst, r.client_id, client_host, r.session_timeout_ms,
                                      r.rebalance_timeout_ms, r.protocol_type,
                                      [(p.name, p.metadata) for p in r.protocols], now,
                                      require_known_member_id=require_known_member_id)
            parked = self._park(r.group_id, res.member_id, "join") if res.pending else None
            job = self._submit(g, res.effects) if res.effects else None
        return self._finish(res, parked, job, r.rebalance_timeout_ms)

    def sync_group(self, r: gpb.SyncGroupRequest) -> G.SyncGroupResponse:
        self._check_loaded()
        now = self.clock.monotonic_ms()
        inst = r.group_instance_id if r.HasField("group_instance_id") else None
        with self.lock:
            self._check_backlog()
            g = self._group(r.group_id, create=False)
            if g is None:
                return G.SyncGroupResponse(r.member_id, E.UnknownMemberIdError.code)
            assignments = {a.member_id: a.assignment for a in r.assignments} if r.assignments else None
            res = g.handle_sync_group(r.member_id, r.generation_id, inst, assignments, now)
            parked = self._park(r.group_id, res.member_id, "sync") if res.pending else None
            job = self._submit(g, res.effects) if res.effects else None
            timeout_ms = max((m.rebalance_timeout_ms for m in g.members.values()), default=30000)
        return self._finish(res, parked, job, timeout_ms)

    def _finish(self, res, parked: _Parked | None, job: _Job | None, timeout_ms: int):
        """Answers once the result's records are written: now, or when the parked call completes
        (its completion comes after the write, carrying the write's error if it failed)."""
        if parked is None:
            if job is not None:
                self._wait(job)
            return res.response
        if not parked.event.wait(timeout_ms / 1000.0 + 5) or parked.response is None:
            with self.lock:
                for k, v in list(self.parked.items()):
                    if v is parked:
                        del self.parked[k]
            return _timeout_response(res)
        return parked.response

    def heartbeat(self, r: gpb.HeartbeatRequest) -> int:
        self._check_loaded()
        inst = r.group_instance_id if r.HasField("group_instance_id") else None
        with self.lock:
            g = self._group(r.group_id, create=False)
            if g is None:
                return E.UnknownMemberIdError.code
            return g.handle_heartbeat(r.member_id, r.generation_id, inst, self.clock.monotonic_ms()).error_code

    def leave_group(self, r: gpb.LeaveGroupRequest) -> G.LeaveGroupResult:
        self._check_loaded()
        idents = [G.MemberIdentity(m.member_id, m.group_instance_id if m.HasField("group_instance_id") else None)
                  for m in r.members]
        with self.lock:
            self._check_backlog()
            g = self._group(r.group_id, create=False)
            if g is None:
                return G.LeaveGroupResult(NONE, tuple(G.LeaveMemberResult(i.member_id, i.group_instance_id,
                                                                          E.UnknownMemberIdError.code)
                                                      for i in idents))
            res = g.handle_leave_group(idents, self.clock.monotonic_ms())
            job = self._submit(g, res.effects) if res.effects else None
        if job is not None:
            self._wait(job)
        return res

    def commit(self, r: gpb.OffsetCommitRequest) -> G.CommitResult:
        """OffsetCommit: readable by OffsetFetch only once written; an answer after a write whose outcome
        is unknown is REQUEST_TIMED_OUT (indefinite), never a definite error.

        As Kafka's KafkaApis: a partition that does not exist is answered UNKNOWN_TOPIC_OR_PARTITION
        and the others are committed; when none exists the group is not touched."""
        offsets = {TopicPartition(p.topic, p.partition): (
                       p.committed_offset, p.committed_metadata,
                       p.committed_leader_epoch if p.HasField("committed_leader_epoch") else -1)
                   for p in r.partitions}
        unknown = {tp: E.UnknownTopicOrPartitionError.code for tp in self.node.unknown_partitions(offsets)}
        if unknown and len(unknown) == len(offsets):
            return G.CommitResult(NONE, unknown)
        offsets = {tp: v for tp, v in offsets.items() if tp not in unknown}
        self._check_loaded()
        inst = r.group_instance_id if r.HasField("group_instance_id") else None
        # Sessions run on the monotonic clock; the stored commit time is wall-clock time.
        now, wall_ms = self.clock.monotonic_ms(), self.clock.wall_ms()
        with self.lock:
            self._check_backlog()
            g = self._group(r.group_id, create=True)
            res = g.commit_offsets(r.member_id, r.generation_id, offsets, now, commit_timestamp_ms=wall_ms,
                                   group_instance_id=inst)
            job = self._submit(g, res.effects) if res.effects else None
        if job is not None:
            self._wait(job)
        return dataclasses.replace(res, partitions={**res.partitions, **unknown}) if unknown else res

    def unstable_offsets(self, group_id: str, tps: list[TopicPartition]) -> set:
        """The partitions whose offsets a pending transaction may still change (OffsetFetch require_stable).

        Ask before reading the offsets: a transaction that is not pending now has handed its offsets over.
        """
        check = self.pending_txn_offsets
        if check is None or not tps:
            return set()
        return {TopicPartition(*tp) for tp in check(group_id, [tuple(tp) for tp in tps])}

    def commit_txn_offsets(self, group_id: str, offsets: dict, txn: tuple[str, str] | None = None) -> None:
        """A committed transaction's offsets, {(topic, partition): (offset, metadata[, leader_epoch])}: applied and persisted
        (acks=all) or a KafkaError. No member / generation check: the transaction's fencing covers it.

        `txn` = (transactional_id, the transaction's identity) makes it idempotent across restarts: the
        transaction coordinator repeats the call after a restart, and by then newer commits may have
        replaced these offsets. A mark written in the same batch as the offsets records the last
        transaction of that id handed to this group; a repeat of that transaction changes nothing."""
        self._check_loaded()
        now = self.clock.wall_ms()
        with self.lock:
            if txn is not None and self.txn_handed_over.get((group_id, txn[0])) == txn[1]:
                return
            g = self._group(group_id, create=True)
            recs = [g._offset_record(topic, partition, G.OffsetAndMetadata(int(offset), metadata or "", now,
                                                                            int(epoch[0]) if epoch else -1))
                    for (topic, partition), (offset, metadata, *epoch) in offsets.items()]
            if txn is not None:
                recs.append(G.txn_handed_over_record(group_id, *txn))
            job = self._submit(g, [G.PersistOffsets(tuple(recs))])  # applied once written, in log order
        self._wait(job)
        if txn is not None:
            with self.lock:  # only once durable: a failed write is retried in full
                self.txn_handed_over[(group_id, txn[0])] = txn[1]

    def txn_offset_commit_error(self, group_id: str, member_id: str, generation_id: int) -> E.KafkaError | None:
        """KIP-447: TxnOffsetCommit from a member that is not in the group's current generation fails."""
        with self.lock:
            g = self.groups.get(group_id)
            code = g._commit_error(member_id, generation_id, None) if g is not None else \
                E.IllegalGenerationError.code
        return E.for_code(code, f"group {group_id} member {member_id} generation {generation_id}") if code else None

    def fetch_offsets(self, group_id: str, tps: list[TopicPartition] | None):
        self._check_loaded()
        with self.lock:
            g = self.groups.get(group_id)
            if g is None:
                return {tp: None for tp in tps or []}
            return g.committed(tps)

    def list_groups(self) -> list[tuple[str, str, str]]:
        self._check_loaded()
        with self.lock:
            return [(g.group_id, g.protocol_type or "consumer", g.state.value)
                    for g in self.groups.values() if g.state is not G.GroupState.DEAD]

    def describe(self, group_id: str) -> G.GroupDescription | None:
        self._check_loaded()
        with self.lock:
            g = self.groups.get(group_id)
            return g.describe() if g is not None else None

    def delete(self, group_id: str) -> int:
        self._check_loaded()
        with self.lock:
            self._check_backlog()
            g = self.groups.get(group_id)
            if g is None:
                return E.GroupIdNotFoundError.code
            res = g.delete()
            if res.error_code == NONE:
                del self.groups[group_id]
            job = self._submit(g, res.effects) if res.effects else None
        if job is not None:
            self._wait(job)
        return res.error_code


def _timeout_response(res):
    """A parked call not answered in time (or superseded): the member rejoins."""
    cls = G.JoinGroupResponse if isinstance(res, G.JoinResult) else G.SyncGroupResponse
    return cls(res.member_id, E.RebalanceInProgressError.code)


# ---------------------------------------------------------------- servicer

def _peer_host(peer: str) -> str:
    """"ipv4:127.0.0.1:5432" -> "/127.0.0.1", as Kafka prints client hosts."""
    parts = (peer or "").split(":")
    return "/" + ":".join(parts[1:-1]) if len(parts) >= 3 else "/" + (peer or "unknown")


def _error_fields(e: E.KafkaError) -> dict:
    return {"error_code": e.code, "error_message": e.message}


def _msg(code: int) -> str:
    return "" if code == NONE else E.class_for_code(code).name


def _add_member(members, group_instance_id: str | None, **fields) -> None:
    """Appends one member; group_instance_id is an optional proto field, set only for static members."""
    pm = members.add(**fields)
    if group_instance_id is not None:
        pm.group_instance_id = group_instance_id


class GroupServicer(ggrpc.GroupCoordinatorServicer):
    """Translates between the wire and the driver; decides nothing."""

    def __init__(self, gc: GroupCoordinator):
        self.gc = gc

    def FindCoordinator(self, request, context):
        node = self.gc.node
        err = coordinator_not_available(node.metadata([OFFSETS_TOPIC, TXN_TOPIC]), request.key_type,
                                        request.key, node.config)
        if err is not None:
            return gpb.FindCoordinatorResponse(node_id=-1, **_error_fields(err))
        return gpb.FindCoordinatorResponse(node_id=-1, host=node.host, port=node.port)

    def JoinGroup(self, request, context):
        try:
            r = self.gc.join_group(request, _peer_host(context.peer()))
        except E.KafkaError as e:
            return gpb.JoinGroupResponse(member_id=request.member_id, **_error_fields(e))
        out = gpb.JoinGroupResponse(error_code=r.error_code, error_message=_msg(r.error_code),
                                    generation_id=r.generation_id, protocol_type=r.protocol_type or "",
                                    protocol_name=r.protocol_name or "", leader=r.leader, member_id=r.member_id,
                                    skip_assignment=r.skip_assignment)
        for m in r.members:
            _add_member(out.members, m.group_instance_id, member_id=m.member_id, metadata=m.metadata)
        return out

    def SyncGroup(self, request, context):
        try:
            r = self.gc.sync_group(request)
        except E.KafkaError as e:
            return gpb.SyncGroupResponse(**_error_fields(e))
        return gpb.SyncGroupResponse(error_code=r.error_code, error_message=_msg(r.error_code),
                                     protocol_type=r.protocol_type or "", protocol_name=r.protocol_name or "",
                                     assignment=r.assignment)

    def Heartbeat(self, request, context):
        try:
            code = self.gc.heartbeat(request)
        except E.KafkaError as e:
            return gpb.HeartbeatResponse(**_error_fields(e))
        return gpb.HeartbeatResponse(error_code=code, error_message=_msg(code))

    def LeaveGroup(self, request, context):
        try:
            r = self.gc.leave_group(request)
        except E.KafkaError as e:
            return gpb.LeaveGroupResponse(**_error_fields(e))
        out = gpb.LeaveGroupResponse(error_code=r.error_code, error_message=_msg(r.error_code))
        for m in r.members:
            _add_member(out.members, m.group_instance_id, member_id=m.member_id, error_code=m.error_code)
        return out

    def OffsetCommit(self, request, context):
        try:
            r = self.gc.commit(request)
        except E.KafkaError as e:
            out = gpb.OffsetCommitResponse(**_error_fields(e))
            for p in request.partitions:
                out.partitions.add(topic=p.topic, partition=p.partition, error_code=e.code)
            return out
        out = gpb.OffsetCommitResponse(error_code=r.error_code, error_message=_msg(r.error_code))
        for (topic, partition), code in r.partitions.items():
            out.partitions.add(topic=topic, partition=partition, error_code=code)
        return out

    def OffsetFetch(self, request, context):
        tps = [TopicPartition(p.topic, p.partition) for p in request.partitions] or None
        try:
            unstable = self.gc.unstable_offsets(request.group_id, tps) if request.require_stable and tps else set()
            offsets = self.gc.fetch_offsets(request.group_id, tps)
        except E.KafkaError as e:
            return gpb.OffsetFetchResponse(**_error_fields(e))
        out = gpb.OffsetFetchResponse()
        for (topic, partition), om in sorted(offsets.items()):
            if (topic, partition) in unstable:
                out.partitions.add(topic=topic, partition=partition, committed_offset=-1, committed_leader_epoch=-1,
                                   error_code=E.UnstableOffsetCommitError.code)
            elif om is None:
                out.partitions.add(topic=topic, partition=partition, committed_offset=-1, committed_leader_epoch=-1)
            else:
                out.partitions.add(topic=topic, partition=partition, committed_offset=om.offset,
                                   metadata=om.metadata, commit_timestamp_ms=om.commit_timestamp_ms,
                                   committed_leader_epoch=om.leader_epoch)
        return out

    def ListGroups(self, request, context):
        try:
            groups = self.gc.list_groups()
        except E.KafkaError as e:
            return gpb.ListGroupsResponse(**_error_fields(e))
        wanted = {s.lower() for s in request.states_filter}
        out = gpb.ListGroupsResponse()
        for gid, ptype, state in sorted(groups):
            if not wanted or state.lower() in wanted:
                out.groups.add(group_id=gid, protocol_type=ptype, group_state=state)
        return out

    def DescribeGroups(self, request, context):
        out = gpb.DescribeGroupsResponse()
        for gid in request.group_ids:
            try:
                d = self.gc.describe(gid)
            except E.KafkaError as e:
                out.groups.add(group_id=gid, **_error_fields(e))
                continue
            if d is None:  # as Kafka: an unknown group is described as Dead
                out.groups.add(group_id=gid, group_state=G.GroupState.DEAD.value)
                continue
            pg = out.groups.add(group_id=gid, group_state=d.state.value, protocol_type=d.protocol_type,
                                protocol_data=d.protocol)
            for m in d.members:
                _add_member(pg.members, m.group_instance_id, member_id=m.member_id, client_id=m.client_id,
                            client_host=m.client_host, member_metadata=m.metadata, member_assignment=m.assignment)
        return out

    def DeleteGroups(self, request, context):
        out = gpb.DeleteGroupsResponse()
        for gid in request.group_ids:
            try:
                code = self.gc.delete(gid)
            except E.KafkaError as e:
                out.results.add(group_id=gid, **_error_fields(e))
                continue
            out.results.add(group_id=gid, error_code=code, error_message=_msg(code))
        return out

"""Consumer group membership: Kafka's ConsumerCoordinator on the classic protocol.

The application thread (inside Consumer.poll) finds the coordinator, runs
JoinGroup / SyncGroup (the leader computes the assignment with the chosen
assignor), calls the rebalance listener and auto-commits. A JoinGroup waits
for every member to rejoin, so, as in Kafka, it stays in flight across polls
and poll(timeout) returns by its deadline. A background
heartbeat thread keeps the session alive, asks for a rejoin on
REBALANCE_IN_PROGRESS, and leaves the group when the application has not
polled for max.poll.interval.ms (as Kafka's client does).

Eager protocol: everything owned is revoked before joining. Cooperative
(KIP-429): only partitions taken away are revoked after SyncGroup, and a
follow-up rebalance hands them to their new owner.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

from client import assignors as A
from client.common import errors as E
from client.common.network import transport_error
from client.common.pb import group_pb2 as gpb
from client.common.pb import group_pb2_grpc as ggrpc
from client.common.types import OffsetAndMetadata, TopicPartition

log = logging.getLogger(__name__)

PROTOCOL_TYPE = "consumer"
RETRY_BACKOFF_S = 0.1


@dataclass(frozen=True, slots=True)
class ConsumerGroupMetadata:
    """What Producer.send_offsets_to_transaction needs of the group (KIP-447)."""
    group_id: str
    generation_id: int = -1
    member_id: str = ""
    group_instance_id: str | None = None


class ConsumerCoordinator:
    def __init__(self, consumer):
        self.consumer = consumer
        c = consumer.config
        self.config = c
        self.group_id: str = c.group_id
        self.group_instance_id: str | None = c.group_instance_id or None
        self.assignors = [A.get_assignor(n) for n in c.partition_assignment_strategy]
        if not self.assignors:
            raise E.ConfigError("partition.assignment.strategy must name at least one assignor")
        # Cooperative only when every configured assignor supports it, as Kafka decides.
        self.protocol = A.COOPERATIVE if all(A.COOPERATIVE in a.supported_protocols
                                             for a in self.assignors) else A.EAGER
        self.session_timeout_ms = c.session_timeout_ms
        self.rebalance_timeout_ms = c.rebalance_timeout_ms or c.max_poll_interval_ms
        self.subscription: set[str] = set()
        self.pattern: re.Pattern | None = None
        self.listener = None
        # Shared with the heartbeat thread; guarded by lock.
        self.lock = threading.RLock()
        self.member_id = ""
        self.generation_id = -1
        self.protocol_name: str | None = None
        self.stable = False  # joined and synced; heartbeats run
        self.rejoin_needed = True
        self.lost = False  # the coordinator dropped us: partitions are lost, not revoked
        self.last_poll_s = time.monotonic()
        self._coordinator: str | None = None
        # The JoinGroup / SyncGroup in flight: (rpc name, grpc future, generation). Application thread only.
        self._inflight: tuple[str, grpc.Future, int] | None = None
        self._closing = False  # close() has started: no metadata refresh beyond its deadline
        self._closed = threading.Event()
        self._hb_thread: threading.Thread | None = None
        self._async = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit-async")
        self._next_auto_commit_s = time.monotonic() + c.auto_commit_interval_ms / 1000.0
        self._next_metadata_check_s = 0.0
        self._partitions_snapshot: dict[str, int] = {}
        self._last_assignment: list[TopicPartition] = []  # eager: what we owned before revoking

    # ------------------------------------------------------------ coordinator

    def _stub(self, timeout_s: float = 5.0) -> ggrpc.GroupCoordinatorStub:
        if self._coordinator is None:
            addr = self.consumer.metadata.controller_address()
            resp = ggrpc.GroupCoordinatorStub(self.consumer.pool.get(addr)).FindCoordinator(
                gpb.FindCoordinatorRequest(key=self.group_id), timeout=min(5.0, max(timeout_s, 0.1)))
            if resp.error_code:
                raise E.for_code(resp.error_code, resp.error_message)
            self._coordinator = f"{resp.host}:{resp.port}"
        return ggrpc.GroupCoordinatorStub(self.consumer.pool.get(self._coordinator))

    def _mark_coordinator_unknown(self) -> None:
        self._coordinator = None
        if self._closing:
            return  # a refresh could outlast close()'s timeout; nothing needs the coordinator again
        try:
            self.consumer.metadata.refresh()
        except E.KafkaError:
            pass

    def _rpc(self, name: str, request, timeout_s: float):
        """One call; transport failures become indefinite KafkaErrors and forget the coordinator."""
        try:
            return getattr(self._stub(timeout_s), name)(request, timeout=timeout_s)
        except grpc.RpcError as e:
            self._mark_coordinator_unknown()
            raise transport_error(e, f"group coordinator ({name})") from None

    def _send(self, name: str, request, timeout_s: float, generation_id: int = -1) -> None:
        """Starts a JoinGroup / SyncGroup whose answer poll() collects, now or in a later poll."""
        try:
            fut = getattr(self._stub(), name).future(request, timeout=timeout_s)
        except grpc.RpcError as e:
            self._mark_coordinator_unknown()
            raise transport_error(e, f"group coordinator ({name})") from None
        self._inflight = (name, fut, generation_id)

    def _cancel_inflight(self) -> None:
        if self._inflight is not None:
            self._inflight[1].cancel()
            self._inflight = None

    # ------------------------------------------------------------ subscription

    def subscribed(self) -> bool:
        return bool(self.subscription) or self.pattern is not None

    def subscribe(self, topics=None, pattern=None, listener=None) -> None:
        if self.consumer._assigned and not self.subscribed():
            raise E.IllegalStateError("Subscription to topics and manual assignment are mutually exclusive")
        if (topics is None) == (pattern is None):
            raise E.IllegalStateError("subscribe() takes topics or pattern, not both and not neither")
        if isinstance(topics, str):
            topics = [topics]
        with self.lock:
            self.listener = listener
            if pattern is not None:
                self.pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
                self.subscription = self._matching_topics()
            else:
                bad = [t for t in topics if not t or not isinstance(t, str)]
                if bad:
                    raise E.InvalidTopicError(f"invalid topic names in subscription: {bad}")
                self.pattern = None
                self.subscription = set(topics)
            self.rejoin_needed = True
        self._ensure_heartbeat_thread()

    def _matching_topics(self) -> set[str]:
        topics = self.consumer.list_topics()
        return {t for t in topics if self.pattern.fullmatch(t)}

    def unsubscribe(self) -> None:
        if not self.subscribed():
            return
        self._cancel_inflight()
        self._revoke_all("unsubscribe")
        self._leave("the consumer unsubscribed")
        with self.lock:
            self.subscription = set()
            self.pattern = None

    # -------------------------------------------------------------- poll loop

    def poll(self, deadline: float) -> None:
        """Application thread: keep membership current, then auto-commit."""
        self.last_poll_s = time.monotonic()
        if not self.subscribed():
            self._maybe_auto_commit()
            return
        self._maybe_check_metadata()
        if self.lost:
            self._on_lost()
        while self.rejoin_needed or not self.stable:
            try:
                if not self._join_step(deadline):
                    return  # the call stays in flight; a later poll collects its answer
            except E.KafkaError as e:
                if not (e.retriable or isinstance(e, (E.UnknownMemberIdError, E.IllegalGenerationError,
                                                      E.RebalanceInProgressError))):
                    raise
                log.info("JoinGroup/SyncGroup of group %s failed (%s); retrying", self.group_id, e)
                if time.monotonic() >= deadline:
                    return
                time.sleep(RETRY_BACKOFF_S)
            if self.lost:
                self._on_lost()
            if time.monotonic() >= deadline and not self.stable:
                return
        self._maybe_auto_commit()

    def on_records_returned(self) -> None:
        self.last_poll_s = time.monotonic()

    def _maybe_check_metadata(self) -> None:
        """A pattern's matches and partition counts are re-read now and then; a change rejoins."""
        now = time.monotonic()
        if now < self._next_metadata_check_s:
            return
        self._next_metadata_check_s = now + 3.0
        try:
            if self.pattern is not None:
                matched = self._matching_topics()
                if matched != self.subscription:
                    log.info("Subscribed topics of group %s changed to %s", self.group_id, sorted(matched))
                    self.subscription = matched
                    self.rejoin_needed = True
            if self._partitions_snapshot and self._partition_counts() != self._partitions_snapshot:
                self.rejoin_needed = True
        except E.KafkaError as e:
            log.debug("metadata check failed: %s", e)

    def _partition_counts(self, topics=None) -> dict[str, int]:
        md = self.consumer.metadata
        md.refresh()
        out = {}
        for t in sorted(topics if topics is not None else self.subscription):
            parts = md.cluster.partitions.get(t)
            if parts:
                out[t] = len(parts)
        return out

    # --------------------------------------------------------------- rebalance

    def _join_step(self, deadline: float) -> bool:
        """Sends JoinGroup if nothing is in flight, then handles answers that arrive by the deadline.

        False: a call is still in flight at the deadline. A transport failure raises (retriable)."""
        if self._inflight is None:
            self._send_join()
        name, fut, generation_id = self._inflight
        try:
            resp = fut.result(timeout=max(0.0, deadline - time.monotonic()))
        except grpc.FutureTimeoutError:
            return False
        except grpc.FutureCancelledError:
            self._inflight = None
            raise E.RebalanceInProgressError(f"{name} was cancelled") from None
        except grpc.RpcError as e:
            self._inflight = None
            self._mark_coordinator_unknown()
            raise transport_error(e, f"group coordinator ({name})") from None
        self._inflight = None
        if name == "JoinGroup":
            self._on_join_response(resp)
        else:
            self._on_sync_response(resp, generation_id)
        return True

    def _send_join(self) -> None:
        if self.protocol == A.EAGER:
            self._prepare_eager_join()
        else:
            self._maybe_auto_commit(sync=True)
        with self.lock:
            self.stable = False
            self.rejoin_needed = True
            member_id = self.member_id
        owned, generation = self._subscription_state()
        req = gpb.JoinGroupRequest(group_id=self.group_id, session_timeout_ms=self.session_timeout_ms,
                                   rebalance_timeout_ms=self.rebalance_timeout_ms, member_id=member_id,
                                   protocol_type=PROTOCOL_TYPE, client_id=self.consumer.client_id)
        if self.group_instance_id is not None:
            req.group_instance_id = self.group_instance_id
        for a in self.assignors:
            sub = A.Subscription(sorted(self.subscription), owned, generation)
            req.protocols.add(name=a.name, metadata=A.encode_subscription(sub))
        self._send("JoinGroup", req, self.rebalance_timeout_ms / 1000.0 + 10)

    def _on_join_response(self, resp) -> None:
        if resp.error_code:
            self._handle_join_error(resp)
            return
        with self.lock:
            self.member_id = resp.member_id
            self.generation_id = resp.generation_id
            self.protocol_name = resp.protocol_name
        assignments = None
        if resp.leader == resp.member_id and not resp.skip_assignment:
            assignments = self._assign(resp)
        sreq = gpb.SyncGroupRequest(group_id=self.group_id, generation_id=resp.generation_id,
                                    member_id=resp.member_id, protocol_type=PROTOCOL_TYPE,
                                    protocol_name=resp.protocol_name)
        if self.group_instance_id is not None:
            sreq.group_instance_id = self.group_instance_id
        for mid, blob in (assignments or {}).items():
            sreq.assignments.add(member_id=mid, assignment=blob)
        self._send("SyncGroup", sreq, self.rebalance_timeout_ms / 1000.0 + 10, resp.generation_id)

    def _on_sync_response(self, sresp, generation_id: int) -> None:
        if sresp.error_code:
            self._handle_join_error(sresp)
            return
        self._on_join_complete(A.decode_assignment(sresp.assignment).partitions, generation_id)

    def _subscription_state(self) -> tuple[list[TopicPartition], int]:
        """owned_partitions and generation for the subscription metadata.

        Eager members have revoked everything before joining, so they report
        what they owned before (the sticky assignor needs it). A static eager
        member reports nothing: the coordinator keeps a restarted static
        member's assignment only if its metadata is byte-for-byte unchanged.
        """
        if self.protocol == A.COOPERATIVE:
            return sorted(self.consumer.assignment()), self.generation_id
        if self.group_instance_id is not None:
            return [], -1
        return list(self._last_assignment), self.generation_id

    def _handle_join_error(self, resp) -> None:
        err = E.for_code(resp.error_code, resp.error_message)
        if isinstance(err, E.MemberIdRequiredError):
            with self.lock:
                self.member_id = resp.member_id
            return  # rejoin at once with the id
        if isinstance(err, E.UnknownMemberIdError):
            with self.lock:
                self.member_id, self.generation_id = "", -1
            self.lost = bool(self.consumer.assignment())
            raise err
        if isinstance(err, E.IllegalGenerationError):
            with self.lock:
                self.generation_id = -1
            self.lost = bool(self.consumer.assignment())
            raise err
        if isinstance(err, (E.CoordinatorNotAvailableError, E.NotCoordinatorError)):
            self._mark_coordinator_unknown()
        raise err

    def _prepare_eager_join(self) -> None:
        self._maybe_auto_commit(sync=True)
        owned = sorted(self.consumer.assignment())
        if owned:
            self._last_assignment = owned
            self._call_listener("on_partitions_revoked", owned)
        self.consumer._set_assignment([])

    def _assign(self, resp) -> dict[str, bytes]:
        """The leader's job: run the chosen assignor over every member's subscription."""
        assignor = next((a for a in self.assignors if a.name == resp.protocol_name), None)
        if assignor is None:
            raise E.InconsistentGroupProtocolError(f"the group chose assignor {resp.protocol_name!r}, "
                                                   f"which this consumer does not have")
        subs = {m.member_id: A.decode_subscription(
                    m.metadata, m.group_instance_id if m.HasField("group_instance_id") else None)
                for m in resp.members}
        topics = {t for s in subs.values() for t in s.topics}
        counts = self._partition_counts(topics)
        self._partitions_snapshot = {t: n for t, n in counts.items() if t in self.subscription}
        result = assignor.assign(subs, counts)
        log.info("Leader %s of group %s assigned with %s: %s", resp.member_id, self.group_id, assignor.name,
                 {m: [str(tp) for tp in tps] for m, tps in result.items()})
        return {mid: A.encode_assignment(result.get(mid, [])) for mid in subs}

    def _on_join_complete(self, assigned, generation_id: int) -> None:
        new = [TopicPartition(t, int(p)) for t, p in assigned]
        owned = set(self.consumer.assignment())
        log.info("Member %s of group %s got generation %d with assignment %s", self.member_id,
                 self.group_id, generation_id, [str(tp) for tp in new])
        with self.lock:
            self.stable = True
            self.rejoin_needed = False
        if self.protocol == A.COOPERATIVE:
            revoked = sorted(owned - set(new))
            added = sorted(set(new) - owned)
            if revoked:
                self._call_listener("on_partitions_revoked", revoked)
            self.consumer._set_assignment(new)
            self._call_listener("on_partitions_assigned", added)
            if revoked:
                with self.lock:
                    self.rejoin_needed = True  # KIP-429's follow-up rebalance
        else:
            self.consumer._set_assignment(new)
            self._call_listener("on_partitions_assigned", sorted(new))
        self._ensure_heartbeat_thread()

    def _on_lost(self) -> None:
        self.lost = False
        self._last_assignment = []
        owned = sorted(self.consumer.assignment())
        if owned:
            self._call_listener("on_partitions_lost", owned)
        self.consumer._set_assignment([])
        with self.lock:
            self.stable = False
            self.rejoin_needed = True

    def _revoke_all(self, why: str) -> None:
        owned = sorted(self.consumer.assignment())
        if owned:
            self._call_listener("on_partitions_revoked", owned)
        self.consumer._set_assignment([])

    def _call_listener(self, name: str, partitions: list[TopicPartition]) -> None:
        if self.listener is None:
            return
        fn = getattr(self.listener, name, None)
        if fn is None and name == "on_partitions_lost":
            fn = getattr(self.listener, "on_partitions_revoked", None)  # Kafka's default
        if fn is None:
            return
        try:
            fn(list(partitions))
        except Exception:  # a listener bug must not break membership (Kafka logs it too)
            log.exception("User provided listener %s failed on %s", type(self.listener).__name__, name)

    # --------------------------------------------------------------- heartbeat

    def _ensure_heartbeat_thread(self) -> None:
        if self._hb_thread is None or not self._hb_thread.is_alive():
            self._hb_thread = threading.Thread(target=self._heartbeat_loop, daemon=True,
                                               name=f"heartbeat-{self.group_id}")
            self._hb_thread.start()

    def _heartbeat_loop(self) -> None:
        interval_s = self.config.heartbeat_interval_ms / 1000.0
        while not self._closed.wait(interval_s):
            with self.lock:
                # As Kafka's heartbeat thread: idle while the application thread rebalances.
                if not self.stable or self.generation_id < 0:
                    continue
                member_id, generation_id = self.member_id, self.generation_id
            if time.monotonic() - self.last_poll_s > self.config.max_poll_interval_ms / 1000.0:
                self._on_poll_timeout()
                continue
            req = gpb.HeartbeatRequest(group_id=self.group_id, generation_id=generation_id, member_id=member_id)
            if self.group_instance_id is not None:
                req.group_instance_id = self.group_instance_id
            try:
                resp = self._rpc("Heartbeat", req, max(interval_s, 1.0))
            except E.KafkaError as e:
                log.debug("heartbeat failed: %s", e)
                continue
            self._on_heartbeat(resp.error_code, generation_id)

    def _on_heartbeat(self, code: int, generation_id: int) -> None:
        if code == 0:
            return
        err = E.class_for_code(code)
        with self.lock:
            if generation_id != self.generation_id:
                return  # an answer about an older generation
            if err is E.RebalanceInProgressError:
                log.info("Group %s is rebalancing; member %s will rejoin", self.group_id, self.member_id)
                self.rejoin_needed = True
            elif err in (E.UnknownMemberIdError, E.IllegalGenerationError, E.FencedInstanceIdError):
                log.info("Member %s of group %s was fenced (%s); its partitions are lost", self.member_id,
                         self.group_id, err.name)
                if err is E.UnknownMemberIdError:
                    self.member_id = ""
                self.generation_id = -1
                self.stable = False
                self.rejoin_needed = True
                self.lost = True
                if err is E.FencedInstanceIdError:
                    log.error("group.instance.id %s is used by another member", self.group_instance_id)
            elif err in (E.CoordinatorNotAvailableError, E.NotCoordinatorError):
                self._mark_coordinator_unknown()

    def _on_poll_timeout(self) -> None:
        log.warning("consumer poll timeout has expired. This means the time between subsequent calls to "
                    "poll() was longer than the configured max.poll.interval.ms, which typically implies "
                    "that the poll loop is spending too much time processing messages. Member %s leaves "
                    "group %s.", self.member_id, self.group_id)
        if self.group_instance_id is None:
            self._leave("consumer poll timeout has expired")
        with self.lock:
            self.stable = False
            self.rejoin_needed = True
            self.lost = True
            self.generation_id = -1

    # ----------------------------------------------------------------- leave

    def _leave(self, reason: str, timeout_s: float = 5.0) -> None:
        with self.lock:
            member_id = self.member_id
            self.member_id, self.generation_id, self.stable = "", -1, False
        if not member_id or self.group_instance_id is not None:
            return  # static members keep their place until the session times out
        req = gpb.LeaveGroupRequest(group_id=self.group_id)
        req.members.add(member_id=member_id, reason=reason)
        if timeout_s <= 0:
            log.info("Member %s skips LeaveGroup: no time left (%s)", member_id, reason)
            return
        try:
            self._rpc("LeaveGroup", req, min(5.0, timeout_s))
            log.info("Member %s sending LeaveGroup request to coordinator due to %s", member_id, reason)
        except E.KafkaError as e:
            log.info("LeaveGroup of %s failed: %s", member_id, e)

    # ----------------------------------------------------------------- commits

    def _maybe_auto_commit(self, sync: bool = False) -> None:
        if not self.config.enable_auto_commit:
            return
        now = time.monotonic()
        if not sync and now < self._next_auto_commit_s:
            return
        self._next_auto_commit_s = now + self.config.auto_commit_interval_ms / 1000.0
        offsets = self.consumer._current_offsets()
        if not offsets:
            return
        if sync:
            try:
                self.commit_sync(offsets, 5.0)
            except E.KafkaError as e:
                log.warning("Synchronous auto-commit of offsets %s failed: %s", offsets, e)
        else:
            self.commit_async(offsets, lambda o, exc: exc and log.warning("Auto-commit failed: %s", exc))

    def _commit_generation(self) -> tuple[int, str]:
        """(generation_id, member_id) a commit taken now is sent with, on every attempt."""
        with self.lock:
            if not self.subscribed():
                return -1, ""
            if self.generation_id < 0:
                raise E.RebalanceInProgressError(
                    "Offset commit cannot be completed since the consumer is not part of an active "
                    "group for auto partition assignment; it is likely that the consumer was kicked "
                    "out of the group.")
            return self.generation_id, self.member_id

    def _commit_request(self, offsets: dict, generation: tuple[int, str]) -> gpb.OffsetCommitRequest:
        gen, mid = generation
        req = gpb.OffsetCommitRequest(group_id=self.group_id, generation_id=gen, member_id=mid)
        if self.group_instance_id is not None and gen >= 0:
            req.group_instance_id = self.group_instance_id
        for tp, om in offsets.items():
            tp = TopicPartition(*tp)
            if isinstance(om, int):
                om = OffsetAndMetadata(om)
            if om.offset < 0:
                raise E.IllegalStateError(f"cannot commit a negative offset for {tp}: {om.offset}")
            part = req.partitions.add(topic=tp.topic, partition=tp.partition, committed_offset=om.offset,
                                      committed_metadata=om.metadata or "")
            if om.leader_epoch >= 0:
                part.committed_leader_epoch = om.leader_epoch
        return req

    def commit_sync(self, offsets: dict, timeout: float | None = None, *,
                    generation: tuple[int, str] | None = None) -> None:
        """Commits under the generation it was taken in (`generation`, else the current one), retrying
        retriable errors; a rebalance meanwhile makes it fail with Kafka's error, never re-sent under
        the new generation. When an earlier attempt's outcome is unknown, the error raised is marked
        indefinite (`definite = False`): that attempt may have committed."""
        if not offsets:
            return
        deadline = time.monotonic() + (timeout if timeout is not None else 60.0)
        if generation is None:
            generation = self._commit_generation()
        req = self._commit_request(offsets, generation)
        maybe_landed = False
        while True:
            try:
                resp = self._rpc("OffsetCommit", req, max(0.1, min(30.0, deadline - time.monotonic())))
                code = resp.error_code or next((p.error_code for p in resp.partitions if p.error_code), 0)
                if code == 0:
                    return
                err = E.for_code(code, resp.error_message)
            except E.KafkaError as e:
                err = e
            if isinstance(err, (E.UnknownMemberIdError, E.IllegalGenerationError, E.FencedInstanceIdError)):
                with self.lock:
                    if self.generation_id == generation[0]:  # not when a rebalance already moved us on
                        self.rejoin_needed = True
                err = type(err)("Commit cannot be completed since the group has already rebalanced and "
                                "assigned the partitions to another member")
            elif isinstance(err, (E.CoordinatorNotAvailableError, E.NotCoordinatorError, E.RequestTimedOutError)):
                self._mark_coordinator_unknown()
            if err.retriable and time.monotonic() < deadline and not self._closed.is_set():
                maybe_landed = maybe_landed or not err.definite
                time.sleep(RETRY_BACKOFF_S)
                continue
            if maybe_landed and err.definite:
                err.definite = False  # the history records `info`: an earlier attempt may have committed
                err.message = f"{err.message} (an earlier attempt's outcome is unknown)"
            raise err

    def commit_async(self, offsets: dict, callback: Callable[[dict, Any], Any] | None = None) -> None:
        """Runs the commit on a single background worker (so commits stay in order); the callback
        runs there with (offsets, exception or None). The generation is taken now, not when the
        worker gets to it."""
        if not offsets:
            if callback:
                callback(offsets, None)
            return
        offsets = dict(offsets)
        generation: tuple[int, str] | None = None
        exc: E.KafkaError | None = None
        try:
            generation = self._commit_generation()
        except E.KafkaError as e:
            exc = e

        def run():
            err = exc
            if generation is not None:
                try:
                    self.commit_sync(offsets, 30.0, generation=generation)
                except E.KafkaError as e:
                    err = e
            if callback is not None:
                try:
                    callback(offsets, err)
                except Exception:
                    log.exception("offset commit callback failed")
        self._async.submit(run)

    def fetch_committed(self, tps, timeout_s: float = 30.0) -> dict[TopicPartition, OffsetAndMetadata | None]:
        tps = [TopicPartition(*tp) for tp in tps]
        # KIP-447: under read_committed, wait out UNSTABLE_OFFSET_COMMIT (a pending transaction holds offsets
        # for the partition), so a consumer never starts from offsets that a commit is about to move.
        req = gpb.OffsetFetchRequest(group_id=self.group_id, require_stable=self.consumer.read_committed)
        for tp in tps:
            req.partitions.add(topic=tp.topic, partition=tp.partition)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                resp = self._rpc("OffsetFetch", req, 10)
                failed = next((p for p in resp.partitions if p.error_code), None)
                if not resp.error_code and failed is None:
                    out = {tp: None for tp in tps}
                    for p in resp.partitions:
                        if p.committed_offset >= 0:
                            out[TopicPartition(p.topic, p.partition)] = OffsetAndMetadata(
                                p.committed_offset, p.metadata, p.committed_leader_epoch)
                    return out
                err = E.for_code(resp.error_code, resp.error_message) if resp.error_code else E.for_code(
                    failed.error_code, f"{failed.topic}-{failed.partition} of group {self.group_id}")
            except E.KafkaError as e:
                err = e
            if not err.retriable or time.monotonic() >= deadline:
                raise err
            time.sleep(RETRY_BACKOFF_S)

    def group_metadata(self) -> ConsumerGroupMetadata:
        with self.lock:
            return ConsumerGroupMetadata(self.group_id, self.generation_id, self.member_id,
                                         self.group_instance_id)

    # ------------------------------------------------------------------ close

    def close(self, timeout: float | None = None) -> None:
        """Pending async commits, the auto-commit and LeaveGroup, all within `timeout` (Kafka's 30 s),
        also when the coordinator does not answer."""
        deadline = time.monotonic() + (timeout if timeout is not None else 30.0)
        self._closing = True
        try:
            self._cancel_inflight()
            self._await_async_commits(deadline)
            if self.config.enable_auto_commit and self.stable:
                try:
                    offsets = self.consumer._current_offsets()
                    if offsets and deadline > time.monotonic():
                        self.commit_sync(offsets, deadline - time.monotonic())
                except E.KafkaError as e:
                    log.warning("Auto-commit on close failed: %s", e)
            if self.subscribed() and self.member_id:
                if self.group_instance_id is None:
                    self._revoke_all("close")
                self._leave("the consumer is being closed", deadline - time.monotonic())
        finally:
            self._closed.set()  # also ends a running async commit's retries
            self._async.shutdown(wait=False, cancel_futures=True)

    def _await_async_commits(self, deadline: float) -> None:
        """Commits are ordered on one worker: a no-op queued behind them is done when they are."""
        try:
            self._async.submit(lambda: None).result(timeout=max(0.0, deadline - time.monotonic()))
        except (TimeoutError, RuntimeError):
            log.warning("Async commits still pending when the consumer closed")

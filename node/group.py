"""One consumer group under Kafka's classic group protocol, as a pure model.

`GroupMetadata` is the state machine of Kafka's GroupCoordinator for a single
group: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit/Fetch,
DeleteGroups, session and rebalance timeouts, static membership (KIP-345) and
member-id-required joins (KIP-394).

Model, not driver: no clock, threads, I/O or randomness inside. Every handler
takes `now_ms`; member ids come from the injected `member_id_generator`.

JoinGroup and SyncGroup are *delayed* responses in Kafka. A handler returns a
result whose `response` is either the immediate answer or ``None`` ("pending":
the call parks under `result.member_id`). Parked calls are answered by
`JoinComplete` / `SyncComplete` effects, which may come in the same result's
`effects` (e.g. the last member to rejoin completes the round) or later from
another handler or from `tick(now_ms)`. A driver applies effects in order:
`PersistGroup` / `PersistOffsets` / `PersistAssignment` first, then the
completions.

Durability is the driver's job: the Persist effects carry JSON-able dicts for
`__consumer_offsets`, keyed by `record_key(record)`;
`GroupMetadata.from_records` rebuilds a group by replaying them after a
coordinator restart. Two changes wait for their write, as in Kafka: a
commit's offsets become readable only in `on_offsets_stored`, and the
leader's assignment makes the group Stable only in `on_assignment_stored`
(a failed write sends the group back into a rebalance).
"""
from __future__ import annotations

import base64
import itertools
import json
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from client.common import errors as E
from client.common.types import TopicPartition

log = logging.getLogger(__name__)

NONE = 0  # error code "no error"
UNKNOWN_MEMBER_ID = ""  # JoinGroupRequest.UNKNOWN_MEMBER_ID
NO_GENERATION = -1

TopicPartitionKey = tuple[str, int]  # a TopicPartition or a plain (topic, partition)
Protocols = Sequence[tuple[str, bytes]]


class GroupState(Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


# ---------------------------------------------------------------- member ids

def counter_member_ids(start: int = 1) -> Callable[[], str]:
    """Deterministic id suffixes "1", "2", ... (tests; not unique across restarts)."""
    counter = itertools.count(start)
    return lambda: str(next(counter))


def rng_member_ids(rng: random.Random) -> Callable[[], str]:
    """UUID-shaped id suffixes from an injected, seeded rng (what a driver passes)."""
    def gen() -> str:
        h = f"{rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return gen


# ------------------------------------------------------------------ members

@dataclass(slots=True)
class MemberMetadata:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    last_heartbeat_ms: int = 0
    # A JoinGroup / SyncGroup call of this member is parked in the driver.
    awaiting_join: bool = False
    awaiting_sync: bool = False

    def metadata(self, protocol: str | None) -> bytes:
        for name, data in self.protocols:
            if name == protocol:
                return data
        return b""

    def session_deadline_ms(self) -> int:
        return self.last_heartbeat_ms + self.session_timeout_ms


@dataclass(frozen=True, slots=True)
class MemberIdentity:
    """LeaveGroup v3+ names members by member id, group instance id, or both."""
    member_id: str = UNKNOWN_MEMBER_ID
    group_instance_id: str | None = None


# ---------------------------------------------------------------- responses

class _HasError:
    __slots__ = ()
    error_code: int

    @property
    def error(self) -> type[E.KafkaError] | None:
        return None if self.error_code == NONE else E.class_for_code(self.error_code)


@dataclass(frozen=True, slots=True)
class JoinGroupMember:
    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True, slots=True)
class JoinGroupResponse(_HasError):
    member_id: str
    error_code: int = NONE
    generation_id: int = NO_GENERATION
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    # Only the leader gets the member list (with each member's metadata for
    # the chosen protocol); it computes the assignment.
    members: tuple[JoinGroupMember, ...] = ()
    # KIP-814: a static leader rejoining a Stable group must not reassign.
    skip_assignment: bool = False


@dataclass(frozen=True, slots=True)
class SyncGroupResponse(_HasError):
    member_id: str
    error_code: int = NONE
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


# ------------------------------------------------------------------ effects

@dataclass(frozen=True, slots=True)
class JoinComplete:
    """Answer these parked JoinGroup calls (keyed by response.member_id)."""
    responses: tuple[JoinGroupResponse, ...]


@dataclass(frozen=True, slots=True)
class SyncComplete:
    """Answer these parked SyncGroup calls (keyed by response.member_id)."""
    responses: tuple[SyncGroupResponse, ...]


@dataclass(frozen=True, slots=True)
class MemberRemoved:
    member_id: str
    group_instance_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class RebalanceStarted:
    generation_id: int  # the generation being replaced
    reason: str


@dataclass(frozen=True, slots=True)
class PersistGroup:
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PersistOffsets:
    records: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class PersistAssignment:
    """The leader's SyncGroup: write `record` (the group, Stable with these assignments), then report
    the outcome to `on_assignment_stored(generation_id, assignments, ...)`."""
    generation_id: int
    assignments: Mapping[str, bytes]
    record: dict[str, Any]


Effect = (JoinComplete | SyncComplete | MemberRemoved | RebalanceStarted | PersistGroup | PersistOffsets
          | PersistAssignment)


# ------------------------------------------------------------------ results

@dataclass(frozen=True, slots=True)
class JoinResult:
    member_id: str  # the id the call parks under when pending
    response: JoinGroupResponse | None  # None: pending, answered by a JoinComplete
    effects: tuple[Effect, ...] = ()

    @property
    def pending(self) -> bool:
        return self.response is None


@dataclass(frozen=True, slots=True)
class SyncResult:
    member_id: str
    response: SyncGroupResponse | None  # None: pending, answered by a SyncComplete
    effects: tuple[Effect, ...] = ()

    @property
    def pending(self) -> bool:
        return self.response is None


@dataclass(frozen=True, slots=True)
class HeartbeatResult(_HasError):
    error_code: int = NONE


@dataclass(frozen=True, slots=True)
class LeaveMemberResult(_HasError):
    member_id: str
    group_instance_id: str | None
    error_code: int = NONE


@dataclass(frozen=True, slots=True)
class LeaveGroupResult(_HasError):
    error_code: int = NONE
    members: tuple[LeaveMemberResult, ...] = ()
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    offset: int
    metadata: str = ""
    commit_timestamp_ms: int = -1
    leader_epoch: int = -1  # OffsetCommit v6+ (KIP-320): the epoch of the record consumed last; -1 unknown


@dataclass(frozen=True, slots=True)
class CommitResult(_HasError):
    error_code: int = NONE
    # Per-partition codes, as in OffsetCommitResponse (error_code, or UNKNOWN_TOPIC_OR_PARTITION for
    # partitions that do not exist, which the driver answers without the model).
    partitions: Mapping[TopicPartitionKey, int] = field(default_factory=dict)
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True, slots=True)
class DeleteResult(_HasError):
    error_code: int = NONE
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True, slots=True)
class MemberDescription:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group_id: str
    state: GroupState
    protocol_type: str
    protocol: str  # "" unless Stable, as Kafka's DescribeGroups
    members: tuple[MemberDescription, ...]


# -------------------------------------------------------------------- model

class GroupMetadata:
    """One group's membership, generations and committed offsets."""

    def __init__(self, group_id: str, *,
                 member_id_generator: Callable[[], str] | None = None,
                 initial_rebalance_delay_ms: int = 3000,
                 min_session_timeout_ms: int = 6000,
                 max_session_timeout_ms: int = 1_800_000,
                 max_size: int = 2**31 - 1) -> None:
        self.group_id = group_id
        self._new_id = member_id_generator or counter_member_ids()
        self.initial_rebalance_delay_ms = initial_rebalance_delay_ms
        self.min_session_timeout_ms = min_session_timeout_ms
        self.max_session_timeout_ms = max_session_timeout_ms
        self.max_size = max_size

        self.state = GroupState.EMPTY
        self.generation_id = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        self.members: dict[str, MemberMetadata] = {}  # insertion order = join order
        self.static_members: dict[str, str] = {}  # group_instance_id -> member_id
        # KIP-394: ids handed out with MEMBER_ID_REQUIRED -> expiry (now + session).
        self.pending_members: dict[str, int] = {}
        # Members of the current generation that have not sent SyncGroup yet.
        self.pending_sync: set[str] = set()
        self.offsets: dict[TopicPartitionKey, OffsetAndMetadata] = {}

        self.rebalance_deadline_ms: int | None = None
        self.sync_deadline_ms: int | None = None
        # InitialDelayedJoin: from Empty, wait out the delay (extended while
        # new members keep arriving, up to the rebalance timeout).
        self._initial_join = False
        self._initial_remaining_ms = 0
        self._new_member_added = False

    # ------------------------------------------------------------ JoinGroup

    def handle_join_group(self, member_id: str, group_instance_id: str | None, client_id: str,
                          client_host: str, session_timeout_ms: int, rebalance_timeout_ms: int,
                          protocol_type: str, protocols: Protocols, now_ms: int, *,
                          require_known_member_id: bool = True) -> JoinResult:
        protocols = [(name, bytes(data)) for name, data in protocols]

        def fail(err: type[E.KafkaError]) -> JoinResult:
            return JoinResult(member_id, JoinGroupResponse(member_id, err.code))

        if self.state is GroupState.DEAD:
            # The group was deleted or unloaded: the client looks for the coordinator again.
            return fail(E.CoordinatorNotAvailableError)
        if not self.min_session_timeout_ms <= session_timeout_ms <= self.max_session_timeout_ms:
            return fail(E.InvalidSessionTimeoutError)
        if not protocol_type or not protocols or not self._supports_protocols(protocol_type, protocols):
            return fail(E.InconsistentGroupProtocolError)

        args = (group_instance_id, client_id, client_host, session_timeout_ms, rebalance_timeout_ms,
                protocol_type, protocols, now_ms)
        if member_id == UNKNOWN_MEMBER_ID:
            return self._join_unknown_member(*args, require_known_member_id=require_known_member_id)
        return self._join_known_member(member_id, *args)

    def _join_unknown_member(self, group_instance_id: str | None, client_id: str, client_host: str,
                             session_timeout_ms: int, rebalance_timeout_ms: int, protocol_type: str,
                             protocols: list[tuple[str, bytes]], now_ms: int, *,
                             require_known_member_id: bool) -> JoinResult:
        if group_instance_id is not None and group_instance_id in self.static_members:
            return self._replace_static_member(group_instance_id, client_id, client_host,
                                               session_timeout_ms, rebalance_timeout_ms, protocols, now_ms)
        if len(self.members) + len(self.pending_members) >= self.max_size:
            return JoinResult("", JoinGroupResponse("", E.GroupMaxSizeReachedError.code))
        new_id = self._generate_member_id(client_id, group_instance_id)
        if group_instance_id is None and require_known_member_id:
            # KIP-394: hand out the id first, so a client that times out and
            # retries does not leave a ghost member behind.
            self.pending_members[new_id] = now_ms + session_timeout_ms
            return JoinResult(new_id, JoinGroupResponse(new_id, E.MemberIdRequiredError.code))
        return self._add_member_and_rebalance(new_id, group_instance_id, client_id, client_host,
                                              session_timeout_ms, rebalance_timeout_ms, protocol_type,
                                              protocols, now_ms)

    def _join_known_member(self, member_id: str, group_instance_id: str | None, client_id: str,
                           client_host: str, session_timeout_ms: int, rebalance_timeout_ms: int,
                           protocol_type: str, protocols: list[tuple[str, bytes]],
                           now_ms: int) -> JoinResult:
        if member_id in self.pending_members and member_id not in self.members:
            del self.pending_members[member_id]
            return self._add_member_and_rebalance(member_id, group_instance_id, client_id, client_host,
                                                  session_timeout_ms, rebalance_timeout_ms,
                                                  protocol_type, protocols, now_ms)
        err = self._validate_member(member_id, group_instance_id)
        if err is not None or self.state is GroupState.EMPTY:
            code = (err or E.UnknownMemberIdError).code
            return JoinResult(member_id, JoinGroupResponse(member_id, code))

        member = self.members[member_id]
        fx: list[Effect] = []
        changed = member.protocols != protocols
        if self.state is GroupState.PREPARING_REBALANCE:
            self._update_member(member, client_id, client_host, session_timeout_ms,
                                rebalance_timeout_ms, protocols, now_ms)
            self._maybe_complete_join(now_ms, fx)
            return JoinResult(member_id, None, tuple(fx))
        if self.state is GroupState.COMPLETING_REBALANCE and not changed:
            # The member lost our JoinGroup response: send it again.
            return JoinResult(member_id, self._join_response(member))
        if self.state is GroupState.STABLE and not changed and member_id != self.leader_id:
            return JoinResult(member_id, self._join_response(member))
        # A changed subscription, or the leader rejoining a Stable group
        # (it wants a new assignment): start a new round.
        self._update_member(member, client_id, client_host, session_timeout_ms,
                            rebalance_timeout_ms, protocols, now_ms)
        reason = (f"Updating metadata for member {member_id}" if changed
                  else f"Leader {member_id} re-joining group")
        self._prepare_rebalance(now_ms, reason, fx)
        return JoinResult(member_id, None, tuple(fx))

    def _add_member_and_rebalance(self, member_id: str, group_instance_id: str | None, client_id: str,
                                  client_host: str, session_timeout_ms: int, rebalance_timeout_ms: int,
                                  protocol_type: str, protocols: list[tuple[str, bytes]],
                                  now_ms: int) -> JoinResult:
        member = MemberMetadata(member_id, group_instance_id, client_id, client_host, session_timeout_ms,
                                rebalance_timeout_ms, protocol_type, list(protocols),
                                last_heartbeat_ms=now_ms, awaiting_join=True)
        if not self.members:
            self.protocol_type = protocol_type
        self.members[member_id] = member
        if group_instance_id is not None:
            self.static_members[group_instance_id] = member_id
        if self.leader_id is None:
            self.leader_id = member_id
        self._new_member_added = True
        fx: list[Effect] = []
        reason = f"Adding new member {member_id} with group instance id {group_instance_id}"
        if self.state is GroupState.PREPARING_REBALANCE:
            self._maybe_complete_join(now_ms, fx)
        else:
            self._prepare_rebalance(now_ms, reason, fx)
        return JoinResult(member_id, None, tuple(fx))

    def _replace_static_member(self, group_instance_id: str, client_id: str, client_host: str,
                               session_timeout_ms: int, rebalance_timeout_ms: int,
                               protocols: list[tuple[str, bytes]], now_ms: int) -> JoinResult:
        """KIP-345: a known group.instance.id rejoins with an empty member id."""
        old_id = self.static_members[group_instance_id]
        old = self.members[old_id]
        fx: list[Effect] = []
        # The old incarnation is fenced: its parked calls and later requests
        # get FENCED_INSTANCE_ID.
        if old.awaiting_join:
            fx.append(JoinComplete((JoinGroupResponse(old_id, E.FencedInstanceIdError.code),)))
        if old.awaiting_sync:
            fx.append(SyncComplete((SyncGroupResponse(old_id, E.FencedInstanceIdError.code),)))
        new_id = self._generate_member_id(client_id, group_instance_id)
        old_protocols = old.protocols
        self.members = {(new_id if k == old_id else k): v for k, v in self.members.items()}
        old.member_id = new_id
        old.awaiting_join = old.awaiting_sync = False
        self.static_members[group_instance_id] = new_id
        if self.leader_id == old_id:
            self.leader_id = new_id
        if old_id in self.pending_sync:
            self.pending_sync.discard(old_id)
            self.pending_sync.add(new_id)
        self._update_member(old, client_id, client_host, session_timeout_ms, rebalance_timeout_ms,
                            protocols, now_ms)
        fx.append(MemberRemoved(old_id, group_instance_id,
                                f"fenced: static member {group_instance_id} rejoined as {new_id}"))
        log.info("Static member %s of group %s with unknown member id rejoins, assigning new member "
                 "id %s, while old member id %s will be removed.", group_instance_id, self.group_id,
                 new_id, old_id)

        if self.state is GroupState.STABLE and protocols == old_protocols:
            # Same subscription: keep the assignment, no new generation.
            old.awaiting_join = False
            fx.append(PersistGroup(self.to_record()))
            is_leader = new_id == self.leader_id
            return JoinResult(new_id, self._join_response(old, skip_assignment=is_leader), tuple(fx))
        if self.state is GroupState.PREPARING_REBALANCE:
            self._maybe_complete_join(now_ms, fx)
        else:
            self._prepare_rebalance(now_ms, f"Static member {group_instance_id} rejoined with new "
                                            f"metadata" if self.state is GroupState.STABLE
                                    else f"Static member {group_instance_id} rejoined during "
                                         f"CompletingRebalance", fx)
        return JoinResult(new_id, None, tuple(fx))

    def _update_member(self, member: MemberMetadata, client_id: str, client_host: str,
                       session_timeout_ms: int, rebalance_timeout_ms: int,
                       protocols: list[tuple[str, bytes]], now_ms: int) -> None:
        member.client_id = client_id
        member.client_host = client_host
        member.session_timeout_ms = session_timeout_ms
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.protocols = list(protocols)
        member.last_heartbeat_ms = now_ms
        member.awaiting_join = True

    # ------------------------------------------------------------ SyncGroup

    def handle_sync_group(self, member_id: str, generation_id: int, group_instance_id: str | None,
                          assignments: Mapping[str, bytes] | None, now_ms: int) -> SyncResult:
        def fail(err: type[E.KafkaError]) -> SyncResult:
            return SyncResult(member_id, SyncGroupResponse(member_id, err.code))

        if self.state is GroupState.DEAD:
            return fail(E.CoordinatorNotAvailableError)
        err = self._validate_member(member_id, group_instance_id)
        if err is not None:
            return fail(err)
        if generation_id != self.generation_id:
            return fail(E.IllegalGenerationError)
        if self.state is GroupState.EMPTY:
            return fail(E.UnknownMemberIdError)
        if self.state is GroupState.PREPARING_REBALANCE:
            return fail(E.RebalanceInProgressError)

        member = self.members[member_id]
        member.last_heartbeat_ms = now_ms
        self.pending_sync.discard(member_id)
        if self.state is GroupState.STABLE:
            return SyncResult(member_id, self._sync_response(member))

        # CompletingRebalance: park until the leader's assignment is stored.
        member.awaiting_sync = True
        fx: list[Effect] = []
        if member_id == self.leader_id and assignments is not None:
            chosen = {mid: bytes(assignments.get(mid, b"")) for mid in self.members}
            fx.append(PersistAssignment(self.generation_id, chosen, self.to_record(chosen)))
        return SyncResult(member_id, None, tuple(fx))

    def on_assignment_stored(self, generation_id: int, assignments: Mapping[str, bytes], error_code: int,
                             now_ms: int) -> list[Effect]:
        """The outcome of a `PersistAssignment` write (Kafka's storeGroup callback in doSyncGroup).

        Ignored when the group has moved on meanwhile. Written: the group becomes Stable and every
        parked SyncGroup gets its assignment. Failed: they get the error and the group rebalances,
        so no member holds an assignment that a restart would not bring back.
        """
        fx: list[Effect] = []
        if self.state is not GroupState.COMPLETING_REBALANCE or generation_id != self.generation_id:
            return fx
        waiting = [m for m in self.members.values() if m.awaiting_sync]
        for m in waiting:
            m.awaiting_sync = False
            m.last_heartbeat_ms = now_ms  # a fresh session from the answer, as Kafka's propagateAssignment
        if error_code != NONE:
            for m in self.members.values():
                m.assignment = b""
            fx.append(SyncComplete(tuple(SyncGroupResponse(m.member_id, error_code) for m in waiting)))
            self._prepare_rebalance(now_ms, "error when storing group assignment during SyncGroup "
                                            f"({E.class_for_code(error_code).name})", fx)
            return fx
        for m in self.members.values():
            m.assignment = bytes(assignments.get(m.member_id, b""))
        self._become_stable()
        fx.append(SyncComplete(tuple(self._sync_response(m) for m in waiting)))
        return fx

    # ------------------------------------------------------------ Heartbeat

    def handle_heartbeat(self, member_id: str, generation_id: int, group_instance_id: str | None,
                         now_ms: int) -> HeartbeatResult:
        if self.state is GroupState.DEAD:
            return HeartbeatResult(E.CoordinatorNotAvailableError.code)
        err = self._validate_member(member_id, group_instance_id)
        if err is not None:
            return HeartbeatResult(err.code)
        if generation_id != self.generation_id:
            return HeartbeatResult(E.IllegalGenerationError.code)
        if self.state is GroupState.EMPTY:
            return HeartbeatResult(E.UnknownMemberIdError.code)
        self.members[member_id].last_heartbeat_ms = now_ms
        if self.state is GroupState.PREPARING_REBALANCE:
            return HeartbeatResult(E.RebalanceInProgressError.code)  # "rejoin"
        return HeartbeatResult(NONE)

    # ----------------------------------------------------------- LeaveGroup

    def handle_leave_group(self, members: str | MemberIdentity | Iterable[MemberIdentity],
                           now_ms: int) -> LeaveGroupResult:
        """LeaveGroup v0-2 (a member id) or v3+ (a batch of identities)."""
        if isinstance(members, str):
            members = [MemberIdentity(members)]
        elif isinstance(members, MemberIdentity):
            members = [members]
        if self.state is GroupState.DEAD:
            return LeaveGroupResult(E.CoordinatorNotAvailableError.code)
        fx: list[Effect] = []
        results = []
        for ident in members:
            member_id, code = ident.member_id, NONE
            if ident.group_instance_id is not None:
                mapped = self.static_members.get(ident.group_instance_id)
                if mapped is None:
                    code = E.UnknownMemberIdError.code
                elif member_id not in (UNKNOWN_MEMBER_ID, mapped):
                    code = E.FencedInstanceIdError.code
                else:
                    member_id = mapped
            elif member_id in self.pending_members:
                del self.pending_members[member_id]
                fx.append(MemberRemoved(member_id, None, "pending member left"))
                results.append(LeaveMemberResult(member_id, None))
                continue
            elif member_id not in self.members:
                code = E.UnknownMemberIdError.code
            if code == NONE:
                log.info("Member %s has left group %s through explicit LeaveGroup", member_id,
                         self.group_id)
                self._remove_member_and_update(self.members[member_id], "left group", now_ms, fx)
            results.append(LeaveMemberResult(member_id, ident.group_instance_id, code))
        return LeaveGroupResult(NONE, tuple(results), tuple(fx))

    # ---------------------------------------------------------------- timers

    def tick(self, now_ms: int) -> list[Effect]:
        """Fire every timer due at `now_ms`: sessions, join and sync deadlines."""
        fx: list[Effect] = []
        if self.state is GroupState.DEAD:
            return fx
        for pid, expiry in list(self.pending_members.items()):
            if now_ms >= expiry:
                del self.pending_members[pid]
                fx.append(MemberRemoved(pid, None, "pending member did not rejoin before session "
                                                   "timeout"))
        for member in list(self.members.values()):
            # A parked JoinGroup/SyncGroup counts as a heartbeat, as in Kafka.
            if member.awaiting_join or member.awaiting_sync or member.member_id not in self.members:
                continue
            if now_ms >= member.session_deadline_ms():
                log.info("Member %s in group %s has failed, removing it from the group",
                         member.member_id, self.group_id)
                self._remove_member_and_update(member, "session timeout expired", now_ms, fx)
        if self.state is GroupState.PREPARING_REBALANCE:
            self._maybe_complete_join(now_ms, fx)
        elif (self.state is GroupState.COMPLETING_REBALANCE and self.sync_deadline_ms is not None
              and now_ms >= self.sync_deadline_ms and self.pending_sync):
            for mid in sorted(self.pending_sync):
                member = self.members.get(mid)
                if member is not None:
                    self._remove_member_and_update(member, "did not sync before rebalance timeout",
                                                   now_ms, fx)
        return fx

    def next_deadline_ms(self) -> int | None:
        """When `tick` next has something to do (None: no timer armed)."""
        deadlines = list(self.pending_members.values())
        deadlines += [m.session_deadline_ms() for m in self.members.values()
                      if not (m.awaiting_join or m.awaiting_sync)]
        if self.state is GroupState.PREPARING_REBALANCE and self.rebalance_deadline_ms is not None:
            deadlines.append(self.rebalance_deadline_ms)
        if self.state is GroupState.COMPLETING_REBALANCE and self.sync_deadline_ms is not None \
                and self.pending_sync:
            deadlines.append(self.sync_deadline_ms)
        return min(deadlines) if deadlines else None

    # ------------------------------------------------------------ transitions

    def _prepare_rebalance(self, now_ms: int, reason: str, fx: list[Effect]) -> None:
        if self.state is GroupState.COMPLETING_REBALANCE:
            # The round in flight is void: followers waiting on SyncGroup must rejoin.
            waiting = [m for m in self.members.values() if m.awaiting_sync]
            for m in self.members.values():
                m.assignment = b""
            for m in waiting:
                m.awaiting_sync = False
            if waiting:
                fx.append(SyncComplete(tuple(
                    SyncGroupResponse(m.member_id, E.RebalanceInProgressError.code) for m in waiting)))
        was_empty = self.state is GroupState.EMPTY
        log.info("Preparing to rebalance group %s in state %s with old generation %d (reason: %s)",
                 self.group_id, self.state.value, self.generation_id, reason)
        self.state = GroupState.PREPARING_REBALANCE
        self.pending_sync.clear()
        self.sync_deadline_ms = None
        timeout = self._max_rebalance_timeout_ms()
        if was_empty:
            delay = min(self.initial_rebalance_delay_ms, timeout)
            self._initial_join = True
            self._initial_remaining_ms = max(timeout - delay, 0)
            self._new_member_added = False
            self.rebalance_deadline_ms = now_ms + delay
        else:
            self._initial_join = False
            self.rebalance_deadline_ms = now_ms + timeout
        fx.append(RebalanceStarted(self.generation_id, reason))
        self._maybe_complete_join(now_ms, fx)

    def _maybe_complete_join(self, now_ms: int, fx: list[Effect]) -> None:
        if self.state is not GroupState.PREPARING_REBALANCE:
            return
        deadline = self.rebalance_deadline_ms if self.rebalance_deadline_ms is not None else now_ms
        if self._initial_join:
            if now_ms < deadline:
                return
            if self._new_member_added and self._initial_remaining_ms > 0:
                step = min(self.initial_rebalance_delay_ms, self._initial_remaining_ms)
                self._initial_remaining_ms -= step
                self._new_member_added = False
                self.rebalance_deadline_ms = now_ms + step
                if step > 0:
                    return
            self._complete_join(now_ms, fx)
            return
        all_joined = all(m.awaiting_join for m in self.members.values()) and not self.pending_members
        if all_joined or now_ms >= deadline:
            self._complete_join(now_ms, fx)

    def _complete_join(self, now_ms: int, fx: list[Effect]) -> None:
        for m in [m for m in self.members.values() if not m.awaiting_join]:
            self._remove_member(m, "did not rejoin before rebalance timeout", fx)
        self._initial_join = False
        self.rebalance_deadline_ms = None
        self.generation_id += 1
        if not self.members:
            self.protocol_name = None
            self.leader_id = None
            self.state = GroupState.EMPTY
            log.info("Group %s with generation %d is now empty", self.group_id, self.generation_id)
            fx.append(PersistGroup(self.to_record()))
            return
        if self.leader_id not in self.members:
            self.leader_id = next(iter(self.members))
        self.protocol_name = self._select_protocol()
        self.state = GroupState.COMPLETING_REBALANCE
        self.pending_sync = set(self.members)
        self.sync_deadline_ms = now_ms + self._max_rebalance_timeout_ms()
        responses = []
        for m in self.members.values():
            m.awaiting_join = False
            m.last_heartbeat_ms = now_ms
            responses.append(self._join_response(m))
        log.info("Stabilized group %s generation %d with %d members", self.group_id,
                 self.generation_id, len(self.members))
        fx.append(JoinComplete(tuple(responses)))

    def _become_stable(self) -> None:
        self.state = GroupState.STABLE
        self.pending_sync.clear()
        self.sync_deadline_ms = None
        log.info("Assignment received from leader %s for group %s for generation %d. The group "
                 "has %d members.", self.leader_id, self.group_id, self.generation_id, len(self.members))

    def _remove_member(self, member: MemberMetadata, reason: str, fx: list[Effect]) -> None:
        mid = member.member_id
        del self.members[mid]
        if member.group_instance_id is not None and \
                self.static_members.get(member.group_instance_id) == mid:
            del self.static_members[member.group_instance_id]
        self.pending_sync.discard(mid)
        if member.awaiting_join:
            fx.append(JoinComplete((JoinGroupResponse(mid, E.UnknownMemberIdError.code),)))
        if member.awaiting_sync:
            fx.append(SyncComplete((SyncGroupResponse(mid, E.UnknownMemberIdError.code),)))
        member.awaiting_join = member.awaiting_sync = False
        if self.leader_id == mid:
            self.leader_id = next(iter(self.members), None)
        fx.append(MemberRemoved(mid, member.group_instance_id, reason))

    def _remove_member_and_update(self, member: MemberMetadata, reason: str, now_ms: int,
                                  fx: list[Effect]) -> None:
        self._remove_member(member, reason, fx)
        if self.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(now_ms, f"removing member {member.member_id} on {reason}", fx)
        elif self.state is GroupState.PREPARING_REBALANCE:
            self._maybe_complete_join(now_ms, fx)

    # ---------------------------------------------------------------- helpers

    def _generate_member_id(self, client_id: str, group_instance_id: str | None) -> str:
        prefix = group_instance_id if group_instance_id is not None else client_id
        while True:
            candidate = f"{prefix}-{self._new_id()}"
            if candidate not in self.members and candidate not in self.pending_members:
                return candidate

    def _validate_member(self, member_id: str, group_instance_id: str | None) -> type[E.KafkaError] | None:
        if group_instance_id is not None:
            mapped = self.static_members.get(group_instance_id)
            if mapped is not None and mapped != member_id:
                return E.FencedInstanceIdError
        member = self.members.get(member_id)
        if member is None:
            return E.UnknownMemberIdError
        if group_instance_id is not None and member.group_instance_id != group_instance_id:
            return E.FencedInstanceIdError
        return None

    def _max_rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def _candidate_protocols(self) -> list[str]:
        """Protocols every member supports, in the first member's preference order."""
        members = list(self.members.values())
        if not members:
            return []
        common = set.intersection(*({n for n, _ in m.protocols} for m in members))
        return [n for n, _ in members[0].protocols if n in common]

    def _supports_protocols(self, protocol_type: str, protocols: Sequence[tuple[str, bytes]]) -> bool:
        if not self.members:
            return True
        if protocol_type != self.protocol_type:
            return False
        return bool(set(self._candidate_protocols()) & {n for n, _ in protocols})

    def _select_protocol(self) -> str:
        """Kafka's vote: each member votes for its most preferred common protocol."""
        candidates = self._candidate_protocols()
        if not candidates:
            raise E.IllegalStateError(f"no protocol supported by all members of {self.group_id}")
        votes = dict.fromkeys(candidates, 0)
        for m in self.members.values():
            choice = next(n for n, _ in m.protocols if n in votes)
            votes[choice] += 1
        # max() keeps the first of equal counts: ties go to the earliest member's preference.
        return max(candidates, key=lambda n: votes[n])

    def _join_response(self, member: MemberMetadata, *, skip_assignment: bool = False) -> JoinGroupResponse:
        is_leader = member.member_id == self.leader_id
        members: tuple[JoinGroupMember, ...] = ()
        if is_leader:
            members = tuple(JoinGroupMember(m.member_id, m.group_instance_id, m.metadata(self.protocol_name))
                            for m in self.members.values())
        return JoinGroupResponse(member.member_id, NONE, self.generation_id, self.protocol_type,
                                 self.protocol_name, self.leader_id or "", members, skip_assignment)

    def _sync_response(self, member: MemberMetadata) -> SyncGroupResponse:
        return SyncGroupResponse(member.member_id, NONE, self.protocol_type, self.protocol_name,
                                 member.assignment)

    # ------------------------------------------------------------- describe

    def describe(self) -> GroupDescription:
        stable = self.state is GroupState.STABLE
        members = tuple(MemberDescription(m.member_id, m.group_instance_id, m.client_id, m.client_host,
                                          m.metadata(self.protocol_name) if stable else b"",
                                          m.assignment if stable else b"")
                        for m in self.members.values())
        return GroupDescription(self.group_id, self.state, self.protocol_type or "",
                                (self.protocol_name or "") if stable else "", members)

    # -------------------------------------------------------------- offsets

    def commit_offsets(self, member_id: str, generation_id: int,
                       offsets: Mapping[TopicPartitionKey, tuple], now_ms: int, *,
                       commit_timestamp_ms: int = -1, group_instance_id: str | None = None) -> CommitResult:
        """Validate an OffsetCommit; the offsets are applied by `on_offsets_stored`.

        `offsets`: {tp: (offset, metadata)} or {tp: (offset, metadata, leader_epoch)}.

        `now_ms` is the session clock (a commit counts as a heartbeat, as in
        Kafka); `commit_timestamp_ms` is the wall-clock time stored with the
        offsets. The driver writes the `PersistOffsets` records (acks=all) and
        only then applies them and answers: a commit is never readable before
        it is durable, nor after its write failed.
        """
        code = self._commit_error(member_id, generation_id, group_instance_id)
        if code != NONE:
            return CommitResult(code, {tp: code for tp in offsets})
        if member_id in self.members:
            self.members[member_id].last_heartbeat_ms = now_ms
        records = tuple(self._offset_record(topic, partition, OffsetAndMetadata(
                            int(offset), metadata or "", commit_timestamp_ms, int(epoch[0]) if epoch else -1))
                        for (topic, partition), (offset, metadata, *epoch) in offsets.items())
        return CommitResult(NONE, {tp: NONE for tp in offsets}, (PersistOffsets(records),))

    def on_offsets_stored(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Applies written offset records (commits and tombstones), in log order."""
        for rec in records:
            if rec.get("type") != "offset_commit":
                continue
            tp = TopicPartition(rec["topic"], int(rec["partition"]))
            if rec.get("deleted"):
                self.offsets.pop(tp, None)
            else:
                # Records written before leader epochs were stored have none: -1, as Kafka's v1 values.
                self.offsets[tp] = OffsetAndMetadata(int(rec["offset"]), rec.get("metadata") or "",
                                                     int(rec.get("commit_timestamp_ms", -1)),
                                                     int(rec.get("leader_epoch", -1)))

    def _commit_error(self, member_id: str, generation_id: int, group_instance_id: str | None) -> int:
        if self.state is GroupState.DEAD:
            return E.CoordinatorNotAvailableError.code
        if generation_id < 0 and member_id == UNKNOWN_MEMBER_ID:
            # A standalone (assign()-mode) consumer: only while nobody is in the group.
            return NONE if self.state is GroupState.EMPTY else E.UnknownMemberIdError.code
        err = self._validate_member(member_id, group_instance_id)
        if err is not None:
            return err.code
        if generation_id != self.generation_id:
            return E.IllegalGenerationError.code
        if self.state is GroupState.COMPLETING_REBALANCE:
            # The member must finish SyncGroup first.
            return E.RebalanceInProgressError.code
        return NONE  # Stable, or PreparingRebalance (eager consumers commit while revoking)

    def committed(self, tps: Iterable[TopicPartitionKey] | None = None
                  ) -> dict[TopicPartitionKey, OffsetAndMetadata | None]:
        """OffsetFetch: None for partitions without a committed offset; all if tps is None."""
        if tps is None:
            return dict(self.offsets)
        return {tp: self.offsets.get(tp) for tp in tps}

    def delete(self) -> DeleteResult:
        """DeleteGroups: only an Empty group may be deleted; it becomes Dead.

        A Dead group answers COORDINATOR_NOT_AVAILABLE; the driver drops it
        and makes a fresh `GroupMetadata` for the next JoinGroup.
        """
        if self.state is GroupState.DEAD:
            return DeleteResult(E.GroupIdNotFoundError.code)
        if self.state is not GroupState.EMPTY:
            return DeleteResult(E.NonEmptyGroupError.code)
        records = tuple(self._offset_record(t, p, None) for (t, p) in self.offsets)
        self.offsets.clear()
        self.state = GroupState.DEAD
        log.info("Group %s transitioned to Dead in generation %d", self.group_id, self.generation_id)
        fx: list[Effect] = []
        if records:
            fx.append(PersistOffsets(records))
        fx.append(PersistGroup({"type": "group_metadata", "group_id": self.group_id, "deleted": True}))
        return DeleteResult(NONE, tuple(fx))

    # ------------------------------------------------------------- records

    def to_record(self, assignments: Mapping[str, bytes] | None = None) -> dict[str, Any]:
        """The group metadata record (JSON-able), as Kafka's GroupMetadataValue.

        Members are listed when Stable, or when `assignments` (the leader's, not yet stored) are given.
        """
        listed = assignments is not None or self.state is GroupState.STABLE
        if assignments is None:
            assignments = {m.member_id: m.assignment for m in self.members.values()}
        return {
            "type": "group_metadata",
            "group_id": self.group_id,
            "protocol_type": self.protocol_type,
            "generation_id": self.generation_id,
            "protocol": self.protocol_name,
            "leader": self.leader_id,
            "members": [{
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "client_id": m.client_id,
                "client_host": m.client_host,
                "rebalance_timeout_ms": m.rebalance_timeout_ms,
                "session_timeout_ms": m.session_timeout_ms,
                "subscription": _b64(m.metadata(self.protocol_name)),
                "assignment": _b64(assignments.get(m.member_id, b"")),
            } for m in self.members.values()] if listed else [],
        }

    def offset_records(self) -> list[dict[str, Any]]:
        return [self._offset_record(t, p, om) for (t, p), om in self.offsets.items()]

    def _offset_record(self, topic: str, partition: int, om: OffsetAndMetadata | None) -> dict[str, Any]:
        rec: dict[str, Any] = {"type": "offset_commit", "group_id": self.group_id,
                               "topic": topic, "partition": partition}
        if om is None:
            rec["deleted"] = True
        else:
            rec.update(offset=om.offset, metadata=om.metadata, commit_timestamp_ms=om.commit_timestamp_ms,
                       leader_epoch=om.leader_epoch)
        return rec

    @classmethod
    def from_records(cls, group_id: str, records: Iterable[Mapping[str, Any]], now_ms: int,
                     **kwargs: Any) -> GroupMetadata | None:
        """Rebuild a group by replaying its `__consumer_offsets` records in log order.

        Returns None when nothing is left (deleted, no offsets). A group with
        members comes back Stable with fresh sessions starting at `now_ms`,
        as Kafka does when a coordinator loads a group.
        """
        group_rec: Mapping[str, Any] | None = None
        group = cls(group_id, **kwargs)
        for rec in records:
            if rec.get("group_id") != group_id:
                continue
            if rec["type"] == "group_metadata":
                group_rec = None if rec.get("deleted") else rec
            else:
                group.on_offsets_stored((rec,))
        if group_rec is None and not group.offsets:
            return None
        if group_rec is None:
            return group
        group.generation_id = int(group_rec.get("generation_id", 0))
        group.protocol_type = group_rec.get("protocol_type")
        protocol = group_rec.get("protocol")
        for mr in group_rec.get("members", []):
            m = MemberMetadata(mr["member_id"], mr.get("group_instance_id"), mr.get("client_id", ""),
                               mr.get("client_host", ""), int(mr["session_timeout_ms"]),
                               int(mr["rebalance_timeout_ms"]), group.protocol_type or "",
                               [(protocol, _unb64(mr.get("subscription", "")))] if protocol else [],
                               _unb64(mr.get("assignment", "")), last_heartbeat_ms=now_ms)
            group.members[m.member_id] = m
            if m.group_instance_id is not None:
                group.static_members[m.group_instance_id] = m.member_id
        if group.members:
            group.protocol_name = protocol
            leader = group_rec.get("leader")
            group.leader_id = leader if leader in group.members else next(iter(group.members))
            group.state = GroupState.STABLE
        return group


def txn_handed_over_record(group_id: str, transactional_id: str, txn: str) -> dict[str, Any]:
    """Written with a transaction's offsets: this group has the offsets of `txn` (the coordinator's id
    for one transaction of `transactional_id`), so a repeat after a restart must not apply them again."""
    return {"type": "txn_offsets_handed_over", "group_id": group_id, "transactional_id": transactional_id,
            "txn": txn}


def txn_handed_over_from_records(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for rec in records:
        if rec.get("type") == "txn_offsets_handed_over":
            out[(rec["group_id"], rec["transactional_id"])] = rec["txn"]
    return out


def record_key(record: Mapping[str, Any]) -> str:
    """Compaction key of a `__consumer_offsets` record (group, group+partition, or group+transactional.id)."""
    if record["type"] == "group_metadata":
        return json.dumps(["group_metadata", record["group_id"]])
    if record["type"] == "txn_offsets_handed_over":
        return json.dumps(["txn_offsets_handed_over", record["group_id"], record["transactional_id"]])
    return json.dumps(["offset_commit", record["group_id"], record["topic"], int(record["partition"])])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text) if text else b""

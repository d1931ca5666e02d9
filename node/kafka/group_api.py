"""Kafka's classic group protocol on the Kafka listener: thin adapters over GroupCoordinator.

Each handler turns the kio request into the driver's arguments (the gpb
messages the gRPC servicer passes too), calls the driver, and describes the
answer as plain values that `codec.build` fits to the request's version.
JoinGroup / SyncGroup block while the driver parks them, as they block a
gRPC server thread; the listener serves one request at a time per
connection, so only that connection waits.

Versions: Kafka 3.0's ranges, except OffsetCommit from 2 and OffsetFetch
from 1 (kio has no older ones; Kafka 4 dropped them too), JoinGroup to 7 and
LeaveGroup to 4 (v8 / v5 add only a reason string, and kafka-python reads
JoinGroup 9 as a Kafka 3.2 broker), OffsetCommit / OffsetFetch to 8 (v9 is
KIP-848's member epoch).
"""
from __future__ import annotations

import datetime

from client.common import errors as E
from client.common.pb import group_pb2 as gpb
from client.common.types import TopicPartition
from node import group as G
from node.kafka.codec import build
from node.kafka.server import current_peer_host

OFFSET_COMMIT, OFFSET_FETCH, JOIN_GROUP, HEARTBEAT = 8, 9, 11, 12
LEAVE_GROUP, SYNC_GROUP, DESCRIBE_GROUPS, LIST_GROUPS, DELETE_GROUPS = 13, 14, 15, 16, 42
NO_AUTHORIZED_OPERATIONS = -(2**31)  # Kafka's "not requested"


def _ms(value: datetime.timedelta) -> int:
    return int(value // datetime.timedelta(milliseconds=1))


def _driver(ctx):
    gc = ctx.group_coordinator
    if gc is None:
        raise E.NotCoordinatorError("this node is not the group coordinator; ask FindCoordinator")
    return gc


def _instance(request) -> str | None:
    return getattr(request, "group_instance_id", None)


def _with_instance(msg, group_instance_id: str | None):
    """gpb's group_instance_id is optional: set only for static members."""
    if group_instance_id is not None:
        msg.group_instance_id = group_instance_id
    return msg


# ------------------------------------------------------------------ JoinGroup

def handle_join_group(ctx, header, request):
    version = header.request_api_version
    cls = ctx.response_class(header)
    session_ms = _ms(request.session_timeout)
    # v0 has no rebalance timeout: Kafka uses the session timeout.
    rebalance_ms = _ms(request.rebalance_timeout) if version >= 1 else -1
    r = _with_instance(gpb.JoinGroupRequest(
        group_id=request.group_id, session_timeout_ms=session_ms,
        rebalance_timeout_ms=rebalance_ms if rebalance_ms >= 0 else session_ms,
        member_id=request.member_id, protocol_type=request.protocol_type, client_id=header.client_id or "",
        protocols=[gpb.JoinGroupProtocol(name=p.name, metadata=p.metadata) for p in request.protocols]),
        _instance(request))
    try:
        # KIP-394: from v4 a new member first gets its id with MEMBER_ID_REQUIRED and rejoins with it.
        # The client host as Kafka prints it ("/127.0.0.1"), for DescribeGroups.
        host = current_peer_host()
        res = _driver(ctx).join_group(r, f"/{host}" if host else "", require_known_member_id=version >= 4)
    except E.KafkaError as e:
        return build(cls, {"error_code": e.code, "member_id": request.member_id})
    return build(cls, {
        "error_code": res.error_code, "generation_id": res.generation_id, "protocol_type": res.protocol_type,
        # nullable only from v7
        "protocol_name": res.protocol_name if version >= 7 else res.protocol_name or "",
        "leader": res.leader, "skip_assignment": res.skip_assignment, "member_id": res.member_id,
        "members": [{"member_id": m.member_id, "group_instance_id": m.group_instance_id, "metadata": m.metadata}
                    for m in res.members]})


# ------------------------------------------------------------------ SyncGroup

def handle_sync_group(ctx, header, request):
    cls = ctx.response_class(header)
    r = _with_instance(gpb.SyncGroupRequest(
        group_id=request.group_id, generation_id=request.generation_id, member_id=request.member_id,
        protocol_type=getattr(request, "protocol_type", None) or "",
        protocol_name=getattr(request, "protocol_name", None) or "",
        assignments=[gpb.SyncGroupAssignment(member_id=a.member_id, assignment=a.assignment)
                     for a in request.assignments]),
        _instance(request))
    try:
        res = _driver(ctx).sync_group(r)
    except E.KafkaError as e:
        return build(cls, {"error_code": e.code})
    return build(cls, {"error_code": res.error_code, "protocol_type": res.protocol_type,
                       "protocol_name": res.protocol_name, "assignment": res.assignment})


# ------------------------------------------------------------------ Heartbeat

def handle_heartbeat(ctx, header, request):
    r = _with_instance(gpb.HeartbeatRequest(group_id=request.group_id, generation_id=request.generation_id,
                                            member_id=request.member_id), _instance(request))
    try:
        err = _driver(ctx).heartbeat(r)
    except E.KafkaError as e:
        err = e.code
    return build(ctx.response_class(header), {"error_code": err})


# ----------------------------------------------------------------- LeaveGroup

def handle_leave_group(ctx, header, request):
    cls = ctx.response_class(header)
    batched = header.request_api_version >= 3  # KIP-345: a batch of members, static ones by instance id
    idents = request.members if batched else [request]
    r = gpb.LeaveGroupRequest(group_id=request.group_id, members=[
        _with_instance(gpb.LeaveGroupMember(member_id=m.member_id), getattr(m, "group_instance_id", None))
        for m in idents])
    try:
        res = _driver(ctx).leave_group(r)
    except E.KafkaError as e:
        return build(cls, {"error_code": e.code})
    if not batched:  # one member, one code: the member's own
        return build(cls, {"error_code": res.error_code or next((m.error_code for m in res.members), 0)})
    return build(cls, {"error_code": res.error_code, "members": [
        {"member_id": m.member_id, "group_instance_id": m.group_instance_id, "error_code": m.error_code}
        for m in res.members]})


# --------------------------------------------------------------- OffsetCommit

def _commit_partition(topic: str, p) -> gpb.OffsetCommitPartition:
    out = gpb.OffsetCommitPartition(topic=topic, partition=p.partition_index, committed_offset=p.committed_offset,
                                    committed_metadata=p.committed_metadata or "")
    epoch = getattr(p, "committed_leader_epoch", -1)  # v6+ (KIP-320)
    if epoch >= 0:
        out.committed_leader_epoch = epoch
    return out


def handle_offset_commit(ctx, header, request):
    r = _with_instance(gpb.OffsetCommitRequest(
        group_id=request.group_id, generation_id=request.generation_id_or_member_epoch,
        member_id=request.member_id,
        partitions=[_commit_partition(t.name, p) for t in request.topics for p in t.partitions]),
        _instance(request))
    try:
        codes = dict(_driver(ctx).commit(r).partitions)
    except E.KafkaError as e:
        codes = {(t.name, p.partition_index): e.code for t in request.topics for p in t.partitions}
    return build(ctx.response_class(header), {"topics": [
        {"name": t.name, "partitions": [{"partition_index": p.partition_index,
                                         "error_code": codes.get((t.name, p.partition_index), 0)}
                                        for p in t.partitions]}
        for t in request.topics]})


# ---------------------------------------------------------------- OffsetFetch

def _fetch_group(ctx, group_id: str, topics, require_stable: bool) -> list[dict]:
    """One group's topics as response values (topics None: every partition it has offsets for)."""
    gc = _driver(ctx)
    tps = [TopicPartition(t.name, p) for t in topics for p in t.partition_indexes] if topics is not None else None
    # Ask about pending transactions first: one not pending now has handed its offsets over (KIP-447).
    unstable = gc.unstable_offsets(group_id, tps) if require_stable and tps else set()
    offsets = gc.fetch_offsets(group_id, tps)
    by_topic: dict[str, list[dict]] = {}
    for tp in tps if tps is not None else sorted(offsets):
        om = offsets.get(tp)
        part = {"partition_index": tp.partition, "committed_offset": -1, "committed_leader_epoch": -1,
                "metadata": "", "error_code": 0}
        if tp in unstable:
            part["error_code"] = E.UnstableOffsetCommitError.code
        elif om is not None:
            part.update(committed_offset=om.offset, metadata=om.metadata, committed_leader_epoch=om.leader_epoch)
        by_topic.setdefault(tp.topic, []).append(part)
    return [{"name": name, "partitions": parts} for name, parts in by_topic.items()]


def handle_offset_fetch(ctx, header, request):
    cls = ctx.response_class(header)
    require_stable = bool(getattr(request, "require_stable", False))
    if header.request_api_version >= 8:  # KIP-709: several groups, an error per group
        groups = []
        for g in request.groups:
            try:
                groups.append({"group_id": g.group_id, "topics": _fetch_group(ctx, g.group_id, g.topics,
                                                                               require_stable)})
            except E.KafkaError as e:
                groups.append({"group_id": g.group_id, "error_code": e.code})
        return build(cls, {"groups": groups})
    try:
        return build(cls, {"topics": _fetch_group(ctx, request.group_id, request.topics, require_stable)})
    except E.KafkaError as e:
        # v1 has no top-level error code: every partition asked for carries it.
        return build(cls, {"error_code": e.code, "topics": [
            {"name": t.name, "partitions": [{"partition_index": p, "committed_offset": -1, "error_code": e.code}
                                            for p in t.partition_indexes]}
            for t in request.topics or ()]})


# ------------------------------------------------------------- DescribeGroups

def handle_describe_groups(ctx, header, request):
    out = []
    for gid in request.groups:
        try:
            d = _driver(ctx).describe(gid)
        except E.KafkaError as e:
            out.append({"group_id": gid, "error_code": e.code, "error_message": str(e),
                        "authorized_operations": NO_AUTHORIZED_OPERATIONS})
            continue
        if d is None:  # as Kafka: an unknown group is described as Dead
            d = G.GroupDescription(gid, G.GroupState.DEAD, "", "", ())
        out.append({"group_id": gid, "group_state": d.state.value, "protocol_type": d.protocol_type,
                    "protocol_data": d.protocol, "authorized_operations": NO_AUTHORIZED_OPERATIONS,
                    "members": [{"member_id": m.member_id, "group_instance_id": m.group_instance_id,
                                 "client_id": m.client_id, "client_host": m.client_host,
                                 "member_metadata": m.metadata, "member_assignment": m.assignment}
                                for m in d.members]})
    return build(ctx.response_class(header), {"groups": out})


# ----------------------------------------------------------------- ListGroups

def handle_list_groups(ctx, header, request):
    cls = ctx.response_class(header)
    if ctx.group_coordinator is None:
        return build(cls, {"groups": []})  # admin clients ask every node; only the coordinator has groups
    try:
        groups = ctx.group_coordinator.list_groups()
    except E.KafkaError as e:
        return build(cls, {"error_code": e.code})
    wanted = {s.lower() for s in getattr(request, "states_filter", ())}
    return build(cls, {"groups": [{"group_id": gid, "protocol_type": ptype, "group_state": state}
                                  for gid, ptype, state in sorted(groups)
                                  if not wanted or state.lower() in wanted]})


# ---------------------------------------------------------------- DeleteGroups

def handle_delete_groups(ctx, header, request):
    """Only an Empty group is deleted (its offsets too); others answer NON_EMPTY_GROUP / GROUP_ID_NOT_FOUND."""
    results = []
    for gid in request.groups_names:
        try:
            err = _driver(ctx).delete(gid)
        except E.KafkaError as e:
            err = e.code
        results.append({"group_id": gid, "error_code": err})
    return build(ctx.response_class(header), {"results": results})


HANDLERS = {
    OFFSET_COMMIT: (2, 8, handle_offset_commit),
    OFFSET_FETCH: (1, 8, handle_offset_fetch),
    JOIN_GROUP: (0, 7, handle_join_group),
    HEARTBEAT: (0, 4, handle_heartbeat),
    LEAVE_GROUP: (0, 4, handle_leave_group),
    SYNC_GROUP: (0, 5, handle_sync_group),
    DESCRIBE_GROUPS: (0, 5, handle_describe_groups),
    LIST_GROUPS: (0, 4, handle_list_groups),
    DELETE_GROUPS: (0, 2, handle_delete_groups),
}

"""ACLs on the gRPC listener: what each client RPC touches, checked with the gate's decision (the one
the Kafka listener uses), and Kafka's error codes in the response body.

Topic RPCs are answered per partition (the authorized part is served, the rest gets
TOPIC_AUTHORIZATION_FAILED); group and transaction RPCs are refused whole with the response's
error_code. An RPC without a rule here is one of the cluster's own (replication, registration,
markers): a client principal needs CLUSTER_ACTION on the cluster for it.
"""
from __future__ import annotations

import grpc
from google.protobuf import descriptor_pool, message_factory

from client.common import errors as E
from node.security.acl import CLUSTER_NAME
from node.security.acl import Operation as Op
from node.security.acl import ResourceType as R
from node.security.gate import CLUSTER_DENIED, GROUP_DENIED, TOPIC_DENIED, TXN_DENIED, Session


def _narrowed(request, field: str, items):
    """A copy of the request whose repeated `field` holds only `items` (the allowed ones)."""
    narrowed = type(request)()
    narrowed.CopyFrom(request)
    del getattr(narrowed, field)[:]
    getattr(narrowed, field).extend(items)
    return narrowed


def _response_class(method: str):
    service, name = method.strip("/").split("/")
    desc = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name).output_type
    return message_factory.GetMessageClass(desc)


def _deny(resp_cls, code: int, what: str):
    return resp_cls(error_code=code, error_message=f"{E.for_code(code).name}: {what}")


def _partitions(op: Op):
    def rule(gate, s, request, resp_cls, call):
        code = TOPIC_DENIED
        txn = getattr(request, "transactional_id", "")
        if txn and not gate.authorize(s, Op.WRITE, R.TRANSACTIONAL_ID, txn):
            code, may = TXN_DENIED, (lambda t: False)
        else:
            seen: dict[str, bool] = {}
            may = lambda t: seen.setdefault(t, gate.authorize(s, op, R.TOPIC, t))
        denied = [p for p in request.partitions if not may(p.topic)]
        if not denied:
            return call(request)
        allowed = [p for p in request.partitions if may(p.topic)]
        if allowed:
            resp = call(_narrowed(request, "partitions", allowed))
        else:
            resp = resp_cls()
        for p in denied:
            resp.partitions.add(topic=p.topic, partition=p.partition, error_code=code,
                                error_message=f"{E.for_code(code).name}: {p.topic}")
        return resp
    return rule


def _metadata(gate, s, request, resp_cls, call):
    may = lambda t: gate.authorize(s, Op.DESCRIBE, R.TOPIC, t)
    if not request.topics:
        resp = call(request)
        keep = [t for t in resp.topics if may(t.name)]
        del resp.topics[:]
        resp.topics.extend(keep)
        return resp
    if request.allow_auto_topic_creation and not (
            gate.authorize(s, Op.CREATE, R.CLUSTER, CLUSTER_NAME)
            or all(gate.authorize(s, Op.CREATE, R.TOPIC, t) for t in request.topics)):
        narrowed = type(request)()
        narrowed.CopyFrom(request)
        narrowed.allow_auto_topic_creation = False  # Kafka: auto-creation needs CREATE
        request = narrowed
    denied = [t for t in request.topics if not may(t)]
    if not denied:
        return call(request)
    allowed = [t for t in request.topics if may(t)]
    if allowed:
        resp = call(_narrowed(request, "topics", allowed))
    else:  # an empty topic list would ask for every topic
        narrowed = type(request)(topics=["\0none"])
        resp = call(narrowed)
        del resp.topics[:]
    for t in denied:
        resp.topics.add(name=t, error_code=TOPIC_DENIED)
    return resp


def _topic_admin(op: Op, names_field: str, name_of):
    def rule(gate, s, request, resp_cls, call):
        if op == Op.CREATE and gate.authorize(s, Op.CREATE, R.CLUSTER, CLUSTER_NAME):
            return call(request)
        items = list(getattr(request, names_field))
        denied = [i for i in items if not gate.authorize(s, op, R.TOPIC, name_of(i))]
        if not denied:
            return call(request)
        allowed = [i for i in items if i not in denied]
        if allowed:
            resp = call(_narrowed(request, names_field, allowed))
        else:
            resp = resp_cls()
        for i in denied:
            resp.results.add(name=name_of(i), error_code=TOPIC_DENIED, error_message="Authorization failed.")
        return resp
    return rule


def _whole(code: int, op: Op, rtype: R, field: str):
    def rule(gate, s, request, resp_cls, call):
        name = getattr(request, field)
        if name and not gate.authorize(s, op, rtype, name):
            return _deny(resp_cls, code, name)
        return call(request)
    return rule


def _find_coordinator(gate, s, request, resp_cls, call):
    rtype, code = (R.TRANSACTIONAL_ID, TXN_DENIED) if request.key_type == 1 else (R.GROUP, GROUP_DENIED)
    if not gate.authorize(s, Op.DESCRIBE, rtype, request.key):
        return _deny(resp_cls, code, request.key)
    return call(request)


def _init_producer_id(gate, s, request, resp_cls, call):
    if request.transactional_id:
        return _whole(TXN_DENIED, Op.WRITE, R.TRANSACTIONAL_ID, "transactional_id")(gate, s, request, resp_cls, call)
    if gate.authorize(s, Op.IDEMPOTENT_WRITE, R.CLUSTER, CLUSTER_NAME) or gate.may_write_some_topic(s):
        return call(request)
    return _deny(resp_cls, CLUSTER_DENIED, "IDEMPOTENT_WRITE on the cluster")


def _txn_and_group(gate, s, request, resp_cls, call):
    if not gate.authorize(s, Op.WRITE, R.TRANSACTIONAL_ID, request.transactional_id):
        return _deny(resp_cls, TXN_DENIED, request.transactional_id)
    if getattr(request, "group_id", "") and not gate.authorize(s, Op.READ, R.GROUP, request.group_id):
        return _deny(resp_cls, GROUP_DENIED, request.group_id)
    return call(request)


def _delete_groups(gate, s, request, resp_cls, call):
    denied = [g for g in request.group_ids if not gate.authorize(s, Op.DELETE, R.GROUP, g)]
    if not denied:
        return call(request)
    allowed = [g for g in request.group_ids if g not in denied]
    resp = call(type(request)(group_ids=allowed)) if allowed else resp_cls()
    for g in denied:
        resp.results.add(group_id=g, error_code=GROUP_DENIED, error_message=f"GROUP_AUTHORIZATION_FAILED: {g}")
    return resp


def _read_only_cluster(gate, s, request, resp_cls, call):
    if gate.authorize(s, Op.DESCRIBE, R.CLUSTER, CLUSTER_NAME):
        return call(request)
    return _deny(resp_cls, CLUSTER_DENIED, "DESCRIBE on the cluster")


_RULES = {
    "/brokerlab.Broker/Produce": _partitions(Op.WRITE),
    "/brokerlab.Broker/Fetch": _partitions(Op.READ),
    "/brokerlab.Broker/ListOffsets": _partitions(Op.DESCRIBE),
    "/brokerlab.Broker/OffsetForLeaderEpoch": _partitions(Op.DESCRIBE),
    "/brokerlab.Metadata/GetMetadata": _metadata,
    "/brokerlab.Controller/CreateTopics": _topic_admin(Op.CREATE, "topics", lambda t: t.name),
    "/brokerlab.Controller/DeleteTopics": _topic_admin(Op.DELETE, "names", lambda n: n),
    "/brokerlab.GroupCoordinator/FindCoordinator": _find_coordinator,
    "/brokerlab.GroupCoordinator/JoinGroup": _whole(GROUP_DENIED, Op.READ, R.GROUP, "group_id"),
    "/brokerlab.GroupCoordinator/SyncGroup": _whole(GROUP_DENIED, Op.READ, R.GROUP, "group_id"),
    "/brokerlab.GroupCoordinator/Heartbeat": _whole(GROUP_DENIED, Op.READ, R.GROUP, "group_id"),
    "/brokerlab.GroupCoordinator/LeaveGroup": _whole(GROUP_DENIED, Op.READ, R.GROUP, "group_id"),
    "/brokerlab.GroupCoordinator/OffsetCommit": _whole(GROUP_DENIED, Op.READ, R.GROUP, "group_id"),
    "/brokerlab.GroupCoordinator/OffsetFetch": _whole(GROUP_DENIED, Op.DESCRIBE, R.GROUP, "group_id"),
    "/brokerlab.GroupCoordinator/ListGroups": _read_only_cluster,
    "/brokerlab.GroupCoordinator/DescribeGroups": _read_only_cluster,
    "/brokerlab.GroupCoordinator/DeleteGroups": _delete_groups,
    "/brokerlab.TxnCoordinator/InitProducerId": _init_producer_id,
    "/brokerlab.TxnCoordinator/AddPartitionsToTxn": _txn_and_group,
    "/brokerlab.TxnCoordinator/AddOffsetsToTxn": _txn_and_group,
    "/brokerlab.TxnCoordinator/EndTxn": _txn_and_group,
    "/brokerlab.TxnCoordinator/TxnOffsetCommit": _txn_and_group,
    "/brokerlab.TxnCoordinator/ListTransactions": _read_only_cluster,
    "/brokerlab.TxnCoordinator/DescribeTransactions": _read_only_cluster,
}


def authorized_handler(gate, principal: str, method: str, handler):
    """`handler` wrapped in the method's ACL check for `principal` (a client, not the cluster)."""
    if handler is not None and handler.stream_stream is not None and method not in _RULES:
        return _cluster_stream(gate, principal, method, handler)  # the replica fetch stream
    if handler is None or handler.unary_unary is None:
        return handler
    rule = _RULES.get(method)
    resp_cls = _response_class(method)
    inner = handler.unary_unary

    def behavior(request, context):
        peer = context.peer() or ""
        host = peer.split(":")[1] if peer.startswith("ipv4:") else peer
        s = Session(host, principal=principal)
        if rule is None:
            if gate.authorize(s, Op.CLUSTER_ACTION, R.CLUSTER, CLUSTER_NAME):
                return inner(request, context)
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"CLUSTER_AUTHORIZATION_FAILED: {method} is the cluster's own call; {principal} "
                          f"needs CLUSTER_ACTION on the cluster")
        return rule(gate, s, request, resp_cls, lambda r: inner(r, context))

    return grpc.unary_unary_rpc_method_handler(behavior, request_deserializer=handler.request_deserializer,
                                               response_serializer=handler.response_serializer)


def _cluster_stream(gate, principal: str, method: str, handler):
    """A stream of the cluster's own (ReplicaFetch): CLUSTER_ACTION on the cluster, checked when it opens."""
    inner = handler.stream_stream

    def behavior(request_iterator, context):
        peer = context.peer() or ""
        host = peer.split(":")[1] if peer.startswith("ipv4:") else peer
        if not gate.authorize(Session(host, principal=principal), Op.CLUSTER_ACTION, R.CLUSTER, CLUSTER_NAME):
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"CLUSTER_AUTHORIZATION_FAILED: {method} is the cluster's own call; {principal} "
                          f"needs CLUSTER_ACTION on the cluster")
        yield from inner(request_iterator, context)

    return grpc.stream_stream_rpc_method_handler(behavior, request_deserializer=handler.request_deserializer,
                                                 response_serializer=handler.response_serializer)

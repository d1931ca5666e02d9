"""Kafka's ACL admin APIs on the Kafka listener: DescribeAcls (29), CreateAcls (30), DeleteAcls (31),
so Kafka admin clients (confluent-kafka's AdminClient.create_acls, kafka-python's KafkaAdminClient)
manage the same ACLs `brokerlab acls` does. Registered when ACLs are enforced. The coordinator's
SecurityManager decides: on the coordinator it is called directly, on a broker through the Security
gRPC service with the cluster's control token. Who may call them is kafka_authz's rule (DESCRIBE /
ALTER on the cluster, as Kafka asks).
"""
from __future__ import annotations

import os

import grpc

from client.common import errors as E
from client.common.pb import security_pb2 as spb
from client.common.pb import security_pb2_grpc as sgrpc
from node.kafka.codec import build
from node.security import acl as A
from node.security.service import filter_pb

DESCRIBE_ACLS, CREATE_ACLS, DELETE_ACLS = 29, 30, 31


def _call(ctx, method: str, request):
    mgr = ctx.extension("SecurityManager")
    if mgr is not None:
        from node.security.service import SecurityServicer
        return getattr(SecurityServicer(mgr), method)(request, None)
    from node.auth import TOKEN_ENV, call_metadata
    stub = sgrpc.SecurityStub(ctx.broker.pool.get(ctx.broker.coordinator_addr))
    try:
        return getattr(stub, method)(request, timeout=15, metadata=call_metadata(os.environ.get(TOKEN_ENV) or None))
    except grpc.RpcError as e:
        return spb.SecurityAck(error_code=E.CoordinatorNotAvailableError.code,
                               error_message=f"the coordinator is unreachable: {e.code().name}")


def _filter(f) -> spb.AclFilter:
    """A DescribeAcls / DeleteAcls filter (Kafka's field names) as the Security service's."""
    return filter_pb(A.AclFilter(resource_type=f.resource_type_filter, name=f.resource_name_filter,
                                 pattern_type=f.pattern_type_filter, principal=f.principal_filter,
                                 host=f.host_filter, operation=f.operation, permission=f.permission_type))


def handle_describe_acls(ctx, header, request):
    resp = _call(ctx, "DescribeAcls", spb.AclFilterRequest(filter=_filter(request)))
    cls = ctx.response_class(header)
    if resp.error_code:
        return build(cls, {"error_code": resp.error_code, "error_message": resp.error_message, "resources": []})
    by_pattern: dict[tuple, list] = {}
    for b in resp.acls:
        by_pattern.setdefault((b.resource_type, b.resource_name, b.pattern_type), []).append(
            {"principal": b.principal, "host": b.host, "operation": b.operation, "permission_type": b.permission})
    return build(cls, {"throttle_time": 0, "error_code": 0, "error_message": None, "resources": [
        {"resource_type": rt, "resource_name": n, "pattern_type": pt, "acls": acls}
        for (rt, n, pt), acls in by_pattern.items()]})


def handle_create_acls(ctx, header, request):
    results = []
    for c in request.creations:
        b = spb.AclBinding(resource_type=c.resource_type, resource_name=c.resource_name,
                           pattern_type=getattr(c, "resource_pattern_type", A.PatternType.LITERAL),
                           principal=c.principal, host=c.host, operation=c.operation, permission=c.permission_type)
        resp = _call(ctx, "CreateAcls", spb.CreateAclsRequest(acls=[b]))
        results.append({"error_code": resp.error_code, "error_message": resp.error_message or None})
    return build(ctx.response_class(header), {"throttle_time": 0, "results": results})


def handle_delete_acls(ctx, header, request):
    out = []
    for f in request.filters:
        resp = _call(ctx, "DeleteAcls", spb.AclFilterRequest(filter=_filter(f)))
        out.append({"error_code": resp.error_code, "error_message": resp.error_message or None, "matching_acls": [
            {"error_code": 0, "error_message": None, "resource_type": b.resource_type, "resource_name": b.resource_name,
             "pattern_type": b.pattern_type, "principal": b.principal, "host": b.host, "operation": b.operation,
             "permission_type": b.permission} for b in resp.acls]})
    return build(ctx.response_class(header), {"throttle_time": 0, "filter_results": out})


HANDLERS = {
    DESCRIBE_ACLS: (1, 3, handle_describe_acls),
    CREATE_ACLS: (1, 3, handle_create_acls),
    DELETE_ACLS: (1, 3, handle_delete_acls),
}

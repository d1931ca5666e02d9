"""Group and transaction APIs on the Kafka listener, and FindCoordinator.

Every node answers FindCoordinator (clients ask whichever node they are
connected to); the answer is always the coordinator node, which hosts the
group and the transaction coordinator for every key and is listed in
Metadata under its own node id. The group APIs (node/kafka/group_api.py) and
the transaction APIs (node/kafka/txn_api.py) are served there; on a broker
they answer NOT_COORDINATOR, so the client asks FindCoordinator again.
"""
from __future__ import annotations

from client.common import errors as E
from node.internal_log import GROUP_KEY, OFFSETS_TOPIC, TRANSACTION_KEY, TXN_TOPIC, coordinator_not_available
from node.kafka import COORDINATOR_NODE_ID, group_api, txn_api
from node.kafka.codec import build

FIND_COORDINATOR = 10


def coordinator_endpoint(ctx, md=None) -> tuple[int, str, int] | None:
    """(node id, host, Kafka port) of the coordinator node, as Metadata `md` (default: the node's) lists it;
    None while unknown."""
    md = ctx.cluster_metadata() if md is None else md
    return next((n for n in ctx.kafka_nodes(md) if n[0] == COORDINATOR_NODE_ID), None)


def handle_find_coordinator(ctx, header, request):
    """v0-3 one key; v4+ (KIP-699) a batch of keys, one answer each."""
    batched = header.request_api_version >= 4
    keys = list(request.coordinator_keys) if batched else [request.key]
    key_type = getattr(request, "key_type", GROUP_KEY)
    md = ctx.cluster_metadata([OFFSETS_TOPIC, TXN_TOPIC])
    endpoint = coordinator_endpoint(ctx, md)
    results = []
    for key in keys:
        err: E.KafkaError | None = None
        if key_type not in (GROUP_KEY, TRANSACTION_KEY):
            err = E.InvalidRequestError(f"unsupported coordinator key type {key_type}")
        elif key_type == TRANSACTION_KEY and not key:
            err = E.InvalidRequestError("transactional.id is empty")
        elif endpoint is None:  # a broker that has not learnt the coordinator's listener yet
            err = E.CoordinatorNotAvailableError("the coordinator's Kafka listener is not known yet")
        else:  # the internal topic not created yet (too few brokers alive) or without a leader
            err = coordinator_not_available(md, key_type, key, ctx.config)
        node_id, host, port = endpoint if err is None else (-1, "", -1)
        results.append({"key": key, "node_id": node_id, "host": host, "port": port,
                        "error_code": err.code if err else 0, "error_message": str(err) if err else None})
    cls = ctx.response_class(header)
    return build(cls, {"coordinators": results} if batched else results[0])


HANDLERS = {
    FIND_COORDINATOR: (0, 6, handle_find_coordinator),
    **group_api.HANDLERS,
    **txn_api.HANDLERS,
}

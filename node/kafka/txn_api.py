"""Producer ids and transactions on the Kafka listener: thin adapters over TxnCoordinator.

An idempotent producer asks any node for a producer id (Kafka lets every
broker allocate one); a broker here forwards that one request to the
coordinator over gRPC, the way brokerlab's own producer asks. Transactional
requests go to the coordinator node, which FindCoordinator names; a broker
answers them NOT_COORDINATOR.

Versions: transactions v2 (KIP-890: AddPartitionsToTxn 4+, EndTxn 4+,
AddOffsetsToTxn 4+, TxnOffsetCommit 4+, InitProducerId 5+) are not offered;
librdkafka speaks AddPartitionsToTxn 0 and EndTxn 0-1 only.
"""
from __future__ import annotations

import datetime

import grpc

from client.common import errors as E
from client.common.network import transport_error
from client.common.pb import txn_pb2 as tpb
from client.common.pb import txn_pb2_grpc as tgrpc
from node.kafka.codec import build
from node.txn import TxnState
from node.txn_coordinator import partition_codes, topic_partitions

INIT_PRODUCER_ID, ADD_PARTITIONS_TO_TXN, ADD_OFFSETS_TO_TXN, END_TXN, TXN_OFFSET_COMMIT = 22, 24, 25, 26, 28
DESCRIBE_TRANSACTIONS, LIST_TRANSACTIONS = 65, 66
FORWARD_TIMEOUT_S = 10.0

# KIP-588: PRODUCER_FENCED is new; older request versions get INVALID_PRODUCER_EPOCH instead, as Kafka answers.
FENCED_SINCE = {INIT_PRODUCER_ID: 4, ADD_PARTITIONS_TO_TXN: 2, ADD_OFFSETS_TO_TXN: 2, END_TXN: 2,
                TXN_OFFSET_COMMIT: 2}


def _code(header, err: E.KafkaError | int | None) -> int:
    code = 0 if err is None else err if isinstance(err, int) else err.code
    if code == E.ProducerFencedError.code and header.request_api_version < FENCED_SINCE[header.request_api_key]:
        return E.InvalidProducerEpochError.code
    return code


def _driver(ctx):
    tc = ctx.txn_coordinator
    if tc is None:
        raise E.NotCoordinatorError("this node is not the transaction coordinator; ask FindCoordinator")
    return tc


# ------------------------------------------------------------- InitProducerId

def _forward_init_producer_id(ctx, timeout_ms: int) -> tuple[E.KafkaError | None, int, int]:
    """An idempotent producer's id from the coordinator, for a broker."""
    node = ctx.broker
    try:
        resp = tgrpc.TxnCoordinatorStub(node.pool.get(node.coordinator_addr)).InitProducerId(
            tpb.InitProducerIdRequest(transactional_id="", transaction_timeout_ms=timeout_ms),
            timeout=FORWARD_TIMEOUT_S)
    except grpc.RpcError as e:
        err = transport_error(e, node.coordinator_addr)
        return E.CoordinatorNotAvailableError(f"asking the coordinator for a producer id: {err}"), -1, -1
    if resp.error_code:
        return E.for_code(resp.error_code, resp.error_message), -1, -1
    return None, resp.producer_id, resp.producer_epoch


def handle_init_producer_id(ctx, header, request):
    tid = request.transactional_id
    timeout_ms = int(request.transaction_timeout // datetime.timedelta(milliseconds=1))
    # v3+ (KIP-360): a producer bumping its own epoch names itself; -1 / -1 otherwise.
    own = (getattr(request, "producer_id", -1), getattr(request, "producer_epoch", -1))
    if ctx.txn_coordinator is not None:
        err, pid, epoch = ctx.txn_coordinator.init_producer_id(tid or "", timeout_ms,
                                                               own if tid and min(own) >= 0 else None)
    elif not tid:
        err, pid, epoch = _forward_init_producer_id(ctx, timeout_ms)
    else:
        err, pid, epoch = E.NotCoordinatorError("this node is not the transaction coordinator"), -1, -1
    return build(ctx.response_class(header), {"error_code": _code(header, err), "producer_id": pid,
                                              "producer_epoch": epoch})


# ---------------------------------------------------------- AddPartitionsToTxn

def handle_add_partitions_to_txn(ctx, header, request):
    topics = request.v3_and_below_topics
    try:
        err = _driver(ctx).add_partitions(request.v3_and_below_transactional_id, request.v3_and_below_producer_id,
                                          request.v3_and_below_producer_epoch,
                                          [(t.name, p) for t in topics for p in t.partitions])
    except E.KafkaError as e:
        err = e
    # The whole request succeeds or fails; the partitions that do not exist are told apart (Kafka's answer).
    codes = partition_codes(err, [(t.name, p) for t in topics for p in t.partitions])
    return build(ctx.response_class(header), {"results_by_topic_v3_and_below": [
        {"name": t.name, "results_by_partition": [{"partition_index": p,
                                                   "partition_error_code": _code(header, codes[(t.name, p)])}
                                                  for p in t.partitions]}
        for t in topics]})


# ------------------------------------------------------------ AddOffsetsToTxn

def handle_add_offsets_to_txn(ctx, header, request):
    try:
        err = _driver(ctx).add_offsets(request.transactional_id, request.producer_id, request.producer_epoch,
                                       request.group_id)
    except E.KafkaError as e:
        err = e
    return build(ctx.response_class(header), {"error_code": _code(header, err)})


# --------------------------------------------------------------------- EndTxn

def handle_end_txn(ctx, header, request):
    try:
        err = _driver(ctx).end_txn(request.transactional_id, request.producer_id, request.producer_epoch,
                                   bool(request.committed))
    except E.KafkaError as e:
        err = e
    return build(ctx.response_class(header), {"error_code": _code(header, err)})


# ------------------------------------------------------------ TxnOffsetCommit

def handle_txn_offset_commit(ctx, header, request):
    # committed_leader_epoch from v2 (KIP-320); -1 before.
    offsets = [(t.name, p.partition_index, p.committed_offset, p.committed_metadata or "",
                getattr(p, "committed_leader_epoch", -1))
               for t in request.topics for p in t.partitions]
    # v3+ (KIP-447) names the member and its generation; older versions are not checked (generation -1).
    generation_id = getattr(request, "generation_id", -1)
    try:
        err = _driver(ctx).txn_offset_commit(request.transactional_id, request.producer_id, request.producer_epoch,
                                             request.group_id, offsets, getattr(request, "member_id", ""),
                                             generation_id)
    except E.KafkaError as e:
        err = e
    codes = partition_codes(err, [(t.name, p.partition_index) for t in request.topics for p in t.partitions])
    return build(ctx.response_class(header), {"topics": [
        {"name": t.name, "partitions": [{"partition_index": p.partition_index,
                                         "error_code": _code(header, codes[(t.name, p.partition_index)])}
                                        for p in t.partitions]}
        for t in request.topics]})


# ------------------------------------------------- ListTransactions / DescribeTransactions

def handle_list_transactions(ctx, header, request):
    cls = ctx.response_class(header)
    if ctx.txn_coordinator is None:
        return build(cls, {"transaction_states": []})  # admin clients ask every node; only one has them
    known = {s.value for s in TxnState}
    states = set(request.state_filters)
    try:
        recs = ctx.txn_coordinator.list_transactions(states & known, set(request.producer_id_filters))
    except E.KafkaError as e:
        return build(cls, {"error_code": e.code})
    if states - known and not states & known:
        recs = []  # only unknown states asked for: nothing matches
    return build(cls, {"unknown_state_filters": sorted(states - known), "transaction_states": [
        {"transactional_id": r.transactional_id, "producer_id": r.producer_id, "transaction_state": r.state.value}
        for r in recs]})


# Kafka's -1 for "no transaction open"; kio writes a pre-epoch datetime as that (its reader refuses it).
NO_START_TIME = datetime.datetime.fromtimestamp(0, datetime.UTC) - datetime.timedelta(milliseconds=1)


def _start_time(ms: int):
    return NO_START_TIME if ms < 0 else ms


def handle_describe_transactions(ctx, header, request):
    tids = list(request.transactional_ids)
    if ctx.txn_coordinator is None:
        err = E.NotCoordinatorError("this node is not the transaction coordinator")
        described = [(tid, err, None) for tid in tids]
    else:
        described = ctx.txn_coordinator.describe_transactions(tids)
    out = []
    for tid, err, rec in described:
        if err is not None:
            out.append({"transactional_id": tid, "error_code": err.code, "transaction_start_time": NO_START_TIME})
            continue
        out.append({"transactional_id": tid, "transaction_state": rec.state.value,
                    "transaction_timeout": rec.timeout_ms, "transaction_start_time": _start_time(rec.txn_start_ms),
                    "producer_id": rec.producer_id, "producer_epoch": rec.producer_epoch,
                    "topics": [{"topic": t, "partitions": ps} for t, ps in topic_partitions(rec.partitions).items()]})
    return build(ctx.response_class(header), {"transaction_states": out})


HANDLERS = {
    INIT_PRODUCER_ID: (0, 4, handle_init_producer_id),
    ADD_PARTITIONS_TO_TXN: (0, 3, handle_add_partitions_to_txn),
    ADD_OFFSETS_TO_TXN: (0, 3, handle_add_offsets_to_txn),
    END_TXN: (0, 3, handle_end_txn),
    TXN_OFFSET_COMMIT: (0, 3, handle_txn_offset_commit),
    DESCRIBE_TRANSACTIONS: (0, 0, handle_describe_transactions),
    LIST_TRANSACTIONS: (0, 0, handle_list_transactions),
}

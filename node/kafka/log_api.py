"""Log APIs: Produce, Fetch, ListOffsets, OffsetForLeaderEpoch — adapters over the broker's
driver calls (`Broker.produce`, `Broker.fetch`, ...), the same ones the gRPC servicer makes.

RecordBatch v2 bytes pass through untouched both ways. Produce ≥ 3 and Fetch ≥ 4
are the versions that carry v2 batches (librdkafka uses v2 only when both are
advertised); Fetch ≥ 13 names topics by id, which this cluster does not have.
"""
from __future__ import annotations

from client.common import errors
from node.broker import FetchPartition, PartitionProduce
from node.kafka.codec import build

PRODUCE, FETCH, LIST_OFFSETS, OFFSET_FOR_LEADER_EPOCH = 0, 1, 2, 23
_NOT_HERE = errors.NotLeaderOrFollowerError


def _code(e: Exception | None) -> int:
    if e is None:
        return 0
    return e.code if isinstance(e, errors.KafkaError) else errors.UnknownServerError.code


def _ms(td) -> int:
    return int(td.total_seconds() * 1000)


def _no_broker(ctx) -> errors.KafkaError:
    return _NOT_HERE(f"node {ctx.node_id} (the coordinator) leads no partitions")


def handle_produce(ctx, header, request):
    parts = [PartitionProduce(t.name, p.index, bytes(p.records or b"")) for t in request.topic_data
             for p in t.partition_data]
    topics = [t.name for t in request.topic_data]
    if ctx.broker is None:
        for p in parts:
            p.error = _no_broker(ctx)
    else:
        _auto_create(ctx, topics)
        ctx.broker.produce(parts, request.acks, _ms(request.timeout), request.transactional_id or "")
    if request.acks == 0:
        return None  # Kafka sends no response to acks=0
    by_topic: dict[str, list] = {}
    for p in parts:
        res = p.result
        # A duplicate idempotent batch is a success with its original offset, as in Kafka.
        ok = p.error is None
        by_topic.setdefault(p.topic, []).append({
            "index": p.partition, "error_code": _code(p.error),
            "base_offset": res.base_offset if ok and res is not None else -1,
            "log_append_time": res.log_append_time if ok and res is not None else -1,
            "log_start_offset": res.log_start_offset if ok and res is not None else -1,
            "record_errors": [], "error_message": None if ok else str(p.error)})
    return build(ctx.response_class(header), {
        "responses": [{"name": t, "partition_responses": ps} for t, ps in by_topic.items()], "throttle_time": 0})


def _auto_create(ctx, topics: list[str]) -> None:
    """Kafka auto-creates a produced-to topic it does not know when auto.create.topics.enable."""
    if not ctx.config.auto_create_topics_enable:
        return
    known = {t.name for t in ctx.broker.metadata.topics}
    missing = sorted({t for t in topics if t not in known})
    if missing:
        ctx.auto_create(missing)


def handle_fetch(ctx, header, request):
    wanted = [FetchPartition(t.topic, p.partition, p.fetch_offset, p.partition_max_bytes,
                             getattr(p, "current_leader_epoch", -1))
              for t in request.topics for p in t.partitions]
    isolation = getattr(request, "isolation_level", 0)
    if ctx.broker is None:
        fetched = None
    else:
        fetched = ctx.broker.fetch(wanted, replica_id=-1, isolation_level=isolation,
                                   max_wait_ms=_ms(request.max_wait), min_bytes=request.min_bytes,
                                   max_bytes=getattr(request, "max_bytes", 0x7FFFFFFF))
    by_topic: dict[str, list] = {}
    for i, w in enumerate(wanted):
        if fetched is None:
            by_topic.setdefault(w.topic, []).append({
                "partition_index": w.partition, "error_code": _NOT_HERE.code, "high_watermark": -1,
                "aborted_transactions": None, "records": b""})
            continue
        f = fetched[i]
        out = {"partition_index": f.partition, "error_code": _code(f.error), "high_watermark": f.high_watermark,
               "last_stable_offset": f.last_stable_offset, "log_start_offset": f.log_start_offset,
               # An error partition has empty records, as Kafka's MemoryRecords.EMPTY: librdkafka cannot
               # parse null ones ("invalid MessageSetSize -1") and drops the whole response.
               "preferred_read_replica": -1, "records": f.records if f.error is None else b"",
               # Kafka lists aborted transactions only for read_committed fetches (null otherwise).
               "aborted_transactions": ([{"producer_id": pid, "first_offset": first} for pid, first in f.aborted]
                                        if isolation == 1 and f.error is None else None)}
        by_topic.setdefault(w.topic, []).append(out)
    return build(ctx.response_class(header), {
        "throttle_time": 0, "error_code": 0, "session_id": 0,
        "responses": [{"topic": t, "partitions": ps} for t, ps in by_topic.items()]})


def handle_list_offsets(ctx, header, request):
    isolation = getattr(request, "isolation_level", 0)
    topics = []
    for t in request.topics:
        parts = []
        for p in t.partitions:
            out = {"partition_index": p.partition_index, "error_code": 0, "timestamp": -1, "offset": -1,
                   "leader_epoch": -1}
            try:
                if ctx.broker is None:
                    raise _no_broker(ctx)
                out["offset"], out["timestamp"] = ctx.broker.list_offset(t.name, p.partition_index, p.timestamp,
                                                                         isolation)
                r = ctx.broker.replicas.get((t.name, p.partition_index))
                if r is not None:
                    out["leader_epoch"] = r.model.leader_epoch
            except Exception as e:  # noqa: BLE001 - every failure becomes a per-partition error
                out["error_code"] = _code(e)
            parts.append(out)
        topics.append({"name": t.name, "partitions": parts})
    return build(ctx.response_class(header), {"throttle_time": 0, "topics": topics})


def handle_offset_for_leader_epoch(ctx, header, request):
    topics = []
    for t in request.topics:
        parts = []
        for p in t.partitions:
            out = {"partition": p.partition, "error_code": 0, "leader_epoch": -1, "end_offset": -1}
            try:
                if ctx.broker is None:
                    raise _no_broker(ctx)
                out["leader_epoch"], out["end_offset"] = ctx.broker.offset_for_leader_epoch(
                    t.topic, p.partition, getattr(p, "current_leader_epoch", -1), p.leader_epoch)
            except Exception as e:  # noqa: BLE001
                out["error_code"] = _code(e)
            parts.append(out)
        topics.append({"topic": t.topic, "partitions": parts})
    return build(ctx.response_class(header), {"throttle_time": 0, "topics": topics})


HANDLERS = {
    PRODUCE: (3, 10, handle_produce),
    FETCH: (4, 12, handle_fetch),
    LIST_OFFSETS: (1, 6, handle_list_offsets),  # v7 adds timestamp -3 (max timestamp, KIP-734): not served
    OFFSET_FOR_LEADER_EPOCH: (2, 4, handle_offset_for_leader_epoch),
}

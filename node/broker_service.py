"""gRPC servicers of the broker: decode, call the driver, encode. Kafka errors go in the body."""
from __future__ import annotations

import grpc

from client.common import errors
from client.common.pb import broker_pb2 as bpb
from client.common.pb import broker_pb2_grpc as bgrpc
from client.common.pb import metadata_pb2_grpc as mgrpc
from node.broker import FetchPartition, PartitionProduce


def _encode_fetched(resp, fetched) -> None:
    for f in fetched:
        out = resp.partitions.add(topic=f.topic, partition=f.partition, high_watermark=f.high_watermark,
                                  last_stable_offset=f.last_stable_offset, log_start_offset=f.log_start_offset)
        if f.error is not None:
            out.MergeFrom(bpb.FetchPartitionResponse(**_error_fields(f.error)))
            continue
        out.records = f.records
        out.log_end_offset, out.leader_epoch = f.log_end_offset, f.leader_epoch
        for pid, first in f.aborted:
            out.aborted_transactions.add(producer_id=pid, first_offset=first)


def _error_fields(e: Exception) -> dict:
    if not isinstance(e, errors.KafkaError):
        e = errors.UnknownServerError(f"{type(e).__name__}: {e}")
    return {"error_code": e.code, "error_message": str(e)}


class BrokerServicer(bgrpc.BrokerServicer, mgrpc.MetadataServicer):
    def __init__(self, broker):
        self.b = broker

    def GetMetadata(self, request, context):
        md = self.b.metadata
        if request.allow_auto_topic_creation and set(request.topics) - {t.name for t in md.topics}:
            forwarded = self._auto_create_at_controller(request)
            if forwarded is not None:
                return forwarded
        if request.topics:
            out = type(md)()
            out.CopyFrom(md)
            del out.topics[:]
            wanted = set(request.topics)
            known = {t.name for t in md.topics}
            for t in md.topics:
                if t.name in wanted:
                    out.topics.append(t)
            for name in wanted - known:
                out.topics.add(name=name, error_code=errors.UnknownTopicOrPartitionError.code)
            return out
        return md

    def _auto_create_at_controller(self, request):
        """Unknown topics to auto-create: the controller creates them (Coordinator.auto_create_topics) and
        answers; None when it cannot be reached (the caller gets this broker's view)."""
        try:
            return mgrpc.MetadataStub(self.b.pool.get(self.b.coordinator_addr)).GetMetadata(request, timeout=5)
        except grpc.RpcError:
            return None

    def Produce(self, request, context):
        parts = self.b.produce([PartitionProduce(p.topic, p.partition, p.records) for p in request.partitions],
                               request.acks, request.timeout_ms, request.transactional_id)
        resp = bpb.ProduceResponse()
        for p in parts:
            out = resp.partitions.add(topic=p.topic, partition=p.partition, base_offset=-1, log_append_time=-1)
            res = p.result
            if res is not None:
                out.base_offset = res.base_offset
                out.log_append_time = res.log_append_time
                out.log_start_offset = res.log_start_offset
                out.batch_base_offsets.extend(res.batch_base_offsets)
                if res.duplicate:
                    out.error_code = errors.DuplicateSequenceNumberError.code
                    out.error_message = "duplicate batch: already at its original offset"
            if p.error is not None:
                out.error_code, out.error_message = _error_fields(p.error).values()
        return resp

    def Fetch(self, request, context):
        parts = [FetchPartition(p.topic, p.partition, p.fetch_offset, p.partition_max_bytes, p.current_leader_epoch)
                 for p in request.partitions]
        fetched = self.b.fetch(parts, replica_id=request.replica_id, isolation_level=request.isolation_level,
                               max_wait_ms=request.max_wait_ms, min_bytes=request.min_bytes,
                               max_bytes=request.max_bytes, is_active=context.is_active,
                               replica_epoch=request.replica_epoch)
        resp = bpb.FetchResponse()
        _encode_fetched(resp, fetched)
        return resp

    def ReplicaFetch(self, request_iterator, context):
        """A follower's replica fetch stream: one answer per request, from one fetch session."""
        session = None
        try:
            for req in request_iterator:
                if session is None:
                    session = self.b.replica_fetch_session(req.replica_id)
                elif req.replica_id != session.replica_id:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"replica_id {req.replica_id} on a stream opened by {session.replica_id}")
                resp = bpb.ReplicaFetchResponse()
                _encode_fetched(resp, session.handle(req, context.is_active))
                yield resp
        finally:
            if session is not None:
                session.close()

    def ListOffsets(self, request, context):
        resp = bpb.ListOffsetsResponse()
        for p in request.partitions:
            out = resp.partitions.add(topic=p.topic, partition=p.partition, offset=-1, timestamp=-1)
            try:
                out.offset, out.timestamp = self.b.list_offset(p.topic, p.partition, p.timestamp,
                                                               request.isolation_level)
            except Exception as e:  # noqa: BLE001
                out.MergeFrom(bpb.ListOffsetsPartitionResponse(**_error_fields(e)))
        return resp

    def OffsetForLeaderEpoch(self, request, context):
        resp = bpb.OffsetForLeaderEpochResponse()
        for p in request.partitions:
            out = resp.partitions.add(topic=p.topic, partition=p.partition, leader_epoch=-1, end_offset=-1)
            try:
                out.leader_epoch, out.end_offset = self.b.offset_for_leader_epoch(
                    p.topic, p.partition, p.current_leader_epoch, p.leader_epoch)
            except Exception as e:  # noqa: BLE001
                out.error_code = _error_fields(e)["error_code"]
        return resp

    def WriteTxnMarkers(self, request, context):
        return self.b.write_txn_markers(request)

    def DescribeReplicaLog(self, request, context):
        try:
            d = self.b.describe_log(request.topic, request.partition)
        except Exception as e:  # noqa: BLE001
            return bpb.ReplicaLogResponse(**_error_fields(e))
        return bpb.ReplicaLogResponse(log_start_offset=d["log_start"], log_end_offset=d["leo"],
                                      high_watermark=d["hw"], leader_epoch=d["leader_epoch"], role=d["role"],
                                      isr=d["isr"], digest=d["digest"],
                                      epoch_cache=[f"{e}:{o}" for e, o in d["epochs"]])


def register_broker_services(server, broker) -> None:
    svc = BrokerServicer(broker)
    bgrpc.add_BrokerServicer_to_server(svc, server)
    mgrpc.add_MetadataServicer_to_server(svc, server)

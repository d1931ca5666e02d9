"""gRPC servicers of the broker: decode, call the driver, encode. Kafka errors go in the body."""
from __future__ import annotations

import time

from client.common import errors
from client.common.pb import broker_pb2 as bpb
from client.common.pb import broker_pb2_grpc as bgrpc
from client.common.pb import metadata_pb2_grpc as mgrpc


def _error_fields(e: Exception) -> dict:
    if not isinstance(e, errors.KafkaError):
        e = errors.UnknownServerError(f"{type(e).__name__}: {e}")
    return {"error_code": e.code, "error_message": str(e)}


class BrokerServicer(bgrpc.BrokerServicer, mgrpc.MetadataServicer):
    def __init__(self, broker):
        self.b = broker

    def GetMetadata(self, request, context):
        md = self.b.metadata
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

    def Produce(self, request, context):
        resp = bpb.ProduceResponse()
        waits = []
        for p in request.partitions:
            out = resp.partitions.add(topic=p.topic, partition=p.partition, base_offset=-1, log_append_time=-1)
            try:
                res = self.b.append_as_leader(p.topic, p.partition, p.records, request.acks)
                base, last, dup = res.base_offset, res.last_offset, res.duplicate
                out.base_offset = base
                out.log_start_offset = res.log_start_offset
                out.batch_base_offsets.extend(res.batch_base_offsets)
                if dup:
                    out.error_code = errors.DuplicateSequenceNumberError.code
                    out.error_message = "duplicate batch: already at its original offset"
                if request.acks == -1:
                    waits.append((out, p.topic, p.partition, last))
            except Exception as e:  # noqa: BLE001 - every failure becomes a per-partition error
                out.error_code, out.error_message = _error_fields(e).values()
        deadline = time.monotonic() + max(request.timeout_ms, 0) / 1000.0
        for out, topic, partition, last in waits:
            left_ms = int((deadline - time.monotonic()) * 1000)
            try:
                self.b.wait_for_hw(topic, partition, last, max(left_ms, 0))
            except Exception as e:  # noqa: BLE001
                out.error_code, out.error_message = _error_fields(e).values()
        return resp

    def Fetch(self, request, context):
        b = self.b
        deadline = time.monotonic() + request.max_wait_ms / 1000.0
        max_bytes = request.max_bytes or (50 << 20)
        while True:
            seen = self._ends(request)  # before the read: a move during it re-reads at once
            resp = bpb.FetchResponse()
            total = 0
            for p in request.partitions:
                out = resp.partitions.add(topic=p.topic, partition=p.partition, high_watermark=-1,
                                          last_stable_offset=-1, log_start_offset=-1)
                budget = min(p.partition_max_bytes or max_bytes, max(max_bytes - total, 0))
                if budget <= 0 and total > 0:
                    continue
                try:
                    data, hw, lso, start, leo, epoch, aborted = b.read_partition(
                        p.topic, p.partition, p.fetch_offset, max(budget, 1), request.replica_id,
                        request.isolation_level, p.current_leader_epoch)
                    out.records = data
                    out.high_watermark, out.last_stable_offset = hw, lso
                    out.log_start_offset, out.log_end_offset, out.leader_epoch = start, leo, epoch
                    for pid, first in aborted:
                        out.aborted_transactions.add(producer_id=pid, first_offset=first)
                    total += len(data)
                except Exception as e:  # noqa: BLE001
                    out.MergeFrom(bpb.FetchPartitionResponse(**_error_fields(e)))
                    total += 1  # an error answers at once
            left = deadline - time.monotonic()
            if total >= max(request.min_bytes, 1) or left <= 0 or b._stop.is_set():
                return resp
            if not context.is_active():
                return resp
            # Every append and HW move anywhere notifies data_cond; re-read only when one of
            # this request's partitions moved (a wake-up is then a few int compares, not a
            # RocksDB seek per partition).
            with b.data_cond:
                while self._ends(request) == seen and not b._stop.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    b.data_cond.wait(min(left, 0.5))

    def _ends(self, request) -> list:
        """What a fetch could see per partition: (leader epoch, end) or None when not served here."""
        out = []
        for p in request.partitions:
            r = self.b.replicas.get((p.topic, p.partition))
            m = r.model if r is not None else None
            if m is None or not m.is_leader:
                out.append(None)
            elif request.replica_id >= 0:
                out.append((m.leader_epoch, m.log_end_offset))
            elif request.isolation_level == 1:
                try:  # read without the replica lock: a torn read only costs one extra re-read
                    out.append((m.leader_epoch, self.b.last_stable_offset(r)))
                except RuntimeError:
                    out.append((m.leader_epoch, -1))
            else:
                out.append((m.leader_epoch, m.high_watermark))
        return out

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
                r = self.b.leader_replica(p.topic, p.partition)
                with r.lock:
                    m = r.model
                    if p.current_leader_epoch >= 0 and p.current_leader_epoch != m.leader_epoch:
                        raise (errors.FencedLeaderEpochError if p.current_leader_epoch < m.leader_epoch
                               else errors.UnknownLeaderEpochError)(
                            f"epoch {p.current_leader_epoch} vs leader's {m.leader_epoch}")
                    out.leader_epoch, out.end_offset = m.leader_epoch_cache.end_offset_for(
                        p.leader_epoch, m.log_end_offset)
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

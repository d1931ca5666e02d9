"""Broker side of transactions: COMMIT / ABORT markers as leader, and the aborted-transaction index.

Driver around the broker's partition replicas. A marker is a control batch
appended under the partition lock like any produce (offsets, leader epoch,
producer state via `on_control_marker`), then waited on with acks=all so the
coordinator only completes a transaction whose markers are replicated.

The aborted index of a replica is rebuilt from the log itself, read forward
lazily up to the log end on each read_committed fetch; a truncation drops it.
So it is right after restarts, on followers that become leaders, and after
truncation, without a file of its own.
"""
from __future__ import annotations

import logging

import grpc

from client.common import errors, records
from client.common.config import topic_config
from client.common.network import transport_error
from client.common.pb import broker_pb2 as bpb
from client.common.pb import txn_pb2 as tpb
from client.common.pb import txn_pb2_grpc as tgrpc
from node.broker import AppendResult
from node.producer_state import UNCHECKED
from node.txn import AbortedTxnIndex

log = logging.getLogger(__name__)

MARKER_TIMEOUT_MS = 5000
VERIFY_TIMEOUT_S = 5.0


def _control(raw: bytes) -> str:
    recs = records.decode_records(raw)
    return records.control_type(recs[0]) if recs else "UNKNOWN"


class TxnBroker:
    def __init__(self, broker):
        self.b = broker

    # -- markers ---------------------------------------------------------
    def write_txn_markers(self, request) -> bpb.WriteTxnMarkersResponse:
        resp = bpb.WriteTxnMarkersResponse()
        for m in request.markers:
            for p in m.partitions:
                out = resp.results.add(producer_id=m.producer_id, topic=m.topic, partition=p)
                try:
                    res = self.append_marker(m.topic, p, m.producer_id, m.producer_epoch, m.committed,
                                             m.coordinator_epoch)
                    self.b.wait_for_hw(m.topic, p, res.last_offset, MARKER_TIMEOUT_MS,
                                       leader_epoch=res.leader_epoch)
                except errors.KafkaError as e:
                    out.error_code = e.code
                except Exception as e:
                    log.exception("writing a marker to %s-%d failed", m.topic, p)
                    out.error_code = errors.UnknownServerError(str(e)).code
        return resp

    def append_marker(self, topic: str, partition: int, producer_id: int, producer_epoch: int,
                      commit: bool, coordinator_epoch: int):
        """Appends one control batch as leader; returns its AppendResult.

        As a produce: checked, written, and only then applied to the log end and producer state,
        so a failed write leaves the transaction open in memory as it is on disk.
        """
        b = self.b
        r = b.leader_replica(topic, partition)
        min_isr = topic_config(r.configs, "min.insync.replicas")
        with r.lock:
            m = r.model
            if not m.is_leader:
                raise errors.NotLeaderOrFollowerError(f"broker {b.broker_id} lost leadership of {topic}-{partition}")
            err = m.check_append(-1, min_isr)
            if err is not None:
                raise err
            entry = r.producers.last_entry(producer_id)
            if entry is not None and producer_epoch < entry.producer_epoch:
                raise errors.InvalidProducerEpochError(
                    f"marker epoch {producer_epoch} of producer {producer_id} is older than {entry.producer_epoch}")
            offset, leader_epoch = m.log_end_offset, m.leader_epoch
            raw = records.build_control_batch(commit, producer_id, producer_epoch, b.clock.wall_ms(),
                                              coordinator_epoch=coordinator_epoch)
            stored = records.set_offset_and_epoch(raw, offset, leader_epoch)
            b._write_then_apply(r, [b.store.append_puts(topic, partition, offset, stored)], [(offset, offset)],
                                b.clock.monotonic_ms())
            r.producers.on_control_marker(producer_id, producer_epoch, offset)
            log_start = m.log_start_offset
        log.info("Wrote %s marker for producer %d epoch %d to %s-%d at offset %d",
                 "COMMIT" if commit else "ABORT", producer_id, producer_epoch, topic, partition, offset)
        b.wake(r)
        return AppendResult(offset, offset, log_start, False, [offset], leader_epoch)

    # -- verification (KIP-890) --------------------------------------------
    def maybe_verify(self, topic: str, partition: int, data: bytes, transactional_id: str) -> object:
        """Before a produce: if its transactional batch would begin a transaction on this partition,
        asks the coordinator whether the partition is in the producer's ongoing transaction
        (AddPartitionsToTxn with verify_only) and returns the guard the append checks; UNCHECKED for
        data that needs no verification. A late batch of a transaction that already ended here, or
        of an older epoch, is refused (INVALID_TXN_STATE / INVALID_PRODUCER_EPOCH) instead of
        opening a transaction no marker will close."""
        if len(data) < records.HEADER_SIZE:
            return UNCHECKED   # the append reports the bad payload
        h = records.read_header(data)
        if not h.is_transactional or h.producer_id < 0:
            return UNCHECKED
        r = self.b.leader_replica(topic, partition)
        with r.lock:
            if not r.producers.needs_verification(h.producer_id, True):
                return None   # a transaction is open here: a marker before the append makes it need one
            if not transactional_id:
                raise errors.InvalidTxnStateError(
                    f"transactional records for {topic}-{partition} without the request's transactional_id")
            guard = r.producers.begin_verification(h.producer_id)
        err = self.verify(transactional_id, h.producer_id, h.producer_epoch, topic, partition)
        if err is not None:
            raise err
        return guard

    def verify(self, transactional_id: str, producer_id: int, producer_epoch: int, topic: str,
               partition: int) -> errors.KafkaError | None:
        req = tpb.AddPartitionsToTxnRequest(transactional_id=transactional_id, producer_id=producer_id,
                                            producer_epoch=producer_epoch, verify_only=True)
        req.topics.add(topic=topic, partitions=[partition])
        try:
            resp = tgrpc.TxnCoordinatorStub(self.b.pool.get(self.b.coordinator_addr)).AddPartitionsToTxn(
                req, timeout=VERIFY_TIMEOUT_S)
        except grpc.RpcError as e:
            return errors.NotEnoughReplicasError(   # retriable, as Kafka answers a verification it could not make
                f"could not verify the transaction of {transactional_id}: {transport_error(e)}")
        if not resp.error_code:
            return None
        err = errors.for_code(resp.error_code, resp.error_message)
        if err.retriable:
            return errors.NotEnoughReplicasError(f"could not verify the transaction of {transactional_id}: {err}")
        return err

    # -- aborted index -----------------------------------------------------
    def aborted_transactions(self, r, start: int, upto: int) -> list[tuple[int, int]]:
        # The replica's own lock, not a broker-wide one: reading a long log forward for one
        # partition must not hold up read_committed fetches of every other partition.
        with r.aborted_index_lock:
            index = r.aborted_index
            if index is None:
                index = r.aborted_index = AbortedTxnIndex()
            # Read to the log end, not just to `upto`: an ABORT marker above the LSO (appended, not yet
            # below the HW) still closes data below it, which the fetch must list as aborted.
            if index.next_offset < r.model.log_end_offset:
                for raw in self.b.store.iter_batches(r.topic, r.partition, index.next_offset):
                    h = records.read_header(raw)
                    control = _control(raw) if h.is_control else None
                    index.on_batch(h.producer_id, h.base_offset, h.next_offset, h.is_transactional, control)
            return index.collect(start, upto)

    def on_truncate(self, r) -> None:
        with r.aborted_index_lock:
            r.aborted_index = None

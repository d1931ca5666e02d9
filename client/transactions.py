"""TransactionManager: the transactional producer's half of Kafka's transaction protocol.

States as Kafka's client: UNINITIALIZED -> INITIALIZING -> READY -> IN_TRANSACTION
-> COMMITTING_TRANSACTION / ABORTING_TRANSACTION -> READY; ABORTABLE_ERROR (the
application must abort) and FATAL_ERROR (ProducerFenced and friends: close the
producer). Coordinator RPCs go to the coordinator process, retried with backoff
on retriable errors (CONCURRENT_TRANSACTIONS, COORDINATOR_LOAD_IN_PROGRESS,
transport) until max.block.ms.

AddPartitionsToTxn runs in send() before a partition's first record, so the
coordinator knows every partition before any data reaches it. After an
abortable error the abort is an epoch bump (InitProducerId again, as KIP-360):
the partitions' sequence numbers start over, and the coordinator aborts under
the bumped epoch, so a late batch of the aborted transaction is refused.
"""
from __future__ import annotations

import logging
import threading
import time
from enum import Enum

import grpc

from client.common import errors
from client.common.network import transport_error
from client.common.pb import txn_pb2 as tpb
from client.common.pb import txn_pb2_grpc as tgrpc
from client.common.types import OffsetAndMetadata, TopicPartition

log = logging.getLogger(__name__)

FATAL = (errors.ProducerFencedError, errors.InvalidProducerEpochError, errors.InvalidTxnStateError,
         errors.InvalidProducerIdMappingError, errors.TransactionalIdAuthorizationFailedError,
         errors.InvalidTransactionTimeoutError, errors.UnsupportedVersionError)


class TxnClientState(Enum):
    UNINITIALIZED = "UNINITIALIZED"
    INITIALIZING = "INITIALIZING"
    READY = "READY"
    IN_TRANSACTION = "IN_TRANSACTION"
    COMMITTING_TRANSACTION = "COMMITTING_TRANSACTION"
    ABORTING_TRANSACTION = "ABORTING_TRANSACTION"
    ABORTABLE_ERROR = "ABORTABLE_ERROR"
    FATAL_ERROR = "FATAL_ERROR"


St = TxnClientState


def _fenced(err: errors.KafkaError) -> errors.KafkaError:
    """Kafka's client surfaces a fenced epoch as ProducerFenced."""
    if isinstance(err, (errors.InvalidProducerEpochError, errors.ProducerFencedError)):
        return errors.ProducerFencedError(
            f"There is a newer producer with the same transactional.id which fences this one ({err.message})")
    return err


def _group_id(consumer_group_metadata) -> str:
    if isinstance(consumer_group_metadata, str):
        return consumer_group_metadata
    if isinstance(consumer_group_metadata, dict):
        return consumer_group_metadata["group_id"]
    gid = getattr(consumer_group_metadata, "group_id", None)
    if not gid:
        raise errors.InvalidGroupIdError("send_offsets_to_transaction needs a group id or consumer group metadata")
    return gid


class TransactionManager:
    def __init__(self, producer):
        self.p = producer
        c = producer.config
        self.transactional_id: str = c.transactional_id
        self.timeout_ms: int = c.transaction_timeout_ms
        self.max_block_ms: int = c.max_block_ms
        self.lock = threading.RLock()       # the application thread's calls vs the sender's on_send_failed
        self.state = St.UNINITIALIZED       # guarded by lock
        self.error: errors.KafkaError | None = None
        self.partitions: set[TopicPartition] = set()   # added to the current transaction
        self.groups: set[str] = set()
        self.bump_epoch = False             # a batch failed: sequences have gaps

    # -- called by the producer's sender -------------------------------------------
    def producer_id_ready(self) -> bool:
        return self.p.producer_id >= 0

    def on_send_failed(self, err: Exception, producer_epoch: int | None = None) -> None:
        """A batch failed for good. One sent under an earlier epoch belongs to a transaction that is
        over (aborted by an epoch bump): it says nothing about the current one."""
        with self.lock:
            if producer_epoch is not None and producer_epoch != self.p.producer_epoch:
                return
            self.bump_epoch = True
            if isinstance(err, errors.KafkaError) and isinstance(_fenced(err), errors.ProducerFencedError):
                self._to_fatal(_fenced(err))
            elif self.state not in (St.FATAL_ERROR, St.ABORTING_TRANSACTION):
                self.error = err if isinstance(err, errors.KafkaError) else errors.KafkaError(str(err))
                self.state = St.ABORTABLE_ERROR
                log.info("Transaction of %s must abort: a send failed (%s)", self.transactional_id, err)

    def _to_fatal(self, err: errors.KafkaError) -> None:
        self.state, self.error = St.FATAL_ERROR, err
        self.p._fatal = err
        log.info("Transactional producer %s hit a fatal error: %s", self.transactional_id, err)

    # -- RPCs ------------------------------------------------------------------
    def _call(self, method: str, request, deadline: float):
        """Calls the coordinator until a non-retriable answer or the deadline; returns (response, error)."""
        delay = self.p.config.retry_backoff_ms / 1000.0
        last: errors.KafkaError | None = None
        while True:
            try:
                addr = self.p.metadata.controller_address()
                stub = tgrpc.TxnCoordinatorStub(self.p.pool.get(addr))
                resp = getattr(stub, method)(request, timeout=max(0.5, min(deadline - time.monotonic(), 30.0)))
                err = errors.for_code(resp.error_code, resp.error_message) if resp.error_code else None
                if err is None or not err.retriable:
                    return resp, err
                last = err
            except grpc.RpcError as e:
                last = transport_error(e)
            except errors.KafkaError as e:
                if not e.retriable and not isinstance(e, errors.KafkaConnectionError):
                    return None, e
                last = e
            if time.monotonic() + delay > deadline:
                return None, errors.KafkaTimeoutError(f"{method} did not complete within max.block.ms: {last}")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (timeout if timeout is not None else self.max_block_ms / 1000.0)

    def _check(self, *allowed: TxnClientState, what: str) -> None:
        if self.state is St.FATAL_ERROR:
            raise self.error
        if self.state not in allowed:
            if self.state is St.ABORTABLE_ERROR and self.error is not None:
                raise self.error  # the application must abort_transaction()
            raise errors.IllegalStateError(f"Cannot {what} in state {self.state.value}")

    def _init_pid(self, deadline: float) -> None:
        req = tpb.InitProducerIdRequest(transactional_id=self.transactional_id,
                                        transaction_timeout_ms=self.timeout_ms, producer_id=-1, producer_epoch=-1)
        resp, err = self._call("InitProducerId", req, deadline)
        if err is not None:
            if isinstance(err, FATAL):
                self._to_fatal(_fenced(err))
            raise _fenced(err)
        self.p.set_producer_id(resp.producer_id, resp.producer_epoch)
        self.bump_epoch = False

    # -- public API ---------------------------------------------------------------
    def init_transactions(self, timeout: float | None = None) -> None:
        with self.lock:
            self._check(St.UNINITIALIZED, St.INITIALIZING, what="init_transactions")
            self.state = St.INITIALIZING
            self._init_pid(self._deadline(timeout))
            self.state = St.READY
        self.p._wake.set()

    def begin_transaction(self) -> None:
        with self.lock:
            self._check(St.READY, what="begin_transaction")
            self.partitions.clear()
            self.groups.clear()
            self.state = St.IN_TRANSACTION

    def maybe_add_partition(self, tp: TopicPartition) -> None:
        with self.lock:
            self._check(St.IN_TRANSACTION, what="send (call begin_transaction first)")
            if tp in self.partitions:
                return
            req = tpb.AddPartitionsToTxnRequest(transactional_id=self.transactional_id,
                                                producer_id=self.p.producer_id, producer_epoch=self.p.producer_epoch)
            req.topics.add(topic=tp.topic, partitions=[tp.partition])
            _, err = self._call("AddPartitionsToTxn", req, self._deadline(None))
            self._raise(err)
            self.partitions.add(tp)

    def _raise(self, err: errors.KafkaError | None) -> None:
        if err is None:
            return
        err = _fenced(err)
        if isinstance(err, FATAL):
            self._to_fatal(err)
        else:
            self.state, self.error = St.ABORTABLE_ERROR, err
        raise err

    def send_offsets_to_transaction(self, offsets, consumer_group_metadata) -> None:
        with self.lock:
            self._check(St.IN_TRANSACTION, what="send_offsets_to_transaction")
            group_id = _group_id(consumer_group_metadata)
            deadline = self._deadline(None)
            base = {"transactional_id": self.transactional_id, "producer_id": self.p.producer_id,
                    "producer_epoch": self.p.producer_epoch}
            if group_id not in self.groups:
                _, err = self._call("AddOffsetsToTxn", tpb.AddOffsetsToTxnRequest(group_id=group_id, **base), deadline)
                self._raise(err)
                self.groups.add(group_id)
            req = tpb.TxnOffsetCommitRequest(group_id=group_id, generation_id=-1, **base)
            gen = getattr(consumer_group_metadata, "generation_id", None)
            if isinstance(gen, int):
                req.generation_id = gen
                req.member_id = getattr(consumer_group_metadata, "member_id", "") or ""
            for tp, om in dict(offsets).items():
                tp = TopicPartition(*tp)
                if isinstance(om, OffsetAndMetadata):
                    off, meta, epoch = om.offset, om.metadata or "", om.leader_epoch
                else:
                    off, meta, epoch = int(om), "", -1
                req.offsets.add(topic=tp.topic, partition=tp.partition, offset=off, leader_epoch=epoch, metadata=meta)
            _, err = self._call("TxnOffsetCommit", req, deadline)
            self._raise(err)

    def commit_transaction(self, timeout: float | None = None) -> None:
        with self.lock:
            self._check(St.IN_TRANSACTION, St.COMMITTING_TRANSACTION, what="commit_transaction")
            deadline = self._deadline(timeout)
        # Every record of the transaction must be written before EndTxn (outside the lock: the
        # sender may report failures meanwhile).
        self.p.flush(max(0.0, deadline - time.monotonic()))
        with self.lock:
            self._check(St.IN_TRANSACTION, St.COMMITTING_TRANSACTION, what="commit_transaction")
            self.state = St.COMMITTING_TRANSACTION
            self._end(True, deadline)

    def abort_transaction(self, timeout: float | None = None) -> None:
        """Kafka's abort: records not yet sent fail (TransactionAbortedError), and the ABORT markers
        are written only once no batch of the transaction can still reach a partition. A batch
        whose outcome is unknown (its request timed out, or still unanswered at the deadline) could
        be appended after an ABORT marker of this epoch and open a transaction nobody ends; so then
        the abort fences instead of EndTxn: InitProducerId makes the coordinator abort under
        epoch + 1, whose markers make every broker refuse the old epoch's late batches."""
        with self.lock:
            self._check(St.IN_TRANSACTION, St.ABORTING_TRANSACTION, St.ABORTABLE_ERROR, what="abort_transaction")
            deadline = self._deadline(timeout)
            self.state = St.ABORTING_TRANSACTION
            self.p._aborting = True
        try:
            # Outside the lock: the sender reports the in-flight batches' failures meanwhile.
            unsent_were_sent = self.p.abort_undrained(errors.TransactionAbortedError(
                "Failing batch since transaction was aborted"))
            settled = self.p.wait_incomplete(deadline)
        finally:
            self.p._aborting = False
        with self.lock:
            if self.state is St.FATAL_ERROR:
                raise self.error
            if unsent_were_sent or not settled:
                self.bump_epoch = True
            if self.bump_epoch:
                log.info("Aborting the transaction of %s by bumping its epoch: a batch's outcome is unknown",
                         self.transactional_id)
                self._init_pid(deadline)
                self._done()
            else:
                self._end(False, deadline)

    def _end(self, commit: bool, deadline: float) -> None:
        if self.partitions or self.groups:
            req = tpb.EndTxnRequest(transactional_id=self.transactional_id, producer_id=self.p.producer_id,
                                    producer_epoch=self.p.producer_epoch, committed=commit)
            _, err = self._call("EndTxn", req, deadline)
            if isinstance(err, errors.KafkaTimeoutError):
                raise err  # state kept: the application may retry commit / abort
            self._raise(err)
        self._done()

    def _done(self) -> None:
        self.partitions.clear()
        self.groups.clear()
        self.state, self.error = St.READY, None

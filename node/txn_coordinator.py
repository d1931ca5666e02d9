"""The transaction coordinator (driver + servicer), in the coordinator process.

transactional.id -> TransactionMetadata (node/txn.py). Every state change is
written to `__transaction_state` with acks=all before it is answered; after a
restart the topic is read back and every PrepareCommit / PrepareAbort is
completed. One worker thread loads the log, writes markers (WriteTxnMarkers
to each partition leader, retried until every partition has its marker), hands
committed offsets to the group coordinator, and aborts timed-out transactions.

Group coordinator contract (node/group_coordinator.py): `commit_txn_offsets(group_id,
{(topic, partition): (offset, metadata, leader_epoch)})` persists the offsets (acks=all) or
raises a KafkaError; it is called on commit, before EndTxn is answered and
before CompleteCommit is written, and again after a restart. `txn=(transactional_id,
"pid:epoch:offset of the PrepareCommit record")` names the transaction, so the
repeat after a restart changes nothing once the group has its offsets.
`txn_offset_commit_error` is KIP-447's member / generation check. In return
the group coordinator asks `pending_offsets` which partitions a pending
transaction holds offsets for, and answers OffsetFetch with require_stable
there with UNSTABLE_OFFSET_COMMIT (KIP-447).
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc

from client.common import errors
from client.common.network import transport_error
from client.common.pb import broker_pb2 as bpb
from client.common.pb import broker_pb2_grpc as bgrpc
from client.common.pb import txn_pb2 as tpb
from client.common.pb import txn_pb2_grpc as tgrpc
from node.internal_log import TXN_TOPIC, InternalTopic
from node.producer_ids import ProducerIdManager
from node.txn import PREPARE_STATES, Outcome, TransactionMetadata, TxnState

log = logging.getLogger(__name__)

TOPIC = TXN_TOPIC
PARTITION = 0  # one partition: one coordinator owns every transactional.id
MARKER_RPC_TIMEOUT_S = 8.0
DONE_ON = {0, errors.InvalidProducerEpochError.code}  # a newer marker is already there


class TxnCoordinator:
    def __init__(self, node):
        self.node = node
        c = node.config
        self.ids = ProducerIdManager(node.store)
        self.log = InternalTopic(node, TOPIC, 1, c.transaction_state_log_replication_factor,
                                 c.transaction_state_log_min_isr)
        self.max_timeout_ms = c.transaction_max_timeout_ms
        self.cleanup_ms = c.transaction_abort_timed_out_transaction_cleanup_interval_ms
        self.coordinator_epoch = int(node.store.get_json("txn_coordinator_epoch", 0)) + 1
        node.store.put_json("txn_coordinator_epoch", self.coordinator_epoch)
        self.lock = threading.Lock()
        self.txns: dict[str, TransactionMetadata] = {}   # owned by self.lock
        self.markers: dict[str, set] = {}                # tid -> partitions still without marker (self.lock)
        self.handed_over: dict = {}                      # tid -> the PrepareCommit record whose offsets the
                                                         # groups have (self.lock)
        self.prepare_offsets: dict[str, int] = {}        # tid -> offset of its PrepareCommit record in
                                                         # __transaction_state (self.lock)
        self.loaded = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="txn-markers")

    # -- extension lifecycle -------------------------------------------------
    def register(self, server) -> None:
        tgrpc.add_TxnCoordinatorServicer_to_server(TxnCoordinatorServicer(self), server)

    def start(self) -> None:
        gc = self._group_coordinator()
        if gc is not None:
            gc.pending_txn_offsets = self.pending_offsets
        threading.Thread(target=self._run, name="txn-coordinator", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def tick(self) -> None:
        pass  # the worker keeps its own time

    def _now(self) -> int:
        """Wall time: what the records say (transaction start and update times)."""
        return self.node.clock.wall_ms()

    def _timer(self) -> int:
        """Monotonic time: what timeouts run on, so a clock fault moves no deadline."""
        return self.node.clock.monotonic_ms()

    # -- load / recovery -------------------------------------------------------
    def _not_loaded(self) -> errors.KafkaError:
        """COORDINATOR_NOT_AVAILABLE while the topic cannot be created (too few brokers) or has no leader,
        then COORDINATOR_LOAD_IN_PROGRESS until it is read back, as Kafka."""
        return self.log.unavailable or errors.CoordinatorLoadInProgressError(f"{TOPIC} is still loading")

    def _load(self) -> None:
        while not self._stop.is_set() and not self.log.ensure():
            self._stop.wait(0.1)
        entries = self.log.read_all(PARTITION)
        from node.txn import TxnRecord
        txns: dict[str, TransactionMetadata] = {}
        prepare_offsets: dict[str, int] = {}
        for offset, key, value in entries:
            if key is None:
                continue
            if value is None:
                txns.pop(key.decode(), None)
                continue
            rec = TxnRecord.from_json(value)
            txns[rec.transactional_id] = TransactionMetadata(rec)
            if rec.state is TxnState.PREPARE_COMMIT:
                prepare_offsets[rec.transactional_id] = offset
        now, timer = self._now(), self._timer()
        for meta in txns.values():
            meta.rebase_timer(now, timer)
        with self.lock:
            self.txns = txns
            self.prepare_offsets = prepare_offsets
            for tid, meta in txns.items():
                if meta.state in PREPARE_STATES:
                    self.markers[tid] = set(meta.current.partitions)
                    log.info("Completing %s of %s after a restart", meta.state.value, tid)
        log.info("Loaded %d transactional ids from %s", len(txns), TOPIC)
        self.loaded.set()

    def _run(self) -> None:
        while not self._stop.is_set() and not self.loaded.is_set():
            try:
                self._load()
            except errors.KafkaError as e:
                log.info("loading %s failed (%s); retrying", TOPIC, e)
                self._stop.wait(0.2)
        next_cleanup = 0
        while not self._stop.is_set():
            try:
                timer = self._timer()
                if timer >= next_cleanup:
                    self._abort_timed_out(self._now())
                    next_cleanup = timer + self.cleanup_ms
                if self.markers:
                    self._write_markers()
            except Exception:
                log.exception("transaction coordinator round failed")
            self._wake.wait(0.1 if self.markers else min(self.cleanup_ms, 500) / 1000.0)
            self._wake.clear()

    # -- the persist-then-answer step -------------------------------------------
    def _finish(self, meta: TransactionMetadata, out: Outcome) -> errors.KafkaError | None:
        t = out.transit
        if t is not None:
            try:
                offset = self.log.append(PARTITION, [(t.transactional_id.encode(), t.to_json())])
            except errors.KafkaError as e:
                with self.lock:
                    meta.abort_pending()
                return errors.CoordinatorNotAvailableError(f"could not write {TOPIC}: {e}")
            timer = self._timer()
            with self.lock:
                meta.complete(t, timer)
                if t.state is TxnState.PREPARE_COMMIT:
                    self.prepare_offsets[t.transactional_id] = offset
                if t.state in PREPARE_STATES:
                    self.markers[t.transactional_id] = set(t.partitions)
            if t.state is not TxnState.ONGOING:
                log.info("Transaction %s producer %d epoch %d is now %s", t.transactional_id, t.producer_id,
                         t.producer_epoch, t.state.value)
            if t.state in PREPARE_STATES:
                self._wake.set()
        return out.error

    def _request(self, tid: str, handle) -> tuple[errors.KafkaError | None, TransactionMetadata | None]:
        if not tid:
            return errors.InvalidRequestError("transactional.id is empty"), None
        if not self.loaded.is_set():
            return self._not_loaded(), None
        with self.lock:
            meta = self.txns.get(tid)
            if meta is None:
                return errors.InvalidProducerIdMappingError(f"unknown transactional.id '{tid}'"), None
            out = handle(meta, self._now())
            if out.transit is not None:
                meta.begin(out.transit)
        return self._finish(meta, out), meta

    # -- requests ---------------------------------------------------------------
    def init_producer_id(self, tid: str, timeout_ms: int,
                         expected: tuple[int, int] | None = None) -> tuple[errors.KafkaError | None, int, int]:
        """expected: KIP-360's (producer_id, producer_epoch) of a client bumping its own epoch, or None."""
        if not tid:
            return None, self.ids.allocate(), 0
        if not self.loaded.is_set():
            return self._not_loaded(), -1, -1
        now = self._now()
        with self.lock:
            meta = self.txns.get(tid)
            if meta is None:
                meta = self.txns[tid] = TransactionMetadata.new(tid, self.ids.allocate(), timeout_ms, now)
            out = meta.handle_init_producer_id(timeout_ms, self.max_timeout_ms, now, self.ids.allocate, expected)
            if out.transit is not None:
                meta.begin(out.transit)
        err = self._finish(meta, out)
        if err is not None:
            return err, -1, -1
        return None, meta.current.producer_id, meta.current.producer_epoch

    def add_partitions(self, tid, pid, epoch, partitions):
        """As Kafka's KafkaApis: a request naming a partition that does not exist adds nothing and fails
        with `partition_errors` (UNKNOWN_TOPIC_OR_PARTITION there, OPERATION_NOT_ATTEMPTED for the rest)."""
        partitions = list(partitions)
        unknown = self.node.unknown_partitions(partitions)
        if unknown:
            return with_partition_errors(_unknown_error(unknown), partitions, unknown,
                                         errors.OperationNotAttemptedError.code)
        return self._request(tid, lambda m, now: m.handle_add_partitions(pid, epoch, partitions, now))[0]

    def verify_partitions(self, tid, pid, epoch, partitions) -> errors.KafkaError | None:
        """KIP-890: asked by a partition leader before it accepts a transaction's first batch there;
        None when every partition is in the ongoing transaction of (pid, epoch). Changes nothing."""
        if not tid:
            return errors.InvalidRequestError("transactional.id is empty")
        if not self.loaded.is_set():
            return self._not_loaded()
        with self.lock:
            meta = self.txns.get(tid)
            if meta is None:
                return errors.InvalidProducerIdMappingError(f"unknown transactional.id '{tid}'")
            return meta.handle_verify_partitions(pid, epoch, partitions).error

    def add_offsets(self, tid, pid, epoch, group_id):
        return self._request(tid, lambda m, now: m.handle_add_offsets(pid, epoch, group_id, now))[0]

    def txn_offset_commit(self, tid, pid, epoch, group_id, offsets, member_id="", generation_id=-1):
        """offsets: (topic, partition, offset, metadata[, leader_epoch]) each. As Kafka's KafkaApis: offsets
        of partitions that do not exist are refused (UNKNOWN_TOPIC_OR_PARTITION in `partition_errors`),
        the others go on to the transaction."""
        offsets = list(offsets)
        partitions = [(o[0], o[1]) for o in offsets]
        unknown = self.node.unknown_partitions(partitions)
        known = [o for o in offsets if (o[0], o[1]) not in unknown]
        err = self._txn_offset_commit(tid, pid, epoch, group_id, known, member_id, generation_id) if known else None
        if not unknown:
            return err
        return with_partition_errors(err or _unknown_error(unknown), partitions, unknown, err.code if err else 0)

    def _txn_offset_commit(self, tid, pid, epoch, group_id, offsets, member_id, generation_id):
        if generation_id >= 0:  # KIP-447: a member that lost its generation must not commit
            err = self._check_member(group_id, member_id, generation_id)
            if err is not None:
                return err
        return self._request(tid, lambda m, now: m.handle_txn_offset_commit(pid, epoch, group_id, offsets, now))[0]

    def end_txn(self, tid, pid, epoch, commit):
        err, meta = self._request(tid, lambda m, now: m.handle_end_txn(pid, epoch, commit, now))
        if err is None and meta is not None:
            with self.lock:
                rec = meta.current
            # Offsets become visible before the answer, so a consumer that fetches them after
            # commit_transaction() returns (a rebalance, a restarted worker) never sees older ones.
            # The decision is durable already; a failed hand-over is retried, and the client
            # retries on CONCURRENT_TRANSACTIONS until the transaction is complete.
            if rec.state is TxnState.PREPARE_COMMIT and not self._hand_over_once(rec):
                return errors.ConcurrentTransactionsError(f"{tid}: committing its offsets; retry")
        return err

    def _hand_over_once(self, rec) -> bool:
        """Hands a PrepareCommit's offsets to the group coordinator unless that was done for this record."""
        if not rec.offsets:
            return True
        with self.lock:
            if self.handed_over.get(rec.transactional_id) == rec:
                return True
        if not self._hand_over_offsets(rec):
            return False
        with self.lock:
            self.handed_over[rec.transactional_id] = rec
        return True

    def pending_offsets(self, group_id: str, tps: list) -> set:
        """The (topic, partition)s of `tps` whose offsets for `group_id` an Ongoing transaction, or a
        PrepareCommit not yet handed to the group, holds: a fetch must not read them yet (KIP-447).
        Until the log is loaded: all of them."""
        wanted = {(t, p) for t, p in tps}
        if not self.loaded.is_set():
            return wanted
        out: set = set()
        with self.lock:
            for tid, meta in self.txns.items():
                for rec in (meta.current, meta.pending):
                    if rec is None or not rec.offsets or self.handed_over.get(tid) == rec:
                        continue
                    if rec.state in (TxnState.ONGOING, TxnState.PREPARE_COMMIT):
                        out.update((t, p) for g, t, p, *_ in rec.offsets if g == group_id and (t, p) in wanted)
        return out

    def snapshot(self) -> list:
        with self.lock:
            return [m.current for m in self.txns.values()]

    def list_transactions(self, states: set[str], producer_ids: set[int]) -> list:
        """ListTransactions: the current records (by transactional id) in those states / of those producers
        (empty filter: all)."""
        if not self.loaded.is_set():
            raise self._not_loaded()
        return [rec for rec in sorted(self.snapshot(), key=lambda r: r.transactional_id)
                if (not states or rec.state.value in states) and (not producer_ids or rec.producer_id in producer_ids)]

    def describe_transactions(self, tids: list[str]) -> list[tuple[str, errors.KafkaError | None, object]]:
        """DescribeTransactions: per id (id, error, current record)."""
        loaded = self.loaded.is_set()
        by_id = {r.transactional_id: r for r in self.snapshot()}
        out = []
        for tid in tids:
            rec = by_id.get(tid)
            if not loaded:
                out.append((tid, self._not_loaded(), None))
            elif rec is None:
                out.append((tid, errors.TransactionalIdNotFoundError(f"transactional.id '{tid}' not found"), None))
            else:
                out.append((tid, None, rec))
        return out

    # -- timeouts ---------------------------------------------------------------
    def _abort_timed_out(self, now: int) -> None:
        """`now` is wall time, for the records; the timeouts run on the monotonic timer."""
        timer = self._timer()
        todo = []
        with self.lock:
            for meta in self.txns.values():
                out = meta.maybe_abort_timed_out(now, timer)
                if out is not None:
                    meta.begin(out.transit)
                    todo.append((meta, out))
        for meta, out in todo:
            c = meta.current
            log.info("Aborting transaction %s of producer %d epoch %d: open for longer than its timeout of %d ms",
                     c.transactional_id, c.producer_id, c.producer_epoch, c.timeout_ms)
            self._finish(meta, out)

    # -- markers ----------------------------------------------------------------
    def _leader_address(self, topic: str, partition: int) -> str | None | bool:
        """The leader's address; None while there is none; False when the partition no longer exists."""
        node = self.node
        with node.lock:
            t = node.state.topics.get(topic)
            if t is None or partition >= len(t.partitions):
                return False
            b = node.state.brokers.get(t.partitions[partition].leader)
            if b is None or b.fenced:
                return None
            return f"{b.host}:{b.port}"

    def _write_markers(self) -> None:
        with self.lock:
            work = {tid: (set(parts), self.txns[tid].current) for tid, parts in self.markers.items()}
        by_leader: dict[str, list] = {}
        done: dict[str, set] = {tid: set() for tid in work}
        for tid, (parts, rec) in work.items():
            for tp in parts:
                addr = self._leader_address(*tp)
                if addr is False:
                    done[tid].add(tp)  # deleted topic: nothing to mark
                elif addr is not None:
                    by_leader.setdefault(addr, []).append((tid, rec, tp))
        futures = {addr: self._pool.submit(self._send_markers, addr, items) for addr, items in by_leader.items()}
        for addr, f in futures.items():
            for tid, tp in f.result():
                done[tid].add(tp)
        with self.lock:
            for tid, tps in done.items():
                self.markers[tid] -= tps
            finished = [tid for tid, left in self.markers.items() if not left]
        for tid in finished:
            self._complete(tid)

    def _send_markers(self, addr: str, items: list) -> list:
        req = bpb.WriteTxnMarkersRequest()
        for tid, rec, (topic, partition) in items:
            req.markers.add(producer_id=rec.producer_id, producer_epoch=rec.producer_epoch,
                            committed=rec.state is TxnState.PREPARE_COMMIT,
                            coordinator_epoch=self.coordinator_epoch, topic=topic, partitions=[partition])
        try:
            resp = bgrpc.BrokerStub(self.node.pool.get(addr)).WriteTxnMarkers(req, timeout=MARKER_RPC_TIMEOUT_S)
        except grpc.RpcError as e:
            log.info("WriteTxnMarkers to %s failed: %s; retrying", addr, transport_error(e, addr))
            return []
        ok = []
        for (tid, _rec, tp), res in zip(items, resp.results):
            if res.error_code in DONE_ON:
                ok.append((tid, tp))
            else:
                log.info("Marker for %s on %s-%d: %s; retrying", tid, tp[0], tp[1],
                         errors.for_code(res.error_code).name)
        return ok

    def _complete(self, tid: str) -> None:
        with self.lock:
            meta = self.txns[tid]
            rec = meta.current
            if meta.pending is not None or rec.state not in PREPARE_STATES:
                return
        if rec.state is TxnState.PREPARE_COMMIT and not self._hand_over_once(rec):
            return  # retried next round
        with self.lock:
            transit = meta.on_markers_written(self._now())
            meta.begin(transit)
        if self._finish(meta, Outcome(transit)) is None:
            with self.lock:
                self.handed_over.pop(tid, None)
                if self.markers.get(tid) == set():
                    del self.markers[tid]

    def _group_coordinator(self):
        return next((e for e in self.node.extensions if hasattr(e, "commit_txn_offsets")), None)

    def _check_member(self, group_id: str, member_id: str, generation_id: int) -> errors.KafkaError | None:
        gc = self._group_coordinator()
        return gc.txn_offset_commit_error(group_id, member_id, generation_id) if gc is not None else None

    def _hand_over_offsets(self, rec) -> bool:
        gc = self._group_coordinator()
        if gc is None:
            log.warning("No group coordinator to take the offsets of %s; retrying", rec.transactional_id)
            return False
        by_group: dict[str, dict] = {}
        for g, t, p, o, m, e in rec.offsets:
            by_group.setdefault(g, {})[(t, p)] = (o, m, e)
        # Which transaction this is, the same after a restart: the group then ignores a repeat, which
        # would otherwise put these offsets back over newer ones committed since.
        with self.lock:
            prepare_offset = self.prepare_offsets.get(rec.transactional_id, -1)
        txn = (rec.transactional_id, f"{rec.producer_id}:{rec.producer_epoch}:{prepare_offset}")
        try:
            for g, offsets in by_group.items():
                gc.commit_txn_offsets(g, offsets, txn=txn)
        except errors.KafkaError as e:
            log.info("Committing the offsets of %s failed (%s); retrying", rec.transactional_id, e)
            return False
        return True


def _unknown_error(unknown) -> errors.UnknownTopicOrPartitionError:
    return errors.UnknownTopicOrPartitionError(
        "partitions do not exist: " + ", ".join(f"{t}-{p}" for t, p in sorted(unknown)))


def with_partition_errors(err: errors.KafkaError, partitions, unknown, others: int) -> errors.KafkaError:
    """`err` with `partition_errors` {(topic, partition): code} for a request that named partitions which
    do not exist: UNKNOWN_TOPIC_OR_PARTITION for those, `others` for the rest."""
    code = errors.UnknownTopicOrPartitionError.code
    err.partition_errors = {tp: code if tp in unknown else others for tp in partitions}
    return err


def partition_codes(err: errors.KafkaError | None, partitions) -> dict[tuple[str, int], int]:
    """The code per (topic, partition) of a request's answer: `err.partition_errors`, else err's code for all."""
    per = getattr(err, "partition_errors", None)
    if per is not None:
        return {tp: per.get(tp, err.code) for tp in partitions}
    return {tp: err.code if err is not None else 0 for tp in partitions}


def topic_partitions(partitions) -> dict[str, list[int]]:
    """{topic: [partition, ...]} from (topic, partition) pairs, sorted."""
    topics: dict[str, list[int]] = {}
    for t, p in sorted(partitions):
        topics.setdefault(t, []).append(p)
    return topics


def _err(e: errors.KafkaError | None) -> dict:
    return {} if e is None else {"error_code": e.code, "error_message": str(e)}


class TxnCoordinatorServicer(tgrpc.TxnCoordinatorServicer):
    def __init__(self, tc: TxnCoordinator):
        self.tc = tc

    def InitProducerId(self, request, context):
        err, pid, epoch = self.tc.init_producer_id(request.transactional_id,
                                                   request.transaction_timeout_ms or 60000)
        return tpb.InitProducerIdResponse(producer_id=pid, producer_epoch=epoch, **_err(err))

    def AddPartitionsToTxn(self, request, context):
        parts = [(t.topic, p) for t in request.topics for p in t.partitions]
        call = self.tc.verify_partitions if request.verify_only else self.tc.add_partitions
        err = call(request.transactional_id, request.producer_id, request.producer_epoch, parts)
        resp = tpb.AddPartitionsToTxnResponse(**_err(err))
        for (t, p), code in partition_codes(err, parts).items():
            resp.results.add(topic=t, partition=p, error_code=code)
        return resp

    def AddOffsetsToTxn(self, request, context):
        err = self.tc.add_offsets(request.transactional_id, request.producer_id, request.producer_epoch,
                                  request.group_id)
        return tpb.AddOffsetsToTxnResponse(**_err(err))

    def EndTxn(self, request, context):
        err = self.tc.end_txn(request.transactional_id, request.producer_id, request.producer_epoch,
                              request.committed)
        return tpb.EndTxnResponse(**_err(err))

    def TxnOffsetCommit(self, request, context):
        offsets = [(o.topic, o.partition, o.offset, o.metadata, o.leader_epoch) for o in request.offsets]
        err = self.tc.txn_offset_commit(request.transactional_id, request.producer_id, request.producer_epoch,
                                        request.group_id, offsets, request.member_id, request.generation_id)
        resp = tpb.TxnOffsetCommitResponse(**_err(err))
        for (t, p), code in partition_codes(err, [(o.topic, o.partition) for o in request.offsets]).items():
            resp.results.add(topic=t, partition=p, error_code=code)
        return resp

    def ListTransactions(self, request, context):
        try:
            recs = self.tc.list_transactions(set(request.state_filters), set(request.producer_id_filters))
        except errors.KafkaError as e:
            return tpb.ListTransactionsResponse(error_code=e.code)
        resp = tpb.ListTransactionsResponse()
        for rec in recs:
            resp.transactions.add(transactional_id=rec.transactional_id, producer_id=rec.producer_id,
                                  transaction_state=rec.state.value)
        return resp

    def DescribeTransactions(self, request, context):
        resp = tpb.DescribeTransactionsResponse()
        for tid, err, rec in self.tc.describe_transactions(list(request.transactional_ids)):
            if err is not None:
                resp.transactions.add(transactional_id=tid, **_err(err))
                continue
            d = resp.transactions.add(
                transactional_id=tid, transaction_state=rec.state.value, transaction_timeout_ms=rec.timeout_ms,
                transaction_start_time_ms=rec.txn_start_ms, producer_id=rec.producer_id,
                producer_epoch=rec.producer_epoch, groups=sorted(rec.groups))
            for t, ps in topic_partitions(rec.partitions).items():
                d.topics.add(topic=t, partitions=ps)
        return resp


class TxnCoordinatorExtension(TxnCoordinator):
    """The name node/extensions.py registers."""

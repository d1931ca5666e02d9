"""The `txn` workload: transactions mixing sends and polls, some aborted on purpose.

Jepsen's Kafka workload with transactions. Each op is one transaction: a
list of `["send", key, v]` and `["poll"]` micro-ops run between
begin_transaction and commit_transaction. A read_committed consumer per
worker (assign mode) does the polls; it is not part of the transaction.

Outcomes (HISTORY.md): committed -> ok; aborted, on purpose or after an error
before the commit was asked for -> fail (EndTxn(commit) was never sent, so
the sends can only end aborted: any later read of them is G1a); an error of
commit_transaction itself -> info (the commit may have landed).
"""
from __future__ import annotations

import random
import time
from typing import Any, ClassVar

from chaos.workloads import Outcome, key_tp, op_weights, pick_op
from chaos.workloads.log import LogClient, LogWorkload, error_name, records_by_key
from client.common import errors

__all__ = ["DEFAULT_TXN_WEIGHTS", "TxnClient", "TxnGenerator", "TxnWorkload"]

DEFAULT_TXN_WEIGHTS = {"txn": 9.0, "assign": 0.5, "crash": 0.1}


class TxnGenerator:
    """Pure: which op each process does next. Aborts on purpose carry `"abort": true` on the op."""

    def __init__(self, keys: list[str], rng: random.Random, *, weights: dict[str, float] | None = None,
                 max_mops: int = 4, poll_probability: float = 0.3, abort_probability: float = 0.2,
                 seek_probability: float = 0.5) -> None:
        if not keys:
            raise ValueError("the txn workload needs at least one key")
        if max_mops < 1:
            raise ValueError(f"workload.max_mops must be at least 1 (got {max_mops})")
        for name, p in (("poll_probability", poll_probability), ("abort_probability", abort_probability)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"workload.{name} must be within [0, 1] (got {p})")
        self.keys = list(keys)
        self.rng = rng
        self.weights = op_weights(weights, DEFAULT_TXN_WEIGHTS)
        self.max_mops = max_mops
        self.poll_probability = poll_probability
        self.abort_probability = abort_probability
        self.seek_probability = seek_probability
        self.next_value = {k: 1 for k in self.keys}
        self._started: set[Any] = set()

    def fresh_value(self, key: str) -> int:
        v = self.next_value[key]
        self.next_value[key] = v + 1
        return v

    def assign_op(self) -> tuple[str, Any, dict]:
        keys = sorted(self.rng.sample(self.keys, self.rng.randint(1, len(self.keys))))
        extra = {"seek_to_beginning": True} if self.rng.random() < self.seek_probability else {}
        return "assign", keys, extra

    def txn_op(self) -> tuple[str, Any, dict]:
        mops: list[list] = []
        for _ in range(self.rng.randint(1, self.max_mops)):
            if self.rng.random() < self.poll_probability:
                mops.append(["poll"])
            else:
                k = self.rng.choice(self.keys)
                mops.append(["send", k, self.fresh_value(k)])
        extra = {"abort": True} if self.rng.random() < self.abort_probability else {}
        return "txn", mops, extra

    def next_op(self, process: Any) -> tuple[str, Any, dict]:
        if process not in self._started:
            self._started.add(process)
            return self.assign_op()
        f = pick_op(self.rng, self.weights)
        if f == "txn":
            return self.txn_op()
        if f == "assign":
            return self.assign_op()
        return "crash", None, {}


class TxnClient(LogClient):
    """A transactional producer (transactional.id per worker) and a read_committed consumer."""

    def __init__(self, bootstrap: str, producer_props: dict, consumer_props: dict, *, transactional_id: str,
                 poll_ms: int = 300, client_id: str = "txn") -> None:
        producer_props = {"enable.idempotence": True, "acks": "all", **producer_props,
                          "transactional.id": transactional_id}
        consumer_props = {**consumer_props, "isolation.level": "read_committed"}
        super().__init__(bootstrap, producer_props, consumer_props, poll_ms=poll_ms, client_id=client_id)
        self.producer_wait_s = int(self.producer_props.get("max.block.ms", 60000)) / 1000.0

    def open(self) -> TxnClient:
        super().open()
        try:
            # Fences an older producer of this transactional.id and aborts its open transaction.
            self.producer.init_transactions()
        except BaseException:
            self.close()
            raise
        return self

    def _reopen_producer(self) -> None:
        from client import Producer
        try:
            self.producer.close(0)
        except Exception:  # noqa: BLE001, S110 -- it is replaced either way
            pass
        self.producer = Producer(dict(self.producer_props))
        self.producer.init_transactions()

    def invoke(self, f: str, value: Any, extra: dict) -> Outcome:
        if f == "txn":
            return self.txn(value, bool(extra.get("abort")))
        return super().invoke(f, value, extra)

    def txn(self, mops: list, abort: bool) -> Outcome:
        p = self.producer
        try:
            p.begin_transaction()
        except errors.KafkaError as e:
            return self._abort(mops, None, e.name)
        done: list[list] = []
        futures = []
        try:
            for mop in mops:
                if mop[0] == "send":
                    topic, partition = key_tp(mop[1])
                    futures.append((len(done), p.send(topic, value=str(mop[2]), partition=partition)))
                    done.append(list(mop))
                else:
                    done.append(["poll", records_by_key(self.consumer.poll(self.poll_ms))])
            if abort:
                return self._abort(mops, done, "aborted")
            p.flush(self.send_wait_s)
            for i, fut in futures:
                md = fut.get(0)
                done[i] = ["send", done[i][1], [md.offset if md.offset >= 0 else None, done[i][2]]]
        except Exception as e:  # noqa: BLE001 -- nothing was committed yet: abort, a definite failure
            return self._abort(mops, done, error_name(e))
        try:
            p.commit_transaction()
        except Exception as e:  # noqa: BLE001 -- the commit may or may not have landed
            return Outcome("info", mops, error_name(e))
        return Outcome("ok", done)

    def _abort(self, mops: list, done: list | None, why: str) -> Outcome:
        """Aborts; the op is `fail` even when the abort call errs, since commit was never asked for.
        Polls that ran stay in the value (they are evidence); sends keep their invoke form."""
        try:
            self.producer.abort_transaction()
        except Exception:  # noqa: BLE001 -- the coordinator aborts it on timeout or on our next init
            self._reopen_producer()
        value = [m if m[0] == "poll" else list(m) for m in (done or [])] + \
            [list(m) for m in mops[len(done or []):] if m[0] == "send"]
        return Outcome("fail", value, why)


class TxnWorkload(LogWorkload):
    """Experiment section `workload: {name: txn, concurrency, weights, max_mops, poll_probability,
    abort_probability, poll_ms}`."""

    name = "txn"
    _FIELDS: ClassVar[set[str]] = {"weights", "max_mops", "poll_probability", "abort_probability", "poll_ms", "ops_limit"}

    def __init__(self, spec: dict, topics: list[tuple[str, int]], **kw) -> None:
        spec = dict(spec or {})
        weights = spec.pop("weights", None)
        self.max_mops = int(spec.pop("max_mops", 4))
        self.poll_probability = float(spec.pop("poll_probability", 0.3))
        self.abort_probability = float(spec.pop("abort_probability", 0.2))
        super().__init__({k: v for k, v in spec.items()}, topics, **kw)
        self.weights = weights
        # Unique per run so that a reused cluster does not mix runs' transactional ids.
        self.run_tag = f"{int(time.time() * 1000) % 10**8:x}"

    def generator(self, rng: random.Random) -> TxnGenerator:
        return TxnGenerator(self.keys, rng, weights=self.weights, max_mops=self.max_mops,
                            poll_probability=self.poll_probability, abort_probability=self.abort_probability)

    def client(self, bootstrap: str, producer_props: dict, consumer_props: dict, worker: int) -> TxnClient:
        cls = TxnClient if self.adapter is None else self.adapter.TxnClient
        return cls(bootstrap, producer_props, consumer_props,
                   transactional_id=f"{self.name}-{self.run_tag}-{worker}", poll_ms=self.poll_ms,
                   client_id=f"{self.name}-{worker}").open()

"""The `group` workload: consumers in subscribe mode with offset commits and `committed` reads.

Every worker sends unique integers (as `log` does) and consumes as a member
of one consumer group: `subscribe` (the topics of its keys), `poll`, `commit`
of the positions it has reached ({key: next offset}, Kafka's convention) and
`committed` reads back from the group coordinator. `commit` and `committed`
carry the `"group"` field (HISTORY.md). Rebalances legitimately move a
member's position, so the checker allows poll-skip / nonmonotonic-poll under
subscribe; what it checks here is offset-regression and the log anomalies.

Its own check (`check`, beyond HISTORY.md's list, as eos has one), on the
history after the standard checker:

- `group-skip`: the group committed (an ok `commit`, or a `committed` answer)
  an offset past a known offset of that key that no member of the group had
  read by then: consumption was skipped, and a restarted member would never
  process that record. Known offsets come from every op (ok sends, any poll,
  the final read); members are the processes under `subscribe`.

A commit's offsets are the consumer's positions when the op starts: the
runner asks the client (`prepare`) before recording the invoke.
"""
from __future__ import annotations

import random
from typing import Any, ClassVar

from chaos.workloads import Outcome, key_tp, op_weights, pick_op, send_op, tp_key
from chaos.workloads.log import LogClient, LogWorkload
from client.common import errors

__all__ = ["DEFAULT_GROUP_WEIGHTS", "GROUP_ANOMALIES", "GroupClient", "GroupGenerator", "GroupWorkload",
           "check_group_commits"]

GROUP_ANOMALIES = ("group-skip",)
MAX_SKIPPED = 32

DEFAULT_GROUP_WEIGHTS = {"send": 5.0, "poll": 4.0, "commit": 1.5, "committed": 0.7, "subscribe": 0.2,
                         "crash": 0.1}


class GroupGenerator:
    """Pure: a new process subscribes first; then sends, polls, commits and committed reads."""

    def __init__(self, keys: list[str], rng: random.Random, group: str, *,
                 weights: dict[str, float] | None = None, max_sends: int = 2) -> None:
        if not keys:
            raise ValueError("the group workload needs at least one key")
        if not group:
            raise ValueError("workload.group must name a consumer group")
        self.keys = list(keys)
        self.rng = rng
        self.group = group
        self.weights = op_weights(weights, DEFAULT_GROUP_WEIGHTS)
        self.max_sends = max(1, max_sends)
        self.next_value = {k: 1 for k in self.keys}
        self._started: set[Any] = set()

    def next_op(self, process: Any) -> tuple[str, Any, dict]:
        if process not in self._started:
            self._started.add(process)
            return "subscribe", list(self.keys), {}
        f = pick_op(self.rng, self.weights)
        if f == "send":
            return send_op(self.rng, self.keys, self.max_sends, self.next_value)
        if f == "poll":
            return "poll", [["poll"]], {}
        if f == "commit":
            return "commit", {}, {"group": self.group}  # the client fills in its positions
        if f == "committed":
            keys = sorted(self.rng.sample(self.keys, self.rng.randint(1, len(self.keys))))
            return "committed", keys, {"group": self.group}
        if f == "subscribe":
            return "subscribe", list(self.keys), {}
        return "crash", None, {}


class GroupClient(LogClient):
    """A producer and a group member (subscribe mode); `assign` (the final read) drops the
    membership and reads with a plain consumer."""

    def __init__(self, bootstrap: str, producer_props: dict, consumer_props: dict, *, group: str,
                 poll_ms: int = 300, client_id: str = "group") -> None:
        super().__init__(bootstrap, producer_props, consumer_props, poll_ms=poll_ms, client_id=client_id)
        self.group = group
        self.group_props = {**self.consumer_props, "group.id": group}

    def open(self) -> GroupClient:
        from client import Consumer, Producer
        self.producer = Producer(dict(self.producer_props))
        self.consumer = Consumer(dict(self.group_props))
        return self

    def _swap_consumer(self, props: dict) -> None:
        from client import Consumer
        old, self.consumer = self.consumer, None
        if old is not None:
            try:
                old.close()
            except Exception:  # noqa: BLE001, S110 -- replaced either way
                pass
        self.consumer = Consumer(dict(props))

    def prepare(self, f: str, value: Any, extra: dict) -> Any:
        if f != "commit" or self.consumer is None:
            return value
        # Positions of what this member holds and has read (no I/O).
        return {tp_key(tp.topic, tp.partition): off for tp, off in sorted(self.consumer._positions.items())
                if tp in self.consumer.assignment()}

    def invoke(self, f: str, value: Any, extra: dict) -> Outcome:
        if f == "subscribe":
            return self.subscribe(value)
        if f == "commit":
            return self.commit(value)
        if f == "committed":
            return self.committed(value)
        if f == "assign":
            if self.consumer is not None and self.consumer.group is not None:
                self._swap_consumer(self.consumer_props)
            return super().invoke(f, value, extra)
        if f == "poll":
            return self.poll(value)
        return super().invoke(f, value, extra)

    def subscribe(self, keys: list[str]) -> Outcome:
        topics = sorted({key_tp(k)[0] for k in keys})
        try:
            if self.consumer is None or self.consumer.group is None or self.consumer.subscription():
                self._swap_consumer(self.group_props)
            self.consumer.subscribe(topics)
        except errors.KafkaError as e:
            return Outcome.of_error(e, keys)
        return Outcome("ok", keys)

    def commit(self, offsets: dict[str, int]) -> Outcome:
        from client import TopicPartition
        from client.common.types import OffsetAndMetadata
        if not offsets:
            return Outcome("ok", offsets)
        try:
            self.consumer.commit_sync({TopicPartition(*key_tp(k)): OffsetAndMetadata(o) for k, o in offsets.items()},
                                      timeout=10.0)
        except errors.KafkaError as e:
            return Outcome.of_error(e, offsets)
        return Outcome("ok", offsets)

    def committed(self, keys: list[str]) -> Outcome:
        from client import Consumer, TopicPartition
        tps = [TopicPartition(*key_tp(k)) for k in keys]
        # A group consumer answers whether or not it is subscribed; a plain one (final read) borrows one.
        reader = self.consumer if self.consumer is not None and self.consumer.group is not None \
            else Consumer(dict(self.group_props))
        try:
            got = reader.committed(tps, timeout=10.0)
        except errors.KafkaError as e:
            return Outcome.of_error(e, keys)
        finally:
            if reader is not self.consumer:
                reader.close()
        return Outcome("ok", {tp_key(tp.topic, tp.partition): (om.offset if om is not None else None)
                              for tp, om in got.items()})


class GroupWorkload(LogWorkload):
    """Experiment section `workload: {name: group, concurrency, group, weights, max_sends, poll_ms}`."""

    name = "group"
    _FIELDS: ClassVar[set[str]] = {"group", "weights", "max_sends", "poll_ms", "ops_limit"}

    def __init__(self, spec: dict, topics: list[tuple[str, int]], **kw) -> None:
        spec = dict(spec or {})
        self.group = str(spec.pop("group", "chaos-group"))
        super().__init__(spec, topics, **kw)

    def generator(self, rng: random.Random) -> GroupGenerator:
        return GroupGenerator(self.keys, rng, self.group, weights=self.weights, max_sends=self.max_sends)

    def client(self, bootstrap: str, producer_props: dict, consumer_props: dict, worker: int) -> GroupClient:
        cls = GroupClient if self.adapter is None else self.adapter.GroupClient
        return cls(bootstrap, producer_props, consumer_props, group=self.group, poll_ms=self.poll_ms,
                   client_id=f"{self.name}-{worker}").open()

    def final_ops(self) -> list[tuple[str, Any, dict]]:
        return [("committed", list(self.keys), {"group": self.group})]

    def check(self, history: list[dict]) -> tuple[dict[str, list[dict]], dict]:
        return check_group_commits(history, self.group)


def _reads(value) -> dict:
    """{key: [[offset, v], ...]} of every poll inside an op's value."""
    out: dict = {}
    if isinstance(value, list):
        for mop in value:
            if isinstance(mop, list) and len(mop) > 1 and mop[0] == "poll" and isinstance(mop[1], dict):
                for k, pairs in mop[1].items():
                    out.setdefault(k, []).extend(pairs)
    return out


def _known_offsets(history: list[dict]) -> dict[str, dict[int, Any]]:
    """key -> offset -> value, from ok sends that name their offset and from every poll."""
    known: dict[str, dict[int, Any]] = {}
    for op in history:
        if op.get("process") == "nemesis" or op.get("type") == "invoke":
            continue
        value = op.get("value")
        if not isinstance(value, list):
            continue
        for mop in value:
            if (op.get("type") == "ok" and isinstance(mop, list) and len(mop) > 2 and mop[0] == "send"
                    and isinstance(mop[2], list) and mop[2][0] is not None):
                known.setdefault(mop[1], {}).setdefault(mop[2][0], mop[2][1])
        for k, pairs in _reads(value).items():
            log = known.setdefault(k, {})
            for off, v in pairs:
                if off is not None:
                    log.setdefault(off, v)
    return known


def check_group_commits(history: list[dict], group: str) -> tuple[dict[str, list[dict]], dict]:
    """(`group-skip` evidence, stats); reads only the history.

    In history order: members' reads (any op type: a poll moves the consumer whatever the op's outcome)
    accumulate; each ok `commit` of `group` and each ok `committed` answer for it must not pass a
    known offset that no member had read by then. Each skipped offset is reported once, at the first
    commit past it. Commits without a `"group"` are the history's one group (HISTORY.md)."""
    known = _known_offsets(history)
    order = {k: sorted(log) for k, log in known.items()}
    cursor = dict.fromkeys(order, 0)  # key -> how many of its known offsets are settled
    read: dict[str, set] = {}  # key -> offsets members read so far
    member: dict[Any, bool] = {}  # process -> under subscribe
    pending: dict[Any, dict] = {}  # process -> its open invoke
    out: dict[str, list[dict]] = {}
    stats = {"commits_checked": 0, "offsets_verified": 0, "offsets_skipped": 0}
    for pos, op in enumerate(history):
        proc, typ, f = op.get("process"), op.get("type"), op.get("f")
        if proc == "nemesis":
            continue
        if typ == "invoke":
            pending[proc] = op
            if f in ("subscribe", "assign"):
                member[proc] = f == "subscribe"
            continue
        inv = pending.pop(proc, None) or {}
        if member.get(proc):
            for k, pairs in _reads(op.get("value")).items():
                read.setdefault(k, set()).update(off for off, _ in pairs if off is not None)
        if typ != "ok" or f not in ("commit", "committed"):
            continue
        g = op.get("group", inv.get("group"))
        value = op.get("value")
        if g not in (group, None) or not isinstance(value, dict):
            continue
        stats["commits_checked"] += 1
        for k, committed in sorted(value.items()):
            offs = order.get(k)
            if committed is None or not offs:
                continue
            i, skipped = cursor[k], []
            have = read.get(k, ())
            while i < len(offs) and offs[i] < committed:
                if offs[i] in have:
                    stats["offsets_verified"] += 1
                else:
                    skipped.append(offs[i])
                i += 1
            cursor[k] = i
            if skipped:
                stats["offsets_skipped"] += len(skipped)
                out.setdefault("group-skip", []).append({
                    "key": k, "group": group, "f": f, "committed_offset": committed, "count": len(skipped),
                    "skipped": [[o, known[k][o]] for o in skipped[:MAX_SKIPPED]],
                    "indexes": [op.get("index", pos)]})
    return out, stats

"""Issue C: the producer on a real cluster — idempotence under lost replies and leader failover,
batching and compression metrics, buffer exhaustion, delivery timeout, the patterns example."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading

import pytest

from client import Admin, NewTopic, Producer
from client.common import errors
from client.common.pb import agent_pb2 as apb
from tests.helpers import read_all, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAFE = {"min.insync.replicas": "2"}


def create(bootstrap, topic, partitions=1, rf=3, configs=SAFE):
    with Admin({"bootstrap.servers": bootstrap}) as a:
        a.create_topics([NewTopic(topic, partitions, rf, dict(configs))])


def leader_name(bootstrap, topic, partition=0) -> str:
    """The partition's leader as the agent's node name, found with Admin.describe_topics."""
    def leader():
        with Admin({"bootstrap.servers": bootstrap}) as a:
            [d] = a.describe_topics([topic])
        n = d.partitions[partition].leader
        return n if n > 0 else None
    return f"broker-{wait_until(leader, 20, what=f'{topic} leader')}"


def set_faults(cluster, node, *rules, seed=1):
    cluster.agents[node].set_faults(apb.FaultRules(rules=list(rules), seed=seed))


def values(bootstrap, topic, partition=0):
    got = read_all(bootstrap, topic, [partition])
    return [r.value for r in next(iter(got.values()))], next(iter(got.values()))


def drop_replies_stream(cluster, topic, client_id, idempotent):
    """200 records in 40 requests while the leader handles 30% of this client's produces and then
    loses the reply; returns (the log, the futures, the producer's metrics)."""
    bs = cluster.bootstrap_servers
    create(bs, topic)
    node = leader_name(bs, topic)
    set_faults(cluster, node, apb.FaultRule(kind="drop-response", src=f"client:{client_id}", dst=node,
                                            method="Produce", probability=0.3))
    try:
        with Producer({"bootstrap.servers": bs, "client.id": client_id, "acks": "all",
                       "enable.idempotence": idempotent, "linger.ms": 0, "retry.backoff.ms": 20,
                       "request.timeout.ms": 10000}) as p:
            futs = []
            for i in range(200):
                futs.append(p.send(topic, b"%d" % i, partition=0))
                if i % 5 == 4:
                    p.flush(60)   # one request per 5 records, so the 30% bites often
            metrics = p.metrics()
    finally:
        set_faults(cluster, node)
    log_values, recs = values(bs, topic)
    return log_values, recs, futs, metrics


def test_lost_replies_with_idempotence_leave_each_record_once_in_send_order(shared_cluster):
    log_values, recs, futs, metrics = drop_replies_stream(shared_cluster, "drop-idem", "dr-idem", True)
    assert metrics["record-retry-total"] > 0, "the fault never dropped a reply"
    assert log_values == [b"%d" % i for i in range(200)]
    # A duplicate answered with the original offset: every future points at its record.
    by_offset = {r.offset: r.value for r in recs}
    assert all(by_offset[f.get(1).offset] == b"%d" % i for i, f in enumerate(futs))


def test_lost_replies_without_idempotence_duplicate_records(shared_cluster):
    log_values, _, futs, metrics = drop_replies_stream(shared_cluster, "drop-plain", "dr-plain", False)
    assert metrics["record-retry-total"] > 0, "the fault never dropped a reply"
    assert all(f.exception(1) is None for f in futs)
    assert set(log_values) == {b"%d" % i for i in range(200)}
    assert len(log_values) > 200, "a retried send whose first reply was lost must be appended twice"
    assert len(log_values) - 200 == len(log_values) - len(set(log_values))


def test_leader_killed_during_idempotent_stream_no_duplicates_no_reordering_nothing_lost(cluster):
    bs = cluster.bootstrap_servers
    create(bs, "failover")
    old = leader_name(bs, "failover")
    acked: list[int] = []
    failed: list[BaseException] = []
    final_metrics: dict = {}
    stop = threading.Event()

    def stream():
        with Producer({"bootstrap.servers": bs, "acks": "all", "enable.idempotence": True, "linger.ms": 2,
                       "retry.backoff.ms": 50, "request.timeout.ms": 5000, "delivery.timeout.ms": 60000}) as p:
            i = 0
            while not stop.is_set() and i < 100_000:
                chunk = [(j, p.send("failover", b"%d" % j, partition=0)) for j in range(i, i + 50)]
                i += 50
                for j, f in chunk:   # wait for the chunk: a steady stream, not one burst
                    e = f.exception(90)
                    if e is None:
                        acked.append(j)
                    else:
                        failed.append(e)
            final_metrics.update(p.metrics())

    t = threading.Thread(target=stream)
    t.start()
    try:
        wait_until(lambda: len(acked) >= 1000, 60, what="1000 records acknowledged before the kill")
        cluster.agents[old].kill()
        at_kill = len(acked)
        wait_until(lambda: len(acked) >= at_kill + 1000, 60, what="1000 more acknowledged after failover")
        assert leader_name(bs, "failover") != old
    finally:
        stop.set()
        t.join(120)
    assert not t.is_alive()
    assert failed == []
    assert final_metrics["record-retry-total"] > 0, "the kill never reached the producer"
    log_values, _ = values(bs, "failover")
    got = [int(v) for v in log_values]
    assert len(got) == len(set(got)), "duplicates in the log"
    assert got == sorted(got), "records out of send order"
    assert set(acked) <= set(got), f"acknowledged records lost: {sorted(set(acked) - set(got))[:10]}"
    assert got == list(range(len(got))), "a gap: a record after a lost one"


def _count_in_flight(p, tp):
    """Wraps the accumulator's drain to record the most batches of tp in flight at once."""
    seen = [0]
    drain = p.accumulator.drain

    def counting(t, max_bytes):
        out = drain(t, max_bytes)
        if t == tp and out:
            # (a producer without per-partition counts keeps one request, muted, in flight)
            seen[0] = max(seen[0], getattr(p.accumulator, "in_flight", {}).get(t, 1))
        return out
    p.accumulator.drain = counting
    return seen


def test_five_in_flight_with_idempotence_survive_lost_replies_and_a_leader_kill(cluster):
    # Several batches of one partition in flight (max.in.flight 5), 20% of the replies lost and the
    # leader killed mid-stream: retries come back as duplicates or out-of-order sequences, and the
    # log still holds every record once, in send order, each future pointing at its own record.
    bs = cluster.bootstrap_servers
    create(bs, "inflight5")
    old = leader_name(bs, "inflight5")
    set_faults(cluster, old, apb.FaultRule(kind="drop-response", src="client:if5", dst=old, method="Produce",
                                           probability=0.2))
    n = 6000
    futs = []
    with Producer({"bootstrap.servers": bs, "client.id": "if5", "acks": "all", "enable.idempotence": True,
                   "max.in.flight.requests.per.connection": 5, "linger.ms": 0, "batch.size": 400,
                   "retry.backoff.ms": 20, "request.timeout.ms": 5000, "delivery.timeout.ms": 90000}) as p:
        seen = _count_in_flight(p, ("inflight5", 0))
        for i in range(n):
            futs.append(p.send("inflight5", b"%d" % i, partition=0))
            if i >= 300:
                futs[i - 300].exception(90)   # a window of 300 records: a steady pipelined stream
            if i == n // 3:
                cluster.agents[old].kill()
        p.flush(120)
        metrics = p.metrics()
    assert [i for i, f in enumerate(futs) if f.exception(0) is not None] == []
    assert 2 <= seen[0] <= 5, f"batches of the partition in flight at once: {seen[0]}"
    assert metrics["record-retry-total"] > 0, "no retry: the faults never reached the producer"
    log_values, recs = values(bs, "inflight5")
    assert log_values == [b"%d" % i for i in range(n)], "duplicates, reordering or gaps"
    by_offset = {r.offset: r.value for r in recs}
    assert all(by_offset[f.get(1).offset] == b"%d" % i for i, f in enumerate(futs))


def test_batching_is_visible_in_metrics(shared_cluster):
    bs = shared_cluster.bootstrap_servers
    create(bs, "batching", partitions=3)
    with Producer({"bootstrap.servers": bs, "linger.ms": 10, "batch.size": 65536}) as p:
        for i in range(3000):
            p.send("batching", b'{"n": %d, "event": "click"}' % i, key=b"k%d" % (i % 30))
        p.flush(30)
        m = p.metrics()
    assert m["record-send-total"] == 3000 and m["record-error-total"] == 0
    assert m["records-per-request-avg"] > 20, m
    assert m["batch-size-avg"] > 20 * 30, m       # bytes per partition per request
    assert m["request-latency-avg"] > 0 and m["request-latency-max"] >= m["request-latency-avg"]
    assert m["buffer-available-bytes"] == 33554432


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compression_rate_per_codec_on_json_and_round_trip(shared_cluster, codec):
    bs = shared_cluster.bootstrap_servers
    topic = f"json-{codec}"
    create(bs, topic, rf=1, configs={})
    sent = [json.dumps({"orderId": i, "amount": 100.0, "status": "pending", "customer": f"c-{i % 7}"})
            for i in range(1000)]
    with Producer({"bootstrap.servers": bs, "compression.type": codec, "linger.ms": 10, "batch.size": 65536,
                   "value.serializer": lambda v: v.encode()}) as p:
        for v in sent:
            p.send(topic, v, partition=0)
        p.flush(30)
        rate = p.metrics()["compression-rate-avg"]
    assert 0 < rate < 1.0, f"{codec}: compression-rate-avg {rate}"
    got, _ = values(bs, topic)
    assert [v.decode() for v in got] == sent


def test_no_compression_rate_is_one(shared_cluster):
    bs = shared_cluster.bootstrap_servers
    create(bs, "json-none", rf=1, configs={})
    with Producer({"bootstrap.servers": bs, "linger.ms": 10}) as p:
        for i in range(100):
            p.send("json-none", b'{"n": %d}' % i)
        p.flush(30)
        assert p.metrics()["compression-rate-avg"] == 1.0


def test_buffer_exhaustion_blocks_max_block_ms_then_names_buffer_memory(shared_cluster):
    bs = shared_cluster.bootstrap_servers
    create(bs, "bufex", partitions=2)
    node = leader_name(bs, "bufex")
    # Every produce of this client to the leader is refused, so the first batch keeps its memory.
    set_faults(shared_cluster, node, apb.FaultRule(kind="drop", src="client:bufex", dst=node, method="Produce"))
    try:
        with Producer({"bootstrap.servers": bs, "client.id": "bufex", "buffer.memory": 16384,
                       "batch.size": 16384, "max.block.ms": 300, "linger.ms": 0, "retry.backoff.ms": 50}) as p:
            first = p.send("bufex", b"held", partition=0)
            wait_until(lambda: p.metrics()["record-retry-total"] > 0, 20, what="the first batch retrying")
            assert p.metrics()["buffer-available-bytes"] == 0
            with pytest.raises(errors.BufferExhaustedError, match="buffer.memory=16384") as ei:
                p.send("bufex", b"no room", partition=1)
            assert "max.block.ms" in str(ei.value)
            assert p.metrics()["bufferpool-wait-time"] >= 300 * 0.9
            set_faults(shared_cluster, node)
            assert first.get(30).offset >= 0      # healed: the held batch goes through
            assert p.send("bufex", b"room again", partition=1).get(30).offset >= 0
    finally:
        set_faults(shared_cluster, node)


def test_delivery_timeout_fails_the_future_then_the_producer_recovers(shared_cluster):
    bs = shared_cluster.bootstrap_servers
    create(bs, "dto")
    node = leader_name(bs, "dto")
    set_faults(shared_cluster, node, apb.FaultRule(kind="drop", src="client:dto", dst=node, method="Produce"))
    try:
        with Producer({"bootstrap.servers": bs, "client.id": "dto", "delivery.timeout.ms": 1500,
                       "request.timeout.ms": 1000, "linger.ms": 0, "retry.backoff.ms": 50}) as p:
            futs = [p.send("dto", b"late-%d" % i, partition=0) for i in range(3)]
            for f in futs:
                e = f.exception(30)
                assert isinstance(e, errors.KafkaTimeoutError), e
                assert "delivery.timeout.ms=1500" in str(e)
            assert p.metrics()["record-error-total"] == 3
            set_faults(shared_cluster, node)
            # The failed batches left a gap in the sequence: a new producer id lets new sends through.
            md = p.send("dto", b"after", partition=0).get(30)
            assert md.offset >= 0
    finally:
        set_faults(shared_cluster, node)
    got, _ = values(bs, "dto")
    assert got[-1] == b"after"


def test_callbacks_headers_serializers_and_flush_waits_for_in_flight(shared_cluster):
    bs = shared_cluster.bootstrap_servers
    create(bs, "cb", rf=1, configs={})
    seen, order = [], []
    with Producer({"bootstrap.servers": bs, "key.serializer": str.encode,
                   "value.serializer": lambda v: json.dumps(v).encode(), "linger.ms": 5}) as p:
        for i in range(50):
            p.send("cb", {"i": i}, key=f"k{i}", headers=[("h", b"%d" % i)], partition=0,
                   callback=lambda md, e, i=i: seen.append((i, md.offset if md else None, e)))
            p.send("cb", {"i": i}, key="x", partition=0).add_callback(lambda md, i=i: order.append(i))
        p.flush()
        assert len(seen) == 50 and len(order) == 50       # flush returned: every callback has run
    assert [s[0] for s in seen] == list(range(50)) and order == list(range(50))
    assert all(e is None for _, _, e in seen)
    got = read_all(bs, "cb", [0])
    recs = next(iter(got.values()))
    first = recs[0]
    assert (first.key, json.loads(first.value), list(first.headers)) == (b"k0", {"i": 0}, [("h", b"0")])


def test_sticky_keyless_records_spread_over_partitions_batch_by_batch(shared_cluster):
    bs = shared_cluster.bootstrap_servers
    create(bs, "sticky", partitions=4, rf=1, configs={})
    with Producer({"bootstrap.servers": bs, "linger.ms": 0, "batch.size": 1024}) as p:
        futs = [p.send("sticky", b"x" * 100) for _ in range(400)]
        p.flush(30)
        parts = [f.get(1).partition for f in futs]
    assert len(set(parts)) > 1, "keyless records must move on to another partition once a batch is done"
    runs = sum(1 for a, b in itertools.pairwise(parts) if a != b) + 1
    assert runs < len(parts) / 3, "records stick to a partition for a batch, not one by one"


def run_example(bootstrap, transactions: str):
    env = {**os.environ, "BROKERLAB_BOOTSTRAP": bootstrap, "BROKERLAB_EXAMPLE_TRANSACTIONS": transactions}
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", "producer_example.py")],
                          capture_output=True, text=True, env=env, timeout=90, cwd=ROOT, check=False)


def test_patterns_producer_example_runs(shared_cluster):
    r = run_example(shared_cluster.bootstrap_servers, "0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Sent to user-events partition" in r.stdout, r.stdout
    assert "Error" not in r.stdout


def test_patterns_producer_example_transactional_part(shared_cluster):
    import importlib.util
    if importlib.util.find_spec("client.transactions") is None:
        pytest.skip("client.transactions is not there yet")
    r = run_example(shared_cluster.bootstrap_servers, "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Transaction committed successfully" in r.stdout, r.stdout
    assert "Sent to user-events partition" in r.stdout, r.stdout

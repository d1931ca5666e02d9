"""poll(timeout) keeps its promise when a leader hangs, and the consumer moves to the new leader."""
from __future__ import annotations

import time
import uuid

from client import Admin, Consumer, Producer, TopicPartition
from tests.helpers import partition_state, wait_until


def test_poll_returns_on_time_with_a_paused_leader_and_follows_the_new_one(cluster):
    bs = cluster.bootstrap_servers
    with Admin({"bootstrap.servers": bs}) as a:
        a.create_topic("pp", 1, 3, {"min.insync.replicas": "2"})
    tp = TopicPartition("pp", 0)
    with Producer({"bootstrap.servers": bs, "acks": "all"}) as p:
        for i in range(10):
            p.send("pp", str(i).encode(), partition=0)
        p.flush(30)
    leader = partition_state(cluster, "pp", 0)[0]
    with Consumer({"bootstrap.servers": bs, "request.timeout.ms": 30000}) as c:
        c.assign([tp])
        c.seek_to_beginning()
        got = []
        wait_until(lambda: got.extend(int(r.value) for r in c.poll(500)) or len(got) >= 10, 20, what="first records")
        cluster.agents[f"broker-{leader}"].pause()
        try:
            # The fetch to the paused leader hangs (request.timeout.ms is 30 s); poll must still return.
            # The bound tells "returned" from "waited for the hung fetch" with room for a loaded machine.
            for _ in range(3):
                t = time.monotonic()
                c.poll(300)
                assert time.monotonic() - t < 15, "poll(300) blocked on a hung fetch"
            wait_until(lambda: partition_state(cluster, "pp", 0)[0] not in (leader, -1), 20, what="a new leader")
            with Producer({"bootstrap.servers": bs, "acks": "all"}) as p:
                for i in range(10, 20):
                    p.send("pp", str(i).encode(), partition=0)
                p.flush(30)
            wait_until(lambda: got.extend(int(r.value) for r in c.poll(300)) or len(got) >= 20, 30,
                       what="records from the new leader while the old one hangs")
        finally:
            cluster.agents[f"broker-{leader}"].resume()
        assert got == list(range(20))


def test_poll_that_returns_records_fetches_the_drained_partitions(shared_cluster):
    # Kafka's fetcher pipelines: when poll hands out a partition's last buffered records it has
    # already sent that partition's next fetch, so the broker works while the application does.
    bs = shared_cluster.bootstrap_servers
    topic = f"prefetch-{uuid.uuid4().hex[:8]}"
    with Admin({"bootstrap.servers": bs}) as a:
        a.create_topic(topic, 1, 3, {"min.insync.replicas": "2"})
    tp = TopicPartition(topic, 0)
    with Producer({"bootstrap.servers": bs, "acks": "all"}) as p:
        for i in range(10):
            p.send(topic, str(i).encode(), partition=0)
        p.flush(30)
    with Consumer({"bootstrap.servers": bs, "max.poll.records": 10}) as c:
        c.assign([tp])
        c.seek_to_beginning()
        got = []
        wait_until(lambda: got.extend(int(r.value) for r in c.poll(500)) or len(got) >= 10, 20, what="records")
        assert got == list(range(10))
        # The buffer is empty now; the next fetch (from offset 10) was sent before poll returned.
        assert [sent for _call, sent, _t in c._inflight.values()] == [{tp: 10}]
        with Producer({"bootstrap.servers": bs, "acks": "all"}) as p:
            p.send(topic, b"10", partition=0)
            p.flush(30)
        wait_until(lambda: got.extend(int(r.value) for r in c.poll(500)) or len(got) >= 11, 20, what="record 10")
        assert got == list(range(11))

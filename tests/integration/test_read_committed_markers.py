"""read_committed while an ABORT marker is appended but not yet below the high watermark.

Regression: the broker's aborted-transaction index was only read up to the fetch's upper
bound (the LSO), so an ABORT marker sitting at the LSO was missed and the aborted records
below it were served as committed (found by the chaos `txn` workload as G1a).
"""
from __future__ import annotations

import threading
import uuid

from client import Admin, Consumer, NewTopic, Producer, TopicPartition
from tests.helpers import wait_until


def test_read_committed_consumer_never_sees_aborted_records_of_interleaved_transactions(shared_cluster):
    bs = shared_cluster.bootstrap_servers
    t = f"rc-{uuid.uuid4().hex[:8]}"
    with Admin({"bootstrap.servers": bs}) as admin:
        admin.create_topics([NewTopic(t, 1, 3)])

    def txn_producer(tid: str) -> Producer:
        p = Producer({"bootstrap.servers": bs, "transactional.id": f"{tid}-{t}", "acks": "all",
                      "enable.idempotence": True, "linger.ms": 0})
        p.init_transactions()
        return p

    committer, aborter = txn_producer("committer"), txn_producer("aborter")
    seen: list[bytes] = []
    stop = threading.Event()
    consumer = Consumer({"bootstrap.servers": bs, "isolation.level": "read_committed",
                         "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(t, 0)])

    def consume() -> None:
        while not stop.is_set():
            seen.extend(r.value for r in consumer.poll(50))

    reader = threading.Thread(target=consume)
    reader.start()
    try:
        for i in range(20):
            # Interleaved: the commit's marker moves the LSO right up to the aborter's data.
            committer.begin_transaction()
            committer.send(t, value=f"c{i}", partition=0).get(10)
            aborter.begin_transaction()
            aborter.send(t, value=f"a{i}", partition=0).get(10)
            committer.commit_transaction()
            aborter.abort_transaction()
        wait_until(lambda: len([v for v in seen if v.startswith(b"c")]) >= 20, 20, what="every committed record")
    finally:
        stop.set()
        reader.join(10)
        consumer.close()
        committer.close()
        aborter.close()
    assert [v for v in seen if v.startswith(b"a")] == []
    assert sorted(seen) == sorted(f"c{i}".encode() for i in range(20))

"""Retry + dead-letter helper on a real cluster: a poison record goes to <topic>.DLQ, the partition flows on."""
from __future__ import annotations

from click.testing import CliRunner

from client import Consumer, Producer
from client.admin import Admin
from client.common.types import TopicPartition
from client.dlq import (
    DLQ_HEADERS,
    H_ATTEMPTS,
    H_ERROR_CLASS,
    H_ERROR_MESSAGE,
    H_OFFSET,
    H_PARTITION,
    H_TIMESTAMP,
    H_TOPIC,
    DeadLetterHandler,
)
from tests.helpers import read_all, wait_until


class Poison(Exception):
    pass


def test_poison_record_goes_to_dlq_and_replays(shared_cluster):
    bs = shared_cluster.bootstrap_servers
    with Admin({"bootstrap.servers": bs}) as a:
        a.create_topic("orders-dlq", 1, 3)
        a.create_topic("orders-dlq.DLQ", 1, 3)
    with Producer({"bootstrap.servers": bs, "acks": "all"}) as p:
        for i in range(10):
            value = b"poison" if i == 4 else f"ok-{i}".encode()
            p.send("orders-dlq", key=f"k{i}".encode(), value=value, headers=[("trace", f"t{i}".encode())],
                   partition=0)
        p.flush()

    calls: list[bytes] = []

    def handler(record):
        calls.append(record.value)
        if record.value == b"poison":
            raise Poison("cannot parse order")

    processed = []
    props = {"bootstrap.servers": bs, "group.id": "orders-dlq", "enable.auto.commit": False,
             "auto.offset.reset": "earliest", "session.timeout.ms": 3000, "heartbeat.interval.ms": 300}
    with Consumer(props) as c, Producer({"bootstrap.servers": bs, "acks": "all"}) as dlq_producer:
        dlq = DeadLetterHandler(handler, dlq_producer, max_attempts=3, initial_backoff_ms=10)
        c.subscribe(["orders-dlq"])

        def step():
            batch = c.poll(300)
            dlq.process(c, batch)
            processed.extend(r.value for r in batch if r.value != b"poison")
            return c.committed(TopicPartition("orders-dlq", 0)) is not None and \
                c.committed(TopicPartition("orders-dlq", 0)).offset == 10
        wait_until(step, 30, what="the partition to be committed past every record")
    assert calls.count(b"poison") == 3, "three attempts, then dead-lettered"
    assert processed == [f"ok-{i}".encode() for i in range(10) if i != 4], "the partition kept flowing"

    (letter,) = read_all(bs, "orders-dlq.DLQ", [0])[TopicPartition("orders-dlq.DLQ", 0)]
    h = dict(letter.headers)
    assert (letter.key, letter.value, h["trace"]) == (b"k4", b"poison", b"t4")
    assert (h[H_TOPIC], h[H_PARTITION], h[H_OFFSET], h[H_ATTEMPTS]) == (b"orders-dlq", b"0", b"4", b"3")
    assert h[H_ERROR_CLASS].endswith(b"Poison") and h[H_ERROR_MESSAGE] == b"cannot parse order"
    assert int(h[H_TIMESTAMP]) > 0

    from brokerlab_cli import main
    r = CliRunner().invoke(main, ["dlq", "replay", "--bootstrap-server", bs, "--topic", "orders-dlq.DLQ",
                                  "--timeout-ms", "1500"], catch_exceptions=False)
    assert r.exit_code == 0 and "Replayed 1" in r.output, r.output
    back = read_all(bs, "orders-dlq", [0])[TopicPartition("orders-dlq", 0)]
    assert len(back) == 11
    assert (back[-1].key, back[-1].value) == (b"k4", b"poison")
    assert dict(back[-1].headers) == {"trace": b"t4"}, "replay strips the dead-letter context headers"
    assert not set(DLQ_HEADERS) & set(dict(back[-1].headers))

"""Issue 18: the Kafka patterns document's Python producer and consumer (examples/kafka_python/, kafka-python
with only the corrections named in each file) run against `brokerlab up`.

The examples use localhost:9092; the test starts `brokerlab up --kafka-port 0` (free ports) and runs copies
of the files with that one address rewritten to the port the ready line prints.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

from kafka.admin import KafkaAdminClient

from tests.helpers import ROOT, stop_process_group, wait_until

EXAMPLES = os.path.join(ROOT, "examples", "kafka_python")


def _copy_with_port(name: str, dst_dir, port: int) -> str:
    with open(os.path.join(EXAMPLES, name)) as f:
        text = f.read()
    assert text.count("bootstrap_servers=['localhost:9092']") == 1, name
    path = os.path.join(dst_dir, name)
    with open(path, "w") as f:
        f.write(text.replace("bootstrap_servers=['localhost:9092']", f"bootstrap_servers=['localhost:{port}']"))
    return path


def _committed_total(bootstrap: str, group: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="example-check")
    try:
        offsets = admin.list_group_offsets({group: None})[group]  # OffsetFetch v8 (KIP-709)
    finally:
        admin.close()
    return sum(om.offset for tp, om in offsets.items() if tp.topic == "order-events" and om.offset >= 0)


def test_patterns_document_producer_and_consumer_run_against_brokerlab_up(tmp_path):
    up_log = open(tmp_path / "up.log", "w")  # noqa: SIM115 - the subprocess writes it until the end
    # Kafka's group.initial.rebalance.delay.ms (3 s; `up`'s fast settings make it 0): the example consumer's
    # first join then sees the topic's partitions. Otherwise kafka-python 3.0.12 joins once without them,
    # rejoins when its metadata arrives, and can lose that second join if it completes as poll(timeout_ms=100)
    # runs out (the member never gets its assignment nor heartbeats).
    up = subprocess.Popen([sys.executable, "-m", "brokerlab_cli", "up", "--port", "0", "--kafka-port", "0",
                           "--metrics-port", "0", "--config", "group.initial.rebalance.delay.ms=3000",
                           "--data-dir", str(tmp_path / "cluster")], cwd=ROOT, stdout=up_log,
                          stderr=subprocess.STDOUT, start_new_session=True)
    consumer = None
    try:
        ready = wait_until(lambda: re.search(r"kafka bootstrap 127\.0\.0\.1:(\d+)", (tmp_path / "up.log").read_text()),
                           120, what="brokerlab up's ready line")
        port = int(ready.group(1))
        bootstrap = f"127.0.0.1:{port}"

        producer = subprocess.run([sys.executable, _copy_with_port("producer.py", tmp_path, port)], cwd=tmp_path,
                                  capture_output=True, text=True, timeout=120, check=False)
        assert producer.returncode == 0, producer.stdout + producer.stderr
        assert "Transaction committed successfully" in producer.stdout
        assert re.search(r"Sent to user-events partition \d+ offset \d+", producer.stdout), producer.stdout

        out = open(tmp_path / "consumer.out", "w")  # noqa: SIM115 - the consumer writes it until SIGINT
        consumer = subprocess.Popen([sys.executable, _copy_with_port("consumer.py", tmp_path, port)],
                                    cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        # Every one of the 100 transactional records is processed and its offset committed for the group.
        wait_until(lambda: _committed_total(bootstrap, "order-processor") == 100, 120,
                   what="the example consumer's commits of all 100 order-events")
        consumer.send_signal(signal.SIGINT)  # the example stops on KeyboardInterrupt (and closes)
        assert consumer.wait(60) == 0, (tmp_path / "consumer.out").read_text()
        text = (tmp_path / "consumer.out").read_text()
        keys = set(re.findall(r"key=b'(order-\d+)'", text))
        assert keys == {f"order-{i}" for i in range(100)}

    finally:
        if consumer is not None and consumer.poll() is None:
            consumer.kill()
            consumer.wait(10)
        stop_process_group(up, 60, 10)
        up_log.close()

"""A consumer group member in its own process, for tests that SIGKILL or stall it.

Writes one JSON line per event to --out (assigned / revoked / lost / rec / committed),
flushed at once, so the test can read what happened up to a kill.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from client import Consumer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--props", default="{}")
    ap.add_argument("--stall-after-assign", action="store_true", help="stop polling once assigned")
    ap.add_argument("--commit-sync", action="store_true", help="commit_sync after each processed batch")
    ap.add_argument("--process-ms", type=int, default=0, help="sleep per batch (a slow processor)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(name)s: %(message)s")
    out = open(args.out, "a", buffering=1)  # noqa: SIM115 - the event log stays open for the process's life

    def emit(**ev):
        out.write(json.dumps(ev) + "\n")

    props = {"bootstrap.servers": args.bootstrap, "group.id": args.group, "auto.offset.reset": "earliest",
             "session.timeout.ms": 2000, "heartbeat.interval.ms": 300,
             # bounds the rebalance timeout: a member killed mid-join is waited for this long, as in Kafka
             "max.poll.interval.ms": 10000, **json.loads(args.props)}
    c = Consumer(props)

    class Listener:
        def on_partitions_revoked(self, tps):
            emit(ev="revoked", tps=sorted([t.topic, t.partition] for t in tps))

        def on_partitions_assigned(self, tps):
            emit(ev="assigned", gen=c.group_metadata().generation_id, added=sorted([t.partition for t in tps]),
                 tps=sorted(t.partition for t in c.assignment()), member=c.group_metadata().member_id)

        def on_partitions_lost(self, tps):
            emit(ev="lost", tps=sorted([t.topic, t.partition] for t in tps))

    c.subscribe([args.topic], listener=Listener())
    emit(ev="started")
    while True:
        batch = c.poll(200)
        for r in batch:
            emit(ev="rec", p=r.partition, o=r.offset)
        if batch and args.process_ms:
            time.sleep(args.process_ms / 1000.0)
        if batch and args.commit_sync:
            c.commit_sync()
            emit(ev="committed")
        if args.stall_after_assign and c.assignment():
            emit(ev="stalling")
            while True:
                time.sleep(1)


if __name__ == "__main__":
    main()

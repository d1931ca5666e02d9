"""One consumer-group member in its own OS process, driven over stdin/stdout (JSON Lines).

`python -m chaos.workloads.member`: the first line is {"props": {...}} (the consumer's config);
each further line is one command, answered by one line:

    {"op": "subscribe", "topics": [...]}        -> {"type": "ok"}
    {"op": "poll", "timeout_ms": N}             -> {"type": "ok", "records": {key: [[offset, v], ...]},
                                                    "assignment": [key, ...], "positions": {key: offset},
                                                    "member_id": "...", "generation_id": N}
    {"op": "commit", "offsets": {key: offset}}  -> {"type": "ok"}
    {"op": "committed", "keys": [...]}          -> {"type": "ok", "offsets": {key: offset or null}}
    {"op": "close"}                             -> {"type": "ok"}, then the process exits (LeaveGroup)

A failure answers {"type": "fail" | "info", "error": NAME} (fail only when it surely did not take
effect). The chaos runner SIGKILLs this process to kill a member as a crash does: no LeaveGroup, no
last commit, the coordinator only learns of it when the session expires.
"""
from __future__ import annotations

import json
import logging
import os
import sys

log = logging.getLogger("chaos.workloads.member")

def _keys(tps) -> list[str]:
    from chaos.workloads import tp_key
    return sorted(tp_key(tp.topic, tp.partition) for tp in tps)


def handle(consumer, cmd: dict) -> dict:
    from chaos.workloads import key_tp, tp_key
    from chaos.workloads.log import records_by_key
    from client import TopicPartition
    from client.common.types import OffsetAndMetadata
    op = cmd.get("op")
    if op == "subscribe":
        consumer.subscribe(list(cmd["topics"]))
        return {"type": "ok"}
    if op == "poll":
        records = consumer.poll(int(cmd.get("timeout_ms", 300)))
        assigned = consumer.assignment()
        meta = consumer.group_metadata()
        return {"type": "ok", "records": records_by_key(records), "assignment": _keys(assigned),
                "positions": {tp_key(tp.topic, tp.partition): off for tp, off in consumer._positions.items()
                              if tp in assigned},
                "member_id": meta.member_id, "generation_id": meta.generation_id}
    if op == "commit":
        consumer.commit_sync({TopicPartition(*key_tp(k)): OffsetAndMetadata(o) for k, o in cmd["offsets"].items()},
                             timeout=float(cmd.get("timeout_s", 10.0)))
        return {"type": "ok"}
    if op == "committed":
        got = consumer.committed([TopicPartition(*key_tp(k)) for k in cmd["keys"]], timeout=10.0)
        return {"type": "ok", "offsets": {tp_key(tp.topic, tp.partition): (om.offset if om is not None else None)
                                          for tp, om in got.items()}}
    raise ValueError(f"unknown member command {op!r}")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s member %(threadName)s %(name)s: %(message)s")
    from chaos.workloads.log import error_name
    from client import Consumer
    from client.common import errors
    first = sys.stdin.readline()
    if not first:
        return
    consumer = Consumer(json.loads(first)["props"])

    def reply(msg: dict) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    reply({"type": "ok", "ready": True})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("op") == "close":
            try:
                consumer.close()
            finally:
                reply({"type": "ok"})
            return
        try:
            reply(handle(consumer, cmd))
        except errors.KafkaError as e:
            reply({"type": "fail" if e.definite else "info", "error": e.name})
        except Exception as e:  # unknown outcome, reported to the runner
            log.exception("member command %s failed", cmd.get("op"))
            reply({"type": "info", "error": error_name(e)})


if __name__ == "__main__":
    main()
    # stdin closed (the runner is gone) or closed politely: exit now, whatever client threads remain
    sys.stdout.flush()
    os._exit(0)

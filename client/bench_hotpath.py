"""Micro-benchmarks of the client's per-record hot paths, network cut out:

    python -m client.bench_hotpath [--runs 5] [--records 100000] [--json]

- send: `Producer.send` per record (sticky keyless and keyed), with a producer whose sender thread
  does not run: partitioning, accumulator append, future creation.
- build: `BatchBuilder` try_append + build per record (100-byte values, 16 KB batches).
- sender: draining, building and completing the batches send() filled (the sender's per-record share).
- decode: a 1 MB fetch response of 100-byte records in 16 KB batches into ConsumerRecords
  (`Consumer._decode`, CRC checked), and `records.decode_records` alone.

Figures are medians over runs, in µs of this thread's CPU time per record (`--wall` for wall time).
The machine is shared: quote them with `uptime`.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import time

from client.common import records
from client.common.types import PartitionInfo, TopicPartition

TOPIC = "bench"
PARTITIONS = 3
VALUE = b"x" * 100
# The calling thread's CPU time: on this shared 2-core machine wall time mostly measures the
# other processes; CPU time is what the hot path itself costs (caches still suffer under load).
_now = time.thread_time


class _NoNetProducer:
    """A real Producer whose sender thread returns at once and whose metadata is filled in by hand."""

    def __new__(cls, **props):
        from client.producer import Producer

        class P(Producer):
            def _run(self):
                return

        cfg = {"bootstrap.servers": "127.0.0.1:1", "batch.size": 16384, "linger.ms": 5, "acks": "all",
               "buffer.memory": 1 << 30}
        cfg.update(props)
        p = P(cfg)
        p.metadata.cluster.partitions[TOPIC] = [
            PartitionInfo(TOPIC, i, 1, (1, 2, 3), (1, 2, 3)) for i in range(PARTITIONS)]
        return p


def _reset(p) -> list:
    """Takes every batch out of the accumulator (what the sender would drain)."""
    with p._lock:
        out = [b for dq in p.accumulator.batches.values() for b in dq]
        for dq in p.accumulator.batches.values():
            dq.clear()
        for b in out:
            p.accumulator.complete(b)
    return out


def bench_send(n: int, keyed: bool) -> float:
    p = _NoNetProducer()
    try:
        send = p.send
        keys = [b"key-%d" % i for i in range(1000)] if keyed else None
        gc.collect()
        t0 = _now()
        if keyed:
            for i in range(n):
                send(TOPIC, VALUE, key=keys[i % 1000])
        else:
            for _ in range(n):
                send(TOPIC, VALUE)
        dt = _now() - t0
        _reset(p)
        return dt / n * 1e6
    finally:
        p._closed = True
        p.pool.close()


def bench_sender_side(n: int) -> float:
    """Per record: build each batch (as _send_request does) and complete it (futures resolved)."""
    p = _NoNetProducer()
    try:
        for _ in range(n):
            p.send(TOPIC, VALUE)
        batches = _reset(p)
        gc.collect()
        t0 = _now()
        for b in batches:
            b.builder.set_producer_state(7, 0, 0)
            b.builder.build()
            b.attempts += 1
            p.metrics_.record_sent(b)
            b.result.complete(0, None)
        dt = _now() - t0
        return dt / n * 1e6
    finally:
        p._closed = True
        p.pool.close()


def bench_build(n: int) -> float:
    ts = int(time.time() * 1000)
    gc.collect()
    t0 = _now()
    done = 0
    while done < n:
        b = records.BatchBuilder("none", batch_size=16384)
        append = b.try_append
        while append(ts, None, VALUE, None):
            done += 1
        b.build()
    dt = _now() - t0
    return dt / done * 1e6


def fetch_response(total_bytes: int = 1 << 20) -> tuple[bytes, int]:
    """Concatenated 16 KB batches of 100-byte records with broker-assigned offsets."""
    ts = int(time.time() * 1000)
    out, size, offset = [], 0, 0
    while size < total_bytes:
        b = records.BatchBuilder("none", batch_size=16384)
        b.set_producer_state(1000, 0, offset)
        i = 0
        while b.try_append(ts + i, None, VALUE, None):
            i += 1
        raw = records.set_offset_and_epoch(b.build(), offset, 3)
        out.append(raw)
        size += len(raw)
        offset += b.record_count
    return b"".join(out), offset


def bench_decode(data: bytes, count: int, consumer: bool) -> float:
    gc.collect()
    if consumer:
        from client.consumer import Consumer
        c = Consumer({"bootstrap.servers": "127.0.0.1:1"})
        try:
            tp = TopicPartition(TOPIC, 0)
            pause = getattr(records, "gc_paused", contextlib.nullcontext)  # as Consumer._fetch does
            t0 = _now()
            with pause():
                recs = c._decode(tp, data, 0, [])
            dt = _now() - t0
        finally:
            c.close()
    else:
        t0 = _now()
        got = 0
        for _h, raw in records.iter_batches(data):
            got += len(records.decode_records(raw))
        dt = _now() - t0
        recs = range(got)
    assert len(recs) == count, (len(recs), count)
    return dt / count * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated subset of the benchmark names")
    ap.add_argument("--wall", action="store_true", help="wall-clock time instead of thread CPU time")
    args = ap.parse_args()
    if args.wall:
        global _now
        _now = time.perf_counter
    data, count = fetch_response()
    benches = {
        "send keyless (sticky)": lambda: bench_send(args.records, keyed=False),
        "send keyed": lambda: bench_send(args.records, keyed=True),
        "sender: build + complete": lambda: bench_sender_side(args.records),
        "BatchBuilder append + build": lambda: bench_build(args.records),
        "decode_records (1 MB fetch)": lambda: bench_decode(data, count, consumer=False),
        "Consumer._decode -> ConsumerRecord (1 MB fetch)": lambda: bench_decode(data, count, consumer=True),
    }
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    results = {}
    for name, fn in benches.items():
        if only and not any(o in name for o in only):
            continue
        fn()  # warm-up
        runs = [fn() for _ in range(args.runs)]
        med = statistics.median(runs)
        results[name] = {"us_per_record_median": med, "runs": runs}
        if not args.json:
            print(f"{name:<50} {med:7.3f} µs/record  ({1e6 / med:>10,.0f} records/s)  "
                  f"runs: {' '.join(f'{r:.2f}' for r in runs)}", flush=True)
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"load": load, "results": results}, indent=1))
    else:
        print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()

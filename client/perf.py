"""`brokerlab perf produce | consume`: Kafka's kafka-producer-perf-test and kafka-consumer-perf-test.

Output lines follow Kafka's tools so scripts written for them keep working.
Latency is measured per record, from just before send() to the completion
of its batch; the tool registers one callback per batch (not per record)
so the measuring costs the producer little.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import random
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from client.cli import DEFAULT_BOOTSTRAP, parse_props

REPORT_INTERVAL_MS = 5000
CONSUMER_HEADER = ("start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, "
                   "rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec")


class _Greedy(click.Option):
    """An option that takes every following word up to the next option, as Kafka's
    `--producer-props a=1 b=2` does; it may also be repeated."""

    def add_to_parser(self, parser, ctx):
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            opt = parser._long_opt.get(name) or parser._short_opt.get(name)
            if opt is None:
                continue
            orig = opt.process

            def process(value, state, orig=orig):
                words = [value]
                while state.rargs and not state.rargs[0].startswith("-"):
                    words.append(state.rargs.pop(0))
                for w in words:
                    orig(w, state)
            opt.process = process


def _percentile(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return 0.0
    i = min(len(sorted_vals) - 1, max(0, math.ceil(p * len(sorted_vals)) - 1))
    return sorted_vals[i]


class ProduceStats:
    """Kafka's ProducerPerformance.Stats: totals, a reporting window, and every latency (ms)."""

    def __init__(self, record_size: int, interval_ms: int, echo: Callable[[str], None]):
        self.lock = threading.Lock()
        self.record_size = record_size
        self.interval_ms = interval_ms
        self.echo = echo
        self.start = time.monotonic()
        self.count = 0
        self.errors = 0
        self.first_error: BaseException | None = None
        self.latency_sum = 0.0
        self.latency_max = 0.0
        self.latencies: list[float] = []
        self.w_start, self.w_count, self.w_sum, self.w_max = self.start, 0, 0.0, 0.0

    def on_batch(self, done: float, sent_times: list[float], error: BaseException | None) -> None:
        if error is not None:
            with self.lock:
                self.errors += len(sent_times)
                self.first_error = self.first_error or error
            return
        lat = [(done - t) * 1000.0 for t in sent_times]
        s, mx = sum(lat), max(lat)
        line = None
        with self.lock:
            self.latencies.extend(lat)
            self.count += len(lat)
            self.latency_sum += s
            self.latency_max = max(self.latency_max, mx)
            self.w_count += len(lat)
            self.w_sum += s
            self.w_max = max(self.w_max, mx)
            if (done - self.w_start) * 1000.0 >= self.interval_ms:
                line = self._window_line(done)
        if line:
            self.echo(line)

    def _window_line(self, now: float) -> str:
        secs = max(now - self.w_start, 1e-9)
        rate = self.w_count / secs
        line = (f"{self.w_count} records sent, {rate:.1f} records/sec "
                f"({rate * self.record_size / 1024 / 1024:.2f} MB/sec), "
                f"{self.w_sum / max(self.w_count, 1):.1f} ms avg latency, {self.w_max:.1f} ms max latency.")
        self.w_start, self.w_count, self.w_sum, self.w_max = now, 0, 0.0, 0.0
        return line

    def summary(self, end: float) -> dict[str, Any]:
        with self.lock:
            lat = sorted(self.latencies)
            secs = max(end - self.start, 1e-9)
            n = self.count
            return {
                "records": n, "errors": self.errors, "elapsed_s": secs,
                "records_per_sec": n / secs, "mb_per_sec": n * self.record_size / secs / 1024 / 1024,
                "latency_avg_ms": self.latency_sum / n if n else 0.0, "latency_max_ms": self.latency_max,
                "p50_ms": _percentile(lat, 0.5), "p95_ms": _percentile(lat, 0.95),
                "p99_ms": _percentile(lat, 0.99), "p999_ms": _percentile(lat, 0.999),
            }


def final_produce_line(s: dict[str, Any]) -> str:
    return (f"{s['records']} records sent, {s['records_per_sec']:.1f} records/sec ({s['mb_per_sec']:.2f} MB/sec), "
            f"{s['latency_avg_ms']:.2f} ms avg latency, {s['latency_max_ms']:.2f} ms max latency, "
            f"{int(s['p50_ms'])} ms 50th, {int(s['p95_ms'])} ms 95th, {int(s['p99_ms'])} ms 99th, "
            f"{int(s['p999_ms'])} ms 99.9th.")


class _BatchTracker:
    """Send times grouped by the batch a record went into; one completion callback per batch."""

    def __init__(self, stats: ProduceStats):
        self.stats = stats
        self.lock = threading.Lock()
        self.pending: dict[Any, list[float]] = {}

    def sent(self, fut, t: float) -> None:
        key = getattr(fut, "_result", fut)  # the batch's shared result; else the record's own future
        with self.lock:
            times = self.pending.get(key)
            if times is not None:
                times.append(t)
                return
            self.pending[key] = [t]
        # Registered after the entry exists: if the batch is already done this runs inline.
        fut.add_done_callback(lambda f, key=key: self._done(f, key))

    def _done(self, fut, key) -> None:
        done = time.perf_counter()
        with self.lock:
            times = self.pending.pop(key, [])
        try:
            err = fut.exception(0)
        except Exception as e:  # noqa: BLE001
            err = e
        if times:
            self.stats.on_batch(done, times, err)


class _Throttler:
    """Kafka's ThroughputThrottler: sleeps when ahead of `per_sec` (negative means no limit)."""

    def __init__(self, per_sec: float, start: float):
        self.per_sec = per_sec
        self.start = start

    def maybe_sleep(self, sent: int, now: float) -> None:
        if self.per_sec <= 0:
            return
        ahead = sent / self.per_sec - (now - self.start)
        if ahead > 0.001:
            time.sleep(ahead)


def run_produce(bootstrap: str | None, topic: str, num_records: int, record_size: int, throughput: float,
                props: dict[str, Any], *, sync: bool = False, transactional_id: str | None = None,
                transaction_duration_ms: int = 3000, interval_ms: int = REPORT_INTERVAL_MS,
                echo: Callable[[str], None] = click.echo, print_metrics: bool = False) -> dict[str, Any]:
    from client.producer import Producer
    cfg = dict(props)
    if bootstrap:
        cfg.setdefault("bootstrap.servers", bootstrap)
    if transactional_id:
        cfg["transactional.id"] = transactional_id
    if "bootstrap.servers" not in cfg:
        raise click.UsageError("set --bootstrap-server or bootstrap.servers in --producer-props")
    rng = random.Random(0)
    payload = bytes(rng.randrange(65, 91) for _ in range(record_size))
    stats = ProduceStats(record_size, interval_ms, echo)
    tracker = _BatchTracker(stats)
    perf_counter = time.perf_counter
    with Producer(cfg) as producer:
        producer.partitions_for(topic)  # metadata first: do not time the topic lookup
        if transactional_id:
            producer.init_transactions()
            producer.begin_transaction()
        start = perf_counter()
        stats.start = stats.w_start = start
        throttle = _Throttler(throughput, start)
        txn_started = start
        send, sent = producer.send, tracker.sent
        for i in range(num_records):
            t = perf_counter()
            fut = send(topic, payload)
            sent(fut, t)
            if sync:
                fut.exception()
            if throughput > 0:
                throttle.maybe_sleep(i + 1, t)
            if transactional_id and (t - txn_started) * 1000 >= transaction_duration_ms:
                producer.commit_transaction()
                producer.begin_transaction()
                txn_started = perf_counter()
        if transactional_id:
            producer.commit_transaction()
        producer.flush()
        end = perf_counter()
        summary = stats.summary(end)
        metrics = producer.metrics()
    echo(final_produce_line(summary))
    if stats.first_error is not None:
        echo(f"{stats.errors} records failed; first error: {stats.first_error}")
    if print_metrics:
        echo(_metrics_table("producer-metrics", metrics))
    summary["metrics"] = metrics
    return summary


def run_produce_confluent(bootstrap: str | None, topic: str, num_records: int, record_size: int, throughput: float,
                          props: dict[str, Any], *, sync: bool = False, interval_ms: int = REPORT_INTERVAL_MS,
                          echo: Callable[[str], None] = click.echo) -> dict[str, Any]:
    """The same workload through confluent-kafka (librdkafka) against the Kafka-protocol listener:
    props are librdkafka's (Kafka's dotted names); latency is per record, send to delivery report."""
    try:
        from confluent_kafka import KafkaException, Producer
    except ImportError:
        raise click.UsageError("--client confluent-kafka needs the confluent-kafka package "
                               "(pip install 'brokerlab[dev]')") from None
    cfg = {str(k): v for k, v in props.items()}
    if bootstrap:
        cfg.setdefault("bootstrap.servers", bootstrap)
    if "bootstrap.servers" not in cfg:
        raise click.UsageError("set --bootstrap-server (the Kafka listener) or bootstrap.servers in --producer-props")
    cfg.setdefault("queue.buffering.max.messages", 1_000_000)
    rng = random.Random(0)
    payload = bytes(rng.randrange(65, 91) for _ in range(record_size))
    stats = ProduceStats(record_size, interval_ms, echo)
    perf_counter = time.perf_counter
    # Delivery reports only collect (cheap, on poll's thread); they reach the stats once per poll, as
    # the brokerlab client's tool registers one callback per batch, so measuring costs the producer little.
    lat_s: list[float] = []
    failed: list = []

    def report(err, msg):
        if err is None:
            lat_s.append(msg.latency())  # librdkafka's own produce()-to-report time, in seconds
        else:
            failed.append(KafkaException(err))

    def drain() -> None:
        done = perf_counter()
        if lat_s:
            sent = [done - (x or 0.0) for x in lat_s]
            lat_s.clear()
            stats.on_batch(done, sent, None)
        for e in failed:
            stats.on_batch(done, [done], e)
        failed.clear()

    cfg["on_delivery"] = report
    producer = Producer(cfg)
    producer.list_topics(topic, timeout=30)  # metadata first: do not time the topic lookup
    start = perf_counter()
    stats.start = stats.w_start = start
    throttle = _Throttler(throughput, start)
    produce, poll = producer.produce, producer.poll
    for i in range(num_records):
        while True:
            try:
                produce(topic, payload)
                break
            except BufferError:
                poll(0.05)  # the local queue is full: serve delivery reports, then retry
                drain()
        if sync:
            producer.flush()
            drain()
        elif i % 256 == 0:
            poll(0)
            drain()
        if throughput > 0:
            throttle.maybe_sleep(i + 1, perf_counter())
    left = producer.flush(120)
    drain()
    end = perf_counter()
    summary = stats.summary(end)
    echo(final_produce_line(summary))
    if left:
        echo(f"{left} records were still undelivered after 120 s")
        summary["errors"] = summary.get("errors", 0) + left
    if stats.first_error is not None:
        echo(f"{stats.errors} records failed; first error: {stats.first_error}")
    return summary


def _metrics_table(group: str, metrics: dict[str, float]) -> str:
    names = [f"{group}:{k}" for k in sorted(metrics)]
    width = max((len(n) for n in names), default=10)
    lines = [f"{'Metric Name':<{width}}   Value"]
    for name, k in zip(names, sorted(metrics)):
        lines.append(f"{name:<{width}} : {metrics[k]:.3f}")
    return "\n".join(lines)


# -- consumer ------------------------------------------------------------
def _consume_one(bootstrap: str, topic: str, messages: int, group: str | None, props: dict[str, Any],
                 timeout_ms: int, share: tuple[int, int] | None, counter, stop) -> dict[str, Any]:
    """One consumer; `counter`/`stop` are shared between threads or processes (total so far, done)."""
    from client.common.types import TopicPartition
    from client.consumer import Consumer
    cfg = {"bootstrap.servers": bootstrap, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    cfg.update(props)
    if group:
        cfg["group.id"] = group
    start = time.time()
    count = nbytes = 0
    polls: list[float] = []
    rebalance_ms = 0.0
    with Consumer(cfg) as consumer:
        if group:
            consumer.subscribe([topic])
        else:
            parts = sorted(consumer.partitions_for_topic(topic))
            if share is not None:
                parts = parts[share[0]::share[1]]
            consumer.assign([TopicPartition(topic, p) for p in parts])
            consumer.seek_to_beginning()
        last_data = time.monotonic()
        first = True
        while not stop.is_set():
            t0 = time.perf_counter()
            recs = consumer.poll(100)
            t1 = time.perf_counter()
            if first and group and consumer.assignment():
                rebalance_ms = (time.time() - start) * 1000.0
                first = False
            if not recs:
                if (time.monotonic() - last_data) * 1000 >= timeout_ms:
                    break
                continue
            polls.append((t1 - t0) * 1000.0)
            last_data = time.monotonic()
            n = 0
            for r in recs:
                n += 1
                if r.value is not None:
                    nbytes += len(r.value)
                if r.key is not None:
                    nbytes += len(r.key)
            count += n
            if counter.add(n) >= messages:
                stop.set()
        end = time.time()
    return {"start": start, "end": end, "records": count, "bytes": nbytes, "rebalance_ms": rebalance_ms,
            "polls_ms": polls, "timed_out": not stop.is_set()}


class _Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.n = 0

    def add(self, k: int) -> int:
        with self.lock:
            self.n += k
            return self.n


class _ProcCounter:
    def __init__(self, value):
        self.value = value

    def add(self, k: int) -> int:
        with self.value.get_lock():
            self.value.value += k
            return self.value.value


def _worker(args, counter_value, stop, results) -> None:
    try:
        results.put(_consume_one(*args, _ProcCounter(counter_value), stop))
    except BaseException as e:  # noqa: BLE001 - reported by the parent
        results.put({"error": f"{type(e).__name__}: {e}"})


def run_consume(bootstrap: str, topic: str, messages: int, group: str | None, props: dict[str, Any],
                threads: int = 1, processes: int = 0, timeout_ms: int = 10000) -> dict[str, Any]:
    """Runs 1, `threads` or `processes` consumers until `messages` records in total; merged figures."""
    n = max(processes, threads, 1)
    if processes:
        ctx = multiprocessing.get_context("spawn")  # gRPC does not survive fork
        value, stop, q = ctx.Value("q", 0), ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_worker, daemon=True, args=(
            (bootstrap, topic, messages, group, props, timeout_ms, None if group else (i, n)), value, stop, q))
            for i in range(n)]
        for p in procs:
            p.start()
        parts = [q.get() for _ in procs]
        for p in procs:
            p.join(5)
    else:
        counter, stop = _Counter(), threading.Event()
        parts = [None] * n

        def run(i):
            try:
                parts[i] = _consume_one(bootstrap, topic, messages, group, props, timeout_ms,
                                        None if group else (i, n), counter, stop)
            except BaseException as e:  # noqa: BLE001
                parts[i] = {"error": f"{type(e).__name__}: {e}"}
        ts = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    errs = [p["error"] for p in parts if "error" in p]
    if errs:
        raise RuntimeError(f"consumer failed: {errs[0]}")
    return _merge(parts)


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    start = min(p["start"] for p in parts)
    end = max(p["end"] for p in parts)
    records = sum(p["records"] for p in parts)
    nbytes = sum(p["bytes"] for p in parts)
    # The group fetches from the first assignment on: later joiners must not shrink the fetch window
    # (with max(), one member assigned late made the others' records look fetched in no time).
    rebalance_ms = min(p["rebalance_ms"] for p in parts)
    polls = sorted(x for p in parts for x in p["polls_ms"])
    elapsed = max(end - start, 1e-9)
    fetch_s = max(elapsed - rebalance_ms / 1000.0, 1e-9)
    mb = nbytes / 1024 / 1024
    return {"start": start, "end": end, "records": records, "mb": mb, "mb_per_sec": mb / elapsed,
            "records_per_sec": records / elapsed, "rebalance_ms": rebalance_ms, "fetch_ms": fetch_s * 1000,
            "fetch_mb_per_sec": mb / fetch_s, "fetch_records_per_sec": records / fetch_s,
            "poll_p99_ms": _percentile(polls, 0.99), "consumers": len(parts),
            "timed_out": all(p["timed_out"] for p in parts)}


def _kafka_time(ts: float) -> str:
    d = datetime.fromtimestamp(ts)
    return d.strftime("%Y-%m-%d %H:%M:%S:") + f"{d.microsecond // 1000:03d}"


def consumer_row(s: dict[str, Any]) -> str:
    return (f"{_kafka_time(s['start'])}, {_kafka_time(s['end'])}, {s['mb']:.4f}, {s['mb_per_sec']:.4f}, "
            f"{s['records']}, {s['records_per_sec']:.4f}, {int(s['rebalance_ms'])}, {int(s['fetch_ms'])}, "
            f"{s['fetch_mb_per_sec']:.4f}, {s['fetch_records_per_sec']:.4f}")


# -- CLI -----------------------------------------------------------------
@click.group("perf")
def perf() -> None:
    """Load generators shaped like Kafka's kafka-producer-perf-test and kafka-consumer-perf-test."""


@perf.command("produce")
@click.option("--bootstrap-server", "bootstrap", envvar="BROKERLAB_BOOTSTRAP", default=None,
              help=f"host:port[,...] (else bootstrap.servers in --producer-props; default {DEFAULT_BOOTSTRAP})")
@click.option("--topic", required=True)
@click.option("--num-records", type=click.IntRange(min=1), required=True)
@click.option("--record-size", type=click.IntRange(min=1), required=True, help="bytes per record value")
@click.option("--throughput", type=float, required=True, help="records/s to aim at; -1 for no limit")
@click.option("--producer-props", "producer_props", cls=_Greedy, multiple=True, metavar="KEY=VALUE ...")
@click.option("--print-metrics", is_flag=True, help="Dump the producer metrics at the end.")
@click.option("--sync", is_flag=True, help="Wait for each record's acknowledgement before the next send.")
@click.option("--transactional-id", default=None, help="Send in transactions under this transactional.id.")
@click.option("--transaction-duration-ms", type=click.IntRange(min=1), default=3000, show_default=True)
@click.option("--reporting-interval", type=click.IntRange(min=1), default=REPORT_INTERVAL_MS, show_default=True,
              help="ms between progress lines")
@click.option("--result-json", type=click.Path(dir_okay=False), default=None, hidden=True)
@click.option("--client", type=click.Choice(["brokerlab", "confluent-kafka"]), default="brokerlab", show_default=True,
              help="brokerlab's own client over gRPC, or confluent-kafka (librdkafka) over the Kafka protocol "
                   "(then --bootstrap-server is a Kafka listener, e.g. 127.0.0.1:9092)")
def produce_cmd(bootstrap, topic, num_records, record_size, throughput, producer_props, print_metrics, sync,
                transactional_id, transaction_duration_ms, reporting_interval, result_json, client) -> None:
    """Send --num-records records of --record-size bytes and print Kafka's throughput/latency lines."""
    props = parse_props(producer_props, "--producer-props")
    if client == "confluent-kafka":
        if transactional_id or print_metrics:
            raise click.UsageError("--transactional-id and --print-metrics are for --client brokerlab")
        s = run_produce_confluent(bootstrap, topic, num_records, record_size, throughput, props, sync=sync,
                                  interval_ms=reporting_interval)
    else:
        if not bootstrap and "bootstrap.servers" not in props:
            bootstrap = DEFAULT_BOOTSTRAP
        s = run_produce(bootstrap, topic, num_records, record_size, throughput, props, sync=sync,
                        transactional_id=transactional_id, transaction_duration_ms=transaction_duration_ms,
                        interval_ms=reporting_interval, print_metrics=print_metrics)
    if result_json:
        with open(result_json, "w") as f:
            json.dump(s, f)
    if s["errors"]:
        sys.exit(1)


@perf.command("consume")
@click.option("--bootstrap-server", "bootstrap", envvar="BROKERLAB_BOOTSTRAP", default=DEFAULT_BOOTSTRAP,
              show_default=True)
@click.option("--topic", required=True)
@click.option("--messages", type=click.IntRange(min=1), required=True, help="records to consume in total")
@click.option("--group", default=None, help="Consume as members of this group (subscribe); else assign.")
@click.option("--consumer-props", "consumer_props", cls=_Greedy, multiple=True, metavar="KEY=VALUE ...")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="consumers in threads of this process")
@click.option("--processes", type=click.IntRange(min=1), default=None,
              help="consumers in separate processes (no shared GIL)")
@click.option("--timeout", "timeout_ms", type=click.IntRange(min=1), default=10000, show_default=True,
              help="ms without a record after which to give up")
@click.option("--hide-header", is_flag=True)
@click.option("--result-json", type=click.Path(dir_okay=False), default=None, hidden=True)
def consume_cmd(bootstrap, topic, messages, group, consumer_props, threads, processes, timeout_ms, hide_header,
                result_json) -> None:
    """Consume --messages records and print kafka-consumer-perf-test's columns."""
    if processes and threads > 1:
        raise click.UsageError("--threads and --processes are exclusive")
    props = parse_props(consumer_props, "--consumer-props")
    s = run_consume(bootstrap, topic, messages, group, props, threads=threads, processes=processes or 0,
                    timeout_ms=timeout_ms)
    if s["records"] < messages:
        click.echo(f"WARNING: Exiting before consuming the expected number of messages: timeout "
                   f"({timeout_ms} ms) exceeded. You can use the --timeout option to increase the timeout.")
    if not hide_header:
        click.echo(CONSUMER_HEADER)
    click.echo(consumer_row(s))
    if result_json:
        with open(result_json, "w") as f:
            json.dump(s, f)

"""Client metrics with Kafka's names (a small sliding-window rate and average keeper)."""
from __future__ import annotations

import threading
from collections import deque

WINDOW_MS = 30_000


class _Rate:
    def __init__(self):
        self.events: deque = deque()  # (t_ms, amount)
        self.total = 0.0

    def add(self, now_ms: int, amount: float = 1.0) -> None:
        self.events.append((now_ms, amount))
        self.total += amount
        self._trim(now_ms)

    def _trim(self, now_ms: int) -> None:
        while self.events and now_ms - self.events[0][0] > WINDOW_MS:
            self.events.popleft()

    def rate(self, now_ms: int) -> float:
        self._trim(now_ms)
        if not self.events:
            return 0.0
        span = max(now_ms - self.events[0][0], 1000)
        return sum(a for _, a in self.events) * 1000.0 / span


class _Avg:
    def __init__(self):
        self.sum = 0.0
        self.n = 0
        self.max = 0.0

    def add(self, v: float) -> None:
        self.sum += v
        self.n += 1
        self.max = max(self.max, v)

    @property
    def avg(self) -> float:
        return self.sum / self.n if self.n else 0.0


class ProducerMetrics:
    def __init__(self, clock):
        self.clock = clock
        self.lock = threading.Lock()
        self.send = _Rate()
        self.retry = _Rate()
        self.error = _Rate()
        self.batch_size = _Avg()
        self.compression = _Avg()
        self.latency = _Avg()
        self.records_per_request = _Avg()
        self.buffer_wait_ms = 0.0

    def record_request(self, batches) -> None:
        with self.lock:
            self.records_per_request.add(sum(b.record_count for b in batches))

    def record_sent(self, batch) -> None:
        now = self.clock.monotonic_ms()
        b = batch.builder
        with self.lock:
            self.send.add(now, batch.record_count)
            if b.compressed_size:
                self.batch_size.add(b.compressed_size)
                if b.uncompressed_size:
                    self.compression.add(b.compressed_size / b.uncompressed_size)

    def record_retry(self, n: int) -> None:
        with self.lock:
            self.retry.add(self.clock.monotonic_ms(), n)

    def record_error(self, n: int) -> None:
        with self.lock:
            self.error.add(self.clock.monotonic_ms(), n)

    def record_latency(self, ms: float) -> None:
        with self.lock:
            self.latency.add(ms)

    def record_buffer_wait(self, ms: float) -> None:
        with self.lock:
            self.buffer_wait_ms += ms

    def snapshot(self, buffer_available: int) -> dict[str, float]:
        now = self.clock.monotonic_ms()
        with self.lock:
            return {
                "record-send-rate": self.send.rate(now),
                "record-send-total": self.send.total,
                "record-retry-rate": self.retry.rate(now),
                "record-retry-total": self.retry.total,
                "record-error-rate": self.error.rate(now),
                "record-error-total": self.error.total,
                "batch-size-avg": self.batch_size.avg,
                "batch-size-max": self.batch_size.max,
                "compression-rate-avg": self.compression.avg if self.compression.n else 1.0,
                "request-latency-avg": self.latency.avg,
                "request-latency-max": self.latency.max,
                "records-per-request-avg": self.records_per_request.avg,
                "buffer-available-bytes": float(buffer_available),
                "bufferpool-wait-time": self.buffer_wait_ms,
            }


class ConsumerMetrics:
    def __init__(self, clock):
        self.clock = clock
        self.lock = threading.Lock()
        self.consumed = _Rate()
        self.fetches = _Rate()
        self.polls = _Rate()
        self.lag: dict = {}

    def record_poll(self, n_records: int) -> None:
        now = self.clock.monotonic_ms()
        with self.lock:
            self.polls.add(now)
            if n_records:
                self.consumed.add(now, n_records)

    def record_fetch(self) -> None:
        with self.lock:
            self.fetches.add(self.clock.monotonic_ms())

    def record_lag(self, tp, lag: int) -> None:
        with self.lock:
            self.lag[tp] = lag

    def forget(self, tps) -> None:
        with self.lock:
            for tp in tps:
                self.lag.pop(tp, None)

    def snapshot(self) -> dict[str, float]:
        now = self.clock.monotonic_ms()
        with self.lock:
            return {
                "records-lag-max": float(max(self.lag.values(), default=0)),
                "records-consumed-rate": self.consumed.rate(now),
                "records-consumed-total": self.consumed.total,
                "fetch-rate": self.fetches.rate(now),
                "poll-rate": self.polls.rate(now),
            }

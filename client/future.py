"""Send futures as in Kafka's client: one ProduceRequestResult per batch, and per record a light
FutureRecordMetadata that reads it (a concurrent.futures.Future per record costs a lock and a
condition each, which was a quarter of send()'s time).

Callbacks run on the thread that completes the batch (the sender), in the order they were
added, so callbacks of records sent to one partition run in send order, as Kafka promises.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from client.common import errors
from client.common.types import RecordMetadata, TopicPartition

log = logging.getLogger(__name__)


class ProduceRequestResult:
    """The outcome of one batch: base offset or error, set once."""

    __slots__ = ("_callbacks", "_event", "_lock", "base_offset", "error", "tp")

    def __init__(self, tp: TopicPartition):
        self.tp = tp
        self.base_offset = -1
        self.error: BaseException | None = None
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list = []   # (future, fn), guarded by _lock until done

    def done(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None) -> bool:
        return self._event.wait(timeout)

    def complete(self, base_offset: int, error: BaseException | None) -> bool:
        """Sets the outcome and runs the callbacks; False if it was already set."""
        with self._lock:
            if self._event.is_set():
                return False
            self.base_offset, self.error = base_offset, error
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for fut, fn in callbacks:
            _run(fn, fut)
        return True

    def add_callback(self, fut: FutureRecordMetadata, fn: Callable) -> bool:
        """False when already done (the caller runs fn itself)."""
        with self._lock:
            if self._event.is_set():
                return False
            self._callbacks.append((fut, fn))
            return True


def _run(fn, fut) -> None:
    try:
        fn(fut)
    except Exception:
        log.exception("producer callback raised")


class FutureRecordMetadata:
    """The future of one record: get/result/exception/done/add_done_callback, plus kafka-python's
    add_callback/add_errback."""

    __slots__ = ("_index", "_key_size", "_result", "_timestamp_ms", "_value_size")

    def __init__(self, result: ProduceRequestResult, index: int, timestamp_ms: int, key_size: int,
                 value_size: int):
        self._result = result
        self._index = index
        self._timestamp_ms = timestamp_ms
        self._key_size = key_size
        self._value_size = value_size

    def done(self) -> bool:
        return self._result.done()

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return not self.done()

    def _wait(self, timeout: float | None) -> None:
        if not self._result.wait(timeout):
            raise TimeoutError(f"no result within {timeout} s")

    def _metadata(self) -> RecordMetadata:
        r = self._result
        off = r.base_offset + self._index if r.base_offset >= 0 else -1
        return RecordMetadata(r.tp.topic, r.tp.partition, off, self._timestamp_ms, self._key_size,
                              self._value_size)

    def result(self, timeout: float | None = None) -> RecordMetadata:
        self._wait(timeout)
        if self._result.error is not None:
            raise self._result.error
        return self._metadata()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return self._result.error

    def get(self, timeout: float | None = None) -> RecordMetadata:
        try:
            return self.result(timeout)
        except TimeoutError:
            raise errors.KafkaTimeoutError(f"no result within {timeout} s") from None

    def add_done_callback(self, fn: Callable[[FutureRecordMetadata], None]) -> None:
        if not self._result.add_callback(self, fn):
            _run(fn, self)

    def add_callback(self, fn: Callable, *args, **kwargs) -> FutureRecordMetadata:
        def cb(f):
            if f._result.error is None:
                fn(*args, f._metadata(), **kwargs)
        self.add_done_callback(cb)
        return self

    def add_errback(self, fn: Callable, *args, **kwargs) -> FutureRecordMetadata:
        def cb(f):
            if f._result.error is not None:
                fn(*args, f._result.error, **kwargs)
        self.add_done_callback(cb)
        return self

    def add_both(self, callback: Callable[[RecordMetadata | None, BaseException | None], None]) -> None:
        """Kafka's Callback.onCompletion(metadata, exception) shape."""
        def cb(f):
            err = f._result.error
            callback(None if err is not None else f._metadata(), err)
        self.add_done_callback(cb)

"""RocksDB adapter: one database per node (rocksdict, raw mode).

Key layout (ordered so a fetch is one seek):
  b"L" topic \\0 partition(>I) base_offset(>Q)  -> one RecordBatch v2, as stored
  b"M" topic \\0 partition(>I) name              -> small JSON checkpoint (hw, epochs, ...)
  b"K" name                                     -> node-level JSON (coordinator state, ids)
Writes go through WriteBatch; the WAL is on. fsync is optional and
group-committed by a background thread (rocksdict's put holds the GIL while
it syncs, which would stall the whole node).
"""
from __future__ import annotations

import json
import logging
import struct
import threading
from collections.abc import Iterator
from typing import Any

from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from client.common import records

log = logging.getLogger(__name__)

_PART = struct.Struct(">I")
_OFF = struct.Struct(">Q")
ITER_CHUNK = 256  # batches read per hold of the store lock


def _tp_prefix(kind: bytes, topic: str, partition: int) -> bytes:
    return kind + topic.encode() + b"\x00" + _PART.pack(partition)


def _seek_batch(it, prefix: bytes, offset: int) -> None:
    """Positions `it` on the batch that may hold `offset` (the last one starting at or before it)."""
    it.seek_for_prev(prefix + _OFF.pack(offset))
    if not it.valid() or not it.key().startswith(prefix):
        it.seek(prefix)


def _log_key(topic: str, partition: int, base_offset: int) -> bytes:
    return _tp_prefix(b"L", topic, partition) + _OFF.pack(base_offset)


class Store:
    def __init__(self, path: str, sync: bool = False):
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        self._db = Rdict(path, options=opts)
        self._wo = WriteOptions()
        self._sync = sync
        self._lock = threading.Lock()  # serialises iterator use with close()
        self._closed = False
        self._sync_wanted = threading.Event()
        if sync:
            threading.Thread(target=self._group_commit, name="store-fsync", daemon=True).start()

    # -- generic ---------------------------------------------------------
    def get_json(self, name: str, default: Any = None) -> Any:
        raw = self._db.get(b"K" + name.encode())
        return default if raw is None else json.loads(raw)

    def put_json(self, name: str, value: Any) -> None:
        self.write([(b"K" + name.encode(), json.dumps(value).encode())])

    def write(self, puts: list[tuple[bytes, bytes]], deletes: list[bytes] = (),
              delete_ranges: list[tuple[bytes, bytes]] = ()) -> None:
        """One atomic WriteBatch: deletes first, then puts."""
        wb = WriteBatch(raw_mode=True)
        for begin, end in delete_ranges:
            wb.delete_range(begin, end)
        for k in deletes:
            wb.delete(k)
        for k, v in puts:
            wb.put(k, v)
        self._db.write(wb, self._wo)
        if self._sync:
            self._sync_wanted.set()

    def _group_commit(self) -> None:
        while not self._closed:
            if self._sync_wanted.wait(0.5):
                self._sync_wanted.clear()
                try:
                    self._db.flush_wal(True)
                except Exception:  # noqa: BLE001 - rocksdict raises a plain Exception once closed underneath us
                    return

    # -- partition logs --------------------------------------------------
    def append_puts(self, topic: str, partition: int, base_offset: int, batch: bytes) -> tuple[bytes, bytes]:
        return _log_key(topic, partition, base_offset), batch

    def meta_put(self, topic: str, partition: int, name: str, value: Any) -> tuple[bytes, bytes]:
        return _tp_prefix(b"M", topic, partition) + name.encode(), json.dumps(value).encode()

    def get_meta(self, topic: str, partition: int, name: str, default: Any = None) -> Any:
        raw = self._db.get(_tp_prefix(b"M", topic, partition) + name.encode())
        return default if raw is None else json.loads(raw)

    def read(self, topic: str, partition: int, offset: int, max_bytes: int, upto: int) -> bytes:
        """Batches from the one holding `offset`, stopping before `upto`; at least one batch."""
        prefix = _tp_prefix(b"L", topic, partition)
        out: list[bytes] = []
        size = 0
        with self._lock:
            it = self._db.iter()
            try:
                _seek_batch(it, prefix, offset)
                while it.valid():
                    key = it.key()
                    if not key.startswith(prefix):
                        break
                    base = _OFF.unpack_from(key, len(prefix))[0]
                    if base >= upto:
                        break
                    value = it.value()
                    h = records.read_header(value)
                    if h.last_offset >= offset:
                        if out and size + len(value) > max_bytes:
                            break
                        out.append(value)
                        size += len(value)
                        if size >= max_bytes:
                            break
                    it.next()
            finally:
                del it
        return b"".join(out)

    def iter_batches(self, topic: str, partition: int, start: int = 0) -> Iterator[bytes]:
        """Batches with a base offset >= `start`, in order, read `ITER_CHUNK` at a time.

        The store-wide lock is held per chunk, never for a whole partition: a scan of a long log
        (a producer-state rebuild, ListOffsets by timestamp, the aborted index) must not stall
        every fetch and append of the node. Batches appended during the scan may or may not be seen.
        """
        prefix = _tp_prefix(b"L", topic, partition)
        key = prefix + _OFF.pack(start)
        while True:
            chunk: list[bytes] = []
            with self._lock:
                if self._closed:
                    raise RuntimeError("store closed")
                it = self._db.iter()
                try:
                    it.seek(key)
                    while it.valid() and len(chunk) < ITER_CHUNK:
                        k = it.key()
                        if not k.startswith(prefix):
                            break
                        chunk.append(it.value())
                        key = k + b"\x00"  # the next key after this one
                        it.next()
                finally:
                    del it
            yield from chunk
            if len(chunk) < ITER_CHUNK:
                return

    def last_batch(self, topic: str, partition: int) -> bytes | None:
        prefix = _tp_prefix(b"L", topic, partition)
        with self._lock:
            it = self._db.iter()
            try:
                it.seek_for_prev(prefix + b"\xff" * 8)
                if it.valid() and it.key().startswith(prefix):
                    return it.value()
                return None
            finally:
                del it

    def first_batch(self, topic: str, partition: int) -> bytes | None:
        prefix = _tp_prefix(b"L", topic, partition)
        with self._lock:
            it = self._db.iter()
            try:
                it.seek(prefix)
                if it.valid() and it.key().startswith(prefix):
                    return it.value()
                return None
            finally:
                del it

    def truncation(self, topic: str, partition: int, offset: int) -> tuple[int, tuple[bytes, bytes]]:
        """Where a truncation to `offset` really ends, and the key range it deletes.

        Kafka truncates whole batches: the new end is the base of the batch holding `offset`.
        One seek, not a scan: every batch from there on is one key range.
        """
        prefix = _tp_prefix(b"L", topic, partition)
        new_end = offset
        with self._lock:
            it = self._db.iter()
            try:
                it.seek_for_prev(prefix + _OFF.pack(offset))
                if it.valid() and it.key().startswith(prefix):
                    h = records.read_header(it.value())
                    if h.last_offset >= offset:
                        new_end = h.base_offset
            finally:
                del it
        return new_end, (prefix + _OFF.pack(new_end), prefix + b"\xff" * 8)

    def delete_partition(self, topic: str, partition: int) -> None:
        for kind in (b"L", b"M"):
            prefix = _tp_prefix(kind, topic, partition)
            self._db.delete_range(prefix, prefix + b"\xff" * 16)

    def partitions(self) -> list[tuple[str, int]]:
        """Every topic-partition with a checkpoint or a batch on this node."""
        found = set()
        with self._lock:
            it = self._db.iter()
            try:
                for kind in (b"L", b"M"):
                    it.seek(kind)
                    while it.valid() and it.key()[:1] == kind:
                        key = it.key()
                        nul = key.index(b"\x00", 1)
                        topic = key[1:nul].decode()
                        part = _PART.unpack_from(key, nul + 1)[0]
                        found.add((topic, part))
                        # jump past this partition
                        it.seek(_tp_prefix(kind, topic, part) + b"\xff" * 16)
            finally:
                del it
        return sorted(found)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._db.flush_wal(True)
            except Exception as e:  # noqa: BLE001 - rocksdict's errors are plain Exceptions; close anyway
                log.warning("WAL flush before close failed: %s", e)
            self._db.close()

"""Kafka's RecordBatch v2 (magic 2) codec, byte-compatible with Kafka's log.

Layout (big-endian fixed ints, zigzag varints in records):

    baseOffset int64 | batchLength int32 | partitionLeaderEpoch int32 | magic int8
    | crc uint32 | attributes int16 | lastOffsetDelta int32 | baseTimestamp int64
    | maxTimestamp int64 | producerId int64 | producerEpoch int16 | baseSequence int32
    | recordsCount int32 | records...

The CRC-32C covers attributes..end, so the broker can rewrite baseOffset and
partitionLeaderEpoch (`set_offset_and_epoch`) without recomputing it.

Checking is split as in Kafka: `read_header` and `iter_batches` only frame;
`validate` checks magic, length and CRC; `decode_records` checks the record
structure (not the CRC: call `validate` first when the bytes are untrusted).
"""
from __future__ import annotations

import gc
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import cramjam
import crc32c as _crc32c
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatch as _CBatch
from aiokafka.record.default_records import DefaultRecordBatchBuilder as _CBuilder

from client.common.errors import CorruptMessageError, InvalidRecordError
from client.common.types import ConsumerRecord

COMPRESSION = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
COMPRESSION_NAMES = {v: k for k, v in COMPRESSION.items()}
HEADER_SIZE = 61
MAGIC = 2
# Bytes of the header counted in batchLength (everything after the length field).
_LENGTH_OFFSET = 12
_MIN_BATCH_LENGTH = HEADER_SIZE - _LENGTH_OFFSET
_CRC_START = 21  # attributes onwards
_MAGIC_OFFSET = 16

ATTR_COMPRESSION_MASK = 0x07
ATTR_TIMESTAMP_TYPE = 0x08
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20

TIMESTAMP_CREATE_TIME = 0
TIMESTAMP_LOG_APPEND_TIME = 1

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_PARTITION_LEADER_EPOCH = -1

_INT32_MAX = 2**31 - 1
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_HEADER = struct.Struct(">qiibIhiqqqhii")
# The part of the header the CRC covers, written by `BatchBuilder.build`.
_HEADER_TAIL = struct.Struct(">hiqqqhii")
_PREFIX = struct.Struct(">qiib")
_Q = struct.Struct(">q")
_I = struct.Struct(">i")
_H = struct.Struct(">h")
_H = struct.Struct(">h")
_U = struct.Struct(">I")
_I_UNPACK = _I.unpack_from

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK = 32 * 1024  # snappy-java's default block size, what Kafka writes
_SNAPPY_FRAMED_MAGIC = b"\xff\x06\x00\x00sNaPpY"


# ---------------------------------------------------------------- varints

def _zigzag_bytes(u: int) -> bytes:
    out = bytearray()
    while u > 0x7F:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


# Lengths, offset deltas and small timestamp deltas hit this table, which keeps
# encoding one dict-free list lookup per field. Index = zigzag value.
_SMALL_LIMIT = 1 << 14
_SMALL = [_zigzag_bytes(u) for u in range(_SMALL_LIMIT)]
_NULL_LENGTH = _SMALL[1]  # zigzag(-1)
_ZERO = _SMALL[0]


def encode_varint(value: int) -> bytes:
    """Zigzag varint (Kafka's varint and varlong share the encoding)."""
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise InvalidRecordError(f"varint out of int64 range: {value}")
    u = (value << 1) ^ (value >> 63)
    if u < _SMALL_LIMIT:
        return _SMALL[u]
    return _zigzag_bytes(u)


def _read_uvarint(buf, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        try:
            b = buf[pos]
        except IndexError:
            raise CorruptMessageError("varint runs past the end of the buffer") from None
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CorruptMessageError("varint longer than 10 bytes")


def decode_varint(buf, pos: int = 0) -> tuple[int, int]:
    """Decode a zigzag varint at `pos`; returns (value, position after it)."""
    u, pos = _read_uvarint(buf, pos)
    return (u >> 1) ^ -(u & 1), pos


# ---------------------------------------------------------------- types

@dataclass(frozen=True, slots=True)
class Record:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


@dataclass(frozen=True, slots=True)
class BatchHeader:
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def compression(self) -> str:
        code = self.attributes & ATTR_COMPRESSION_MASK
        try:
            return COMPRESSION_NAMES[code]
        except KeyError:
            raise CorruptMessageError(f"unknown compression codec {code}") from None

    @property
    def timestamp_type(self) -> int:
        """TIMESTAMP_CREATE_TIME (0) or TIMESTAMP_LOG_APPEND_TIME (1)."""
        return TIMESTAMP_LOG_APPEND_TIME if self.attributes & ATTR_TIMESTAMP_TYPE else TIMESTAMP_CREATE_TIME

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & ATTR_TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & ATTR_CONTROL)

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def size(self) -> int:
        return self.batch_length + _LENGTH_OFFSET

    @property
    def last_sequence(self) -> int:
        """Sequence of the last record, wrapping past int32 max as Kafka does."""
        seq = self.base_sequence
        if seq == NO_SEQUENCE:
            return NO_SEQUENCE
        inc = self.last_offset_delta
        if seq > _INT32_MAX - inc:
            return inc - (_INT32_MAX - seq) - 1
        return seq + inc


# ---------------------------------------------------------------- framing

def read_header(buf, pos: int = 0) -> BatchHeader:
    """Parse the 61-byte header at `pos` without any checks beyond its size."""
    try:
        return BatchHeader(*_HEADER.unpack_from(buf, pos))
    except struct.error:
        raise CorruptMessageError(
            f"batch header truncated: {len(buf) - pos} bytes at position {pos}") from None


def validate(buf, pos: int = 0) -> BatchHeader:
    """Check magic, length and CRC of the batch at `pos`; CorruptMessageError if bad."""
    h = read_header(buf, pos)
    if h.magic != MAGIC:
        raise CorruptMessageError(f"unsupported magic {h.magic} (only 2)")
    if h.batch_length < _MIN_BATCH_LENGTH:
        raise CorruptMessageError(f"batch length {h.batch_length} below the minimum {_MIN_BATCH_LENGTH}")
    end = pos + _LENGTH_OFFSET + h.batch_length
    if end > len(buf):
        raise CorruptMessageError(f"batch truncated: needs {h.size} bytes, has {len(buf) - pos}")
    crc = _crc32c.crc32c(memoryview(buf)[pos + _CRC_START:end])
    if crc != h.crc:
        raise CorruptMessageError(f"CRC mismatch: stored {h.crc:#010x}, computed {crc:#010x}")
    if h.records_count < 0:
        raise CorruptMessageError(f"negative records count {h.records_count}")
    if h.last_offset_delta < 0:
        raise CorruptMessageError(f"negative last offset delta {h.last_offset_delta}")
    if h.attributes & ATTR_COMPRESSION_MASK not in COMPRESSION_NAMES:
        raise CorruptMessageError(f"unknown compression codec {h.attributes & ATTR_COMPRESSION_MASK}")
    return h


def iter_batches(buf) -> Iterator[tuple[BatchHeader, bytes]]:
    """Split a concatenation of batches; a trailing partial batch is ignored, as a
    Kafka fetch response may end mid-batch. Framing only: no CRC check."""
    n = len(buf)
    pos = 0
    while n - pos >= HEADER_SIZE:
        (length,) = _I_UNPACK(buf, pos + 8)
        if length < _MIN_BATCH_LENGTH:
            raise CorruptMessageError(f"batch length {length} at position {pos} below the minimum")
        end = pos + _LENGTH_OFFSET + length
        if end > n:
            return
        h = read_header(buf, pos)
        if h.magic != MAGIC:
            raise CorruptMessageError(f"unsupported magic {h.magic} at position {pos}")
        yield h, bytes(buf[pos:end])
        pos = end


def set_base_offset(batch, base_offset: int) -> bytes:
    """Rewrite baseOffset (outside the CRC)."""
    return b"".join((_Q.pack(base_offset), memoryview(batch)[8:]))


def set_partition_leader_epoch(batch, epoch: int) -> bytes:
    """Rewrite partitionLeaderEpoch (outside the CRC)."""
    mv = memoryview(batch)
    return b"".join((mv[:12], _I.pack(epoch), mv[16:]))


def set_log_append_time(batch, timestamp_ms: int) -> bytes:
    """Kafka's LogAppendTime: the broker marks the batch's timestamp type and sets its maxTimestamp
    to its own clock; every record then reads as that time (see `decode_records`). New CRC."""
    mv = memoryview(batch)
    attributes = _H.unpack_from(mv, _CRC_START)[0] | ATTR_TIMESTAMP_TYPE
    tail = b"".join((_H.pack(attributes), mv[_CRC_START + 2:35], _Q.pack(timestamp_ms), mv[43:]))
    return b"".join((mv[:_CRC_START - 4], _U.pack(_crc32c.crc32c(tail)), tail))


def set_offset_and_epoch(batch, base_offset: int, epoch: int) -> bytes:
    """Both rewrites in one copy: the broker's append path."""
    mv = memoryview(batch)
    return b"".join((_Q.pack(base_offset), mv[8:12], _I.pack(epoch), mv[16:]))


# ---------------------------------------------------------------- compression

def _compress(codec: int, data: bytes) -> bytes:
    if codec == 1:
        return bytes(cramjam.gzip.compress(data))
    if codec == 2:
        # Kafka writes snappy through snappy-java's SnappyOutputStream (xerial framing).
        parts = [_XERIAL_HEADER]
        for i in range(0, len(data), _XERIAL_BLOCK):
            block = bytes(cramjam.snappy.compress_raw(data[i:i + _XERIAL_BLOCK]))
            parts.append(_I.pack(len(block)))
            parts.append(block)
        return b"".join(parts)
    if codec == 3:
        # Kafka's LZ4 reader decodes each block on its own: blocks must be independent.
        c = cramjam.lz4.Compressor(content_checksum=False, block_linked=False)
        c.compress(data)
        return bytes(c.finish())
    if codec == 4:
        return bytes(cramjam.zstd.compress(data))
    raise InvalidRecordError(f"unknown compression codec {codec}")


def _snappy_decompress(data) -> bytes:
    mv = memoryview(data)
    if bytes(mv[:8]) == _XERIAL_MAGIC:
        if len(mv) < 16:
            raise CorruptMessageError("xerial snappy header truncated")
        parts = []
        pos, n = 16, len(mv)
        while pos < n:
            if n - pos < 4:
                raise CorruptMessageError("xerial snappy block length truncated")
            (size,) = _I_UNPACK(mv, pos)
            pos += 4
            if size < 0 or pos + size > n:
                raise CorruptMessageError("xerial snappy block truncated")
            parts.append(bytes(cramjam.snappy.decompress_raw(mv[pos:pos + size])))
            pos += size
        return b"".join(parts)
    if bytes(mv[:10]) == _SNAPPY_FRAMED_MAGIC:
        return bytes(cramjam.snappy.decompress(mv))
    return bytes(cramjam.snappy.decompress_raw(mv))


def _decompress(codec: int, data) -> bytes:
    try:
        if codec == 1:
            return bytes(cramjam.gzip.decompress(data))
        if codec == 2:
            return _snappy_decompress(data)
        if codec == 3:
            return bytes(cramjam.lz4.decompress(data))
        if codec == 4:
            return bytes(cramjam.zstd.decompress(data))
    except cramjam.DecompressionError as e:
        raise CorruptMessageError(f"cannot decompress {COMPRESSION_NAMES[codec]} records: {e}") from None
    raise CorruptMessageError(f"unknown compression codec {codec}")


# ---------------------------------------------------------------- encoding

# Records are encoded by aiokafka's compiled RecordBatch v2 builder (its records part only: the
# header, compression and CRC stay here), so this module is the one place that knows the format.
_ENCODER_LIMIT = 2**62  # no size limit in the encoder: BatchBuilder decides what fits
_NO_HEADERS: list = []


def _c_headers(headers) -> list:
    """Headers as the encoder takes them: a list of (str key, bytes-or-None value)."""
    out = []
    for hkey, hvalue in headers:
        if not isinstance(hkey, str):
            hkey = bytes(hkey).decode()
        if hvalue is not None and hvalue.__class__ is not bytes:
            hvalue = bytes(hvalue)
        out.append((hkey, hvalue))
    return out


def _encode_records(records: Sequence) -> bytearray:
    """A whole uncompressed batch (an aiokafka header, then the records) from a flat
    [timestamp, key, value, headers, ...] list, offset deltas 0..n-1; `build` keeps the records part."""
    enc = _CBuilder(MAGIC, 0, 0, NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE, _ENCODER_LIMIT)
    append = enc.append
    no_headers = _NO_HEADERS
    it = iter(records)
    for delta, (ts, key, value, headers) in enumerate(zip(it, it, it, it)):
        append(delta, ts, key, value, _c_headers(headers) if headers else no_headers)
    return enc.build()


# Per-record overhead estimate: attributes 1, timestamp delta 5 (~99 days),
# offset delta 3, key and value lengths 3 each (< 1 MiB), header count 1,
# record length 3. An estimate for batch sizing, as Kafka's is.
_RECORD_OVERHEAD = 19


def _headers_size(headers) -> int:
    size = 0
    for hkey, hvalue in headers:
        size += len(hkey) + 6 + (len(hvalue) if hvalue is not None else 0)
    return size


class BatchBuilder:
    """Incremental batch for the producer's accumulator.

    `try_append` only stores the record and updates a size estimate; encoding and
    compression happen once, in `build`. The encoded (and compressed) records part
    is cached, so `set_producer_state` + `build` again only rewrites the header.
    Not thread-safe: the accumulator owns it.
    """

    __slots__ = (
        "_batch_size",
        "_codec",
        "_is_control",
        "_max_timestamp",
        "_payload",
        "_records",
        "_size",
        "base_sequence",
        "compressed_size",
        "compression",
        "is_full",
        "is_transactional",
        "producer_epoch",
        "producer_id",
        "record_count",
        "uncompressed_size",
    )

    def __init__(self, compression: str = "none", *, batch_size: int = 16384,
                 producer_id: int = NO_PRODUCER_ID, producer_epoch: int = NO_PRODUCER_EPOCH,
                 base_sequence: int = NO_SEQUENCE, is_transactional: bool = False,
                 _is_control: bool = False):
        try:
            self._codec = COMPRESSION[compression]
        except KeyError:
            raise InvalidRecordError(f"unknown compression type {compression!r}") from None
        self.compression = compression
        self._batch_size = batch_size
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.base_sequence = base_sequence
        self.is_transactional = is_transactional
        self._is_control = _is_control
        # Flat: timestamp, key, value, headers of each record in turn. A tuple per record would be
        # one more object for the cyclic GC to track (and walk) per send.
        self._records: list = []
        self._size = HEADER_SIZE
        # Plain attributes kept up to date by try_append, not properties: the producer reads
        # both per record, and a property is a function call.
        self.record_count = 0
        self.is_full = HEADER_SIZE >= batch_size
        self._max_timestamp = _INT64_MIN
        self._payload: bytes | None = None  # cached records part, compressed
        self.uncompressed_size = 0
        self.compressed_size = 0

    def try_append(self, timestamp_ms: int, key: bytes | None, value: bytes | None,
                   headers=None) -> bool:
        """Add a record; False if it would push the batch past batch_size.
        The first record is always accepted, however large."""
        if timestamp_ms < 0:  # as Kafka's ProducerRecord; the encoder reads -1 as "not set yet"
            raise InvalidRecordError(f"Invalid timestamp: {timestamp_ms}. Timestamp should always be non-negative")
        size = _RECORD_OVERHEAD
        try:
            if key is not None:
                size += len(key)
            if value is not None:
                size += len(value)
            if headers:
                size += _headers_size(headers)
        except TypeError as e:
            raise InvalidRecordError(f"key, value and header values must be bytes: {e}") from None
        size += self._size
        if size > self._batch_size and self.record_count:
            return False
        self._records.extend((timestamp_ms, key, value, headers))
        self._size = size
        self.record_count += 1
        self.is_full = size >= self._batch_size
        if timestamp_ms > self._max_timestamp:  # noqa: PLR1730 (a call costs more here)
            self._max_timestamp = timestamp_ms
        self._payload = None
        return True

    def has_room_for(self, key: bytes | None, value: bytes | None, headers=None) -> bool:
        """Whether try_append would accept this record."""
        if not self._records:
            return True
        size = _RECORD_OVERHEAD + (len(key) if key is not None else 0) + (len(value) if value is not None else 0)
        if headers:
            size += _headers_size(headers)
        return self._size + size <= self._batch_size

    @property
    def estimated_size(self) -> int:
        """Uncompressed size estimate in bytes, header included."""
        return self._size

    def set_producer_state(self, producer_id: int, producer_epoch: int, base_sequence: int,
                           is_transactional: bool = False) -> None:
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.base_sequence = base_sequence
        self.is_transactional = is_transactional

    def build(self) -> bytes:
        """The batch with baseOffset 0 and partitionLeaderEpoch -1."""
        records = self._records
        if not records:
            raise InvalidRecordError("cannot build an empty record batch")
        base_timestamp = records[0]
        if self._payload is None:
            try:
                raw = _encode_records(records)
            except (TypeError, ValueError, AttributeError, OverflowError) as e:
                raise InvalidRecordError(f"cannot encode record: {e}") from None
            self.uncompressed_size = len(raw)
            body = memoryview(raw)[HEADER_SIZE:]
            self._payload = body if self._codec == 0 else _compress(self._codec, bytes(body))
        payload = self._payload
        attributes = self._codec
        if self.is_transactional:
            attributes |= ATTR_TRANSACTIONAL
        if self._is_control:
            attributes |= ATTR_CONTROL
        count = self.record_count
        tail = _HEADER_TAIL.pack(attributes, count - 1, base_timestamp, self._max_timestamp,
                                 self.producer_id, self.producer_epoch, self.base_sequence, count)
        crc = _crc32c.crc32c(payload, _crc32c.crc32c(tail))
        batch = b"".join((_PREFIX.pack(0, HEADER_SIZE - _LENGTH_OFFSET + len(payload),
                                       NO_PARTITION_LEADER_EPOCH, MAGIC),
                          struct.pack(">I", crc), tail, payload))
        self.compressed_size = len(batch)
        return batch


def build_batch(records: Iterable[tuple], compression: str = "none", **producer_state) -> bytes:
    """Build one batch from (timestamp_ms, key, value, headers) tuples; no size limit."""
    builder = BatchBuilder(compression, batch_size=_INT32_MAX, **producer_state)
    for rec in records:
        ts, key, value = rec[0], rec[1], rec[2]
        headers = rec[3] if len(rec) > 3 else None
        builder.try_append(ts, key, value, headers)
    return builder.build()


# ---------------------------------------------------------------- decoding

def _fast_init(target: type, fields: tuple[str, ...], src: str) -> Callable:
    """A constructor of frozen slotted dataclass `target` taking (offset, timestamp, key, value,
    headers, topic, partition, leader_epoch, timestamp_type).

    A frozen dataclass's __init__ goes through object.__setattr__ per field, and filling the slot
    descriptors one call at a time is not much better; a plain slotted class with the same layout
    stores its fields with the interpreter's fast slot stores and then becomes a `target` by
    __class__ assignment (allowed between classes with identical slots). Falls back to the
    ordinary constructor if the layouts ever differ."""
    ns: dict = {}
    exec(src, {"target": target}, ns)  # noqa: S102 - fixed source, defined just below
    fast = ns["_Fast"]
    if tuple(getattr(target, "__slots__", ())) != fields or fast.__slots__ != fields:
        raise AssertionError(f"{target.__name__} fields changed: update _fast_init's source")
    try:
        probe = fast(0, 0, None, None, (), "t", 0, -1, 0)
    except TypeError:  # layouts differ: correct, if slower
        def slow(offset, timestamp, key, value, headers, topic, partition, leader_epoch, timestamp_type):
            kw = {"offset": offset, "timestamp": timestamp, "key": key, "value": value, "headers": headers,
                  "topic": topic, "partition": partition, "leader_epoch": leader_epoch,
                  "timestamp_type": timestamp_type}
            return target(**{f: kw[f] for f in fields})
        return slow
    assert type(probe) is target
    return fast


_make_record = _fast_init(Record, ("offset", "timestamp", "key", "value", "headers"), """
class _Fast:
    __slots__ = ("offset", "timestamp", "key", "value", "headers")

    def __init__(self, offset, timestamp, key, value, headers, topic, partition, leader_epoch, timestamp_type):
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self.headers = headers
        self.__class__ = target
""")

_make_consumer_record = _fast_init(ConsumerRecord, (
    "topic", "partition", "offset", "timestamp", "key", "value", "headers", "leader_epoch", "timestamp_type"), """
class _Fast:
    __slots__ = ("topic", "partition", "offset", "timestamp", "key", "value", "headers", "leader_epoch",
                 "timestamp_type")

    def __init__(self, offset, timestamp, key, value, headers, topic, partition, leader_epoch, timestamp_type):
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self.headers = headers
        self.leader_epoch = leader_epoch
        self.timestamp_type = timestamp_type
        self.__class__ = target
""")


class gc_paused:  # lower case: used as `with gc_paused():`
    """Pauses the cyclic garbage collector while a fetch response is decoded.

    Every decoded record is a new GC-tracked object, so a large response triggers a young
    collection every 700 records and, with many records buffered, full collections that walk
    them all: about a third of decoding time. Records hold no cycles, so nothing is lost by
    collecting once afterwards instead. Only re-enables what it disabled (an application that
    turned the collector off keeps it off)."""

    __slots__ = ("_was_enabled",)

    def __enter__(self) -> None:
        self._was_enabled = gc.isenabled()
        if self._was_enabled:
            gc.disable()

    def __exit__(self, *exc) -> None:
        if self._was_enabled:
            gc.enable()


def _plain_batch(batch, h: BatchHeader):
    """The batch as aiokafka's compiled reader takes it: framing fields checked, exactly the batch's
    bytes, records decompressed here (cramjam, as Kafka writes them) behind the same header with the
    codec bits cleared (the reader ignores the length field and the CRC)."""
    if h.magic != MAGIC:
        raise CorruptMessageError(f"unsupported magic {h.magic} (only 2)")
    end = _LENGTH_OFFSET + h.batch_length
    if h.batch_length < _MIN_BATCH_LENGTH or end > len(batch):
        raise CorruptMessageError(f"batch truncated: needs {end} bytes, has {len(batch)}")
    if h.records_count < 0:
        raise CorruptMessageError(f"negative records count {h.records_count}")
    codec = h.attributes & ATTR_COMPRESSION_MASK
    mv = memoryview(batch)
    if codec == 0:
        return batch if len(batch) == end else mv[:end]
    data = _decompress(codec, mv[HEADER_SIZE:end])
    return b"".join((mv[:_CRC_START], _H.pack(h.attributes & ~ATTR_COMPRESSION_MASK),
                     mv[_CRC_START + 2:HEADER_SIZE], data))


def _c_reader(batch, h: BatchHeader):
    return _CBatch(_plain_batch(batch, h))


def decode_records(batch) -> list[Record]:
    """Decompress and decode the batch's records, with absolute offsets and timestamps.

    For LOG_APPEND_TIME batches every record gets maxTimestamp, as in Kafka.
    Structural errors raise CorruptMessageError; the CRC is `validate`'s job.
    """
    h = read_header(batch)
    reader = _c_reader(batch, h)
    out = []
    try:
        for r in reader:
            ts = r.timestamp
            hs = r.headers
            out.append(_make_record(r.offset, -1 if ts is None else ts, r.key, r.value,
                                    tuple(hs) if hs else (), None, -1, -1, 0))
    except (CorruptRecordException, UnicodeDecodeError) as e:
        raise CorruptMessageError(f"malformed record: {e}") from None
    return out


def decode_consumer_records(batch, topic: str, partition: int, min_offset: int = 0,
                            key_deserializer: Callable | None = None,
                            value_deserializer: Callable | None = None,
                            header: BatchHeader | None = None) -> list[ConsumerRecord]:
    """`decode_records` straight into ConsumerRecords: records below min_offset are skipped, non-null
    keys and values go through the deserializers, leader epoch and timestamp type come from the batch
    header (pass `header` if it was already read). The varints are decoded in C; this loop only
    moves each record's fields into a ConsumerRecord."""
    h = read_header(batch) if header is None else header
    reader = _c_reader(batch, h)
    kd, vd = key_deserializer, value_deserializer
    leader_epoch = h.partition_leader_epoch
    timestamp_type = TIMESTAMP_LOG_APPEND_TIME if h.attributes & ATTR_TIMESTAMP_TYPE else TIMESTAMP_CREATE_TIME
    skip = h.base_offset < min_offset
    out: list = []
    append = out.append
    no_headers: tuple = ()
    # The slot-layout class behind _make_consumer_record, unless that fell back to the constructor.
    layout = _make_consumer_record if isinstance(_make_consumer_record, type) else None
    new = object.__new__
    consumer_record = ConsumerRecord
    try:
        for r in reader:
            offset = r.offset
            if skip and offset < min_offset:
                continue
            key = r.key
            value = r.value
            if kd is not None and key is not None:
                key = kd(key)
            if vd is not None and value is not None:
                value = vd(value)
            ts = r.timestamp
            if ts is None:  # aiokafka's reading of NO_TIMESTAMP (-1)
                ts = -1
            hs = r.headers
            headers = tuple(hs) if hs else no_headers
            if layout is not None:
                # _make_consumer_record's body inlined: slot stores here cost less than the call.
                c = new(layout)
                c.topic = topic
                c.partition = partition
                c.offset = offset
                c.timestamp = ts
                c.key = key
                c.value = value
                c.headers = headers
                c.leader_epoch = leader_epoch
                c.timestamp_type = timestamp_type
                c.__class__ = consumer_record
                append(c)
            else:
                append(_make_consumer_record(offset, ts, key, value, headers, topic, partition, leader_epoch,
                                             timestamp_type))
    except (CorruptRecordException, UnicodeDecodeError) as e:
        raise CorruptMessageError(f"malformed record: {e}") from None
    return out


# ---------------------------------------------------------------- control batches

_CONTROL_KEY = struct.Struct(">hh")
_CONTROL_VALUE = struct.Struct(">hi")
CONTROL_ABORT = 0
CONTROL_COMMIT = 1


def build_control_batch(commit: bool, producer_id: int, producer_epoch: int, timestamp_ms: int,
                        coordinator_epoch: int = 0) -> bytes:
    """A transaction marker: isControl + isTransactional, one EndTransactionMarker record."""
    builder = BatchBuilder("none", producer_id=producer_id, producer_epoch=producer_epoch,
                           base_sequence=NO_SEQUENCE, is_transactional=True, _is_control=True)
    key = _CONTROL_KEY.pack(0, CONTROL_COMMIT if commit else CONTROL_ABORT)
    value = _CONTROL_VALUE.pack(0, coordinator_epoch)
    builder.try_append(timestamp_ms, key, value)
    return builder.build()


def control_type(record: Record) -> str:
    """"COMMIT" or "ABORT" for a transaction marker; "UNKNOWN" for other control
    types (Kafka has more, e.g. leader change), as Kafka's ControlRecordType.parse."""
    key = record.key
    if key is None or len(key) < 4:
        raise InvalidRecordError("control record key shorter than 4 bytes")
    _version, ctype = _CONTROL_KEY.unpack_from(key)
    if ctype == CONTROL_COMMIT:
        return "COMMIT"
    if ctype == CONTROL_ABORT:
        return "ABORT"
    return "UNKNOWN"


def control_coordinator_epoch(record: Record) -> int:
    value = record.value
    if value is None or len(value) < 6:
        raise InvalidRecordError("end transaction marker value shorter than 6 bytes")
    return _CONTROL_VALUE.unpack_from(value)[1]

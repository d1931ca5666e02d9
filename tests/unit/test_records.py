"""RecordBatch v2 codec: round trips per codec, framing, corruption, control batches."""
from __future__ import annotations

import struct

import cramjam
import crc32c
import pytest

from client.common import records as R
from client.common.errors import CorruptMessageError, InvalidRecordError

CODECS = list(R.COMPRESSION)

SAMPLE = [
    (1_700_000_000_000, b"k1", b"v1", None),
    (1_700_000_000_005, None, b"value with null key", [("h1", b"x"), ("h2", None)]),
    (1_699_999_999_990, b"null value", None, ()),  # earlier than the first: negative delta
    (1_700_000_000_002, None, None, [("ünïcode", b"")]),
    (1_700_000_900_000, b"", b"", None),
    (1_700_000_000_001, b"big", bytes(range(256)) * 200, [("k", b"v" * 300)]),
]


def _expected(records, base_offset=0):
    return [R.Record(base_offset + i, ts, k, v, tuple(tuple(h) for h in (hs or ())))
            for i, (ts, k, v, hs) in enumerate(records)]


# Written by Kafka (a KRaft __cluster_metadata batch with one FeatureLevelRecord),
# from a published hex dump: an independent check of layout, varints and CRC.
KAFKA_BATCH = bytes.fromhex(
    "0000000000000000" "0000004f" "00000001" "02" "b069457c" "0000" "00000000"
    "00000191e05af818" "00000191e05af818" "ffffffffffffffff" "ffff" "ffffffff" "00000001"
    "3a" "00" "00" "00" "01" "2e"
    "010c0011" "6d657461646174612e76657273696f6e" "0014" "00"
    "00")


# ---------------------------------------------------------------- varints

@pytest.mark.parametrize("value,encoded", [
    (0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (63, b"\x7e"), (-64, b"\x7f"), (64, b"\x80\x01"),
    (2**31 - 1, b"\xfe\xff\xff\xff\x0f"), (-2**31, b"\xff\xff\xff\xff\x0f"),
    (2**63 - 1, b"\xfe" + b"\xff" * 8 + b"\x01"), (-2**63, b"\xff" * 9 + b"\x01"),
])
def test_varint_round_trip(value, encoded):
    assert R.encode_varint(value) == encoded
    assert R.decode_varint(b"\xaa" + encoded + b"\xbb", 1) == (value, 1 + len(encoded))


def test_varint_errors():
    with pytest.raises(InvalidRecordError):
        R.encode_varint(2**63)
    with pytest.raises(CorruptMessageError):
        R.decode_varint(b"\x80\x80", 0)  # runs off the end
    with pytest.raises(CorruptMessageError):
        R.decode_varint(b"\x80" * 11 + b"\x00", 0)  # longer than 10 bytes


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_every_codec(codec):
    batch = R.build_batch(SAMPLE, codec)
    h = R.validate(batch)
    assert h.compression == codec
    assert h.magic == 2 and h.base_offset == 0 and h.partition_leader_epoch == -1
    assert h.records_count == len(SAMPLE) and h.last_offset_delta == len(SAMPLE) - 1
    assert h.base_timestamp == SAMPLE[0][0]
    assert h.max_timestamp == max(r[0] for r in SAMPLE)
    assert h.size == len(batch)
    assert h.producer_id == -1 and h.producer_epoch == -1 and h.base_sequence == -1
    assert not h.is_transactional and not h.is_control
    assert R.decode_records(batch) == _expected(SAMPLE)


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_large_batch_spans_codec_blocks(codec):
    recs = [(1000 + i, str(i).encode(), b"payload-%d-" % i * 20, None) for i in range(2000)]
    b = R.BatchBuilder(codec, batch_size=10**8)
    for r in recs:
        assert b.try_append(*r)
    batch = b.build()
    assert b.uncompressed_size > 64 * 1024  # more than one xerial / lz4 block
    assert b.compressed_size == len(batch) < b.uncompressed_size
    R.validate(batch)
    assert R.decode_records(batch) == _expected(recs)


def test_snappy_is_xerial_framed_and_raw_snappy_is_accepted():
    raw_records = R.build_batch(SAMPLE)[R.HEADER_SIZE:]
    batch = R.build_batch(SAMPLE, "snappy")
    assert batch[R.HEADER_SIZE:R.HEADER_SIZE + 16] == b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    # Rewrite the records part as raw (unframed) snappy, as some clients write it.
    raw = bytearray(batch[:R.HEADER_SIZE]) + bytes(cramjam.snappy.compress_raw(raw_records))
    struct.pack_into(">i", raw, 8, len(raw) - 12)
    struct.pack_into(">I", raw, 17, crc32c.crc32c(bytes(raw[21:])))
    assert R.validate(bytes(raw)).compression == "snappy"
    assert R.decode_records(bytes(raw)) == _expected(SAMPLE)


def test_lz4_frame_has_independent_blocks():
    batch = R.build_batch(SAMPLE, "lz4")
    frame = batch[R.HEADER_SIZE:]
    assert frame[:4] == b"\x04\x22\x4d\x18"
    assert frame[4] & 0x20  # FLG block independence: Kafka's reader needs it


def test_log_append_time_uses_max_timestamp():
    batch = bytearray(R.build_batch(SAMPLE))
    attrs = struct.unpack_from(">h", batch, 21)[0] | R.ATTR_TIMESTAMP_TYPE
    struct.pack_into(">h", batch, 21, attrs)
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[21:])))
    h = R.validate(bytes(batch))
    assert h.timestamp_type == R.TIMESTAMP_LOG_APPEND_TIME
    assert {r.timestamp for r in R.decode_records(bytes(batch))} == {h.max_timestamp}


def test_decode_accepts_bytearray_and_memoryview():
    batch = R.build_batch(SAMPLE)
    assert R.decode_records(bytearray(batch)) == _expected(SAMPLE)
    assert R.decode_records(memoryview(batch)) == _expected(SAMPLE)


# ---------------------------------------------------------------- Kafka compatibility

def test_decodes_batch_written_by_kafka():
    h = R.validate(KAFKA_BATCH)
    assert (h.batch_length, h.partition_leader_epoch, h.crc) == (79, 1, 0xB069457C)
    [rec] = R.decode_records(KAFKA_BATCH)
    assert rec.offset == 0 and rec.timestamp == 1726045943832 and rec.key is None
    assert rec.value[4:20] == b"metadata.version" and rec.headers == ()


def test_builds_the_same_bytes_as_kafka():
    [rec] = R.decode_records(KAFKA_BATCH)
    ours = R.build_batch([(rec.timestamp, rec.key, rec.value, None)])
    assert R.set_partition_leader_epoch(ours, 1) == KAFKA_BATCH


# ---------------------------------------------------------------- corruption

@pytest.mark.parametrize("codec", CODECS)
def test_flipped_payload_byte_fails_crc(codec):
    batch = bytearray(R.build_batch(SAMPLE, codec))
    for pos in (21, 40, R.HEADER_SIZE + 3, len(batch) - 1):
        bad = bytearray(batch)
        bad[pos] ^= 0x01
        with pytest.raises(CorruptMessageError, match="CRC"):
            R.validate(bytes(bad))


def test_truncated_batch():
    batch = R.build_batch(SAMPLE)
    for cut in (10, R.HEADER_SIZE - 1, R.HEADER_SIZE + 5, len(batch) - 1):
        with pytest.raises(CorruptMessageError):
            R.validate(batch[:cut])
        with pytest.raises(CorruptMessageError):
            R.decode_records(batch[:cut])


def test_bad_magic_and_length():
    batch = bytearray(R.build_batch(SAMPLE))
    bad = bytearray(batch)
    bad[16] = 1
    with pytest.raises(CorruptMessageError, match="magic"):
        R.validate(bytes(bad))
    bad = bytearray(batch)
    struct.pack_into(">i", bad, 8, 10)
    with pytest.raises(CorruptMessageError, match="length"):
        R.validate(bytes(bad))


def test_malformed_records_with_valid_crc():
    batch = bytearray(R.build_batch([(0, b"key", b"value", None)]))
    batch[R.HEADER_SIZE] = 0x7E  # record length 63: past the end of the batch
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[21:])))
    R.validate(bytes(batch))  # CRC fine, structure not
    with pytest.raises(CorruptMessageError):
        R.decode_records(bytes(batch))


def test_records_count_larger_than_records():
    batch = bytearray(R.build_batch([(0, b"k", b"v", None)]))
    struct.pack_into(">i", batch, 57, 2)
    with pytest.raises(CorruptMessageError):
        R.decode_records(bytes(batch))


def test_garbage_compressed_payload():
    batch = R.build_batch(SAMPLE, "zstd")
    bad = batch[:R.HEADER_SIZE] + b"\x00" * 20
    with pytest.raises(CorruptMessageError):
        R.decode_records(bad)


# ---------------------------------------------------------------- rewrites and framing

def test_set_base_offset_and_epoch_keep_crc_valid():
    batch = R.build_batch(SAMPLE, "gzip")
    moved = R.set_base_offset(batch, 1000)
    h = R.validate(moved)
    assert h.base_offset == 1000 and h.last_offset == 1000 + len(SAMPLE) - 1
    assert h.next_offset == 1000 + len(SAMPLE)
    assert [r.offset for r in R.decode_records(moved)] == list(range(1000, 1000 + len(SAMPLE)))
    assert R.validate(R.set_partition_leader_epoch(batch, 7)).partition_leader_epoch == 7
    both = R.set_offset_and_epoch(batch, 2**40, 3)
    h = R.validate(both)
    assert (h.base_offset, h.partition_leader_epoch) == (2**40, 3)
    assert both[16:] == batch[16:] and len(both) == len(batch)
    assert R.set_offset_and_epoch(bytearray(batch), 5, 6) == R.set_base_offset(
        R.set_partition_leader_epoch(batch, 6), 5)


def test_iter_batches_ignores_trailing_partial_batch():
    b1 = R.set_base_offset(R.build_batch(SAMPLE[:2]), 0)
    b2 = R.set_base_offset(R.build_batch(SAMPLE[2:], "lz4"), 2)
    b3 = R.set_base_offset(R.build_batch(SAMPLE), 100)
    for tail in (b"", b3[:5], b3[:R.HEADER_SIZE], b3[:-1]):
        got = list(R.iter_batches(b1 + b2 + tail))
        assert [b for _, b in got] == [b1, b2]
        assert [h.base_offset for h, _ in got] == [0, 2]
    got = list(R.iter_batches(memoryview(b1 + b2 + b3)))
    assert [b for _, b in got] == [b1, b2, b3]
    assert list(R.iter_batches(b"")) == []


def test_read_header_matches_validate():
    batch = R.build_batch(SAMPLE, "snappy")
    assert R.read_header(b"xx" + batch, 2) == R.validate(b"xx" + batch, 2)
    with pytest.raises(CorruptMessageError):
        R.read_header(batch[:30])


# ---------------------------------------------------------------- builder

def test_batch_builder_size_limit():
    b = R.BatchBuilder(batch_size=1024)
    assert b.try_append(0, None, b"x" * 5000)  # the first record is always accepted
    assert b.is_full and not b.try_append(0, None, b"y")
    assert b.record_count == 1

    b = R.BatchBuilder(batch_size=1024)
    n = 0
    while b.try_append(n, b"key", b"v" * 100):
        n += 1
    assert n == b.record_count and 5 <= n < 10
    assert b.estimated_size <= 1024
    batch = b.build()
    assert len(batch) <= b.estimated_size  # the estimate is an upper bound for small records
    assert len(R.decode_records(batch)) == n


def test_empty_builder_and_bad_input():
    with pytest.raises(InvalidRecordError):
        R.BatchBuilder().build()
    with pytest.raises(InvalidRecordError):
        R.BatchBuilder("brotli")
    b = R.BatchBuilder()
    with pytest.raises(InvalidRecordError):
        b.try_append(0, None, 12345)  # not bytes
    assert b.try_append(0, None, "str has a len but is not bytes")
    with pytest.raises(InvalidRecordError):
        b.build()


def test_set_producer_state_rebuilds_header_only():
    b = R.BatchBuilder("zstd", batch_size=10**6, producer_id=7, producer_epoch=1)
    for r in SAMPLE:
        b.try_append(*r)
    first = b.build()
    assert R.validate(first).base_sequence == -1
    b.set_producer_state(42, 3, 2**31 - 3, is_transactional=True)
    second = b.build()
    h = R.validate(second)
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (42, 3, 2**31 - 3)
    assert h.is_transactional and not h.is_control
    assert h.last_sequence == 2  # wraps past int32 max, as Kafka's sequences do
    assert second[R.HEADER_SIZE:] == first[R.HEADER_SIZE:]
    assert R.decode_records(second) == _expected(SAMPLE)
    # Appending after a build invalidates the cached records part.
    b.try_append(5, b"late", b"record")
    assert len(R.decode_records(b.build())) == len(SAMPLE) + 1


def test_header_properties():
    h = R.validate(R.build_batch([(0, None, b"v", None)], producer_id=5, producer_epoch=0,
                                 base_sequence=10))
    assert h.last_sequence == 10 and h.timestamp_type == R.TIMESTAMP_CREATE_TIME
    assert R.validate(R.build_batch([(0, None, b"v", None)])).last_sequence == -1


# ---------------------------------------------------------------- control batches

@pytest.mark.parametrize("commit,kind", [(True, "COMMIT"), (False, "ABORT")])
def test_control_batch_round_trip(commit, kind):
    batch = R.build_control_batch(commit, producer_id=9, producer_epoch=2, timestamp_ms=123,
                                  coordinator_epoch=17)
    h = R.validate(batch)
    assert h.is_control and h.is_transactional and h.compression == "none"
    assert (h.producer_id, h.producer_epoch, h.base_sequence, h.records_count) == (9, 2, -1, 1)
    [rec] = R.decode_records(batch)
    assert rec.timestamp == 123
    assert rec.key == struct.pack(">hh", 0, 1 if commit else 0)
    assert rec.value == struct.pack(">hi", 0, 17)
    assert R.control_type(rec) == kind
    assert R.control_coordinator_epoch(rec) == 17


def test_control_type_of_other_keys():
    assert R.control_type(R.Record(0, 0, struct.pack(">hh", 0, 2), None, ())) == "UNKNOWN"
    with pytest.raises(InvalidRecordError):
        R.control_type(R.Record(0, 0, b"\x00", None, ()))


def test_log_append_time_stamps_the_batch_and_keeps_it_valid():
    raw = R.build_batch([(1_000, b"k", b"a", None), (1_005, None, b"b", None)])
    stamped = R.set_log_append_time(raw, 1_700_000_123_456)
    h = R.validate(stamped)   # the CRC was recomputed
    assert h.timestamp_type == R.TIMESTAMP_LOG_APPEND_TIME and h.max_timestamp == 1_700_000_123_456
    recs = R.decode_records(stamped)
    assert [(r.value, r.timestamp) for r in recs] == [(b"a", 1_700_000_123_456), (b"b", 1_700_000_123_456)]
    assert R.read_header(raw).timestamp_type == R.TIMESTAMP_CREATE_TIME


# ---------------------------------------------------------------- the compiled codec

def test_codec_is_aiokafkas_compiled_one():
    # A silent fall-back to aiokafka's pure-Python classes would keep every test green at 5x the cost.
    assert R._CBatch.__module__.startswith("aiokafka.record._crecords")
    assert R._CBuilder.__module__.startswith("aiokafka.record._crecords")


@pytest.mark.parametrize("codec", CODECS)
def test_consumer_records_skip_deserialize_and_stop_at_the_batch_end(codec):
    batch = R.set_offset_and_epoch(R.build_batch(SAMPLE, codec), 100, 7)
    # A fetch response slice: the batch followed by the start of the next one.
    data = batch + batch[:30]
    got = R.decode_consumer_records(data, "t", 3, min_offset=102, key_deserializer=lambda b: b"K" + b,
                                    value_deserializer=lambda b: b.upper())
    want = [r for r in _expected(SAMPLE, 100) if r.offset >= 102]
    assert [(c.offset, c.timestamp, c.key, c.value, c.headers) for c in got] == [
        (r.offset, r.timestamp, None if r.key is None else b"K" + r.key,
         None if r.value is None else r.value.upper(), r.headers) for r in want]
    assert {(c.topic, c.partition, c.leader_epoch, c.timestamp_type) for c in got} == {("t", 3, 7, 0)}


def test_negative_timestamp_is_rejected():
    with pytest.raises(InvalidRecordError, match="Invalid timestamp"):
        R.BatchBuilder().try_append(-1, None, b"v")

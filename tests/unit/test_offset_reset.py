"""kafka-consumer-groups --reset-offsets arithmetic: every scenario clamps to [log start, log end]."""
from __future__ import annotations

import click
import pytest

from client.common import errors
from client.common.types import TopicPartition
from client.groups_cli import ResetSpec, lag, parse_datetime, parse_duration, parse_topic_scope, plan_reset

TP = TopicPartition("t", 0)


@pytest.mark.parametrize("spec, current, earliest, latest, by_time, want", [
    (ResetSpec("earliest"), 7, 2, 20, None, 2),
    (ResetSpec("latest"), 7, 2, 20, None, 20),
    (ResetSpec("offset", 10), 7, 2, 20, None, 10),
    (ResetSpec("offset", 0), 7, 2, 20, None, 2),        # below log start: clamped up
    (ResetSpec("offset", 99), 7, 2, 20, None, 20),      # past the end: clamped down
    (ResetSpec("shift", -3), 7, 2, 20, None, 4),
    (ResetSpec("shift", 5), 7, 2, 20, None, 12),
    (ResetSpec("shift", -10), 7, 2, 20, None, 2),
    (ResetSpec("shift", 50), 7, 2, 20, None, 20),
    (ResetSpec("timestamp", 1000), 7, 2, 20, 9, 9),
    (ResetSpec("timestamp", 1000), 7, 2, 20, -1, 20),   # nothing that new: the end
    (ResetSpec("timestamp", 1000), None, 2, 20, None, 20),
    (ResetSpec("earliest"), None, 0, 0, None, 0),       # empty partition
])
def test_plan_reset(spec, current, earliest, latest, by_time, want):
    assert plan_reset(spec, TP, current, earliest, latest, by_time) == want


def test_shift_without_committed_offset_is_refused():
    with pytest.raises(errors.IllegalStateError, match="t-0"):
        plan_reset(ResetSpec("shift", 1), TP, None, 0, 10)


@pytest.mark.parametrize("text, ms", [
    ("PT10M", 600_000), ("P1D", 86_400_000), ("P1DT2H", 93_600_000), ("PT1.5S", 1500), ("pt30s", 30_000),
])
def test_parse_duration(text, ms):
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["10m", "P", "PT", "P1H", ""])
def test_parse_duration_rejects(text):
    with pytest.raises(click.BadParameter):
        parse_duration(text)


def test_parse_datetime_utc_default_and_zones():
    assert parse_datetime("1970-01-01T00:00:01.000") == 1000
    assert parse_datetime("1970-01-01T00:00:01Z") == 1000
    assert parse_datetime("1970-01-01T01:00:01+01:00") == 1000
    with pytest.raises(click.BadParameter):
        parse_datetime("yesterday")


def test_topic_scope():
    assert parse_topic_scope(("a", "b:2,0")) == {"a": None, "b": [0, 2]}
    with pytest.raises(click.BadParameter):
        parse_topic_scope(("b:x",))


def test_lag():
    assert lag(20, 5) == 15
    assert lag(20, None) is None
    assert lag(3, 5) == 0  # committed ahead of a truncated log end

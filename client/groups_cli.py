"""`brokerlab groups`: kafka-consumer-groups (list, describe, reset offsets, delete).

The reset arithmetic (`plan_reset`, `parse_duration`, `parse_datetime`) is
pure, so it is unit-tested without a cluster; the command only gathers
offsets, prints and commits.
"""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import click

from client.cli import bootstrap_option, client_props
from client.common import errors
from client.common.types import TopicPartition

# ---------------------------------------------------------------- pure part

_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def parse_duration(text: str) -> int:
    """ISO-8601 duration as kafka-consumer-groups takes it ('PnDTnHnMnS') -> milliseconds."""
    m = _DURATION.match(text.strip().upper())
    if not m or text.strip().upper() in ("P", "PT"):
        raise click.BadParameter(f"'{text}' is not an ISO-8601 duration like PT10M or P1DT2H",
                                 param_hint="--by-duration")
    d, h, mi, s = m.groups()
    return int(((int(d or 0) * 24 + int(h or 0)) * 60 + int(mi or 0)) * 60_000 + float(s or 0) * 1000)


def parse_datetime(text: str) -> int:
    """'YYYY-MM-DDTHH:mm:SS.sss' with an optional zone (Z, +hh:mm); no zone means UTC."""
    t = text.strip()
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a datetime like 2024-01-31T12:00:00.000",
                                 param_hint="--to-datetime") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class ResetSpec:
    """One of Kafka's reset scenarios: method in earliest, latest, offset, shift, timestamp."""
    method: str
    value: int = 0


def plan_reset(spec: ResetSpec, tp: TopicPartition, current: int | None, earliest: int, latest: int,
               offset_for_time: int | None = None) -> int:
    """The new offset of one partition, clamped to [earliest, latest] as Kafka does.

    current: the committed offset (None: nothing committed); offset_for_time:
    the first offset whose timestamp is >= the target (None or -1: none, i.e. latest).
    """
    if spec.method == "earliest":
        return earliest
    if spec.method == "latest":
        return latest
    if spec.method == "offset":
        target = spec.value
    elif spec.method == "shift":
        if current is None:
            raise errors.IllegalStateError(f"--shift-by needs a committed offset; {tp} has none")
        target = current + spec.value
    elif spec.method == "timestamp":
        target = latest if offset_for_time is None or offset_for_time < 0 else offset_for_time
    else:
        raise ValueError(f"unknown reset method {spec.method!r}")
    return max(earliest, min(latest, target))


def parse_topic_scope(topics: tuple[str, ...]) -> dict[str, list[int] | None]:
    """--topic T or T:0,2 -> {topic: partitions or None (all)}."""
    out: dict[str, list[int] | None] = {}
    for item in topics:
        name, _, parts = item.partition(":")
        if not name:
            raise click.BadParameter(f"'{item}' names no topic", param_hint="--topic")
        if parts:
            try:
                out[name] = sorted({int(p) for p in parts.split(",") if p.strip()})
            except ValueError:
                raise click.BadParameter(f"'{item}': partitions must be integers like T:0,1",
                                         param_hint="--topic") from None
        else:
            out[name] = None
    return out


def lag(log_end_offset: int | None, committed: int | None) -> int | None:
    if log_end_offset is None or committed is None:
        return None
    return max(0, log_end_offset - committed)


# ----------------------------------------------------------------- commands

def _admin(bootstrap):
    from client.admin import Admin
    return Admin(client_props(bootstrap))


def _table(rows: list[list], header: list[str]) -> str:
    cells = [[str("-" if c is None else c) for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join(" ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _describe_offsets(admin, group: str) -> str:
    desc = admin.describe_consumer_groups([group])[group]
    committed = admin.list_consumer_group_offsets(group)
    owner = {tp: m for m in desc.members for tp in m.assignment}
    tps = sorted(set(committed) | set(owner))
    if desc.state == "Dead" and not tps:
        raise errors.GroupIdNotFoundError(f"Consumer group '{group}' does not exist.")
    ends = admin.list_offsets(tps, -1) if tps else {}
    rows = []
    for tp in tps:
        om, m = committed.get(tp), owner.get(tp)
        cur = om.offset if om else None
        rows.append([group, tp.topic, tp.partition, cur, ends.get(tp), lag(ends.get(tp), cur),
                     m.member_id if m else None, m.host if m else None, m.client_id if m else None])
    out = []
    if not desc.members:
        out.append(f"Consumer group '{group}' has no active members.\n")
    out.append(_table(rows, ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
                             "CONSUMER-ID", "HOST", "CLIENT-ID"]))
    return "\n".join(out)


@click.command("groups")
@bootstrap_option
@click.option("--list", "do_list", is_flag=True, help="List all consumer groups.")
@click.option("--describe", is_flag=True, help="Describe a group: offsets and lag (default), --state, --members.")
@click.option("--group", "group_ids", multiple=True, metavar="GROUP")
@click.option("--all-groups", is_flag=True)
@click.option("--state", "show_state", is_flag=True, help="With --describe: the group's state.")
@click.option("--members", "show_members", is_flag=True, help="With --describe: the group's members.")
@click.option("--verbose", is_flag=True, help="With --describe --members: each member's partitions.")
@click.option("--reset-offsets", is_flag=True)
@click.option("--to-earliest", is_flag=True)
@click.option("--to-latest", is_flag=True)
@click.option("--to-current", is_flag=True)
@click.option("--to-offset", type=int)
@click.option("--shift-by", type=int)
@click.option("--to-datetime", metavar="YYYY-MM-DDTHH:mm:SS.sss")
@click.option("--by-duration", metavar="PnDTnHnMnS")
@click.option("--topic", "topics", multiple=True, metavar="T[:P,...]")
@click.option("--all-topics", is_flag=True)
@click.option("--dry-run", is_flag=True)
@click.option("--execute", is_flag=True)
@click.option("--delete", is_flag=True)
@click.option("--watch", type=float, default=None, metavar="SECONDS",
              help="With --describe: redraw every SECONDS until interrupted.")
def groups(bootstrap, do_list, describe, group_ids, all_groups, show_state, show_members, verbose,
           reset_offsets, to_earliest, to_latest, to_current, to_offset, shift_by, to_datetime, by_duration,
           topics, all_topics, dry_run, execute, delete, watch) -> None:
    """List, describe, reset offsets of, and delete consumer groups (like kafka-consumer-groups)."""
    actions = [a for a, on in (("--list", do_list), ("--describe", describe),
                               ("--reset-offsets", reset_offsets), ("--delete", delete)) if on]
    if len(actions) != 1:
        raise click.UsageError("give exactly one of --list, --describe, --reset-offsets, --delete")
    with _admin(bootstrap) as admin:
        if do_list:
            for gid, _state in sorted(admin.list_consumer_groups()):
                click.echo(gid)
            return
        if all_groups:
            group_ids = tuple(g for g, _ in sorted(admin.list_consumer_groups()))
        if not group_ids:
            raise click.UsageError(f"{actions[0]} needs --group GROUP (or --all-groups)")
        if describe:
            while True:
                text = "\n\n".join(_describe(admin, g, show_state, show_members, verbose) for g in group_ids)
                if watch is None:
                    click.echo(text)
                    return
                click.clear()
                click.echo(f"Every {watch}s: {time.strftime('%H:%M:%S')}\n\n{text}")
                try:
                    time.sleep(watch)
                except KeyboardInterrupt:
                    return
        if delete:
            for g in group_ids:
                admin.delete_consumer_groups([g])
                click.echo(f"Deletion of requested consumer groups ('{g}') was successful.")
            return
        spec = _reset_spec(to_earliest, to_latest, to_current, to_offset, shift_by, to_datetime, by_duration)
        if dry_run == execute:
            raise click.UsageError("--reset-offsets needs exactly one of --dry-run or --execute")
        if not topics and not all_topics:
            raise click.UsageError("--reset-offsets needs --topic T[:P,...] or --all-topics")
        for g in group_ids:
            _reset(admin, g, spec, parse_topic_scope(topics), all_topics, execute)


def _describe(admin, group: str, show_state: bool, show_members: bool, verbose: bool) -> str:
    if show_state:
        d = admin.describe_consumer_groups([group])[group]
        return _table([[group, d.coordinator, d.partition_assignor or None, d.state, len(d.members)]],
                      ["GROUP", "COORDINATOR", "ASSIGNMENT-STRATEGY", "STATE", "#MEMBERS"])
    if show_members:
        d = admin.describe_consumer_groups([group])[group]
        header = ["GROUP", "CONSUMER-ID", "GROUP-INSTANCE-ID", "HOST", "CLIENT-ID", "#PARTITIONS"]
        rows = []
        for m in d.members:
            row = [group, m.member_id, m.group_instance_id, m.host, m.client_id, len(m.assignment)]
            if verbose:
                row.append(",".join(str(tp) for tp in m.assignment) or None)
            rows.append(row)
        if verbose:
            header.append("ASSIGNMENT")
        return _table(rows, header)
    return _describe_offsets(admin, group)


def _reset_spec(to_earliest, to_latest, to_current, to_offset, shift_by, to_datetime, by_duration) -> ResetSpec:
    chosen = [s for s, on in (
        (ResetSpec("earliest"), to_earliest), (ResetSpec("latest"), to_latest), (ResetSpec("current"), to_current),
        (ResetSpec("offset", to_offset or 0), to_offset is not None),
        (ResetSpec("shift", shift_by or 0), shift_by is not None),
        (ResetSpec("timestamp", parse_datetime(to_datetime)) if to_datetime else None, to_datetime is not None),
        (ResetSpec("timestamp", int(time.time() * 1000) - parse_duration(by_duration)) if by_duration else None,
         by_duration is not None)) if on]
    if len(chosen) != 1:
        raise click.UsageError("--reset-offsets needs exactly one of --to-earliest, --to-latest, --to-current, "
                               "--to-offset, --shift-by, --to-datetime, --by-duration")
    return chosen[0]


def _reset(admin, group: str, spec: ResetSpec, scope: dict, all_topics: bool, execute: bool) -> None:
    desc = admin.describe_consumer_groups([group])[group]
    if execute and desc.members:
        raise errors.IllegalStateError(
            f"Assignments can only be reset if the group '{group}' is inactive, but the current state is "
            f"{desc.state} ({len(desc.members)} active members). Stop the consumers first.")
    committed = admin.list_consumer_group_offsets(group)
    if all_topics:
        scope = {t: None for t in sorted({tp.topic for tp in committed})}
    tps: list[TopicPartition] = []
    for topic, parts in scope.items():
        (d,) = admin.describe_topics([topic])
        existing = [p.partition for p in d.partitions]
        bad = [p for p in parts or [] if p not in existing]
        if bad:
            raise errors.UnknownTopicOrPartitionError(f"{topic} has no partition(s) {bad}")
        tps += [TopicPartition(topic, p) for p in (parts if parts is not None else existing)]
    if not tps:
        click.echo(f"Nothing to reset: group '{group}' has no committed offsets.")
        return
    earliest, latest = admin.list_offsets(tps, -2), admin.list_offsets(tps, -1)
    by_time = admin.list_offsets(tps, spec.value) if spec.method == "timestamp" else {}
    plan = {}
    for tp in tps:
        cur = committed[tp].offset if tp in committed else None
        if spec.method == "current":
            plan[tp] = cur if cur is not None else latest[tp]
        else:
            plan[tp] = plan_reset(spec, tp, cur, earliest[tp], latest[tp], by_time.get(tp))
    if execute:
        admin.alter_consumer_group_offsets(group, plan)
    click.echo(_table([[group, tp.topic, tp.partition, off] for tp, off in sorted(plan.items())],
                      ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]))
    if not execute:
        click.echo("\n(dry run: nothing was committed; use --execute to apply)", err=False)


if __name__ == "__main__":
    sys.exit(groups())

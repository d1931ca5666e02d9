"""Kafka's console tools as `brokerlab topics | produce | consume`."""
from __future__ import annotations

import sys
import time

import click

from client.common import errors

DEFAULT_BOOTSTRAP = "127.0.0.1:9100"


def _remember_command_config(ctx, param, value):
    ctx.meta["brokerlab.command_config"] = value
    return value


def bootstrap_option(f):
    """--bootstrap-server, and Kafka's --command-config: a properties file of client settings (a secured
    cluster's security.protocol, ssl.ca.location, sasl.*; `brokerlab up --tls` writes one without the
    SASL user as <data dir>/client-security.properties)."""
    f = click.option("--command-config", type=click.Path(dir_okay=False, exists=True), default=None,
                     envvar="BROKERLAB_COMMAND_CONFIG", expose_value=False, callback=_remember_command_config,
                     help="Client properties file (security settings), as Kafka's tools take it "
                          "(env BROKERLAB_COMMAND_CONFIG).")(f)
    return click.option("--bootstrap-server", "bootstrap", envvar="BROKERLAB_BOOTSTRAP",
                        default=DEFAULT_BOOTSTRAP, show_default=True,
                        help="host:port[,host:port] (env BROKERLAB_BOOTSTRAP)")(f)


def read_properties(path: str) -> dict:
    """A Java-style properties file: key=value lines, # comments."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", "!")) and "=" in line:
                k, v = line.split("=", 1)
                out[k.strip()] = v.strip()
    return out


def client_props(bootstrap: str) -> dict:
    """bootstrap.servers plus the current command's --command-config settings."""
    props = {"bootstrap.servers": _servers(bootstrap)}
    ctx = click.get_current_context(silent=True)
    path = ctx.meta.get("brokerlab.command_config") if ctx is not None else None
    if path:
        props.update(read_properties(path))
    return props


def parse_props(pairs, what: str) -> dict:
    out = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise click.BadParameter(f"expected key=value, got '{pair}'", param_hint=what)
        k, v = pair.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _servers(bootstrap: str) -> list[str]:
    return [s.strip() for s in bootstrap.split(",") if s.strip()]


@click.group("topics")
def topics() -> None:
    """Create, list, describe and delete topics (like kafka-topics)."""


@topics.command("create")
@bootstrap_option
@click.option("--topic", required=True)
@click.option("--partitions", default=-1, type=int, help="Default: the cluster's num.partitions.")
@click.option("--replication-factor", default=-1, type=int,
              help="Default: the cluster's default.replication.factor.")
@click.option("--config", "configs", multiple=True, metavar="KEY=VALUE")
@click.option("--if-not-exists", is_flag=True)
def topics_create(bootstrap, topic, partitions, replication_factor, configs, if_not_exists) -> None:
    from client.admin import Admin, NewTopic
    with Admin(client_props(bootstrap)) as admin:
        try:
            admin.create_topics([NewTopic(topic, partitions, replication_factor,
                                          parse_props(configs, "--config"))])
        except errors.TopicAlreadyExistsError:
            if not if_not_exists:
                raise
    click.echo(f"Created topic {topic}.")


@topics.command("list")
@bootstrap_option
@click.option("--exclude-internal", is_flag=True)
def topics_list(bootstrap, exclude_internal) -> None:
    from client.admin import Admin
    with Admin(client_props(bootstrap)) as admin:
        for name in admin.list_topics(include_internal=not exclude_internal):
            click.echo(name)


@topics.command("describe")
@bootstrap_option
@click.option("--topic", default=None)
@click.option("--under-replicated-partitions", is_flag=True, help="Only partitions whose ISR is below the replicas.")
@click.option("--unavailable-partitions", is_flag=True, help="Only partitions without a live leader.")
def topics_describe(bootstrap, topic, under_replicated_partitions, unavailable_partitions) -> None:
    from client.admin import Admin
    with Admin(client_props(bootstrap)) as admin:
        descs = admin.describe_topics([topic] if topic else None)
        live = {b.node_id for b in admin.describe_cluster().brokers if not b.fenced}
    for d in descs:
        if not topic and d.internal and (under_replicated_partitions or unavailable_partitions):
            pass
        parts = d.partitions
        if under_replicated_partitions:
            parts = [p for p in parts if len(p.isr) < len(p.replicas)]
        if unavailable_partitions:
            parts = [p for p in parts if p.leader < 0 or p.leader not in live]
        if not (under_replicated_partitions or unavailable_partitions):
            cfg = ",".join(f"{k}={v}" for k, v in sorted(d.configs.items()))
            rf = len(d.partitions[0].replicas) if d.partitions else 0
            click.echo(f"Topic: {d.name}\tPartitionCount: {len(d.partitions)}\tReplicationFactor: {rf}\t"
                       f"Configs: {cfg}")
        for p in parts:
            click.echo(f"\tTopic: {d.name}\tPartition: {p.partition}\tLeader: {p.leader if p.leader >= 0 else 'none'}"
                       f"\tLeaderEpoch: {p.leader_epoch}\tReplicas: {','.join(map(str, p.replicas))}"
                       f"\tIsr: {','.join(map(str, p.isr))}")


@topics.command("delete")
@bootstrap_option
@click.option("--topic", required=True)
def topics_delete(bootstrap, topic) -> None:
    from client.admin import Admin
    with Admin(client_props(bootstrap)) as admin:
        admin.delete_topics([topic])
    click.echo(f"Deleted topic {topic}.")


@click.command("produce")
@bootstrap_option
@click.option("--topic", required=True)
@click.option("--acks", default="1", show_default=True, help="0, 1, all or -1")
@click.option("--property", "properties", multiple=True, metavar="KEY=VALUE",
              help="parse.key=true, key.separator=: (as kafka-console-producer)")
@click.option("--producer-property", "producer_props", multiple=True, metavar="KEY=VALUE")
def produce(bootstrap, topic, acks, properties, producer_props) -> None:
    """Send each stdin line as a record (like kafka-console-producer); exit 1 if any send failed."""
    from client.producer import Producer
    props = parse_props(properties, "--property")
    parse_key = props.get("parse.key", "false").lower() == "true"
    sep = props.get("key.separator", "\t")
    cfg = {**client_props(bootstrap), "acks": acks, "linger.ms": 5,
           "enable.idempotence": acks in ("all", "-1")}
    cfg.update(parse_props(producer_props, "--producer-property"))
    failed = 0
    first_error = None
    sent = 0
    with Producer(cfg) as producer:
        # As kafka-console-producer: an unknown topic is auto-created if the cluster allows it, else an error now.
        producer.metadata.fetch([topic], allow_auto_topic_creation=True)
        producer.metadata.partitions_for(topic)
        futures = []
        for line in sys.stdin:
            line = line.rstrip("\n")
            key = None
            if parse_key:
                if sep not in line:
                    raise click.ClickException(f"No key separator '{sep}' found on line: {line}")
                key, line = line.split(sep, 1)
            futures.append(producer.send(topic, line.encode(), key=key.encode() if key is not None else None))
            sent += 1
            if len(futures) >= 10000:
                failed, first_error = _settle(futures, failed, first_error)
                futures = []
        producer.flush()
        failed, first_error = _settle(futures, failed, first_error)
    if failed:
        click.echo(f"Error: {failed} of {sent} records failed; first error: {first_error}", err=True)
        sys.exit(1)


def _settle(futures, failed, first_error):
    for f in futures:
        e = f.exception()
        if e is not None:
            failed += 1
            first_error = first_error or e
    return failed, first_error


@click.command("consume")
@bootstrap_option
@click.option("--topic", required=True)
@click.option("--from-beginning", is_flag=True)
@click.option("--partition", type=int, default=None)
@click.option("--offset", default=None, help="An offset, or earliest / latest (needs --partition).")
@click.option("--max-messages", type=int, default=None)
@click.option("--timeout-ms", type=int, default=None, help="Exit when no record arrives for this long.")
@click.option("--group", default=None, help="Consume as a member of this group (subscribe).")
@click.option("--isolation-level", type=click.Choice(["read_uncommitted", "read_committed"]),
              default="read_uncommitted", show_default=True)
@click.option("--property", "properties", multiple=True, metavar="KEY=VALUE",
              help="print.key=true, print.offset=true, print.partition=true, key.separator=\\t")
@click.option("--consumer-property", "consumer_props", multiple=True, metavar="KEY=VALUE")
def consume(bootstrap, topic, from_beginning, partition, offset, max_messages, timeout_ms, group,
            isolation_level, properties, consumer_props) -> None:
    """Print records' values one per line (like kafka-console-consumer)."""
    from client.common.types import TopicPartition
    from client.consumer import Consumer
    props = parse_props(properties, "--property")
    print_key = props.get("print.key", "false").lower() == "true"
    print_offset = props.get("print.offset", "false").lower() == "true"
    print_partition = props.get("print.partition", "false").lower() == "true"
    sep = props.get("key.separator", "\t")
    cfg = {**client_props(bootstrap), "enable.auto.commit": bool(group),
           "auto.offset.reset": "earliest" if from_beginning else "latest", "isolation.level": isolation_level}
    if group:
        cfg["group.id"] = group
    cfg.update(parse_props(consumer_props, "--consumer-property"))
    if offset is not None and partition is None:
        raise click.UsageError("--offset needs --partition")
    count = 0
    out = sys.stdout
    with Consumer(cfg) as consumer:
        if group:
            consumer.subscribe([topic])
        else:
            parts = [partition] if partition is not None else sorted(consumer.partitions_for_topic(topic))
            tps = [TopicPartition(topic, p) for p in parts]
            consumer.assign(tps)
            if offset is not None:
                if offset == "earliest":
                    consumer.seek_to_beginning(tps)
                elif offset == "latest":
                    consumer.seek_to_end(tps)
                else:
                    consumer.seek(tps[0], int(offset))
            elif from_beginning:
                consumer.seek_to_beginning(tps)
            else:
                consumer.seek_to_end(tps)
        last_data = time.monotonic()
        try:
            while max_messages is None or count < max_messages:
                recs = consumer.poll(200)
                if not recs:
                    if timeout_ms is not None and (time.monotonic() - last_data) * 1000 >= timeout_ms:
                        break
                    continue
                last_data = time.monotonic()
                lines = []
                for r in recs:
                    parts = []
                    if print_partition:
                        parts.append(f"Partition:{r.partition}")
                    if print_offset:
                        parts.append(f"Offset:{r.offset}")
                    if print_key:
                        parts.append(_text(r.key))
                    parts.append(_text(r.value))
                    lines.append(sep.join(parts))
                    count += 1
                    if max_messages is not None and count >= max_messages:
                        break
                out.write("\n".join(lines) + "\n")
            out.flush()
        except KeyboardInterrupt:
            pass
    click.echo(f"Processed a total of {count} messages", err=True)


def _text(b) -> str:
    if b is None:
        return "null"
    if isinstance(b, bytes):
        return b.decode("utf-8", errors="replace")
    return str(b)

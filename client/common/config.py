"""Configs built only from Kafka's dotted keys.

Each config class has one definition table: key -> (type, default, validator,
doc). The attribute is the key with dots (and dashes) as underscores. Unknown
keys raise ConfigError naming the key; cross-field checks run at
construction. Emulator-only keys carry the `emu.` prefix.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from client.common.errors import ConfigError

_NO_DEFAULT = object()


@dataclass(frozen=True, slots=True)
class ConfigDef:
    key: str
    type: str  # int, bool, str, list, float, any
    default: Any
    validator: Callable[[Any], bool] | None = None
    doc: str = ""
    choices: tuple | None = None


def _to_type(key: str, kind: str, value: Any) -> Any:
    try:
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("true", "1", "yes"):
                return True
            if s in ("false", "0", "no"):
                return False
            raise ValueError
        if kind == "str":
            return None if value is None else str(value)
        if kind == "list":
            if isinstance(value, str):
                return [p.strip() for p in value.split(",") if p.strip()]
            return list(value)
        return value
    except (TypeError, ValueError):
        raise ConfigError(f"Invalid value {value!r} for configuration {key}: expected {kind}") from None


def at_least(n: int) -> Callable[[Any], bool]:
    return lambda v: v >= n


class Config:
    """Base: subclasses set DEFS (a tuple of ConfigDef)."""

    DEFS: tuple[ConfigDef, ...] = ()
    PASSTHROUGH: tuple[str, ...] = ()  # key prefixes accepted as-is (callables, plugins)

    def __init__(self, values: dict[str, Any]):
        self._values = values
        for k, v in values.items():
            object.__setattr__(self, k.replace(".", "_").replace("-", "_"), v)
        self.validate()

    def __setattr__(self, name, value):  # configs are frozen after construction
        if name == "_values":
            object.__setattr__(self, name, value)
            return
        raise AttributeError(f"{type(self).__name__} is read-only")

    @classmethod
    def defs(cls) -> dict[str, ConfigDef]:
        table = {}
        for klass in reversed(cls.__mro__):
            for d in getattr(klass, "DEFS", ()):
                table[d.key] = d
        return table

    @classmethod
    def from_props(cls, props: dict[str, Any] | None = None, **overrides: Any):
        table = cls.defs()
        given = dict(props or {})
        for k, v in overrides.items():
            given[k.replace("_", ".")] = v
        values: dict[str, Any] = {}
        for key, value in given.items():
            d = table.get(key)
            if d is None:
                if any(key.startswith(p) for p in cls.PASSTHROUGH):
                    values[key] = value
                    continue
                raise ConfigError(f"Unknown configuration '{key}' for {cls.__name__}")
            v = _to_type(key, d.type, value)
            if d.choices is not None and v not in d.choices:
                raise ConfigError(
                    f"Invalid value {value!r} for configuration {key}: must be one of {list(d.choices)}")
            if d.validator is not None and v is not None and not d.validator(v):
                raise ConfigError(f"Invalid value {value!r} for configuration {key}")
            values[key] = v
        for key, d in table.items():
            if key not in values:
                if d.default is _NO_DEFAULT:
                    raise ConfigError(f"Missing required configuration '{key}'")
                values[key] = list(d.default) if isinstance(d.default, list) else d.default
        return cls(values)

    def validate(self) -> None:
        """Cross-field checks; subclasses extend."""

    def get(self, key: str) -> Any:
        return self._values[key]

    def to_props(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._values!r})"


_ACKS = ("all", "-1", "0", "1", -1, 0, 1)


def parse_acks(value: Any) -> int:
    s = str(value).strip().lower()
    if s in ("all", "-1"):
        return -1
    if s in ("0", "1"):
        return int(s)
    raise ConfigError(f"Invalid value {value!r} for configuration acks: must be one of [all, -1, 0, 1]")


COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


class CommonClientConfig(Config):
    DEFS = (
        ConfigDef("bootstrap.servers", "list", ["127.0.0.1:9100"], lambda v: len(v) > 0,
                  "host:port pairs used to find the cluster"),
        ConfigDef("client.id", "str", ""),
        ConfigDef("request.timeout.ms", "int", 30000, at_least(0)),
        ConfigDef("retry.backoff.ms", "int", 100, at_least(0)),
        ConfigDef("retry.backoff.max.ms", "int", 1000, at_least(0)),
        ConfigDef("metadata.max.age.ms", "int", 300000, at_least(0)),
        ConfigDef("reconnect.backoff.ms", "int", 50, at_least(0)),
        ConfigDef("socket.connection.setup.timeout.ms", "int", 10000, at_least(0)),
        # Security (client/common/security.py): Kafka's / librdkafka's keys.
        ConfigDef("security.protocol", "str", "PLAINTEXT", choices=SECURITY_PROTOCOLS),
        ConfigDef("ssl.ca.location", "str", None, doc="PEM CA certificate(s) (librdkafka's key)"),
        ConfigDef("ssl.truststore.location", "str", None, doc="PEM CA certificate(s) (Java's key)"),
        ConfigDef("ssl.truststore.type", "str", "PEM", choices=("PEM",)),
        ConfigDef("ssl.certificate.location", "str", None),
        ConfigDef("ssl.key.location", "str", None),
        ConfigDef("sasl.mechanism", "str", "PLAIN", choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")),
        ConfigDef("sasl.username", "str", None),
        ConfigDef("sasl.password", "str", None),
        ConfigDef("emu.control.token", "str", None,
                  doc="emu: the cluster's control token instead of SASL credentials (the cluster's own tools)"),
    )


class ProducerConfig(CommonClientConfig):
    DEFS = (
        ConfigDef("acks", "any", "all", lambda v: str(v).lower() in [str(a) for a in _ACKS]),
        ConfigDef("batch.size", "int", 16384, at_least(0)),
        ConfigDef("linger.ms", "int", 5, at_least(0)),
        ConfigDef("buffer.memory", "int", 33554432, at_least(1)),
        ConfigDef("max.block.ms", "int", 60000, at_least(0)),
        ConfigDef("max.request.size", "int", 1048576, at_least(1)),
        ConfigDef("max.in.flight.requests.per.connection", "int", 5, at_least(1)),
        ConfigDef("retries", "int", 2147483647, at_least(0)),
        ConfigDef("delivery.timeout.ms", "int", 120000, at_least(0)),
        ConfigDef("compression.type", "str", "none", choices=COMPRESSION_TYPES),
        ConfigDef("enable.idempotence", "bool", True),
        ConfigDef("transactional.id", "str", None),
        ConfigDef("transaction.timeout.ms", "int", 60000, at_least(1)),
        ConfigDef("partitioner.class", "any", None),
        ConfigDef("partitioner.ignore.keys", "bool", False),
        ConfigDef("key.serializer", "any", None),
        ConfigDef("value.serializer", "any", None),
    )

    @classmethod
    def from_props(cls, props: dict[str, Any] | None = None, **overrides: Any):
        # As Kafka 3: idempotence is on by default, but a default that conflicts with acks,
        # retries or max.in.flight is quietly turned off; only an explicit true is an error.
        given = dict(props or {})
        for k, v in overrides.items():
            given[k.replace("_", ".")] = v
        if "enable.idempotence" not in given and not given.get("transactional.id"):
            acks = parse_acks(given.get("acks", "all"))
            in_flight = _to_type("max.in.flight.requests.per.connection", "int",
                                 given.get("max.in.flight.requests.per.connection", 5))
            retries = _to_type("retries", "int", given.get("retries", 1))
            if acks != -1 or in_flight > 5 or retries == 0:
                given["enable.idempotence"] = False
        return super().from_props(given)

    def validate(self) -> None:
        acks = parse_acks(self._values["acks"])
        object.__setattr__(self, "acks_int", acks)
        if self._values["enable.idempotence"]:
            if acks != -1:
                raise ConfigError("Must set acks to all in order to use the idempotent producer "
                                  "(enable.idempotence=true). Otherwise we cannot guarantee idempotence.")
            if self._values["retries"] == 0:
                raise ConfigError("Must set retries to non-zero when using the idempotent producer "
                                  "(enable.idempotence=true)")
            if self._values["max.in.flight.requests.per.connection"] > 5:
                raise ConfigError("Must set max.in.flight.requests.per.connection to at most 5 "
                                  "to use the idempotent producer (enable.idempotence=true)")
        if self._values["transactional.id"] and not self._values["enable.idempotence"]:
            raise ConfigError("Cannot set a transactional.id without also enabling idempotence "
                              "(enable.idempotence)")
        if self._values["delivery.timeout.ms"] < (self._values["linger.ms"]
                                                  + self._values["request.timeout.ms"]):
            raise ConfigError("delivery.timeout.ms should be equal to or larger than "
                              "linger.ms + request.timeout.ms")


class ConsumerConfig(CommonClientConfig):
    DEFS = (
        ConfigDef("group.id", "str", None),
        ConfigDef("group.instance.id", "str", None),
        ConfigDef("session.timeout.ms", "int", 45000, at_least(1)),
        ConfigDef("heartbeat.interval.ms", "int", 3000, at_least(1)),
        ConfigDef("max.poll.interval.ms", "int", 300000, at_least(1)),
        ConfigDef("rebalance.timeout.ms", "int", None),
        ConfigDef("max.poll.records", "int", 500, at_least(1)),
        ConfigDef("fetch.min.bytes", "int", 1, at_least(0)),
        ConfigDef("fetch.max.bytes", "int", 52428800, at_least(0)),
        ConfigDef("fetch.max.wait.ms", "int", 500, at_least(0)),
        ConfigDef("max.partition.fetch.bytes", "int", 1048576, at_least(0)),
        ConfigDef("auto.offset.reset", "str", "latest", choices=("earliest", "latest", "none")),
        ConfigDef("enable.auto.commit", "bool", True),
        ConfigDef("auto.commit.interval.ms", "int", 5000, at_least(0)),
        ConfigDef("isolation.level", "str", "read_uncommitted",
                  choices=("read_uncommitted", "read_committed")),
        ConfigDef("partition.assignment.strategy", "list", ["range", "cooperative-sticky"]),
        ConfigDef("exclude.internal.topics", "bool", True),
        ConfigDef("check.crcs", "bool", True),
        ConfigDef("key.deserializer", "any", None),
        ConfigDef("value.deserializer", "any", None),
    )

    def validate(self) -> None:
        if self._values["heartbeat.interval.ms"] >= self._values["session.timeout.ms"]:
            raise ConfigError("heartbeat.interval.ms must be set lower than session.timeout.ms")
        if self._values["group.instance.id"] and not self._values["group.id"]:
            raise ConfigError("group.instance.id requires group.id")


class AdminConfig(CommonClientConfig):
    DEFS = (
        ConfigDef("default.api.timeout.ms", "int", 60000, at_least(0)),
    )


# Topic-level configs: Kafka's names and defaults.
TOPIC_CONFIGS: dict[str, ConfigDef] = {d.key: d for d in (
    ConfigDef("min.insync.replicas", "int", 1, at_least(1)),
    ConfigDef("unclean.leader.election.enable", "bool", False),
    ConfigDef("retention.ms", "int", 604800000, at_least(-1)),
    ConfigDef("retention.bytes", "int", -1, at_least(-1)),
    ConfigDef("cleanup.policy", "str", "delete", choices=("delete", "compact", "compact,delete")),
    ConfigDef("max.message.bytes", "int", 1048588, at_least(0)),
    ConfigDef("compression.type", "str", "producer",
              choices=("producer", "uncompressed") + COMPRESSION_TYPES),
    ConfigDef("message.timestamp.type", "str", "CreateTime", choices=("CreateTime", "LogAppendTime")),
    ConfigDef("segment.bytes", "int", 1073741824, at_least(14)),
)}


def validate_topic_configs(configs: dict[str, Any]) -> dict[str, str]:
    """Checks topic configs; returns them normalised to strings (as Kafka stores them)."""
    out = {}
    for key, value in configs.items():
        d = TOPIC_CONFIGS.get(key)
        if d is None:
            raise ConfigError(f"Unknown topic config name: {key}")
        v = _to_type(key, d.type, value)
        if d.choices is not None and v not in d.choices:
            raise ConfigError(f"Invalid value {value!r} for configuration {key}: must be one of {list(d.choices)}")
        if d.validator is not None and not d.validator(v):
            raise ConfigError(f"Invalid value {value!r} for configuration {key}")
        out[key] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


# Topic configs whose cluster-wide default is a broker config (Kafka: topic key -> broker key). A topic's
# own setting overrides it; otherwise the node's broker config decides.
TOPIC_DEFAULT_FROM_BROKER = {
    "min.insync.replicas": "min.insync.replicas",
    "unclean.leader.election.enable": "unclean.leader.election.enable",
    "max.message.bytes": "message.max.bytes",
}


def topic_config(configs: dict[str, str], key: str, broker: Config | None = None) -> Any:
    """A topic's config: its own setting, else the broker's default for it (`broker`), else Kafka's."""
    d = TOPIC_CONFIGS[key]
    if key in configs:
        return _to_type(key, d.type, configs[key])
    if broker is not None and key in TOPIC_DEFAULT_FROM_BROKER:
        return broker.get(TOPIC_DEFAULT_FROM_BROKER[key])
    return _to_type(key, d.type, d.default)


class BrokerConfig(Config):
    """Node configs (broker and coordinator); every timeout is settable so tests can run short."""
    DEFS = (
        ConfigDef("broker.heartbeat.interval.ms", "int", 2000, at_least(1)),
        ConfigDef("broker.session.timeout.ms", "int", 9000, at_least(1)),
        ConfigDef("replica.lag.time.max.ms", "int", 30000, at_least(1)),
        ConfigDef("replica.fetch.wait.max.ms", "int", 500, at_least(0)),
        ConfigDef("replica.fetch.max.bytes", "int", 1048576, at_least(1),
                  doc="per partition of a replica fetch (the leader caps a follower's request at it)"),
        ConfigDef("replica.fetch.response.max.bytes", "int", 10485760, at_least(0),
                  doc="the whole response to a replica fetch"),
        ConfigDef("fetch.max.bytes", "int", 57671680, at_least(1024),
                  doc="the whole response to a consumer fetch (Kafka's broker default, 55 MiB)"),
        ConfigDef("message.max.bytes", "int", 1048588, at_least(0),
                  doc="the largest record batch accepted; topic max.message.bytes overrides it"),
        ConfigDef("replica.fetch.backoff.ms", "int", 1000, at_least(0)),
        ConfigDef("min.insync.replicas", "int", 1, at_least(1)),
        ConfigDef("default.replication.factor", "int", 1, at_least(1)),
        ConfigDef("num.partitions", "int", 1, at_least(1)),
        ConfigDef("unclean.leader.election.enable", "bool", False),
        ConfigDef("auto.create.topics.enable", "bool", True),
        ConfigDef("offsets.topic.replication.factor", "int", 3, at_least(1)),
        ConfigDef("offsets.topic.num.partitions", "int", 1, at_least(1)),
        ConfigDef("transaction.state.log.replication.factor", "int", 3, at_least(1)),
        ConfigDef("transaction.state.log.min.isr", "int", 2, at_least(1)),
        ConfigDef("transaction.max.timeout.ms", "int", 900000, at_least(1)),
        ConfigDef("transaction.abort.timed.out.transaction.cleanup.interval.ms", "int", 10000, at_least(1)),
        ConfigDef("group.initial.rebalance.delay.ms", "int", 3000, at_least(0)),
        ConfigDef("group.min.session.timeout.ms", "int", 6000, at_least(0)),
        ConfigDef("group.max.session.timeout.ms", "int", 1800000, at_least(0)),
        ConfigDef("log.flush.sync", "bool", False, doc="emu: fsync appends (group-committed)"),
        ConfigDef("emu.fetch.purgatory.max.ms", "int", 1000, at_least(0),
                  doc="emu: the longest a fetch long-polls, whatever its max_wait_ms (node/limits.py)"),
        ConfigDef("emu.produce.purgatory.max.ms", "int", 30000, at_least(0),
                  doc="emu: the longest an acks=all produce waits for replication, whatever its timeout"),
        ConfigDef("emu.produce.sequence.wait.ms", "int", 500, at_least(0),
                  doc="emu: the longest a leader holds an idempotent batch that is ahead of its producer's "
                      "sequence for its predecessor (0: answer OUT_OF_ORDER_SEQUENCE_NUMBER at once)"),
        # Security (node/security): off by default. One protocol for every listener of a node.
        ConfigDef("security.protocol", "str", "PLAINTEXT", choices=SECURITY_PROTOCOLS,
                  doc="of every listener (Kafka and gRPC), node-to-node included"),
        ConfigDef("sasl.enabled.mechanisms", "list", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
                  lambda v: all(m in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") for m in v)),
        ConfigDef("authorizer.class.name", "str", "",
                  doc="set (e.g. org.apache.kafka.metadata.authorizer.StandardAuthorizer): ACLs are enforced"),
        ConfigDef("allow.everyone.if.no.acl.found", "bool", False),
        ConfigDef("super.users", "str", "", doc="principals allowed everything, e.g. User:admin;User:ops"),
        ConfigDef("ssl.keystore.location", "str", None, doc="PEM file with the node's private key and certificate"),
        ConfigDef("ssl.truststore.location", "str", None, doc="PEM file with the CA certificate(s) to trust"),
    )

    def validate(self) -> None:
        if self._values["broker.heartbeat.interval.ms"] >= self._values["broker.session.timeout.ms"]:
            raise ConfigError("broker.heartbeat.interval.ms must be lower than broker.session.timeout.ms")
        if self._values["security.protocol"].endswith("SSL"):
            for key in ("ssl.keystore.location", "ssl.truststore.location"):
                if not self._values[key]:
                    raise ConfigError(f"security.protocol={self._values['security.protocol']} needs {key} "
                                      f"(brokerlab certs create --dir D makes one)")

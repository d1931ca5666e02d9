"""Client libraries the chaos workloads can drive: one adapter module per library.

Every adapter module offers the classes the workloads already use (`LogClient`, `TxnClient`, with
brokerlab's constructor signatures and `invoke(f, value, extra) -> Outcome`), so generators, the
runner, the history and the checker do not change with the library. Besides:

- `LIBRARY`, `version()`: the name and installed version, for the run folder and report;
- `WORKLOADS`: the workloads it drives; anything else is refused up front (`check_support`);
- `translate(kind, props)`: Kafka's dotted keys (how the named experiments are written) in the
  library's own spelling, refusing a setting the library lacks where it changes semantics.

docs/clients.md says per library which of its errors count as definite failures, and why.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LIBRARIES", "ClientSpec", "ClientUnsupported", "adapter", "kafka_bootstrap", "resolve_clients"]

LIBRARIES = ("brokerlab", "kafka-python", "confluent-kafka", "aiokafka")
_MODULES = {"brokerlab": "chaos.clients.brokerlab", "kafka-python": "chaos.clients.kafka_python",
            "confluent-kafka": "chaos.clients.confluent", "aiokafka": "chaos.clients.aiokafka_client"}


class ClientUnsupported(ValueError):
    """The chosen library cannot run what the experiment asks (a workload or a setting)."""


def adapter(library: str):
    """The adapter module of `library` (raises ClientUnsupported for an unknown name)."""
    if library not in _MODULES:
        raise ClientUnsupported(f"unknown client library '{library}' (one of {', '.join(LIBRARIES)})")
    import importlib
    return importlib.import_module(_MODULES[library])


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """The library a run drives and its producer / consumer configs in that library's spelling."""
    library: str
    version: str
    producer: dict
    consumer: dict
    notes: tuple[str, ...] = ()  # settings translated loosely or left out, and why
    module: object = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.library} {self.version}"


def resolve_clients(section: dict | None, workload: str, library: str | None = None) -> ClientSpec:
    """The experiment's `clients:` section (`{library, producer, consumer}`) for this run.

    `library` (from --client) overrides the section's. Configs of a section without `library` are
    Kafka's dotted keys and are translated to the chosen library; a section naming its library is in
    that library's own spelling and runs only with it."""
    section = dict(section or {})
    unknown = set(section) - {"library", "producer", "consumer"}
    if unknown:
        raise ClientUnsupported(f"clients.{min(unknown)}: unknown field (library, producer, consumer)")
    own = section.get("library")
    if own is not None and own not in LIBRARIES:
        raise ClientUnsupported(f"clients.library: unknown client library '{own}' (one of {', '.join(LIBRARIES)})")
    chosen = library or own or "brokerlab"
    mod = adapter(chosen)
    producer = dict(section.get("producer") or {})
    consumer = dict(section.get("consumer") or {})
    if own is not None and own != chosen:
        raise ClientUnsupported(
            f"the experiment's clients: section is written for {own} (library: {own}, configs in its spelling); "
            f"it cannot run with --client {chosen}")
    notes: list[str] = []
    if own is None and chosen != "brokerlab":
        producer, n1 = mod.translate("producer", producer)
        consumer, n2 = mod.translate("consumer", consumer)
        notes += n1 + n2
    check_support(mod, workload)
    if hasattr(mod, "check_settings"):  # what the library itself would refuse at creation, said up front
        mod.check_settings(workload, producer, consumer)
    return ClientSpec(chosen, mod.version(), producer, consumer, tuple(notes), mod)


def check_support(mod, workload: str) -> None:
    if workload not in mod.WORKLOADS:
        why = getattr(mod, "MISSING", {}).get(workload, "its chaos adapter does not drive this workload")
        raise ClientUnsupported(f"{mod.LIBRARY} cannot run the {workload} workload: {why} "
                                f"({mod.LIBRARY} runs: {', '.join(sorted(mod.WORKLOADS))})")


def kafka_bootstrap(metadata) -> str:
    """Every node's Kafka-protocol address from brokerlab's metadata (coordinator first), so a Kafka
    client bootstrapped with it survives any one node's death."""
    host = metadata.controller.rpartition(":")[0]
    out = [f"{host}:{metadata.controller_kafka_port}"] if metadata.controller_kafka_port else []
    out += [f"{b.host}:{b.kafka_port}" for b in sorted(metadata.brokers, key=lambda b: b.node_id) if b.kafka_port]
    if not out:
        raise ClientUnsupported("the cluster has no Kafka-protocol listeners (started with --no-kafka?): "
                                "Kafka client libraries cannot reach it")
    return ",".join(out)


def dotted_to_underscore(kind: str, props: dict, known: set[str], special: dict, library: str
                         ) -> tuple[dict, list[str]]:
    """For the Python libraries that spell Kafka's `linger.ms` as `linger_ms`.

    `special`: key -> callable(value) returning (new key or None, new value, note or None); it may
    raise ClientUnsupported. Any other key the library does not know is refused, naming it."""
    out: dict = {}
    notes: list[str] = []
    for key, value in props.items():
        if key in special:
            new_key, new_value, note = special[key](value)
            if note:
                notes.append(f"{library} {kind}: {note}")
            if new_key is not None:
                out[new_key] = new_value
            continue
        name = key.replace(".", "_")
        if name not in known:
            raise ClientUnsupported(f"{library} has no {kind} setting for Kafka's '{key}' (tried '{name}')")
        out[name] = value
    return out, notes

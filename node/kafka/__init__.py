"""The Kafka binary protocol beside gRPC, so unmodified Kafka clients (kafka-python,
confluent-kafka / librdkafka, aiokafka, kcat) talk to brokerlab.

Modules:
  server.py       `KafkaListener`: TCP accept loop, one thread per connection serving its
                  requests one at a time in order (Kafka mutes a channel while a request is in
                  flight); framing, header decoding, fault decisions, dispatch.
  codec.py        frames and headers with `kio`; `build(cls, dict)` makes the requested
                  version's response from plain values, so one handler serves every version.
  context.py      `KafkaContext`: what a handler may use (the node's drivers, metadata).
  registry.py     collects the API modules' HANDLERS into one table.
  api_versions.py ApiVersions 0-4 (KIP-511 fallback); advertises exactly the registered ranges.
  cluster_api.py  Metadata, CreateTopics, DeleteTopics, DescribeConfigs, DescribeCluster.
  log_api.py      Produce, Fetch, ListOffsets, OffsetForLeaderEpoch (the broker's driver calls).
  coordinator_api.py  group and transaction APIs (FindCoordinator, JoinGroup, ..., EndTxn).

The registry shape (every API module exposes it):

    HANDLERS: dict[int, tuple[int, int, Handler]]
        api_key -> (min_version, max_version, handler)

    Handler = Callable[[KafkaContext, RequestHeader, Request], Response | None]

`header` is kio's RequestHeader (`.request_api_key`, `.request_api_version`,
`.correlation_id`, `.client_id`); `request` is kio's request object of that version.
The handler returns a kio response object of the same version -- normally
`build(ctx.response_class(header), {...})` from plain dicts -- or None for no
response (Produce with acks=0). It may block (acks=all, long-poll fetch): only
its own connection waits. An exception becomes an UNKNOWN_SERVER_ERROR response
and a log line. A version outside the registered range is answered with
UNSUPPORTED_VERSION before the handler is called. Every node registers the same
table (consistent ApiVersions everywhere); a handler that needs a broker answers
NOT_LEADER_OR_FOLLOWER on the coordinator, one that needs the coordinator
answers NOT_COORDINATOR on a broker (`ctx.broker` / `ctx.coordinator` is None there).
"""
from __future__ import annotations

COORDINATOR_NODE_ID = 0
"""The coordinator's node id in Kafka Metadata: outside the brokers' ids (which start at 1)."""

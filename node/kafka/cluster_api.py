"""Cluster APIs: Metadata, CreateTopics, DeleteTopics, DescribeConfigs, DescribeCluster.

Every node answers them. The coordinator is a node of its own in Metadata
(COORDINATOR_NODE_ID, leading no partitions) and the controller_id.
"""
from __future__ import annotations

from client.common import errors
from client.common.config import TOPIC_CONFIGS
from node.kafka import COORDINATOR_NODE_ID
from node.kafka.codec import ZERO_UUID, build
from node.kafka.context import NewTopic

METADATA, CREATE_TOPICS, DELETE_TOPICS, DESCRIBE_CONFIGS, DESCRIBE_CLUSTER = 3, 19, 20, 32, 60
RESOURCE_TOPIC, RESOURCE_BROKER = 2, 4
SOURCE_TOPIC, SOURCE_STATIC_BROKER, SOURCE_DEFAULT = 1, 4, 5


def _controller_id(ctx, md) -> int:
    return COORDINATOR_NODE_ID if md.controller_kafka_port else -1


def handle_metadata(ctx, header, request):
    version = header.request_api_version
    if request.topics is None or (version == 0 and not request.topics):
        wanted = None  # every topic
    else:
        wanted = [t.name for t in request.topics if t.name is not None]
    md = ctx.cluster_metadata(wanted or ())
    fenced = {b.node_id for b in md.brokers if b.fenced}
    topics = []
    if wanted != []:
        missing = [t.name for t in md.topics if t.error_code == errors.UnknownTopicOrPartitionError.code]
        created: dict | None = None
        allow = getattr(request, "allow_auto_topic_creation", True)
        if missing and wanted is not None and allow and ctx.config.auto_create_topics_enable:
            created = ctx.auto_create(missing)
        for t in md.topics:
            if t.error_code:
                err = t.error_code
                if created is not None and t.name in missing:
                    # Kafka answers LEADER_NOT_AVAILABLE while a new topic's leaders are elected; a name
                    # the controller left out already exists there (this broker's copy is behind).
                    e = created.get(t.name)
                    err = errors.LeaderNotAvailableError.code if e is None or isinstance(
                        e, errors.TopicAlreadyExistsError) else e.code
                topics.append({"error_code": err, "name": t.name, "topic_id": ZERO_UUID, "partitions": []})
                continue
            parts = []
            for p in t.partitions:
                parts.append({
                    "error_code": errors.LeaderNotAvailableError.code if p.leader < 0 else 0,
                    "partition_index": p.partition, "leader_id": p.leader, "leader_epoch": p.leader_epoch,
                    "replica_nodes": list(p.replicas), "isr_nodes": list(p.isr),
                    "offline_replicas": [r for r in p.replicas if r in fenced]})
            topics.append({"error_code": 0, "name": t.name, "topic_id": ZERO_UUID, "is_internal": t.internal,
                           "partitions": parts, "topic_authorized_operations": -2147483648})
    brokers = [{"node_id": nid, "host": host, "port": port, "rack": None} for nid, host, port in ctx.kafka_nodes(md)]
    return build(ctx.response_class(header), {
        "throttle_time": 0, "brokers": brokers, "cluster_id": md.cluster_id or None,
        "controller_id": _controller_id(ctx, md), "topics": topics,
        "cluster_authorized_operations": -2147483648})


def handle_create_topics(ctx, header, request):
    new = []
    results = []
    for t in request.topics:
        if t.assignments:
            results.append({"name": t.name, "error_code": errors.InvalidRequestError.code,
                            "error_message": "manual replica assignments are not supported; give a "
                                             "partition count and replication factor"})
            continue
        configs = {c.name: c.value for c in t.configs if c.value is not None}
        new.append(NewTopic(t.name, t.num_partitions, t.replication_factor, configs))
    outcome = ctx.create_topics(new, validate_only=getattr(request, "validate_only", False)) if new else {}
    md = ctx.cluster_metadata([t.name for t in new]) if new else None
    by_name = {t.name: t for t in md.topics} if md is not None else {}
    for t in new:
        e = outcome.get(t.name, errors.UnknownServerError("no answer from the controller"))
        made = by_name.get(t.name)
        res = {"name": t.name, "topic_id": ZERO_UUID, "error_code": 0 if e is None else e.code,
               "error_message": None if e is None else str(e)}
        if e is None and made is not None and made.partitions:
            res["num_partitions"] = len(made.partitions)
            res["replication_factor"] = len(made.partitions[0].replicas)
        results.append(res)
    return build(ctx.response_class(header), {"throttle_time": 0, "topics": results})


def handle_delete_topics(ctx, header, request):
    if hasattr(request, "topic_names"):
        names = list(request.topic_names)
    else:  # v6+: names or ids; we have no topic ids
        names = [t.name for t in request.topics if t.name]
    outcome = ctx.delete_topics(names) if names else {}
    out = []
    for n in names:
        e = outcome.get(n)
        out.append({"name": n, "topic_id": ZERO_UUID, "error_code": 0 if e is None else e.code,
                    "error_message": None if e is None else str(e)})
    if not hasattr(request, "topic_names"):
        for t in request.topics:
            if not t.name:
                out.append({"name": None, "topic_id": t.topic_id, "error_code": errors.UnknownTopicIdError.code,
                            "error_message": "this cluster has no topic ids: delete by name"})
    return build(ctx.response_class(header), {"throttle_time": 0, "responses": out})


def _config_string(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | tuple):
        return ",".join(str(x) for x in v)
    return str(v)


def _describe_topic(ctx, name: str, keys):
    md = ctx.cluster_metadata([name])
    t = md.topics[0] if md.topics else None
    if t is None or t.error_code:
        return errors.UnknownTopicOrPartitionError.code, f"Topic '{name}' does not exist.", []
    configs = []
    for key, d in sorted(TOPIC_CONFIGS.items()):
        if keys is not None and key not in keys:
            continue
        set_here = key in t.configs
        configs.append({"name": key, "value": t.configs[key] if set_here else _config_string(d.default),
                        "read_only": False, "config_source": SOURCE_TOPIC if set_here else SOURCE_DEFAULT,
                        "is_default": not set_here, "is_sensitive": False, "synonyms": []})
    return 0, None, configs


def _describe_broker(ctx, name: str, keys):
    if name not in ("", str(ctx.node_id)):
        return errors.InvalidRequestError.code, f"this is node {ctx.node_id}, not {name}", []
    configs = []
    for key, value in sorted(ctx.config.to_props().items()):
        if keys is not None and key not in keys:
            continue
        configs.append({"name": key, "value": _config_string(value), "read_only": True,
                        "config_source": SOURCE_STATIC_BROKER, "is_default": False, "is_sensitive": False,
                        "synonyms": []})
    return 0, None, configs


def handle_describe_configs(ctx, header, request):
    results = []
    for r in request.resources:
        keys = set(r.configuration_keys) if r.configuration_keys is not None else None
        if r.resource_type == RESOURCE_TOPIC:
            code, msg, configs = _describe_topic(ctx, r.resource_name, keys)
        elif r.resource_type == RESOURCE_BROKER:
            code, msg, configs = _describe_broker(ctx, r.resource_name, keys)
        else:
            code, msg, configs = (errors.InvalidRequestError.code,
                                  f"resource type {r.resource_type} is not supported (topics and brokers are)", [])
        results.append({"error_code": code, "error_message": msg, "resource_type": r.resource_type,
                        "resource_name": r.resource_name, "configs": configs})
    return build(ctx.response_class(header), {"throttle_time": 0, "results": results})


def handle_describe_cluster(ctx, header, request):
    md = ctx.cluster_metadata()
    brokers = [{"broker_id": nid, "host": host, "port": port, "rack": None} for nid, host, port in ctx.kafka_nodes(md)]
    return build(ctx.response_class(header), {
        "throttle_time": 0, "error_code": 0, "cluster_id": md.cluster_id, "controller_id": _controller_id(ctx, md),
        "brokers": brokers, "cluster_authorized_operations": -2147483648})


HANDLERS = {
    METADATA: (0, 12, handle_metadata),
    CREATE_TOPICS: (2, 7, handle_create_topics),
    DELETE_TOPICS: (1, 6, handle_delete_topics),
    DESCRIBE_CONFIGS: (1, 4, handle_describe_configs),
    DESCRIBE_CLUSTER: (0, 1, handle_describe_cluster),
}

"""The security gate for Kafka requests: SASL (SaslHandshake v1, SaslAuthenticate) and, per API,
the resources the request touches and Kafka's answer when one is denied.

`check(gate, session, api_key, header, request)` returns a Verdict: go on unchanged (None), answer
with `response` (the request is refused), or serve `request` (the authorized part) and pass the
handler's response through `merge` (which adds the denied part's errors, or drops what the
principal may not see). Kafka answers partly denied requests per topic, and so do we.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from client.common import errors as E
from node.kafka import codec
from node.kafka.codec import build
from node.security.acl import CLUSTER_NAME
from node.security.acl import Operation as Op
from node.security.acl import ResourceType as R
from node.security.gate import CLUSTER_DENIED, GROUP_DENIED, TOPIC_DENIED, TXN_DENIED

log = logging.getLogger(__name__)

SASL_HANDSHAKE, API_VERSIONS, SASL_AUTHENTICATE = 17, 18, 36
PRE_AUTH = (SASL_HANDSHAKE, API_VERSIONS, SASL_AUTHENTICATE)
SASL_HANDLERS_RANGE = {SASL_HANDSHAKE: (1, 1), SASL_AUTHENTICATE: (0, 2)}
OPERATION_NOT_ATTEMPTED = 55


@dataclass(frozen=True, slots=True)
class Verdict:
    response: object | None = None  # answer this; the handler is not called
    request: object | None = None  # else serve this request instead
    merge: Callable | None = None  # and pass the handler's response through this
    close: bool = False  # close the connection (a request before authentication)


GO = None


def check(gate, session, api_key: int, header, request) -> Verdict | None:
    if api_key in (SASL_HANDSHAKE, SASL_AUTHENTICATE):
        return Verdict(response=_sasl(gate, session, api_key, header, request))
    if not session.authenticated:
        if api_key == API_VERSIONS:
            return GO
        log.info("Closing connection from %s: %s before SASL authentication", session.host,
                 codec.api_name(api_key))
        return Verdict(close=True)
    if not gate.authorizer or api_key == API_VERSIONS:
        return GO
    if session.principal in gate.super_users:
        return GO
    rule = _RULES.get(api_key)
    if rule is None:  # an API without a rule here: only what may alter the cluster may call it
        if gate.authorize(session, Op.ALTER, R.CLUSTER, CLUSTER_NAME):
            return GO
        return Verdict(response=codec.error_response(api_key, header.request_api_version, CLUSTER_DENIED))
    return rule(gate, session, header, request)


# -- SASL ----------------------------------------------------------------------
def _sasl(gate, session, api_key, header, request):
    cls = codec.response_class(api_key, header.request_api_version)
    if api_key == SASL_HANDSHAKE:
        if session.authenticated and gate.sasl:
            return build(cls, {"error_code": E.IllegalSaslStateError.code, "mechanisms": list(gate.mechanisms)})
        if not gate.sasl:
            return build(cls, {"error_code": E.IllegalSaslStateError.code, "mechanisms": []})
        try:
            gate.begin_sasl(session, request.mechanism)
        except E.KafkaError as e:
            return build(cls, {"error_code": e.code, "mechanisms": list(gate.mechanisms)})
        return build(cls, {"error_code": 0, "mechanisms": list(gate.mechanisms)})
    # SaslAuthenticate
    if session.sasl is None or session.authenticated:
        e = E.IllegalSaslStateError("SaslAuthenticate without a SaslHandshake choosing a mechanism")
        return build(cls, {"error_code": e.code, "error_message": str(e), "auth_bytes": b""})
    try:
        out = session.sasl.evaluate(bytes(request.auth_bytes))
    except E.KafkaError as e:
        log.info("SASL %s authentication from %s failed: %s", session.mechanism, session.host, e)
        session.sasl = None
        return build(cls, {"error_code": e.code, "error_message": e.message, "auth_bytes": b""})
    if session.sasl.complete:
        session.principal = f"User:{session.sasl.user}"
        log.info("Authenticated %s from %s with %s", session.principal, session.host, session.mechanism)
    return build(cls, {"error_code": 0, "error_message": None, "auth_bytes": out, "session_lifetime": 0})


# -- helpers -------------------------------------------------------------------
def _nested(cls, field_name: str):
    for name, _kt, _kind, nested, _d, _o in codec._plan(cls):
        if name == field_name:
            return nested
    raise KeyError(field_name)


def _replace(obj, **fields):
    return dataclasses.replace(obj, **fields)


def _add(response, field_name: str, entries: list[dict]):
    if not entries:
        return response
    nested = _nested(type(response), field_name)
    return _replace(response, **{field_name: tuple(getattr(response, field_name) or ()) +
                                 tuple(build(nested, e) for e in entries)})


def _answer_denied(header, request, req_field: str, ok: list, resp_field: str, entries: list[dict]) -> Verdict:
    """The denied items are answered here (entries, in resp_field); the allowed ones (ok) go on to the
    handler in req_field, or, when none is, the whole answer is made here."""
    if not ok:
        resp = build(codec.response_class(header.request_api_key, header.request_api_version), {})
        return Verdict(response=_add(resp, resp_field, entries))
    return Verdict(request=_replace(request, **{req_field: tuple(ok)}),
                   merge=lambda resp: _add(resp, resp_field, entries))


def _split(items, allowed: Callable[[str], bool], key: Callable):
    ok, denied = [], []
    for it in items or ():
        (ok if allowed(key(it)) else denied).append(it)
    return ok, denied


def _topics_rule(op: Op, req_field: str, req_name: str, req_parts: str, req_index: str | None,
                 resp_field: str, resp_name: str, resp_parts: str, resp_index: str, resp_error: str,
                 pre: Callable | None = None):
    """Per topic: the authorized ones are served, the others answered `code` per partition."""

    def rule(gate, session, header, request):
        code = TOPIC_DENIED
        allowed: Callable[[str], bool] = lambda t: gate.authorize(session, op, R.TOPIC, t)
        if pre is not None:
            whole = pre(gate, session, request)
            if whole is not None:
                code, allowed = whole, (lambda t: False)
        ok, denied = _split(getattr(request, req_field), allowed, lambda t: getattr(t, req_name))
        if not denied:
            return GO
        if getattr(request, "acks", None) == 0:
            # acks=0 has no response: Kafka closes the connection on an error so the client notices
            log.info("Closing connection of %s: acks=0 produce to topics it may not write", session.principal)
            return Verdict(close=True)

        def entry(t):
            parts = [{resp_index: (p if req_index is None else getattr(p, req_index)), resp_error: code}
                     for p in getattr(t, req_parts)]
            return {resp_name: getattr(t, req_name), resp_parts: parts}

        errors_ = [entry(t) for t in denied]
        return _answer_denied(header, request, req_field, ok, resp_field, errors_)
    return rule


def _whole(*checks):
    """The request needs every (error code, operation, resource type, name-of-request) check; the first
    that fails answers its code."""

    def rule(gate, session, header, request):
        for code, op, rtype, name_of in checks:
            name = name_of(request)
            if name is not None and not gate.authorize(session, op, rtype, name):
                return Verdict(response=codec.error_response(header.request_api_key, header.request_api_version,
                                                             code))
        return GO
    return rule


def _group_of(request):
    return request.group_id


def _txn_of(request):
    return getattr(request, "transactional_id", None) or getattr(request, "v3_and_below_transactional_id", None)


def _cluster(_request):
    return CLUSTER_NAME


# -- the rules, per API ----------------------------------------------------------------
def _produce_pre(gate, session, request):
    txn = request.transactional_id
    if txn and not gate.authorize(session, Op.WRITE, R.TRANSACTIONAL_ID, txn):
        return TXN_DENIED
    return None


def _offset_commit_pre(gate, session, request):
    txn = getattr(request, "transactional_id", None)
    if txn and not gate.authorize(session, Op.WRITE, R.TRANSACTIONAL_ID, txn):
        return TXN_DENIED
    if not gate.authorize(session, Op.READ, R.GROUP, request.group_id):
        return GROUP_DENIED
    return None


def _metadata(gate, session, header, request):
    may = lambda t: gate.authorize(session, Op.DESCRIBE, R.TOPIC, t)
    if request.topics is None or (header.request_api_version == 0 and not request.topics):
        # every topic: Kafka lists only those the principal may describe
        return Verdict(request=request, merge=lambda resp: _replace(
            resp, topics=tuple(t for t in resp.topics if may(t.name))))
    ok, denied = _split(request.topics, may, lambda t: t.name)
    if getattr(request, "allow_auto_topic_creation", False) and not _may_create(gate, session, [t.name for t in ok]):
        # Kafka auto-creates only for a principal with CREATE on the cluster or the topic; others get
        # UNKNOWN_TOPIC_OR_PARTITION for a topic that does not exist
        request = _replace(request, allow_auto_topic_creation=False)
        if not denied:
            return Verdict(request=request, merge=lambda resp: resp)
    if not denied:
        return GO
    entries = [{"name": t.name, "error_code": TOPIC_DENIED, "partitions": [], "is_internal": False}
               for t in denied]
    if not ok:  # no topic to ask about: v1+ reads [] as none (v0 as every topic, so answer it here)
        if header.request_api_version == 0:
            resp = build(codec.response_class(header.request_api_key, 0), {"brokers": []})
            return Verdict(response=_add(resp, "topics", entries))
        return Verdict(request=_replace(request, topics=()), merge=lambda resp: _add(resp, "topics", entries))
    return Verdict(request=_replace(request, topics=tuple(ok)), merge=lambda resp: _add(resp, "topics", entries))


def _may_create(gate, session, topics) -> bool:
    return (gate.authorize(session, Op.CREATE, R.CLUSTER, CLUSTER_NAME)
            or all(gate.authorize(session, Op.CREATE, R.TOPIC, t) for t in topics))


def _find_coordinator(gate, session, header, request):
    key_type = getattr(request, "key_type", 0)
    rtype, code = (R.TRANSACTIONAL_ID, TXN_DENIED) if key_type == 1 else (R.GROUP, GROUP_DENIED)
    may = lambda k: gate.authorize(session, Op.DESCRIBE, rtype, k)
    if header.request_api_version < 4:
        if may(request.key):
            return GO
        return Verdict(response=codec.error_response(header.request_api_key, header.request_api_version, code))
    ok, denied = _split(request.coordinator_keys, may, lambda k: k)
    if not denied:
        return GO
    entries = [{"key": k, "node_id": -1, "host": "", "port": -1, "error_code": code,
                "error_message": E.for_code(code).name} for k in denied]
    return _answer_denied(header, request, "coordinator_keys", ok, "coordinators", entries)


def _init_producer_id(gate, session, header, request):
    txn = request.transactional_id
    if txn:
        ok, code = gate.authorize(session, Op.WRITE, R.TRANSACTIONAL_ID, txn), TXN_DENIED
    else:
        ok = (gate.authorize(session, Op.IDEMPOTENT_WRITE, R.CLUSTER, CLUSTER_NAME)
              or gate.may_write_some_topic(session))
        code = CLUSTER_DENIED
    if ok:
        return GO
    return Verdict(response=codec.error_response(header.request_api_key, header.request_api_version, code))


def _add_partitions_to_txn(gate, session, header, request):
    if header.request_api_version > 3:
        return Verdict(response=codec.error_response(header.request_api_key, header.request_api_version,
                                                     CLUSTER_DENIED))
    txn_ok = gate.authorize(session, Op.WRITE, R.TRANSACTIONAL_ID, request.v3_and_below_transactional_id)
    topics = request.v3_and_below_topics
    denied = {t.name for t in topics if not gate.authorize(session, Op.WRITE, R.TOPIC, t.name)}
    if txn_ok and not denied:
        return GO
    # Kafka: a denied topic fails the whole request; the others are OPERATION_NOT_ATTEMPTED
    results = [{"name": t.name, "results_by_partition": [
        {"partition_index": p, "partition_error_code": TXN_DENIED if not txn_ok else
         (TOPIC_DENIED if t.name in denied else OPERATION_NOT_ATTEMPTED)} for p in t.partitions]} for t in topics]
    resp = build(codec.response_class(header.request_api_key, header.request_api_version), {})
    return Verdict(response=_add(resp, "results_by_topic_v3_and_below", results))


def _offset_fetch(gate, session, header, request):
    if header.request_api_version < 8:
        return _whole((GROUP_DENIED, Op.DESCRIBE, R.GROUP, _group_of))(gate, session, header, request)
    may = lambda g: gate.authorize(session, Op.DESCRIBE, R.GROUP, g)
    ok, denied = _split(request.groups, may, lambda g: g.group_id)
    if not denied:
        return GO
    entries = [{"group_id": g.group_id, "topics": [], "error_code": GROUP_DENIED} for g in denied]
    return _answer_denied(header, request, "groups", ok, "groups", entries)


def _describe_groups(gate, session, header, request):
    may = lambda g: gate.authorize(session, Op.DESCRIBE, R.GROUP, g)
    ok, denied = _split(request.groups, may, lambda g: g)
    if not denied:
        return GO
    entries = [{"error_code": GROUP_DENIED, "group_id": g, "group_state": "", "protocol_type": "",
                "protocol_data": "", "members": []} for g in denied]
    return _answer_denied(header, request, "groups", ok, "groups", entries)


def _list_groups(gate, session, header, request):
    may = lambda g: gate.authorize(session, Op.DESCRIBE, R.GROUP, g)
    return Verdict(request=request, merge=lambda resp: _replace(
        resp, groups=tuple(g for g in resp.groups if may(g.group_id))))


def _create_topics(gate, session, header, request):
    if gate.authorize(session, Op.CREATE, R.CLUSTER, CLUSTER_NAME):
        return GO
    ok, denied = _split(request.topics, lambda t: gate.authorize(session, Op.CREATE, R.TOPIC, t), lambda t: t.name)
    if not denied:
        return GO
    entries = [{"name": t.name, "error_code": TOPIC_DENIED, "error_message": "Authorization failed."}
               for t in denied]
    return _answer_denied(header, request, "topics", ok, "topics", entries)


def _delete_topics(gate, session, header, request):
    field_ = "topic_names" if hasattr(request, "topic_names") else "topics"
    name_of = (lambda t: t) if field_ == "topic_names" else (lambda t: t.name or "")
    ok, denied = _split(getattr(request, field_), lambda t: gate.authorize(session, Op.DELETE, R.TOPIC, t), name_of)
    if not denied:
        return GO
    entries = [{"name": name_of(t), "error_code": TOPIC_DENIED} for t in denied]
    return _answer_denied(header, request, field_, ok, "responses", entries)


def _describe_configs(gate, session, header, request):
    def may(r):
        if r.resource_type == 2:
            return gate.authorize(session, Op.DESCRIBE_CONFIGS, R.TOPIC, r.resource_name)
        return gate.authorize(session, Op.DESCRIBE_CONFIGS, R.CLUSTER, CLUSTER_NAME)
    ok = [r for r in request.resources if may(r)]
    denied = [r for r in request.resources if not may(r)]
    if not denied:
        return GO
    entries = [{"error_code": TOPIC_DENIED if r.resource_type == 2 else CLUSTER_DENIED,
                "error_message": "Authorization failed.", "resource_type": r.resource_type,
                "resource_name": r.resource_name, "configs": []} for r in denied]
    return _answer_denied(header, request, "resources", ok, "results", entries)


def _alter_acls(field_: str, per_entry: dict):
    """CreateAcls / DeleteAcls: ALTER on the cluster, else CLUSTER_AUTHORIZATION_FAILED per entry."""
    def rule(gate, session, header, request):
        if gate.authorize(session, Op.ALTER, R.CLUSTER, CLUSTER_NAME):
            return GO
        resp = build(codec.response_class(header.request_api_key, header.request_api_version), {})
        out_field, extra = next(iter(per_entry.items()))
        entries = [{"error_code": CLUSTER_DENIED, "error_message": "Authorization failed.", **extra}
                   for _ in getattr(request, field_)]
        return Verdict(response=_add(resp, out_field, entries))
    return rule


def _alter_scram(gate, session, header, request):
    if gate.authorize(session, Op.ALTER, R.CLUSTER, CLUSTER_NAME):
        return GO
    resp = build(codec.response_class(header.request_api_key, header.request_api_version), {})
    users = dict.fromkeys([*(d.name for d in request.deletions), *(u.name for u in request.upsertions)])
    return Verdict(response=_add(resp, "results", [
        {"user": u, "error_code": CLUSTER_DENIED, "error_message": "Authorization failed."} for u in users]))


_RULES = {
    0: _topics_rule(Op.WRITE, "topic_data", "name", "partition_data", "index",
                    "responses", "name", "partition_responses", "index", "error_code", pre=_produce_pre),
    1: _topics_rule(Op.READ, "topics", "topic", "partitions", "partition",
                    "responses", "topic", "partitions", "partition_index", "error_code"),
    2: _topics_rule(Op.DESCRIBE, "topics", "name", "partitions", "partition_index",
                    "topics", "name", "partitions", "partition_index", "error_code"),
    3: _metadata,
    8: _topics_rule(Op.READ, "topics", "name", "partitions", "partition_index",
                    "topics", "name", "partitions", "partition_index", "error_code", pre=_offset_commit_pre),
    9: _offset_fetch,
    10: _find_coordinator,
    11: _whole((GROUP_DENIED, Op.READ, R.GROUP, _group_of)),
    12: _whole((GROUP_DENIED, Op.READ, R.GROUP, _group_of)),
    13: _whole((GROUP_DENIED, Op.READ, R.GROUP, _group_of)),
    14: _whole((GROUP_DENIED, Op.READ, R.GROUP, _group_of)),
    15: _describe_groups,
    16: _list_groups,
    19: _create_topics,
    20: _delete_topics,
    22: _init_producer_id,
    23: _topics_rule(Op.DESCRIBE, "topics", "topic", "partitions", "partition",
                     "topics", "topic", "partitions", "partition", "error_code"),
    24: _add_partitions_to_txn,
    25: _whole((TXN_DENIED, Op.WRITE, R.TRANSACTIONAL_ID, _txn_of), (GROUP_DENIED, Op.READ, R.GROUP, _group_of)),
    26: _whole((TXN_DENIED, Op.WRITE, R.TRANSACTIONAL_ID, _txn_of)),
    28: _topics_rule(Op.READ, "topics", "name", "partitions", "partition_index",
                     "topics", "name", "partitions", "partition_index", "error_code", pre=_offset_commit_pre),
    29: _whole((CLUSTER_DENIED, Op.DESCRIBE, R.CLUSTER, _cluster)),
    50: _whole((CLUSTER_DENIED, Op.DESCRIBE, R.CLUSTER, _cluster)),
    51: _alter_scram,
    30: _alter_acls("creations", {"results": {}}),
    31: _alter_acls("filters", {"filter_results": {"matching_acls": []}}),
    32: _describe_configs,
    60: _whole((CLUSTER_DENIED, Op.DESCRIBE, R.CLUSTER, _cluster)),
}


def sasl_handlers() -> dict:
    """Registry entries for SaslHandshake / SaslAuthenticate, so ApiVersions advertises them; the
    gate answers them before any handler runs."""
    def answered_by_the_gate(ctx, header, request):
        raise RuntimeError("SASL requests are answered by the security gate")
    return {k: (lo, hi, answered_by_the_gate) for k, (lo, hi) in SASL_HANDLERS_RANGE.items()}

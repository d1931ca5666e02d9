"""Kafka's SCRAM credential APIs on the Kafka listener: DescribeUserScramCredentials (50) and
AlterUserScramCredentials (51), what kafka-configs and Kafka admin clients use, over the same store
as `brokerlab users`. The client sends the salted password (Hi(password, salt, i)); the StoredKey and
ServerKey are derived here, so the password itself never travels. Registered when SASL is on; who
may call them is kafka_authz's rule (DESCRIBE / ALTER on the cluster).
"""
from __future__ import annotations

from client.common import errors as E
from client.common.pb import security_pb2 as spb
from node.kafka.codec import build
from node.security.credentials import credential_from_salted_password
from node.security.kafka_acl_api import _call

DESCRIBE_USER_SCRAM_CREDENTIALS, ALTER_USER_SCRAM_CREDENTIALS = 50, 51
MECHANISMS = {1: "SCRAM-SHA-256", 2: "SCRAM-SHA-512"}  # Kafka's ScramMechanism codes
CODES = {v: k for k, v in MECHANISMS.items()}


def handle_describe_user_scram_credentials(ctx, header, request):
    resp = _call(ctx, "DescribeUsers", spb.DescribeUsersRequest())
    cls = ctx.response_class(header)
    if getattr(resp, "error_code", 0):
        return build(cls, {"error_code": resp.error_code, "error_message": resp.error_message, "results": []})
    by_user = {u.user: u for u in resp.users}
    wanted = [u.name for u in request.users] if request.users is not None else sorted(by_user)
    results = []
    for name in dict.fromkeys(wanted):
        u = by_user.get(name)
        if u is None:
            results.append({"user": name, "error_code": E.ResourceNotFoundError.code,
                            "error_message": f"Attempt to describe a user credential that does not exist: {name}",
                            "credential_infos": []})
            continue
        results.append({"user": name, "error_code": 0, "error_message": None, "credential_infos": [
            {"mechanism": CODES[c.mechanism], "iterations": c.iterations} for c in u.credentials]})
    return build(cls, {"throttle_time": 0, "error_code": 0, "error_message": None, "results": results})


def handle_alter_user_scram_credentials(ctx, header, request):
    results: dict[str, dict] = {}

    def fail(user: str, e: E.KafkaError) -> None:
        results.setdefault(user, {"user": user, "error_code": e.code, "error_message": str(e)})

    for d in request.deletions:
        if d.mechanism not in MECHANISMS:
            fail(d.name, E.UnsupportedSaslMechanismError(f"unknown SCRAM mechanism {d.mechanism}"))
            continue
        resp = _call(ctx, "AlterUsers", spb.AlterUsersRequest(
            deletions=[spb.ScramCredentialDeletion(user=d.name, mechanism=MECHANISMS[d.mechanism])]))
        if resp.error_code:
            fail(d.name, E.for_code(resp.error_code, resp.error_message))
    for u in request.upsertions:
        if u.mechanism not in MECHANISMS:
            fail(u.name, E.UnsupportedSaslMechanismError(f"unknown SCRAM mechanism {u.mechanism}"))
            continue
        try:
            cred = credential_from_salted_password(MECHANISMS[u.mechanism], bytes(u.salt), bytes(u.salted_password),
                                                   u.iterations)
        except ValueError as e:
            fail(u.name, E.UnacceptableCredentialError(str(e)))
            continue
        resp = _call(ctx, "AlterUsers", spb.AlterUsersRequest(upsertions=[spb.ScramCredentialUpsertion(
            user=u.name, mechanism=MECHANISMS[u.mechanism], salt=cred.salt, stored_key=cred.stored_key,
            server_key=cred.server_key, iterations=cred.iterations)]))
        if resp.error_code:
            fail(u.name, E.for_code(resp.error_code, resp.error_message))
    for name in [*(d.name for d in request.deletions), *(u.name for u in request.upsertions)]:
        results.setdefault(name, {"user": name, "error_code": 0, "error_message": None})
    return build(ctx.response_class(header), {"throttle_time": 0, "results": list(results.values())})


HANDLERS = {
    DESCRIBE_USER_SCRAM_CREDENTIALS: (0, 0, handle_describe_user_scram_credentials),
    ALTER_USER_SCRAM_CREDENTIALS: (0, 0, handle_alter_user_scram_credentials),
}

"""Security end to end (issue 16): SASL_SSL + SCRAM with kafka-python and confluent-kafka, a wrong
password, plaintext at a TLS listener, ACLs (TOPIC / GROUP_AUTHORIZATION_FAILED, prefixed), the CLIs,
users and ACLs surviving a coordinator restart. One secured cluster serves the module."""
from __future__ import annotations

import logging
import os
import socket
import struct
import uuid

import pytest

from chaos.local_cluster import LocalCluster
from node.security import acl as A
from node.security.settings import Security
from tests.helpers import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADMIN, ALICE = ("admin", "admin-secret"), ("alice", "alice-secret")
T, G = A.ResourceType.TOPIC, A.ResourceType.GROUP


@pytest.fixture(scope="module")
def cluster():
    sec = Security("SASL_SSL", users=dict([ADMIN, ALICE]), authorizer=True, super_users=("User:admin",))
    with LocalCluster(brokers=2, configs={"offsets.topic.replication.factor": 2,
                                          "transaction.state.log.replication.factor": 2},
                      security=sec) as c:
        with c.security_admin() as admin:
            allow = lambda rt, name, op, pt=A.PatternType.LITERAL: A.AclBinding(
                A.ResourcePattern(rt, name, pt), A.AccessControlEntry("User:alice", "*", op, A.Permission.ALLOW))
            admin.create_acls([
                allow(T, "orders", A.Operation.WRITE),
                allow(T, "orders", A.Operation.READ),
                allow(T, "payments", A.Operation.DESCRIBE),
                A.AclBinding(A.ResourcePattern(T, "payments", A.PatternType.LITERAL),
                             A.AccessControlEntry("User:alice", "*", A.Operation.WRITE, A.Permission.DENY)),
                allow(G, "alice-", A.Operation.READ, A.PatternType.PREFIXED),
                allow(T, "shared-", A.Operation.ALL, A.PatternType.PREFIXED),
            ])
        for t in ("orders", "payments", "shared-events", "admin-only"):
            c.create_topic(t, partitions=1, replication_factor=2)
        yield c


def _kp(cluster, user, password, **kw):
    cfg = cluster.kafka_client_config(user, password)
    return dict(bootstrap_servers=cfg["bootstrap.servers"], security_protocol="SASL_SSL",
                ssl_cafile=cfg["ssl.ca.location"], sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=user,
                sasl_plain_password=password, **kw)


def test_kafka_python_sasl_ssl_scram_sha_512_produces_and_consumes(cluster):
    from kafka import KafkaConsumer, KafkaProducer
    p = KafkaProducer(**_kp(cluster, *ALICE))
    try:
        md = p.send("orders", b"kp-" + uuid.uuid4().hex.encode()).get(timeout=30)
        value = b"kp-marker-%d" % md.offset
        p.send("orders", value).get(timeout=30)
    finally:
        p.close()
    c = KafkaConsumer("orders", group_id="alice-kp", auto_offset_reset="earliest", consumer_timeout_ms=20000,
                      **_kp(cluster, *ALICE))
    try:
        seen = []
        for m in c:
            seen.append(m.value)
            if value in seen:
                break
        assert value in seen
    finally:
        c.close()


def test_confluent_kafka_sasl_ssl_scram_sha_512_produces_and_consumes(cluster):
    from confluent_kafka import Consumer, Producer
    cfg = cluster.kafka_client_config(*ALICE)
    assert cfg["security.protocol"] == "SASL_SSL" and cfg["sasl.mechanism"] == "SCRAM-SHA-512"
    value = b"ck-" + uuid.uuid4().hex.encode()
    reports = []
    p = Producer({**cfg, "enable.idempotence": True})
    p.produce("orders", value, on_delivery=lambda err, msg: reports.append(err))
    assert p.flush(30) == 0 and reports == [None]
    c = Consumer({**cfg, "group.id": "alice-ck", "auto.offset.reset": "earliest"})
    try:
        c.subscribe(["orders"])
        got = []
        wait_until(lambda: (got.append(c.poll(0.5)) or any(m is not None and m.error() is None and m.value() == value
                                                           for m in got)), 30, what="the record read back")
    finally:
        c.close()


def test_a_wrong_password_is_sasl_authentication_failed_for_both_clients(cluster, caplog):
    from confluent_kafka import KafkaError, Producer
    errs = []
    p = Producer({**cluster.kafka_client_config("alice", "not-her-password"), "error_cb": errs.append})
    p.produce("orders", b"x")
    wait_until(lambda: p.poll(0.2) is not None and any(e.code() == KafkaError._AUTHENTICATION for e in errs), 20,
               what="librdkafka's authentication error")
    auth = next(e for e in errs if e.code() == KafkaError._AUTHENTICATION)
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in auth.str()
    p.purge()
    p.flush(1)

    from kafka import KafkaProducer
    from kafka.errors import KafkaError as KpError
    caplog.set_level(logging.ERROR, logger="kafka")
    with pytest.raises(KpError):
        KafkaProducer(**_kp(cluster, "alice", "not-her-password", bootstrap_timeout_ms=3000,
                            max_block_ms=3000))
    assert "SaslAuthenticationFailedError" in caplog.text and "invalid credentials" in caplog.text


def _api_versions_frame() -> bytes:
    body = struct.pack(">hhih", 18, 0, 1, 4) + b"test"  # ApiVersions v0, correlation 1, client id "test"
    return struct.pack(">i", len(body)) + body


def test_plaintext_at_a_tls_listener_is_closed_cleanly_and_the_listener_keeps_serving(cluster):
    host, port = cluster.kafka_bootstrap_servers.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(_api_versions_frame())
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
        assert data == b"" or data[:1] == b"\x15"  # closed, or a TLS alert record: never a Kafka response
    from confluent_kafka import Producer
    reports = []
    p = Producer(cluster.kafka_client_config(*ADMIN))
    p.produce("orders", b"after-plaintext", on_delivery=lambda err, msg: reports.append(err))
    assert p.flush(30) == 0 and reports == [None]


def test_acls_alice_writes_orders_but_not_payments(cluster):
    from kafka import KafkaProducer
    from kafka.errors import TopicAuthorizationFailedError
    p = KafkaProducer(**_kp(cluster, *ALICE), retries=0)
    try:
        p.send("orders", b"allowed").get(timeout=30)
        with pytest.raises(TopicAuthorizationFailedError):
            p.send("payments", b"denied").get(timeout=30)
    finally:
        p.close()
    # no ACL at all for alice on this topic: the producer learns it from Metadata already
    p = KafkaProducer(**_kp(cluster, *ALICE), retries=0, max_block_ms=10000)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            p.send("admin-only", b"denied").get(timeout=30)
    finally:
        p.close()


def test_acls_a_group_alice_may_not_use_is_group_authorization_failed_and_prefixed_acls_allow(cluster):
    from kafka import KafkaConsumer
    from kafka.errors import GroupAuthorizationFailedError
    c = KafkaConsumer("orders", group_id="billing", auto_offset_reset="earliest", **_kp(cluster, *ALICE))
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            for _ in range(20):
                c.poll(timeout_ms=500)
    finally:
        c.close()
    # prefixed: topic shared-* (ALL) and group alice-* (READ)
    from kafka import KafkaProducer
    p = KafkaProducer(**_kp(cluster, *ALICE))
    try:
        p.send("shared-events", b"prefixed-ok").get(timeout=30)
    finally:
        p.close()
    c = KafkaConsumer("shared-events", group_id="alice-prefixed", auto_offset_reset="earliest",
                      consumer_timeout_ms=20000, **_kp(cluster, *ALICE))
    try:
        assert any(m.value == b"prefixed-ok" for m in c)
    finally:
        c.close()


class _Run:
    def __init__(self, r):
        self.returncode, self.stdout, self.stderr = r.exit_code, r.stdout, r.stderr


def _cli(cluster, *args, input_text=None):
    """`brokerlab ARGS --bootstrap-server ... --data-dir ...`, in this process (click's runner)."""
    from click.testing import CliRunner

    from brokerlab_cli import main
    return _Run(CliRunner().invoke(main, [*args, "--bootstrap-server", cluster.bootstrap_servers, "--data-dir",
                                          cluster.data_dir], input=input_text))


def test_acls_cli_add_and_list_in_kafka_acls_layout(cluster):
    r = _cli(cluster, "acls", "--add", "--allow-principal", "User:carol", "--operation", "Write", "--operation",
             "Describe", "--topic", "cli-topic")
    assert r.returncode == 0, r.stderr
    assert "Adding ACLs for resource `ResourcePattern(resourceType=TOPIC, name=cli-topic, patternType=LITERAL)`" \
        in r.stdout
    r = _cli(cluster, "acls", "--add", "--allow-principal", "User:carol", "--operation", "Read", "--group", "carol-",
             "--resource-pattern-type", "prefixed")
    assert r.returncode == 0, r.stderr
    r = _cli(cluster, "acls", "--list", "--principal", "User:carol")
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip("\n").splitlines() == [
        "Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name=cli-topic, patternType=LITERAL)`: ",
        " \t(principal=User:carol, host=*, operation=WRITE, permissionType=ALLOW)",
        "\t(principal=User:carol, host=*, operation=DESCRIBE, permissionType=ALLOW) ",
        "",
        "Current ACLs for resource `ResourcePattern(resourceType=GROUP, name=carol-, patternType=PREFIXED)`: ",
        " \t(principal=User:carol, host=*, operation=READ, permissionType=ALLOW) ",
    ]
    r = _cli(cluster, "acls", "--remove", "--allow-principal", "User:carol", "--operation", "Write", "--topic",
             "cli-topic", "--force")
    assert r.returncode == 0, r.stderr
    assert "operation=WRITE" not in _cli(cluster, "acls", "--list", "--topic", "cli-topic").stdout
    bad = _cli(cluster, "acls", "--add", "--allow-principal", "carol", "--topic", "x")
    assert bad.returncode != 0 and "User:alice" in bad.stderr


def test_users_cli_and_state_survive_a_coordinator_restart(cluster):
    r = _cli(cluster, "users", "create", "dave", "--password", "dave-secret", "--mechanism", "SCRAM-SHA-512")
    assert r.returncode == 0, r.stderr
    listed = _cli(cluster, "users", "list").stdout
    assert "SCRAM credential configs for user-principal 'dave' are SCRAM-SHA-512=iterations=4096" in listed
    assert "dave-secret" not in listed
    cluster.kill("coordinator")
    cluster.start("coordinator")
    with cluster.security_admin() as admin:
        assert "dave" in {u.user for u in admin.list_users()}
        assert any(b.pattern.name == "orders" for b in admin.describe_acls())
    # dave (no ACLs) authenticates but is denied; after the delete he cannot authenticate
    from confluent_kafka import KafkaError, Producer
    errs, reports = [], []
    p = Producer({**cluster.kafka_client_config("dave", "dave-secret"), "error_cb": errs.append})
    p.produce("orders", b"d", on_delivery=lambda err, msg: reports.append(err))
    p.flush(30)
    assert reports and reports[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert not any(e.code() == KafkaError._AUTHENTICATION for e in errs)
    r = _cli(cluster, "users", "delete", "dave")
    assert r.returncode == 0, r.stderr
    assert "'dave'" not in _cli(cluster, "users", "list").stdout


def test_brokerlab_client_authenticates_over_grpc_with_the_same_credentials(cluster):
    from client import Admin, Producer
    from client.common import errors
    with Producer({**cluster.client_config(*ALICE), "acks": "all"}) as p:
        assert p.send("orders", b"grpc-sasl").get(30).offset >= 0
    # a wrong password (or none) is refused before any servicer runs
    bad = {**cluster.client_config("alice", "not-her-password"), "request.timeout.ms": 3000,
           "default.api.timeout.ms": 3000}
    with Admin(bad) as admin, pytest.raises(errors.KafkaError, match="UNAUTHENTICATED"):
        admin.list_topics()
    no_creds = {**cluster.client_config(), "request.timeout.ms": 3000, "default.api.timeout.ms": 3000}
    no_creds.pop("emu.control.token")
    with Admin(no_creds) as admin, pytest.raises(errors.KafkaError, match="SASL authentication required"):
        admin.list_topics()


def test_revoke_user_fault_fails_authentication_mid_run_and_its_heal_restores_it(cluster):
    from confluent_kafka import KafkaError, Producer

    from chaos.nemesis import Nemesis
    nemesis = Nemesis(cluster.chaos)
    errs, reports = [], []
    p = Producer({**cluster.kafka_client_config(*ALICE), "error_cb": errs.append, "message.timeout.ms": 60000})
    p.produce("orders", b"before", on_delivery=lambda err, msg: reports.append(err))
    assert p.flush(30) == 0 and reports == [None]  # connected and authenticated
    done = nemesis.invoke({"process": "nemesis", "type": "info", "f": "revoke-user", "value": {"user": "alice"},
                           "fault_id": "r1"})
    assert "error" not in done, done
    # the open connection is closed at its next request; reconnecting fails authentication
    p.produce("orders", b"during", on_delivery=lambda err, msg: reports.append(err))
    wait_until(lambda: p.poll(0.2) is not None and any(e.code() == KafkaError._AUTHENTICATION for e in errs), 30,
               what="an authentication error while alice is revoked")
    assert len(reports) == 1
    healed = nemesis.invoke({"process": "nemesis", "type": "info", "f": "heal", "recovers": "r1"})
    assert "error" not in healed, healed
    assert p.flush(60) == 0 and reports == [None, None]  # the record sent during the window gets through
    with cluster.security_admin() as admin:
        assert not any(u.revoked for u in admin.list_users())


def test_grpc_calls_honour_the_same_acls(cluster):
    from client import Admin, Producer
    from client.common import errors
    with Producer({**cluster.client_config(*ALICE), "acks": "all", "retries": 0}) as p:
        assert p.send("orders", b"grpc-acl-ok").get(30).offset >= 0
        with pytest.raises(errors.TopicAuthorizationFailedError):
            p.send("payments", b"grpc-acl-denied").get(30)
    with Admin(cluster.client_config(*ALICE)) as admin:
        listed = set(admin.list_topics())
    assert {"orders", "payments", "shared-events"} <= listed and "admin-only" not in listed
    with Admin(cluster.client_config(*ADMIN)) as admin:  # a super user sees every topic
        assert "__consumer_offsets" in set(admin.list_topics(include_internal=True))


def test_kafka_admin_clients_manage_the_same_acls(cluster):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        AclBinding,
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )
    admin = AdminClient(cluster.kafka_client_config(*ADMIN))
    binding = AclBinding(ResourceType.TOPIC, "ck-acl", ResourcePatternType.PREFIXED, "User:erin", "*",
                         AclOperation.WRITE, AclPermissionType.ALLOW)
    for f in admin.create_acls([binding]).values():
        f.result(timeout=30)
    with cluster.security_admin() as sa:  # the same ACL store brokerlab acls uses
        assert any(b.entry.principal == "User:erin" and b.pattern.pattern_type == A.PatternType.PREFIXED
                   for b in sa.describe_acls())
    flt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, "User:erin", None, AclOperation.ANY,
                           AclPermissionType.ANY)
    assert [b.name for b in admin.describe_acls(flt).result(timeout=30)] == ["ck-acl"]
    deleted = [b for f in admin.delete_acls([flt]).values() for b in f.result(timeout=30)]
    assert [b.name for b in deleted] == ["ck-acl"]
    # alice may not alter the cluster's ACLs
    alice = AdminClient(cluster.kafka_client_config(*ALICE))
    with pytest.raises(KafkaException, match="CLUSTER_AUTHORIZATION_FAILED|Authorization failed"):
        for f in alice.create_acls([binding]).values():
            f.result(timeout=30)


def test_console_tools_take_kafkas_command_config(cluster, tmp_path):
    props = tmp_path / "alice.properties"
    props.write_text("".join(f"{k}={v}\n" for k, v in cluster.client_config(*ALICE).items()
                             if k != "bootstrap.servers"))
    from click.testing import CliRunner

    from brokerlab_cli import main

    def run(*args, input_text=None):
        return _Run(CliRunner().invoke(main, [*args, "--bootstrap-server", cluster.bootstrap_servers],
                                       input=input_text))
    r = run("topics", "list", "--command-config", str(props))
    assert r.returncode == 0, r.stderr
    assert "orders" in r.stdout.split() and "admin-only" not in r.stdout.split()  # describable topics only
    r = run("produce", "--topic", "orders", "--command-config", str(props), input_text="from-the-cli\n")
    assert r.returncode == 0, r.stderr
    r = run("topics", "list")  # no credentials at a SASL_SSL cluster: refused, one clear line
    assert r.returncode != 0 and "Error:" in r.stderr


def test_kafka_admin_clients_manage_scram_users(cluster):
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )
    admin = AdminClient(cluster.kafka_client_config(*ADMIN))
    up = UserScramCredentialUpsertion("frank", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                      b"frank-secret")
    for f in admin.alter_user_scram_credentials([up]).values():
        f.result(timeout=30)
    described = admin.describe_user_scram_credentials(["frank"])["frank"].result(timeout=30)
    assert [(i.mechanism, i.iterations) for i in described.scram_credential_infos] == \
        [(ScramMechanism.SCRAM_SHA_512, 8192)]
    # frank authenticates (the salted password the client sent became his StoredKey) and is then denied
    errs, reports = [], []
    p = Producer({**cluster.kafka_client_config("frank", "frank-secret"), "error_cb": errs.append})
    p.produce("orders", b"f", on_delivery=lambda err, msg: reports.append(err))
    p.flush(30)
    assert reports and reports[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert not any(e.code() == KafkaError._AUTHENTICATION for e in errs)
    gone = UserScramCredentialDeletion("frank", ScramMechanism.SCRAM_SHA_512)
    for f in admin.alter_user_scram_credentials([gone]).values():
        f.result(timeout=30)
    with cluster.security_admin() as sa:
        assert "frank" not in {u.user for u in sa.list_users()}


def test_chaos_cli_revokes_and_restores_a_user(cluster):
    r = _cli(cluster, "chaos", "revoke-user", "alice")
    assert r.returncode == 0, r.stderr
    assert "'alice' are SCRAM-SHA-256=iterations=4096, SCRAM-SHA-512=iterations=4096 (revoked by a fault)" in \
        _cli(cluster, "users", "list").stdout
    r = _cli(cluster, "chaos", "restore-user", "alice")
    assert r.returncode == 0, r.stderr
    assert "(revoked" not in _cli(cluster, "users", "list").stdout
    bad = _cli(cluster, "chaos", "revoke-user", "nobody")
    assert bad.returncode != 0 and "nobody" in bad.stderr


def test_aiokafka_sasl_ssl_scram_sha_256_produces(cluster):
    import asyncio

    from aiokafka import AIOKafkaProducer
    from aiokafka.helpers import create_ssl_context

    cfg = cluster.kafka_client_config(*ALICE)

    async def main():
        p = AIOKafkaProducer(bootstrap_servers=cfg["bootstrap.servers"], security_protocol="SASL_SSL",
                             ssl_context=create_ssl_context(cafile=cfg["ssl.ca.location"]),
                             sasl_mechanism="SCRAM-SHA-256", sasl_plain_username=ALICE[0],
                             sasl_plain_password=ALICE[1])
        await p.start()
        try:
            return await p.send_and_wait("orders", b"aiokafka-scram-256")
        finally:
            await p.stop()
    assert asyncio.run(main()).offset >= 0


def test_the_replica_fetch_stream_refuses_a_caller_without_credentials(cluster):
    import grpc

    from client.common.pb import broker_pb2 as bpb
    from client.common.pb import broker_pb2_grpc as bgrpc
    from client.common.security import channel_credentials_from_config
    broker = cluster.address("broker-1")
    creds = channel_credentials_from_config(cluster.client_config())
    with grpc.secure_channel(broker, creds) as ch:
        stream = bgrpc.BrokerStub(ch).ReplicaFetch(iter([bpb.ReplicaFetchRequest()]), timeout=10)
        with pytest.raises(grpc.RpcError) as e:
            next(iter(stream))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "SASL authentication required" in e.value.details()

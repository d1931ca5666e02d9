"""node/security models: SCRAM credentials, the SASL server, Kafka's ACL decision, the Kafka request gate."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from kio.schema.find_coordinator.v3 import request as fc3
from kio.schema.produce.v9 import request as prod9
from kio.schema.sasl_authenticate.v2 import request as sa2
from kio.schema.sasl_handshake.v1 import request as sh1
from kio.schema.types import TopicName
from scramp import ScramClient

from client.common import errors
from node.security import acl as A
from node.security import kafka_authz
from node.security.credentials import make_credential, verify_password
from node.security.gate import SecurityGate
from node.security.sasl import SaslServer
from node.security.state import SecurityState

ALICE = "User:alice"


def _state(**users) -> SecurityState:
    st = SecurityState()
    for u, pw in users.items():
        for m in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            st.upsert_credential(u, m, make_credential(pw, m))
    return st


def _lookup(st):
    return lambda user, mech: st.credential(user, mech)


# -- credentials ------------------------------------------------------------------
def test_credential_is_salted_and_hashed_and_proves_only_its_password():
    c1 = make_credential("alice-secret", "SCRAM-SHA-512")
    c2 = make_credential("alice-secret", "SCRAM-SHA-512")
    assert c1.salt != c2.salt and c1.stored_key != c2.stored_key  # a fresh salt each time
    assert b"alice-secret" not in repr(c1.to_json()).encode()
    assert verify_password(c1, "SCRAM-SHA-512", "alice-secret")
    assert not verify_password(c1, "SCRAM-SHA-512", "alice-secreT")
    with pytest.raises(ValueError, match="iterations"):
        make_credential("pw", "SCRAM-SHA-256", iterations=100)
    with pytest.raises(ValueError, match="unknown SCRAM mechanism"):
        make_credential("pw", "SCRAM-MD5")


# -- SASL -------------------------------------------------------------------------
def _scram(server: SaslServer, user: str, password: str, mech: str) -> None:
    client = ScramClient([mech], user, password)
    first = server.evaluate(client.get_client_first().encode())
    client.set_server_first(first.decode())
    final = server.evaluate(client.get_client_final().encode())
    client.set_server_final(final.decode())  # the client checks the server's signature too


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_exchange_authenticates_the_right_password_only(mech):
    st = _state(alice="alice-secret")
    ok = SaslServer(mech, _lookup(st))
    _scram(ok, "alice", "alice-secret", mech)
    assert ok.complete and ok.user == "alice"
    bad = SaslServer(mech, _lookup(st))
    with pytest.raises(errors.SaslAuthenticationFailedError, match="invalid credentials with SASL mechanism " + mech):
        _scram(bad, "alice", "wrong", mech)
    assert not bad.complete
    nobody = SaslServer(mech, _lookup(st))
    with pytest.raises(errors.SaslAuthenticationFailedError):
        _scram(nobody, "mallory", "alice-secret", mech)


def test_plain_is_checked_against_the_scram_credential_and_a_revoked_user_fails():
    st = _state(alice="alice-secret")
    s = SaslServer("PLAIN", _lookup(st))
    s.evaluate(b"\0alice\0alice-secret")
    assert s.user == "alice"
    with pytest.raises(errors.SaslAuthenticationFailedError):
        SaslServer("PLAIN", _lookup(st)).evaluate(b"\0alice\0nope")
    with pytest.raises(errors.SaslAuthenticationFailedError, match="authorization id"):
        SaslServer("PLAIN", _lookup(st)).evaluate(b"bob\0alice\0alice-secret")
    st.set_revoked("alice", True)
    with pytest.raises(errors.SaslAuthenticationFailedError):
        SaslServer("PLAIN", _lookup(st)).evaluate(b"\0alice\0alice-secret")
    st.set_revoked("alice", False)
    SaslServer("PLAIN", _lookup(st)).evaluate(b"\0alice\0alice-secret")


# -- ACLs -------------------------------------------------------------------------
def _b(rt, name, op, perm=A.Permission.ALLOW, principal=ALICE, pt=A.PatternType.LITERAL, host="*"):
    return A.AclBinding(A.ResourcePattern(rt, name, pt), A.AccessControlEntry(principal, host, op, perm))


T, G = A.ResourceType.TOPIC, A.ResourceType.GROUP


def _auth(acls, op, rt, name, principal=ALICE, host="10.0.0.1", **kw):
    return A.authorize(acls, principal, host, op, rt, name, **kw)


def test_acl_decision_follows_kafka_deny_wins_implied_describe_prefixes_and_defaults():
    acls = {_b(T, "orders", A.Operation.WRITE), _b(T, "payments", A.Operation.WRITE, A.Permission.DENY),
            _b(T, "payments", A.Operation.ALL, principal="User:*"), _b(T, "audit-", A.Operation.READ,
                                                                         pt=A.PatternType.PREFIXED)}
    assert _auth(acls, A.Operation.WRITE, T, "orders")
    assert _auth(acls, A.Operation.DESCRIBE, T, "orders")  # WRITE implies DESCRIBE
    assert not _auth(acls, A.Operation.READ, T, "orders")
    assert not _auth(acls, A.Operation.WRITE, T, "payments")  # DENY wins over User:* ALL
    assert _auth(acls, A.Operation.WRITE, T, "payments", principal="User:bob")
    assert _auth(acls, A.Operation.READ, T, "audit-2026")  # prefixed
    assert not _auth(acls, A.Operation.READ, T, "audit")
    # no ACL on the resource: allow.everyone.if.no.acl.found decides; super users pass anyway
    assert not _auth(acls, A.Operation.READ, T, "other")
    assert _auth(acls, A.Operation.READ, T, "other", allow_if_no_acl=True)
    assert not _auth(acls, A.Operation.READ, T, "orders", allow_if_no_acl=True)  # it has ACLs
    assert _auth(acls, A.Operation.WRITE, T, "payments", principal="User:admin", super_users={"User:admin"})
    # a host-bound ACL applies from that host only
    host_acl = {_b(G, "g", A.Operation.READ, host="10.0.0.9")}
    assert _auth(host_acl, A.Operation.READ, G, "g", host="10.0.0.9")
    assert not _auth(host_acl, A.Operation.READ, G, "g", host="10.0.0.1")


def test_acl_list_layout_is_kafka_acls():
    text = A.list_layout([_b(T, "orders", A.Operation.WRITE), _b(T, "orders", A.Operation.DESCRIBE)])
    assert text == ("Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name=orders, "
                    "patternType=LITERAL)`: \n \t(principal=User:alice, host=*, operation=WRITE, "
                    "permissionType=ALLOW)\n\t(principal=User:alice, host=*, operation=DESCRIBE, "
                    "permissionType=ALLOW) \n")


def test_operation_names_parse_as_kafka_acls_spells_them():
    assert A.parse_enum(A.Operation, "Write", "operation") == A.Operation.WRITE
    assert A.parse_enum(A.Operation, "IdempotentWrite", "operation") == A.Operation.IDEMPOTENT_WRITE
    assert A.parse_enum(A.PatternType, "prefixed", "p") == A.PatternType.PREFIXED
    with pytest.raises(ValueError, match="unknown operation 'Scribble'"):
        A.parse_enum(A.Operation, "Scribble", "operation")


def test_security_state_round_trips_through_json():
    st = _state(alice="a", bob="b")
    st.add_acls([_b(T, "orders", A.Operation.WRITE)])
    st.set_revoked("bob", True)
    again = SecurityState.from_json(st.to_json())
    assert again.to_json() == st.to_json()
    assert again.credential("bob", "SCRAM-SHA-512") is None
    assert verify_password(again.credential("alice", "SCRAM-SHA-512"), "SCRAM-SHA-512", "a")
    removed = again.remove_acls(A.AclFilter(T, "orders"))
    assert len(removed) == 1 and not again.acls


# -- the Kafka request gate ---------------------------------------------------------
def _gate(acls=()):
    g = SecurityGate("SASL_SSL", authorizer=True)
    st = _state(alice="alice-secret")
    st.add_acls(acls)
    g.update(st)
    return g


def _header(api_key, version):
    return SimpleNamespace(request_api_key=api_key, request_api_version=version, correlation_id=7, client_id="t")


def _produce(*topics):
    return prod9.ProduceRequest(transactional_id=None, acks=-1, timeout=1000, topic_data=tuple(
        prod9.TopicProduceData(name=TopicName(t), partition_data=(prod9.PartitionProduceData(index=0, records=b""),))
        for t in topics))


def test_requests_before_sasl_close_the_connection_and_sasl_authenticates():
    g = _gate()
    s = g.new_session("127.0.0.1")
    assert kafka_authz.check(g, s, 0, _header(0, 9), _produce("orders")).close
    assert kafka_authz.check(g, s, 18, _header(18, 3), None) is None  # ApiVersions is allowed
    hs = kafka_authz.check(g, s, 17, _header(17, 1), sh1.SaslHandshakeRequest(mechanism="GSSAPI"))
    assert hs.response.error_code == errors.UnsupportedSaslMechanismError.code
    hs = kafka_authz.check(g, s, 17, _header(17, 1), sh1.SaslHandshakeRequest(mechanism="PLAIN"))
    assert hs.response.error_code == 0
    bad = kafka_authz.check(g, s, 36, _header(36, 2), sa2.SaslAuthenticateRequest(auth_bytes=b"\0alice\0x"))
    assert bad.response.error_code == errors.SaslAuthenticationFailedError.code and not s.authenticated
    kafka_authz.check(g, s, 17, _header(17, 1), sh1.SaslHandshakeRequest(mechanism="PLAIN"))
    ok = kafka_authz.check(g, s, 36, _header(36, 2),
                           sa2.SaslAuthenticateRequest(auth_bytes=b"\0alice\0alice-secret"))
    assert ok.response.error_code == 0 and s.principal == ALICE


def test_a_produce_partly_denied_serves_the_allowed_topic_and_answers_the_other_topic_authorization_failed():
    g = _gate([_b(T, "orders", A.Operation.WRITE)])
    s = g.new_session("127.0.0.1")
    s.principal = ALICE
    v = kafka_authz.check(g, s, 0, _header(0, 9), _produce("orders", "payments"))
    assert [t.name for t in v.request.topic_data] == ["orders"]
    from node.kafka.codec import build, response_class
    served = build(response_class(0, 9), {"responses": [{"name": "orders", "partition_responses": [
        {"index": 0, "error_code": 0, "base_offset": 5}]}]})
    merged = {r.name: r.partition_responses[0].error_code for r in v.merge(served).responses}
    assert merged == {"orders": 0, "payments": errors.TopicAuthorizationFailedError.code}
    only_denied = kafka_authz.check(g, s, 0, _header(0, 9), _produce("payments"))
    assert only_denied.response.responses[0].partition_responses[0].error_code == 29


def test_find_coordinator_for_a_group_the_principal_may_not_use_is_group_authorization_failed():
    g = _gate([_b(G, "alice-", A.Operation.READ, pt=A.PatternType.PREFIXED)])
    s = g.new_session("127.0.0.1")
    s.principal = ALICE
    assert kafka_authz.check(g, s, 10, _header(10, 3), fc3.FindCoordinatorRequest(key="alice-g1", key_type=0)) is None
    v = kafka_authz.check(g, s, 10, _header(10, 3), fc3.FindCoordinatorRequest(key="billing", key_type=0))
    assert v.response.error_code == errors.GroupAuthorizationFailedError.code


def test_metadata_for_denied_topics_only_never_reaches_the_handler_with_them():
    from kio.schema.metadata.v9 import request as md9
    g = _gate([_b(T, "orders", A.Operation.WRITE)])
    s = g.new_session("127.0.0.1")
    s.principal = ALICE
    req = md9.MetadataRequest(topics=(md9.MetadataRequestTopic(name=TopicName("not-hers")),),
                              allow_auto_topic_creation=True, include_topic_authorized_operations=False,
                              include_cluster_authorized_operations=False)
    v = kafka_authz.check(g, s, 3, _header(3, 9), req)
    assert v.request.topics == ()  # no auto-creation of a topic it may not describe
    from node.kafka.codec import build, response_class
    merged = v.merge(build(response_class(3, 9), {"topics": []}))
    assert [(t.name, t.error_code) for t in merged.topics] == [("not-hers", 29)]


def test_an_acks_0_produce_to_a_denied_topic_closes_the_connection_as_kafka_does():
    g = _gate([_b(T, "orders", A.Operation.WRITE)])
    s = g.new_session("127.0.0.1")
    s.principal = ALICE
    req = prod9.ProduceRequest(transactional_id=None, acks=0, timeout=1000, topic_data=_produce("payments").topic_data)
    assert kafka_authz.check(g, s, 0, _header(0, 9), req).close


def test_certs_create_makes_a_ca_signed_node_certificate_for_the_loopback_names(tmp_path):
    import ipaddress
    import ssl

    from click.testing import CliRunner
    from cryptography import x509

    from node.security.cli import certs
    r = CliRunner().invoke(certs, ["create", "--dir", str(tmp_path / "tls"), "--days", "30"])
    assert r.exit_code == 0, r.output
    d = tmp_path / "tls"
    assert {p.name for p in d.iterdir()} == {"ca.pem", "ca.key", "node.pem", "client.pem", "client.key"}
    assert (d / "ca.key").stat().st_mode & 0o077 == 0 and (d / "node.pem").stat().st_mode & 0o077 == 0
    node = x509.load_pem_x509_certificate((d / "node.pem").read_bytes().split(b"-----END PRIVATE KEY-----\n")[1])
    san = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    # a TLS client trusting only ca.pem accepts the node's chain (Python's ssl does the verification)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(d / "node.pem")
    client = ssl.create_default_context(cafile=str(d / "ca.pem"))
    import socket
    import threading
    srv = socket.create_server(("127.0.0.1", 0))
    def serve():
        conn, _ = srv.accept()
        with server.wrap_socket(conn, server_side=True) as s:
            s.sendall(b"ok")
    t = threading.Thread(target=serve)
    t.start()
    with socket.create_connection(srv.getsockname()) as raw, client.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        assert s.recv(2) == b"ok"
    t.join(5)
    srv.close()
    bad = CliRunner().invoke(certs, ["create", "--dir", str(tmp_path / "x"), "--days", "0"])
    assert bad.exit_code != 0 and "--days" in bad.output


def test_security_is_off_by_default_and_then_no_gate_exists():
    from client.common.config import BrokerConfig
    assert SecurityGate.for_config(BrokerConfig.from_props({})) is None
    with pytest.raises(errors.ConfigError, match="ssl.keystore.location"):
        BrokerConfig.from_props({"security.protocol": "SSL"})
    g = SecurityGate.for_config(BrokerConfig.from_props({"security.protocol": "SASL_PLAINTEXT"}))
    assert g.sasl and not g.tls and not g.authorizer


# -- the coordinator's driver: a change is answered once the watching brokers applied it -------------
class _FakeStore:
    def __init__(self):
        self.data = {}

    def get_json(self, key):
        return self.data.get(key)

    def put_json(self, key, value):
        self.data[key] = value


class _FakeCoordinator:
    def __init__(self, store):
        from types import SimpleNamespace
        self.store = store
        self.state = SimpleNamespace(brokers={1: SimpleNamespace(broker_id=1, fenced=False)})


def test_a_security_change_returns_once_every_watching_broker_applied_it_and_survives_a_restart():
    import threading

    from node.security.service import SecurityManager
    store = _FakeStore()
    gate = SecurityGate("SASL_PLAINTEXT")
    m = SecurityManager(_FakeCoordinator(store), gate)
    assert m.watch(1, -1, 0).version == 0  # broker 1 watches (it has applied nothing yet)
    m.watch(1, 0, 0)  # and applied version 0
    cred = make_credential("alice-secret", "SCRAM-SHA-512")
    persisted_before_answer = []
    done = threading.Event()

    def change():
        m.mutate(lambda s: s.upsert_credential("alice", "SCRAM-SHA-512", cred))
        persisted_before_answer.append("security" in store.data)
        done.set()

    t = threading.Thread(target=change)
    t.start()
    # the broker's long poll sees version 1 ...
    resp = m.watch(1, 0, 5000)
    assert resp.version == 1 and not done.is_set()
    # ... and the change is answered only when it reports having applied it
    m.watch(1, 1, 0)
    t.join(10)
    assert done.is_set() and persisted_before_answer == [True]
    assert gate.check_password("alice", "alice-secret")  # the coordinator's own gate has it
    again = SecurityManager(_FakeCoordinator(store), SecurityGate("SASL_PLAINTEXT"))  # a restart
    assert again.gate.check_password("alice", "alice-secret") and again.state.version == 1


def test_metadata_auto_creates_only_for_a_principal_allowed_to_create():
    from kio.schema.metadata.v9 import request as md9
    g = _gate([_b(T, "new-", A.Operation.WRITE, pt=A.PatternType.PREFIXED),
               _b(T, "new-ok", A.Operation.CREATE)])
    s = g.new_session("127.0.0.1")
    s.principal = ALICE

    def ask(name):
        req = md9.MetadataRequest(topics=(md9.MetadataRequestTopic(name=TopicName(name)),),
                                  allow_auto_topic_creation=True, include_topic_authorized_operations=False,
                                  include_cluster_authorized_operations=False)
        return kafka_authz.check(g, s, 3, _header(3, 9), req)
    v = ask("new-x")  # WRITE (so DESCRIBE) but no CREATE: asked without auto-creation
    assert v.request.allow_auto_topic_creation is False and [t.name for t in v.request.topics] == ["new-x"]
    assert ask("new-ok") is None  # CREATE on the topic: unchanged

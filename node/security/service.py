"""The coordinator's Security service (users, ACLs) and the brokers' watcher of it.

Driver: SecurityManager owns the SecurityState under one lock; every change is persisted (the
coordinator's RocksDB, key `security`) before it is answered, then the node's own gate is updated
and watchers are woken. Brokers long-poll WatchSecurity with the version they have applied; a change
is answered once every live broker that watches has applied it (bounded), so a user created or an
ACL added is in force cluster-wide when `brokerlab users` / `acls` returns, as tests need.
"""
from __future__ import annotations

import json
import logging
import threading
import time

import grpc

from client.common import errors
from client.common.pb import security_pb2 as spb
from client.common.pb import security_pb2_grpc as sgrpc
from node.security import acl as A
from node.security.credentials import ScramCredential
from node.security.state import SecurityState

log = logging.getLogger(__name__)

STORE_KEY = "security"
PROPAGATION_WAIT_S = 5.0


def binding_pb(b: A.AclBinding) -> spb.AclBinding:
    p, e = b.pattern, b.entry
    return spb.AclBinding(resource_type=p.resource_type, resource_name=p.name, pattern_type=p.pattern_type,
                          principal=e.principal, host=e.host, operation=e.operation, permission=e.permission)


def filter_pb(f: A.AclFilter) -> spb.AclFilter:
    m = spb.AclFilter(resource_type=f.resource_type, pattern_type=f.pattern_type, operation=f.operation,
                      permission=f.permission)
    if f.name is not None:
        m.resource_name = f.name
    if f.principal is not None:
        m.principal = f.principal
    if f.host is not None:
        m.host = f.host
    return m


def binding_from_pb(m: spb.AclBinding) -> A.AclBinding:
    try:
        pattern = A.ResourcePattern(A.ResourceType(m.resource_type), m.resource_name, A.PatternType(m.pattern_type))
        entry = A.AccessControlEntry(A.check_principal(m.principal), m.host or A.WILDCARD,
                                     A.Operation(m.operation), A.Permission(m.permission))
    except ValueError as e:
        raise errors.InvalidRequestError(f"bad ACL binding: {e}") from None
    if A.ResourceType.ANY in (pattern.resource_type,) or pattern.pattern_type in (A.PatternType.ANY,
                                                                                    A.PatternType.MATCH):
        raise errors.InvalidRequestError("an ACL binding needs a concrete resource and pattern type")
    if entry.operation == A.Operation.ANY or entry.permission == A.Permission.ANY:
        raise errors.InvalidRequestError("an ACL binding needs a concrete operation and permission")
    if pattern.resource_type == A.ResourceType.CLUSTER and pattern.name != A.CLUSTER_NAME:
        raise errors.InvalidRequestError(f"the CLUSTER resource is named {A.CLUSTER_NAME}")
    return A.AclBinding(pattern, entry)


def filter_from_pb(m: spb.AclFilter) -> A.AclFilter:
    return A.AclFilter(A.ResourceType(m.resource_type or 1),
                       m.resource_name if m.HasField("resource_name") else None,
                       A.PatternType(m.pattern_type or 1),
                       m.principal if m.HasField("principal") else None,
                       m.host if m.HasField("host") else None,
                       A.Operation(m.operation or 1), A.Permission(m.permission or 1))


class SecurityManager:
    """A coordinator extension (node.extensions): register / start / stop / tick."""

    def __init__(self, node, gate=None):
        self.node = node
        self.gate = gate  # the coordinator's own SecurityGate, or None
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.state = SecurityState.from_json(node.store.get_json(STORE_KEY))  # guarded by lock
        self.applied: dict[int, int] = {}  # broker id -> version it has applied (guarded by lock)
        self._stop = threading.Event()
        if self.state.version:
            log.info("Recovered security state version %d: %d users, %d ACLs", self.state.version,
                     len(self.state.users), len(self.state.acls))
        if gate is not None:
            gate.update(self._snapshot())

    def _snapshot(self) -> SecurityState:
        return SecurityState.from_json(self.state.to_json())

    def mutate(self, fn):
        """fn(state) under the lock; a change is persisted, handed to the gate and to the watchers, and
        waited for (bounded) on every live watching broker."""
        with self.lock:
            before = self.state.version
            out = fn(self.state)
            version = self.state.version
            if version != before:
                self.node.store.put_json(STORE_KEY, self.state.to_json())
                snap = self._snapshot()
                if self.gate is not None:
                    self.gate.update(snap)
                self.changed.notify_all()
        if version != before:
            self._await_brokers(version)
        return out, version

    def _await_brokers(self, version: int) -> None:
        deadline = time.monotonic() + PROPAGATION_WAIT_S
        with self.lock:
            while not self._stop.is_set():
                live = self._live_brokers()
                if all(self.applied.get(b, version) >= version for b in live):
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    behind = sorted(b for b in live if self.applied.get(b, version) < version)
                    log.warning("Security state version %d not yet applied by brokers %s", version, behind)
                    return
                self.changed.wait(min(left, 0.5))

    def _live_brokers(self) -> list[int]:
        with_watch = set(self.applied)
        return [b.broker_id for b in list(self.node.state.brokers.values()) if not b.fenced and b.broker_id in with_watch]

    def watch(self, broker_id: int, known_version: int, max_wait_ms: int) -> spb.SecurityStateResponse:
        deadline = time.monotonic() + min(max(max_wait_ms, 0), 10000) / 1000.0
        with self.lock:
            if broker_id > 0:
                self.applied[broker_id] = known_version
                self.changed.notify_all()
            while self.state.version == known_version and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(min(left, 0.5))
            return spb.SecurityStateResponse(version=self.state.version, state_json=json.dumps(self.state.to_json()))

    # -- extension ---------------------------------------------------------
    def register(self, server) -> None:
        sgrpc.add_SecurityServicer_to_server(SecurityServicer(self), server)

    def start(self) -> None:
        pass

    def tick(self) -> None:
        pass

    def stop(self) -> None:
        self._stop.set()
        with self.lock:
            self.changed.notify_all()


def _ack(version: int = 0, e: Exception | None = None, acls=()) -> spb.SecurityAck:
    if e is None:
        return spb.SecurityAck(version=version, acls=[binding_pb(b) for b in acls])
    code = e.code if isinstance(e, errors.KafkaError) else errors.InvalidRequestError.code
    return spb.SecurityAck(error_code=code, error_message=str(e))


class SecurityServicer(sgrpc.SecurityServicer):
    """Translates only; SecurityManager decides."""

    def __init__(self, manager: SecurityManager):
        self.m = manager

    def AlterUsers(self, request, context):
        def apply(s: SecurityState):
            for u in request.upsertions:
                s.upsert_credential(u.user, u.mechanism, ScramCredential(u.salt, u.stored_key, u.server_key,
                                                                         u.iterations))
            missing = [d.user for d in request.deletions if not s.delete_user(d.user, d.mechanism or None)]
            if missing:
                raise errors.ResourceNotFoundError(f"no SCRAM credential for user(s) {', '.join(missing)}")
        try:
            _, version = self.m.mutate(apply)
        except (errors.KafkaError, ValueError) as e:
            return _ack(e=e)
        return _ack(version)

    def DescribeUsers(self, request, context):
        with self.m.lock:
            st = self.m.state
            return spb.DescribeUsersResponse(users=[spb.UserDescription(
                user=u, revoked=u in st.revoked,
                credentials=[spb.UserCredentialInfo(mechanism=m, iterations=c.iterations)
                             for m, c in sorted(creds.items())]) for u, creds in sorted(st.users.items())])

    def RevokeUser(self, request, context):
        with self.m.lock:
            known = request.user in self.m.state.users
        if not known:
            return _ack(e=errors.ResourceNotFoundError(f"no SCRAM credential for user {request.user}"))
        _, version = self.m.mutate(lambda s: s.set_revoked(request.user, request.revoked))
        return _ack(version)

    def CreateAcls(self, request, context):
        try:
            bindings = [binding_from_pb(b) for b in request.acls]
        except errors.KafkaError as e:
            return _ack(e=e)
        created, version = self.m.mutate(lambda s: s.add_acls(bindings))
        return _ack(version, acls=created)

    def DeleteAcls(self, request, context):
        gone, version = self.m.mutate(lambda s: s.remove_acls(filter_from_pb(request.filter)))
        return _ack(version, acls=gone)

    def DescribeAcls(self, request, context):
        with self.m.lock:
            return _ack(self.m.state.version, acls=self.m.state.describe_acls(filter_from_pb(request.filter)))

    def WatchSecurity(self, request, context):
        return self.m.watch(request.broker_id, request.known_version, request.max_wait_ms)


class SecurityWatcher:
    """A broker's copy of the coordinator's security state: long-polls WatchSecurity into the gate."""

    def __init__(self, broker, gate, token: str | None):
        self.broker = broker
        self.gate = gate
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="security-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        known = -1
        while not self._stop.is_set():
            try:
                stub = sgrpc.SecurityStub(self.broker.pool.get(self.broker.coordinator_addr))
                resp = stub.WatchSecurity(spb.WatchSecurityRequest(
                    known_version=known, max_wait_ms=2000, broker_id=self.broker.broker_id),
                    timeout=5, metadata=self._metadata)
            except grpc.RpcError:
                self._stop.wait(0.1)
                continue
            if resp.version != known:
                self.gate.update(SecurityState.from_json(json.loads(resp.state_json)))
                known = resp.version

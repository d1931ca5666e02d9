"""SecurityGate: the one security layer of a node, called by the Kafka listener and the gRPC servicers.

Built from the node's configs (Kafka's keys): `security.protocol` (PLAINTEXT, SSL, SASL_PLAINTEXT,
SASL_SSL: the protocol of every listener of the node), `sasl.enabled.mechanisms`,
`authorizer.class.name` (set: ACLs are enforced), `allow.everyone.if.no.acl.found`, `super.users`
(`User:a;User:b`). A node whose protocol is PLAINTEXT and that has no authorizer has no gate at all
(`SecurityGate.for_config` returns None), so the default path pays nothing.

The users and ACLs come from the coordinator's SecurityState; `update()` swaps in a new snapshot
(readers take no lock: one attribute read).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from client.common import errors
from node.security import acl as A
from node.security.sasl import SaslServer, is_supported
from node.security.state import SecurityState

log = logging.getLogger(__name__)

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")

# The error codes a denied request gets, on the Kafka listener and over gRPC alike.
TOPIC_DENIED = errors.TopicAuthorizationFailedError.code
GROUP_DENIED = errors.GroupAuthorizationFailedError.code
TXN_DENIED = errors.TransactionalIdAuthorizationFailedError.code
CLUSTER_DENIED = errors.ClusterAuthorizationFailedError.code


@dataclass(eq=False)
class Session:
    """One client connection's security state (owned by that connection's thread)."""
    host: str
    principal: str | None = None  # None until SASL completes; User:ANONYMOUS without SASL
    mechanism: str | None = None  # chosen by SaslHandshake
    sasl: SaslServer | None = None
    extra: dict = field(default_factory=dict)

    @property
    def authenticated(self) -> bool:
        return self.principal is not None


class SecurityGate:
    def __init__(self, protocol: str = "PLAINTEXT", mechanisms=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
                 authorizer: bool = False, super_users=(), allow_if_no_acl: bool = False):
        if protocol not in PROTOCOLS:
            raise ValueError(f"security.protocol {protocol!r}: one of {', '.join(PROTOCOLS)}")
        bad = [m for m in mechanisms if not is_supported(m)]
        if bad:
            raise ValueError(f"sasl.enabled.mechanisms: {', '.join(bad)} not supported "
                             f"(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 are)")
        self.protocol = protocol
        self.sasl = protocol.startswith("SASL_")
        self.tls = protocol.endswith("SSL")
        self.mechanisms = tuple(mechanisms)
        self.authorizer = authorizer
        self.super_users = frozenset(super_users)
        self.allow_if_no_acl = allow_if_no_acl
        self.state = SecurityState()  # replaced whole by update()

    @classmethod
    def for_config(cls, config) -> SecurityGate | None:
        authorizer = bool(config.authorizer_class_name)
        if config.security_protocol == "PLAINTEXT" and not authorizer:
            return None
        return cls(config.security_protocol, config.sasl_enabled_mechanisms, authorizer,
                   [p.strip() for p in config.super_users.split(";") if p.strip()],
                   config.allow_everyone_if_no_acl_found)

    def update(self, state: SecurityState) -> None:
        if state.version != self.state.version:
            log.info("Security state version %d: %d users, %d ACLs", state.version, len(state.users),
                     len(state.acls))
        self.state = state

    # -- authentication ------------------------------------------------------
    def new_session(self, host: str) -> Session:
        return Session(host, principal=None if self.sasl else A.ANONYMOUS)

    def begin_sasl(self, session: Session, mechanism: str) -> None:
        if mechanism not in self.mechanisms:
            raise errors.UnsupportedSaslMechanismError(
                f"Unsupported SASL mechanism {mechanism}; enabled: {', '.join(self.mechanisms)}")
        session.mechanism = mechanism
        session.sasl = SaslServer(mechanism, self._credential)

    def _credential(self, user: str, mechanism: str):
        return self.state.credential(user, mechanism)

    def check_password(self, user: str, password: str) -> bool:
        """gRPC's check: the password proves one of the user's stored SCRAM credentials."""
        s = SaslServer("PLAIN", self._credential)
        try:
            s.evaluate(b"\0" + user.encode() + b"\0" + password.encode())
        except errors.KafkaError:
            return False
        return True

    def still_valid(self, session: Session) -> bool:
        """False once the session's user was deleted or revoked (its connection is closed then)."""
        if not self.sasl or session.principal is None:
            return True
        user = session.principal.split(":", 1)[1]
        st = self.state
        return user in st.users and user not in st.revoked

    # -- authorization -------------------------------------------------------
    def authorize(self, session: Session, operation: A.Operation, resource_type: A.ResourceType,
                  name: str) -> bool:
        if not self.authorizer:
            return True
        return A.authorize(self.state.acls, session.principal or A.ANONYMOUS, session.host, operation,
                           resource_type, name, super_users=self.super_users,
                           allow_if_no_acl=self.allow_if_no_acl)

    def may_write_some_topic(self, session: Session) -> bool:
        """Kafka 2.8+: WRITE on any topic also allows IDEMPOTENT_WRITE."""
        if not self.authorizer or session.principal in self.super_users:
            return True
        p = session.principal or A.ANONYMOUS
        return any(b.pattern.resource_type == A.ResourceType.TOPIC and b.entry.permission == A.Permission.ALLOW
                   and b.entry.operation in (A.Operation.WRITE, A.Operation.ALL)
                   and b.entry.principal in (p, A.WILDCARD_PRINCIPAL) for b in self.state.acls)

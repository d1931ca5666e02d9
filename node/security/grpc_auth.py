"""Security on the gRPC listener, the same gate as the Kafka listener's.

Authentication (SASL on): every data-plane call carries either the cluster's control token (nodes,
agents, the cluster's own tools) or a client's SASL credentials (`x-sasl-plain`: base64
"user:password", inside TLS for SASL_SSL), checked against the same salted SCRAM credentials the
Kafka listener uses. Anything else is refused with UNAUTHENTICATED before a servicer runs. The
control services stay with ControlAuthInterceptor (token only).

Authorization (ACLs on): a client's call is checked as its Kafka request is (node.security.grpc_authz);
a denial travels in the response body with Kafka's code, per partition where the response has
partitions. Calls with the control token are the cluster's own and pass.

A verified password is remembered (by a hash of it, per security state version) so calls do not each
pay the PBKDF2 iterations; a change of the state (a user deleted, revoked, re-keyed) forgets them all.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import threading

import grpc

from client.common.security import SASL_METADATA_KEY
from node.auth import CONTROL_SERVICES, check

log = logging.getLogger(__name__)

_CACHE_MAX = 1024


class GrpcSecurityInterceptor(grpc.ServerInterceptor):
    def __init__(self, gate, control_token: str | None):
        self.gate = gate
        self.token = control_token
        self._verified: dict[tuple[str, bytes], int] = {}  # (user, sha256(password)) -> state version
        self._lock = threading.Lock()

    def principal(self, metadata) -> str | None:
        """`User:<name>` for valid SASL credentials, `cluster` for the control token, else None."""
        if self.token and check(self.token, metadata) is None:
            return "cluster"
        raw = next((v for k, v in metadata or () if k == SASL_METADATA_KEY), None)
        if raw is None:
            return None
        try:
            user, _, password = base64.b64decode(raw).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        version = self.gate.state.version
        key = (user, hashlib.sha256(password.encode()).digest())
        with self._lock:
            if self._verified.get(key) == version:
                return f"User:{user}"
        if not self.gate.check_password(user, password):
            return None
        with self._lock:
            if len(self._verified) >= _CACHE_MAX:
                self._verified.clear()
            self._verified[key] = version
        return f"User:{user}"

    def intercept_service(self, continuation, details):
        if details.method.startswith(CONTROL_SERVICES):
            return continuation(details)
        principal = self.principal(details.invocation_metadata)
        if principal is None and not self.gate.sasl:
            principal = "User:ANONYMOUS"
        if principal is not None:
            if principal == "cluster" or not self.gate.authorizer:
                return continuation(details)
            from node.security.grpc_authz import authorized_handler
            return authorized_handler(self.gate, principal, details.method, continuation(details))
        why = (f"{details.method}: SASL authentication required (security.protocol={self.gate.protocol}): give "
               f"sasl.username and sasl.password, or the credentials were refused")

        def refuse(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, why)

        return grpc.unary_unary_rpc_method_handler(refuse)

"""The cluster's control token: who may act on the cluster (agents, per-node fault services).

Whoever starts a cluster (`brokerlab up`, LocalCluster, a Procfile agent) writes a random token to
`<data dir>/control-token` (0600), or reuses the one there; agents hand it to their nodes in the
environment. Every call to the Agent and Faults services must carry it as `authorization: Bearer
<token>` metadata; anything else is refused with UNAUTHENTICATED. Local tools read the file, so users
never type the token; elsewhere it comes from `--control-token` or BROKERLAB_CONTROL_TOKEN.
"""
from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass

import grpc

TOKEN_FILE = "control-token"
TOKEN_ENV = "BROKERLAB_CONTROL_TOKEN"
DEFAULT_DATA_DIR = ".brokerlab"
METADATA_KEY = "authorization"
# The gRPC services that act on the cluster (Security: users and ACLs); data-plane services stay open
# to clients.
CONTROL_SERVICES = ("/brokerlab.Agent/", "/brokerlab.Faults/", "/brokerlab.Security/")
_HINT = (f"brokerlab writes the cluster's token to <data dir>/{TOKEN_FILE} when it starts (brokerlab up, "
         f"LocalCluster, brokerlab agent); pass it with --control-token or {TOKEN_ENV}")


def token_path(data_dir: str) -> str:
    return os.path.join(data_dir, TOKEN_FILE)


def read_token(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def ensure_token(path: str) -> str:
    """The token in `path`, created first if missing. Several processes may start at once (the Procfile's
    agents): each writes a candidate to a private file and hard-links it into place, which fails for all
    but the first, so everyone ends up reading the one complete token."""
    existing = read_token(path)
    if existing:
        return existing
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    token = read_token(path)
    if not token:
        raise RuntimeError(f"{path} is empty: remove it and start again")
    return token


@dataclass(frozen=True, slots=True)
class ResolvedToken:
    token: str | None
    source: str  # where it came from (or where it was looked for), for error messages


def resolve_token(explicit: str | None = None, data_dir: str | None = None) -> ResolvedToken:
    """A caller's token: `explicit` (--control-token), else $BROKERLAB_CONTROL_TOKEN, else the data dir's file."""
    if explicit:
        return ResolvedToken(explicit.strip(), "--control-token")
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return ResolvedToken(env, f"${TOKEN_ENV}")
    path = token_path(data_dir or DEFAULT_DATA_DIR)
    token = read_token(path)
    return ResolvedToken(token, path if token else f"{path} (not found)")


def call_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return ((METADATA_KEY, f"Bearer {token}"),) if token else ()


def check(token: str | None, metadata) -> str | None:
    """None when `metadata` carries `token`; else why the call is refused."""
    if not token:
        return f"control-plane call refused: this node was started without a control token ({TOKEN_ENV})"
    given = None
    for k, v in metadata or ():
        if k == METADATA_KEY:
            given = v
    if given is None:
        return f"control-plane call refused: no control token given; {_HINT}"
    if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].encode(), token.encode()):
        return f"control-plane call refused: bad control token (not this cluster's); {_HINT}"
    return None


class ControlAuthInterceptor(grpc.ServerInterceptor):
    """Refuses calls to the control services (Agent, Faults) that lack the cluster's token."""

    def __init__(self, token: str | None):
        self.token = token

    def intercept_service(self, continuation, details):
        if not details.method.startswith(CONTROL_SERVICES):
            return continuation(details)
        why = check(self.token, details.invocation_metadata)
        if why is None:
            return continuation(details)

        def refuse(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, why)

        return grpc.unary_unary_rpc_method_handler(refuse)

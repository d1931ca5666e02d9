"""gRPC server plumbing shared by every node."""
from __future__ import annotations

from concurrent import futures

import grpc

from client.common.network import CHANNEL_OPTIONS

WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]", "")


def advertisable_host(host: str, what: str) -> str:
    """`host` unless it is a wildcard: a node's and an agent's host is also the address others dial."""
    if host in WILDCARD_HOSTS:
        raise ValueError(f"{what} is '{host}', which binds every interface but is no address to advertise: "
                         f"give this machine's host name or IP (e.g. 127.0.0.1)")
    return host


def create_server(host: str, port: int, register, interceptors=(), max_workers: int = 64, server_credentials=None):
    """Binds `host:port` (0 picks a free port) and returns (server, port); `register(server)` adds servicers.
    server_credentials: TLS (node.security.tls.grpc_server_credentials), None: plaintext."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
                         interceptors=list(interceptors), options=CHANNEL_OPTIONS)
    register(server)
    if server_credentials is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        bound = server.add_secure_port(f"{host}:{port}", server_credentials)
    if bound == 0:
        raise OSError(f"could not bind {host}:{port}")
    server.start()
    return server, bound

"""gRPC server plumbing shared by every node."""
from __future__ import annotations

from concurrent import futures

import grpc

from client.common.network import CHANNEL_OPTIONS


def create_server(host: str, port: int, register, interceptors=(), max_workers: int = 64):
    """Binds `host:port` (0 picks a free port) and returns (server, port); `register(server)` adds servicers."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
                         interceptors=list(interceptors), options=CHANNEL_OPTIONS)
    register(server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind {host}:{port}")
    server.start()
    return server, bound

"""gRPC channels: one per address, shared by a client's threads.

Every call carries `x-src` metadata naming the caller (a node name, or
`client:<client.id>`) so fault rules at the receiving edge can tell links apart.
"""
from __future__ import annotations

import threading

import grpc

from client.common import errors

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 128 * 1024 * 1024),
    ("grpc.max_receive_message_length", 128 * 1024 * 1024),
    ("grpc.enable_retries", 0),
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.so_reuseport", 0),
    # A partition that drops packets (kernel rules, a real network) leaves connections half-open: without
    # pings a channel keeps sending into one that TCP retransmits ever more slowly, long after the heal.
    # Kafka closes a connection whose request timed out; gRPC's keepalive closes one that stops answering.
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # ... and servers accept those pings (else they answer GOAWAY too_many_pings).
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 500),
    ("grpc.http2.max_ping_strikes", 0),
]


class _SourceInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                         grpc.StreamStreamClientInterceptor):
    def __init__(self, source: str, metadata=()):
        self._src = (("x-src", source),)
        self._extra = metadata if callable(metadata) else (lambda md=tuple(metadata): md)

    def _metadata(self, details):
        return tuple(details.metadata or ()) + self._src + tuple(self._extra())

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(_Details(details, self._metadata(details)), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(_Details(details, self._metadata(details)), request)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(_Details(details, self._metadata(details)), request_iterator)


class _Details(grpc.ClientCallDetails):
    def __init__(self, d, metadata):
        self.method = d.method
        self.timeout = d.timeout
        self.metadata = metadata
        self.credentials = d.credentials
        self.wait_for_ready = getattr(d, "wait_for_ready", None)
        self.compression = getattr(d, "compression", None)


class ChannelPool:
    """Channels by address. `metadata` (pairs, or a function returning them) goes with every call: the
    control token of an agent's or the chaos controller's calls. `extra_interceptors` lets a node add its
    outbound fault rules."""

    def __init__(self, source: str, extra_interceptors=(), metadata=(), channel_credentials=None):
        """channel_credentials: grpc.ssl_channel_credentials(...) for a TLS cluster (None: plaintext)."""
        self.source = source
        self.channel_credentials = channel_credentials
        self._interceptors = [_SourceInterceptor(source, metadata), *extra_interceptors]
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def add_call_metadata(self, pairs) -> None:
        """More metadata for every call of this pool (before its first channel): a node's control token."""
        extra = self._interceptors[0]._extra
        self._interceptors[0]._extra = lambda: tuple(extra()) + tuple(pairs)

    def get(self, address: str) -> grpc.Channel:
        ch = self._channels.get(address)
        if ch is None:
            with self._lock:
                ch = self._channels.get(address)
                if ch is None:
                    if self.channel_credentials is None:
                        raw = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
                    else:
                        raw = grpc.secure_channel(address, self.channel_credentials, options=CHANNEL_OPTIONS)
                    ch = grpc.intercept_channel(raw, *self._interceptors)
                    ch._raw = raw  # kept for close()
                    self._channels[address] = ch
        return ch

    def stub(self, stub_cls, address: str):
        return stub_cls(self.get(address))

    def reset(self, address: str) -> None:
        with self._lock:
            ch = self._channels.pop(address, None)
        if ch is not None:
            ch._raw.close()

    def close(self) -> None:
        with self._lock:
            chans, self._channels = list(self._channels.values()), {}
        for ch in chans:
            ch._raw.close()


def transport_error(e: grpc.RpcError, what: str = "") -> errors.KafkaError:
    """Maps a gRPC status (transport only) to an indefinite client error."""
    code = e.code() if hasattr(e, "code") else None
    detail = e.details() if hasattr(e, "details") else str(e)
    prefix = f"{what}: " if what else ""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.KafkaTimeoutError(f"{prefix}request timed out")
    return errors.KafkaConnectionError(f"{prefix}{code.name if code else 'error'}: {detail}")

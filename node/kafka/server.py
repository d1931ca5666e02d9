"""KafkaListener: the Kafka-protocol TCP server of one node.

One thread per connection serves its requests one at a time, in order, as
Kafka does (a channel is muted while its request is in flight); connections
run in parallel. A frame we cannot read closes that connection with a log
line and touches nothing else. Faults: the node's FaultState decides for
every request (source `client:<client.id>`, method = Kafka's API name), the
same decision the gRPC interceptor makes; since one response cannot be
skipped on a Kafka connection, "refuse" closes the connection (loss) or
black-holes it (a partition) and "drop-response" carries the request out and
closes the connection before the reply.
"""
from __future__ import annotations

import logging
import socket
import struct
import threading
import time

from client.common import errors
from node.faults import PASS, Decision
from node.kafka import codec
from node.kafka.codec import MalformedRequest
from node.metrics import request_name

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 100 * 1024 * 1024  # Kafka's socket.request.max.bytes
MAX_CONNECTIONS = 1024
BLACK_HOLE_MAX_S = 600  # a black-holed connection is closed after this even if the client stays
_SIZE = struct.Struct(">i")
# The peer of the connection this thread serves (one thread per connection): what JoinGroup records as
# the member's client host, which DescribeGroups shows.
_connection = threading.local()


def current_peer_host() -> str:
    """The client address of the connection the calling handler serves ("" outside one)."""
    return getattr(_connection, "host", "")


class _Closed(Exception):
    """The peer closed the connection (or we did)."""


class KafkaListener:
    def __init__(self, host: str, port: int, ctx, handlers: dict, faults=None, sleep=time.sleep,
                 observe_request=None, security=None, ssl_context=None):
        """observe_request(name, ms): the node's request-time metric (node.metrics), or None.
        security: the node's SecurityGate (SASL, ACLs) or None; ssl_context: TLS on every connection."""
        self.ctx = ctx
        self.security = security
        self.ssl_context = ssl_context
        self._sleep = sleep  # how a fault's delay waits (tests pass one they control)
        self.observe_request = observe_request
        self.handlers = handlers
        ctx.handlers = handlers
        self.faults = faults
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()  # guarded by _lock
        self._lock = threading.Lock()
        self._sock = socket.create_server((host, port), backlog=128, reuse_port=False)
        self.port = self._sock.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, name="kafka-accept", daemon=True)

    def start(self) -> KafkaListener:
        self._accept_thread.start()
        log.info("Kafka listener on %s:%d", self._sock.getsockname()[0], self.port)
        return self

    def stop(self) -> None:
        self._stop.set()
        try:
            self._sock.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            _close(c)

    # -- connections ---------------------------------------------------------
    def _accept_loop(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                conn, peer = self._sock.accept()
            except OSError:
                return  # closed by stop()
            with self._lock:
                if len(self._conns) >= MAX_CONNECTIONS:
                    log.warning("Refusing Kafka connection from %s: %d connections open", peer, len(self._conns))
                    _close(conn)
                    continue
                self._conns.add(conn)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            n += 1
            threading.Thread(target=self._serve, args=(conn, peer), name=f"kafka-conn-{n}", daemon=True).start()

    def _serve(self, conn: socket.socket, peer) -> None:
        _connection.host = peer[0]
        session = None
        try:
            if self.ssl_context is not None:
                conn = self._tls(conn)
            if self.security is not None:
                session = self.security.new_session(peer[0])
            while not self._stop.is_set():
                frame = _read_frame(conn)
                if not self._handle(conn, peer, frame, session):
                    return
        except _Closed:
            pass
        except MalformedRequest as e:
            log.warning("Closing Kafka connection from %s:%d: malformed request: %s", *peer[:2], e)
        except OSError as e:  # a plaintext client at a TLS listener lands here (its handshake fails)
            log.info("Kafka connection from %s:%d failed: %s", *peer[:2], e)
        finally:
            with self._lock:
                self._conns.discard(conn)
            _close(conn)

    def _tls(self, raw: socket.socket):
        with self._lock:
            self._conns.discard(raw)
        raw.settimeout(10)  # a client that never completes its handshake does not hold the thread
        conn = self.ssl_context.wrap_socket(raw, server_side=True)
        conn.settimeout(None)
        with self._lock:
            self._conns.add(conn)
        return conn

    def _handle(self, conn: socket.socket, peer, frame: bytes, session=None) -> bool:
        """Serves one request; False when the connection must close."""
        api_key, version, correlation_id = codec.peek_header(frame)
        name = codec.api_name(api_key)
        entry = self.handlers.get(api_key)
        cls = codec.request_class(api_key, version)
        if entry is None or not entry[0] <= version <= entry[1]:
            if api_key == codec.API_VERSIONS_KEY:
                # KIP-511: a client newer than us sends a version we do not know; answer v0 with
                # UNSUPPORTED_VERSION and our ApiVersions range, so it retries with one we do.
                from node.kafka.api_versions import unsupported_version_response
                _send(conn, codec.encode_response(correlation_id, unsupported_version_response(self.handlers),
                                                  header_v0=True))
                return True
            if cls is None or codec.response_class(api_key, version) is None:
                raise MalformedRequest(f"API key {api_key} ({name}) v{version} is unknown to this broker")
            header, _ = codec.decode_header(frame, cls.__flexible__)
            log.info("Unsupported %s v%d from %s (client.id %s): answering UNSUPPORTED_VERSION", name, version,
                     peer[0], header.client_id)
            response = codec.error_response(api_key, version, errors.UnsupportedVersionError.code)
            _send(conn, codec.encode_response(correlation_id, response))
            return True
        t0 = time.perf_counter()
        header, request = codec.decode_request(frame, api_key, version)
        verdict = None
        if session is not None:  # node/security: SASL, then the ACLs for this request
            verdict = self._security_check(conn, session, api_key, header, request)
            if verdict is False or verdict is True:
                return verdict
            request = verdict.request if verdict is not None else request
        src = f"client:{header.client_id or 'unknown'}"
        decision = self.faults.decide(src, name) if self.faults is not None else PASS
        if decision.delay_ms:
            self._sleep(decision.delay_ms / 1000.0)
            if _peer_closed(conn):
                # The client gave up (closed the connection) while the request was in flight: it never
                # arrives, as the gRPC edge drops a delayed call past its deadline, so a delayed Heartbeat
                # cannot land late and keep a member's session alive.
                log.info("fault: %s %s delayed past the client's patience: dropped", src, name)
                return False
        if decision.action == "refuse":
            return self._refuse(conn, src, name, decision, "request")
        try:
            response = entry[2](self.ctx, header, request)
        except Exception:  # a handler bug answers UNKNOWN_SERVER_ERROR; the connection lives on
            log.exception("%s v%d from %s failed", name, version, src)
            response = codec.error_response(api_key, version, errors.UnknownServerError.code)
        if verdict is not None and response is not None:
            response = verdict.merge(response)
        if self.observe_request is not None:
            self.observe_request(request_name(name, request), (time.perf_counter() - t0) * 1000.0)
        if decision.action == "drop-response":
            log.info("fault: %s %s carried out, reply dropped: closing the connection", src, name)
            return False
        if self.faults is not None and self.faults.reply_refused(src, name):
            return self._refuse(conn, src, name, Decision("refuse"), "reply")
        if response is not None:
            _send(conn, codec.encode_response(correlation_id, response))
        return True

    def _security_check(self, conn, session, api_key: int, header, request):
        """None: serve as is; a Verdict with a request and merge: serve that; True / False: answered here
        (the connection stays / closes)."""
        from node.security import kafka_authz
        if not self.security.still_valid(session):
            log.info("Closing connection of %s from %s: its credentials were removed", session.principal,
                     session.host)
            return False
        v = kafka_authz.check(self.security, session, api_key, header, request)
        if v is None:
            return None
        if v.close:
            return False
        if v.response is not None:
            _send(conn, codec.encode_response(header.correlation_id, v.response))
            return True
        return v

    def _refuse(self, conn: socket.socket, src: str, name: str, decision: Decision, what: str) -> bool:
        """Loss closes the connection; a partition black-holes it until the rule is healed (then
        closes it, so the client reconnects) or the client gives up and closes it."""
        rule = decision.rule
        if rule is not None and rule.kind == "loss":
            log.info("fault: %s %s %s lost: closing the connection", src, name, what)
            return False
        log.info("fault: %s %s %s dropped: black-holing the connection", src, name, what)
        conn.settimeout(0.1)
        deadline = time.monotonic() + BLACK_HOLE_MAX_S
        table_name = self.faults.name
        while not self._stop.is_set() and time.monotonic() < deadline:
            table = self.faults.table  # read, not decide(): the refusal is counted once
            if (table.decide(src, table_name, name).action != "refuse"
                    and table.decide(table_name, src, name).action != "refuse"):
                break
            try:
                if not conn.recv(65536):
                    break  # the client closed it
            except TimeoutError:
                continue
            except OSError:
                break
        return False


def _read_exact(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise _Closed()
        buf += chunk
    return bytes(buf)


def _read_frame(conn: socket.socket) -> bytes:
    (size,) = _SIZE.unpack(_read_exact(conn, 4))
    if size < 8 or size > MAX_FRAME_BYTES:
        raise MalformedRequest(f"frame size {size} outside [8, {MAX_FRAME_BYTES}]")
    return _read_exact(conn, size)


def _peer_closed(conn: socket.socket) -> bool:
    """True when the client has closed its side (EOF waiting), without consuming its next request."""
    try:
        # the raw socket's recv, also under TLS (an SSLSocket refuses flags): EOF is below TLS anyway
        return socket.socket.recv(conn, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _send(conn: socket.socket, data: bytes) -> None:
    conn.sendall(data)


def _close(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        conn.close()
    except OSError:
        pass

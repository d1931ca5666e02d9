"""A raw Kafka-protocol client for tests: kio encodes the request, decodes the response."""
from __future__ import annotations

import io
import socket
import struct
from typing import Self

from kio.index import load_request_schema, load_response_schema
from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.schema.response_header.v0.header import ResponseHeader as ResponseHeaderV0
from kio.schema.response_header.v1.header import ResponseHeader as ResponseHeaderV1
from kio.serial import entity_reader, entity_writer

from node.kafka.codec import build


def encode_request(api_key: int, version: int, correlation_id: int, body: dict, client_id: str = "test") -> bytes:
    cls = load_request_schema(api_key, version)
    buf = io.BytesIO()
    header_cls = RequestHeaderV2 if cls.__flexible__ else RequestHeaderV1
    entity_writer(header_cls)(buf, header_cls(request_api_key=api_key, request_api_version=version,
                                              correlation_id=correlation_id, client_id=client_id))
    entity_writer(cls)(buf, build(cls, body))
    data = buf.getvalue()
    return struct.pack(">i", len(data)) + data


class WireClient:
    def __init__(self, address: str, client_id: str = "test", timeout_s: float = 10.0):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        self.client_id = client_id
        self.next_id = 1

    def send(self, api_key: int, version: int, body: dict, correlation_id: int | None = None) -> int:
        cid = self.next_id if correlation_id is None else correlation_id
        self.next_id = cid + 1
        self.sock.sendall(encode_request(api_key, version, cid, body, self.client_id))
        return cid

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> bytes:
        """The next response frame; ConnectionError when the server closed the connection."""
        size = struct.unpack(">i", self._read(4))[0]
        return self._read(size)

    def receive(self, api_key: int, version: int):
        """(correlation_id, response) for a request of this API and version."""
        frame = self.read_frame()
        cls = load_response_schema(api_key, version)
        header_cls = ResponseHeaderV1 if cls.__flexible__ and api_key != 18 else ResponseHeaderV0
        header, pos = entity_reader(header_cls)(frame, 0)
        body, _ = entity_reader(cls)(frame, pos)
        return header.correlation_id, body

    def call(self, api_key: int, version: int, body: dict):
        cid = self.send(api_key, version, body)
        got, resp = self.receive(api_key, version)
        assert got == cid, f"correlation id {got}, expected {cid}"
        return resp

    def closed_by_server(self) -> bool:
        """True when the server has closed the connection (reads EOF); waits up to the socket timeout."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Kafka wire codec around `kio`: frames, request headers, and version-agnostic response building.

kio has one dataclass per API, version and nesting level. Handlers describe a
response as plain dicts (Kafka's field names, ints for error codes and
milliseconds); `build` turns that into the requested version's classes,
dropping fields the version does not have and filling the ones not given
with the schema's defaults. So one handler serves every version it registers.
"""
from __future__ import annotations

import dataclasses
import datetime
import io
import struct
import types
import typing
import uuid
from functools import cache

from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.schema.index import api_key_map
from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.schema.response_header.v0.header import ResponseHeader as ResponseHeaderV0
from kio.schema.response_header.v1.header import ResponseHeader as ResponseHeaderV1
from kio.serial import entity_reader, entity_writer

API_VERSIONS_KEY = 18
_SIZE = struct.Struct(">i")
_KEY_VERSION_CORR = struct.Struct(">hhi")
ZERO_UUID = uuid.UUID(int=0)
_EPOCH = datetime.datetime.fromtimestamp(0, datetime.UTC)


class MalformedRequest(ValueError):
    """The bytes are not a request we can read: the connection is closed (with a log line)."""


def api_name(api_key: int) -> str:
    """Kafka's name for an API ("Produce", "ApiVersions"): the fault rules' method."""
    snake = api_key_map.get(api_key)
    if snake is None:
        return f"Unknown{api_key}"
    return "".join(p.capitalize() for p in snake.split("_"))


def peek_header(frame: bytes) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id): the fixed prefix every header version shares."""
    if len(frame) < _KEY_VERSION_CORR.size:
        raise MalformedRequest(f"a {len(frame)}-byte frame is too short for a request header")
    return _KEY_VERSION_CORR.unpack_from(frame, 0)


@cache
def request_class(api_key: int, api_version: int):
    """kio's request class, or None when kio does not know this API/version."""
    try:
        return load_request_schema(api_key, api_version)
    except Exception:  # noqa: BLE001 - kio raises its own index errors for unknown keys/versions
        return None


@cache
def response_class(api_key: int, api_version: int):
    try:
        return load_response_schema(api_key, api_version)
    except Exception:  # noqa: BLE001
        return None


def decode_header(frame: bytes, flexible: bool):
    """The request header (v2 for flexible request versions, else v1) and where the body starts."""
    try:
        header, size = entity_reader(RequestHeaderV2 if flexible else RequestHeaderV1)(frame, 0)
    except Exception as e:
        raise MalformedRequest(f"bad request header: {e}") from e
    return header, size


def decode_request(frame: bytes, api_key: int, api_version: int):
    """(header, request) for a version kio knows; MalformedRequest when the bytes do not parse."""
    cls = request_class(api_key, api_version)
    header, pos = decode_header(frame, cls.__flexible__)
    try:
        body, _ = entity_reader(cls)(frame, pos)
    except Exception as e:
        raise MalformedRequest(f"bad {api_name(api_key)} v{api_version} body: {e}") from e
    # Bytes after the body are ignored, as Kafka's request parsing ignores them: librdkafka's admin
    # client sends some (Metadata v12, AlterUserScramCredentials v0) and real brokers serve it.
    return header, body


def encode_response(correlation_id: int, response, *, header_v0: bool = False) -> bytes:
    """The size-prefixed frame: response header (v1 for flexible versions; ApiVersions always v0) + body."""
    buf = io.BytesIO()
    buf.write(b"\0\0\0\0")
    cls = type(response)
    if header_v0 or not cls.__flexible__ or cls.__api_key__ == API_VERSIONS_KEY:
        entity_writer(ResponseHeaderV0)(buf, ResponseHeaderV0(correlation_id=correlation_id))
    else:
        entity_writer(ResponseHeaderV1)(buf, ResponseHeaderV1(correlation_id=correlation_id))
    entity_writer(cls)(buf, response)
    out = buf.getbuffer()
    _SIZE.pack_into(out, 0, len(out) - 4)
    return bytes(out)


# -- building responses from plain values ----------------------------------
def _entity_of(tp):
    """For a field type: ("entity", cls) / ("entities", cls) / ("value", None)."""
    if typing.get_origin(_strip_optional(tp)) is tuple:  # a nullable array
        tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        inner = _strip_optional(inner)
        return ("entities", inner) if dataclasses.is_dataclass(inner) else ("value", None)
    inner = _strip_optional(tp)
    return ("entity", inner) if dataclasses.is_dataclass(inner) else ("value", None)


def _strip_optional(tp):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _optional(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


@cache
def _plan(cls) -> tuple:
    """Per field: (name, kafka_type, kind, nested class, default or MISSING, optional)."""
    out = []
    for f in dataclasses.fields(cls):
        kind, nested = _entity_of(f.type)
        default = f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
        out.append((f.name, f.metadata.get("kafka_type", ""), kind, nested, default, _optional(f.type)))
    return tuple(out)


_ZERO = {"int8": 0, "int16": 0, "int32": 0, "int64": 0, "uint16": 0, "float64": 0.0, "bool": False,
         "string": "", "bytes": b"", "records": None, "uuid": ZERO_UUID, "error_code": 0,
         "timedelta_i32": 0, "timedelta_i64": 0, "datetime_i64": -1}


def _value(kafka_type: str, v, optional: bool):
    if v is None:
        return None
    if kafka_type == "error_code":
        try:
            return ErrorCode(v)
        except ValueError:
            return ErrorCode.unknown_server_error
    if kafka_type in ("timedelta_i32", "timedelta_i64"):
        return v if isinstance(v, datetime.timedelta) else datetime.timedelta(milliseconds=v)
    if kafka_type == "datetime_i64":
        if isinstance(v, datetime.datetime):
            return v
        return None if v < 0 and optional else _EPOCH + datetime.timedelta(milliseconds=max(v, 0))
    return v


def build(cls, values: dict):
    """An instance of kio class `cls` from a dict: unknown keys are dropped (fields of other
    versions), missing fields take the schema default (or zero / empty / None)."""
    kw = {}
    for name, kafka_type, kind, nested, default, optional in _plan(cls):
        if name in values:
            v = values[name]
            if v is None and optional:
                pass  # a null array or struct stays null
            elif kind == "entities":
                v = tuple(x if dataclasses.is_dataclass(x) else build(nested, x) for x in (v or ()))
            elif kind == "entity" and v is not None and not dataclasses.is_dataclass(v):
                v = build(nested, v)
            elif isinstance(v, list | tuple):
                v = tuple(_value(kafka_type, x, False) for x in v)  # an array of primitives
            else:
                v = _value(kafka_type, v, optional)
        elif default is not dataclasses.MISSING:
            continue
        elif kind == "entities":
            v = ()
        elif kind == "entity":
            v = None if optional else build(nested, {})
        elif optional:
            v = None
        else:
            v = _value(kafka_type, _ZERO.get(kafka_type, 0), optional)
        kw[name] = v
    return cls(**kw)


def error_response(api_key: int, api_version: int, error_code: int):
    """A response for a request we refuse: every error field set, arrays empty (Kafka's
    getErrorResponse does the same per element; we answer without elements)."""
    cls = response_class(api_key, api_version)
    if cls is None:
        return None
    return build(cls, {name: error_code for name, kafka_type, *_ in _plan(cls) if kafka_type == "error_code"})

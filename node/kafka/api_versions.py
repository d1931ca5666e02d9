"""ApiVersions 0-4: advertises exactly the registered ranges, with Kafka's KIP-511 fallback."""
from __future__ import annotations

from kio.schema.api_versions.v0 import response as v0

from client.common import errors
from node.kafka.codec import API_VERSIONS_KEY, build

MIN_VERSION, MAX_VERSION = 0, 4


def handle_api_versions(ctx, header, request):
    keys = [{"api_key": k, "min_version": lo, "max_version": hi} for k, (lo, hi, _) in sorted(ctx.handlers.items())]
    return build(ctx.response_class(header), {"error_code": 0, "api_keys": keys, "throttle_time": 0})


def unsupported_version_response(handlers: dict):
    """The v0 body a client gets for an ApiVersions version we do not know: error 35 and our
    ApiVersions range, so it retries with a version we serve (KIP-511)."""
    lo, hi, _ = handlers[API_VERSIONS_KEY]
    return build(v0.ApiVersionsResponse, {
        "error_code": errors.UnsupportedVersionError.code,
        "api_keys": [{"api_key": API_VERSIONS_KEY, "min_version": lo, "max_version": hi}]})


HANDLERS = {API_VERSIONS_KEY: (MIN_VERSION, MAX_VERSION, handle_api_versions)}

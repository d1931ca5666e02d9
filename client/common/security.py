"""A client's security settings, from Kafka's keys: TLS credentials for gRPC channels, and the SASL
credentials a call carries.

    security.protocol       PLAINTEXT (default), SSL, SASL_PLAINTEXT, SASL_SSL
    ssl.ca.location         PEM CA certificate(s) to trust (librdkafka's key; Java's
                            ssl.truststore.location with ssl.truststore.type=PEM is taken too)
    ssl.certificate.location, ssl.key.location   a client certificate (optional)
    sasl.mechanism, sasl.username, sasl.password  (SASL_*: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)

Over gRPC the SASL credentials travel per call, inside TLS when the protocol is SASL_SSL; the node
checks them against the same salted SCRAM credentials the Kafka listener uses.
"""
from __future__ import annotations

import base64

SASL_METADATA_KEY = "x-sasl-plain"  # base64("user:password"), checked by node.security.grpc_auth


def _read(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{key}={path}: {e.strerror}") from None


def channel_credentials(protocol: str, ca_location: str | None, cert_location: str | None = None,
                        key_location: str | None = None):
    """grpc.ssl_channel_credentials for an SSL protocol; None for plaintext."""
    if not protocol.endswith("SSL"):
        return None
    import grpc
    if not ca_location:
        raise ValueError(f"security.protocol={protocol} needs ssl.ca.location (the cluster's CA, e.g. "
                         f"<data dir>/tls/ca.pem)")
    cert = _read(cert_location, "ssl.certificate.location") if cert_location else None
    key = _read(key_location, "ssl.key.location") if key_location else None
    return grpc.ssl_channel_credentials(root_certificates=_read(ca_location, "ssl.ca.location"),
                                        private_key=key, certificate_chain=cert)


def channel_credentials_from_config(config):
    """From a client config (CommonClientConfig) or a dict of Kafka keys."""
    get = config.get if isinstance(config, dict) else (lambda k, d=None: config.get(k))
    protocol = get("security.protocol", "PLAINTEXT") or "PLAINTEXT"
    return channel_credentials(protocol, get("ssl.ca.location", None) or get("ssl.truststore.location", None),
                               get("ssl.certificate.location", None), get("ssl.key.location", None))


def sasl_metadata(config) -> tuple:
    """The per-call metadata proving the client's SASL user; () without SASL."""
    get = config.get if isinstance(config, dict) else (lambda k, d=None: config.get(k))
    protocol = get("security.protocol", "PLAINTEXT") or "PLAINTEXT"
    token = get("emu.control.token", None)
    if token:
        return (("authorization", f"Bearer {token}"),)  # node.auth's form
    if not protocol.startswith("SASL_"):
        return ()
    user, password = get("sasl.username", None), get("sasl.password", None)
    if not user:
        raise ValueError(f"security.protocol={protocol} needs sasl.username and sasl.password")
    token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
    return ((SASL_METADATA_KEY, token),)

"""TLS material and contexts.

`create_certs(dir)` makes a local CA and, signed by it, a node certificate (every node of a local
cluster shares it: its names are the loopback ones and the given hosts) and a client certificate,
with the `cryptography` library. Files (PEM, as Kafka's `ssl.keystore.type=PEM` takes them):

    ca.pem           the CA certificate: ssl.truststore.location / ssl.ca.location
    ca.key           the CA's private key (only to sign more certificates)
    node.pem         a node's private key and certificate chain: ssl.keystore.location
    client.pem, client.key   a client certificate and key (ssl.certificate.location / ssl.key.location)
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE, CA_KEY_FILE, NODE_FILE = "ca.pem", "ca.key", "node.pem"
CLIENT_CERT_FILE, CLIENT_KEY_FILE = "client.pem", "client.key"
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
DEFAULT_DAYS = 365


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _san(hosts) -> x509.SubjectAlternativeName:
    names = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def _cert(subject: str, key, issuer_name, issuer_key, days: int, *, ca: bool = False, hosts=(), usage=None):
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(issuer_name)
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if hosts:
        b = b.add_extension(_san(hosts), critical=False)
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: str, data: bytes, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def create_certs(directory: str, hosts=DEFAULT_HOSTS, days: int = DEFAULT_DAYS,
                 client_name: str = "brokerlab-client") -> dict[str, str]:
    """Writes the CA, node and client files into `directory`; returns their paths by name."""
    if days < 1:
        raise ValueError(f"--days must be at least 1, got {days}")
    os.makedirs(directory, exist_ok=True)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "brokerlab local CA")])
    ca = _cert("brokerlab local CA", ca_key, ca_name, ca_key, days, ca=True)
    node_key = _key()
    node = _cert("brokerlab node", node_key, ca_name, ca_key, days, hosts=tuple(hosts),
                 usage=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    client_key = _key()
    client = _cert(client_name, client_key, ca_name, ca_key, days, usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    paths = {n: os.path.join(directory, f) for n, f in (
        ("ca", CA_FILE), ("ca_key", CA_KEY_FILE), ("node", NODE_FILE), ("client_cert", CLIENT_CERT_FILE),
        ("client_key", CLIENT_KEY_FILE))}
    _write(paths["ca"], _pem_cert(ca))
    _write(paths["ca_key"], _pem_key(ca_key), private=True)
    _write(paths["node"], _pem_key(node_key) + _pem_cert(node) + _pem_cert(ca), private=True)
    _write(paths["client_cert"], _pem_cert(client))
    _write(paths["client_key"], _pem_key(client_key), private=True)
    return paths


def ensure_certs(directory: str) -> dict[str, str]:
    """The certificates in `directory`, created first when its CA or node file is missing."""
    ca, node = os.path.join(directory, CA_FILE), os.path.join(directory, NODE_FILE)
    if os.path.exists(ca) and os.path.exists(node):
        return {"ca": ca, "node": node, "client_cert": os.path.join(directory, CLIENT_CERT_FILE),
                "client_key": os.path.join(directory, CLIENT_KEY_FILE)}
    return create_certs(directory)


def node_configs(directory: str) -> dict[str, str]:
    """The node configs that point at `directory`'s files."""
    paths = ensure_certs(directory)
    return {"ssl.keystore.location": os.path.abspath(paths["node"]),
            "ssl.truststore.location": os.path.abspath(paths["ca"])}


# -- contexts -------------------------------------------------------------------
def server_ssl_context(config) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.ssl_keystore_location)
    return ctx


def _split_keystore(path: str) -> tuple[bytes, bytes]:
    """(private key PEM, certificate chain PEM) of a PEM keystore."""
    with open(path, "rb") as f:
        data = f.read()
    key, chain = b"", b""
    for block in data.split(b"-----END ")[:-1]:
        begin = block.find(b"-----BEGIN ")
        kind = block[begin + 11:block.find(b"-----", begin + 11)]
        pem = block[begin:] + b"-----END " + kind + b"-----\n"
        if b"PRIVATE KEY" in kind:
            key = pem
        elif kind == b"CERTIFICATE":
            chain += pem
    if not key or not chain:
        raise ValueError(f"{path} must hold a private key and a certificate (PEM)")
    return key, chain


def grpc_server_credentials(config):
    import grpc
    key, chain = _split_keystore(config.ssl_keystore_location)
    return grpc.ssl_server_credentials([(key, chain)])


def grpc_channel_credentials(ca_location: str, cert_location: str | None = None, key_location: str | None = None):
    from client.common.security import channel_credentials
    return channel_credentials("SSL", ca_location, cert_location, key_location)


def channel_and_server_credentials(configs: dict):
    """For a process holding a node's configs (an agent): (channel creds, server creds), or (None, None)."""
    if not str(configs.get("security.protocol", "PLAINTEXT")).endswith("SSL"):
        return None, None
    from client.common.config import BrokerConfig
    config = BrokerConfig.from_props(configs)
    return grpc_channel_credentials(config.ssl_truststore_location), grpc_server_credentials(config)

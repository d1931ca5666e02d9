"""Security as a cluster starter takes it: `LocalCluster(security=...)`, `Cluster(security=...)`,
`brokerlab up --tls / --sasl / --acls`.

    LocalCluster(security="SASL_SSL")                     # TLS + SASL, no ACLs
    LocalCluster(security=Security("SASL_SSL", users={"alice": "alice-secret"}, authorizer=True,
                                   super_users=("User:admin",)))

Turned into the nodes' configs (node.security.gate) and, for TLS, certificates generated into
`<data dir>/tls` when absent. `client_props()` gives a Kafka client's settings (librdkafka's /
Kafka's keys) for that cluster.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from node.security.gate import PROTOCOLS

AUTHORIZER_CLASS = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
TLS_DIR = "tls"
CLIENT_PROPS_FILE = "client-security.properties"  # what tools started later read (brokerlab users, ...)


@dataclass(frozen=True)
class Security:
    protocol: str = "SASL_SSL"
    users: dict[str, str] = field(default_factory=dict)  # created when the cluster starts
    authorizer: bool = False
    super_users: tuple[str, ...] = ()
    allow_everyone_if_no_acl_found: bool = False
    tls_dir: str | None = None  # default <data dir>/tls (generated when absent)

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"security protocol {self.protocol!r}: one of {', '.join(PROTOCOLS)}")

    @classmethod
    def coerce(cls, value) -> Security | None:
        if value is None or isinstance(value, Security):
            return value
        if isinstance(value, str):
            return cls(value.upper())
        if isinstance(value, dict):
            return cls(**value)
        raise TypeError(f"security= takes a protocol name, a dict or a Security, got {value!r}")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def tls_directory(self, data_dir: str) -> str:
        return os.path.abspath(self.tls_dir or os.path.join(data_dir, TLS_DIR))

    def node_configs(self, data_dir: str) -> dict:
        out = {"security.protocol": self.protocol}
        if self.authorizer:
            out["authorizer.class.name"] = AUTHORIZER_CLASS
            out["allow.everyone.if.no.acl.found"] = str(self.allow_everyone_if_no_acl_found).lower()
        if self.super_users:
            out["super.users"] = ";".join(self.super_users)
        if self.tls:
            from node.security.tls import node_configs
            out.update(node_configs(self.tls_directory(data_dir)))
        return out

    def client_props(self, data_dir: str, user: str | None = None, password: str | None = None,
                     mechanism: str = "SCRAM-SHA-512") -> dict:
        """A Kafka client's security settings (librdkafka / Kafka keys; brokerlab's client takes them too)."""
        out = {"security.protocol": self.protocol}
        if self.tls:
            from node.security.tls import CA_FILE
            out["ssl.ca.location"] = os.path.join(self.tls_directory(data_dir), CA_FILE)
        if self.sasl and user is not None:
            out.update({"sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password or ""})
        return out


def write_client_props(data_dir: str, props: dict) -> str:
    """`<data dir>/client-security.properties`: how the cluster's own tools reach a secured cluster."""
    path = os.path.join(data_dir, CLIENT_PROPS_FILE)
    with open(path, "w") as f:
        f.writelines(f"{k}={v}\n" for k, v in props.items())
    return path


def read_client_props(data_dir: str | None) -> dict:
    path = os.path.join(data_dir or ".brokerlab", CLIENT_PROPS_FILE)
    out = {}
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    k, v = line.split("=", 1)
                    out[k.strip()] = v.strip()
    except FileNotFoundError:
        pass
    return out

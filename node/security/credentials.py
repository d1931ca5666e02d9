"""SCRAM credentials as Kafka keeps them: per user and mechanism a salt, StoredKey, ServerKey and
iteration count (RFC 5802), never the password. PLAIN is checked against the same credential.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from scramp import ScramMechanism

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
SASL_MECHANISMS = ("PLAIN", *SCRAM_MECHANISMS)
DEFAULT_ITERATIONS = 4096  # kafka-configs' default
MIN_ITERATIONS, MAX_ITERATIONS = 4096, 16384  # Kafka's bounds


@dataclass(frozen=True, slots=True)
class ScramCredential:
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int

    def auth_info(self) -> tuple:
        """What scramp's server asks for a user."""
        return self.salt, self.stored_key, self.server_key, self.iterations

    def to_json(self) -> dict:
        b64 = base64.b64encode
        return {"salt": b64(self.salt).decode(), "stored_key": b64(self.stored_key).decode(),
                "server_key": b64(self.server_key).decode(), "iterations": self.iterations}

    @classmethod
    def from_json(cls, d: dict) -> ScramCredential:
        b = base64.b64decode
        return cls(b(d["salt"]), b(d["stored_key"]), b(d["server_key"]), int(d["iterations"]))


def check_mechanism(mechanism: str) -> str:
    m = mechanism.upper()
    if m not in SCRAM_MECHANISMS:
        raise ValueError(f"unknown SCRAM mechanism {mechanism!r}: one of {', '.join(SCRAM_MECHANISMS)}")
    return m


def make_credential(password: str, mechanism: str, iterations: int = DEFAULT_ITERATIONS,
                    salt: bytes | None = None) -> ScramCredential:
    if not password:
        raise ValueError("the password is empty")
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations {iterations} outside Kafka's [{MIN_ITERATIONS}, {MAX_ITERATIONS}]")
    salt_, stored, server, i = ScramMechanism(check_mechanism(mechanism)).make_auth_info(
        password, iteration_count=iterations, salt=salt)
    return ScramCredential(salt_, stored, server, i)


def credential_from_salted_password(mechanism: str, salt: bytes, salted_password: bytes,
                                    iterations: int) -> ScramCredential:
    """What AlterUserScramCredentials sends (the client ran Hi(password, salt, i)): the stored keys."""
    name = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[check_mechanism(mechanism)]
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations {iterations} outside Kafka's [{MIN_ITERATIONS}, {MAX_ITERATIONS}]")
    client_key = hmac.new(salted_password, b"Client Key", name).digest()
    server_key = hmac.new(salted_password, b"Server Key", name).digest()
    return ScramCredential(salt, hashlib.new(name, client_key).digest(), server_key, iterations)


def verify_password(cred: ScramCredential, mechanism: str, password: str) -> bool:
    """PLAIN's check: does `password` derive this credential's StoredKey?"""
    _, stored, _, _ = ScramMechanism(mechanism).make_auth_info(password, iteration_count=cred.iterations,
                                                               salt=cred.salt)
    return hmac.compare_digest(stored, cred.stored_key)

"""The server side of one SASL exchange on a Kafka connection: PLAIN (checked against the stored
SCRAM credential) or SCRAM-SHA-256/512 (RFC 5802, by `scramp`). Credentials come from `lookup(user,
mechanism)`; a failure raises SaslAuthenticationFailedError with Kafka's message.
"""
from __future__ import annotations

from scramp import ScramException, ScramMechanism

from client.common import errors
from node.security.credentials import SCRAM_MECHANISMS, verify_password


def _failed(mechanism: str) -> errors.KafkaError:
    return errors.SaslAuthenticationFailedError(
        f"Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}")


class SaslServer:
    def __init__(self, mechanism: str, lookup):
        self.mechanism = mechanism
        self._lookup = lookup  # (user, mechanism) -> ScramCredential | None
        self.user: str | None = None  # set once authenticated
        self._scram = None
        self._step = 0

    @property
    def complete(self) -> bool:
        return self.user is not None

    def evaluate(self, token: bytes) -> bytes:
        """One client token -> the server's answer; `complete` once the client is authenticated."""
        if self.mechanism == "PLAIN":
            return self._plain(token)
        return self._scram_step(token)

    def _plain(self, token: bytes) -> bytes:
        parts = token.split(b"\0")
        if len(parts) != 3:
            raise errors.SaslAuthenticationFailedError("Invalid SASL/PLAIN response: expected 3 tokens")
        authzid, user, password = (p.decode("utf-8", "replace") for p in parts)
        if authzid and authzid != user:
            raise errors.SaslAuthenticationFailedError("Authentication failed: Client requested an authorization "
                                                       "id that is different from username")
        for mech in reversed(SCRAM_MECHANISMS):  # either stored credential proves the password
            cred = self._lookup(user, mech)
            if cred is not None and verify_password(cred, mech, password):
                self.user = user
                return b""
        raise errors.SaslAuthenticationFailedError("Authentication failed: Invalid username or password")

    def _scram_step(self, token: bytes) -> bytes:
        try:
            if self._step == 0:
                self._step = 1
                first_user: list[str] = []

                def auth_fn(user):
                    cred = self._lookup(user, self.mechanism)
                    if cred is None:
                        raise ScramException("unknown user")
                    first_user.append(user)
                    return cred.auth_info()

                self._scram = ScramMechanism(self.mechanism).make_server(auth_fn)
                self._scram.set_client_first(token.decode("utf-8"))
                self._pending_user = first_user[0]
                return self._scram.get_server_first().encode()
            if self._step == 1:
                self._step = 2
                self._scram.set_client_final(token.decode("utf-8"))
                final = self._scram.get_server_final().encode()
                self.user = self._pending_user
                return final
        except (ScramException, UnicodeDecodeError, IndexError):
            raise _failed(self.mechanism) from None
        raise errors.IllegalSaslStateError(f"{self.mechanism} exchange is already complete")


def is_supported(mechanism: str) -> bool:
    return mechanism == "PLAIN" or mechanism in SCRAM_MECHANISMS

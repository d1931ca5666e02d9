"""SecurityState: the cluster's SCRAM users and ACLs, owned by the coordinator and persisted with it.

A model: mutations return what changed and bump `version`; the coordinator's driver persists the
JSON before answering and brokers follow `version` (node.security.service). `revoked` holds users
whose authentication is refused for a while (the chaos credential fault) without losing their
credentials, as deleting and re-creating would.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from node.security.acl import AclBinding, AclFilter
from node.security.credentials import ScramCredential, check_mechanism


@dataclass
class SecurityState:
    version: int = 0
    users: dict[str, dict[str, ScramCredential]] = field(default_factory=dict)  # user -> mechanism -> cred
    acls: set[AclBinding] = field(default_factory=set)
    revoked: set[str] = field(default_factory=set)

    # -- users -------------------------------------------------------------
    def upsert_credential(self, user: str, mechanism: str, cred: ScramCredential) -> None:
        if not user:
            raise ValueError("the user name is empty")
        self.users.setdefault(user, {})[check_mechanism(mechanism)] = cred
        self.version += 1

    def delete_user(self, user: str, mechanism: str | None = None) -> bool:
        """Removes one mechanism's credential (or all); False when there was none."""
        creds = self.users.get(user)
        if not creds:
            return False
        if mechanism is None:
            del self.users[user]
        else:
            if creds.pop(check_mechanism(mechanism), None) is None:
                return False
            if not creds:
                del self.users[user]
        self.version += 1
        return True

    def set_revoked(self, user: str, revoked: bool) -> None:
        before = user in self.revoked
        (self.revoked.add if revoked else self.revoked.discard)(user)
        if before != revoked:
            self.version += 1

    def credential(self, user: str, mechanism: str) -> ScramCredential | None:
        if user in self.revoked:
            return None
        return self.users.get(user, {}).get(mechanism)

    # -- ACLs --------------------------------------------------------------
    def add_acls(self, bindings) -> list[AclBinding]:
        new = [b for b in bindings if b not in self.acls]
        if new:
            self.acls.update(new)
            self.version += 1
        return new

    def remove_acls(self, flt: AclFilter) -> list[AclBinding]:
        gone = [b for b in self.acls if flt.matches(b)]
        if gone:
            self.acls.difference_update(gone)
            self.version += 1
        return sorted(gone)

    def describe_acls(self, flt: AclFilter) -> list[AclBinding]:
        return sorted(b for b in self.acls if flt.matches(b))

    # -- persistence -------------------------------------------------------
    def to_json(self) -> dict:
        return {"version": self.version,
                "users": {u: {m: c.to_json() for m, c in creds.items()} for u, creds in sorted(self.users.items())},
                "acls": [b.to_json() for b in sorted(self.acls)],
                "revoked": sorted(self.revoked)}

    @classmethod
    def from_json(cls, d: dict | None) -> SecurityState:
        if not d:
            return cls()
        return cls(version=int(d.get("version", 0)),
                   users={u: {m: ScramCredential.from_json(c) for m, c in creds.items()}
                          for u, creds in d.get("users", {}).items()},
                   acls={AclBinding.from_json(v) for v in d.get("acls", [])},
                   revoked=set(d.get("revoked", [])))

"""Kafka's ACL model and AclAuthorizer's decision.

An ACL binds a resource pattern (type, name, LITERAL or PREFIXED) to an entry (principal, host,
operation, ALLOW/DENY). For a request on a resource: a super user is allowed; else the ACLs whose
pattern matches the resource decide: any matching DENY wins, then any matching ALLOW; with no ACL
on the resource at all, `allow.everyone.if.no.acl.found` decides. READ, WRITE, DELETE and ALTER
imply DESCRIBE, ALTER_CONFIGS implies DESCRIBE_CONFIGS, ALL implies everything. The wildcards are
Kafka's: resource name `*` (LITERAL), principal `User:*`, host `*`. The enums carry Kafka's codes
(the ones CreateAcls / DescribeAcls put on the wire).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

WILDCARD = "*"
WILDCARD_PRINCIPAL = "User:*"
CLUSTER_NAME = "kafka-cluster"  # Kafka's one CLUSTER resource
ANONYMOUS = "User:ANONYMOUS"


class ResourceType(enum.IntEnum):
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class PatternType(enum.IntEnum):
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class Operation(enum.IntEnum):
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


class Permission(enum.IntEnum):
    ANY = 1
    DENY = 2
    ALLOW = 3


_IMPLIED_BY = {
    Operation.DESCRIBE: {Operation.DESCRIBE, Operation.READ, Operation.WRITE, Operation.DELETE, Operation.ALTER},
    Operation.DESCRIBE_CONFIGS: {Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS},
}


def parse_enum(enum_cls, text: str, what: str):
    """`Write`, `write`, `IdempotentWrite`, `IDEMPOTENT_WRITE` -> the member; a clear error otherwise."""
    key = text.strip().replace("-", "_")
    for m in enum_cls:
        if m.name == key.upper() or m.name.replace("_", "") == key.upper().replace("_", ""):
            return m
    names = ", ".join(_camel(m.name) for m in enum_cls if m.name not in ("ANY", "MATCH"))
    raise ValueError(f"unknown {what} {text!r}: one of {names}")


def _camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.split("_"))


def check_principal(principal: str) -> str:
    kind, sep, name = principal.partition(":")
    if not sep or not kind or not name:
        raise ValueError(f"principal {principal!r} is not <type>:<name> (e.g. User:alice)")
    return principal


@dataclass(frozen=True, slots=True, order=True)
class ResourcePattern:
    resource_type: ResourceType
    name: str
    pattern_type: PatternType = PatternType.LITERAL

    def matches(self, resource_type: ResourceType, name: str) -> bool:
        if resource_type != self.resource_type:
            return False
        if self.pattern_type == PatternType.LITERAL:
            return self.name == name or self.name == WILDCARD
        return name.startswith(self.name)

    def __str__(self) -> str:  # kafka-acls' layout
        return (f"ResourcePattern(resourceType={self.resource_type.name}, name={self.name}, "
                f"patternType={self.pattern_type.name})")


@dataclass(frozen=True, slots=True, order=True)
class AccessControlEntry:
    principal: str
    host: str
    operation: Operation
    permission: Permission

    def __str__(self) -> str:  # kafka-acls' layout
        return (f"(principal={self.principal}, host={self.host}, operation={self.operation.name}, "
                f"permissionType={self.permission.name})")


@dataclass(frozen=True, slots=True, order=True)
class AclBinding:
    pattern: ResourcePattern
    entry: AccessControlEntry

    def to_json(self) -> list:
        p, e = self.pattern, self.entry
        return [p.resource_type.name, p.name, p.pattern_type.name, e.principal, e.host, e.operation.name,
                e.permission.name]

    @classmethod
    def from_json(cls, v: list) -> AclBinding:
        rt, name, pt, principal, host, op, perm = v
        return cls(ResourcePattern(ResourceType[rt], name, PatternType[pt]),
                   AccessControlEntry(principal, host, Operation[op], Permission[perm]))


@dataclass(frozen=True, slots=True)
class AclFilter:
    """kafka-acls --list / --remove and DescribeAcls: None (or ANY) matches anything. MATCH finds the
    patterns that would apply to `name` (LITERAL equal or `*`, PREFIXED prefixes)."""
    resource_type: ResourceType = ResourceType.ANY
    name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: Operation = Operation.ANY
    permission: Permission = Permission.ANY

    def matches(self, b: AclBinding) -> bool:
        p, e = b.pattern, b.entry
        if self.resource_type != ResourceType.ANY and p.resource_type != self.resource_type:
            return False
        if self.pattern_type == PatternType.MATCH:
            if self.name is not None and not p.matches(p.resource_type, self.name):
                return False
        else:
            if self.pattern_type != PatternType.ANY and p.pattern_type != self.pattern_type:
                return False
            if self.name is not None and p.name != self.name:
                return False
        if self.principal is not None and e.principal != self.principal:
            return False
        if self.host is not None and e.host != self.host:
            return False
        if self.operation != Operation.ANY and e.operation != self.operation:
            return False
        return self.permission == Permission.ANY or e.permission == self.permission


def authorize(acls, principal: str, host: str, operation: Operation, resource_type: ResourceType, name: str,
              *, super_users=frozenset(), allow_if_no_acl: bool = False) -> bool:
    """AclAuthorizer.authorize for one action. `acls` is an iterable of AclBinding."""
    if principal in super_users:
        return True
    matching = [b.entry for b in acls if b.pattern.matches(resource_type, name)]
    if not matching:
        return allow_if_no_acl
    mine = [e for e in matching if e.principal in (principal, WILDCARD_PRINCIPAL) and e.host in (host, WILDCARD)]
    for e in mine:
        if e.permission == Permission.DENY and e.operation in (operation, Operation.ALL):
            return False
    allowed_by = _IMPLIED_BY.get(operation, {operation})
    return any(e.permission == Permission.ALLOW and (e.operation == Operation.ALL or e.operation in allowed_by)
               for e in mine)


def list_layout(bindings) -> str:
    """kafka-acls --list: per resource pattern, its entries, tab-indented."""
    by_pattern: dict[ResourcePattern, list[AccessControlEntry]] = {}
    for b in sorted(bindings):
        by_pattern.setdefault(b.pattern, []).append(b.entry)
    out = []
    for pattern, entries in by_pattern.items():
        body = "\n".join(f"\t{e}" for e in entries)
        out.append(f"Current ACLs for resource `{pattern}`: \n {body} \n")
    return "\n".join(out)

"""`brokerlab users`, `brokerlab acls`, `brokerlab certs`: kafka-configs' SCRAM commands, kafka-acls, and
a local CA. Users and ACLs go to the coordinator's Security service, with the cluster's control token
(found in --data-dir, as the other control tools find it)."""
from __future__ import annotations

import click

from node.security import acl as A

_BOOTSTRAP_HELP = "The coordinator's gRPC address (any node's: it is looked up)."


def _cluster_options(f):
    f = click.option("--control-token", default=None, envvar="BROKERLAB_CONTROL_TOKEN",
                     help="The cluster's control token (default: read from --data-dir).")(f)
    f = click.option("--data-dir", default=".brokerlab", show_default=True, type=click.Path(file_okay=False),
                     help="The cluster's data dir: its control token and, for TLS, its CA.")(f)
    return click.option("--bootstrap-server", "bootstrap", default="127.0.0.1:9100", show_default=True,
                        envvar="BROKERLAB_BOOTSTRAP", help=_BOOTSTRAP_HELP)(f)


def _admin(bootstrap: str, data_dir: str, control_token: str | None):
    from node.auth import resolve_token
    from node.security.admin import SecurityAdmin
    from node.security.settings import read_client_props
    from node.security.tls import grpc_channel_credentials

    tok = resolve_token(control_token, data_dir)
    if not tok.token:
        raise click.ClickException(f"no control token: looked in {tok.source}; pass --data-dir or --control-token")
    props = read_client_props(data_dir)
    creds = None
    if props.get("security.protocol", "PLAINTEXT").endswith("SSL"):
        creds = grpc_channel_credentials(props["ssl.ca.location"])
    return SecurityAdmin(bootstrap, tok.token, channel_credentials=creds)


# -- users ----------------------------------------------------------------------
@click.group("users")
def users() -> None:
    """SCRAM users (kafka-configs --entity-type users): salted and hashed, kept by the coordinator."""


@users.command("create")
@click.argument("user")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, help="The user's password.")
@click.option("--mechanism", "mechanisms", multiple=True, type=click.Choice(["SCRAM-SHA-256", "SCRAM-SHA-512"]),
              help="Which SCRAM credentials to store (default both; PLAIN is checked against either).")
@click.option("--iterations", default=4096, show_default=True, type=click.IntRange(4096, 16384))
@_cluster_options
def users_create(user, password, mechanisms, iterations, bootstrap, data_dir, control_token) -> None:
    """Create USER (or set a new password)."""
    from node.security.credentials import SCRAM_MECHANISMS
    with _admin(bootstrap, data_dir, control_token) as admin:
        admin.create_user(user, password, mechanisms or SCRAM_MECHANISMS, iterations)
    click.echo(f"Completed updating config for user {user}.")


@users.command("delete")
@click.argument("user")
@click.option("--mechanism", default=None, type=click.Choice(["SCRAM-SHA-256", "SCRAM-SHA-512"]),
              help="Delete only this credential (default every one).")
@_cluster_options
def users_delete(user, mechanism, bootstrap, data_dir, control_token) -> None:
    """Delete USER's credentials."""
    with _admin(bootstrap, data_dir, control_token) as admin:
        admin.delete_user(user, mechanism)
    click.echo(f"Completed updating config for user {user}.")


@users.command("list")
@_cluster_options
def users_list(bootstrap, data_dir, control_token) -> None:
    """Every user and its SCRAM credentials (kafka-configs --describe's layout)."""
    with _admin(bootstrap, data_dir, control_token) as admin:
        found = admin.list_users()
    for u in found:
        creds = ", ".join(f"{c.mechanism}=iterations={c.iterations}" for c in u.credentials)
        click.echo(f"SCRAM credential configs for user-principal '{u.user}' are {creds}"
                   + (" (revoked by a fault)" if u.revoked else ""))


# -- acls -----------------------------------------------------------------------
def _resources(topics, groups, txn_ids, cluster, pattern_type):
    out = [A.ResourcePattern(A.ResourceType.TOPIC, t, pattern_type) for t in topics]
    out += [A.ResourcePattern(A.ResourceType.GROUP, g, pattern_type) for g in groups]
    out += [A.ResourcePattern(A.ResourceType.TRANSACTIONAL_ID, t, pattern_type) for t in txn_ids]
    if cluster:
        out.append(A.ResourcePattern(A.ResourceType.CLUSTER, A.CLUSTER_NAME, A.PatternType.LITERAL))
    return out


def _operations(ops, producer, consumer, idempotent, resource: A.ResourcePattern) -> list[A.Operation]:
    """--operation, or what --producer / --consumer mean for this resource (kafka-acls' conveniences)."""
    rt = resource.resource_type
    if producer or consumer:
        out = []
        if producer:
            out += {A.ResourceType.TOPIC: [A.Operation.WRITE, A.Operation.DESCRIBE, A.Operation.CREATE],
                    A.ResourceType.TRANSACTIONAL_ID: [A.Operation.WRITE, A.Operation.DESCRIBE],
                    A.ResourceType.CLUSTER: [A.Operation.IDEMPOTENT_WRITE] if idempotent else []}.get(rt, [])
        if consumer:
            out += {A.ResourceType.TOPIC: [A.Operation.READ, A.Operation.DESCRIBE],
                    A.ResourceType.GROUP: [A.Operation.READ]}.get(rt, [])
        return list(dict.fromkeys(out))
    return [A.parse_enum(A.Operation, o, "operation") for o in ops] or [A.Operation.ALL]


@click.command("acls")
@click.option("--add", "action", flag_value="add", help="Add ACLs.")
@click.option("--remove", "action", flag_value="remove", help="Remove ACLs.")
@click.option("--list", "action", flag_value="list", help="List ACLs.")
@click.option("--allow-principal", multiple=True, help="e.g. User:alice (repeatable).")
@click.option("--deny-principal", multiple=True, help="e.g. User:bob (repeatable).")
@click.option("--allow-host", multiple=True, help="Hosts the allow principals may come from (default *).")
@click.option("--deny-host", multiple=True, help="Hosts the deny principals are denied from (default *).")
@click.option("--operation", "operations", multiple=True,
              help="Read, Write, Create, Delete, Alter, Describe, ClusterAction, DescribeConfigs, AlterConfigs, "
                   "IdempotentWrite, All (repeatable; default All).")
@click.option("--topic", "topics", multiple=True)
@click.option("--group", "groups", multiple=True)
@click.option("--transactional-id", "txn_ids", multiple=True)
@click.option("--cluster", is_flag=True, help="The cluster resource.")
@click.option("--resource-pattern-type", default=None,
              help="literal (default for --add), prefixed; also any, match for --list / --remove.")
@click.option("--principal", "principals", multiple=True, help="--list: only this principal's ACLs.")
@click.option("--producer", is_flag=True, help="WRITE, DESCRIBE, CREATE on the topics (+ the transactional ids).")
@click.option("--consumer", is_flag=True, help="READ, DESCRIBE on the topics, READ on the groups.")
@click.option("--idempotent", is_flag=True, help="With --producer: IDEMPOTENT_WRITE on the cluster.")
@click.option("--force", is_flag=True, help="Accepted for kafka-acls compatibility (no prompt is asked).")
@_cluster_options
def acls(action, allow_principal, deny_principal, allow_host, deny_host, operations, topics, groups, txn_ids,
         cluster, resource_pattern_type, principals, producer, consumer, idempotent, force, bootstrap, data_dir,
         control_token) -> None:
    """Add, remove or list ACLs, with kafka-acls' flags and layout."""
    if action is None:
        raise click.UsageError("one of --add, --remove, --list is required")
    default_pt = "literal" if action == "add" else ("literal" if (topics or groups or txn_ids or cluster) else "any")
    try:
        pt = A.parse_enum(A.PatternType, resource_pattern_type or default_pt, "resource pattern type")
        if action == "add" and pt not in (A.PatternType.LITERAL, A.PatternType.PREFIXED):
            raise ValueError("--add takes --resource-pattern-type literal or prefixed")
        for p in (*allow_principal, *deny_principal, *principals):
            A.check_principal(p)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if idempotent and producer and not cluster:
        cluster = True
    if producer and not txn_ids and not topics:
        raise click.UsageError("--producer needs --topic (and optionally --transactional-id)")
    resources = _resources(topics, groups, txn_ids, cluster, pt)
    with _admin(bootstrap, data_dir, control_token) as admin:
        if action == "list":
            _list(admin, resources, principals)
            return
        if not resources:
            raise click.UsageError(f"--{action} needs a resource: --topic, --group, --transactional-id or --cluster")
        if action == "add":
            if not allow_principal and not deny_principal:
                raise click.UsageError("--add needs --allow-principal or --deny-principal")
            for r in resources:
                try:
                    ops = _operations(operations, producer, consumer, idempotent, r)
                except ValueError as e:
                    raise click.UsageError(str(e)) from None
                entries = [A.AccessControlEntry(p, h, op, A.Permission.ALLOW)
                           for p in allow_principal for h in (allow_host or ("*",)) for op in ops]
                entries += [A.AccessControlEntry(p, h, op, A.Permission.DENY)
                            for p in deny_principal for h in (deny_host or ("*",)) for op in ops]
                if not entries:
                    continue
                body = "\n".join(f"\t{e}" for e in entries)
                click.echo(f"Adding ACLs for resource `{r}`: \n {body} \n")
                admin.create_acls([A.AclBinding(r, e) for e in entries])
            _list(admin, resources, ())
            return
        # remove: everything on the resources, narrowed by the principals / operations given
        for r in resources:
            ops = [A.parse_enum(A.Operation, o, "operation") for o in operations] or [A.Operation.ANY]
            who = [(p, A.Permission.ALLOW) for p in allow_principal] + [(p, A.Permission.DENY) for p in deny_principal]
            for principal, perm in (who or [(None, A.Permission.ANY)]):
                for op in ops:
                    flt = A.AclFilter(r.resource_type, r.name, r.pattern_type, principal, None, op, perm)
                    for b in admin.delete_acls(flt):
                        click.echo(f"Removed ACL {b.entry} from resource `{b.pattern}`")
        _list(admin, resources, ())


def _list(admin, resources, principals) -> None:
    found = []
    if resources:
        for r in resources:
            found += admin.describe_acls(A.AclFilter(r.resource_type, r.name, r.pattern_type))
    else:
        found = admin.describe_acls(A.AclFilter())
    if principals:
        found = [b for b in found if b.entry.principal in principals]
    text = A.list_layout(found)
    if text:
        click.echo(text)


# -- certs ----------------------------------------------------------------------
@click.group("certs")
def certs() -> None:
    """A local CA and the node / client certificates TLS uses."""


@certs.command("create")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False),
              help="Where to write ca.pem, ca.key, node.pem, client.pem, client.key.")
@click.option("--host", "hosts", multiple=True,
              help="Names and addresses the node certificate is valid for (default localhost, 127.0.0.1, ::1).")
@click.option("--days", default=365, show_default=True, type=click.IntRange(min=1))
def certs_create(directory, hosts, days) -> None:
    """Make a CA and, signed by it, a node certificate and a client certificate."""
    from node.security.tls import DEFAULT_HOSTS, create_certs
    paths = create_certs(directory, hosts or DEFAULT_HOSTS, days)
    click.echo(f"CA certificate:      {paths['ca']}  (ssl.ca.location / ssl.truststore.location)")
    click.echo(f"node key + chain:    {paths['node']}  (ssl.keystore.location)")
    click.echo(f"client certificate:  {paths['client_cert']}, key {paths['client_key']}")

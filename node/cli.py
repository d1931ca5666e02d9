"""`brokerlab up`, `brokerlab node`, `brokerlab agent`."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import click

from node.main import parse_configs, run_node

ADVERTISED_HELP = ("The address other hosts dial for this node (registered in the metadata), when --host, "
                   "what it binds, is not it: e.g. --host 0.0.0.0 --advertised-host node1.example.")


def _node_listener_options(kafka_port_help: str, metrics_port_help: str):
    """One node's --kafka-port / --no-kafka / --metrics-port / --no-metrics / --advertised-host (node, agent)."""
    options = [
        click.option("--kafka-port", default=0, show_default=True, type=click.IntRange(min=0, max=65535),
                     help=kafka_port_help),
        click.option("--no-kafka", is_flag=True, help="No Kafka-protocol listener."),
        click.option("--metrics-port", default=0, show_default=True, type=click.IntRange(min=0, max=65535),
                     help=metrics_port_help),
        click.option("--no-metrics", is_flag=True, help="No Prometheus metrics endpoint."),
        click.option("--advertised-host", default="", help=ADVERTISED_HELP),
    ]

    def apply(f):
        for option in reversed(options):  # as stacked decorators: the first listed is outermost
            f = option(f)
        return f
    return apply


@click.command("up")
@click.option("--brokers", default=3, show_default=True, help="Number of brokers.")
@click.option("--port", default=9100, show_default=True,
              help="Coordinator port; brokers get port+1 .. port+N (0: free ports).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--data-dir", default=".brokerlab", show_default=True, type=click.Path(file_okay=False))
@click.option("--config", "configs", multiple=True, metavar="KEY=VALUE", help="Node config (repeatable).")
@click.option("--fast/--kafka-timeouts", default=True, show_default=True,
              help="Short failure-detection timeouts (seconds) instead of Kafka's defaults.")
@click.option("--kafka-port", default=9092, show_default=True, type=click.IntRange(min=0, max=65535),
              help="Kafka-protocol port of the coordinator; broker-i gets kafka-port+i (0: free ports).")
@click.option("--no-kafka", is_flag=True, help="No Kafka-protocol listeners (gRPC only).")
@click.option("--metrics-port", default=9404, show_default=True, type=click.IntRange(min=0, max=65535),
              help="Prometheus metrics port of the coordinator; broker-i gets metrics-port+i (0: free ports).")
@click.option("--tls", is_flag=True,
              help="TLS on every listener, node-to-node included; certificates generated into <data dir>/tls "
                   "when absent (brokerlab certs create).")
@click.option("--sasl", is_flag=True, help="SASL (PLAIN, SCRAM-SHA-256/512) on the Kafka listeners; add users "
                                           "with brokerlab users create.")
@click.option("--acls", "with_acls", is_flag=True, help="Enforce ACLs (brokerlab acls); see --super-user.")
@click.option("--super-user", "super_users", multiple=True, metavar="User:NAME",
              help="A principal allowed everything (super.users; repeatable).")
@click.option("--netns", is_flag=True,
              help="Every node in its own network namespace with its own address on a bridge (root or "
                   "CAP_NET_ADMIN); network faults become kernel rules. All of it is removed on exit.")
@click.option("--subnet", default=None, metavar="CIDR",
              help="With --netns: the private subnet of the bridge (default: a free /24 of 10.213.0.0/16).")
def up(brokers: int, port: int, host: str, data_dir: str, configs, fast: bool, kafka_port: int,
       no_kafka: bool, metrics_port: int, tls: bool, sasl: bool, with_acls: bool, super_users, netns: bool,
       subnet: str | None) -> None:
    """Start a coordinator and N brokers, each a process under its own agent; Ctrl-C stops them."""
    from node.cluster import FAST_CONFIGS, Cluster
    from node.rpc import advertisable_host

    if subnet and not netns:
        raise click.BadParameter("only with --netns", param_hint="--subnet")
    if netns:
        if tls or sasl or with_acls:
            raise click.UsageError("--netns does not take --tls, --sasl or --acls yet")
        if host != "127.0.0.1":
            raise click.BadParameter("with --netns every node gets its own address on the bridge (see --subnet)",
                                     param_hint="--host")
        cfg = dict(FAST_CONFIGS) if fast else {}
        cfg.update(parse_configs(configs))
        _up_netns(brokers, port or 9100, data_dir, cfg, None if no_kafka else (kafka_port or 9092),
                  metrics_port or 9404, subnet)
        return

    try:
        advertisable_host(host, "--host")
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--host") from None
    if not no_kafka and kafka_port and port:
        grpc_ports = set(range(port, port + brokers + 1))
        clash = sorted(grpc_ports & set(range(kafka_port, kafka_port + brokers + 1)))
        if clash:
            raise click.BadParameter(
                f"Kafka ports {kafka_port}..{kafka_port + brokers} overlap the gRPC ports {port}..{port + brokers} "
                f"(both use {clash[0]}): move --kafka-port or --port", param_hint="--kafka-port")
    cfg = dict(FAST_CONFIGS) if fast else {}
    cfg.update(parse_configs(configs))
    security = None
    if tls or sasl or with_acls:
        from node.security.settings import Security
        protocol = ("SASL_" if sasl else "") + ("SSL" if tls else "PLAINTEXT")
        security = Security(protocol, authorizer=with_acls, super_users=tuple(super_users))
    cluster = Cluster(data_dir, brokers=brokers, port=port, host=host, configs=cfg,
                      kafka_port=None if no_kafka else kafka_port, metrics_port=metrics_port, security=security)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    cluster.start()
    try:
        agents = ", ".join(f"{a.name}={a.agent_address}" for a in cluster.agents.values())
        kafka = f", kafka bootstrap {cluster.kafka_bootstrap_servers}" if not no_kafka else ""
        click.echo(f"brokerlab cluster ready: bootstrap {cluster.bootstrap_servers}{kafka} "
                   f"({brokers} brokers, data dir {os.path.abspath(data_dir)}; agents {agents}; "
                   f"control token in {os.path.join(data_dir, 'control-token')})")
        click.echo("metrics: " + ", ".join(f"{a.name}={a.metrics_url}" for a in cluster.agents.values()))
        if security is not None:
            props = security.client_props(cluster.data_dir)
            click.echo("security: " + ", ".join(f"{k}={v}" for k, v in props.items()))
        sys.stdout.flush()
        while not done.wait(0.5):
            pass
    finally:
        click.echo("stopping cluster ...")
        cluster.stop()
        click.echo("stopped")


def _up_netns(brokers: int, port: int, data_dir: str, configs: dict, kafka_port: int | None, metrics_port: int,
              subnet: str | None) -> None:
    from node.netns import NetnsError, missing_privileges, parse_subnet
    from node.netns_cluster import NetnsCluster

    missing = missing_privileges()
    if missing:
        raise click.UsageError(f"--netns needs {' and '.join(missing)}")
    if subnet:
        try:
            parse_subnet(subnet)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--subnet") from None
    try:
        cluster = NetnsCluster(data_dir, brokers, configs, subnet=subnet, port=port, kafka_port=kafka_port,
                               metrics_port=metrics_port, echo=click.echo)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    done = threading.Event()
    # Ctrl-C and SIGTERM end the wait below; the finally removes namespaces, links and rules. A crash
    # (SIGKILL) leaves that to the reaper process, and to the leftover check of the next start.
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    signal.signal(signal.SIGHUP, lambda *a: done.set())
    try:
        try:
            cluster.start()
        except NetnsError as e:
            raise click.ClickException(str(e)) from None
        plan = cluster.plan
        kafka = f", kafka bootstrap {cluster.kafka_bootstrap_servers}" if kafka_port else ""
        click.echo(f"brokerlab cluster ready (network namespaces): bootstrap {cluster.bootstrap_servers}{kafka} "
                   f"({brokers} brokers, data dir {os.path.abspath(data_dir)}; "
                   f"control token in {os.path.join(data_dir, 'control-token')})")
        click.echo(f"network: bridge {plan.bridge} {plan.subnet} (this host {plan.host_ip}); nodes "
                   + ", ".join(f"{a.name}={a.host} (namespace {plan.namespace(a.name)})"
                               for a in cluster.agents.values()))
        click.echo("agents: " + ", ".join(f"{a.name}={a.agent_address}" for a in cluster.agents.values()))
        click.echo("metrics: " + ", ".join(f"{a.name}={a.metrics_url}" for a in cluster.agents.values()))
        click.echo(f"BROKERLAB_BOOTSTRAP={cluster.bootstrap_servers} brokerlab chaos status  # faults: "
                   f"partition, isolate, loss, cut-clients as kernel rules")
        sys.stdout.flush()
        while not done.wait(0.5):
            pass
    finally:
        click.echo("stopping cluster ...")
        removed = cluster.stop()
        click.echo(f"stopped; removed {len(removed)} namespaces and links ({', '.join(removed) or '-'})")


@click.command("node")
@click.argument("kind", type=click.Choice(["coordinator", "broker"]))
@click.option("--id", "node_id", default=0, help="Broker id (brokers only).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, help="Port to bind (0: a free one).")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False))
@click.option("--coordinator", default="127.0.0.1:9100", show_default=True, help="Coordinator host:port.")
@click.option("--agent", default="", help="This node's agent host:port, advertised to the cluster.")
@click.option("--config", "configs", multiple=True, metavar="KEY=VALUE")
@_node_listener_options("Kafka-protocol port to bind (0: a free one).",
                        "Prometheus metrics port to bind (0: a free one).")
def node_cmd(kind, node_id, host, port, data_dir, coordinator, agent, configs, kafka_port, no_kafka,
             metrics_port, no_metrics, advertised_host) -> None:
    """Run one node in this process (what agents and the Procfile start)."""
    if kind == "broker" and node_id < 1:
        raise click.BadParameter("brokers need --id N (N >= 1)", param_hint="--id")
    sys.exit(run_node(kind, node_id=node_id, host=host, port=port, data_dir=data_dir,
                      coordinator=coordinator, configs=parse_configs(configs), agent=agent,
                      kafka_port=None if no_kafka else kafka_port,
                      metrics_port=None if no_metrics else metrics_port, advertised_host=advertised_host))


@click.command("agent")
@click.argument("kind", type=click.Choice(["coordinator", "broker"]))
@click.option("--id", "node_id", default=0)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", required=True, type=int, help="The node's port.")
@click.option("--agent-port", required=True, type=int, help="This agent's port.")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False))
@click.option("--coordinator", default="127.0.0.1:9100", show_default=True)
@click.option("--config", "configs", multiple=True, metavar="KEY=VALUE")
@click.option("--fast/--kafka-timeouts", default=True, show_default=True)
@click.option("--control-token-file", default=".brokerlab/control-token", show_default=True,
              type=click.Path(dir_okay=False),
              help="The cluster's control token, shared by every agent (created by the first one to start); "
                   "$BROKERLAB_CONTROL_TOKEN, when set, is used instead.")
@_node_listener_options("The node's Kafka-protocol port (0: a free one).",
                        "The node's Prometheus metrics port (0: a free one, kept across restarts).")
@click.option("--kernel-faults", is_flag=True,
              help="Apply network faults as nftables rules in this host's kernel (root or CAP_NET_ADMIN; "
                   "only where the host is the node's own: a network namespace or a machine of its own).")
@click.option("--log-path", default="", type=click.Path(dir_okay=False),
              help="The node's log file (default <data-dir>/<node>.log).")
def agent_cmd(kind, node_id, host, port, agent_port, data_dir, coordinator, configs, fast,
              control_token_file, kafka_port, no_kafka, metrics_port, no_metrics, advertised_host,
              kernel_faults, log_path) -> None:
    """Supervise one node (a Procfile entry): start it, restart it on command, outlive it."""
    from node.agent import Agent
    from node.auth import TOKEN_ENV, ensure_token
    from node.cluster import FAST_CONFIGS

    logging.basicConfig(level=logging.INFO, format="%(asctime)s agent %(levelname)s %(message)s")
    cfg = dict(FAST_CONFIGS) if fast else {}
    cfg.update(parse_configs(configs))
    name = "coordinator" if kind == "coordinator" else f"broker-{node_id}"
    if kind == "broker" and node_id < 1:
        raise click.BadParameter("brokers need --id N (N >= 1)", param_hint="--id")
    token = os.environ.get(TOKEN_ENV, "").strip() or ensure_token(control_token_file)
    try:
        a = Agent(name, kind, node_id=node_id, host=host, port=port, data_dir=data_dir, coordinator=coordinator,
                  configs=cfg, log_path=log_path or os.path.join(data_dir, f"{name}.log"), agent_host=host,
                  agent_port=agent_port, control_token=token,
                  kafka_port=None if no_kafka else kafka_port,
                  metrics_port=None if no_metrics else metrics_port,
                  kernel_faults=kernel_faults, advertised_host=advertised_host or None)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--kernel-faults" if "kernel" in str(e)
                                 else "--host / --advertised-host") from None
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *x: done.set())
    signal.signal(signal.SIGINT, lambda *x: done.set())
    a.start()
    kafka = f"; kafka on {a.kafka_address}" if a.kafka_address else ""
    metrics = f"; metrics on {a.metrics_url}" if a.metrics_url else ""
    click.echo(f"agent for {name} on {a.agent_address}; node on {a.address}{kafka}{metrics}; log {a.log_path}")
    sys.stdout.flush()
    while not done.wait(0.5):
        pass
    a.close()


@click.command("demo")
@click.option("--brokers", default=3, show_default=True)
@click.option("--records", default=10000, show_default=True)
def demo(brokers: int, records: int) -> None:
    """Start a throwaway local cluster, round-trip records with acks=all, print the result, stop."""
    import shutil
    import tempfile

    from client import Admin, Consumer, Producer, TopicPartition
    from node.cluster import FAST_CONFIGS, Cluster

    tmp = tempfile.mkdtemp(prefix="brokerlab-demo-")
    try:
        with Cluster(tmp, brokers=brokers, port=0, configs=FAST_CONFIGS) as c:
            bs = c.bootstrap_servers
            click.echo(f"cluster ready: bootstrap {bs}, {brokers} brokers")
            rf = min(3, brokers)
            with Admin({"bootstrap.servers": bs}) as admin:
                admin.create_topic("demo", 6, rf, {"min.insync.replicas": str(min(2, rf))})
            with Producer({"bootstrap.servers": bs, "acks": "all", "linger.ms": 5}) as p:
                futs = [p.send("demo", str(i).encode()) for i in range(records)]
                p.flush()
                acked = sum(1 for f in futs if f.exception() is None)
            seen = set()
            with Consumer({"bootstrap.servers": bs}) as cons:
                cons.assign([TopicPartition("demo", i) for i in range(6)])
                cons.seek_to_beginning()
                import time
                deadline = time.monotonic() + 30
                while len(seen) < acked and time.monotonic() < deadline:
                    seen.update(int(r.value) for r in cons.poll(500))
            verdict = "ok" if len(seen) == acked == records else "MISMATCH"
            click.echo(f"round trip {verdict}: {acked} acknowledged, {len(seen)} read back")
            if verdict != "ok":
                sys.exit(1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

"""Runs one node in this process: `brokerlab node coordinator|broker ...`."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from client.common.config import BrokerConfig
from node.rpc import create_server

log = logging.getLogger("node")


def parse_configs(pairs) -> dict:
    out = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise ValueError(f"--config expects key=value, got '{pair}'")
        k, v = pair.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def setup_logging(name: str, level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")


def run_node(kind: str, *, node_id: int, host: str, port: int, data_dir: str, coordinator: str,
             configs: dict, agent: str = "", kafka_port: int | None = None,
             metrics_port: int | None = None, advertised_host: str = "") -> int:
    """`kafka_port`: where the Kafka-protocol listener binds (0: a free port), None: no listener.
    `metrics_port`: where Prometheus metrics are served (0: a free port), None: not served.
    `advertised_host`: the address registered in the metadata, when it is not `host` (the bind address:
    a wildcard, or a private address behind NAT), as Kafka's advertised.listeners."""
    from node.auth import TOKEN_ENV, ControlAuthInterceptor
    from node.faults import FaultState, register_fault_service
    from node.rpc import advertisable_host

    name = "coordinator" if kind == "coordinator" else f"broker-{node_id}"
    bind_host = host
    host = advertisable_host(advertised_host or host, f"{name}'s --advertised-host" if advertised_host
                             else f"{name}'s --host")
    setup_logging(name, os.environ.get("BROKERLAB_LOG_LEVEL", "INFO"))
    os.makedirs(data_dir, exist_ok=True)
    config = BrokerConfig.from_props(configs)
    faults = FaultState.from_env(name)
    from node.security.gate import SecurityGate
    gate = SecurityGate.for_config(config)  # None: security off, nothing on the request paths
    if kind == "coordinator":
        from node.coordinator import Coordinator
        from node.extensions import coordinator_extensions
        node = Coordinator(data_dir, host, port, config, clock=faults.clock, agent=agent)
        node.security_gate = gate  # its SecurityManager feeds it
        from node.metrics import CoordinatorMetrics
        node.extensions.extend(coordinator_extensions(node))
        node.metrics = CoordinatorMetrics(node)
        register = node.register
    else:
        from node.broker import Broker
        from node.broker_service import register_broker_services
        node = Broker(data_dir, host, port, node_id, coordinator, config, clock=faults.clock, agent=agent)

        def register(server):
            register_broker_services(server, node)

    def register_all(server):
        register(server)
        register_fault_service(server, faults)

    kafka = None
    if kafka_port is not None:
        # Bound before the gRPC server starts (the metrics port too): if a pinned port is taken (by an
        # ephemeral client socket while the node was down), the process exits having served nothing, so
        # its agent sees it exited. Bound after, a call served meanwhile left a half-started node.
        from node.kafka.context import KafkaContext
        from node.kafka.registry import load_handlers
        from node.kafka.server import KafkaListener
        handlers = load_handlers()
        ssl_context = None
        if gate is not None:
            from node.security import kafka_authz
            if gate.sasl:
                from node.security import kafka_scram_api
                handlers.update(kafka_authz.sasl_handlers())
                handlers.update(kafka_scram_api.HANDLERS)
            if gate.authorizer:
                from node.security import kafka_acl_api
                handlers.update(kafka_acl_api.HANDLERS)
            if gate.tls:
                from node.security.tls import server_ssl_context
                ssl_context = server_ssl_context(config)
        kafka = KafkaListener(bind_host, kafka_port, KafkaContext.for_node(node), handlers, faults,
                              observe_request=node.metrics.observe_request, security=gate,
                              ssl_context=ssl_context)
        node.kafka_port = kafka.port
    if metrics_port is not None:  # bound before serving too; and before the port file, which the agent waits for
        node.metrics.serve(bind_host, metrics_port, data_dir)
    # The fault service obeys only callers with the cluster's control token (its agent hands it over).
    auth = ControlAuthInterceptor(os.environ.get(TOKEN_ENV, "").strip() or None)
    server_credentials = None
    if gate is not None and gate.tls:  # every listener and every node-to-node channel
        from client.common.security import channel_credentials
        from node.security.tls import grpc_server_credentials
        server_credentials = grpc_server_credentials(config)
        node.pool.channel_credentials = channel_credentials(config.security_protocol,
                                                            config.ssl_truststore_location)
    interceptors = [node.metrics.server_interceptor(), auth, faults.server_interceptor()]
    if gate is not None and (gate.sasl or gate.authorizer):  # SASL credentials (or the token); ACLs
        from node.auth import call_metadata
        from node.security.grpc_auth import GrpcSecurityInterceptor
        token = os.environ.get(TOKEN_ENV, "").strip() or None
        interceptors.insert(1, GrpcSecurityInterceptor(gate, token))
        node.pool.add_call_metadata(call_metadata(token))  # this node's own calls to the others
    server, bound = create_server(bind_host, port, register_all, interceptors=interceptors,
                                  server_credentials=server_credentials)
    node.port = bound
    if kafka is not None:
        with open(os.path.join(data_dir, "kafka_port"), "w") as f:
            f.write(str(kafka.port))
    with open(os.path.join(data_dir, "port"), "w") as f:
        f.write(str(bound))
    node.start()
    watcher = None
    if gate is not None and kind != "coordinator":
        from node.security.service import SecurityWatcher
        watcher = SecurityWatcher(node, gate, os.environ.get(TOKEN_ENV, "").strip() or None)
        watcher.start()
    if kafka is not None:
        kafka.start()
    log.info("%s listening on %s:%d (data dir %s)", name, host, bound, data_dir)
    print(f"{name} listening on {host}:{bound}" + (f", kafka on {host}:{kafka.port}" if kafka else "")
          + (f", metrics on http://{host}:{node.metrics.port}/metrics" if metrics_port is not None else ""),
          flush=True)

    done = threading.Event()

    def on_signal(signum, frame):
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Started by an agent (node.agent sets it to its own pid): exit when that process dies, even by SIGKILL.
    parent = int(os.environ.get("BROKERLAB_PARENT_PID") or 0)
    while not done.wait(0.5):
        if parent and os.getppid() != parent:
            log.info("%s: parent process %d is gone", name, parent)
            break
    log.info("%s shutting down", name)
    if kafka is not None:
        kafka.stop()
    if watcher is not None:
        watcher.stop()
    server.stop(grace=1).wait(2)
    node.metrics.close()
    node.stop()
    return 0

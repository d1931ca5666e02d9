"""With TLS on, node-to-node traffic is encrypted (issue 16): a raw packet socket on the loopback reads
every TCP segment to and from the nodes' ports while a record replicates, and the record's bytes are
nowhere in them. The sniffer first proves it sees plaintext by catching the same marker sent over a
plain loopback connection of its own."""
from __future__ import annotations

import socket
import struct
import threading
import uuid

import pytest

from chaos.local_cluster import LocalCluster
from client import Producer
from tests.helpers import wait_until

ETH_P_ALL = 0x0003


class LoopbackSniffer:
    """TCP payloads seen on `lo`, as (src port, dst port, bytes); needs CAP_NET_RAW (root)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)  # bursts must not drop
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.segments: list[tuple[int, int, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _run(self):
        while not self._stop.is_set():
            try:
                frame, addr = self.sock.recvfrom(262144)
            except TimeoutError:
                continue
            if addr[2] == socket.PACKET_OUTGOING:  # each loopback packet shows up twice; keep one
                continue
            ip = frame[14:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_TCP:
                continue
            ihl = (ip[0] & 0x0F) * 4
            total = struct.unpack(">H", ip[2:4])[0]
            tcp = ip[ihl:total]
            if len(tcp) < 20:
                continue
            sport, dport = struct.unpack(">HH", tcp[:4])
            payload = tcp[(tcp[12] >> 4) * 4:]
            if payload:
                self.segments.append((sport, dport, bytes(payload)))

    def stream(self, ports: set[int]) -> bytes:
        return b"".join(p for s, d, p in list(self.segments) if s in ports or d in ports)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def tls_cluster():
    with LocalCluster(brokers=2, configs={"offsets.topic.replication.factor": 2,
                                          "transaction.state.log.replication.factor": 2},
                      security="SSL") as c:
        yield c


def test_replica_fetches_between_tls_nodes_carry_no_plaintext_record(tls_cluster):
    c = tls_cluster
    c.create_topic("wire", partitions=1, replication_factor=2, configs={"min.insync.replicas": "2"})
    marker = b"PLAINTEXT-MARKER-" + uuid.uuid4().hex.encode()
    try:
        sniffer = LoopbackSniffer()
    except PermissionError:
        pytest.skip("a raw packet socket needs CAP_NET_RAW")
    with sniffer:
        # the sniffer sees plaintext when there is some: the marker over a plain loopback connection
        srv = socket.create_server(("127.0.0.1", 0))
        with srv, socket.create_connection(srv.getsockname()) as cli:
            peer, _ = srv.accept()
            with peer:
                cli.sendall(marker)
                assert peer.recv(len(marker)) == marker
                control = {srv.getsockname()[1]}
                wait_until(lambda: marker in sniffer.stream(control), 10, what="the sniffer to see the control")
        # acks=all with min.insync.replicas=2: the follower has fetched the record when the send returns
        with Producer({**c.client_config(), "acks": "all"}) as p:
            md = p.send("wire", marker * 4, partition=0).get(30)
        leader, _follower = _leader_and_follower(c, "wire")
        leader_port = _port(c.address(leader))
        node_ports = {_port(c.address(n)) for n in c.nodes}
        node_ports |= {_port(c._c().agents[n].kafka_address) for n in c.nodes if c._c().agents[n].kafka_address}
        wait_until(lambda: len(sniffer.stream({leader_port})) > 0, 10, what="traffic to the leader captured")
    # what the leader's gRPC port sent: its replica fetch responses to the follower (a produce response
    # carries no record), in plaintext the marker is there
    from_leader = b"".join(p for s, d, p in list(sniffer.segments) if s == leader_port)
    to_nodes = sniffer.stream(node_ports)
    assert md.offset >= 0 and len(from_leader) > 100 and len(to_nodes) > 1000
    assert marker not in from_leader
    assert marker not in to_nodes
    assert b"PLAINTEXT-MARKER" not in to_nodes


def _leader_and_follower(c, topic):
    md = c.metadata()
    p = next(t for t in md.topics if t.name == topic).partitions[0]
    follower = next(r for r in p.replicas if r != p.leader)
    return f"broker-{p.leader}", f"broker-{follower}"


def test_ssl_without_sasl_serves_kafka_clients_and_refuses_plaintext_grpc(tls_cluster):
    from confluent_kafka import Consumer
    from confluent_kafka import Producer as CkProducer

    from client import Admin
    from client.common import errors
    c = tls_cluster
    c.create_topic("ssl-only", partitions=1, replication_factor=2)
    cfg = c.kafka_client_config()
    assert cfg["security.protocol"] == "SSL" and cfg["ssl.ca.location"].endswith("ca.pem")
    reports = []
    p = CkProducer(cfg)
    p.produce("ssl-only", b"over-tls", on_delivery=lambda err, msg: reports.append(err))
    assert p.flush(30) == 0 and reports == [None]
    cons = Consumer({**cfg, "group.id": "ssl-g", "auto.offset.reset": "earliest"})
    try:
        cons.subscribe(["ssl-only"])
        got = []
        wait_until(lambda: (got.append(cons.poll(0.5)) or any(m is not None and m.error() is None
                                                              and m.value() == b"over-tls" for m in got)),
                   30, what="the record read back over TLS")
    finally:
        cons.close()
    # brokerlab's client without the CA at a TLS gRPC listener: no connection, a clear error
    with Admin({"bootstrap.servers": c.bootstrap_servers, "request.timeout.ms": 3000,
                "default.api.timeout.ms": 3000}) as admin, pytest.raises(errors.KafkaError, match="UNAVAILABLE"):
        admin.list_topics()

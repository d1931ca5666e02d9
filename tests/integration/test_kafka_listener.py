"""The Kafka listener alone (no cluster): framing, versions, ordering, malformed input, faults.

Handlers here are fakes registered in the listener's table, so each test drives one behaviour
of node/kafka/server.py over a real loopback socket.
"""
from __future__ import annotations

import logging
import struct
import threading
from types import SimpleNamespace

import pytest

from client.common.pb import agent_pb2 as apb
from node.faults import FaultState, Rule, rules_to_pb
from node.kafka import api_versions
from node.kafka.codec import api_name, build
from node.kafka.registry import load_handlers
from node.kafka.server import KafkaListener
from tests.helpers import wait_until
from tests.kafka_wire import WireClient

METADATA, API_VERSIONS, HEARTBEAT = 3, 18, 12


class Calls:
    """What the fake Metadata handler saw, in order; a client.id of "slow" blocks until released."""

    def __init__(self):
        self.log: list[str] = []
        self.release = threading.Event()
        self.started = threading.Event()

    def metadata(self, ctx, header, request):
        self.log.append(f"start {header.client_id}")
        if header.client_id == "slow":
            self.started.set()
            assert self.release.wait(30)
        self.log.append(f"end {header.client_id}")
        return build(ctx.response_class(header), {"throttle_time": 0, "brokers": [], "cluster_id": "c",
                                                  "controller_id": 7, "topics": []})


@pytest.fixture
def calls():
    return Calls()


@pytest.fixture
def listen(calls):
    started = []

    def make(handlers=None, faults=None, sleep=None):
        from node.kafka.context import KafkaContext
        table = handlers if handlers is not None else {
            API_VERSIONS: api_versions.HANDLERS[API_VERSIONS], METADATA: (0, 12, calls.metadata)}
        ctx = KafkaContext("broker-1", 1, "127.0.0.1", SimpleNamespace())
        lst = KafkaListener("127.0.0.1", 0, ctx, table, faults, **({"sleep": sleep} if sleep else {})).start()
        started.append(lst)
        return f"127.0.0.1:{lst.port}"
    make.listeners = started
    yield make
    for lst in started:
        lst.stop()


def test_api_versions_advertises_exactly_the_registered_ranges(listen):
    table = load_handlers()
    with WireClient(listen(table)) as c:
        resp = c.call(API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})
    assert resp.error_code == 0
    got = {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}
    assert got == {k: (lo, hi) for k, (lo, hi, _) in table.items()}
    # What the issue pins: ApiVersions 0-4, Metadata to 12, Produce 3-10, Fetch 4-12 (no topic ids).
    assert got[18] == (0, 4) and got[3] == (0, 12) and got[0] == (3, 10) and got[1] == (4, 12)


def test_api_versions_from_a_newer_client_gets_the_v0_fallback(listen):
    """KIP-511: a version we do not know is answered with a v0 body, UNSUPPORTED_VERSION and
    our ApiVersions range, so the client retries with one we serve."""
    with WireClient(listen()) as c:
        # ApiVersions v9: a v2 header (client_id, no tags) and a body we cannot know.
        head = struct.pack(">hhih", API_VERSIONS, 9, 42, 4) + b"test" + b"\x00"
        c.send_raw(struct.pack(">i", len(head) + 3) + head + b"\x01\x02\x03")
        cid, resp = c.receive(API_VERSIONS, 0)
        assert cid == 42
        assert resp.error_code == 35
        assert [(k.api_key, k.min_version, k.max_version) for k in resp.api_keys] == [(18, 0, 4)]
        assert c.call(API_VERSIONS, 3, {}).error_code == 0  # the connection lives on


def test_unsupported_version_is_answered_and_the_connection_lives_on(listen, calls, caplog):
    with WireClient(listen()) as c, caplog.at_level(logging.INFO, logger="node.kafka.server"):
        resp = c.call(METADATA, 13, {"topics": None, "allow_auto_topic_creation": False})
        assert resp.error_code == 35
        assert calls.log == []  # the handler never saw a version it did not register
        assert c.call(METADATA, 12, {"topics": None}).controller_id == 7
    assert "Unsupported Metadata v13" in caplog.text


def test_malformed_frame_closes_that_connection_only_with_a_log_line(listen, caplog):
    address = listen()
    with WireClient(address) as bad, WireClient(address) as good, \
            caplog.at_level(logging.WARNING, logger="node.kafka.server"):
        assert good.call(API_VERSIONS, 3, {}).error_code == 0
        head = struct.pack(">hhih", METADATA, 9, 1, 1) + b"x"
        bad.send_raw(struct.pack(">i", len(head) + 4) + head + b"\xff\xff\xff\xff")  # topics: -1 then junk
        assert bad.closed_by_server()
        assert good.call(API_VERSIONS, 3, {}).error_code == 0
    assert "malformed request" in caplog.text


def test_unknown_api_key_and_bad_frame_size_close_with_a_log_line(listen, caplog):
    address = listen()
    with caplog.at_level(logging.WARNING, logger="node.kafka.server"):
        with WireClient(address) as c:
            c.send_raw(struct.pack(">ihhih", 10, 9999, 0, 5, -1))
            assert c.closed_by_server()
        with WireClient(address) as c:
            c.send_raw(struct.pack(">i", -5))
            assert c.closed_by_server()
    assert "API key 9999" in caplog.text and "frame size -5" in caplog.text


def test_one_connection_in_order_connections_in_parallel(listen, calls):
    address = listen()
    slow = WireClient(address, client_id="slow")
    fast = WireClient(address, client_id="fast")
    try:
        first = slow.send(METADATA, 12, {"topics": None})
        assert calls.started.wait(10)
        second = slow.send(METADATA, 12, {"topics": None})
        # Another connection is served while the slow one's request is in flight.
        assert fast.call(METADATA, 12, {"topics": None}).controller_id == 7
        calls.release.set()
        assert slow.receive(METADATA, 12)[0] == first
        assert slow.receive(METADATA, 12)[0] == second
        # The second request on the slow connection started only after the first ended.
        assert [e for e in calls.log if e.endswith("slow")] == ["start slow", "end slow", "start slow", "end slow"]
    finally:
        calls.release.set()
        slow.close()
        fast.close()


def _faults(*rules: Rule) -> FaultState:
    st = FaultState("broker-1")
    st.apply(apb.FaultRules(rules=rules_to_pb(list(rules))))
    return st


def test_drop_response_carries_the_request_out_then_closes(listen, calls):
    st = _faults(Rule("drop-response", "client:victim", "broker-1", method="Metadata"))
    address = listen(faults=st)
    with WireClient(address, client_id="victim") as c:
        c.send(METADATA, 12, {"topics": None})
        assert c.closed_by_server()  # EOF before any response byte
    assert calls.log == ["start victim", "end victim"]
    with WireClient(address, client_id="other") as c:
        assert c.call(METADATA, 12, {"topics": None}).controller_id == 7


def test_loss_closes_the_connection_before_the_request_runs(listen, calls):
    address = listen(faults=_faults(Rule("loss", "client:*", "broker-1", probability=1.0)))
    with WireClient(address, client_id="x") as c:
        c.send(METADATA, 12, {"topics": None})
        assert c.closed_by_server()
    assert calls.log == []


def test_partition_black_holes_the_connection_until_healed(listen, calls):
    st = _faults(Rule("drop", "client:x", "broker-1", tag="client"))
    address = listen(faults=st)
    with WireClient(address, client_id="x", timeout_s=30) as c:
        c.send(METADATA, 12, {"topics": None})
        c.send(METADATA, 12, {"topics": None})
        wait_until(lambda: st.refused >= 1, what="the listener to refuse the request")
        st.apply(apb.FaultRules())  # heal: the black-holed connection is closed, never answered late
        assert c.closed_by_server()
    assert calls.log == []
    with WireClient(address, client_id="x") as c:
        assert c.call(METADATA, 12, {"topics": None}).controller_id == 7


def test_a_partition_in_force_when_the_reply_is_due_stops_the_reply(listen, calls):
    """The reply crosses the network too (the gRPC interceptor's rule): a cut made while the
    request ran (here: from this node to the client) black-holes the connection."""
    st = FaultState("broker-1")
    cut = threading.Event()

    def cut_then_answer(ctx, header, request):
        st.apply(apb.FaultRules(rules=rules_to_pb([Rule("drop", "broker-1", "client:x")])))
        cut.set()
        return calls.metadata(ctx, header, request)
    address = listen({API_VERSIONS: api_versions.HANDLERS[API_VERSIONS], METADATA: (0, 12, cut_then_answer)}, st)
    with WireClient(address, client_id="x", timeout_s=30) as c:
        c.send(METADATA, 12, {"topics": None})
        assert cut.wait(10)
        st.apply(apb.FaultRules())
        assert c.closed_by_server()  # EOF, no response frame
    assert calls.log == ["start x", "end x"]


def test_delay_holds_the_request_then_serves_it(listen, calls):
    st = _faults(Rule("delay", "client:*", "broker-1", delay_ms=50))
    with WireClient(listen(faults=st), client_id="d") as c:
        assert c.call(METADATA, 12, {"topics": None}).controller_id == 7
    assert st.delayed == 1


def test_a_delayed_request_whose_client_left_is_dropped(listen, calls):
    """As at the gRPC edge: a request delayed past the client's patience never arrives (a delayed
    Heartbeat must not land late and keep a session alive)."""
    st = _faults(Rule("delay", "client:gone", "broker-1", delay_ms=300, method="Metadata"))
    in_delay, client_left = threading.Event(), threading.Event()

    def sleep(seconds: float) -> None:  # the delay ends only once the client has closed its connection
        in_delay.set()
        assert client_left.wait(10)
    address = listen(faults=st, sleep=sleep)
    lst = listen.listeners[-1]
    with WireClient(address, client_id="gone") as c:
        c.send(METADATA, 12, {"topics": None})
        assert in_delay.wait(10)
    client_left.set()
    wait_until(lambda: not lst._conns, what="the listener to finish with the connection")
    assert calls.log == []
    with WireClient(address, client_id="stays") as c:  # not delayed: served
        assert c.call(METADATA, 12, {"topics": None}).controller_id == 7
    assert calls.log == ["start stays", "end stays"]


def test_heartbeat_rules_cover_the_kafka_heartbeat_api():
    from chaos.controller import HEARTBEATS
    st = _faults(Rule("drop", "client:*", "coordinator", method=HEARTBEATS, tag="heartbeat"))
    st.name = "coordinator"
    assert api_name(HEARTBEAT) == "Heartbeat"
    assert st.decide("client:app", api_name(HEARTBEAT)).action == "refuse"
    assert st.decide("client:app", api_name(METADATA)).action == "pass"

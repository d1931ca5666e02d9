"""The real Coordinator read back from disk after a restart, on a ManualClock (no gRPC, no sleeps)."""
from __future__ import annotations

from client.common.clock import ManualClock
from client.common.config import BrokerConfig
from node.coordinator import Coordinator

CFG = {"broker.session.timeout.ms": 1000, "broker.heartbeat.interval.ms": 100}


def _coordinator(path, clock) -> Coordinator:
    return Coordinator(str(path), "127.0.0.1", 0, BrokerConfig.from_props(CFG), clock=clock)


def test_broker_sessions_after_a_restart_count_from_when_the_coordinator_serves(tmp_path):
    clock = ManualClock(0)
    first = _coordinator(tmp_path / "coordinator", clock)
    epochs = {b: first.mutate(lambda s, now, b=b: s.register_broker(b, "127.0.0.1", 9100 + b, "", now))
              for b in (1, 2)}
    first.mutate(lambda s, now: s.create_topic("t", 1, 2, {}))
    first.stop()
    second = _coordinator(tmp_path / "coordinator", clock)  # the state is read back here
    # A loaded machine: the listeners, the metrics endpoint and the gRPC server take longer than a
    # session before anything can be heard (1.2 s and more in leader-churn runs, sessions of 1.5 s).
    clock.advance(1500)
    second.start()  # node.main: the gRPC server serves; heartbeats can arrive from here on
    try:
        clock.advance(200)  # the brokers' next heartbeat is on its way
        second.mutate(lambda s, now: s.tick(now))
        p = second.state.topics["t"].partitions[0]
        assert p.leader in (1, 2)  # nobody was fenced before it could be heard
        for b in (1, 2):  # their heartbeat unfences them with their old epoch: no re-registration
            second.mutate(lambda s, now, b=b: s.heartbeat(b, epochs[b], now))
        assert second.state.live_brokers() == {1, 2} and p.leader_epoch == 0
        clock.advance(1001)  # silence still fences, a session after the coordinator began to serve
        second.mutate(lambda s, now: s.tick(now))
        assert second.state.live_brokers() == set()
    finally:
        second.stop()

"""Issue B: leader/ISR replication, acks=all, failover that loses nothing acknowledged."""
from __future__ import annotations

import os
import threading

import pytest

from client import Admin, Producer
from client.common import errors, records
from client.common.network import ChannelPool
from client.common.pb import broker_pb2 as bpb
from client.common.pb import broker_pb2_grpc as bgrpc
from tests.helpers import broker_addresses, partition_state, read_all, replica_log, wait_until

SAFE = {"min.insync.replicas": "2"}


def _create(cluster, topic, partitions=1, rf=3, configs=SAFE):
    with Admin({"bootstrap.servers": cluster.bootstrap_servers}) as a:
        a.create_topic(topic, partitions, rf, configs)


def _stream(bootstrap, topic, n, acked, errors_seen, stop=None, **props):
    cfg = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2, "retry.backoff.ms": 50,
           "delivery.timeout.ms": 60000, "request.timeout.ms": 5000}
    cfg.update(props)
    with Producer(cfg) as p:
        futs = []
        for i in range(n):
            if stop is not None and stop.is_set():
                break
            futs.append((i, p.send(topic, str(i).encode(), partition=0)))
            if i % 200 == 199:
                futs[-1][1].exception(30)  # keep a steady stream rather than one burst
        p.flush(60)
        for i, f in futs:
            e = f.exception()
            if e is None:
                acked.append((i, f.result().offset))
            else:
                errors_seen.append(e)


def _assert_in_order_no_gaps(cluster, topic, acked):
    got = read_all(cluster.bootstrap_servers, topic, [0])
    values = [int(r.value) for r in next(iter(got.values()))]
    acked_values = {v for v, _ in acked}
    assert acked_values <= set(values), f"lost acknowledged records: {sorted(acked_values - set(values))[:10]}"
    assert len(values) == len(set(values)), "duplicates in the log"
    assert values == sorted(values), "records out of order"
    offsets = [r.offset for r in next(iter(got.values()))]
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), "gaps in offsets"
    return values


def test_leader_sigkill_during_acks_all_stream_loses_nothing(cluster):
    _create(cluster, "fo")
    leader, epoch, _, _ = partition_state(cluster, "fo", 0)
    acked, errs = [], []
    t = threading.Thread(target=_stream, args=(cluster.bootstrap_servers, "fo", 6000, acked, errs))
    t.start()
    wait_until(lambda: replica_log(cluster, leader, "fo", 0).high_watermark > 1500, 30, what="stream under way")
    cluster.agents[f"broker-{leader}"].kill()
    t.join(120)
    assert not t.is_alive()
    assert not errs, f"producer saw errors: {errs[:3]}"
    assert len(acked) == 6000
    new_leader, new_epoch, _, _ = partition_state(cluster, "fo", 0)
    assert new_leader != leader and new_epoch > epoch
    _assert_in_order_no_gaps(cluster, "fo", acked)

    # The killed broker comes back, catches up and rejoins the ISR.
    cluster.agents[f"broker-{leader}"].start()
    wait_until(lambda: sorted(partition_state(cluster, "fo", 0)[3]) == [1, 2, 3], 30, what="ISR full again")
    wait_until(lambda: len({replica_log(cluster, b, "fo", 0).digest for b in (1, 2, 3)}) == 1
               and len({replica_log(cluster, b, "fo", 0).high_watermark for b in (1, 2, 3)}) == 1,
               30, what="identical replicas")


def test_paused_follower_leaves_and_rejoins_isr(cluster):
    _create(cluster, "pz")
    leader, _, replicas, _ = partition_state(cluster, "pz", 0)
    follower = next(r for r in replicas if r != leader)
    acked, errs = [], []
    _stream(cluster.bootstrap_servers, "pz", 100, acked, errs)
    agent = cluster.agents[f"broker-{follower}"]
    agent.pause()
    try:
        # The leader shrinks the ISR after replica.lag.time.max.ms (the controller fences it too).
        wait_until(lambda: follower not in partition_state(cluster, "pz", 0)[3], 20, what="follower out of ISR")
        _stream(cluster.bootstrap_servers, "pz", 100, acked, errs)  # still writable with min.isr=2
        assert not errs
    finally:
        agent.resume()
    wait_until(lambda: follower in partition_state(cluster, "pz", 0)[3], 30, what="follower back in ISR")


def test_two_of_three_down_acks_all_fails_acks_1_works(cluster):
    _create(cluster, "nr")
    leader, _, replicas, _ = partition_state(cluster, "nr", 0)
    for r in replicas:
        if r != leader:
            cluster.agents[f"broker-{r}"].kill()
    wait_until(lambda: partition_state(cluster, "nr", 0)[3] == [leader], 20, what="ISR down to the leader")
    bs = cluster.bootstrap_servers
    # NOT_ENOUGH_REPLICAS is retriable: with retries=0 it reaches the caller as itself.
    with Producer({"bootstrap.servers": bs, "acks": "all", "retries": 0, "linger.ms": 0}) as p, \
            pytest.raises(errors.NotEnoughReplicasError):
        p.send("nr", b"x", partition=0).get(10)
    with Producer({"bootstrap.servers": bs, "acks": "1", "enable.idempotence": False}) as p:
        md = p.send("nr", b"y", partition=0).get(10)
        assert md.offset >= 0


def _isolate(cluster, node: str):
    """Cuts `node` off from every other node (clients still reach it), through the chaos controller."""
    from chaos.controller import ChaosController
    ctl = ChaosController(cluster.bootstrap_servers, state_path=os.path.join(cluster.data_dir, "chaos.json"),
                          control_token=cluster.control_token)
    ctl.discover()
    ctl.isolate(node)
    return ctl


def _heal(ctl) -> None:
    ctl.heal_network()
    ctl.close()


def test_isolated_leader_truncates_acks1_writes_on_rejoin(cluster):
    _create(cluster, "iso", configs={})
    acked, errs = [], []
    _stream(cluster.bootstrap_servers, "iso", 300, acked, errs)
    assert not errs
    leader, _epoch, replicas, _ = partition_state(cluster, "iso", 0)
    addr = broker_addresses(cluster)[leader]
    ctl = _isolate(cluster, f"broker-{leader}")
    pool = ChannelPool("client:test")
    try:
        # Once the controller has moved leadership, writes that only the isolated old leader
        # accepts (acks=1) can reach no follower (earlier, a fetch already in flight could carry them).
        wait_until(lambda: partition_state(cluster, "iso", 0)[0] not in (leader, -1), 20, what="a new leader")
        stub = bgrpc.BrokerStub(pool.get(addr))
        accepted = 0
        for i in range(20):
            req = bpb.ProduceRequest(acks=1, timeout_ms=2000)
            req.partitions.add(topic="iso", partition=0, records=records.build_batch([(0, None, b"lost-%d" % i, None)]))
            if stub.Produce(req, timeout=5).partitions[0].error_code == 0:
                accepted += 1
        assert accepted > 0
        assert replica_log(cluster, leader, "iso", 0).log_end_offset >= 300 + accepted
    finally:
        _heal(ctl)
        pool.close()
    new_leader = partition_state(cluster, "iso", 0)[0]
    wait_until(lambda: replica_log(cluster, leader, "iso", 0).role == "follower", 20, what="old leader follows")

    def converged():
        logs = [replica_log(cluster, b, "iso", 0) for b in replicas]
        return len({(l.digest, l.high_watermark, l.log_end_offset) for l in logs}) == 1
    wait_until(converged, 30, what="replicas identical after truncation")
    got = read_all(cluster.bootstrap_servers, "iso", [0])
    values = [r.value for r in next(iter(got.values()))]
    assert not any(v.startswith(b"lost-") for v in values), "the isolated leader's writes survived"
    assert {str(v).encode() for v, _ in acked} <= set(values)
    assert new_leader != leader


def test_all_brokers_killed_and_restarted_keep_acked(cluster):
    _create(cluster, "all", partitions=3)
    acked, errs = [], []
    _stream(cluster.bootstrap_servers, "all", 2000, acked, errs)
    assert not errs and len(acked) == 2000
    for n in cluster.broker_names():
        cluster.agents[n].kill()
    for n in cluster.broker_names():
        cluster.agents[n].start()
    cluster.wait_ready(30)
    wait_until(lambda: all(partition_state(cluster, "all", 0)[0] >= 0 for _ in [0]), 30, what="leader")
    got = read_all(cluster.bootstrap_servers, "all", [0])
    values = {int(r.value) for r in next(iter(got.values()))}
    assert {v for v, _ in acked} <= values


def test_describe_filters(cluster):
    import subprocess
    import sys
    _create(cluster, "flt", partitions=2)
    leader, _, _replicas, _ = partition_state(cluster, "flt", 0)
    cluster.agents[f"broker-{leader}"].kill()
    wait_until(lambda: leader not in partition_state(cluster, "flt", 0)[3], 20, what="ISR shrink")
    env_bs = ["--bootstrap-server", cluster.bootstrap_servers]
    r = subprocess.run([sys.executable, "-m", "brokerlab_cli", "topics", "describe", "--under-replicated-partitions"]
                       + env_bs, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert "Topic: flt\tPartition: 0" in r.stdout and "Topic: flt\tPartition: 1" in r.stdout
    r = subprocess.run([sys.executable, "-m", "brokerlab_cli", "topics", "describe", "--unavailable-partitions"]
                       + env_bs, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and "flt" not in r.stdout  # RF=3: a leader is still there

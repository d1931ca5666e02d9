"""ControllerState: registration, fencing, elections, ISR changes, topics (model only, explicit now_ms)."""
from __future__ import annotations

import pytest

from client.common import errors
from node.controller import ControllerState


def _cluster(n=3, session=1000, now=0):
    s = ControllerState(session)
    for b in range(1, n + 1):
        s.register_broker(b, "127.0.0.1", 9100 + b, "", now)
    return s


def test_create_topic_places_replicas_and_leaders_across_brokers():
    s = _cluster()
    t = s.create_topic("t", 6, 3, {"min.insync.replicas": "2"})
    assert {p.leader for p in t.partitions} == {1, 2, 3}
    for p in t.partitions:
        assert sorted(p.replicas) == [1, 2, 3] and p.isr == p.replicas and p.leader == p.replicas[0]
    assert t.configs == {"min.insync.replicas": "2"}


@pytest.mark.parametrize("args,err", [
    (("t", 1, 4, {}), errors.InvalidReplicationFactorError),
    (("t", 0, 1, {}), errors.InvalidPartitionsError),
    (("bad name", 1, 1, {}), errors.InvalidTopicError),
    (("t", 1, 1, {"no.such": "1"}), errors.InvalidConfigError),
])
def test_create_topic_bad_input(args, err):
    with pytest.raises(err):
        _cluster().create_topic(*args)


def test_duplicate_topic_and_unknown_delete():
    s = _cluster()
    s.create_topic("t", 1, 1, {})
    with pytest.raises(errors.TopicAlreadyExistsError):
        s.create_topic("t", 1, 1, {})
    with pytest.raises(errors.UnknownTopicOrPartitionError):
        s.delete_topic("nope")


def test_session_expiry_fences_elects_from_isr_and_shrinks_isr():
    s = _cluster(session=1000)
    p = s.create_topic("t", 1, 3, {}).partitions[0]
    leader, epoch = p.leader, p.leader_epoch
    for b in (1, 2, 3):
        if b != leader:
            s.heartbeat(b, s.brokers[b].broker_epoch, 900)
    assert s.tick(1001) == [leader]
    assert p.leader != leader and p.leader in p.isr and leader not in p.isr
    assert p.leader_epoch == epoch + 1
    with pytest.raises(errors.StaleBrokerEpochError):
        s.heartbeat(leader, s.brokers[leader].broker_epoch, 1002)


def test_follower_fenced_leaves_isr_but_last_member_stays():
    s = _cluster(n=2, session=100)
    p = s.create_topic("t", 1, 2, {}).partitions[0]
    s.heartbeat(p.leader, s.brokers[p.leader].broker_epoch, 90)
    s.tick(101)
    assert p.isr == [p.leader]
    s.tick(1000)  # now the leader too: no clean candidate, partition offline, ISR keeps it
    assert p.leader == -1 and len(p.isr) == 1


def test_unclean_election_only_when_enabled():
    for unclean, expect_leader in (("false", False), ("true", True)):
        s = _cluster(n=2, session=100)
        p = s.create_topic("t", 1, 2, {"unclean.leader.election.enable": unclean}).partitions[0]
        out_of_sync = next(r for r in p.replicas if r != p.leader)
        s.alter_partition(p.leader, s.brokers[p.leader].broker_epoch, "t", 0, p.leader_epoch, p.partition_epoch,
                          [p.leader])
        s.heartbeat(out_of_sync, s.brokers[out_of_sync].broker_epoch, 150)
        s.tick(160)  # the only ISR member is gone
        assert (p.leader == out_of_sync) is expect_leader


def test_alter_partition_refuses_stale_epochs_and_non_replicas():
    s = _cluster()
    p = s.create_topic("t", 1, 3, {}).partitions[0]
    be = s.brokers[p.leader].broker_epoch
    s.alter_partition(p.leader, be, "t", 0, p.leader_epoch, p.partition_epoch, [p.leader])
    with pytest.raises(errors.InvalidUpdateVersionError):
        s.alter_partition(p.leader, be, "t", 0, p.leader_epoch, p.partition_epoch - 1, p.replicas)
    with pytest.raises(errors.FencedLeaderEpochError):
        s.alter_partition(p.leader, be, "t", 0, p.leader_epoch - 1, p.partition_epoch, p.replicas)
    with pytest.raises(errors.InvalidRequestError):
        s.alter_partition(p.leader, be, "t", 0, p.leader_epoch, p.partition_epoch, [p.leader, 99])
    other = next(r for r in p.replicas if r != p.leader)
    with pytest.raises(errors.NotLeaderOrFollowerError):
        s.alter_partition(other, s.brokers[other].broker_epoch, "t", 0, p.leader_epoch, p.partition_epoch,
                          p.replicas)


def test_restart_inside_session_gets_a_new_epoch_and_offline_partitions_come_back():
    s = _cluster(n=1, session=100)
    p = s.create_topic("t", 1, 1, {}).partitions[0]
    s.tick(200)
    assert p.leader == -1
    epoch = s.register_broker(1, "127.0.0.1", 9101, "", 300)
    assert epoch > 1 and p.leader == 1


def test_state_survives_json_round_trip():
    s = _cluster()
    s.create_topic("t", 2, 3, {"min.insync.replicas": "2"})
    s2 = ControllerState(1000)
    s2.load_json(s.to_json(), 0)
    assert s2.to_json()["topics"] == s.to_json()["topics"]
    assert s2.metadata_epoch > s.metadata_epoch  # a restart is a new metadata epoch


# -- issue 20 item 6: after a controller restart, brokers are fenced until they heartbeat -----------------

def _restarted(s: ControllerState, now: int) -> ControllerState:
    """What a restarted coordinator loads: the persisted state, at `now` (a fresh monotonic clock)."""
    s2 = ControllerState(s.session_timeout_ms)
    s2.load_json(s.to_json(), now)
    return s2


def _dead_broker_3_out_of_sync(session=1000):
    """Brokers 1-3; topic t (unclean allowed) on replicas [1, 3]; broker 3 died and was fenced (ISR [1])."""
    s = _cluster(n=3, session=session)
    s.create_topic("t", 1, 2, {"unclean.leader.election.enable": "true"})
    p = s.topics["t"].partitions[0]
    p.replicas, p.isr, p.leader = [1, 3], [1, 3], 1
    for b in (1, 2):
        s.heartbeat(b, s.brokers[b].broker_epoch, 900)
    assert s.tick(1001) == [3]
    assert p.isr == [1] and s.brokers[3].fenced
    return s


def test_after_restart_a_dead_broker_is_not_elected_unclean():
    """Old code: the restart unfenced broker 3 with a fresh session, so when the leader restarted right
    after the coordinator, the unclean election picked the dead, out-of-sync broker 3 (and lost data)."""
    s = _restarted(_dead_broker_3_out_of_sync(), now=5000)
    p = s.topics["t"].partitions[0]
    s.register_broker(1, "127.0.0.1", 9101, "", 5100)  # broker 1 restarts: its old leadership is void
    assert p.leader == 1 and p.isr == [1]  # the only ISR member, re-elected cleanly, never broker 3
    assert s.live_brokers() == {1}
    assert s.brokers[2].fenced and s.brokers[3].fenced  # nobody else has been heard from yet


def test_after_restart_new_topics_avoid_brokers_not_heard_from():
    s = _restarted(_dead_broker_3_out_of_sync(), now=5000)
    with pytest.raises(errors.InvalidReplicationFactorError):
        s.create_topic("none-yet", 1, 1, {})
    for b in (1, 2):
        s.heartbeat(b, s.brokers[b].broker_epoch, 5100)  # same epochs: no re-registration needed
    assert s.live_brokers() == {1, 2}
    t = s.create_topic("n", 4, 1, {})
    assert {p.leader for p in t.partitions} == {1, 2}  # old code also placed leaders on dead broker 3
    with pytest.raises(errors.InvalidReplicationFactorError):
        s.create_topic("rf3", 1, 3, {})


def test_after_restart_fencing_is_persisted_and_silence_fences_at_the_session_timeout():
    s = _restarted(_dead_broker_3_out_of_sync(), now=5000)
    p = s.topics["t"].partitions[0]
    with pytest.raises(errors.StaleBrokerEpochError):  # fenced before the restart: must register again
        s.heartbeat(3, s.brokers[3].broker_epoch, 5100)
    s.heartbeat(2, s.brokers[2].broker_epoch, 5100)
    # Broker 1 (leader, sole ISR member) is silent: it keeps the partition until its session from the restart
    # ends, then is fenced as on any session expiry; the partition goes offline, broker 3 is never chosen.
    assert s.tick(6000) == [] and p.leader == 1
    assert s.tick(6001) == [1]
    assert p.leader == -1 and p.isr == [1] and s.live_brokers() == {2}
    again = _restarted(s, now=0)
    assert {b.broker_id for b in again.brokers.values() if not b.awaiting_heartbeat} == {1, 3}


def test_heartbeat_after_restart_unfences_without_an_election():
    s = _cluster(n=2, session=100)
    p = s.create_topic("t", 1, 2, {}).partitions[0]
    s = _restarted(s, now=1000)
    p = s.topics["t"].partitions[0]
    epoch = s.metadata_epoch
    s.heartbeat(p.leader, s.brokers[p.leader].broker_epoch, 1010)
    assert s.metadata_epoch > epoch and not s.brokers[p.leader].fenced
    assert p.leader_epoch == 0  # kept its leadership: no needless election


# -- issue 20 item 11: cluster defaults that topic configs override ------------------------------------------

@pytest.mark.parametrize("cluster_default, topic_setting, expect_unclean", [
    (False, None, False), (True, None, True), (True, "false", False), (False, "true", True)])
def test_unclean_election_follows_the_cluster_default_unless_the_topic_sets_it(cluster_default, topic_setting,
                                                                               expect_unclean):
    s = ControllerState(100, default_unclean=cluster_default)
    for b in (1, 2):
        s.register_broker(b, "127.0.0.1", 9100 + b, "", 0)
    configs = {} if topic_setting is None else {"unclean.leader.election.enable": topic_setting}
    p = s.create_topic("t", 1, 2, configs).partitions[0]
    out_of_sync = next(r for r in p.replicas if r != p.leader)
    s.alter_partition(p.leader, s.brokers[p.leader].broker_epoch, "t", 0, p.leader_epoch, p.partition_epoch,
                      [p.leader])
    s.heartbeat(out_of_sync, s.brokers[out_of_sync].broker_epoch, 150)
    s.tick(160)  # the only ISR member is gone
    assert (p.leader == out_of_sync) is expect_unclean


def test_create_topic_minus_one_takes_num_partitions_and_default_replication_factor():
    s = ControllerState(1000, num_partitions=4, default_replication_factor=2)
    for b in (1, 2, 3):
        s.register_broker(b, "127.0.0.1", 9100 + b, "", 0)
    t = s.create_topic("t", -1, -1, {})
    assert len(t.partitions) == 4 and all(len(p.replicas) == 2 for p in t.partitions)
    t = s.create_topic("u", 2, 3, {})  # explicit counts override the defaults
    assert len(t.partitions) == 2 and all(len(p.replicas) == 3 for p in t.partitions)
    with pytest.raises(errors.InvalidPartitionsError):
        s.create_topic("v", -2, -1, {})


def test_auto_create_topics_uses_the_cluster_defaults():
    s = ControllerState(1000, num_partitions=3, default_replication_factor=2)
    for b in (1, 2):
        s.register_broker(b, "127.0.0.1", 9100 + b, "", 0)
    s.create_topic("exists", 1, 1, {})
    out = s.auto_create_topics(["new", "exists", "new", "__consumer_offsets", "bad name"])
    assert set(out) == {"new", "__consumer_offsets", "bad name"}
    assert out["new"] is None and len(s.topics["new"].partitions) == 3
    assert all(len(p.replicas) == 2 for p in s.topics["new"].partitions)
    assert isinstance(out["__consumer_offsets"], errors.UnknownTopicOrPartitionError)
    assert isinstance(out["bad name"], errors.InvalidTopicError) and "bad name" not in s.topics
    s3 = ControllerState(1000, default_replication_factor=3)
    s3.register_broker(1, "127.0.0.1", 9101, "", 0)
    assert isinstance(s3.auto_create_topics(["t"])["t"], errors.InvalidReplicationFactorError)

"""Partition assignors: Kafka's documented tables, balance, stickiness, KIP-429's two phases."""
from __future__ import annotations

import random

import pytest

from client.assignors import (
    COOPERATIVE,
    EAGER,
    Assignment,
    Subscription,
    assignor_names,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
    get_assignor,
)
from client.common.errors import ConfigError
from client.common.types import TopicPartition


def tps(spec: str) -> list[tuple[str, int]]:
    """"t0p0 t1p1" -> [("t0", 0), ("t1", 1)]"""
    out = []
    for word in spec.split():
        topic, _, p = word.rpartition("p")
        out.append((topic, int(p)))
    return sorted(out)


def subs(topics_by_member: dict[str, list[str]], owned: dict[str, str] | None = None,
         generation: int = 1) -> dict[str, Subscription]:
    owned = owned or {}
    return {m: Subscription(topics, tps(owned.get(m, "")), generation if m in owned else -1)
            for m, topics in topics_by_member.items()}


def check_complete(result, members, partitions_per_topic):
    """Each partition of a subscribed topic exactly once, only to a subscriber."""
    assert set(result) == set(members)
    seen = [tp for parts in result.values() for tp in parts]
    assert len(seen) == len(set(seen))
    subscribed = {t for s in members.values() for t in s.topics}
    expected = {(t, p) for t in subscribed if t in partitions_per_topic
                for p in range(partitions_per_topic[t])}
    assert set(seen) == expected
    for mid, parts in result.items():
        assert all(t in members[mid].topics for t, _ in parts)


def spread(result) -> int:
    counts = [len(v) for v in result.values()]
    return max(counts) - min(counts)


# --------------------------------------------------------------- registry


def test_registry_names_and_protocols():
    assert assignor_names() == ["range", "roundrobin", "sticky", "cooperative-sticky"]
    assert {n: get_assignor(n).rebalance_protocol for n in assignor_names()} == {
        "range": EAGER, "roundrobin": EAGER, "sticky": EAGER, "cooperative-sticky": COOPERATIVE}
    assert get_assignor("cooperative-sticky").name == "cooperative-sticky"


def test_unknown_assignor_is_a_config_error():
    with pytest.raises(ConfigError, match="partition.assignment.strategy"):
        get_assignor("org.apache.kafka.clients.consumer.Nope")


# ----------------------------------------------------------------- codecs


def test_subscription_round_trip():
    sub = Subscription(["b", "a"], [("a", 1), ("b", 0)], 7, None, b"\x00\xff")
    blob = encode_subscription(sub)
    assert isinstance(blob, bytes)
    got = decode_subscription(blob, group_instance_id="inst")
    assert got == Subscription(["a", "b"], [TopicPartition("a", 1), TopicPartition("b", 0)], 7, "inst",
                               b"\x00\xff")


def test_assignment_round_trip_and_empty_blob():
    blob = encode_assignment([("t", 2), ("t", 0), ("u", 1)])
    assert decode_assignment(blob) == Assignment([("t", 0), ("t", 2), ("u", 1)], b"")
    assert decode_assignment(encode_assignment(Assignment([("t", 0)], b"ud"))).user_data == b"ud"
    assert decode_assignment(b"") == Assignment([], b"")


# ----------------------------------------------------------- exact tables


def test_range_kafka_doc_example():
    members = subs({"C0": ["t0", "t1"], "C1": ["t0", "t1"]})
    result = get_assignor("range").assign(members, {"t0": 3, "t1": 3})
    assert result == {"C0": tps("t0p0 t0p1 t1p0 t1p1"), "C1": tps("t0p2 t1p2")}


def test_range_uneven_three_members():
    members = subs({"c": ["t"], "a": ["t"], "b": ["t"]})
    result = get_assignor("range").assign(members, {"t": 8})
    assert result == {"a": tps("tp0 tp1 tp2"), "b": tps("tp3 tp4 tp5"), "c": tps("tp6 tp7")}


def test_range_orders_static_members_by_instance_id_first():
    members = {
        "aaa": Subscription(["t"]),
        "zzz": Subscription(["t"], group_instance_id="i-2"),
        "mmm": Subscription(["t"], group_instance_id="i-1"),
    }
    result = get_assignor("range").assign(members, {"t": 3})
    assert result == {"mmm": tps("tp0"), "zzz": tps("tp1"), "aaa": tps("tp2")}


def test_range_per_topic_subscribers_and_missing_topic():
    members = subs({"A": ["t0", "t1"], "B": ["t1", "gone"]})
    result = get_assignor("range").assign(members, {"t0": 2, "t1": 3})
    assert result == {"A": tps("t0p0 t0p1 t1p0 t1p1"), "B": tps("t1p2")}


def test_roundrobin_kafka_doc_example():
    members = subs({"C0": ["t0", "t1"], "C1": ["t0", "t1"]})
    result = get_assignor("roundrobin").assign(members, {"t0": 3, "t1": 3})
    assert result == {"C0": tps("t0p0 t0p2 t1p1"), "C1": tps("t0p1 t1p0 t1p2")}


def test_roundrobin_kafka_doc_example_unequal_subscriptions():
    members = subs({"C0": ["t0"], "C1": ["t0", "t1"], "C2": ["t0", "t1", "t2"]})
    result = get_assignor("roundrobin").assign(members, {"t0": 1, "t1": 2, "t2": 3})
    assert result == {"C0": tps("t0p0"), "C1": tps("t1p0"), "C2": tps("t1p1 t2p0 t2p1 t2p2")}


def test_sticky_kafka_doc_example_member_leaves():
    # Initial (balanced) assignment of 4 topics x 2 partitions over C0..C2; C1 leaves.
    members = subs({"C0": ["t0", "t1", "t2", "t3"], "C2": ["t0", "t1", "t2", "t3"]},
                   owned={"C0": "t0p0 t1p1 t3p0", "C2": "t1p0 t2p1"})
    result = get_assignor("sticky").assign(members, {t: 2 for t in ("t0", "t1", "t2", "t3")})
    assert result == {"C0": tps("t0p0 t1p1 t2p0 t3p0"), "C2": tps("t0p1 t1p0 t2p1 t3p1")}


def test_sticky_kafka_doc_example_unequal_subscriptions():
    members = subs({"C0": ["t0"], "C1": ["t0", "t1"], "C2": ["t0", "t1", "t2"]})
    result = get_assignor("sticky").assign(members, {"t0": 1, "t1": 2, "t2": 3})
    assert result == {"C0": tps("t0p0"), "C1": tps("t1p0 t1p1"), "C2": tps("t2p0 t2p1 t2p2")}


# ------------------------------------------------------------- properties


def random_case(rng: random.Random, equal: bool):
    topics = {f"t{i}": rng.randint(1, 8) for i in range(rng.randint(1, 4))}
    names = sorted(topics)
    members = {}
    for m in range(rng.randint(1, 6)):
        chosen = names if equal else rng.sample(names, rng.randint(1, len(names)))
        members[f"m{m}"] = Subscription(chosen)
    return members, topics


@pytest.mark.parametrize("name", ["range", "roundrobin", "sticky", "cooperative-sticky"])
def test_every_partition_assigned_exactly_once(name):
    rng = random.Random(42)
    for _ in range(100):
        members, topics = random_case(rng, equal=rng.random() < 0.5)
        check_complete(get_assignor(name).assign(members, topics), members, topics)


@pytest.mark.parametrize("name", ["roundrobin", "sticky", "cooperative-sticky"])
def test_balanced_for_equal_subscriptions(name):
    rng = random.Random(7)
    for _ in range(100):
        members, topics = random_case(rng, equal=True)
        assert spread(get_assignor(name).assign(members, topics)) <= 1


def test_sticky_is_balanced_for_unequal_subscriptions():
    """No partition could move to an eligible member with two or more fewer."""
    rng = random.Random(11)
    for _ in range(100):
        members, topics = random_case(rng, equal=False)
        result = get_assignor("sticky").assign(members, topics)
        for parts in result.values():
            for dst in result:
                if len(parts) - len(result[dst]) >= 2:
                    assert not any(t in members[dst].topics for t, _ in parts)


def test_sticky_random_rebalances_stay_balanced_and_move_little():
    rng = random.Random(3)
    topics = {"a": 7, "b": 5, "c": 11}
    sticky = get_assignor("sticky")
    members = {f"m{i}": Subscription(sorted(topics)) for i in range(3)}
    prev = sticky.assign(members, topics)
    for gen in range(2, 40):
        if rng.random() < 0.5 and len(members) < 8:
            members[f"m{gen + 100}"] = Subscription(sorted(topics))
        elif len(members) > 1:
            del members[rng.choice(sorted(members))]
        members = {m: Subscription(sorted(topics), prev.get(m, []), gen - 1) for m in members}
        result = sticky.assign(members, topics)
        check_complete(result, members, topics)
        assert spread(result) <= 1
        # Each surviving member keeps min(owned, quota floor) of its partitions.
        floor = sum(topics.values()) // len(members)
        for m, sub in members.items():
            kept = set(sub.owned_partitions) & set(result[m])
            assert len(kept) >= min(len(sub.owned_partitions), floor)
        prev = result


# -------------------------------------------------------------- stickiness


def test_sticky_member_join_moves_the_minimum():
    owned = {"A": "tp0 tp1 tp2 tp3", "B": "tp4 tp5 tp6 tp7", "C": "tp8 tp9 tp10 tp11"}
    members = subs({m: ["t"] for m in "ABCD"}, owned)
    result = get_assignor("sticky").assign(members, {"t": 12})
    assert [len(result[m]) for m in "ABCD"] == [3, 3, 3, 3]
    for m in "ABC":
        assert set(result[m]) <= set(tps(owned[m]))  # nobody gains, each gives one
    assert len(result["D"]) == 3


def test_range_is_not_sticky_but_sticky_is():
    owned = {"B": "tp0 tp1 tp2", "C": "tp3 tp4 tp5"}
    members = subs({m: ["t"] for m in "ABC"}, owned)
    sticky = get_assignor("sticky").assign(members, {"t": 6})
    moved = sum(1 for m in "BC" for tp in tps(owned[m]) if tp not in sticky[m])
    assert moved == 2
    rng = get_assignor("range").assign(members, {"t": 6})
    assert rng == {"A": tps("tp0 tp1"), "B": tps("tp2 tp3"), "C": tps("tp4 tp5")}


def test_sticky_ownership_conflict_newer_generation_wins():
    members = {
        "A": Subscription(["t"], [("t", 0), ("t", 1)], generation_id=3),
        "B": Subscription(["t"], [("t", 1), ("t", 2)], generation_id=4),
    }
    result = get_assignor("sticky").assign(members, {"t": 4})
    assert ("t", 1) in result["B"] and ("t", 0) in result["A"] and ("t", 2) in result["B"]


def test_sticky_drops_owned_partitions_of_unsubscribed_or_deleted_topics():
    members = subs({"A": ["t"], "B": ["t", "u"]}, owned={"A": "up0 tp0 tp1", "B": "tp5"})
    result = get_assignor("sticky").assign(members, {"t": 2, "u": 1})
    check_complete(result, members, {"t": 2, "u": 1})
    # A's claim on u (not subscribed) and B's on t-5 (no such partition) are void.
    assert result == {"A": tps("tp0 tp1"), "B": tps("up0")}


# ------------------------------------------------------ cooperative (KIP-429)


def run_round(assignor, owned: dict[str, list], generation: int, topics_by_member, partitions):
    members = {m: Subscription(t, owned.get(m, []), generation) for m, t in topics_by_member.items()}
    return assignor.assign(members, partitions)


def test_cooperative_two_phase_member_join():
    coop = get_assignor("cooperative-sticky")
    parts = {"t": 6}
    # Generation 1: A alone owns everything.
    round0 = run_round(coop, {}, 1, {"A": ["t"]}, parts)
    assert round0 == {"A": tps("tp0 tp1 tp2 tp3 tp4 tp5")}
    # B joins. Round 1: A gives up three partitions, but B does not get them yet.
    round1 = run_round(coop, round0, 1, {"A": ["t"], "B": ["t"]}, parts)
    assert round1 == {"A": tps("tp0 tp1 tp2"), "B": []}
    revoked = set(round0["A"]) - set(round1["A"])
    assert revoked == set(tps("tp3 tp4 tp5"))
    # Round 2 (after A revoked): B gets exactly what A gave up; A keeps the rest.
    round2 = run_round(coop, round1, 2, {"A": ["t"], "B": ["t"]}, parts)
    assert round2 == {"A": tps("tp0 tp1 tp2"), "B": tps("tp3 tp4 tp5")}
    # Eager sticky would have handed them over in a single round.
    eager = run_round(get_assignor("sticky"), round0, 1, {"A": ["t"], "B": ["t"]}, parts)
    assert eager == round2


def test_cooperative_never_assigns_a_partition_someone_else_still_owns():
    coop = get_assignor("cooperative-sticky")
    rng = random.Random(5)
    parts = {"a": 5, "b": 9}
    topics = sorted(parts)
    owned = run_round(coop, {}, 1, {"m0": topics, "m1": topics}, parts)
    names = ["m0", "m1"]
    for gen in range(2, 30):
        if rng.random() < 0.5:
            names.append(f"m{gen}")
        elif len(names) > 1:
            gone = rng.choice(names)
            names.remove(gone)
            owned.pop(gone)
        result = run_round(coop, owned, gen, {m: topics for m in names}, parts)
        for m, mine in result.items():
            for tp in mine:
                assert all(tp not in owned.get(o, []) for o in names if o != m)
        # Members only lose (revoke) or gain unowned partitions; the follow-up
        # round with nothing in flight settles to a complete, balanced result.
        settled = run_round(coop, result, gen, {m: topics for m in names}, parts)
        check_complete(settled, {m: Subscription(topics) for m in names}, parts)
        assert spread(settled) <= 1
        owned = settled


def test_cooperative_member_leaves_partitions_go_out_in_one_round():
    coop = get_assignor("cooperative-sticky")
    owned = {"A": tps("tp0 tp1"), "B": tps("tp2 tp3"), "C": tps("tp4 tp5")}
    result = run_round(coop, {m: owned[m] for m in "AB"}, 2, {"A": ["t"], "B": ["t"]}, {"t": 6})
    # Nothing is owned by a live member other than its holder: no second round needed.
    assert sorted(result["A"] + result["B"]) == tps("tp0 tp1 tp2 tp3 tp4 tp5")
    assert set(tps("tp0 tp1")) <= set(result["A"]) and set(tps("tp2 tp3")) <= set(result["B"])

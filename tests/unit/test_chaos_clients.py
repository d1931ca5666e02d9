"""chaos/clients: choosing a client library for a run, translating Kafka's configs to its spelling,
refusing what it cannot do, and the outcome rules every library adapter shares (chaos/clients/base.py),
driven through a scripted fake library."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from chaos.clients import ClientUnsupported, kafka_bootstrap, resolve_clients
from chaos.clients.base import AdapterClient, EosAdapter, GroupAdapter, Refused
from chaos.run import expectation_for, load_experiment

# ------------------------------------------------------------------------------- choosing and translating


def test_default_is_brokerlab_with_configs_as_given():
    spec = resolve_clients({"producer": {"acks": "all", "linger.ms": 2}}, "log")
    assert (spec.library, spec.producer, spec.notes) == ("brokerlab", {"acks": "all", "linger.ms": 2}, ())


def test_kafka_python_spells_settings_with_underscores_and_refuses_unknown_ones():
    spec = resolve_clients({"producer": {"acks": 1, "enable.idempotence": False, "delivery.timeout.ms": 8000},
                            "consumer": {"isolation.level": "read_committed", "max.poll.records": 50}},
                           "log", "kafka-python")
    assert spec.producer == {"acks": 1, "enable_idempotence": False, "delivery_timeout_ms": 8000}
    assert spec.consumer == {"isolation_level": "read_committed", "max_poll_records": 50}
    assert spec.version and spec.label.startswith("kafka-python ")
    with pytest.raises(ClientUnsupported, match="kafka-python has no producer setting for Kafka's 'emu.x'"):
        resolve_clients({"producer": {"emu.x": 1}}, "log", "kafka-python")


def test_aiokafka_leaves_out_what_it_has_no_setting_for_and_refuses_retries_off():
    spec = resolve_clients({"producer": {"acks": "all", "retries": 100, "delivery.timeout.ms": 15000,
                                         "request.timeout.ms": 2000}}, "log", "aiokafka")
    assert spec.producer == {"acks": "all", "request_timeout_ms": 2000}
    assert any("retries=100 left out" in n for n in spec.notes)
    assert any("delivery.timeout.ms=15000 left out" in n for n in spec.notes)
    with pytest.raises(ClientUnsupported, match="aiokafka cannot turn retries off"):
        resolve_clients({"producer": {"retries": 0}}, "log", "aiokafka")


def test_confluent_takes_kafkas_spelling_and_notes_the_keys_the_adapter_honours():
    spec = resolve_clients({"producer": {"max.block.ms": 10000, "linger.ms": 2}}, "txn", "confluent-kafka")
    assert spec.producer == {"max.block.ms": 10000, "linger.ms": 2}
    assert any("max.block.ms" in n for n in spec.notes)


@pytest.mark.parametrize("library", ["kafka-python", "confluent-kafka", "aiokafka"])
@pytest.mark.parametrize("workload", ["group-members"])
def test_a_workload_a_library_adapter_lacks_is_refused_naming_both(library, workload):
    with pytest.raises(ClientUnsupported, match=f"{library} cannot run the {workload} workload"):
        resolve_clients({}, workload, library)


def test_a_section_written_for_one_library_runs_only_with_it():
    section = {"library": "kafka-python", "producer": {"linger_ms": 5}}
    spec = resolve_clients(section, "log")
    assert (spec.library, spec.producer) == ("kafka-python", {"linger_ms": 5})  # its own spelling, as is
    with pytest.raises(ClientUnsupported, match="written for kafka-python.*--client aiokafka"):
        resolve_clients(section, "log", "aiokafka")
    with pytest.raises(ClientUnsupported, match="unknown client library 'kafka-java'"):
        resolve_clients({"library": "kafka-java"}, "log")
    with pytest.raises(ClientUnsupported, match="clients.lib: unknown field"):
        resolve_clients({"lib": "x"}, "log")


def test_expectation_per_library_and_its_validation():
    from chaos.run import _by_client
    exp = {"raw": {"checker": {"expect": "valid", "by_client": {
        "aiokafka": {"expect": {"any_of": ["duplicate"]}, "why": "it retries"}}}}, "expect": "valid"}
    assert expectation_for(exp, "aiokafka") == {"any_of": ["duplicate"]}
    assert expectation_for(exp, "kafka-python") == "valid"
    assert expectation_for(exp, None) == "valid"
    with pytest.raises(ValueError, match="give exactly 'expect' and 'why'"):
        _by_client({"by_client": {"aiokafka": {"expect": "valid"}}})
    with pytest.raises(ValueError, match="unknown client library"):
        _by_client({"by_client": {"kafka-java": {"expect": "valid", "why": "x"}}})


def test_kafka_bootstrap_lists_every_nodes_kafka_listener():
    md = SimpleNamespace(controller="127.0.0.1:5000", controller_kafka_port=9092,
                         brokers=[SimpleNamespace(node_id=2, host="127.0.0.1", kafka_port=9094),
                                  SimpleNamespace(node_id=1, host="127.0.0.1", kafka_port=9093)])
    assert kafka_bootstrap(md) == "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094"
    with pytest.raises(ClientUnsupported, match="no Kafka-protocol listeners"):
        kafka_bootstrap(SimpleNamespace(controller="h:1", controller_kafka_port=0, brokers=[]))


# ------------------------------------------------------------------------------- outcome rules


class Boom(Exception):
    pass


class FakeLibrary(AdapterClient):
    """A scripted library: `refuse` maps a value to the error produce() raises for it; `results` maps a
    value to (offset, error) its acknowledgement brings; `commit_error` fails commit()."""

    LIBRARY = "fake"

    def __init__(self, *_, **kw):
        kw.setdefault("transactional_id", "tid")
        super().__init__("b:1", {}, {}, **kw)
        self.refuse: dict = {}
        self.results: dict = {}
        self.polls: list = []
        self.producer = "producer"
        self.open_error = None
        self.commit_error = None
        self.abort_error = None
        self.reopen_error = None
        self.calls: list = []

    def delivery_timeout_s(self):
        return 1.0

    def open(self):
        self.calls.append("open")
        if self.open_error:
            raise self.open_error
        self.producer = "producer"
        return self

    def close(self):
        self.producer = None

    def produce(self, topic, partition, value):
        v = int(value)
        if v in self.refuse:
            raise self.refuse[v]
        self.calls.append(("produce", topic, partition, v))
        return v

    def wait(self, handles, timeout_s):
        return [self.results.get(v, (10 + v, None)) for v in handles]

    def poll_records(self):
        return self.polls.pop(0) if self.polls else {}

    def classify(self, e):
        if isinstance(e, Refused):
            return e.name, e.definite
        return type(e).__name__, False

    def begin(self):
        self.calls.append("begin")

    def commit(self):
        self.calls.append("commit")
        if self.commit_error:
            raise self.commit_error

    def abort(self):
        self.calls.append("abort")
        if self.abort_error:
            raise self.abort_error

    def reopen_producer(self):
        self.calls.append("reopen")
        if self.reopen_error:
            raise self.reopen_error


def test_send_ok_only_with_every_acknowledgement_and_its_offset():
    c = FakeLibrary()
    out = c.invoke("send", [["send", "t/0", 1], ["send", "t/1", 2]], {})
    assert (out.type, out.value) == ("ok", [["send", "t/0", [11, 1]], ["send", "t/1", [12, 2]]])


def test_send_fails_only_when_the_first_record_is_refused_definitely():
    c = FakeLibrary()
    c.refuse = {1: Refused("_QUEUE_FULL", True)}
    assert (c.invoke("send", [["send", "t/0", 1]], {}).type) == "fail"
    c.refuse = {1: Refused("timeout", False)}
    assert c.invoke("send", [["send", "t/0", 1]], {}).type == "info"
    c.refuse = {2: Refused("_QUEUE_FULL", True)}  # the first record was already handed over
    out = c.invoke("send", [["send", "t/0", 1], ["send", "t/0", 2]], {})
    assert (out.type, out.error) == ("info", "_QUEUE_FULL")


def test_a_failed_acknowledgement_is_info_whatever_the_error():
    c = FakeLibrary()
    c.results = {2: (None, Boom())}
    out = c.invoke("send", [["send", "t/0", 1], ["send", "t/0", 2]], {})
    assert (out.type, out.error, out.value) == ("info", "Boom", [["send", "t/0", 1], ["send", "t/0", 2]])


def test_txn_committed_is_ok_with_polls_and_offsets():
    c = FakeLibrary()
    c.polls = [{("t", 0): [(5, b"7")]}]
    out = c.invoke("txn", [["send", "t/0", 1], ["poll"]], {})
    assert (out.type, out.value) == ("ok", [["send", "t/0", [11, 1]], ["poll", {"t/0": [[5, 7]]}]])
    assert c.calls[0] == "begin" and c.calls[-1] == "commit"


def test_txn_aborted_before_commit_is_fail_and_keeps_its_polls():
    c = FakeLibrary()
    c.polls = [{("t", 0): [(5, b"7")]}]
    out = c.invoke("txn", [["poll"], ["send", "t/0", 1]], {"abort": True})
    assert (out.type, out.error) == ("fail", "aborted")
    assert out.value == [["poll", {"t/0": [[5, 7]]}], ["send", "t/0", 1]]
    assert "commit" not in c.calls and c.calls[-1] == "abort"
    c = FakeLibrary()
    c.results = {1: (None, Boom())}  # a send failed: abort, never commit
    out = c.invoke("txn", [["send", "t/0", 1]], {})
    assert (out.type, out.error) == ("fail", "Boom") and "commit" not in c.calls


def test_txn_commit_error_is_info():
    c = FakeLibrary()
    c.commit_error = Boom()
    out = c.invoke("txn", [["send", "t/0", 1]], {})
    assert (out.type, out.error) == ("info", "Boom")


def test_a_failed_abort_is_still_fail_and_the_producer_is_replaced_before_the_next_txn():
    c = FakeLibrary()
    c.abort_error = Boom()
    out = c.invoke("txn", [["send", "t/0", 1]], {"abort": True})
    assert (out.type, out.error) == ("fail", "aborted") and "reopen" not in c.calls
    c.abort_error, c.reopen_error, c.calls = None, Boom(), []
    out = c.invoke("txn", [["send", "t/0", 2]], {})  # the new producer cannot start: no transaction began
    assert (out.type, c.calls) == ("fail", ["reopen"])
    c.reopen_error, c.calls = None, []
    out = c.invoke("txn", [["send", "t/0", 3]], {})
    assert out.type == "ok" and c.calls[:2] == ["reopen", "begin"] and c.calls[-1] == "commit"


class FakeGroupLibrary(GroupAdapter, FakeLibrary):
    """FakeLibrary with group primitives: consumers are dicts naming their group."""

    def __init__(self):
        super().__init__("b:1", {}, {}, group="g")
        self.made: list = []
        self.closed: list = []
        self.positions_now = {("t", 0): 4}
        self.commit_error = None
        self.stored: dict = {}

    def open(self):
        self.consumer = self.new_consumer(None)  # what a library's LogClient.open does
        return super().open()

    def new_consumer(self, group_id):
        c = {"group": group_id, "topics": None}
        self.made.append(c)
        return c

    def close_consumer(self, c):
        self.closed.append(c)

    def assign_tps(self, tps, seek_to_beginning):
        self.consumer["assigned"] = tps

    def subscribe_topics(self, topics):
        self.consumer["topics"] = topics

    def consumed_positions(self):
        return dict(self.positions_now)

    def commit_offsets(self, offsets):
        if self.commit_error:
            raise self.commit_error
        self.stored.update(offsets)

    def committed_offsets(self, reader, tps):
        assert reader["group"] == "g"
        return {tp: self.stored.get(tp) for tp in tps}


def test_group_member_subscribes_commits_its_positions_and_leaves_for_the_final_read():
    c = FakeGroupLibrary().open()
    assert c.consumer["group"] == "g" and c.in_group
    assert c.invoke("subscribe", ["t/0", "t/1"], {}).type == "ok" and c.consumer["topics"] == ["t"]
    offsets = c.prepare("commit", {}, {"group": "g"})
    assert offsets == {"t/0": 4}
    assert (c.invoke("commit", offsets, {}).type, c.stored) == ("ok", {("t", 0): 4})
    out = c.invoke("committed", ["t/0", "t/1"], {})
    assert (out.type, out.value) == ("ok", {"t/0": 4, "t/1": None})
    c.commit_error = Boom()  # a rejected commit may follow an attempt that landed: info
    assert c.invoke("commit", {"t/0": 5}, {}).type == "info"
    member = c.consumer
    assert c.invoke("assign", ["t/0"], {"seek_to_beginning": True}).type == "ok"
    assert member in c.closed and c.consumer["group"] is None and not c.in_group
    assert c.prepare("commit", {}, {}) == {}  # a plain consumer commits nothing
    out = c.invoke("committed", ["t/0"], {})  # read through a borrowed member, closed after
    assert (out.type, out.value) == ("ok", {"t/0": 4}) and c.closed[-1]["group"] == "g"
    assert c.invoke("subscribe", ["t/0"], {}).type == "ok" and c.consumer["group"] == "g"


class FakeEos(EosAdapter, FakeLibrary):
    """A pipeline instance over the scripted library; `committed` is the group's offsets."""

    ISOLATION_KEY = "isolation.level"

    def __init__(self):
        import itertools
        super().__init__("b:1", {}, {}, pipeline=True, group="g", transactional_id="tid-1", input_keys=["in/0"],
                         output_topic="out", attempts=itertools.count(1))
        self.committed = {("in", 0): 0}
        self.offsets_sent: list = []
        self.seeks: list = []
        self.send_offsets_error = None

    def new_consumer(self, group_id):
        return {"group": group_id}

    def close_consumer(self, c):
        pass

    def subscribe_topics(self, topics):
        pass

    def send_offsets(self, offsets):
        if self.send_offsets_error:
            raise self.send_offsets_error
        self.offsets_sent.append(offsets)

    def committed_offsets(self, reader, tps):
        return {tp: self.committed.get(tp) for tp in tps}

    def seek_to(self, tp, offset):
        self.seeks.append((tp, offset))


def test_eos_step_copies_each_input_and_commits_its_offsets_in_the_transaction():
    c = FakeEos().open()
    assert c.consumer == {"group": "g"}
    c.polls = [{("in", 0): [(7, b"3"), (8, b"4")]}]
    out = c.invoke("txn", [["poll"]], {})
    assert out.type == "ok"
    assert out.value == [["poll", {"in/0": [[7, 3], [8, 4]]}],
                         ["send", "out/0", [10 + 3_000_001, 3_000_001]], ["send", "out/0", [10 + 4_000_001, 4_000_001]]]
    assert c.offsets_sent == [{("in", 0): 9}] and c.calls[-1] == "commit"


def test_eos_step_that_fails_before_commit_aborts_rewinds_and_is_fail():
    c = FakeEos().open()
    c.polls = [{("in", 0): [(7, b"3")]}]
    c.send_offsets_error = Boom()
    out = c.invoke("txn", [["poll"]], {})
    assert (out.type, out.error) == ("fail", "Boom")
    assert out.value == [["poll", {"in/0": [[7, 3]]}], ["send", "out/0", 3_000_001]]
    assert "commit" not in c.calls and c.calls[-1] == "abort" and c.seeks == [(("in", 0), 0)]


def test_eos_crash_leaves_the_transaction_open():
    c = FakeEos().open()
    c.invoke("subscribe", ["in/0"], {})
    c.polls = [{("in", 0): [(7, b"3")]}]
    out = c.invoke("crash", None, {})
    assert (out.type, out.error) == ("info", "crash")
    assert c.offsets_sent and "commit" not in c.calls and "abort" not in c.calls


def test_a_crash_whose_reopen_fails_is_info_and_the_next_op_opens_again():
    c = FakeLibrary()
    c.open_error = Boom()
    assert (c.invoke("crash", None, {}).type, c.producer) == ("info", None)
    with pytest.raises(Boom):  # the runner records it info and replaces the client
        c.invoke("send", [["send", "t/0", 1]], {})
    c.open_error = None
    assert c.invoke("send", [["send", "t/0", 2]], {}).type == "ok" and c.calls.count("open") == 3


def test_confluent_refuses_up_front_what_librdkafka_refuses_at_creation():
    with pytest.raises(ClientUnsupported, match=r"delivery.timeout.ms \(10000\) exceeds transaction.timeout.ms \(8000\)"):
        resolve_clients({"producer": {"delivery.timeout.ms": 10000, "transaction.timeout.ms": 8000}}, "eos",
                        "confluent-kafka")
    resolve_clients({"producer": {"delivery.timeout.ms": 10000, "transaction.timeout.ms": 8000}}, "log",
                    "confluent-kafka")  # not transactional: fine
    for name in ("txn-aborts-coordinator-kills", "eos-worker-kills"):  # the named ones run under librdkafka
        raw = load_experiment(name)["raw"]
        resolve_clients(raw["clients"], raw["workload"]["name"], "confluent-kafka")


def test_confluent_assign_changes_only_the_difference_with_explicit_offsets():
    """Kafka's assign() semantics over librdkafka without re-assigning kept partitions (a full assign()
    under quick re-assigns had librdkafka fetch a kept partition again from an older start offset):
    removed partitions are unassigned, new ones added at the reset position; a seek re-adds all."""
    import confluent_kafka as ck

    from chaos.clients import confluent

    class Consumer:
        def __init__(self):
            self.assigned: dict = {}
            self.calls: list = []

        def assignment(self):
            return [ck.TopicPartition(t, p) for t, p in self.assigned]

        def incremental_unassign(self, tps):
            self.calls.append(("unassign", sorted((tp.topic, tp.partition) for tp in tps)))
            for tp in tps:
                del self.assigned[(tp.topic, tp.partition)]

        def incremental_assign(self, tps):
            self.calls.append(("assign", [(tp.topic, tp.partition, tp.offset) for tp in tps]))
            for tp in tps:
                self.assigned[(tp.topic, tp.partition)] = tp.offset

        def assign(self, tps):
            raise AssertionError("a full assign() re-starts kept partitions")

    c = confluent.LogClient("127.0.0.1:1", {}, {})  # constructing opens nothing
    c.consumer = Consumer()
    c.assign_tps([("t", 0), ("t", 1)], False)
    c.assign_tps([("t", 1), ("t", 2)], False)
    assert c.consumer.calls == [("assign", [("t", 0, ck.OFFSET_BEGINNING), ("t", 1, ck.OFFSET_BEGINNING)]),
                                ("unassign", [("t", 0)]), ("assign", [("t", 2, ck.OFFSET_BEGINNING)])]
    c.consumer.calls.clear()
    c.assign_tps([("t", 2)], True)
    assert c.consumer.calls == [("unassign", [("t", 1), ("t", 2)]), ("assign", [("t", 2, ck.OFFSET_BEGINNING)])]
    c = confluent.LogClient("127.0.0.1:1", {}, {"auto.offset.reset": "latest"})
    c.consumer = Consumer()
    c.assign_tps([("t", 2)], False)
    assert c.consumer.calls == [("assign", [("t", 2, ck.OFFSET_END)])]


def test_closing_note_names_library_counts_wall_time_and_command():
    from chaos.run import RunOutcome
    out = RunOutcome("safe", 7, "/r", {"valid": True, "anomaly_types": [], "anomalies": {}, "_experiment_path": "safe.yaml",
                                       "stats": {"ops": 10, "values_acknowledged": 4, "values_read": 5}},
                     "valid", 12.4, client={"library": "aiokafka", "version": "0.14.0"})
    assert out.client_note() == ("client aiokafka 0.14.0: 10 ops, 4 values acknowledged, 5 read, 12 s wall "
                                 "(brokerlab chaos run safe.yaml --seed 7 --client aiokafka)")

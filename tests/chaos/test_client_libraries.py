"""Issue 13: short forms of one valid and one invalid named experiment through each Kafka client
library (chaos run --client), over the Kafka-protocol listener of one cluster the runs share.

- safe (kill / pause / partition / heartbeat-delay, idempotent acks=all producers, read_committed
  consumers): VALID, with the run folder, results.json and report naming the library and version;
- idempotence-off-responses-dropped (Produce responses dropped after the append, retries on,
  enable.idempotence off): the library's retries append batches twice, and the checker names
  `duplicate`.
"""
from __future__ import annotations

import json
import os

import pytest
import yaml

from chaos.run import expectation_for, load_experiment, run_experiment
from node.cluster import FAST_CONFIGS, Cluster

LIBRARIES = ["kafka-python", "confluent-kafka", "aiokafka"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One cluster for the module (starting one costs more than a short run): each run heals what its
    faults did and reads to the end before the next starts; each uses topics of its own."""
    c = Cluster(str(tmp_path_factory.mktemp("clients-lab")), brokers=3, port=0,
                configs={**FAST_CONFIGS, "unclean.leader.election.enable": False}).start()
    yield c
    c.stop()


def _run(name: str, library: str, seed: int, duration_s: float, tmp_path, lab):
    raw = load_experiment(name)["raw"]
    tag = library.replace("-", "")
    raw = {**raw, "topics": [{**t, "name": f"{t['name']}-{name[:4]}-{tag}"} for t in raw["topics"]]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    exp = load_experiment(str(path))
    exp = {**exp, "expect": expectation_for(exp, library)}
    out = run_experiment(exp, seed=seed, duration_s=duration_s, out_dir=str(tmp_path / name), progress=False,
                         client=library, echo=lambda s: None, bootstrap=lab.bootstrap_servers,
                         control_token=lab.control_token)
    print(f"\n{name} --client {library}: {out.verdict}; {out.client_note()}; run folder {out.run_dir}\n"
          f"replay: {out.replay_command()} --duration {duration_s:g}")
    with open(os.path.join(out.run_dir, "results.json")) as fh:
        assert json.load(fh)["client"] == out.client
    with open(os.path.join(out.run_dir, "run.json")) as fh:
        assert json.load(fh)["client"]["library"] == library
    with open(os.path.join(out.run_dir, "report.html")) as fh:
        assert f"client library <b>{library} {out.client['version']}" in fh.read()
    return out


@pytest.mark.parametrize("library", LIBRARIES)
def test_safe_is_valid_through_each_library(library, tmp_path, lab):
    out = _run("safe", library, seed=5, duration_s=8, tmp_path=tmp_path, lab=lab)
    stats = out.result["stats"]
    assert out.result["valid"] is True, json.dumps(out.result["anomalies"], default=str)[:2000]
    assert out.behaved and not out.caveats
    assert stats["values_acknowledged"] > 20 and stats["unseen_count"] == 0
    assert stats["ops_by_f"]["poll"].get("ok", 0) > 5


@pytest.mark.parametrize("library", LIBRARIES)
def test_idempotence_off_with_responses_dropped_finds_duplicates_through_each_library(library, tmp_path, lab):
    out = _run("idempotence-off-responses-dropped", library, seed=2, duration_s=9, tmp_path=tmp_path, lab=lab)
    assert out.result["valid"] is False
    assert "duplicate" in out.result["anomaly_types"], out.result["anomaly_types"]
    assert out.behaved
    # The producer settings went to the library in its own spelling.
    with open(os.path.join(out.run_dir, "experiment.yaml")) as fh:
        text = fh.read()
    assert f"library: {library}" in text
    assert ("enable.idempotence: false" if library == "confluent-kafka" else "enable_idempotence: false") in text

"""Issue 13: short forms of one valid and one invalid named experiment through each Kafka client
library (chaos run --client), on a fresh cluster each, over the Kafka-protocol listener.

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

from chaos.run import expectation_for, load_experiment, run_experiment

LIBRARIES = ["kafka-python", "confluent-kafka", "aiokafka"]


def _run(name: str, library: str, seed: int, duration_s: float, tmp_path):
    exp = load_experiment(name)
    exp = {**exp, "expect": expectation_for(exp, library)}
    out = run_experiment(exp, seed=seed, duration_s=duration_s, out_dir=str(tmp_path / name), progress=False,
                         client=library, echo=lambda s: None)
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
def test_safe_is_valid_through_each_library(library, tmp_path):
    out = _run("safe", library, seed=5, duration_s=8, tmp_path=tmp_path)
    stats = out.result["stats"]
    assert out.result["valid"] is True, json.dumps(out.result["anomalies"], default=str)[:2000]
    assert out.behaved and not out.caveats
    assert stats["values_acknowledged"] > 20 and stats["unseen_count"] == 0
    assert stats["ops_by_f"]["poll"].get("ok", 0) > 5


@pytest.mark.parametrize("library", LIBRARIES)
def test_idempotence_off_with_responses_dropped_finds_duplicates_through_each_library(library, tmp_path):
    out = _run("idempotence-off-responses-dropped", library, seed=2, duration_s=9, tmp_path=tmp_path)
    assert out.result["valid"] is False
    assert "duplicate" in out.result["anomaly_types"], out.result["anomaly_types"]
    assert out.behaved
    # The producer settings went to the library in its own spelling.
    with open(os.path.join(out.run_dir, "experiment.yaml")) as fh:
        text = fh.read()
    assert f"library: {library}" in text
    assert ("enable.idempotence: false" if library == "confluent-kafka" else "enable_idempotence: false") in text

"""The shortest full pipeline: train, evaluate and predict on tiny CSV data."""

from __future__ import annotations

import json

from tests.conftest import tiny_config


def test_train_evaluate_predict(tmp_path, cli):
    config = tiny_config(tmp_path)
    trained = cli("train", str(config), "--quiet")
    assert trained.exit_code == 0, trained.output
    run_dir = trained.stdout.strip().splitlines()[-1]
    evaluated = cli("evaluate", run_dir, "--quiet")
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((tmp_path / run_dir / "evaluation/test/metrics.json").read_text())
    assert metrics["num_examples"] == 30
    predicted = cli("predict", run_dir, "great wonderful film", "--format", "jsonl")
    assert predicted.exit_code == 0, predicted.output
    record = json.loads(predicted.stdout.splitlines()[0])
    assert abs(sum(record["probabilities"].values()) - 1) < 1e-5

"""model.calibration: train fits a temperature on validation and stores it; predict, the ONNX export and evaluate
apply it; evaluate reports ECE, Brier and NLL with and without it, a reliability diagram and risk-coverage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import run_cli, tiny_config
from textclf_cli.data.encoding import encode_texts
from textclf_cli.models.build import build_model
from textclf_cli.runs.checkpoint import CheckpointMeta, load_checkpoint
from textclf_cli.serving.inference import model_logits

TEXTS = ["a great and moving film", "awful, boring and too long", "the plot was fine"]


def train(config: Path, *options: str) -> Path:
    result = run_cli("train", str(config), *options)
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> Path:
    tmp_path = tmp_path_factory.mktemp("calibrated")
    return train(tiny_config(tmp_path, n_train=120, train={"epochs": 3}, output={"export_onnx": True}))


def raw_probabilities(checkpoint: dict, texts: list[str]) -> np.ndarray:
    """softmax of the model's own logits, without the temperature (the model rebuilt from the weights)."""
    meta = CheckpointMeta.from_dict(checkpoint)
    model = build_model(meta.model_type, len(meta.vocab), len(meta.labels), meta.model_kwargs)
    model.load_state_dict(checkpoint["state_dict"])
    encoded = encode_texts(texts, meta.tokenizer, meta.vocab)
    logits = model_logits(model, encoded, meta.max_length, meta.truncate, 8, torch.device("cpu"))
    return logits, meta.labels


def test_train_fits_a_temperature_and_predict_applies_it(calibrated: Path) -> None:
    best = load_checkpoint(calibrated / "checkpoints/best.pt")
    temperature = best["temperature"]
    assert temperature != 1.0 and 0.25 <= temperature <= 20
    assert f"calibration: temperature {temperature:.3f} fitted on the validation split" in \
        (calibrated / "train.log").read_text(encoding="utf-8")
    logits, labels = raw_probabilities(best, TEXTS)
    expected = torch.softmax(torch.from_numpy(logits) / temperature, dim=1).numpy()
    for source in (calibrated / "checkpoints/best.pt", calibrated / "export/model.onnx"):
        result = run_cli("predict", str(source), *TEXTS, "--format", "jsonl", "--precision", "fp32")
        assert result.exit_code == 0, result.output
        records = [json.loads(line) for line in result.stdout.splitlines()]
        got = np.array([[record["probabilities"][label] for label in labels] for record in records])
        np.testing.assert_allclose(got, expected, atol=1e-4)
    sidecar = json.loads((calibrated / "export/model.onnx.json").read_text(encoding="utf-8"))
    assert sidecar["temperature"] == pytest.approx(temperature)


def test_evaluate_reports_calibration_before_and_after(calibrated: Path) -> None:
    result = run_cli("evaluate", str(calibrated), "--split", "valid", "--precision", "fp32")
    assert result.exit_code == 0, result.output
    out = calibrated / "evaluation/valid"
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    calibration = metrics["calibration"]
    assert calibration["temperature"] == load_checkpoint(calibrated / "checkpoints/best.pt")["temperature"]
    # fitted on this very split: the NLL with the temperature is at most the NLL without it
    assert calibration["nll"] <= calibration["nll_uncalibrated"] + 1e-9
    assert {"ece", "ece_uncalibrated", "brier", "brier_uncalibrated"} <= set(calibration)
    assert sum(row["count"] for row in calibration["reliability"]) == metrics["num_examples"]
    coverage = {row["coverage"]: row for row in metrics["risk_coverage"]}
    assert coverage[1.0]["accuracy"] == pytest.approx(metrics["accuracy"])
    assert coverage[0.5]["texts"] == round(metrics["num_examples"] / 2)
    assert {"reliability.png", "risk_coverage.csv", "risk_coverage.png"} <= {p.name for p in out.iterdir()}


def test_calibration_none_keeps_the_raw_probabilities(tmp_path: Path) -> None:
    run_dir = train(tiny_config(tmp_path, train={"epochs": 1}), "--set", "model.calibration=none")
    assert load_checkpoint(run_dir / "checkpoints/best.pt")["temperature"] == 1.0
    assert "calibration:" not in (run_dir / "train.log").read_text(encoding="utf-8")

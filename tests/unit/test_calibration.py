"""calibration.py: the fitted temperature lowers NLL on an over-confident model; ECE, Brier, risk-coverage."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss

from textclf_cli.calibration import (
    brier_score,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    probabilities,
    reliability_table,
    risk_coverage,
)


def overconfident(n: int = 4000, scale: float = 6.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a calibrated 3-class model (drawn labels follow softmax(z)), then multiplied by `scale`."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    targets = np.array([rng.choice(3, p=row) for row in probs])
    return logits * scale, targets


def test_temperature_undoes_overconfidence_and_lowers_nll() -> None:
    logits, targets = overconfident()
    temperature = fit_temperature(logits, targets)
    assert temperature == pytest.approx(6.0, rel=0.1)
    before, after = (negative_log_likelihood(logits, targets, t, False) for t in (1.0, temperature))
    assert after < before
    assert before == pytest.approx(log_loss(targets, probabilities(logits, 1.0, False), labels=[0, 1, 2]), rel=1e-6)
    ece_before = expected_calibration_error(probabilities(logits, 1.0, False), targets)
    ece_after = expected_calibration_error(probabilities(logits, temperature, False), targets)
    assert ece_after < 0.03 < ece_before


def test_multilabel_temperature_and_an_empty_split() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3000, 4))
    targets = (rng.random((3000, 4)) < 1 / (1 + np.exp(-logits))).astype(np.uint8)
    assert fit_temperature(logits * 4, targets, multilabel=True) == pytest.approx(4.0, rel=0.15)
    assert fit_temperature(np.zeros((0, 2)), np.zeros(0, dtype=int)) == 1.0


def test_ece_brier_and_the_reliability_table_by_hand() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.35, 0.65], [0.45, 0.55]])
    targets = np.array([0, 1, 1, 0])
    table = reliability_table(probs, targets)
    bin_8, bin_9, bin_6, bin_5 = table[8], table[9], table[6], table[5]
    assert (bin_9["count"], bin_9["accuracy"]) == (1, 1.0) and (bin_8["count"], bin_8["accuracy"]) == (1, 0.0)
    assert (bin_6["count"], bin_5["count"]) == (1, 1)
    expected = (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.65) + abs(0 - 0.55)) / 4
    assert expected_calibration_error(probs, targets) == pytest.approx(expected)
    assert brier_score(probs, targets) == pytest.approx(np.mean([0.02, 1.28, 0.245, 0.605]))


def test_risk_coverage_keeps_the_most_confident_share() -> None:
    probs = np.array([[0.99, 0.01], [0.9, 0.1], [0.6, 0.4], [0.55, 0.45]])
    targets = np.array([0, 0, 1, 1])
    rows = {row["coverage"]: row for row in risk_coverage(probs, targets)}
    assert rows[0.5]["accuracy"] == 1.0 and rows[0.5]["min_confidence"] == pytest.approx(0.9)
    assert rows[1.0]["accuracy"] == 0.5 and rows[1.0]["texts"] == 4

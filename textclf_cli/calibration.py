"""Calibrated probabilities: a temperature fitted on validation logits (Guo et al. 2017), and the measures of
calibration evaluate reports (ECE, Brier score, the reliability table, accuracy at a coverage). numpy only."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

ECE_BINS = 10
COVERAGES = (0.5, 0.8, 0.9, 0.95, 1.0)
# log-temperatures searched, refined by golden-section on the (convex) NLL. Sharpening is bounded at 4x: on a
# validation split the model separates perfectly, the NLL falls without end as T -> 0
_LOG_T_RANGE = (-math.log(4.0), math.log(20.0))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def probabilities(logits: np.ndarray, temperature: float, multilabel: bool) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    return sigmoid(scaled) if multilabel else softmax(scaled)


def negative_log_likelihood(logits: np.ndarray, targets: np.ndarray, temperature: float, multilabel: bool) -> float:
    """Mean NLL: cross-entropy of the true class, or for multilabel the mean binary cross-entropy over labels."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    if multilabel:
        # log(1 + exp(-|z|)) + max(z, 0) - z*y, the stable form of BCE-with-logits
        return float(np.mean(np.logaddexp(0.0, scaled) - scaled * targets))
    log_norm = np.logaddexp.reduce(scaled, axis=1)
    return float(np.mean(log_norm - scaled[np.arange(len(targets)), targets]))


def fit_temperature(logits: np.ndarray, targets: np.ndarray, multilabel: bool = False) -> float:
    """The temperature T > 0 minimizing the validation NLL of logits / T. The NLL is convex in 1/T, so a
    golden-section search over log T finds the minimum; 1.0 for an empty split."""
    if len(logits) == 0:
        return 1.0
    low, high = _LOG_T_RANGE
    ratio = (math.sqrt(5) - 1) / 2

    def loss(log_t: float) -> float:
        return negative_log_likelihood(logits, targets, math.exp(log_t), multilabel)

    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    for _ in range(60):
        if loss_a < loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    return float(math.exp((low + high) / 2))


def top_label(probs: np.ndarray, targets: np.ndarray, multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) per prediction: the top label's probability and whether it is right. Multi-label:
    every (text, label) decision at 0.5, its confidence max(p, 1 - p)."""
    if multilabel:
        decided = probs >= 0.5
        return np.where(decided, probs, 1 - probs).ravel(), (decided == targets.astype(bool)).ravel()
    return probs.max(axis=1), probs.argmax(axis=1) == targets


def reliability_table(probs: np.ndarray, targets: np.ndarray, multilabel: bool = False,
                      bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Equal-width confidence bins: each bin's count, mean confidence and accuracy."""
    confidence, correct = top_label(probs, targets, multilabel)
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        chosen = index == b
        count = int(chosen.sum())
        rows.append({"low": b / bins, "high": (b + 1) / bins, "count": count,
                     "confidence": float(confidence[chosen].mean()) if count else 0.0,
                     "accuracy": float(correct[chosen].mean()) if count else 0.0})
    return rows


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, multilabel: bool = False,
                               bins: int = ECE_BINS) -> float:
    """Top-label ECE over equal-width bins: sum over bins of (share of predictions) * |accuracy - confidence|."""
    return ece_of(reliability_table(probs, targets, multilabel, bins))


def ece_of(table: list[dict[str, float]]) -> float:
    """The ECE of a reliability table."""
    total = sum(row["count"] for row in table)
    if total == 0:
        return 0.0
    return float(sum(row["count"] / total * abs(row["accuracy"] - row["confidence"]) for row in table))


def brier_score(probs: np.ndarray, targets: np.ndarray, multilabel: bool = False) -> float:
    """Mean squared error of the probabilities against one-hot (or multi-hot) targets, summed over classes."""
    truth = targets.astype(np.float64) if multilabel else np.eye(probs.shape[1])[targets]
    return float(np.mean(np.sum((probs - truth) ** 2, axis=1)))


def risk_coverage(probs: np.ndarray, targets: np.ndarray, coverages: tuple[float, ...] = COVERAGES
                  ) -> list[dict[str, float]]:
    """Accuracy on the most confident share of the texts, for each coverage, and the confidence there (the
    `predict --min-confidence` that keeps that share). Single-label tasks."""
    confidence, correct = top_label(probs, targets, multilabel=False)
    order = np.argsort(-confidence, kind="stable")
    rows = []
    for coverage in coverages:
        kept = max(1, int(round(coverage * len(order)))) if len(order) else 0
        chosen = order[:kept]
        rows.append({"coverage": coverage, "texts": kept,
                     "accuracy": float(correct[chosen].mean()) if kept else 0.0,
                     "min_confidence": float(confidence[chosen].min()) if kept else 1.0})
    return rows


def calibration_report(logits: np.ndarray, targets: np.ndarray, temperature: float, multilabel: bool
                       ) -> tuple[dict[str, Any], np.ndarray]:
    """(ECE, Brier score, NLL and the reliability table with the temperature (what predict gives) and without it
    (T = 1); the calibrated probabilities), each probability array and table computed once."""
    calibrated, raw = probabilities(logits, temperature, multilabel), probabilities(logits, 1.0, multilabel)
    table, raw_table = reliability_table(calibrated, targets, multilabel), reliability_table(raw, targets, multilabel)
    report = {
        "temperature": temperature,
        "ece": ece_of(table),
        "ece_uncalibrated": ece_of(raw_table),
        "brier": brier_score(calibrated, targets, multilabel),
        "brier_uncalibrated": brier_score(raw, targets, multilabel),
        "nll": negative_log_likelihood(logits, targets, temperature, multilabel),
        "nll_uncalibrated": negative_log_likelihood(logits, targets, 1.0, multilabel),
        "reliability": table,
        "reliability_uncalibrated": raw_table,
    }
    return report, calibrated

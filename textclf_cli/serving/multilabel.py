"""Multi-label decisions: independent sigmoid probabilities, and per-label thresholds (fixed or tuned for F1)."""

from __future__ import annotations

import numpy as np

DEFAULT_THRESHOLD = 0.5


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """(N, C) logits -> (N, C) float64 probabilities, each label on its own (rows do not sum to 1)."""
    logits = logits.astype(np.float64)
    return np.exp(-np.logaddexp(0.0, -logits))  # 1 / (1 + e^-x) without overflow warnings


def bce_loss(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean binary cross-entropy over all (example, label) pairs, as BCEWithLogitsLoss computes it."""
    x, y = logits.astype(np.float64), targets.astype(np.float64)
    return float(np.mean(np.logaddexp(0.0, x) - x * y)) if x.size else 0.0


def decide(probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(N, C) 0/1: a label is predicted when its probability is at or above its threshold."""
    return (probabilities >= np.asarray(thresholds)[None, :]).astype(np.uint8)


def thresholds_for(setting: float | str, probabilities: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(C,) thresholds: `setting` for every label, or with "per_label" each label's F1-best on these targets."""
    if setting == "per_label":
        return np.array([best_f1_threshold(probabilities[:, c], targets[:, c]) for c in range(targets.shape[1])])
    return np.full(targets.shape[1], float(setting))


def best_f1_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    """The threshold that maximizes one label's F1 on (scores, truth); the default when it has no positives.

    It is placed halfway between the chosen score and the next lower one, so the decisions on these scores
    are exactly those of the chosen cut while unseen scores get some margin.
    """
    if not truth.any() or len(scores) == 0:
        return DEFAULT_THRESHOLD
    from sklearn.metrics import precision_recall_curve

    precision, recall, cuts = precision_recall_curve(truth, scores)  # cuts ascending: predict score >= cut
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.nan_to_num(2 * precision[:-1] * recall[:-1] / (precision[:-1] + recall[:-1]))
    best = int(np.argmax(f1))
    return float(cuts[best] if best == 0 else (cuts[best - 1] + cuts[best]) / 2)

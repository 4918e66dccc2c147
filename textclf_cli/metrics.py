"""Classification metrics from true and predicted label indices (scikit-learn does the arithmetic)."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_better(monitor: str, value: float, best: float | None) -> bool:
    """Whether a monitored value beats the best so far: lower for valid_loss, higher for the others."""
    if best is None:
        return True
    return value < best if monitor == "valid_loss" else value > best


def classification_metrics(targets: np.ndarray, predictions: np.ndarray, labels: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    order = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, predictions, labels=order, zero_division=0
    )
    result: dict[str, Any] = {
        "num_examples": int(len(targets)),
        "accuracy": float(accuracy_score(targets, predictions)) if len(targets) else 0.0,
    }
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            targets, predictions, labels=order, average=average, zero_division=0
        )
        result.update({f"precision_{average}": float(p), f"recall_{average}": float(r), f"f1_{average}": float(f)})
    result["per_class"] = {
        label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                "support": int(support[i])}
        for i, label in enumerate(labels)
    }
    result["confusion_matrix"] = {
        "labels": list(labels),
        "matrix": confusion_matrix(targets, predictions, labels=order).tolist(),  # rows: true, columns: predicted
    }
    return result


def classification_report_text(targets: np.ndarray, predictions: np.ndarray, labels: list[str]) -> str:
    from sklearn.metrics import classification_report

    return classification_report(
        targets, predictions, labels=list(range(len(labels))), target_names=labels, digits=4, zero_division=0
    )


def multilabel_metrics(targets: np.ndarray, predictions: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Metrics of (N, C) 0/1 true and predicted label sets (N >= 1, C >= 2); each label's 2x2 confusion matrix
    is [[tn, fp], [fn, tp]]."""
    from sklearn.metrics import (
        accuracy_score,
        hamming_loss,
        multilabel_confusion_matrix,
        precision_recall_fscore_support,
    )

    result: dict[str, Any] = {
        "num_examples": int(len(targets)),
        "subset_accuracy": float(accuracy_score(targets, predictions)),
        "hamming_loss": float(hamming_loss(targets, predictions)),
    }
    for average in ("micro", "macro", "weighted", "samples"):
        p, r, f, _ = precision_recall_fscore_support(targets, predictions, average=average, zero_division=0)
        result.update({f"precision_{average}": float(p), f"recall_{average}": float(r), f"f1_{average}": float(f)})
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, predictions, labels=list(range(len(labels))), zero_division=0)
    matrices = multilabel_confusion_matrix(targets, predictions, labels=list(range(len(labels))))
    result["per_label"] = {
        label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                "support": int(support[i]), "confusion_matrix": matrices[i].tolist()}
        for i, label in enumerate(labels)
    }
    return result


def multilabel_report_text(targets: np.ndarray, predictions: np.ndarray, labels: list[str]) -> str:
    from sklearn.metrics import classification_report

    return classification_report(targets, predictions, labels=list(range(len(labels))), target_names=labels,
                                 digits=4, zero_division=0)


def ranking_metrics(targets: np.ndarray, probabilities: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """ROC-AUC and PR-AUC (average precision) of (N, C) probabilities: the positive class's for two labels, else
    one-vs-rest per label and their macro mean over the labels that have both positives and negatives here.
    `targets` are (N,) label indices, or (N, C) 0/1 rows for multi-label data."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    onehot = one_vs_rest(targets, len(labels))
    if targets.ndim == 1 and len(labels) == 2:
        if len(np.unique(targets)) < 2:
            return {"roc_auc": None, "pr_auc": None}
        return {"roc_auc": float(roc_auc_score(onehot[:, 1], probabilities[:, 1])),
                "pr_auc": float(average_precision_score(onehot[:, 1], probabilities[:, 1]))}
    scored = [i for i in range(len(labels)) if 0 < onehot[:, i].sum() < len(onehot)]
    per_label = {labels[i]: {"roc_auc": float(roc_auc_score(onehot[:, i], probabilities[:, i])),
                             "pr_auc": float(average_precision_score(onehot[:, i], probabilities[:, i]))}
                 for i in scored}
    return {"roc_auc": float(np.mean([v["roc_auc"] for v in per_label.values()])) if per_label else None,
            "pr_auc": float(np.mean([v["pr_auc"] for v in per_label.values()])) if per_label else None,
            "auc_per_label": per_label}


def one_vs_rest(targets: np.ndarray, num_labels: int) -> np.ndarray:
    """(N, C) 0/1 rows: multi-label targets as they are, label indices one-hot."""
    if targets.ndim == 2:
        return targets.astype(np.int64)
    onehot = np.zeros((len(targets), num_labels), dtype=np.int64)
    onehot[np.arange(len(targets)), targets] = 1
    return onehot


def top_confusions(gold: list[str], predicted: list[str], limit: int = 50) -> list[tuple[str, str, int]]:
    """The most frequent (gold, predicted) pairs among the errors, most frequent first (ties by name)."""
    from collections import Counter

    pairs = Counter((g, p) for g, p in zip(gold, predicted) if g != p)
    return sorted(((g, p, n) for (g, p), n in pairs.items()), key=lambda row: (-row[2], row[0], row[1]))[:limit]


def scalar_deltas(metrics: dict[str, Any], other: dict[str, Any]) -> dict[str, float]:
    """metric - other's metric for every number both have at the top level (accuracy, f1_macro, roc_auc, ...)."""
    return {key: float(value) - float(other[key]) for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
            and key not in ("num_examples", "checkpoint_epoch")
            and isinstance(other.get(key), (int, float)) and not isinstance(other.get(key), bool)}

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

"""metrics.py: every number agrees with the confusion matrix it ships with."""

from __future__ import annotations

import numpy as np
import pytest

from textclf_cli.metrics import classification_metrics, classification_report_text

LABELS = ["cat", "dog", "eel"]


def random_case(seed: int, n: int = 50) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 3, size=n)
    predictions = np.where(rng.random(n) < 0.6, targets, rng.integers(0, 3, size=n))
    return targets, predictions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_agree_with_the_confusion_matrix(seed: int) -> None:
    targets, predictions = random_case(seed)
    metrics = classification_metrics(targets, predictions, LABELS)
    matrix = np.array(metrics["confusion_matrix"]["matrix"])
    assert metrics["confusion_matrix"]["labels"] == LABELS
    assert matrix.sum() == metrics["num_examples"] == len(targets)
    for true, predicted in zip(targets, predictions):  # rows are true labels, columns predictions
        assert matrix[true, predicted] > 0
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    support, predicted_count, hits = matrix.sum(1), matrix.sum(0), np.diag(matrix)
    recall, precision = hits / support, hits / predicted_count
    f1 = 2 * precision * recall / (precision + recall)
    for i, label in enumerate(LABELS):
        per_class = metrics["per_class"][label]
        assert per_class["support"] == support[i]
        assert per_class["recall"] == pytest.approx(recall[i])
        assert per_class["precision"] == pytest.approx(precision[i])
        assert per_class["f1"] == pytest.approx(f1[i])
    assert metrics["recall_macro"] == pytest.approx(recall.mean())
    assert metrics["precision_macro"] == pytest.approx(precision.mean())
    assert metrics["f1_macro"] == pytest.approx(f1.mean())
    weights = support / support.sum()
    assert metrics["f1_weighted"] == pytest.approx((f1 * weights).sum())
    assert metrics["recall_weighted"] == pytest.approx(metrics["accuracy"])  # always true of weighted recall


def test_a_class_never_predicted_or_absent_counts_as_zero() -> None:
    metrics = classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]), LABELS)
    assert metrics["per_class"]["eel"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert np.array(metrics["confusion_matrix"]["matrix"]).shape == (3, 3)
    assert metrics["accuracy"] == 0.75
    assert metrics["per_class"]["dog"]["precision"] == 1.0 and metrics["per_class"]["dog"]["recall"] == 0.5


def test_perfect_predictions() -> None:
    targets = np.array([0, 1, 2, 2])
    metrics = classification_metrics(targets, targets, LABELS)
    assert metrics["accuracy"] == metrics["f1_macro"] == metrics["f1_weighted"] == 1.0
    assert metrics["confusion_matrix"]["matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 2]]


def test_metrics_are_plain_json_values() -> None:
    import json

    metrics = classification_metrics(*random_case(0), LABELS)
    assert json.loads(json.dumps(metrics)) == metrics


def test_report_names_every_label() -> None:
    report = classification_report_text(*random_case(0), LABELS)
    assert all(label in report for label in LABELS) and "macro avg" in report


def test_ranking_metrics_match_scikit_learn() -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    from textclf_cli.metrics import ranking_metrics

    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(2), size=50)
    targets = rng.integers(0, 2, size=50)
    binary = ranking_metrics(targets, probabilities, ["neg", "pos"])
    assert binary == {"roc_auc": pytest.approx(roc_auc_score(targets, probabilities[:, 1])),
                      "pr_auc": pytest.approx(average_precision_score(targets, probabilities[:, 1]))}
    probabilities = rng.dirichlet(np.ones(4), size=80)
    targets = rng.integers(0, 4, size=80)
    multi = ranking_metrics(targets, probabilities, list("abcd"))
    assert multi["roc_auc"] == pytest.approx(roc_auc_score(targets, probabilities, multi_class="ovr"))
    onehot = np.eye(4)[targets]
    assert multi["pr_auc"] == pytest.approx(average_precision_score(onehot, probabilities, average="macro"))
    multilabel_targets = (rng.random((60, 3)) < 0.4).astype(np.uint8)
    scores = rng.random((60, 3))
    multilabel = ranking_metrics(multilabel_targets, scores, list("xyz"))
    assert multilabel["roc_auc"] == pytest.approx(roc_auc_score(multilabel_targets, scores, average="macro"))
    assert multilabel["pr_auc"] == pytest.approx(average_precision_score(multilabel_targets, scores, average="macro"))


def test_ranking_metrics_skip_a_label_absent_from_the_split() -> None:
    from sklearn.metrics import roc_auc_score

    from textclf_cli.metrics import ranking_metrics

    targets = np.array([0, 1, 0, 1, 0])  # label "c" never occurs: its one-vs-rest AUC is undefined
    probabilities = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6], [0.6, 0.3, 0.1]])
    result = ranking_metrics(targets, probabilities, ["a", "b", "c"])
    assert set(result["auc_per_label"]) == {"a", "b"}
    assert result["roc_auc"] == pytest.approx(np.mean([roc_auc_score(targets == 0, probabilities[:, 0]),
                                                       roc_auc_score(targets == 1, probabilities[:, 1])]))


def test_top_confusions_and_deltas() -> None:
    from textclf_cli.metrics import scalar_deltas, top_confusions

    gold, predicted = ["a", "a", "b", "b", "b", "c"], ["b", "b", "a", "b", "c", "c"]
    assert top_confusions(gold, predicted) == [("a", "b", 2), ("b", "a", 1), ("b", "c", 1)]
    deltas = scalar_deltas({"accuracy": 0.9, "num_examples": 10, "per_class": {}, "roc_auc": None},
                           {"accuracy": 0.85, "num_examples": 10})
    assert deltas == {"accuracy": pytest.approx(0.05)}

"""Multi-label pieces on their own: label-set parsing, thresholds, loss, metrics, validation split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from textclf_cli.data.sources import label_set, read_table
from textclf_cli.data.splits import carve_valid, label_targets
from textclf_cli.errors import DataError
from textclf_cli.metrics import multilabel_metrics
from textclf_cli.serving.multilabel import bce_loss, best_f1_threshold, decide, sigmoid, thresholds_for
from textclf_cli.training.loop import count_correct
from textclf_cli.training.optim import build_multilabel_loss


@pytest.mark.parametrize(("value", "expected"), [
    ("sport|tech", ["sport", "tech"]),
    (" sport | tech |sport", ["sport", "tech"]),  # stripped, repeats dropped
    ("", []),
    ("  ", []),
    ("sport||tech|", ["sport", "tech"]),
    (["tech", "sport"], ["tech", "sport"]),
    ([], []),
    ([1, 2.0], ["1", "2"]),
    ("solo", ["solo"]),
    (None, None),  # missing: a bad row, not an empty set
])
def test_label_set(value, expected):
    assert label_set(value, "|", "f:1") == expected


@pytest.mark.parametrize("value", [[["nested"]], [None], {"a": 1}])
def test_label_set_refuses_other_json(value):
    with pytest.raises(DataError, match=r"^f:3: "):
        label_set(value, "|", "f:3")


def test_read_table_csv_with_a_separator(tmp_path: Path):
    path = tmp_path / "t.csv"
    path.write_text("text,tags\nfirst,a;b\nsecond,\nthird,b\n", encoding="utf-8")
    table = read_table(path, "csv", "text", "tags", label_separator=";")
    assert table.labels == [["a", "b"], [], ["b"]] and table.rows == [2, 3, 4]


def test_read_table_jsonl_names_the_line_of_a_bad_label(tmp_path: Path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"text": "x", "tags": ["a"]}) + "\n" + json.dumps({"text": "y", "tags": {"a": 1}}),
                    encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{path}:2: labels must be a list or a '\|'-separated string"):
        read_table(path, "jsonl", "text", "tags", label_separator="|")


def test_label_targets_are_multi_hot():
    targets = label_targets([["b"], [], ["c", "a"]], ["a", "b", "c"], multilabel=True)
    assert targets.dtype == np.uint8
    assert targets.tolist() == [[0, 1, 0], [0, 0, 0], [1, 0, 1]]


def test_carve_valid_splits_label_sets_without_stratifying():
    from textclf_cli.data.sources import LabelledTexts

    texts = LabelledTexts([f"t{i}" for i in range(10)], [["a"] if i % 2 else [] for i in range(10)], "src",
                          list(range(1, 11)))
    fit, valid = carve_valid(texts, 0.3, seed=1)
    assert len(fit) == 7 and len(valid) == 3
    assert sorted(fit.texts + valid.texts) == sorted(texts.texts)
    assert all(texts.labels[texts.texts.index(t)] == label for t, label in zip(valid.texts, valid.labels))


def test_sigmoid_and_bce_match_torch():
    logits = np.array([[-50.0, 0.0, 3.0], [2.0, -1.5, 40.0]], dtype=np.float32)
    targets = np.array([[0, 1, 1], [1, 0, 0]], dtype=np.uint8)
    assert sigmoid(logits) == pytest.approx(torch.sigmoid(torch.from_numpy(logits).double()).numpy())
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(logits).double(),
                                                                    torch.from_numpy(targets).double())
    assert bce_loss(logits, targets) == pytest.approx(float(expected))


def test_best_f1_threshold_picks_the_f1_best_cut_halfway_to_the_next_score():
    scores = np.array([0.1, 0.8, 0.4, 0.35])
    truth = np.array([0, 1, 1, 0])
    threshold = best_f1_threshold(scores, truth)
    assert threshold == pytest.approx((0.35 + 0.4) / 2)
    assert f1_score(truth, scores >= threshold) == 1.0


def test_best_f1_threshold_beats_or_ties_every_other_cut():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 200)
    scores = np.clip(truth * 0.3 + rng.random(200) * 0.7, 0, 1)
    best = f1_score(truth, scores >= best_f1_threshold(scores, truth))
    assert all(best >= f1_score(truth, scores >= cut) for cut in np.linspace(0, 1, 101))


def test_a_label_without_positives_keeps_the_default_threshold():
    assert best_f1_threshold(np.array([0.2, 0.9]), np.array([0, 0])) == 0.5


def test_thresholds_for_global_and_per_label():
    probabilities = np.array([[0.9, 0.2], [0.3, 0.6], [0.6, 0.1]])
    targets = np.array([[1, 0], [0, 1], [1, 0]])
    assert thresholds_for(0.7, probabilities, targets).tolist() == [0.7, 0.7]
    tuned = thresholds_for("per_label", probabilities, targets)
    assert decide(probabilities, tuned).tolist() == targets.tolist()


def test_balanced_pos_weight_is_negatives_over_positives():
    targets = np.array([[1, 0, 1], [0, 0, 1], [0, 1, 1], [0, 0, 1]], dtype=np.uint8)
    loss = build_multilabel_loss("balanced", targets)
    assert loss.bce.pos_weight.tolist() == pytest.approx([3.0, 3.0, 1e-3])
    assert build_multilabel_loss("none", targets).bce.pos_weight is None
    logits = torch.zeros(4, 3)
    assert float(loss(logits, torch.from_numpy(targets))) > 0  # uint8 targets are cast, not refused


def test_count_correct_needs_the_whole_label_set():
    logits = torch.tensor([[2.0, -1.0], [2.0, 1.0], [-1.0, -2.0]])
    targets = torch.tensor([[1, 0], [1, 0], [0, 0]], dtype=torch.uint8)
    assert int(count_correct(logits, targets)) == 2
    assert int(count_correct(torch.tensor([[0.1, 0.9]]), torch.tensor([1]))) == 1


def test_multilabel_metrics_match_sklearn():
    truth = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=np.uint8)
    predicted = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.uint8)
    metrics = multilabel_metrics(truth, predicted, ["a", "b", "c"])
    assert metrics["subset_accuracy"] == 0.25 and metrics["hamming_loss"] == 0.25
    assert metrics["f1_micro"] == pytest.approx(f1_score(truth, predicted, average="micro"))
    assert metrics["f1_samples"] == pytest.approx(f1_score(truth, predicted, average="samples", zero_division=0))
    assert metrics["per_label"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1,
                                         "confusion_matrix": [[2, 1], [1, 0]]}

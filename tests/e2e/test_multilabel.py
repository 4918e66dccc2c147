"""Multi-label end to end on tiny generated data: train -> evaluate -> predict for each model family, CSV and
JSONL input, with the reported metrics checked against scikit-learn on the written predictions."""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import (
    accuracy_score,
    hamming_loss,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
)

from tests.conftest import run_cli
from textclf_cli.runs.checkpoint import load_checkpoint

TOPIC_WORDS = {
    "money": ["stock", "bank", "market", "shares", "profit"],
    "sport": ["goal", "match", "team", "coach", "league"],
    "tech": ["chip", "software", "laptop", "internet", "robot"],
}
LABELS = sorted(TOPIC_WORDS)
FILLER = ["the", "a", "today", "news", "report", "said", "and", "of", "after", "week"]
N_TRAIN, N_TEST, EPOCHS = 80, 30, 2
RUN_FILES = {".lock", "config.yaml", "status.json", "history.csv", "train.log", "training_curves.png",
             "checkpoints/best.pt", "checkpoints/last.pt"}
EVALUATION_FILES = {"metrics.json", "classification_report.txt", "per_label.csv", "per_label_f1.png",
                    "errors.csv", "top_confusions.csv", "roc.png", "pr.png", "reliability.png"}
HISTORY_COLUMNS = ["epoch", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy", "valid_f1_macro",
                   "valid_f1_micro", "lr", "seconds"]
AVERAGES = ("micro", "macro", "weighted", "samples")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODELS = {
    "cnn": {"type": "cnn", "embedding_dim": 16, "num_filters": 8, "filter_sizes": [2, 3]},
    "lstm": {"type": "lstm", "embedding_dim": 16, "hidden_size": 8},
    "bag": {"type": "bag", "embedding_dim": 16, "buckets": 1000},
}


def label_set_examples(n: int, seed: int) -> list[tuple[str, list[str]]]:
    """n (text, labels) pairs with 0-2 topics each (an empty set means none), topic words in the text."""
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        labels = sorted(rng.sample(LABELS, [0, 1, 1, 2][i % 4]))
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 15))]
        for label in labels:
            for _ in range(rng.randint(1, 3)):
                words.insert(rng.randrange(len(words) + 1), rng.choice(TOPIC_WORDS[label]))
        examples.append((" ".join(words), labels))
    return examples


def write_label_sets(path: Path, examples: list[tuple[str, list[str]]], fmt: str, separator: str = "|") -> Path:
    """JSONL rows hold a list of labels; CSV rows a `separator`-joined string (empty for no labels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": text, "topics": labels}) + "\n" for text, labels in examples),
                        encoding="utf-8")
        return path
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "topics"])
        writer.writerows((text, separator.join(labels)) for text, labels in examples)
    return path


def multilabel_config(tmp_path: Path, fmt: str = "csv", model: str = "cnn", separator: str = "|",
                      train_examples: list | None = None, test_examples: list | None = None, **train: Any) -> Path:
    train_file = write_label_sets(tmp_path / f"data/train.{fmt}", train_examples or label_set_examples(N_TRAIN, 1),
                                  fmt, separator)
    test_file = write_label_sets(tmp_path / f"data/test.{fmt}", test_examples or label_set_examples(N_TEST, 2),
                                 fmt, separator)
    config = {
        "experiment": "tiny",
        "seed": 7,
        "device": "cpu",
        "task": "multilabel",
        "data": {"format": fmt, "train": str(train_file), "test": str(test_file), "label_column": "topics",
                 "label_separator": separator, "valid_fraction": 0.25, "prepared_dir": str(tmp_path / "prepared")},
        "vocab": {"max_size": 500, "min_freq": 1, "max_length": 50},
        "model": MODELS[model],
        "train": {"epochs": EPOCHS, "batch_size": 8, "lr": 0.02, "early_stopping_patience": None,
                  "monitor": "valid_f1_micro", "refit": False, **train},
        "output": {"runs_dir": str(tmp_path / "runs"), "export_onnx": False},  # covered by test_run_export.py
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def train(config: Path, *args: str) -> Path:
    result = ok(run_cli("train", str(config), *args))
    return Path(result.stdout.strip().splitlines()[-1])


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def multi_hot(label_sets: list[list[str]], labels: list[str] = LABELS) -> np.ndarray:
    return np.array([[int(label in chosen) for label in labels] for chosen in label_sets], dtype=np.uint8)


def sklearn_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """What metrics.json must say, computed here from the predictions that predict wrote."""
    expected: dict[str, Any] = {"subset_accuracy": accuracy_score(truth, predicted),
                                "hamming_loss": hamming_loss(truth, predicted)}
    for average in AVERAGES:
        p, r, f, _ = precision_recall_fscore_support(truth, predicted, average=average, zero_division=0)
        expected.update({f"precision_{average}": p, f"recall_{average}": r, f"f1_{average}": f})
    return expected


@dataclass(frozen=True)
class Case:
    model: str
    fmt: str

    def __str__(self) -> str:
        return f"{self.model}-{self.fmt}"


CASES = [Case(model, fmt) for model in ("cnn", "lstm", "bag") for fmt in ("csv", "jsonl")]


@dataclass
class Trained:
    case: Case
    config: Path
    run_dir: Path


@pytest.fixture(scope="module", params=CASES, ids=str)
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    case = request.param
    root = tmp_path_factory.mktemp(str(case))
    config = multilabel_config(root, case.fmt, case.model, separator=";" if case.model == "bag" else "|")
    return Trained(case, config, train(config, "--quiet"))


def test_train_writes_the_run_files_and_monitors_micro_f1(trained: Trained) -> None:
    assert files_under(trained.run_dir) == RUN_FILES
    history = pd.read_csv(trained.run_dir / "history.csv")
    assert list(history.columns) == HISTORY_COLUMNS
    assert history["epoch"].tolist() == list(range(1, EPOCHS + 1))
    for column in ("train_accuracy", "valid_accuracy", "valid_f1_macro", "valid_f1_micro"):
        assert history[column].between(0, 1).all()
    status = json.loads((trained.run_dir / "status.json").read_text(encoding="utf-8"))
    assert (status["status"], status["monitor"]) == ("completed", "valid_f1_micro")
    assert status["best_metric"] == pytest.approx(history["valid_f1_micro"].max())
    best = load_checkpoint(trained.run_dir / "checkpoints/best.pt")
    assert (best["task"], best["labels"], best["thresholds"]) == ("multilabel", LABELS, [0.5, 0.5, 0.5])


def test_reported_metrics_equal_sklearn_on_the_written_predictions(trained: Trained) -> None:
    test_file = Path(yaml.safe_load(trained.config.read_text())["data"]["test"])
    evaluated = ok(run_cli("evaluate", str(trained.run_dir), "--data", str(test_file), "--precision", "fp32"))
    out_dir = trained.run_dir / "evaluation" / f"data-{test_file.stem}"
    assert evaluated.stdout.strip().splitlines()[-1].endswith(f"on {N_TEST} examples; written to {out_dir}")
    assert files_under(out_dir) == EVALUATION_FILES
    metrics = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))

    output = trained.config.parent / "predictions.jsonl"
    ok(run_cli("predict", str(trained.run_dir), "--input", str(test_file), "--format", "jsonl", "--output",
               str(output), "--precision", "fp32"))
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    examples = label_set_examples(N_TEST, 2)
    assert [record["text"] for record in records] == [text for text, _ in examples]
    truth, predicted = multi_hot([labels for _, labels in examples]), multi_hot([r["labels"] for r in records])

    assert metrics["num_examples"] == N_TEST
    for key, value in sklearn_metrics(truth, predicted).items():
        assert metrics[key] == pytest.approx(value), key
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, zero_division=0)
    matrices = multilabel_confusion_matrix(truth, predicted)
    for i, label in enumerate(LABELS):
        per_label = metrics["per_label"][label]
        assert [per_label[k] for k in ("precision", "recall", "f1")] == pytest.approx([precision[i], recall[i], f1[i]])
        assert per_label["support"] == support[i]
        assert per_label["confusion_matrix"] == matrices[i].tolist()  # [[tn, fp], [fn, tp]]
    table = pd.read_csv(out_dir / "per_label.csv")
    assert table["label"].tolist() == LABELS and table["tp"].tolist() == matrices[:, 1, 1].tolist()
    assert (out_dir / "per_label_f1.png").read_bytes().startswith(PNG_MAGIC)
    assert_error_analysis(out_dir, metrics, truth, predicted, records)

    on_split = ok(run_cli("evaluate", str(trained.run_dir), "--split", "test", "--precision", "fp32"))
    assert f"f1_micro {metrics['f1_micro']:.4f} f1_macro {metrics['f1_macro']:.4f}" in on_split.stdout


def assert_error_analysis(out_dir: Path, metrics: dict, truth: np.ndarray, predicted: np.ndarray,
                          records: list[dict]) -> None:
    """errors.csv holds exactly the rows whose label set is wrong; ROC/PR-AUC equal scikit-learn's macro averages."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    errors = pd.read_csv(out_dir / "errors.csv", keep_default_na=False)
    assert sorted(errors["row"] - 1) == np.flatnonzero((truth != predicted).any(1)).tolist()
    for row in errors.itertuples():
        assert set(filter(None, row.predicted.split("|"))) == set(records[row.row - 1]["labels"])
    scores = np.array([[record["probabilities"][label] for label in LABELS] for record in records])
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(truth, scores, average="macro"), abs=1e-3)
    assert metrics["pr_auc"] == pytest.approx(average_precision_score(truth, scores, average="macro"), abs=1e-3)


def test_predict_gives_independent_probabilities_and_the_labels_above_threshold(trained: Trained) -> None:
    thresholds = dict(zip(LABELS, load_checkpoint(trained.run_dir / "checkpoints/best.pt")["thresholds"]))
    texts = ["goal match team stock bank", "nothing in particular", "chip software laptop"]
    result = ok(run_cli("predict", str(trained.run_dir), *texts, "--format", "jsonl"))
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [record["text"] for record in records] == texts
    for record in records:
        probabilities = record["probabilities"]
        assert list(probabilities) == sorted(probabilities, key=probabilities.get, reverse=True)
        assert set(probabilities) == set(LABELS) and all(0 < p < 1 for p in probabilities.values())
        assert record["labels"] == [label for label, p in probabilities.items() if p >= thresholds[label]]


def test_predict_csv_joins_labels_and_top_k_limits_them(trained: Trained) -> None:
    separator = yaml.safe_load(trained.config.read_text())["data"]["label_separator"]
    texts = ["goal match team stock bank chip", "the week"]
    full = [json.loads(line) for line in
            ok(run_cli("predict", str(trained.run_dir), *texts, "--format", "jsonl")).stdout.splitlines()]
    rows = list(csv.DictReader(io.StringIO(
        ok(run_cli("predict", str(trained.run_dir), *texts, "--format", "csv")).stdout)))
    assert list(rows[0]) == ["text", "labels", *(f"p_{label}" for label in LABELS)]
    assert [row["labels"] for row in rows] == [separator.join(record["labels"]) for record in full]
    top1 = [json.loads(line) for line in
            ok(run_cli("predict", str(trained.run_dir), *texts, "--format", "jsonl", "--top-k", "1")).stdout.splitlines()]
    for record, whole in zip(top1, full):
        assert list(record["probabilities"]) == list(whole["probabilities"])[:1]
        assert record["labels"] == whole["labels"][:1]


# ---------------------------------------------------------------------------------------------------------
# options and the contract shared with multiclass


def test_per_label_thresholds_are_tuned_on_validation_and_stored(tmp_path: Path) -> None:
    config = multilabel_config(tmp_path, "jsonl", "bag", threshold="per_label", pos_weight="balanced", epochs=3)
    run_dir = train(config, "--quiet")
    best = load_checkpoint(run_dir / "checkpoints/best.pt")
    assert len(best["thresholds"]) == len(LABELS) and best["thresholds"] != [0.5] * len(LABELS)
    assert all(0 < t < 1 for t in best["thresholds"])
    history = pd.read_csv(run_dir / "history.csv")
    result = ok(run_cli("evaluate", str(run_dir), "--split", "valid", "--precision", "fp32"))
    metrics = json.loads((run_dir / "evaluation/valid/metrics.json").read_text(encoding="utf-8"))
    # the stored thresholds reproduce the validation score that chose the best epoch
    assert metrics["f1_micro"] == pytest.approx(history["valid_f1_micro"].max(), abs=1e-6), result.stdout
    assert metrics["thresholds"] == dict(zip(LABELS, best["thresholds"]))


def test_empty_label_sets_are_examples_and_null_labels_are_skipped(tmp_path: Path) -> None:
    examples = label_set_examples(N_TRAIN, 1)
    lines = [json.dumps({"text": text, "topics": labels}) for text, labels in examples]
    lines[3] = json.dumps({"text": "a text without its label key"})
    lines[5] = json.dumps({"text": "a text with null labels", "topics": None})
    config = multilabel_config(tmp_path, "jsonl", "bag")
    Path(yaml.safe_load(config.read_text())["data"]["train"]).write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = ok(run_cli("prepare", str(config)))
    assert "2 row(s) with an empty 'text' or 'topics' at line(s) 4, 6; skipped" in result.stderr
    prepared = Path(result.stdout.strip())
    targets = np.concatenate([np.load(prepared / f"{split}.labels.npy") for split in ("train", "valid")])
    assert targets.dtype == np.uint8 and targets.shape == (N_TRAIN - 2, len(LABELS))
    assert sorted(targets.sum(axis=1).tolist()) == sorted(len(labels) for i, (_, labels) in enumerate(examples)
                                                          if i not in (3, 5))  # empty sets included


def test_an_unseen_test_label_is_refused_with_exit_3(tmp_path: Path) -> None:
    test_examples = label_set_examples(N_TEST, 2)
    test_examples[4] = ("weather report rain", ["sport", "weather"])
    config = multilabel_config(tmp_path, "csv", "cnn", test_examples=test_examples)
    result = run_cli("train", str(config))
    assert result.exit_code == 3
    test_file = tmp_path / "data/test.csv"
    assert (f"error: {test_file}:6: label 'weather' in the test split never occurs in the training data "
            f"(known labels: money, sport, tech)") in result.stderr
    assert not (tmp_path / "runs").exists()


def test_evaluate_data_with_an_unseen_label_exits_3(trained_bag: Path, tmp_path: Path) -> None:
    holdout = write_label_sets(tmp_path / "holdout.jsonl", [("goal", ["sport"]), ("rain", ["weather"])], "jsonl")
    result = run_cli("evaluate", str(trained_bag), "--data", str(holdout))
    assert result.exit_code == 3
    assert f"error: {holdout}:2: label 'weather' was never seen by this model (it knows: money, sport, tech)" \
        in result.stderr


@pytest.fixture(scope="module")
def trained_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bag-jsonl-1epoch")
    return train(multilabel_config(root, "jsonl", "bag", epochs=1), "--quiet")


@pytest.mark.parametrize(("task", "train_settings", "message"), [
    ("multiclass", {"threshold": 0.3}, "train.threshold: only applies to task: multilabel"),
    ("multiclass", {"monitor": "valid_f1_micro"}, "train.monitor: valid_f1_micro needs task: multilabel"),
    ("multilabel", {"class_weights": "balanced"}, "train.class_weights: use train.pos_weight: balanced"),
    ("multilabel", {"threshold": 1.5}, "train.threshold: must be a probability between 0 and 1"),
])
def test_task_settings_are_checked(tmp_path: Path, task: str, train_settings: dict, message: str) -> None:
    config = multilabel_config(tmp_path, "csv", "bag", **train_settings)
    raw = yaml.safe_load(config.read_text())
    raw["task"] = task
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    result = run_cli("train", str(config))
    assert result.exit_code == 2
    assert message in result.stderr


def test_training_data_with_one_label_is_refused(tmp_path: Path) -> None:
    config = multilabel_config(tmp_path, "csv", "bag", train_examples=[("goal match", ["sport"]), ("the", [])] * 10)
    result = run_cli("train", str(config))
    assert result.exit_code == 3
    assert "the training data has 1 distinct label(s) (sport); a multi-label classifier needs at least two" \
        in result.stderr


def test_resume_continues_a_multilabel_run_exactly(tmp_path: Path) -> None:
    config = multilabel_config(tmp_path, "jsonl", "bag", threshold="per_label")
    whole = train(config, "--quiet")
    first = train(config, "--quiet", "--set", "train.epochs=1")
    resumed = train(config, "--quiet", "--resume", str(first))
    assert resumed == first
    columns = [column for column in HISTORY_COLUMNS if column != "seconds"]
    pd.testing.assert_frame_equal(pd.read_csv(first / "history.csv")[columns],
                                  pd.read_csv(whole / "history.csv")[columns], rtol=1e-5)
    assert load_checkpoint(first / "checkpoints/best.pt")["thresholds"] == pytest.approx(
        load_checkpoint(whole / "checkpoints/best.pt")["thresholds"])


def test_promote_if_better_compares_micro_f1(tmp_path: Path) -> None:
    config = multilabel_config(tmp_path, "csv", "bag", epochs=1)
    run_dir = train(config, "--quiet", "--promote-if-better")
    status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    assert status["promoted"] is True and status["promotion"].startswith(f"promoted best -> {run_dir.name}: "
                                                                         f"valid_f1_micro ")
    assert (tmp_path / "runs/tiny/best").resolve() == run_dir.resolve()


def test_two_processes_validate_on_the_whole_split(tmp_path: Path) -> None:
    """torchrun with 2 CPU processes: the gathered validation gives the numbers a single process evaluates."""
    config = multilabel_config(tmp_path, "csv", "cnn", threshold="per_label")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "textclf_cli", "train", str(config), "--quiet"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip())
    assert json.loads((run_dir / "status.json").read_text(encoding="utf-8"))["world_size"] == 2
    history = pd.read_csv(run_dir / "history.csv")
    ok(run_cli("evaluate", str(run_dir), "--split", "valid", "--precision", "fp32"))
    metrics = json.loads((run_dir / "evaluation/valid/metrics.json").read_text(encoding="utf-8"))
    assert metrics["f1_micro"] == pytest.approx(history["valid_f1_micro"].max(), abs=1e-6)
    assert torch.load(run_dir / "checkpoints/best.pt", weights_only=True)["task"] == "multilabel"

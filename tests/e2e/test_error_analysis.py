"""evaluate's error analysis on tiny models trained in the test: errors.csv, top_confusions.csv, ROC-AUC/PR-AUC
and their plots, and `--compare` with changed.csv, each checked against scikit-learn on the same predictions."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.preprocessing import label_binarize

from tests.conftest import run_cli, tiny_config
from textclf_cli.data.encoding import encode_texts
from textclf_cli.runs.checkpoint import load_model
from textclf_cli.serving.inference import model_logits

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LABELS3 = ("pos", "neg", "mixed")


def train(config: Path, *overrides: str) -> Path:
    result = run_cli("train", str(config), "--set", "train.epochs=1", *overrides)
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


def read_test_split(config: Path) -> tuple[list[str], list[str]]:
    with (config.parent / "data/test.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [row["text"] for row in rows], [row["label"] for row in rows]


def probabilities(run_dir: Path, texts: list[str]) -> tuple[np.ndarray, list[str]]:
    loaded = load_model(run_dir / "checkpoints/best.pt", torch.device("cpu"))
    encoded = encode_texts(texts, loaded.tokenizer, loaded.vocab)
    logits = model_logits(loaded.model, encoded, loaded.max_length, loaded.truncate, 64, torch.device("cpu"))
    return torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy(), loaded.labels


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(config, a run, a second run of other settings) of a three-class tiny CNN."""
    config = tiny_config(tmp_path_factory.mktemp("analysis"), labels=LABELS3, n_train=90, n_test=45)
    return config, train(config), train(config, "--set", "seed=3", "--set", "model.ensemble=null")


def evaluate(run_dir: Path, *args: str) -> tuple[dict, Path, str]:
    result = run_cli("evaluate", str(run_dir), *args)
    assert result.exit_code == 0, result.output
    out_dir = run_dir / "evaluation" / "test"
    return json.loads((out_dir / "metrics.json").read_text(encoding="utf-8")), out_dir, result.stdout


def test_errors_and_confusions_match_the_predictions(runs: tuple[Path, Path, Path]) -> None:
    config, run_dir, _ = runs
    metrics, out_dir, _ = evaluate(run_dir)
    texts, gold = read_test_split(config)
    probs, labels = probabilities(run_dir, texts)
    predicted = [labels[i] for i in probs.argmax(1)]
    wrong = [i for i in range(len(texts)) if predicted[i] != gold[i]]
    errors = pd.read_csv(out_dir / "errors.csv", keep_default_na=False)
    assert list(errors.columns) == ["row", "text", "gold", "predicted", "confidence", "gold_probability"]
    assert sorted(errors["row"] - 1) == wrong
    assert errors["confidence"].is_monotonic_decreasing
    for row in errors.itertuples():
        i = row.row - 1
        assert (row.text, row.gold, row.predicted) == (texts[i], gold[i], predicted[i])
        assert row.confidence == pytest.approx(probs[i].max(), abs=1e-5)
        assert row.gold_probability == pytest.approx(probs[i, labels.index(gold[i])], abs=1e-5)
    confusions = pd.read_csv(out_dir / "top_confusions.csv")
    expected = Counter((gold[i], predicted[i]) for i in wrong)
    assert {(r.gold, r.predicted): r.count for r in confusions.itertuples()} == dict(expected)
    assert list(confusions["count"]) == sorted(expected.values(), reverse=True)
    assert metrics["accuracy"] == pytest.approx(1 - len(wrong) / len(texts))


def test_roc_and_pr_auc_match_scikit_learn(runs: tuple[Path, Path, Path]) -> None:
    config, run_dir, _ = runs
    metrics, out_dir, _ = evaluate(run_dir)
    texts, gold = read_test_split(config)
    probs, labels = probabilities(run_dir, texts)
    targets = np.array([labels.index(label) for label in gold])
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(targets, probs, multi_class="ovr", average="macro"),
                                               abs=1e-6)
    onehot = label_binarize(targets, classes=range(len(labels)))
    assert metrics["pr_auc"] == pytest.approx(average_precision_score(onehot, probs, average="macro"), abs=1e-6)
    for i, label in enumerate(labels):
        assert metrics["auc_per_label"][label]["roc_auc"] == pytest.approx(roc_auc_score(onehot[:, i], probs[:, i]))
    for name in ("roc.png", "pr.png"):
        assert (out_dir / name).read_bytes().startswith(PNG_MAGIC)


def test_compare_writes_deltas_and_changed_predictions(runs: tuple[Path, Path, Path]) -> None:
    config, run_dir, other_dir = runs
    other_metrics, _, _ = evaluate(other_dir)
    metrics, out_dir, stdout = evaluate(run_dir, "--compare", str(other_dir))
    texts, gold = read_test_split(config)
    probs, labels = probabilities(run_dir, texts)
    other_probs, _ = probabilities(other_dir, texts)
    changed_rows = np.flatnonzero(probs.argmax(1) != other_probs.argmax(1))
    changed = pd.read_csv(out_dir / "changed.csv", keep_default_na=False)
    assert list(changed["row"] - 1) == changed_rows.tolist()
    assert list(changed["other_predicted"]) == [labels[i] for i in other_probs.argmax(1)[changed_rows]]
    assert list(changed["text"]) == [texts[i] for i in changed_rows]
    compare = metrics["compare"]
    assert compare["changed"] == len(changed_rows)
    for key in ("accuracy", "f1_macro", "roc_auc", "pr_auc"):
        assert compare["deltas"][key] == pytest.approx(metrics[key] - other_metrics[key], abs=1e-9)
    assert (f"accuracy {metrics['accuracy']:.4f} vs {other_metrics['accuracy']:.4f} "
            f"({metrics['accuracy'] - other_metrics['accuracy']:+.4f})") in stdout
    assert f"{len(changed_rows)} prediction(s) changed against" in stdout


def test_compare_refuses_runs_of_other_labels(runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, run_dir, _ = runs
    binary = train(tiny_config(tmp_path, n_train=40, n_test=20, model="ngram"))
    result = run_cli("evaluate", str(run_dir), "--compare", str(binary))
    assert result.exit_code == 3
    assert "only runs of the same labels compare" in result.stderr

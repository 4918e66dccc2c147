"""`textclf check` end to end on data built in the test: planted leakage and conflicting labels, a clean set, a
label seen only in test, dropped rows, and a multi-label set; the exit codes and the findings' text."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.conftest import run_cli, write_table

STRICT_EXIT = 5


def unique_examples(n: int, labels: tuple[str, ...] = ("pos", "neg"), offset: int = 0) -> list[tuple[str, str]]:
    """n texts that are distinct even after normalising (each spells out its own number, digit by digit, so that
    every token is in train's vocabulary), balanced over labels."""
    words = {"pos": "great wonderful", "neg": "awful boring", "mixed": "okay average"}
    return [(f"review number {' '.join(str(offset + i))} was {words[labels[i % len(labels)]]} {'long ' * (i % 7)}",
             labels[i % len(labels)]) for i in range(n)]


def write_config(tmp_path: Path, train: list, test: list, **data: object) -> Path:
    config = {"experiment": "check", "data": {"train": str(write_table(tmp_path / "train.csv", train)),
                                              "test": str(write_table(tmp_path / "test.csv", test)), **data},
              "vocab": {"min_freq": 1, "max_length": 50}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def check_json(config: Path, *options: str) -> tuple[int, dict]:
    result = run_cli("check", str(config), "--format", "json", *options)
    return result.exit_code, json.loads(result.stdout)


def codes(report: dict, severity: str | None = None) -> list[str]:
    return [finding["code"] for finding in report["findings"] if severity in (None, finding["severity"])]


def test_clean_set_passes_strict(tmp_path: Path) -> None:
    config = write_config(tmp_path, unique_examples(60), unique_examples(30, offset=1000))
    result = run_cli("check", str(config), "--strict")
    assert result.exit_code == 0, result.output
    assert "check: train 60, test 30 rows; 2 labels; no warnings" in result.stdout
    code, report = check_json(config, "--strict")
    assert code == 0
    assert codes(report, "error") == [] and codes(report, "warning") == []
    assert report["splits"]["train"]["labels"] == {"pos": 30, "neg": 30}
    assert report["splits"]["test"]["oov_rate"] == 0
    assert report["max_length"] == 50 and report["min_freq"] == 1


def test_planted_leak_and_conflict_fail_strict(tmp_path: Path) -> None:
    train = unique_examples(60)
    leaked = (train[0][0], train[0][1])  # the same text and label: leakage
    conflicting = ("  " + train[1][0].upper() + "!!", "pos" if train[1][1] == "neg" else "neg")  # normalised + relabelled
    config = write_config(tmp_path, train, unique_examples(30, offset=1000) + [leaked, conflicting])
    result = run_cli("check", str(config), "--strict")
    assert result.exit_code == STRICT_EXIT, result.output
    assert "error: check: test shares 2 texts with train (1 exact; 6.2% of test)" in result.stderr
    assert "error: check: 1 text(s) in test and train with conflicting labels (3.1% of test)" in result.stderr
    assert "conflicting labels" in result.stdout and "shares 2 texts" in result.stdout  # the table names both
    _, report = check_json(config)
    found = {finding["code"]: finding for finding in report["findings"]}
    assert found["leakage"]["examples"] == [f"{tmp_path / 'test.csv'}:32: 'review number 0 was great wonderful'",
                                            f"{tmp_path / 'test.csv'}:33: 'REVIEW NUMBER 1 WAS AWFUL BORING LONG !!'"]
    assert found["conflicting_labels"]["examples"] == [
        f"{tmp_path / 'test.csv'}:33: 'REVIEW NUMBER 1 WAS AWFUL BORING LONG !!' is 'pos' here, 'neg' in train"]
    assert run_cli("check", str(config)).exit_code == 0  # without --strict: a report, not a failure


def test_leak_below_threshold_is_a_warning(tmp_path: Path) -> None:
    train = unique_examples(60)
    config = write_config(tmp_path, train, unique_examples(30, offset=1000) + [train[0]])
    code, report = check_json(config, "--strict", "--set", "check.max_leakage=0.5")
    assert code == 0
    assert codes(report, "warning") == ["leakage"]


def test_label_only_in_test(tmp_path: Path) -> None:
    test = unique_examples(30, offset=1000) + [("an okay average review", "mixed")]
    config = write_config(tmp_path, unique_examples(60), test)
    result = run_cli("check", str(config), "--strict")
    assert result.exit_code == STRICT_EXIT
    assert "error: check: test: label(s) 'mixed' (1 rows) never occur in train; prepare refuses them" in result.stderr


def test_rare_classes_imbalance_and_label_spellings(tmp_path: Path) -> None:
    train = unique_examples(60) + [("sports news one", "Sports"), ("sports news two", "sports")]
    config = write_config(tmp_path, train, unique_examples(30, offset=1000))
    code, report = check_json(config, "--min-per-class", "5")
    assert code == 0
    messages = {finding["code"]: finding["message"] for finding in report["findings"]}
    assert messages["rare_classes"] == "train: 2 class(es) with fewer than 5 rows: 'Sports' (1), 'sports' (1)"
    assert messages["imbalance"].startswith("train: imbalance 30.0 (largest class 30 rows, smallest 1)")
    assert messages["similar_labels"].startswith("labels 'Sports' and 'sports' differ only in case")


def test_dropped_rows_over_the_limit(tmp_path: Path) -> None:
    train = unique_examples(40) + [("", "pos")] * 4 + [("a text without a label", "")]
    config = write_config(tmp_path, train, unique_examples(30, offset=1000))
    result = run_cli("check", str(config), "--strict")
    assert result.exit_code == STRICT_EXIT
    assert "error: check: train: 5 of 45 rows dropped (11.1%) for an empty text or label" in result.stderr


def test_duplicates_within_train_and_truncation(tmp_path: Path) -> None:
    train = unique_examples(60)
    train += [(train[2][0].lower() + " .", train[2][1]), train[3]]
    config = write_config(tmp_path, train, unique_examples(30, offset=1000))
    code, report = check_json(config, "--set", "vocab.max_length=8")
    found = {finding["code"]: finding for finding in report["findings"]}
    assert found["duplicates"]["message"] == "train: 2 text(s) repeat an earlier one (1 exact; 3.2%)"
    assert found["duplicates"]["severity"] == "warning"
    assert found["truncated"]["severity"] == "warning"
    truncated = report["splits"]["train"]["truncated"]
    assert truncated == round(sum(len(text.split()) > 8 for text, _ in train) / len(train), 4)


def test_multilabel_set(tmp_path: Path) -> None:
    rows = [(f"item {i} about {' and '.join(labels) or 'nothing'}", "|".join(labels))
            for i, labels in enumerate([["money"], ["sport", "money"], [], ["tech"], ["sport", "tech"]] * 8)]
    config = write_config(tmp_path, rows, rows[:5], bad_rows="skip")
    config_data = yaml.safe_load(config.read_text())
    config_data["task"] = "multilabel"
    config.write_text(yaml.safe_dump(config_data), encoding="utf-8")
    code, report = check_json(config)
    assert code == 0
    train = report["splits"]["train"]
    assert train["labels"] == {"money": 16, "sport": 16, "tech": 16}
    assert train["labels_per_text"] == {"0": 8, "1": 16, "2": 16}
    assert train["top_pairs"] == [["money", "sport", 8], ["sport", "tech", 8]]
    messages = [finding["message"] for finding in report["findings"]]
    assert "train: 8 of 40 texts carry no label" in messages
    assert "test shares 5 texts with train (5 exact; 100.0% of test)" in messages

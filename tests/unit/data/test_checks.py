"""data/checks.py: normalising, the duplicate index, label spellings, the summary line train logs."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from tests.conftest import write_table
from textclf_cli.config import load_config
from textclf_cli.data import checks
from textclf_cli.data.checks import DuplicateIndex, log_data_summary, near_duplicate_labels, normalise
from textclf_cli.data.sources import TextChunk


def test_normalise_drops_case_spacing_and_punctuation() -> None:
    assert normalise("  Great  movie!!\n(10/10) ") == normalise("great movie 10 10") == "great movie 10 10"


def test_duplicate_index_counts_within_across_and_conflicts() -> None:
    index = DuplicateIndex(examples=1)
    index.add("train", "train.csv", TextChunk(["a b", "A b!", "c"], ["x", "y", "x"], [2, 3, 4]),
              *_hashes(["a b", "A b!", "c"]))
    index.add("test", "test.csv", TextChunk(["c", "d"], ["x", "x"], [2, 3]), *_hashes(["c", "d"]))
    assert index.counts["normal", "train", "train"] == 1 and index.counts["exact", "train", "train"] == 0
    assert index.counts["conflict", "train", "train"] == 1
    assert index.counts["normal", "test", "train"] == 1 and index.counts["exact", "test", "train"] == 1
    assert index.counts["conflict", "test", "train"] == 0
    assert index.examples["conflict", "train", "train"] == ["train.csv:3: 'A b!' is 'y' here, 'x' in train"]


def _hashes(texts: list[str]) -> tuple[list[int], list[int]]:
    from textclf_cli.data.checks import hash_texts

    return hash_texts(texts)


def test_near_duplicate_labels() -> None:
    found = near_duplicate_labels({"Sports", "sports", "sci-fi", "Sci Fi", "news"})
    assert sorted(finding.message.split(" differ")[0] for finding in found) == [
        "labels 'Sci Fi' and 'sci-fi'", "labels 'Sports' and 'sports'"]


def test_train_summary_names_leakage(tmp_path: Path, caplog, monkeypatch) -> None:
    train = [(f"text {i}", "ab"[i % 2]) for i in range(20)]
    config = {"experiment": "x", "data": {"train": str(write_table(tmp_path / "train.csv", train)),
                                          "test": str(write_table(tmp_path / "test.csv", train[:3]))}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(checks.log, "propagate", True)  # setup_logging (run by CLI tests) turns it off
    with caplog.at_level(logging.INFO, logger="textclf"):
        log_data_summary(load_config(tmp_path / "c.yaml", []))
    assert ("check: train 20, test 3 rows; 2 labels; 1 error(s): test shares 3 texts with train (3 exact; 100.0% "
            "of test); run `textclf check CONFIG` for the details") in caplog.text

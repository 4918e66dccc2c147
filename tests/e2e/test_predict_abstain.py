"""`textclf predict --min-confidence P`: a text whose top probability is below P is abstained, in every format
(JSONL: label null and abstained true; CSV: an empty label; the table: a dim row), with its probabilities given."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from tests.conftest import run_cli, tiny_config
from tests.e2e.test_multilabel import multilabel_config
from textclf_cli import console
from textclf_cli.predict import ABSTAINED_CELL, show_table
from textclf_cli.serving.scoring import Predictions, rows

TEXTS = ["great superb loved brilliant", "awful terrible worst hated", "the plot", "a scene", "movie"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    result = run_cli("train", str(tiny_config(tmp_path_factory.mktemp("abstain"), train={"epochs": 1})), "-q")
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip())


def jsonl(run_dir: Path, *options: str) -> list[dict]:
    result = run_cli("predict", str(run_dir), *TEXTS, "--format", "jsonl", *options)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def threshold_between(records: list[dict]) -> float:
    """A P that abstains some texts and keeps others: the middle of the sorted top probabilities."""
    tops = sorted(max(record["probabilities"].values()) for record in records)
    return round((tops[1] + tops[-2]) / 2, 6)


def test_jsonl_abstains_below_min_confidence_and_keeps_the_probabilities(run_dir: Path) -> None:
    plain = jsonl(run_dir)
    p = threshold_between(plain)
    marked = jsonl(run_dir, "--min-confidence", str(p))
    abstained = [max(record["probabilities"].values()) < p for record in plain]
    assert 0 < sum(abstained) < len(TEXTS)
    for before, after, below in zip(plain, marked, abstained):
        assert after == {**before, "label": None if below else before["label"], "abstained": below}
    assert list(marked[0]) == ["text", "label", "abstained", "probabilities"]


def test_csv_gives_an_abstained_text_an_empty_label(run_dir: Path) -> None:
    p = threshold_between(jsonl(run_dir))
    marked = jsonl(run_dir, "--min-confidence", str(p))
    result = run_cli("predict", str(run_dir), *TEXTS, "--format", "csv", "--min-confidence", str(p))
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["label"] for row in table] == [record["label"] or "" for record in marked]
    assert [float(row["p_pos"]) for row in table] == [record["probabilities"]["pos"] for record in marked]


def test_min_confidence_zero_and_one_abstain_nothing_and_everything(run_dir: Path) -> None:
    assert not any(record["abstained"] for record in jsonl(run_dir, "--min-confidence", "0"))
    assert all(record["label"] is None for record in jsonl(run_dir, "--min-confidence", "1"))


def test_the_table_dims_an_abstained_row(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(console, "stdout", Console(file=out, width=200, force_terminal=True, color_system="standard"))
    predictions = Predictions(["sure", "unsure"], ["neg", "pos"], np.array([[0.1, 0.9], [0.45, 0.55]]))
    show_table(rows(predictions, None, min_confidence=0.6))
    lines = out.getvalue().splitlines()
    sure, unsure = next(line for line in lines if "sure" in line and "unsure" not in line), \
        next(line for line in lines if "unsure" in line)
    assert "\x1b[2m" in unsure and "\x1b[2m" not in sure  # SGR 2: dim
    assert ABSTAINED_CELL in unsure and "pos: 0.550" in unsure


def test_out_of_range_and_multilabel_min_confidence_are_refused(run_dir: Path, tmp_path: Path) -> None:
    result = run_cli("predict", str(run_dir), "a text", "--min-confidence", "1.5")
    assert result.exit_code == 2 and "--min-confidence" in result.output
    trained = run_cli("train", str(multilabel_config(tmp_path)), "-q")
    assert trained.exit_code == 0, trained.output
    refused = run_cli("predict", trained.stdout.strip(), "a text", "--min-confidence", "0.5")
    assert refused.exit_code == 2
    assert refused.stderr.strip() == ("error: --min-confidence 0.5 applies to single-label models; this model is "
                                      "multi-label, whose tuned per-label thresholds already decide each label: "
                                      "leave it out")

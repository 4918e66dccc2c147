"""`evaluate` from another folder: the run's config holds absolute paths, prepared data is only read (never
written), and when it is gone the raw split is encoded with the checkpoint's own tokenizer and vocabulary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli, tiny_examples, write_table


def snapshot(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.rglob("*")}


@pytest.fixture
def relative_run(tmp_path: Path, monkeypatch) -> Path:
    """A run trained from tmp_path/project with a config of relative paths; returns the run folder (absolute)."""
    project = tmp_path / "project"
    write_table(project / "data/train.csv", tiny_examples(60, seed=1))
    write_table(project / "data/test.csv", tiny_examples(30, seed=2))
    config = {"experiment": "tiny", "seed": 7, "device": "cpu",
              "data": {"train": "data/train.csv", "test": "data/test.csv", "valid_fraction": 0.2},
              "vocab": {"min_freq": 1, "max_length": 50},
              "model": {"type": "cnn", "embedding_dim": 16, "num_filters": 8, "filter_sizes": [2, 3]},
              "train": {"epochs": 1, "batch_size": 8, "lr": 0.01}}
    (project / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.chdir(project)
    result = run_cli("train", "config.yaml", "-q")
    assert result.exit_code == 0, result.output
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return project / result.stdout.strip()


def evaluate(*args: str) -> dict:
    result = run_cli("evaluate", *args, "-q")
    assert result.exit_code == 0, result.output
    return result


def metrics(run_dir: Path, split: str) -> dict:
    return json.loads((run_dir / f"evaluation/{split}/metrics.json").read_text(encoding="utf-8"))


def test_run_config_records_absolute_paths_and_the_prepared_fingerprint(relative_run: Path) -> None:
    project = relative_run.parents[2]
    text = (relative_run / "config.yaml").read_text(encoding="utf-8")
    stored = yaml.safe_load(text)
    assert stored["data"]["train"] == str(project / "data/train.csv")
    assert stored["data"]["test"] == str(project / "data/test.csv")
    assert stored["data"]["prepared_dir"] == str(project / "data/prepared")
    assert stored["output"]["runs_dir"] == str(project / "runs")
    [prepared] = (project / "data/prepared").iterdir()
    assert f"# prepared data fingerprint: {prepared.name} ({prepared})" in text.splitlines()[1]


def test_evaluate_from_another_folder_leaves_prepared_data_untouched(relative_run: Path, tmp_path: Path) -> None:
    project = relative_run.parents[2]
    before = snapshot(project / "data")
    evaluate(str(relative_run), "--split", "test")
    evaluate(str(relative_run), "--split", "valid")
    assert snapshot(project / "data") == before
    assert not (tmp_path / "elsewhere" / "data").exists() and list((tmp_path / "elsewhere").iterdir()) == []
    test, valid = metrics(relative_run, "test"), metrics(relative_run, "valid")
    assert (test["num_examples"], valid["num_examples"]) == (30, 12)

    # prepared data gone: the same numbers from the raw files, and nothing prepared again
    shutil.rmtree(project / "data/prepared")
    result = evaluate(str(relative_run), "--split", "test")
    assert "is gone: encoding the test split" in result.stderr
    evaluate(str(relative_run), "--split", "valid")  # the same seeded validation carve as prepare's
    assert not (project / "data/prepared").exists()
    for split, expected in (("test", test), ("valid", valid)):
        again = metrics(relative_run, split)
        assert {key: again[key] for key in ("accuracy", "f1_macro", "num_examples", "confusion_matrix")} == \
               {key: expected[key] for key in ("accuracy", "f1_macro", "num_examples", "confusion_matrix")}


def test_evaluate_without_prepared_or_raw_data_says_what_to_run(relative_run: Path) -> None:
    project = relative_run.parents[2]
    shutil.rmtree(project / "data/prepared")
    (project / "data/test.csv").unlink()
    result = run_cli("evaluate", str(relative_run), "--split", "test")
    assert result.exit_code == 3
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: --split test: the prepared data ")
    assert f"run `textclf prepare {relative_run / 'config.yaml'}` once the files exist again" in line
    assert "--data FILE" in line
    assert not (project / "data/prepared").exists()

"""study.py: the SQLite storage is where the study folder is, whatever characters its path holds."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import tiny_config
from textclf_cli.config import load_config
from textclf_cli.tuning.study import open_study


def test_the_study_database_stays_in_a_folder_whose_path_has_a_question_mark(tmp_path: Path) -> None:
    config = load_config(tiny_config(tmp_path), [])
    study_dir = tmp_path / "runs?mode=ro#1 {x}" / "tune-20260101-000000"
    study_dir.mkdir(parents=True)
    study, created = open_study(study_dir, config, worker=0)
    assert created
    assert study.trials == []
    assert sorted(path.name for path in study_dir.iterdir()) == ["study.db"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.yaml", "data", "runs?mode=ro#1 {x}"]

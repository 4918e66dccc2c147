"""runs.py: run ids sort by start time then numeric suffix, and `latest` only ever moves to a newer run."""

from __future__ import annotations

from pathlib import Path

import pytest

from textclf_cli import files, runs
from textclf_cli.runs import create_run_dir, run_order, update_latest


def test_run_order_sorts_numeric_suffixes_as_numbers():
    ids = ["20260102-080000", "20260101-120000-10", "20260101-120000", "20260101-120000-9", "20260101-120000-1",
           "20251231-235959-2"]
    assert sorted(ids, key=run_order) == ["20251231-235959-2", "20260101-120000", "20260101-120000-1",
                                          "20260101-120000-9", "20260101-120000-10", "20260102-080000"]
    assert run_order("20260101-120000-10") == ("20260101-120000", 10)
    assert run_order("20260101-120000") == ("20260101-120000", 0)


def make_runs(tmp_path: Path, *ids: str) -> dict[str, Path]:
    experiment_dir = tmp_path / "runs" / "exp"
    made = {}
    for run_id in ids:
        made[run_id] = experiment_dir / run_id
        made[run_id].mkdir(parents=True)
    return made


def latest_of(tmp_path: Path) -> str:
    return (tmp_path / "runs" / "exp" / files.LATEST_LINK).resolve().name


def test_latest_moves_forward_and_never_back(tmp_path: Path):
    made = make_runs(tmp_path, "20260101-120000-9", "20260101-120000-10", "20260101-115959")
    update_latest(made["20260101-120000-9"])
    assert latest_of(tmp_path) == "20260101-120000-9"
    update_latest(made["20260101-120000-10"])
    assert latest_of(tmp_path) == "20260101-120000-10"
    # finishing after -10 does not make an earlier-started run the latest (-9 sorts before -10, not after)
    update_latest(made["20260101-120000-9"])
    update_latest(made["20260101-115959"])
    assert latest_of(tmp_path) == "20260101-120000-10"
    link = tmp_path / "runs" / "exp" / files.LATEST_LINK
    assert link.is_symlink() and str(link.readlink()) == "20260101-120000-10"  # relative: the folder can move


def test_runs_started_in_the_same_second_get_increasing_suffixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(runs.time, "strftime", lambda fmt: "20260101-120000")
    made = [create_run_dir(tmp_path / "runs", "exp").name for _ in range(12)]
    assert made == ["20260101-120000"] + [f"20260101-120000-{n}" for n in range(1, 12)]
    assert sorted(made, key=run_order) == made
    assert all((tmp_path / "runs" / "exp" / run_id / files.CHECKPOINTS_DIR).is_dir() for run_id in made)

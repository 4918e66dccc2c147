"""runs.py: run ids (UTC) sort by start time then numeric suffix, `latest` only ever moves to a newer run, only
folders textclf made are runs, locks that work on NFS, damaged status files, --output that would destroy a model."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from textclf_cli import files
from textclf_cli.errors import ConfigError, RunError
from textclf_cli.runs import folders as runs
from textclf_cli.runs.folders import (
    DAMAGED,
    NOT_A_RUN,
    create_run_dir,
    is_live,
    left_alone,
    lock_run,
    refuse_model_as_output,
    run_folders,
    run_order,
    update_latest,
)
from textclf_cli.runs.prune import prune_runs
from textclf_cli.runs.status import read_status, update_status


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
    monkeypatch.setattr(runs, "id_stamp", lambda: "20260101-120000")
    made = [create_run_dir(tmp_path / "runs", "exp").name for _ in range(12)]
    assert made == ["20260101-120000"] + [f"20260101-120000-{n}" for n in range(1, 12)]
    assert sorted(made, key=run_order) == made
    assert all((tmp_path / "runs" / "exp" / run_id / files.CHECKPOINTS_DIR).is_dir() for run_id in made)
    status = read_status(tmp_path / "runs" / "exp" / made[3])  # the marker: textclf made this folder
    assert (status["tool"], status["format_version"], status["status"]) == ("textclf", 1, "created")
    assert (status["experiment"], status["run_id"]) == ("exp", made[3])


def test_run_ids_are_utc_whatever_the_timezone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TZ", "EST+5")  # POSIX form: no tz database needed
    time.tzset()
    try:
        before = datetime.now(timezone.utc).replace(microsecond=0)
        run_id = create_run_dir(tmp_path / "runs", "exp").name
        after = datetime.now(timezone.utc)
    finally:
        monkeypatch.undo()
        time.tzset()
    started = datetime.strptime(run_id, "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
    assert before <= started <= after, (run_id, before, after)


# ---------------------------------------------------------------------------------------------------------
# what is a run: only what textclf made


def test_only_folders_textclf_made_are_runs(tmp_path: Path):
    experiment = tmp_path / "exp"
    made = create_run_dir(tmp_path, "exp")
    legacy = experiment / "20200101-000000"  # written before the marker: its own run_id and experiment
    legacy.mkdir()
    (legacy / "status.json").write_text(json.dumps({"status": "completed", "run_id": legacy.name, "experiment": "exp"}))
    for name in ("alpha", "20200102-000000"):  # another tool's: a config.yaml, or a status.json of its own
        (experiment / name).mkdir()
        (experiment / name / "config.yaml").write_text("x\n")
    (experiment / "20200102-000000" / "status.json").write_text(json.dumps({"status": "completed"}))
    (experiment / "beta" / "checkpoints").mkdir(parents=True)
    assert run_folders(experiment) == [made, legacy]
    assert sorted((path.name, kind) for path, kind in left_alone(experiment)) == [
        ("20200102-000000", NOT_A_RUN), ("alpha", NOT_A_RUN), ("beta", NOT_A_RUN)]


# ---------------------------------------------------------------------------------------------------------
# locks


def nfs_like_flock(real_flock):
    """flock as NFS grants it: an exclusive lock only on a descriptor opened for writing (EBADF otherwise)."""
    def flock(fd, operation):
        if operation & fcntl.LOCK_EX and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, "Bad file descriptor")
        return real_flock(fd, operation)
    return flock


def test_the_run_lock_is_a_regular_file_opened_for_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(fcntl, "flock", nfs_like_flock(fcntl.flock))
    run_dir = create_run_dir(tmp_path, "exp")
    lock = lock_run(run_dir)
    try:
        assert (run_dir / files.LOCK_FILE).is_file()
        assert is_live(run_dir)
        with pytest.raises(RunError, match="another textclf process"):
            lock_run(run_dir)
    finally:
        lock.release()
    assert not is_live(run_dir)
    update_latest(run_dir)  # the experiment lock too
    assert (tmp_path / "exp" / files.LOCK_FILE).is_file()


def test_a_file_system_that_cannot_lock_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run_dir = create_run_dir(tmp_path, "exp")
    update_status(run_dir, "running")

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    for attempt in (lambda: lock_run(run_dir), lambda: is_live(run_dir), lambda: update_latest(run_dir)):
        with pytest.raises(RunError, match=r": cannot lock this file \(No locks available\): its file system does "
                                           r"not support flock"):
            attempt()


# ---------------------------------------------------------------------------------------------------------
# a damaged status.json


def test_a_status_json_that_is_not_an_object_is_a_damaged_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    warnings: list[str] = []  # the textclf logger, once a CLI test has set it up, does not propagate to caplog
    monkeypatch.setattr("textclf_cli.runs.folders.log.warning", warnings.append)
    experiment = tmp_path / "exp"
    damaged = experiment / "20200101-000000"
    damaged.mkdir(parents=True)
    (damaged / "status.json").write_text("[]")
    assert read_status(damaged) is None
    made = create_run_dir(tmp_path, "exp")  # a new train of the experiment
    update_status(made, "completed")
    assert prune_runs(experiment, keep=1) == []
    assert run_folders(experiment) == [made] and left_alone(experiment) == [(damaged, DAMAGED)]
    assert warnings == [f"{damaged / 'status.json'}: damaged (not a JSON object); textclf leaves this run alone "
                        f"and never prunes it: repair the file or delete the folder by hand"]  # once, however often seen


# ---------------------------------------------------------------------------------------------------------
# --output must not destroy the model


def test_output_may_not_be_the_checkpoint_or_inside_checkpoints(tmp_path: Path):
    run_dir = tmp_path / "exp" / "20200101-000000"
    best = run_dir / "checkpoints" / "best.pt"
    with pytest.raises(ConfigError, match=r"export: --output .* is the model being read"):
        refuse_model_as_output("export", run_dir / "checkpoints" / ".." / "checkpoints" / "best.pt", [best], run_dir)
    with pytest.raises(ConfigError, match=r"predict: --output .* is inside the run's .*checkpoints"):
        refuse_model_as_output("predict", run_dir / "checkpoints" / "last.pt", [best], run_dir)
    refuse_model_as_output("predict", run_dir / "predictions.jsonl", [best], run_dir)
    refuse_model_as_output("predict", None, [best], run_dir)

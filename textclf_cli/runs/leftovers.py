"""What a killed textclf leaves behind (SIGKILL, the OOM killer, a power cut): temp files of atomic writes,
prepare's staging folders and partial downloads. Only textclf's own temp names are touched, and only once no
process can be using them: no write for an hour, or, in a run's checkpoints/, no process holding the run."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from textclf_cli import files
from textclf_cli.runs.folders import experiment_lock, honest_status, run_folders, try_lock_run
from textclf_cli.runs.status import RUNNING, read_status

ORPHAN_AGE_S = 3600  # a temp file or folder nobody has written to for an hour belongs to a dead process
# .<file>.<random>.tmp from atomic.write_atomic (mkstemp: 8 random characters) or .<link>.<pid>.tmp
TEMP_NAME = re.compile(rf"\..+\.(?:[a-z0-9_]{{8}}|\d+){re.escape(files.TEMP_SUFFIX)}")
PART_NAME = re.compile(rf"\..+\.[a-z0-9_]{{8}}{re.escape(files.DOWNLOAD_SUFFIX)}")  # data/download.py
STAGING_NAME = re.compile(r"\.[^.]+\.(?:old\.)?[a-z0-9_]{8}")  # data/prepared.py: .<key>.<random>, .<key>.old.<random>


def tidy_experiment(experiment_dir: Path) -> list[Path]:
    """remove_run_leftovers under the experiment lock (a new run does this before it starts)."""
    if not experiment_dir.is_dir():
        return []
    with experiment_lock(experiment_dir):
        return remove_run_leftovers(experiment_dir)


def remove_run_leftovers(experiment_dir: Path) -> list[Path]:
    """Temp files in an experiment folder and its runs; returns what was removed. The caller holds the
    experiment lock: the links' temp symlinks, made under it, are orphans whatever their age."""
    removed = remove(temp_files(experiment_dir))
    for run_dir in run_folders(experiment_dir):
        removed += remove_old(path for path in run_dir.rglob(f".*{files.TEMP_SUFFIX}") if TEMP_NAME.fullmatch(path.name))
        removed += remove_unheld_checkpoint_temps(run_dir)
    return removed


def remove_unheld_checkpoint_temps(run_dir: Path) -> list[Path]:
    """checkpoints/ is written by the process training the run alone: when none holds the run, any temp file
    there is an orphan, however young (a resume right after a SIGKILL cleans up)."""
    if honest_status(run_dir, read_status(run_dir)) == RUNNING:
        return []
    lock = try_lock_run(run_dir)
    if lock is None:
        return []
    try:
        return remove(temp_files(run_dir / files.CHECKPOINTS_DIR))
    finally:
        lock.release()


def remove_data_leftovers(prepared_dir: Path, download_dir: Path | None) -> list[Path]:
    """prepare's staging folders in data.prepared_dir and partial downloads beside data.train, once an hour old."""
    staging = [path for path in children(prepared_dir) if path.is_dir() and STAGING_NAME.fullmatch(path.name)]
    parts = [path for path in children(download_dir) if PART_NAME.fullmatch(path.name)] if download_dir else []
    return remove_old(staging + parts)


def temp_files(folder: Path) -> list[Path]:
    return [path for path in children(folder)
            if TEMP_NAME.fullmatch(path.name) and (path.is_symlink() or not path.is_dir())]


def children(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:  # missing or unreadable: nothing of ours to clean there
        return []


def remove_old(paths) -> list[Path]:
    now = time.time()
    return remove([path for path in paths if now - newest_mtime(path) > ORPHAN_AGE_S])


def newest_mtime(path: Path) -> float:
    """The last write to a file, or to anything inside a folder (a staging folder being filled stays young)."""
    try:
        mtimes = [path.lstat().st_mtime]
        if path.is_dir() and not path.is_symlink():
            mtimes += [inner.lstat().st_mtime for inner in path.rglob("*")]
    except OSError:
        return time.time()  # changing under us: someone is using it
    return max(mtimes)


def remove(paths: list[Path]) -> list[Path]:
    removed = []
    for path in paths:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:  # gone meanwhile, or not ours to delete (permissions): leave it
            continue
        removed.append(path)
    return removed

"""`textclf runs prune` and `output.keep_runs`: delete old finished runs textclf made, never best/latest, a live
run, or a folder another tool made."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from textclf_cli import files
from textclf_cli.console import log
from textclf_cli.errors import RunError
from textclf_cli.runs.folders import experiment_lock, honest_status, mark_stale_runs, run_folders, try_lock_run
from textclf_cli.runs.leftovers import remove_run_leftovers
from textclf_cli.runs.listing import experiment_dirs, is_experiment_dir
from textclf_cli.runs.status import COMPLETED, FAILED, INTERRUPTED, STALE, read_status

PRUNABLE = {COMPLETED, FAILED, INTERRUPTED, STALE}
DELETING_PREFIX = ".deleting-"


def protected_runs(experiment_dir: Path) -> set[str]:
    """Run ids that `best` and `latest` point at."""
    names = set()
    for link in (experiment_dir / files.BEST_LINK, experiment_dir / files.LATEST_LINK):
        if link.is_symlink():
            names.add(Path(os.readlink(link)).name)
    return names


def require_experiment_dir(folder: Path) -> None:
    """Refuse, in one line, a folder `runs prune` must not touch: only an experiment folder holds textclf's runs."""
    if folder.is_dir() and is_experiment_dir(folder):
        return
    if folder.is_dir() and experiment_dirs(folder):
        raise RunError(f"{folder}: a runs folder, not an experiment folder; prune one experiment at a time, e.g. "
                       f"{experiment_dirs(folder)[0]}")
    raise RunError(f"{folder}: not an experiment folder (no run folder made by textclf in it, and no latest/best "
                   f"link); pass runs/<experiment>")


def prune_runs(experiment_dir: Path, keep: int, dry_run: bool = False) -> list[Path]:
    """Delete the runs textclf made (runs.run_folders) beyond the newest `keep` whose status is completed, failed,
    interrupted or stale, except the targets of best/latest and any run a process is training in. Returns the
    runs (to be) removed. A folder another tool made, or a damaged run, is never touched.

    Holds the experiment lock, so best/latest cannot move onto a run while it is being deleted. Removes the
    temp files killed processes left in the experiment on the way (leftovers.py).
    """
    if not experiment_dir.is_dir():
        return []
    mark_stale_runs(experiment_dir)
    removed = []
    with experiment_lock(experiment_dir):
        remove_leftovers(experiment_dir)
        if not dry_run:
            for leftover in remove_run_leftovers(experiment_dir):
                log.info(f"removed {leftover} (left behind by a killed textclf process)")
        protected = protected_runs(experiment_dir)
        for run_dir in run_folders(experiment_dir)[keep:]:
            if run_dir.name in protected or honest_status(run_dir, read_status(run_dir)) not in PRUNABLE:
                continue
            if dry_run or delete_run(run_dir):
                removed.append(run_dir)
    return removed


def delete_run(run_dir: Path) -> bool:
    """Rename the folder out of sight first (a half-deleted run must never look like a run), then delete it.
    False when a process started training in it meanwhile (e.g. a --resume)."""
    lock = try_lock_run(run_dir)
    if lock is None:
        return False
    try:
        doomed = run_dir.with_name(f"{DELETING_PREFIX}{run_dir.name}")
        os.rename(run_dir, doomed)
    finally:
        lock.release()
    shutil.rmtree(doomed, ignore_errors=True)
    return True


def remove_leftovers(experiment_dir: Path) -> None:
    """Folders a prune renamed but could not finish deleting (killed mid-way)."""
    for leftover in experiment_dir.glob(f"{DELETING_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)

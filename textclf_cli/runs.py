"""Run folders: unique names, status.json, the latest/best pointers, and finding a run from a CLI target."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from textclf_cli import files
from textclf_cli.atomic import symlink_atomic, write_json_atomic
from textclf_cli.errors import RunError
from textclf_cli.metrics import is_better

RUNNING, COMPLETED, FAILED, INTERRUPTED = "running", "completed", "failed", "interrupted"
STALE = "stale"  # said `running`, but no process holds the run's lock any more (SIGKILL, power cut)
# A folder without status.json is a run in its first instant (create_run_dir, then the lock, then the status);
# once this old and unlocked, its process is gone.
STARTING_GRACE_S = 60


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def create_run_dir(runs_dir: Path, experiment: str) -> Path:
    """runs/<experiment>/<YYYYmmdd-HHMMSS>[-N]: mkdir is atomic, so two runs never share a folder."""
    experiment_dir = runs_dir / experiment
    experiment_dir.mkdir(parents=True, exist_ok=True)
    mark_stale_runs(experiment_dir)  # a new run is a good moment to say which old ones died
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in range(1000):
        run_dir = experiment_dir / (stamp if suffix == 0 else f"{stamp}-{suffix}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        (run_dir / files.CHECKPOINTS_DIR).mkdir()
        return run_dir
    raise RunError(f"{experiment_dir}: could not find a free run folder name for {stamp}")


def write_status(run_dir: Path, status: str, **fields: Any) -> dict[str, Any]:
    record = read_status(run_dir) or {}
    record.update(fields, status=status, updated_at=now_iso(), pid=os.getpid())
    write_json_atomic(run_dir / files.STATUS_FILE, record)
    return record


def read_status(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / files.STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def point_link(experiment_dir: Path, name: str, run_dir: Path) -> None:
    symlink_atomic(experiment_dir / name, run_dir.name)


def find_checkpoint(target: Path) -> tuple[Path, Path | None]:
    """(checkpoint file, run folder or None) for a run folder, experiment folder or .pt file."""
    if target.is_file():
        run_dir = target.parent.parent if target.parent.name == files.CHECKPOINTS_DIR else None
        return target, run_dir
    if not target.exists():
        raise RunError(f"{target}: no such run folder or checkpoint file")
    if not (target / files.CHECKPOINTS_DIR).is_dir() and (target / files.LATEST_LINK).exists():
        target = (target / files.LATEST_LINK).resolve()
    checkpoint = target / files.CHECKPOINTS_DIR / files.BEST_CHECKPOINT
    if not checkpoint.is_file():
        status = (read_status(target) or {}).get("status", "unknown")
        raise RunError(
            f"{target}: no completed checkpoint ({files.CHECKPOINTS_DIR}/{files.BEST_CHECKPOINT} missing, "
            f"run status: {status}); train it to the end or pick another run"
        )
    return checkpoint, target


def latest_run(runs_dir: Path, experiment: str) -> Path:
    link = runs_dir / experiment / files.LATEST_LINK
    if not link.exists():
        raise RunError(
            f"{runs_dir / experiment}: no completed run of experiment {experiment!r} yet; run `textclf train` first"
        )
    return link.resolve()


def update_latest(run_dir: Path) -> None:
    """Point runs/<experiment>/latest at this completed run (only if it is newer than the current one)."""
    experiment_dir = run_dir.parent
    with experiment_lock(experiment_dir):
        link = experiment_dir / files.LATEST_LINK
        current = link.resolve() if link.exists() else None
        if current is None or run_order(current.name) <= run_order(run_dir.name):
            point_link(experiment_dir, files.LATEST_LINK, run_dir)


def run_order(run_id: str) -> tuple[str, int]:
    """Sort key of a run id: its start time, then its numeric -N suffix (so -10 comes after -9)."""
    date, time_of_day, *suffix = run_id.split("-")
    return f"{date}-{time_of_day}", int(suffix[0]) if suffix and suffix[0].isdigit() else 0


def promote_if_better(run_dir: Path, monitor: str, value: float | None) -> tuple[bool, str]:
    """Point runs/<experiment>/best at this run only when its best validation metric beats the current best run's.

    Returns (promoted, one line saying why). Conservative on doubt: a current best recorded under another
    monitor is kept, since the two numbers cannot be compared; a best link to a missing run is replaced.
    """
    experiment_dir = run_dir.parent
    with experiment_lock(experiment_dir):
        link = experiment_dir / files.BEST_LINK
        current_dir = link.resolve() if link.exists() else None
        current = (read_status(current_dir) or {}) if current_dir is not None else {}
        current_value, current_monitor = current.get("best_metric"), current.get("monitor", monitor)
        mine = "no value" if value is None else f"{value:.4f}"
        if value is not None and current_monitor != monitor:
            return False, (f"kept best -> {current_dir.name}: it was chosen on {current_monitor}, this run on "
                           f"{monitor} ({mine}), which cannot be compared; repoint {link} by hand if this run "
                           f"should win")
        if value is not None and (current_value is None or is_better(monitor, value, current_value)):
            point_link(experiment_dir, files.BEST_LINK, run_dir)
            before = "no previous best" if current_value is None else f"{current_value:.4f} of {current_dir.name}"
            return True, f"promoted best -> {run_dir.name}: {monitor} {mine} beats {before}"
        theirs = "nothing" if current_value is None else f"{current_value:.4f}"
        kept = current_dir.name if current_dir is not None else "(none)"
        return False, f"kept best -> {kept}: {monitor} {mine} does not beat {theirs}"


def lock_run(run_dir: Path) -> RunLock:
    """An exclusive flock on the run folder while a process trains in it; the kernel drops it on any exit."""
    import fcntl

    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = (read_status(run_dir) or {}).get("pid", "unknown")
        raise RunError(f"{run_dir}: another textclf process (pid {pid}) is training in this run folder; "
                       f"wait for it to finish or stop it, then resume") from None
    return RunLock(fd)


def try_lock_run(run_dir: Path) -> RunLock | None:
    """The run's lock when no process holds it (release it soon), else None: a process is training there, or
    the folder cannot be opened, and then callers play safe and treat it as live."""
    try:
        return lock_run(run_dir)
    except (RunError, OSError):
        return None


def is_live(run_dir: Path) -> bool:
    """Whether a process holds the run's lock, i.e. is training in it right now."""
    lock = try_lock_run(run_dir)
    if lock is None:
        return run_dir.is_dir()
    lock.release()
    return False


def honest_status(run_dir: Path, status: dict[str, Any] | None) -> str:
    """status.json's status, except that a `running` run nobody holds (or a status-less old folder) is stale."""
    if status is None:
        young = time.time() - run_dir.stat().st_mtime < STARTING_GRACE_S
        return RUNNING if young or is_live(run_dir) else STALE
    recorded = status.get("status", STALE)
    if recorded == RUNNING and not is_live(run_dir):
        return STALE
    return recorded


def mark_stale_runs(experiment_dir: Path) -> list[Path]:
    """Rewrite status.json of every `running` run whose process is gone to `stale`; returns those runs."""
    marked = []
    for run_dir in run_folders(experiment_dir):
        status = read_status(run_dir)
        if status is None or status.get("status") != RUNNING:
            continue
        lock = try_lock_run(run_dir)
        if lock is None:  # live
            continue
        try:
            status = read_status(run_dir) or {}  # again, under the lock: a resume may have run meanwhile
            if status.get("status") != RUNNING:
                continue
            pid = status.get("pid", "unknown")
            status.update(status=STALE, stale_since=now_iso(),
                          message=f"the process training it (pid {pid}) is gone (killed or power cut); "
                                  f"continue it with textclf train CONFIG --resume {run_dir}")
            write_json_atomic(run_dir / files.STATUS_FILE, status)
            marked.append(run_dir)
        except OSError:  # e.g. a read-only runs folder served to predict: listing still says stale
            pass
        finally:
            lock.release()
    return marked


def run_folders(experiment_dir: Path) -> list[Path]:
    """The run folders of an experiment (not its links or hidden files), newest first."""
    if not experiment_dir.is_dir():
        return []
    found = [path for path in experiment_dir.iterdir()
             if path.is_dir() and not path.is_symlink() and not path.name.startswith(".") and is_run_folder(path)]
    return sorted(found, key=lambda path: sortable_run_order(path.name), reverse=True)


def sortable_run_order(run_id: str) -> tuple[str, int]:
    """run_order, also for a folder someone named by hand (sorted by its name)."""
    try:
        return run_order(run_id)
    except ValueError:
        return run_id, 0


def is_run_folder(path: Path) -> bool:
    return any((path / name).exists() for name in (files.STATUS_FILE, files.CHECKPOINTS_DIR, files.CONFIG_FILE))


class RunLock:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        os.close(self.fd)  # closing the only descriptor releases the flock


class experiment_lock:
    """An flock on runs/<experiment>/.lock around pointer updates, so concurrent runs never race."""

    def __init__(self, experiment_dir: Path) -> None:
        self.path = experiment_dir / files.LOCK_FILE

    def __enter__(self) -> experiment_lock:
        import fcntl

        self.handle = self.path.open("a")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()

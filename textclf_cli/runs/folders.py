"""Run folders: unique names, status.json, the latest/best pointers, and finding a run from a CLI target."""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path
from typing import Any

from textclf_cli import files
from textclf_cli.atomic import symlink_atomic
from textclf_cli.console import log
from textclf_cli.errors import ConfigError, RunError
from textclf_cli.metrics import is_better
from textclf_cli.runs.locks import flock, open_lock_file, same_file
from textclf_cli.runs.status import (
    CREATED,
    RUNNING,
    STALE,
    TOOL,
    RunStatus,
    now_iso,
    read_status,
    write_status,
)

STARTING_GRACE_S = 60  # a `created` run older than this that nobody holds was left by a dead process
# what `textclf runs` shows for a folder it leaves alone (never pruned, never a `latest`)
DAMAGED = "damaged"  # a run-id folder whose status.json is not a JSON object
NOT_A_RUN = "not a textclf run"  # holds status.json, checkpoints/ or config.yaml, but textclf did not make it

RUN_ID = re.compile(r"\d{8}-\d{6}(?:-\d+)?")  # YYYYmmdd-HHMMSS[-N], in UTC
RUN_ENTRIES = (files.STATUS_FILE, files.CHECKPOINTS_DIR, files.CONFIG_FILE)


def id_stamp() -> str:
    """The start time in run and study ids, in UTC: ids sort by start time under any TZ and through DST."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def create_run_dir(runs_dir: Path, experiment: str) -> Path:
    """runs/<experiment>/<YYYYmmdd-HHMMSS>[-N] with textclf's marker in status.json: mkdir is atomic, so two
    runs never share a folder."""
    experiment_dir = runs_dir / experiment
    experiment_dir.mkdir(parents=True, exist_ok=True)
    mark_stale_runs(experiment_dir)  # a new run is a good moment to say which old ones died
    stamp = id_stamp()
    for suffix in range(1000):
        run_dir = experiment_dir / (stamp if suffix == 0 else f"{stamp}-{suffix}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        write_status(run_dir, RunStatus(CREATED, experiment=experiment, run_id=run_dir.name, created_at=now_iso(),
                                        updated_at=now_iso(), pid=os.getpid()))
        (run_dir / files.CHECKPOINTS_DIR).mkdir()
        return run_dir
    raise RunError(f"{experiment_dir}: could not find a free run folder name for {stamp}")


def is_run_id(name: str) -> bool:
    return RUN_ID.fullmatch(name) is not None


def is_textclf_run(folder: Path, status: dict[str, Any] | None) -> bool:
    """Made by textclf: a run-id name and a status.json carrying textclf's marker (or, written before the
    marker existed, the run's own run_id and experiment)."""
    if status is None or not is_run_id(folder.name):
        return False
    return status.get("tool") == TOOL or (status.get("run_id") == folder.name and "experiment" in status)


def folder_kind(folder: Path) -> str | None:
    """None for a run textclf made; DAMAGED or NOT_A_RUN for a folder that looks like a run but is left alone;
    also NOT_A_RUN for anything else (a study folder, data)."""
    status = read_status(folder)
    if is_textclf_run(folder, status):
        return None
    if status is None and is_run_id(folder.name) and (folder / files.STATUS_FILE).is_file():
        return DAMAGED
    return NOT_A_RUN


def looks_like_run(folder: Path) -> bool:
    """What textclf before the marker took for a run: listed as `not a textclf run` so nobody wonders why it stays."""
    return any((folder / name).exists() for name in RUN_ENTRIES)


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


def refuse_model_as_output(command: str, output: Path | None, model_files: list[Path], run_dir: Path | None) -> None:
    """--output must not replace a model the command reads, nor anything in the run's checkpoints/ folder."""
    if output is None:
        return
    target = output.resolve()
    for model_file in model_files:
        if target == model_file.resolve():
            raise ConfigError(f"{command}: --output {output} is the model being read ({model_file}); writing there "
                              f"would destroy it: name another file")
    checkpoints = run_dir / files.CHECKPOINTS_DIR if run_dir is not None else None
    if checkpoints is not None and target.is_relative_to(checkpoints.resolve()):
        raise ConfigError(f"{command}: --output {output} is inside the run's {checkpoints}, which holds its "
                          f"checkpoints; name a file elsewhere")


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
    """An exclusive flock on <run>/.lock while a process trains in the run (or a prune deletes it); the kernel
    drops it on any exit."""
    try:
        lock = acquire_run_lock(run_dir)
    except FileNotFoundError:
        raise RunError(f"{run_dir}: no such run folder (deleted meanwhile, e.g. by runs prune or "
                       f"output.keep_runs); pass the folder of an existing run") from None
    except OSError as exc:
        raise RunError(f"{run_dir / files.LOCK_FILE}: cannot open the run's lock file for writing "
                       f"({exc.strerror or exc}); check the run folder's permissions") from None
    if lock is None:
        pid = (read_status(run_dir) or {}).get("pid", "unknown")
        raise RunError(f"{run_dir}: another textclf process (pid {pid}) is training in this run folder; "
                       f"wait for it to finish or stop it, then resume")
    return lock


def acquire_run_lock(run_dir: Path) -> RunLock | None:
    """The run's lock, or None when another process holds it. OSError when the lock file cannot be opened;
    FileNotFoundError also when a prune renamed the folder away while this process waited for the lock."""
    path = run_dir / files.LOCK_FILE
    fd = open_lock_file(path)
    try:
        locked = flock(fd, path)
        if locked and not same_file(fd, path):
            raise FileNotFoundError(f"{run_dir} was moved away while it was being locked")
    except BaseException:
        os.close(fd)
        raise
    if not locked:
        os.close(fd)
        return None
    return RunLock(fd)


def try_lock_run(run_dir: Path) -> RunLock | None:
    """The run's lock when no process holds it (release it soon), else None: a process holds it, or the lock
    file cannot be opened (a read-only or vanished folder), and callers leave the run alone. A file system that
    cannot lock raises RunError: no guess is safe there."""
    try:
        return acquire_run_lock(run_dir)
    except OSError:
        return None


def is_live(run_dir: Path) -> bool:
    """Whether a process holds the run's lock, i.e. is training in it right now. A shared lock is enough to ask,
    so this works on a lock file that is only readable (a runs folder served read-only)."""
    path = run_dir / files.LOCK_FILE
    try:
        fd = open_lock_file(path, write=False)
    except FileNotFoundError:
        return held_by_older_textclf(run_dir)
    except OSError:
        return run_dir.is_dir()  # cannot even ask: play safe while the folder exists
    try:
        return not flock(fd, path, exclusive=False)
    finally:
        os.close(fd)


def held_by_older_textclf(run_dir: Path) -> bool:
    """textclf before <run>/.lock locked the run folder itself: a run it still trains (started before an
    upgrade) has no .lock file, yet must not look dead. Any error here means no such lock."""
    import fcntl

    try:
        fd = os.open(run_dir, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def started_recently(run_dir: Path) -> bool:
    try:
        return time.time() - run_dir.stat().st_mtime < STARTING_GRACE_S
    except FileNotFoundError:
        return False


def honest_status(run_dir: Path, status: dict[str, Any] | None) -> str:
    """status.json's status, except that a run nobody holds is stale when it says `running`, or says `created`
    past its first minute; DAMAGED when status.json is not an object or its status not a word."""
    recorded = STALE if status is None else status.get("status", STALE)
    if status is None or not isinstance(recorded, str):
        return DAMAGED
    if recorded == CREATED:
        return RUNNING if started_recently(run_dir) or is_live(run_dir) else STALE
    if recorded == RUNNING and not is_live(run_dir):
        return STALE
    return recorded


def mark_stale_runs(experiment_dir: Path) -> list[Path]:
    """Rewrite status.json of every `running` (or old `created`) run whose process is gone to `stale`; returns
    those runs. Names each damaged run in one warning on the way."""
    warn_damaged(experiment_dir)
    marked = []
    for run_dir in run_folders(experiment_dir):
        status = read_status(run_dir)
        if not needs_marking(status) or honest_status(run_dir, status) != STALE:
            continue
        lock = try_lock_run(run_dir)
        if lock is None:  # live
            continue
        try:
            status = read_status(run_dir) or {}  # again, under the lock: a resume may have run meanwhile
            if not needs_marking(status):
                continue
            write_status(run_dir, dataclasses.replace(RunStatus.from_dict(status), status=STALE, stale_since=now_iso(),
                                                      message=stale_message(run_dir, status)))
            marked.append(run_dir)
        except OSError:  # e.g. a read-only runs folder served to predict: listing still says stale
            pass
        finally:
            lock.release()
    return marked


def needs_marking(status: dict[str, Any] | None) -> bool:
    return status is not None and status.get("status") in (RUNNING, CREATED)


def stale_message(run_dir: Path, status: dict[str, Any]) -> str:
    pid = status.get("pid", "unknown")
    if status.get("status") == CREATED:
        return f"the process that created it (pid {pid}) is gone before training began; start a new run"
    return (f"the process training it (pid {pid}) is gone (killed or power cut); "
            f"continue it with textclf train CONFIG --resume {run_dir}")


_warned_damaged: set[Path] = set()  # one warning per damaged run per process, however often it is looked at


def warn_damaged(experiment_dir: Path) -> None:
    for folder in child_folders(experiment_dir):
        if folder not in _warned_damaged and folder_kind(folder) == DAMAGED:
            _warned_damaged.add(folder)
            log.warning(f"{folder / files.STATUS_FILE}: damaged (not a JSON object); textclf leaves this run "
                        f"alone and never prunes it: repair the file or delete the folder by hand")


def child_folders(experiment_dir: Path) -> list[Path]:
    """Real (not symlinked), visible sub-folders of an experiment folder."""
    if not experiment_dir.is_dir():
        return []
    return [path for path in experiment_dir.iterdir()
            if path.is_dir() and not path.is_symlink() and not path.name.startswith(".")]


def run_folders(experiment_dir: Path) -> list[Path]:
    """The runs textclf made in an experiment folder (see is_textclf_run), newest first. Nothing else there is
    ever pruned or listed as a run."""
    found = [path for path in child_folders(experiment_dir) if is_textclf_run(path, read_status(path))]
    return sorted(found, key=lambda path: run_order(path.name), reverse=True)


def left_alone(experiment_dir: Path) -> list[tuple[Path, str]]:
    """(folder, DAMAGED or NOT_A_RUN) for the folders of an experiment that look like runs but are not textclf's."""
    kinds = [(folder, folder_kind(folder)) for folder in child_folders(experiment_dir)]
    return [(folder, kind) for folder, kind in kinds
            if kind == DAMAGED or (kind == NOT_A_RUN and looks_like_run(folder))]


def sortable_run_order(run_id: str) -> tuple[str, int]:
    """run_order, also for a folder someone named by hand (sorted by its name)."""
    try:
        return run_order(run_id)
    except ValueError:
        return run_id, 0


class RunLock:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        os.close(self.fd)  # closing the only descriptor releases the flock


class experiment_lock:
    """An flock on runs/<experiment>/.lock (a regular file opened for writing, as NFS needs) around pointer
    updates and pruning, so concurrent runs never race."""

    def __init__(self, experiment_dir: Path) -> None:
        self.path = experiment_dir / files.LOCK_FILE

    def __enter__(self) -> experiment_lock:
        try:
            self.fd = open_lock_file(self.path)
        except OSError as exc:
            raise RunError(f"{self.path}: cannot open the experiment's lock file for writing "
                           f"({exc.strerror or exc}); check the folder's permissions") from None
        try:
            flock(self.fd, self.path, blocking=True)
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing the only descriptor releases the flock

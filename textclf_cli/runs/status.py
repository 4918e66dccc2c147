"""status.json: what a run is doing or how it ended, one typed record written through one function."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from textclf_cli import files
from textclf_cli.atomic import write_json_atomic

RUNNING, COMPLETED, FAILED, INTERRUPTED = "running", "completed", "failed", "interrupted"
STALE = "stale"  # said `running`, but no process holds the run's lock any more (SIGKILL, power cut)
# status.json's first word, written with the folder; the creating process takes the run's lock at once, so a
# `created` run this old that nobody holds was left by a process that died in that instant.
CREATED = "created"
# the marker create_run_dir writes: a folder is a run only if textclf made it
TOOL = "textclf"
RUN_FORMAT_VERSION = 1


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunStatus:
    """Every field status.json may hold; None: not set (yet)."""

    status: str
    tool: str = TOOL
    format_version: int = RUN_FORMAT_VERSION
    experiment: str | None = None
    run_id: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    resumed_at: str | None = None
    finished_at: str | None = None
    stale_since: str | None = None
    updated_at: str | None = None
    pid: int | None = None  # the process that wrote it last (a stale run: the one that died)
    device: str | None = None
    precision: str | None = None
    world_size: int | None = None
    epochs_completed: int | None = None
    best_epoch: int | None = None
    best_metric: float | None = None
    monitor: str | None = None
    refit: dict[str, Any] | None = None  # train.refit: {epochs: {member: n}, texts, seconds}
    promoted: bool | None = None  # --promote-if-better: whether best moved here, and the line that says why
    promotion: str | None = None
    message: str | None = None  # why a run failed, was interrupted or went stale, and what to do

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> RunStatus:
        """A record as read from disk; keys this textclf does not know are dropped, a missing status is stale."""
        known = {item.name for item in fields(cls)}
        return cls(**{"status": STALE, **{key: value for key, value in record.items() if key in known}})


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """status.json as a dict; None when it is missing or damaged (not JSON, or JSON that is not an object)."""
    try:
        record = json.loads((run_dir / files.STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def write_status(run_dir: Path, record: RunStatus) -> None:
    """Every field, null where not set: status.json always has the same keys."""
    write_json_atomic(run_dir / files.STATUS_FILE, dataclasses.asdict(record))


def update_status(run_dir: Path, status: str, **changes: Any) -> RunStatus:
    """The run's record with `status` and `changes` (field names of RunStatus: a typo is a TypeError), stamped with
    this process and the time, written atomically."""
    previous = read_status(run_dir)
    record = RunStatus.from_dict(previous) if previous is not None else RunStatus(status)
    record = dataclasses.replace(record, status=status, updated_at=now_iso(), pid=os.getpid(), **changes)
    write_status(run_dir, record)
    return record

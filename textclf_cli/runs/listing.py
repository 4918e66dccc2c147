"""`textclf runs`: one record per run folder (honest status, metrics, duration, best/latest), as table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from textclf_cli import files
from textclf_cli.errors import RunError
from textclf_cli.runs.folders import (
    DAMAGED,
    honest_status,
    left_alone,
    mark_stale_runs,
    run_folders,
    sortable_run_order,
)
from textclf_cli.runs.status import RUNNING, STALE, read_status


@dataclass
class RunRecord:
    experiment: str
    run_id: str
    status: str  # completed | failed | interrupted | running | stale | damaged | not a textclf run
    epochs: int | None
    monitor: str | None
    best_metric: float | None
    test_accuracy: float | None
    test_f1_macro: float | None
    started_at: str | None
    duration_s: float | None
    tags: list[str] = field(default_factory=list)  # "best", "latest"
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def experiment_dirs(path: Path) -> list[Path]:
    """[path] for an experiment folder (it holds run folders or a latest/best link); its children for a runs folder."""
    if not path.is_dir():
        raise RunError(f"{path}: no such runs or experiment folder; pass output.runs_dir (default runs) or "
                       f"runs/<experiment>")
    if is_experiment_dir(path):
        return [path]
    return sorted(child for child in path.iterdir() if child.is_dir() and not child.name.startswith(".")
                  and is_experiment_dir(child))


def is_experiment_dir(path: Path) -> bool:
    """It holds a run textclf made (a damaged one counts) or a latest/best link; other tools' folders do not count."""
    links = (path / files.LATEST_LINK, path / files.BEST_LINK)
    return (any(link.is_symlink() for link in links) or bool(run_folders(path))
            or any(kind == DAMAGED for _, kind in left_alone(path)))


def link_targets(experiment_dir: Path) -> dict[str, str]:
    """{"best": run id, "latest": run id} for the links that exist and point at a folder."""
    targets = {}
    for name in (files.BEST_LINK, files.LATEST_LINK):
        link = experiment_dir / name
        if link.is_symlink() and link.resolve().is_dir():
            targets[name] = link.resolve().name
    return targets


def list_runs(path: Path) -> list[RunRecord]:
    """Every run under a runs or experiment folder, newest first; `running` runs whose process is gone are
    marked stale on disk on the way (listing is one of the commands that tidy an experiment)."""
    records = []
    for experiment_dir in experiment_dirs(path):
        mark_stale_runs(experiment_dir)
        tags_by_run: dict[str, list[str]] = {}
        for tag, run_id in link_targets(experiment_dir).items():
            tags_by_run.setdefault(run_id, []).append(tag)
        records.extend(run_record(run_dir, tags_by_run.get(run_dir.name, []))
                       for run_dir in run_folders(experiment_dir))
        records.extend(left_alone_record(folder, kind) for folder, kind in left_alone(experiment_dir))
    return sorted(records, key=lambda record: (sortable_run_order(record.run_id), record.experiment), reverse=True)


def run_record(run_dir: Path, tags: list[str]) -> RunRecord:
    status = read_status(run_dir)
    record = status or {}
    test = read_test_metrics(run_dir)
    state = honest_status(run_dir, status)
    return RunRecord(
        experiment=run_dir.parent.name, run_id=run_dir.name, status=state,
        epochs=record.get("epochs_completed"), monitor=record.get("monitor"), best_metric=record.get("best_metric"),
        test_accuracy=test.get("accuracy"), test_f1_macro=test.get("f1_macro"), started_at=record.get("started_at"),
        duration_s=duration_seconds(record, state), tags=sorted(tags), path=str(run_dir),
    )


def left_alone_record(folder: Path, kind: str) -> RunRecord:
    """A row saying why a folder that looks like a run is none of textclf's business (never pruned)."""
    return RunRecord(experiment=folder.parent.name, run_id=folder.name, status=kind, epochs=None, monitor=None,
                     best_metric=None, test_accuracy=None, test_f1_macro=None, started_at=None, duration_s=None,
                     path=str(folder))


def read_test_metrics(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / files.EVALUATION_DIR / "test" / files.METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def duration_seconds(status: dict[str, Any], state: str) -> float | None:
    """Wall time from start to finish; to now for a live run; to the last status update for a stale one."""
    start = parse_time(status.get("started_at"))
    if state == RUNNING:
        end = datetime.now(timezone.utc)
    elif state == STALE:
        end = parse_time(status.get("updated_at"))
    else:
        end = parse_time(status.get("finished_at")) or parse_time(status.get("updated_at"))
    if start is None or end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 1)


def parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def format_json(records: list[RunRecord]) -> str:
    return json.dumps([record.to_dict() for record in records], indent=2, ensure_ascii=False) + "\n"


def format_csv(records: list[RunRecord]) -> str:
    buffer = io.StringIO()
    columns = list(RunRecord.__dataclass_fields__)
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        row = record.to_dict()
        row["tags"] = "+".join(record.tags)
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return buffer.getvalue()


def show_table(records: list[RunRecord]) -> None:
    from rich.console import Console
    from rich.table import Table

    from textclf_cli.console import is_interactive, stdout

    # piped into a file or grep, rows stay whole instead of wrapping at 80 columns
    console = stdout if is_interactive() else Console(width=100_000, soft_wrap=True)
    table = Table()
    for column in ("experiment", "run", "status", "epochs", "best", "test acc", "test f1", "duration", "tag",
                   "folder"):
        table.add_column(column, overflow="fold", justify="right" if column in ("epochs", "duration") else "left")
    for record in records:
        best = f"{record.monitor} {number(record.best_metric)}" if record.best_metric is not None else ""
        table.add_row(record.experiment, record.run_id, record.status, "" if record.epochs is None else str(record.epochs),
                      best, number(record.test_accuracy), number(record.test_f1_macro),
                      format_duration(record.duration_s), ",".join(record.tags), record.path)
    console.print(table)

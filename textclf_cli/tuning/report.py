"""What a tune study leaves for people: trials.csv, tuning.png and the table of the top trials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from textclf_cli.atomic import write_atomic, write_text_atomic
from textclf_cli.tuning.space import decode_params

FIXED_COLUMNS = ["number", "state", "value", "seconds"]


def trial_rows(study: Any, space: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, seconds, one column per searched key, run_dir (while kept)."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        seconds = trial.duration.total_seconds() if trial.duration is not None else None
        run_dir = trial.user_attrs.get("run_dir")
        row = {"number": trial.number, "state": trial.state.name.lower(), "value": trial.value,
               "seconds": None if seconds is None else round(seconds, 1)}
        params = decode_params(space, trial.params)
        row.update({key: _cell(params[key]) if key in params else None for key in space})
        row["run_dir"] = run_dir if run_dir and Path(run_dir).is_dir() else None
        row["message"] = trial.user_attrs.get("message")
        rows.append(row)
    return rows


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def write_trials_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, pd.DataFrame(rows).to_csv(index=False))


def plot_tuning(path: Path, rows: list[dict[str, Any]], monitor: str, maximize: bool) -> None:
    """The metric of every trial (pruned ones at their last epoch) and the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for state, style in (("complete", {"color": "tab:blue", "marker": "o"}),
                         ("pruned", {"color": "tab:gray", "marker": "x"})):
        points = [(row["number"], row["value"]) for row in rows if row["state"] == state and row["value"] is not None]
        if points:
            axes.scatter(*zip(*points), label=state, **style)
    best_so_far, best = [], None
    for row in rows:
        if row["state"] == "complete" and row["value"] is not None:
            best = row["value"] if best is None else (max if maximize else min)(best, row["value"])
        if best is not None:
            best_so_far.append((row["number"], best))
    if best_so_far:
        axes.step(*zip(*best_so_far), where="post", color="tab:orange", label="best so far")
    axes.set_xlabel("trial")
    axes.set_ylabel(monitor)
    axes.set_title(f"{monitor} per trial")
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    write_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=120, bbox_inches="tight"))
    plt.close(figure)


def show_top_trials(rows: list[dict[str, Any]], monitor: str, maximize: bool, limit: int = 5) -> None:
    """A rich table of the best completed trials, with their values of the searched keys."""
    from rich.table import Table

    from textclf_cli.console import stdout, table_cell

    completed = [row for row in rows if row["state"] == "complete" and row["value"] is not None]
    completed.sort(key=lambda row: (-row["value"] if maximize else row["value"], row["number"]))
    keys = [key for key in rows[0] if key not in FIXED_COLUMNS + ["run_dir", "message"]] if rows else []
    table = Table(title=table_cell(f"top trials by {monitor} ({len(completed)} completed of {len(rows)})"))
    for column in ("trial", monitor, "seconds"):
        table.add_column(column, justify="right")
    table.add_column("values")
    table.add_column("run folder")
    for row in completed[:limit]:
        values = " ".join(f"{key.partition('.')[2]}={_short(row[key])}" for key in keys)  # train.lr -> lr
        folder = Path(row["run_dir"]).name if row["run_dir"] else "(deleted)"
        table.add_row(str(row["number"]), f"{row['value']:.4f}", f"{row['seconds'] or 0:.1f}", table_cell(values),
                      table_cell(folder))
    stdout.print(table)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)

"""`output.tensorboard: true`: per-epoch scalars and the final hparams in <run>/tensorboard/ (rank 0 only)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from textclf_cli.errors import ConfigError

INSTALL_HINT = "pip install 'textclf-cli[tensorboard]' (from a checkout: pip install -e '.[tensorboard]')"


def require_tensorboard() -> None:
    """torch.utils.tensorboard needs the optional tensorboard package: say so before any work starts."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(f"output.tensorboard: true needs the tensorboard package, which is not installed: "
                          f"{INSTALL_HINT}; or set output.tensorboard: false")


def scalar_tag(column: str) -> str:
    """history.csv column -> TensorBoard tag: valid_loss -> loss/valid, so train and valid share a chart."""
    split, _, metric = column.partition("_")
    return f"{metric}/{split}" if split in ("train", "valid") and metric else column


class TensorBoardLog:
    """A SummaryWriter in log_dir, or nothing at all when log_dir is None (tensorboard off, or not rank 0)."""

    def __init__(self, log_dir: Path | None) -> None:
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(log_dir))

    def epoch(self, row: dict[str, float]) -> None:
        """One history row: every column but the epoch number, at step = epoch."""
        if self.writer is None:
            return
        step = int(row["epoch"])
        for column, value in row.items():
            if column != "epoch":
                self.writer.add_scalar(scalar_tag(column), value, step)
        self.writer.flush()

    def hparams(self, config: dict[str, Any], history: list[dict[str, float]], best_epoch: int) -> None:
        """The flattened config against the best epoch's validation numbers (TensorBoard's HPARAMS tab)."""
        if self.writer is None or not history:
            return
        best = history[best_epoch - 1] if 0 < best_epoch <= len(history) else history[-1]
        metrics = {f"hparam/{column}": value for column, value in best.items() if column.startswith("valid_")}
        metrics["hparam/best_epoch"] = best_epoch
        self.writer.add_hparams(flatten(config), metrics, run_name=".")  # "." : into this folder, no subfolder
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 0.001}} -> {"train.lr": 0.001}; lists and None become text (hparams take scalars)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[f"{prefix}{key}"] = value
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat

"""The trainer's state types, shared by the loop, scoring and resume: settings, per-epoch state, stop signals."""

from __future__ import annotations

import signal
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from textclf_cli.console import log
from textclf_cli.data.prepared import EncodedSplit
from textclf_cli.errors import RunError
from textclf_cli.training.distributed import Processes


class StopRequested(Exception):
    """Raised between batches after Ctrl-C / SIGTERM, so the caller can save and exit 130."""


class NonFiniteLoss(RunError):
    """The training loss became NaN or infinite; under DDP every rank raises it at the same batch."""


@dataclass
class LoopSettings:
    epochs: int
    batch_size: int
    eval_batch_size: int
    max_length: int
    truncate: str
    min_width: int
    seed: int
    chunk_batches: int
    grad_clip: float | None
    monitor: str
    patience: int | None
    labels: list[str]
    task: str = "multiclass"  # or multilabel: sigmoid outputs, decided by thresholds
    threshold: float | str = 0.5  # multilabel: one threshold for every label, or "per_label" (tuned each epoch)
    members_stop_apart: bool = True  # an ensemble's members stop one by one (validation.py); off under DDP


@dataclass
class MemberState:
    """One ensemble member's own early stopping: the members stop one by one (scoring.py)."""

    best: dict[str, float] | None = None  # its best monitored metric and loss so far
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    stopped: bool = False  # its training has ended; its weights are those of best_epoch
    epochs_in_best: int = 0  # epochs of training behind its weights in best.pt (the refit trains that long)


@dataclass
class TrainState:
    """Everything besides weights and optimizer that a resumed run needs."""

    epoch: int = 0  # last completed epoch
    best_metric: float | None = None
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    thresholds: list[float] | None = None  # multilabel: the last epoch's decision threshold per label
    members: list[MemberState] | None = None  # an ensemble's members, in model.members order; None for one model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainState:
        members = saved.get("members")
        return cls(**{**saved, "members": None if members is None else [MemberState(**m) for m in members]})

    def epochs_in_best(self) -> list[int]:
        """Epochs of training behind best.pt's weights, per member (one entry for a single model)."""
        return [member.epochs_in_best for member in self.members] if self.members else [self.best_epoch]

    def every_member_stopped(self) -> bool:
        return bool(self.members) and all(member.stopped for member in self.members)


@dataclass
class EnsembleRun:
    """An ensemble's in-memory training state beside TrainState.members: what is not worth saving each epoch."""

    best_weights: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # members still training
    frozen_logits: dict[int, np.ndarray] = field(default_factory=dict)  # stopped members: scored once, then kept


@dataclass
class Trainer:
    """The moving parts of one training run (built by train.py, driven by fit())."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    loss_fn: nn.Module
    device: torch.device
    amp: Any  # precision.AmpSettings
    train_split: EncodedSplit
    valid_split: EncodedSplit
    settings: LoopSettings
    stop: SignalGuard
    processes: Processes  # one plain process or this rank of a torchrun launch
    plain_model: nn.Module  # the model without compile/DDP wrappers (what checkpoints save)
    ensemble: EnsembleRun | None = None  # only when the model is an Ensemble


class SignalGuard:
    """First Ctrl-C / SIGTERM asks the loop to stop after the current batch; a second one exits at once."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. under a test runner thread)
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            import os

            os._exit(130)
        self.requested = signal.Signals(signum).name
        log.warning(f"{self.requested} received: stopping after this batch (send it again to quit at once)")

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

"""Resuming a run: the last.pt payload, and restoring weights, optimizer, scheduler and RNG state from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from textclf_cli import files
from textclf_cli.errors import RunError
from textclf_cli.runs.checkpoint import CheckpointMeta, new_checkpoint
from textclf_cli.training.state import Trainer, TrainState


def last_checkpoint(trainer: Trainer, state: TrainState, meta: CheckpointMeta) -> dict[str, Any]:
    """best.pt's contents plus what a resumed run needs: optimizer, schedule, scaler, RNG and loop state."""
    training = {
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
        "scaler": trainer.amp.scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "state": state.to_dict(),
        # ensemble members that have not improved lately: their best weights differ from the current ones
        "member_best_weights": {str(index): weights for index, weights in trainer.ensemble.best_weights.items()
                                if state.members[index].epochs_without_improvement > 0} if trainer.ensemble else {},
    }
    metrics = state.history[-1] if state.history else {}
    return new_checkpoint(trainer.plain_model, meta, epoch=state.epoch, metrics=metrics, training=training,
                          thresholds=state.thresholds)


def weights_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a module's state_dict: weights to go back to while the module trains on."""
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def load_resumed_weights(model: nn.Module, checkpoint: dict[str, Any], run_dir: Path) -> None:
    """A run's last.pt weights into its freshly built model (before the optimizer is built on them)."""
    path = run_dir / files.CHECKPOINTS_DIR / files.LAST_CHECKPOINT
    if not checkpoint.get("training"):
        raise RunError(f"{path}: has no training state to resume from")
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError) as exc:
        detail = str(exc).splitlines()[-1].strip()[:160]
        raise RunError(f"{path}: its weights do not fit the model this config builds ({detail}); start a new run "
                       "instead of resuming") from None


def restore_training_state(trainer: Trainer, checkpoint: dict[str, Any], run_dir: Path) -> TrainState:
    """The rest of a run's last.pt (its weights are in already): optimizer, schedule, scaler, RNG and loop state."""
    training = checkpoint["training"]
    trainer.optimizer.load_state_dict(training["optimizer"])
    for parameter, values in trainer.optimizer.state.items():
        if any(torch.is_tensor(value) and value.dim() > 0 and value.shape != parameter.shape for value in values.values()):
            raise RunError(f"{run_dir / files.CHECKPOINTS_DIR / files.LAST_CHECKPOINT}: its optimizer state does not "
                           "fit the model (written by an older textclf); start a new run instead of resuming")
    if trainer.scheduler is not None and training["scheduler"] is not None:
        trainer.scheduler.load_state_dict(training["scheduler"])
    if training.get("scaler"):
        trainer.amp.scaler.load_state_dict(training["scaler"])
    torch.set_rng_state(training["torch_rng"])
    state = TrainState.from_dict(training["state"])
    saved = training.get("member_best_weights") or {}
    # each ensemble member still training gets its best weights back: saved when they lagged, else its current ones
    for index, member in enumerate(getattr(trainer.plain_model, "members", [])):
        if not state.members[index].stopped:
            trainer.ensemble.best_weights[index] = saved.get(str(index)) or weights_copy(member)
    return state

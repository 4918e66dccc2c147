"""The refit: once validation has chosen how long each model trains (and the ensemble's mix), a fresh model
trains that long on train + valid, and becomes best.pt.

A validation split carved from the training file costs the model data.valid_fraction of its data, which on a
few thousand sentences shows in test accuracy (TF-IDF+LR, the baseline users compare with, fits on all of it). The
refit keeps every choice the validation split made: the epochs behind each member's best weights, the mix, the
multi-label thresholds; the seed, batch order and lr schedule are the selection run's. This is the second
meta-algorithm of Goodfellow, Bengio and Courville, Deep Learning, section 7.8 (algorithm 7.2). The model chosen
on validation stays beside it as selected.pt: its validation figures are the honest ones.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from textclf_cli import files
from textclf_cli.console import log
from textclf_cli.data.prepared import EncodedSplit, PreparedData
from textclf_cli.runs.checkpoint import load_checkpoint, new_checkpoint, save_checkpoint
from textclf_cli.training.loop import train_one_epoch
from textclf_cli.training.state import SignalGuard, TrainState

if TYPE_CHECKING:
    from textclf_cli.config import Config
    from textclf_cli.training.distributed import Processes


def refit(run_dir: Path, config: Config, data: PreparedData, amp: Any, processes: Processes,
          selection: TrainState, guard: SignalGuard) -> dict[str, Any]:
    """Train a fresh model on train + valid for the epochs `selection` chose; on rank 0 move the selection's
    best.pt to selected.pt and write the refitted model as best.pt. Returns what status.json records."""
    from textclf_cli.training.build import build_trainer

    epochs = selection.epochs_in_best()
    whole = with_valid_in_train(data)
    trainer, _, meta = build_trainer(config, whole, amp, None, processes)
    trainer.stop = guard  # the selection's: one Ctrl-C stops either phase
    trainer.settings = dataclasses.replace(trainer.settings, epochs=max(epochs))
    model = trainer.plain_model
    texts = len(whole.splits["train"])
    log.info(f"refit on train + valid ({texts} texts) for the epochs chosen on validation: "
             + ", ".join(f"{name} {count}" for name, count in zip(member_names(model), epochs)))
    started = time.perf_counter()
    for epoch in range(1, max(epochs) + 1):
        if hasattr(model, "stopped"):  # an ensemble member trains no further than its chosen epoch
            model.stopped[:] = [epoch > count for count in epochs]
        clock = time.perf_counter()
        loss, accuracy = train_one_epoch(trainer, epoch)
        log.info(f"refit epoch {epoch}/{max(epochs)} train_loss {loss:.4f} train_acc {accuracy:.4f} "
                 f"({time.perf_counter() - clock:.1f}s)")
    summary = {"epochs": dict(zip(member_names(model), epochs)), "texts": texts,
               "seconds": round(time.perf_counter() - started, 3)}
    if processes.is_main:
        replace_best(run_dir, model, meta, summary)
    return summary


def with_valid_in_train(data: PreparedData) -> PreparedData:
    train, valid = data.splits["train"], data.splits["valid"]
    both = EncodedSplit(ids=np.concatenate([train.ids, valid.ids]),
                        offsets=np.concatenate([train.offsets[:-1], valid.offsets + train.offsets[-1]]),
                        targets=np.concatenate([train.targets, valid.targets]))
    return dataclasses.replace(data, splits={**data.splits, "train": both})


def member_names(model: torch.nn.Module) -> list[str]:
    return list(getattr(model, "member_names", ["model"]))


def replace_best(run_dir: Path, model: torch.nn.Module, meta: Any, summary: dict[str, Any]) -> None:
    """The refitted model takes the mix and thresholds chosen on validation and the selection's epoch and
    metrics; the selection's best.pt is kept as selected.pt (renamed before best.pt is rewritten, both atomic)."""
    checkpoints = run_dir / files.CHECKPOINTS_DIR
    selected = load_checkpoint(checkpoints / files.BEST_CHECKPOINT)
    if "mix" in selected["state_dict"]:
        with torch.no_grad():
            model.mix.copy_(selected["state_dict"]["mix"])
    os.replace(checkpoints / files.BEST_CHECKPOINT, checkpoints / files.SELECTED_CHECKPOINT)
    save_checkpoint(checkpoints / files.BEST_CHECKPOINT,
                    new_checkpoint(model, meta, epoch=selected.get("epoch"), metrics=selected.get("metrics"),
                                   thresholds=selected.get("thresholds"), refit=summary))


def restore_selected(run_dir: Path) -> None:
    """A resumed run continues from the selection: the model chosen on validation is best.pt again."""
    checkpoints = run_dir / files.CHECKPOINTS_DIR
    if (checkpoints / files.SELECTED_CHECKPOINT).is_file():
        os.replace(checkpoints / files.SELECTED_CHECKPOINT, checkpoints / files.BEST_CHECKPOINT)

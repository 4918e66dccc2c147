"""The epoch loop: train, validate, track the best epoch, stop early, stop on signals (the caller saves files)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from textclf_cli.console import EpochProgress, log
from textclf_cli.data.loader import batch_indices, clipped_lengths, collate
from textclf_cli.errors import RunError
from textclf_cli.metrics import is_better
from textclf_cli.training.scoring import validate
from textclf_cli.training.state import LoopSettings, NonFiniteLoss, StopRequested, Trainer, TrainState


def fit(trainer: Trainer, state: TrainState, on_epoch_end: Callable[[TrainState, bool], None]) -> TrainState:
    """Run epochs state.epoch+1 .. epochs; on_epoch_end(state, improved) saves files after each one."""
    settings = trainer.settings
    if state.members is not None:  # a resumed ensemble: members that had stopped stay stopped
        trainer.plain_model.stopped[:] = [member.stopped for member in state.members]
    for epoch in range(state.epoch + 1, settings.epochs + 1):
        if state.every_member_stopped() or out_of_patience(state, settings):  # a resumed run that had stopped early
            break
        row, valid = run_epoch(trainer, state, epoch)
        state.history.append(row)
        state.epoch, state.thresholds = epoch, valid.get("thresholds")
        improved = track_best(state, settings, row, valid)
        log_epoch(trainer, row, valid, improved)
        on_epoch_end(state, improved)
        if stopped_early(state, settings):
            break
    return state


def run_epoch(trainer: Trainer, state: TrainState, epoch: int) -> tuple[dict[str, float], dict]:
    """Train one epoch and validate after it: (its history row, the validation scores)."""
    settings = trainer.settings
    clock = time.perf_counter()
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    with cuda_oom_hint(trainer, f"training epoch {epoch}", f"train.batch_size (now {settings.batch_size})"):
        train_loss, train_accuracy = train_one_epoch(trainer, epoch)
    with cuda_oom_hint(trainer, f"validation after epoch {epoch}",
                       f"train.eval_batch_size (now {settings.eval_batch_size})"):
        valid = validate(trainer, state)
    if not math.isfinite(valid["loss"]):  # the last step of the epoch can break the weights after its loss
        raise NonFiniteLoss(f"the validation loss became {valid['loss']} after epoch {epoch}; nothing was saved "
                            f"from this state: lower train.lr or set train.grad_clip")
    row = {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "valid_loss": valid["loss"],
        "valid_accuracy": valid["accuracy"],
        "valid_f1_macro": valid["f1_macro"],
        **({"valid_f1_micro": valid["f1_micro"]} if "f1_micro" in valid else {}),
        "lr": trainer.optimizer.param_groups[0]["lr"],
        "seconds": round(time.perf_counter() - clock, 3),
        **gpu_memory_column(trainer.device),
    }
    return row, valid


def track_best(state: TrainState, settings: LoopSettings, row: dict[str, float], valid: dict) -> bool:
    """Whether this epoch is the new best on the monitored metric; counts the epochs without improvement."""
    value = row[settings.monitor]
    improved = is_better(settings.monitor, value, state.best_metric)
    if improved:
        state.best_metric, state.best_epoch, state.epochs_without_improvement = value, state.epoch, 0
        record_epochs_in_best(state)
    elif valid.get("member_improved"):  # an ensemble member still learning: not an epoch without improvement
        state.epochs_without_improvement = 0
    else:
        state.epochs_without_improvement += 1
    return improved


def log_epoch(trainer: Trainer, row: dict[str, float], valid: dict, improved: bool) -> None:
    extra = f" valid_f1_micro {valid['f1_micro']:.4f}" if "f1_micro" in valid else ""
    if "members" in valid:  # an ensemble: each member's own accuracy, and the weight on the network
        extra += "".join(f" {name}_acc {accuracy:.4f}" for name, accuracy in valid["members"].items())
        extra += f" mix {float(trainer.plain_model.mix):.2f}"
    log.info(
        f"epoch {row['epoch']}/{trainer.settings.epochs} train_loss {row['train_loss']:.4f} "
        f"train_acc {row['train_accuracy']:.4f} valid_loss {valid['loss']:.4f} valid_acc {valid['accuracy']:.4f} "
        f"valid_f1 {valid['f1_macro']:.4f}{extra} ({row['seconds']:.1f}s{gpu_memory_note(row)}"
        f"{', best' if improved else ''})"
    )


def stopped_early(state: TrainState, settings: LoopSettings) -> bool:
    """After an epoch: every ensemble member has stopped, or patience ran out (logged)."""
    if state.every_member_stopped():
        log.info("early stopping: every ensemble member has stopped improving")
        return True
    if out_of_patience(state, settings):
        log.info(f"early stopping: {settings.monitor} has not improved for {settings.patience} epoch(s)")
        return True
    return False


def gpu_memory_column(device: torch.device) -> dict[str, float]:
    """On CUDA, the epoch's peak GPU memory held by tensors (MB): what decides the largest batch that fits."""
    if device.type != "cuda":
        return {}
    return {"gpu_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}


def gpu_memory_note(row: dict[str, float]) -> str:
    return f", {row['gpu_memory_mb']:,.0f} MB GPU" if "gpu_memory_mb" in row else ""


def out_of_patience(state: TrainState, settings: LoopSettings) -> bool:
    return bool(settings.patience) and state.epochs_without_improvement >= settings.patience


def record_epochs_in_best(state: TrainState) -> None:
    """A new best epoch: how many epochs trained each member's weights now saved as best.pt (a stopped member
    went back to its own best epoch's weights). The refit on train + valid trains each that long."""
    for member in state.members or []:
        member.epochs_in_best = member.best_epoch if member.stopped else state.epoch


def train_one_epoch(trainer: Trainer, epoch: int) -> tuple[float, float]:
    settings, model, device = trainer.settings, trainer.model, trainer.device
    model.train()
    seed_epoch(settings.seed, epoch, trainer.processes.rank)
    batches = epoch_batches(trainer, epoch)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    with EpochProgress(len(batches), f"epoch {epoch}/{settings.epochs}") as progress:
        for number, indices in enumerate(batches, start=1):
            batch = collate(trainer.train_split, indices, settings.max_length, settings.truncate, settings.min_width)
            batch = batch.to(device, non_blocking=True)
            loss, logits = training_step(trainer, batch.token_ids, batch.lengths, batch.targets)
            check_batch(trainer, loss.item(), epoch, number)
            loss_sum += loss.detach().double() * len(indices)
            correct += count_correct(logits, batch.targets)
            seen += len(indices)
            if number % 20 == 0 or number == len(batches):
                progress.advance_to(number, f"loss {loss_sum.item() / seen:.4f} acc {correct.item() / seen:.4f}")
    totals = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), dtype=torch.float64, device=device)])
    trainer.processes.all_reduce_sum(totals)
    return float(totals[0] / totals[2]), float(totals[1] / totals[2])


def count_correct(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Examples whose predicted label is right; for multi-label (B, C) targets, whose whole label set is right
    (at the 0.5 threshold, i.e. logit > 0)."""
    if targets.dim() == 2:
        return ((logits > 0) == targets.bool()).all(dim=1).sum()
    return (logits.argmax(1) == targets).sum()


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Dropout's random stream depends only on (seed, epoch, rank): a resumed epoch replays exactly as an
    uninterrupted one, on any number of DDP processes, and the ranks draw different masks."""
    torch.manual_seed(int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]))


def check_batch(trainer: Trainer, loss: float, epoch: int, number: int) -> None:
    """Stop on a non-finite loss or a signal; under DDP the ranks decide together, so none is left waiting."""
    bad_here, stop = not math.isfinite(loss), trainer.stop.requested
    bad_anywhere, stop_anywhere = trainer.processes.any_rank(bad_here, stop is not None)
    stop = stop or ("a signal on another rank" if stop_anywhere else None)
    if bad_anywhere:
        where = f"became {loss}" if bad_here else "became non-finite on another rank"
        raise NonFiniteLoss(f"the training loss {where} at epoch {epoch}, batch {number}; nothing was saved "
                            f"from this state: lower train.lr or set train.grad_clip")
    if stop:
        raise StopRequested(stop)


@contextmanager
def cuda_oom_hint(trainer: Trainer, phase: str, batch_setting: str) -> Iterator[None]:
    """CUDA out-of-memory becomes one line saying which settings to lower (a RunError, exit 4)."""
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        raise RunError(f"CUDA out of memory on {trainer.device} during {phase}: lower {batch_setting} or "
                       f"vocab.max_length (now {trainer.settings.max_length})") from None


def epoch_batches(trainer: Trainer, epoch: int) -> list[np.ndarray]:
    settings = trainer.settings
    lengths = clipped_lengths(trainer.train_split, settings.max_length)
    batches = batch_indices(lengths, settings.batch_size, shuffle=True, seed=settings.seed, epoch=epoch,
                            chunk_batches=settings.chunk_batches)
    return trainer.processes.shard_batches(batches, epoch)


def training_step(
    trainer: Trainer, token_ids: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    amp = trainer.amp
    trainer.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(trainer.device.type, dtype=amp.dtype, enabled=amp.enabled):
        outputs = trainer.model(token_ids, lengths)
        # an ensemble returns one (B, C) per member in training: each member learns from its own loss
        members = outputs if isinstance(outputs, tuple) else (outputs,)
        loss = sum(trainer.loss_fn(member.float(), targets) for member in members)
        logits = torch.stack([member.float() for member in members]).mean(0) if len(members) > 1 else members[0]
    amp.scaler.scale(loss).backward()
    if trainer.settings.grad_clip:
        amp.scaler.unscale_(trainer.optimizer)
        # sparse embedding gradients (bag model) have no norm kernel; clipping the dense ones is what matters
        dense = [p for p in trainer.model.parameters() if p.grad is not None and not p.grad.is_sparse]
        nn.utils.clip_grad_norm_(dense, trainer.settings.grad_clip)
    amp.scaler.step(trainer.optimizer)
    amp.scaler.update()
    if trainer.scheduler is not None:
        trainer.scheduler.step()
    return loss, logits

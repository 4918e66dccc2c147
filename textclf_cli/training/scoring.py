"""Scoring the validation split after each epoch; for an ensemble also its members, which stop one by one.

An ensemble member keeps training while its own validation score improves (the monitored metric rises or its
loss falls). After train.early_stopping_patience epochs without either, it goes back to its best weights and
trains no more: the network peaks within a few epochs while the n-gram model is still converging, so one shared
stopping point cost one of them its best epoch, and a stopped network no longer costs the epochs the n-gram
model still needs. Under DDP members train to the end together (a member that skips its forward would leave
DDP waiting for its gradients).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from textclf_cli.console import log
from textclf_cli.data.prepared import EncodedSplit
from textclf_cli.metrics import classification_metrics, is_better, multilabel_metrics
from textclf_cli.serving.inference import model_logits
from textclf_cli.training.resume import weights_copy

if TYPE_CHECKING:
    from textclf_cli.training.state import LoopSettings, Trainer, TrainState


def validate(trainer: Trainer, state: TrainState) -> dict[str, Any]:
    """Loss, accuracy and macro F1 (multilabel: also micro F1 and the thresholds) over the whole validation split;
    for an ensemble also each member's accuracy under `members`.

    Under DDP each rank scores its shard and the outputs are gathered, so every rank computes the same numbers
    from the same array and takes the same early-stopping decision.
    """
    model = trainer.plain_model
    if not hasattr(model, "fit_mix"):
        return logit_metrics(gathered_logits(trainer, model, validation_shard(trainer)), trainer)
    return ensemble_metrics(trainer, state)


def validation_shard(trainer: Trainer) -> EncodedSplit:
    return trainer.processes.shard_split(trainer.valid_split)


def logit_metrics(logits: np.ndarray, trainer: Trainer) -> dict[str, Any]:
    settings, targets = trainer.settings, np.asarray(trainer.valid_split.targets)
    if settings.task == "multilabel":
        return multilabel_logit_metrics(logits, targets, settings)
    outputs = torch.log_softmax(torch.from_numpy(logits), dim=1).numpy()
    metrics = classification_metrics(targets, outputs.argmax(1), settings.labels)
    loss = float(-outputs[np.arange(len(targets)), targets].mean())
    return {"loss": loss, "accuracy": metrics["accuracy"], "f1_macro": metrics["f1_macro"]}


def multilabel_logit_metrics(logits: np.ndarray, targets: np.ndarray, settings: LoopSettings) -> dict[str, Any]:
    """BCE loss, subset accuracy, macro and micro F1 at this epoch's thresholds (tuned here when per_label)."""
    from textclf_cli.serving.multilabel import bce_loss, decide, sigmoid, thresholds_for

    probabilities = sigmoid(logits)
    thresholds = thresholds_for(settings.threshold, probabilities, targets)
    metrics = multilabel_metrics(targets, decide(probabilities, thresholds), settings.labels)
    return {"loss": bce_loss(logits, targets), "accuracy": metrics["subset_accuracy"], "f1_macro": metrics["f1_macro"],
            "f1_micro": metrics["f1_micro"], "thresholds": thresholds.tolist()}


def gathered_logits(trainer: Trainer, model: nn.Module, split: EncodedSplit) -> np.ndarray:
    """(N, C) raw outputs of `model` over the whole validation split: this rank scores its shard, all gather."""
    settings = trainer.settings
    logits = model_logits(model, split, settings.max_length, settings.truncate, settings.eval_batch_size,
                          trainer.device, trainer.amp.dtype if trainer.amp.enabled else None)
    # an empty shard comes back (0, 0); the gather needs (0, C)
    return trainer.processes.gather_rows(logits.reshape(len(split), len(settings.labels)), len(trainer.valid_split))


def ensemble_metrics(trainer: Trainer, state: TrainState) -> dict[str, Any]:
    """Score each member, stop the members out of patience (restoring their best weights), refit the mix on
    validation (accuracy, then loss; multi-label: loss) and score the mixed logits. All ranks fit on the same
    gathered member logits, so all take the same mix."""
    model, settings, device = trainer.plain_model, trainer.settings, trainer.device
    split = validation_shard(trainer)
    member_logits, member_scores, any_improved = [], [], False
    run = trainer.ensemble
    for index, member in enumerate(model.members):
        logits = run.frozen_logits.get(index)
        if logits is None:
            logits = gathered_logits(trainer, member, split)
        scores = logit_metrics(logits, trainer)
        if not model.stopped[index] and settings.members_stop_apart and settings.patience:
            if review_member(trainer, state, index, scores):
                any_improved = True
            elif model.stopped[index]:  # out of patience just now: score the weights it went back to
                logits = gathered_logits(trainer, member, split)
                scores = logit_metrics(logits, trainer)
        if model.stopped[index]:  # its weights no longer change: score it once
            run.frozen_logits[index] = logits
        member_logits.append(logits)
        member_scores.append(scores)
    for member_state, stopped in zip(state.members, model.stopped):
        member_state.stopped = stopped
    network, ngram = (torch.from_numpy(logits).to(device) for logits in member_logits)
    targets = torch.as_tensor(np.array(trainer.valid_split.targets), device=device)
    mix = model.fit_mix([network, ngram], targets, trainer.loss_fn, by_accuracy=settings.task != "multilabel")
    metrics = logit_metrics((mix * network + (1 - mix) * ngram).cpu().numpy(), trainer)
    metrics["members"] = {name: scores["accuracy"] for name, scores in zip(model.member_names, member_scores)}
    metrics["member_improved"] = any_improved  # the ensemble is still learning, whatever its own metric says
    return metrics


def review_member(trainer: Trainer, state: TrainState, index: int, scores: dict[str, Any]) -> bool:
    """Whether member `index` improved this epoch (then its weights are kept as its best); out of patience
    (train.early_stopping_patience epochs without improving), it goes back to its best weights and stops."""
    model, settings, epoch = trainer.plain_model, trainer.settings, state.epoch + 1
    member, own = model.members[index], state.members[index]
    if improved(scores, own.best, settings.monitor):
        own.best = best_of(scores, own.best, settings.monitor)
        own.best_epoch, own.epochs_without_improvement = epoch, 0
        trainer.ensemble.best_weights[index] = weights_copy(member)
        return True
    own.epochs_without_improvement += 1
    if own.epochs_without_improvement >= settings.patience:
        member.load_state_dict(trainer.ensemble.best_weights.pop(index))
        model.stopped[index] = True
        log.info(f"ensemble member {model.member_names[index]} stopped improving: back to its weights of epoch "
                 f"{own.best_epoch}, trained no further")
    return False


def improved(scores: dict[str, Any], best: dict[str, float] | None, monitor: str) -> bool:
    """A member improves while its monitored metric rises or its loss falls (either is enough: on a few hundred
    validation texts accuracy moves by single texts while the loss still says the member is learning)."""
    if best is None:
        return True
    return is_better(monitor, monitored(scores, monitor), best["metric"]) or scores["loss"] < best["loss"]


def best_of(scores: dict[str, Any], best: dict[str, float] | None, monitor: str) -> dict[str, float]:
    metric = monitored(scores, monitor)
    if best is None:
        return {"metric": metric, "loss": scores["loss"]}
    return {"metric": metric if is_better(monitor, metric, best["metric"]) else best["metric"],
            "loss": min(scores["loss"], best["loss"])}


def monitored(scores: dict[str, Any], monitor: str) -> float:
    """A member's value of train.monitor (valid_accuracy -> scores["accuracy"])."""
    return scores[monitor.removeprefix("valid_")]

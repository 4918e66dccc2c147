"""Optimizer, learning-rate schedule and loss built from the train section of the config."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from textclf_cli.config import TrainConfig


def build_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    from textclf_cli.models.build import param_groups

    params = param_groups(model, train.lr, train.weight_decay)
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    if train.optimizer == "adagrad":  # handles sparse embedding gradients (the bag model) and dense ones alike
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        return torch.optim.Adagrad(params, lr=train.lr, weight_decay=train.weight_decay)
    adam = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
    try:  # one fused kernel per step: much faster steps on CPU (the n-gram table holds millions of weights)
        return adam(params, lr=train.lr, weight_decay=train.weight_decay, fused=True)
    except (RuntimeError, TypeError):  # torch < 2.4 fuses on CUDA only; MPS and others may not fuse at all
        return adam(params, lr=train.lr, weight_decay=train.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, train: TrainConfig, batches_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """Per-batch schedule: linear warm-up over warmup_epochs, then constant, linear or cosine decay to 0."""
    if train.scheduler == "none" and train.warmup_epochs == 0:
        return None
    total = max(1, train.epochs * batches_per_epoch)
    warmup = int(train.warmup_epochs * batches_per_epoch)
    kind = train.scheduler

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if kind == "linear":
            return 1.0 - progress
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_loss(class_weights: str, targets: np.ndarray, num_classes: int) -> nn.Module:
    if class_weights == "none":
        return nn.CrossEntropyLoss()
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(targets)
    weights = np.ones(num_classes, dtype=np.float32)
    weights[present] = compute_class_weight("balanced", classes=present, y=targets)
    return nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))


class MultiLabelLoss(nn.Module):
    """BCE-with-logits over (B, C) logits and (B, C) 0/1 targets (stored as uint8, so cast here)."""

    def __init__(self, pos_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.bce(logits, targets.to(logits.dtype))


def build_multilabel_loss(pos_weight: str, targets: np.ndarray) -> nn.Module:
    """`balanced` weighs each label's positives by negatives/positives in train, so rare labels still count."""
    if pos_weight == "none":
        return MultiLabelLoss()
    positives = targets.sum(axis=0, dtype=np.float64)
    weights = (len(targets) - positives) / np.maximum(positives, 1.0)
    return MultiLabelLoss(torch.tensor(np.maximum(weights, 1e-3), dtype=torch.float32))

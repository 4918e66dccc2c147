"""Batched, length-sorted forward passes that return logits or log-probabilities in the original example order."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from textclf_cli.data.loader import batch_indices, clipped_lengths, collate
from textclf_cli.data.prepared import EncodedSplit
from textclf_cli.models.build import min_width


def log_probabilities(
    model: nn.Module,
    split: EncodedSplit,
    max_length: int,
    truncate: str,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """(N, C) float32 log-softmax outputs, row i for example i of `split`."""
    logits = model_logits(model, split, max_length, truncate, batch_size, device, autocast_dtype)
    return torch.log_softmax(torch.from_numpy(logits), dim=1).numpy()


@torch.inference_mode()
def model_logits(
    model: nn.Module,
    split: EncodedSplit,
    max_length: int,
    truncate: str,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """(N, C) float32 raw model outputs, row i for example i of `split`."""
    was_training = model.training
    model.eval()
    num_classes = None
    outputs: list[tuple[np.ndarray, torch.Tensor]] = []
    lengths = clipped_lengths(split, max_length)
    for indices in batch_indices(lengths, batch_size, shuffle=False):
        batch = collate(split, indices, max_length, truncate, min_width(model)).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(batch.token_ids, batch.lengths)
        outputs.append((indices, logits.float().cpu()))
        num_classes = logits.size(1)
    model.train(was_training)
    result = np.zeros((len(split), num_classes or 0), dtype=np.float32)
    for indices, values in outputs:
        result[indices] = values.numpy()
    return result

"""A model whose logits are divided by the temperature fitted on validation, so its probabilities are calibrated."""

from __future__ import annotations

import torch
from torch import nn


class TemperatureScaled(nn.Module):
    """logits / temperature: what a loaded checkpoint predicts with, so predict, evaluate and the export
    (whose graph then holds the division) all give the calibrated probabilities."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model = model
        self.temperature = float(temperature)
        self.min_width = int(getattr(model, "min_width", 1))

    def forward(self, token_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model(token_ids, lengths) / self.temperature

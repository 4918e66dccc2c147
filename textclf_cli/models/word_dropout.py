"""Word dropout: drop whole word vectors during training, so no single word (a name, a title) carries a text."""

from __future__ import annotations

import torch
from torch import nn


class WordDropout(nn.Module):
    """(B, T, E) -> (B, T, E): each position's vector is zeroed with probability p and the rest scaled by 1/(1-p)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return embedded
        keep = torch.empty(embedded.shape[:2] + (1,), device=embedded.device).bernoulli_(1 - self.p)
        return embedded * (keep / (1 - self.p)).to(embedded.dtype)

"""Two model families side by side: a network (CNN or LSTM) and an n-gram logistic regression.

Each member trains on its own loss, as if alone: the network overfits within a few epochs while the linear
member is still converging, and a shared loss would let the faster one starve the other. Predictions mix
the members' logits, `mix * network + (1 - mix) * ngram`; after every epoch `mix` is refitted to the
validation data (models that differ in calibration need unequal weights), and it is saved with the weights.
The mix is chosen by validation accuracy, the loss breaking ties: an overconfident network (train accuracy near
perfect) drags the loss-optimal mix towards itself, at a cost in accuracy.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

MIX_GRID = torch.linspace(0.0, 1.0, 21)


class Ensemble(nn.Module):
    def __init__(self, network: nn.Module, ngram: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.ngram = ngram
        self.min_width = max(getattr(network, "min_width", 1), getattr(ngram, "min_width", 1))
        self.register_buffer("mix", torch.tensor(0.5))
        self.stopped = [False, False]  # members whose training has ended (the loop decides, validation.py)

    @property
    def members(self) -> list[nn.Module]:
        return [self.network, self.ngram]

    @property
    def member_names(self) -> list[str]:
        return ["network", "ngram"]

    def forward(self, token_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.training:  # (B, C) for each member still training; the loop sums one loss per member
            return tuple(member(token_ids, lengths) for member, stopped in zip(self.members, self.stopped)
                         if not stopped)
        network, ngram = self.network(token_ids, lengths), self.ngram(token_ids, lengths)
        return self.mix * network.float() + (1 - self.mix) * ngram.float()

    @torch.no_grad()
    def fit_mix(self, member_logits: list[torch.Tensor], targets: torch.Tensor,
                loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], by_accuracy: bool = True) -> float:
        """Set mix to the grid value with the best validation accuracy (then loss); by_accuracy=False (multi-label,
        where thresholds decide) uses the loss alone. Returns the mix."""
        network, ngram = (logits.float() for logits in member_logits)
        scores = []
        for mix in MIX_GRID:
            mixed = mix * network + (1 - mix) * ngram
            accuracy = float((mixed.argmax(1) == targets).float().mean()) if by_accuracy else 0.0
            scores.append((-accuracy, float(loss_fn(mixed, targets))))
        self.mix.fill_(float(MIX_GRID[min(range(len(scores)), key=scores.__getitem__)]))
        return float(self.mix)

"""(Bi)LSTM classifier on padded, length-bucketed batches whose padding never reaches the result.

Packed sequences keep padding out too, but their backward pass is much slower on CPU. Here the backward
direction runs on each text reversed within its own length, so pads always come after the real tokens
in both directions and never flow into the states read at positions < length.
"""

from __future__ import annotations

import torch
from torch import nn

from textclf_cli.models.embedding_init import init_embedding
from textclf_cli.models.word_dropout import WordDropout


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, D): reverse each x[b, :lengths[b]] in place of itself; positions >= length stay put."""
    positions = torch.arange(x.size(1), device=x.device)[None, :]  # (1, T)
    flipped = lengths[:, None] - 1 - positions
    index = torch.where(flipped >= 0, flipped, positions)  # (B, T)
    return x.gather(1, index[:, :, None].expand_as(x))


class LSTMClassifier(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embedding_dim: int = 128,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.5,
        pooling: str = "last",
        word_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.bidirectional = bidirectional
        self.pooling = pooling
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        init_embedding(self.embedding)
        self.word_dropout = WordDropout(word_dropout)
        directions = 2 if bidirectional else 1
        self.forward_layers = nn.ModuleList()
        self.backward_layers = nn.ModuleList()
        for layer in range(num_layers):
            input_size = embedding_dim if layer == 0 else hidden_size * directions
            self.forward_layers.append(nn.LSTM(input_size, hidden_size, batch_first=True))
            if bidirectional:
                self.backward_layers.append(nn.LSTM(input_size, hidden_size, batch_first=True))
        self.dropout = nn.Dropout(dropout)
        per_state = 2 if pooling == "max_mean" else 1
        self.classifier = nn.Linear(hidden_size * directions * per_state, num_classes)

    def forward(self, token_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.word_dropout(self.embedding(token_ids)))  # (B, T) -> (B, T, E)
        for index, forward_lstm in enumerate(self.forward_layers):
            if index > 0:
                x = self.dropout(x)
            outputs, _ = forward_lstm(x)  # (B, T, H)
            if self.bidirectional:
                backward_out, _ = self.backward_layers[index](reverse_within_length(x, lengths))
                outputs = torch.cat([outputs, reverse_within_length(backward_out, lengths)], dim=2)  # (B, T, 2H)
            x = outputs
        return self.classifier(self.dropout(self._pool(x, lengths)))

    def _pool(self, outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.pooling == "last":
            return self._final_states(outputs, lengths)
        valid = torch.arange(outputs.size(1), device=outputs.device)[None, :] < lengths[:, None]  # (B, T)
        maxed = outputs.masked_fill(~valid[:, :, None], float("-inf")).amax(dim=1)
        if self.pooling == "max":
            return maxed
        mean = outputs.masked_fill(~valid[:, :, None], 0.0).sum(1) / lengths[:, None].to(outputs.dtype)
        return mean if self.pooling == "mean" else torch.cat([maxed, mean], dim=1)

    def _final_states(self, outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # forward direction ends at the last real token; backward direction ends at position 0
        last = (lengths - 1)[:, None, None].expand(-1, 1, outputs.size(2))
        forward_final = outputs.gather(1, last).squeeze(1)  # (B, D)
        if not self.bidirectional:
            return forward_final
        hidden = outputs.size(2) // 2
        return torch.cat([forward_final[:, :hidden], outputs[:, 0, hidden:]], dim=1)

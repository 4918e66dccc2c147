"""fastText-style classifier: the mean of word and hashed word-n-gram embeddings, then linear."""

from __future__ import annotations

import torch
from torch import nn

HASH_MULTIPLIER = 1_000_003  # an odd prime keeps (a, b) and (b, a) apart


class BagOfNgrams(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embedding_dim: int = 32,
        ngrams: int = 2,
        buckets: int = 1_000_000,
        dropout: float = 0.0,
        sparse: bool = False,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.ngrams = ngrams
        self.buckets = buckets
        # id 0 is padding and is left out of the mean, for words and n-grams alike
        self.embedding = nn.EmbeddingBag(vocab_size + buckets, embedding_dim, mode="mean", padding_idx=0,
                                      sparse=sparse)  # sparse: each step touches only the rows it used
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def forward(self, token_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        features = [token_ids] + [self.ngram_ids(token_ids, lengths, n) for n in range(2, self.ngrams + 1)]
        bag = self.embedding(torch.cat(features, dim=1))  # (B, T + (T-1) + ...) -> (B, E)
        return self.classifier(self.dropout(bag))

    def ngram_ids(self, token_ids: torch.Tensor, lengths: torch.Tensor, n: int) -> torch.Tensor:
        """(B, T) -> (B, T - n + 1) embedding row of the n-gram starting at each position, 0 (padding) past the end."""
        width = token_ids.size(1) - n + 1
        if width <= 0:
            return token_ids.new_zeros((token_ids.size(0), 0))
        hashed = token_ids[:, :width].clone()
        for offset in range(1, n):
            hashed = hashed * HASH_MULTIPLIER + token_ids[:, offset: offset + width]
        ids = hashed.remainder(self.buckets) + self.vocab_size
        valid = torch.arange(width, device=token_ids.device)[None, :] < (lengths - n + 1)[:, None]
        return ids.masked_fill(~valid, 0)  # (B, T - n + 1)

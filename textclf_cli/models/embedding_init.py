"""Weight initialisation shared by the model families."""

from __future__ import annotations

from torch import nn

EMBEDDING_INIT_SCALE = 0.05


def init_embedding(embedding: nn.Embedding | nn.EmbeddingBag, scale: float = EMBEDDING_INIT_SCALE) -> None:
    """Small uniform vectors (Keras' default) instead of torch's N(0, 1): Adam moves every weight by about
    lr per step, so unit-variance vectors take epochs to carry signal; small ones learn from the first batch."""
    nn.init.uniform_(embedding.weight, -scale, scale)
    if embedding.padding_idx is not None:
        embedding.weight.data[embedding.padding_idx].zero_()

"""export.py pieces: the ONNX-friendly EmbeddingBag."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from textclf_cli.export import DenseEmbeddingBag


@pytest.mark.parametrize("mode", ["mean", "sum", "max"])
def test_dense_embedding_bag_equals_embedding_bag(mode: str) -> None:
    torch.manual_seed(0)
    bag = nn.EmbeddingBag(50, 6, mode=mode, padding_idx=0)
    ids = torch.tensor([[3, 4, 0, 0], [0, 0, 0, 0], [7, 7, 7, 9], [1, 0, 2, 0]])  # row 1: padding only
    torch.testing.assert_close(DenseEmbeddingBag(bag)(ids), bag(ids), rtol=0, atol=1e-6)


"""Kim (2014) TextCNN: embedding, parallel convolutions, max-over-time pooling, dropout, linear."""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from textclf_cli.models.init import init_embedding
from textclf_cli.models.word_dropout import WordDropout


class TextCNN(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embedding_dim: int = 128,
        num_filters: int = 100,
        filter_sizes: list[int] | tuple[int, ...] = (3, 4, 5),
        dropout: float = 0.5,
        pooling: str = "max",
        word_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.filter_sizes = list(filter_sizes)
        self.pooling = pooling
        self.min_width = max(self.filter_sizes)
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        init_embedding(self.embedding)
        self.word_dropout = WordDropout(word_dropout)
        self.convs = nn.ModuleList(nn.Conv1d(embedding_dim, num_filters, k) for k in self.filter_sizes)
        self.dropout = nn.Dropout(dropout)
        per_filter = 2 if pooling == "max_mean" else 1
        self.classifier = nn.Linear(num_filters * len(self.filter_sizes) * per_filter, num_classes)

    def forward(self, token_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if token_ids.size(1) < self.min_width:  # the loader pads to min_width; direct callers may not (0 = <pad>)
            token_ids = nn.functional.pad(token_ids, (0, self.min_width - token_ids.size(1)), value=0)
        embedded = self.word_dropout(self.embedding(token_ids))  # (B, T) -> (B, T, E)
        # The same memory seen as (B, E, 1, T) is a channels-last image, so a 2-D convolution with a 1 x k
        # kernel reads the embeddings as they lie: no transpose copy and no oneDNN layout reorders
        # (measured 2x faster than Conv1d on a contiguous (B, E, T) copy, in fp32 and bf16 alike).
        planes = embedded.unsqueeze(1).permute(0, 3, 1, 2)  # (B, T, E) -> (B, E, 1, T)
        features = [
            self._pool(F.conv2d(planes, conv.weight.unsqueeze(2), conv.bias).squeeze(2), lengths, k)  # (B, F, T')
            for conv, k in zip(self.convs, self.filter_sizes)
        ]
        return self.classifier(self.dropout(torch.cat(features, dim=1)))  # (B, F * n) -> (B, C)

    def _pool(self, conv_out: torch.Tensor, lengths: torch.Tensor, width: int) -> torch.Tensor:
        # (B, F, T') is a view of channels-last memory; pooling over its time axis reads it as (B, T', F),
        # so the reductions run along contiguous rows (measured 2.5-4x faster than reducing the strided view).
        activated = conv_out.transpose(1, 2).relu_()  # (B, T', F); in place: the conv output is not used again
        # Only windows that start inside the text count, so extra batch padding never changes the result;
        # a text shorter than the filter keeps its first window (text + pad zeros).
        valid_lengths = (lengths - width + 1).clamp(min=1)  # (B,) >= 1
        positions = torch.arange(activated.size(1), device=activated.device)
        valid = positions[None, :] < valid_lengths[:, None]  # (B, T')
        # Windows before the batch's shortest text end are valid in every row, so only the tail is masked
        # (the masking multiply was the costliest pooling step; 1.5x faster fp32 inference, same outputs).
        # A traced export (ONNX, TorchScript) or torch.compile must not bake one batch's value in: mask all there.
        # (torch.compiler.is_compiling imports torch._dynamo, ~0.6 s of a cold predict; compiling has imported it)
        fixed_graph = torch.jit.is_tracing() or ("torch._dynamo" in sys.modules and torch.compiler.is_compiling())
        head = 1 if fixed_graph else int(valid_lengths.min())
        pooled = activated[:, :head].amax(dim=1)  # (B, F)
        if head < activated.size(1):  # relu >= 0, so 0 is neutral for max
            pooled = torch.maximum(pooled, (activated[:, head:] * valid[:, head:, None].to(activated.dtype)).amax(dim=1))
        if self.pooling != "max_mean":
            return pooled
        # the masked sum as a batched matmul: (B, 1, T') @ (B, T', F), accumulated in fp32 even under bf16
        total = torch.bmm(valid.to(activated.dtype)[:, None, :], activated).squeeze(1).float()  # (B, F)
        return torch.cat([pooled.float(), total / valid_lengths[:, None]], dim=1)

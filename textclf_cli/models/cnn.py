"""Kim (2014) TextCNN: embedding, parallel convolutions, max-over-time pooling, dropout, linear."""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from textclf_cli.models.embedding_init import init_embedding
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
        # kernel reads the embeddings as they lie: no transpose copy and no oneDNN layout reorders, which made
        # Conv1d on a contiguous (B, E, T) copy slower in fp32 and bf16 alike.
        planes = embedded.unsqueeze(1).permute(0, 3, 1, 2)  # (B, T, E) -> (B, E, 1, T)
        features = [
            self._pool(F.conv2d(planes, conv.weight.unsqueeze(2), conv.bias), lengths, k)  # (B, F, 1, T')
            for conv, k in zip(self.convs, self.filter_sizes)
        ]
        return self.classifier(self.dropout(torch.cat(features, dim=1)))  # (B, F * n) -> (B, C)

    def _pool(self, conv_out: torch.Tensor, lengths: torch.Tensor, width: int) -> torch.Tensor:
        """(B, F, 1, T') channels-last conv output -> relu-then-max over the windows inside each text (B, F); with
        max_mean, then the mean of the relu'd windows too (B, 2F).

        Only windows that start inside the text count, so extra batch padding never changes the result; a text
        shorter than the filter keeps its first window (text + pad zeros). relu and max commute, and 0 is neutral
        once relu follows, so the other windows are zeroed and one global max pool reads the channels-last memory
        as it lies, faster than amax over time (most of all in bf16, whose CPU reduction is not vectorized).
        """
        valid_lengths = (lengths - width + 1).clamp(min=1)  # (B,) >= 1
        positions = torch.arange(conv_out.size(3), device=conv_out.device)
        valid = positions[None, :] < valid_lengths[:, None]  # (B, T')
        # Windows before the batch's shortest text end are valid in every row, so only the tail is zeroed.
        # A traced export (ONNX, TorchScript) or torch.compile must not bake one batch's value in: mask all there.
        # (torch.compiler.is_compiling imports torch._dynamo, slow on a cold predict; compiling has imported it)
        fixed_graph = torch.jit.is_tracing() or ("torch._dynamo" in sys.modules and torch.compiler.is_compiling())
        if fixed_graph:  # out of place: a traced slice assignment exports as ScatterND, slow in onnxruntime
            conv_out = conv_out * valid[:, None, None, :].to(conv_out.dtype)
        elif (head := int(valid_lengths.min())) < conv_out.size(3):  # in place: the conv's backward needs no output
            conv_out[..., head:].mul_(valid[:, None, None, head:].to(conv_out.dtype))
        pooled = F.adaptive_max_pool2d(conv_out, 1).flatten(1).relu()  # (B, F)
        if self.pooling != "max_mean":
            return pooled
        # (B, F, 1, T') seen as (B, T', F): contiguous rows, faster to reduce than the strided view. The
        # masked sum as a batched matmul (B, 1, T') @ (B, T', F), accumulated in fp32 even under bf16.
        activated = conv_out.squeeze(2).transpose(1, 2).relu()  # not in place: the max pool's backward reads it
        total = torch.bmm(valid.to(activated.dtype)[:, None, :], activated).squeeze(1).float()  # (B, F)
        return torch.cat([pooled.float(), total / valid_lengths[:, None]], dim=1)

"""Raw texts -> EncodedSplit through a model's own tokenizer and vocabulary, at once or streamed; no torch here, so
predicting from an exported ONNX model never imports it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np

from textclf_cli.data.prepared import EncodedSplit
from textclf_cli.data.text import ChunkTokenizer, TokenizerSettings, encode_chunk, tokenize_and_encode
from textclf_cli.data.vocab import token_index


def encode_texts(texts: list[str], tokenizer: TokenizerSettings, vocab: list[str],
                 targets: np.ndarray | None = None) -> EncodedSplit:
    """Raw texts -> an EncodedSplit, through the same tokenizer and vocabulary a model was trained with."""
    ids, offsets = tokenize_and_encode(texts, tokenizer, token_index(vocab))
    if targets is None:
        targets = np.zeros(len(texts), dtype=np.int64)
    return EncodedSplit(ids, offsets, targets)


Chunk = TypeVar("Chunk")


def encode_stream(chunks: Iterable[Chunk], tokenizer: TokenizerSettings, vocab: list[str]
                  ) -> Iterator[tuple[Chunk, EncodedSplit]]:
    """(chunk, its EncodedSplit) for each chunk of texts (a list, or anything with a `texts` list), in order.

    Worker processes tokenize the next chunks while the caller runs the model on this one; only a few chunks
    are held at a time, so a file of any length streams through in bounded memory.
    """
    with ChunkTokenizer(tokenizer, token_index(vocab)) as pool:
        for chunk, (ids, lengths) in pool.map(encode_chunk, chunks):
            offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            yield chunk, EncodedSplit(ids, offsets, np.zeros(len(lengths), dtype=np.int64))

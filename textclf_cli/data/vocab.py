"""Frequency-ordered vocabulary with <pad>=0 and <unk>=1, token counting across chunks, token -> id encoding."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


def vocab_from_counts(counts: Mapping[str, int], max_size: int, min_freq: int) -> list[str]:
    """The id -> token list: specials first, then tokens by falling count (ties alphabetical)."""
    frequent = sorted((token for token, n in counts.items() if n >= min_freq and token not in (PAD, UNK)),
                      key=lambda t: (-counts[t], t))
    return [PAD, UNK] + frequent[: max(0, max_size - 2)]


class TokenCounts:
    """Every distinct token seen so far, under a provisional id (first-seen order), and how often each occurred
    in the counted (training) texts.

    Chunks tokenized apart, in worker processes, merge here; `remap` then turns provisional ids into final ones.
    The final vocabulary depends only on the counts, so it is the same however the texts were chunked.
    """

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.counts = np.zeros(1024, dtype=np.int64)

    def merge(self, tokens: list[str], local_ids: np.ndarray, local_counts: np.ndarray | None) -> np.ndarray:
        """Provisional ids (int32) for a chunk's local ids; its counts are added unless None (not counted)."""
        index = self.index
        mapping = np.fromiter((index.setdefault(token, len(index)) for token in tokens), dtype=np.int32,
                              count=len(tokens))
        if local_counts is not None:
            if len(index) > len(self.counts):
                self.counts = np.concatenate([self.counts, np.zeros(len(index) + len(self.counts), np.int64)])
            self.counts[mapping] += local_counts  # the tokens of one chunk are distinct, so no index repeats
        return mapping[local_ids]

    def subtract(self, provisional_ids: np.ndarray) -> None:
        """Uncount these tokens (texts moved out of the training split)."""
        found = np.bincount(provisional_ids, minlength=len(self.counts))
        self.counts -= found[: len(self.counts)]

    def vocabulary(self, max_size: int, min_freq: int) -> list[str]:
        tokens = list(self.index)
        counts = self.counts[: len(tokens)]
        frequent = {tokens[i]: int(counts[i]) for i in np.flatnonzero(counts >= min_freq)}
        return vocab_from_counts(frequent, max_size, min_freq)

    def remap(self, vocab: list[str]) -> np.ndarray:
        """provisional id -> final id (int32): the vocabulary's index, <unk> for every other token."""
        remap = np.full(max(1, len(self.index)), UNK_ID, dtype=np.int32)
        for final_id, token in enumerate(vocab):
            provisional = self.index.get(token)
            if provisional is not None:
                remap[provisional] = final_id
        return remap


def token_index(vocab: list[str]) -> dict[str, int]:
    return {token: index for index, token in enumerate(vocab)}


def encode(token_lists: list[list[str]], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Flat int32 ids of all texts and int64 offsets (n + 1): text i is ids[offsets[i]:offsets[i+1]]."""
    lengths = np.fromiter((len(tokens) for tokens in token_lists), dtype=np.int64, count=len(token_lists))
    offsets = np.zeros(len(token_lists) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    get = index.get
    ids = np.fromiter(
        (get(token, UNK_ID) for tokens in token_lists for token in tokens), dtype=np.int32, count=int(offsets[-1])
    )
    return ids, offsets

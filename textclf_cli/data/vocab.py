"""Frequency-ordered vocabulary with <pad>=0 and <unk>=1, and token -> id encoding."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


def build_vocab(token_lists: Iterable[list[str]], max_size: int, min_freq: int) -> list[str]:
    """The id -> token list: specials first, then tokens by falling count (ties alphabetical)."""
    counts: Counter[str] = Counter()
    for tokens in token_lists:
        counts.update(tokens)
    counts.pop(PAD, None)
    counts.pop(UNK, None)
    frequent = sorted((token for token, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
    return [PAD, UNK] + frequent[: max(0, max_size - 2)]


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

"""data/vocab.py: specials first, frequency order with alphabetical ties, min_freq, max_size (through TokenCounts,
as prepare counts), flat encoding."""

from __future__ import annotations

import numpy as np

from textclf_cli.data.vocab import PAD, PAD_ID, UNK, UNK_ID, TokenCounts, encode, token_index

TEXTS = [["b", "a", "b", "c"], ["c", "b", "d"], ["a", "e"]]  # b 3, a 2, c 2, d 1, e 1


def counted_vocab(token_lists: list[list[str]], max_size: int, min_freq: int) -> list[str]:
    """The vocabulary prepare builds: each text merged into TokenCounts as its own chunk, as count_chunk hands it."""
    counts = TokenCounts()
    for tokens in token_lists:
        distinct = list(dict.fromkeys(tokens))
        local_ids = np.array([distinct.index(token) for token in tokens], dtype=np.int32)
        counts.merge(distinct, local_ids, np.bincount(local_ids, minlength=len(distinct)).astype(np.int64))
    return counts.vocabulary(max_size, min_freq)


def test_specials_come_first() -> None:
    vocab = counted_vocab(TEXTS, max_size=100, min_freq=1)
    assert vocab[:2] == [PAD, UNK] and (PAD_ID, UNK_ID) == (0, 1)


def test_frequency_order_with_alphabetical_ties() -> None:
    assert counted_vocab(TEXTS, max_size=100, min_freq=1) == [PAD, UNK, "b", "a", "c", "d", "e"]


def test_min_freq_drops_rare_tokens() -> None:
    assert counted_vocab(TEXTS, max_size=100, min_freq=2) == [PAD, UNK, "b", "a", "c"]
    assert counted_vocab(TEXTS, max_size=100, min_freq=4) == [PAD, UNK]


def test_max_size_counts_the_specials() -> None:
    assert counted_vocab(TEXTS, max_size=4, min_freq=1) == [PAD, UNK, "b", "a"]
    assert counted_vocab(TEXTS, max_size=3, min_freq=1) == [PAD, UNK, "b"]


def test_special_strings_in_the_text_are_not_added_twice() -> None:
    vocab = counted_vocab([["<pad>", "<unk>", "x", "<unk>"]], max_size=100, min_freq=1)
    assert vocab == [PAD, UNK, "x"]


def test_order_does_not_depend_on_input_order() -> None:
    assert counted_vocab(TEXTS, 100, 1) == counted_vocab(list(reversed(TEXTS)), 100, 1)


def test_encode_flat_ids_and_offsets() -> None:
    vocab = [PAD, UNK, "b", "a"]
    ids, offsets = encode([["a", "b", "zzz"], [], ["b"]], token_index(vocab))
    assert ids.dtype == np.int32 and offsets.dtype == np.int64
    assert ids.tolist() == [3, 2, UNK_ID, 2]
    assert offsets.tolist() == [0, 3, 3, 4]
    assert [ids[offsets[i]:offsets[i + 1]].tolist() for i in range(3)] == [[3, 2, 1], [], [2]]


def test_encode_nothing() -> None:
    ids, offsets = encode([], token_index([PAD, UNK]))
    assert ids.tolist() == [] and offsets.tolist() == [0]

"""data/loader.py: length-bucketed, seeded batch order; padding, minimum width, truncation, empty texts."""

from __future__ import annotations

import numpy as np
import pytest

from textclf_cli.data.loader import WIDTH_MULTIPLE, batch_indices, clipped_lengths, collate
from textclf_cli.data.prepared import EncodedSplit, truncate_ids
from textclf_cli.data.vocab import PAD_ID


def make_split(texts: list[list[int]]) -> EncodedSplit:
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(text) for text in texts], out=offsets[1:])
    ids = np.array([token for text in texts for token in text], dtype=np.int32)
    return EncodedSplit(ids, offsets, np.arange(len(texts), dtype=np.int64) % 3)


LENGTHS = np.random.default_rng(0).integers(1, 60, size=103)


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("chunk_batches", [1, 3, 50])
def test_every_index_exactly_once_per_epoch(shuffle: bool, chunk_batches: int) -> None:
    batches = batch_indices(LENGTHS, batch_size=8, shuffle=shuffle, seed=1, epoch=2, chunk_batches=chunk_batches)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(LENGTHS)))
    assert all(1 <= len(batch) <= 8 for batch in batches)


def test_same_seed_and_epoch_same_order() -> None:
    first = batch_indices(LENGTHS, 8, shuffle=True, seed=5, epoch=3, chunk_batches=2)
    again = batch_indices(LENGTHS, 8, shuffle=True, seed=5, epoch=3, chunk_batches=2)
    assert [batch.tolist() for batch in first] == [batch.tolist() for batch in again]


@pytest.mark.parametrize(("seed", "epoch"), [(5, 4), (6, 3)])
def test_other_epoch_or_seed_other_order(seed: int, epoch: int) -> None:
    base = batch_indices(LENGTHS, 8, shuffle=True, seed=5, epoch=3, chunk_batches=2)
    other = batch_indices(LENGTHS, 8, shuffle=True, seed=seed, epoch=epoch, chunk_batches=2)
    assert np.concatenate(base).tolist() != np.concatenate(other).tolist()


def test_batches_hold_similar_lengths() -> None:
    # one chunk covers everything: each batch is a contiguous run of the length-sorted examples
    batches = batch_indices(LENGTHS, 8, shuffle=True, seed=0, epoch=1, chunk_batches=1000)
    spans = sorted((LENGTHS[batch].min(), LENGTHS[batch].max()) for batch in batches)
    assert all(high <= next_low for (_, high), (next_low, _) in zip(spans, spans[1:]))


def test_evaluation_order_is_sorted_by_length() -> None:
    batches = batch_indices(LENGTHS, 8, shuffle=False)
    flat = np.concatenate(batches)
    assert LENGTHS[flat].tolist() == sorted(LENGTHS.tolist())


def rows_of(batch, width: int) -> list[list[int]]:
    """The first `width` columns; asserts the batch is a multiple of WIDTH_MULTIPLE wide and pad beyond."""
    assert batch.token_ids.shape[1] % WIDTH_MULTIPLE == 0 and batch.token_ids.shape[1] >= width
    assert (batch.token_ids[:, width:] == PAD_ID).all()
    return batch.token_ids[:, :width].tolist()


def test_collate_pads_after_each_text() -> None:
    split = make_split([[5, 6, 7], [8], [9, 10]])
    batch = collate(split, np.array([0, 1, 2]), max_length=10)
    assert rows_of(batch, 3) == [[5, 6, 7], [8, PAD_ID, PAD_ID], [9, 10, PAD_ID]]
    assert batch.lengths.tolist() == [3, 1, 2]
    assert batch.targets.tolist() == split.targets.tolist()
    assert batch.indices.tolist() == [0, 1, 2]


def test_collate_min_width_pads_short_batches() -> None:
    width = WIDTH_MULTIPLE + 3  # wider than one rounding step, so the minimum shows
    batch = collate(make_split([[5], [6, 7]]), np.array([1, 0]), max_length=10, min_width=width)
    assert batch.token_ids.shape == (2, 2 * WIDTH_MULTIPLE)
    assert rows_of(batch, 2) == [[6, 7], [5, 0]]
    assert batch.lengths.tolist() == [2, 1]


def test_collate_min_width_does_not_cut_longer_batches() -> None:
    text = list(range(2, WIDTH_MULTIPLE + 9))
    batch = collate(make_split([text]), np.array([0]), max_length=100, min_width=3)
    assert rows_of(batch, len(text)) == [text]


def test_empty_text_becomes_one_pad_token() -> None:
    split = make_split([[], [4, 5]])
    batch = collate(split, np.array([0, 1]), max_length=10)
    assert batch.lengths.tolist() == [1, 2]
    assert rows_of(batch, 2) == [[PAD_ID, PAD_ID], [4, 5]]
    alone = collate(split, np.array([0]), max_length=10)
    assert rows_of(alone, 1) == [[PAD_ID]] and alone.lengths.tolist() == [1]
    assert clipped_lengths(split, 10).tolist() == [1, 2]


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("head", [0, 1, 2, 3, 4, 5, 6, 7]),
        ("tail", [12, 13, 14, 15, 16, 17, 18, 19]),
        ("head_tail", [0, 1, 14, 15, 16, 17, 18, 19]),  # a quarter from the start, the rest from the end
    ],
)
def test_truncation(how: str, expected: list[int]) -> None:
    ids = np.arange(20)
    assert truncate_ids(ids, 8, how).tolist() == expected
    assert truncate_ids(ids[:8], 8, how).tolist() == list(range(8))  # short enough: unchanged


@pytest.mark.parametrize("how", ["head", "tail", "head_tail"])
def test_collate_truncates_to_max_length(how: str) -> None:
    split = make_split([list(range(2, 22)), [3]])
    batch = collate(split, np.array([0, 1]), max_length=8, truncate=how)
    assert batch.lengths.tolist() == [8, 1]
    assert rows_of(batch, 8) == [truncate_ids(np.arange(2, 22), 8, how).tolist(), [3] + [PAD_ID] * 7]
    assert clipped_lengths(split, 8).tolist() == [8, 1]

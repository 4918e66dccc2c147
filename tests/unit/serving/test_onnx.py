"""onnx_predict.py pieces: which targets are ONNX exports, and batches padded and truncated as the checkpoint's."""

from __future__ import annotations

import numpy as np

from textclf_cli.data.loader import collate
from textclf_cli.data.prepared import EncodedSplit
from textclf_cli.data.vocab import PAD_ID
from textclf_cli.serving.onnx import is_onnx_target, padded_batch


def test_onnx_targets() -> None:
    assert is_onnx_target("export/model.onnx") and is_onnx_target("model.ONNX") and is_onnx_target("m.onnx.json")
    assert not any(is_onnx_target(target) for target in ("config.yaml", "runs/x/latest", "best.pt", "model.pt"))


def test_padded_batch_is_the_loaders_without_its_extra_width() -> None:
    lengths = [3, 0, 12, 1]  # an empty text, and one longer than max_length
    ids = np.arange(2, 2 + sum(lengths), dtype=np.int32)
    split = EncodedSplit(ids, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), np.zeros(4, np.int64))
    indices = np.array([2, 0, 1, 3])
    token_ids, batch_lengths = padded_batch(split, indices, 10, "head_tail")
    batch = collate(split, indices, 10, "head_tail", min_width=3)
    assert token_ids.dtype == batch_lengths.dtype == np.int64 and token_ids.shape == (4, 10)  # the longest, no more
    np.testing.assert_array_equal(batch_lengths, batch.lengths.numpy())
    np.testing.assert_array_equal(token_ids, batch.token_ids.numpy()[:, :10])
    assert (batch.token_ids.numpy()[:, 10:] == PAD_ID).all()
    np.testing.assert_array_equal(token_ids[2], [PAD_ID] * 10)  # the empty text: one pad token, length 1

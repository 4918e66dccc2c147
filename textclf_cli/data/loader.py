"""Length-bucketed batches from a prepared split: little padding, seeded order, padding-safe lengths."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from textclf_cli.data.prepared import EncodedSplit, truncate_ids  # in prepared.py: onnx_predict needs it without torch
from textclf_cli.data.vocab import PAD_ID

# Batch widths are rounded up to a multiple of this: on CPU every new input shape costs oneDNN a fresh
# kernel setup (exact widths made CNN epochs slower and used more memory); masks keep the extra
# padding out of the results.
WIDTH_MULTIPLE = 32


@dataclass
class Batch:
    token_ids: torch.Tensor  # (B, T) int64, PAD_ID after each text
    lengths: torch.Tensor  # (B,) int64, >= 1 (an empty text counts as one pad token)
    targets: torch.Tensor  # (B,) int64
    indices: np.ndarray  # (B,) positions in the split

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        """Copy to `device`; for CUDA with non_blocking, through pinned memory so the copy is truly async."""
        pin = non_blocking and device.type == "cuda"

        def move(tensor: torch.Tensor) -> torch.Tensor:
            return (tensor.pin_memory() if pin else tensor).to(device, non_blocking=non_blocking)

        return Batch(move(self.token_ids), move(self.lengths), move(self.targets), self.indices)


def clipped_lengths(split: EncodedSplit, max_length: int) -> np.ndarray:
    return np.clip(split.lengths, 1, max_length)


def batch_indices(
    lengths: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0, chunk_batches: int = 50
) -> list[np.ndarray]:
    """Groups of example positions with similar lengths.

    Training: shuffle, sort by length inside chunks of `chunk_batches` batches, shuffle the batch order
    (seeded by seed and epoch, so a resumed epoch sees the same order). Evaluation: sorted by length.
    """
    n = len(lengths)
    if not shuffle:
        order = np.argsort(lengths, kind="stable")
        return [order[i: i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    chunk = batch_size * chunk_batches
    batches = []
    for start in range(0, n, chunk):
        part = order[start: start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i: i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(
    split: EncodedSplit, indices: np.ndarray, max_length: int, truncate: str = "head", min_width: int = 1
) -> Batch:
    """Pad the chosen texts to the longest of them (at least `min_width`, e.g. the widest CNN filter)."""
    rows = [truncate_ids(split.ids[split.offsets[i]: split.offsets[i + 1]], max_length, truncate) for i in indices]
    lengths = np.array([max(1, len(row)) for row in rows], dtype=np.int64)
    width = max(int(lengths.max()), min_width)
    width = -(-width // WIDTH_MULTIPLE) * WIDTH_MULTIPLE
    padded = np.full((len(rows), width), PAD_ID, dtype=np.int64)
    for r, row in enumerate(rows):
        padded[r, : len(row)] = row
    return Batch(
        torch.from_numpy(padded), torch.from_numpy(lengths), torch.from_numpy(split.targets[indices]), indices
    )


"""The on-disk prepared data: flat token-id arrays per split, vocabulary and labels; written once, read memory-mapped."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textclf_cli import files
from textclf_cli.atomic import current_umask, write_atomic, write_json_atomic
from textclf_cli.data.text import TokenizerSettings
from textclf_cli.errors import DataError

FORMAT_VERSION = 1


@dataclass
class EncodedSplit:
    """Token ids of n texts: text i is ids[offsets[i]:offsets[i+1]]; targets[i] is its label index, or for
    multi-label data its row of C 0/1 flags (one per label)."""

    ids: np.ndarray  # int32, flat
    offsets: np.ndarray  # int64, n + 1
    targets: np.ndarray  # int64 (n,), or uint8 (n, C) multi-hot for multi-label

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def truncate_ids(ids: np.ndarray, max_length: int, how: str) -> np.ndarray:
    """head keeps the start; tail the end; head_tail the first quarter and the last three quarters."""
    if len(ids) <= max_length:
        return ids
    if how == "tail":
        return ids[-max_length:]
    if how == "head_tail":
        head = max_length // 4
        return np.concatenate([ids[:head], ids[len(ids) - (max_length - head):]])
    return ids[:max_length]


@dataclass
class PreparedData:
    root: Path
    vocab: list[str]
    labels: list[str]
    tokenizer: TokenizerSettings
    splits: dict[str, EncodedSplit]
    meta: dict


def is_prepared(root: Path) -> bool:
    return (root / files.PREPARED_META).is_file()


def write_prepared(root: Path, data: PreparedData) -> None:
    """Write in-memory prepared data (small data, tests); prepare streams through staged_folder itself."""
    with staged_folder(root) as staging:
        for split, encoded in data.splits.items():
            save_array(staging / files.PREPARED_IDS.format(split=split), encoded.ids)
            save_array(staging / files.PREPARED_OFFSETS.format(split=split), encoded.offsets)
            save_array(staging / files.PREPARED_TARGETS.format(split=split), encoded.targets)
        write_index(staging, data.vocab, data.labels, data.meta, list(data.splits))


@contextmanager
def staged_folder(root: Path) -> Iterator[Path]:
    """A temp folder beside `root`, renamed into place when the block succeeds and removed either way, so a
    crash never leaves a half-prepared key. The block must call write_index last."""
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    staging.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700; the renamed folder should be shareable
    try:
        yield staging
        try:
            os.rename(staging, root)
        except OSError:
            if not is_prepared(root):  # another process finished the same key first: theirs is identical
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_index(folder: Path, vocab: list[str], labels: list[str], meta: dict, splits: list[str]) -> None:
    write_json_atomic(folder / files.PREPARED_VOCAB, vocab)
    write_json_atomic(folder / files.PREPARED_LABELS, labels)
    meta = dict(meta, format_version=FORMAT_VERSION, splits=sorted(splits))
    write_json_atomic(folder / files.PREPARED_META, meta)  # last: its presence means complete


class NpyWriter:
    """A 1-D .npy file written piece by piece: the header with the final length first, then the values in order
    (the same bytes np.save writes for the whole array)."""

    def __init__(self, path: Path, dtype: type, length: int) -> None:
        self.path, self.dtype, self.length, self.written = path, np.dtype(dtype), int(length), 0
        self.handle = path.open("wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (self.length,)}
        np.lib.format.write_array_header_1_0(self.handle, header)

    def write(self, values: np.ndarray) -> None:
        self.handle.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
        self.written += len(values)

    def close(self) -> None:
        if self.written != self.length:  # a bug, not a user mistake
            raise RuntimeError(f"{self.path}: wrote {self.written} values, announced {self.length}")
        self.handle.flush()
        os.fsync(self.handle.fileno())  # the folder rename must not publish arrays still in the page cache
        self.handle.close()


def save_array(path: Path, array: np.ndarray) -> None:
    # through write_atomic for its fsync: the folder rename must not publish arrays still in the page cache
    write_atomic(path, lambda handle: np.save(handle, array))


def load_prepared(root: Path) -> PreparedData:
    """The prepared arrays, memory-mapped read-only: pages are read on demand and shared through the page cache
    by every process on the machine (DDP ranks, an evaluate next to a train) instead of copied into each."""
    try:
        meta = json.loads((root / files.PREPARED_META).read_text(encoding="utf-8"))
        vocab = json.loads((root / files.PREPARED_VOCAB).read_text(encoding="utf-8"))
        labels = json.loads((root / files.PREPARED_LABELS).read_text(encoding="utf-8"))
        splits = {split: _load_split(root, split) for split in meta["splits"]}
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{root}: prepared data is damaged ({exc}); delete this folder and run prepare again") from None
    return PreparedData(root, vocab, labels, TokenizerSettings(**meta["tokenizer"]), splits, meta)


def _load_split(root: Path, split: str) -> EncodedSplit:
    return EncodedSplit(
        ids=np.load(root / files.PREPARED_IDS.format(split=split), mmap_mode="r"),
        offsets=np.load(root / files.PREPARED_OFFSETS.format(split=split), mmap_mode="r"),
        targets=np.load(root / files.PREPARED_TARGETS.format(split=split), mmap_mode="r"),
    )

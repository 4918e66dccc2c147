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


@contextmanager
def staged_folder(root: Path, replace: bool = False) -> Iterator[Path]:
    """A temp folder beside `root`, renamed into place when the block succeeds and removed either way, so a
    crash never leaves a half-prepared key. The block must call write_index last.

    `replace` (prepare --force): an existing `root` is swapped out by two renames and then deleted, so a reader
    sees the old folder whole, briefly none, or the new one whole; never a mix. Without it an existing `root`
    is kept: another process finished the same key first, and theirs is identical."""
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    staging.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700; the renamed folder should be shareable
    try:
        yield staging
        if replace and root.exists():
            _swap_in(staging, root)
            return
        try:
            os.rename(staging, root)
        except OSError:
            if not is_prepared(root):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, root: Path) -> None:
    """Put `staging` where `root` is and delete the old `root`; the old one goes back if the second rename fails."""
    retired = Path(tempfile.mkdtemp(prefix=f".{root.name}.old.", dir=root.parent)) / root.name
    os.rename(root, retired)
    try:
        os.rename(staging, root)
    except OSError:
        os.rename(retired, root)
        raise
    finally:
        shutil.rmtree(retired.parent, ignore_errors=True)


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
    by every process on the machine (DDP ranks, an evaluate next to a train) instead of copied into each.

    A folder that cannot be read back whole (a file truncated, emptied or deleted; arrays that do not fit
    together) is a DataError that says how to rebuild it."""
    try:
        return _read_prepared(root)
    except (OSError, EOFError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise DataError(f"prepared data in {root} is damaged: run prepare --force "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None


def _read_prepared(root: Path) -> PreparedData:
    meta = json.loads((root / files.PREPARED_META).read_text(encoding="utf-8"))
    vocab = json.loads((root / files.PREPARED_VOCAB).read_text(encoding="utf-8"))
    labels = json.loads((root / files.PREPARED_LABELS).read_text(encoding="utf-8"))
    if not (isinstance(meta, dict) and isinstance(vocab, list) and isinstance(labels, list)):
        raise ValueError("meta.json, vocab.json or labels.json does not hold what prepare writes")
    splits = {split: _load_split(root, split) for split in meta["splits"]}
    return PreparedData(root, vocab, labels, TokenizerSettings(**meta["tokenizer"]), splits, meta)


def _load_split(root: Path, split: str) -> EncodedSplit:
    encoded = EncodedSplit(
        ids=np.load(root / files.PREPARED_IDS.format(split=split), mmap_mode="r"),
        offsets=np.load(root / files.PREPARED_OFFSETS.format(split=split), mmap_mode="r"),
        targets=np.load(root / files.PREPARED_TARGETS.format(split=split), mmap_mode="r"),
    )
    offsets = encoded.offsets
    # reads two numbers, not the arrays: a truncated or mismatched file shows up here rather than mid-training
    if offsets.ndim != 1 or len(offsets) != len(encoded.targets) + 1 or int(offsets[-1]) != len(encoded.ids):
        raise ValueError(f"the {split} arrays do not fit together ({len(encoded.ids)} ids, {len(offsets)} "
                         f"offsets, {len(encoded.targets)} targets)")
    return encoded

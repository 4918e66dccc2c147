"""The on-disk prepared data: flat token-id arrays per split, vocabulary and labels, written once."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
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
    """Write into a temp folder and rename it into place, so a crash never leaves a half-prepared key."""
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    staging.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700; the renamed folder should be shareable
    try:
        for split, encoded in data.splits.items():
            save_array(staging / files.PREPARED_IDS.format(split=split), encoded.ids)
            save_array(staging / files.PREPARED_OFFSETS.format(split=split), encoded.offsets)
            save_array(staging / files.PREPARED_TARGETS.format(split=split), encoded.targets)
        write_json_atomic(staging / files.PREPARED_VOCAB, data.vocab)
        write_json_atomic(staging / files.PREPARED_LABELS, data.labels)
        meta = dict(data.meta, format_version=FORMAT_VERSION, splits=sorted(data.splits))
        write_json_atomic(staging / files.PREPARED_META, meta)  # last: its presence means complete
        try:
            os.rename(staging, root)
        except OSError:
            if not is_prepared(root):  # another process finished the same key first: theirs is identical
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_array(path: Path, array: np.ndarray) -> None:
    # through write_atomic for its fsync: the folder rename must not publish arrays still in the page cache
    write_atomic(path, lambda handle: np.save(handle, array))


def load_prepared(root: Path) -> PreparedData:
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
        ids=np.load(root / files.PREPARED_IDS.format(split=split)),
        offsets=np.load(root / files.PREPARED_OFFSETS.format(split=split)),
        targets=np.load(root / files.PREPARED_TARGETS.format(split=split)),
    )
